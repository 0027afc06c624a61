//! The service under a hostile caller or a careless operator: audit views that cannot be cut
//! off, output that cannot be forged, denials that cannot grow the log without bound,
//! guessing that is limited, tokens that are never echoed, rotation chains that are revoked
//! whole, and the small defects (closed pipes, malformed ids, absurd JSON).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokenledger::clock::{Clock as _, SystemClock};
use tokenledger::session::DevKey;
use tokenledger::text::is_unsafe;
use tokenledger_events::{EventLog as _, ExpectedVersion, StreamId, TokenEvent, TokenLeakReported};
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestDb, append, console_on, created, error_of, open_store, spawn_app_with, stderr,
    stdout, tokenledger,
};

fn with_bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

/// A service with the console on and its development sign-in key made, and an admin session.
async fn console_with_admin(
    db: &TestDb,
    configure: impl FnOnce(&mut tokenledger::config::ServeConfig),
) -> (TestApp, String) {
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let app = spawn_app_with(db, |c| {
        c.switches = console_on();
        configure(c);
    })
    .await;
    let session = key.sign("alice", true, app.now()).expect("session");
    (app, session)
}

// ---------------------------------------------------------------------------------------------
// 1. Audit views are pages by position cursor, and say when they show a subset
// ---------------------------------------------------------------------------------------------

async fn a_padded_history_still_shows_its_revocation_and_every_row_by_cursor(db: TestDb) {
    let (app, session) = console_with_admin(&db, |_| {}).await;
    let token = app.create("padded", &["console:exec"], None).await;
    for _ in 0..249 {
        let (status, _) = app.console(Some(token.token.expose()), "ping").await;
        assert_eq!(status, StatusCode::OK);
    }
    app.revoke(token.row.id).await;
    let id = token.row.id.to_string();
    let url = db.url_string();

    // The CLI's default page is a subset and says so, with the cursor to the next page.
    let out = tokenledger(&url, &["audit", "--token", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 100);
    assert!(
        stderr(&out)
            .contains("showing 100 of 251 matching rows (oldest first); next page: --after"),
        "{}",
        stderr(&out)
    );
    // Newest first, the revocation is the first row.
    let out = tokenledger(
        &url,
        &[
            "audit",
            "--token",
            &id,
            "--reverse",
            "--limit",
            "1",
            "--json",
        ],
    );
    let page: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(page["events"][0]["action"], "API_TOKEN_REVOKED", "{page}");
    assert_eq!(
        (page["total"].as_u64(), page["complete"].as_bool()),
        (Some(251), Some(false))
    );
    assert!(page["next"]["before"].is_u64(), "{page}");
    // Walking every page by its next cursor gives every row once, in order.
    let mut seen = Vec::new();
    let mut args = vec![
        "audit".to_owned(),
        "--token".into(),
        id.clone(),
        "--json".into(),
        "--limit".into(),
        "60".into(),
    ];
    loop {
        let out = tokenledger(&url, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let page: Value = serde_json::from_str(&stdout(&out)).expect("json");
        seen.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["position"].as_u64().expect("position")),
        );
        match page["next"]["after"].as_u64() {
            Some(after) => {
                args.truncate(6);
                args.extend(["--after".into(), after.to_string()]);
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 251);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions ascend with no repeat"
    );
    // Too large a page is lowered, and the CLI says so.
    let out = tokenledger(&url, &["audit", "--limit", "5000"]);
    assert!(
        stderr(&out).contains("--limit is at most 1000"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).lines().count(), 251);
    let out = tokenledger(&url, &["audit", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a whole number from 1 to 1000"),
        "{}",
        stderr(&out)
    );

    // The admin API pages the same way; its answer carries the cursors and the total.
    let mut headers = with_bearer(&session);
    headers.remove("content-type");
    let path = format!("/api/admin/tokens/{id}/audit?order=newest_first&limit=10");
    let (status, page, _) = app
        .send(reqwest::Method::GET, &path, headers.clone(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["action"], "API_TOKEN_REVOKED");
    assert_eq!(page["total"], 251);
    assert_eq!(page["token"]["id"], id.as_str());
    let before = page["next"]["before"].as_u64().expect("next");
    let (_, older, _) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/admin/tokens/{id}/audit?before={before}&order=newest_first&limit=10"),
            headers.clone(),
            None,
        )
        .await;
    assert_eq!(older["events"][0]["position"], before - 1, "{older}");
    assert_eq!(
        older["prev"]["after"],
        before - 1,
        "back to the newer page: {older}"
    );
    let (status, body, _) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/admin/tokens/{id}/audit?limit=abc"),
            headers.clone(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&body).contains("\"limit\" must be a whole number"),
        "{body}"
    );
    let (status, body, _) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/admin/tokens/{id}/audit?page=2"),
            headers.clone(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&body).contains("accepted: limit, after, before, order"),
        "{body}"
    );

    // The page shows the newest first, says it is a subset and links to older events.
    let mut page_headers = HeaderMap::new();
    page_headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={session}")).expect("cookie"),
    );
    let (status, html, _) = app
        .send_text(
            reqwest::Method::GET,
            &format!("/admin/tokens/{id}"),
            page_headers,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first_item = html.find("data-action=").expect("a timeline entry");
    assert!(
        html[first_item..].starts_with("data-action=\"API_TOKEN_REVOKED\""),
        "newest first"
    );
    assert!(
        html.contains("Showing 50 of 251 events, newest first."),
        "the page says it is a subset"
    );
    assert!(
        html.contains(&format!("href=\"/admin/tokens/{id}?before=")),
        "an Older link"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Output injection
// ---------------------------------------------------------------------------------------------

async fn control_characters_are_refused_at_the_edge_and_escaped_on_every_output(db: TestDb) {
    // GitHub's secret scanning reports are taken too, signed with a key of this test's.
    let github = crate::leaks::new_key();
    let keys = tempfile::tempdir().expect("dir");
    let keys_file = keys.path().join("secret_scanning.json");
    std::fs::write(&keys_file, crate::leaks::public_keys(&[("k", &github)])).expect("keys");
    let (app, session) = console_with_admin(&db, |c| {
        c.github_secret_scanning_keys = Some(tokenledger::app::leaks::KeySource::File(keys_file));
    })
    .await;
    let verifier = app.create("verifier", &["tokens:verify"], None).await;
    let target = app.create("target", &["registry:read"], None).await;
    let forged = "/pull\nAPI_TOKEN_REVOKED forged\u{1b}[8m";
    for (field, value, message) in [
        ("path", forged, "\"path\" must start with /"),
        ("path", "/a\u{202e}b", "no control or invisible characters"),
        ("ip", "10.0.0.1\n", "\"ip\" must be an IPv4 or IPv6 address"),
        ("ip", "not-an-ip", "\"ip\" must be an IPv4 or IPv6 address"),
    ] {
        let (status, body) = app
            .post(
                "/v1/verify",
                Some(verifier.token.expose()),
                &json!({"token": target.token.expose(), field: value}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value:?}: {body}");
        assert!(error_of(&body).contains(message), "{body}");
    }
    // Names and reasons refuse them too, with a message saying so, on the CLI and the API.
    let url = db.url_string();
    let out = tokenledger(
        &url,
        &[
            "token",
            "create",
            "--name",
            "ci\u{202e}yolped",
            "--scope",
            "admin",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("control or invisible characters"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains('\u{202e}'),
        "the refusal does not echo it raw"
    );
    let out = tokenledger(
        &url,
        &[
            "token",
            "revoke",
            &target.row.id.to_string(),
            "--reason",
            "ok\nAPI_TOKEN_CREATED",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = tokenledger(
        &url,
        &[
            "token",
            "revoke",
            &target.row.id.to_string(),
            "--reason",
            &"x".repeat(501),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("at most 500 characters"),
        "{}",
        stderr(&out)
    );
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/admin/tokens/{}/revoke", target.row.id),
            with_bearer(&session),
            Some(json!({"reason": "a\u{1b}[2Jb"}).to_string().into_bytes()),
        )
        .await
        .into_pair();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // What older data or a header still carries is escaped wherever it is shown: a name
    // written before names were checked, and a user agent with a C1 control in it.
    let store = open_store(&db.url()).await;
    let legacy = Uuid::now_v7();
    store
        .append(vec![append(
            &StreamId::for_token(legacy),
            ExpectedVersion::NoStream,
            vec![created(
                legacy,
                "old\nAPI_TOKEN_REVOKED\u{1b}[8m\u{9b}31m\u{202e}",
            )],
        )])
        .await
        .expect("append");
    let user = app.create("user", &["console:exec"], None).await;
    let mut h = with_bearer(user.token.expose());
    h.insert(
        "user-agent",
        HeaderValue::from_bytes("agent\u{9b}8m".as_bytes()).expect("header"),
    );
    let (status, _, _) = app
        .send(
            reqwest::Method::POST,
            "/api/admin/console",
            h,
            Some(br#"{"cmd":"ping"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Leak reports: a caller who can resend is refused control characters; GitHub's text is
    // kept with them escaped; a report already in the log with raw ones is escaped on output.
    let (status, body, _) = crate::leaks::post_reports(
        &app,
        Some(&session),
        json!([{"token": user.token.expose(), "location": "paste\nAPI_TOKEN_REVOKED\u{1b}[8m"}])
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error_of(&body).contains("must not contain control or invisible characters"),
        "{body}"
    );
    let forged_url = "https://github.com/o/r/blob/1/x\nAPI_TOKEN_REVOKED forged\u{1b}[8m\u{9b}31m";
    let report = json!([{
        "token": user.token.expose(),
        "type": "tokenledger\u{202e}",
        "url": forged_url,
        "source": "content\u{1b}[2J",
    }])
    .to_string();
    let (status, feedback) = crate::leaks::post_github(
        &app,
        report.as_bytes(),
        Some("k"),
        Some(&crate::leaks::sign(&github, report.as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    let kept: Vec<_> = app
        .audit_of(Some(user.row.id))
        .await
        .into_iter()
        .filter(|r| r.action == "API_TOKEN_LEAK_REPORTED")
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].details["url"],
        "https://github.com/o/r/blob/1/x\\u{a}API_TOKEN_REVOKED forged\\u{1b}[8m\\u{9b}31m"
    );
    assert_eq!(kept[0].details["source"], "content\\u{1b}[2J");
    assert_eq!(kept[0].details["token_type"], "tokenledger\\u{202e}");
    store
        .append(vec![append(
            &StreamId::for_token(legacy),
            ExpectedVersion::Any,
            vec![crate::helpers::event(TokenEvent::LeakReported(
                TokenLeakReported {
                    url: Some(forged_url.to_owned()),
                    source: Some("commit\u{1b}[2J".to_owned()),
                    token_type: Some("t\u{202e}".to_owned()),
                    reporter: "github\nAPI_TOKEN_CREATED".to_owned(),
                },
            ))],
        )])
        .await
        .expect("append");
    let (legacy_id, user_id) = (legacy.to_string(), user.row.id.to_string());
    for args in [
        vec!["token", "list"],
        vec!["token", "list", "--json"],
        vec!["token", "show", &legacy_id],
        vec!["audit"],
        vec!["audit", "--json"],
        vec!["token", "list", "--as-of", "position:1"],
        vec![
            "token",
            "show",
            &legacy_id,
            "--as-of",
            "position:1",
            "--json",
        ],
        vec!["history", &legacy_id],
        vec!["history", &user_id, "--json"],
        vec!["incident", &legacy_id],
        vec!["incident", &user_id],
        vec!["incident", &user_id, "--json"],
    ] {
        let out = tokenledger(&url, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        let raw: Vec<char> = text
            .chars()
            .filter(|c| is_unsafe(*c) && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{args:?} printed {raw:?} raw");
        assert!(
            !text.lines().any(|l| l.starts_with("API_TOKEN_REVOKED")),
            "{args:?} let a line be forged"
        );
    }
    let out = tokenledger(&url, &["token", "show", &legacy.to_string()]);
    assert!(
        stdout(&out).contains("old\\u{a}API_TOKEN_REVOKED\\u{1b}[8m\\u{9b}31m\\u{202e}"),
        "{}",
        stdout(&out)
    );
    // And on the page.
    tokio::time::sleep(Duration::from_millis(300)).await; // the tail folds the legacy token in
    let mut cookie = HeaderMap::new();
    cookie.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={session}")).expect("cookie"),
    );
    for path in [
        "/admin/tokens".to_owned(),
        format!("/admin/tokens/{legacy}"),
        format!("/admin/tokens/{}", user.row.id),
        format!("/admin/tokens/{legacy}/incident"),
        format!("/admin/tokens/{}/incident", user.row.id),
        "/admin/tokens?as_of=position:1".to_owned(),
    ] {
        let (status, html, _) = app
            .send_text(reqwest::Method::GET, &path, cookie.clone(), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let raw: Vec<char> = html
            .chars()
            .filter(|c| is_unsafe(*c) && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{path} rendered {raw:?} raw");
    }
}

async fn a_session_naming_its_user_with_a_newline_is_refused(db: TestDb) {
    let (app, _) = console_with_admin(&db, |_| {}).await;
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("key");
    let head = app.head().await;
    for sub in [
        "alice\n2026-12-01T00:00:00Z  INFO token revoked",
        "bob\u{1b}[8m",
        "eve\u{202e}",
    ] {
        let session = key.sign(sub, true, app.now()).expect("sign");
        let (status, body) = app
            .send(
                reqwest::Method::POST,
                "/api/admin/tokens",
                with_bearer(&session),
                Some(
                    json!({"name": "x", "scopes": ["admin"]})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await
            .into_pair();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sub:?}: {body}");
        assert_eq!(
            error_of(&body),
            "Session sub must be at most 256 printable characters"
        );
    }
    assert_eq!(
        app.head().await,
        head,
        "nothing was recorded under a forged name"
    );
}

trait IntoPair {
    fn into_pair(self) -> (StatusCode, Value);
}

impl IntoPair for (StatusCode, Value, HeaderMap) {
    fn into_pair(self) -> (StatusCode, Value) {
        (self.0, self.1)
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Denials are bounded: repeats in a window become one summary with an exact count
// ---------------------------------------------------------------------------------------------

async fn repeated_denials_are_coalesced_and_counted_exactly(db: TestDb) {
    const SENT: u64 = 5_000;
    let app = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.auth_failures_per_minute = 0; // this test is about the log, not the rate limit
    })
    .await;
    let token = app.create("revoked", &["console:exec"], None).await;
    app.revoke(token.row.id).await;
    let before = app.head().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (http, base, plaintext) = (
            app.http.clone(),
            app.base.clone(),
            token.token.expose().to_owned(),
        );
        tasks.spawn(async move {
            let mut refused = 0u64;
            for _ in (worker..SENT).step_by(16) {
                let answer = http
                    .post(format!("{base}/api/admin/console"))
                    .bearer_auth(&plaintext)
                    .header("content-type", "application/json")
                    .body(r#"{"cmd":"ping"}"#)
                    .send()
                    .await
                    .expect("request");
                refused += u64::from(answer.status() == StatusCode::UNAUTHORIZED);
            }
            refused
        });
    }
    let refused: u64 = tasks.join_all().await.into_iter().sum();
    assert_eq!(refused, SENT, "every call was refused");
    let grown = app.head().await - before;
    eprintln!(
        "denials: {SENT} sent in {:.1?}, {grown} event(s) appended while the window was open",
        started.elapsed()
    );
    assert!(grown <= 3, "{SENT} denials appended {grown} events");

    // The window closes: one summary event, with the exact count.
    app.clock.advance(Duration::from_secs(61));
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.head().await == before + grown && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trail = app.audit_of(Some(token.row.id)).await;
    let denials: Vec<_> = trail
        .iter()
        .filter(|r| r.action == "API_TOKEN_DENIED")
        .collect();
    assert_eq!(
        denials.len(),
        2,
        "the first denial in full, then one summary: {denials:?}"
    );
    assert_eq!(denials[0].details["reason"], "revoked");
    assert_eq!(denials[1].details["repeats"], SENT - 1);
    assert_eq!(denials[1].actor, "system:denial-window");
    assert_eq!(app.token(token.row.id).await.denied_count, SENT);
    eprintln!(
        "denials: after the window closed, {} events in all, summary count {}",
        app.head().await - before,
        denials[1].details["repeats"]
    );

    // Repeats in a window still open when the service stops cleanly are not lost.
    for _ in 0..10 {
        app.console(Some(token.token.expose()), "ping").await;
    }
    app.stop().await;
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    let trail = app.audit_of(Some(token.row.id)).await;
    let last = trail.last().expect("rows");
    assert_eq!(last.details["repeats"], 9, "{last:?}");
    assert_eq!(app.token(token.row.id).await.denied_count, SENT + 10);
}

// ---------------------------------------------------------------------------------------------
// 5. Guessing is limited per client IP, logged with the IP and reason, and counted
// ---------------------------------------------------------------------------------------------

async fn guessing_is_rate_limited_per_ip(db: TestDb) {
    let app = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.auth_failures_per_minute = 5;
    })
    .await;
    let good = app.create("good", &["console:exec"], None).await;
    let guess =
        tokenledger::token::mint(&Default::default(), tokenledger::token::Environment::Test)
            .expect("mint");
    for _ in 0..5 {
        let (status, body) = app.console(Some(guess.expose()), "ping").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_of(&body), "Invalid token");
    }
    let (status, body, headers) = app
        .send(
            reqwest::Method::POST,
            "/api/admin/console",
            with_bearer(guess.expose()),
            Some(br#"{"cmd":"ping"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        error_of(&body).starts_with("Too many failed attempts; retry after "),
        "{body}"
    );
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // While blocked, nothing from that address is evaluated, a good token included.
    let (status, _) = app.console(Some(good.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.runs(), 0);
    assert_eq!(
        app.metrics().unknown_tokens_from([127, 0, 0, 1].into()),
        6,
        "every unknown-token refusal is counted for its IP"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A token pasted anywhere is never echoed: not in answers, CLI output or log lines
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_token_is_never_echoed_by_any_endpoint_flag_or_log_line() {
    let db = TestDb::sqlite();
    let url = db.url_string();
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("key");
    let out = tokenledger(
        &url,
        &[
            "token",
            "create",
            "--name",
            "caller",
            "--scope",
            "admin",
            "--scope",
            "tokens:verify",
            "--json",
        ],
    );
    let caller: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let caller = caller["token"].as_str().expect("token").to_owned();
    let out = tokenledger(
        &url,
        &[
            "token",
            "create",
            "--name",
            "pasted",
            "--scope",
            "logs:read",
            "--json",
        ],
    );
    let pasted: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let (secret, pasted_id) = (
        pasted["token"].as_str().expect("token").to_owned(),
        pasted["id"].as_str().expect("id").to_owned(),
    );

    // The real binary, logging everything it logs at debug.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "debug")
        .env("ADMIN_CONSOLE_ENABLED", "true")
        .env("ADMIN_API_TOKEN_AUTH_ENABLED", "true")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = key
        .sign(
            "alice",
            true,
            tokenledger::clock::Clock::now(&tokenledger::clock::SystemClock),
        )
        .expect("session");
    let t = secret.as_str();
    let calls: Vec<(&str, String, String, Value)> = vec![
        (
            "POST",
            "/api/admin/console".into(),
            caller.clone(),
            json!({"cmd": t, "args": {}}),
        ),
        (
            "POST",
            "/api/admin/console".into(),
            caller.clone(),
            json!({"cmd": "ping", "args": {t: 1}}),
        ),
        (
            "POST",
            "/api/admin/console".into(),
            caller.clone(),
            json!({t: "ping"}),
        ),
        (
            "POST",
            "/api/admin/console".into(),
            caller.clone(),
            json!({"cmd": "tokens:stale", "args": {"unused_days": t}}),
        ),
        (
            "POST",
            "/api/admin/console".into(),
            t.to_owned(),
            json!({"cmd": "db:health"}),
        ),
        (
            "POST",
            "/v1/verify".into(),
            caller.clone(),
            json!({"token": t, "scopes": [t], "ip": t, "path": t}),
        ),
        (
            "POST",
            "/v1/verify".into(),
            caller.clone(),
            json!({"token": t, t: 1}),
        ),
        (
            "POST",
            "/v1/verify".into(),
            caller.clone(),
            json!({"token": t, "path": format!("/{t}")}),
        ),
        (
            "POST",
            "/api/admin/tokens".into(),
            session.clone(),
            json!({"name": t, "scopes": [t], "expires_in": t}),
        ),
        (
            "POST",
            "/api/admin/tokens".into(),
            session.clone(),
            json!({"name": "x", "scopes": ["admin"], "expires_in": t}),
        ),
        (
            "POST",
            "/api/admin/tokens".into(),
            session.clone(),
            json!({"name": "x", "scopes": ["admin"], t: 1}),
        ),
        (
            "POST",
            format!("/api/admin/tokens/{t}/revoke"),
            session.clone(),
            json!({"reason": t}),
        ),
        (
            "POST",
            format!("/api/admin/tokens/{pasted_id}/revoke"),
            session.clone(),
            json!({"reason": t}),
        ),
        (
            "POST",
            format!("/api/admin/tokens/{pasted_id}/rotate"),
            session.clone(),
            json!({"grace": t}),
        ),
        (
            "GET",
            format!("/api/admin/tokens/{t}/audit"),
            session.clone(),
            json!(null),
        ),
        (
            "GET",
            format!("/api/admin/tokens/{pasted_id}/audit?{t}=1&after={t}"),
            session.clone(),
            json!(null),
        ),
        (
            "GET",
            format!("/admin/tokens/{t}"),
            session.clone(),
            json!(null),
        ),
        ("GET", format!("/{t}"), caller.clone(), json!(null)),
        (
            "GET",
            format!("/healthz?token={t}"),
            caller.clone(),
            json!(null),
        ),
    ];
    let mut answers = String::new();
    for (method, path, bearer, body) in &calls {
        let mut request = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{base}{path}"),
            )
            .bearer_auth(bearer)
            .header("user-agent", format!("agent {t}"));
        if !body.is_null() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = request.send().await.expect("request");
        answers.push_str(&format!(
            "{method} {path} -> {} {:?}\n",
            answer.status(),
            answer.headers()
        ));
        answers.push_str(&answer.text().await.expect("body"));
        answers.push('\n');
    }
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let mut log = String::new();
    for line in BufReader::new(server.stderr.take().expect("stderr")).lines() {
        log.push_str(&line.expect("line"));
        log.push('\n');
    }
    let _ = server.wait();
    // Every answer, with its headers, and every log line.
    let answers_without_paths: String = answers
        .lines()
        .filter(|l| !l.contains(" -> "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !answers_without_paths.contains(t),
        "an answer echoed the token:\n{answers_without_paths}"
    );
    assert!(!log.contains(t), "a log line holds the token:\n{log}");
    assert!(log.contains("refused"), "refusals are logged:\n{log}");
    assert!(
        log.contains("client_ip=127.0.0.1"),
        "with the client IP:\n{log}"
    );

    // Every CLI flag that takes a value.
    let cli_calls: Vec<Vec<&str>> = vec![
        vec!["token", "show", t],
        vec!["token", "revoke", t],
        vec!["token", "rotate", t],
        vec!["token", "create", "--name", t, "--scope", "admin"],
        vec!["token", "create", "--name", "x", "--scope", t],
        vec![
            "token",
            "create",
            "--name",
            "x",
            "--scope",
            "admin",
            "--expires-in",
            t,
        ],
        vec!["token", "revoke", &pasted_id, "--reason", t],
        vec!["token", "rotate", &pasted_id, "--grace", t],
        vec!["audit", "--token", t],
        vec!["audit", "--since", t],
        vec!["audit", "--action", t],
        vec!["audit", "--after", t],
        vec!["audit", "--limit", t],
        vec!["dev-session", "--sub", t],
        vec!["--database-url", t, "verify"],
        vec![t],
    ];
    for args in cli_calls {
        let out = tokenledger(&url, &args);
        let printed = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!printed.contains(t), "{args:?} echoed the token: {printed}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Revoking one token of a rotation chain names the rest; --chain revokes them all
// ---------------------------------------------------------------------------------------------

async fn revoking_a_successor_names_the_predecessor_still_in_grace_and_chain_revokes_both(
    db: TestDb,
) {
    let (app, _) = console_with_admin(&db, |_| {}).await;
    // The CLI decides on the wall clock; so does the service here.
    app.clock.set(SystemClock.now());
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("key");
    let session = key.sign("alice", true, SystemClock.now()).expect("session");
    let url = db.url_string();
    let old = app.create("old", &["console:exec"], None).await;
    let new = app.rotate(old.row.id, Duration::from_secs(86_400)).await;
    let out = tokenledger(&url, &["token", "revoke", &new.row.id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "warning: token {} (old) of the same rotation chain still works",
            old.row.id
        )),
        "{}",
        stderr(&out)
    );
    // ... and it does.
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    app.clock.set(SystemClock.now());
    assert_eq!(
        app.console(Some(old.token.expose()), "ping").await.0,
        StatusCode::OK
    );

    // --chain revokes every working member in one append, each with its own cause.
    let a = app.create("a", &["console:exec"], None).await;
    let b = app.rotate(a.row.id, Duration::from_secs(86_400)).await;
    let c = app.rotate(b.row.id, Duration::from_secs(86_400)).await;
    let head = app.head().await;
    let out = tokenledger(
        &url,
        &[
            "token",
            "revoke",
            &b.row.id.to_string(),
            "--chain",
            "--reason",
            "leaked",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(answer["id"], b.row.id.to_string());
    let also: Vec<&str> = answer["chain_revoked"]
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(also, [a.row.id.to_string(), c.row.id.to_string()]);
    let store = open_store(&db.url()).await;
    assert_eq!(
        store.head().await.expect("head").position,
        head + 3,
        "one event per token"
    );
    let events = store.read_from(head, 10).await.expect("read");
    assert!(events.iter().all(|e| e.event_type == "TokenRevoked"));
    let a_row = store.token(a.row.id).await.expect("read").expect("row");
    assert_eq!(
        a_row.revoke_reason.as_deref(),
        Some(format!("revoked with its rotation chain, from token {}", b.row.id).as_str())
    );
    assert_eq!(
        store
            .token(b.row.id)
            .await
            .expect("read")
            .expect("row")
            .revoke_reason
            .as_deref(),
        Some("leaked")
    );

    // The API and the page say the same.
    let x = app.create("x", &["console:exec"], None).await;
    let y = app.rotate(x.row.id, Duration::from_secs(86_400)).await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/admin/tokens/{}/revoke", y.row.id),
            with_bearer(&session),
            Some(b"{}".to_vec()),
        )
        .await
        .into_pair();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["chain_still_valid"][0]["id"],
        x.row.id.to_string(),
        "{body}"
    );
    let mut cookie = HeaderMap::new();
    cookie.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={session}")).expect("cookie"),
    );
    let (_, html, _) = app
        .send_text(
            reqwest::Method::GET,
            &format!("/admin/tokens/{}/revoke", x.row.id),
            cookie,
            None,
        )
        .await;
    assert!(
        !html.contains("chain-still-valid"),
        "x's successor is revoked, so nothing else works"
    );
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/admin/tokens/{}/revoke", x.row.id),
            with_bearer(&session),
            Some(br#"{"chain": true}"#.to_vec()),
        )
        .await
        .into_pair();
    assert_eq!(status, StatusCode::OK, "{body}");
}

// ---------------------------------------------------------------------------------------------
// 10. Smaller defects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_pipe_ends_the_cli_quietly() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| {
        c.switches = console_on();
    })
    .await;
    let token = app.create("busy", &["console:exec"], None).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, base, t) = (
            app.http.clone(),
            app.base.clone(),
            token.token.expose().to_owned(),
        );
        tasks.spawn(async move {
            for _ in 0..125 {
                http.post(format!("{base}/api/admin/console"))
                    .bearer_auth(&t)
                    .header("content-type", "application/json")
                    .body(r#"{"cmd":"ping"}"#)
                    .send()
                    .await
                    .expect("ping");
            }
        });
    }
    tasks.join_all().await;
    // `tokenledger audit --limit 1000 | head -1`: far more than a pipe holds.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["audit", "--limit", "1000"])
        .env("DATABASE_URL", db.url_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("audit");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    // The reader is gone now.
    let out = child.wait_with_output().expect("exit");
    assert!(!first.is_empty());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

async fn malformed_ids_and_absurd_json_get_clear_json_answers(db: TestDb) {
    let (app, session) = console_with_admin(&db, |_| {}).await;
    let mut headers = with_bearer(&session);
    headers.remove("content-type");
    let (status, text, answer_headers) = app
        .send_text(
            reqwest::Method::GET,
            "/api/admin/tokens/%FF%FE/audit",
            headers,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&text).expect("a JSON answer");
    assert_eq!(error_of(&body), "Token id must be a UUID");
    assert!(answer_headers.contains_key("x-request-id"));
    let token = app.create("ops", &["console:exec"], None).await;
    for (body, message) in [
        (
            r#"{"cmd": "tokens:stale", "args": {"unused_days": 1e400}}"#.to_owned(),
            "number out of range",
        ),
        (
            format!(r#"{{"cmd": "ping", "args": {}}}"#, "[".repeat(10_000)),
            "nesting too deep",
        ),
    ] {
        let (status, answer, _) = app
            .send(
                reqwest::Method::POST,
                "/api/admin/console",
                with_bearer(token.token.expose()),
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&answer).contains(message), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_a_json_answer_with_a_request_id() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |_| {}).await;
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    for (request, status, message) in [
        (
            "GARBAGE\r\n\r\n".to_owned(),
            "400 Bad Request",
            "Malformed request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            "431 Request Header Fields Too Large",
            "Request headers are too large",
        ),
    ] {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        socket.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .expect("read");
        let answer = String::from_utf8(answer).expect("text");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{answer}"
        );
        assert!(answer.contains("\r\nx-request-id: "), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let body: Value = serde_json::from_str(body).expect("JSON");
        assert!(error_of(&body).starts_with(message), "{body}");
    }
    // A well-formed request on the same server is answered as always.
    let (status, _, _) = app
        .send(reqwest::Method::GET, "/healthz", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

crate::on_both_backends!(
    a_padded_history_still_shows_its_revocation_and_every_row_by_cursor,
    control_characters_are_refused_at_the_edge_and_escaped_on_every_output,
    repeated_denials_are_coalesced_and_counted_exactly,
    guessing_is_rate_limited_per_ip,
    revoking_a_successor_names_the_predecessor_still_in_grace_and_chain_revokes_both,
    malformed_ids_and_absurd_json_get_clear_json_answers,
    a_session_naming_its_user_with_a_newline_is_refused,
);
