//! Deployment files are checked without a Docker engine: every NATS config passes
//! `nats-server -t`, and the compose file parses and wires what it should.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The environment variables `deploy/nats/auth.conf` takes its passwords from.
const PASSWORDS: [&str; 5] = [
    "TALKWAI_NATS_COMMAND_PASSWORD",
    "TALKWAI_NATS_PROJECTOR_PASSWORD",
    "TALKWAI_NATS_NOTIFIER_PASSWORD",
    "TALKWAI_NATS_TENANT_PASSWORD",
    "TALKWAI_NATS_OPERATOR_PASSWORD",
];

#[test]
fn every_nats_config_is_valid_for_the_pinned_server() {
    let binary = talkwai_testkit::discover::nats_server_binary().expect("nats-server installed");
    let dir = repo_root().join("deploy/nats");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/nats") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let out = Command::new(&binary)
            .envs(PASSWORDS.iter().map(|name| (*name, "test-password")))
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run nats-server -t");
        assert!(
            out.status.success(),
            "{} is invalid: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "single-node and 3 cluster configs are checked ({checked})"
    );
}

#[test]
fn single_node_config_fsyncs_every_write() {
    let text = std::fs::read_to_string(repo_root().join("deploy/nats/single.conf")).expect("read");
    assert!(text.lines().any(|l| l.trim() == "sync_interval: always"));
}

#[test]
fn compose_file_runs_nats_postgres_and_the_services() {
    let text =
        std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("read compose");
    let doc: serde_json::Value = serde_norway::from_str(&text).expect("compose parses as YAML");
    let services = doc["services"].as_object().expect("services");
    for name in ["nats", "postgres", "command-service"] {
        assert!(services.contains_key(name), "compose runs {name}");
    }
    assert_eq!(
        services["nats"]["image"], "nats:2.15.1",
        "the pinned nats-server version"
    );
    let volumes = services["nats"]["volumes"]
        .as_array()
        .expect("nats volumes");
    assert!(volumes.iter().any(|v| {
        v.as_str()
            .is_some_and(|v| v.starts_with("./deploy/nats/single.conf"))
    }));
    let env = &services["command-service"]["environment"];
    assert!(
        env["TALKWAI_NATS_URL"]
            .as_str()
            .is_some_and(|u| u.ends_with("@nats:4222"))
    );
    // Every file a service mounts exists.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let Some(source) = volume.as_str().and_then(|v| v.split(':').next()) else {
                continue;
            };
            if source.starts_with("./") {
                assert!(
                    repo_root().join(source).exists(),
                    "{name} mounts missing {source}"
                );
            }
        }
    }
}
