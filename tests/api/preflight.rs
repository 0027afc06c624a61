//! `tokenledger preflight` against a real server on both backends: a production-like one
//! passes every check; five misconfigurations (the console on, token auth on, pending
//! migrations, a server trusting forged X-Forwarded-For, no signing key) each fail their check
//! with the reason; `--json` carries the same result; and a URL that does not answer (or is
//! not tokenledger) is one line, a non-zero exit, and nothing minted.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tokenledger::clock::{Clock as _, SystemClock};
use tokenledger::config::ServeConfig;
use tokenledger::token::Environment;

use crate::helpers::{TEST_ORIGIN, TestApp, TestDb, open_store, spawn_app_with, stderr, stdout};
use crate::on_both_backends;

/// A key file for the service and for preflight's local check, and the service.
struct Deployment {
    app: TestApp,
    keys: tempfile::TempDir,
    follow: tokio::task::JoinHandle<()>,
}

/// A service configured as the guide's production checklist says, with `adjust` on top. Its
/// clock follows the system's, as preflight's does: the expiry check compares them.
async fn deploy(db: &TestDb, adjust: impl FnOnce(&mut ServeConfig)) -> Deployment {
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("log.signing-key");
    tokenledger::signing::SigningKeys::init(&key_file, TEST_ORIGIN).expect("signing key");
    let app = spawn_app_with(db, |c| {
        c.production = true;
        c.tokens.environment = Environment::Live;
        c.signing.key_file = Some(key_file);
        adjust(c);
    })
    .await;
    let clock = app.clock.clone();
    clock.set(SystemClock.now());
    let follow = tokio::spawn(async move {
        loop {
            clock.set(SystemClock.now());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Deployment { app, keys, follow }
}

/// Run `tokenledger preflight --url URL ARGS` as the deployment's operator would: with its
/// database, APP_ENV=production and its signing key.
async fn preflight(db: &TestDb, keys: &std::path::Path, url: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .args(["preflight", "--url", url, "--expiry", "1s"])
        .args(args)
        .env("DATABASE_URL", db.url_string())
        .env("APP_ENV", "production")
        .env("LOG_SIGNING_KEY_FILE", keys.join("log.signing-key"))
        .env("LOG_ORIGIN", TEST_ORIGIN)
        .env_remove("RUST_LOG")
        .env_remove("TRUST_PROXY_HOPS")
        .env_remove("API_TOKEN_PREFIX_ENV");
    tokio::task::spawn_blocking(move || command.output().expect("run tokenledger"))
        .await
        .expect("preflight ran")
}

fn line_of<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!(" {check}: ")))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

async fn a_production_like_deployment_passes(db: TestDb) {
    let d = deploy(&db, |_| {}).await;
    let out = preflight(&db, d.keys.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for line in text.lines() {
        assert!(line.starts_with("✅ "), "not ✅: {line}\n{text}");
    }
    for check in [
        "console switch",
        "migrations",
        "api_tokens",
        "scope enforcement",
        "revocation",
        "expiry",
        "audit holds no secrets",
        "audit entries",
        "route policy",
        "session routes",
        "token environment",
        "TRUST_PROXY_HOPS",
    ] {
        assert!(line_of(&text, check).starts_with("✅"), "{text}");
    }
    assert!(line_of(&text, "signing key").starts_with("✅"), "{text}");

    // The throwaway tokens are preflight's, by name and actor, and none still works.
    let rows = d.app.ledger().tokens().await.expect("tokens");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let now = d.app.now();
    for row in &rows {
        assert!(row.name.starts_with("preflight-"), "{}", row.name);
        assert!(
            row.created_by.starts_with("preflight:"),
            "{}",
            row.created_by
        );
        assert!(
            row.revoked_at.is_some() || row.expires_at <= now,
            "{} still works",
            row.name
        );
    }
    d.follow.abort();
    d.app.stop().await;
}

async fn the_console_switched_on_fails_that_check(db: TestDb) {
    let d = deploy(&db, |c| c.switches.console_enabled = true).await;
    let out = preflight(&db, d.keys.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(line_of(&text, "console switch").starts_with("❌"), "{text}");
    assert!(
        line_of(&text, "token auth switch").starts_with("✅"),
        "{text}"
    );
    assert!(line_of(&text, "revocation").starts_with("✅"), "{text}");

    // The same result as data.
    let out = preflight(&db, d.keys.path(), &d.app.base, &["--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("--json is JSON");
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().expect("checks");
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))["status"]
            .as_str()
            .expect("status")
            .to_owned()
    };
    assert_eq!(status("console switch"), "fail");
    assert_eq!(status("scope enforcement"), "pass");
    assert_eq!(status("signing key"), "pass");
    d.follow.abort();
    d.app.stop().await;
}

async fn a_dead_url_is_one_line_and_nothing_is_minted(db: TestDb) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let keys = tempfile::tempdir().expect("dir");
    let url = format!("http://127.0.0.1:{port}");
    let out = preflight(&db, keys.path(), &url, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("does not answer"),
        "{err}"
    );

    // Something that answers, but is not tokenledger.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming().take(1) {
            let mut stream = stream.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    let out = preflight(&db, keys.path(), &other, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a tokenledger service"), "{err}");

    let store = open_store(&db.url()).await;
    assert!(store.tokens().await.expect("tokens").is_empty(), "minted");
}

async fn token_auth_switched_on_fails_and_the_console_refuses_the_scope(db: TestDb) {
    let d = deploy(&db, |c| c.switches = crate::helpers::console_on()).await;
    let out = preflight(&db, d.keys.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        line_of(&text, "token auth switch").starts_with("❌"),
        "{text}"
    );
    let scope = line_of(&text, "scope enforcement");
    assert!(scope.starts_with("✅"), "{text}");
    assert!(
        scope.contains("403 \"Missing required scope: console:exec or admin\""),
        "{scope}"
    );
    d.follow.abort();
    d.app.stop().await;
}

/// A server that takes the client address from `X-Forwarded-For` while the operator says no
/// proxy stands in front: anyone can forge the address its audit records.
async fn a_server_trusting_forged_addresses_fails_that_check(db: TestDb) {
    let d = deploy(&db, |c| c.switches.trust_proxy_hops = 1).await;
    let out = preflight(&db, d.keys.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    let line = line_of(&text, "TRUST_PROXY_HOPS");
    assert!(
        line.starts_with("❌") && line.contains("it trusts the header"),
        "{line}"
    );
    d.follow.abort();
    d.app.stop().await;
}

/// In production, no signing key where the deployment's configuration says it is.
async fn a_missing_signing_key_fails_that_check(db: TestDb) {
    let d = deploy(&db, |_| {}).await;
    let elsewhere = tempfile::tempdir().expect("dir");
    let out = preflight(&db, elsewhere.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    let line = line_of(&text, "signing key");
    assert!(
        line.starts_with("❌") && line.contains("refuses to start in production"),
        "{line}"
    );
    d.follow.abort();
    d.app.stop().await;
}

on_both_backends!(
    a_server_trusting_forged_addresses_fails_that_check,
    a_missing_signing_key_fails_that_check,
    token_auth_switched_on_fails_and_the_console_refuses_the_scope,
    a_production_like_deployment_passes,
    the_console_switched_on_fails_that_check,
    a_dead_url_is_one_line_and_nothing_is_minted,
);

#[test]
fn a_url_that_is_not_http_is_a_usage_error() {
    let out = crate::helpers::tokenledger("sqlite::memory:", &["preflight", "--url", "ftp://x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--url"), "{err}");
}

/// Pointed at a log with pending migrations, preflight says so, mints nothing and migrates
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_migrations_fail_and_nothing_is_minted_or_migrated() {
    let served = TestDb::sqlite();
    let d = deploy(&served, |_| {}).await;
    let fresh = TestDb::sqlite();
    let out = preflight(&fresh, d.keys.path(), &d.app.base, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    let line = line_of(&text, "migrations");
    assert!(
        line.starts_with("❌") && line.contains("no token was minted"),
        "{line}"
    );
    assert!(!text.contains(" revocation: "), "{text}");
    let status = crate::helpers::tokenledger(&fresh.url_string(), &["migrate", "--status"]);
    assert!(stdout(&status).contains("pending"), "{}", stdout(&status));
    assert!(d.app.ledger().tokens().await.expect("tokens").is_empty());
    d.follow.abort();
    d.app.stop().await;
}
