//! The TalkwAI event log on JetStream.
//!
//! One stream (`TALKWAI_EVENTS`) holds every event, one subject per aggregate. This crate knows
//! messages, subjects and sequences, not the domain: it sets the stream up, appends groups of
//! messages atomically with per-subject expected sequences ([`Appender`]), reads a subject's
//! history with batched direct gets ([`EventStore::read_subject`]), reads the last message of
//! many subjects at once ([`EventStore::last_of_subjects`]; for many concurrent callers,
//! merged into shared reads by [`HeadReader`]; from the stream leader when the stream is
//! replicated), and replays the log in order ([`EventStore::replay`]).
//!
//! # Architecture invariant
//! No domain types and no PostgreSQL: the command service gives it bytes and headers.
//!
//! # Appends
//! Every append names, for each message, the last sequence its subject must have
//! (`Nats-Expected-Last-Subject-Sequence`; 0 for a new subject). Appends that are in flight at
//! the same moment are grouped into one JetStream atomic batch (one durable write: the group
//! commit); a conflict inside a group splits it so only the conflicting append fails. An
//! append of a single message goes out as a plain publish with `Nats-Msg-Id`, so the server
//! also deduplicates it.

mod append;
pub mod connect;
mod error;
mod heads;
pub mod lease;
mod mux;
pub mod partition;
mod read;
mod stream;

pub use append::{
    AppendAck, AppendError, AppendRequest, Appender, AppenderConfig, Fence, GroupStats, LogFence,
    OnFenced, Outbound, header_map,
};
pub use connect::{
    ConnectError, Credentials, connect_options, connect_options_with, plain_servers,
    reconnect_delay, redact,
};
pub use error::StoreError;
pub use heads::{HeadReader, Heads};
pub use read::{READ_SIDE_HEADERS, Replay, StoredMessage};
pub use stream::StreamSettings;

use async_nats::jetstream;

/// The server addresses in a `TALKWAI_NATS_URL` value: one URL or several separated by commas
/// (the nodes of a cluster), blanks trimmed. `async_nats::ConnectOptions::connect` takes the
/// result and fails over between them.
///
/// ```
/// let urls = talkwai_eventstore::server_urls("nats://n1:4222, nats://n2:4222,");
/// assert_eq!(urls, ["nats://n1:4222", "nats://n2:4222"]);
/// ```
pub fn server_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Whether a NATS error's text says a stream or consumer does not exist (deleted, or lost with
/// a memory-storage stream when nats-server restarted): what a service that owns it recreates.
pub fn is_missing(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    [
        "stream not found",
        "no stream found",
        "consumer not found",
        "consumer deleted",
        "no responders",
    ]
    .iter()
    .any(|needle| error.contains(needle))
}

/// How often connection-state waits look again.
pub const CONNECTION_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Resolves once `client` is not connected (looked at every [`CONNECTION_POLL`]); never while
/// it stays connected.
pub(crate) async fn connection_lost(client: &async_nats::Client) {
    loop {
        if client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        tokio::time::sleep(CONNECTION_POLL).await;
    }
}

/// A handle on the event stream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    /// The stream's replica count when it was opened.
    replicas: usize,
    mux: std::sync::Arc<mux::ReplyMux>,
}

impl EventStore {
    /// Connects to the stream described by `settings`, creating it or updating its config.
    pub async fn open(
        client: async_nats::Client,
        settings: &StreamSettings,
    ) -> Result<Self, StoreError> {
        let js = jetstream::new(client.clone());
        let replicas = stream::ensure(&js, settings).await?;
        Ok(Self {
            replicas,
            mux: std::sync::Arc::new(mux::ReplyMux::new(client.clone())),
            client,
            js,
            stream: settings.name.clone(),
        })
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Waits until the client is connected, pausing [`CONNECTION_POLL`] between looks, for at
    /// most `deadline`; whether it is.
    pub async fn wait_connected(&self, deadline: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if self.client.connection_state() == async_nats::connection::State::Connected {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(CONNECTION_POLL).await;
        }
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The stream's replica count (1 single node, 3 in a cluster): the count other JetStream
    /// assets of the system (KV buckets) use too.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The stream's last sequence (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64, StoreError> {
        let mut stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(StoreError::nats)?;
        let info = stream.info().await.map_err(StoreError::nats)?;
        Ok(info.state.last_sequence)
    }

    /// Starts a group-commit writer on this stream.
    pub fn appender(&self, config: AppenderConfig) -> Appender {
        Appender::start(self.client.clone(), config)
    }

    /// A group-commit writer with a fence in the log (see [`LogFence`]).
    pub async fn fenced_appender(
        &self,
        config: AppenderConfig,
        fence: LogFence,
    ) -> Result<Appender, StoreError> {
        Appender::start_fenced(self, config, fence).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_streams_and_consumers_are_recognised() {
        assert!(is_missing("no stream found for given subject"));
        assert!(is_missing("failed to get stream: stream not found"));
        assert!(is_missing("consumer not found"));
        assert!(is_missing("Consumer Deleted"));
        assert!(is_missing("failed getting entry: no responders"));
        assert!(!is_missing("wrong last sequence: 4"));
        assert!(!is_missing("timed out"));
    }
}
