//! One contract, three logs: the in-memory log, SQLite and PostgreSQL must behave alike.
//! Each check is a generic function over a [`Harness`]; `contract!` instantiates them per
//! backend. Database-level guarantees (triggers, tamper detection) run on the SQL backends.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use tokenledger::store;
use tokenledger_events::chain::ChainProblem;
use tokenledger_events::{
    AppendError, EventLog, ExpectedVersion, MemoryLog, StoredEvent, StreamAppend, StreamId,
    TokenEvent,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::*;

/// A backend under test: one or more nodes sharing one log, and a slow appender.
pub trait Harness: Sized + Send + Sync + 'static {
    type Log: EventLog + 'static;

    /// `None` when the backend is unavailable here (the test says it was skipped).
    fn start(test: &str) -> impl Future<Output = Option<Self>> + Send;

    /// Every node of this log; the first is the primary. SQLite opens the same file twice
    /// (two writers, as a CLI and a server are); PostgreSQL opens three pools.
    fn nodes(&self) -> Vec<Arc<Self::Log>>;

    /// An append whose transaction stays open, holding the append lock, until `release`.
    fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, AppendError>> + Send;
}

pub struct Memory {
    log: Arc<MemoryLog>,
}

impl Harness for Memory {
    type Log = MemoryLog;

    async fn start(_: &str) -> Option<Self> {
        Some(Memory {
            log: Arc::new(MemoryLog::new(memory_log_id())),
        })
    }

    fn nodes(&self) -> Vec<Arc<MemoryLog>> {
        vec![self.log.clone()]
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let guard = self.log.hold_append_lock().await;
        let _ = release.await;
        drop(guard);
        self.log.append(batch).await
    }
}

pub struct Sqlite {
    pub db: SqliteDb,
    nodes: Vec<Arc<store::Store>>,
}

impl Harness for Sqlite {
    type Log = store::Store;

    async fn start(_: &str) -> Option<Self> {
        let db = SqliteDb::new();
        let first = open_store(&db.url).await;
        let second = open_store(&db.url).await;
        Some(Sqlite {
            db,
            nodes: vec![Arc::new(first), Arc::new(second)],
        })
    }

    fn nodes(&self) -> Vec<Arc<store::Store>> {
        self.nodes.clone()
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        match &*self.nodes[0] {
            store::Store::Sqlite(log) => log.append_held(batch, release).await,
            store::Store::Postgres(_) => unreachable!("sqlite harness"),
        }
    }
}

pub struct Postgres {
    pub db: PgTestDb,
    nodes: Vec<Arc<store::Store>>,
}

impl Harness for Postgres {
    type Log = store::Store;

    async fn start(test: &str) -> Option<Self> {
        let admin = pg_admin_url(test)?;
        let db = PgTestDb::new(&admin).await;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Arc::new(open_store(&db.url).await));
        }
        Some(Postgres { db, nodes })
    }

    fn nodes(&self) -> Vec<Arc<store::Store>> {
        self.nodes.clone()
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        match &*self.nodes[0] {
            store::Store::Postgres(log) => log.append_held(batch, release).await,
            store::Store::Sqlite(_) => unreachable!("postgres harness"),
        }
    }
}

/// A SQL store whose log is kept elsewhere (`store::upstream`): the in-memory log is the
/// primary, and every node is a projection database following it. SQLite: two nodes on one
/// file; PostgreSQL: three nodes sharing one database.
pub struct Projected {
    primary: Arc<MemoryLog>,
    _sqlite: Option<SqliteDb>,
    _pg: Option<PgTestDb>,
    nodes: Vec<Arc<store::Store>>,
}

impl Projected {
    async fn follow(
        primary: &Arc<MemoryLog>,
        url: &store::DatabaseUrl,
        n: usize,
    ) -> Vec<Arc<store::Store>> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            let db = store::Database::connect(url).await.expect("connect");
            db.migrate().await.expect("migrate");
            let node =
                store::Store::open_following(&db, primary.clone(), "the test's primary log".into())
                    .await
                    .expect("follow");
            nodes.push(Arc::new(node));
        }
        nodes
    }
}

impl Projected {
    async fn append_held_to_primary(
        primary: &MemoryLog,
        node: &store::Store,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let guard = primary.hold_append_lock().await;
        let _ = release.await;
        drop(guard);
        node.append(batch).await
    }
}

pub struct ProjectedSqlite(Projected);

impl Harness for ProjectedSqlite {
    type Log = store::Store;

    async fn start(_: &str) -> Option<Self> {
        let primary = Arc::new(MemoryLog::new(memory_log_id()));
        let db = SqliteDb::new();
        let nodes = Projected::follow(&primary, &db.url, 2).await;
        Some(ProjectedSqlite(Projected {
            primary,
            _sqlite: Some(db),
            _pg: None,
            nodes,
        }))
    }

    fn nodes(&self) -> Vec<Arc<store::Store>> {
        self.0.nodes.clone()
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        Projected::append_held_to_primary(&self.0.primary, &self.0.nodes[0], batch, release).await
    }
}

pub struct ProjectedPostgres(Projected);

impl Harness for ProjectedPostgres {
    type Log = store::Store;

    async fn start(test: &str) -> Option<Self> {
        let admin = pg_admin_url(test)?;
        let primary = Arc::new(MemoryLog::new(memory_log_id()));
        let db = PgTestDb::new(&admin).await;
        let nodes = Projected::follow(&primary, &db.url, 3).await;
        Some(ProjectedPostgres(Projected {
            primary,
            _sqlite: None,
            _pg: Some(db),
            nodes,
        }))
    }

    fn nodes(&self) -> Vec<Arc<store::Store>> {
        self.0.nodes.clone()
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        Projected::append_held_to_primary(&self.0.primary, &self.0.nodes[0], batch, release).await
    }
}

/// The log in KurrentDB (`TEST_KURRENTDB_URL`, e.g. `kurrentdb://admin:changeit@127.0.0.1:2113?tls=false`):
/// three clients on one fresh stream, their openings in one SQLite projection database.
#[cfg(feature = "kurrentdb")]
pub struct Kurrent {
    _vault_db: SqliteDb,
    nodes: Vec<Arc<tokenledger_kurrent::KurrentLog>>,
}

#[cfg(feature = "kurrentdb")]
impl Kurrent {
    /// The server to test against, or `None` (after saying the test was skipped).
    pub fn url(test: &str) -> Option<String> {
        match std::env::var("TEST_KURRENTDB_URL") {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ => {
                eprintln!(
                    "skipped {test}: TEST_KURRENTDB_URL is not set (a KurrentDB server to test against)"
                );
                None
            }
        }
    }

    pub async fn connect(
        url: &str,
        stream: &str,
        vault: &Arc<store::Database>,
    ) -> tokenledger_kurrent::KurrentLog {
        let settings = tokenledger_kurrent::Settings {
            url: url.to_owned(),
            target: "the test server".into(),
            stream: stream.to_owned(),
            connect_timeout: Duration::from_secs(10),
        };
        tokenledger_kurrent::KurrentLog::connect(
            &settings,
            Arc::new(store::kurrent::Vault(vault.clone())),
        )
        .await
        .expect("connect to TEST_KURRENTDB_URL")
    }
}

#[cfg(feature = "kurrentdb")]
impl Harness for Kurrent {
    type Log = tokenledger_kurrent::KurrentLog;

    async fn start(test: &str) -> Option<Self> {
        let url = Kurrent::url(test)?;
        let vault_db = SqliteDb::new();
        let vault = store::Database::connect(&vault_db.url)
            .await
            .expect("vault");
        vault.migrate().await.expect("migrate");
        let vault = Arc::new(vault);
        let stream = format!("tokenlog-test-{}", Uuid::now_v7().simple());
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Arc::new(Kurrent::connect(&url, &stream, &vault).await));
        }
        Some(Kurrent {
            _vault_db: vault_db,
            nodes,
        })
    }

    fn nodes(&self) -> Vec<Arc<tokenledger_kurrent::KurrentLog>> {
        self.nodes.clone()
    }

    async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let guard = self.nodes[0].hold_append_lock().await;
        let _ = release.await;
        drop(guard);
        self.nodes[0].append(batch).await
    }
}

/// What anyone with write access to the stream can do: append an event past every check. A
/// foreign-shaped event, and one of ours whose chain hash does not follow, must each be named
/// by `verify` at its position.
#[cfg(feature = "kurrentdb")]
#[tokio::test]
async fn kurrentdb_verify_names_the_first_forged_or_foreign_event() {
    let test = "kurrentdb_verify_names_the_first_forged_or_foreign_event";
    let Some(h) = Kurrent::start(test).await else {
        return;
    };
    let log = &h.nodes[0];
    seed(&**log, 3).await;
    tokenledger_events::verify_chain(&**log)
        .await
        .expect("verifies before");

    // An event of another application in the stream, at position 4.
    log.append_unchecked("OrderPlaced", br#"{"order":1}"#.to_vec(), b"{}".to_vec())
        .await
        .expect("raw append");
    match tokenledger_events::verify_chain(&**log).await {
        Err(tokenledger_events::VerifyError::Log(tokenledger_events::LogError::Corrupt {
            position,
            reason,
        })) => {
            assert_eq!(position, 4, "{reason}");
            assert!(reason.contains("OrderPlaced"), "{reason}");
        }
        other => panic!("expected position 4 named, got {other:?}"),
    }

    // On a fresh stream: one of our events copied with its bytes changed (the chain hash it
    // carries no longer follows).
    let Some(h) = Kurrent::start(test).await else {
        return;
    };
    let log = &h.nodes[0];
    seed(&**log, 3).await;
    let mut third = log.read_from(2, 1).await.expect("read").remove(0);
    third.bytes[40] ^= 1;
    let metadata = tokenledger_kurrent::wire::metadata_of(&third);
    log.append_unchecked(&third.event_type, third.bytes.clone(), metadata)
        .await
        .expect("raw append");
    match tokenledger_events::verify_chain(&**log).await {
        Err(tokenledger_events::VerifyError::Chain(e)) => assert_eq!(e.position, 4, "{e}"),
        Err(tokenledger_events::VerifyError::Log(tokenledger_events::LogError::Corrupt {
            position,
            ..
        })) => {
            assert_eq!(position, 4)
        }
        other => panic!("expected position 4 named, got {other:?}"),
    }
    // And the log refuses to append past it.
    let err = log
        .append(vec![append(
            &stream(),
            ExpectedVersion::NoStream,
            vec![created(Uuid::now_v7(), "x")],
        )])
        .await
        .expect_err("appends stop at a forged event");
    assert!(err.to_string().contains("position 4"), "{err}");
}

fn stream() -> StreamId {
    StreamId::for_token(Uuid::now_v7())
}

pub async fn every_event_type_round_trips<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    let (old_id, new_id) = (Uuid::now_v7(), Uuid::now_v7());
    let (old, new) = (StreamId::for_token(old_id), StreamId::for_token(new_id));
    let mut successor = created(new_id, "deploy-bot-2");
    if let TokenEvent::Created(c) = &mut successor.event {
        c.rotated_from = Some(old_id);
    }
    let written = vec![
        append(
            &old,
            ExpectedVersion::NoStream,
            vec![
                created(old_id, "deploy-bot"),
                used("/api/admin/console"),
                denied(),
            ],
        ),
        append(
            &old,
            ExpectedVersion::Exact(3),
            vec![rotated(new_id), revoked()],
        ),
        append(&new, ExpectedVersion::NoStream, vec![successor]),
    ];
    let stored = log.append(written.clone()).await.expect("append");
    assert_eq!(
        stored.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );

    let all = log.read_from(0, 100).await.expect("read");
    assert_eq!(all, stored, "read_from returns exactly what was appended");
    let originals: Vec<_> = written.iter().flat_map(|a| a.events.iter()).collect();
    for (event, original) in all.iter().zip(&originals) {
        assert_eq!(event.decode().expect("decodes"), original.event);
        assert_eq!(event.event_id, original.event_id);
        assert_eq!(
            event.openings, original.openings,
            "openings travel with their event"
        );
        assert_eq!(event.event_type, original.event.event_type());
    }
    let old_stream = log.read_stream(&old).await.expect("stream");
    assert_eq!(
        old_stream
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let new_stream = log.read_stream(&new).await.expect("stream");
    assert_eq!(new_stream.len(), 1);
    assert_eq!(new_stream[0].openings.len(), 1);

    let report = tokenledger_events::verify_chain(&**log)
        .await
        .expect("chain verifies");
    assert_eq!(report.events, 6);
    assert_eq!(report.head, log.head().await.expect("head"));
    assert_eq!(log.read_from(6, 10).await.expect("read past head"), vec![]);
}

pub async fn expected_version_conflicts_append_nothing<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    let s = stream();
    log.append(vec![append(
        &s,
        ExpectedVersion::NoStream,
        vec![created(Uuid::now_v7(), "a"), used("/x")],
    )])
    .await
    .expect("first append");
    let head = log.head().await.expect("head");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        let err = log
            .append(vec![append(&s, expected, vec![used("/y")])])
            .await
            .expect_err("conflict");
        assert_eq!(
            err,
            AppendError::Conflict {
                stream: s.clone(),
                expected,
                actual: 2
            }
        );
    }
    // A batch whose second stream conflicts appends nothing at all, not even its first stream.
    let other = stream();
    let err = log
        .append(vec![
            append(&other, ExpectedVersion::NoStream, vec![used("/z")]),
            append(&s, ExpectedVersion::Exact(7), vec![used("/z")]),
        ])
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, AppendError::Conflict { actual: 2, .. }),
        "{err}"
    );
    assert_eq!(log.head().await.expect("head"), head, "nothing appended");
    assert!(log.read_stream(&other).await.expect("read").is_empty());
    log.append(vec![append(&s, ExpectedVersion::Exact(2), vec![revoked()])])
        .await
        .expect("the right version still appends");
}

pub async fn no_use_is_appended_after_its_token_is_revoked<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    log.append(vec![append(
        &s,
        ExpectedVersion::NoStream,
        vec![created(id, "a"), used("/x")],
    )])
    .await
    .expect("create and use");
    // A revocation and a use in one append: the use comes after, so it is refused, and with
    // it the whole append.
    let err = log
        .append(vec![append(
            &s,
            ExpectedVersion::Any,
            vec![revoked(), used("/y")],
        )])
        .await
        .expect_err("a use after a revocation");
    assert_eq!(err, AppendError::Closed { stream: s.clone() });
    assert_eq!(
        log.head().await.expect("head").position,
        2,
        "nothing appended"
    );

    log.append(vec![append(&s, ExpectedVersion::Exact(2), vec![revoked()])])
        .await
        .expect("revoke");
    for nodes in h.nodes() {
        let err = nodes
            .append(vec![append(&s, ExpectedVersion::Any, vec![used("/z")])])
            .await
            .expect_err("a use of a revoked token");
        assert_eq!(err, AppendError::Closed { stream: s.clone() }, "{err}");
    }
    // Denials are still recorded, and other tokens are untouched.
    log.append(vec![append(&s, ExpectedVersion::Any, vec![denied()])])
        .await
        .expect("a denial of a revoked token is recorded");
    let other = Uuid::now_v7();
    log.append(vec![append(
        &StreamId::for_token(other),
        ExpectedVersion::NoStream,
        vec![created(other, "b"), used("/ok")],
    )])
    .await
    .expect("another token is used");
    assert_eq!(log.head().await.expect("head").position, 6);
}

pub async fn a_conflict_fails_only_its_own_request<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = h.nodes()[0].clone();
    let s = stream();
    log.append(vec![append(
        &s,
        ExpectedVersion::NoStream,
        vec![used("/a")],
    )])
    .await
    .expect("seed");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (log, s) = (log.clone(), s.clone());
        tasks.spawn(async move {
            let batch = if i == 11 {
                append(&s, ExpectedVersion::Exact(9), vec![used("/bad")])
            } else {
                append(&stream(), ExpectedVersion::NoStream, vec![used("/ok")])
            };
            (i, log.append(vec![batch]).await)
        });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("task");
        if i == 11 {
            assert!(
                matches!(result, Err(AppendError::Conflict { actual: 1, .. })),
                "{result:?}"
            );
        } else {
            result.expect("other requests in the same group commit");
            ok += 1;
        }
    }
    assert_eq!(ok, 23);
    assert_eq!(log.head().await.expect("head").position, 24);
    tokenledger_events::verify_chain(&*log)
        .await
        .expect("verifies");
}

pub async fn retrying_an_append_is_idempotent<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    let s = stream();
    let batch = vec![append(
        &s,
        ExpectedVersion::NoStream,
        vec![created(Uuid::now_v7(), "ci"), used("/a")],
    )];
    let first = log.append(batch.clone()).await.expect("append");
    let head = log.head().await.expect("head");
    let again = log
        .append(batch.clone())
        .await
        .expect("retry answers, not conflicts");
    assert_eq!(again, first, "a retry returns the originally stored events");
    assert_eq!(
        log.head().await.expect("head"),
        head,
        "a retry appends nothing"
    );

    let mut partial = batch[0].clone();
    partial.events.push(used("/b"));
    partial.expected = ExpectedVersion::Any;
    let err = log.append(vec![partial]).await.expect_err("partial retry");
    assert_eq!(
        err,
        AppendError::PartialRetry {
            event_id: batch[0].events[0].event_id
        }
    );
    assert_eq!(log.head().await.expect("head"), head);
}

pub async fn concurrent_retries_of_one_batch_append_it_once<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = h.nodes()[0].clone();
    let batch = vec![append(
        &stream(),
        ExpectedVersion::NoStream,
        vec![created(Uuid::now_v7(), "dup"), used("/a")],
    )];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (log, batch) = (log.clone(), batch.clone());
        tasks.spawn(async move { log.append(batch).await });
    }
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        answers.push(joined.expect("task").expect("every retry answers"));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every caller gets the same stored events"
    );
    assert_eq!(
        answers[0].iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(log.head().await.expect("head").position, 2);
}

pub async fn invalid_batches_are_refused_whole<H: Harness>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    let err = log.append(vec![]).await.expect_err("empty");
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
    let mut forged = created(Uuid::now_v7(), "forged");
    forged.openings[0].value = b"some other hash".to_vec();
    let err = log
        .append(vec![append(
            &stream(),
            ExpectedVersion::NoStream,
            vec![forged],
        )])
        .await
        .expect_err("opening must open the commitment");
    assert!(
        err.to_string().contains("does not open a commitment"),
        "{err}"
    );
    let dup = used("/d");
    let err = log
        .append(vec![append(
            &stream(),
            ExpectedVersion::Any,
            vec![dup.clone(), dup],
        )])
        .await
        .expect_err("duplicate id");
    assert!(err.to_string().contains("appears twice"), "{err}");
    assert_eq!(log.head().await.expect("head").position, 0);
}

/// 32 appenders over every node while one appender holds its transaction open and a reader
/// tails by position: positions come out exactly 1..=N, versions are contiguous per stream,
/// and the reader sees every event once, in order.
pub async fn concurrent_appenders_give_dense_positions_and_a_gapless_tail<H: Harness>(test: &str) {
    const APPENDERS: usize = 32;
    const PER_APPENDER: usize = 8;
    let Some(h) = H::start(test).await else {
        return;
    };
    let nodes = h.nodes();
    let shared = stream();
    // Every appender writes PER_APPENDER batches: its own stream, and every other batch also
    // the shared stream (a multi-stream batch with ExpectedVersion::Any).
    let total = 1 + APPENDERS * (PER_APPENDER + PER_APPENDER / 2);

    let reader_log = nodes[nodes.len() - 1].clone();
    let reader = tokio::spawn(async move {
        let mut seen: Vec<u64> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while seen.len() < total && tokio::time::Instant::now() < deadline {
            let after = seen.last().copied().unwrap_or(0);
            reader_log
                .wait_for(after + 1, Duration::from_millis(500))
                .await
                .expect("wait");
            for e in reader_log.read_from(after, 64).await.expect("read") {
                seen.push(e.position);
            }
        }
        seen
    });

    let (release, held) = oneshot::channel();
    let held_stream = stream();
    let held_batch = vec![append(
        &held_stream,
        ExpectedVersion::NoStream,
        vec![used("/held")],
    )];
    let h = Arc::new(h);
    let holder = {
        let h = h.clone();
        tokio::spawn(async move { h.append_held(held_batch, held).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut appenders = tokio::task::JoinSet::new();
    for a in 0..APPENDERS {
        let log = nodes[a % nodes.len()].clone();
        let shared = shared.clone();
        appenders.spawn(async move {
            let own = stream();
            for i in 0..PER_APPENDER {
                let expected = match i {
                    0 => ExpectedVersion::NoStream,
                    i => ExpectedVersion::Exact(i as u64),
                };
                let mut batch = vec![append(&own, expected, vec![used("/own")])];
                if i % 2 == 0 {
                    batch.push(append(&shared, ExpectedVersion::Any, vec![used("/shared")]));
                }
                log.append(batch).await.expect("append");
            }
            own
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        nodes[0].head().await.expect("head").position,
        0,
        "nothing commits while the held appender owns the append lock"
    );
    release.send(()).expect("holder waiting");
    let held_events = holder
        .await
        .expect("holder task")
        .expect("held append commits");
    assert_eq!(held_events.len(), 1);

    let mut streams = vec![held_stream, shared.clone()];
    while let Some(own) = appenders.join_next().await {
        streams.push(own.expect("appender"));
    }
    let seen = reader.await.expect("reader");
    assert_eq!(
        seen,
        (1..=total as u64).collect::<Vec<_>>(),
        "the tail saw every position once, in order"
    );

    let all = nodes[0].read_from(0, total + 10).await.expect("read all");
    assert_eq!(all.len(), total);
    let mut by_stream: BTreeMap<&StreamId, Vec<u64>> = BTreeMap::new();
    for e in &all {
        by_stream
            .entry(&e.stream_id)
            .or_default()
            .push(e.stream_version);
    }
    for s in &streams {
        let versions = &by_stream[s];
        assert_eq!(
            versions,
            &(1..=versions.len() as u64).collect::<Vec<_>>(),
            "stream {s} is contiguous"
        );
    }
    assert_eq!(by_stream[&shared].len(), APPENDERS * PER_APPENDER / 2);
    let ids: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), total, "no event stored twice");
    let report = tokenledger_events::verify_chain(&*nodes[0])
        .await
        .expect("chain verifies");
    assert_eq!(report.events, total as u64);
}

/// Raw SQL against a backend's database as its owner, outside tokenledger.
pub trait RawSql: Harness {
    fn execute(&self, sql: &'static str) -> impl Future<Output = Result<u64, String>> + Send;

    /// Flip one bit of the stored bytes of the event at `position`, with the append-only
    /// trigger disabled as the database owner could.
    fn tamper(&self, position: u64) -> impl Future<Output = ()> + Send;
}

impl RawSql for Sqlite {
    async fn execute(&self, sql: &'static str) -> Result<u64, String> {
        let mut conn = sqlx::SqliteConnection::connect(&self.db.url_string())
            .await
            .expect("connect");
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn tamper(&self, position: u64) {
        let mut conn = sqlx::SqliteConnection::connect(&self.db.url_string())
            .await
            .expect("connect");
        let mut body: Vec<u8> = sqlx::query_scalar("SELECT body FROM events WHERE position = $1")
            .bind(position as i64)
            .fetch_one(&mut conn)
            .await
            .expect("body");
        body[40] ^= 0x01;
        sqlx::query("DROP TRIGGER events_no_update")
            .execute(&mut conn)
            .await
            .expect("drop trigger");
        sqlx::query("UPDATE events SET body = $1 WHERE position = $2")
            .bind(body)
            .bind(position as i64)
            .execute(&mut conn)
            .await
            .expect("tamper");
    }
}

impl RawSql for Postgres {
    async fn execute(&self, sql: &'static str) -> Result<u64, String> {
        let mut conn = self.db.connect().await;
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn tamper(&self, position: u64) {
        let mut conn = self.db.connect().await;
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("ALTER TABLE events DISABLE TRIGGER events_reject_change")
            .execute(&mut *tx)
            .await
            .expect("disable trigger");
        sqlx::query("UPDATE events SET body = set_byte(body, 40, get_byte(body, 40) # 1) WHERE position = $1")
            .bind(position as i64)
            .execute(&mut *tx)
            .await
            .expect("tamper");
        sqlx::query("ALTER TABLE events ENABLE TRIGGER events_reject_change")
            .execute(&mut *tx)
            .await
            .expect("enable trigger");
        tx.commit().await.expect("commit");
    }
}

pub async fn seed<L: EventLog>(log: &L, events: usize) {
    let s = stream();
    let mut batch = vec![created(Uuid::now_v7(), "seed")];
    batch.extend((1..events).map(|_| used("/seed")));
    log.append(vec![append(&s, ExpectedVersion::NoStream, batch)])
        .await
        .expect("seed");
}

pub async fn the_database_rejects_update_and_delete<H: RawSql>(test: &str, extra: &[&'static str]) {
    let Some(h) = H::start(test).await else {
        return;
    };
    seed(&*h.nodes()[0], 3).await;
    let mut statements = vec![
        "UPDATE events SET actor = 'mallory'",
        "DELETE FROM events WHERE position = 3",
        "UPDATE event_openings SET field = 'other'",
        "DELETE FROM event_openings",
        "DELETE FROM log_head",
        "UPDATE log_head SET position = 0",
    ];
    statements.extend_from_slice(extra);
    for sql in statements {
        let err = h.execute(sql).await.expect_err(sql);
        assert!(
            err.contains("append-only")
                || err.contains("is permanent")
                || err.contains("only moves forward"),
            "{sql}: {err}"
        );
    }
    let report = tokenledger_events::verify_chain(&*h.nodes()[0])
        .await
        .expect("still verifies");
    assert_eq!(report.events, 3);
}

pub async fn a_changed_byte_is_reported_at_its_position<H: RawSql>(test: &str) {
    let Some(h) = H::start(test).await else {
        return;
    };
    let log = &h.nodes()[0];
    seed(&**log, 5).await;
    tokenledger_events::verify_chain(&**log)
        .await
        .expect("verifies before");
    h.tamper(3).await;
    match tokenledger_events::verify_chain(&**log).await {
        Err(tokenledger_events::VerifyError::Chain(e)) => {
            assert_eq!(e.position, 3, "{e}");
            assert_eq!(e.problem, ChainProblem::HashMismatch);
        }
        other => panic!("expected a chain error at position 3, got {other:?}"),
    }
    // The head check at start-up looks only at the end of the chain: position 3 passes it,
    // and the full verification above is what catches it.
    tokenledger_events::verify_head(&**log)
        .await
        .expect("the tail is intact");
}

macro_rules! contract {
    ($backend:ident, $harness:ty) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn every_event_type_round_trips() {
                super::every_event_type_round_trips::<$harness>(concat!(
                    stringify!($backend),
                    "::every_event_type_round_trips"
                ))
                .await;
            }

            #[tokio::test]
            async fn expected_version_conflicts_append_nothing() {
                super::expected_version_conflicts_append_nothing::<$harness>(stringify!($backend))
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_conflict_fails_only_its_own_request() {
                super::a_conflict_fails_only_its_own_request::<$harness>(stringify!($backend))
                    .await;
            }

            #[tokio::test]
            async fn retrying_an_append_is_idempotent() {
                super::retrying_an_append_is_idempotent::<$harness>(stringify!($backend)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_retries_of_one_batch_append_it_once() {
                super::concurrent_retries_of_one_batch_append_it_once::<$harness>(stringify!(
                    $backend
                ))
                .await;
            }

            #[tokio::test]
            async fn no_use_is_appended_after_its_token_is_revoked() {
                super::no_use_is_appended_after_its_token_is_revoked::<$harness>(stringify!(
                    $backend
                ))
                .await;
            }

            #[tokio::test]
            async fn invalid_batches_are_refused_whole() {
                super::invalid_batches_are_refused_whole::<$harness>(stringify!($backend)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_appenders_give_dense_positions_and_a_gapless_tail() {
                super::concurrent_appenders_give_dense_positions_and_a_gapless_tail::<$harness>(
                    stringify!($backend),
                )
                .await;
            }
        }
    };
}

contract!(memory, Memory);
contract!(sqlite, Sqlite);
contract!(postgres, Postgres);
contract!(projected_sqlite, ProjectedSqlite);
contract!(projected_postgres, ProjectedPostgres);
#[cfg(feature = "kurrentdb")]
contract!(kurrentdb, Kurrent);

#[tokio::test]
async fn sqlite_rejects_update_and_delete() {
    the_database_rejects_update_and_delete::<Sqlite>("sqlite_rejects_update_and_delete", &[]).await;
}

#[tokio::test]
async fn postgres_rejects_update_delete_and_truncate() {
    the_database_rejects_update_and_delete::<Postgres>(
        "postgres_rejects_update_delete_and_truncate",
        &["TRUNCATE events CASCADE", "TRUNCATE event_openings"],
    )
    .await;
}

#[tokio::test]
async fn sqlite_reports_a_changed_byte_at_its_position() {
    a_changed_byte_is_reported_at_its_position::<Sqlite>(
        "sqlite_reports_a_changed_byte_at_its_position",
    )
    .await;
}

#[tokio::test]
async fn postgres_reports_a_changed_byte_at_its_position() {
    a_changed_byte_is_reported_at_its_position::<Postgres>(
        "postgres_reports_a_changed_byte_at_its_position",
    )
    .await;
}
