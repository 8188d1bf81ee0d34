//! What can go wrong with keys.

/// A key operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Key material of the wrong shape (length, encoding).
    #[error("bad key: {message}")]
    BadKey {
        /// What is wrong.
        message: String,
    },
    /// A tenant key is wrapped by a master key this process was not given (a rotation that
    /// has not reached this process, or the wrong secret).
    #[error("tenant key {scope} is wrapped by master key {wrap}, which this process does not hold")]
    UnknownMaster {
        /// The tenant key's scope.
        scope: String,
        /// The wrapping master key's id.
        wrap: String,
    },
    /// A stored key does not open under the key that claims to wrap it.
    #[error("stored key {name} does not open: {message}")]
    Corrupt {
        /// The bucket key.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A restore found a different key under the same name: it keeps the key that is there
    /// (replacing it would erase what it seals) and stops.
    #[error("key {name} is already there with a different key; refusing to replace it")]
    Conflict {
        /// The bucket entry.
        name: String,
    },
    /// The key bucket did not answer as it should.
    #[error("key store: {0}")]
    Nats(String),
}
