//! End-to-end tests live in `tests/e2e/`. They run the real binaries and servers as separate
//! processes and check the deployment files (`deploy/`, `docker-compose.yml`) the way CI can
//! without a Docker engine: by validating and parsing them. This library holds what several of
//! them share.

use std::path::Path;

/// `deploy/nats/auth.conf` as a nats-server config fragment, with fixed test passwords
/// (`command-pw`, `projector-pw`, `notifier-pw`, `query-pw`, `tenant-pw`, `operator-pw`) in
/// place of the `$TALKWAI_NATS_*_PASSWORD` variables the deployment sets.
pub fn auth_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/auth.conf");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    [
        ("$TALKWAI_NATS_COMMAND_PASSWORD", "\"command-pw\""),
        ("$TALKWAI_NATS_PROJECTOR_PASSWORD", "\"projector-pw\""),
        ("$TALKWAI_NATS_NOTIFIER_PASSWORD", "\"notifier-pw\""),
        ("$TALKWAI_NATS_QUERY_PASSWORD", "\"query-pw\""),
        ("$TALKWAI_NATS_TENANT_PASSWORD", "\"tenant-pw\""),
        ("$TALKWAI_NATS_OPERATOR_PASSWORD", "\"operator-pw\""),
    ]
    .iter()
    .fold(text, |text, (var, value)| text.replace(var, value))
}
