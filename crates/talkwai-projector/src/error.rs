//! Projector errors.

/// A failure of the projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// NATS or JetStream failed.
    #[error("event store: {0}")]
    Store(#[from] talkwai_eventstore::StoreError),
    /// NATS failed outside the event store.
    #[error("nats: {0}")]
    Nats(String),
    /// A request that cannot be carried out (bad name, unknown generation...).
    #[error("{0}")]
    Invalid(String),
    /// A partition's checkpoint row no longer holds what its owner last committed (another
    /// instance took the partition over, or the layout changed): the batch is rolled back.
    #[error("partition {slot} is fenced: expected its checkpoint at {expected}, found {found:?}")]
    Fenced {
        /// The partition, `index/count`.
        slot: String,
        /// The sequence the owner expected.
        expected: u64,
        /// What the row holds (`None`: no such row in this layout).
        found: Option<u64>,
    },
    /// A parity check found differences.
    #[error("parity check failed: {0}")]
    Parity(String),
}

impl From<deadpool_postgres::PoolError> for ProjectorError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Pool(err.to_string())
    }
}
