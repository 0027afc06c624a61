//! Canonical bytes: the exact form an event is stored and hashed in.
//!
//! The encoding is compact JSON with a fixed key order (`event_id`, `stream_id`,
//! `stream_version`, `recorded_at`, `actor`, `event_type`, `schema_version`, `data`), so a
//! reviewer can read an export with any JSON tool and the chain still covers every byte.
//! Decoding dispatches on `(event_type, schema_version)`; an old schema is upcast there, in one
//! place, and projections only ever see the current vocabulary.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::envelope::{StreamId, Timestamp};
use crate::vocabulary::TokenEvent;

/// The envelope fields the canonical bytes repeat, so an exported event stands on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub event_type: String,
    pub schema_version: u32,
}

/// A decoded event with the header its bytes carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    pub event: TokenEvent,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event bytes are not valid canonical JSON: {0}")]
    Malformed(String),
    #[error("unknown event type {event_type:?} at schema version {schema_version}")]
    UnknownType {
        event_type: String,
        schema_version: u32,
    },
    #[error("{event_type} v{schema_version} payload does not match its schema: {detail}")]
    BadPayload {
        event_type: String,
        schema_version: u32,
        detail: String,
    },
}

#[derive(Serialize)]
struct CanonicalOut<'a, T: Serialize> {
    event_id: Uuid,
    stream_id: &'a StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: &'a str,
    event_type: &'a str,
    schema_version: u32,
    data: &'a T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalIn {
    event_id: Uuid,
    stream_id: StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: String,
    event_type: String,
    schema_version: u32,
    data: serde_json::Value,
}

/// Encode an event with its envelope into canonical bytes at the current schema version.
pub fn encode(
    event_id: Uuid,
    stream_id: &StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: &str,
    event: &TokenEvent,
) -> Vec<u8> {
    fn write<T: Serialize>(out: CanonicalOut<'_, T>) -> Vec<u8> {
        // Serializing plain structs of strings, integers and UUIDs into memory cannot fail.
        serde_json::to_vec(&out).expect("canonical event serializes")
    }
    macro_rules! out {
        ($data:expr) => {
            write(CanonicalOut {
                event_id,
                stream_id,
                stream_version,
                recorded_at,
                actor,
                event_type: event.event_type(),
                schema_version: TokenEvent::CURRENT_SCHEMA,
                data: $data,
            })
        };
    }
    match event {
        TokenEvent::Created(e) => out!(e),
        TokenEvent::Used(e) => out!(e),
        TokenEvent::UseDenied(e) => out!(e),
        TokenEvent::Revoked(e) => out!(e),
        TokenEvent::Rotated(e) => out!(e),
    }
}

/// Decode canonical bytes, upcasting older schema versions to the current vocabulary.
pub fn decode(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let raw: CanonicalIn =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let event = upcast(&raw.event_type, raw.schema_version, raw.data)?;
    Ok(Decoded {
        header: Header {
            event_id: raw.event_id,
            stream_id: raw.stream_id,
            stream_version: raw.stream_version,
            recorded_at: raw.recorded_at,
            actor: raw.actor,
            event_type: raw.event_type,
            schema_version: raw.schema_version,
        },
        event,
    })
}

/// The one place where stored schema versions meet the current vocabulary. A new schema
/// version of an event adds an arm here that converts the old payload; nothing else changes.
fn upcast(
    event_type: &str,
    schema_version: u32,
    data: serde_json::Value,
) -> Result<TokenEvent, CodecError> {
    fn payload<T: DeserializeOwned>(
        event_type: &str,
        schema_version: u32,
        data: serde_json::Value,
    ) -> Result<T, CodecError> {
        serde_json::from_value(data).map_err(|e| CodecError::BadPayload {
            event_type: event_type.to_owned(),
            schema_version,
            detail: e.to_string(),
        })
    }
    match (event_type, schema_version) {
        ("TokenCreated", 1) => payload(event_type, 1, data).map(TokenEvent::Created),
        ("TokenUsed", 1) => payload(event_type, 1, data).map(TokenEvent::Used),
        ("TokenUseDenied", 1) => payload(event_type, 1, data).map(TokenEvent::UseDenied),
        ("TokenRevoked", 1) => payload(event_type, 1, data).map(TokenEvent::Revoked),
        ("TokenRotated", 1) => payload(event_type, 1, data).map(TokenEvent::Rotated),
        _ => Err(CodecError::UnknownType {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}
