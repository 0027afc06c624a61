//! The log contract every backend implements, the append planning they share, and an
//! in-memory log for pure tests.
//!
//! A backend's only job is to hold the append lock, read the current stream versions and
//! head under it, and store what [`Sealer`] produces in one atomic step. Versions, positions,
//! canonical bytes and hashes are computed here, once, for every backend.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use std::sync::RwLock;

use tokio::sync::{Mutex, MutexGuard, watch};
use uuid::Uuid;

use crate::chain::{MAX_EVENT_BYTES, event_hash};
use crate::codec;
use crate::envelope::{Opening, StoredEvent};
use crate::primitives::{LogId, StreamId, Timestamp};
use crate::vocabulary::TokenEvent;

pub use crate::primitives::Head;

/// What the caller believes about a stream before appending to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl ExpectedVersion {
    pub fn check(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// An event to append. The shell supplies its id (UUIDv7), time and actor: domain code never
/// reads a clock or a random source.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub event: TokenEvent,
    /// Openings of the commitments `event` carries; stored beside the log, never in it.
    pub openings: Vec<Opening>,
}

/// Events for one stream, appended only if the stream is at the expected version.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream_id: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AppendError {
    #[error("stream {stream}: expected {expected}, but the stream is at version {actual}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error(
        "event {event_id} is already stored but other events of the same append are not; retry an append whole, with the same event ids"
    )]
    PartialRetry { event_id: Uuid },
    #[error("stream {stream} is closed (its token was revoked): a use can no longer be appended")]
    Closed { stream: StreamId },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("event log unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: u64, reason: String },
}

/// An append-only, hash-chained event log.
///
/// Every backend guarantees: a batch is appended atomically or not at all; positions are dense
/// (1, 2, 3, ...) and in commit order, so a reader tailing by position never skips an event;
/// stream versions are contiguous from 1; an append whose event ids are all stored already
/// returns the stored events instead of appending again.
pub trait EventLog: Send + Sync {
    /// The log's identity, bound into every chain hash.
    fn log_id(&self) -> LogId;

    /// Append every stream's events atomically; returns the stored events in batch order.
    fn append(
        &self,
        batch: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, AppendError>> + Send;

    /// Up to `limit` events with position greater than `after`, in position order.
    fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, LogError>> + Send;

    /// Every event of one stream, in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, LogError>> + Send;

    /// The last committed position and its hash.
    fn head(&self) -> impl Future<Output = Result<Head, LogError>> + Send;

    /// Wait until the head reaches `position` or `timeout` passes; returns the head either way.
    fn wait_for(
        &self,
        position: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<Head, LogError>> + Send;
}

/// Check what can be checked of a batch before taking the append lock.
pub fn validate_batch(batch: &[StreamAppend]) -> Result<(), AppendError> {
    let invalid = |m: String| Err(AppendError::Invalid(m));
    if batch.is_empty() || batch.iter().all(|s| s.events.is_empty()) {
        return invalid("a batch needs at least one event".into());
    }
    let mut ids = HashSet::new();
    for append in batch {
        if append.events.is_empty() {
            return invalid(format!("stream {} has no events", append.stream_id));
        }
        for e in &append.events {
            if !ids.insert(e.event_id) {
                return invalid(format!(
                    "event id {} appears twice in one batch",
                    e.event_id
                ));
            }
            if e.actor.trim().is_empty() {
                return invalid(format!("event {} has no actor", e.event_id));
            }
            let commitments = e.event.commitments();
            for opening in &e.openings {
                let ok = commitments
                    .iter()
                    .any(|(field, c)| *field == opening.field && *c == opening.commitment());
                if !ok {
                    return invalid(format!(
                        "event {}: opening {:?} does not open a commitment of the event",
                        e.event_id, opening.field
                    ));
                }
            }
        }
    }
    Ok(())
}

/// All event ids of a batch, in order.
pub fn batch_event_ids(batch: &[StreamAppend]) -> Vec<Uuid> {
    batch
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.event_id))
        .collect()
}

/// Decide whether a batch is a retry from which of its event ids are stored already:
/// `Ok(true)` all are (return the stored events), `Ok(false)` none are (append).
pub fn classify_retry(ids: &[Uuid], stored: &HashSet<Uuid>) -> Result<bool, AppendError> {
    match ids.iter().find(|id| !stored.contains(id)) {
        None => Ok(true),
        Some(_) if stored.is_empty() => Ok(false),
        Some(_) => Err(AppendError::PartialRetry {
            event_id: *ids
                .iter()
                .find(|id| stored.contains(id))
                .expect("non-empty"),
        }),
    }
}

/// Refuse an append that needs an open stream (a use) to a stream that a terminal event (a
/// revocation) has closed. Backends call it under the append lock, with `closed` read under
/// that lock, so no use is ever ordered after the revocation of its token.
pub fn check_open(append: &StreamAppend, closed: bool) -> Result<(), AppendError> {
    let mut closed = closed;
    for e in &append.events {
        if closed && e.event.requires_open_stream() {
            return Err(AppendError::Closed {
                stream: append.stream_id.clone(),
            });
        }
        closed |= e.event.closes_stream();
    }
    Ok(())
}

/// Whether `append` closes its stream.
pub fn closes(append: &StreamAppend) -> bool {
    append.events.iter().any(|e| e.event.closes_stream())
}

/// A batch sealed at a head: its events in order, each stream's version after it, and the
/// streams it closes.
#[derive(Debug)]
pub struct SealedBatch {
    pub events: Vec<StoredEvent>,
    pub versions: HashMap<StreamId, u64>,
    pub closing: HashSet<StreamId>,
}

/// Seal a whole batch under the append lock, given each stream's current `version` and
/// whether it is `closed` there: each append of the batch sees the versions and closures of
/// those before it. Refused whole (no event of it is to be stored) on the first conflict, use
/// of a closed stream or oversized event.
pub fn seal_batch(
    sealer: &mut Sealer,
    batch: &[StreamAppend],
    version: impl Fn(&StreamId) -> u64,
    closed: impl Fn(&StreamId) -> bool,
) -> Result<SealedBatch, AppendError> {
    let mut sealed = SealedBatch {
        events: Vec::new(),
        versions: HashMap::new(),
        closing: HashSet::new(),
    };
    for append in batch {
        let s = &append.stream_id;
        let current = sealed
            .versions
            .get(s)
            .copied()
            .unwrap_or_else(|| version(s));
        check_open(append, sealed.closing.contains(s) || closed(s))?;
        let events = sealer.seal(append, current)?;
        sealed
            .versions
            .insert(s.clone(), current + events.len() as u64);
        if closes(append) {
            sealed.closing.insert(s.clone());
        }
        sealed.events.extend(events);
    }
    Ok(sealed)
}

/// Seals events under the append lock: assigns stream versions and positions, encodes the
/// canonical bytes and extends the chain. Backends call it with the versions they read under
/// the same lock.
#[derive(Debug, Clone)]
pub struct Sealer {
    log_id: LogId,
    head: Head,
}

impl Sealer {
    pub fn new(log_id: LogId, head: Head) -> Self {
        Sealer { log_id, head }
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Undo sealing after the storage step failed (a rolled-back savepoint).
    pub fn reset(&mut self, head: Head) {
        self.head = head;
    }

    /// Seal one stream's events, given the stream's current version.
    pub fn seal(
        &mut self,
        append: &StreamAppend,
        current_version: u64,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        if !append.expected.check(current_version) {
            return Err(AppendError::Conflict {
                stream: append.stream_id.clone(),
                expected: append.expected,
                actual: current_version,
            });
        }
        let start = self.head;
        let mut sealed = Vec::with_capacity(append.events.len());
        for (i, e) in append.events.iter().enumerate() {
            let stream_version = current_version + 1 + i as u64;
            let position = self.head.position + 1;
            let bytes = codec::encode(
                e.event_id,
                &append.stream_id,
                stream_version,
                e.recorded_at,
                &e.actor,
                &e.event,
            );
            if bytes.len() > MAX_EVENT_BYTES {
                self.head = start;
                return Err(AppendError::Invalid(format!(
                    "event {} encodes to {} bytes; the limit is {MAX_EVENT_BYTES}",
                    e.event_id,
                    bytes.len()
                )));
            }
            let hash = event_hash(self.log_id, position, &self.head.hash, &bytes);
            self.head = Head { position, hash };
            sealed.push(StoredEvent {
                position,
                stream_id: append.stream_id.clone(),
                stream_version,
                event_id: e.event_id,
                recorded_at: e.recorded_at,
                actor: e.actor.clone(),
                event_type: e.event.event_type().to_owned(),
                schema_version: TokenEvent::CURRENT_SCHEMA,
                bytes,
                hash,
                openings: e.openings.clone(),
            });
        }
        Ok(sealed)
    }
}

/// An in-memory [`EventLog`] for pure tests: the same contract, no durability.
pub struct MemoryLog {
    log_id: LogId,
    /// Held for the whole of an append, like a backend's append lock.
    append_lock: Mutex<MemoryIndex>,
    /// Committed events, index `i` holding position `i + 1`. Readers never take the append lock.
    events: RwLock<Vec<StoredEvent>>,
    head: watch::Sender<Head>,
}

/// What an append consults under the lock.
#[derive(Default)]
pub struct MemoryIndex {
    versions: HashMap<StreamId, u64>,
    closed: HashSet<StreamId>,
    positions: HashMap<Uuid, u64>,
}

impl MemoryLog {
    pub fn new(log_id: LogId) -> Self {
        MemoryLog {
            log_id,
            append_lock: Mutex::new(MemoryIndex::default()),
            events: RwLock::new(Vec::new()),
            head: watch::channel(Head::GENESIS).0,
        }
    }

    /// Take the append lock and keep it, standing for a writer whose transaction is still
    /// open: appends wait until the guard drops. Contract tests use it.
    pub async fn hold_append_lock(&self) -> MutexGuard<'_, MemoryIndex> {
        self.append_lock.lock().await
    }

    fn committed(&self) -> std::sync::RwLockReadGuard<'_, Vec<StoredEvent>> {
        // A panic while holding the lock cannot leave the Vec half-updated (push is atomic for
        // readers), so a poisoned lock still holds consistent events.
        self.events.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventLog for MemoryLog {
    fn log_id(&self) -> LogId {
        self.log_id
    }

    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        validate_batch(&batch)?;
        let mut index = self.append_lock.lock().await;
        let ids = batch_event_ids(&batch);
        let stored: HashSet<Uuid> = ids
            .iter()
            .filter(|id| index.positions.contains_key(id))
            .copied()
            .collect();
        if classify_retry(&ids, &stored)? {
            let events = self.committed();
            return Ok(ids
                .iter()
                .map(|id| events[(index.positions[id] - 1) as usize].clone())
                .collect());
        }
        let mut sealer = Sealer::new(self.log_id, *self.head.borrow());
        let SealedBatch {
            events: sealed,
            versions,
            closing,
        } = seal_batch(
            &mut sealer,
            &batch,
            |s| index.versions.get(s).copied().unwrap_or(0),
            |s| index.closed.contains(s),
        )?;
        {
            let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
            for e in &sealed {
                index.positions.insert(e.event_id, e.position);
                events.push(e.clone());
            }
        }
        index.versions.extend(versions);
        index.closed.extend(closing);
        self.head.send_replace(sealer.head());
        Ok(sealed)
    }

    async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        let events = self.committed();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(events.len());
        Ok(events[start..].iter().take(limit).cloned().collect())
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
        Ok(self
            .committed()
            .iter()
            .filter(|e| &e.stream_id == stream)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Head, LogError> {
        Ok(*self.head.borrow())
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> Result<Head, LogError> {
        let mut rx = self.head.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|h| h.position >= position)).await;
        Ok(*self.head.borrow())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::primitives::{Hash, field_commitment};
    use crate::vocabulary::{Environment, TokenCreated, TokenUsed};

    const LOG: LogId = LogId(Uuid::from_u128(0x10));
    const TOKEN: Uuid = Uuid::from_u128(0xa);
    const SECRET_VALUE: &[u8] = b"secret-token-hash-value";

    fn stream() -> StreamId {
        StreamId::for_token(TOKEN)
    }

    fn used(n: u128) -> NewEvent {
        NewEvent {
            event_id: Uuid::from_u128(n),
            recorded_at: Timestamp::from_micros(n as i64),
            actor: "svc:ci".to_owned(),
            event: TokenEvent::Used(TokenUsed {
                ip: None,
                method: "POST".to_owned(),
                path: "/v1/verify".to_owned(),
                command: None,
                user_agent: None,
            }),
            openings: Vec::new(),
        }
    }

    fn opening() -> Opening {
        let mut salt = [0u8; 32];
        for (i, b) in salt.iter_mut().enumerate() {
            *b = 0xd0 ^ i as u8;
        }
        Opening {
            field: TokenCreated::SECRET_FIELD.to_owned(),
            salt,
            value: SECRET_VALUE.to_vec(),
        }
    }

    fn created(n: u128, opening: Opening) -> NewEvent {
        NewEvent {
            event: TokenEvent::Created(TokenCreated {
                token_id: TOKEN,
                name: "ci".to_owned(),
                scopes: vec!["console:exec".to_owned()],
                environment: Environment::Test,
                expires_at: Timestamp::from_micros(1_000_000),
                created_by: "admin:alice".to_owned(),
                secret_commitment: field_commitment(&opening.field, &opening.salt, &opening.value),
                rotated_from: None,
                allowed_ips: Vec::new(),
            }),
            openings: vec![opening],
            ..used(n)
        }
    }

    fn append(
        stream_id: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StreamAppend {
        StreamAppend {
            stream_id,
            expected,
            events,
        }
    }

    fn refusal(batch: &[StreamAppend]) -> String {
        match validate_batch(batch) {
            Err(AppendError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_sealer_numbers_events_after_the_head_and_the_stream_version() {
        let start = Head {
            position: 10,
            hash: Hash([0x42; 32]),
        };
        let mut sealer = Sealer::new(LOG, start);
        let batch = append(
            stream(),
            ExpectedVersion::Exact(4),
            vec![used(1), used(2), used(3)],
        );

        let sealed = sealer.seal(&batch, 4).unwrap();

        let numbers: Vec<(u64, u64)> = sealed
            .iter()
            .map(|e| (e.position, e.stream_version))
            .collect();
        assert_eq!(numbers, [(11, 5), (12, 6), (13, 7)]);
        let mut prev = start.hash;
        for e in &sealed {
            assert_eq!(e.hash, event_hash(LOG, e.position, &prev, &e.bytes));
            let header = codec::decode(&e.bytes).unwrap().header;
            assert_eq!(header.stream_version, e.stream_version);
            assert_eq!(header.event_id, e.event_id);
            prev = e.hash;
        }
        assert_eq!(
            sealer.head(),
            Head {
                position: 13,
                hash: sealed[2].hash
            }
        );

        let other = append(
            StreamId::new("token-other").unwrap(),
            ExpectedVersion::NoStream,
            vec![used(4)],
        );
        let next = sealer.seal(&other, 0).unwrap();
        assert_eq!((next[0].position, next[0].stream_version), (14, 1));
    }

    #[test]
    fn a_wrong_expected_version_is_a_conflict_with_the_actual_version_and_seals_nothing() {
        let mut sealer = Sealer::new(LOG, Head::GENESIS);
        sealer
            .seal(
                &append(stream(), ExpectedVersion::NoStream, vec![used(1)]),
                0,
            )
            .unwrap();
        let head = sealer.head();

        for expected in [ExpectedVersion::Exact(3), ExpectedVersion::NoStream] {
            let err = sealer
                .seal(&append(stream(), expected, vec![used(2)]), 1)
                .unwrap_err();

            assert_eq!(
                err,
                AppendError::Conflict {
                    stream: stream(),
                    expected,
                    actual: 1
                }
            );
            assert_eq!(sealer.head(), head);
        }

        let retried = sealer
            .seal(
                &append(stream(), ExpectedVersion::Exact(1), vec![used(2)]),
                1,
            )
            .unwrap();
        assert_eq!((retried[0].position, retried[0].stream_version), (2, 2));
        let any = sealer
            .seal(&append(stream(), ExpectedVersion::Any, vec![used(3)]), 2)
            .unwrap();
        assert_eq!((any[0].position, any[0].stream_version), (3, 3));
    }

    #[test]
    fn an_oversized_event_is_refused_and_leaves_the_head_where_it_was() {
        let mut sealer = Sealer::new(LOG, Head::GENESIS);
        let mut huge = used(2);
        if let TokenEvent::Used(u) = &mut huge.event {
            u.path = "x".repeat(MAX_EVENT_BYTES);
        }

        let err = sealer
            .seal(
                &append(stream(), ExpectedVersion::Any, vec![used(1), huge]),
                0,
            )
            .unwrap_err();

        assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
        assert_eq!(sealer.head(), Head::GENESIS);
    }

    #[test]
    fn a_well_formed_batch_is_accepted() {
        let batch = [
            append(
                stream(),
                ExpectedVersion::NoStream,
                vec![created(1, opening()), used(2)],
            ),
            append(
                StreamId::new("token-other").unwrap(),
                ExpectedVersion::Any,
                vec![used(3)],
            ),
        ];

        assert_eq!(validate_batch(&batch), Ok(()));
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert!(refusal(&[]).contains("at least one event"));
        assert!(
            refusal(&[append(stream(), ExpectedVersion::Any, vec![])])
                .contains("at least one event")
        );
    }

    #[test]
    fn a_stream_with_no_events_is_refused() {
        let empty = StreamId::new("token-empty").unwrap();
        let batch = [
            append(stream(), ExpectedVersion::Any, vec![used(1)]),
            append(empty, ExpectedVersion::Any, vec![]),
        ];

        assert!(refusal(&batch).contains("stream token-empty has no events"));
    }

    #[test]
    fn an_event_id_used_twice_in_a_batch_is_refused() {
        let batch = [
            append(stream(), ExpectedVersion::Any, vec![used(1)]),
            append(
                StreamId::new("token-other").unwrap(),
                ExpectedVersion::Any,
                vec![used(1)],
            ),
        ];

        assert!(refusal(&batch).contains("appears twice"));
    }

    #[test]
    fn an_event_without_an_actor_is_refused() {
        let mut anonymous = used(1);
        anonymous.actor.clear();

        assert!(
            refusal(&[append(stream(), ExpectedVersion::Any, vec![anonymous])])
                .contains("has no actor")
        );
    }

    #[test]
    fn an_opening_that_does_not_open_a_commitment_is_refused() {
        let mut wrong_value = created(1, opening());
        wrong_value.openings[0].value = b"another hash".to_vec();
        let mut wrong_field = created(1, opening());
        wrong_field.openings[0].field = "password".to_owned();
        let mut stray = used(1);
        stray.openings.push(opening());

        for event in [wrong_value, wrong_field, stray] {
            let reason = refusal(&[append(stream(), ExpectedVersion::Any, vec![event])]);
            assert!(reason.contains("does not open a commitment"), "{reason}");
            assert!(!reason.contains(&hex::encode(opening().salt)), "{reason}");
        }
    }

    #[test]
    fn a_retry_is_recognised_only_when_every_event_is_stored() {
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];

        assert_eq!(classify_retry(&ids, &HashSet::new()), Ok(false));
        assert_eq!(
            classify_retry(&ids, &ids.iter().copied().collect()),
            Ok(true)
        );
        assert_eq!(
            classify_retry(&ids, &HashSet::from([ids[1]])),
            Err(AppendError::PartialRetry { event_id: ids[1] })
        );
    }

    #[test]
    fn debug_output_never_shows_a_salt_or_a_secret_value() {
        let secret = opening();
        let salt_hex = hex::encode(secret.salt);
        let value_hex = hex::encode(SECRET_VALUE);
        let salt_list = format!("{:?}", &secret.salt[..4])
            .trim_end_matches(']')
            .to_owned();
        let new = created(1, secret.clone());
        let batch = append(stream(), ExpectedVersion::NoStream, vec![new.clone()]);
        let stored = Sealer::new(LOG, Head::GENESIS).seal(&batch, 0).unwrap();

        let printed = [
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", stored[0]),
            format!("{:#?}", stored[0]),
            format!("{new:?}"),
            format!("{batch:?}"),
        ];
        for text in printed {
            assert!(text.contains("token_hash"), "{text}");
            assert!(!text.contains("secret-token-hash-value"), "{text}");
            assert!(!text.contains(&value_hex), "{text}");
            assert!(!text.contains(&salt_hex), "{text}");
            assert!(!text.contains(&salt_list), "{text}");
        }
    }

    #[test]
    fn the_canonical_bytes_carry_the_commitment_but_never_the_opening() {
        let secret = opening();
        let batch = append(
            stream(),
            ExpectedVersion::NoStream,
            vec![created(1, secret.clone())],
        );
        let stored = Sealer::new(LOG, Head::GENESIS).seal(&batch, 0).unwrap();
        let text = String::from_utf8(stored[0].bytes.clone()).unwrap();

        assert!(text.contains(&hex::encode(secret.commitment().0)), "{text}");
        assert!(!text.contains("secret-token-hash-value"), "{text}");
        assert!(!text.contains(&hex::encode(SECRET_VALUE)), "{text}");
        assert!(!text.contains(&hex::encode(secret.salt)), "{text}");
        assert_eq!(stored[0].openings, [secret]);
    }

    #[tokio::test]
    async fn wait_for_returns_once_another_task_appends_past_the_position() {
        let log = Arc::new(MemoryLog::new(LOG));
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.wait_for(2, Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;

        log.append(vec![append(
            stream(),
            ExpectedVersion::NoStream,
            vec![used(1)],
        )])
        .await
        .unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woke before the head reached 2");

        let appender = tokio::spawn({
            let log = log.clone();
            async move {
                log.append(vec![append(
                    stream(),
                    ExpectedVersion::Exact(1),
                    vec![used(2), used(3)],
                )])
                .await
            }
        });
        let head = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_for woke up after the append")
            .unwrap()
            .unwrap();

        let appended = appender.await.unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                position: 3,
                hash: appended[1].hash
            }
        );
    }

    #[tokio::test]
    async fn wait_for_returns_the_current_head_at_timeout() {
        let log = MemoryLog::new(LOG);
        let stored = log
            .append(vec![append(
                stream(),
                ExpectedVersion::NoStream,
                vec![used(1)],
            )])
            .await
            .unwrap();
        let started = Instant::now();

        let head = log.wait_for(5, Duration::from_millis(50)).await.unwrap();

        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            head,
            Head {
                position: 1,
                hash: stored[0].hash
            }
        );
    }

    #[tokio::test]
    async fn wait_for_a_position_already_reached_returns_at_once() {
        let log = MemoryLog::new(LOG);
        log.append(vec![append(
            stream(),
            ExpectedVersion::NoStream,
            vec![used(1), used(2)],
        )])
        .await
        .unwrap();

        let head = tokio::time::timeout(
            Duration::from_secs(5),
            log.wait_for(1, Duration::from_secs(60)),
        )
        .await
        .expect("no wait for a reached position")
        .unwrap();

        assert_eq!(head.position, 2);
    }
}
