//! The key store against a real nats-server: keys survive a new process (store), destroyed keys
//! read as erased and leave no wrapped bytes in the server's files, a tenant's destruction
//! erases its subjects only, and a master-key rotation keeps every key readable.

use talkwai_domain::ids::TenantId;
use talkwai_keys::{KeyStore, KeyStoreConfig, MasterKey, SecretKey};
use talkwai_proto::Scope;
use talkwai_proto::sealed::{Opened, Opener, Sealer, aad};
use talkwai_testkit::NatsServer;
use uuid::Uuid;

async fn server() -> (NatsServer, async_nats::jetstream::Context) {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let client = async_nats::connect(nats.url()).await.expect("connects");
    (nats, async_nats::jetstream::new(client))
}

fn small() -> KeyStoreConfig {
    KeyStoreConfig {
        pool_batch: 8,
        ..KeyStoreConfig::default()
    }
}

/// Opens a value sealed with `key` through a keyring fetched from `store`.
async fn read_back(store: &KeyStore, scope: Scope, key: &talkwai_keys::DataKey) -> Opened {
    let sealed = key.seal(&aad(key.id, "t", "f"), "marker text");
    let ring = store.keyring([(scope, key.id)]).await.expect("keyring");
    ring.open(scope, &sealed, &aad(key.id, "t", "f"))
        .expect("opens or is erased")
}

/// Every file under `dir`, searched for `needle` as raw bytes.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .expect("readable file")
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test]
async fn keys_are_durable_and_a_destroyed_key_is_erased_on_disk() {
    let (nats, js) = server().await;
    let master = MasterKey::from_key(SecretKey::random());
    let tenant = Scope::Tenant(TenantId(Uuid::now_v7()));
    let store = KeyStore::open(&js, vec![master.clone()], small())
        .await
        .expect("opens");
    let kept = store.take(tenant).await.expect("a key");
    let doomed = store.take(tenant).await.expect("another key");
    assert_ne!(kept.id, doomed.id);

    // Another process (a fresh store, empty caches) reads both back.
    let other = KeyStore::open(&js, vec![master.clone()], small())
        .await
        .expect("opens");
    assert_eq!(
        read_back(&other, tenant, &kept).await,
        Opened::Plain("marker text".into())
    );
    assert_eq!(
        read_back(&other, tenant, &doomed).await,
        Opened::Plain("marker text".into())
    );
    // The id of a key names its block and slot: find its wrapped bytes on disk before it is
    // destroyed.
    let kv = js.get_key_value("TALKWAI_KEYS").await.expect("bucket");
    let stored = talkwai_keys::stored_key(&kv, tenant, doomed.id)
        .await
        .expect("reads")
        .expect("present");
    let ciphertext = stored
        .split_once('.')
        .expect("nonce.ciphertext")
        .1
        .as_bytes()
        .to_vec();
    assert!(
        !files_holding(nats.store_dir(), &ciphertext).is_empty(),
        "the wrapped key is on disk before it is destroyed (the scan can fail)"
    );

    store.destroy(tenant, doomed.id).await.expect("destroys");
    store.destroy(tenant, doomed.id).await.expect("idempotent");
    assert_eq!(read_back(&store, tenant, &doomed).await, Opened::Erased);
    let fresh = KeyStore::open(&js, vec![master], small())
        .await
        .expect("opens");
    assert_eq!(read_back(&fresh, tenant, &doomed).await, Opened::Erased);
    assert_eq!(
        read_back(&fresh, tenant, &kept).await,
        Opened::Plain("marker text".into())
    );
    assert_eq!(
        files_holding(nats.store_dir(), &ciphertext),
        Vec::<std::path::PathBuf>::new(),
        "a destroyed key's wrapped bytes are erased from the server's files"
    );
    assert_eq!(
        talkwai_keys::stored_key(&kv, tenant, doomed.id)
            .await
            .expect("reads"),
        None,
        "its slot is empty"
    );
    assert!(
        talkwai_keys::stored_key(&kv, tenant, kept.id)
            .await
            .expect("reads")
            .is_some(),
        "the other keys of its block stay"
    );
}

fn tenant_token(scope: Scope) -> String {
    scope
        .tenant()
        .map_or_else(|| "platform".to_owned(), |t| t.0.to_string())
}

#[tokio::test]
async fn destroying_a_tenant_erases_its_subjects_only() {
    let (_nats, js) = server().await;
    let master = MasterKey::from_key(SecretKey::random());
    let gone = TenantId(Uuid::now_v7());
    let kept = Scope::Tenant(TenantId(Uuid::now_v7()));
    let store = KeyStore::open(&js, vec![master.clone()], small())
        .await
        .expect("opens");
    let a = store.take(Scope::Tenant(gone)).await.expect("key");
    let b = store.take(kept).await.expect("key");
    let p = store.take(Scope::Platform).await.expect("key");

    store.destroy_tenant(&gone).await.expect("destroys");
    for reader in [
        store.clone(),
        KeyStore::open(&js, vec![master], small())
            .await
            .expect("opens"),
    ] {
        assert_eq!(
            read_back(&reader, Scope::Tenant(gone), &a).await,
            Opened::Erased
        );
        assert_eq!(
            read_back(&reader, kept, &b).await,
            Opened::Plain("marker text".into())
        );
        assert_eq!(
            read_back(&reader, Scope::Platform, &p).await,
            Opened::Plain("marker text".into())
        );
    }
    // A new subject of the erased tenant gets a new tenant key; the old subjects stay erased.
    let again = store.take(Scope::Tenant(gone)).await.expect("key");
    assert_eq!(
        read_back(&store, Scope::Tenant(gone), &again).await,
        Opened::Plain("marker text".into())
    );
    assert_eq!(
        read_back(&store, Scope::Tenant(gone), &a).await,
        Opened::Erased
    );
}

#[tokio::test]
async fn rotating_the_master_key_keeps_every_key_readable() {
    let (_nats, js) = server().await;
    let old = MasterKey::from_key(SecretKey::random());
    let new = MasterKey::from_key(SecretKey::random());
    let tenant = Scope::Tenant(TenantId(Uuid::now_v7()));
    let before = KeyStore::open(&js, vec![old.clone()], small())
        .await
        .expect("opens");
    let t = before.take(tenant).await.expect("key");
    let p = before.take(Scope::Platform).await.expect("key");

    // A process with only the new key cannot read tenant keys still wrapped by the old one.
    let early = KeyStore::open(&js, vec![new.clone()], small())
        .await
        .expect("opens");
    let e = early
        .keyring([(tenant, t.id)])
        .await
        .expect_err("old master");
    assert!(
        matches!(e, talkwai_keys::KeyError::UnknownMaster { .. }),
        "{e}"
    );

    let rotating = KeyStore::open(&js, vec![new.clone(), old], small())
        .await
        .expect("opens");
    assert_eq!(rotating.master_id(), new.id());
    assert_eq!(rotating.rotate_master().await.expect("rotates"), 2);
    assert_eq!(
        rotating.rotate_master().await.expect("again"),
        0,
        "idempotent"
    );

    let after = KeyStore::open(&js, vec![new], small())
        .await
        .expect("opens");
    assert_eq!(
        read_back(&after, tenant, &t).await,
        Opened::Plain("marker text".into())
    );
    assert_eq!(
        read_back(&after, Scope::Platform, &p).await,
        Opened::Plain("marker text".into())
    );
}

#[tokio::test]
async fn the_pool_hands_out_distinct_durable_keys_and_an_export_restores_them() {
    let (_nats, js) = server().await;
    let master = MasterKey::from_key(SecretKey::random());
    let tenant = Scope::Tenant(TenantId(Uuid::now_v7()));
    let store = KeyStore::open(&js, vec![master.clone()], small())
        .await
        .expect("opens");
    store.fill(tenant).await.expect("fills");
    let mut ids = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for _ in 0..40 {
        let key = store.take(tenant).await.expect("key");
        assert!(ids.insert(key.id), "a key is handed out once");
        keys.push(key);
    }
    let exported = store.export().await.expect("exports");
    // The tenant key and the blocks holding every key handed out: a block per refill, not
    // an entry per key.
    let names: std::collections::HashSet<&str> =
        exported.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.contains(format!("tenant.{}", tenant_token(tenant)).as_str()));
    for key in &keys {
        let block = talkwai_keys::entry_name(tenant, key.id);
        assert!(names.contains(block.as_str()), "{block} in {names:?}");
    }
    assert!(
        exported.len() < 1 + keys.len(),
        "keys are stored in blocks: {names:?}"
    );

    // Restored into another server, the keys read back with the same master key.
    let (_nats2, js2) = server().await;
    let restored = KeyStore::open(&js2, vec![master], small())
        .await
        .expect("opens");
    assert_eq!(
        restored.import(exported.clone()).await.expect("imports"),
        exported.len()
    );
    for key in &keys {
        assert_eq!(
            read_back(&restored, tenant, key).await,
            Opened::Plain("marker text".into())
        );
    }
}
