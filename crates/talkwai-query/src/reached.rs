//! Read-your-writes without a connection per waiter: how far the read models are known to
//! have come, and waiting until they reach a `minSeq`.
//!
//! A query with `minSeq` used to hold one of the pool's connections while it polled the
//! checkpoint every 2 ms: at 1,000 commands/s, each followed by such a query, the waiting
//! queries took every connection (live evaluations and plain queries queued behind them) and
//! their polls were most of PostgreSQL's work. Now every waiter watches one shared figure,
//! [`Reached::known`] (the highest checkpoint any answer, poll or live evaluation has seen);
//! one waiter at a time (the reader) reads the checkpoint for all of them, right after each
//! change notification of the projector ([`crate::feed`]) or, with none arriving, every
//! [`POLL`] (every [`POLL_LISTENING`] while notifications are received: a safety net), and
//! takes a connection only for that one statement. A waiter takes a connection for its query
//! once the checkpoint reached its `minSeq`.
//!
//! The figure is a hint, not a proof: every answer carries the checkpoint of its own snapshot,
//! and an answer below its `minSeq` (the read models were rebuilt from scratch meanwhile)
//! lowers the figure and waits again ([`Reached::lowered`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;

use crate::error::QueryError;

/// How often the reader polls the checkpoint while no change notification is received.
pub const POLL: Duration = Duration::from_millis(2);
/// How often it polls while notifications are received (one may have been lost).
pub const POLL_LISTENING: Duration = Duration::from_millis(50);
/// How long a waiter that is not the reader waits before it checks whether the reader left.
const FOLLOW: Duration = Duration::from_millis(5);

/// How far the read models are known to have come, shared by every waiting query.
#[derive(Debug)]
pub struct Reached {
    /// The highest checkpoint seen.
    known: watch::Sender<u64>,
    /// Held by the one waiter reading the checkpoint for all.
    reading: Mutex<()>,
    /// Woken by every change notification (the checkpoint moved).
    moved: Notify,
    /// Change notifications are being received.
    listening: AtomicBool,
}

impl Default for Reached {
    fn default() -> Self {
        Self {
            known: watch::Sender::new(0),
            reading: Mutex::new(()),
            moved: Notify::new(),
            listening: AtomicBool::new(false),
        }
    }
}

impl Reached {
    /// The highest checkpoint seen so far.
    pub fn known(&self) -> u64 {
        *self.known.borrow()
    }

    /// Records a checkpoint seen (a poll, an answer's snapshot, a notification's).
    pub fn saw(&self, seq: u64) {
        self.known.send_if_modified(|known| {
            let moved = seq > *known;
            *known = (*known).max(seq);
            moved
        });
    }

    /// Records an answer's checkpoint below what was known: the read models went back
    /// (rebuilt from scratch), so what was known no longer holds.
    pub fn lowered(&self, seq: u64) {
        self.known.send_if_modified(|known| {
            let lower = seq < *known;
            *known = (*known).min(seq);
            lower
        });
    }

    /// The checkpoint may have moved (a change notification): the reader reads it now.
    pub fn moved(&self) {
        self.moved.notify_waiters();
    }

    /// Whether change notifications are received (the reader polls less often meanwhile).
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Waits until the checkpoint reaches `seq`, at most until `deadline`; `Err` with the
    /// checkpoint last seen when it does not.
    pub async fn wait(&self, pool: &Pool, seq: u64, deadline: Instant) -> Result<(), WaitError> {
        let mut known = self.known.subscribe();
        loop {
            if *known.borrow_and_update() >= seq {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Behind(self.known()));
            }
            match self.reading.try_lock() {
                Ok(_reader) => self.read_until(pool, seq, deadline).await?,
                // Another waiter reads for all; a new figure wakes this one. The reader may
                // leave (its own sequence reached): then this one reads.
                Err(_) => {
                    let _ = tokio::time::timeout_at(
                        deadline.min(Instant::now() + FOLLOW),
                        known.changed(),
                    )
                    .await;
                }
            }
        }
    }

    /// As the reader: reads the checkpoint after every notification (or poll interval) until
    /// it reaches `seq` or `deadline` passes.
    async fn read_until(&self, pool: &Pool, seq: u64, deadline: Instant) -> Result<(), WaitError> {
        loop {
            // Armed before the read: a notification arriving during it is not missed.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let at = {
                let conn = pool.get().await.map_err(QueryError::from)?;
                crate::service::checkpoint(&conn).await?
            };
            self.saw(at);
            if at >= seq || Instant::now() >= deadline {
                return Ok(());
            }
            let pause = if self.listening.load(Ordering::Acquire) {
                POLL_LISTENING
            } else {
                POLL
            };
            tokio::select! {
                () = &mut moved => {}
                () = tokio::time::sleep_until(deadline.min(Instant::now() + pause)) => {}
            }
        }
    }
}

/// Why a wait ended without the sequence reached.
#[derive(Debug)]
pub enum WaitError {
    /// The deadline passed; the checkpoint last seen.
    Behind(u64),
    /// The checkpoint could not be read.
    Query(QueryError),
}

impl From<QueryError> for WaitError {
    fn from(err: QueryError) -> Self {
        Self::Query(err)
    }
}
