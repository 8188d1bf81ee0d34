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
const PASSWORDS: [&str; 6] = [
    "TALKWAI_NATS_COMMAND_PASSWORD",
    "TALKWAI_NATS_PROJECTOR_PASSWORD",
    "TALKWAI_NATS_NOTIFIER_PASSWORD",
    "TALKWAI_NATS_QUERY_PASSWORD",
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
        ("talkwai-query-service", 100),
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
        assert!(
            binaries.iter().any(|(b, _)| *b == binary),
            "{image}: no binary {binary} in the workspace"
        );
        assert!(
            container.get("command").is_none(),
            "{name}: the image's entrypoint runs"
        );
        assert!(
            binary_variables(&binary).contains_key("TALKWAI_METRICS_ADDR"),
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
        // Every service that verifies tokens; the projector verifies none.
        if binary != "talkwai-projector" {
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

/// Variables deliberately set in `deploy/k8s` and not in `docker-compose.yml`, with why.
const ONLY_IN_K8S: &[(&str, &str)] = &[(
    "TALKWAI_INSTANCE",
    "the pod name; compose replicas have no name of their own and keep the binary's default \
     (a label: the notifier's lease adds a unique id)",
)];

/// Variables deliberately set in `docker-compose.yml` and not in `deploy/k8s`, with why.
const ONLY_IN_COMPOSE: &[(&str, &str)] = &[];

/// Variables every service must be given in both files although clap gives them a default or
/// makes them optional: the default NATS URL is 127.0.0.1 (never right in a container) and the
/// probes need the ops address.
const DEPLOY_REQUIRED: [&str; 2] = ["TALKWAI_NATS_URL", "TALKWAI_METRICS_ADDR"];

/// Per binary, variables it must be given besides [`DEPLOY_REQUIRED`] and its clap-required
/// ones: without the JWT secret no member can use a service that verifies tokens (all but the
/// projector, which verifies none), and the platform token is the operators' way in.
const DEPLOY_REQUIRED_FOR: &[(&str, &str)] = &[
    ("talkwai-command-service", "TALKWAI_JWT_SECRET"),
    ("talkwai-command-service", "TALKWAI_PLATFORM_TOKEN"),
    ("talkwai-notifier", "TALKWAI_JWT_SECRET"),
    ("talkwai-query-service", "TALKWAI_JWT_SECRET"),
    ("talkwai-query-service", "TALKWAI_PLATFORM_TOKEN"),
];

/// The workspace's binaries that are not services, with why; every other binary is deployed
/// (a Deployment in `deploy/k8s`, a service in `docker-compose.yml`).
const NOT_DEPLOYED: &[(&str, &str)] = &[
    ("talkwai", "the operator CLI, run by people and scripts"),
    ("talkwai-bench", "the benchmarks, run by CI and engineers"),
];

/// The `TALKWAI_*` variables a binary reads, each with whether clap requires it: its library
/// `Config` through clap's own definitions (flattened groups such as `talkwai_auth::AuthArgs`
/// included), plus the ops address of `talkwai_service::binary` when its `main.rs` runs the
/// service through it, and any `env = "..."` argument of its `main.rs` (all optional).
fn binary_variables(binary: &str) -> std::collections::BTreeMap<String, bool> {
    use clap::Args as _;
    let command = clap::Command::new("service");
    let command = match binary {
        "talkwai-command-service" => talkwai_command_service::Config::augment_args(command),
        "talkwai-projector" => talkwai_projector::Config::augment_args(command),
        "talkwai-notifier" => talkwai_notifier::Config::augment_args(command),
        "talkwai-query-service" => talkwai_query::Config::augment_args(command),
        other => panic!("no clap configuration known for {other}: add it here"),
    };
    let mut out = std::collections::BTreeMap::new();
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            let name = env.to_string_lossy().into_owned();
            let required = arg.is_required_set() && arg.get_default_values().is_empty();
            out.insert(name, required);
        }
    }
    let (_, dir) = binaries()
        .into_iter()
        .find(|(b, _)| b == binary)
        .unwrap_or_else(|| panic!("no binary {binary} in the workspace"));
    let main = std::fs::read_to_string(dir.join("src/main.rs")).expect("main.rs");
    for piece in main.split("env = \"").skip(1) {
        let name = piece.split('"').next().expect("an env name");
        out.entry(name.to_owned()).or_insert(false);
    }
    // A `main.rs` that is `talkwai_service::binary::run::<S>()` also reads its `OpsArgs`.
    if main.contains("talkwai_service::binary::run::<") {
        let ops = talkwai_service::binary::OpsArgs::augment_args(clap::Command::new("ops"));
        for arg in ops.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.entry(env.to_string_lossy().into_owned())
                    .or_insert(false);
            }
        }
    }
    out
}

/// The NATS user of a `nats://user:password@host:port` URL.
fn nats_user(url: &str) -> String {
    let rest = url
        .strip_prefix("nats://")
        .unwrap_or_else(|| panic!("{url}: a nats:// URL"));
    let (credentials, _) = rest
        .split_once('@')
        .unwrap_or_else(|| panic!("{url}: credentials user:password@ in the URL"));
    let (user, _) = credentials
        .split_once(':')
        .unwrap_or_else(|| panic!("{url}: user:password"));
    user.to_owned()
}

/// The users of `deploy/nats/auth.conf`: (user, password variable, permissions name).
fn nats_users() -> Vec<(String, String, Option<String>)> {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/nats/auth.conf")).expect("auth.conf");
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}:"))? + key.len() + 1;
        let value = line[start..]
            .trim_start()
            .split([',', ' ', '}'])
            .next()?
            .to_owned();
        Some(value)
    };
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("{ user:"))
        .map(|l| {
            let user = field(l, "user").expect("user");
            let password = field(l, "password").expect("password");
            let password = password
                .strip_prefix('$')
                .unwrap_or_else(|| panic!("{user}: the password comes from a variable"))
                .to_owned();
            let permissions = field(l, "permissions").map(|p| p.trim_start_matches('$').to_owned());
            (user, password, permissions)
        })
        .collect()
}

/// One service as a deployment file runs it.
#[derive(Debug)]
struct Deployed {
    /// `TALKWAI_*` variables and the values given (a literal, `secret:<key>` or `config:<key>`).
    env: std::collections::BTreeMap<String, String>,
    /// The NATS user of its `TALKWAI_NATS_URL`.
    nats_user: String,
    /// The port of its `TALKWAI_METRICS_ADDR`, if set.
    ops_port: Option<u16>,
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: host:port"))
}

fn compose_services() -> (
    serde_json::Value,
    std::collections::BTreeMap<String, Deployed>,
) {
    let text =
        std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("read compose");
    let doc: serde_json::Value = serde_norway::from_str(&text).expect("compose parses as YAML");
    let mut out = std::collections::BTreeMap::new();
    for (name, service) in doc["services"].as_object().expect("services") {
        let Some(binary) = service["build"]["args"]["BIN"].as_str() else {
            continue;
        };
        let env: std::collections::BTreeMap<String, String> = service["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("compose {name}: environment as a map"))
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => panic!("compose {name}: quote {k}'s value {other}"),
                };
                (k.clone(), value)
            })
            .filter(|(k, _)| k.starts_with("TALKWAI_"))
            .collect();
        let url = env
            .get("TALKWAI_NATS_URL")
            .unwrap_or_else(|| panic!("compose {name}: TALKWAI_NATS_URL"));
        let deployed = Deployed {
            nats_user: nats_user(url),
            ops_port: env.get("TALKWAI_METRICS_ADDR").map(|a| port_of(a)),
            env,
        };
        assert_eq!(
            format!("talkwai-{name}"),
            binary,
            "compose service {name} is named after its binary (as the k8s Deployment)"
        );
        out.insert(binary.to_owned(), deployed);
    }
    (doc, out)
}

fn k8s_services() -> std::collections::BTreeMap<String, Deployed> {
    let documents = k8s_documents();
    let secrets: serde_json::Map<String, serde_json::Value> = documents
        .iter()
        .filter(|(_, d)| d["kind"] == "Secret" && d["metadata"]["name"] == "talkwai-secrets")
        .flat_map(|(_, d)| d["stringData"].as_object().expect("stringData").clone())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for (_, deployment) in documents.iter().filter(|(_, d)| d["kind"] == "Deployment") {
        let name = deployment["metadata"]["name"].as_str().expect("name");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut env = std::collections::BTreeMap::new();
        for var in container["env"].as_array().expect("env") {
            let var_name = var["name"].as_str().expect("env name");
            if !var_name.starts_with("TALKWAI_") {
                continue;
            }
            let value = if let Some(v) = var["value"].as_str() {
                v.to_owned()
            } else if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
                format!("secret:{key}")
            } else if let Some(key) = var["valueFrom"]["configMapKeyRef"]["key"].as_str() {
                format!("config:{key}")
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                format!("field:{path}")
            } else {
                panic!("{name}: {var_name} has no value I understand")
            };
            env.insert(var_name.to_owned(), value);
        }
        let url_key = env
            .get("TALKWAI_NATS_URL")
            .and_then(|v| v.strip_prefix("secret:"))
            .unwrap_or_else(|| panic!("{name}: TALKWAI_NATS_URL from the Secret"));
        let url = secrets[url_key].as_str().expect("a URL");
        let deployed = Deployed {
            nats_user: nats_user(url),
            ops_port: env.get("TALKWAI_METRICS_ADDR").map(|a| port_of(a)),
            env,
        };
        out.insert(name.to_owned(), deployed);
    }
    out
}

#[test]
fn compose_and_k8s_run_the_same_services_variables_and_nats_users() {
    let (compose, in_compose) = compose_services();
    let in_k8s = k8s_services();
    let names = |m: &std::collections::BTreeMap<String, Deployed>| -> Vec<String> {
        m.keys().cloned().collect()
    };
    assert_eq!(
        names(&in_compose),
        names(&in_k8s),
        "docker-compose.yml and deploy/k8s run the same services"
    );
    let mut workspace_binaries: Vec<String> = binaries()
        .into_iter()
        .map(|(b, _)| b)
        .filter(|b| !NOT_DEPLOYED.iter().any(|(n, _)| n == b))
        .collect();
    workspace_binaries.sort();
    assert_eq!(
        names(&in_k8s),
        workspace_binaries,
        "every service binary is deployed"
    );

    let users = nats_users();
    let service_users: Vec<&str> = users
        .iter()
        .filter(|(_, _, p)| p.as_deref().is_some_and(|p| !p.starts_with("TENANT")))
        .map(|(u, _, _)| u.as_str())
        .collect();
    let nats_env = compose["services"]["nats"]["environment"]
        .as_object()
        .expect("the nats service's environment");
    let postgres_env = &compose["services"]["postgres"]["environment"];

    let allowed = |list: &[(&str, &str)], var: &str| list.iter().any(|(v, _)| *v == var);
    for (binary, k8s) in &in_k8s {
        let compose_service = &in_compose[binary];
        let reads = binary_variables(binary);

        // The same variables in both, but for the documented exceptions.
        for var in k8s.env.keys() {
            assert!(
                compose_service.env.contains_key(var) || allowed(ONLY_IN_K8S, var),
                "{binary}: {var} is set in deploy/k8s but not in docker-compose.yml"
            );
        }
        for var in compose_service.env.keys() {
            assert!(
                k8s.env.contains_key(var) || allowed(ONLY_IN_COMPOSE, var),
                "{binary}: {var} is set in docker-compose.yml but not in deploy/k8s"
            );
            assert!(
                reads.contains_key(var),
                "{binary} does not read {var} (compose)"
            );
        }
        // What the binary needs is set in both.
        let required = reads
            .iter()
            .filter(|(_, required)| **required)
            .map(|(v, _)| v.as_str())
            .chain(DEPLOY_REQUIRED)
            .chain(
                DEPLOY_REQUIRED_FOR
                    .iter()
                    .filter(|(b, _)| b == binary)
                    .map(|(_, v)| *v),
            );
        for var in required {
            assert!(
                reads.contains_key(var),
                "{binary} does not read the required {var}"
            );
            assert!(
                k8s.env.contains_key(var),
                "{binary}: deploy/k8s misses {var}"
            );
            assert!(
                compose_service.env.contains_key(var),
                "{binary}: docker-compose.yml misses {var}"
            );
        }

        // The same NATS user, one auth.conf grants, with its password variable.
        assert_eq!(
            compose_service.nats_user, k8s.nats_user,
            "{binary}: the same NATS user in both"
        );
        let (user, password_var, _) = users
            .iter()
            .find(|(u, _, _)| *u == k8s.nats_user)
            .unwrap_or_else(|| panic!("{binary}: NATS user {} is not in auth.conf", k8s.nats_user));
        let url = &compose_service.env["TALKWAI_NATS_URL"];
        assert!(
            url.starts_with(&format!("nats://{user}:${{{password_var}:-"))
                && url.ends_with("@nats:4222"),
            "{binary}: compose connects as {user} with ${password_var} to nats: {url}"
        );
        let nats_default = nats_env
            .get(password_var)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("the nats service sets {password_var}"));
        assert!(
            url.contains(nats_default.trim_end_matches('}').trim_start_matches("${")),
            "{binary}: the same development password as the nats service: {url} vs {nats_default}"
        );

        // The ops port: the same in both, and compose's health check asks /readyz there.
        assert_eq!(
            compose_service.ops_port, k8s.ops_port,
            "{binary}: the ops port"
        );
        let ops_port = k8s.ops_port.expect("the ops port is required");
        let name = binary.strip_prefix("talkwai-").expect("talkwai- binary");
        let service = &compose["services"][name];
        let check = service["healthcheck"]["test"]
            .as_array()
            .unwrap_or_else(|| panic!("compose {name}: a health check"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            check.contains(&format!("/dev/tcp/127.0.0.1/{ops_port} "))
                && check.contains("GET /readyz "),
            "compose {name}: the health check asks /readyz on the ops port: {check}"
        );
        assert_eq!(
            service["depends_on"]["nats"]["condition"], "service_healthy",
            "compose {name} starts once NATS is healthy"
        );
        if let Some(database) = compose_service.env.get("TALKWAI_DATABASE_URL") {
            let user = postgres_env["POSTGRES_USER"]
                .as_str()
                .expect("POSTGRES_USER");
            let db = postgres_env["POSTGRES_DB"].as_str().expect("POSTGRES_DB");
            let password = postgres_env["POSTGRES_PASSWORD"]
                .as_str()
                .expect("password");
            assert_eq!(
                database,
                &format!("postgres://{user}:{password}@postgres:5432/{db}"),
                "compose {name}: the database of the postgres service"
            );
            assert_eq!(
                service["depends_on"]["postgres"]["condition"], "service_healthy",
                "compose {name} starts once PostgreSQL is healthy"
            );
            assert_eq!(k8s.env["TALKWAI_DATABASE_URL"], "secret:database-url");
        }
    }

    // Every service user of auth.conf is used by a service, in both files.
    let mut used: Vec<&str> = in_k8s.values().map(|d| d.nats_user.as_str()).collect();
    used.sort_unstable();
    let mut granted = service_users.clone();
    granted.sort_unstable();
    assert_eq!(
        used, granted,
        "each service user of auth.conf runs one service"
    );

    // One JWT secret and one platform token for every service.
    for var in ["TALKWAI_JWT_SECRET", "TALKWAI_PLATFORM_TOKEN"] {
        let mut compose_values: Vec<&String> =
            in_compose.values().filter_map(|d| d.env.get(var)).collect();
        compose_values.dedup();
        assert_eq!(
            compose_values.len(),
            1,
            "compose: one {var}: {compose_values:?}"
        );
        let mut k8s_values: Vec<&String> = in_k8s.values().filter_map(|d| d.env.get(var)).collect();
        k8s_values.dedup();
        assert_eq!(k8s_values.len(), 1, "k8s: one {var}: {k8s_values:?}");
    }
}

/// The health check compose runs in the service images (bash's `/dev/tcp`, no curl there)
/// passes against a ready ops endpoint and fails against a not-ready one.
#[tokio::test]
async fn the_compose_health_check_follows_readyz() {
    use talkwai_telemetry::ops::{Check, Readiness, serve_ops};
    let (compose, in_compose) = compose_services();
    let (binary, deployed) = in_compose.iter().next().expect("a service");
    let name = binary.strip_prefix("talkwai-").expect("talkwai- binary");
    let test = compose["services"][name]["healthcheck"]["test"]
        .as_array()
        .expect("health check");
    assert_eq!(test[0], "CMD", "exec form: no shell in between");
    let argv: Vec<String> = test[1..]
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    let run = |port: u16| {
        let ops_port = deployed.ops_port.expect("an ops port");
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace(&format!("/{ops_port}"), &format!("/{port}")))
            .collect();
        async move {
            // compose gives the check 3 s (`timeout`); a hang counts as unhealthy here too.
            let output = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .kill_on_drop(true)
                .output();
            match tokio::time::timeout(std::time::Duration::from_secs(10), output).await {
                Ok(output) => output.expect("run the health check").status.success(),
                Err(_) => false,
            }
        }
    };
    let ready = serve_ops("127.0.0.1:0".parse().expect("addr"), Readiness::always())
        .await
        .expect("ops endpoint");
    assert!(run(ready.local_addr().port()).await, "healthy when ready");
    let not_ready = serve_ops(
        "127.0.0.1:0".parse().expect("addr"),
        Readiness::new(|| async { vec![Check::fail("nats", "down")] }),
    )
    .await
    .expect("ops endpoint");
    assert!(
        !run(not_ready.local_addr().port()).await,
        "unhealthy when not ready"
    );
    let closed = not_ready.local_addr().port();
    drop(not_ready);
    drop(ready);
    // The accept loops end at the runtime's next turn.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!run(closed).await, "unhealthy when nothing listens");
}

/// The query API is a service of its own: the projector's crate does not depend on the query
/// crate, its binary reads no query or token setting, and its NATS user may neither take query
/// requests nor publish live-query updates (the query service's user may).
#[test]
fn the_projector_does_not_serve_queries() {
    let manifest = std::fs::read_to_string(repo_root().join("crates/talkwai-projector/Cargo.toml"))
        .expect("the projector's manifest");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    assert!(
        !dependencies
            .lines()
            .any(|l| l.trim_start().starts_with("talkwai-query")),
        "talkwai-projector depends on talkwai-query:\n{dependencies}"
    );
    let reads = binary_variables("talkwai-projector");
    for var in [
        "TALKWAI_QUERY_MAX_ROWS",
        "TALKWAI_JWT_SECRET",
        "TALKWAI_PLATFORM_TOKEN",
    ] {
        assert!(!reads.contains_key(var), "the projector reads {var}");
    }
    let queries = binary_variables("talkwai-query-service");
    for var in [
        "TALKWAI_QUERY_MAX_ROWS",
        "TALKWAI_DATABASE_URL",
        "TALKWAI_JWT_SECRET",
    ] {
        assert!(queries.contains_key(var), "the query service reads {var}");
    }
    let conf =
        std::fs::read_to_string(repo_root().join("deploy/nats/auth.conf")).expect("auth.conf");
    let role = |name: &str| -> String {
        let start = conf
            .find(&format!("  {name} = {{"))
            .unwrap_or_else(|| panic!("auth.conf has no role {name}"));
        let end = conf[start..].find("\n  }").expect("the role closes") + start;
        conf[start..end].to_owned()
    };
    assert!(
        !role("PROJECTOR").contains("talkwai.qry"),
        "the projector's NATS user has query subjects: {}",
        role("PROJECTOR")
    );
    let query = role("QUERY");
    for subject in ["talkwai.qry.>", "talkwai.qry.*.live.>"] {
        assert!(
            query.contains(&format!("\"{subject}\"")),
            "QUERY grants {subject}"
        );
    }
    assert!(
        !query.contains("$JS.") && !query.contains("talkwai.evt"),
        "the query service's NATS user has no JetStream or events: {query}"
    );
}
