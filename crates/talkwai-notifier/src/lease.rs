//! The lease that makes one notifier instance the active one.
//!
//! The key `leader` of the KV bucket `TALKWAI_NOTIFIER` names the instance holding it. Only
//! that instance turns the event log into room messages ([`crate::events`]) and runs the
//! periodic checks ([`crate::monitor`]); the others stand by, serving presence.
//!
//! - The holder rewrites the key every quarter of the TTL with `update` at the revision it
//!   last wrote, so two instances can never both believe they renewed it. A rewrite refused
//!   because the revision moved (someone took over), or no rewrite for a whole TTL (NATS
//!   unreachable), ends its term.
//! - A standby reads the key every quarter of the TTL. It takes the lease with `create` when
//!   the key is absent (first start, or released by a graceful stop) and with `update` at the
//!   revision it saw when that revision has not changed for a whole TTL on its own clock (the
//!   holder died or froze): no clocks are compared between machines. One exception: an
//!   instance that finds, at its very first read, the lease held under its own instance name
//!   (`TALKWAI_INSTANCE`, e.g. the pod name) is that holder restarted after a crash, and takes
//!   it at once instead of waiting out the TTL (were it a second live process with the same
//!   name, the other one would simply stand by).
//!
//! So after a SIGKILL or SIGSTOP of the holder a standby takes over within about 1.25 TTL, and
//! a holder restarted in place takes over as soon as it reads the lease.
//! The lease only decides who *works*; delivery order does not depend on it (see
//! [`crate::events`]): a frozen holder that wakes up still believing it holds the lease can
//! only repeat messages a client drops by `seq`.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use async_nats::jetstream::{self, kv};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::NotifierError;

/// The bucket holding the lease.
pub const BUCKET: &str = "TALKWAI_NOTIFIER";
/// Creates (or updates) the lease bucket (`limit_markers` kept from when the lease had a
/// server-side TTL, so the bucket of an earlier version needs no change).
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, NotifierError> {
    js.create_or_update_key_value(kv::Config {
        bucket: BUCKET.into(),
        description: "TalkwAI notifier lease".into(),
        history: 1,
        num_replicas: replicas.max(1),
        limit_markers: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await
    .map_err(NotifierError::js)
}

/// The lease key.
pub const LEADER_KEY: &str = "leader";

/// A term: the revision at which the lease was taken (a new one for every take-over).
pub type Term = u64;

/// Receives the current term: `Some` while this instance holds the lease.
pub type Leadership = watch::Receiver<Option<Term>>;

/// One instance's side of the lease.
pub struct Lease {
    kv: kv::Store,
    /// This instance: its configured name plus a random suffix.
    holder: String,
    /// Its configured name.
    instance: String,
    ttl: Duration,
    held: watch::Sender<Option<Term>>,
}

impl Lease {
    /// The lease of `bucket` for the instance named `instance`, with `ttl`; and the receiver
    /// that follows it.
    pub fn new(bucket: kv::Store, instance: &str, ttl: Duration) -> (Self, Leadership) {
        let (held, leadership) = watch::channel(None);
        let lease = Self {
            kv: bucket,
            holder: format!("{instance}/{}", uuid::Uuid::new_v4()),
            instance: instance.to_owned(),
            ttl: ttl.max(Duration::from_millis(100)),
            held,
        };
        (lease, leadership)
    }

    /// Holds or waits for the lease until `shutdown` flips; then releases it if held, so a
    /// standby takes over at its next read instead of a TTL later.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = State::Standby {
            seen: None,
            first: true,
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            state = self.round(state).await;
            let term = match state {
                State::Holding { term, .. } => Some(term),
                State::Standby { .. } => None,
            };
            self.held.send_if_modified(|held| {
                let changed = *held != term;
                *held = term;
                changed
            });
        }
        if let State::Holding { revision, .. } = state {
            self.held.send_replace(None);
            let _ = self
                .kv
                .delete_expect_revision(LEADER_KEY, Some(revision))
                .await;
            info!(holder = %self.holder, "released the notifier lease");
        }
    }

    /// One read or rewrite of the key.
    async fn round(&self, state: State) -> State {
        let value = self.holder.clone().into_bytes().into();
        match state {
            State::Holding {
                term,
                revision,
                renewed,
            } => match self.kv.update(LEADER_KEY, value, revision).await {
                Ok(revision) => State::Holding {
                    term,
                    revision,
                    renewed: Instant::now(),
                },
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                    warn!(holder = %self.holder, "another instance took the notifier lease");
                    State::Standby {
                        seen: None,
                        first: false,
                    }
                }
                Err(err) if renewed.elapsed() >= self.ttl => {
                    warn!(error = %err, holder = %self.holder, "could not renew the notifier lease within its ttl");
                    State::Standby {
                        seen: None,
                        first: false,
                    }
                }
                Err(_) => State::Holding {
                    term,
                    revision,
                    renewed,
                },
            },
            State::Standby { seen, first } => {
                let taken = match self.kv.entry(LEADER_KEY).await {
                    Ok(None) => self.kv.create(LEADER_KEY, value).await.ok(),
                    Ok(Some(entry)) if entry.operation != Operation::Put => {
                        self.kv.create(LEADER_KEY, value).await.ok()
                    }
                    Ok(Some(entry)) if first && self.held_by_this_name(&entry.value) => {
                        info!(holder = %self.holder, "the notifier lease was held under this instance's name: taking it back after a restart");
                        self.kv.update(LEADER_KEY, value, entry.revision).await.ok()
                    }
                    Ok(Some(entry)) => match seen {
                        Some((revision, since))
                            if revision == entry.revision && since.elapsed() >= self.ttl =>
                        {
                            self.kv.update(LEADER_KEY, value, revision).await.ok()
                        }
                        Some((revision, since)) if revision == entry.revision => {
                            return State::Standby {
                                seen: Some((revision, since)),
                                first: false,
                            };
                        }
                        _ => {
                            return State::Standby {
                                seen: Some((entry.revision, Instant::now())),
                                first: false,
                            };
                        }
                    },
                    Err(_) => None,
                };
                match taken {
                    Some(revision) => {
                        info!(holder = %self.holder, term = revision, "holding the notifier lease: this instance notifies and runs the checks");
                        State::Holding {
                            term: revision,
                            revision,
                            renewed: Instant::now(),
                        }
                    }
                    None => State::Standby { seen, first: false },
                }
            }
        }
    }

    /// Whether a lease value (`<instance>/<uuid>`) names this instance's configured name.
    fn held_by_this_name(&self, value: &[u8]) -> bool {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.rsplit_once('/'))
            .is_some_and(|(name, _)| name == self.instance)
    }
}

/// Where this instance stands.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Holding the lease since `term`, last written at `revision` (at `renewed`).
    Holding {
        term: Term,
        revision: u64,
        renewed: Instant,
    },
    /// Not holding it; the holder's revision and since when it has not changed; whether the
    /// lease was never read yet.
    Standby {
        seen: Option<(u64, Instant)>,
        first: bool,
    },
}
