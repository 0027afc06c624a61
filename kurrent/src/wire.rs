//! How one tokenledger event is laid out in a KurrentDB event, and read back.
//!
//! - The event type is ours (`TokenCreated`, `TokenUsed`, ...).
//! - The payload is the canonical bytes, exactly as the chain hash covers them, stored as a
//!   binary (`application/octet-stream`) event so that no server or client re-encodes them.
//! - The event id is ours, so the server's own duplicate check and ours agree.
//! - The custom metadata is a small JSON object, [`Metadata`]: the logical stream, its
//!   version and the chain hash. The canonical bytes carry the stream and version too; a read
//!   checks that both agree, so an event written by anything else is named, not folded.
//!
//! The position is the KurrentDB stream revision plus one (revisions count from 0, positions
//! from 1), so the single stream's dense revisions are the log's dense positions.

use serde::{Deserialize, Serialize};
use tokenledger_events::codec;
use tokenledger_events::{Hash, StoredEvent, TokenEvent};
use uuid::Uuid;

/// The custom metadata of every event in the log's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The logical stream (`token-<uuid>`).
    pub stream_id: String,
    pub stream_version: u64,
    /// The chain hash at this position, hex.
    pub chain_hash: String,
}

/// What KurrentDB returns for one recorded event, reduced to what a read needs.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The revision in the log's stream (from 0).
    pub revision: u64,
    pub id: Uuid,
    pub event_type: String,
    pub data: Vec<u8>,
    pub custom_metadata: Vec<u8>,
}

impl From<&kurrentdb::RecordedEvent> for Recorded {
    fn from(e: &kurrentdb::RecordedEvent) -> Recorded {
        Recorded {
            revision: e.revision,
            id: e.id,
            event_type: e.event_type.clone(),
            data: e.data.to_vec(),
            custom_metadata: e.custom_metadata.to_vec(),
        }
    }
}

/// The custom metadata of `event`, as JSON bytes.
pub fn metadata_of(event: &StoredEvent) -> Vec<u8> {
    let meta = Metadata {
        stream_id: event.stream_id.to_string(),
        stream_version: event.stream_version,
        chain_hash: event.hash.to_hex(),
    };
    serde_json::to_vec(&meta).expect("a struct of strings and integers serializes")
}

/// The KurrentDB event for a sealed event: its type, id, canonical bytes and metadata.
pub fn event_data(event: &StoredEvent) -> kurrentdb::EventData {
    kurrentdb::EventData::binary(&event.event_type, event.bytes.clone().into())
        .id(event.event_id)
        .metadata(metadata_of(event).into())
}

/// Read one recorded event back as a stored event (without openings, which live beside the
/// log). An event of another shape is refused with what is wrong with it, never its content.
pub fn stored_event(recorded: &Recorded) -> Result<StoredEvent, String> {
    read_event(recorded).map(|(event, _)| event)
}

/// [`stored_event`], with the event decoded from its bytes.
pub fn read_event(recorded: &Recorded) -> Result<(StoredEvent, TokenEvent), String> {
    let position = recorded
        .revision
        .checked_add(1)
        .ok_or("the revision is past the last position")?;
    let meta: Metadata = serde_json::from_slice(&recorded.custom_metadata).map_err(|e| {
        format!(
            "event type {} has no tokenledger metadata (stream_id, stream_version, chain_hash): {}",
            printable(&recorded.event_type),
            e.classify_name()
        )
    })?;
    let hash = hex::decode(&meta.chain_hash)
        .ok()
        .and_then(|b| Hash::from_slice(&b))
        .ok_or("its metadata's chain_hash is not 32 bytes of hex")?;
    let decoded = codec::decode(&recorded.data).map_err(|e| {
        format!(
            "event type {} is not a tokenledger event: {e}",
            printable(&recorded.event_type)
        )
    })?;
    let header = decoded.header;
    if header.event_id != recorded.id {
        return Err("its bytes carry another event id than KurrentDB recorded".into());
    }
    if header.event_type != recorded.event_type {
        return Err(format!(
            "KurrentDB records the type {} but its bytes are a {}",
            printable(&recorded.event_type),
            header.event_type
        ));
    }
    if header.stream_id.to_string() != meta.stream_id
        || header.stream_version != meta.stream_version
    {
        return Err("its metadata names another stream or version than its bytes".into());
    }
    let event = StoredEvent {
        position,
        stream_id: header.stream_id,
        stream_version: header.stream_version,
        event_id: header.event_id,
        recorded_at: header.recorded_at,
        actor: header.actor,
        event_type: header.event_type,
        schema_version: header.schema_version,
        bytes: recorded.data.clone(),
        hash,
        openings: Vec::new(),
    };
    Ok((event, decoded.event))
}

/// A foreign event type as it may be shown: control characters escaped, at most 64 chars.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// What serde_json's error is about, without the input it quotes.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the expected fields",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::log::Sealer;
    use tokenledger_events::{
        DenyReason, ExpectedVersion, Head, LogId, NewEvent, StreamAppend, StreamId, Timestamp,
        TokenEvent, TokenUseDenied,
    };

    fn sealed() -> StoredEvent {
        let stream = StreamId::for_token(Uuid::from_u128(7));
        let append = StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: Uuid::from_u128(42),
                recorded_at: Timestamp::from_micros(1_790_000_000_000_000),
                actor: "token:7".into(),
                event: TokenEvent::UseDenied(TokenUseDenied {
                    reason: DenyReason::Revoked,
                    ip: Some("10.0.0.1".into()),
                    path: "/api/admin/console".into(),
                }),
                openings: Vec::new(),
            }],
        };
        let mut sealer = Sealer::new(LogId(Uuid::from_u128(1)), Head::GENESIS);
        sealer.seal(&append, 2).expect("seals").remove(0)
    }

    fn recorded(event: &StoredEvent) -> Recorded {
        Recorded {
            revision: event.position - 1,
            id: event.event_id,
            event_type: event.event_type.clone(),
            data: event.bytes.clone(),
            custom_metadata: metadata_of(event),
        }
    }

    #[test]
    fn an_event_round_trips_through_its_kurrentdb_form() {
        let event = sealed();
        let back = stored_event(&recorded(&event)).expect("reads back");
        assert_eq!(back.position, 1);
        assert_eq!(back.stream_id, event.stream_id);
        assert_eq!(back.stream_version, 3);
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.recorded_at, event.recorded_at);
        assert_eq!(back.actor, event.actor);
        assert_eq!(back.event_type, "TokenUseDenied");
        assert_eq!(
            back.bytes, event.bytes,
            "the canonical bytes are kept exactly"
        );
        assert_eq!(back.hash, event.hash);
        assert_eq!(
            back.decode().expect("decodes"),
            event.decode().expect("decodes")
        );
    }

    #[test]
    fn the_metadata_holds_stream_version_and_chain_hash() {
        let event = sealed();
        let meta: serde_json::Value =
            serde_json::from_slice(&metadata_of(&event)).expect("JSON metadata");
        assert_eq!(meta["stream_id"], event.stream_id.to_string());
        assert_eq!(meta["stream_version"], 3);
        assert_eq!(meta["chain_hash"], event.hash.to_hex());
        assert_eq!(meta.as_object().expect("an object").len(), 3);
        let data = event_data(&event);
        // The client's EventData keeps its parts private; its Debug form shows them.
        let shown = format!("{data:?}");
        assert!(shown.contains("application/octet-stream"), "{shown}");
        assert!(shown.contains("TokenUseDenied"), "{shown}");
    }

    #[test]
    fn the_position_is_the_revision_plus_one() {
        let event = sealed();
        let mut r = recorded(&event);
        r.revision = 41;
        assert_eq!(stored_event(&r).expect("reads").position, 42);
        r.revision = u64::MAX;
        assert!(stored_event(&r).is_err());
    }

    #[test]
    fn events_of_another_shape_are_named_without_their_content() {
        let event = sealed();
        let foreign = Recorded {
            revision: 4,
            id: Uuid::from_u128(9),
            event_type: "OrderPlaced\x1b[31m".into(),
            data: br#"{"order":"secret-ish"}"#.to_vec(),
            custom_metadata: br#"{"$correlationId":"x"}"#.to_vec(),
        };
        let why = stored_event(&foreign).expect_err("foreign metadata");
        assert!(why.contains("OrderPlaced\\u{1b}[31m"), "{why}");
        assert!(why.contains("no tokenledger metadata"), "{why}");
        assert!(
            !why.contains("secret-ish") && !why.contains('\x1b'),
            "{why}"
        );

        // Our metadata on bytes that are not ours.
        let mut r = recorded(&event);
        r.data = br#"{"order":1}"#.to_vec();
        let why = stored_event(&r).expect_err("foreign bytes");
        assert!(why.contains("is not a tokenledger event"), "{why}");

        // Bytes of ours under another id, type, stream or version.
        let mut r = recorded(&event);
        r.id = Uuid::from_u128(43);
        assert!(stored_event(&r).expect_err("id").contains("event id"));
        let mut r = recorded(&event);
        r.event_type = "TokenUsed".into();
        assert!(
            stored_event(&r)
                .expect_err("type")
                .contains("TokenUseDenied")
        );
        let mut r = recorded(&event);
        r.custom_metadata = serde_json::to_vec(&Metadata {
            stream_id: event.stream_id.to_string(),
            stream_version: 4,
            chain_hash: event.hash.to_hex(),
        })
        .expect("json");
        assert!(
            stored_event(&r)
                .expect_err("version")
                .contains("another stream or version")
        );
        let mut r = recorded(&event);
        r.custom_metadata = serde_json::to_vec(&Metadata {
            stream_id: event.stream_id.to_string(),
            stream_version: 3,
            chain_hash: "abcd".into(),
        })
        .expect("json");
        assert!(stored_event(&r).expect_err("hash").contains("chain_hash"));
        // An unknown metadata field is not ours either.
        let mut r = recorded(&event);
        r.custom_metadata =
            br#"{"stream_id":"token-x","stream_version":3,"chain_hash":"00","extra":1}"#.to_vec();
        assert!(stored_event(&r).is_err());
    }
}
