//! What the log adds around an event: where it sits, which stream it belongs to, who caused it
//! and when. Secret openings travel beside the envelope and are redacted from every `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::{Commitment, Hash};
use crate::codec::{self, CodecError};
use crate::vocabulary::TokenEvent;

/// Microseconds since the Unix epoch, UTC. Integer time keeps canonical bytes exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `self + micros`, saturating instead of overflowing on absurd inputs.
    pub const fn plus_micros(self, micros: i64) -> Self {
        Timestamp(self.0.saturating_add(micros))
    }
}

/// The stream an event belongs to: one per token (`token-<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn for_token(token_id: Uuid) -> Self {
        StreamId(format!("token-{token_id}"))
    }

    /// A stream id from stored text; any non-empty string up to 200 bytes is accepted.
    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > 200 {
            return Err(format!(
                "stream id must be 1 to 200 bytes, got {} bytes",
                raw.len()
            ));
        }
        Ok(StreamId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token id of a `token-<uuid>` stream.
    pub fn token_id(&self) -> Option<Uuid> {
        self.0
            .strip_prefix("token-")
            .and_then(|id| Uuid::parse_str(id).ok())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret behind a field commitment: `(field, salt, value)`. Stored only in the openings
/// table, in the same transaction as its event; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Opening {
    pub field: String,
    pub salt: [u8; 32],
    pub value: Vec<u8>,
}

impl Opening {
    pub fn commitment(&self) -> Commitment {
        crate::chain::field_commitment(&self.field, &self.salt, &self.value)
    }
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("field", &self.field)
            .field("salt", &"<redacted>")
            .field("value", &"<redacted>")
            .finish()
    }
}

/// An event as the log holds it: the envelope columns, the exact canonical bytes, the chain hash
/// and any openings.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: u64,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub event_type: String,
    pub schema_version: u32,
    /// The canonical bytes the chain hash covers, exactly as stored.
    pub bytes: Vec<u8>,
    pub hash: Hash,
    pub openings: Vec<Opening>,
}

impl StoredEvent {
    /// Decode (and upcast) the event from its stored bytes.
    pub fn decode(&self) -> Result<TokenEvent, CodecError> {
        codec::decode(&self.bytes).map(|decoded| decoded.event)
    }

    pub fn opening(&self, field: &str) -> Option<&Opening> {
        self.openings.iter().find(|o| o.field == field)
    }
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredEvent")
            .field("position", &self.position)
            .field("stream_id", &self.stream_id)
            .field("stream_version", &self.stream_version)
            .field("event_id", &self.event_id)
            .field("recorded_at", &self.recorded_at)
            .field("actor", &self.actor)
            .field("event_type", &self.event_type)
            .field("schema_version", &self.schema_version)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("hash", &self.hash)
            .field("openings", &self.openings)
            .finish()
    }
}
