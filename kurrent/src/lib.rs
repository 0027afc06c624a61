//! The tokenledger event log on KurrentDB (formerly EventStoreDB).
//!
//! Every token event goes to one KurrentDB stream (`tokenlog` by default), so the stream's dense
//! revisions are the log's dense positions (position = revision + 1). An append names the head
//! it was decided at as the expected revision (`StreamState::StreamRevision(head - 1)`, or
//! `NoStream` for an empty log): that expected revision is the global append lock. When another
//! writer moved the head first, KurrentDB refuses the append whole, and it is decided again at
//! the new head, where a per-token conflict is a real conflict.
//!
//! What a decision needs (each token stream's versions, which streams are closed, which event
//! ids are stored) is an index this process keeps in memory and brings up to date by reading
//! the stream forward from its head before each decision. Catching up checks the chain as it
//! goes, so an event of another shape, or one whose chain hash does not follow, stops appends
//! at its position.
//!
//! Openings (the secret values behind an event's commitments) never go to KurrentDB: they are
//! kept by an [`OpeningVault`] (the projection database) before the append is sent, and
//! attached again on every read. See `docs/ARCHITECTURE.md` for how a crash between the two is
//! repaired.

pub mod errors;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, ReadStreamOptions, StreamMetadata,
    StreamMetadataResult, StreamPosition, StreamState, SubscribeToStreamOptions,
};
use tokenledger_events::chain::event_hash;
use tokenledger_events::log::{
    SealedBatch, Sealer, batch_event_ids, classify_retry, seal_batch, validate_batch,
};
use tokenledger_events::{
    AppendError, EventLog, Head, LogError, LogId, Opening, StoredEvent, StreamAppend, StreamId,
    TokenEvent,
};
use tokio::sync::{Mutex, MutexGuard, watch};
use uuid::Uuid;

pub use errors::Failure;

/// The stream the log lives in unless configured otherwise.
pub const DEFAULT_STREAM: &str = "tokenlog";

/// The custom property of the stream's metadata that holds the log id.
pub const LOG_ID_PROPERTY: &str = "tokenledger_log_id";

/// Events one read asks for at most.
const READ_PAGE: usize = 4096;

/// How often one append is decided again because another writer moved the head first.
const MAX_ATTEMPTS: usize = 64;

/// How often a waiter re-reads the head when no notification arrives: the subscription
/// wakes it at once; this read is the correctness path when a notification is lost.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the openings of a KurrentDB log are kept: durable storage beside the log, keyed by
/// event id. Keeping the same opening twice (a retried append) must succeed and change nothing.
pub trait OpeningVault: Send + Sync + 'static {
    fn keep<'a>(&'a self, openings: &'a [(Uuid, Opening)]) -> BoxFuture<'a, Result<(), String>>;

    /// The openings kept for these event ids (those that have any).
    fn fetch<'a>(&'a self, ids: &'a [Uuid]) -> BoxFuture<'a, Result<Vec<(Uuid, Opening)>, String>>;
}

/// How to reach the log.
#[derive(Clone)]
pub struct Settings {
    /// The connection string (`kurrentdb://`, `esdb://`, with `+discover` variants).
    pub url: String,
    /// The same with any password hidden: what messages show.
    pub target: String,
    pub stream: String,
    /// How long connecting (the first read) may take before the server counts as unreachable.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target)
            .field("stream", &self.stream)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// What an append decides with, as of `head`.
pub struct Index {
    head: Head,
    /// Per token stream, the positions of its events (its version is their count).
    streams: HashMap<StreamId, Vec<u64>>,
    closed: HashSet<StreamId>,
    positions: HashMap<Uuid, u64>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            head: Head::GENESIS,
            streams: HashMap::new(),
            closed: HashSet::new(),
            positions: HashMap::new(),
        }
    }
}

impl Index {
    /// Fold one event read at the head, checking that it extends the chain.
    fn extend(&mut self, log_id: LogId, event: &StoredEvent, closes: bool) -> Result<(), LogError> {
        let position = self.head.position + 1;
        let corrupt = |reason: &str| LogError::Corrupt {
            position,
            reason: reason.to_owned(),
        };
        if event.position != position {
            return Err(corrupt("the stream's revisions are not dense"));
        }
        if event_hash(log_id, position, &self.head.hash, &event.bytes) != event.hash {
            return Err(corrupt(
                "its chain hash does not follow from the event before it",
            ));
        }
        let positions = self.streams.entry(event.stream_id.clone()).or_default();
        if event.stream_version != positions.len() as u64 + 1 {
            return Err(corrupt("its stream version is out of sequence"));
        }
        positions.push(position);
        if closes {
            self.closed.insert(event.stream_id.clone());
        }
        self.positions.insert(event.event_id, position);
        self.head = Head {
            position,
            hash: event.hash,
        };
        Ok(())
    }
}

/// The event log in one KurrentDB stream.
pub struct KurrentLog {
    client: Client,
    stream: String,
    target: String,
    log_id: LogId,
    vault: Arc<dyn OpeningVault>,
    index: Mutex<Index>,
    /// The highest position this process has seen committed: wakes waiters.
    seen: watch::Sender<u64>,
    tail: tokio::task::JoinHandle<()>,
}

impl Drop for KurrentLog {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

impl KurrentLog {
    /// Connect, read (or set) the log id, and read the stream into the index. An unreachable
    /// server is an error naming `settings.target` within `settings.connect_timeout`.
    pub async fn connect(
        settings: &Settings,
        vault: Arc<dyn OpeningVault>,
    ) -> Result<KurrentLog, String> {
        let target = settings.target.clone();
        let parsed: ClientSettings = settings.url.parse().map_err(|_| {
            format!(
                "DATABASE_URL {target} is not a KurrentDB connection string; accepted: \
                 kurrentdb://USER:PASSWORD@HOST:2113[?tls=false] (or esdb://, and +discover)"
            )
        })?;
        let client = Client::new(parsed)
            .map_err(|e| format!("cannot start a KurrentDB client for {target}: {e}"))?;
        let unreachable = |detail: String| format!("cannot reach KurrentDB at {target}: {detail}");
        let log_id = tokio::time::timeout(
            settings.connect_timeout,
            log_id_of(&client, &settings.stream, &target),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} s",
                settings.connect_timeout.as_secs_f64()
            ))
        })?
        .map_err(|f| match f {
            Failure::Unavailable(m) => m,
            other => unreachable(format!("{other:?}")),
        })?;
        let (seen, _) = watch::channel(0);
        let tail = tokio::spawn(follow(
            client.clone(),
            settings.stream.clone(),
            seen.clone(),
        ));
        let log = KurrentLog {
            client,
            stream: settings.stream.clone(),
            target: settings.target.clone(),
            log_id,
            vault,
            index: Mutex::new(Index::default()),
            seen,
            tail,
        };
        {
            let mut index = log.index.lock().await;
            tokio::time::timeout(settings.connect_timeout * 10, log.catch_up(&mut index))
                .await
                .map_err(|_| unreachable("reading the log took too long".into()))?
                .map_err(|e| e.to_string())?;
        }
        Ok(log)
    }

    /// The stream the log lives in.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Take the append lock of this process and keep it: its appends wait until the guard
    /// drops (other processes' appends do not; the expected revision orders those).
    pub async fn hold_append_lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().await
    }

    /// Append one raw event to the stream past every check, as anyone with write access to
    /// the stream could: what the tamper-detection tests forge. Never called by the service.
    #[doc(hidden)]
    pub async fn append_unchecked(
        &self,
        event_type: &str,
        data: Vec<u8>,
        metadata: Vec<u8>,
    ) -> Result<(), String> {
        let event = kurrentdb::EventData::binary(event_type, data.into())
            .id(Uuid::now_v7())
            .metadata(metadata.into());
        self.client
            .append_to_stream(
                self.stream.as_str(),
                &AppendToStreamOptions::default(),
                event,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Read every event past the index's head into it.
    async fn catch_up(&self, index: &mut Index) -> Result<(), LogError> {
        loop {
            let page = self.read_raw(index.head.position, READ_PAGE).await?;
            let read = page.len();
            for (event, decoded) in page {
                index.extend(self.log_id, &event, decoded.closes_stream())?;
            }
            if read < READ_PAGE {
                self.seen.send_if_modified(|s| {
                    let advanced = index.head.position > *s;
                    *s = (*s).max(index.head.position);
                    advanced
                });
                return Ok(());
            }
        }
    }

    /// Up to `limit` events after position `after`, without openings, each with its decoded
    /// event.
    async fn read_raw(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(StoredEvent, TokenEvent)>, LogError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(after))
            .max_count(limit.clamp(1, READ_PAGE));
        let mut read = match self
            .client
            .read_stream(self.stream.as_str(), &options)
            .await
        {
            Ok(r) => r,
            Err(e) => return self.read_failure(&e),
        };
        let mut events = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let Some(recorded) = resolved.event.as_ref() else {
                        continue;
                    };
                    let recorded = wire::Recorded::from(recorded);
                    let position = recorded.revision.saturating_add(1);
                    events.push(
                        wire::read_event(&recorded)
                            .map_err(|reason| LogError::Corrupt { position, reason })?,
                    );
                }
                Ok(None) => return Ok(events),
                Err(e) => return self.read_failure(&e).map(|_| events),
            }
        }
    }

    fn read_failure(
        &self,
        e: &kurrentdb::Error,
    ) -> Result<Vec<(StoredEvent, TokenEvent)>, LogError> {
        match Failure::classify(e, &self.target) {
            Failure::NoStream => Ok(Vec::new()),
            f => Err(f.log_error()),
        }
    }

    /// The events, with the kept openings attached to those that commit to secrets.
    async fn with_openings(
        &self,
        read: Vec<(StoredEvent, TokenEvent)>,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let ids: Vec<Uuid> = read
            .iter()
            .filter(|(_, decoded)| !decoded.commitments().is_empty())
            .map(|(e, _)| e.event_id)
            .collect();
        let mut events: Vec<StoredEvent> = read.into_iter().map(|(e, _)| e).collect();
        if ids.is_empty() {
            return Ok(events);
        }
        let kept = self
            .vault
            .fetch(&ids)
            .await
            .map_err(|e| LogError::Unavailable(format!("the openings beside the log: {e}")))?;
        let mut by_id: HashMap<Uuid, Vec<Opening>> = HashMap::new();
        for (id, opening) in kept {
            by_id.entry(id).or_default().push(opening);
        }
        for e in &mut events {
            if let Some(openings) = by_id.remove(&e.event_id) {
                e.openings = openings;
            }
        }
        Ok(events)
    }

    /// The events at these positions (each stored), with their openings, in position order.
    async fn read_positions(&self, mut positions: Vec<u64>) -> Result<Vec<StoredEvent>, LogError> {
        positions.sort_unstable();
        positions.dedup();
        let mut events = Vec::with_capacity(positions.len());
        let mut i = 0;
        while i < positions.len() {
            // A run of consecutive positions is one read.
            let mut j = i + 1;
            while j < positions.len() && positions[j] == positions[j - 1] + 1 && j - i < READ_PAGE {
                j += 1;
            }
            let run = self.read_raw(positions[i] - 1, j - i).await?;
            events.extend(run);
            i = j;
        }
        self.with_openings(events).await
    }

    /// Decide `batch` at the index's head: its sealed events and the streams it closes, or a
    /// refusal. `Ok(None)` when every event id is stored already.
    fn decide(
        &self,
        index: &Index,
        batch: &[StreamAppend],
    ) -> Result<Option<SealedBatch>, AppendError> {
        let ids = batch_event_ids(batch);
        let stored: HashSet<Uuid> = ids
            .iter()
            .filter(|id| index.positions.contains_key(id))
            .copied()
            .collect();
        if classify_retry(&ids, &stored)? {
            return Ok(None);
        }
        let mut sealer = Sealer::new(self.log_id, index.head);
        seal_batch(
            &mut sealer,
            batch,
            |s| index.streams.get(s).map_or(0, |p| p.len() as u64),
            |s| index.closed.contains(s),
        )
        .map(Some)
    }
}

/// The log id from the stream's metadata, set there first if the stream has none. Two
/// processes setting it at once: the metadata stream's expected revision lets one win, and the
/// other reads the winner's.
async fn log_id_of(client: &Client, stream: &str, target: &str) -> Result<LogId, Failure> {
    for _ in 0..8 {
        let (existing, state) = match client
            .get_stream_metadata(stream, &ReadStreamOptions::default().backwards())
            .await
        {
            Ok(StreamMetadataResult::Success(m)) => (
                m.metadata().clone(),
                StreamState::StreamRevision(m.version()),
            ),
            Ok(StreamMetadataResult::NotFound) => {
                (StreamMetadata::default(), StreamState::NoStream)
            }
            Ok(StreamMetadataResult::Deleted) => {
                return Err(Failure::Unavailable(format!(
                    "KurrentDB at {target}: the stream {stream:?} was deleted"
                )));
            }
            Err(e) => return Err(Failure::classify(&e, target)),
        };
        if let Some(value) = existing.custom_properties.get(LOG_ID_PROPERTY) {
            return value
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .map(LogId)
                .ok_or_else(|| {
                    Failure::Unavailable(format!(
                        "KurrentDB at {target}: the stream {stream:?} has a {LOG_ID_PROPERTY} that is not a UUID"
                    ))
                });
        }
        let mut metadata = existing;
        metadata.custom_properties.insert(
            LOG_ID_PROPERTY.to_owned(),
            serde_json::Value::String(Uuid::now_v7().to_string()),
        );
        let options = AppendToStreamOptions::default().stream_state(state);
        match client
            .set_stream_metadata(stream, &options, &metadata)
            .await
        {
            Ok(_) => continue,
            Err(e) => match Failure::classify(&e, target) {
                Failure::HeadMoved => continue,
                f => return Err(f),
            },
        }
    }
    Err(Failure::Unavailable(format!(
        "KurrentDB at {target}: the stream {stream:?}'s metadata kept changing"
    )))
}

/// Follow the stream from its end and tell `seen` of every new revision: the wake-up for
/// waiters. Reading by position stays the correctness path; a broken subscription is opened
/// again after a pause.
async fn follow(client: Client, stream: String, seen: watch::Sender<u64>) {
    loop {
        let options = SubscribeToStreamOptions::default().start_from(StreamPosition::End);
        let mut subscription = client.subscribe_to_stream(stream.as_str(), &options).await;
        loop {
            match subscription.next().await {
                Ok(resolved) => {
                    if let Some(e) = resolved.event.as_ref() {
                        let position = e.revision.saturating_add(1);
                        seen.send_if_modified(|s| {
                            let advanced = position > *s;
                            *s = (*s).max(position);
                            advanced
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the KurrentDB subscription ended; opening it again");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl EventLog for KurrentLog {
    fn log_id(&self) -> LogId {
        self.log_id
    }

    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        validate_batch(&batch)?;
        let mut index = self.index.lock().await;
        // The first decision is made at the head this process last read, with no read: when
        // another writer moved the head since, KurrentDB refuses the append (the expected
        // revision is stale) and it is decided again after catching up. A refusal is only
        // given after catching up, since the index may be behind.
        let mut fresh = false;
        for _ in 0..MAX_ATTEMPTS {
            let decided = match self.decide(&index, &batch) {
                Err(_) if !fresh => {
                    self.catch_up(&mut index)
                        .await
                        .map_err(|e| AppendError::Unavailable(e.to_string()))?;
                    fresh = true;
                    continue;
                }
                decided => decided?,
            };
            let Some(decision) = decided else {
                let ids = batch_event_ids(&batch);
                let positions = ids.iter().map(|id| index.positions[id]).collect();
                drop(index);
                let stored = self
                    .read_positions(positions)
                    .await
                    .map_err(|e| AppendError::Unavailable(e.to_string()))?;
                let by_id: HashMap<Uuid, StoredEvent> =
                    stored.into_iter().map(|e| (e.event_id, e)).collect();
                return ids
                    .iter()
                    .map(|id| by_id.get(id).cloned())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        AppendError::Unavailable("a retried event could not be read back".into())
                    });
            };
            // Openings first: once KurrentDB has the event, its openings must already be kept.
            let openings: Vec<(Uuid, Opening)> = decision
                .events
                .iter()
                .flat_map(|e| e.openings.iter().map(|o| (e.event_id, o.clone())))
                .collect();
            if !openings.is_empty() {
                self.vault.keep(&openings).await.map_err(|e| {
                    AppendError::Unavailable(format!("the openings beside the log: {e}"))
                })?;
            }
            let expected = match index.head.position {
                0 => StreamState::NoStream,
                p => StreamState::StreamRevision(p - 1),
            };
            let events: Vec<kurrentdb::EventData> =
                decision.events.iter().map(wire::event_data).collect();
            let options = AppendToStreamOptions::default().stream_state(expected);
            match self
                .client
                .append_to_stream(self.stream.as_str(), &options, events)
                .await
            {
                Ok(_) => {
                    for e in &decision.events {
                        index
                            .extend(self.log_id, e, decision.closing.contains(&e.stream_id))
                            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
                    }
                    let head = index.head.position;
                    self.seen.send_if_modified(|s| {
                        let advanced = head > *s;
                        *s = (*s).max(head);
                        advanced
                    });
                    return Ok(decision.events);
                }
                Err(e) => match Failure::classify(&e, &self.target) {
                    Failure::HeadMoved => {
                        self.catch_up(&mut index)
                            .await
                            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
                        fresh = true;
                    }
                    f => return Err(f.append_error()),
                },
            }
        }
        Err(Failure::HeadMoved.append_error())
    }

    async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let events = self.read_raw(after, limit).await?;
        self.with_openings(events).await
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
        let positions = {
            let mut index = self.index.lock().await;
            self.catch_up(&mut index).await?;
            index.streams.get(stream).cloned().unwrap_or_default()
        };
        self.read_positions(positions).await
    }

    async fn head(&self) -> Result<Head, LogError> {
        let mut index = self.index.lock().await;
        self.catch_up(&mut index).await?;
        Ok(index.head)
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> Result<Head, LogError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = self.seen.subscribe();
        loop {
            let head = self.head().await?;
            let now = tokio::time::Instant::now();
            if head.position >= position || now >= deadline {
                return Ok(head);
            }
            let nap = tokio::time::sleep_until(deadline.min(now + POLL_INTERVAL));
            tokio::select! {
                _ = seen.changed() => {}
                _ = nap => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Openings in memory: for the connection tests, which never reach a server.
    struct NoVault;

    impl OpeningVault for NoVault {
        fn keep<'a>(&'a self, _: &'a [(Uuid, Opening)]) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }

        fn fetch<'a>(
            &'a self,
            _: &'a [Uuid],
        ) -> BoxFuture<'a, Result<Vec<(Uuid, Opening)>, String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn settings(url: &str, target: &str) -> Settings {
        Settings {
            url: url.into(),
            target: target.into(),
            stream: DEFAULT_STREAM.into(),
            connect_timeout: Duration::from_secs(3),
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_with_its_password_hidden() {
        // Port 1 on loopback: nothing listens there, so the real client fails to connect.
        let s = settings(
            "kurrentdb://admin:changeit@127.0.0.1:1?tls=false",
            "kurrentdb://admin:***@127.0.0.1:1",
        );
        let started = std::time::Instant::now();
        let err = match KurrentLog::connect(&s, Arc::new(NoVault)).await {
            Ok(_) => panic!("nothing listens on port 1"),
            Err(e) => e,
        };
        assert!(
            err.contains("kurrentdb://admin:***@127.0.0.1:1"),
            "names the server: {err}"
        );
        assert!(!err.contains("changeit"), "hides the password: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gives up within its timeout"
        );
    }

    #[tokio::test]
    async fn a_malformed_connection_string_is_refused_without_echo() {
        let s = settings("kurrentdb://admin:changeit@", "kurrentdb://admin:***@");
        let err = match KurrentLog::connect(&s, Arc::new(NoVault)).await {
            Ok(_) => panic!("no host"),
            Err(e) => e,
        };
        assert!(
            err.contains("is not a KurrentDB connection string"),
            "{err}"
        );
        assert!(err.contains("accepted: kurrentdb://"), "{err}");
        assert!(!err.contains("changeit"), "{err}");
    }

    #[test]
    fn the_settings_debug_form_hides_the_url() {
        let s = settings(
            "kurrentdb://admin:changeit@db:2113",
            "kurrentdb://admin:***@db:2113",
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("changeit"), "{shown}");
        assert!(shown.contains("admin:***@db"), "{shown}");
    }

    fn sealed_chain(log_id: LogId, n: usize) -> Vec<StoredEvent> {
        use tokenledger_events::{
            DenyReason, ExpectedVersion, NewEvent, Timestamp, TokenEvent, TokenUseDenied,
        };
        let stream = StreamId::for_token(Uuid::from_u128(5));
        let mut sealer = Sealer::new(log_id, Head::GENESIS);
        (0..n)
            .map(|i| {
                let append = StreamAppend {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent {
                        event_id: Uuid::from_u128(100 + i as u128),
                        recorded_at: Timestamp::from_micros(1_790_000_000_000_000),
                        actor: "token:5".into(),
                        event: TokenEvent::UseDenied(TokenUseDenied {
                            reason: DenyReason::Revoked,
                            ip: None,
                            path: "/".into(),
                        }),
                        openings: Vec::new(),
                    }],
                };
                sealer.seal(&append, i as u64).expect("seals").remove(0)
            })
            .collect()
    }

    #[test]
    fn the_index_follows_a_chain_and_names_the_first_event_that_breaks_it() {
        let log_id = LogId(Uuid::from_u128(1));
        let chain = sealed_chain(log_id, 4);
        let mut index = Index::default();
        for e in &chain[..2] {
            index.extend(log_id, e, false).expect("extends");
        }
        assert_eq!(index.head.position, 2);
        assert_eq!(index.positions[&chain[1].event_id], 2);

        // A changed byte at position 3.
        let mut forged = chain[2].clone();
        forged.bytes[10] ^= 1;
        let err = index.extend(log_id, &forged, false).expect_err("forged");
        assert!(
            matches!(err, LogError::Corrupt { position: 3, .. }),
            "{err}"
        );
        // Another log's events do not chain onto this one.
        let other = sealed_chain(LogId(Uuid::from_u128(2)), 3);
        assert!(index.extend(log_id, &other[2], false).is_err());
        // Skipping a position is refused too.
        assert!(matches!(
            index.extend(log_id, &chain[3], false),
            Err(LogError::Corrupt { position: 3, .. })
        ));
        // The true event still extends it: nothing was folded from the refusals.
        index.extend(log_id, &chain[2], true).expect("extends");
        assert!(index.closed.contains(&chain[2].stream_id));
        assert_eq!(index.streams[&chain[2].stream_id], vec![1, 2, 3]);
    }
}
