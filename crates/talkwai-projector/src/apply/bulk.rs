//! The bulk fold of a rebuild or replay: rows folded in memory across batches and written
//! with `COPY` a window at a time.

use std::sync::Arc;

use talkwai_domain::ids::TenantId;
use talkwai_eventstore::StoredMessage;
use tokio_postgres::Transaction;

use super::copy::copy;
use super::fold::{WorkingSet, apply_events, load_rows, needed_rows};
use super::{BatchOutcome, Decoded, PoisonPolicy, advance_checkpoint};
use crate::error::ProjectorError;

/// A rebuild's bulk phase (or a replay into a snapshot): events are folded into rows held in
/// memory across batches, and the rows are written with `COPY` only when `capacity` rows are
/// held (and at the end), so a row created and changed within that window is written once, with
/// no upsert. Only for a generation nobody else writes and nobody reads until it is complete:
/// rows folded but not flushed are lost with the process, and the rebuild starts over.
///
/// A full window is handed over as a [`Flush`] that can be written on another connection while
/// the next window folds; rows of the window being written are read from it, not from the
/// table, until the next hand-over (which must wait for that write to commit).
pub(crate) struct BulkFold {
    work: WorkingSet,
    capacity: usize,
    outcome: BatchOutcome,
    /// The window handed over last (being written, or written).
    handed: Option<Arc<WorkingSet>>,
}

/// A window of folded rows to write, with the checkpoint it reaches.
pub(crate) struct Flush {
    work: Arc<WorkingSet>,
    outcome: BatchOutcome,
}

impl BulkFold {
    /// A fold that writes once `capacity` rows are held.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            work: WorkingSet::default(),
            capacity: capacity.max(1),
            outcome: BatchOutcome::default(),
            handed: None,
        }
    }

    /// Whether the fold holds its capacity of rows (time to hand them over).
    pub(crate) fn is_full(&self) -> bool {
        self.work.rows.len() >= self.capacity
    }

    /// Folds a batch (decoded, in stream order). Rows its events change that the fold does not
    /// hold are taken from the window handed over last, else read from the generation (flushed
    /// earlier). Fails at the first event that cannot be applied.
    pub(crate) async fn fold<C: tokio_postgres::GenericClient + Sync>(
        &mut self,
        client: &C,
        schema: &str,
        messages: &[StoredMessage],
        decoded: Vec<Result<Decoded, String>>,
        tenant: Option<TenantId>,
    ) -> Result<(), ProjectorError> {
        let mut needed = needed_rows(&self.work, &decoded);
        if let Some(handed) = &self.handed {
            for (table, ids) in &mut needed {
                ids.retain(|id| {
                    let key = (*table, *id);
                    let Some(row) = handed.rows.get(&key) else {
                        return true;
                    };
                    // In the table once the handed-over window is written, unless that
                    // window deleted it (then it is not, whether or not it was before).
                    if row.is_some() {
                        self.work.existed.insert(key);
                    }
                    self.work.rows.insert(key, row.clone());
                    self.work.order.push(key);
                    false
                });
            }
        }
        load_rows(client, schema, &mut self.work, &needed).await?;
        let outcome = apply_events(
            &mut self.work,
            messages,
            decoded,
            PoisonPolicy::Stop,
            tenant,
        );
        if let Some(poison) = outcome.stopped_at {
            return Err(ProjectorError::Invalid(format!(
                "stopped at event {} ({}): {}",
                poison.seq, poison.subject, poison.error
            )));
        }
        if outcome.checkpoint > 0 {
            self.outcome.checkpoint = outcome.checkpoint;
            self.outcome.last_event_at = outcome.last_event_at;
        }
        self.outcome.applied += outcome.applied;
        Ok(())
    }

    /// Hands the rows held over for writing and starts an empty window. The previous
    /// [`Flush`] must have committed first.
    pub(crate) fn hand_over(&mut self) -> Flush {
        let work = Arc::new(std::mem::take(&mut self.work));
        self.handed = Some(Arc::clone(&work));
        Flush {
            work,
            outcome: std::mem::take(&mut self.outcome),
        }
    }
}

impl Flush {
    /// Writes the window's rows and the checkpoint they reach inside `tx`; returns that
    /// checkpoint.
    pub(crate) async fn write(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<u64, ProjectorError> {
        copy(tx, schema, &self.work).await?;
        // Not announced: nobody reads a generation that is being built.
        advance_checkpoint(tx, schema, &self.outcome).await?;
        Ok(self.outcome.checkpoint)
    }
}
