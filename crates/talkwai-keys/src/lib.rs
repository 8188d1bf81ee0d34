//! Personal-data keys for crypto-shredding: personal fields of events are sealed with a key
//! per data subject before they are appended, and erased for good by destroying that key.
//!
//! # Layout
//! - [`cipher`]: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) keys, wrapping, the master
//!   key and its fingerprint, the data key that seals `talkwai_proto::sealed` fields.
//! - [`store`]: [`KeyStore`], the hierarchy (master → tenant → data keys) in the JetStream KV
//!   bucket `TALKWAI_KEYS`, with a pool of ready keys for writers, a bounded cache and
//!   [`Keyring`]s for readers, destruction, master-key rotation, export and import.
//!
//! - [`backup`]: the bucket's entries as stored (wrapped) for `talkwai keys export` and
//!   `talkwai events export`, and their restore (idempotent, never replacing a key, never
//!   bringing a destroyed one back); neither needs a master key.
//! - [`args`]: [`KeyArgs`], the master-key flags every service flattens into its `Config`.
//!
//! # Architecture invariant
//! The wire shape of a sealed field and which fields are personal belong to `talkwai-proto`
//! (`sealed`); this crate only holds and uses keys. It never reads or writes the event log.

pub mod args;
pub mod backup;
pub mod cipher;
pub mod error;
pub mod store;

pub use args::KeyArgs;
pub use cipher::{DataKey, MasterKey, SecretKey};
pub use error::KeyError;
pub use store::{
    KeyStore, KeyStoreConfig, Keyring, entry_name, keyring_for, keyring_of, stored_key, stored_slot,
};
