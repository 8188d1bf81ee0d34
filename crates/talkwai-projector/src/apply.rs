//! Applying a batch of stored events to one generation's tables in one transaction: rows and
//! the checkpoint commit together, so a crash at any point neither loses nor double-applies.

mod bulk;
mod copy;
mod fold;

use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, Event};
use talkwai_eventstore::StoredMessage;
use talkwai_keys::{KeyStore, Keyring, keyring_of};
use talkwai_proto::event::{EventMeta, decode_stored_with};
use talkwai_proto::sealed::Opener;
use tokio_postgres::Transaction;

use crate::error::ProjectorError;
use crate::partition::Slot;
use crate::rows::Row;
use crate::schema::COLUMNS;

pub(crate) use bulk::{BulkFold, Flush};
use fold::{WorkingSet, apply_events, drop_erased, load_rows, needed_rows};

/// What to do with an event that cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PoisonPolicy {
    /// Record a dead letter and stop before it (default): nothing after it is applied.
    #[default]
    Stop,
    /// Record a dead letter, skip it and go on.
    Skip,
}

/// An event that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its type header, if any.
    pub event_type: Option<String>,
    /// Why.
    pub error: String,
    /// Its body.
    pub payload: String,
}

/// The result of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events applied (not counting re-deliveries and guards).
    pub applied: usize,
    /// The checkpoint after the batch.
    pub checkpoint: u64,
    /// Stored time of the last event applied, epoch milliseconds.
    pub last_event_at: i64,
    /// The event the projection stopped at (policy `stop`).
    pub stopped_at: Option<Poison>,
    /// Events skipped into dead letters (policy `skip`).
    pub skipped: Vec<Poison>,
}

/// One decoded message: what it addresses and the event, or why it is unreadable.
pub(crate) enum Decoded {
    /// A guard or other message the read models ignore.
    Ignored,
    /// An event of an aggregate, and whether some personal field of it read as erased (its
    /// key was destroyed: the row is scrubbed, never given the domain's placeholders).
    Event(AggregateRef, Box<Event>, bool),
}

/// Decodes a message for the read models (another partition's messages are not even decoded),
/// opening its sealed fields with `keys`.
pub(crate) fn decode_for(
    message: &StoredMessage,
    slot: Option<Slot>,
    keys: &dyn Opener,
) -> Result<Decoded, String> {
    match slot {
        Some(slot) if !slot.owns(&message.subject) => Ok(Decoded::Ignored),
        _ => decode(message, keys),
    }
}

/// The keys `messages` need to be decoded, from `keys` (none without a key store).
pub(crate) async fn keyring(
    keys: Option<&KeyStore>,
    messages: &[StoredMessage],
) -> Result<Keyring, ProjectorError> {
    keyring_of(keys, messages)
        .await
        .map_err(|e| ProjectorError::Nats(e.to_string()))
}

fn decode(message: &StoredMessage, keys: &dyn Opener) -> Result<Decoded, String> {
    let stored = decode_stored_with(
        &message.subject,
        |name| message.header(name),
        &message.payload,
        keys,
    )
    .map_err(|e| e.to_string())?;
    Ok(stored.map_or(Decoded::Ignored, |s| {
        let erased = !s.erased.is_empty();
        Decoded::Event(s.target, Box::new(s.event), erased)
    }))
}

fn poison(message: &StoredMessage, error: String) -> Poison {
    Poison {
        seq: message.seq,
        subject: message.subject.clone(),
        event_type: EventMeta::from_headers(|name| message.header(name)).event_type,
        error,
        payload: String::from_utf8_lossy(&message.payload).into_owned(),
    }
}

/// Applies `messages` (in stream order, all after the current checkpoint) to `schema`'s tables
/// inside `tx`, then moves the checkpoint (every partition row: all events were considered).
/// Messages of other tenants are skipped when `tenant` is given (one-tenant rebuilds). Does not
/// commit.
pub async fn apply_batch(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
    keys: Option<&KeyStore>,
) -> Result<BatchOutcome, ProjectorError> {
    let ring = keyring(keys, messages).await?;
    apply_batch_with(tx, schema, generation, messages, policy, tenant, &ring).await
}

/// [`apply_batch`] with the keys in hand: `ring` opens the batch's sealed fields (a keyring
/// read from a backup's key lines, for one).
pub async fn apply_batch_with(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
    ring: &dyn Opener,
) -> Result<BatchOutcome, ProjectorError> {
    let decoded = messages.iter().map(|m| decode_for(m, None, ring)).collect();
    let outcome = apply_rows(tx, schema, generation, messages, decoded, policy, tenant).await?;
    if let Some(seq) = advance_checkpoint(tx, schema, &outcome).await? {
        notify(tx, schema, seq).await?;
    }
    Ok(outcome)
}

/// Moves every partition row of `schema`'s checkpoint to `outcome`'s (counting its applied
/// events on partition 0); returns the sequence, or `None` when the outcome moved nothing.
async fn advance_checkpoint(
    tx: &Transaction<'_>,
    schema: &str,
    outcome: &BatchOutcome,
) -> Result<Option<i64>, ProjectorError> {
    if outcome.checkpoint == 0 {
        return Ok(None);
    }
    let seq = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
    let applied = i64::try_from(outcome.applied).unwrap_or(i64::MAX);
    tx.execute(
        &format!(
            "UPDATE {schema}.checkpoint SET last_seq = $1, last_event_at = $2,
             applied = applied + CASE WHEN part = 0 THEN $3::bigint ELSE 0 END, updated_at = now()
             WHERE last_seq < $1"
        ),
        &[&seq, &outcome.last_event_at, &applied],
    )
    .await?;
    Ok(Some(seq))
}

/// Applies the events of partition `slot` among `messages` (the others are counted through:
/// the partition's checkpoint passes them) and moves that partition's checkpoint, inside `tx`.
/// Fenced: first locks the partition's checkpoint row and fails with
/// [`ProjectorError::Fenced`] unless it holds `expected` under the same layout, so an owner
/// that lost its partition can never apply an event twice. Does not commit.
#[allow(clippy::too_many_arguments)]
pub async fn apply_partition(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    slot: Slot,
    expected: u64,
    keys: Option<&KeyStore>,
) -> Result<BatchOutcome, ProjectorError> {
    let ring = keyring(keys, messages).await?;
    let decoded = messages
        .iter()
        .map(|m| decode_for(m, Some(slot), &ring))
        .collect();
    apply_partition_decoded(
        tx, schema, generation, messages, decoded, policy, slot, expected,
    )
    .await
}

/// [`apply_partition`] with the messages already decoded (by [`decode_for`] with this slot,
/// in the same order), so decoding can run ahead of the transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_partition_decoded(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    decoded: Vec<Result<Decoded, String>>,
    policy: PoisonPolicy,
    slot: Slot,
    expected: u64,
) -> Result<BatchOutcome, ProjectorError> {
    let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
    let row = tx
        .query_opt(
            &format!(
                "SELECT last_seq, partitions FROM {schema}.checkpoint WHERE part = $1 FOR UPDATE"
            ),
            &[&part],
        )
        .await?;
    let found = row.map(|r| {
        (
            u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
        )
    });
    if found != Some((expected, slot.count)) {
        return Err(ProjectorError::Fenced {
            slot: slot.to_string(),
            expected,
            found: found.map(|f| f.0),
        });
    }
    let outcome = apply_rows(tx, schema, generation, messages, decoded, policy, None).await?;
    if outcome.checkpoint > 0 {
        let seq = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
        let applied = i64::try_from(outcome.applied).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "UPDATE {schema}.checkpoint SET last_seq = $1, last_event_at = $2,
                 applied = applied + $3, updated_at = now() WHERE part = $4"
            ),
            &[&seq, &outcome.last_event_at, &applied, &part],
        )
        .await?;
        notify(tx, schema, seq).await?;
    }
    Ok(outcome)
}

async fn notify(tx: &Transaction<'_>, schema: &str, seq: i64) -> Result<(), ProjectorError> {
    tx.execute(
        "SELECT pg_notify('talkwai_checkpoint', $1)",
        &[&format!("{schema}:{seq}")],
    )
    .await?;
    Ok(())
}

/// Applies the rows of `messages` (decoded as `decoded`; those of `tenant` when given — another
/// partition's were decoded as ignored; the others only move the outcome's checkpoint) and
/// records dead letters; leaves the checkpoint table alone.
async fn apply_rows(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    decoded: Vec<Result<Decoded, String>>,
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
) -> Result<BatchOutcome, ProjectorError> {
    let mut work = WorkingSet::default();
    let needed = needed_rows(&work, &decoded);
    load_rows(tx, schema, &mut work, &needed).await?;
    let outcome = apply_events(&mut work, messages, decoded, policy, tenant);
    write(tx, schema, &work).await?;
    for dead in outcome
        .skipped
        .iter()
        .map(|d| (d, "skipped"))
        .chain(outcome.stopped_at.iter().map(|d| (d, "open")))
    {
        record_dead_letter(tx, generation, dead.0, dead.1).await?;
    }
    Ok(outcome)
}

async fn write(
    tx: &Transaction<'_>,
    schema: &str,
    work: &WorkingSet,
) -> Result<(), ProjectorError> {
    for (table, columns) in COLUMNS {
        let mut upserts: Vec<&Row> = Vec::new();
        let mut deletes = Vec::new();
        for key in work.order.iter().filter(|(t, _)| *t == table) {
            match work.rows.get(key) {
                Some(Some(row)) => upserts.push(row),
                Some(None) if work.existed.contains(key) => deletes.push(key.1),
                _ => {}
            }
        }
        if !upserts.is_empty() {
            let sql = upsert_sql(schema, table, columns, "$1");
            // Serialized straight from the working set (no copy of the rows).
            tx.execute(&sql, &[&tokio_postgres::types::Json(&upserts)])
                .await?;
        }
        if !deletes.is_empty() {
            tx.execute(
                &format!("DELETE FROM {schema}.{table} WHERE id = ANY($1)"),
                &[&deletes],
            )
            .await?;
        }
    }
    drop_erased(tx, schema, &work.erased).await
}

async fn record_dead_letter(
    tx: &Transaction<'_>,
    generation: i32,
    dead: &Poison,
    status: &str,
) -> Result<(), ProjectorError> {
    let seq = i64::try_from(dead.seq).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO talkwai_meta.dead_letters (generation, seq, subject, event_type, error, payload, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (generation, seq) DO UPDATE SET error = EXCLUDED.error, status = EXCLUDED.status,
             resolved_at = NULL",
        &[&generation, &seq, &dead.subject, &dead.event_type, &dead.error, &dead.payload, &status],
    )
    .await?;
    Ok(())
}

/// The upsert of the rows of `table` given as one JSON array in the statement's parameter,
/// written `param` (`$1`, or `$1::text::jsonb` for a text parameter): a row replaces the stored
/// one only if its `last_seq` is newer. `columns` are the table's, `id` first.
pub fn upsert_sql(schema: &str, table: &str, columns: &[&str], param: &str) -> String {
    let set: Vec<String> = columns
        .iter()
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO {schema}.{table} SELECT * FROM jsonb_populate_recordset(NULL::{schema}.{table}, {param})
         ON CONFLICT (id) DO UPDATE SET {} WHERE {table}.last_seq < EXCLUDED.last_seq",
        set.join(", ")
    )
}
