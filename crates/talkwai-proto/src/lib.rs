//! The TalkwAI wire contract: the subject scheme, header names, command reply and error
//! envelopes, and the decoding of command bodies. `proto/` at the repository root holds the
//! same contract for other languages (AsyncAPI and JSON Schemas generated from these types);
//! tests fail when the two drift.
//!
//! # Architecture invariant
//! No I/O and no NATS client: this crate describes messages, it does not send them. It depends
//! on `talkwai-domain` for the command and event types.

pub mod envelope;
pub mod headers;
pub mod subject;

pub use envelope::{CommandAccepted, CommandReply, ErrorBody, decode_command};
pub use subject::{CommandSubject, EventSubject, Scope, SubjectError};
