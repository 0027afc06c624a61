//! A canary scan, against the real stores and the real binary: every plaintext, hash and salt
//! of a session, in every encoding, must appear in no table row (outside the token hash column
//! and the openings), no CLI output (outside the one line that shows a new token), no log line
//! and no `Debug` output (Invariant 4).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sqlx::Connection as _;
use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;
use tokenledger::app::leaks::{Label, LeakReport, Reporter};
use tokenledger::app::{CreateRequest, Minted, RotateRequest, Services};
use tokenledger::clock::{Clock as _, ManualClock, SystemClock};
use tokenledger::config::TokenSettings;
use tokenledger::lifecycle::{Grace, UseAttempt, UseDecision};
use tokenledger::scope::Scope;
use tokenledger::store::{AuditFilter, Store};
use tokenledger::token::{TokenPrefix, hash_token};
use tokenledger_events::{DenyReason, Environment, EventLog, StoredEvent};
use uuid::Uuid;

use crate::helpers::{TestDb, stderr, stdout, tokenledger};
use crate::with_conn;

// ---------------------------------------------------------------------------------------------
// Canaries: no secret anywhere it must not be
// ---------------------------------------------------------------------------------------------

/// The side table of commitment openings (migrations 0001): the one place besides
/// `api_tokens.hash` where a token's hash is stored, and the only place salts are.
const OPENINGS: &str = "event_openings";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raw {
    Hash,
    Salt,
}

/// One secret in one encoding. `what` names it without revealing it.
struct Canary {
    what: String,
    needle: Vec<u8>,
    raw: Option<Raw>,
}

#[derive(Default)]
struct Canaries(Vec<Canary>);

fn encodings(bytes: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        ("base64", STANDARD.encode(bytes)),
        ("base64 without padding", STANDARD_NO_PAD.encode(bytes)),
        ("base64url", URL_SAFE.encode(bytes)),
        ("base64url without padding", URL_SAFE_NO_PAD.encode(bytes)),
    ]
}

impl Canaries {
    fn push(&mut self, what: String, needle: impl Into<Vec<u8>>, raw: Option<Raw>) {
        self.0.push(Canary {
            what,
            needle: needle.into(),
            raw,
        });
    }

    fn token(&mut self, label: &str, plaintext: &str) {
        self.push(format!("plaintext of {label}"), plaintext, None);
        // The part after `tl_test_`: a leak that dropped the prefix is still a leak.
        let body = plaintext.rsplit('_').next().expect("a token has a body");
        assert!(body.len() > 40, "token body of {label}");
        self.push(
            format!("secret part of the plaintext of {label}"),
            body,
            None,
        );
        let hash = hash_token(plaintext);
        self.push(
            format!("SHA-256 (raw bytes) of {label}"),
            hash.0,
            Some(Raw::Hash),
        );
        for (encoding, text) in encodings(&hash.0) {
            self.push(format!("SHA-256 ({encoding}) of {label}"), text, None);
        }
    }

    fn salt(&mut self, label: &str, salt: &[u8]) {
        self.push(
            format!("salt (raw bytes) of {label}"),
            salt,
            Some(Raw::Salt),
        );
        for (encoding, text) in encodings(salt) {
            self.push(format!("salt ({encoding}) of {label}"), text, None);
        }
    }

    fn found_in<'a>(&'a self, haystack: &'a [u8]) -> impl Iterator<Item = &'a Canary> + 'a {
        self.0.iter().filter(move |c| contains(haystack, &c.needle))
    }

    /// One message per canary found in `haystack`.
    fn scan(&self, place: &str, haystack: &[u8], leaks: &mut Vec<String>) {
        for c in self.found_in(haystack) {
            leaks.push(format!("{} found in {place}", c.what));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && needle.len() <= haystack.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// One table, every row, every column as bytes (text as UTF-8, blobs raw, NULL empty).
struct Table {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<Vec<u8>>>,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Every table and view of the database, found in its catalogue so a new one is scanned too.
async fn all_tables(db: &TestDb) -> Vec<Table> {
    let mut tables = Vec::new();
    match db {
        TestDb::Sqlite(d) => {
            let mut c = SqliteConnection::connect(&d.url_string())
                .await
                .expect("connect");
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name",
            )
            .fetch_all(&mut c)
            .await
            .expect("list tables");
            for name in names {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                        .bind(&name)
                        .fetch_all(&mut c)
                        .await
                        .expect("list columns");
                let select: Vec<String> = columns
                    .iter()
                    .map(|col| format!("CAST({} AS BLOB)", quoted(col)))
                    .collect();
                let sql = format!("SELECT {} FROM {}", select.join(", "), quoted(&name));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .expect("read table");
                let rows = rows
                    .iter()
                    .map(|row| {
                        (0..columns.len())
                            .map(|i| {
                                row.try_get_unchecked::<Option<Vec<u8>>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .collect();
                tables.push(Table {
                    name,
                    columns,
                    rows,
                });
            }
        }
        TestDb::Postgres(d) => {
            let mut c = d.connect().await;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type IN ('BASE TABLE', 'VIEW') \
                 ORDER BY 1",
            )
            .fetch_all(&mut c)
            .await
            .expect("list tables");
            for name in names {
                let columns: Vec<(String, String)> = sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                )
                .bind(&name)
                .fetch_all(&mut c)
                .await
                .expect("list columns");
                let select: Vec<String> = columns
                    .iter()
                    .map(|(col, ty)| match ty.as_str() {
                        "bytea" => quoted(col),
                        _ => format!("{}::text", quoted(col)),
                    })
                    .collect();
                let sql = format!("SELECT {} FROM {}", select.join(", "), quoted(&name));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .expect("read table");
                let rows = rows
                    .iter()
                    .map(|row| {
                        columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, ty))| match ty.as_str() {
                                "bytea" => row
                                    .try_get::<Option<Vec<u8>>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default(),
                                _ => row
                                    .try_get::<Option<String>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default()
                                    .into_bytes(),
                            })
                            .collect()
                    })
                    .collect();
                tables.push(Table {
                    name,
                    columns: columns.into_iter().map(|(c, _)| c).collect(),
                    rows,
                });
            }
        }
    }
    tables
}

/// Scan every cell of every table. A token's raw hash may sit only in `api_tokens.hash` and
/// `event_openings.value`, a raw salt only in `event_openings.salt`; anything else is a leak.
/// Returns the leaks and how many times each allowed place held its secret.
fn scan_tables(tables: &[Table], canaries: &Canaries) -> (Vec<String>, HashMap<String, usize>) {
    let mut leaks = Vec::new();
    let mut allowed_hits: HashMap<String, usize> = HashMap::new();
    for table in tables {
        for (r, row) in table.rows.iter().enumerate() {
            for (column, cell) in table.columns.iter().zip(row) {
                for c in canaries.found_in(cell) {
                    let allowed = matches!(
                        (table.name.as_str(), column.as_str(), c.raw),
                        ("api_tokens", "hash", Some(Raw::Hash))
                            | (OPENINGS, "value", Some(Raw::Hash))
                            | (OPENINGS, "salt", Some(Raw::Salt))
                    );
                    if allowed {
                        *allowed_hits
                            .entry(format!("{}.{column}", table.name))
                            .or_default() += 1;
                    } else {
                        leaks.push(format!(
                            "{} found in table {}, row {r}, column {column}",
                            c.what, table.name
                        ));
                    }
                }
            }
        }
    }
    (leaks, allowed_hits)
}

/// An in-memory log sink for a tracing subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("log buffer").clone()
    }
}

/// Run the real binary off the runtime's thread.
async fn cli(url: &str, args: &[&str]) -> Output {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokenledger(&url, &args)
    })
    .await
    .expect("join")
}

/// What the CLI printed, with each new token's plaintext taken out of the one place it
/// belongs, so everything left can be scanned.
#[derive(Default)]
struct Printed(Vec<(String, Vec<u8>)>);

impl Printed {
    /// A command that shows no secret: all of its output is scanned.
    fn plain(&mut self, command: &str, out: &Output) {
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        self.keep(command, out);
    }

    fn keep(&mut self, command: &str, out: &Output) {
        self.0
            .push((format!("stdout of `{command}`"), out.stdout.clone()));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
    }

    /// `token create`/`rotate` without `--json`: exactly one line is a token; it is dropped.
    /// Returns (id, plaintext).
    fn minted_text(&mut self, command: &str, out: &Output) -> (Uuid, String) {
        let text = stdout(out);
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        let prefix = TokenPrefix::default();
        let (tokens, rest): (Vec<&str>, Vec<&str>) = text
            .lines()
            .partition(|l| tokenledger::token::parse(l, &prefix).is_ok());
        assert_eq!(
            tokens.len(),
            1,
            "`{command}` prints its token on exactly one line of its own"
        );
        let id = rest
            .iter()
            .find_map(|l| {
                l.strip_prefix("created token ").or_else(|| {
                    l.strip_prefix("rotated token ")
                        .and_then(|r| r.split_once(" to "))
                        .map(|(_, id)| id)
                })
            })
            .and_then(|id| Uuid::parse_str(id.trim()).ok())
            .unwrap_or_else(|| panic!("`{command}` names the new token's id"));
        self.0.push((
            format!("stdout of `{command}` (minus the token line)"),
            rest.join("\n").into_bytes(),
        ));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
        (id, tokens[0].to_owned())
    }

    /// `token create`/`rotate --json`: the "token" field is dropped, the rest scanned.
    fn minted_json(&mut self, command: &str, out: &Output) -> (Uuid, String) {
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        let mut value: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("`{command}`: {e}"));
        let token = value
            .as_object_mut()
            .and_then(|o| o.remove("token"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("`{command}` prints a \"token\" field"));
        let id = value["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(|| panic!("`{command}` prints an \"id\""));
        for key in ["name", "scopes", "environment", "expires_at"] {
            assert!(value.get(key).is_some(), "`{command}` prints {key:?}");
        }
        self.0.push((
            format!("stdout of `{command}` (minus the \"token\" field)"),
            value.to_string().into_bytes(),
        ));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
        (id, token)
    }
}

/// The event at the head of the log: what the last append stored (a use's event, which the
/// ledger no longer hands back).
async fn last_event(store: &Store) -> StoredEvent {
    let head = store.head().await.expect("head").position;
    let mut events = store
        .read_from(head.saturating_sub(1), 1)
        .await
        .expect("read the head event");
    assert_eq!(events.len(), 1, "the log holds its head event");
    events.pop().expect("the head event")
}

/// A token this test made, and how.
struct Made {
    label: String,
    id: Uuid,
    plaintext: String,
}

/// Keep a minted token's plaintext as a canary, and its renderings for the scan.
fn remember(made: &mut Vec<Made>, rendered: &mut Vec<(String, String)>, label: &str, m: &Minted) {
    rendered.push((format!("Debug of the Minted of {label}"), format!("{m:?}")));
    rendered.push((
        format!("Debug of the TokenRow of {label}"),
        format!("{:?}", m.row),
    ));
    rendered.push((
        format!("Serialize of the TokenRow of {label}"),
        serde_json::to_string(&m.row).expect("serialize"),
    ));
    made.push(Made {
        label: label.to_owned(),
        id: m.row.id,
        plaintext: m.token.expose().to_owned(),
    });
}

async fn secrets_never_leak(db: TestDb) {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    // Thread-local, so parallel tests keep their own logging: this test runs on a
    // current-thread runtime, so the ledger and its writer task log here. sqlx-sqlite runs
    // statements on worker threads of its own, which this does not see; on PostgreSQL sqlx's
    // statement logs are captured too.
    let _logging = tracing::subscriber::set_default(subscriber);
    // With a single registered dispatcher, tracing-core computes a callsite's cached interest
    // from the default of whichever thread reaches it first: a callsite first reached by a
    // parallel test (no subscriber there) would be cached as "never" and its events lost here.
    // A second registered dispatcher makes it ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    let url = db.url_string();
    let clock = ManualClock::new(SystemClock.now());
    let services = Services::open(&db.url(), TokenSettings::default(), Arc::new(clock.clone()))
        .await
        .expect("open services");
    let ledger = services.ledger();
    // Webhooks of this session go to a loopback receiver; their bodies are scanned below.
    let receiver = crate::webhooks::Receiver::start().await;
    let hooks = tokenledger::app::webhooks::Webhooks::new(
        services.store().clone(),
        crate::webhooks::config_for(&receiver),
        Arc::new(clock.clone()),
        services.metrics().clone(),
    )
    .expect("webhooks");
    hooks.start().await.expect("the webhook subscriber starts");
    // The same log opened beside the application layer: its events and the audit rows.
    let store = Store::open(&db.url()).await.expect("open store");
    let mut made: Vec<Made> = Vec::new();
    // Debug, Display and Serialize renderings of values that pass near secrets.
    let mut rendered: Vec<(String, String)> = Vec::new();
    let create = |name: &str, scopes: &[&str]| CreateRequest {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_in: None,
        actor: "user:canary".into(),
        allowed_ips: Vec::new(),
    };
    let attempt = |scope: &str, env: Environment, ip: &str, path: &str| UseAttempt {
        required_any: vec![scope.parse::<Scope>().expect("a known scope")],
        server_environment: env,
        ip: Some(ip.into()),
        method: "POST".into(),
        path: path.into(),
        command: Some("db:health".into()),
        user_agent: Some("canary/1".into()),
    };

    // In process: create, use (allowed and denied), revoke, rotate.
    let console = ledger
        .create(create("ledger console", &["console:exec"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger console' (ledger create)",
        &console,
    );
    let revoked = ledger
        .create(create("ledger revoked", &["logs:read"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger revoked' (ledger create)",
        &revoked,
    );
    let rotated_now = ledger
        .create(create(
            "ledger rotated now",
            &["registry:read", "registry:write"],
        ))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger rotated now' (ledger create)",
        &rotated_now,
    );
    let rotated_later = ledger
        .create(create("ledger rotated later", &["tokens:verify"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger rotated later' (ledger create)",
        &rotated_later,
    );

    clock.advance(Duration::from_secs(90));
    let used_at = clock.now();
    let row = ledger.entry(console.row.id).expect("token");
    let mut decisions = Vec::new();
    for (scope, env) in [
        ("console:exec", Environment::Test),
        ("registry:write", Environment::Test),
        ("console:exec", Environment::Live),
    ] {
        let decision = ledger
            .record_use(
                &row,
                &attempt(scope, env, "198.51.100.23", "/api/admin/console"),
            )
            .await
            .expect("record use");
        let event = last_event(&store).await;
        rendered.push((
            "Debug of a use's decision and event".into(),
            format!("{decision:?} {event:?}"),
        ));
        decisions.push(decision);
    }
    assert!(
        matches!(decisions[0], UseDecision::Allowed(_)),
        "{:?}",
        decisions[0]
    );
    assert!(
        matches!(&decisions[1], UseDecision::Denied(d) if d.reason == DenyReason::InsufficientScope)
    );
    assert!(
        matches!(&decisions[2], UseDecision::Denied(d) if d.reason == DenyReason::EnvironmentMismatch)
    );
    // The last allowed use is the one the columns show.
    clock.advance(Duration::from_secs(30));

    ledger
        .revoke(
            revoked.row.id,
            "user:canary",
            Some("left in a CI log".into()),
        )
        .await
        .expect("revoke");
    let again = ledger
        .revoke(revoked.row.id, "user:canary", None)
        .await
        .expect_err("a second revoke is refused");
    rendered.push(("a refused revoke".into(), format!("{again} {again:?}")));
    let row = ledger.entry(revoked.row.id).expect("token");
    let decision = ledger
        .record_use(
            &row,
            &attempt("logs:read", Environment::Test, "192.0.2.1", "/v1/verify"),
        )
        .await
        .expect("record use");
    assert!(matches!(&decision, UseDecision::Denied(d) if d.reason == DenyReason::Revoked));

    let rotate = |grace: Option<Duration>| RotateRequest {
        name: None,
        scopes: None,
        expires_in: None,
        grace: grace.map(Grace::For),
        allowed_ips: None,
        actor: "user:canary".into(),
    };
    let successor = ledger
        .rotate(rotated_now.row.id, rotate(Some(Duration::ZERO)))
        .await
        .expect("rotate with no grace");
    remember(
        &mut made,
        &mut rendered,
        "the successor of 'ledger rotated now' (ledger rotate, grace 0)",
        &successor,
    );
    let refused = ledger
        .rotate(rotated_now.row.id, rotate(None))
        .await
        .expect_err("a revoked token cannot be rotated");
    rendered.push((
        "a refused rotation".into(),
        format!("{refused} {refused:?}"),
    ));
    let successor = ledger
        .rotate(rotated_later.row.id, rotate(None))
        .await
        .expect("rotate with the default grace");
    remember(
        &mut made,
        &mut rendered,
        "the successor of 'ledger rotated later' (ledger rotate)",
        &successor,
    );

    // The real binary: create (text and JSON), rotate (text and JSON), revoke.
    let mut printed = Printed::default();
    let cmd = "token create --name cli-json --scope registry:read --scope tokens:verify --json";
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_json, plaintext) = printed.minted_json(cmd, &out);
    made.push(Made {
        label: "token 'cli-json' (CLI create --json)".into(),
        id: cli_json,
        plaintext,
    });

    let cmd = "token create --name cli-text --scope admin --expires-in 30d";
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_text, plaintext) = printed.minted_text(cmd, &out);
    made.push(Made {
        label: "token 'cli-text' (CLI create)".into(),
        id: cli_text,
        plaintext,
    });

    let cmd = format!("token rotate {cli_text} --grace 0s");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_text_next, plaintext) = printed.minted_text(&cmd, &out);
    made.push(Made {
        label: "the successor of 'cli-text' (CLI rotate --grace 0s)".into(),
        id: cli_text_next,
        plaintext,
    });

    let cmd = format!("token rotate {cli_json} --json");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_json_next, plaintext) = printed.minted_json(&cmd, &out);
    made.push(Made {
        label: "the successor of 'cli-json' (CLI rotate --json)".into(),
        id: cli_json_next,
        plaintext,
    });

    let cmd = format!("token revoke {cli_json_next} --reason rotated-by-mistake");
    printed.plain(&cmd, &cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await);
    let cmd = format!("token revoke {cli_json_next}");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second revoke is refused: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    printed.keep(&cmd, &out);

    // In process again: uses of the tokens the CLI made. The ledger's token cache holds only
    // what it loaded at open and its own writes, so open the application layer again to see
    // what the CLI (another process) appended, as a node started now would.
    drop(services);
    let services = Services::open(&db.url(), TokenSettings::default(), Arc::new(clock.clone()))
        .await
        .expect("open services again");
    let ledger = services.ledger();
    for (id, scope, ip) in [
        (cli_json, "tokens:verify", "203.0.113.9"),
        (cli_text, "admin", "203.0.113.10"),
        (cli_json_next, "registry:read", "203.0.113.11"),
    ] {
        let row = ledger.entry(id).expect("token");
        // The compact entry the authentication path holds redacts its hash as rows do.
        rendered.push(("Debug of a cached TokenEntry".into(), format!("{row:?}")));
        let decision = ledger
            .record_use(&row, &attempt(scope, row.environment(), ip, "/v1/verify"))
            .await
            .expect("record use");
        let event = last_event(&store).await;
        rendered.push((
            "Debug of a use's decision and event".into(),
            format!("{decision:?} {event:?}"),
        ));
    }
    // Leak reports: a live token (which they revoke) and a revoked one, the first with its
    // plaintext pasted into where it was found. Neither reaches a table, an output or a log.
    let reports = vec![
        LeakReport {
            token: console.token.expose().to_owned(),
            url: Some(format!("https://gist.test/raw/{}", console.token.expose())),
            source: Some("gist_content".into()),
            token_type: Some("tokenledger_api_token".into()),
        },
        LeakReport {
            token: revoked.token.expose().to_owned(),
            url: Some("https://gist.test/2".into()),
            source: None,
            token_type: None,
        },
    ];
    let labels = ledger
        .report_leaks(&reports, &Reporter::Github)
        .await
        .expect("report leaks");
    assert_eq!(labels, [Label::TruePositive, Label::TruePositive]);
    rendered.push((
        "Debug of leak reports and their labels".into(),
        format!("{reports:?} {labels:?}"),
    ));
    for row in ledger.tokens().await.expect("tokens") {
        rendered.push(("Debug of a stored TokenRow".into(), format!("{row:?}")));
    }
    for row in store
        .audit(&AuditFilter::everything())
        .await
        .expect("audit")
        .rows
    {
        rendered.push(("Debug of an AuditRow".into(), format!("{row:?}")));
    }

    // Every read the CLI offers, after all of the above.
    let mut reads = vec![
        "token list".to_owned(),
        "token list --json".to_owned(),
        "audit".to_owned(),
        "audit --json".to_owned(),
        "verify".to_owned(),
    ];
    for m in &made {
        reads.push(format!("token show {}", m.id));
        reads.push(format!("token show {} --json", m.id));
        reads.push(format!("audit --token {} --json", m.id));
        reads.push(format!("token show {} --as-of position:3 --json", m.id));
        reads.push(format!("history {} --json", m.id));
        reads.push(format!("incident {}", m.id));
        reads.push(format!("incident {} --json", m.id));
    }
    reads.push("token list --as-of position:5 --json".to_owned());
    for cmd in &reads {
        printed.plain(cmd, &cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await);
    }

    // The canaries: every token and every salt, in every encoding.
    assert_eq!(made.len(), 10, "tokens made");
    let mut canaries = Canaries::default();
    for m in &made {
        canaries.token(&m.label, &m.plaintext);
    }
    let openings: Vec<(Vec<u8>, Vec<u8>)> = with_conn!(&db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT salt, value FROM {OPENINGS} ORDER BY position"
        )))
            .fetch_all(&mut c)
            .await
            .expect("read openings")
    });
    assert_eq!(openings.len(), made.len(), "one opening per token");
    for (i, (salt, value)) in openings.iter().enumerate() {
        assert_eq!(salt.len(), 32, "salt {i} is 32 bytes");
        assert!(
            made.iter()
                .any(|m| hash_token(&m.plaintext).0[..] == value[..]),
            "opening {i} holds the hash of a token this test made"
        );
        canaries.salt(&format!("opening {i}"), salt);
    }

    // Positive facts: api_tokens stores each hash in `hash`, and the last use in its columns.
    for m in &made {
        let (hash, last_at, last_ip, last_path): (
            Option<Vec<u8>>,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = with_conn!(&db, c => {
            sqlx::query_as(
                "SELECT hash, last_used_at, last_used_ip, last_used_path FROM api_tokens WHERE id = $1",
            )
            .bind(m.id)
            .fetch_one(&mut c)
            .await
            .expect("read api_tokens")
        });
        assert_eq!(
            hash.as_deref(),
            Some(&hash_token(&m.plaintext).0[..]),
            "api_tokens.hash of {} holds its SHA-256",
            m.label
        );
        if m.id == console.row.id {
            assert_eq!(
                last_at,
                Some(used_at.as_micros()),
                "last_used_at after a use"
            );
            assert_eq!(
                last_ip.as_deref(),
                Some("198.51.100.23"),
                "last_used_ip after a use"
            );
            assert_eq!(
                last_path.as_deref(),
                Some("/api/admin/console"),
                "last_used_path after a use"
            );
        }
        if m.id == revoked.row.id {
            assert_eq!(
                (last_at, last_ip, last_path),
                (None, None, None),
                "a denied use is not a use"
            );
        }
    }

    // Every webhook of the session: the revocations, and expiry warnings a day before the
    // tokens' expiry.
    let head = store.head().await.expect("head").position;
    let mut last = hooks.start().await.expect("checkpoint");
    while last < head {
        last = hooks
            .step(last, Duration::from_millis(10))
            .await
            .expect("subscriber step");
    }
    clock.advance(Duration::from_secs(89 * 86_400));
    assert!(hooks.enqueue_expiring().await.expect("expiry scan") > 0);
    while hooks.send_due().await.expect("send") > 0 {}
    let webhooks = receiver.received();
    for kind in ["token.revoked", "token.expiring"] {
        assert!(
            webhooks.iter().any(|w| w.event_type == kind),
            "a {kind} webhook was received, so its scan means something"
        );
    }

    // The scan. Tables first (live), then again after a rebuild through the CLI.
    let mut leaks = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        let place = format!("webhook {i} ({})", w.event_type);
        canaries.scan(&format!("{place} body"), w.body.as_bytes(), &mut leaks);
        canaries.scan(
            &format!("{place} headers"),
            format!("{} {}", w.key, w.signature).as_bytes(),
            &mut leaks,
        );
    }
    let tables = all_tables(&db).await;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for expected in ["api_tokens", OPENINGS, "audit_logs", "events", "log_head"] {
        assert!(
            names.contains(&expected),
            "table {expected} is scanned: {names:?}"
        );
    }
    let (found, allowed) = scan_tables(&tables, &canaries);
    leaks.extend(found);
    // The scan sees what is there: each hash where it belongs, each salt where it belongs.
    assert_eq!(
        allowed.get("api_tokens.hash"),
        Some(&made.len()),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.get(&format!("{OPENINGS}.value")),
        Some(&made.len()),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.get(&format!("{OPENINGS}.salt")),
        Some(&made.len()),
        "{allowed:?}"
    );

    printed.plain(
        "webhooks status --json",
        &cli(&url, &["webhooks", "status", "--json"]).await,
    );
    printed.plain(
        "projections rebuild",
        &cli(&url, &["projections", "rebuild"]).await,
    );
    let (found, allowed_after) = scan_tables(&all_tables(&db).await, &canaries);
    leaks.extend(found.into_iter().map(|l| format!("{l} (after a rebuild)")));
    assert_eq!(
        allowed_after, allowed,
        "a rebuild stores each secret where it did"
    );

    for (place, bytes) in &printed.0 {
        canaries.scan(place, bytes, &mut leaks);
    }
    for (place, text) in &rendered {
        canaries.scan(place, text.as_bytes(), &mut leaks);
    }
    let log = logs.contents();
    let log_text = String::from_utf8_lossy(&log);
    for needle in [
        "token created",
        "token revoked",
        "token rotated",
        "leaked token revoked",
    ] {
        assert!(
            log_text.contains(needle),
            "the captured log holds the ledger's lines (no {needle:?}), so its scan means something"
        );
    }
    for (n, line) in log.split(|b| *b == b'\n').enumerate() {
        canaries.scan(&format!("log line {}", n + 1), line, &mut leaks);
    }
    // Debug of what the ledger hands out, checked directly as well.
    assert!(!format!("{console:?}").contains(console.token.expose()));
    assert!(!format!("{console:?}").contains(&hex::encode(console.token.hash().0)));
    assert!(!format!("{:?}", console.row).contains(&hex::encode(console.token.hash().0)));

    let mut report = String::new();
    for leak in leaks.iter().take(40) {
        let _ = writeln!(report, "  {leak}");
    }
    assert!(
        leaks.is_empty(),
        "{} secret(s) leaked (of {} canaries over {} tables, {} outputs, {} renderings and {} log bytes):\n{report}",
        leaks.len(),
        canaries.0.len(),
        tables.len(),
        printed.0.len(),
        rendered.len(),
        log.len()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_sqlite() {
    secrets_never_leak(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_postgres() {
    let Some(db) = TestDb::postgres(
        "no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_postgres",
    )
    .await
    else {
        return;
    };
    secrets_never_leak(db).await;
}
