//! The live generation's lag, exported as gauges.

use std::time::Duration;

use deadpool_postgres::Pool;
use talkwai_eventstore::EventStore;

use crate::status;

/// Exports the live generation's lag, checkpoint and open dead letters as gauges every 2 s
/// (`talkwai_projector_lag_events`, `talkwai_projector_lag_seconds`,
/// `talkwai_projector_dead_letters_open`, `talkwai_projector_stopped`).
pub(crate) async fn export_lag(pool: Pool, store: EventStore) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        ticker.tick().await;
        let Ok(conn) = pool.get().await else { continue };
        let Ok(statuses) = status::status(&conn, &store).await else {
            continue;
        };
        if let Some(live) = statuses.iter().find(|s| s.state == "live") {
            metrics::gauge!("talkwai_projector_lag_events").set(live.lag_events as f64);
            metrics::gauge!("talkwai_projector_lag_seconds").set(live.lag_seconds);
            metrics::gauge!("talkwai_projector_checkpoint").set(live.checkpoint as f64);
            metrics::gauge!("talkwai_projector_stream_head").set(live.head as f64);
            metrics::gauge!("talkwai_projector_dead_letters_open").set(live.dead_letters as f64);
            metrics::gauge!("talkwai_projector_stopped")
                .set(f64::from(u8::from(live.stopped.is_some())));
            metrics::gauge!("talkwai_projector_generation").set(f64::from(live.generation));
        }
    }
}
