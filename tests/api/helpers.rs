//! Test harness: fresh databases on either backend ([`TestDb`]), the real service on a
//! loopback port ([`spawn_app`] -> [`TestApp`]), events to append, and the real binary.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokenledger::app::{
    Application, AuditQuery, AuditView, CreateRequest, Cursor, Ledger, MAX_PAGE, Minted, Queries,
    RotateRequest, Services,
};
use tokenledger::clock::{Clock as _, ManualClock};
use tokenledger::config::{ServeConfig, Switches};
use tokenledger::lifecycle::Grace;
use tokenledger::store::{DatabaseUrl, Store};
use tokenledger_events::chain::field_commitment;
use tokenledger_events::{
    DenyReason, Environment, ExpectedVersion, LogId, NewEvent, Opening, StreamAppend, StreamId,
    Timestamp, TokenCreated, TokenEvent, TokenRevoked, TokenRotated, TokenUseDenied, TokenUsed,
};
use tokenledger_projections::TokenRow;
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
            allowed_ips: Vec::new(),
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
        until_successor_used: false,
    }))
}

pub fn event(event: TokenEvent) -> NewEvent {
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

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

// ---------------------------------------------------------------------------------------------
// One database on either backend, and one running service
// ---------------------------------------------------------------------------------------------

/// A fresh database on either backend; dropping it removes it.
pub enum TestDb {
    Sqlite(SqliteDb),
    Postgres(PgTestDb),
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(SqliteDb::new())
    }

    /// A fresh PostgreSQL database, or `None` after saying `test` was skipped.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let admin = pg_admin_url(test)?;
        Some(TestDb::Postgres(PgTestDb::new(&admin).await))
    }

    pub fn url(&self) -> DatabaseUrl {
        match self {
            TestDb::Sqlite(db) => db.url.clone(),
            TestDb::Postgres(db) => db.url.clone(),
        }
    }

    pub fn url_string(&self) -> String {
        match self {
            TestDb::Sqlite(db) => db.url_string(),
            TestDb::Postgres(db) => db.url_string.clone(),
        }
    }

    /// Make every later append fail, as if the database went away.
    pub async fn take_away(&self) {
        match self {
            TestDb::Sqlite(d) => {
                // An open SQLite file cannot be pulled from under its connections; make the
                // database itself refuse the write instead.
                let mut conn = sqlx::sqlite::SqliteConnection::connect(&d.url_string())
                    .await
                    .expect("connect");
                sqlx::raw_sql(
                    "CREATE TRIGGER storage_gone BEFORE INSERT ON events \
                     BEGIN SELECT RAISE(ABORT, 'storage gone'); END",
                )
                .execute(&mut conn)
                .await
                .expect("trigger");
            }
            TestDb::Postgres(d) => {
                let mut conn = PgConnection::connect(&d.admin).await.expect("connect");
                for sql in [
                    format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", d.name),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                        d.name
                    ),
                ] {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await
                        .expect("take the database away");
                }
            }
        }
    }
}

impl TestDb {
    /// Undo [`TestDb::take_away`] on PostgreSQL: connections are accepted again.
    pub async fn bring_back(&self) {
        if let TestDb::Postgres(d) = self {
            let mut conn = PgConnection::connect(&d.admin).await.expect("connect");
            let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", d.name);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("bring the database back");
        }
    }
}

/// Run `$body` with `$c` bound to a direct connection of either backend (same SQL on both).
#[macro_export]
macro_rules! with_conn {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            $crate::helpers::TestDb::Sqlite(d) => {
                let mut $c =
                    <sqlx::sqlite::SqliteConnection as sqlx::Connection>::connect(&d.url_string())
                        .await
                        .expect("connect to sqlite");
                $body
            }
            $crate::helpers::TestDb::Postgres(d) => {
                let mut $c = d.connect().await;
                $body
            }
        }
    };
}

/// `#[tokio::test]`s running each `async fn scenario(db: TestDb)` on SQLite and, when
/// `TEST_DATABASE_URL` is set, on PostgreSQL: `sqlite::scenario` and `postgres::scenario`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::helpers::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let test = concat!(module_path!(), "::", stringify!($scenario));
                    if let Some(db) = $crate::helpers::TestDb::postgres(test).await {
                        super::$scenario(db).await;
                    }
                }
            )*
        }
    };
}

/// The origin every spawned service signs its checkpoints for.
pub const TEST_ORIGIN: &str = "test.tokenledger.invalid/log";

/// 2026-09-21T13:46:40Z: where every spawned service's clock starts.
pub const START: i64 = 1_790_000_000_000_000;

/// Logs go nowhere unless `TEST_LOG` is set, then to the test's output.
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "debug".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// The real service on a free loopback port, on a manual clock, until dropped.
pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    /// The metrics listener's port, when `metrics_bind_addr` was set.
    pub metrics_port: Option<u16>,
    /// The one-time development sign-in link, when `sign_in_link` made one.
    pub sign_in_link: Option<String>,
    services: Services,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Holds the signing key file for as long as the service runs.
    _keys: tempfile::TempDir,
}

/// A service on `db` with every default (switches off, no sign-in).
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// A service on `db`, with `configure` adjusting the configuration first.
pub async fn spawn_app_with(db: &TestDb, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_app_on(db, None, configure).await
}

/// A service on `store` when given (already open on `db`, e.g. following a log kept
/// elsewhere), else on `db`.
pub async fn spawn_app_on(
    db: &TestDb,
    store: Option<Store>,
    configure: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    init_test_log();
    let mut config = ServeConfig::local(db.url());
    // Each service signs with a key of its own: a PostgreSQL log has no file to keep one
    // beside, and tests run side by side.
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("log.signing-key");
    tokenledger::signing::SigningKeys::init(&key_file, TEST_ORIGIN).expect("signing key");
    config.signing.key_file = Some(key_file);
    config.signing.origin = Some(TEST_ORIGIN.to_owned());
    configure(&mut config);
    let clock = ManualClock::new(Timestamp::from_micros(START));
    let app = Application::build_on(&config, Arc::new(clock.clone()), store)
        .await
        .expect("service starts");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let sign_in_link = app.sign_in_link();
    let services = app.services().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tokenledger::server::run_until(app, async {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock,
        metrics_port,
        sign_in_link,
        services,
        stop,
        served,
        _keys: keys,
    }
}

/// The guide's switches for the console: both on.
pub fn console_on() -> Switches {
    Switches {
        console_enabled: true,
        token_auth_enabled: true,
        ..Switches::default()
    }
}

impl TestApp {
    /// The application layer, as the service's own handlers call it.
    pub fn ledger(&self) -> &Ledger {
        self.services.ledger()
    }

    pub fn queries(&self) -> &Queries {
        self.services.queries()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Stop as SIGTERM would: finish in-flight requests, then what a clean stop does.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served
            .await
            .expect("the server task")
            .expect("the server stopped cleanly");
    }

    /// The application layer as the handlers see it.
    pub fn services(&self) -> &tokenledger::app::Services {
        &self.services
    }

    /// Signs checkpoints with this service's key.
    pub fn checkpointer(&self) -> &std::sync::Arc<tokenledger::app::checkpoints::Checkpointer> {
        self.services
            .checkpointer()
            .expect("a serving node has signing keys")
    }

    pub fn metrics(&self) -> &tokenledger::app::Metrics {
        self.services.metrics()
    }

    /// Console commands that ran.
    pub fn runs(&self) -> u64 {
        self.services
            .metrics()
            .console_runs
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn head(&self) -> u64 {
        self.queries().head().await.expect("head").position
    }

    pub async fn create(
        &self,
        name: &str,
        scopes: &[&str],
        expires_in: Option<Duration>,
    ) -> Minted {
        self.ledger()
            .create(CreateRequest {
                name: name.into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_in,
                actor: "test:admin".into(),
                allowed_ips: Vec::new(),
            })
            .await
            .expect("create")
    }

    pub async fn revoke(&self, id: Uuid) {
        self.ledger()
            .revoke(id, "test:admin", Some("checklist".into()))
            .await
            .expect("revoke");
    }

    pub async fn rotate(&self, id: Uuid, grace: Duration) -> Minted {
        self.ledger()
            .rotate(
                id,
                RotateRequest {
                    grace: Some(Grace::For(grace)),
                    actor: "test:admin".into(),
                    ..RotateRequest::default()
                },
            )
            .await
            .expect("rotate")
    }

    /// A token's current row.
    pub async fn token(&self, id: Uuid) -> TokenRow {
        self.ledger().token(id).await.expect("token")
    }

    /// The whole audit view, in log order, read a page at a time by cursor as a client would.
    pub async fn audit(&self) -> Vec<AuditView> {
        self.audit_of(None).await
    }

    /// Every audit row (of one token, when given), page by page.
    pub async fn audit_of(&self, token_id: Option<Uuid>) -> Vec<AuditView> {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .queries()
                .audit(&AuditQuery {
                    token_id,
                    after,
                    limit: Some(MAX_PAGE),
                    ..AuditQuery::default()
                })
                .await
                .expect("audit");
            rows.extend(page.events);
            match page.next {
                Some(Cursor::After(p)) => after = Some(p),
                Some(Cursor::Before(_)) => panic!("an oldest-first page continues after"),
                None => return rows,
            }
        }
    }

    /// Send a request; the answer must be JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value, HeaderMap) {
        let (status, text, headers) = self.send_text(method, path, headers, body).await;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer to {path} is not JSON ({status}): {text}"));
        (status, value, headers)
    }

    /// Send a request; any answer.
    pub async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, String, HeaderMap) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        (status, response.text().await.expect("body"), headers)
    }

    /// POST a JSON body, with `token` as the bearer credential when given.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(t) = token {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
        }
        let (status, value, _) = self
            .send(
                reqwest::Method::POST,
                path,
                headers,
                Some(body.to_string().into_bytes()),
            )
            .await;
        (status, value)
    }

    /// `POST /api/admin/console {"cmd": cmd, "args": {}}`.
    pub async fn console(&self, token: Option<&str>, cmd: &str) -> (StatusCode, Value) {
        self.post(
            "/api/admin/console",
            token,
            &json!({"cmd": cmd, "args": {}}),
        )
        .await
    }
}

/// The `error` of a JSON error answer.
pub fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}
