//! Readiness of a projector process for `/readyz` (served with `/metrics` and `/livez` by
//! `talkwai_telemetry::ops::serve_ops`): NATS connected, JetStream answers, PostgreSQL answers,
//! and the live projection is caught up or applying.
//!
//! "Applying" means its checkpoint moved within [`STALL_AFTER`]; a projection stopped at a
//! poison event is not ready until `talkwai projections retry`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use std::future::Future;
use talkwai_eventstore::EventStore;

use talkwai_telemetry::ops::{Check, Liveness, Readiness};

use crate::status;
use crate::{Config, Projector, ProjectorError};

/// How long a lagging projection may go without applying anything and still count as ready.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// The last checkpoint seen by a probe and when it last moved (or was caught up).
#[derive(Debug, Default)]
struct Progress {
    checkpoint: u64,
    moved_at: Option<Instant>,
}

/// The readiness of a projector over `pool` and `store`.
pub fn readiness(pool: Pool, store: EventStore) -> Readiness {
    let progress = Arc::new(Mutex::new(Progress::default()));
    let client = store.client().clone();
    Readiness::new(move || {
        let pool = pool.clone();
        let store = store.clone();
        let progress = Arc::clone(&progress);
        async move {
            let conn = match pool.get().await {
                Ok(conn) => conn,
                Err(err) => {
                    return vec![
                        Check::fail("postgres", err.to_string()),
                        Check::fail("projection", "postgres is unreachable"),
                    ];
                }
            };
            if let Err(err) = conn.simple_query("SELECT 1").await {
                return vec![
                    Check::fail("postgres", err.to_string()),
                    Check::fail("projection", "postgres is unreachable"),
                ];
            }
            let projection = match status::status(&conn, &store).await {
                Ok(statuses) => match statuses.iter().find(|s| s.state == "live") {
                    Some(live) => judge(
                        &progress,
                        live.checkpoint,
                        live.lag_events,
                        live.stopped.as_deref(),
                    ),
                    None => Check::fail("projection", "no live generation yet"),
                },
                Err(err) => Check::fail("projection", err.to_string()),
            };
            vec![Check::pass("postgres"), projection]
        }
    })
    .with_nats(client)
}

impl talkwai_service::binary::Service for Projector {
    type Config = Config;
    type Error = ProjectorError;
    const BINARY: &'static str = "talkwai-projector";
    const ABOUT: &'static str = "TalkwAI projection service: the PostgreSQL read models";

    async fn build(config: Config) -> Result<Self, ProjectorError> {
        Self::build(config).await
    }

    fn readiness(&self) -> Readiness {
        readiness(self.pool().clone(), self.store().clone())
    }

    fn liveness(&self) -> Liveness {
        self.liveness()
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProjectorError> {
        self.run(shutdown).await
    }
}

/// Caught up, or applying (the checkpoint moved within [`STALL_AFTER`]), and not stopped.
fn judge(progress: &Mutex<Progress>, checkpoint: u64, lag: u64, stopped: Option<&str>) -> Check {
    if let Some(reason) = stopped {
        return Check::fail("projection", format!("stopped: {reason}"));
    }
    let now = Instant::now();
    let Ok(mut seen) = progress.lock() else {
        return Check::fail("projection", "progress lock poisoned");
    };
    if lag == 0 || seen.moved_at.is_none() || checkpoint != seen.checkpoint {
        seen.checkpoint = checkpoint;
        seen.moved_at = Some(now);
    }
    let idle = seen.moved_at.map_or(Duration::ZERO, |at| now - at);
    if lag > 0 && idle > STALL_AFTER {
        return Check::fail(
            "projection",
            format!(
                "{lag} events behind and checkpoint {checkpoint} has not moved for {}s",
                idle.as_secs()
            ),
        );
    }
    Check {
        name: "projection",
        ok: true,
        detail: format!("checkpoint {checkpoint}, {lag} behind"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_projection_is_not_ready() {
        let progress = Mutex::new(Progress::default());
        assert!(!judge(&progress, 5, 3, Some("poison at 6")).ok);
    }

    #[test]
    fn a_lagging_projection_is_ready_while_it_moves_and_not_when_it_stalls() {
        let progress = Mutex::new(Progress::default());
        assert!(
            judge(&progress, 5, 100, None).ok,
            "first sight counts as moving"
        );
        assert!(judge(&progress, 50, 55, None).ok, "moved");
        if let Ok(mut seen) = progress.lock() {
            seen.moved_at = Instant::now().checked_sub(STALL_AFTER + Duration::from_secs(1));
        }
        assert!(!judge(&progress, 50, 55, None).ok, "stalled");
        assert!(judge(&progress, 105, 0, None).ok, "caught up");
    }
}
