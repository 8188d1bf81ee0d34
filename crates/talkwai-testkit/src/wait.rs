//! Waiting in tests: every wait has a deadline and a pause between attempts.
//!
//! [`wait_until`] retries a probe until it succeeds or the deadline passes; the probe returns a
//! `bool`, an `Option<T>` or a `Result<T, E>` (the last `Err` is reported on timeout);
//! [`poll_until`] returns the last value seen when it gives up, for tests that assert on it.
//! [`wait_for_endpoint`] waits until a NATS request gets a reply other than "no responders",
//! which is what "this service endpoint is subscribed" means; `$SRV.PING` is not enough, it
//! answers as soon as the service is registered, before its endpoints subscribe.
//! [`ping_count`] and [`wait_for_instances`] count the instances of a service.
//!
//! ```no_run
//! # async fn example(client: async_nats::Client) -> Result<(), talkwai_testkit::wait::WaitTimeout> {
//! use std::time::Duration;
//! use talkwai_testkit::wait::{PAUSE, wait_for_endpoint, wait_until};
//!
//! // A typed error reply to an empty body proves the endpoint is subscribed.
//! wait_for_endpoint(&client, "talkwai.cmd.platform.tenant.create", "").await?;
//! let flag = std::sync::atomic::AtomicBool::new(true);
//! wait_until(Duration::from_secs(5), PAUSE, || async {
//!     flag.load(std::sync::atomic::Ordering::Relaxed)
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// The default pause between two attempts.
pub const PAUSE: Duration = Duration::from_millis(50);
/// The default deadline of [`wait_for_endpoint`] and [`wait_for_instances`]: long enough for a
/// loaded CI machine, short enough to fail a broken test in reasonable time.
pub const ENDPOINT_DEADLINE: Duration = Duration::from_secs(30);
/// How long one request of [`wait_for_endpoint`] waits for its reply.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`ping_count`] listens for more `$SRV.PING` replies after the last one.
pub const PING_QUIET: Duration = Duration::from_millis(100);

/// A wait that gave up: how long it waited, how often it tried, and what it saw last.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gave up after {waited:?} and {attempts} attempts; last: {last}")]
pub struct WaitTimeout {
    /// How long the wait lasted.
    pub waited: Duration,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last failed attempt's error, or `not yet` when the probe gave none.
    pub last: String,
}

/// What one attempt of a probe returned: done with a value, or not yet (with why, if known).
pub trait Attempt {
    /// The value a successful wait returns.
    type Output;
    /// `Ok` when the wait is over, `Err` with a description of the last failure otherwise.
    fn settle(self) -> Result<Self::Output, Option<String>>;
}

impl Attempt for bool {
    type Output = ();
    fn settle(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Attempt for Result<T, E> {
    type Output = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Runs `probe` until it succeeds, pausing `pause` between attempts, for at most `deadline`
/// (an attempt still running at the deadline is abandoned). At least one attempt is made.
///
/// # Errors
/// [`WaitTimeout`] when the deadline passes first; it carries the last error the probe gave.
pub async fn wait_until<F, Fut>(
    deadline: Duration,
    pause: Duration,
    mut probe: F,
) -> Result<<Fut::Output as Attempt>::Output, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Attempt,
{
    let started = Instant::now();
    let until = started + deadline;
    let mut attempts = 0;
    let mut last = None;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(until, probe()).await {
            Ok(outcome) => match outcome.settle() {
                Ok(value) => return Ok(value),
                Err(Some(why)) => last = Some(why),
                Err(None) => {}
            },
            Err(_) => last = Some("the attempt was still running at the deadline".to_owned()),
        }
        if Instant::now() + pause > until {
            return Err(WaitTimeout {
                waited: started.elapsed(),
                attempts,
                last: last.unwrap_or_else(|| "not yet".to_owned()),
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// Polls `probe` until `done` accepts its value, pausing `pause` between attempts, for at most
/// `deadline`; for tests that assert on the last value seen whether or not it was accepted.
///
/// # Errors
/// The last value seen when the deadline passed first (`None` when no attempt finished).
pub async fn poll_until<T, F, Fut, D>(
    deadline: Duration,
    pause: Duration,
    mut probe: F,
    mut done: D,
) -> Result<T, Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    D: FnMut(&T) -> bool,
{
    let until = Instant::now() + deadline;
    let mut last = None;
    loop {
        if let Ok(value) = tokio::time::timeout_at(until, probe()).await {
            if done(&value) {
                return Ok(value);
            }
            last = Some(value);
        }
        if Instant::now() + pause > until {
            return Err(last);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Waits (up to [`ENDPOINT_DEADLINE`]) until a request of `payload` on `subject` gets any reply
/// but "no responders": the endpoint is subscribed and answering. Returns that reply.
///
/// Choose a request the endpoint refuses without side effects (an empty or invalid body):
/// every attempt that reaches it is handled.
///
/// # Errors
/// [`WaitTimeout`] when no reply came in time.
pub async fn wait_for_endpoint(
    client: &async_nats::Client,
    subject: &str,
    payload: impl Into<Bytes>,
) -> Result<async_nats::Message, WaitTimeout> {
    wait_for_endpoint_with_headers(client, subject, async_nats::HeaderMap::new(), payload).await
}

/// [`wait_for_endpoint`] with headers on every request.
///
/// # Errors
/// [`WaitTimeout`] when no reply came in time.
pub async fn wait_for_endpoint_with_headers(
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: impl Into<Bytes>,
) -> Result<async_nats::Message, WaitTimeout> {
    let payload = payload.into();
    wait_until(ENDPOINT_DEADLINE, PAUSE, || {
        let request = async_nats::Request::new()
            .headers(headers.clone())
            .payload(payload.clone())
            .timeout(Some(ATTEMPT_TIMEOUT));
        async move {
            match client.send_request(subject.to_owned(), request).await {
                Ok(reply) => Ok(reply),
                Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                    Err(format!("no responders on {subject}"))
                }
                Err(err) => Err(format!("request on {subject}: {err}")),
            }
        }
    })
    .await
}

/// How many instances of the NATS service `service` answer `$SRV.PING.<service>` now: replies
/// are counted until none came for [`PING_QUIET`].
///
/// An instance that answers PING may not have subscribed its endpoints yet: use
/// [`wait_for_endpoint`] to know that an endpoint serves.
///
/// # Errors
/// The NATS error when the ping cannot be sent.
pub async fn ping_count(
    client: &async_nats::Client,
    service: &str,
) -> Result<usize, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(format!("$SRV.PING.{service}"), inbox, Bytes::new())
        .await?;
    let mut seen = 0;
    while let Ok(Some(_)) = tokio::time::timeout(PING_QUIET, replies.next()).await {
        seen += 1;
    }
    Ok(seen)
}

/// Waits (up to [`ENDPOINT_DEADLINE`]) until at least `n` instances answer
/// `$SRV.PING.<service>`; returns how many did.
///
/// # Errors
/// [`WaitTimeout`] when fewer answered in time.
pub async fn wait_for_instances(
    client: &async_nats::Client,
    service: &str,
    n: usize,
) -> Result<usize, WaitTimeout> {
    wait_until(ENDPOINT_DEADLINE, PAUSE, || async move {
        match ping_count(client, service).await {
            Ok(seen) if seen >= n => Ok(seen),
            Ok(seen) => Err(format!("{seen} of {n} instances of {service} answer")),
            Err(err) => Err(format!("cannot ping {service}: {err}")),
        }
    })
    .await
}

/// Receives messages on `subscriber` until `n` arrived or `within` passed; returns those that
/// arrived (fewer than `n` on timeout or when the subscription ends).
pub async fn collect(
    subscriber: &mut async_nats::Subscriber,
    n: usize,
    within: Duration,
) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    let until = Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(until, subscriber.next()).await {
            Ok(Some(message)) => out.push(message),
            _ => break,
        }
    }
    out
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (monitoring, `/readyz`, `/livez`, `/metrics` need no
/// more): the status code and the body, or `None` on any failure or after 2 seconds.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_probe_that_succeeds_later_is_retried_with_pauses() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let value = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                (n >= 3).then_some(n)
            },
        )
        .await
        .expect("third attempt succeeds");
        assert_eq!(value, 3);
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "two pauses between three attempts"
        );
    }

    #[tokio::test]
    async fn a_probe_that_never_succeeds_times_out_with_its_last_error() {
        let calls = AtomicU32::new(0);
        let err = wait_until(
            Duration::from_millis(200),
            Duration::from_millis(50),
            || async {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(format!("attempt {n}"))
            },
        )
        .await
        .expect_err("never succeeds");
        let attempts = calls.load(Ordering::Relaxed);
        assert!((2..=5).contains(&attempts), "paused: {attempts} attempts");
        assert_eq!(err.attempts, attempts);
        assert_eq!(err.last, format!("attempt {}", attempts - 1));
        assert!(err.waited >= Duration::from_millis(150), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_probe_is_abandoned_at_the_deadline() {
        let err = wait_until(Duration::from_millis(100), PAUSE, || {
            std::future::pending::<bool>()
        })
        .await
        .expect_err("never answers");
        assert!(err.last.contains("still running"), "{err}");
        assert!(err.waited < Duration::from_secs(2), "{err}");
    }

    #[tokio::test]
    async fn polling_returns_the_accepted_value_or_the_last_seen() {
        let calls = AtomicU32::new(0);
        let next = || async { calls.fetch_add(1, Ordering::Relaxed) + 1 };
        let got = poll_until(
            Duration::from_secs(5),
            Duration::from_millis(5),
            next,
            |n| *n == 3,
        )
        .await;
        assert_eq!(got, Ok(3));
        let last = poll_until(
            Duration::from_millis(60),
            Duration::from_millis(20),
            next,
            |_| false,
        )
        .await
        .expect_err("never accepted")
        .expect("some attempt finished");
        assert!(last > 3, "the last value seen: {last}");
    }

    #[tokio::test]
    async fn booleans_report_not_yet() {
        let err = wait_until(
            Duration::from_millis(60),
            Duration::from_millis(20),
            || async { false },
        )
        .await
        .expect_err("false never settles");
        assert_eq!(err.last, "not yet");
        wait_until(Duration::from_millis(60), PAUSE, || async { true })
            .await
            .expect("true settles at once");
    }
}
