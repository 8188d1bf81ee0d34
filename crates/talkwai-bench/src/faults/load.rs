//! The outside client of the fault suite: task lifecycles (`task.create`, then `task.start`,
//! then `task.complete`) started at a fixed rate, each command sent again — with the same
//! `Talkwai-Command-Id` — after no reply within [`ATTEMPT_TIMEOUT`] or a retryable refusal
//! (`unavailable`, `conflict`, `rate_limited`), until it gets a final answer. It retries like
//! the TypeScript client (`clients/typescript`, `command()`): a 5 s timeout per attempt and a
//! pause of 100 ms doubling between attempts (capped here at 1.6 s, and never giving up), so
//! the load it puts on a recovering system is what real clients would. What it records is what
//! the checks and the recovery figures are computed from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use talkwai_domain::ErrorCode;
use talkwai_proto::{CommandAccepted, CommandReply, headers};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::commands::World;
use crate::payload::create_task_command;

/// How long one attempt waits for its reply before it is sent again (the TypeScript
/// client's default).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before the first resend; it doubles with every attempt up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(1600);
/// A command still without a final answer this long after its first send is reported as
/// unanswered (a violation).
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// One acknowledged command.
#[derive(Debug, Clone)]
pub struct Acked {
    /// Its `Talkwai-Command-Id`.
    pub command: Uuid,
    /// `create`, `start` or `complete`.
    pub action: &'static str,
    /// The task.
    pub task: Uuid,
    /// The reply.
    pub accepted: CommandAccepted,
}

/// What the client saw, shared by its tasks.
#[derive(Debug, Default)]
struct Shared {
    /// When each final answer arrived (accepted or refused for good).
    answers: Mutex<Vec<Instant>>,
    /// Acknowledged commands.
    acked: Mutex<Vec<Acked>>,
    /// Commands refused with a code that is not retryable (none is expected).
    refused: Mutex<Vec<String>>,
    /// Commands without a final answer by their deadline.
    unanswered: Mutex<Vec<String>>,
    /// The longest wait of one command from its first send to its final answer.
    longest: Mutex<Duration>,
    /// Attempts sent.
    attempts: AtomicU64,
    /// Attempts that got no reply in time (or failed to send).
    timeouts: AtomicU64,
    /// Attempts refused with a retryable code.
    retryable: AtomicU64,
}

impl Shared {
    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The load: a pacer task starting lifecycles until told to stop.
pub struct Load {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    pacer: tokio::task::JoinHandle<()>,
}

/// What the load saw, once every lifecycle has finished.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Acknowledged commands.
    pub acked: Vec<Acked>,
    /// Commands refused for good (a violation each).
    pub refused: Vec<String>,
    /// Commands without a final answer (a violation each).
    pub unanswered: Vec<String>,
    /// The longest wait of one command, first send to final answer.
    pub longest: Duration,
    /// Attempts sent, attempts without a reply in time, attempts refused as retryable.
    pub attempts: (u64, u64, u64),
}

impl Load {
    /// Starts `per_sec` task lifecycles a second in `world`'s tenant (three commands each).
    pub fn start(client: &async_nats::Client, world: &World, per_sec: f64) -> Self {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let caller = Caller {
            client: client.clone(),
            tenant: world.tenant,
            bearer: Arc::clone(&world.bearer),
            shared: Arc::clone(&shared),
        };
        let period = Duration::from_secs_f64(1.0 / per_sec.max(1e-3));
        let stopped = Arc::clone(&stop);
        let pacer = tokio::spawn(async move {
            let mut lifecycles = JoinSet::new();
            let start = tokio::time::Instant::now();
            let mut k = 0u32;
            while !stopped.load(Ordering::Relaxed) {
                tokio::time::sleep_until(start + period * k).await;
                k += 1;
                let caller = caller.clone();
                lifecycles.spawn(async move { caller.lifecycle().await });
                while lifecycles.try_join_next().is_some() {}
            }
            while lifecycles.join_next().await.is_some() {}
        });
        Self {
            shared,
            stop,
            pacer,
        }
    }

    /// When each final answer arrived so far.
    pub fn answers(&self) -> Vec<Instant> {
        Shared::lock(&self.shared.answers).clone()
    }

    /// Stops starting lifecycles and waits until every started one has finished (each
    /// command gets a final answer or passes its deadline).
    pub async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut unanswered = Vec::new();
        if tokio::time::timeout(COMMAND_DEADLINE * 4, self.pacer)
            .await
            .is_err()
        {
            unanswered.push("the load's lifecycles did not finish".to_owned());
        }
        let shared = &self.shared;
        unanswered.extend(Shared::lock(&shared.unanswered).drain(..));
        Outcome {
            acked: std::mem::take(&mut *Shared::lock(&shared.acked)),
            refused: std::mem::take(&mut *Shared::lock(&shared.refused)),
            unanswered,
            longest: *Shared::lock(&shared.longest),
            attempts: (
                shared.attempts.load(Ordering::Relaxed),
                shared.timeouts.load(Ordering::Relaxed),
                shared.retryable.load(Ordering::Relaxed),
            ),
        }
    }
}

/// Sends commands for the load.
#[derive(Clone)]
struct Caller {
    client: async_nats::Client,
    tenant: Uuid,
    bearer: Arc<str>,
    shared: Arc<Shared>,
}

impl Caller {
    /// Creates a task, starts it, completes it; stops at the first command without success.
    async fn lifecycle(&self) {
        let task = Uuid::new_v4();
        let by_id = Bytes::from(serde_json::json!({ "id": task }).to_string());
        let steps = [
            ("create", create_task_command(task)),
            ("start", by_id.clone()),
            ("complete", by_id),
        ];
        for (action, body) in steps {
            if self.execute(action, task, body).await.is_none() {
                return;
            }
        }
    }

    /// Sends one command until it gets a final answer, always with the same command id.
    async fn execute(
        &self,
        action: &'static str,
        task: Uuid,
        body: Bytes,
    ) -> Option<CommandAccepted> {
        let command = Uuid::new_v4();
        let subject = format!("talkwai.cmd.{}.task.{action}", self.tenant);
        let first = Instant::now();
        let mut pause = RETRY_PAUSE;
        loop {
            self.shared.attempts.fetch_add(1, Ordering::Relaxed);
            match self.attempt(&subject, body.clone(), command).await {
                Some(reply) => match reply.into_result() {
                    Ok(accepted) => {
                        let now = Instant::now();
                        Shared::lock(&self.shared.answers).push(now);
                        let mut longest = Shared::lock(&self.shared.longest);
                        *longest = (*longest).max(now - first);
                        drop(longest);
                        Shared::lock(&self.shared.acked).push(Acked {
                            command,
                            action,
                            task,
                            accepted: accepted.clone(),
                        });
                        return Some(accepted);
                    }
                    Err(error)
                        if matches!(
                            error.code,
                            ErrorCode::Unavailable | ErrorCode::Conflict | ErrorCode::RateLimited
                        ) =>
                    {
                        self.shared.retryable.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        Shared::lock(&self.shared.answers).push(Instant::now());
                        Shared::lock(&self.shared.refused).push(format!(
                            "task.{action} of task {task} (command {command}) refused: {error:?}"
                        ));
                        return None;
                    }
                },
                None => {
                    self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            if first.elapsed() > COMMAND_DEADLINE {
                Shared::lock(&self.shared.unanswered).push(format!(
                    "task.{action} of task {task} (command {command}) got no final answer within {COMMAND_DEADLINE:?}"
                ));
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    /// One attempt; `None` when no reply came in time (or the request failed: no
    /// responders, disconnected), or the reply is not a command reply.
    async fn attempt(&self, subject: &str, body: Bytes, command: Uuid) -> Option<CommandReply> {
        let mut map = HeaderMap::new();
        map.insert(headers::COMMAND_ID, command.to_string().as_str());
        map.insert(headers::AUTHORIZATION, &*self.bearer);
        let request = self
            .client
            .request_with_headers(subject.to_owned(), map, body);
        let reply = tokio::time::timeout(ATTEMPT_TIMEOUT, request)
            .await
            .ok()?
            .ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }
}
