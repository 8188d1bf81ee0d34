//! `talkwai keys` as a process against a real nats-server: a new master key, its rotation
//! (every key still opens under the new one alone), the wrapped backup, and destroying one
//! subject's key.

mod common;

use common::Harness;
use talkwai_keys::{KeyStore, KeyStoreConfig, MasterKey};
use talkwai_proto::Scope;
use talkwai_proto::sealed::{Opened, Opener, Sealer, aad};
use uuid::Uuid;

async fn store(h: &Harness, master: &str) -> KeyStore {
    let js = async_nats::jetstream::new(h.client.clone());
    KeyStore::open(
        &js,
        vec![MasterKey::from_base64(master).expect("a master key")],
        KeyStoreConfig::default(),
    )
    .await
    .expect("key store")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_export_and_destroy() {
    let h = Harness::start().await;
    let old = h.run(&["keys", "new-master"], &[]).await;
    assert_eq!(old.code, 0, "{}", old.stderr);
    let old = old.stdout.trim().to_owned();
    let new = h
        .run(&["keys", "new-master"], &[])
        .await
        .stdout
        .trim()
        .to_owned();
    assert_ne!(old, new);

    let tenant = Scope::Tenant(Uuid::new_v4().into());
    let key = store(&h, &old).await.take(tenant).await.expect("a key");
    let sealed = key.seal(&aad(key.id, "t", "f"), "marker");

    let no_master = h.run(&["keys", "export"], &[]).await;
    assert_eq!(no_master.code, 2, "no master key is a usage error");

    let rotated = h
        .run(
            &["keys", "rotate-master"],
            &[
                ("TALKWAI_MASTER_KEY", &new),
                ("TALKWAI_MASTER_KEY_PREVIOUS", &old),
            ],
        )
        .await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert!(
        rotated.stdout.contains("re-wrapped 1 "),
        "{}",
        rotated.stdout
    );
    let after = store(&h, &new).await;
    let ring = after.keyring([(tenant, key.id)]).await.expect("keyring");
    assert_eq!(
        ring.open(tenant, &sealed, &aad(key.id, "t", "f")),
        Ok(Opened::Plain("marker".into())),
        "the new master key alone opens what the old one wrapped"
    );

    let export = h
        .run(&["keys", "export"], &[("TALKWAI_MASTER_KEY", &new)])
        .await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let lines: Vec<serde_json::Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["name"] == talkwai_keys::entry_name(tenant, key.id)),
        "the data key's block is in the backup: {lines:?}"
    );

    let scope_text = tenant.tenant().map(|t| t.0.to_string()).unwrap_or_default();
    let key_text = key.id.to_string();
    let destroyed = h
        .run(
            &[
                "keys",
                "destroy",
                "--scope",
                &scope_text,
                "--key",
                &key_text,
            ],
            &[("TALKWAI_MASTER_KEY", &new)],
        )
        .await;
    assert_eq!(destroyed.code, 0, "{}", destroyed.stderr);
    let fresh = store(&h, &new).await;
    let ring = fresh.keyring([(tenant, key.id)]).await.expect("keyring");
    assert_eq!(
        ring.open(tenant, &sealed, &aad(key.id, "t", "f")),
        Ok(Opened::Erased)
    );
    h.stop().await;
}
