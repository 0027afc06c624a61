//! tokenledger-events: **what happened**.
//!
//! Every token lifecycle action is an immutable event appended to one log. This crate owns the
//! vocabulary of those events, their canonical byte encoding, the hash chain that makes the log
//! tamper-evident, and the [`EventLog`] contract that storage backends implement. It performs no
//! I/O and never reads a clock: times arrive as arguments.
//!
//! # Layout
//!
//! Each module uses only the modules listed above it, tests included, so no two reach into each
//! other (`tests/api/layering.rs` checks it):
//!
//! - [`primitives`]: `Timestamp`, `StreamId`, `Hash`, `Commitment` (and `field_commitment`),
//!   `LogId`, `Head`. A leaf: it imports nothing from this crate.
//! - [`vocabulary`]: `TokenCreated`, `TokenUsed`, `TokenUseDenied`, `TokenRevoked`, `TokenRotated`,
//!   and the commitments each event carries.
//! - [`codec`]: canonical bytes; decoding dispatches on (event type, schema version) to upcast.
//! - [`envelope`]: what the log adds around an event (position, stream, version, id, time, actor)
//!   and the openings beside it.
//! - [`chain`]: the domain-separated SHA-256 chain and the verifier that recomputes it.
//! - [`log`]: the [`EventLog`] trait, the append planning every backend shares, and
//!   [`MemoryLog`] for pure tests.
//! - [`verify`]: full and head-only verification of any [`EventLog`] against its recorded head.
//! - [`merkle`]: the RFC 6962 tree over the canonical bytes, kept as stored hashes in Go's
//!   sumdb `tlog` layout: roots and inclusion and consistency proofs for any size, and their
//!   RFC 9162 checks. Uses only `primitives`.
//! - [`note`]: C2SP signed notes with Ed25519: `NoteSigner` (redacted `Debug`), `VerifierKey`
//!   (the `name+id+key` vkey), signing, and verification that ignores unknown keys. Imports
//!   nothing from this crate.
//! - [`checkpoint`]: C2SP tlog checkpoints (`<origin>\n<size>\n<base64 root>\n`, no extension
//!   lines), strictly parsed, signed by the origin's key as a note ([`SignedCheckpoint`]), and
//!   checked against inclusion and consistency proofs.
//! - [`export`]: signed export bundles (`tokenledger-export/v1`): streamed writers that hash
//!   each file as it is written, the strict signed manifest, and the offline verifier that
//!   reports every problem with its file and position.
//! - [`proof`]: single-event inclusion proofs and consistency proofs between two signed
//!   checkpoints, as self-contained JSON files, and their offline checks.
//!
//! Older paths stay: `chain` re-exports the chain values (`chain::Hash`, `chain::field_commitment`),
//! `envelope` re-exports `Timestamp` and `StreamId`, and `log` re-exports `Head`.

pub mod chain;
pub mod checkpoint;
pub mod codec;
pub mod envelope;
pub mod export;
pub mod log;
pub mod merkle;
pub mod note;
pub mod primitives;
pub mod proof;
pub mod verify;
pub mod vocabulary;

pub use chain::{ChainError, ChainVerifier};
pub use checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
pub use codec::CodecError;
pub use envelope::{Opening, StoredEvent};
pub use export::{
    BundleFile, BundleReport, EventsWriter, ExportError, ExportStart, Failure, FileDigest,
    HashingWriter, Manifest, ManifestError, OpeningsWriter, verify_bundle,
};
pub use log::{
    AppendError, EventLog, ExpectedVersion, LogError, MemoryLog, NewEvent, StreamAppend,
};
pub use merkle::{HashReader, MerkleError, RightEdge, StoredHashes, TreeError};
pub use note::{KeyError, Note, NoteError, NoteSigner, VerifierKey};
pub use primitives::{Commitment, Hash, Head, LogId, StreamId, Timestamp};
pub use proof::{
    ProofError, ProvenConsistency, ProvenEvent, verify_consistency_file, verify_proof,
};
pub use verify::{
    Progress, VerifyError, VerifyReport, verify_chain, verify_chain_with, verify_head,
};
pub use vocabulary::{
    DenyReason, Environment, TokenCreated, TokenEvent, TokenHash, TokenLeakReported, TokenRevoked,
    TokenRotated, TokenUseDenied, TokenUseDeniedSummary, TokenUsed,
};
