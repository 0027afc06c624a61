//! Forensics for reviewers, against a known history on both backends: the token table as of
//! five instants (every field), the incident report's five steps, a token's history, and bad
//! input refused with nothing appended.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokenledger::app::{AsOf, QueryError, RevokeStep, TokenView};
use tokenledger::config::Switches;
use tokenledger::session::DevKey;
use tokenledger_events::Timestamp;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, console_on, spawn_app_with, stderr, stdout, tokenledger};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Use `token` on the console from `ip` (the service trusts one proxy hop).
async fn use_from(svc: &TestApp, token: &str, ip: &str) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("h"),
    );
    headers.insert("x-forwarded-for", HeaderValue::from_str(ip).expect("h"));
    let (status, body, _) = svc
        .send(
            reqwest::Method::POST,
            "/api/admin/console",
            headers,
            Some(br#"{"cmd":"ping"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The live token table, every token, as the list shows it now.
async fn live_table(svc: &TestApp) -> Vec<TokenView> {
    let now = svc.now();
    let mut rows: Vec<TokenView> = svc
        .ledger()
        .tokens()
        .await
        .expect("tokens")
        .iter()
        .map(|r| TokenView::new(r, now))
        .collect();
    rows.sort_by_key(|v| v.id);
    rows
}

/// A moment of the history: when, the head then, and the table as it was.
struct Moment {
    at: Timestamp,
    head: u64,
    table: Vec<TokenView>,
}

async fn moment(svc: &TestApp) -> Moment {
    Moment {
        at: svc.now(),
        head: svc.head().await,
        table: live_table(svc).await,
    }
}

struct History {
    svc: TestApp,
    a: Uuid,
    b: Uuid,
    c: Uuid,
    unused: Uuid,
    moments: Vec<Moment>,
}

/// Create A; use it from three addresses over two days; rotate it to B; use both; revoke B.
/// C, by the same creator, shares an address; `unused` is never used.
async fn build(db: &TestDb) -> History {
    let svc = spawn_app_with(db, |c| {
        c.switches = Switches {
            trust_proxy_hops: 1,
            ..console_on()
        };
    })
    .await;
    let mut moments = vec![moment(&svc).await];
    svc.clock.advance(HOUR);

    let a = svc
        .create("ci-deploy", &["console:exec"], Some(30 * DAY))
        .await;
    svc.clock.advance(HOUR);
    moments.push(moment(&svc).await);

    svc.clock.advance(HOUR);
    use_from(&svc, a.token.expose(), "192.0.2.1").await;
    svc.clock.advance(Duration::from_secs(60));
    use_from(&svc, a.token.expose(), "192.0.2.1").await;
    svc.clock.advance(DAY);
    use_from(&svc, a.token.expose(), "192.0.2.2").await;
    let c = svc
        .create("reporting", &["console:exec", "logs:read"], None)
        .await;
    use_from(&svc, c.token.expose(), "192.0.2.3").await;
    svc.clock.advance(HOUR);
    moments.push(moment(&svc).await);

    svc.clock.advance(DAY);
    let b = svc.rotate(a.row.id, 6 * HOUR).await;
    use_from(&svc, a.token.expose(), "192.0.2.3").await;
    use_from(&svc, b.token.expose(), "192.0.2.3").await;
    svc.clock.advance(HOUR);
    moments.push(moment(&svc).await);

    svc.clock.advance(DAY);
    svc.ledger()
        .revoke(b.row.id, "test:admin", Some("leaked in a log".into()))
        .await
        .expect("revoke");
    let unused = svc.create("never-used", &["tokens:verify"], None).await;
    svc.clock.advance(HOUR);
    moments.push(moment(&svc).await);

    History {
        svc,
        a: a.row.id,
        b: b.row.id,
        c: c.row.id,
        unused: unused.row.id,
        moments,
    }
}

async fn as_of_table(svc: &TestApp, as_of: AsOf) -> (u64, Vec<TokenView>) {
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        // Pages of two: the cursor is exercised too.
        let page = svc
            .queries()
            .forensics()
            .tokens_as_of(as_of, cursor, Some(2))
            .await
            .expect("as of");
        let position = page.as_of.position;
        rows.extend(page.tokens);
        assert!(rows.len() as u64 <= page.total);
        match page.next {
            Some(next) => {
                cursor = Some(tokenledger::app::TokenCursor::parse(&next).expect("cursor"))
            }
            None => return (position, rows),
        }
    }
}

async fn the_table_as_of_five_instants_is_the_table_as_it_was(h: &History) {
    let svc = &h.svc;
    for (i, m) in h.moments.iter().enumerate() {
        let (position, table) = as_of_table(svc, AsOf::At(m.at)).await;
        assert_eq!(position, m.head, "instant {i}: the position");
        assert_eq!(table, m.table, "instant {i}: every field of every token");
        // The same by position, with statuses judged at the position's own time.
        let (_, by_position) = as_of_table(svc, AsOf::Position(m.head)).await;
        assert_eq!(by_position.len(), m.table.len(), "instant {i} by position");
    }
    // What the table said, spelled out at two of them.
    let first_uses = &h.moments[2].table;
    let a = first_uses.iter().find(|t| t.id == h.a).expect("A");
    assert_eq!(
        (a.use_count, a.last_used_ip.as_deref()),
        (3, Some("192.0.2.2"))
    );
    assert_eq!(a.status.as_str(), "active");
    let after_rotation = &h.moments[3].table;
    let a = after_rotation.iter().find(|t| t.id == h.a).expect("A");
    assert_eq!(a.status.as_str(), "rotated_in_grace");
    assert_eq!(a.rotated_to, Some(h.b));
    assert_eq!(a.last_used_ip.as_deref(), Some("192.0.2.3"));
    let b = after_rotation.iter().find(|t| t.id == h.b).expect("B");
    assert_eq!((b.rotated_from, b.status.as_str()), (Some(h.a), "active"));
    let last = &h.moments[4].table;
    let b = last.iter().find(|t| t.id == h.b).expect("B");
    assert_eq!(b.status.as_str(), "revoked");
    assert_eq!(b.revoke_reason.as_deref(), Some("leaked in a log"));
    assert!(h.moments[0].table.is_empty());

    // One token as of an instant, and before it existed.
    let (_, view) = svc
        .queries()
        .forensics()
        .token_as_of(h.b, AsOf::At(h.moments[3].at))
        .await
        .expect("show as of");
    assert_eq!(
        view.as_ref(),
        h.moments[3].table.iter().find(|t| t.id == h.b)
    );
    let (_, before) = svc
        .queries()
        .forensics()
        .token_as_of(h.b, AsOf::At(h.moments[2].at))
        .await
        .expect("show as of");
    assert_eq!(before, None);

    // In the future: refused, naming the head.
    let future = svc
        .queries()
        .forensics()
        .tokens_as_of(AsOf::At(svc.now().plus(DAY)), None, None)
        .await
        .expect_err("future");
    let QueryError::BadInput(why) = future else {
        panic!("{future:?}")
    };
    assert!(
        why.contains(&format!("head is position {}", svc.head().await)),
        "{why}"
    );
    let past_head = svc
        .queries()
        .forensics()
        .tokens_as_of(AsOf::Position(svc.head().await + 1), None, None)
        .await;
    assert!(matches!(past_head, Err(QueryError::BadInput(_))));
}

async fn the_incident_report_walks_the_five_steps(h: &History) {
    let svc = &h.svc;
    svc.checkpointer().sign_head().await.expect("sign");
    let admits = tokenledger::http::policy::admitted;
    let not_asked = || RevokeStep {
        asked: false,
        outcome: String::new(),
        revoked_at: None,
    };
    let r = svc
        .queries()
        .forensics()
        .incident(h.a, None, not_asked(), &admits)
        .await
        .expect("report");

    // 2. The trail: four allowed uses over three days, all `console ping`; the rotation.
    assert_eq!((r.trail.totals.used, r.trail.totals.denied), (4, 0));
    let days: Vec<(String, u64)> = r
        .trail
        .per_day
        .iter()
        .map(|(d, c)| (d.clone(), c.used))
        .collect();
    assert_eq!(days.iter().map(|(_, n)| n).sum::<u64>(), 4);
    assert_eq!(days.len(), 3, "{days:?}");
    assert_eq!(r.trail.per_command["console ping"].used, 4);
    let kinds: Vec<&str> = r
        .trail
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(kinds, ["TokenCreated", "TokenRotated"]);
    assert!(r.trail.events[1].what.contains(&h.b.to_string()));

    // 3. Every address with counts, first and last seen; all new in a window from creation.
    let ips: Vec<(&str, u64, bool)> = r
        .addresses
        .iter()
        .map(|a| (a.value.as_str(), a.used, a.new == Some(true)))
        .collect();
    assert_eq!(
        ips,
        [
            ("192.0.2.1", 2, true),
            ("192.0.2.2", 1, true),
            ("192.0.2.3", 1, true)
        ]
    );
    assert!(r.addresses[0].first_seen < r.addresses[0].last_seen);
    assert_eq!(r.paths.len(), 1);
    assert_eq!(r.paths[0].value, "/api/admin/console");

    // 4. Related: B both as the successor and by address; C by creator and by address.
    let chain: Vec<Uuid> = r.related.rotation_chain.iter().map(|x| x.id).collect();
    assert_eq!(chain, [h.b]);
    assert_eq!(r.related.rotation_chain[0].status, "revoked");
    let by_creator: Vec<Uuid> = r.related.same_creator.iter().map(|x| x.id).collect();
    for id in [h.b, h.c, h.unused] {
        assert!(by_creator.contains(&id), "{id} by the same creator");
    }
    let by_address: Vec<Uuid> = r.related.same_addresses.iter().map(|x| x.id).collect();
    assert_eq!(by_address.len(), 2);
    assert!(by_address.contains(&h.b) && by_address.contains(&h.c));
    let c = r
        .related
        .same_addresses
        .iter()
        .find(|x| x.id == h.c)
        .expect("C");
    assert!(c.relation.contains("192.0.2.3"), "{}", c.relation);
    assert_eq!(
        c.revoke,
        format!("tokenledger token revoke {} --reason incident", h.c)
    );

    // 5. Scopes over the chain, and what they admitted.
    assert_eq!(r.scopes.len(), 2);
    assert_eq!(r.scopes[0].token_id, h.a);
    assert_eq!(r.scopes[1].token_id, h.b);
    assert!(r.scopes[1].until.is_some(), "B stopped when revoked");
    assert!(
        r.scopes[0]
            .admits
            .routes
            .contains(&"POST /api/admin/console".to_owned())
    );
    assert!(
        r.scopes[0]
            .admits
            .console_commands
            .contains(&"ping".to_owned())
    );
    assert!(
        !r.scopes[0]
            .admits
            .console_commands
            .contains(&"tokens:stale".to_owned()),
        "narrowed to admin"
    );

    // The covering checkpoint.
    let covering = r
        .checkpoint
        .checkpoint
        .as_ref()
        .expect("a checkpoint covers it");
    assert!(covering.size >= r.to_position);

    // A window from the second day: the first address is no longer new.
    let since = h.moments[2].at.minus(HOUR);
    let r = svc
        .queries()
        .forensics()
        .incident(h.a, Some(since), not_asked(), &admits)
        .await
        .expect("report");
    let new: Vec<(&str, bool)> = r
        .addresses
        .iter()
        .map(|a| (a.value.as_str(), a.new == Some(true)))
        .collect();
    assert_eq!(new, [("192.0.2.2", true), ("192.0.2.3", true)]);

    // Never used: every section, saying so.
    let r = svc
        .queries()
        .forensics()
        .incident(h.unused, None, not_asked(), &admits)
        .await
        .expect("report");
    assert_eq!(r.trail.totals.used, 0);
    assert!(r.addresses.is_empty() && r.paths.is_empty());
    assert_eq!(r.scopes.len(), 1);
    assert!(
        r.scopes[0]
            .admits
            .routes
            .contains(&"POST /v1/verify".to_owned())
    );
}

async fn history_tells_each_event(h: &History) {
    let (_, chapters) = h
        .svc
        .queries()
        .forensics()
        .history(h.a)
        .await
        .expect("history");
    let json = serde_json::to_value(&chapters).expect("json");
    let kinds: Vec<&str> = json
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["event", "uses", "event", "uses"]);
    assert_eq!(json[1]["count"], 3);
    assert_eq!(
        json[1]["ips"],
        serde_json::json!(["192.0.2.1", "192.0.2.2"])
    );
    assert!(json[2]["what"].as_str().expect("what").contains("rotated"));
}

async fn forensics_on(db: TestDb) {
    let h = build(&db).await;
    the_table_as_of_five_instants_is_the_table_as_it_was(&h).await;
    the_incident_report_walks_the_five_steps(&h).await;
    history_tells_each_event(&h).await;
    h.svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_history_replays_as_of_five_instants_and_as_an_incident_report_on_sqlite() {
    forensics_on(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_history_replays_as_of_five_instants_and_as_an_incident_report_on_postgres() {
    let Some(db) = TestDb::postgres("forensics").await else {
        return;
    };
    forensics_on(db).await;
}

/// The reviewer's commands over a real process: bad input is one line naming the flag, exit 2,
/// and nothing appended; `incident --revoke` is the only writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_refuse_bad_input_and_only_revoke_writes() {
    let db = TestDb::sqlite();
    let url = db.url_string();
    let created = tokenledger(
        &url,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "console:exec",
            "--json",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let id = serde_json::from_str::<Value>(&stdout(&created)).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let head = || {
        let out = tokenledger(&url, &["token", "list", "--as-of", "position:999999"]);
        stderr(&out)
    };
    let before = head();
    assert!(before.contains("head is position 1"), "{before}");

    let unknown = Uuid::now_v7().to_string();
    for (args, names) in [
        (vec!["token", "list", "--as-of", "yesterday-ish"], "--as-of"),
        (vec!["token", "list", "--as-of", "2999-01-01"], "--as-of"),
        (
            vec!["token", "show", &id, "--as-of", "position:x"],
            "--as-of",
        ),
        (vec!["incident", &unknown], "no token with id"),
        (vec!["incident", "not-a-uuid"], "is not a token id"),
        (vec!["incident", &id, "--since", "2999-01-01"], "--since"),
        (vec!["incident", &id, "--since", "sometime"], "--since"),
        (vec!["history", &unknown], "no token with id"),
    ] {
        let out = tokenledger(&url, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    let combined = tokenledger(
        &url,
        &["token", "list", "--as-of", "3d", "--status", "active"],
    );
    assert_eq!(combined.status.code(), Some(2));
    assert!(
        stderr(&combined).contains("--status"),
        "{}",
        stderr(&combined)
    );
    assert_eq!(head(), before, "nothing appended");

    let report = tokenledger(&url, &["incident", &id]);
    assert!(report.status.success(), "{}", stderr(&report));
    let text = stdout(&report);
    for section in [
        "1. Revoke",
        "2. Audit trail",
        "no uses",
        "3. Addresses",
        "4. Related",
        "5. Scopes",
        "Checkpoint",
    ] {
        assert!(text.contains(section), "{section}: {text}");
    }
    assert_eq!(head(), before, "a report without --revoke writes nothing");

    let dir = tempfile::tempdir().expect("dir");
    let html = dir.path().join("incident.html");
    let revoked = tokenledger(
        &url,
        &[
            "incident",
            &id,
            "--revoke",
            "--html",
            html.to_str().expect("path"),
        ],
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        stdout(&revoked).contains("revoked now"),
        "{}",
        stdout(&revoked)
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("incident-revoke-outcome") && page.contains("revoked now"));
    assert!(!page.contains("<script"), "a report file runs nothing");
    let shown = tokenledger(&url, &["token", "show", &id, "--json"]);
    let shown: Value = serde_json::from_str(&stdout(&shown)).expect("json");
    assert_eq!(shown["revoke_reason"], "incident");
    assert!(
        shown["revoked_by"]
            .as_str()
            .expect("actor")
            .starts_with("cli:")
    );

    let again = tokenledger(&url, &["incident", &id, "--revoke", "--json"]);
    let again: Value = serde_json::from_str(&stdout(&again)).expect("json");
    assert!(
        again["revocation"]["outcome"]
            .as_str()
            .expect("outcome")
            .contains("already revoked")
    );

    let history = tokenledger(&url, &["history", &id]);
    let text = stdout(&history);
    assert!(text.contains("created \"ci\""), "{text}");
    assert!(text.contains("reason: incident"), "{text}");
}

/// The admin API and page: `as_of` on the token list, the incident report and its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_and_page_answer_as_of_and_incident() {
    let db = TestDb::sqlite();
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let svc = spawn_app_with(&db, |_| {}).await;
    let jwt = key.sign("user_reviewer", true, svc.now()).expect("sign");
    let token = svc.create("ci", &["console:exec"], None).await;
    let created_at = svc.now();
    svc.clock.advance(HOUR);
    svc.revoke(token.row.id).await;

    let get = |path: String| {
        let svc = &svc;
        let jwt = jwt.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {jwt}")).expect("h"),
            );
            svc.send_text(reqwest::Method::GET, &path, headers, None)
                .await
        }
    };
    let at = created_at.to_rfc3339();
    let (status, body, _) = get(format!("/api/admin/tokens?as_of={at}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(page["as_of"]["position"], 1);
    assert_eq!(
        page["tokens"][0]["status"], "active",
        "not yet revoked then"
    );
    assert_eq!(page["total"], 1);

    for (query, says) in [
        ("as_of=nonsense", "\"as_of\" is not a point in time"),
        ("as_of=2999-01-01", "\"as_of\" is in the future"),
        ("as_of=3d&status=active", "combines with"),
    ] {
        let (status, body, _) = get(format!("/api/admin/tokens?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).expect("json");
        let error = error["error"].as_str().expect("error");
        assert!(error.contains(says), "{query}: {error}");
    }

    let (status, body, _) = get(format!("/api/admin/tokens/{}/incident", token.row.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["token"]["status"], "revoked");
    assert_eq!(report["trail"]["totals"]["used"], 0);
    let (status, body, _) = get(format!(
        "/api/admin/tokens/{}/incident?since=2999-01-01",
        token.row.id
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, html, _) = get(format!("/admin/tokens/{}/incident", token.row.id)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("incident-trail") && html.contains("incident-checkpoint"));
    let (status, html, _) = get(format!("/admin/tokens?as_of={at}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("as-of-tokens") && html.contains("data-status=\"active\""));
    svc.stop().await;
}
