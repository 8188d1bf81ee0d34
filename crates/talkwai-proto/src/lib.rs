//! The TalkwAI wire contract: the subject scheme, header names, command reply and error
//! envelopes, and the decoding of command bodies. `proto/` at the repository root holds the
//! same contract for other languages (AsyncAPI and JSON Schemas generated from these types);
//! tests fail when the two drift.
//!
//! # Layout
//! - [`subject`], [`headers`], [`envelope`]: the wire itself; [`event`]: the event message
//!   format (headers and the decoding of a stored event); [`sealed`]: sealed personal
//!   fields; [`query`]: queries and live
//!   queries; [`room`]: room topics and presence messages; [`command_record`]: what a command
//!   id names, kept in the log.
//! - [`schema`]: the message catalog, the one table mapping actions and event types to Rust
//!   types and JSON Schemas; [`asyncapi`] and [`generate`] render `proto/` from it, [`samples`]
//!   holds the examples that seed new fixtures. `talkwai-proto-gen` writes the files.
//!
//! # Architecture invariant
//! No NATS client: this crate describes messages, it does not send them (the only I/O is the
//! generator writing `proto/`). It depends on `talkwai-domain` for the command and event types.

pub mod asyncapi;
pub mod changes;
pub mod command_record;
pub mod envelope;
pub mod event;
pub mod generate;
pub mod headers;
pub mod query;
pub mod room;
pub mod samples;
pub mod schema;
pub mod sealed;
pub mod subject;
pub mod writer_fence;
pub mod yaml;

pub use envelope::{CommandAccepted, CommandReply, ErasureReport, ErrorBody, decode_command};
pub use event::{ActorRef, EventMeta, StoredEvent, decode_stored, decode_stored_with};
pub use subject::{CommandSubject, EventSubject, Scope, SubjectError};
