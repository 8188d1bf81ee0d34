//! Load: closed loops (N callers, each doing one operation at a time, until a count or a time
//! budget is spent) and an open loop at a fixed rate; latencies in an HDR histogram.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::machine::cpu_time;

/// When a measurement stops.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most operations started, over all callers.
    pub max_ops: u64,
    /// Most operations per caller (for scenarios where each caller works its own items).
    pub per_caller: Option<u64>,
    /// No operation starts after this much time.
    pub max_time: Duration,
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

    /// Each caller does exactly `n` operations (within a generous time limit).
    pub fn per_caller(n: u64, max_time: Duration) -> Self {
        Self {
            max_ops: u64::MAX,
            per_caller: Some(n),
            max_time,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// From the first start to the last completion.
    pub elapsed: Duration,
    /// Latency of successful operations, microseconds.
    pub latency: Histogram<u64>,
    /// CPU the processes used meanwhile.
    pub cpu: CpuUsed,
}

/// CPU time used by this process and by nats-server during a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUsed {
    /// This process: the load generator, and the command service when it runs in process.
    pub bench: Option<Duration>,
    /// The nats-server process.
    pub server: Option<Duration>,
}

/// The pid of the nats-server whose CPU time is sampled (0: none).
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

/// Sets the nats-server pid sampled by [`CpuSample`] (each suite starts its own server).
pub fn set_server_pid(pid: Option<u32>) {
    SERVER_PID.store(pid.unwrap_or(0), Ordering::Relaxed);
}

fn server_pid() -> Option<u32> {
    Some(SERVER_PID.load(Ordering::Relaxed)).filter(|p| *p != 0)
}

/// CPU times at the start of a measurement.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    bench: Option<Duration>,
    server: Option<Duration>,
}

impl CpuSample {
    /// Samples both processes now.
    pub fn now() -> Self {
        Self {
            bench: cpu_time(None),
            server: server_pid().and_then(|pid| cpu_time(Some(pid))),
        }
    }

    /// CPU used since this sample.
    pub fn used(self) -> CpuUsed {
        let later = Self::now();
        CpuUsed {
            bench: later
                .bench
                .zip(self.bench)
                .map(|(b, a)| b.saturating_sub(a)),
            server: later
                .server
                .zip(self.server)
                .map(|(b, a)| b.saturating_sub(a)),
        }
    }
}

impl Measured {
    /// Nothing measured yet.
    pub fn empty() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
            cpu: CpuUsed::default(),
        }
    }

    /// Successful operations per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another measurement of the same operation (counts, time, latencies, CPU).
    pub fn absorb(&mut self, other: Measured) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        let _ = self.latency.add(&other.latency);
        let sum = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| a + b);
        self.cpu = CpuUsed {
            bench: sum(self.cpu.bench, other.cpu.bench),
            server: sum(self.cpu.server, other.cpu.server),
        };
    }

    /// A latency quantile in milliseconds (`None` when nothing succeeded).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// A new latency histogram: 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (saturating at the histogram's top).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// One operation: (caller index, the caller's operation index) → outcome.
pub type Op = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// Runs `callers` concurrent closed loops of `op` within `budget`.
pub async fn run(callers: usize, budget: Budget, op: Op) -> Measured {
    let started = Arc::new(AtomicU64::new(0));
    let cpu = CpuSample::now();
    let start = Instant::now();
    let deadline = start + budget.max_time;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers.max(1) {
        let op = Arc::clone(&op);
        let started = Arc::clone(&started);
        tasks.spawn(async move {
            let mut latency = histogram();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut index = 0u64;
            loop {
                if budget.per_caller.is_some_and(|n| index >= n) || Instant::now() >= deadline {
                    break;
                }
                if started.fetch_add(1, Ordering::Relaxed) >= budget.max_ops {
                    break;
                }
                let t0 = Instant::now();
                match op(caller, index).await {
                    Ok(()) => {
                        ok += 1;
                        record(&mut latency, t0.elapsed());
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
    let mut total = Measured::empty();
    let mut last = start;
    while let Some(joined) = tasks.join_next().await {
        let Ok((ok, errors, first_error, latency, ended)) = joined else {
            total.errors += 1;
            continue;
        };
        total.ok += ok;
        total.errors += errors;
        if total.first_error.is_none() {
            total.first_error = first_error;
        }
        let _ = total.latency.add(&latency);
        last = last.max(ended);
    }
    total.elapsed = last - start;
    total.cpu = cpu.used();
    total
}

/// Measures `a` and `b` (one caller each) in alternating slices, `rounds` of each within
/// `budget`, so both sides meet the same noise of a shared machine; a ratio of the two is then
/// far steadier than one of two measurements taken seconds apart.
pub async fn interleaved(budget: Budget, rounds: u32, a: Op, b: Op) -> (Measured, Measured) {
    let rounds = rounds.max(1);
    let slice = Budget::new(
        budget.max_ops.div_ceil(u64::from(rounds)),
        budget.max_time / rounds,
    );
    let (mut left, mut right): (Option<Measured>, Option<Measured>) = (None, None);
    for round in 0..rounds {
        // Each slice numbers its operations from 0: shift them so rounds pick other items.
        let offset = u64::from(round) << 32;
        for (op, into) in [(&a, &mut left), (&b, &mut right)] {
            let op = Arc::clone(op);
            let shifted: Op = Arc::new(move |caller, i| op(caller, i + offset));
            let measured = run(1, slice, shifted).await;
            match into {
                Some(total) => total.absorb(measured),
                None => *into = Some(measured),
            }
        }
    }
    (
        left.unwrap_or_else(Measured::empty),
        right.unwrap_or_else(Measured::empty),
    )
}

/// Runs `op` open loop at `rate` operations per second, `count` times: operation `k` starts
/// at `start + k / rate` whether or not earlier ones finished, and its latency counts from
/// that scheduled instant (so a stalled system is not hidden by a stalled load generator).
pub async fn paced(rate: f64, count: u64, op: Op) -> Measured {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let cpu = CpuSample::now();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut total = Measured::empty();
    let settle =
        |total: &mut Measured,
         outcome: Result<Result<Duration, String>, tokio::task::JoinError>| {
            match outcome {
                Ok(Ok(latency)) => {
                    total.ok += 1;
                    record(&mut total.latency, latency);
                }
                Ok(Err(err)) => {
                    total.errors += 1;
                    total.first_error.get_or_insert(err);
                }
                Err(join) => {
                    total.errors += 1;
                    total.first_error.get_or_insert(join.to_string());
                }
            }
        };
    for k in 0..count {
        let scheduled = start + period.mul_f64(k as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let future = op(0, k);
        tasks.spawn(async move { future.await.map(|()| scheduled.elapsed()) });
        while let Some(done) = tasks.try_join_next() {
            settle(&mut total, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        settle(&mut total, done);
    }
    total.elapsed = start.elapsed();
    total.cpu = cpu.used();
    total
}
