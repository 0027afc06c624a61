//! A log kept elsewhere (KurrentDB in production) with its projections in SQLite or
//! PostgreSQL (`store::upstream`). The primary here is the in-memory log, which keeps the same
//! contract; the KurrentDB log itself is tested by `log_contract::kurrentdb` where a server
//! is available. Every test runs on both projection backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tokenledger::store::upstream::Lag;
use tokenledger::store::{self, Database, DatabaseUrl, Store};
use tokenledger_events::{
    AppendError, EventLog, ExpectedVersion, LogId, MemoryLog, Opening, StreamId, TokenCreated,
};
use uuid::Uuid;

use crate::helpers::*;

/// A projection database: a SQLite file or a PostgreSQL database of its own.
enum ProjectionDb {
    Sqlite(SqliteDb),
    Postgres(PgTestDb),
}

impl ProjectionDb {
    /// One per backend: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.
    async fn both(test: &str) -> Vec<ProjectionDb> {
        let mut dbs = vec![ProjectionDb::Sqlite(SqliteDb::new())];
        if let Some(admin) = pg_admin_url(test) {
            dbs.push(ProjectionDb::Postgres(PgTestDb::new(&admin).await));
        }
        dbs
    }

    /// Another empty database of the same backend.
    async fn sibling(&self, test: &str) -> ProjectionDb {
        match self {
            ProjectionDb::Sqlite(_) => ProjectionDb::Sqlite(SqliteDb::new()),
            ProjectionDb::Postgres(_) => {
                ProjectionDb::Postgres(PgTestDb::new(&pg_admin_url(test).expect("postgres")).await)
            }
        }
    }

    fn url(&self) -> DatabaseUrl {
        match self {
            ProjectionDb::Sqlite(db) => db.url.clone(),
            ProjectionDb::Postgres(db) => db.url.clone(),
        }
    }

    async fn database(&self) -> Database {
        let db = Database::connect(&self.url()).await.expect("connect");
        db.migrate().await.expect("migrate");
        db
    }

    async fn follow(&self, primary: &Arc<MemoryLog>) -> Result<Store, store::StoreError> {
        let primary: Arc<dyn store::upstream::PrimaryLog> = primary.clone();
        Store::open_following(
            &self.database().await,
            primary,
            "the primary under test".into(),
        )
        .await
    }

    /// Run one raw statement as the database owner, outside tokenledger.
    async fn execute(&self, sql: &'static str) -> Result<u64, String> {
        let result = match self {
            ProjectionDb::Sqlite(db) => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url_string())
                    .await
                    .expect("connect");
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected())
            }
            ProjectionDb::Postgres(db) => {
                let mut conn = db.connect().await;
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected())
            }
        };
        result.map_err(|e| e.to_string())
    }
}

fn primary() -> Arc<MemoryLog> {
    Arc::new(MemoryLog::new(memory_log_id()))
}

/// A token's life in three appends: created, used twice and denied once, revoked.
async fn a_token_lifecycle(log: &impl EventLog) -> Uuid {
    let id = Uuid::now_v7();
    let s = StreamId::for_token(id);
    log.append(vec![append(
        &s,
        ExpectedVersion::NoStream,
        vec![created(id, "ci")],
    )])
    .await
    .expect("create");
    log.append(vec![append(
        &s,
        ExpectedVersion::Exact(1),
        vec![used("/a"), used("/b"), denied()],
    )])
    .await
    .expect("use");
    log.append(vec![append(&s, ExpectedVersion::Exact(4), vec![revoked()])])
        .await
        .expect("revoke");
    id
}

#[tokio::test]
async fn the_projections_hold_a_copy_that_hashes_the_same_and_equals_a_rebuild() {
    for db in ProjectionDb::both("primary_log_copy").await {
        let primary = primary();
        let node = db.follow(&primary).await.expect("follow");
        assert_eq!(
            EventLog::log_id(&node),
            EventLog::log_id(&*primary),
            "the log id is adopted"
        );
        assert_eq!(node.backend(), "kurrentdb");

        let id = a_token_lifecycle(&node).await;
        let there = primary.read_from(0, 100).await.expect("primary");
        let here = node.read_from(0, 100).await.expect("copy");
        assert_eq!(there.len(), 5);
        assert_eq!(
            here, there,
            "positions, bytes, hashes and openings are the primary's"
        );
        assert!(
            !here[0].openings.is_empty(),
            "the opening was copied with its event"
        );

        // The token table and the audit view are folded from the copy, at once.
        let row = node
            .token(id)
            .await
            .expect("read")
            .expect("the token's row");
        assert!(row.revoked_at.is_some());
        assert_eq!(row.use_count, 2);
        let audit = node
            .audit(&store::AuditFilter::everything())
            .await
            .expect("audit");
        assert_eq!(audit.rows.len(), 5);
        // A rebuild from position 0 of the copy gives the rows maintained live.
        let live = node.tokens().await.expect("tokens");
        node.rebuild_projections().await.expect("rebuild");
        assert_eq!(node.tokens().await.expect("tokens"), live);
        tokenledger_events::verify_chain(&node)
            .await
            .expect("the copy verifies");
        tokenledger_events::verify_chain(&store::upstream::Primary(&*primary))
            .await
            .expect("the primary verifies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_follows_the_log_and_its_lag_is_measured() {
    for db in ProjectionDb::both("primary_log_lag").await {
        let primary = primary();
        let writer = db.follow(&primary).await.expect("writer");
        let other_db = db.sibling("primary_log_lag").await;
        let reader = Arc::new(other_db.follow(&primary).await.expect("reader"));
        let up = reader.upstream().expect("follows").clone();

        let id = a_token_lifecycle(&writer).await;
        // Nothing copies for the reader yet: its lag is the whole lifecycle.
        let lag = up.measure(&reader).await.expect("measure");
        assert_eq!((lag.primary, lag.copied, lag.events()), (5, 0, 5));
        assert!(reader.token(id).await.expect("read").is_none());

        // Its follower (the checkpointed subscriber) copies it.
        let follower = tokio::spawn(store::upstream::follow(&reader));
        let started = Instant::now();
        while reader.token(id).await.expect("read").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the follower copies within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen_after = started.elapsed();
        assert!(
            reader
                .token(id)
                .await
                .expect("read")
                .expect("row")
                .revoked_at
                .is_some()
        );
        let lag = up.measure(&reader).await.expect("measure");
        assert_eq!(lag.events(), 0, "{lag:?}");
        assert!(lag.seconds >= 0.0);

        // A later append reaches it through the follower alone.
        let second = a_token_lifecycle(&writer).await;
        let started = Instant::now();
        while reader.token(second).await.expect("read").is_none() {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let head = writer.local_head().await.expect("head");
        while reader.local_head().await.expect("head") != head {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eprintln!(
            "{}: the reader's projections had the first lifecycle {seen_after:?} after its follower started, the second {:?} after its append",
            db.url().backend(),
            started.elapsed()
        );
        assert_eq!(
            reader.read_from(0, 100).await.expect("copy"),
            writer.read_from(0, 100).await.expect("copy")
        );
        follower.abort();
    }
}

#[tokio::test]
async fn the_lag_is_exported_as_metrics() {
    let metrics = tokenledger::app::Metrics::exported();
    let snapshot = tokenledger::app::telemetry::Snapshot {
        head: 9,
        cache_position: 9,
        tokens: [
            ("active", 0),
            ("rotated_in_grace", 0),
            ("expired", 0),
            ("revoked", 0),
        ],
        checkpoint_age_seconds: None,
        subscription: Some(Lag {
            primary: 9,
            copied: 4,
            seconds: 0.25,
        }),
    };
    let text = metrics.render(&snapshot).expect("exported");
    assert!(
        text.contains("tokenledger_subscription_lag_events 5"),
        "{text}"
    );
    assert!(
        text.contains("tokenledger_subscription_lag_seconds 0.25"),
        "{text}"
    );
}

#[tokio::test]
async fn appends_straight_to_a_projection_database_are_refused() {
    for db in ProjectionDb::both("primary_log_straight").await {
        let primary = primary();
        let node = db.follow(&primary).await.expect("follow");
        a_token_lifecycle(&node).await;

        let plain = Store::open(&db.url()).await.expect("opens for reading");
        let head = plain.head().await.expect("head");
        let s = StreamId::for_token(Uuid::now_v7());
        let err = plain
            .append(vec![append(
                &s,
                ExpectedVersion::NoStream,
                vec![created(Uuid::now_v7(), "x")],
            )])
            .await
            .expect_err("the copy is not written to directly");
        let AppendError::Unavailable(why) = err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(
            why.contains("holds the projections of the primary under test"),
            "{why}"
        );
        assert!(why.contains("PROJECTION_DATABASE_URL"), "{why}");
        assert_eq!(
            plain.head().await.expect("head"),
            head,
            "nothing was written"
        );
        assert_eq!(primary.head().await.expect("head").position, 5);
    }
}

#[tokio::test]
async fn a_database_of_another_log_or_a_diverging_copy_is_refused_before_anything_is_written() {
    for db in ProjectionDb::both("primary_log_other").await {
        // A database with a log of its own.
        let own = Store::open(&db.url()).await.expect("open");
        a_token_lifecycle(&own).await;
        drop(own);
        let err = match db.follow(&primary()).await {
            Ok(_) => panic!("a database holding another log cannot follow this one"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("holds 5 events of another log"), "{err}");
        assert!(err.contains("point it at an empty database"), "{err}");

        // Two primaries with one log id but different events: a database that copied the
        // first cannot go on with the second.
        let fresh = db.sibling("primary_log_other").await;
        let log_id = LogId(Uuid::now_v7());
        let first = Arc::new(MemoryLog::new(log_id));
        let second = Arc::new(MemoryLog::new(log_id));
        for log in [&first, &second] {
            let id = Uuid::now_v7();
            log.append(vec![append(
                &StreamId::for_token(id),
                ExpectedVersion::NoStream,
                vec![created(id, "a")],
            )])
            .await
            .expect("append");
        }
        let id = Uuid::now_v7();
        second
            .append(vec![append(
                &StreamId::for_token(id),
                ExpectedVersion::NoStream,
                vec![created(id, "b")],
            )])
            .await
            .expect("append");
        let node = fresh.follow(&first).await.expect("follows the first");
        assert_eq!(node.local_head().await.expect("head").position, 1);
        drop(node);
        let err = match fresh.follow(&second).await {
            Ok(_) => panic!("the copy diverges at position 2"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("diverges from the primary under test at position 2"),
            "{err}"
        );
        let plain = Store::open(&fresh.url()).await.expect("open");
        assert_eq!(
            plain.local_head().await.expect("head").position,
            1,
            "nothing was copied"
        );
    }
}

#[tokio::test]
async fn openings_are_kept_by_event_id_once_and_never_changed() {
    for db in ProjectionDb::both("primary_log_openings").await {
        let database = db.database().await;
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let opening = |byte: u8| Opening {
            field: TokenCreated::SECRET_FIELD.into(),
            salt: [byte; 32],
            value: vec![byte; 32],
        };
        database
            .keep_openings(&[(a, opening(1)), (b, opening(2))])
            .await
            .expect("keep");
        // A retried append keeps the same again; nothing changes, nothing fails.
        database
            .keep_openings(&[(a, opening(1))])
            .await
            .expect("keep again");
        // A different value under a kept id never replaces the first.
        database
            .keep_openings(&[(a, opening(9))])
            .await
            .expect("ignored");
        let mut kept = database
            .kept_openings(&[a, b, Uuid::now_v7()])
            .await
            .expect("fetch");
        kept.sort_by_key(|(id, _)| *id);
        assert_eq!(kept, vec![(a, opening(1)), (b, opening(2))]);

        for sql in [
            "UPDATE log_openings SET value = salt",
            "DELETE FROM log_openings",
        ] {
            let err = db.execute(sql).await.expect_err(sql);
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
    }
}

#[cfg(not(feature = "kurrentdb"))]
#[test]
fn a_kurrentdb_url_without_the_feature_says_how_to_build_with_it() {
    for url in [
        "kurrentdb://admin:changeit@db:2113?tls=false",
        "esdb://admin:changeit@db:2113",
        "kurrentdb+discover://admin:changeit@cluster:2113",
    ] {
        let err = DatabaseUrl::parse(url).expect_err(url).to_string();
        assert!(
            err.contains("cargo build --release --features kurrentdb"),
            "{err}"
        );
        assert!(!err.contains("changeit"), "{err}");

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["migrate", "--status"])
            .env("DATABASE_URL", url)
            .env("PROJECTION_DATABASE_URL", "sqlite://unused.db")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("--features kurrentdb"), "{text}");
        assert!(!text.contains("changeit"), "{text}");
    }
}

#[test]
fn a_kurrentdb_log_needs_a_sql_projection_database() {
    let log = "kurrentdb://admin:changeit@db:2113?tls=false";
    let ok = DatabaseUrl::kurrent(log, "sqlite://p.db?mode=rwc").expect("sqlite projections");
    assert_eq!(ok.backend(), "kurrentdb");
    assert_eq!(ok.sql().backend(), "sqlite");
    assert!(!format!("{ok:?}").contains("changeit"));
    assert!(!ok.redacted().contains("changeit"));
    for (projections, words) in [
        (
            "kurrentdb://elsewhere:2113",
            "must name SQLite or PostgreSQL",
        ),
        (
            "mysql://x/y",
            "PROJECTION_DATABASE_URL has the unsupported scheme",
        ),
        ("", "PROJECTION_DATABASE_URL"),
    ] {
        let err = DatabaseUrl::kurrent(log, projections)
            .expect_err(projections)
            .to_string();
        assert!(err.contains(words), "{projections}: {err}");
        assert!(!err.contains("changeit"), "{err}");
    }
    let err = DatabaseUrl::kurrent("kurrentdb://", "sqlite://p.db").expect_err("no host");
    assert!(err.to_string().contains("has no host"), "{err}");
}

/// The real client against a closed loopback port: start-up stops with exit 1, naming the
/// server with its password hidden.
#[cfg(feature = "kurrentdb")]
#[test]
fn an_unreachable_kurrentdb_stops_start_up_naming_it_with_the_password_hidden() {
    let projections = SqliteDb::new();
    for command in [
        &["verify", "--quiet"][..],
        &["serve"][..],
        &["token", "list"][..],
    ] {
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(command)
            .env(
                "DATABASE_URL",
                "kurrentdb://admin:changeit@127.0.0.1:1?tls=false",
            )
            .env("PROJECTION_DATABASE_URL", projections.url_string())
            .env("BIND_ADDR", "127.0.0.1:0")
            .output()
            .expect("run");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {text}");
        assert!(
            text.contains("kurrentdb://admin:***@127.0.0.1:1"),
            "{command:?}: {text}"
        );
        assert!(!text.contains("changeit"), "{command:?}: {text}");
        assert!(started.elapsed() < Duration::from_secs(30), "{command:?}");
    }
}

#[cfg(feature = "kurrentdb")]
#[test]
fn a_kurrentdb_url_without_a_projection_database_is_refused_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["verify"])
        .env(
            "DATABASE_URL",
            "kurrentdb://admin:changeit@127.0.0.1:2113?tls=false",
        )
        .env_remove("PROJECTION_DATABASE_URL")
        .output()
        .expect("run");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("set PROJECTION_DATABASE_URL too"), "{text}");
    assert!(!text.contains("changeit"), "{text}");
}

/// Two real services, each on a projection database of its own following one log: a token
/// made on A works on B once B's follower copied it; revoked on A, A refuses it at once and B
/// once its follower copies the revocation (the subscription lag), all over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_reaches_another_through_its_follower() {
    let mut dbs = vec![(TestDb::sqlite(), TestDb::sqlite())];
    if let (Some(a), Some(b)) = (
        TestDb::postgres("primary_log_nodes").await,
        TestDb::postgres("primary_log_nodes").await,
    ) {
        dbs.push((a, b));
    }
    for (db_a, db_b) in dbs {
        let primary = primary();
        let follow = |db: &TestDb| {
            let primary: Arc<dyn store::upstream::PrimaryLog> = primary.clone();
            let url = db.url();
            async move {
                let database = Database::connect(&url).await.expect("connect");
                database.migrate().await.expect("migrate");
                Store::open_following(&database, primary, "the primary under test".into())
                    .await
                    .expect("follow")
            }
        };
        let a = spawn_app_on(&db_a, Some(follow(&db_a).await), |c| {
            c.switches = console_on()
        })
        .await;
        let b = spawn_app_on(&db_b, Some(follow(&db_b).await), |c| {
            c.switches = console_on()
        })
        .await;

        let minted = a.create("ci", &["console:exec"], None).await;
        let token = minted.token.expose();
        let started = Instant::now();
        loop {
            let (status, body) = b.console(Some(token), "db:health").await;
            if status == reqwest::StatusCode::OK {
                assert_eq!(body["result"]["backend"], "kurrentdb", "{body}");
                break;
            }
            assert_eq!(error_of(&body), "Invalid token", "{status} {body}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "B learns of the token"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        a.revoke(minted.row.id).await;
        let revoked_at = Instant::now();
        let (status, body) = a.console(Some(token), "db:health").await;
        assert_eq!(
            (status.as_u16(), error_of(&body)),
            (401, "Token has been revoked"),
            "the writing node refuses at once"
        );
        loop {
            let (status, body) = b.console(Some(token), "db:health").await;
            if status == reqwest::StatusCode::UNAUTHORIZED {
                assert_eq!(error_of(&body), "Token has been revoked");
                break;
            }
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
            assert!(
                revoked_at.elapsed() < Duration::from_secs(10),
                "B refuses within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!(
            "{}: node B refused the token {:?} after node A's revocation answered",
            db_a.url().backend(),
            revoked_at.elapsed()
        );
        // Every use and refusal on both nodes is in the one log, in both copies alike.
        let log = primary.read_from(0, 1000).await.expect("read");
        let uses_on_b = log.iter().filter(|e| e.event_type == "TokenUsed").count();
        assert!(uses_on_b >= 1);
        let b_store = b.services().store().clone();
        let started = Instant::now();
        while b_store.local_head().await.expect("head").position
            < primary.head().await.expect("head").position
        {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            b_store.read_from(0, 1000).await.expect("copy"),
            primary.read_from(0, 1000).await.expect("log")
        );
        a.stop().await;
        b.stop().await;
    }
}
