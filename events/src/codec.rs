//! Canonical bytes: the exact form an event is stored and hashed in.
//!
//! The encoding is compact JSON with a fixed key order (`event_id`, `stream_id`,
//! `stream_version`, `recorded_at`, `actor`, `event_type`, `schema_version`, `data`), so a
//! reviewer can read an export with any JSON tool and the chain still covers every byte.
//! Decoding dispatches on `(event_type, schema_version)`; an old schema is upcast there, in one
//! place, and projections only ever see the current vocabulary.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::primitives::{StreamId, Timestamp};
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
        TokenEvent::UseDeniedSummary(e) => out!(e),
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
        ("TokenUseDeniedSummary", 1) => {
            payload(event_type, 1, data).map(TokenEvent::UseDeniedSummary)
        }
        ("TokenRevoked", 1) => payload(event_type, 1, data).map(TokenEvent::Revoked),
        ("TokenRotated", 1) => payload(event_type, 1, data).map(TokenEvent::Rotated),
        _ => Err(CodecError::UnknownType {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::Commitment;
    use crate::vocabulary::{
        DenyReason, Environment, TokenCreated, TokenRevoked, TokenRotated, TokenUseDenied,
        TokenUseDeniedSummary, TokenUsed,
    };

    const TOKEN: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa);

    fn stream() -> StreamId {
        StreamId::for_token(TOKEN)
    }

    fn created() -> TokenEvent {
        TokenEvent::Created(TokenCreated {
            token_id: TOKEN,
            name: "deploy \"bot\" ✓".to_owned(),
            scopes: vec!["console:exec".to_owned(), "admin".to_owned()],
            environment: Environment::Live,
            expires_at: Timestamp::from_micros(1_800_000_000_000_000),
            created_by: "admin:alice".to_owned(),
            secret_commitment: Commitment([0xc3; 32]),
            rotated_from: Some(Uuid::from_u128(0xbb)),
        })
    }

    fn every_kind() -> Vec<TokenEvent> {
        vec![
            created(),
            TokenEvent::Used(TokenUsed {
                ip: Some("2001:db8::1".to_owned()),
                method: "POST".to_owned(),
                path: "/v1/verify".to_owned(),
                command: Some("tokens.list".to_owned()),
                user_agent: Some("curl/8.0".to_owned()),
            }),
            TokenEvent::Used(TokenUsed {
                ip: None,
                method: "GET".to_owned(),
                path: "/api/admin/console".to_owned(),
                command: None,
                user_agent: None,
            }),
            TokenEvent::UseDenied(TokenUseDenied {
                reason: DenyReason::EnvironmentMismatch,
                ip: Some("203.0.113.7".to_owned()),
                path: "/api/admin/console".to_owned(),
            }),
            TokenEvent::UseDeniedSummary(TokenUseDeniedSummary {
                reason: DenyReason::Revoked,
                ip: None,
                path: "/v1/verify".to_owned(),
                count: 4_999,
                first_at: Timestamp::from_micros(10),
                last_at: Timestamp::from_micros(20),
                window_secs: 60,
            }),
            TokenEvent::Revoked(TokenRevoked {
                actor: "admin:bob".to_owned(),
                reason: None,
            }),
            TokenEvent::Rotated(TokenRotated {
                successor_id: Uuid::from_u128(0xcc),
                old_expires_at: Timestamp::from_micros(-1),
            }),
        ]
    }

    fn encode_used() -> Vec<u8> {
        let used = every_kind().swap_remove(1);
        encode(
            Uuid::from_u128(1),
            &stream(),
            1,
            Timestamp::from_micros(0),
            "svc",
            &used,
        )
    }

    /// Replace the one occurrence of `from`, so an edit can never silently do nothing.
    fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from} in {text}");
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn every_event_kind_round_trips_with_its_header() {
        for (i, event) in every_kind().into_iter().enumerate() {
            let event_id = Uuid::from_u128(100 + i as u128);
            let version = 1 + i as u64;
            let at = Timestamp::from_micros(1_700_000_000_000_000 + i as i64);
            let bytes = encode(event_id, &stream(), version, at, "admin:alice", &event);

            let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{event:?}: {e}"));

            assert_eq!(
                decoded,
                Decoded {
                    header: Header {
                        event_id,
                        stream_id: stream(),
                        stream_version: version,
                        recorded_at: at,
                        actor: "admin:alice".to_owned(),
                        event_type: event.event_type().to_owned(),
                        schema_version: TokenEvent::CURRENT_SCHEMA,
                    },
                    event,
                }
            );
        }
    }

    #[test]
    fn canonical_bytes_are_compact_json_with_the_envelope_keys_in_a_fixed_order() {
        for event in every_kind() {
            let bytes = encode(
                Uuid::from_u128(7),
                &stream(),
                3,
                Timestamp::from_micros(5),
                "admin:alice",
                &event,
            );
            let text = std::str::from_utf8(&bytes).unwrap();

            assert!(text.starts_with(r#"{"event_id":""#), "{text}");
            assert!(!text.contains('\n') && !text.contains(": ") && !text.contains(", "));
            let keys = [
                "event_id",
                "stream_id",
                "stream_version",
                "recorded_at",
                "actor",
                "event_type",
                "schema_version",
                "data",
            ];
            let offsets: Vec<usize> = keys
                .iter()
                .map(|k| text.find(&format!("\"{k}\":")).expect(k))
                .collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "keys out of order in {text}"
            );
            assert!(text[offsets[7]..].starts_with(r#""data":{"#), "{text}");
            assert!(text.ends_with("}}"), "{text}");
        }
    }

    #[test]
    fn the_canonical_bytes_of_a_created_event_are_exactly_these() {
        // Existing chains hash these bytes: any change to field names, order or formatting
        // breaks verification of every stored log.
        let bytes = encode(
            Uuid::from_u128(1),
            &stream(),
            1,
            Timestamp::from_micros(1_700_000_000_000_000),
            "admin:alice",
            &created(),
        );
        let expected = format!(
            concat!(
                r#"{{"event_id":"00000000-0000-0000-0000-000000000001","#,
                r#""stream_id":"token-01900000-0000-7000-8000-0000000000aa","#,
                r#""stream_version":1,"recorded_at":1700000000000000,"actor":"admin:alice","#,
                r#""event_type":"TokenCreated","schema_version":1,"#,
                r#""data":{{"token_id":"01900000-0000-7000-8000-0000000000aa","#,
                r#""name":"deploy \"bot\" ✓","scopes":["console:exec","admin"],"#,
                r#""environment":"live","expires_at":1800000000000000,"#,
                r#""created_by":"admin:alice","secret_commitment":"{}","#,
                r#""rotated_from":"00000000-0000-0000-0000-0000000000bb"}}}}"#,
            ),
            "c3".repeat(32)
        );

        assert_eq!(std::str::from_utf8(&bytes).unwrap(), expected);
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        let bytes = edit(&encode_used(), r#""TokenUsed""#, r#""TokenFrobbed""#);

        assert_eq!(
            decode(&bytes),
            Err(CodecError::UnknownType {
                event_type: "TokenFrobbed".to_owned(),
                schema_version: 1,
            })
        );
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let bytes = edit(
            &encode_used(),
            r#""schema_version":1"#,
            r#""schema_version":2"#,
        );

        assert_eq!(
            decode(&bytes),
            Err(CodecError::UnknownType {
                event_type: "TokenUsed".to_owned(),
                schema_version: 2,
            })
        );
    }

    #[test]
    fn an_unknown_field_in_the_payload_is_refused() {
        let bytes = edit(
            &encode_used(),
            r#""data":{"#,
            r#""data":{"plaintext":"tl_test_x","#,
        );

        match decode(&bytes) {
            Err(CodecError::BadPayload {
                event_type,
                schema_version,
                detail,
            }) => {
                assert_eq!(event_type, "TokenUsed");
                assert_eq!(schema_version, 1);
                assert!(detail.contains("plaintext"), "{detail}");
            }
            other => panic!("expected BadPayload, got {other:?}"),
        }
    }

    #[test]
    fn a_payload_missing_a_required_field_is_refused() {
        let bytes = edit(&encode_used(), r#""method":"POST","#, "");

        assert!(
            matches!(decode(&bytes), Err(CodecError::BadPayload { detail, .. }) if detail.contains("method"))
        );
    }

    #[test]
    fn an_extra_top_level_field_is_refused() {
        let mut bytes = encode_used();
        assert_eq!(bytes.pop(), Some(b'}'));
        bytes.extend_from_slice(br#","signature":"x"}"#);

        match decode(&bytes) {
            Err(CodecError::Malformed(detail)) => assert!(detail.contains("signature"), "{detail}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_not_json_are_malformed() {
        assert!(matches!(
            decode(b"\x00\x01 not json"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(decode(b""), Err(CodecError::Malformed(_))));
    }
}
