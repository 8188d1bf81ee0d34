//! EdDSA and RS256 tokens of an external identity provider, from PEM and JWKS files, with the
//! fixtures in `tests/fixtures/`; algorithm confusion and claim checks for every algorithm.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use talkwai_auth::{
    AuthError, Claims, KeyError, KeyFiles, Principal, PrincipalKind, PublicKeys, TokenVerifier,
    now_secs,
};
use talkwai_domain::ids::{TenantId, UserId};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "talkwai";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture exists")
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read("ed25519.key")).expect("ed25519 private key")
}

fn other_ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read("ed25519-other.key")).expect("ed25519 private key")
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("rsa.key")).expect("rsa private key")
}

fn claims() -> Claims {
    Claims {
        sub: UserId::new_v4(),
        kind: PrincipalKind::Member,
        tenant: Some(TenantId::new_v4()),
        role: Some("user".into()),
        exp: now_secs() + 600,
        nbf: Some(now_secs() - 10),
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
    }
}

fn sign(claims: &Claims, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn verifier(keys: PublicKeys) -> TokenVerifier {
    TokenVerifier::new(
        Some(SecretString::from("platform-token")),
        Some(SecretString::from("hs-secret")),
        Some(ISSUER),
        Some(AUDIENCE),
    )
    .with_public_keys(keys)
}

fn pem_verifier(name: &str) -> TokenVerifier {
    verifier(
        KeyFiles {
            jwt_public_key_file: Some(fixture(name)),
            jwks_file: None,
        }
        .load()
        .expect("public key loads"),
    )
}

fn jwks() -> Vec<u8> {
    read("jwks.json")
}

fn invalid(reason: &str) -> Result<Principal, AuthError> {
    Err(AuthError::Invalid(reason.into()))
}

#[test]
fn eddsa_and_rs256_tokens_verify_against_pem_keys() {
    let c = claims();
    let ed = pem_verifier("ed25519.pub.pem");
    let token = sign(&c, Algorithm::EdDSA, None, &ed_key());
    assert_eq!(ed.verify(&token), Ok(Principal::User(c.clone())));
    let rsa = pem_verifier("rsa.pub.pem");
    let token = sign(&c, Algorithm::RS256, None, &rsa_key());
    assert_eq!(rsa.verify(&token), Ok(Principal::User(c.clone())));
    // An RS256 token against the Ed25519 key (and the reverse): no key for that algorithm.
    assert_eq!(ed.verify(&token), invalid("wrong algorithm"));
    let token = sign(&c, Algorithm::EdDSA, None, &ed_key());
    assert_eq!(rsa.verify(&token), invalid("wrong algorithm"));
    // HS256 keeps working beside the public keys.
    let token = talkwai_auth::mint(&c, &SecretString::from("hs-secret")).expect("mint");
    assert_eq!(rsa.verify(&token), Ok(Principal::User(c)));
}

#[test]
fn claims_are_checked_for_every_algorithm() {
    let cases: [(Algorithm, &str, EncodingKey); 2] = [
        (Algorithm::EdDSA, "ed25519.pub.pem", ed_key()),
        (Algorithm::RS256, "rsa.pub.pem", rsa_key()),
    ];
    for (alg, public, key) in cases {
        let v = pem_verifier(public);
        let mut c = claims();
        c.exp = now_secs() - 3600;
        assert_eq!(
            v.verify(&sign(&c, alg, None, &key)),
            invalid("token expired"),
            "{alg:?}"
        );
        let mut c = claims();
        c.nbf = Some(now_secs() + 3600);
        assert_eq!(
            v.verify(&sign(&c, alg, None, &key)),
            invalid("token not valid yet"),
            "{alg:?}"
        );
        let mut c = claims();
        c.iss = Some("https://evil.example".into());
        assert_eq!(
            v.verify(&sign(&c, alg, None, &key)),
            invalid("wrong issuer"),
            "{alg:?}"
        );
        let mut c = claims();
        c.aud = Some("someone-else".into());
        assert_eq!(
            v.verify(&sign(&c, alg, None, &key)),
            invalid("wrong audience"),
            "{alg:?}"
        );
        let mut c = claims();
        c.aud = None;
        assert_eq!(
            v.verify(&sign(&c, alg, None, &key)),
            invalid("missing claim aud"),
            "{alg:?}"
        );
    }
    let v = pem_verifier("ed25519.pub.pem");
    let forged = sign(&claims(), Algorithm::EdDSA, None, &other_ed_key());
    assert_eq!(v.verify(&forged), invalid("bad signature"));
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let keys = PublicKeys::from_jwks(&jwks(), "test jwks").expect("jwks loads");
    assert_eq!(keys.len(), 2, "the oct and enc keys are skipped: {keys:?}");
    let v = verifier(keys);
    let c = claims();
    let ed = sign(&c, Algorithm::EdDSA, Some("ed-1"), &ed_key());
    assert_eq!(v.verify(&ed), Ok(Principal::User(c.clone())));
    let rsa = sign(&c, Algorithm::RS256, Some("rsa-1"), &rsa_key());
    assert_eq!(v.verify(&rsa), Ok(Principal::User(c.clone())));
    // One key per algorithm: a token without a kid still finds it.
    let no_kid = sign(&c, Algorithm::RS256, None, &rsa_key());
    assert_eq!(v.verify(&no_kid), Ok(Principal::User(c.clone())));
    let unknown = sign(&c, Algorithm::EdDSA, Some("ed-2"), &ed_key());
    assert_eq!(v.verify(&unknown), invalid("unknown key id"));
    // The RSA key's kid on an EdDSA token: the key is bound to RS256.
    let crossed = sign(&c, Algorithm::EdDSA, Some("rsa-1"), &ed_key());
    assert_eq!(v.verify(&crossed), invalid("wrong algorithm for key"));
    // The JWKS's symmetric key is not a way in: HS256 uses the configured secret only.
    let hs = sign(
        &c,
        Algorithm::HS256,
        Some("hs"),
        &EncodingKey::from_secret(b"hs-secret-from-jwks"),
    );
    assert_eq!(v.verify(&hs), invalid("bad signature"));
}

#[test]
fn algorithm_confusion_and_alg_none_are_refused() {
    let public_pem = read("rsa.pub.pem");
    // Without an HS256 secret, an HS256 token signed with the public key is refused outright.
    let v = TokenVerifier::new(None, None, Some(ISSUER), Some(AUDIENCE)).with_public_keys(
        PublicKeys::from_pem(&public_pem, "rsa.pub.pem").expect("rsa public key"),
    );
    let c = claims();
    let confused = sign(
        &c,
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&public_pem),
    );
    assert_eq!(v.verify(&confused), invalid("wrong algorithm"));
    // With one, it is checked against the secret only.
    let v = pem_verifier("rsa.pub.pem");
    assert_eq!(v.verify(&confused), invalid("bad signature"));
    // Other algorithms of the same family are not accepted either.
    let hs384 = sign(
        &c,
        Algorithm::HS384,
        None,
        &EncodingKey::from_secret(b"hs-secret"),
    );
    assert_eq!(v.verify(&hs384), invalid("wrong algorithm"));
    let ps256 = sign(&c, Algorithm::PS256, None, &rsa_key());
    assert_eq!(v.verify(&ps256), invalid("wrong algorithm"));
    // `alg: none` with an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("claims"));
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(
            matches!(v.verify(&token), Err(AuthError::Invalid(_))),
            "alg none accepted: {token}"
        );
    }
}

#[test]
fn bad_key_files_are_typed_errors_and_secrets_never_print() {
    let missing = KeyFiles {
        jwt_public_key_file: Some(fixture("no-such.pem")),
        jwks_file: None,
    };
    assert!(matches!(missing.load(), Err(KeyError::Read { .. })));
    // A private key is not a public key.
    let private = KeyFiles {
        jwt_public_key_file: Some(fixture("ed25519.key")),
        jwks_file: None,
    };
    assert!(matches!(private.load(), Err(KeyError::Pem { .. })));
    let only_symmetric = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
    assert!(matches!(
        PublicKeys::from_jwks(only_symmetric, "x"),
        Err(KeyError::Jwks { .. })
    ));
    assert!(matches!(
        PublicKeys::from_jwks(b"[]", "x"),
        Err(KeyError::Jwks { .. })
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks()).expect("write jwks");
    let both = KeyFiles {
        jwt_public_key_file: Some(fixture("rsa.pub.pem")),
        jwks_file: Some(path),
    }
    .load()
    .expect("both load");
    assert_eq!(both.len(), 3);
    let v = verifier(both);
    let printed = format!("{v:?}");
    assert!(!printed.contains("hs-secret"), "{printed}");
    assert!(!printed.contains("platform-token"), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");
}
