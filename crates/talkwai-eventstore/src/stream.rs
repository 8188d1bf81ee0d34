//! Stream setup: the log of record's configuration.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::StoreError;

/// How the event stream is configured.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Stream name (`TALKWAI_EVENTS`).
    pub name: String,
    /// Subjects (`talkwai.evt.>`).
    pub subjects: Vec<String>,
    /// Replicas: 1 on a single node, 3 in a cluster.
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "TALKWAI_EVENTS".to_owned(),
            subjects: vec!["talkwai.evt.>".to_owned()],
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl StreamSettings {
    /// The JetStream configuration: file storage, no age/size/count limit, deletes and purges
    /// denied, direct get and atomic batches allowed.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            allow_atomic_publish: true,
            discard: stream::DiscardPolicy::New,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            max_messages_per_subject: -1,
            description: Some("TalkwAI event log of record".to_owned()),
            ..Default::default()
        }
    }
}

/// Creates the stream, or updates it to `settings` when it exists.
pub(crate) async fn ensure(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), StoreError> {
    let config = settings.config();
    match js.get_stream(&settings.name).await {
        Ok(_) => {
            js.update_stream(&config).await.map_err(StoreError::nats)?;
        }
        Err(_) => {
            js.create_stream(config).await.map_err(StoreError::nats)?;
        }
    }
    Ok(())
}
