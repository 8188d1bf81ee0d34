//! `talkwai projections ...`: what operators need to look at and repair the PostgreSQL read
//! models without `psql`. Every subcommand is a thin edge over `talkwai_projector`'s
//! `status`, `dead_letters` and `rebuild` modules; long replays show an `indicatif` progress bar on
//! stderr (hidden when stderr is not a terminal).

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use talkwai_eventstore::EventStore;
use talkwai_projector::rebuild::{self, Progress, RebuildOptions, RebuildReport, Until};
use talkwai_projector::status::Status;
use talkwai_projector::{ProjectorError, dead_letters, status};

use crate::cli::{
    DeadLettersArgs, DropArgs, ProjectionsArgs, ProjectionsCommand, RebuildArgs, ReplayArgs,
    RetryArgs, StatusArgs,
};
use crate::error::CliError;
use crate::events;
use crate::output::line;

/// Runs one `talkwai projections` subcommand.
pub async fn run(
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: ProjectionsArgs,
) -> Result<(), CliError> {
    let url = args.database_url.ok_or_else(|| {
        CliError::Usage(
            "no database: pass --database-url or set TALKWAI_DATABASE_URL (talkwai up prints it)"
                .into(),
        )
    })?;
    let pool = talkwai_projector::pool(&url, 2)?;
    match args.command {
        ProjectionsCommand::Status(a) => run_status(&pool, nats_url, a).await,
        ProjectionsCommand::DeadLetters(a) => run_dead_letters(&pool, a).await,
        ProjectionsCommand::Retry(a) => run_retry(&pool, a).await,
        ProjectionsCommand::Rebuild(a) => run_rebuild(&pool, nats_url, keys, a).await,
        ProjectionsCommand::Rollback => run_rollback(&pool).await,
        ProjectionsCommand::Drop(a) => run_drop(&pool, a).await,
        ProjectionsCommand::Replay(a) => run_replay(&pool, nats_url, keys, a).await,
    }
}

async fn store(nats_url: &str) -> Result<EventStore, CliError> {
    let client = crate::connect(nats_url).await?;
    events::open_store(&client).await
}

async fn read_status(pool: &Pool, store: &EventStore) -> Result<Vec<Status>, CliError> {
    let conn = pool.get().await.map_err(ProjectorError::from)?;
    Ok(status::status(&conn, store).await?)
}

async fn run_status(pool: &Pool, nats_url: &str, args: StatusArgs) -> Result<(), CliError> {
    let store = store(nats_url).await?;
    let first = read_status(pool, &store).await?;
    let (rows, rates) = if args.rate {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = read_status(pool, &store).await?;
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        let rates: Vec<Option<f64>> = second
            .iter()
            .map(|s| {
                first
                    .iter()
                    .find(|f| f.generation == s.generation)
                    .map(|f| s.applied.saturating_sub(f.applied) as f64 / seconds)
            })
            .collect();
        (second, Some(rates))
    } else {
        (first, None)
    };
    if args.json {
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let mut value = serde_json::to_value(row).map_err(|e| CliError::Nats(e.to_string()))?;
            if let (Some(rates), Value::Object(map)) = (&rates, &mut value) {
                map.insert("apply_rate".into(), json!(rates.get(i).copied().flatten()));
            }
            out.push(value);
        }
        return line(&Value::Array(out).to_string());
    }
    if rows.is_empty() {
        return line("no generations yet: the projector has not run against this database");
    }
    let mut header = format!(
        "{:>4}  {:<16} {:<9} {:>11} {:>11} {:>9} {:>8} {:>10} {:>5}",
        "GEN", "SCHEMA", "STATE", "CHECKPOINT", "HEAD", "LAG", "LAG_S", "APPLIED", "DEAD"
    );
    if rates.is_some() {
        header.push_str(&format!(" {:>10}", "EVENTS/S"));
    }
    header.push_str("  STOPPED");
    line(&header)?;
    for (i, s) in rows.iter().enumerate() {
        let mut text = format!(
            "{:>4}  {:<16} {:<9} {:>11} {:>11} {:>9} {:>8.1} {:>10} {:>5}",
            s.generation,
            s.schema,
            s.state,
            s.checkpoint,
            s.head,
            s.lag_events,
            s.lag_seconds,
            s.applied,
            s.dead_letters
        );
        if let Some(rates) = &rates {
            match rates.get(i).copied().flatten() {
                Some(rate) => text.push_str(&format!(" {rate:>10.0}")),
                None => text.push_str(&format!(" {:>10}", "-")),
            }
        }
        text.push_str("  ");
        text.push_str(s.stopped.as_deref().unwrap_or("-"));
        line(&text)?;
        // Partitioned generations: one line per partition, with its lease holder.
        if s.partitions.len() > 1 {
            for p in &s.partitions {
                line(&format!(
                    "{:>4}  {:<16} {:<9} {:>11} {:>11} {:>9} {:>8} {:>10} {:>5}  owner {}",
                    "",
                    format!("  partition {}/{}", p.partition, p.of),
                    "",
                    p.checkpoint,
                    "",
                    p.lag_events,
                    "",
                    p.applied,
                    "",
                    p.owner.as_deref().unwrap_or("-")
                ))?;
            }
        }
    }
    Ok(())
}

async fn run_dead_letters(pool: &Pool, args: DeadLettersArgs) -> Result<(), CliError> {
    let conn = pool.get().await.map_err(ProjectorError::from)?;
    let letters = dead_letters::dead_letters(&conn, args.all).await?;
    if args.json {
        let value = serde_json::to_value(&letters).map_err(|e| CliError::Nats(e.to_string()))?;
        return line(&value.to_string());
    }
    if letters.is_empty() {
        return line("no dead letters");
    }
    for d in &letters {
        line(&format!(
            "seq {}  generation {}  {}  {}  {}",
            d.seq,
            d.generation,
            d.status,
            d.event_type.as_deref().unwrap_or("-"),
            d.subject
        ))?;
        line(&format!("    error: {}", d.error))?;
    }
    Ok(())
}

async fn run_retry(pool: &Pool, args: RetryArgs) -> Result<(), CliError> {
    let mut conn = pool.get().await.map_err(ProjectorError::from)?;
    let retry = dead_letters::retry(&mut conn, args.skip).await?;
    match retry.stopped_at {
        Some(seq) if retry.skipped => line(&format!(
            "retry: generation {} skips event {seq} and resumes after it",
            retry.generation
        )),
        Some(seq) => line(&format!(
            "retry: generation {} resumes at event {seq} (applied again)",
            retry.generation
        )),
        None => line(&format!(
            "retry: generation {} was not stopped; nothing to do",
            retry.generation
        )),
    }
}

/// A progress bar for a replay: position/target, events per second, ETA.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events, {msg}, eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &ProgressBar, progress: Progress) {
    bar.set_length(progress.target);
    bar.set_position(progress.checkpoint.min(progress.target));
    bar.set_message(format!("{:.0} events/s", progress.rate));
}

fn parity_table(rows: &[(String, i64, i64, bool)]) -> Result<(), CliError> {
    line(&format!(
        "{:<10} {:>10} {:>10}  {}",
        "TABLE", "LIVE_ROWS", "NEW_ROWS", "CONTENT"
    ))?;
    for (table, live, new, same) in rows {
        let verdict = if *same && live == new {
            "same"
        } else {
            "DIFFERS"
        };
        line(&format!("{table:<10} {live:>10} {new:>10}  {verdict}"))?;
    }
    Ok(())
}

/// The parity rows of a `ProjectorError::Parity` (its JSON form of the per-table report).
fn parity_rows_from_json(text: &str) -> Vec<(String, i64, i64, bool)> {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    value
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["table"].as_str().unwrap_or("?").to_owned(),
                        r["live_rows"].as_i64().unwrap_or(0),
                        r["new_rows"].as_i64().unwrap_or(0),
                        r["same_content"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn print_report(report: &RebuildReport, tenant: Option<uuid::Uuid>) -> Result<(), CliError> {
    let rows: Vec<_> = report
        .parity
        .iter()
        .map(|p| (p.table.clone(), p.live_rows, p.new_rows, p.same_content))
        .collect();
    parity_table(&rows)?;
    let timing = format!(
        "{} events in {:.1}s, compared at sequence {}",
        report.events, report.seconds, report.parity_seq
    );
    match (tenant, report.previous) {
        (Some(tenant), _) => line(&format!(
            "rebuild: tenant {tenant} rows replaced in the live generation ({timing})"
        )),
        (None, Some(previous)) => line(&format!(
            "rebuild: generation {} ({}) is live, replacing generation {previous} ({timing}); \
             undo with `talkwai projections rollback`",
            report.generation, report.schema
        )),
        (None, None) => line(&format!(
            "rebuild: generation {} ({}) swapped in ({timing})",
            report.generation, report.schema
        )),
    }
}

async fn run_rebuild(
    pool: &Pool,
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: RebuildArgs,
) -> Result<(), CliError> {
    let client = crate::connect(nats_url).await?;
    let store = events::open_store(&client).await?;
    let keys = events::key_store(&client, keys).await?;
    let options = RebuildOptions {
        tenant: args.tenant.map(Into::into),
        batch_size: usize::try_from(args.batch_size).unwrap_or(5000),
        bulk_rows: usize::try_from(args.bulk_rows).unwrap_or(50_000),
        force: args.force,
        keys,
    };
    let bar = progress_bar();
    let outcome = rebuild::rebuild(pool, &store, &options, &|p| show_progress(&bar, p)).await;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => print_report(&report, args.tenant),
        Err(ProjectorError::Parity(detail)) => {
            parity_table(&parity_rows_from_json(&detail))?;
            Err(CliError::ParityFailed)
        }
        Err(err) => Err(err.into()),
    }
}

async fn run_rollback(pool: &Pool) -> Result<(), CliError> {
    let (from, to) = rebuild::rollback(pool).await?;
    line(&format!(
        "rollback: generation {to} is live again (was {from}); \
         `talkwai projections drop {from}` removes the newer one"
    ))
}

async fn run_drop(pool: &Pool, args: DropArgs) -> Result<(), CliError> {
    rebuild::drop_generation(pool, args.generation).await?;
    line(&format!("dropped generation {}", args.generation))
}

/// Epoch milliseconds of an RFC 3339 time.
fn parse_time_ms(text: &str) -> Result<i64, CliError> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            CliError::Usage(format!(
                "--until-time {text:?}: {e} (expected RFC 3339, e.g. 2025-07-01T10:00:00Z)"
            ))
        })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| CliError::Usage(format!("--until-time {text:?} is out of range")))
}

async fn run_replay(
    pool: &Pool,
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: ReplayArgs,
) -> Result<(), CliError> {
    let until = match (args.until_seq, args.until_time.as_deref()) {
        (Some(seq), _) => Until::Seq(seq),
        (None, Some(text)) => Until::Time(parse_time_ms(text)?),
        (None, None) => {
            return Err(CliError::Usage(
                "give --until-seq or --until-time".to_owned(),
            ));
        }
    };
    let client = crate::connect(nats_url).await?;
    let store = events::open_store(&client).await?;
    let keys = events::key_store(&client, keys).await?;
    let bar = progress_bar();
    let outcome = rebuild::replay_until(pool, &store, keys.as_ref(), until, &args.into, &|p| {
        show_progress(&bar, p)
    })
    .await;
    bar.finish_and_clear();
    let (generation, seq) = outcome?;
    line(&format!(
        "replay: snapshot generation {generation} in schema {} through sequence {seq} \
         (read it as {}.tasks...; drop it with `talkwai projections drop {generation}`)",
        args.into, args.into
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_epoch_milliseconds() {
        assert!(matches!(
            parse_time_ms("2025-07-01T10:00:00Z"),
            Ok(1_751_364_000_000)
        ));
        assert!(matches!(
            parse_time_ms("2025-07-01T12:00:00.5+02:00"),
            Ok(1_751_364_000_500)
        ));
        assert!(matches!(
            parse_time_ms("yesterday"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn parity_errors_are_read_back_into_rows() {
        let rows = parity_rows_from_json(
            r#"[{"table":"tasks","live_rows":3,"new_rows":2,"same_content":false}]"#,
        );
        assert_eq!(rows, vec![("tasks".to_owned(), 3, 2, false)]);
        assert!(parity_rows_from_json("not json").is_empty());
    }
}
