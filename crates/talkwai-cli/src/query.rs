//! `talkwai query`: one InstaQL-shaped query to the query API (`talkwai.qry.<tenant>` or
//! `talkwai.qry.platform`), printed as pretty JSON.

use base64::Engine as _;
use bytes::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use talkwai_proto::subject::{self, Scope};
use uuid::Uuid;

use crate::cli::QueryArgs;
use crate::error::CliError;
use crate::request::{ReadOptions, reply_error, request_json};
use crate::send::read_json_object;

/// The `tenant` claim of a member JWT, read **without verifying** the token: only to pick the
/// subject (the query service verifies it). `None` for admin JWTs, the platform token and
/// anything that is not a JWT.
pub fn member_tenant(token: &str) -> Option<Uuid> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    if claims.get("kind").and_then(Value::as_str) != Some("member") {
        return None;
    }
    claims.get("tenant")?.as_str()?.parse().ok()
}

/// The query subject: `--tenant` (a UUID or `platform`), else the member token's tenant.
pub fn query_subject(
    tenant: Option<&str>,
    token: Option<&SecretString>,
) -> Result<String, CliError> {
    let scope = match tenant {
        Some(tenant) => Scope::parse(tenant).map_err(|_| {
            CliError::Usage(format!(
                "--tenant {tenant:?} is neither a tenant UUID nor `platform`"
            ))
        })?,
        None => token
            .and_then(|t| member_tenant(t.expose_secret()))
            .map(|t| Scope::Tenant(t.into()))
            .ok_or_else(|| {
                CliError::Usage(
                    "--tenant is required (a tenant UUID, or `platform` for all tenants) unless the token is a member JWT".into(),
                )
            })?,
    };
    Ok(subject::query(scope))
}

/// The request body: the query as given, with `minSeq` added (wrapping a bare query in the
/// `{"query": ..., "minSeq": n}` form) when `min_seq` is set.
pub fn request_body(query: Value, raw: Bytes, min_seq: Option<u64>) -> Result<Bytes, CliError> {
    let Some(min_seq) = min_seq else {
        return Ok(raw);
    };
    let request = match query {
        Value::Object(mut object) if object.contains_key("query") => {
            object.insert("minSeq".into(), min_seq.into());
            Value::Object(object)
        }
        query => serde_json::json!({ "query": query, "minSeq": min_seq }),
    };
    serde_json::to_vec(&request)
        .map(Bytes::from)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// Runs `talkwai query`: prints the reply as pretty JSON; a refusal is an error (exit 1).
pub async fn run(nats_url: &str, args: QueryArgs) -> Result<(), CliError> {
    let subject = query_subject(args.tenant.as_deref(), args.token.as_ref())?;
    let (query, raw) = read_json_object(&args.json, "query")?;
    let body = request_body(query, raw, args.min_seq)?;
    let client = crate::connect(nats_url).await?;
    let reply = request_json(
        &client,
        &subject,
        args.token.as_ref(),
        body,
        ReadOptions {
            timeout: args.timeout,
            attempts: args.attempts,
        },
        "the query service",
    )
    .await?;
    let pretty = serde_json::to_string_pretty(&reply).map_err(|e| CliError::Nats(e.to_string()))?;
    crate::output::line(&pretty)?;
    match reply_error(&reply, "query")? {
        None => Ok(()),
        Some(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use talkwai_auth::{Claims, PrincipalKind};

    use super::*;

    fn jwt(kind: PrincipalKind, tenant: Option<Uuid>) -> String {
        let claims = Claims {
            sub: Uuid::new_v4().into(),
            kind,
            tenant: tenant.map(Into::into),
            role: None,
            exp: talkwai_auth::now_secs() + 60,
            nbf: None,
            iss: None,
            aud: None,
        };
        talkwai_auth::mint(&claims, &SecretString::from("s")).expect("mint")
    }

    #[test]
    fn the_subject_comes_from_the_flag_or_a_member_token() {
        let tenant = Uuid::new_v4();
        let member = SecretString::from(jwt(PrincipalKind::Member, Some(tenant)));
        assert_eq!(
            query_subject(None, Some(&member)).ok(),
            Some(subject::query(Scope::Tenant(tenant.into())))
        );
        let other = Uuid::new_v4();
        assert_eq!(
            query_subject(Some(&other.to_string()), Some(&member)).ok(),
            Some(subject::query(Scope::Tenant(other.into())))
        );
        assert_eq!(
            query_subject(Some("platform"), None).ok(),
            Some(subject::query(Scope::Platform))
        );
        let admin = SecretString::from(jwt(PrincipalKind::Admin, None));
        assert!(matches!(
            query_subject(None, Some(&admin)),
            Err(CliError::Usage(_))
        ));
        let platform = SecretString::from("not-a-jwt");
        assert!(matches!(
            query_subject(None, Some(&platform)),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(query_subject(None, None), Err(CliError::Usage(_))));
        assert!(matches!(
            query_subject(Some("acme"), None),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn min_seq_wraps_or_extends_the_request() {
        let raw = Bytes::from_static(b"{\"tasks\":{}}");
        let bare = json!({"tasks": {}});
        assert_eq!(
            request_body(bare.clone(), raw.clone(), None).ok(),
            Some(raw.clone())
        );
        let wrapped: Value = serde_json::from_slice(
            &request_body(bare.clone(), raw.clone(), Some(7)).expect("body"),
        )
        .expect("json");
        assert_eq!(wrapped, json!({"query": {"tasks": {}}, "minSeq": 7}));
        let request = json!({"query": {"tasks": {}}, "minSeq": 1});
        let extended: Value =
            serde_json::from_slice(&request_body(request, raw, Some(9)).expect("body"))
                .expect("json");
        assert_eq!(extended, json!({"query": {"tasks": {}}, "minSeq": 9}));
    }
}
