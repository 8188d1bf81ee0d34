//! The notifier's errors.

/// Why the notifier cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// NATS is unreachable.
    #[error("cannot connect to nats: {0}")]
    Connect(String),
    /// The event stream cannot be opened or read.
    #[error("event store: {0}")]
    Store(#[from] talkwai_eventstore::StoreError),
    /// A JetStream stream, consumer or bucket cannot be set up or used.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// The services API refused the registration, or the server did not confirm it.
    #[error(transparent)]
    Register(#[from] talkwai_service::ServeError),
    /// The identity provider's public keys cannot be loaded.
    #[error("cannot load jwt public keys: {0}")]
    Keys(#[from] talkwai_auth::KeyError),
}

impl NotifierError {
    /// A JetStream error from any displayable cause.
    pub fn js(err: impl std::fmt::Display) -> Self {
        Self::JetStream(err.to_string())
    }
}
