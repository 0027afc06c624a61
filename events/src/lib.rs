//! tokenledger-events: **what happened**.
//!
//! Every token lifecycle action is an immutable event appended to one log. This crate owns the
//! vocabulary of those events, their canonical byte encoding, the hash chain that makes the log
//! tamper-evident, and the [`EventLog`] contract that storage backends implement. It performs no
//! I/O and never reads a clock: times arrive as arguments.
//!
//! # Layout
//!
//! - [`vocabulary`]: `TokenCreated`, `TokenUsed`, `TokenUseDenied`, `TokenRevoked`, `TokenRotated`.
//! - [`envelope`]: what the log adds around an event (position, stream, version, id, time, actor).
//! - [`codec`]: canonical bytes; decoding dispatches on (event type, schema version) to upcast.
//! - [`chain`]: the domain-separated SHA-256 chain, salted field commitments and the verifier.
//! - [`log`]: the [`EventLog`] trait, the append planning every backend shares, and
//!   [`MemoryLog`] for pure tests.

pub mod chain;
pub mod codec;
pub mod envelope;
pub mod log;
pub mod vocabulary;

pub use chain::{ChainError, ChainVerifier, Commitment, Hash, LogId};
pub use codec::CodecError;
pub use envelope::{Opening, StoredEvent, StreamId, Timestamp};
pub use log::{
    AppendError, EventLog, ExpectedVersion, Head, LogError, MemoryLog, NewEvent, StreamAppend,
};
pub use vocabulary::{
    DenyReason, Environment, TokenCreated, TokenEvent, TokenHash, TokenRevoked, TokenRotated,
    TokenUseDenied, TokenUsed,
};
