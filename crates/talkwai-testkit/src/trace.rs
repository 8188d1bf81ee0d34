//! Reading a nats-server protocol trace (`trace: true`): which subjects clients published.

use std::collections::BTreeSet;

/// Every subject a client published (`PUB` / `HPUB` received by the server, `<<-` lines) in a
/// nats-server trace log.
pub fn published_subjects(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| {
            let (_, op) = line.split_once("<<- [")?;
            let mut tokens = op.split_whitespace();
            match tokens.next()? {
                "PUB" | "HPUB" => tokens.next().map(|s| s.trim_end_matches(']').to_owned()),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_published_subjects_and_nothing_else() {
        let log = r#"[1] 2026/12/06 02:40:00.123 [TRC] 127.0.0.1:5555 - cid:7 - "v0.51.0:rust:svc" - <<- [HPUB talkwai.cmd.platform.user.create _INBOX.a.b 95 300]
[1] 2026/12/06 02:40:00.124 [TRC] 127.0.0.1:5555 - cid:7 - "v0.51.0:rust:svc" - <<- MSG_PAYLOAD: ["{\"id\":..."]
[1] 2026/12/06 02:40:00.125 [TRC] 127.0.0.1:5556 - wid:9 - "v3:nats.ws" - <<- [PUB _INBOX.x.y 12]
[1] 2026/12/06 02:40:00.126 [TRC] 127.0.0.1:5556 - cid:8 - <<- [SUB talkwai.room.> 1]
[1] 2026/12/06 02:40:00.127 [TRC] 127.0.0.1:5556 - cid:8 - ->> [MSG talkwai.room.tenant.x.topic.t 1 12]
[1] 2026/12/06 02:40:00.128 [INF] Server is ready"#;
        let subjects: Vec<String> = published_subjects(log).into_iter().collect();
        assert_eq!(subjects, ["_INBOX.x.y", "talkwai.cmd.platform.user.create"]);
    }
}
