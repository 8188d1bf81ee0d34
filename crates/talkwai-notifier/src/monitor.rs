//! Periodic system alerts: projection lag (from the projector consumers' JetStream info) and
//! service instances that stop answering `$SRV.PING`. Only the active instance (the one holding
//! the lease of [`crate::lease`]) checks, so each alert is raised once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::json;
use talkwai_proto::room::{AlertKind, SystemAlert};
use tokio::sync::watch;
use tracing::warn;

use crate::derive::system_alerts_subject;
use crate::events::now_ms;
use crate::lease::Leadership;
use crate::{Config, NotifierError};

/// Prefix of the projector's consumers.
pub const PROJECTOR_PREFIX: &str = "talkwai-projector-g";
/// How long a ping waits for answers.
const PING_WAIT: Duration = Duration::from_millis(300);
/// Missed pings before an instance is reported gone.
const MISSES: u32 = 2;

/// The checks and what they remember between rounds.
pub struct Monitor {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Whether this instance is the active one.
    leadership: Leadership,
    interval: Duration,
    lag_threshold: u64,
    stream: String,
    service: String,
    /// Projector consumers currently reported as lagging (re-armed when they catch up).
    lagging: HashSet<String>,
    /// Service instances seen answering, with their missed pings in a row.
    instances: HashMap<String, u32>,
}

impl Monitor {
    /// A monitor for the event stream `stream`, with the thresholds of `config`, checking
    /// while `leadership` says this instance is the active one.
    pub fn new(
        client: async_nats::Client,
        leadership: Leadership,
        stream: &str,
        config: &Config,
    ) -> Self {
        let interval = Duration::from_millis(config.check_interval_ms.max(100));
        Self {
            js: jetstream::new(client.clone()),
            client,
            leadership,
            interval,
            lag_threshold: config.projection_lag_threshold,
            stream: stream.to_owned(),
            service: config.watched_service.clone(),
            lagging: HashSet::new(),
            instances: HashMap::new(),
        }
    }

    /// Checks every interval while holding the lease, until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), NotifierError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            if self.leadership.borrow().is_none() {
                // Someone else checks; start fresh if the lease comes back.
                self.instances.clear();
                self.lagging.clear();
                continue;
            }
            for alert in self
                .check_lag()
                .await
                .into_iter()
                .chain(self.check_services().await)
            {
                let body = serde_json::to_vec(&alert).unwrap_or_default();
                if let Err(err) = self
                    .client
                    .publish(system_alerts_subject(), body.into())
                    .await
                {
                    warn!(error = %err, "cannot publish an alert");
                }
            }
        }
        Ok(())
    }

    async fn check_lag(&mut self) -> Vec<SystemAlert> {
        let mut alerts = Vec::new();
        let Ok(stream) = self.js.get_stream(&self.stream).await else {
            return alerts;
        };
        let mut consumers = stream.consumers();
        let mut seen = HashSet::new();
        while let Some(Ok(info)) = consumers.next().await {
            if !info.name.starts_with(PROJECTOR_PREFIX) {
                continue;
            }
            let pending = info.num_pending + info.num_ack_pending as u64;
            seen.insert(info.name.clone());
            if pending <= self.lag_threshold {
                self.lagging.remove(&info.name);
                continue;
            }
            if self.lagging.insert(info.name.clone()) {
                let mut details = serde_json::Map::new();
                details.insert("consumer".into(), json!(info.name));
                details.insert("pending".into(), json!(pending));
                details.insert("threshold".into(), json!(self.lag_threshold));
                alerts.push(SystemAlert {
                    kind: AlertKind::ProjectionLag,
                    tenant_id: None,
                    message: format!("projector {} is {pending} events behind", info.name),
                    details,
                    timestamp: now_ms(),
                    seq: None,
                });
            }
        }
        self.lagging.retain(|name| seen.contains(name));
        alerts
    }

    async fn check_services(&mut self) -> Vec<SystemAlert> {
        let mut alerts = Vec::new();
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            return alerts;
        };
        if self
            .client
            .publish_with_reply(format!("$SRV.PING.{}", self.service), inbox, "".into())
            .await
            .is_err()
        {
            return alerts;
        }
        let mut answered = HashSet::new();
        let deadline = tokio::time::Instant::now() + PING_WAIT;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
            if let Some(id) = serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
            {
                answered.insert(id);
            }
        }
        let _ = replies.unsubscribe().await;
        for id in &answered {
            self.instances.insert(id.clone(), 0);
        }
        let mut gone = Vec::new();
        for (id, misses) in &mut self.instances {
            if !answered.contains(id) {
                *misses += 1;
                if *misses >= MISSES {
                    gone.push(id.clone());
                }
            }
        }
        for id in gone {
            self.instances.remove(&id);
            let mut details = serde_json::Map::new();
            details.insert("service".into(), json!(self.service));
            details.insert("instance".into(), json!(id));
            alerts.push(SystemAlert {
                kind: AlertKind::ServiceInstanceGone,
                tenant_id: None,
                message: format!("{} instance {id} stopped answering", self.service),
                details,
                timestamp: now_ms(),
                seq: None,
            });
        }
        alerts
    }
}
