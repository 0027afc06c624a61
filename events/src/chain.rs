//! The tamper-evident chain.
//!
//! `hash_n = SHA-256("tokenledger/event/v1" || log_id || be64(n) || hash_{n-1} || be32(len) || bytes_n)`
//! over the exact stored bytes of event `n`, with `hash_0` all zeros. Secret fields are committed
//! as `SHA-256("tokenledger/field/v1" || field || 0x00 || salt || value)`, so the chain verifies
//! byte for byte without the openings. [`ChainVerifier`] recomputes all of it and names the first
//! position that does not hold.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::envelope::StoredEvent;
use crate::vocabulary::TokenEvent;

pub const EVENT_DOMAIN: &[u8] = b"tokenledger/event/v1";
pub const FIELD_DOMAIN: &[u8] = b"tokenledger/field/v1";

/// The largest canonical event the chain accepts; its length is hashed as a be32.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// A chain hash. Public: it commits to the log, not to any secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.try_into().ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A salted commitment to a secret field. Without the opening it reveals nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment(pub [u8; 32]);

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commitment({})", hex::encode(self.0))
    }
}

impl Serialize for Commitment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Commitment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(|_| {
            serde::de::Error::custom("commitment must be 64 lowercase hex characters")
        })?;
        Ok(Commitment(out))
    }
}

/// Identifies one log; bound into every hash so events cannot be spliced between logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogId(pub Uuid);

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The end of the log: its last position (0 when empty) and that event's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: Hash,
}

impl Head {
    pub const GENESIS: Head = Head {
        position: 0,
        hash: Hash::ZERO,
    };
}

pub fn event_hash(log_id: LogId, position: u64, prev: &Hash, bytes: &[u8]) -> Hash {
    let len = u32::try_from(bytes.len()).expect("event size is bounded by MAX_EVENT_BYTES");
    let mut h = Sha256::new();
    h.update(EVENT_DOMAIN);
    h.update(log_id.0.as_bytes());
    h.update(position.to_be_bytes());
    h.update(prev.0);
    h.update(len.to_be_bytes());
    h.update(bytes);
    Hash(h.finalize().into())
}

pub fn field_commitment(field: &str, salt: &[u8], value: &[u8]) -> Commitment {
    let mut h = Sha256::new();
    h.update(FIELD_DOMAIN);
    h.update(field.as_bytes());
    h.update([0u8]);
    h.update(salt);
    h.update(value);
    Commitment(h.finalize().into())
}

impl TokenEvent {
    /// The secret fields this event commits to, by opening field name.
    pub fn commitments(&self) -> Vec<(&'static str, Commitment)> {
        match self {
            TokenEvent::Created(c) => vec![(
                crate::vocabulary::TokenCreated::SECRET_FIELD,
                c.secret_commitment,
            )],
            _ => Vec::new(),
        }
    }
}

/// Where the chain stops holding, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("position {position}: {problem}")]
pub struct ChainError {
    pub position: u64,
    pub problem: ChainProblem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainProblem {
    #[error("expected this position next, found position {found} (events missing or reordered)")]
    Gap { found: u64 },
    #[error(
        "stored hash does not match the hash recomputed from the stored bytes (the event or the chain was altered)"
    )]
    HashMismatch,
    #[error("stored bytes do not decode: {0}")]
    Undecodable(CodecError),
    #[error("column {0} disagrees with the hashed event bytes")]
    ColumnMismatch(&'static str),
    #[error("opening {0:?} does not match the commitment in the event")]
    OpeningMismatch(String),
    #[error("log head records hash {recorded} but the chain ends with {computed}")]
    HeadHashMismatch { recorded: Hash, computed: Hash },
    #[error("log head records position {recorded} but the last stored event is position {found}")]
    HeadPositionMismatch { recorded: u64, found: u64 },
}

/// Recomputes the chain one event at a time, in position order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    log_id: LogId,
    head: Head,
}

impl ChainVerifier {
    pub fn new(log_id: LogId) -> Self {
        ChainVerifier {
            log_id,
            head: Head::GENESIS,
        }
    }

    /// Continue verification after `head`, trusted as already verified.
    pub fn resume(log_id: LogId, head: Head) -> Self {
        ChainVerifier { log_id, head }
    }

    /// The verified head so far.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Check the next event: its position, its hash over the stored bytes, that its columns
    /// agree with the bytes, and that any openings open the commitments the event carries.
    pub fn check(&mut self, event: &StoredEvent) -> Result<(), ChainError> {
        let position = self.head.position + 1;
        let fail = |problem| ChainError { position, problem };
        if event.position != position {
            return Err(fail(ChainProblem::Gap {
                found: event.position,
            }));
        }
        if event.bytes.len() > MAX_EVENT_BYTES {
            return Err(fail(ChainProblem::Undecodable(CodecError::Malformed(
                format!("event is {} bytes, above the limit", event.bytes.len()),
            ))));
        }
        let computed = event_hash(self.log_id, position, &self.head.hash, &event.bytes);
        if computed != event.hash {
            return Err(fail(ChainProblem::HashMismatch));
        }
        let decoded =
            codec::decode(&event.bytes).map_err(|e| fail(ChainProblem::Undecodable(e)))?;
        let h = &decoded.header;
        let column = if h.event_id != event.event_id {
            Some("event_id")
        } else if h.stream_id != event.stream_id {
            Some("stream_id")
        } else if h.stream_version != event.stream_version {
            Some("stream_version")
        } else if h.recorded_at != event.recorded_at {
            Some("recorded_at")
        } else if h.actor != event.actor {
            Some("actor")
        } else if h.event_type != event.event_type {
            Some("event_type")
        } else if h.schema_version != event.schema_version {
            Some("schema_version")
        } else {
            None
        };
        if let Some(column) = column {
            return Err(fail(ChainProblem::ColumnMismatch(column)));
        }
        let commitments = decoded.event.commitments();
        for opening in &event.openings {
            let committed = commitments
                .iter()
                .find(|(field, _)| *field == opening.field)
                .map(|(_, c)| *c);
            if committed != Some(opening.commitment()) {
                return Err(fail(ChainProblem::OpeningMismatch(opening.field.clone())));
            }
        }
        self.head = Head {
            position,
            hash: computed,
        };
        Ok(())
    }

    /// Compare the verified chain with the head the log records.
    pub fn finish(&self, recorded: Head) -> Result<Head, ChainError> {
        if recorded.position != self.head.position {
            return Err(ChainError {
                position: self.head.position.min(recorded.position) + 1,
                problem: ChainProblem::HeadPositionMismatch {
                    recorded: recorded.position,
                    found: self.head.position,
                },
            });
        }
        if recorded.hash != self.head.hash {
            return Err(ChainError {
                position: recorded.position,
                problem: ChainProblem::HeadHashMismatch {
                    recorded: recorded.hash,
                    computed: self.head.hash,
                },
            });
        }
        Ok(self.head)
    }
}
