//! A database written before the compact event format (`tests/fixtures/v1-format.db`: schema
//! version 1 bodies and an `audit_logs` table) still opens, migrates, verifies and serves; what
//! is appended after it is written in the current format, and the chain runs through both.

use serde_json::json;
use sqlx::{Connection as _, Row as _};
use tokenledger_events::Timestamp;

use crate::helpers::{TestDb, console_on, spawn_app_with, stdout, tokenledger};

/// `verifier` (tokens:verify, logs:read), a throwaway token that exists only in the fixture.
const VERIFIER: &str = "tl_test_g8RBXHSQYWB5lw1fAH7YJsugv3lZWUdGZq20kCFQUZ70c6jHb";
/// The successor `ci-deploy` got when the fixture rotated it (console:exec).
const SUCCESSOR: &str = "tl_test_Utg4ZtaWnhwQl1zy7loGJNwbMTThG9a82iiSJBGUFBi1kmMew";
/// What `tokenledger verify` printed for the fixture when it was written.
const FIXTURE_HEAD: &str =
    "ok: 13 events, head 5226334579d4aa9db9ce2196f0c7eb9747f723d7479978187042832d2df191bd";
/// 2026-12-07T07:10:00Z: two minutes after the fixture was written, inside the rotation grace.
const AFTER_FIXTURE: i64 = 1_796_627_400_000_000;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-format.db")
}

#[tokio::test]
async fn a_database_of_the_old_event_format_opens_verifies_and_serves() {
    let db = TestDb::sqlite();
    let TestDb::Sqlite(file) = &db else {
        unreachable!("a SQLite database")
    };
    std::fs::copy(fixture(), file.path()).expect("copy the fixture");
    let url = db.url_string();

    // Verified as written, before any migration.
    let out = tokenledger(&url, &["verify"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), FIXTURE_HEAD);

    // The service migrates it and serves its tokens.
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    app.clock.set(Timestamp::from_micros(AFTER_FIXTURE));
    let (status, body) = app
        .post(
            "/v1/verify",
            Some(VERIFIER),
            &json!({"token": SUCCESSOR, "scopes": ["console:exec"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], true, "{body}");
    let (status, body) = app.console(Some(SUCCESSOR), "ping").await;
    assert_eq!(status, 200, "{body}");
    // The revoked token of the fixture stays revoked.
    let old_admin = app
        .queries()
        .audit(&tokenledger::app::AuditQuery {
            action: Some(tokenledger_projections::AuditAction::Revoked),
            ..Default::default()
        })
        .await
        .expect("audit")
        .events;
    assert_eq!(old_admin.len(), 1);
    assert_eq!(
        old_admin[0].details["reason"], "fixture: no longer needed",
        "{:?}",
        old_admin[0]
    );
    let every = app
        .queries()
        .audit(&tokenledger::app::AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        every.total, 16,
        "13 old events, 2 uses by verify, 1 by ping"
    );
    assert_eq!(every.events.len(), 16);
    // The incident report groups old and new bodies alike: its counts are the table's.
    let mut uses = 0;
    for row in app.ledger().tokens().await.expect("tokens") {
        let report = app
            .queries()
            .forensics()
            .incident(
                row.id,
                None,
                tokenledger::app::RevokeStep {
                    asked: false,
                    outcome: String::new(),
                    revoked_at: None,
                },
                &tokenledger::http::policy::admitted,
            )
            .await
            .expect("incident");
        assert_eq!(report.trail.totals.used, row.use_count, "{}", row.name);
        let by_address: u64 = report.addresses.iter().map(|a| a.used).sum();
        assert_eq!(by_address, row.use_count, "{}", row.name);
        uses += row.use_count;
    }
    assert!(uses >= 5, "the fixture's uses and the new ones: {uses}");
    app.stop().await;

    // New events are version 2, and the chain verifies across both formats.
    let out = tokenledger(&url, &["verify"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("ok: 16 events, head "),
        "{}",
        stdout(&out)
    );
    // The tree of the old events was filled in at start-up, and the new ones were added to it.
    let store = tokenledger::store::Store::open(&db.url())
        .await
        .expect("open");
    let events = tokenledger_events::EventLog::read_from(&store, 0, 100)
        .await
        .expect("events");
    let mut edge = tokenledger_events::merkle::RightEdge::new();
    for e in &events {
        edge.append(&tokenledger_events::merkle::leaf_hash(&e.bytes))
            .expect("append");
    }
    assert_eq!(store.tree_root(16).await.expect("root"), edge.root());
    drop(store);
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let versions: Vec<(i64, i32, Vec<u8>)> =
        sqlx::query("SELECT position, schema_version, body FROM events ORDER BY position")
            .fetch_all(&mut conn)
            .await
            .expect("events")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    for (position, version, body) in &versions {
        let expected = if *position <= 13 { 1 } else { 2 };
        assert_eq!(*version, expected, "position {position}");
        // A version 2 body is the payload alone: no envelope key is stored twice.
        let text = String::from_utf8_lossy(body);
        assert_eq!(
            text.contains("\"event_id\""),
            *version == 1,
            "position {position}: {text}"
        );
    }

    // The guide's inspection of `audit_logs` still answers, now from the view.
    let actions: Vec<String> = sqlx::query("SELECT DISTINCT action FROM audit_logs ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .expect("audit_logs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        [
            "API_TOKEN_CREATED",
            "API_TOKEN_DENIED",
            "API_TOKEN_REVOKED",
            "API_TOKEN_ROTATED",
            "API_TOKEN_USED"
        ]
    );
    // The addresses of the old uses were carried into the new projection.
    let uses: i64 = sqlx::query_scalar("SELECT SUM(uses) FROM token_addresses")
        .fetch_one(&mut conn)
        .await
        .expect("token_addresses");
    assert_eq!(uses, 5 + 2, "5 old uses with an address, 2 new ones");
}
