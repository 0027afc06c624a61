//! Prometheus metrics over real HTTP, on the metrics listener: the counters move with a
//! request, an authentication refusal, a 429, an append and a failed append; the gauges read
//! the token cache and the newest checkpoint; and nothing in the scrape identifies a token
//! or a client.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokenledger::app::telemetry::name;

use crate::helpers::{TestApp, TestDb, console_on, error_of, spawn_app_with};

async fn start(db: &TestDb) -> TestApp {
    spawn_app_with(db, |c| {
        c.switches = console_on();
        c.metrics_bind_addr = Some(([127, 0, 0, 1], 0).into());
        c.auth_failures_per_minute = 2;
    })
    .await
}

async fn scrape(app: &TestApp) -> String {
    let port = app.metrics_port.expect("a metrics listener");
    let response = app
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"].to_str().expect("type");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.expect("body")
}

/// The sum of every sample of `metric` whose labels include all of `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a number"))
        .sum()
}

async fn metrics_move_and_name_no_token_or_client(db: TestDb) {
    let app = start(&db).await;
    let before = scrape(&app).await;

    let minted = app.create("ops", &["console:exec"], None).await;
    let (status, _) = app.console(Some(minted.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::OK);
    let unknown = tokenledger::token::mint(
        &app.ledger().settings().prefix,
        app.ledger().settings().environment,
    )
    .expect("a token this service never saw");
    for _ in 0..2 {
        let (status, _) = app.console(Some(unknown.expose()), "ping").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    app.checkpointer().sign_head().await.expect("sign");
    app.clock.advance(Duration::from_secs(30));
    let after = scrape(&app).await;

    let moved = |metric: &str, labels: &[(&str, &str)]| {
        sample(&after, metric, labels) - sample(&before, metric, labels)
    };
    let console = [("route", "/api/admin/console"), ("method", "POST")];
    assert_eq!(
        moved(
            name::HTTP_REQUESTS,
            &[console[0], console[1], ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        moved(name::HTTP_REQUESTS, &[console[0], ("status", "401")]),
        2.0
    );
    assert_eq!(
        moved(
            name::AUTHENTICATIONS,
            &[("credential", "api_token"), ("outcome", "allowed")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            name::AUTHENTICATIONS,
            &[("outcome", "refused"), ("reason", "unknown_token")]
        ),
        2.0
    );
    assert_eq!(moved(name::RATE_LIMITED, &[]), 0.0);
    let appends = app.ledger().appends() as f64;
    assert!(appends >= 2.0, "the create and the recorded use");
    let committed = format!("{}_count", name::APPEND_SECONDS);
    assert!(moved(&committed, &[]) >= 2.0, "{after}");
    let groups = format!("{}_count", name::APPEND_GROUP_SIZE);
    assert!(moved(&groups, &[]) >= 1.0, "{after}");
    assert!(
        after.contains(&format!("{}_bucket{{le=\"0.001\"}}", name::APPEND_SECONDS)),
        "append latency is a histogram with buckets: {after}"
    );
    assert_eq!(sample(&after, name::TOKENS, &[("status", "active")]), 1.0);
    assert_eq!(sample(&after, name::TOKENS, &[("status", "revoked")]), 0.0);
    assert_eq!(sample(&after, name::PROJECTION_LAG, &[]), 0.0);
    assert_eq!(sample(&after, name::LOG_HEAD, &[]), app.head().await as f64);
    assert_eq!(sample(&after, name::CHECKPOINT_AGE, &[]), 30.0);

    // Nothing that identifies a token or a client: no plaintext, hash, id or address.
    let secret = minted.token.expose();
    let hash = minted
        .token
        .hash()
        .0
        .iter()
        .fold(String::new(), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        });
    for (what, value) in [
        ("plaintext", secret.to_owned()),
        ("the unknown plaintext", unknown.expose().to_owned()),
        ("secret part", secret[secret.len() - 20..].to_owned()),
        ("hash", hash),
        ("id", minted.row.id.to_string()),
        ("name", "ops".to_owned()),
        ("client address", "127.0.0.1".to_owned()),
    ] {
        assert!(!after.contains(&value), "the scrape holds the {what}");
    }

    // A token checked through /v1/verify is counted by the answer's code.
    let verifier = app.create("checker", &["tokens:verify"], None).await;
    let (status, body) = app
        .post(
            "/v1/verify",
            Some(verifier.token.expose()),
            &serde_json::json!({"token": unknown.expose()}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some("NOT_FOUND"))
    );
    let (status, body) = app
        .post(
            "/v1/verify",
            Some(verifier.token.expose()),
            &serde_json::json!({"token": minted.token.expose()}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some("VALID"))
    );
    let verified = scrape(&app).await;
    for code in ["NOT_FOUND", "VALID"] {
        assert_eq!(
            sample(&verified, name::VERIFY_CHECKS, &[("code", code)]),
            1.0,
            "{code}"
        );
    }
    assert!(!verified.contains(minted.token.expose()));
    assert!(!verified.contains(&verifier.row.id.to_string()));
    let after = verified;

    // The API port does not serve metrics.
    let (status, _, _) = app
        .send_text(reqwest::Method::GET, "/metrics", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A write that fails is answered 503 and counted.
    db.take_away().await;
    let (status, body) = app.console(Some(minted.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(&body), "Audit log unavailable");
    let failed = scrape(&app).await;
    assert_eq!(
        sample(&failed, name::AUDIT_APPEND_FAILURES, &[])
            - sample(&after, name::AUDIT_APPEND_FAILURES, &[]),
        1.0
    );
    assert_eq!(
        sample(
            &failed,
            name::HTTP_REQUESTS,
            &[console[0], ("status", "503")]
        ),
        1.0
    );

    // The third failure from this address in the minute is answered 429, and counted both
    // as a refusal (by its reason) and as rate-limited.
    let (status, _) = app.console(Some(unknown.expose()), "ping").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let limited = scrape(&app).await;
    let since_failed = |metric: &str, labels: &[(&str, &str)]| {
        sample(&limited, metric, labels) - sample(&failed, metric, labels)
    };
    assert_eq!(since_failed(name::RATE_LIMITED, &[]), 1.0);
    assert_eq!(
        since_failed(
            name::AUTHENTICATIONS,
            &[("outcome", "refused"), ("reason", "unknown_token")]
        ),
        1.0
    );
    assert_eq!(
        since_failed(name::HTTP_REQUESTS, &[console[0], ("status", "429")]),
        1.0
    );
    db.bring_back().await;
}

crate::on_both_backends!(metrics_move_and_name_no_token_or_client);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_bind_addr_nothing_listens_or_records() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |_| {}).await;
    assert_eq!(app.metrics_port, None);
    assert!(!app.metrics().is_exported());
}

#[test]
fn metrics_bind_addr_equal_to_bind_addr_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("BIND_ADDR", "127.0.0.1:39401")
        .env("METRICS_BIND_ADDR", "127.0.0.1:39401")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tokenledger");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("METRICS_BIND_ADDR=127.0.0.1:39401")
            && stderr.contains("BIND_ADDR=127.0.0.1:39401"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "refused before the database was opened"
    );
}
