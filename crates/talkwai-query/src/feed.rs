//! The change feed: a PostgreSQL connection that `LISTEN`s on the projector's notifications
//! ([`talkwai_proto::changes`]) and marks the live queries each committed batch concerns.
//!
//! Reconnects by itself (250 ms, doubling to 5 s); every (re)connection marks every live query,
//! since notifications sent while nobody listened are gone. While it is not listening, the
//! live-query loop falls back to polling the checkpoint ([`crate::live`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use talkwai_proto::changes::{CHANNEL, Changed};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{info, warn};

use crate::live::Registry;
use crate::reached::Reached;

/// What the live-query loop needs to know of the feed.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    /// Highest checkpoint a notification named.
    max_seq: AtomicU64,
    /// A `LISTEN` is in place now.
    listening: AtomicBool,
}

impl ChangeFeed {
    /// Whether notifications are being received.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The highest checkpoint notified so far.
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(Ordering::Acquire)
    }

    /// Listens on `url` until `stop` flips, marking subscriptions of `live` and waking the
    /// queries waiting on `reached` for a `minSeq`.
    pub(crate) async fn run(
        self: Arc<Self>,
        url: String,
        (live, reached): (Arc<Registry>, Arc<Reached>),
        mut stop: watch::Receiver<bool>,
    ) {
        let mut pause = Duration::from_millis(250);
        loop {
            match self.listen(&url, (&live, &reached), &mut stop).await {
                Ok(()) => return,
                Err(err) => {
                    self.listening.store(false, Ordering::Release);
                    reached.set_listening(false);
                    warn!(error = %err, "live-query change feed lost; polling the checkpoint meanwhile");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: `Ok` when stopped, `Err` when the connection failed or ended.
    async fn listen(
        &self,
        url: &str,
        (live, reached): (&Registry, &Reached),
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let (tx, mut payloads) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| {
                connection.poll_message(cx).map_err(|e| e.to_string())
            });
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => return err,
                }
            }
            "the connection ended".to_owned()
        });
        let _abort = AbortOnDrop(driver.abort_handle());
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        self.listening.store(true, Ordering::Release);
        reached.set_listening(true);
        // What was notified while nobody listened is gone.
        live.mark_all();
        info!(
            channel = CHANNEL,
            "live queries follow the projector's change feed"
        );
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                payload = payloads.recv() => {
                    let Some(payload) = payload else {
                        return Err("the listening connection ended".to_owned());
                    };
                    // The checkpoint moved: the queries waiting for a `minSeq` look again.
                    reached.moved();
                    match serde_json::from_str::<Changed>(&payload) {
                        Ok(changed) => {
                            live.mark(&changed);
                            self.max_seq.fetch_max(changed.seq, Ordering::AcqRel);
                        }
                        Err(err) => {
                            warn!(error = %err, "unreadable change notification; evaluating every live query");
                            live.mark_all();
                        }
                    }
                }
            }
        }
    }
}

/// Aborts the connection driver when the listener ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
