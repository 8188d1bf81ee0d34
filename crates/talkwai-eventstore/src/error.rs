//! Errors of the event store.

/// A failure talking to JetStream or decoding what it answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// NATS or JetStream failed (connection, timeout, API error).
    #[error("jetstream: {0}")]
    Nats(String),
    /// The server answered something we cannot read.
    #[error("unexpected reply from jetstream: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Wraps any NATS error.
    pub fn nats(err: impl std::fmt::Display) -> Self {
        Self::Nats(err.to_string())
    }
}
