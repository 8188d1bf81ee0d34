//! `deadLetter` system alerts for the admin room.

use tracing::warn;

use crate::{Projector, apply};

impl Projector {
    /// Raises a `deadLetter` system alert in the admin room for every event dead-lettered by
    /// a committed batch (best effort: the dead-letter table is the record).
    pub(crate) async fn alert_dead_letters(&self, outcome: &apply::BatchOutcome) {
        let stopped = outcome.stopped_at.iter().map(|p| (p, true));
        for (poison, stop) in outcome.skipped.iter().map(|p| (p, false)).chain(stopped) {
            let mut details = serde_json::Map::new();
            details.insert("seq".into(), poison.seq.into());
            details.insert("subject".into(), poison.subject.clone().into());
            details.insert("error".into(), poison.error.clone().into());
            details.insert("stopped".into(), stop.into());
            let tenant_id = match talkwai_proto::EventSubject::parse(&poison.subject) {
                Ok(talkwai_proto::EventSubject::Aggregate(target)) => target.tenant,
                _ => None,
            };
            let alert = talkwai_proto::room::SystemAlert {
                kind: talkwai_proto::room::AlertKind::DeadLetter,
                tenant_id,
                message: format!(
                    "projector dead-lettered event {} ({})",
                    poison.seq, poison.subject
                ),
                details,
                timestamp: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                seq: Some(poison.seq),
            };
            let subject = talkwai_proto::subject::room_topic("admin", "global", "systemAlerts");
            match serde_json::to_vec(&alert) {
                Ok(bytes) => {
                    if let Err(err) = self.store.client().publish(subject, bytes.into()).await {
                        warn!(error = %err, "cannot publish the dead-letter alert");
                    }
                }
                Err(err) => warn!(error = %err, "cannot encode the dead-letter alert"),
            }
        }
    }
}
