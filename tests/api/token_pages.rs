//! Token lists are pages: the admin API, the page, `token list` and the monitoring list each
//! answer a page in token id order with an opaque cursor to the next, totals and counts, and
//! refuse a cursor they did not issue without repeating it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::sync::Arc;

use tokenledger::app::{STATUSES, Services, TokenCursor, TokenQuery};
use tokenledger::config::TokenSettings;
use tokenledger::scope::Scope;
use tokenledger::session::DevKey;
use tokenledger::token_entry::TokenEntry;
use tokenledger_events::Environment;
use tokenledger_projections::TokenStatus;
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestDb, console_on, error_of, spawn_app_with, stderr, stdout, tokenledger,
};

const NOT_ISSUED: &str =
    "\"cursor\" is not a cursor this service issued; use the \"next\" value of a previous page";

/// A service with the console on and an admin session from its development key.
async fn app_with_admin(db: &TestDb) -> (TestApp, String) {
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let app = spawn_app_with(db, |c| c.switches = console_on()).await;
    let session = key.sign("alice", true, app.now()).expect("session");
    (app, session)
}

fn bearer(session: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {session}")).expect("header"),
    );
    h
}

fn cookie(session: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={session}")).expect("cookie"),
    );
    h
}

async fn get(app: &TestApp, session: &str, path: &str) -> (StatusCode, Value) {
    let (status, body, _) = app
        .send(reqwest::Method::GET, path, bearer(session), None)
        .await;
    (status, body)
}

fn ids_of(page: &Value, key: &str) -> Vec<Uuid> {
    page["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of tokens: {page}"))
        .iter()
        .map(|t| t[key].as_str().expect("id").parse().expect("a UUID"))
        .collect()
}

/// Every id once, ascending.
fn assert_each_once_in_order(seen: &[Uuid], expected: &BTreeSet<Uuid>) {
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids ascend with no repeat"
    );
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        *expected,
        "every token appears"
    );
}

/// The token list with 132 tokens: 120 created (alpha-/beta- names, every third `admin`,
/// every seventh expiring in an hour), every tenth revoked and every tenth from the fifth
/// rotated with a day's grace (12 successors), then two hours pass.
async fn a_mixed_table(app: &TestApp) {
    let mut made = Vec::new();
    for i in 0..120 {
        let name = format!("{}-{i:03}", if i % 2 == 0 { "alpha" } else { "beta" });
        let scopes: &[&str] = if i % 3 == 0 {
            &["admin"]
        } else {
            &["console:exec"]
        };
        let expires = (i % 7 == 0).then(|| Duration::from_secs(3600));
        made.push(app.create(&name, scopes, expires).await.row.id);
    }
    for (i, id) in made.iter().enumerate() {
        if i % 10 == 0 {
            app.revoke(*id).await;
        } else if i % 10 == 5 {
            app.rotate(*id, Duration::from_secs(86_400)).await;
        }
    }
    app.clock.advance(Duration::from_secs(2 * 3600));
}

/// Counts by status at the service's now, from its own rows.
async fn expected_counts(app: &TestApp) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for row in app.ledger().tokens().await.expect("tokens") {
        *counts.entry(row.status_at(app.now()).as_str()).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// 1. The admin API and the CLI: every token once, totals, counts, filters, the clamp
// ---------------------------------------------------------------------------------------------

async fn every_token_appears_once_by_cursor_through_the_api_and_the_cli(db: TestDb) {
    let (app, session) = app_with_admin(&db).await;
    a_mixed_table(&app).await;
    let all: BTreeSet<Uuid> = app
        .ledger()
        .tokens()
        .await
        .expect("tokens")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all.len(), 132);
    let counts = expected_counts(&app).await;
    for status in ["active", "rotated_in_grace", "expired", "revoked"] {
        assert!(counts.get(status).copied().unwrap_or(0) > 0, "{counts:?}");
    }

    // The API, by the default page of 50.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/api/admin/tokens".to_owned();
    loop {
        let (status, page) = get(&app, &session, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 132);
        assert_eq!(page["limit"], 50);
        assert_eq!(page["limit_clamped"], false);
        assert_eq!(page["complete"], false, "three pages, none the whole");
        for (status, n) in &counts {
            assert_eq!(page["counts"][status], *n, "{status}: {}", page["counts"]);
        }
        let ids = ids_of(&page, "id");
        sizes.push(ids.len());
        seen.extend(ids);
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with("t1."), "{next}");
                path = format!("/api/admin/tokens?cursor={next}");
            }
            None => break,
        }
    }
    assert_eq!(sizes, [50, 50, 32]);
    assert_each_once_in_order(&seen, &all);

    // The CLI, by pages of 40, as JSON.
    let url = db.url_string();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["token", "list", "--json", "--limit", "40"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c]);
        }
        let out = tokenledger(&url, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let page: Value = serde_json::from_str(&stdout(&out)).expect("a JSON page");
        assert_eq!(page["total"], 132);
        assert_eq!(page["counts"]["revoked"], counts["revoked"]);
        seen.extend(ids_of(&page, "id"));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_each_once_in_order(&seen, &all);

    // As text: the rows on standard output, the extent and the next cursor on standard error.
    let out = tokenledger(&url, &["token", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 51, "a header and 50 rows");
    let err = stderr(&out);
    assert!(
        err.contains("showing 50 of 132 matching tokens; next page: --cursor t1."),
        "{err}"
    );
    let next = err
        .split("--cursor ")
        .nth(1)
        .expect("a cursor")
        .trim()
        .to_owned();
    let out = tokenledger(
        &url,
        &["token", "list", "--cursor", &next, "--limit", "100"],
    );
    assert_eq!(
        stdout(&out).lines().count(),
        83,
        "a header and the other 82"
    );
    assert!(
        stderr(&out).contains("showing 82 of 132 matching tokens; next page: none"),
        "{}",
        stderr(&out)
    );

    // Filters, alone and together; each page holds only what matches, and the total says how many.
    let rows = app.ledger().tokens().await.expect("tokens");
    let now = app.now();
    let matching = |f: &dyn Fn(&tokenledger_projections::TokenRow) -> bool| {
        rows.iter().filter(|r| f(r)).count() as u64
    };
    let cases: Vec<(&str, u64)> = vec![
        (
            "status=revoked",
            matching(&|r| r.status_at(now) == TokenStatus::Revoked),
        ),
        (
            "status=rotated_in_grace",
            matching(&|r| r.status_at(now) == TokenStatus::RotatedInGrace),
        ),
        ("scope=admin", matching(&|r| r.scopes == ["admin"])),
        (
            "name_prefix=alpha-",
            matching(&|r| r.name.starts_with("alpha-")),
        ),
        (
            "status=active&scope=admin&name_prefix=beta-",
            matching(&|r| {
                r.status_at(now) == TokenStatus::Active
                    && r.scopes == ["admin"]
                    && r.name.starts_with("beta-")
            }),
        ),
        ("environment=test", 132),
        ("environment=live", 0),
        ("status=&scope=&name_prefix=", 132),
    ];
    for (filter, expected) in cases {
        let (status, page) = get(
            &app,
            &session,
            &format!("/api/admin/tokens?{filter}&limit=1000"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{filter}: {page}");
        assert_eq!(page["total"], expected, "{filter}");
        assert_eq!(ids_of(&page, "id").len() as u64, expected, "{filter}");
        assert_eq!(page["complete"], true, "{filter}");
        assert_eq!(
            page["counts"]["revoked"], counts["revoked"],
            "counts ignore filters"
        );
        for t in page["tokens"].as_array().expect("tokens") {
            if filter.contains("status=revoked") {
                assert_eq!(t["status"], "revoked");
            }
            if filter.contains("scope=admin") {
                assert_eq!(t["scopes"], json!(["admin"]));
            }
            if filter.contains("name_prefix=beta-") {
                assert!(t["name"].as_str().expect("name").starts_with("beta-"));
            }
        }
    }
    let revoked = matching(&|r| r.status_at(now) == TokenStatus::Revoked);
    let out = tokenledger(
        &url,
        &[
            "token", "list", "--status", "revoked", "--scope", "admin", "--json",
        ],
    );
    let page: Value = serde_json::from_str(&stdout(&out)).expect("a JSON page");
    assert_eq!(
        page["total"],
        matching(&|r| r.revoked_at.is_some() && r.scopes == ["admin"])
    );
    assert!(page["total"].as_u64().expect("total") < revoked);
    let out = tokenledger(
        &url,
        &[
            "token",
            "list",
            "--name-prefix",
            "beta-",
            "--env",
            "test",
            "--json",
        ],
    );
    let page: Value = serde_json::from_str(&stdout(&out)).expect("a JSON page");
    assert_eq!(page["total"], matching(&|r| r.name.starts_with("beta-")));
    let out = tokenledger(&url, &["token", "list", "--name-prefix", "nobody"]);
    assert_eq!(stdout(&out).trim(), "no matching tokens");

    // Too large a page is lowered, and the answer says so.
    let (_, page) = get(&app, &session, "/api/admin/tokens?limit=5000").await;
    assert_eq!(
        (&page["limit"], &page["limit_clamped"], &page["complete"]),
        (&json!(1000), &json!(true), &json!(true))
    );
    assert_eq!(ids_of(&page, "id").len(), 132);
    let out = tokenledger(&url, &["token", "list", "--limit", "5000"]);
    assert!(
        stderr(&out).contains("--limit is at most 1000"),
        "{}",
        stderr(&out)
    );
    let out = tokenledger(&url, &["token", "list", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));

    // A cursor we did not issue is refused by name, and never repeated.
    let (_, first) = get(&app, &session, "/api/admin/tokens?limit=10").await;
    let issued = first["next"].as_str().expect("a next cursor").to_owned();
    let mut garbled = issued.clone();
    let last = garbled.pop().expect("a character");
    garbled.push(if last == 'A' { 'B' } else { 'A' });
    let secret = "tl_test_4f9aQ2hB7xK1mN3pR5sT7vW9yZ0bD2fH4jL6nP8rT0vX2zB4dF6";
    let uuid = seen[5].to_string();
    let forged = format!("t1.{}", &issued[3..].chars().rev().collect::<String>());
    for bad in [
        garbled.as_str(),
        forged.as_str(),
        uuid.as_str(),
        "t1.",
        secret,
        "50",
    ] {
        let path = format!("/api/admin/tokens?cursor={}", urlencode(bad));
        let (status, body) = get(&app, &session, &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_of(&body), NOT_ISSUED, "{bad}");
        assert!(!body.to_string().contains(bad), "{bad} echoed: {body}");
        let out = tokenledger(&url, &["token", "list", "--cursor", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("--cursor is not a cursor this service issued"),
            "{}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains(bad),
            "{bad} echoed: {}",
            stderr(&out)
        );
    }
    let (status, _) = get(
        &app,
        &session,
        &format!("/api/admin/tokens?cursor={issued}"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the issued cursor itself still works"
    );

    // Other bad parameters: named, with what is accepted, never echoed.
    for (query, message) in [
        (
            format!("status={secret}"),
            "\"status\" must be one of active, rotated_in_grace, expired, revoked",
        ),
        (
            "scope=root".to_owned(),
            "\"scope\" must be one of admin, console:exec, logs:read",
        ),
        (
            "environment=prod".to_owned(),
            "\"environment\" must be live or test",
        ),
        (
            "limit=0".to_owned(),
            "\"limit\" must be a whole number of at least 1",
        ),
        (
            "limit=ten".to_owned(),
            "\"limit\" must be a whole number of at least 1",
        ),
        (
            format!("name_prefix={}", "x".repeat(101)),
            "\"name_prefix\" must be at most 100 characters",
        ),
        (
            "status=active&status=revoked".to_owned(),
            "\"status\" is given more than once",
        ),
        (
            "page=2".to_owned(),
            "Unknown query parameter \"page\"; accepted: status, scope, environment, name_prefix, cursor, limit",
        ),
        (
            format!("{secret}=1"),
            "Unknown query parameter (value not shown); accepted:",
        ),
    ] {
        let (status, body) = get(&app, &session, &format!("/api/admin/tokens?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(error_of(&body).starts_with(message), "{query}: {body}");
        assert!(!body.to_string().contains(secret), "{query}: {body}");
    }
}

fn urlencode(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// 2. The page: counts at the top, pages of 50 with Next and First page, a filter form
// ---------------------------------------------------------------------------------------------

async fn the_page_shows_counts_and_pages_of_fifty_with_a_next_link(db: TestDb) {
    let (app, session) = app_with_admin(&db).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            app.create(&format!("svc-{i:02}"), &["logs:read"], None)
                .await
                .row
                .id,
        );
    }
    for id in ids.iter().step_by(6) {
        app.revoke(*id).await;
    }
    let page_of = |path: String| {
        let app = &app;
        let session = &session;
        async move {
            let (status, html, _) = app
                .send_text(reqwest::Method::GET, &path, cookie(session), None)
                .await;
            (status, html)
        }
    };
    let rows = |html: &str| html.matches("<tr data-token-id=").count();

    let (status, html) = page_of("/admin/tokens".into()).await;
    assert_eq!(status, StatusCode::OK);
    let counts = &html[html.find("id=\"token-counts\"").expect("the counts")..];
    assert!(counts.contains("<strong>60</strong> tokens"), "{counts}");
    assert!(counts.contains("<strong>50</strong> active"), "{counts}");
    assert!(counts.contains("<strong>10</strong> revoked"), "{counts}");
    assert!(
        html.find("id=\"token-counts\"").expect("counts")
            < html.find("id=\"create-token\"").expect("the create form"),
        "the counts are at the top"
    );
    assert_eq!(rows(&html), 50);
    assert!(html.contains("Showing 50 of 60 tokens, oldest first."));
    assert!(html.contains(&format!("data-token-id=\"{}\"", ids[0])));
    assert!(!html.contains(&format!("data-token-id=\"{}\"", ids[50])));
    assert!(html.contains("id=\"filter-tokens\" method=\"get\" action=\"/admin/tokens\""));
    assert!(
        !html.contains("id=\"first-page\""),
        "already on the first page"
    );
    let next = href_of(&html, "next-page").expect("a Next link");
    assert!(next.starts_with("/admin/tokens?cursor=t1."), "{next}");

    let (status, html) = page_of(next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&html), 10);
    assert!(html.contains(&format!("data-token-id=\"{}\"", ids[59])));
    assert!(href_of(&html, "next-page").is_none(), "the last page");
    assert_eq!(
        href_of(&html, "first-page").as_deref(),
        Some("/admin/tokens")
    );

    // Filters come back in the form and stay in the links.
    let (status, html) =
        page_of("/admin/tokens?status=active&name_prefix=svc-&limit=20".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&html), 20);
    assert!(html.contains("Showing 20 of 50 matching tokens"), "{html}");
    assert!(html.contains("<option value=\"active\" selected>"));
    let next = href_of(&html, "next-page").expect("a Next link");
    assert!(
        next.starts_with("/admin/tokens?status=active&name_prefix=svc-&cursor=t1.")
            && next.ends_with("&limit=20"),
        "{next}"
    );
    let (_, html) = page_of("/admin/tokens?status=revoked".into()).await;
    assert_eq!(rows(&html), 10);
    assert!(!html.contains("badge active"), "only revoked rows");
    assert!(html.contains("All 10 matching tokens."));

    // A prefix is shown back escaped; a bad cursor is a page saying so, without the value.
    let (_, html) = page_of(format!(
        "/admin/tokens?name_prefix={}",
        urlencode("<script>x")
    ))
    .await;
    assert!(
        html.contains("value=\"&lt;script&gt;x\""),
        "escaped in the form"
    );
    assert!(html.contains("No tokens match these filters."));
    let (status, html) = page_of("/admin/tokens?cursor=t1.not-ours".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("is not a cursor this service issued"),
        "{html}"
    );
    assert!(!html.contains("not-ours"));
}

/// The `href` of the link with this id, unescaped.
fn href_of(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\" href=\"");
    let start = html.find(&marker)? + marker.len();
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}

// ---------------------------------------------------------------------------------------------
// 3. The monitoring list, paged the same way on the API and the console
// ---------------------------------------------------------------------------------------------

async fn the_monitoring_list_is_paged_by_cursor(db: TestDb) {
    let (app, session) = app_with_admin(&db).await;
    let caller = app.create("ops", &["console:exec", "admin"], None).await;
    let mut flagged: BTreeSet<Uuid> = [caller.row.id].into();
    for i in 0..70 {
        flagged.insert(
            app.create(&format!("root-{i}"), &["admin"], None)
                .await
                .row
                .id,
        );
        // Not flagged: not admin, used recently enough (just made), far from expiry.
        app.create(&format!("quiet-{i}"), &["registry:read"], None)
            .await;
    }

    let mut seen = Vec::new();
    let mut path = "/api/admin/tokens/stale?limit=30".to_owned();
    loop {
        let (status, page) = get(&app, &session, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 71);
        seen.extend(ids_of(&page, "token_id"));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/admin/tokens/stale?limit=30&cursor={next}"),
            None => break,
        }
    }
    assert_each_once_in_order(&seen, &flagged);

    // The console: its thresholds as before, and a page.
    let (status, body) = app
        .console(Some(caller.token.expose()), "tokens:stale")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["result"];
    assert_eq!(
        (&result["total"], &result["limit"], &result["complete"]),
        (&json!(71), &json!(50), &json!(false))
    );
    assert_eq!(result["params"]["unused_days"], 90);
    let mut seen = Vec::new();
    let mut args = json!({"unused_days": 90, "limit": 25});
    loop {
        let (status, body) = app
            .post(
                "/api/admin/console",
                Some(caller.token.expose()),
                &json!({"cmd": "tokens:stale", "args": args}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(ids_of(&body["result"], "token_id"));
        match body["result"]["next"].as_str() {
            Some(next) => args["cursor"] = json!(next),
            None => break,
        }
    }
    assert_each_once_in_order(&seen, &flagged);

    // A cursor not issued, a zero limit, an unknown parameter: refused, never echoed.
    let (status, body) = app
        .post(
            "/api/admin/console",
            Some(caller.token.expose()),
            &json!({"cmd": "tokens:stale", "args": {"cursor": "t1.forged"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        format!("Invalid args for tokens:stale: {NOT_ISSUED}")
    );
    let (status, body) = app
        .post(
            "/api/admin/console",
            Some(caller.token.expose()),
            &json!({"cmd": "tokens:stale", "args": {"limit": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&body).contains("\"limit\" must be a whole number of at least 1"),
        "{body}"
    );
    let (status, body) = get(&app, &session, "/api/admin/tokens/stale?cursor=forged").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), NOT_ISSUED);
    assert!(!body.to_string().contains("forged"));
    let (status, body) = get(&app, &session, "/api/admin/tokens/stale?status=active").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&body).ends_with("accepted: cursor, limit"),
        "{body}"
    );
}

/// Every filter alone and several together, read a page of seven at a time: each page's rows
/// come from the stored table in id order, and together they are exactly the stored rows that
/// match, with the total and the counts by status the stored rows give.
async fn each_filter_pages_through_exactly_the_stored_rows_that_match(db: TestDb) {
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    a_mixed_table(&app).await;
    let rows = app.ledger().tokens().await.expect("tokens");
    let now = app.now();
    let counts = expected_counts(&app).await;
    let queries: Vec<TokenQuery> = {
        let mut q = Vec::new();
        for status in STATUSES {
            q.push(TokenQuery {
                status: Some(status),
                ..TokenQuery::default()
            });
        }
        for scope in Scope::ALL {
            q.push(TokenQuery {
                scope: Some(scope),
                ..TokenQuery::default()
            });
        }
        for environment in [Environment::Live, Environment::Test] {
            q.push(TokenQuery {
                environment: Some(environment),
                ..TokenQuery::default()
            });
        }
        for prefix in ["alpha-", "beta-01", "", "zeta", "ALPHA"] {
            q.push(TokenQuery {
                name_prefix: Some(prefix.to_owned()),
                ..TokenQuery::default()
            });
        }
        q.push(TokenQuery {
            status: Some(TokenStatus::Active),
            scope: Some(Scope::Admin),
            environment: Some(Environment::Test),
            name_prefix: Some("beta-".into()),
            ..TokenQuery::default()
        });
        q.push(TokenQuery::default());
        q
    };
    for query in queries {
        let expected: Vec<Uuid> = {
            let mut ids: Vec<Uuid> = rows
                .iter()
                .filter(|r| {
                    query.status.is_none_or(|s| r.status_at(now) == s)
                        && query.scope.is_none_or(|s| s.held_by(&r.scopes))
                        && query.environment.is_none_or(|e| r.environment == e)
                        && query
                            .name_prefix
                            .as_deref()
                            .is_none_or(|p| r.name.starts_with(p))
                })
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = app
                .queries()
                .tokens(&TokenQuery {
                    after,
                    limit: Some(7),
                    ..query.clone()
                })
                .await
                .expect("a page");
            assert_eq!(page.total, expected.len() as u64, "{query:?}");
            for status in STATUSES {
                assert_eq!(page.counts.of(status), counts[status.as_str()], "{query:?}");
            }
            assert!(page.tokens.len() <= 7);
            seen.extend(page.tokens.iter().map(|t| t.id));
            match page.next {
                Some(next) => after = Some(TokenCursor::parse(&next).expect("our cursor")),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{query:?}");
    }
}

/// A node started on a table folded elsewhere streams it into the same compact entries the
/// writing node folded live, and both equal the entries of the stored rows.
async fn a_restart_streams_the_same_entries_the_live_cache_folded(db: TestDb) {
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    a_mixed_table(&app).await;
    let restarted = Services::open(
        &db.url(),
        TokenSettings::default(),
        Arc::new(app.clock.clone()),
    )
    .await
    .expect("a second node");
    let rows = app.ledger().tokens().await.expect("tokens");
    assert_eq!(rows.len(), 132);
    for row in &rows {
        let stored = TokenEntry::of(row);
        assert_eq!(app.ledger().entry(row.id).as_ref(), Some(&stored), "live");
        assert_eq!(
            restarted.ledger().entry(row.id).as_ref(),
            Some(&stored),
            "streamed at start-up"
        );
    }
}

crate::on_both_backends!(
    each_filter_pages_through_exactly_the_stored_rows_that_match,
    a_restart_streams_the_same_entries_the_live_cache_folded,
    every_token_appears_once_by_cursor_through_the_api_and_the_cli,
    the_page_shows_counts_and_pages_of_fifty_with_a_next_link,
    the_monitoring_list_is_paged_by_cursor,
);
