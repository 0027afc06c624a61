//! A SQL store that holds the projections of a log kept elsewhere (KurrentDB): the split of
//! the store into a log and projections.
//!
//! Appends go to the primary log first. Its sealed events are then copied into this database's
//! own event table, in order, through the ordinary append path: that fills `api_tokens`,
//! `token_addresses`, the `audit_logs` view and the Merkle tree in the same transaction that
//! moves the local head, so the local head is the projections' checkpoint and commits with
//! their rows. The copy is re-sealed here under the primary's log id, and every event's chain
//! hash must come out equal to the primary's: a copy that would differ is refused, never
//! written.
//!
//! The writing node copies its own appends before answering, so what it wrote is in its
//! projections at once (and in its token cache, which folds the append itself). Other
//! nodes copy it when their follower ([`follow`]) sees the primary's head move: that is the
//! subscription lag, which [`Upstream::lag`] reports and `/metrics` exports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_events::{
    AppendError, EventLog, ExpectedVersion, Head, LogError, LogId, NewEvent, Opening, StoredEvent,
    StreamAppend, StreamId,
};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use super::{Store, StoreError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Events copied in one local append.
const COPY_PAGE: usize = 256;

/// How long a follower waits for the primary's head to move before asking again.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// A log the SQL store follows, as a trait object (any [`EventLog`] is one).
pub trait PrimaryLog: Send + Sync + 'static {
    fn log_id(&self) -> LogId;
    fn append(
        &self,
        batch: Vec<StreamAppend>,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, AppendError>>;
    fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, LogError>>;
    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, LogError>>;
    fn head(&self) -> BoxFuture<'_, Result<Head, LogError>>;
    fn wait_for(&self, position: u64, timeout: Duration) -> BoxFuture<'_, Result<Head, LogError>>;
}

impl<L: EventLog + 'static> PrimaryLog for L {
    fn log_id(&self) -> LogId {
        EventLog::log_id(self)
    }

    fn append(
        &self,
        batch: Vec<StreamAppend>,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, AppendError>> {
        Box::pin(EventLog::append(self, batch))
    }

    fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, LogError>> {
        Box::pin(EventLog::read_from(self, after, limit))
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, LogError>> {
        Box::pin(EventLog::read_stream(self, stream))
    }

    fn head(&self) -> BoxFuture<'_, Result<Head, LogError>> {
        Box::pin(EventLog::head(self))
    }

    fn wait_for(&self, position: u64, timeout: Duration) -> BoxFuture<'_, Result<Head, LogError>> {
        Box::pin(EventLog::wait_for(self, position, timeout))
    }
}

/// The primary log as an [`EventLog`] again: what `verify` checks.
pub struct Primary<'a>(pub &'a dyn PrimaryLog);

impl EventLog for Primary<'_> {
    fn log_id(&self) -> LogId {
        self.0.log_id()
    }

    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        self.0.append(batch).await
    }

    async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.0.read_from(after, limit).await
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
        self.0.read_stream(stream).await
    }

    async fn head(&self) -> Result<Head, LogError> {
        self.0.head().await
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> Result<Head, LogError> {
        self.0.wait_for(position, timeout).await
    }
}

/// How far this database's projections trail the primary log.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    /// The primary's head as last read.
    pub primary: u64,
    /// The last position copied here: the projections' checkpoint.
    pub copied: u64,
    /// Seconds from the last copied event's `recorded_at` to when it was copied (0 when
    /// nothing has been copied yet, or the clocks disagree).
    pub seconds: f64,
}

impl Lag {
    /// Events in the primary not yet in the projections.
    pub fn events(&self) -> u64 {
        self.primary.saturating_sub(self.copied)
    }
}

/// The primary log a SQL store follows, and the state of its copy.
pub struct Upstream {
    primary: Arc<dyn PrimaryLog>,
    /// What messages call the primary (never with a password).
    name: String,
    /// One copier at a time in this process (other processes are kept out by the append lock).
    copying: Mutex<()>,
    lag: watch::Sender<Lag>,
}

impl Upstream {
    pub fn new(primary: Arc<dyn PrimaryLog>, name: impl Into<String>) -> Upstream {
        Upstream {
            primary,
            name: name.into(),
            copying: Mutex::new(()),
            lag: watch::channel(Lag::default()).0,
        }
    }

    pub fn primary(&self) -> &dyn PrimaryLog {
        &*self.primary
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latest lag measured.
    pub fn lag(&self) -> Lag {
        *self.lag.borrow()
    }

    /// Append to the primary, then copy up to the appended events here before answering. A
    /// copy that fails does not fail the append (the events are durable in the primary); the
    /// follower copies them later.
    pub(super) async fn append(
        &self,
        store: &Store,
        batch: Vec<StreamAppend>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let sealed = self.primary.append(batch).await?;
        let last = sealed.iter().map(|e| e.position).max();
        if let Err(e) = self.copy(store, last).await {
            tracing::warn!(error = %e, primary = %self.name, "the projections could not take this append yet; the follower will");
        }
        Ok(sealed)
    }

    /// Copy the primary's events past the local head into this database, until the local head
    /// reaches `upto` (or the primary's head, when `None`). Returns the local head.
    pub async fn copy(&self, store: &Store, upto: Option<u64>) -> Result<Head, StoreError> {
        let _one = self.copying.lock().await;
        // Refusals in a row at one local head: another node's copy moves the head, and a
        // refusal that does not is a real disagreement.
        let (mut retries, mut refused_at) = (0, None);
        loop {
            let local = store.local_head().await?;
            if refused_at != Some(local.position) {
                retries = 0;
            }
            if upto.is_some_and(|u| local.position >= u) {
                return Ok(local);
            }
            let page = self.primary.read_from(local.position, COPY_PAGE).await?;
            let Some(last) = page.last() else {
                self.lag.send_modify(|l| {
                    l.primary = l.primary.max(local.position);
                    l.copied = local.position;
                });
                return Ok(local);
            };
            let (last_position, last_recorded) = (last.position, last.recorded_at);
            if page[0].position != local.position + 1 {
                return Err(StoreError::Db(format!(
                    "{} answered a read after position {} with position {}",
                    self.name, local.position, page[0].position
                )));
            }
            // Checked before anything is written: the page chains onto this database's head
            // (so the copy so far is the primary's prefix), and each event, sealed again here,
            // gives its very bytes.
            let log_id = self.primary.log_id();
            let mut prev = local.hash;
            for e in &page {
                if tokenledger_events::chain::event_hash(log_id, e.position, &prev, &e.bytes)
                    != e.hash
                {
                    return Err(StoreError::Db(format!(
                        "the projection database diverges from {} at position {}: its events \
                         up to there are not the log's; rebuild it from an empty database",
                        self.name, e.position
                    )));
                }
                prev = e.hash;
            }
            let batch = page
                .iter()
                .map(copy_of)
                .collect::<Result<Vec<_>, StoreError>>()?;
            match store.local_append(batch).await {
                Ok(copied) => {
                    for (here, there) in copied.iter().zip(&page) {
                        if here.position != there.position || here.hash != there.hash {
                            return Err(StoreError::Db(format!(
                                "the projection database diverges from {} at position {}: \
                                 its copy does not hash the same; run `tokenledger verify`",
                                self.name, there.position
                            )));
                        }
                    }
                    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                    let seconds = now
                        .as_micros()
                        .saturating_sub(last_recorded.as_micros())
                        .max(0) as f64
                        / 1e6;
                    self.lag.send_modify(|l| {
                        l.primary = l.primary.max(last_position);
                        l.copied = last_position;
                        l.seconds = seconds;
                    });
                }
                // Another node copied some of these first: read the local head again.
                Err(AppendError::PartialRetry { .. } | AppendError::Conflict { .. })
                    if retries < 16 =>
                {
                    retries += 1;
                    refused_at = Some(local.position);
                }
                Err(e) => {
                    return Err(StoreError::Db(format!(
                        "copying {} into the projection database: {e}",
                        self.name
                    )));
                }
            }
        }
    }

    /// Read the primary's head into the lag.
    pub async fn measure(&self, store: &Store) -> Result<Lag, StoreError> {
        let primary = self.primary.head().await?;
        let local = store.local_head().await?;
        self.lag.send_modify(|l| {
            l.primary = primary.position;
            l.copied = local.position;
        });
        Ok(self.lag())
    }
}

/// An event of the primary as an append here: the same id, time, actor, event and openings,
/// at the version after the one before it.
fn copy_of(event: &StoredEvent) -> Result<StreamAppend, StoreError> {
    let corrupt = |reason: String| {
        StoreError::Log(LogError::Corrupt {
            position: event.position,
            reason,
        })
    };
    let decoded = event.decode().map_err(|e| corrupt(e.to_string()))?;
    if !decoded.commitments().is_empty() && event.openings.is_empty() {
        // The openings were kept in another projection database: this node's copy cannot
        // look the token up by its secret. Nodes must share one projection database.
        tracing::warn!(
            position = event.position,
            "an event's openings are not in this projection database: every node must use the same PROJECTION_DATABASE_URL, or tokens created elsewhere do not authenticate here"
        );
    }
    let sealed_again = tokenledger_events::codec::encode(
        event.event_id,
        &event.stream_id,
        event.stream_version,
        event.recorded_at,
        &event.actor,
        &decoded,
    );
    if sealed_again != event.bytes || event.stream_version == 0 {
        return Err(corrupt(
            "its bytes are not the canonical encoding this version writes, so a copy would not hash the same"
                .into(),
        ));
    }
    Ok(StreamAppend {
        stream_id: event.stream_id.clone(),
        expected: ExpectedVersion::Exact(event.stream_version - 1),
        events: vec![NewEvent {
            event_id: event.event_id,
            recorded_at: event.recorded_at,
            actor: event.actor.clone(),
            event: decoded,
            openings: event.openings.clone(),
        }],
    })
}

/// Keep copying the primary's new events into `store` until the store is dropped: the
/// checkpointed subscriber of a node whose log is kept elsewhere.
pub fn follow(store: &Arc<Store>) -> impl Future<Output = ()> + Send + 'static {
    let store = Arc::downgrade(store);
    async move {
        let mut failing = false;
        loop {
            let Some(s) = store.upgrade() else { return };
            let Some(up) = s.upstream() else { return };
            let result = async {
                let local = s.local_head().await?;
                up.primary.wait_for(local.position + 1, FOLLOW_WAIT).await?;
                up.copy(&s, None).await?;
                up.measure(&s).await
            }
            .await;
            match result {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(primary = %up.name, "the projections follow the log again");
                }
                Ok(_) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, primary = %up.name, "the projections cannot follow the log; retrying");
                    }
                    failing = true;
                    drop(s);
                    tokio::time::sleep(FOLLOW_WAIT).await;
                }
            }
        }
    }
}

impl Store {
    /// Open `db` (migrated) as the projection database of `primary`, called `name` in
    /// messages: an empty database takes the primary's log id, appends go to the primary
    /// first, and the projections are brought up to the primary's head before this returns.
    /// A database that holds another log is refused.
    pub async fn open_following(
        db: &super::Database,
        primary: Arc<dyn PrimaryLog>,
        name: String,
    ) -> Result<Store, StoreError> {
        db.follow(primary.log_id(), &name).await?;
        let store = db.open_log().await?;
        let upstream = Arc::new(Upstream::new(primary, name));
        store.attach(upstream.clone())?;
        upstream.copy(&store, None).await?;
        Ok(store)
    }

    /// The primary log this store follows, when its log is kept elsewhere.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        super::delegate!(self, l => l.follows.upstream.get())
    }

    /// The primary recorded in this database (`log_primary`), when it follows one.
    pub fn primary_name(&self) -> Option<&str> {
        super::delegate!(self, l => l.follows.primary.as_deref())
    }

    /// Follow `upstream` from now on: appends go to it first. The database must have been
    /// prepared with [`super::Database::follow`].
    pub fn attach(&self, upstream: Arc<Upstream>) -> Result<(), StoreError> {
        if EventLog::log_id(self) != upstream.primary.log_id() {
            return Err(StoreError::Db(format!(
                "the projection database belongs to log {}, not to {} (log {})",
                EventLog::log_id(self),
                upstream.name,
                upstream.primary.log_id()
            )));
        }
        super::delegate!(self, l => l.follows.upstream.set(upstream))
            .map_err(|_| StoreError::Db("this store already follows a log".into()))
    }

    /// The head of this database's own event table: with a primary, the projections'
    /// checkpoint.
    pub async fn local_head(&self) -> Result<Head, LogError> {
        super::delegate!(self, l => EventLog::head(l).await)
    }

    /// Append to this database's own event table, whatever it follows.
    pub(super) async fn local_append(
        &self,
        batch: Vec<StreamAppend>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        super::delegate!(self, l => EventLog::append(l, batch).await)
    }
}

impl super::Database {
    /// Keep openings of a primary log's events (by event id; keeping one again changes
    /// nothing): where a KurrentDB log's openings live.
    pub async fn keep_openings(&self, openings: &[(Uuid, Opening)]) -> Result<(), StoreError> {
        match self {
            super::Database::Sqlite(d) => d.keep_openings(openings).await,
            super::Database::Postgres(d) => d.keep_openings(openings).await,
        }
    }

    /// The kept openings of these events.
    pub async fn kept_openings(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Opening)>, StoreError> {
        match self {
            super::Database::Sqlite(d) => d.kept_openings(ids).await,
            super::Database::Postgres(d) => d.kept_openings(ids).await,
        }
    }
}

/// What a SQL log knows of the primary it follows.
#[derive(Default)]
pub struct Follows {
    /// From `log_primary`, read at open.
    pub(super) primary: Option<String>,
    pub(super) upstream: std::sync::OnceLock<Arc<Upstream>>,
}

/// A row of `log_openings` (a salt that is not 32 bytes is skipped: the commitment check of
/// whoever uses the opening would refuse it anyway).
pub(super) fn opening_row(
    (id, field, salt, value): (Uuid, String, Vec<u8>, Vec<u8>),
) -> Option<(Uuid, Opening)> {
    let salt: [u8; 32] = salt.try_into().ok()?;
    Some((id, Opening { field, salt, value }))
}

/// The refusal of a projection database that holds another log.
pub(super) fn other_log(held: Uuid, position: i64, log_id: LogId, name: &str) -> StoreError {
    StoreError::Db(format!(
        "PROJECTION_DATABASE_URL holds {position} events of another log (log id {held}), not \
         the projections of {name} (log id {}); point it at an empty database or at that \
         log's own projection database",
        log_id.0
    ))
}
