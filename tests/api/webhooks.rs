//! Webhooks end to end: a loopback receiver that counts deliveries by `Idempotency-Key` and
//! checks each signature as the README tells a receiver to; the service in process (on a
//! manual clock: backoff and expiry warnings) and the real binary (SIGKILLed mid-delivery,
//! and the `webhooks status` / `webhooks retry` commands), on both backends.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use tokenledger::app::webhooks::{
    EVENT_HEADER, IDEMPOTENCY_HEADER, SEND_BATCH, SIGNATURE_HEADER, SUBSCRIBER,
};
use tokenledger::app::{CreateRequest, Services};
use tokenledger::clock::ManualClock;
use tokenledger::clock::{Clock as _, SystemClock};
use tokenledger::config::{TokenSettings, WebhookConfig, WebhookSecret};
use tokenledger::store::outbox::{Delivery, DeliveryStatus};
use tokenledger_events::EventLog as _;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, open_store, spawn_app_with, stderr, stdout, tokenledger};

/// The secret every test signs with (at least 32 bytes).
pub const SECRET: &str = "whsec-test-0123456789abcdef0123456789abcdef";

/// What a receiver should accept between the signature's time and its own.
pub const TOLERANCE_SECS: i64 = 300;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub key: String,
    pub event_type: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    /// The signature checked out against the clock the receiver was given.
    pub verified: Result<(), String>,
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Statuses to answer, in order; then `always`.
    answers: VecDeque<u16>,
    always: Option<u16>,
    in_flight: usize,
    delay: Duration,
}

/// A webhook receiver on a loopback port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inbox: Arc<Mutex<Inbox>>,
    /// The receiver's clock (the service's manual clock in process, else the system's).
    clock: Arc<Mutex<Option<ManualClock>>>,
}

/// Decrements the in-flight count when a request ends, answered or cut.
struct InFlight(Arc<Mutex<Inbox>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().expect("inbox").in_flight -= 1;
    }
}

/// What a receiver does with `Tokenledger-Signature: t=<secs>,v1=<hex>`: the HMAC-SHA256 of
/// `"<t>.<body>"` under the secret, compared in constant time, and `t` within the tolerance.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), String> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("no t= in the signature header")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(format!(
            "timestamp {t} is more than {TOLERANCE_SECS}s from {now}"
        ));
    }
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let ok = signatures
        .iter()
        .any(|s| hex::decode(s).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()));
    if ok {
        Ok(())
    } else {
        Err("no v1 signature matches".into())
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature = header(SIGNATURE_HEADER);
    let received = Received {
        key: header(IDEMPOTENCY_HEADER),
        event_type: header(EVENT_HEADER),
        verified: verify(SECRET.as_bytes(), &signature, &body, r.now()),
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let (status, delay) = {
        let mut inbox = r.inbox.lock().expect("inbox");
        inbox.received.push(received);
        inbox.in_flight += 1;
        let status = inbox.answers.pop_front().or(inbox.always).unwrap_or(200);
        (status, inbox.delay)
    };
    let _in_flight = InFlight(r.inbox.clone());
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).expect("status")
}

impl Receiver {
    /// A receiver on the system clock, until [`Receiver::use_clock`].
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let receiver = Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            inbox: Arc::default(),
            clock: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        receiver
    }

    /// Check signatures against the service's manual clock.
    pub fn use_clock(&self, app: &TestApp) {
        *self.clock.lock().expect("clock") = Some(app.clock.clone());
    }

    /// Now, in unix seconds.
    fn now(&self) -> i64 {
        let now = match &*self.clock.lock().expect("clock") {
            Some(c) => c.now(),
            None => SystemClock.now(),
        };
        now.as_micros().div_euclid(1_000_000)
    }

    /// Answer these statuses first (then `always`, or 200).
    pub fn answer(&self, statuses: &[u16]) {
        self.inbox.lock().expect("inbox").answers.extend(statuses);
    }

    pub fn answer_always(&self, status: Option<u16>) {
        self.inbox.lock().expect("inbox").always = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.inbox.lock().expect("inbox").delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").received.clone()
    }

    pub fn in_flight(&self) -> usize {
        self.inbox.lock().expect("inbox").in_flight
    }

    /// Wait (up to 30 s) until `done` holds of what was received.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.received();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never saw {what}: {} received: {:#?}",
                seen.len(),
                seen.iter()
                    .map(|r| (&r.event_type, &r.key))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The configuration of a service sending to `receiver`.
pub fn config_for(receiver: &Receiver) -> WebhookConfig {
    WebhookConfig::new(
        receiver.url.clone(),
        WebhookSecret::new(SECRET).expect("secret"),
    )
}

fn distinct(seen: &[Received]) -> HashSet<String> {
    seen.iter().map(|r| r.key.clone()).collect()
}

fn of_type<'a>(seen: &'a [Received], t: &str) -> Vec<&'a Received> {
    seen.iter().filter(|r| r.event_type == t).collect()
}

async fn create(app: &TestApp, name: &str, expires_in: Option<Duration>) -> Uuid {
    app.ledger()
        .create(CreateRequest {
            name: name.into(),
            scopes: vec!["logs:read".into()],
            expires_in,
            actor: "test:admin".into(),
            allowed_ips: Vec::new(),
        })
        .await
        .expect("create")
        .row
        .id
}

/// Poll the stored row `id` until `done` holds of it.
async fn wait_row(
    app: &TestApp,
    id: Uuid,
    what: &str,
    done: impl Fn(&Delivery) -> bool,
) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = app.services().store().outbox_get(id).await.expect("read");
        if let Some(row) = row.filter(|r| done(r)) {
            return row;
        }
        assert!(Instant::now() < deadline, "delivery {id} never got {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------------------------

async fn revocations_are_delivered_signed_once_and_survive_a_rebuild(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, |c| c.webhooks = Some(config_for(&receiver))).await;
    receiver.use_clock(&app);
    // The subscriber starts at the head; wait until it has.
    let store = app.services().store().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .outbox_checkpoint(SUBSCRIBER)
        .await
        .expect("read")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the subscriber never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let plain = create(&app, "deploy bot", None).await;
    let reused = create(&app, "rotating bot", None).await;
    let untouched = create(&app, "quiet bot", None).await;
    app.revoke(plain).await;
    app.ledger()
        .revoke(
            reused,
            "system:reuse-detection",
            Some("reuse of a rotated token".into()),
        )
        .await
        .expect("revoke");
    let _ = app.rotate(untouched, Duration::from_secs(3600)).await;

    let seen = receiver
        .wait_until("both revocations", |s| distinct(s).len() >= 2)
        .await;
    // Nothing else comes: creations and rotations are not sent.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen_after = receiver.received();
    assert_eq!(seen_after.len(), 2, "{seen_after:#?}");
    let events = store.read_from(0, 100).await.expect("log");
    for r in &seen {
        assert_eq!(r.verified, Ok(()), "{r:?}");
        assert_eq!(
            r.json["id"].as_str(),
            Some(r.key.as_str()),
            "the body's id is the key"
        );
        assert_eq!(r.json["type"].as_str(), Some(r.event_type.as_str()));
        let t: i64 = r.signature["t=".len()..]
            .split(',')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("t");
        assert_eq!(
            t,
            app.now().as_micros() / 1_000_000,
            "t is the service's clock"
        );
        // The key is the event id.
        let event = events
            .iter()
            .find(|e| e.event_id.to_string() == r.key)
            .expect("an event with the key's id");
        assert_eq!(r.json["data"]["position"].as_u64(), Some(event.position));
        assert_eq!(
            r.json["created_at"].as_str(),
            Some(event.recorded_at.to_rfc3339().as_str())
        );
        // A changed body, another secret or a stale time fails the receiver's check.
        let now = app.now().as_micros() / 1_000_000;
        assert!(verify(SECRET.as_bytes(), &r.signature, b"{}", now).is_err());
        assert!(
            verify(
                b"another secret of thirty-two bytes!!",
                &r.signature,
                r.body.as_bytes(),
                now
            )
            .is_err()
        );
        assert!(
            verify(
                SECRET.as_bytes(),
                &r.signature,
                r.body.as_bytes(),
                now + TOLERANCE_SECS + 1
            )
            .is_err()
        );
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                &r.signature,
                r.body.as_bytes(),
                now + TOLERANCE_SECS
            ),
            Ok(())
        );
    }
    let revoked = of_type(&seen, "token.revoked");
    assert_eq!(revoked.len(), 1, "{seen:#?}");
    let data = &revoked[0].json["data"];
    assert_eq!(data["token_id"].as_str(), Some(plain.to_string().as_str()));
    assert_eq!(data["name"], "deploy bot");
    assert_eq!(data["actor"], "test:admin");
    assert_eq!(data["reason"], "checklist");
    let reuse = of_type(&seen, "token.reuse_detected");
    assert_eq!(reuse.len(), 1, "{seen:#?}");
    assert_eq!(
        reuse[0].json["data"]["token_id"].as_str(),
        Some(reused.to_string().as_str())
    );
    assert_eq!(reuse[0].json["data"]["actor"], "system:reuse-detection");
    // The body is exactly {id, type, created_at, data}.
    let keys: Vec<&String> = revoked[0]
        .json
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(keys, ["created_at", "data", "id", "type"]);

    // Delivered, in the outbox; a rebuild of the projections keeps it, and a restart sends
    // nothing again.
    let counts = store.outbox_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.delivered, counts.failed), (0, 2, 0));
    app.stop().await;
    let out = tokenledger(&db.url_string(), &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let app = spawn_app_with(&db, |c| c.webhooks = Some(config_for(&receiver))).await;
    receiver.use_clock(&app);
    let revoked_again = create(&app, "late", None).await;
    app.revoke(revoked_again).await;
    let seen = receiver
        .wait_until("the revocation after the restart", |s| s.len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing resent after a rebuild: {seen:#?}"
    );
    let counts = app
        .services()
        .store()
        .outbox_counts()
        .await
        .expect("counts");
    assert_eq!((counts.pending, counts.delivered, counts.failed), (0, 3, 0));
    app.stop().await;
}

async fn a_refused_delivery_is_retried_with_exponential_backoff(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 500, 503]);
    let app = spawn_app_with(&db, |c| {
        let mut w = config_for(&receiver);
        w.retry_base = Duration::from_secs(10);
        w.max_attempts = 5;
        c.webhooks = Some(w);
        c.metrics_bind_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    receiver.use_clock(&app);
    let store = app.services().store().clone();
    while store
        .outbox_checkpoint(SUBSCRIBER)
        .await
        .expect("read")
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = create(&app, "flaky receiver", None).await;
    app.revoke(id).await;
    let key = receiver
        .wait_until("the first attempt", |s| !s.is_empty())
        .await[0]
        .key
        .parse::<Uuid>()
        .expect("key");
    // Each refusal doubles the wait (10 s, 20 s, 40 s), jittered into its upper half; the
    // manual clock is moved to each due time.
    for (attempts, full, status) in [(1u32, 10u64, 500u16), (2, 20, 500), (3, 40, 503)] {
        let before = app.now();
        let row = wait_row(&app, key, "a recorded refusal", |r| r.attempts == attempts).await;
        assert_eq!(row.status, DeliveryStatus::Pending);
        assert_eq!(row.last_status, Some(status));
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains(&status.to_string())),
            "{row:?}"
        );
        let wait = Duration::from_micros(
            u64::try_from(row.next_attempt_at.as_micros() - before.as_micros()).expect("later"),
        );
        let full = Duration::from_secs(full);
        assert!(
            wait >= full / 2 && wait <= full,
            "attempt {attempts}: waits {wait:?}, expected {:?}..={full:?}",
            full / 2
        );
        // Not sent again before it is due.
        app.clock.set(row.next_attempt_at.plus_micros(-1_000_000));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            receiver.received().len(),
            attempts as usize,
            "nothing before the due time"
        );
        app.clock.set(row.next_attempt_at);
    }
    let row = wait_row(&app, key, "delivery", |r| {
        r.status == DeliveryStatus::Delivered
    })
    .await;
    assert_eq!(row.attempts, 4);
    assert_eq!(row.last_status, Some(200));
    assert!(row.delivered_at.is_some(), "{row:?}");
    let seen = receiver.received();
    assert_eq!(seen.len(), 4);
    assert_eq!(distinct(&seen).len(), 1, "one key, every attempt");
    assert!(
        seen.iter().all(|r| r.body == seen[0].body),
        "every attempt sends the same body"
    );

    // Deliveries by outcome, on /metrics.
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        app.metrics_port.expect("metrics port")
    ))
    .await
    .expect("scrape")
    .text()
    .await
    .expect("text");
    assert!(
        metrics.contains("tokenledger_webhook_deliveries_total{outcome=\"retry\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenledger_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

async fn expiry_warnings_come_30_7_and_1_days_before_once_each(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, |c| c.webhooks = Some(config_for(&receiver))).await;
    receiver.use_clock(&app);
    let hooks = app.services().webhooks().expect("webhooks on").clone();
    let day = Duration::from_secs(86_400);
    let start = app.now();
    let warned = create(&app, "expiring", Some(day * 40)).await;
    let revoked = create(&app, "revoked before", Some(day * 40)).await;
    let rotated = create(&app, "rotated away", Some(day * 40)).await;
    app.revoke(revoked).await;
    let successor = app.rotate(rotated, Duration::from_secs(60)).await.row.id;
    let expires = start.plus(day * 40);

    let warnings = |seen: &[Received]| -> Vec<(String, u64, String)> {
        of_type(seen, "token.expiring")
            .into_iter()
            .map(|r| {
                (
                    r.json["data"]["token_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    r.json["data"]["days"].as_u64().unwrap_or_default(),
                    r.json["data"]["expires_at"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    // 11 days before expiry nothing is due; every threshold, once, scanned twice.
    app.clock
        .set(expires.plus_micros(-((day * 31).as_micros() as i64)));
    assert_eq!(
        hooks.enqueue_expiring().await.expect("scan"),
        0,
        "31 days out"
    );
    for (days, left) in [
        (30u64, day * 30),
        (30, day * 20),
        (7, day * 7),
        (7, day * 3),
        (1, day),
        (1, Duration::from_secs(60)),
    ] {
        app.clock
            .set(expires.plus_micros(-(left.as_micros() as i64)));
        let new = hooks.enqueue_expiring().await.expect("scan");
        let again = hooks.enqueue_expiring().await.expect("scan");
        assert_eq!(again, 0, "a second scan inserts nothing");
        let first_at_threshold = left == day * days as u32;
        // The successor (made with the rotated token's remaining life) may be warned too.
        assert_eq!(
            new > 0,
            first_at_threshold,
            "{days} days, {left:?} left: {new} new"
        );
        if first_at_threshold {
            // Sent now, before the clock moves on.
            receiver
                .wait_until(&format!("the {days}-day warning"), |s| {
                    warnings(s)
                        .iter()
                        .any(|w| w.0 == warned.to_string() && w.1 == days)
                })
                .await;
        }
    }
    app.clock.set(expires.plus_micros(1));
    assert_eq!(
        hooks.enqueue_expiring().await.expect("scan"),
        0,
        "after expiry"
    );
    let seen = receiver
        .wait_until("the three warnings", |s| {
            warnings(s)
                .iter()
                .filter(|w| w.0 == warned.to_string())
                .count()
                >= 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen_all = receiver.received();
    let all = warnings(&seen_all);
    let of = |id: Uuid| -> Vec<u64> {
        all.iter()
            .filter(|w| w.0 == id.to_string())
            .map(|w| w.1)
            .collect()
    };
    assert_eq!(of(warned), [30, 7, 1], "once each, in order: {seen:#?}");
    assert!(
        all.iter()
            .filter(|w| w.0 == warned.to_string())
            .all(|w| w.2 == expires.to_rfc3339())
    );
    assert_eq!(
        of(revoked),
        Vec::<u64>::new(),
        "a revoked token is not warned"
    );
    assert_eq!(
        of(rotated),
        Vec::<u64>::new(),
        "a rotated-away token is not warned"
    );
    let successor_row = app.token(successor).await;
    if successor_row.expires_at.as_micros() <= expires.as_micros() {
        assert_eq!(of(successor), [30, 7, 1], "the successor is active");
    }
    // Every warning has its own key; each was received once.
    assert_eq!(
        distinct(&seen_all).len(),
        seen_all.len(),
        "no warning twice"
    );
    for r in of_type(&seen_all, "token.expiring") {
        assert!(r.json["data"]["name"].is_string(), "{r:?}");
        assert!(r.verified.is_ok(), "{r:?}");
    }
    app.stop().await;
}

async fn a_failed_delivery_is_shown_and_requeued_by_the_cli(db: TestDb) {
    let receiver = Receiver::start().await;
    receiver.answer_always(Some(500));
    let app = spawn_app_with(&db, |c| {
        let mut w = config_for(&receiver);
        w.retry_base = Duration::from_secs(1);
        w.max_attempts = 3;
        c.webhooks = Some(w);
    })
    .await;
    receiver.use_clock(&app);
    let store = app.services().store().clone();
    while store
        .outbox_checkpoint(SUBSCRIBER)
        .await
        .expect("read")
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = create(&app, "unlucky", None).await;
    app.revoke(id).await;
    let key: Uuid = receiver.wait_until("an attempt", |s| !s.is_empty()).await[0]
        .key
        .parse()
        .expect("key");
    for attempts in 1..3 {
        let row = wait_row(&app, key, "a refusal", |r| r.attempts == attempts).await;
        app.clock.set(row.next_attempt_at);
    }
    let row = wait_row(&app, key, "failed", |r| r.status == DeliveryStatus::Failed).await;
    assert_eq!((row.attempts, row.last_status), (3, Some(500)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt past the bound");

    let url = db.url_string();
    // status: counts and the failed row.
    let out = tokenledger(&url, &["webhooks", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (status["pending"].as_u64(), status["failed"].as_u64()),
        (Some(0), Some(1)),
        "{status}"
    );
    let failed = &status["failed_deliveries"][0];
    assert_eq!(failed["id"].as_str(), Some(key.to_string().as_str()));
    assert_eq!(failed["type"], "token.revoked");
    assert_eq!(failed["token_id"].as_str(), Some(id.to_string().as_str()));
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["last_status"], 500);
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{failed}"
    );
    assert!(failed.get("body").is_none(), "status never prints a body");
    let out = tokenledger(&url, &["webhooks", "status"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.starts_with("pending 0, failed 1, delivered 0"),
        "{text}"
    );
    assert!(
        text.contains(&key.to_string()) && text.contains("attempts 3") && text.contains("HTTP 500"),
        "{text}"
    );

    // retry: refused input first.
    let out = tokenledger(&url, &["webhooks", "retry"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = tokenledger(&url, &["webhooks", "retry", "not-a-uuid\u{7}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a delivery id") && !stderr(&out).contains('\u{7}'),
        "{}",
        stderr(&out)
    );
    let unknown = Uuid::now_v7();
    let out = tokenledger(&url, &["webhooks", "retry", &unknown.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{unknown}: no such delivery")),
        "{}",
        stderr(&out)
    );
    // --failed re-queues it, due now, with its attempts back.
    receiver.answer_always(None);
    let out = tokenledger(&url, &["webhooks", "retry", "--failed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("re-queued {key}")),
        "{}",
        stdout(&out)
    );
    // The CLI's "now" is the system clock; the service's manual clock is moved there.
    let row = store.outbox_get(key).await.expect("read").expect("row");
    assert_eq!(row.attempts, 0);
    app.clock.set(row.next_attempt_at.max(app.now()));
    let row = wait_row(&app, key, "delivery", |r| {
        r.status == DeliveryStatus::Delivered
    })
    .await;
    assert_eq!(row.attempts, 1);
    let out = tokenledger(&url, &["webhooks", "retry", &key.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already delivered"),
        "{}",
        stderr(&out)
    );
    let out = tokenledger(&url, &["webhooks", "status", "--json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (
            status["pending"].as_u64(),
            status["failed"].as_u64(),
            status["delivered"].as_u64()
        ),
        (Some(0), Some(0), Some(1))
    );
    app.stop().await;
}

async fn two_nodes_share_the_outbox_and_never_send_a_row_twice(db: TestDb) {
    const TOKENS: usize = 40;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(30));
    let a = spawn_app_with(&db, |c| c.webhooks = Some(config_for(&receiver))).await;
    let b = spawn_app_with(&db, |c| c.webhooks = Some(config_for(&receiver))).await;
    // Both clocks start at the same instant and stay there.
    receiver.use_clock(&a);
    let store = a.services().store().clone();
    while store
        .outbox_checkpoint(SUBSCRIBER)
        .await
        .expect("read")
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..TOKENS {
        let node = if i % 2 == 0 { &a } else { &b };
        let id = create(node, &format!("shared {i}"), None).await;
        node.revoke(id).await;
    }
    receiver
        .wait_until("every revocation", |s| distinct(s).len() >= TOKENS)
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = receiver.received();
    assert_eq!(
        (seen.len(), distinct(&seen).len()),
        (TOKENS, TOKENS),
        "each row sent once by one of the two nodes"
    );
    let counts = store.outbox_counts().await.expect("counts");
    assert_eq!(counts.delivered as usize, TOKENS);
    a.stop().await;
    b.stop().await;
}

crate::on_both_backends!(
    two_nodes_share_the_outbox_and_never_send_a_row_twice,
    revocations_are_delivered_signed_once_and_survive_a_rebuild,
    a_refused_delivery_is_retried_with_exponential_backoff,
    expiry_warnings_come_30_7_and_1_days_before_once_each,
    a_failed_delivery_is_shown_and_requeued_by_the_cli,
    nothing_is_lost_or_sent_twice_across_a_killed_sender,
);

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// `tokenledger serve` with `WEBHOOK_URL` and its variables; killed on drop.
struct Server {
    child: Child,
    _keys: tempfile::TempDir,
}

impl Server {
    async fn start(url: &str, receiver: &Receiver) -> Server {
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
            .env("WEBHOOK_URL", &receiver.url)
            .env("WEBHOOK_SECRET", SECRET)
            .env("WEBHOOK_TIMEOUT", "2s")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, _keys: keys }
    }

    /// SIGKILL: no shutdown, whatever was in flight is cut.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every row of the outbox by id (its key) and status.
async fn outbox_statuses(store: &tokenledger::store::Store) -> BTreeMap<String, DeliveryStatus> {
    let mut all = BTreeMap::new();
    for status in DeliveryStatus::ALL {
        for row in store.outbox_list(status, 10_000).await.expect("list") {
            all.insert(row.id.to_string(), row.status);
        }
    }
    all
}

async fn nothing_is_lost_or_sent_twice_across_a_killed_sender(db: TestDb) {
    const TOKENS: usize = 60;
    let backend = db.url().backend();
    let url = db.url_string();
    let receiver = Receiver::start().await;
    // Slow: several deliveries are in flight at any moment.
    receiver.set_delay(Duration::from_millis(150));
    let writer = Services::open(&db.url(), TokenSettings::default(), Arc::new(SystemClock))
        .await
        .expect("open");
    let mut ids = Vec::new();
    for i in 0..TOKENS {
        let minted = writer
            .ledger()
            .create(CreateRequest {
                name: format!("batch {i}"),
                scopes: vec!["logs:read".into()],
                expires_in: None,
                actor: "test:admin".into(),
                allowed_ips: Vec::new(),
            })
            .await
            .expect("create");
        ids.push(minted.row.id);
    }
    let store = open_store(&db.url()).await;
    let first = Server::start(&url, &receiver).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store
        .outbox_checkpoint(SUBSCRIBER)
        .await
        .expect("read")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the subscriber never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        writer
            .ledger()
            .revoke(*id, "test:admin", Some("batch revocation".into()))
            .await
            .expect("revoke");
    }
    // Kill the sender while deliveries are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if receiver.received().len() >= 12 && receiver.in_flight() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries never got going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    // Requests already written to the socket are still read by the receiver.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_kill = distinct(&receiver.received());
    let stored = outbox_statuses(&store).await;
    // Received, but no outcome recorded: what the killed sender had in flight.
    let in_flight: HashSet<String> = at_kill
        .iter()
        .filter(|k| stored.get(*k) == Some(&DeliveryStatus::Pending))
        .cloned()
        .collect();
    assert!(
        in_flight.len() <= SEND_BATCH,
        "at most one batch is leased at a time: {in_flight:?}"
    );
    assert!(
        at_kill.len() < TOKENS,
        "killed mid-delivery: {} of {TOKENS} already received",
        at_kill.len()
    );

    let second = Server::start(&url, &receiver).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = store.outbox_counts().await.expect("counts");
        if counts.delivered as usize == TOKENS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything was delivered: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.kill();

    let seen = receiver.received();
    let keys = distinct(&seen);
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for r in &seen {
        *per_key.entry(r.key.as_str()).or_default() += 1;
        assert_eq!(r.verified, Ok(()), "{r:?}");
        assert_eq!(r.event_type, "token.revoked");
    }
    let duplicates = seen.len() - keys.len();
    println!(
        "webhooks across a SIGKILL ({backend}): sent {TOKENS}, received {}, distinct {}, \
         duplicates {duplicates}, in flight at the kill {}",
        seen.len(),
        keys.len(),
        in_flight.len()
    );
    // None lost: every revocation's event id was received.
    let events = store.read_from(0, 10_000).await.expect("log");
    let revocations: HashSet<String> = events
        .iter()
        .filter(|e| e.event_type == "TokenRevoked")
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(revocations.len(), TOKENS);
    assert_eq!(
        keys, revocations,
        "every revocation delivered, nothing else"
    );
    // Sent twice only what was in flight at the kill.
    for (key, n) in &per_key {
        if *n > 1 {
            assert_eq!(*n, 2, "{key} received {n} times");
            assert!(
                in_flight.contains(*key),
                "{key} was sent twice but was not in flight at the kill"
            );
        }
    }
    assert!(
        duplicates <= in_flight.len(),
        "{duplicates} duplicates, {} in flight",
        in_flight.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// `serve` with these variables set (and a SQLite database that is never reached).
fn serve_with(vars: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display()),
        )
        .env_remove("WEBHOOK_URL")
        .env_remove("WEBHOOK_SECRET")
        .env_remove("RUST_LOG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run")
}

#[test]
fn a_webhook_url_that_is_not_http_is_refused_naming_the_variable() {
    for bad in [
        "ftp://hooks.internal.test/x",
        "hooks.internal.test/x",
        "file:///etc/passwd",
        "http://",
    ] {
        let out = serve_with(&[("WEBHOOK_URL", bad), ("WEBHOOK_SECRET", SECRET)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("WEBHOOK_URL"), "{bad}: {err}");
        assert!(err.contains("http:// or https://"), "{bad}: {err}");
        assert!(
            !err.contains("hooks.internal.test") && !err.contains("/etc/passwd"),
            "the URL is never echoed: {err}"
        );
    }
}

#[test]
fn a_webhook_url_without_a_long_enough_secret_is_refused_naming_the_variable() {
    let out = serve_with(&[("WEBHOOK_URL", "https://hooks.example.com/tokenledger")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("WEBHOOK_SECRET"), "{err}");

    let short = "tooshort-s3cret";
    let out = serve_with(&[
        ("WEBHOOK_URL", "https://hooks.example.com/tokenledger"),
        ("WEBHOOK_SECRET", short),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("WEBHOOK_SECRET") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains(short), "the secret is never echoed: {err}");
}
