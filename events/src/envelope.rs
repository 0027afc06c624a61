//! What the log adds around an event: where it sits, which stream it belongs to, who caused it
//! and when. Secret openings travel beside the envelope and are redacted from every `Debug`.

use std::fmt;

use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::primitives::{Commitment, Hash, field_commitment};
use crate::vocabulary::TokenEvent;

pub use crate::primitives::{StreamId, Timestamp};

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
        field_commitment(&self.field, &self.salt, &self.value)
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

    /// What a store keeps as the row's body: for a version 2 event its payload alone (the
    /// envelope is the row's other columns, and [`StoredEvent::from_stored_body`] puts it
    /// back); for a version 1 event its whole bytes.
    pub fn stored_body(&self) -> &[u8] {
        let offset = codec::envelope_len(&self.stream_id, &self.actor, &self.event_type);
        if self.schema_version >= 2 && self.bytes.len() >= offset {
            &self.bytes[offset..]
        } else {
            &self.bytes
        }
    }

    /// An event read back from a store with its stored body in `bytes`, made whole: for a
    /// version 2 row the envelope is rebuilt from the columns around the stored payload; a
    /// version 1 body is already the whole canonical bytes. A column changed after the fact
    /// changes these bytes, so the chain hash catches it.
    pub fn from_stored_body(mut self) -> StoredEvent {
        if self.schema_version >= 2 {
            self.bytes = codec::frame(
                self.event_id,
                &self.stream_id,
                self.stream_version,
                self.recorded_at,
                &self.actor,
                &self.event_type,
                &self.bytes,
            );
        }
        self
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
