//! Closed-loop load as `talkwai-bench` applies it (`drive::run`): N callers, each one command at
//! a time, until a count or a time budget is spent; latencies in an HDR histogram; CPU time of
//! this process and of the PostgreSQL processes read from `/proc` around the window.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// When a measurement stops.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most operations started, over all callers.
    max_ops: u64,
    /// Most operations per caller.
    per_caller: Option<u64>,
    /// No operation starts after this much time.
    max_time: Duration,
}

impl Budget {
    /// Stops after `max_ops` operations or `max_time`, whichever comes first.
    pub fn new(max_ops: u64, max_time: Duration) -> Self {
        Self {
            max_ops,
            per_caller: None,
            max_time,
        }
    }

    /// Each caller does exactly `n` operations (within `max_time`).
    pub fn per_caller(n: u64, max_time: Duration) -> Self {
        Self {
            max_ops: u64::MAX,
            per_caller: Some(n),
            max_time,
        }
    }
}

/// One operation: (caller index, the caller's operation index) → outcome.
pub type Op = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
    /// From the start to the last completion.
    pub elapsed: Duration,
    /// Latency of successful operations, µs.
    latency: Histogram<u64>,
    /// CPU time of this process over the run.
    pub cpu: Option<Duration>,
    /// CPU time of the PostgreSQL processes over the run.
    pub server_cpu: Option<Duration>,
}

impl Measured {
    /// Successful operations per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in ms, if anything succeeded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs `callers` concurrent closed loops of `op` within `budget`; with `postgres` (the
/// postmaster's pid) also samples the server's CPU time.
pub async fn run(callers: usize, budget: Budget, op: Op, postgres: Option<u32>) -> Measured {
    let started = Arc::new(AtomicU64::new(0));
    let (cpu0, server0) = (cpu_time(), postgres.and_then(server_cpu_time));
    let start = Instant::now();
    let deadline = start + budget.max_time;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers.max(1) {
        let (op, started) = (Arc::clone(&op), Arc::clone(&started));
        tasks.spawn(async move {
            let mut latency = histogram();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut index = 0u64;
            while budget.per_caller.is_none_or(|n| index < n)
                && Instant::now() < deadline
                && started.fetch_add(1, Ordering::Relaxed) < budget.max_ops
            {
                let t0 = Instant::now();
                match op(caller, index).await {
                    Ok(()) => {
                        ok += 1;
                        let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latency.saturating_record(micros.max(1));
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert(err);
                    }
                }
                index += 1;
            }
            (ok, errors, first_error, latency, Instant::now())
        });
    }
    let mut total = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latency: histogram(),
        cpu: None,
        server_cpu: None,
    };
    let mut last = start;
    while let Some(joined) = tasks.join_next().await {
        let Ok((ok, errors, first_error, latency, ended)) = joined else {
            total.errors += 1;
            continue;
        };
        total.ok += ok;
        total.errors += errors;
        total.first_error = total.first_error.or(first_error);
        let _ = total.latency.add(&latency);
        last = last.max(ended);
    }
    total.elapsed = last - start;
    total.cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    total.server_cpu = postgres
        .and_then(server_cpu_time)
        .zip(server0)
        .map(|(b, a)| b.saturating_sub(a));
    total
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    // The state (a letter) comes first; every field after it is a number.
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// Clock ticks to time: Linux reports 1/100 s on every common configuration.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Option<Duration> {
    let fields = stat_fields("self")?;
    // After the state: ppid is [0], utime [10], stime [11].
    Some(ticks(fields.get(10)? + fields.get(11)?))
}

/// CPU time of a PostgreSQL server so far: the postmaster (with its reaped children) and every
/// live child process (the backends of the pool, the WAL writer, the checkpointer...).
fn server_cpu_time(postmaster: u32) -> Option<Duration> {
    let own = stat_fields(&postmaster.to_string())?;
    // utime [10], stime [11], cutime [12], cstime [13].
    let mut total = own.get(10..14)?.iter().sum::<u64>();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid)
            && fields.first() == Some(&u64::from(postmaster))
        {
            total += fields.get(10).unwrap_or(&0) + fields.get(11).unwrap_or(&0);
        }
    }
    Some(ticks(total))
}
