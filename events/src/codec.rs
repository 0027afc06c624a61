//! Canonical bytes: the exact form an event is hashed, signed and exported in.
//!
//! Schema version 2 (current) is a binary envelope followed by the payload, each field once:
//!
//! ```text
//! 0x02                          the format version (a version 1 event is JSON and begins with '{')
//! event_id                      16 bytes
//! stream_version                u64, big-endian
//! recorded_at                   i64 microseconds since the Unix epoch, big-endian
//! len u8     || stream_id       at most 200 bytes of UTF-8
//! len u32 BE || actor           UTF-8
//! len u8     || event_type      UTF-8
//! payload                       the rest: compact JSON of the event's fields, in declaration order
//! ```
//!
//! The envelope is exactly the log's columns, so a store keeps only the payload as the row's
//! body and rebuilds the bytes from the row ([`frame`]); the payload stays JSON so the audit view
//! can read fields with the database's JSON functions. Version 1 (the whole envelope repeated as
//! JSON keys, then `data`) is still decoded, so a log written before keeps verifying. Decoding
//! dispatches on `(event_type, schema_version)`; an old schema is upcast there, in one place, and
//! projections only ever see the current vocabulary.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::primitives::{StreamId, Timestamp};
use crate::vocabulary::TokenEvent;

/// The first byte of a version 2 event.
const V2: u8 = 2;

/// The envelope fields the canonical bytes carry, so an exported event stands on its own.
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

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event bytes are not a canonical event: {0}")]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalV1 {
    event_id: Uuid,
    stream_id: StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: String,
    event_type: String,
    schema_version: u32,
    data: serde_json::Value,
}

/// The length of a version 2 envelope with these variable fields: where the payload starts.
pub fn envelope_len(stream_id: &StreamId, actor: &str, event_type: &str) -> usize {
    1 + 16 + 8 + 8 + 1 + stream_id.as_str().len() + 4 + actor.len() + 1 + event_type.len()
}

/// Version 2 canonical bytes from the envelope columns and a payload: what a store rebuilds
/// from a row whose body holds only the payload.
pub fn frame(
    event_id: Uuid,
    stream_id: &StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: &str,
    event_type: &str,
    payload: &[u8],
) -> Vec<u8> {
    let stream = stream_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(envelope_len(stream_id, actor, event_type) + payload.len());
    out.push(V2);
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(&stream_version.to_be_bytes());
    out.extend_from_slice(&recorded_at.as_micros().to_be_bytes());
    // StreamId holds at most 200 bytes and event types are short names of ours; an actor
    // longer than 4 GiB cannot reach here (events are bounded far below that).
    out.push(u8::try_from(stream.len()).expect("stream ids are at most 200 bytes"));
    out.extend_from_slice(stream);
    out.extend_from_slice(
        &u32::try_from(actor.len())
            .expect("actors are bounded by the event size")
            .to_be_bytes(),
    );
    out.extend_from_slice(actor.as_bytes());
    out.push(u8::try_from(event_type.len()).expect("event type names are short"));
    out.extend_from_slice(event_type.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of an event: compact JSON of its fields in declaration order.
pub fn payload(event: &TokenEvent) -> Vec<u8> {
    // Serializing plain structs of strings, integers and UUIDs into memory cannot fail.
    let json = match event {
        TokenEvent::Created(e) => serde_json::to_vec(e),
        TokenEvent::Used(e) => serde_json::to_vec(e),
        TokenEvent::UseDenied(e) => serde_json::to_vec(e),
        TokenEvent::UseDeniedSummary(e) => serde_json::to_vec(e),
        TokenEvent::Revoked(e) => serde_json::to_vec(e),
        TokenEvent::Rotated(e) => serde_json::to_vec(e),
        TokenEvent::LeakReported(e) => serde_json::to_vec(e),
    };
    json.expect("event payload serializes")
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
    frame(
        event_id,
        stream_id,
        stream_version,
        recorded_at,
        actor,
        event.event_type(),
        &payload(event),
    )
}

/// Where the payload of version 2 bytes starts; `None` for version 1 bytes (their body is the
/// whole canonical JSON) or bytes too short to hold an envelope.
pub fn payload_offset(bytes: &[u8]) -> Option<usize> {
    let mut r = Reader { bytes, at: 0 };
    read_envelope(&mut r).ok().map(|_| r.at)
}

/// Decode canonical bytes, upcasting older schema versions to the current vocabulary.
pub fn decode(bytes: &[u8]) -> Result<Decoded, CodecError> {
    match bytes.first() {
        Some(&V2) => decode_v2(bytes),
        Some(b'{') => decode_v1(bytes),
        Some(other) => Err(CodecError::Malformed(format!(
            "unknown format byte 0x{other:02x}; expected 0x02 or a JSON object"
        ))),
        None => Err(CodecError::Malformed("no bytes".to_owned())),
    }
}

/// A cursor over version 2 bytes; every read names what was cut short.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| CodecError::Malformed(format!("cut short in {what}")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn text(&mut self, len: usize, what: &str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| CodecError::Malformed(format!("{what} is not UTF-8")))
    }
}

fn read_envelope(r: &mut Reader<'_>) -> Result<Header, CodecError> {
    if r.array::<1>("the format byte")? != [V2] {
        return Err(CodecError::Malformed("not a version 2 event".to_owned()));
    }
    let event_id = Uuid::from_bytes(r.array("event_id")?);
    let stream_version = u64::from_be_bytes(r.array("stream_version")?);
    let recorded_at = Timestamp::from_micros(i64::from_be_bytes(r.array("recorded_at")?));
    let len = r.array::<1>("stream_id")?[0] as usize;
    let stream_id = StreamId::new(r.text(len, "stream_id")?)
        .map_err(|e| CodecError::Malformed(format!("stream_id: {e}")))?;
    let len = u32::from_be_bytes(r.array("actor")?) as usize;
    let actor = r.text(len, "actor")?.to_owned();
    let len = r.array::<1>("event_type")?[0] as usize;
    let event_type = r.text(len, "event_type")?.to_owned();
    Ok(Header {
        event_id,
        stream_id,
        stream_version,
        recorded_at,
        actor,
        event_type,
        schema_version: u32::from(V2),
    })
}

fn decode_v2(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let mut r = Reader { bytes, at: 0 };
    let header = read_envelope(&mut r)?;
    let event = upcast(
        &header.event_type,
        u32::from(V2),
        Payload::Bytes(&bytes[r.at..]),
    )?;
    Ok(Decoded { header, event })
}

fn decode_v1(bytes: &[u8]) -> Result<Decoded, CodecError> {
    let raw: CanonicalV1 =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    // A JSON body is version 1; one that claims another version is not ours to read.
    if raw.schema_version != 1 {
        return Err(CodecError::UnknownType {
            event_type: raw.event_type,
            schema_version: raw.schema_version,
        });
    }
    let event = upcast(&raw.event_type, 1, Payload::Value(raw.data))?;
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

fn bad_payload(event_type: &str, schema_version: u32, e: serde_json::Error) -> CodecError {
    CodecError::BadPayload {
        event_type: event_type.to_owned(),
        schema_version,
        detail: e.to_string(),
    }
}

/// A payload as stored: the bytes of a version 2 event, or the `data` of a version 1 event
/// (whose fields are those of version 2; only the envelope around them changed).
enum Payload<'a> {
    Bytes(&'a [u8]),
    Value(serde_json::Value),
}

impl Payload<'_> {
    fn parse<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Payload::Bytes(bytes) => serde_json::from_slice(bytes),
            Payload::Value(value) => serde_json::from_value(value),
        }
    }
}

/// The one place where stored payloads meet the current vocabulary: a new schema version
/// of an event adds an arm that converts its payload; nothing else changes.
fn upcast(
    event_type: &str,
    schema_version: u32,
    payload: Payload<'_>,
) -> Result<TokenEvent, CodecError> {
    let bad = |e| bad_payload(event_type, schema_version, e);
    Ok(match (event_type, schema_version) {
        ("TokenCreated", 1 | 2) => TokenEvent::Created(payload.parse().map_err(bad)?),
        ("TokenUsed", 1 | 2) => TokenEvent::Used(payload.parse().map_err(bad)?),
        ("TokenUseDenied", 1 | 2) => TokenEvent::UseDenied(payload.parse().map_err(bad)?),
        ("TokenUseDeniedSummary", 1 | 2) => {
            TokenEvent::UseDeniedSummary(payload.parse().map_err(bad)?)
        }
        ("TokenRevoked", 1 | 2) => TokenEvent::Revoked(payload.parse().map_err(bad)?),
        ("TokenRotated", 1 | 2) => TokenEvent::Rotated(payload.parse().map_err(bad)?),
        ("TokenLeakReported", 1 | 2) => TokenEvent::LeakReported(payload.parse().map_err(bad)?),
        _ => {
            return Err(CodecError::UnknownType {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
    })
}

/// Version 1 canonical bytes, as logs written before version 2 hold them: for tests that
/// build such a log.
#[doc(hidden)]
pub fn encode_v1(
    event_id: Uuid,
    stream_id: &StreamId,
    stream_version: u64,
    recorded_at: Timestamp,
    actor: &str,
    event: &TokenEvent,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct V1<'a> {
        event_id: Uuid,
        stream_id: &'a StreamId,
        stream_version: u64,
        recorded_at: Timestamp,
        actor: &'a str,
        event_type: &'a str,
        schema_version: u32,
    }
    let mut out = serde_json::to_vec(&V1 {
        event_id,
        stream_id,
        stream_version,
        recorded_at,
        actor,
        event_type: event.event_type(),
        schema_version: 1,
    })
    .expect("canonical event serializes");
    // `data` came last, holding the payload exactly as version 2 writes it.
    out.pop();
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(&payload(event));
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::Commitment;
    use crate::vocabulary::{
        DenyReason, Environment, TokenCreated, TokenLeakReported, TokenRevoked, TokenRotated,
        TokenUseDenied, TokenUseDeniedSummary, TokenUsed,
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
            allowed_ips: Vec::new(),
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
                until_successor_used: false,
            }),
            TokenEvent::LeakReported(TokenLeakReported {
                url: Some("https://github.com/o/r/blob/abc/.env".to_owned()),
                source: Some("content".to_owned()),
                token_type: Some("tokenledger_api_token".to_owned()),
                reporter: "github".to_owned(),
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

    fn encode_used_v1() -> Vec<u8> {
        let used = every_kind().swap_remove(1);
        encode_v1(
            Uuid::from_u128(1),
            &stream(),
            1,
            Timestamp::from_micros(0),
            "svc",
            &used,
        )
    }

    /// Version 2 bytes of a used event with another type name or payload.
    fn framed(event_type: &str, payload: &str) -> Vec<u8> {
        frame(
            Uuid::from_u128(1),
            &stream(),
            1,
            Timestamp::from_micros(0),
            "svc",
            event_type,
            payload.as_bytes(),
        )
    }

    fn used_payload() -> String {
        String::from_utf8(payload(&every_kind().swap_remove(1))).unwrap()
    }

    /// Replace the one occurrence of `from`, so an edit can never silently do nothing.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert_eq!(text.matches(from).count(), 1, "{from} in {text}");
        text.replacen(from, to, 1)
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
    fn version_1_bytes_of_every_kind_still_decode_to_the_same_event() {
        for event in every_kind() {
            let at = Timestamp::from_micros(-5);
            let bytes = encode_v1(Uuid::from_u128(9), &stream(), 4, at, "cli:root", &event);

            let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{event:?}: {e}"));

            assert_eq!(decoded.event, event);
            assert_eq!(decoded.header.schema_version, 1);
            assert_eq!(decoded.header.recorded_at, at);
            assert_eq!(decoded.header.actor, "cli:root");
            assert_eq!(
                payload_offset(&bytes),
                None,
                "version 1 has no envelope to skip"
            );
        }
    }

    #[test]
    fn the_envelope_is_each_column_once_and_the_payload_is_compact_json() {
        for event in every_kind() {
            let bytes = encode(
                Uuid::from_u128(7),
                &stream(),
                3,
                Timestamp::from_micros(5),
                "admin:alice",
                &event,
            );
            let offset = payload_offset(&bytes).expect("a version 2 envelope");
            let text = std::str::from_utf8(&bytes[offset..]).unwrap();

            assert_eq!(bytes[0], 2);
            assert_eq!(
                offset,
                envelope_len(&stream(), "admin:alice", event.event_type())
            );
            assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
            assert!(!text.contains('\n') && !text.contains(": ") && !text.contains(", "));
            // No envelope field is repeated inside the payload.
            for key in [
                "event_id",
                "stream_id",
                "stream_version",
                "recorded_at",
                "event_type",
            ] {
                assert!(!text.contains(&format!("\"{key}\":")), "{key} in {text}");
            }
            // The bytes are exactly the envelope rebuilt from the columns plus the payload.
            assert_eq!(
                frame(
                    Uuid::from_u128(7),
                    &stream(),
                    3,
                    Timestamp::from_micros(5),
                    "admin:alice",
                    event.event_type(),
                    text.as_bytes()
                ),
                bytes
            );
        }
    }

    #[test]
    fn the_canonical_bytes_of_a_created_event_are_exactly_these() {
        // Chains hash these bytes: any change to layout, field names, order or formatting
        // breaks verification of every stored log.
        let bytes = encode(
            Uuid::from_u128(1),
            &stream(),
            1,
            Timestamp::from_micros(1_700_000_000_000_000),
            "admin:alice",
            &created(),
        );
        let mut expected = vec![0x02];
        expected.extend_from_slice(&1u128.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000_000i64.to_be_bytes());
        expected.push(42);
        expected.extend_from_slice(b"token-01900000-0000-7000-8000-0000000000aa");
        expected.extend_from_slice(&11u32.to_be_bytes());
        expected.extend_from_slice(b"admin:alice");
        expected.push(12);
        expected.extend_from_slice(b"TokenCreated");
        expected.extend_from_slice(
            format!(
                concat!(
                    r#"{{"token_id":"01900000-0000-7000-8000-0000000000aa","#,
                    r#""name":"deploy \"bot\" ✓","scopes":["console:exec","admin"],"#,
                    r#""environment":"live","expires_at":1800000000000000,"#,
                    r#""created_by":"admin:alice","secret_commitment":"{}","#,
                    r#""rotated_from":"00000000-0000-0000-0000-0000000000bb"}}"#,
                ),
                "c3".repeat(32)
            )
            .as_bytes(),
        );

        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_version_1_bytes_of_a_created_event_are_exactly_these() {
        // Logs written before version 2 hash these bytes; the decoder must keep reading them.
        let bytes = encode_v1(
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
        assert_eq!(decode(&bytes).unwrap().event, created());
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        assert_eq!(
            decode(&framed("TokenFrobbed", &used_payload())),
            Err(CodecError::UnknownType {
                event_type: "TokenFrobbed".to_owned(),
                schema_version: 2,
            })
        );
        let v1 = String::from_utf8(encode_used_v1()).unwrap();
        let v1 = edit(&v1, r#""TokenUsed""#, r#""TokenFrobbed""#);
        assert_eq!(
            decode(v1.as_bytes()),
            Err(CodecError::UnknownType {
                event_type: "TokenFrobbed".to_owned(),
                schema_version: 1,
            })
        );
    }

    #[test]
    fn an_unknown_schema_or_format_version_is_refused() {
        let v1 = String::from_utf8(encode_used_v1()).unwrap();
        let v1 = edit(&v1, r#""schema_version":1"#, r#""schema_version":3"#);
        assert_eq!(
            decode(v1.as_bytes()),
            Err(CodecError::UnknownType {
                event_type: "TokenUsed".to_owned(),
                schema_version: 3,
            })
        );

        let mut v3 = encode_used();
        v3[0] = 3;
        match decode(&v3) {
            Err(CodecError::Malformed(detail)) => assert!(detail.contains("0x03"), "{detail}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_field_in_the_payload_is_refused() {
        let payload = edit(&used_payload(), "{", r#"{"plaintext":"tl_test_x","#);

        match decode(&framed("TokenUsed", &payload)) {
            Err(CodecError::BadPayload {
                event_type,
                schema_version,
                detail,
            }) => {
                assert_eq!(event_type, "TokenUsed");
                assert_eq!(schema_version, 2);
                assert!(detail.contains("plaintext"), "{detail}");
            }
            other => panic!("expected BadPayload, got {other:?}"),
        }
    }

    #[test]
    fn a_payload_missing_a_required_field_is_refused() {
        let payload = edit(&used_payload(), r#""method":"POST","#, "");

        assert!(
            matches!(decode(&framed("TokenUsed", &payload)), Err(CodecError::BadPayload { detail, .. }) if detail.contains("method"))
        );
    }

    #[test]
    fn trailing_bytes_after_the_payload_are_refused() {
        let payload = format!("{}{{}}", used_payload());

        assert!(matches!(
            decode(&framed("TokenUsed", &payload)),
            Err(CodecError::BadPayload { .. })
        ));
    }

    #[test]
    fn an_extra_top_level_field_of_a_version_1_event_is_refused() {
        let mut bytes = encode_used_v1();
        assert_eq!(bytes.pop(), Some(b'}'));
        bytes.extend_from_slice(br#","signature":"x"}"#);

        match decode(&bytes) {
            Err(CodecError::Malformed(detail)) => assert!(detail.contains("signature"), "{detail}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn every_cut_of_an_event_is_refused_without_a_panic() {
        let bytes = encode_used();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len} decoded");
        }
    }

    #[test]
    fn bytes_that_are_not_an_event_are_malformed() {
        assert!(matches!(
            decode(b"\x00\x01 not json"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(decode(b""), Err(CodecError::Malformed(_))));
        assert!(matches!(
            decode(b"{not json"),
            Err(CodecError::Malformed(_))
        ));
    }
}
