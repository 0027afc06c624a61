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

pub use crate::chain::Head;
use crate::chain::{LogId, MAX_EVENT_BYTES, event_hash};
use crate::codec;
use crate::envelope::{Opening, StoredEvent, StreamId, Timestamp};
use crate::vocabulary::TokenEvent;

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
            if e.actor.is_empty() {
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
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        let mut sealed = Vec::new();
        for append in &batch {
            let current = versions
                .get(&append.stream_id)
                .or_else(|| index.versions.get(&append.stream_id))
                .copied()
                .unwrap_or(0);
            let events = sealer.seal(append, current)?;
            versions.insert(append.stream_id.clone(), current + events.len() as u64);
            sealed.extend(events);
        }
        {
            let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
            for e in &sealed {
                index.positions.insert(e.event_id, e.position);
                events.push(e.clone());
            }
        }
        index.versions.extend(versions);
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
