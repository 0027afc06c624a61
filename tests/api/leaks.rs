//! Leaked-token reports over real HTTP, on both backends: GitHub's secret scanning partner
//! protocol (`POST /v1/leaks/github`, signed with a P-256 key the test makes and serves over
//! loopback in GitHub's `public_keys` format) and the generic `POST /v1/leaks`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokenledger::app::leaks::{KeySource, REFETCH_EVERY};
use tokenledger::session::DevKey;
use tokenledger::token::{Environment, TokenPrefix};
use tokenledger_events::{EventLog as _, StoredEvent, TokenEvent};
use tokenledger_projections::AuditAction;

use crate::helpers::{TestApp, TestDb, error_of, spawn_app_with, tokenledger};
use crate::properties::{fold_log, projections};

// ----- GitHub's side: a key, its public_keys document served over loopback, signatures -----

pub(crate) fn new_key() -> SigningKey {
    SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
}

/// GitHub's `public_keys` document for `keys` (the first is current).
pub(crate) fn public_keys(keys: &[(&str, &SigningKey)]) -> String {
    let list: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, (id, key))| {
            json!({
                "key_identifier": id,
                "key": key.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem"),
                "is_current": i == 0,
            })
        })
        .collect();
    json!({ "public_keys": list }).to_string()
}

/// `Github-Public-Key-Signature` for `body`: base64 of the ASN.1 DER signature.
pub(crate) fn sign(key: &SigningKey, body: &[u8]) -> String {
    let signature: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// A loopback server answering GitHub's key document, counting how often it is fetched.
struct KeyServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(document: String) -> KeyServer {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/meta/public_keys/secret_scanning",
            axum::routing::get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().expect("document").clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeyServer {
            url: format!("http://127.0.0.1:{port}/meta/public_keys/secret_scanning"),
            document,
            fetches,
        }
    }

    fn serve(&self, document: String) {
        *self.document.lock().expect("document") = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A service that takes GitHub's reports, checked against keys at `source`.
async fn leak_app(db: &TestDb, source: KeySource) -> TestApp {
    spawn_app_with(db, |c| {
        c.github_secret_scanning_keys = Some(source);
        c.tokens.denial_window = Duration::ZERO;
    })
    .await
}

/// POST a report to `/v1/leaks/github` with the given signature headers.
pub(crate) async fn post_github(
    app: &TestApp,
    body: &[u8],
    key_id: Option<&str>,
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(id) = key_id {
        headers.insert(
            "github-public-key-identifier",
            HeaderValue::from_str(id).expect("header"),
        );
    }
    if let Some(sig) = signature {
        headers.insert(
            "github-public-key-signature",
            HeaderValue::from_str(sig).expect("header"),
        );
    }
    let (status, text, _) = app
        .send_text(
            reqwest::Method::POST,
            "/v1/leaks/github",
            headers,
            Some(body.to_vec()),
        )
        .await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The events appended after `after`.
async fn events_after(app: &TestApp, after: u64) -> Vec<(StoredEvent, TokenEvent)> {
    app.services()
        .store()
        .read_from(after, 10_000)
        .await
        .expect("read")
        .into_iter()
        .map(|e| {
            let d = e.decode().expect("decode");
            (e, d)
        })
        .collect()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A string of our token's shape whose checksum fails: its last character changed.
fn look_alike(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.last_mut().expect("non-empty");
    *last = if *last == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// `POST /v1/verify` with `token` as the caller: the answer's status and error.
async fn use_token(app: &TestApp, token: &str) -> (StatusCode, String) {
    let (status, body) = app
        .post("/v1/verify", Some(token), &json!({"token": token}))
        .await;
    (status, error_of(&body).to_owned())
}

/// How many rows of the `audit_logs` SQL view are leak reports (the view migration 0009 made).
async fn audit_view_leak_rows(db: &TestDb) -> i64 {
    use sqlx::Connection as _;
    const SQL: &str = "SELECT COUNT(*) FROM audit_logs WHERE action = 'API_TOKEN_LEAK_REPORTED'";
    match db {
        TestDb::Sqlite(d) => {
            let mut conn = sqlx::sqlite::SqliteConnection::connect(&d.url_string())
                .await
                .expect("connect");
            sqlx::query_scalar(SQL)
                .fetch_one(&mut conn)
                .await
                .expect("view")
        }
        TestDb::Postgres(d) => {
            let mut conn = d.connect().await;
            sqlx::query_scalar(SQL)
                .fetch_one(&mut conn)
                .await
                .expect("view")
        }
    }
}

/// The log verifies whole, and the projections rebuilt from position 0 equal the live ones
/// and a fold of the log.
async fn log_verifies_and_rebuilds(app: &TestApp, db: &TestDb) {
    let out = tokenledger(&db.url_string(), &["verify"]);
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = app.services().store();
    let head = app.head().await;
    let live = projections(store).await.expect("live projections");
    let (tokens, audit, _) = fold_log(store, head).await.expect("fold");
    assert_eq!(live.tokens, tokens, "api_tokens equal a fold of the log");
    assert_eq!(live.audit, audit, "audit rows equal a fold of the log");
    store.rebuild_projections().await.expect("rebuild");
    let rebuilt = projections(store).await.expect("rebuilt projections");
    assert!(
        rebuilt == live,
        "projections after rebuild equal the live ones"
    );
}

// ----- GitHub: the round trip -----

async fn github_round_trip(db: TestDb) {
    let key = new_key();
    let server = KeyServer::start(public_keys(&[("k1", &key)])).await;
    let app = leak_app(&db, KeySource::Url(server.url.clone())).await;

    let live = app.create("ci deploy", &["tokens:verify"], None).await;
    let revoked = app.create("old deploy", &["tokens:verify"], None).await;
    app.revoke(revoked.row.id).await;
    let fake = look_alike(live.token.expose());
    let unknown = tokenledger::token::mint(&TokenPrefix::default(), Environment::Test)
        .expect("mint")
        .expose()
        .to_owned();
    assert_eq!(use_token(&app, live.token.expose()).await.0, StatusCode::OK);

    let url1 = "https://github.com/octo/app/blob/1a2b/.env";
    let url2 = "https://github.com/octo/app/issues/7#issuecomment-1";
    let body = json!([
        {"token": live.token.expose(), "type": "tokenledger_api_token", "url": url1, "source": "content"},
        {"token": live.token.expose(), "type": "tokenledger_api_token", "url": url2, "source": "issue_comment"},
        {"token": revoked.token.expose(), "type": "tokenledger_api_token", "url": url1, "source": "commit"},
        {"token": fake, "type": "tokenledger_api_token", "url": url1, "source": "content"},
        {"token": unknown, "type": "tokenledger_api_token", "url": "", "source": "gist_content"},
    ])
    .to_string();
    let head = app.head().await;
    let appends = app.ledger().appends();

    let (status, feedback) = post_github(
        &app,
        body.as_bytes(),
        Some("k1"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    println!("POST /v1/leaks/github\n  request:  {body}\n  response: {status} {feedback}");
    assert_eq!(status, StatusCode::OK, "{feedback}");
    let label = |t: &str, l: &str| json!({"token_hash": sha256_hex(t), "token_type": "tokenledger_api_token", "label": l});
    assert_eq!(
        feedback,
        json!([
            label(live.token.expose(), "true_positive"),
            label(live.token.expose(), "true_positive"),
            label(revoked.token.expose(), "true_positive"),
            label(&fake, "false_positive"),
            label(&unknown, "false_positive"),
        ])
    );
    let answer = feedback.to_string();
    for plaintext in [live.token.expose(), revoked.token.expose(), &fake, &unknown] {
        assert!(
            !answer.contains(plaintext),
            "the feedback holds no plaintext"
        );
    }

    // The live token is revoked at once, by GitHub, in the one append that kept its reports.
    assert_eq!(
        use_token(&app, live.token.expose()).await,
        (
            StatusCode::UNAUTHORIZED,
            "Token has been revoked".to_owned()
        )
    );
    assert_eq!(
        app.ledger().appends(),
        appends + 2,
        "the report's append and the refused use's"
    );
    let events = events_after(&app, head).await;
    let report: Vec<&(StoredEvent, TokenEvent)> = events
        .iter()
        .filter(|(_, d)| !matches!(d, TokenEvent::UseDenied(_)))
        .collect();
    assert_eq!(report.len(), 4, "{events:#?}");
    let on = |id| {
        report
            .iter()
            .filter(move |(e, _)| e.stream_id.token_id() == Some(id))
            .collect::<Vec<_>>()
    };
    let live_events = on(live.row.id);
    assert_eq!(live_events.len(), 3);
    for (i, url) in [url1, url2].into_iter().enumerate() {
        let (e, d) = live_events[i];
        let TokenEvent::LeakReported(l) = d else {
            panic!("a leak report first: {d:?}")
        };
        assert_eq!(l.url.as_deref(), Some(url));
        assert_eq!(l.token_type.as_deref(), Some("tokenledger_api_token"));
        assert_eq!(l.reporter, "github");
        assert_eq!(e.actor, "leak:github");
    }
    let (e, d) = live_events[2];
    let TokenEvent::Revoked(r) = d else {
        panic!("then the revocation: {d:?}")
    };
    assert_eq!(r.reason.as_deref(), Some("leaked"));
    assert_eq!(r.actor, "leak:github");
    assert_eq!(e.actor, "leak:github");
    // One append: consecutive positions, one instant.
    assert_eq!(live_events[2].0.position, live_events[0].0.position + 2);
    assert!(
        live_events
            .iter()
            .all(|(e, _)| e.recorded_at == live_events[0].0.recorded_at)
    );
    // The token already revoked gets the report alone; look-alikes and unknown tokens nothing.
    let revoked_events = on(revoked.row.id);
    assert_eq!(revoked_events.len(), 1);
    assert!(matches!(
        &revoked_events[0].1,
        TokenEvent::LeakReported(l) if l.source.as_deref() == Some("commit")
    ));
    let row = app.token(live.row.id).await;
    assert_eq!(row.revoked_by.as_deref(), Some("leak:github"));
    assert_eq!(row.revoke_reason.as_deref(), Some("leaked"));

    // The audit view names the reports, in the service and in the SQL view.
    let audit = app.audit_of(Some(live.row.id)).await;
    let leaks: Vec<_> = audit
        .iter()
        .filter(|r| r.action == AuditAction::LeakReported.as_str())
        .collect();
    assert_eq!(leaks.len(), 2, "{audit:#?}");
    assert_eq!(leaks[0].details["url"], url1);
    assert_eq!(leaks[0].details["reporter"], "github");
    assert_eq!(audit_view_leak_rows(&db).await, 3);

    // A report of nothing of ours appends nothing.
    let head = app.head().await;
    let body = json!([{"token": look_alike(revoked.token.expose()), "type": "t", "url": url1, "source": "content"}]).to_string();
    let (status, feedback) = post_github(
        &app,
        body.as_bytes(),
        Some("k1"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feedback[0]["label"], "false_positive");
    assert_eq!(app.head().await, head, "a look-alike causes no append");
    assert_eq!(server.fetches(), 1, "the keys were fetched once and cached");

    log_verifies_and_rebuilds(&app, &db).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_reports_revoke_live_tokens_and_label_every_match_on_sqlite() {
    github_round_trip(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_reports_revoke_live_tokens_and_label_every_match_on_postgres() {
    let Some(db) =
        TestDb::postgres("github_reports_revoke_live_tokens_and_label_every_match_on_postgres")
            .await
    else {
        return;
    };
    github_round_trip(db).await;
}

// ----- GitHub: what is refused -----

async fn github_refusals(db: TestDb) {
    let key = new_key();
    let stranger = new_key();
    let server = KeyServer::start(public_keys(&[("k1", &key)])).await;
    let app = leak_app(&db, KeySource::Url(server.url.clone())).await;
    let live = app.create("ci", &["tokens:verify"], None).await;
    let body = json!([{"token": live.token.expose(), "type": "t", "url": "https://x.test/a", "source": "content"}]).to_string();
    let body = body.as_bytes();
    let good = sign(&key, body);
    let head = app.head().await;

    let mut other = body.to_vec();
    other.push(b' ');
    /// What is sent (identifier, signature, body) and the error it must get.
    type Refused<'a> = (&'a str, Option<&'a str>, Option<String>, &'a [u8], &'a str);
    let refused: Vec<Refused<'_>> = vec![
        (
            "no headers",
            None,
            None,
            body,
            "Missing Github-Public-Key-Identifier header",
        ),
        (
            "no signature",
            Some("k1"),
            None,
            body,
            "Missing Github-Public-Key-Signature header",
        ),
        (
            "no identifier",
            None,
            Some(good.clone()),
            body,
            "Missing Github-Public-Key-Identifier header",
        ),
        (
            "not base64",
            Some("k1"),
            Some("%%%".into()),
            body,
            "Github-Public-Key-Signature is not a signature",
        ),
        (
            "not DER",
            Some("k1"),
            Some("AAAA".into()),
            body,
            "Github-Public-Key-Signature is not a signature",
        ),
        (
            "unknown key",
            Some("k9"),
            Some(good.clone()),
            body,
            "Github-Public-Key-Identifier names no key",
        ),
        (
            "another key",
            Some("k1"),
            Some(sign(&stranger, body)),
            body,
            "does not verify",
        ),
        (
            "another body",
            Some("k1"),
            Some(good.clone()),
            &other,
            "does not verify",
        ),
    ];
    for (what, id, sig, sent, message) in refused {
        let (status, answer) = post_github(&app, sent, id, sig.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
        let error = error_of(&answer);
        assert!(
            error.starts_with(message) || error.contains(message),
            "{what}: {error}"
        );
        assert!(!answer.to_string().contains(live.token.expose()), "{what}");
    }
    assert_eq!(
        app.head().await,
        head,
        "nothing appended for a refused report"
    );
    assert_eq!(use_token(&app, live.token.expose()).await.0, StatusCode::OK);

    // Over 1 MiB: 413, before any signature check.
    let big = format!("[{}]", " ".repeat(1024 * 1024 + 1));
    let (status, answer) = post_github(
        &app,
        big.as_bytes(),
        Some("k1"),
        Some(&sign(&key, big.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(
        error_of(&answer),
        "Request body is larger than the limit of 1048576 bytes"
    );
    // Just under it is read (a body larger than the service's 64 KiB default).
    let padded = format!("[{}]", " ".repeat(100 * 1024));
    let (status, answer) = post_github(
        &app,
        padded.as_bytes(),
        Some("k1"),
        Some(&sign(&key, padded.as_bytes())),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!([])));

    // Signed but not JSON, or not matches: 400, naming what is accepted, echoing nothing.
    let head = app.head().await;
    let secret = live.token.expose();
    let bad_bodies = [
        (
            format!("[{{\"token\": \"{secret}\""),
            "Invalid JSON at line 1 column",
        ),
        (
            format!("{{\"token\": \"{secret}\"}}"),
            "Body must be a JSON array of {\"token\", \"type\", \"url\", \"source\"} objects",
        ),
        (
            format!("[{{\"token\": 5, \"url\": \"{secret}\"}}]"),
            "\"[0].token\" must be a string",
        ),
        (
            format!("[{{\"url\": \"{secret}\"}}]"),
            "Missing \"[0].token\"",
        ),
    ];
    for (bad, message) in bad_bodies {
        let (status, answer) = post_github(
            &app,
            bad.as_bytes(),
            Some("k1"),
            Some(&sign(&key, bad.as_bytes())),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(error_of(&answer).starts_with(message), "{bad}: {answer}");
        assert!(!answer.to_string().contains(secret), "{bad}: {answer}");
    }
    let many: Vec<Value> = (0..1001).map(|_| json!({"token": "x"})).collect();
    let many = Value::from(many).to_string();
    let (status, answer) = post_github(
        &app,
        many.as_bytes(),
        Some("k1"),
        Some(&sign(&key, many.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&answer).starts_with("At most 1000 reports per request"),
        "{answer}"
    );
    assert_eq!(
        app.head().await,
        head,
        "nothing appended for a refused body"
    );
    assert_eq!(use_token(&app, live.token.expose()).await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_sizes_and_bodies_are_refused_and_nothing_is_revoked_on_sqlite() {
    github_refusals(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_sizes_and_bodies_are_refused_and_nothing_is_revoked_on_postgres() {
    let Some(db) = TestDb::postgres(
        "bad_signatures_sizes_and_bodies_are_refused_and_nothing_is_revoked_on_postgres",
    )
    .await
    else {
        return;
    };
    github_refusals(db).await;
}

async fn refetch_throttle(db: TestDb) {
    let k1 = new_key();
    let k2 = new_key();
    let server = KeyServer::start(public_keys(&[("k1", &k1)])).await;
    let app = leak_app(&db, KeySource::Url(server.url.clone())).await;
    let empty = b"[]";
    let send = |id: &'static str, key: &SigningKey| {
        let sig = sign(key, empty);
        let app = &app;
        async move { post_github(app, empty, Some(id), Some(&sig)).await.0 }
    };
    assert_eq!(
        server.fetches(),
        0,
        "nothing is fetched before the first report"
    );
    assert_eq!(send("k1", &k1).await, StatusCode::OK);
    assert_eq!(server.fetches(), 1);
    assert_eq!(send("k1", &k1).await, StatusCode::OK);
    assert_eq!(server.fetches(), 1, "a known key is served from memory");

    // GitHub rotates: k2 is published. Within 10 s of the last fetch an unknown id does not
    // refetch; after that, it does, once.
    server.serve(public_keys(&[("k2", &k2), ("k1", &k1)]));
    assert_eq!(send("k2", &k2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.fetches(),
        1,
        "no refetch within 10 s of the first fetch"
    );
    app.clock.advance(REFETCH_EVERY);
    assert_eq!(send("k2", &k2).await, StatusCode::OK);
    assert_eq!(server.fetches(), 2, "an unknown id 10 s on refetches");
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(send("k3", &k2).await, StatusCode::UNAUTHORIZED);
    app.clock.advance(Duration::from_secs(5));
    assert_eq!(send("k4", &k2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.fetches(),
        2,
        "a second unknown id within 10 s does not refetch"
    );
    app.clock.advance(Duration::from_secs(4));
    assert_eq!(send("k3", &k2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.fetches(), 3, "10 s after the last fetch, one more");
    assert_eq!(
        app.services().github_keys().expect("configured").fetches(),
        3
    );
    // A key source that fails leaves the cached keys in use.
    server.serve("not json".into());
    app.clock.advance(REFETCH_EVERY);
    assert_eq!(send("k5", &k2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("k1", &k1).await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_refetches_at_most_once_per_10_seconds_on_sqlite() {
    refetch_throttle(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_refetches_at_most_once_per_10_seconds_on_postgres() {
    let Some(db) =
        TestDb::postgres("an_unknown_key_refetches_at_most_once_per_10_seconds_on_postgres").await
    else {
        return;
    };
    refetch_throttle(db).await;
}

async fn key_file(db: TestDb) {
    let key = new_key();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("secret_scanning.json");
    std::fs::write(&path, public_keys(&[("file-key", &key)])).expect("write keys");
    let app = leak_app(&db, KeySource::File(path.clone())).await;
    let live = app.create("ci", &["tokens:verify"], None).await;
    let body = json!([{"token": live.token.expose(), "type": "t", "url": "https://x.test/f", "source": "content"}]).to_string();
    let (status, feedback) = post_github(
        &app,
        body.as_bytes(),
        Some("file-key"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    assert_eq!(feedback[0]["label"], "true_positive");
    assert_eq!(
        use_token(&app, live.token.expose()).await.1,
        "Token has been revoked"
    );
    // A file that cannot be read, with no key cached: 503, nothing recorded.
    let dir2 = tempfile::tempdir().expect("dir");
    let missing = leak_app(&db, KeySource::File(dir2.path().join("absent.json"))).await;
    let head = missing.head().await;
    let (status, answer) = post_github(
        &missing,
        body.as_bytes(),
        Some("file-key"),
        Some(&sign(&key, body.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(
        error_of(&answer),
        "GitHub's secret scanning keys could not be fetched; try again"
    );
    assert_eq!(missing.head().await, head);
    missing.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_verify_against_a_key_file_on_sqlite() {
    key_file(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_verify_against_a_key_file_on_postgres() {
    let Some(db) = TestDb::postgres("reports_verify_against_a_key_file_on_postgres").await else {
        return;
    };
    key_file(db).await;
}

// ----- the generic endpoint -----

pub(crate) async fn post_reports(
    app: &TestApp,
    credential: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(c) = credential {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {c}")).expect("header"),
        );
    }
    let (status, text, headers) = app
        .send_text(
            reqwest::Method::POST,
            "/v1/leaks",
            headers,
            Some(body.to_vec()),
        )
        .await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, headers)
}

async fn generic_reports(db: TestDb) {
    let app = spawn_app_with(&db, |c| c.tokens.denial_window = Duration::ZERO).await;
    let scanner = app.create("scanner", &["leaks:report"], None).await;
    let narrow = app.create("narrow", &["tokens:verify"], None).await;
    let victim = app.create("victim", &["tokens:verify"], None).await;
    let unknown = tokenledger::token::mint(&TokenPrefix::default(), Environment::Test)
        .expect("mint")
        .expose()
        .to_owned();

    // Without the scope: 403, nothing reported.
    let body =
        json!([{"token": victim.token.expose(), "location": "https://paste.test/1"}]).to_string();
    let head = app.head().await;
    let (status, answer, _) =
        post_reports(&app, Some(narrow.token.expose()), body.as_bytes()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(error_of(&answer), "Missing required scope: leaks:report");
    assert_eq!(
        use_token(&app, victim.token.expose()).await.0,
        StatusCode::OK
    );
    assert!(app.head().await > head);

    // The same answer whatever the tokens were: a live one, and an unknown one.
    let (status, answer, _) =
        post_reports(&app, Some(scanner.token.expose()), body.as_bytes()).await;
    assert_eq!(
        (status, &answer),
        (StatusCode::ACCEPTED, &json!({"status": "accepted"}))
    );
    let nothing =
        json!([{"token": unknown, "location": "https://paste.test/2"}, {"token": "tl_test_short"}])
            .to_string();
    let head = app.head().await;
    let (status, answer2, _) =
        post_reports(&app, Some(scanner.token.expose()), nothing.as_bytes()).await;
    assert_eq!((status, &answer2), (StatusCode::ACCEPTED, &answer));
    let after = events_after(&app, head).await;
    assert!(
        after.iter().all(|(_, d)| matches!(d, TokenEvent::Used(_))),
        "unknown tokens record only the reporter's use: {after:#?}"
    );

    assert_eq!(
        use_token(&app, victim.token.expose()).await,
        (
            StatusCode::UNAUTHORIZED,
            "Token has been revoked".to_owned()
        )
    );
    let row = app.token(victim.row.id).await;
    let actor = format!("leak:token:{}", scanner.row.id);
    assert_eq!(row.revoked_by.as_deref(), Some(actor.as_str()));
    assert_eq!(row.revoke_reason.as_deref(), Some("leaked"));
    let audit = app.audit_of(Some(victim.row.id)).await;
    let leak = audit
        .iter()
        .find(|r| r.action == "API_TOKEN_LEAK_REPORTED")
        .expect("the report is audited");
    assert_eq!(leak.actor, actor);
    assert_eq!(leak.details["url"], "https://paste.test/1");
    assert_eq!(
        leak.details["reporter"],
        format!("token:{}", scanner.row.id)
    );
    // The reporter's own use was recorded.
    assert!(app.token(scanner.row.id).await.use_count >= 2);

    // An expired token gets the report alone: it is kept, nothing is revoked.
    let expiring = app
        .create(
            "expiring",
            &["tokens:verify"],
            Some(Duration::from_secs(60)),
        )
        .await;
    app.clock.advance(Duration::from_secs(120));
    let head = app.head().await;
    let report = json!([{"token": expiring.token.expose(), "location": "a CI log"}]).to_string();
    let (status, _, _) = post_reports(&app, Some(scanner.token.expose()), report.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events: Vec<TokenEvent> = events_after(&app, head)
        .await
        .into_iter()
        .filter(|(e, _)| e.stream_id.token_id() == Some(expiring.row.id))
        .map(|(_, d)| d)
        .collect();
    assert!(
        matches!(events.as_slice(), [TokenEvent::LeakReported(l)] if l.url.as_deref() == Some("a CI log")),
        "{events:#?}"
    );
    assert_eq!(app.token(expiring.row.id).await.revoked_at, None);

    // Bad input: named, never echoed, nothing revoked.
    let other = app.create("other", &["tokens:verify"], None).await;
    let secret = other.token.expose();
    let bad: Vec<(String, StatusCode, &str)> = vec![
        (
            format!("[{{\"token\": \"{secret}\", \"location\": \"a\\u001b[2Jb\"}}]"),
            StatusCode::BAD_REQUEST,
            "[0]: \"location\" must not contain control or invisible characters",
        ),
        (
            format!(
                "[{{\"token\": \"{secret}\", \"location\": \"{}\"}}]",
                "x".repeat(2049)
            ),
            StatusCode::BAD_REQUEST,
            "[0]: \"location\" must be at most 2048 characters, got 2049",
        ),
        (
            format!("[{{\"token\": \"{secret}\", \"location\": \"see {secret}\"}}]"),
            StatusCode::BAD_REQUEST,
            "[0]: \"location\" must not contain an API token",
        ),
        (
            format!("[{{\"token\": \"{secret}\", \"where\": 1}}]"),
            StatusCode::BAD_REQUEST,
            "Unknown field \"where\" in \"[0]\"; accepted: token or location",
        ),
        (
            format!("[{{\"token\": \"{secret}\""),
            StatusCode::BAD_REQUEST,
            "Invalid JSON at line 1 column",
        ),
        (
            format!("{{\"token\": \"{secret}\"}}"),
            StatusCode::BAD_REQUEST,
            "Body must be a JSON array of {\"token\", \"location\"} objects",
        ),
        (
            format!("[{}]", " ".repeat(1024 * 1024 + 1)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body is larger than the limit of 1048576 bytes",
        ),
    ];
    for (body, status, message) in bad {
        let (got, answer, _) =
            post_reports(&app, Some(scanner.token.expose()), body.as_bytes()).await;
        assert_eq!(got, status, "{answer}");
        assert!(error_of(&answer).starts_with(message), "{answer}");
        assert!(!answer.to_string().contains(secret), "{answer}");
    }
    assert_eq!(
        use_token(&app, secret).await.0,
        StatusCode::OK,
        "nothing revoked"
    );

    // Past its budget a caller gets 429 with Retry-After (10 calls a minute).
    let mut limited = None;
    for _ in 0..11 {
        let (status, answer, headers) =
            post_reports(&app, Some(scanner.token.expose()), b"[]").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((answer, headers));
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let (answer, headers) = limited.expect("the budget runs out within 11 calls");
    assert!(
        error_of(&answer).starts_with("Too many leak reports from this caller; retry after"),
        "{answer}"
    );
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another caller has its own budget.
    let second = app.create("scanner 2", &["leaks:report"], None).await;
    assert_eq!(
        post_reports(&app, Some(second.token.expose()), b"[]")
            .await
            .0,
        StatusCode::ACCEPTED
    );

    log_verifies_and_rebuilds(&app, &db).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_endpoint_revokes_for_a_leaks_report_token_on_sqlite() {
    generic_reports(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_endpoint_revokes_for_a_leaks_report_token_on_postgres() {
    let Some(db) =
        TestDb::postgres("the_generic_endpoint_revokes_for_a_leaks_report_token_on_postgres").await
    else {
        return;
    };
    generic_reports(db).await;
}

/// An admin's session reports too (development sessions, signed by the key beside the
/// SQLite file; a PostgreSQL log keeps that key in the working directory, shared by tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_session_reports_leaks_and_is_the_recorded_reporter() {
    let db = TestDb::sqlite();
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let app = spawn_app_with(&db, |_| {}).await;
    let victim = app.create("victim", &["tokens:verify"], None).await;
    let body = json!([{"token": victim.token.expose(), "location": "slack #ops"}]).to_string();
    let user = key.sign("bob", false, app.now()).expect("sign");
    let (status, answer, _) = post_reports(&app, Some(&user), body.as_bytes()).await;
    assert_eq!(
        (status, error_of(&answer)),
        (StatusCode::FORBIDDEN, "Admin role required")
    );
    let (status, _, _) = post_reports(&app, None, body.as_bytes()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let admin = key.sign("alice", true, app.now()).expect("sign");
    let (status, answer, _) = post_reports(&app, Some(&admin), body.as_bytes()).await;
    assert_eq!(
        (status, answer),
        (StatusCode::ACCEPTED, json!({"status": "accepted"}))
    );
    let row = app.token(victim.row.id).await;
    assert_eq!(row.revoked_by.as_deref(), Some("leak:user:alice"));
    assert_eq!(
        use_token(&app, victim.token.expose()).await.1,
        "Token has been revoked"
    );
    // A second report of the now revoked token keeps the place, and revokes nothing again.
    let again = json!([{"token": victim.token.expose(), "location": "a gist"}]).to_string();
    let head = app.head().await;
    assert_eq!(
        post_reports(&app, Some(&admin), again.as_bytes()).await.0,
        StatusCode::ACCEPTED
    );
    let events = events_after(&app, head).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(
        matches!(&events[0].1, TokenEvent::LeakReported(l) if l.url.as_deref() == Some("a gist") && l.reporter == "user:alice")
    );
    log_verifies_and_rebuilds(&app, &db).await;
    app.stop().await;
}

async fn signature_guessing(db: TestDb) {
    let key = new_key();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("secret_scanning.json");
    std::fs::write(&path, public_keys(&[("k1", &key)])).expect("write keys");
    let app = spawn_app_with(&db, |c| {
        c.github_secret_scanning_keys = Some(KeySource::File(path));
        c.auth_failures_per_minute = 3;
    })
    .await;
    let body = b"[]";
    let forged = sign(&new_key(), body);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(post_github(&app, body, Some("k1"), Some(&forged)).await.0);
    }
    assert_eq!(
        answers,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Blocked, the address is not even checked: a good signature waits too.
    let (status, answer) = post_github(&app, body, Some("k1"), Some(&sign(&key, body))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        error_of(&answer).starts_with("Too many failed attempts"),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_signatures_is_rate_limited_per_address_on_sqlite() {
    signature_guessing(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_signatures_is_rate_limited_per_address_on_postgres() {
    let Some(db) =
        TestDb::postgres("guessing_signatures_is_rate_limited_per_address_on_postgres").await
    else {
        return;
    };
    signature_guessing(db).await;
}
