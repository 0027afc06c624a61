//! Test harness: fresh databases, events to append, and a way to run the real binary.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokenledger::store::{DatabaseUrl, Store};
use tokenledger_events::chain::field_commitment;
use tokenledger_events::{
    DenyReason, Environment, ExpectedVersion, LogId, NewEvent, Opening, StreamAppend, StreamId,
    Timestamp, TokenCreated, TokenEvent, TokenRevoked, TokenRotated, TokenUseDenied, TokenUsed,
};
use uuid::Uuid;

/// A SQLite database file in its own temporary directory, removed on drop.
pub struct SqliteDb {
    pub dir: tempfile::TempDir,
    pub url: DatabaseUrl,
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display());
        SqliteDb {
            url: DatabaseUrl::parse(&url).expect("sqlite url"),
            dir,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("log.db")
    }

    pub fn url_string(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path().display())
    }
}

/// A fresh PostgreSQL database, dropped (with FORCE) when this value drops.
pub struct PgTestDb {
    pub url: DatabaseUrl,
    pub url_string: String,
    admin: String,
    name: String,
}

/// `TEST_DATABASE_URL`, or `None` after saying the test is skipped.
pub fn pg_admin_url(test: &str) -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped {test}: TEST_DATABASE_URL is not set");
            None
        }
    }
}

impl PgTestDb {
    pub async fn new(admin: &str) -> PgTestDb {
        let name = format!("tl_test_{}", Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(admin)
            .await
            .expect("TEST_DATABASE_URL is set but PostgreSQL is unreachable");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let url_string = with_database(admin, &name);
        PgTestDb {
            url: DatabaseUrl::parse(&url_string).expect("postgres url"),
            url_string,
            admin: admin.to_owned(),
            name,
        }
    }

    /// A direct connection to the test database (as its owner).
    pub async fn connect(&self) -> PgConnection {
        let options = PgConnectOptions::from_str(&self.url_string).expect("url");
        PgConnection::connect_with(&options).await.expect("connect")
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any async context we can rely on: use a short-lived runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// `postgres://user@host:port/olddb?x` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("url has a scheme");
    let host = rest.split_once('/').map(|(h, _)| h).unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{host}/{name}?{q}"),
        None => format!("{scheme}://{host}/{name}"),
    }
}

/// Open a migrated log at `url`, as a node would.
pub async fn open_store(url: &DatabaseUrl) -> Store {
    Store::open(url).await.expect("open store")
}

pub fn memory_log_id() -> LogId {
    LogId(Uuid::now_v7())
}

pub fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

/// A `TokenCreated` with a real commitment and its opening.
pub fn created(token_id: Uuid, name: &str) -> NewEvent {
    let salt = [7u8; 32];
    let token_hash = format!("hash-of-{token_id}").into_bytes();
    let commitment = field_commitment(TokenCreated::SECRET_FIELD, &salt, &token_hash);
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: at(1_700_000_000_000_000),
        actor: "test:suite".into(),
        event: TokenEvent::Created(TokenCreated {
            token_id,
            name: name.into(),
            scopes: vec!["console:exec".into(), "logs:read".into()],
            environment: Environment::Test,
            expires_at: at(1_800_000_000_000_000),
            created_by: "test:suite".into(),
            secret_commitment: commitment,
            rotated_from: None,
        }),
        openings: vec![Opening {
            field: TokenCreated::SECRET_FIELD.into(),
            salt,
            value: token_hash,
        }],
    }
}

pub fn used(path: &str) -> NewEvent {
    event(TokenEvent::Used(TokenUsed {
        ip: Some("127.0.0.1".into()),
        method: "POST".into(),
        path: path.into(),
        command: Some("db:health".into()),
        user_agent: Some("curl/8".into()),
    }))
}

pub fn denied() -> NewEvent {
    event(TokenEvent::UseDenied(TokenUseDenied {
        reason: DenyReason::InsufficientScope,
        ip: Some("10.0.0.9".into()),
        path: "/api/admin/console".into(),
    }))
}

pub fn revoked() -> NewEvent {
    event(TokenEvent::Revoked(TokenRevoked {
        actor: "user:alice".into(),
        reason: Some("leaked in a CI log".into()),
    }))
}

pub fn rotated(successor: Uuid) -> NewEvent {
    event(TokenEvent::Rotated(TokenRotated {
        successor_id: successor,
        old_expires_at: at(1_700_086_400_000_000),
    }))
}

fn event(event: TokenEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: at(1_700_000_000_000_000),
        actor: "test:suite".into(),
        event,
        openings: Vec::new(),
    }
}

pub fn append(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream.clone(),
        expected,
        events,
    }
}

/// Run the real `tokenledger` binary with `args`, with `DATABASE_URL` set to `url`.
pub fn tokenledger(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tokenledger")
}

impl PgTestDb {
    /// The test database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
