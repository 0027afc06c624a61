//! The tamper-evident chain.
//!
//! `hash_n = SHA-256("tokenledger/event/v1" || log_id || be64(n) || hash_{n-1} || be32(len) || bytes_n)`
//! over the exact stored bytes of event `n`, with `hash_0` all zeros. Secret fields are committed
//! as `SHA-256("tokenledger/field/v1" || field || 0x00 || salt || value)`, so the chain verifies
//! byte for byte without the openings. [`ChainVerifier`] recomputes all of it and names the first
//! position that does not hold.

use sha2::{Digest, Sha256};

use crate::codec::{self, CodecError};
use crate::envelope::StoredEvent;
use crate::vocabulary::TokenEvent;

pub use crate::primitives::{Commitment, FIELD_DOMAIN, Hash, Head, LogId, field_commitment};

pub const EVENT_DOMAIN: &[u8] = b"tokenledger/event/v1";

/// The largest canonical event the chain accepts; its length is hashed as a be32.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

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
    #[error("stored bytes are not in canonical form (they decode, but encode differently)")]
    NotCanonical,
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
        if h.schema_version == TokenEvent::CURRENT_SCHEMA {
            let canonical = codec::encode(
                h.event_id,
                &h.stream_id,
                h.stream_version,
                h.recorded_at,
                &h.actor,
                &decoded.event,
            );
            if canonical != event.bytes {
                return Err(fail(ChainProblem::NotCanonical));
            }
        }
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

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use uuid::Uuid;

    use super::*;
    use crate::envelope::Opening;
    use crate::primitives::{StreamId, Timestamp};
    use crate::vocabulary::{
        DenyReason, Environment, TokenCreated, TokenRevoked, TokenRotated, TokenUseDenied,
        TokenUsed,
    };

    /// Written out byte by byte so the preimage tests do not trust `Uuid::as_bytes`.
    const LOG_BYTES: [u8; 16] = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32,
        0x10,
    ];
    const LOG: LogId = LogId(Uuid::from_bytes(LOG_BYTES));
    const OTHER_LOG: LogId = LogId(Uuid::from_u128(2));
    const OLD_TOKEN: Uuid = Uuid::from_u128(0xa);
    const NEW_TOKEN: Uuid = Uuid::from_u128(0xb);

    fn sha256(preimage: &[u8]) -> [u8; 32] {
        Sha256::digest(preimage).into()
    }

    /// What a writer supplies for one event; sealed below without `log::Sealer`, which sits
    /// above this module, so the verifier is checked against the chain's definition alone.
    struct Draft {
        event_id: Uuid,
        recorded_at: Timestamp,
        actor: String,
        event: TokenEvent,
        openings: Vec<Opening>,
    }

    fn new_event(n: u128, event: TokenEvent) -> Draft {
        Draft {
            event_id: Uuid::from_u128(n),
            recorded_at: Timestamp::from_micros(1_700_000_000_000_000 + n as i64),
            actor: format!("admin:{n}"),
            event,
            openings: Vec::new(),
        }
    }

    fn created(n: u128, token_id: Uuid, rotated_from: Option<Uuid>) -> Draft {
        let opening = Opening {
            field: TokenCreated::SECRET_FIELD.to_owned(),
            salt: [n as u8; 32],
            value: format!("sha256-of-token-{n}").into_bytes(),
        };
        let mut e = new_event(
            n,
            TokenEvent::Created(TokenCreated {
                token_id,
                name: format!("ci-{n}"),
                scopes: vec!["console:exec".to_owned()],
                environment: Environment::Test,
                expires_at: Timestamp::from_micros(1_800_000_000_000_000),
                created_by: "admin:alice".to_owned(),
                secret_commitment: field_commitment(&opening.field, &opening.salt, &opening.value),
                rotated_from,
                allowed_ips: Vec::new(),
            }),
        );
        e.openings.push(opening);
        e
    }

    /// Six events covering every kind: the old token's stream (created, used, denied,
    /// rotated), its successor's creation at position 5, then the old token's revocation.
    fn sealed_log() -> Vec<StoredEvent> {
        let old = StreamId::for_token(OLD_TOKEN);
        let new = StreamId::for_token(NEW_TOKEN);
        let drafts = [
            (&old, 1, created(1, OLD_TOKEN, None)),
            (
                &old,
                2,
                new_event(
                    2,
                    TokenEvent::Used(TokenUsed {
                        ip: Some("203.0.113.7".to_owned()),
                        method: "POST".to_owned(),
                        path: "/api/admin/console".to_owned(),
                        command: Some("status".to_owned()),
                        user_agent: None,
                    }),
                ),
            ),
            (
                &old,
                3,
                new_event(
                    3,
                    TokenEvent::UseDenied(TokenUseDenied {
                        reason: DenyReason::InsufficientScope,
                        ip: None,
                        path: "/api/admin/console".to_owned(),
                    }),
                ),
            ),
            (
                &old,
                4,
                new_event(
                    4,
                    TokenEvent::Rotated(TokenRotated {
                        successor_id: NEW_TOKEN,
                        old_expires_at: Timestamp::from_micros(1_700_000_100_000_000),
                        until_successor_used: false,
                    }),
                ),
            ),
            (&new, 1, created(5, NEW_TOKEN, Some(OLD_TOKEN))),
            (
                &old,
                5,
                new_event(
                    6,
                    TokenEvent::Revoked(TokenRevoked {
                        actor: "admin:alice".to_owned(),
                        reason: Some("leaked in a CI log".to_owned()),
                    }),
                ),
            ),
        ];
        let mut prev = Hash::ZERO;
        drafts
            .into_iter()
            .zip(1..)
            .map(|((stream_id, stream_version, d), position)| {
                let bytes = codec::encode(
                    d.event_id,
                    stream_id,
                    stream_version,
                    d.recorded_at,
                    &d.actor,
                    &d.event,
                );
                let hash = event_hash(LOG, position, &prev, &bytes);
                prev = hash;
                StoredEvent {
                    position,
                    stream_id: stream_id.clone(),
                    stream_version,
                    event_id: d.event_id,
                    recorded_at: d.recorded_at,
                    actor: d.actor,
                    event_type: d.event.event_type().to_owned(),
                    schema_version: TokenEvent::CURRENT_SCHEMA,
                    bytes,
                    hash,
                    openings: d.openings,
                }
            })
            .collect()
    }

    fn verify(log_id: LogId, events: &[StoredEvent]) -> Result<ChainVerifier, ChainError> {
        let mut verifier = ChainVerifier::new(log_id);
        for event in events {
            verifier.check(event)?;
        }
        Ok(verifier)
    }

    fn first_error(events: &[StoredEvent]) -> ChainError {
        verify(LOG, events).expect_err("the chain must not verify")
    }

    /// Recompute the stored hashes from `index` on, as a forger who rewrote the log would.
    fn rehash_from(events: &mut [StoredEvent], index: usize) {
        let mut prev = index.checked_sub(1).map_or(Hash::ZERO, |i| events[i].hash);
        for event in &mut events[index..] {
            event.hash = event_hash(LOG, event.position, &prev, &event.bytes);
            prev = event.hash;
        }
    }

    fn at(position: u64, problem: ChainProblem) -> ChainError {
        ChainError { position, problem }
    }

    #[test]
    fn event_hash_is_sha256_over_the_documented_layout() {
        let prev = Hash([0xab; 32]);
        let bytes = br#"{"event":"x"}"#;
        let mut preimage = Vec::new();
        preimage.extend_from_slice(b"tokenledger/event/v1");
        preimage.extend_from_slice(&LOG_BYTES);
        preimage.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]);
        preimage.extend_from_slice(&[0xab; 32]);
        preimage.extend_from_slice(&[0, 0, 0, 13]);
        preimage.extend_from_slice(bytes);

        let hash = event_hash(LOG, 0x0102_0304_0506_0708, &prev, bytes);

        assert_eq!(hash, Hash(sha256(&preimage)));
    }

    #[test]
    fn the_first_event_chains_from_an_all_zero_hash() {
        let events = sealed_log();
        let mut preimage = Vec::new();
        preimage.extend_from_slice(b"tokenledger/event/v1");
        preimage.extend_from_slice(&LOG_BYTES);
        preimage.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        preimage.extend_from_slice(&[0; 32]);
        preimage.extend_from_slice(&(events[0].bytes.len() as u32).to_be_bytes());
        preimage.extend_from_slice(&events[0].bytes);

        assert_eq!(events[0].hash, Hash(sha256(&preimage)));
    }

    #[test]
    fn every_input_of_the_event_hash_changes_it() {
        let prev = Hash([0x11; 32]);
        let bytes = b"canonical event bytes".to_vec();
        let base = event_hash(LOG, 3, &prev, &bytes);

        let mut other_prev = prev;
        other_prev.0[31] ^= 0x01;
        let mut other_bytes = bytes.clone();
        other_bytes[5] ^= 0x01;

        assert_ne!(event_hash(OTHER_LOG, 3, &prev, &bytes), base, "log id");
        assert_ne!(event_hash(LOG, 4, &prev, &bytes), base, "position");
        assert_ne!(
            event_hash(LOG, 3, &other_prev, &bytes),
            base,
            "previous hash"
        );
        assert_ne!(event_hash(LOG, 3, &prev, &other_bytes), base, "one byte");
        assert_eq!(
            event_hash(LOG, 3, &prev, &bytes),
            base,
            "and it is deterministic"
        );
    }

    #[test]
    fn a_sealed_chain_of_every_event_kind_verifies_up_to_its_head() {
        let events = sealed_log();
        let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "TokenCreated",
                "TokenUsed",
                "TokenUseDenied",
                "TokenRotated",
                "TokenCreated",
                "TokenRevoked"
            ]
        );

        let verifier = verify(LOG, &events).expect("a sealed chain verifies");
        let head = Head {
            position: 6,
            hash: events[5].hash,
        };

        assert_eq!(verifier.head(), head);
        assert_eq!(verifier.finish(head), Ok(head));
    }

    #[test]
    fn an_export_without_openings_still_verifies() {
        let mut events = sealed_log();
        for event in &mut events {
            event.openings.clear();
        }

        assert!(verify(LOG, &events).is_ok());
    }

    #[test]
    fn verification_resumes_after_a_trusted_head() {
        let events = sealed_log();
        let trusted = Head {
            position: 3,
            hash: events[2].hash,
        };
        let mut verifier = ChainVerifier::resume(LOG, trusted);
        for event in &events[3..] {
            verifier
                .check(event)
                .expect("the rest of the chain verifies");
        }

        assert_eq!(verifier.head().position, 6);
    }

    #[test]
    fn a_missing_event_is_a_gap_at_the_position_expected_next() {
        let mut events = sealed_log();
        events.remove(1);

        assert_eq!(first_error(&events), at(2, ChainProblem::Gap { found: 3 }));
    }

    #[test]
    fn a_changed_byte_is_reported_at_its_position() {
        let mut events = sealed_log();
        events[2].bytes[20] ^= 0x01;

        assert_eq!(first_error(&events), at(3, ChainProblem::HashMismatch));
    }

    #[test]
    fn a_changed_stored_hash_is_reported_at_its_position() {
        let mut events = sealed_log();
        events[3].hash.0[0] ^= 0x01;

        assert_eq!(first_error(&events), at(4, ChainProblem::HashMismatch));
    }

    #[test]
    fn rewriting_one_event_with_a_fresh_hash_breaks_the_next_link() {
        let mut events = sealed_log();
        let forged = String::from_utf8(events[1].bytes.clone())
            .unwrap()
            .replace("203.0.113.7", "198.51.100.9");
        events[1].bytes = forged.into_bytes();
        events[1].hash = event_hash(LOG, 2, &events[0].hash, &events[1].bytes);

        assert_eq!(first_error(&events), at(3, ChainProblem::HashMismatch));
    }

    #[test]
    fn events_sealed_for_another_log_do_not_verify() {
        let events = sealed_log();

        let err = verify(OTHER_LOG, &events).expect_err("spliced events must not verify");

        assert_eq!(err, at(1, ChainProblem::HashMismatch));
    }

    #[test]
    fn a_column_that_disagrees_with_the_hashed_bytes_is_named() {
        type Edit = fn(&mut StoredEvent);
        let edits: [(&str, Edit); 7] = [
            ("event_id", |e| e.event_id = Uuid::from_u128(999)),
            ("stream_id", |e| {
                e.stream_id = StreamId::for_token(NEW_TOKEN)
            }),
            ("stream_version", |e| e.stream_version += 1),
            ("recorded_at", |e| {
                e.recorded_at = e.recorded_at.plus_micros(1)
            }),
            ("actor", |e| e.actor = "admin:mallory".to_owned()),
            ("event_type", |e| e.event_type = "TokenRevoked".to_owned()),
            ("schema_version", |e| e.schema_version = 1),
        ];
        for (column, edit) in edits {
            let mut events = sealed_log();
            edit(&mut events[3]);

            assert_eq!(
                first_error(&events),
                at(4, ChainProblem::ColumnMismatch(column)),
                "column {column}"
            );
        }
    }

    #[test]
    fn an_opening_that_does_not_open_the_commitment_is_named() {
        let mut events = sealed_log();
        events[4].openings[0].value = b"some other token hash".to_vec();

        assert_eq!(
            first_error(&events),
            at(5, ChainProblem::OpeningMismatch("token_hash".to_owned()))
        );
    }

    #[test]
    fn an_opening_with_another_salt_is_refused() {
        let mut events = sealed_log();
        events[0].openings[0].salt[0] ^= 0x01;

        assert_eq!(
            first_error(&events),
            at(1, ChainProblem::OpeningMismatch("token_hash".to_owned()))
        );
    }

    #[test]
    fn an_opening_on_an_event_without_that_commitment_is_refused() {
        let mut events = sealed_log();
        let stray = events[0].openings[0].clone();
        events[1].openings.push(stray);

        assert_eq!(
            first_error(&events),
            at(2, ChainProblem::OpeningMismatch("token_hash".to_owned()))
        );
    }

    #[test]
    fn a_head_past_the_last_event_names_the_first_missing_position() {
        let events = sealed_log();
        let verifier = verify(LOG, &events).unwrap();

        let err = verifier
            .finish(Head {
                position: 7,
                hash: events[5].hash,
            })
            .unwrap_err();

        assert_eq!(
            err,
            at(
                7,
                ChainProblem::HeadPositionMismatch {
                    recorded: 7,
                    found: 6
                }
            )
        );
    }

    #[test]
    fn a_head_before_the_last_event_names_the_first_event_beyond_it() {
        let events = sealed_log();
        let verifier = verify(LOG, &events).unwrap();

        let err = verifier
            .finish(Head {
                position: 5,
                hash: events[4].hash,
            })
            .unwrap_err();

        assert_eq!(
            err,
            at(
                6,
                ChainProblem::HeadPositionMismatch {
                    recorded: 5,
                    found: 6
                }
            )
        );
    }

    #[test]
    fn a_head_with_another_hash_is_a_head_hash_mismatch() {
        let events = sealed_log();
        let verifier = verify(LOG, &events).unwrap();

        let err = verifier
            .finish(Head {
                position: 6,
                hash: events[4].hash,
            })
            .unwrap_err();

        assert_eq!(
            err,
            at(
                6,
                ChainProblem::HeadHashMismatch {
                    recorded: events[4].hash,
                    computed: events[5].hash
                }
            )
        );
    }

    #[test]
    fn bytes_that_hash_correctly_but_do_not_decode_are_undecodable() {
        let mut events = sealed_log();
        events[2].bytes = br#"{"event_id":"not json"#.to_vec();
        rehash_from(&mut events, 2);

        let err = first_error(&events);

        assert_eq!(err.position, 3);
        assert!(
            matches!(
                err.problem,
                ChainProblem::Undecodable(CodecError::Malformed(_))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bytes_that_decode_but_are_not_canonical_are_refused() {
        let mut events = sealed_log();
        let offset = codec::payload_offset(&events[3].bytes).expect("a version 2 envelope");
        let payload: serde_json::Value =
            serde_json::from_slice(&events[3].bytes[offset..]).expect("json");
        events[3].bytes.truncate(offset);
        events[3]
            .bytes
            .extend(serde_json::to_vec_pretty(&payload).expect("pretty"));
        rehash_from(&mut events, 3);

        let err = first_error(&events);

        assert_eq!(err.position, 4);
        assert_eq!(err.problem, ChainProblem::NotCanonical);
    }

    #[test]
    fn the_error_text_starts_with_the_position() {
        let mut events = sealed_log();
        events[2].bytes[20] ^= 0x01;

        let text = first_error(&events).to_string();

        assert!(text.starts_with("position 3: "), "{text}");
        assert!(text.contains("hash"), "{text}");
    }
}
