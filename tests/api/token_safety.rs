//! Token safety that runs by itself, on both backends through the real HTTP server: per-token
//! IP allowlists (IPv4, IPv6, IPv4-mapped IPv6, and `/v1/verify`), self-rotation with reuse
//! detection (the honest path, a replayed old token, a second rotation, and two rotations
//! racing on two connections), and rotation overlaps that end at the successor's first use.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokenledger::app::{CreateRequest, Minted, RotateRequest};
use tokenledger::lifecycle::Grace;
use tokenledger::session::DevKey;
use tokenledger_projections::TokenStatus;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, error_of, spawn_app_with, stderr, stdout, tokenledger};

const DAY: Duration = Duration::from_secs(86_400);

/// A service with the console on, trusting one proxy hop (so a test picks the client address
/// with `X-Forwarded-For`), and an admin session from its development key.
async fn service(db: &TestDb) -> (TestApp, String) {
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    let app = spawn_app_with(db, |c| {
        c.switches.console_enabled = true;
        c.switches.token_auth_enabled = true;
        c.switches.trust_proxy_hops = 1;
    })
    .await;
    let session = key.sign("alice", true, app.now()).expect("session");
    (app, session)
}

async fn create(app: &TestApp, name: &str, scopes: &[&str], allowed: &[&str]) -> Minted {
    app.ledger()
        .create(CreateRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_in: Some(30 * DAY),
            actor: "user:alice".into(),
            allowed_ips: allowed.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .expect("create")
}

fn headers(token: Option<&str>, ip: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(token) = token {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
    }
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(ip).expect("header"),
    );
    h
}

/// `POST path` with `token` from client address `ip`.
async fn call(
    app: &TestApp,
    token: &str,
    ip: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let (status, body, _) = app
        .send(
            reqwest::Method::POST,
            path,
            headers(Some(token), ip),
            Some(body.to_string().into_bytes()),
        )
        .await;
    (status, body)
}

async fn ping(app: &TestApp, token: &str, ip: &str) -> (StatusCode, Value) {
    call(
        app,
        token,
        ip,
        "/api/admin/console",
        &json!({"cmd": "ping"}),
    )
    .await
}

async fn admin(app: &TestApp, session: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {session}")).expect("header"),
    );
    let (status, body, _) = app
        .send(
            reqwest::Method::POST,
            path,
            h,
            Some(body.to_string().into_bytes()),
        )
        .await;
    (status, body)
}

/// The audit rows of one token, oldest first, as (action, actor, details, position).
async fn trail(app: &TestApp, id: Uuid) -> Vec<(String, String, Value, u64)> {
    app.audit_of(Some(id))
        .await
        .into_iter()
        .map(|r| (r.action.to_owned(), r.actor, r.details, r.position))
        .collect()
}

fn plain(minted: &Minted) -> String {
    minted.token.expose().to_owned()
}

// ---------------------------------------------------------------------------------------------
// IP allowlists
// ---------------------------------------------------------------------------------------------

async fn an_allowlist_admits_its_networks_and_records_every_refusal_with_the_ip(db: TestDb) {
    let (app, _) = service(&db).await;
    let v4 = create(&app, "v4", &["console:exec"], &["10.0.0.0/8", "192.0.2.7"]).await;
    let v6 = create(&app, "v6", &["console:exec"], &["2001:db8::/32"]).await;
    let open = create(&app, "open", &["console:exec"], &[]).await;
    assert_eq!(v4.row.allowed_ips, ["10.0.0.0/8", "192.0.2.7/32"]);

    // IPv4: inside and outside.
    assert_eq!(
        ping(&app, &plain(&v4), "10.20.30.40").await.0,
        StatusCode::OK
    );
    assert_eq!(ping(&app, &plain(&v4), "192.0.2.7").await.0, StatusCode::OK);
    let (status, body) = ping(&app, &plain(&v4), "192.0.2.8").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_of(&body), "Client IP not allowed for this token");
    // IPv4-mapped IPv6, as a dual-stack listener reports an IPv4 client.
    assert_eq!(
        ping(&app, &plain(&v4), "::ffff:10.1.2.3").await.0,
        StatusCode::OK
    );
    assert_eq!(
        ping(&app, &plain(&v4), "::ffff:11.1.2.3").await.0,
        StatusCode::FORBIDDEN
    );
    // IPv6: inside and outside; an IPv4 client is outside an IPv6-only list.
    assert_eq!(
        ping(&app, &plain(&v6), "2001:db8:7::1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        ping(&app, &plain(&v6), "2001:db9::1").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ping(&app, &plain(&v6), "10.20.30.40").await.0,
        StatusCode::FORBIDDEN
    );
    // No list: any address.
    assert_eq!(
        ping(&app, &plain(&open), "203.0.113.9").await.0,
        StatusCode::OK
    );

    // Every refusal is recorded, with the client's address.
    let denied: Vec<(Value, Option<String>)> = app
        .audit_of(Some(v4.row.id))
        .await
        .into_iter()
        .filter(|r| r.action == "API_TOKEN_DENIED")
        .map(|r| (r.details["reason"].clone(), r.ip))
        .collect();
    assert_eq!(
        denied,
        [
            (json!("ip_not_allowed"), Some("192.0.2.8".to_owned())),
            (json!("ip_not_allowed"), Some("::ffff:11.1.2.3".to_owned())),
        ]
    );
    let row = app.token(v4.row.id).await;
    assert_eq!((row.use_count, row.denied_count), (3, 2));
    // The list is in the creation event, so a rebuild and a fresh node know it.
    let created = &trail(&app, v4.row.id).await[0];
    assert_eq!(
        created.2["allowed_ips"],
        json!(["10.0.0.0/8", "192.0.2.7/32"])
    );
    app.stop().await;
}

async fn verify_applies_the_checked_tokens_allowlist_to_the_given_ip(db: TestDb) {
    let (app, _) = service(&db).await;
    let checker = create(&app, "checker", &["tokens:verify"], &[]).await;
    let checked = create(
        &app,
        "checked",
        &["registry:read"],
        &["10.0.0.0/8", "2001:db8::/32"],
    )
    .await;
    let verify = |ip: Option<&str>| {
        let mut body = json!({"token": plain(&checked), "scopes": ["registry:read"]});
        if let Some(ip) = ip {
            body["ip"] = json!(ip);
        }
        body
    };
    for (ip, code) in [
        (Some("10.9.8.7"), "VALID"),
        (Some("::ffff:10.9.8.7"), "VALID"),
        (Some("2001:db8::5"), "VALID"),
        (Some("172.16.0.1"), "IP_NOT_ALLOWED"),
        (Some("2001:dead::1"), "IP_NOT_ALLOWED"),
        (None, "IP_NOT_ALLOWED"),
    ] {
        let (status, body) = call(
            &app,
            &plain(&checker),
            "198.51.100.1",
            "/v1/verify",
            &verify(ip),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"], code, "ip {ip:?}: {body}");
        assert_eq!(body["valid"], code == "VALID");
    }
    // The verifying service's own address is not the checked token's: only `ip` counts.
    let row = app.token(checked.row.id).await;
    assert_eq!((row.use_count, row.denied_count), (3, 3));
    app.stop().await;
}

async fn rotation_keeps_or_replaces_the_list_and_bad_lists_are_refused(db: TestDb) {
    let (app, session) = service(&db).await;
    // Created through the admin API with a list.
    let (status, body) = admin(
        &app,
        &session,
        "/api/admin/tokens",
        &json!({"name": "ci", "scopes": ["console:exec"], "allowed_ips": ["10.0.0.0/8"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["allowed_ips"], json!(["10.0.0.0/8"]));
    let id: Uuid = body["id"].as_str().expect("id").parse().expect("uuid");

    // A rotation keeps the list unless it is given.
    let (status, kept) = admin(
        &app,
        &session,
        &format!("/api/admin/tokens/{id}/rotate"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");
    assert_eq!(kept["allowed_ips"], json!(["10.0.0.0/8"]));
    let kept_id: Uuid = kept["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(
        ping(&app, kept["token"].as_str().expect("token"), "11.0.0.1")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, replaced) = admin(
        &app,
        &session,
        &format!("/api/admin/tokens/{kept_id}/rotate"),
        &json!({"allowed_ips": ["2001:db8::/32"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{replaced}");
    assert_eq!(replaced["allowed_ips"], json!(["2001:db8::/32"]));
    let replaced_id: Uuid = replaced["id"].as_str().expect("id").parse().expect("uuid");
    let (status, lifted) = admin(
        &app,
        &session,
        &format!("/api/admin/tokens/{replaced_id}/rotate"),
        &json!({"allowed_ips": []}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{lifted}");
    assert!(lifted.get("allowed_ips").is_none(), "{lifted}");
    assert_eq!(
        ping(
            &app,
            lifted["token"].as_str().expect("token"),
            "203.0.113.1"
        )
        .await
        .0,
        StatusCode::OK
    );

    // Bad lists: a clear message, never the value, and nothing appended.
    let head = app.head().await;
    for (list, message) in [
        (
            json!(["10.0.0.0/8", "not-a-network\u{1b}[2J"]),
            "allowed IP entry 2 is not an address or a CIDR block; accepted: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32, ::1",
        ),
        (
            json!(["0.0.0.0/0"]),
            "an allowlist of only 0.0.0.0/0 or ::/0 admits every address; list the networks the client uses, or give no allowlist for no restriction",
        ),
        (
            json!(["10.1.2.3/8"]),
            "allowed IP entry 1 has bits set past its prefix length; did you mean 10.0.0.0/8?",
        ),
    ] {
        let (status, body) = admin(
            &app,
            &session,
            "/api/admin/tokens",
            &json!({"name": "bad", "scopes": ["console:exec"], "allowed_ips": list}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_of(&body), message);
    }
    assert_eq!(app.head().await, head, "a refused list appends nothing");
    app.stop().await;
}

async fn the_cli_takes_allow_ip_on_create_and_rotate(db: TestDb) {
    let url = db.url_string();
    let out = tokenledger(
        &url,
        &[
            "token",
            "create",
            "--name",
            "deploy",
            "--scope",
            "console:exec",
            "--allow-ip",
            "10.0.0.0/8",
            "--allow-ip",
            "::ffff:192.0.2.0/120",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(
        created["allowed_ips"],
        json!(["10.0.0.0/8", "192.0.2.0/24"])
    );
    let id = created["id"].as_str().expect("id").to_owned();

    let out = tokenledger(&url, &["token", "rotate", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(rotated["allowed_ips"], created["allowed_ips"], "kept");
    let next = rotated["id"].as_str().expect("id").to_owned();
    let out = tokenledger(
        &url,
        &["token", "rotate", &next, "--allow-any-ip", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lifted: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert!(lifted.get("allowed_ips").is_none(), "{lifted}");

    let out = tokenledger(&url, &["token", "show", &id]);
    assert!(
        stdout(&out).contains("allowed IPs:  10.0.0.0/8 192.0.2.0/24"),
        "{}",
        stdout(&out)
    );

    for (args, message) in [
        (
            vec!["--allow-ip", "10.0.0.300/8"],
            "allowed IP entry is not an address or a CIDR block",
        ),
        (vec!["--allow-ip", "0.0.0.0/0"], "admits every address"),
        (vec!["--allow-ip", "::/0"], "admits every address"),
    ] {
        let mut all = vec!["token", "create", "--name", "bad", "--scope", "admin"];
        all.extend(args);
        let out = tokenledger(&url, &all);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// Self-rotation and reuse detection
// ---------------------------------------------------------------------------------------------

const SELF_SCOPES: &[&str] = &["console:exec", "tokens:rotate-self"];

async fn rotate_self(app: &TestApp, token: &str) -> (StatusCode, Value) {
    call(app, token, "10.1.1.1", "/v1/tokens/self/rotate", &json!({})).await
}

async fn the_honest_path_switches_to_the_successor_and_closes_the_old_token(db: TestDb) {
    let (app, _) = service(&db).await;
    let old = create(&app, "agent", SELF_SCOPES, &["10.0.0.0/8"]).await;
    app.clock.advance(DAY);
    let (status, new) = rotate_self(&app, &plain(&old)).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    let new_token = new["token"]
        .as_str()
        .expect("the successor, once")
        .to_owned();
    let new_id: Uuid = new["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(new["rotated_from"], json!(old.row.id));
    assert_eq!(new["scopes"], json!(["console:exec", "tokens:rotate-self"]));
    assert_eq!(new["allowed_ips"], json!(["10.0.0.0/8"]));
    // The old token's lifetime (30 days), counted from the rotation.
    let successor = app.token(new_id).await;
    assert_eq!(successor.expires_at, app.now().plus(30 * DAY));

    // Until the successor is first used, the old token still works (a lost answer is not a
    // lock-out).
    assert_eq!(ping(&app, &plain(&old), "10.1.1.1").await.0, StatusCode::OK);
    // The successor's first use closes the old token in the same append.
    assert_eq!(ping(&app, &new_token, "10.1.1.1").await.0, StatusCode::OK);
    assert_eq!(ping(&app, &new_token, "10.1.1.1").await.0, StatusCode::OK);
    let old_trail = trail(&app, old.row.id).await;
    let (action, actor, details, position) = old_trail.last().expect("events").clone();
    assert_eq!(
        (action.as_str(), actor.as_str()),
        ("API_TOKEN_REVOKED", "system:rotation")
    );
    assert_eq!(
        details["reason"],
        json!(format!(
            "rotation overlap ended: its successor {new_id} was first used"
        ))
    );
    let first_use = trail(&app, new_id).await[1].clone();
    assert_eq!(first_use.0, "API_TOKEN_USED");
    assert_eq!(
        first_use.3.abs_diff(position),
        1,
        "one append: adjacent positions"
    );
    // The rotation itself records the old token's use and the rotation, by the token.
    let actions: Vec<&str> = old_trail.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "API_TOKEN_CREATED",
            "API_TOKEN_USED",
            "API_TOKEN_ROTATED",
            "API_TOKEN_USED",
            "API_TOKEN_REVOKED"
        ]
    );
    assert_eq!(old_trail[2].1, format!("token:{}", old.row.id));
    assert_eq!(old_trail[2].2["until_successor_used"], json!(true));
    assert_eq!(
        app.token(new_id).await.status_at(app.now()),
        TokenStatus::Active,
        "the honest holder keeps working"
    );

    // A token without the scope cannot rotate itself.
    let plain_token = create(&app, "plain", &["console:exec"], &[]).await;
    let (status, body) = rotate_self(&app, &plain(&plain_token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error_of(&body),
        "Missing required scope: tokens:rotate-self"
    );
    app.stop().await;
}

/// Every token of the chain is revoked by reuse detection, and the presented token's denial
/// is in the same append.
async fn assert_chain_revoked_for_reuse(app: &TestApp, presented: Uuid, chain: &[Uuid]) {
    let denial = trail(app, presented)
        .await
        .into_iter()
        .find(|r| r.0 == "API_TOKEN_DENIED" && r.2["reason"] == "reuse_detected")
        .expect("the reuse is recorded as a denial");
    for id in chain {
        let row = app.token(*id).await;
        assert_eq!(row.status_at(app.now()), TokenStatus::Revoked, "{id}");
        let revoked = trail(app, *id)
            .await
            .into_iter()
            .find(|r| r.0 == "API_TOKEN_REVOKED" && r.1 == "system:reuse-detection");
        if let Some(revoked) = revoked {
            assert!(
                revoked.3.abs_diff(denial.3) < 1 + chain.len() as u64,
                "the chain's revocations are in the denial's append"
            );
            assert!(
                revoked.2["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&format!("reuse detected: token {presented}"))),
                "{}",
                revoked.2
            );
        } else {
            // Closed earlier by its successor's first use.
            assert_eq!(row.revoked_by.as_deref(), Some("system:rotation"), "{id}");
        }
    }
}

async fn a_replayed_old_token_revokes_the_whole_chain(db: TestDb) {
    let (app, _) = service(&db).await;
    let first = create(&app, "agent", SELF_SCOPES, &[]).await;
    let (_, second) = rotate_self(&app, &plain(&first)).await;
    let second_token = second["token"].as_str().expect("token").to_owned();
    let second_id: Uuid = second["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(
        ping(&app, &second_token, "10.1.1.1").await.0,
        StatusCode::OK
    );
    let (_, third) = rotate_self(&app, &second_token).await;
    let third_token = third["token"].as_str().expect("token").to_owned();
    let third_id: Uuid = third["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(ping(&app, &third_token, "10.1.1.1").await.0, StatusCode::OK);

    // Someone replays the first token after the holder moved on.
    let (status, body) = ping(&app, &plain(&first), "198.51.100.66").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_of(&body), "Token has been revoked");
    assert_chain_revoked_for_reuse(&app, first.row.id, &[first.row.id, second_id, third_id]).await;
    // The honest holder's current token is revoked too: the chain is compromised.
    let (status, body) = ping(&app, &third_token, "10.1.1.1").await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::UNAUTHORIZED, "Token has been revoked")
    );
    app.stop().await;
}

async fn a_second_self_rotation_is_reuse(db: TestDb) {
    let (app, _) = service(&db).await;
    let old = create(&app, "agent", SELF_SCOPES, &[]).await;
    let (status, new) = rotate_self(&app, &plain(&old)).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    let new_id: Uuid = new["id"].as_str().expect("id").parse().expect("uuid");
    let head = app.head().await;
    let (status, body) = rotate_self(&app, &plain(&old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.get("token").is_none(), "no second successor: {body}");
    assert_eq!(error_of(&body), "Token has been revoked");
    assert_eq!(
        app.head().await,
        head + 3,
        "one append: the denial and two revocations"
    );
    assert_chain_revoked_for_reuse(&app, old.row.id, &[old.row.id, new_id]).await;
    app.stop().await;
}

async fn two_self_rotations_racing_on_two_connections_mint_one_successor_then_revoke_it(
    db: TestDb,
) {
    let (app, _) = service(&db).await;
    for round in 0..5 {
        let old = create(&app, &format!("racer-{round}"), SELF_SCOPES, &[]).await;
        let token = plain(&old);
        // Two clients, so two connections.
        let send = |client: reqwest::Client| {
            let url = format!("{}/v1/tokens/self/rotate", app.base);
            let token = token.clone();
            async move {
                let r = client
                    .post(url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .expect("send");
                let status = r.status();
                (status, r.json::<Value>().await.expect("json"))
            }
        };
        let (a, b) = tokio::join!(send(reqwest::Client::new()), send(reqwest::Client::new()));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::UNAUTHORIZED],
            "round {round}: {a:?} {b:?}"
        );
        let winner = if a.0 == StatusCode::CREATED {
            &a.1
        } else {
            &b.1
        };
        let successor: Uuid = winner["id"].as_str().expect("id").parse().expect("uuid");
        let rotations = trail(&app, old.row.id)
            .await
            .iter()
            .filter(|r| r.0 == "API_TOKEN_ROTATED")
            .count();
        assert_eq!(rotations, 1, "round {round}: one rotation in the log");
        assert_chain_revoked_for_reuse(&app, old.row.id, &[old.row.id, successor]).await;
        println!(
            "race round {round}: statuses {statuses:?}, one successor {successor}, chain revoked by system:reuse-detection"
        );
    }
    app.stop().await;
}

async fn reuse_detection_sends_a_webhook_for_every_token_of_the_chain(db: TestDb) {
    let receiver = crate::webhooks::Receiver::start().await;
    let app = spawn_app_with(&db, |c| {
        c.switches.console_enabled = true;
        c.switches.token_auth_enabled = true;
        c.switches.trust_proxy_hops = 1;
        c.webhooks = Some(crate::webhooks::config_for(&receiver));
    })
    .await;
    receiver.use_clock(&app);
    let old = create(&app, "agent", SELF_SCOPES, &[]).await;
    let (_, new) = rotate_self(&app, &plain(&old)).await;
    let new_token = new["token"].as_str().expect("token").to_owned();
    let new_id: Uuid = new["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(ping(&app, &new_token, "10.1.1.1").await.0, StatusCode::OK);
    // The old token was closed by the first use (a revocation too, so a webhook of its own).
    let closed = receiver
        .wait_until("the overlap's close", |seen| {
            seen.iter().any(|r| r.event_type == "token.revoked")
        })
        .await;
    assert_eq!(closed[0].json["data"]["actor"], "system:rotation");
    assert_eq!(
        ping(&app, &plain(&old), "198.51.100.66").await.0,
        StatusCode::UNAUTHORIZED
    );
    let seen = receiver
        .wait_until("reuse detection", |seen| {
            seen.iter().any(|r| r.event_type == "token.reuse_detected")
        })
        .await;
    let reuse: Vec<&Value> = seen
        .iter()
        .filter(|r| r.event_type == "token.reuse_detected")
        .map(|r| &r.json)
        .collect();
    // The old token was already revoked by the overlap's close: only its successor is left.
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(reuse[0]["data"]["token_id"], json!(new_id));
    assert!(
        seen.iter().all(|r| r.verified.is_ok()),
        "every delivery is signed"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Rotation overlap that ends at first use
// ---------------------------------------------------------------------------------------------

async fn an_until_used_overlap_ends_at_first_use_or_at_its_maximum(db: TestDb) {
    let (app, session) = service(&db).await;
    // Bad grace: a message naming what is accepted, nothing appended.
    let d = create(&app, "d", &["console:exec"], &[]).await;
    let head = app.head().await;
    for grace in ["until-used:", "until-used:0s", "until-usedx", "soon"] {
        let (status, body) = admin(
            &app,
            &session,
            &format!("/api/admin/tokens/{}/rotate", d.row.id),
            &json!({"grace": grace}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{grace}: {body}");
        assert_eq!(
            error_of(&body),
            "\"grace\": grace must be a duration like 0s, 15m or 24h, or until-used, or until-used:MAX with MAX a duration like 7d"
        );
    }
    assert_eq!(app.head().await, head);

    // Through the admin API, with a maximum.
    let a = create(&app, "a", &["console:exec"], &[]).await;
    let (status, a2) = admin(
        &app,
        &session,
        &format!("/api/admin/tokens/{}/rotate", a.row.id),
        &json!({"grace": "until-used:7d"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{a2}");
    let old = app.token(a.row.id).await;
    assert!(old.until_successor_used);
    assert_eq!(old.expires_at, app.now().plus(7 * DAY), "at most 7 days");
    // Before the successor's first use, both work.
    app.clock.advance(DAY);
    assert_eq!(ping(&app, &plain(&a), "10.0.0.1").await.0, StatusCode::OK);
    let a2_token = a2["token"].as_str().expect("token");
    assert_eq!(ping(&app, a2_token, "10.0.0.2").await.0, StatusCode::OK);
    let old = app.token(a.row.id).await;
    assert_eq!(old.revoked_by.as_deref(), Some("system:rotation"));
    assert_eq!(old.revoked_at, Some(app.now()), "closed at the first use");

    // Through the ledger with no maximum: unused, the old token lasts its own lifetime.
    let b = create(&app, "b", &["console:exec"], &[]).await;
    let before = app.token(b.row.id).await.expires_at;
    let b2 = app
        .ledger()
        .rotate(
            b.row.id,
            RotateRequest {
                grace: Some(Grace::UntilUsed { max: None }),
                actor: "user:alice".into(),
                ..RotateRequest::default()
            },
        )
        .await
        .expect("rotate");
    assert_eq!(app.token(b.row.id).await.expires_at, before);
    // With a maximum and the successor never used, the old token expires at the maximum.
    let c = create(&app, "c", &["console:exec"], &[]).await;
    let c2 = app
        .ledger()
        .rotate(
            c.row.id,
            RotateRequest {
                grace: Some(Grace::UntilUsed { max: Some(DAY) }),
                actor: "user:alice".into(),
                ..RotateRequest::default()
            },
        )
        .await
        .expect("rotate");
    app.clock.advance(DAY + Duration::from_secs(1));
    let (status, body) = ping(&app, &plain(&c), "10.0.0.1").await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::UNAUTHORIZED, "Token has expired")
    );
    // A successor used after its predecessor expired closes nothing.
    assert_eq!(ping(&app, &plain(&c2), "10.0.0.1").await.0, StatusCode::OK);
    assert_eq!(app.token(c.row.id).await.revoked_at, None);
    assert_eq!(ping(&app, &plain(&b2), "10.0.0.1").await.0, StatusCode::OK);
    assert_eq!(
        app.token(b.row.id).await.revoked_by.as_deref(),
        Some("system:rotation")
    );

    app.stop().await;
}

async fn the_cli_and_the_page_offer_until_used(db: TestDb) {
    let (app, session) = service(&db).await;
    let url = db.url_string();
    // The CLI runs on the system clock, the service on its own: the CLI makes its token.
    let out = tokenledger(
        &url,
        &[
            "token", "create", "--name", "a", "--scope", "admin", "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let a: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    let a_id = a["id"].as_str().expect("id").to_owned();
    let out = tokenledger(
        &url,
        &["token", "rotate", &a_id, "--grace", "until-used:2d"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tokenledger(&url, &["token", "show", &a_id]);
    assert!(
        stdout(&out).contains("(the overlap ends at its first use)"),
        "{}",
        stdout(&out)
    );
    let out = tokenledger(&url, &["token", "rotate", &a_id, "--grace", "until-use"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("until-used:MAX"), "{}", stderr(&out));

    // The page's rotate form takes the same words, and the new token's allowed IPs.
    let b = create(&app, "b", &["console:exec"], &["10.0.0.0/8"]).await;
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={session}")).expect("cookie"),
    );
    h.insert("origin", HeaderValue::from_str(&app.base).expect("origin"));
    let (status, page, _) = app
        .send_text(
            reqwest::Method::GET,
            &format!("/admin/tokens/{}/rotate", b.row.id),
            h.clone(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("until-used"), "the form explains until-used");
    assert!(
        page.contains("value=\"10.0.0.0/8\""),
        "the form shows the list"
    );
    let (status, page, _) = app
        .send_text(
            reqwest::Method::POST,
            &format!("/admin/tokens/{}/rotate", b.row.id),
            h,
            Some(b"grace=until-used%3A3d&allowed_ips=10.0.0.0%2F8%2C+192.0.2.0%2F24".to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{page}");
    let old = app.token(b.row.id).await;
    assert!(old.until_successor_used);
    let successor = app.token(old.rotated_to.expect("rotated")).await;
    assert_eq!(successor.allowed_ips, ["10.0.0.0/8", "192.0.2.0/24"]);
    app.stop().await;
}

crate::on_both_backends!(
    an_allowlist_admits_its_networks_and_records_every_refusal_with_the_ip,
    verify_applies_the_checked_tokens_allowlist_to_the_given_ip,
    rotation_keeps_or_replaces_the_list_and_bad_lists_are_refused,
    the_cli_takes_allow_ip_on_create_and_rotate,
    the_honest_path_switches_to_the_successor_and_closes_the_old_token,
    a_replayed_old_token_revokes_the_whole_chain,
    a_second_self_rotation_is_reuse,
    two_self_rotations_racing_on_two_connections_mint_one_successor_then_revoke_it,
    reuse_detection_sends_a_webhook_for_every_token_of_the_chain,
    an_until_used_overlap_ends_at_first_use_or_at_its_maximum,
    the_cli_and_the_page_offer_until_used,
);
