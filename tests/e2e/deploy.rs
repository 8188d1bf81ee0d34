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

/// Every document of every YAML file under `deploy/k8s`, with its file name.
fn k8s_documents() -> Vec<(String, serde_json::Value)> {
    use serde::Deserialize as _;
    let dir = repo_root().join("deploy/k8s");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read a manifest");
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            if !value.is_null() {
                out.push((name.clone(), value));
            }
        }
    }
    out
}

/// `[[bin]]` names declared by the workspace's crates, with the crate directory.
fn binaries() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("crates")).expect("crates") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let mut in_bin = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                out.push((name.trim_matches('"').to_owned(), dir.clone()));
            }
        }
    }
    out
}

/// Every Rust source text of the workspace's crates.
fn all_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    for entry in std::fs::read_dir(repo_root().join("crates")).expect("crates") {
        walk(&entry.expect("entry").path().join("src"), &mut out);
    }
    out
}

/// Mebibytes of a Kubernetes memory quantity (`150Mi`, `1Gi`).
fn mebibytes(quantity: &str) -> u64 {
    if let Some(n) = quantity.strip_suffix("Mi") {
        n.parse().expect("Mi quantity")
    } else if let Some(n) = quantity.strip_suffix("Gi") {
        n.parse::<u64>().expect("Gi quantity") * 1024
    } else {
        panic!("use Mi or Gi for memory, got {quantity}")
    }
}

#[test]
fn k8s_manifests_match_the_binaries_probes_env_and_resources() {
    let documents = k8s_documents();
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        documents
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d)
            .collect()
    };
    let secret_keys: Vec<String> = of_kind("Secret")
        .iter()
        .filter(|s| s["metadata"]["name"] == "talkwai-secrets")
        .flat_map(|s| {
            s["stringData"]
                .as_object()
                .expect("stringData")
                .keys()
                .cloned()
        })
        .collect();
    let config_keys: Vec<String> = of_kind("ConfigMap")
        .iter()
        .filter(|c| c["metadata"]["name"] == "talkwai-config")
        .flat_map(|c| c["data"].as_object().expect("data").keys().cloned())
        .collect();
    let external: Vec<&str> = of_kind("Service")
        .iter()
        .filter(|s| s["spec"]["type"] == "ExternalName")
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        external,
        ["nats", "postgres"],
        "NATS and PostgreSQL are external"
    );

    let telemetry =
        std::fs::read_to_string(repo_root().join("crates/talkwai-telemetry/src/ops.rs"))
            .expect("the ops endpoint's source");
    for (constant, path) in [("LIVEZ_PATH", "/livez"), ("READYZ_PATH", "/readyz")] {
        assert!(
            telemetry.contains(&format!("pub const {constant}: &str = \"{path}\";")),
            "the services serve {path}"
        );
    }
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("ARG BIN=")
            && dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/service\"]")
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let sources = all_sources();
    let binaries = binaries();
    // RSS targets per binary, MiB.
    let targets = [
        ("talkwai-command-service", 150),
        ("talkwai-projector", 250),
        ("talkwai-notifier", 100),
    ];
    let deployments = of_kind("Deployment");
    assert_eq!(
        deployments.len(),
        targets.len(),
        "one Deployment per service"
    );
    let budgets = of_kind("PodDisruptionBudget");
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().expect("name");
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in selector.as_object().expect("matchLabels") {
            assert_eq!(&labels[key], value, "{name}: the pods match the selector");
        }
        assert!(
            budgets
                .iter()
                .any(|b| &b["spec"]["selector"]["matchLabels"] == selector),
            "{name} has a PodDisruptionBudget"
        );
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{name}: one container");
        let container = &containers[0];

        // The image is the Dockerfile built for one of the workspace's binaries.
        let image = container["image"].as_str().expect("image");
        let repo = image.split(':').next().expect("image name");
        let binary = format!(
            "talkwai-{}",
            repo.strip_prefix("talkwai/").expect("talkwai/ image")
        );
        assert_eq!(
            binary, name,
            "{name}: the Deployment is named after its binary"
        );
        let (_, crate_dir) = binaries
            .iter()
            .find(|(b, _)| *b == binary)
            .unwrap_or_else(|| panic!("{image}: no binary {binary} in the workspace"));
        assert!(
            container.get("command").is_none(),
            "{name}: the image's entrypoint runs"
        );
        let main = std::fs::read_to_string(crate_dir.join("src/main.rs")).expect("main.rs");
        assert!(
            main.contains("env = \"TALKWAI_METRICS_ADDR\""),
            "{binary} reads TALKWAI_METRICS_ADDR"
        );

        // Every variable is one the services read and the README documents.
        let env = container["env"].as_array().expect("env");
        let mut metrics_addr = None;
        for var in env {
            let var_name = var["name"].as_str().expect("env name");
            if var_name != "RUST_LOG" {
                assert!(
                    sources.contains(&format!("env = \"{var_name}\"")),
                    "{name}: no service reads {var_name}"
                );
            }
            assert!(
                readme.contains(&format!("`{var_name}`")),
                "{name}: README does not document {var_name}"
            );
            if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert_eq!(var["valueFrom"]["secretKeyRef"]["name"], "talkwai-secrets");
                assert!(
                    secret_keys.iter().any(|k| k == key),
                    "{name}: secret key {key}"
                );
            }
            if let Some(key) = var["valueFrom"]["configMapKeyRef"]["key"].as_str() {
                assert!(
                    config_keys.iter().any(|k| k == key),
                    "{name}: config key {key}"
                );
            }
            if var_name == "TALKWAI_METRICS_ADDR" {
                metrics_addr = var["value"].as_str();
            }
        }
        let names: Vec<&str> = env.iter().filter_map(|v| v["name"].as_str()).collect();
        assert!(names.contains(&"TALKWAI_NATS_URL"), "{name}: NATS URL");
        if binary != "talkwai-notifier" {
            assert!(names.contains(&"TALKWAI_JWT_SECRET"), "{name}: JWT secret");
        }

        // The probes hit the ops port the service listens on.
        let ops_port: u64 = metrics_addr
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: TALKWAI_METRICS_ADDR with a port"));
        let ports = container["ports"].as_array().expect("ports");
        for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name}: {probe}");
            let port = ports
                .iter()
                .find(|p| p["name"] == get["port"] || p["containerPort"] == get["port"])
                .unwrap_or_else(|| panic!("{name}: {probe} port is not a container port"));
            assert_eq!(
                port["containerPort"], ops_port,
                "{name}: {probe} hits the ops port"
            );
        }

        // Memory: requested at the RSS target, limited above it.
        let (_, target) = targets
            .iter()
            .find(|(b, _)| *b == binary)
            .unwrap_or_else(|| panic!("no RSS target for {binary}"));
        let resources = &container["resources"];
        let request = mebibytes(
            resources["requests"]["memory"]
                .as_str()
                .expect("memory request"),
        );
        let limit = mebibytes(
            resources["limits"]["memory"]
                .as_str()
                .expect("memory limit"),
        );
        assert!(
            request <= *target && request * 10 >= target * 9,
            "{name}: request {request}Mi vs target {target}Mi"
        );
        assert!(
            limit >= request,
            "{name}: limit {limit}Mi below request {request}Mi"
        );
        assert!(
            resources["requests"]["cpu"].is_string(),
            "{name}: CPU request"
        );
    }
}
