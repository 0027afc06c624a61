//! End-to-end tests of the service over real HTTP: the real router on a loopback port, a real
//! database (SQLite; PostgreSQL when TEST_DATABASE_URL is set) and an injected clock. They
//! walk the seed guide's security checklist.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokenledger::app::Minted;
use tokenledger::config::Switches;
use tokenledger::scope::Scope;
use tokenledger::token::{self, Environment, TokenPrefix};
use tokenledger_events::Timestamp;
use uuid::Uuid;

use crate::helpers::{START, TestApp, TestDb, console_on, error_of, spawn_app_with};

async fn start(db: &TestDb, switches: Switches) -> TestApp {
    spawn_app_with(db, |c| c.switches = switches).await
}

async fn switches_off_hide_the_console_and_refuse_tokens(db: TestDb) {
    let off = start(&db, Switches::default()).await;
    let token = off.create("ci", &["console:exec"], None).await;
    let (status, body) = off.console(Some(token.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_of(&body), "Not found");

    let tokens_off = start(
        &db,
        Switches {
            console_enabled: true,
            ..Switches::default()
        },
    )
    .await;
    let (status, body) = tokens_off.console(Some(token.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), "API token authentication is disabled");
    let (status, body) = tokens_off.console(None, "ping").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), "Missing credentials");
    assert_eq!(off.runs() + tokens_off.runs(), 0, "no command ran");
}

/// The guide's step 2, as written: a `logs:read`-only token is refused `db:health`, and a
/// `console:exec` token runs it. Commands the guide does not name may ask for more.
async fn the_guides_scope_check_refuses_logs_read_and_admits_console_exec(db: TestDb) {
    // Each denial its own event (no denial window), to count them.
    let svc = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.tokens.denial_window = Duration::ZERO;
    })
    .await;
    let token = svc.create("logs", &["logs:read"], None).await;
    let (status, body) = svc
        .post(
            "/api/admin/console",
            Some(token.token.expose()),
            &json!({"cmd":"db:health","args":{}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error_of(&body),
        "Missing required scope: console:exec or admin"
    );
    assert_eq!(svc.runs(), 0);
    let denied = svc.token(token.row.id).await;
    assert_eq!((denied.use_count, denied.denied_count), (0, 1));

    // console:exec alone runs every command the guide names...
    let exec = svc.create("exec", &["console:exec"], None).await;
    let (status, body) = svc
        .post(
            "/api/admin/console",
            Some(exec.token.expose()),
            &json!({"cmd":"db:health","args":{}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["reachable"], true, "{body}");
    assert_eq!(svc.runs(), 1);
    // ...but not one the guide does not name, which is narrowed (and the denial recorded).
    let (status, body) = svc
        .console(Some(exec.token.expose()), "events:verify")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&body),
        "Missing required scope: logs:read or admin"
    );
    let (status, body) = svc.console(Some(exec.token.expose()), "tokens:stale").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body), "Missing required scope: admin");
    assert_eq!(svc.runs(), 1);
    let row = svc.token(exec.row.id).await;
    assert_eq!((row.use_count, row.denied_count), (1, 2));
    let (status, body) = svc.console(Some(exec.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn a_working_token_is_refused_once_revoked(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc
        .create("ops", &["console:exec", "logs:read"], None)
        .await;
    let (status, body) = svc.console(Some(token.token.expose()), "db:health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["reachable"], true);
    assert_eq!(body["result"]["backend"], svc.queries().backend());
    assert!(body["result"]["head_position"].as_u64().expect("head") >= 2);
    assert_eq!(svc.runs(), 1);

    let row = svc.token(token.row.id).await;
    assert_eq!(row.use_count, 1);
    assert_eq!(row.last_used_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.last_used_path.as_deref(), Some("/api/admin/console"));
    assert_eq!(row.last_used_at, Some(Timestamp::from_micros(START)));

    svc.revoke(token.row.id).await;
    let (status, body) = svc.console(Some(token.token.expose()), "db:health").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), "Token has been revoked");
    assert_eq!(svc.runs(), 1, "the revoked token ran nothing");
}

async fn a_token_expires_on_the_injected_clock(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc
        .create("short", &["console:exec"], Some(Duration::from_secs(60)))
        .await;
    assert_eq!(
        svc.console(Some(token.token.expose()), "ping").await.0,
        StatusCode::OK
    );
    svc.clock.advance(Duration::from_secs(120));
    let (status, body) = svc.console(Some(token.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), "Token has expired");
}

async fn a_rotated_token_works_through_its_grace_period_only(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let old = svc.create("deploy", &["console:exec"], None).await;
    let new = svc.rotate(old.row.id, Duration::from_secs(3600)).await;
    assert_eq!(new.row.rotated_from, Some(old.row.id));
    assert_eq!(new.row.scopes, old.row.scopes);
    assert_eq!(
        svc.console(Some(old.token.expose()), "ping").await.0,
        StatusCode::OK
    );
    assert_eq!(
        svc.console(Some(new.token.expose()), "ping").await.0,
        StatusCode::OK
    );
    svc.clock.advance(Duration::from_secs(3601));
    let (status, body) = svc.console(Some(old.token.expose()), "ping").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body), "Token has expired");
    assert_eq!(
        svc.console(Some(new.token.expose()), "ping").await.0,
        StatusCode::OK
    );
}

async fn the_audit_view_holds_every_action_and_no_secret(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let used = svc.create("used", &["console:exec"], None).await;
    let narrow = svc.create("narrow", &["registry:read"], None).await;
    assert_eq!(
        svc.console(Some(used.token.expose()), "ping").await.0,
        StatusCode::OK
    );
    assert_eq!(
        svc.console(Some(narrow.token.expose()), "ping").await.0,
        StatusCode::FORBIDDEN
    );
    svc.revoke(narrow.row.id).await;
    let successor = svc.rotate(used.row.id, Duration::ZERO).await;
    let rows = svc.audit().await;
    let actions: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.action).collect();
    for action in [
        "API_TOKEN_CREATED",
        "API_TOKEN_USED",
        "API_TOKEN_DENIED",
        "API_TOKEN_REVOKED",
        "API_TOKEN_ROTATED",
    ] {
        assert!(
            actions.contains(action),
            "{action} missing from {actions:?}"
        );
    }
    let text = serde_json::to_string(&rows).expect("json");
    for minted in [&used, &narrow, &successor] {
        for (what, canary) in secret_forms(minted) {
            assert!(
                !text.contains(&canary),
                "the audit view contains a token's {what}"
            );
        }
    }
}

/// A token's plaintext and its hash in the forms a leak would take.
fn secret_forms(minted: &Minted) -> Vec<(&'static str, String)> {
    let hash = minted.token.hash().0;
    vec![
        ("plaintext", minted.token.expose().to_owned()),
        ("hash (hex)", hex::encode(hash)),
        ("hash (HEX)", hex::encode_upper(hash)),
        (
            "hash (base64)",
            base64::engine::general_purpose::STANDARD.encode(hash),
        ),
        (
            "hash (base64url)",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
        ),
    ]
}

async fn an_append_failure_answers_503_and_runs_nothing(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc
        .create("ops", &["console:exec", "logs:read"], None)
        .await;
    assert_eq!(
        svc.console(Some(token.token.expose()), "ping").await.0,
        StatusCode::OK
    );
    let runs = svc.runs();
    db.take_away().await;
    let (status, body) = svc.console(Some(token.token.expose()), "db:health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(&body), "Audit log unavailable");
    assert_eq!(svc.runs(), runs, "the command did not run");
    if let TestDb::Postgres(_) = db {
        // With the database gone altogether, the node is not ready either.
        let (status, body, _) = svc
            .send(reqwest::Method::GET, "/readyz", HeaderMap::new(), None)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(error_of(&body), "Database unavailable");
    }
    let (status, _, _) = svc
        .send(reqwest::Method::GET, "/healthz", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "the process itself is alive");
}

async fn bad_input_gets_a_clear_4xx_and_appends_nothing(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc.create("admin", &["admin"], None).await;
    let bearer = format!("Bearer {}", token.token.expose());
    let head = svc.head().await;
    let headers = |pairs: &[(&str, &[u8])]| {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        h
    };
    let json_auth = headers(&[
        ("content-type", b"application/json"),
        ("authorization", bearer.as_bytes()),
    ]);
    let mut bad_checksum = token.token.expose().to_owned();
    let last = bad_checksum.pop().expect("char");
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let cases: Vec<(&str, HeaderMap, Vec<u8>, u16, &str)> = vec![
        (
            "invalid JSON",
            json_auth.clone(),
            b"{\"cmd\": ".to_vec(),
            400,
            "Invalid JSON",
        ),
        (
            "not an object",
            json_auth.clone(),
            b"[1,2]".to_vec(),
            400,
            "JSON object",
        ),
        (
            "wrong content type",
            headers(&[
                ("content-type", b"text/plain"),
                ("authorization", bearer.as_bytes()),
            ]),
            br#"{"cmd":"ping"}"#.to_vec(),
            415,
            "application/json",
        ),
        (
            "missing cmd",
            json_auth.clone(),
            b"{}".to_vec(),
            400,
            "known commands: db:health",
        ),
        (
            "cmd not a string",
            json_auth.clone(),
            br#"{"cmd": 7}"#.to_vec(),
            400,
            "\"cmd\" must be a string",
        ),
        (
            "unknown cmd",
            json_auth.clone(),
            br#"{"cmd": "rm -rf"}"#.to_vec(),
            400,
            "known commands",
        ),
        (
            "args not an object",
            json_auth.clone(),
            br#"{"cmd": "ping", "args": 3}"#.to_vec(),
            400,
            "\"args\" must be a JSON object",
        ),
        (
            "args of the wrong type",
            json_auth.clone(),
            br#"{"cmd": "tokens:stale", "args": {"unused_days": "ninety"}}"#.to_vec(),
            400,
            "Invalid args for tokens:stale",
        ),
        (
            "unknown arg",
            json_auth.clone(),
            br#"{"cmd": "ping", "args": {"force": true}}"#.to_vec(),
            400,
            "Invalid args for ping: Unknown field \"force\"; accepted: none",
        ),
        (
            "oversized body",
            json_auth.clone(),
            vec![b' '; 70 * 1024],
            413,
            "larger than the limit",
        ),
        (
            "invalid UTF-8 in Authorization",
            headers(&[
                ("content-type", b"application/json"),
                ("authorization", b"Bearer \xff\xfe"),
            ]),
            br#"{"cmd":"ping"}"#.to_vec(),
            400,
            "Authorization header",
        ),
        (
            "bad checksum",
            headers(&[
                ("content-type", b"application/json"),
                ("authorization", format!("Bearer {bad_checksum}").as_bytes()),
            ]),
            br#"{"cmd":"ping"}"#.to_vec(),
            401,
            "Malformed token",
        ),
        (
            "another scheme",
            headers(&[
                ("content-type", b"application/json"),
                ("authorization", b"Basic dXNlcjpwYXNz"),
            ]),
            br#"{"cmd":"ping"}"#.to_vec(),
            401,
            "expected Bearer",
        ),
    ];
    for (what, headers, body, status, message) in cases {
        let (got, answer, _) = svc
            .send(
                reqwest::Method::POST,
                "/api/admin/console",
                headers,
                Some(body),
            )
            .await;
        assert_eq!(got.as_u16(), status, "{what}: {answer}");
        assert!(error_of(&answer).contains(message), "{what}: {answer}");
        assert!(
            !error_of(&answer).contains(token.token.expose()),
            "{what}: the error echoes the token"
        );
    }
    let (got, answer, _) = svc
        .send(
            reqwest::Method::GET,
            "/api/admin/console",
            HeaderMap::new(),
            None,
        )
        .await;
    assert_eq!(got, StatusCode::METHOD_NOT_ALLOWED, "{answer}");
    assert_eq!(svc.head().await, head, "nothing was appended");
    assert_eq!(svc.runs(), 0);
}

async fn the_verify_api_answers_every_code_and_records_the_use(db: TestDb) {
    let svc = start(&db, Switches::default()).await;
    let caller = svc.create("gateway", &["tokens:verify"], None).await;
    let target = svc
        .create("worker", &["registry:read", "logs:read"], None)
        .await;
    let revoked = svc.create("gone", &["registry:read"], None).await;
    svc.revoke(revoked.row.id).await;
    let short = svc
        .create("short", &["registry:read"], Some(Duration::from_secs(60)))
        .await;
    let prefix = TokenPrefix::default();
    let stranger = token::mint(&prefix, Environment::Test).expect("mint");
    let live = token::mint(&prefix, Environment::Live).expect("mint");
    let verify = |token: String, scopes: Value| {
        let svc = &svc;
        let caller = caller.token.expose().to_owned();
        async move {
            svc.post(
                "/v1/verify",
                Some(&caller),
                &json!({"token": token, "scopes": scopes, "ip": "203.0.113.7", "path": "/registry/pull"}),
            )
            .await
        }
    };
    let (status, body) = verify(target.token.expose().into(), json!(["registry:read"])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["valid"], true);
    assert_eq!(body["code"], "VALID");
    assert_eq!(body["token_id"], json!(target.row.id));
    assert_eq!(body["scopes"], json!(["logs:read", "registry:read"]));
    assert_eq!(
        body["expires_at"],
        json!(target.row.expires_at.to_rfc3339())
    );
    let row = svc.token(target.row.id).await;
    assert_eq!(row.last_used_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(row.last_used_path.as_deref(), Some("/registry/pull"));

    let codes = [
        (
            target.token.expose().to_owned(),
            json!(["registry:write"]),
            "INSUFFICIENT_SCOPE",
        ),
        (revoked.token.expose().to_owned(), json!([]), "REVOKED"),
        ("tl_test_notatoken".to_owned(), json!([]), "MALFORMED"),
        (stranger.expose().to_owned(), json!([]), "NOT_FOUND"),
        (live.expose().to_owned(), json!([]), "ENV_MISMATCH"),
    ];
    for (token, scopes, code) in codes {
        let (status, body) = verify(token, scopes).await;
        assert_eq!(status, StatusCode::OK, "{code}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["valid"], false);
    }
    svc.clock.advance(Duration::from_secs(120));
    let (_, body) = verify(short.token.expose().into(), json!([])).await;
    assert_eq!(body["code"], "EXPIRED", "{body}");

    let denied = svc.token(target.row.id).await;
    assert_eq!((denied.use_count, denied.denied_count), (1, 1));
    let caller_row = svc.token(caller.row.id).await;
    assert_eq!(
        caller_row.use_count, 7,
        "every verify call is a recorded use of the caller"
    );

    // A caller without tokens:verify is refused, and bad bodies are answered 400.
    let (status, body) = svc
        .post(
            "/v1/verify",
            Some(target.token.expose()),
            &json!({"token": caller.token.expose()}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body), "Missing required scope: tokens:verify");
    for (bad, message) in [
        (json!({}), "Missing \"token\""),
        (json!({"token": 5}), "\"token\" must be a string"),
        (
            json!({"token": "x", "scopes": ["root"]}),
            "\"scopes[0]\": unknown scope \"root\"; known scopes: admin",
        ),
        (json!({"token": "x", "ip": "not-an-ip"}), "IPv4 or IPv6"),
        (json!({"token": "x", "extra": 1}), "Unknown field"),
    ] {
        let (status, body) = svc
            .post("/v1/verify", Some(caller.token.expose()), &bad)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(error_of(&body).contains(message), "{bad}: {body}");
    }
}

async fn the_client_ip_comes_from_the_socket_unless_the_proxy_is_trusted(db: TestDb) {
    for (trust_proxy_hops, expected) in [(0, "127.0.0.1"), (1, "198.51.100.7")] {
        let svc = start(
            &db,
            Switches {
                trust_proxy_hops,
                ..console_on()
            },
        )
        .await;
        let token = svc.create("proxied", &["console:exec"], None).await;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).expect("h"),
        );
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7"),
        );
        let (status, _, answer_headers) = svc
            .send(
                reqwest::Method::POST,
                "/api/admin/console",
                headers,
                Some(br#"{"cmd":"ping"}"#.to_vec()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer_headers.contains_key("x-request-id"));
        let row = svc.token(token.row.id).await;
        assert_eq!(
            row.last_used_ip.as_deref(),
            Some(expected),
            "TRUST_PROXY_HOPS={trust_proxy_hops}"
        );
    }
}

async fn tokens_stale_lists_what_the_seed_guide_monitors(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let admin = svc
        .create("root", &["admin"], Some(Duration::from_secs(365 * 86_400)))
        .await;
    let expiring = svc
        .create(
            "soon",
            &["registry:read"],
            Some(Duration::from_secs(3 * 86_400)),
        )
        .await;
    let idle = svc
        .create(
            "idle",
            &["registry:read"],
            Some(Duration::from_secs(300 * 86_400)),
        )
        .await;
    let (status, body) = svc
        .console(Some(admin.token.expose()), "tokens:stale")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let flags = |body: &Value, id: Uuid| -> Vec<String> {
        body["result"]["tokens"]
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["token_id"] == json!(id))
            .map(|t| {
                t["flags"]
                    .as_array()
                    .expect("flags")
                    .iter()
                    .map(|f| f.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(flags(&body, admin.row.id), ["admin_scope", "new_ip"]);
    assert_eq!(flags(&body, expiring.row.id), ["expiring_soon"]);
    assert!(flags(&body, idle.row.id).is_empty(), "{body}");

    svc.clock.advance(Duration::from_secs(91 * 86_400));
    let (_, body) = svc
        .console(Some(admin.token.expose()), "tokens:stale")
        .await;
    assert_eq!(flags(&body, idle.row.id), ["unused"]);
    assert_eq!(
        flags(&body, admin.row.id),
        ["admin_scope"],
        "127.0.0.1 is no longer new"
    );
    assert!(
        flags(&body, expiring.row.id).is_empty(),
        "expired tokens are not listed"
    );

    let (status, body) = svc
        .post(
            "/api/admin/console",
            Some(admin.token.expose()),
            &json!({"cmd": "tokens:stale", "args": {"unused_days": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("must be positive"), "{body}");
}

async fn console_commands_report_the_log_and_projections(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc
        .create("ops", &["console:exec", "logs:read"], None)
        .await;
    let (status, body) = svc
        .console(Some(token.token.expose()), "events:verify")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["ok"], true);
    assert!(body["result"]["events"].as_u64().expect("events") >= 1);
    let (status, body) = svc
        .console(Some(token.token.expose()), "projections:status")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["result"]["projections"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"api_tokens") && names.contains(&"audit_logs"),
        "{body}"
    );
    let (status, body, _) = svc
        .send(reqwest::Method::GET, "/readyz", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["head"].as_u64(), Some(svc.head().await));
    let (status, body, _) = svc
        .send(
            reqwest::Method::GET,
            "/admin/tokens",
            {
                let mut h = HeaderMap::new();
                h.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).expect("h"),
                );
                h
            },
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&body),
        "API tokens are not accepted on this endpoint"
    );
}

async fn a_use_decided_before_a_revocation_is_recorded_as_denied(db: TestDb) {
    let svc = start(&db, console_on()).await;
    let token = svc.create("raced", &["console:exec"], None).await;
    // The view a request took just before another writer revoked the token.
    let stale = svc.ledger().entry(token.row.id).expect("cached");
    svc.revoke(token.row.id).await;
    let attempt = tokenledger::lifecycle::UseAttempt {
        required_any: vec![Scope::ConsoleExec],
        server_environment: Environment::Test,
        ip: Some("127.0.0.1".into()),
        method: "POST".into(),
        path: "/api/admin/console".into(),
        command: Some("ping".into()),
        user_agent: None,
    };
    let decision = svc
        .ledger()
        .record_use(&stale, &attempt)
        .await
        .expect("recorded");
    assert!(
        matches!(
            decision,
            tokenledger::lifecycle::UseDecision::Denied(ref d)
                if d.reason == tokenledger_events::DenyReason::Revoked
        ),
        "{decision:?}"
    );
    let trail = svc.audit_of(Some(token.row.id)).await;
    let actions: Vec<&str> = trail.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        ["API_TOKEN_CREATED", "API_TOKEN_REVOKED", "API_TOKEN_DENIED"]
    );
}

/// DESIGN invariant 5: one request records all its uses in one append.
async fn a_verify_call_records_both_uses_in_one_append(db: TestDb) {
    let svc = start(&db, Switches::default()).await;
    let caller = svc.create("verifier", &["tokens:verify"], None).await;
    let target = svc.create("target", &["registry:read"], None).await;
    for (scopes, code) in [
        (json!(["registry:read"]), "VALID"),
        (json!(["admin"]), "INSUFFICIENT_SCOPE"),
    ] {
        let (appends, head) = (svc.ledger().appends(), svc.head().await);
        let (status, body) = svc
            .post(
                "/v1/verify",
                Some(caller.token.expose()),
                &json!({"token": target.token.expose(), "scopes": scopes}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"], code);
        assert_eq!(svc.ledger().appends() - appends, 1, "one append");
        assert_eq!(svc.head().await - head, 2, "holding both uses");
    }
    // A token that is not ours records only the caller's use.
    let head = svc.head().await;
    let (_, body) = svc
        .post(
            "/v1/verify",
            Some(caller.token.expose()),
            &json!({"token": "tl_test_nope"}),
        )
        .await;
    assert_eq!(body["code"], "MALFORMED");
    assert_eq!(svc.head().await - head, 1);
}

crate::on_both_backends!(
    a_verify_call_records_both_uses_in_one_append,
    switches_off_hide_the_console_and_refuse_tokens,
    the_guides_scope_check_refuses_logs_read_and_admits_console_exec,
    a_working_token_is_refused_once_revoked,
    a_token_expires_on_the_injected_clock,
    a_rotated_token_works_through_its_grace_period_only,
    the_audit_view_holds_every_action_and_no_secret,
    an_append_failure_answers_503_and_runs_nothing,
    bad_input_gets_a_clear_4xx_and_appends_nothing,
    the_verify_api_answers_every_code_and_records_the_use,
    the_client_ip_comes_from_the_socket_unless_the_proxy_is_trusted,
    tokens_stale_lists_what_the_seed_guide_monitors,
    console_commands_report_the_log_and_projections,
    a_use_decided_before_a_revocation_is_recorded_as_denied,
);
