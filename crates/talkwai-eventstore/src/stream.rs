//! Stream setup: the log of record's configuration.

use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};

use crate::error::StoreError;

/// How the event stream is configured.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Stream name (`TALKWAI_EVENTS`).
    pub name: String,
    /// Subjects (`talkwai.evt.>`).
    pub subjects: Vec<String>,
    /// Replicas: 1 on a single node, 3 in a cluster. 0 (the default) keeps the count of an
    /// existing stream and creates a new one with 1, so a reader or a tool that opens the
    /// stream never changes its replication.
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s. `None` (the default) keeps an existing
    /// stream's window and creates a new one with [`DEFAULT_DUPLICATE_WINDOW`]. Command ids do
    /// not depend on it (see `talkwai_proto::command_record`); raw publishers with
    /// `Nats-Msg-Id` (imports) do.
    pub duplicate_window: Option<Duration>,
}

/// The duplicate window of a new stream.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "TALKWAI_EVENTS".to_owned(),
            subjects: vec!["talkwai.evt.>".to_owned()],
            replicas: 0,
            duplicate_window: None,
        }
    }
}

impl StreamSettings {
    /// The JetStream configuration: file storage, no age/size/count limit, deletes and purges
    /// denied, direct get and atomic batches allowed; `replicas` 0 becomes 1.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas.max(1),
            duplicate_window: self.duplicate_window.unwrap_or(DEFAULT_DUPLICATE_WINDOW),
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

/// Creates the stream, or updates it to `settings` when it exists and differs (keeping its
/// replica count when `settings.replicas` is 0). Returns the stream's replica count.
pub(crate) async fn ensure(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<usize, StoreError> {
    let mut config = settings.config();
    match js.get_stream(&settings.name).await {
        Ok(existing) => {
            let current = &existing.cached_info().config;
            if settings.replicas == 0 {
                config.num_replicas = current.num_replicas;
            }
            if settings.duplicate_window.is_none() {
                config.duplicate_window = current.duplicate_window;
            }
            // An update is a proposal to the JetStream meta group in a cluster: skip it when
            // nothing would change (every service opens the stream at start).
            if !same(current, &config) {
                js.update_stream(&config).await.map_err(StoreError::nats)?;
            }
        }
        Err(err) => match err.kind() {
            // Only "stream not found" is a reason to create; anything else (a timeout during
            // a leader election) is reported rather than answered with a create that fails.
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                js.create_stream(config.clone())
                    .await
                    .map_err(StoreError::nats)?;
            }
            _ => return Err(StoreError::nats(err)),
        },
    }
    Ok(config.num_replicas)
}

/// Whether an existing stream already has every setting [`StreamSettings::config`] manages.
fn same(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects == wanted.subjects
        && current.num_replicas == wanted.num_replicas
        && current.duplicate_window == wanted.duplicate_window
        && current.deny_delete == wanted.deny_delete
        && current.deny_purge == wanted.deny_purge
        && current.allow_direct == wanted.allow_direct
        && current.allow_atomic_publish == wanted.allow_atomic_publish
        && current.discard == wanted.discard
        && current.max_age == wanted.max_age
        && current.max_bytes == wanted.max_bytes
        && current.max_messages == wanted.max_messages
        && current.max_messages_per_subject == wanted.max_messages_per_subject
        && current.description == wanted.description
}
