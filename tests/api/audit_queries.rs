//! Audit queries (issue 13, part 4): every filter of `tokenledger audit` and
//! `GET /api/admin/audit` against a known history, alone and combined, with exact totals and
//! cursors across pages; every bad input refused with exit 2 or a 400 and nothing appended;
//! and `audit --follow`, a real child process that keeps every position exactly once while its
//! writers are killed and restarted.

use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokenledger::app::{AuditQuery, AuditView, Cursor, Queries};
use tokenledger::session::DevKey;
use tokenledger_events::{
    DenyReason, EventLog as _, ExpectedVersion, NewEvent, StreamId, Timestamp, TokenEvent,
    TokenRevoked, TokenUseDenied, TokenUseDeniedSummary, TokenUsed,
};
use tokenledger_projections::{AuditAction, missing_required};
use uuid::Uuid;

use crate::helpers::{
    START, TestApp, TestDb, append, created, error_of, open_store, spawn_app, stderr, stdout,
    tokenledger,
};

// ---------------------------------------------------------------------------------------------
// A known history
// ---------------------------------------------------------------------------------------------

/// The first event's time: a day before the spawned service's clock; each later event is a
/// minute on.
const T0: i64 = START - 86_400_000_000;

fn minute(i: i64) -> Timestamp {
    Timestamp::from_micros(T0 + i * 60_000_000)
}

/// The history's tokens: A and B are used, C is used once and denied, D is only ever denied.
struct History {
    a: Uuid,
    b: Uuid,
    c: Uuid,
    d: Uuid,
    /// Every row, in log order (positions 1..=N).
    rows: Vec<AuditView>,
}

fn use_from(ip: Option<&str>, path: &str) -> TokenEvent {
    TokenEvent::Used(TokenUsed {
        ip: ip.map(str::to_owned),
        method: "POST".into(),
        path: path.into(),
        command: None,
        user_agent: Some("curl/8".into()),
    })
}

fn denial_from(ip: &str, path: &str) -> TokenEvent {
    TokenEvent::UseDenied(TokenUseDenied {
        reason: DenyReason::InsufficientScope,
        ip: Some(ip.into()),
        path: path.into(),
    })
}

/// Append the history, one event per append so that positions follow the list:
///
/// | pos | token | event | actor | ip | path |
/// |---|---|---|---|---|---|
/// | 1 | A | created | test:suite | | |
/// | 2 | B | created | test:suite | | |
/// | 3 | C | created | test:suite | | |
/// | 4 | D | created | test:suite | | |
/// | 5 | A | used | token:A | 10.0.0.1 | /api/admin/console |
/// | 6 | A | used | token:A | 10.0.0.2 | /v1/verify |
/// | 7 | B | used | token:B | 2001:db8::5 | /v1/verify |
/// | 8 | A | used | token:A | 192.168.1.5 | /api/admin/console |
/// | 9 | C | denied | token:C | 10.0.0.9 | /api/admin/console |
/// | 10 | C | used | token:C | (none) | /v1/verify |
/// | 11 | B | used | token:B | ::ffff:10.0.0.7 | /api/admin/tokens |
/// | 12 | A | used | token:A | 10.0.0.1 | /api/admin/console |
/// | 13 | B | denied (summary) | system:denials | 2001:db8::9 | /v1/verify |
/// | 14 | D | denied | token:D | 172.16.0.1 | /api/admin/console |
/// | 15 | A | revoked | user:alice | | |
/// | 16 | C | used | token:C | 10.0.0.3 | /api/admin/consoles |
///
/// C is used from 10.0.0.0/24 only after its denial from there, and D, never used, is denied
/// from 172.16.0.1: `token_addresses` lists neither denial, and each must still be found.
async fn history(db: &TestDb) -> History {
    let (a, b, c, d) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let summary = TokenEvent::UseDeniedSummary(TokenUseDeniedSummary {
        reason: DenyReason::InsufficientScope,
        ip: Some("2001:db8::9".into()),
        path: "/v1/verify".into(),
        count: 4,
        first_at: minute(11),
        last_at: minute(12),
        window_secs: 600,
    });
    let revoked = TokenEvent::Revoked(TokenRevoked {
        actor: "user:alice".into(),
        reason: Some("leaked".into()),
    });
    let actor = |t: Uuid| format!("token:{t}");
    let plan: Vec<(Uuid, Option<TokenEvent>, String)> = vec![
        (a, None, "test:suite".into()),
        (b, None, "test:suite".into()),
        (c, None, "test:suite".into()),
        (d, None, "test:suite".into()),
        (
            a,
            Some(use_from(Some("10.0.0.1"), "/api/admin/console")),
            actor(a),
        ),
        (a, Some(use_from(Some("10.0.0.2"), "/v1/verify")), actor(a)),
        (
            b,
            Some(use_from(Some("2001:db8::5"), "/v1/verify")),
            actor(b),
        ),
        (
            a,
            Some(use_from(Some("192.168.1.5"), "/api/admin/console")),
            actor(a),
        ),
        (
            c,
            Some(denial_from("10.0.0.9", "/api/admin/console")),
            actor(c),
        ),
        (c, Some(use_from(None, "/v1/verify")), actor(c)),
        (
            b,
            Some(use_from(Some("::ffff:10.0.0.7"), "/api/admin/tokens")),
            actor(b),
        ),
        (
            a,
            Some(use_from(Some("10.0.0.1"), "/api/admin/console")),
            actor(a),
        ),
        (b, Some(summary), "system:denials".into()),
        (
            d,
            Some(denial_from("172.16.0.1", "/api/admin/console")),
            actor(d),
        ),
        (a, Some(revoked), "user:alice".into()),
        (
            c,
            Some(use_from(Some("10.0.0.3"), "/api/admin/consoles")),
            actor(c),
        ),
    ];
    let store = open_store(&db.url()).await;
    for (i, (token, event, actor)) in plan.into_iter().enumerate() {
        let mut new = match event {
            None => created(token, "history"),
            Some(event) => NewEvent {
                event_id: Uuid::now_v7(),
                recorded_at: minute(0),
                actor: String::new(),
                event,
                openings: Vec::new(),
            },
        };
        new.recorded_at = minute(i as i64);
        new.actor = actor;
        let stored = store
            .append(vec![append(
                &StreamId::for_token(token),
                ExpectedVersion::Any,
                vec![new],
            )])
            .await
            .expect("append");
        assert_eq!(stored[0].position, i as u64 + 1);
    }
    drop(store);
    History {
        a,
        b,
        c,
        d,
        rows: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: each filter written out over every row
// ---------------------------------------------------------------------------------------------

/// Whether `ip` (as recorded) lies in `net` (`a.b.c.d/len` or an address), comparing IPv4
/// and IPv4-mapped IPv6 as the same client. Written apart from the service's own matching.
fn in_net(ip: &str, net: &str) -> bool {
    let v4 = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        a => a,
    };
    let (addr, len) = match net.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().expect("prefix")),
        None => (net, 128),
    };
    let (Ok(ip), Ok(net)) = (ip.parse::<IpAddr>(), addr.parse::<IpAddr>()) else {
        return false;
    };
    match (v4(ip), v4(net)) {
        (IpAddr::V4(i), IpAddr::V4(n)) => {
            let len = len.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(i) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(i), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(i) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The filters of one case, as the API names them.
#[derive(Clone, Debug, Default)]
struct Case {
    token: Option<Uuid>,
    action: Option<&'static str>,
    actor: Option<String>,
    ip: Option<&'static str>,
    path_prefix: Option<&'static str>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    from_position: Option<u64>,
    to_position: Option<u64>,
}

impl Case {
    fn matches(&self, r: &AuditView) -> bool {
        let at = Timestamp::parse_rfc3339(&r.occurred_at).expect("time");
        self.token.is_none_or(|t| r.token_id == t)
            && self.action.is_none_or(|a| r.action == a)
            && self.actor.as_deref().is_none_or(|a| r.actor == a)
            && self
                .ip
                .is_none_or(|net| r.ip.as_deref().is_some_and(|ip| in_net(ip, net)))
            && self
                .path_prefix
                .is_none_or(|p| r.path.as_deref().is_some_and(|path| path.starts_with(p)))
            && self.since.is_none_or(|t| at >= t)
            && self.until.is_none_or(|t| at <= t)
            && self.from_position.is_none_or(|p| r.position >= p)
            && self.to_position.is_none_or(|p| r.position <= p)
    }

    fn expected(&self, h: &History) -> Vec<u64> {
        h.rows
            .iter()
            .filter(|r| self.matches(r))
            .map(|r| r.position)
            .collect()
    }

    fn query(&self) -> AuditQuery {
        AuditQuery {
            token_id: self.token,
            action: self.action.and_then(AuditAction::parse),
            actor: self.actor.clone(),
            ip: self
                .ip
                .map(|raw| tokenledger::app::audit::parse_ip_filter(raw).expect("a valid filter")),
            path_prefix: self.path_prefix.map(str::to_owned),
            since: self.since,
            until: self.until,
            from_position: self.from_position,
            to_position: self.to_position,
            ..AuditQuery::default()
        }
    }

    /// The query string of `GET /api/admin/audit`.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(t) = self.token {
            p.push(("token", t.to_string()));
        }
        if let Some(a) = self.action {
            p.push(("action", a.to_owned()));
        }
        if let Some(a) = &self.actor {
            p.push(("actor", a.clone()));
        }
        if let Some(ip) = self.ip {
            p.push(("ip", ip.to_owned()));
        }
        if let Some(path) = self.path_prefix {
            p.push(("path_prefix", path.to_owned()));
        }
        if let Some(t) = self.since {
            p.push(("since", t.to_rfc3339()));
        }
        if let Some(t) = self.until {
            p.push(("until", t.to_rfc3339()));
        }
        if let Some(n) = self.from_position {
            p.push(("from_position", n.to_string()));
        }
        if let Some(n) = self.to_position {
            p.push(("to_position", n.to_string()));
        }
        p
    }

    /// The same filters as `tokenledger audit` flags.
    fn flags(&self) -> Vec<String> {
        self.params()
            .into_iter()
            .flat_map(|(k, v)| [format!("--{}", k.replace('_', "-")), v])
            .collect()
    }
}

/// The cases, each with the positions worked out by hand from the table of [`history`], so the
/// reference itself is checked.
fn cases(h: &History) -> Vec<(Case, Vec<u64>)> {
    let c = Case::default;
    vec![
        (
            Case {
                ip: Some("10.0.0.0/24"),
                ..c()
            },
            vec![5, 6, 9, 11, 12, 16],
        ),
        (
            Case {
                ip: Some("10.0.0.1"),
                ..c()
            },
            vec![5, 12],
        ),
        (
            Case {
                ip: Some("::ffff:10.0.0.7"),
                ..c()
            },
            vec![11],
        ),
        (
            Case {
                ip: Some("10.0.0.7"),
                ..c()
            },
            vec![11],
        ),
        (
            Case {
                ip: Some("2001:db8::/32"),
                ..c()
            },
            vec![7, 13],
        ),
        (
            Case {
                ip: Some("172.16.0.0/12"),
                ..c()
            },
            vec![14],
        ),
        (
            Case {
                ip: Some("8.8.8.8"),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                ip: Some("0.0.0.0/0"),
                ..c()
            },
            vec![5, 6, 8, 9, 11, 12, 14, 16],
        ),
        (
            Case {
                path_prefix: Some("/api/admin/console"),
                ..c()
            },
            vec![5, 8, 9, 12, 14, 16],
        ),
        (
            Case {
                path_prefix: Some("/v1/"),
                ..c()
            },
            vec![6, 7, 10, 13],
        ),
        (
            Case {
                path_prefix: Some("/API"),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                actor: Some("user:alice".into()),
                ..c()
            },
            vec![15],
        ),
        (
            Case {
                actor: Some(format!("token:{}", h.a)),
                ..c()
            },
            vec![5, 6, 8, 12],
        ),
        (
            Case {
                actor: Some("token:".into()),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                since: Some(minute(4)),
                until: Some(minute(8)),
                ..c()
            },
            vec![5, 6, 7, 8, 9],
        ),
        (
            Case {
                until: Some(minute(2).plus_micros(1)),
                ..c()
            },
            vec![1, 2, 3],
        ),
        (
            Case {
                since: Some(minute(15)),
                until: Some(minute(15)),
                ..c()
            },
            vec![16],
        ),
        (
            Case {
                from_position: Some(14),
                ..c()
            },
            vec![14, 15, 16],
        ),
        (
            Case {
                from_position: Some(3),
                to_position: Some(3),
                ..c()
            },
            vec![3],
        ),
        (
            Case {
                to_position: Some(0),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                token: Some(h.a),
                ip: Some("10.0.0.0/8"),
                path_prefix: Some("/api/admin/console"),
                ..c()
            },
            vec![5, 12],
        ),
        (
            Case {
                token: Some(h.c),
                ip: Some("10.0.0.0/8"),
                ..c()
            },
            vec![9, 16],
        ),
        (
            Case {
                token: Some(h.d),
                ip: Some("10.0.0.0/8"),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                ip: Some("10.0.0.0/8"),
                action: Some("API_TOKEN_DENIED"),
                ..c()
            },
            vec![9],
        ),
        (
            Case {
                ip: Some("10.0.0.0/8"),
                action: Some("API_TOKEN_CREATED"),
                ..c()
            },
            vec![],
        ),
        (
            Case {
                action: Some("API_TOKEN_USED"),
                actor: Some(format!("token:{}", h.b)),
                since: Some(minute(7)),
                ..c()
            },
            vec![11],
        ),
        (
            Case {
                ip: Some("10.0.0.0/8"),
                since: Some(minute(5)),
                to_position: Some(12),
                ..c()
            },
            vec![6, 9, 11, 12],
        ),
        (
            Case {
                path_prefix: Some("/"),
                from_position: Some(6),
                until: Some(minute(12)),
                action: Some("API_TOKEN_USED"),
                ..c()
            },
            vec![6, 7, 8, 10, 11, 12],
        ),
        (
            Case {
                token: Some(h.b),
                from_position: Some(8),
                ..c()
            },
            vec![11, 13],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

fn positions(page: &tokenledger::app::AuditPage) -> Vec<u64> {
    page.events.iter().map(|e| e.position).collect()
}

/// Walk every page of `query` in both orders, `limit` rows a page, checking on each page the
/// total, `complete`, and that its `prev` cursor leads back to the page before; returns the
/// positions seen oldest first (and checks both orders saw the same).
async fn walk(q: &Queries, query: &AuditQuery, limit: usize, expected: &[u64], what: &str) {
    for newest_first in [false, true] {
        let mut seen: Vec<u64> = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut previous: Option<Vec<u64>> = None;
        loop {
            let mut asked = AuditQuery {
                newest_first,
                limit: Some(limit),
                ..query.clone()
            };
            match cursor {
                Some(Cursor::After(p)) => asked.after = Some(p),
                Some(Cursor::Before(p)) => asked.before = Some(p),
                None => {}
            }
            let page = q.audit(&asked).await.expect("audit");
            assert_eq!(page.total, expected.len() as u64, "{what}: total");
            assert_eq!(
                page.complete,
                expected.len() <= limit && cursor.is_none(),
                "{what}: complete"
            );
            let here = positions(&page);
            // Back from this page is the page before, exactly.
            match (&previous, page.prev) {
                (Some(before), Some(back)) => {
                    let mut again = AuditQuery {
                        newest_first,
                        limit: Some(limit),
                        ..query.clone()
                    };
                    match back {
                        Cursor::After(p) => again.after = Some(p),
                        Cursor::Before(p) => again.before = Some(p),
                    }
                    let back_page = q.audit(&again).await.expect("audit");
                    assert_eq!(&positions(&back_page), before, "{what}: prev of {here:?}");
                }
                (Some(_), None) => panic!("{what}: a later page has no prev cursor"),
                (None, prev) => assert_eq!(prev, None, "{what}: the first page has no prev"),
            }
            seen.extend(&here);
            match page.next {
                Some(next) => {
                    assert!(!here.is_empty(), "{what}: an empty page with a next cursor");
                    cursor = Some(next);
                    previous = Some(here);
                }
                None => break,
            }
        }
        if newest_first {
            seen.reverse();
        }
        assert_eq!(seen, expected, "{what}: newest_first={newest_first}");
    }
}

// ---------------------------------------------------------------------------------------------
// Filters: the application layer, the admin API and the CLI
// ---------------------------------------------------------------------------------------------

fn bearer(session: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {session}")).expect("header"),
    );
    h
}

fn query_string(params: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

async fn get_audit(app: &TestApp, session: &str, query: &str) -> (StatusCode, Value) {
    let (status, body, _) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/admin/audit?{query}"),
            bearer(session),
            None,
        )
        .await;
    (status, body)
}

async fn every_filter_and_combination_matches_the_history_on_every_page(db: TestDb) {
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let mut h = history(&db).await;
    let app = spawn_app(&db).await;
    let session = key.sign("alice", true, app.now()).expect("session");
    h.rows = app.audit().await;
    assert_eq!(h.rows.len(), 16);
    let url = db.url_string();

    for (case, by_hand) in cases(&h) {
        let what = format!("{:?}", case.params());
        let expected = case.expected(&h);
        assert_eq!(
            expected, by_hand,
            "{what}: the reference disagrees with the table"
        );

        // Every page, both orders, two rows a page, and the whole answer in one page.
        walk(app.queries(), &case.query(), 2, &expected, &what).await;
        walk(app.queries(), &case.query(), 1000, &expected, &what).await;

        // A cursor between matches: the rows after it, and a way back exactly when a match
        // lies before it.
        let after = 9;
        let page = app
            .queries()
            .audit(&AuditQuery {
                after: Some(after),
                limit: Some(2),
                ..case.query()
            })
            .await
            .expect("audit");
        let later: Vec<u64> = expected.iter().copied().filter(|p| *p > after).collect();
        assert_eq!(
            positions(&page),
            later.iter().take(2).copied().collect::<Vec<_>>()
        );
        assert_eq!(page.total, expected.len() as u64, "{what}");
        assert_eq!(
            page.prev.is_some(),
            expected.iter().any(|p| *p <= after),
            "{what}: prev after {after}: {:?}",
            page.prev
        );
        assert_eq!(page.next.is_some(), later.len() > 2, "{what}: next");

        // The admin API answers the same page.
        let (status, body) = get_audit(&app, &session, &query_string(&case.params())).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        let api: Vec<u64> = body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["position"].as_u64().expect("position"))
            .collect();
        assert_eq!(api, expected, "{what}: API");
        assert_eq!(body["total"], expected.len(), "{what}: API total");

        // And so does the CLI, reading the database itself.
        let mut args = vec!["audit".to_owned(), "--json".into()];
        args.extend(case.flags());
        let out = tokenledger(&url, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let page: Value = serde_json::from_str(&stdout(&out)).expect("json");
        let cli: Vec<u64> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["position"].as_u64().expect("position"))
            .collect();
        assert_eq!(cli, expected, "{what}: CLI");
        assert_eq!(page["total"], expected.len(), "{what}: CLI total");
    }

    // A page past the last match of a body filter is empty, and leads back.
    let page = app
        .queries()
        .audit(&AuditQuery {
            ip: tokenledger::app::audit::parse_ip_filter("10.0.0.0/24"),
            after: Some(16),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert!(page.events.is_empty());
    assert_eq!((page.total, page.next), (6, None));
    assert_eq!(page.prev, Some(Cursor::Before(17)));

    // The CLI's plain rows name the address and path of each.
    let out = tokenledger(&url, &["audit", "--ip", "172.16.0.0/12"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("API_TOKEN_DENIED")
            && text.contains(&h.d.to_string())
            && text.contains("ip=172.16.0.1 path=/api/admin/console"),
        "{text}"
    );
    // Duration-ago forms are accepted by both edges (the history is a day old).
    let out = tokenledger(
        &url,
        &["audit", "--since", "400d", "--until", "1s", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = get_audit(&app, &session, "since=400d&until=1s").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 16, "{body}");
    let (status, body) = get_audit(&app, &session, "since=1h").await;
    assert_eq!((status, &body["total"]), (StatusCode::OK, &Value::from(0)));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Each bad input, as CLI flags and as API parameters, with what each edge must say.
fn bad_inputs() -> Vec<(Vec<&'static str>, &'static str, &'static str, &'static str)> {
    vec![
        (
            vec!["--since", "yesterday"],
            "since=yesterday",
            "--since",
            "\"since\" must be a time: RFC 3339",
        ),
        (
            vec!["--until", "2026-13-45"],
            "until=2026-13-45",
            "--until",
            "\"until\" must be a time: RFC 3339",
        ),
        (
            vec!["--ip", "10.0.0.300"],
            "ip=10.0.0.300",
            "--ip",
            "\"ip\" must be an IPv4 or IPv6 address",
        ),
        (
            vec!["--ip", "10.0.0.0/33"],
            "ip=10.0.0.0%2F33",
            "--ip",
            "\"ip\" must be an IPv4 or IPv6 address",
        ),
        (
            vec!["--ip", "localhost"],
            "ip=localhost",
            "--ip",
            "CIDR block like 203.0.113.0/24",
        ),
        (
            vec![
                "--since",
                "2026-02-01T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "--until 2026-01-01T00:00:00.000000Z is before --since 2026-02-01T00:00:00.000000Z",
            "\"until\" is before \"since\"",
        ),
        (
            vec!["--since", "1h", "--until", "2d"],
            "since=1h&until=2d",
            "is before --since",
            "\"until\" is before \"since\"",
        ),
        (
            vec!["--from-position", "9", "--to-position", "3"],
            "from_position=9&to_position=3",
            "--from-position 9 is past --to-position 3",
            "\"from_position\" is past \"to_position\"",
        ),
        (
            vec!["--from-position=-1"],
            "from_position=-1",
            "--from-position",
            "\"from_position\" must be a whole number",
        ),
        (
            vec!["--to-position", "x"],
            "to_position=x",
            "--to-position",
            "\"to_position\" must be a whole number",
        ),
        (
            vec!["--action", "exploded"],
            "action=exploded",
            "unknown action",
            "\"action\" must be one of API_TOKEN_CREATED",
        ),
        (
            vec!["--token", "not-a-uuid"],
            "token=not-a-uuid",
            "--token",
            "\"token\" must be a token id",
        ),
    ]
}

async fn bad_filters_are_refused_naming_the_flag_and_nothing_is_appended(db: TestDb) {
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    history(&db).await;
    let app = spawn_app(&db).await;
    let session = key.sign("alice", true, app.now()).expect("session");
    let url = db.url_string();
    let pasted = console_token(&url);
    let head = app.head().await;
    for (flags, params, cli_says, api_says) in bad_inputs() {
        let mut args = vec!["audit"];
        args.extend(&flags);
        let out = tokenledger(&url, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(stdout(&out).is_empty(), "{flags:?}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{flags:?}: one line: {err}"
        );
        assert!(err.contains(cli_says), "{flags:?}: {err}");
        assert!(
            err.contains("expected") || err.contains("known actions"),
            "{flags:?} says what is accepted: {err}"
        );
        // The same with --follow: refused before anything is read.
        let mut follow = args.clone();
        follow.push("--follow");
        let out = tokenledger(&url, &follow);
        assert_eq!(out.status.code(), Some(2), "{follow:?}: {}", stderr(&out));

        let (status, body) = get_audit(&app, &session, params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params}: {body}");
        assert!(error_of(&body).contains(api_says), "{params}: {body}");
    }
    // Flags that make no sense with --follow, and --format without it.
    for args in [
        &["audit", "--follow", "--reverse"][..],
        &["audit", "--follow", "--before", "3"],
        &["audit", "--follow", "--limit", "3"],
        &["audit", "--follow", "--json"],
        &["audit", "--format", "ocsf"],
        &["audit", "--follow", "--format", "csv"],
    ] {
        let out = tokenledger(&url, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A control character or a pasted token never comes back.
    for raw in ["\u{1b}[2J10.0.0.1", pasted.as_str()] {
        let out = tokenledger(&url, &["audit", "--ip", raw]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(!err.contains('\u{1b}') && !err.contains(&pasted), "{err:?}");
        let (status, body) = get_audit(&app, &session, &query_string(&[("ip", raw.into())])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!body.to_string().contains(&pasted), "{body}");
    }
    // Unknown and repeated parameters.
    let (status, body) = get_audit(&app, &session, "page=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&body).contains("accepted: token, action, actor, ip"),
        "{body}"
    );
    let (status, body) = get_audit(&app, &session, "ip=10.0.0.1&ip=10.0.0.2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("more than once"), "{body}");
    assert_eq!(app.head().await, head, "nothing was appended");
    app.stop().await;
    let store = open_store(&db.url()).await;
    assert_eq!(store.head().await.expect("head").position, head);
}

crate::on_both_backends!(
    every_filter_and_combination_matches_the_history_on_every_page,
    bad_filters_are_refused_naming_the_flag_and_nothing_is_appended,
    a_follower_prints_every_position_once_across_killed_writers,
    a_follower_resumes_after_a_position_filters_and_writes_ocsf,
);

// ---------------------------------------------------------------------------------------------
// --follow
// ---------------------------------------------------------------------------------------------

/// A running `tokenledger audit --follow`, its lines arriving on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Follower {
    fn start(url: &str, args: &[&str]) -> Follower {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["audit", "--follow"])
            .args(args)
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the follower");
        let out = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Read lines until `done` holds of what was seen, or fail after a while.
    fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}")),
                ),
                Err(_) => panic!(
                    "the follower did not print {what}; it printed {} lines, last {:?}",
                    self.seen.len(),
                    self.seen.last()
                ),
            }
        }
    }

    fn positions(&self) -> Vec<u64> {
        self.seen
            .iter()
            .map(|v| v["position"].as_u64().expect("position"))
            .collect()
    }

    /// SIGTERM, then the exit code, standard error and any lines not read yet.
    fn terminate(mut self) -> (Option<i32>, String, Vec<String>) {
        signal(&self.child, "TERM");
        let status = wait_within(&mut self.child, Duration::from_secs(20));
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        // The reader thread ends at the pipe's end, so this drains what is left.
        let rest = self.lines.iter().collect();
        (status, err, rest)
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name}");
}

fn wait_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `tokenledger serve` writer on `url`, with the console and token authentication on.
struct Writer {
    child: Child,
    base: String,
    _keys: tempfile::TempDir,
}

impl Writer {
    async fn start(url: &str) -> Writer {
        // reqwest is built without a default TLS provider; a service in this process would
        // have installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let keys = tempfile::tempdir().expect("key dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(keys.path())
            .env("DATABASE_URL", url)
            .env("LOG_SIGNING_KEY_FILE", keys.path().join("log.signing-key"))
            .env("ADMIN_CONSOLE_ENABLED", "true")
            .env("ADMIN_API_TOKEN_AUTH_ENABLED", "true")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "the writer did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Writer {
            child,
            base,
            _keys: keys,
        }
    }

    /// `n` console pings with `token`: one recorded use each. Failures (a writer killed
    /// meanwhile) are left to the caller's count of the log.
    async fn pings(base: String, token: String, n: usize) -> usize {
        let http = reqwest::Client::new();
        let mut ok = 0;
        for _ in 0..n {
            let sent = http
                .post(format!("{base}/api/admin/console"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"cmd": "ping", "args": {}}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => ok += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        ok
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown, whatever was in flight is cut.
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

async fn head_of(db: &TestDb) -> u64 {
    open_store(&db.url())
        .await
        .head()
        .await
        .expect("head")
        .position
}

/// The token a writer's pings use, made by the CLI (itself a writer).
fn console_token(url: &str) -> String {
    let out = tokenledger(
        url,
        &[
            "token",
            "create",
            "--name",
            "pinger",
            "--scope",
            "console:exec",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_str(&stdout(&out)).expect("json");
    created["token"].as_str().expect("token").to_owned()
}

async fn a_follower_prints_every_position_once_across_killed_writers(db: TestDb) {
    let url = db.url_string();
    let token = console_token(&url);
    let mut follower = Follower::start(&url, &["--format", "jsonl"]);
    follower.until("the token's creation", |seen| !seen.is_empty());

    // The first writer appends, and is killed while its requests are in flight.
    let first = Writer::start(&url).await;
    assert_eq!(
        Writer::pings(first.base.clone(), token.clone(), 10).await,
        10
    );
    let busy = tokio::spawn(Writer::pings(first.base.clone(), token.clone(), 100_000));
    follower.until("the first writer's uses", |seen| seen.len() >= 30);
    first.kill();
    let _ = busy.await;
    let head = head_of(&db).await;
    follower.until("every event up to the kill", |seen| {
        seen.len() as u64 >= head
    });

    // PostgreSQL goes away for a while (every connection cut, none accepted): the follower
    // retries until it is back.
    if matches!(db, TestDb::Postgres(_)) {
        db.take_away().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        db.bring_back().await;
    }

    // A CLI writer, then a second server, append more.
    let _ = console_token(&url);
    let second = Writer::start(&url).await;
    assert_eq!(
        Writer::pings(second.base.clone(), token.clone(), 20).await,
        20
    );
    second.kill();
    let head = head_of(&db).await;
    follower.until("every event up to the head", |seen| {
        seen.len() as u64 >= head
    });

    let printed = follower.positions();
    let (code, err, rest) = follower.terminate();
    assert_eq!(code, Some(0), "SIGTERM stops the follower cleanly: {err}");
    assert!(rest.is_empty(), "nothing after the head: {rest:?}");
    assert_eq!(
        printed,
        (1..=head).collect::<Vec<_>>(),
        "every position once, in order"
    );
    // A creation, 10 + at least 19 uses, a creation, 20 uses.
    assert!(head >= 51, "the writers appended: {head}");
    if matches!(db, TestDb::Postgres(_)) {
        assert!(
            err.contains("retrying") && err.contains("the database answers again"),
            "the outage was seen and survived: {err}"
        );
    } else {
        assert!(err.is_empty(), "{err}");
    }
}

async fn a_follower_resumes_after_a_position_filters_and_writes_ocsf(db: TestDb) {
    let h = history(&db).await;
    let url = db.url_string();
    let lines = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["audit", "--follow"];
        all.extend(args);
        let out = tokenledger(&url, &all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };
    let positions = |rows: &[Value]| -> Vec<u64> {
        rows.iter()
            .map(|v| v["position"].as_u64().expect("position"))
            .collect()
    };

    // --after N resumes exactly after N; --to-position ends the tail there.
    let rows = lines(&["--after", "5", "--to-position", "12"]);
    assert_eq!(positions(&rows), (6..=12).collect::<Vec<_>>());
    assert!(lines(&["--after", "16", "--to-position", "16"]).is_empty());
    // Each line is the row as a page shows it.
    let page: Value = serde_json::from_str(&stdout(&tokenledger(
        &url,
        &[
            "audit",
            "--json",
            "--from-position",
            "6",
            "--to-position",
            "12",
        ],
    )))
    .expect("json");
    assert_eq!(Value::from(rows.clone()), page["events"]);

    // The same filters as a page.
    let filtered = |extra: &[&str]| {
        let mut args = vec!["--to-position", "16"];
        args.extend(extra);
        positions(&lines(&args))
    };
    assert_eq!(filtered(&["--ip", "10.0.0.0/24"]), [5, 6, 9, 11, 12, 16]);
    assert_eq!(filtered(&["--ip", "172.16.0.1"]), [14]);
    assert_eq!(
        filtered(&["--path-prefix", "/v1/", "--action", "used"]),
        [6, 7, 10]
    );
    let actor = format!("token:{}", h.a);
    assert_eq!(filtered(&["--actor", &actor]), [5, 6, 8, 12]);
    assert_eq!(filtered(&["--token", &h.c.to_string()]), [3, 9, 10, 16]);
    assert_eq!(filtered(&["--from-position", "15"]), [15, 16]);
    let since = minute(13).to_rfc3339();
    assert_eq!(filtered(&["--since", &since]), [14, 15, 16]);
    // Past --until nothing more can match (times never go back): the tail ends by itself.
    let until = minute(8).to_rfc3339();
    assert_eq!(
        positions(&lines(&["--until", &until])),
        (1..=9).collect::<Vec<_>>()
    );

    // OCSF: the export's records, every required attribute present.
    let records = lines(&["--format", "ocsf", "--to-position", "16"]);
    assert_eq!(records.len(), 16);
    for (record, row) in records.iter().zip(&page_rows(&url)) {
        assert_eq!(missing_required(record), Vec::<String>::new(), "{record}");
        assert_eq!(record["metadata"]["uid"], row["event_id"], "{record}");
    }
    let classes: Vec<u64> = records
        .iter()
        .map(|r| r["class_uid"].as_u64().expect("class"))
        .collect();
    assert_eq!(&classes[..5], [3004, 3004, 3004, 3004, 3002]);
    assert_eq!(classes[14], 3004, "the revocation");

    // SIGINT stops a waiting tail cleanly.
    let mut follower = Follower::start(&url, &["--after", "14"]);
    follower.until("the last two rows", |seen| seen.len() == 2);
    assert_eq!(follower.positions(), [15, 16]);
    signal(&follower.child, "INT");
    let code = wait_within(&mut follower.child, Duration::from_secs(20));
    assert_eq!(code, Some(0));

    // A reader that goes away ends the tail quietly, at its next row.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["audit", "--follow", "--after", "15"])
        .env("DATABASE_URL", &url)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a line");
    assert!(first.contains("\"position\":16"), "{first}");
    drop(out);
    let store = open_store(&db.url()).await;
    let late = Uuid::now_v7();
    store
        .append(vec![append(
            &StreamId::for_token(late),
            ExpectedVersion::NoStream,
            vec![created(late, "late")],
        )])
        .await
        .expect("append");
    let code = wait_within(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    assert_eq!((code, err.as_str()), (Some(0), ""));
}

/// Every row as `audit --json` pages show them, in log order.
fn page_rows(url: &str) -> Vec<Value> {
    let out = tokenledger(url, &["audit", "--json", "--limit", "1000"]);
    let page: Value = serde_json::from_str(&stdout(&out)).expect("json");
    page["events"].as_array().expect("events").clone()
}
