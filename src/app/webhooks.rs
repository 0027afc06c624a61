//! Webhooks: revocations, leak reports and expiry warnings POSTed to `WEBHOOK_URL`, signed.
//!
//! An outbox between the log and the network:
//!
//! - the **subscriber** reads the log after its checkpoint (dense runs of positions, as
//!   `AuditTail` does), turns the events that concern a receiver into outbox rows, and in ONE
//!   transaction inserts them (primary key = the event id, `ON CONFLICT DO NOTHING`) and moves
//!   its checkpoint. Killed anywhere, it either did both or neither;
//! - the **expiry scan** inserts a warning 30, 7 and 1 days before each active token expires,
//!   keyed by a name-based UUID of (token, threshold, expiry), so each is inserted once
//!   however often the scan runs and on however many nodes; time is the injected [`Clock`];
//! - the **sender** leases due rows (PostgreSQL: `FOR UPDATE SKIP LOCKED`), POSTs them with
//!   their idempotency key and signature, and records each outcome on the row (never in the
//!   log): delivered, or due again after an exponential backoff with jitter, or `failed` once
//!   [`WebhookConfig::max_attempts`] are spent. At least once: a sender killed between the
//!   receiver's answer and the record sends that row again after its lease.
//!
//! Bodies are built field by field: never a plaintext, hash, salt or commitment.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokenledger_events::{EventLog as _, StoredEvent, Timestamp, TokenEvent};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::Metrics;
use crate::clock::Clock;
use crate::config::{DatabaseUrl, WebhookConfig};
use crate::store::outbox::{
    Delivery, DeliveryCounts, DeliveryStatus, NewDelivery, Outcome, Requeue,
};
use crate::store::{Store, StoreError};

/// The subscriber's checkpoint name.
pub const SUBSCRIBER: &str = "webhooks";

/// The webhook types.
pub const TOKEN_REVOKED: &str = "token.revoked";
pub const TOKEN_REUSE_DETECTED: &str = "token.reuse_detected";
pub const TOKEN_LEAK_REPORTED: &str = "token.leak_reported";
pub const TOKEN_EXPIRING: &str = "token.expiring";

/// The actor of revocations made by rotation reuse detection.
pub const REUSE_DETECTION_ACTOR: &str = "system:reuse-detection";

/// Days before expiry at which a warning is sent, smallest first.
pub const EXPIRY_THRESHOLDS_DAYS: [u32; 3] = [1, 7, 30];

/// The headers of a delivery.
pub const SIGNATURE_HEADER: &str = "Tokenledger-Signature";
pub const EVENT_HEADER: &str = "Tokenledger-Event";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Events read per subscriber step.
const READ_PAGE: usize = 500;
/// Deliveries leased and sent at once by one sender.
pub const SEND_BATCH: usize = 8;
/// A lease outlasts the request timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often the expiry scan runs.
const EXPIRY_SCAN_EVERY: Duration = Duration::from_secs(60);
/// How often an idle sender looks for due rows (other nodes' rows, retries coming due).
const SEND_POLL: Duration = Duration::from_millis(250);

const DAY: Duration = Duration::from_secs(86_400);

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The webhook type of a log event, by its stored type (and actor): `None` for events no
/// receiver is told of. Classified by the type's name, so an event added since (or on another
/// branch) is sent whether or not this build decodes it.
pub fn classify(
    event_type: &str,
    actor: &str,
    payload_actor: Option<&str>,
) -> Option<&'static str> {
    match event_type {
        "TokenRevoked"
            if actor == REUSE_DETECTION_ACTOR || payload_actor == Some(REUSE_DETECTION_ACTOR) =>
        {
            Some(TOKEN_REUSE_DETECTED)
        }
        "TokenRevoked" => Some(TOKEN_REVOKED),
        "LeakReported" => Some(TOKEN_LEAK_REPORTED),
        _ => None,
    }
}

/// The fields copied from each type's payload: only these, only as text (or null).
fn payload_fields(webhook_type: &str) -> &'static [&'static str] {
    match webhook_type {
        TOKEN_LEAK_REPORTED => &["url", "source", "token_type", "reporter"],
        _ => &["reason"],
    }
}

/// The idempotency key of the warning `days` before `expires_at` of `token_id`: a
/// name-based UUID (version 8, SHA-256 of the three).
pub fn expiry_key(token_id: Uuid, days: u32, expires_at: Timestamp) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"tokenledger/webhook/token.expiring/v1\0");
    h.update(token_id.as_bytes());
    h.update(days.to_be_bytes());
    h.update(expires_at.as_micros().to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The threshold whose warning is due for a token with `left` until expiry: the smallest
/// one at or above `left` (a token made with 5 days left is warned at 7 and at 1).
pub fn threshold_for(left: Duration) -> Option<u32> {
    EXPIRY_THRESHOLDS_DAYS
        .into_iter()
        .find(|d| left <= DAY * *d)
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones: `retry_base`
/// doubling per attempt up to `retry_cap`, then jittered into its upper half by `random`.
pub fn backoff(config: &WebhookConfig, attempts: u32, random: u64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let full = config
        .retry_base
        .saturating_mul(1u32 << doublings)
        .min(config.retry_cap);
    let half = full / 2;
    let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(if span == 0 { 0 } else { random % (span + 1) })
}

fn random_u64() -> u64 {
    use rand::TryRng as _;
    rand::rngs::SysRng.try_next_u64().unwrap_or(0)
}

/// A body: `{id, type, created_at, data}`.
fn body(id: Uuid, webhook_type: &str, created_at: Timestamp, data: Map<String, Value>) -> String {
    json!({
        "id": id,
        "type": webhook_type,
        "created_at": created_at.to_rfc3339(),
        "data": data,
    })
    .to_string()
}

/// The payload of a stored event as JSON: decoded when this build knows the type, else the
/// stored payload read generically.
fn payload_of(e: &StoredEvent) -> Map<String, Value> {
    if let Ok(TokenEvent::Revoked(r)) = e.decode() {
        let mut m = Map::new();
        m.insert("actor".into(), Value::from(r.actor));
        m.insert(
            "reason".into(),
            r.reason.map(Value::from).unwrap_or(Value::Null),
        );
        return m;
    }
    match serde_json::from_slice::<Value>(e.stored_body()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The outbox row of a log event, if a receiver is told of it. `name` is the token's name.
pub fn delivery_of(e: &StoredEvent, name: Option<&str>) -> Option<NewDelivery> {
    let payload = payload_of(e);
    let payload_actor = payload.get("actor").and_then(Value::as_str);
    let webhook_type = classify(&e.event_type, &e.actor, payload_actor)?;
    let token_id = e.stream_id.token_id().or_else(|| {
        payload
            .get("token_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    });
    let mut data = Map::new();
    data.insert("token_id".into(), json!(token_id));
    data.insert("name".into(), json!(name));
    data.insert("position".into(), json!(e.position));
    data.insert("event_id".into(), json!(e.event_id));
    data.insert(
        "actor".into(),
        json!(payload_actor.unwrap_or(e.actor.as_str())),
    );
    data.insert("occurred_at".into(), json!(e.recorded_at.to_rfc3339()));
    for field in payload_fields(webhook_type) {
        let value = payload
            .get(*field)
            .and_then(Value::as_str)
            .map(Value::from)
            .unwrap_or(Value::Null);
        data.insert((*field).into(), value);
    }
    Some(NewDelivery {
        id: e.event_id,
        event_type: webhook_type.into(),
        token_id,
        position: Some(e.position),
        body: body(e.event_id, webhook_type, e.recorded_at, data),
        created_at: e.recorded_at,
    })
}

/// The subscriber, the expiry scan and the sender of one node.
pub struct Webhooks {
    store: Arc<Store>,
    config: WebhookConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// Rows were inserted: the sender looks now rather than at its next poll.
    wake: Notify,
    /// Expiry warnings this node inserted (or found inserted): not inserted again.
    warned: Mutex<HashSet<Uuid>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(
        store: Arc<Store>,
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Webhooks>, String> {
        // https receivers: rustls takes the process's provider (see session/jwks.rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenledger-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("WEBHOOK_URL: cannot build the HTTP client: {e}"))?;
        Ok(Arc::new(Webhooks {
            store,
            config,
            clock,
            metrics,
            client,
            wake: Notify::new(),
            warned: Mutex::new(HashSet::new()),
        }))
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// The subscriber's checkpoint, started at the head when webhooks are first enabled (the
    /// log's history before that is not sent).
    pub async fn start(&self) -> Result<u64, StoreError> {
        let head = self.store.head().await?.position;
        self.store.outbox_start(SUBSCRIBER, head).await
    }

    /// One subscriber step after position `last`: the rows of the next events and the
    /// checkpoint past them, in one transaction. With nothing new, waits up to `patience`.
    /// Returns the position to continue after.
    pub async fn step(&self, last: u64, patience: Duration) -> Result<u64, StoreError> {
        let mut events = self.store.read_from(last, READ_PAGE).await?;
        let run = events
            .iter()
            .zip(last + 1..)
            .take_while(|(e, expected)| e.position == *expected)
            .count();
        events.truncate(run);
        let Some(to) = events.last().map(|e| e.position) else {
            self.store.wait_for(last + 1, patience).await?;
            return Ok(last);
        };
        let relevant: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| matches!(e.event_type.as_str(), "TokenRevoked" | "LeakReported"))
            .collect();
        let ids: Vec<Uuid> = relevant
            .iter()
            .filter_map(|e| e.stream_id.token_id())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let names: std::collections::HashMap<Uuid, String> = if ids.is_empty() {
            Default::default()
        } else {
            self.store
                .tokens_by_id(&ids)
                .await?
                .into_iter()
                .map(|t| (t.id, t.name))
                .collect()
        };
        let rows: Vec<NewDelivery> = relevant
            .into_iter()
            .filter_map(|e| {
                let name = e.stream_id.token_id().and_then(|id| names.get(&id));
                delivery_of(e, name.map(String::as_str))
            })
            .collect();
        if self
            .store
            .outbox_enqueue(SUBSCRIBER, last, to, &rows)
            .await?
        {
            if !rows.is_empty() {
                self.wake.notify_one();
            }
            Ok(to)
        } else {
            // Another node moved the checkpoint: continue from where it is.
            Ok(self
                .store
                .outbox_checkpoint(SUBSCRIBER)
                .await?
                .unwrap_or(last))
        }
    }

    /// Insert the expiry warnings due now; how many were new.
    pub async fn enqueue_expiring(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let horizon = now.plus(DAY * EXPIRY_THRESHOLDS_DAYS[2]);
        let tokens = self.store.expiring_tokens(now, horizon).await?;
        let rows: Vec<NewDelivery> = {
            let warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            tokens
                .into_iter()
                .filter_map(|(token_id, name, expires_at)| {
                    let left = u64::try_from(expires_at.as_micros() - now.as_micros()).ok()?;
                    let days = threshold_for(Duration::from_micros(left))?;
                    let id = expiry_key(token_id, days, expires_at);
                    if warned.contains(&id) {
                        return None;
                    }
                    let mut data = Map::new();
                    data.insert("token_id".into(), json!(token_id));
                    data.insert("name".into(), json!(name));
                    data.insert("days".into(), json!(days));
                    data.insert("expires_at".into(), json!(expires_at.to_rfc3339()));
                    Some(NewDelivery {
                        id,
                        event_type: TOKEN_EXPIRING.into(),
                        token_id: Some(token_id),
                        position: None,
                        body: body(id, TOKEN_EXPIRING, now, data),
                        created_at: now,
                    })
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let inserted = self.store.outbox_insert(&rows).await?;
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(rows.iter().map(|r| r.id));
        if inserted > 0 {
            self.wake.notify_one();
        }
        Ok(inserted)
    }

    /// Lease the rows due now (at most [`SEND_BATCH`]), send them at once, and record each
    /// outcome as it comes. How many were attempted.
    pub async fn send_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let lease = Uuid::now_v7();
        let until = now.plus(self.config.timeout + LEASE_MARGIN);
        let rows = self
            .store
            .outbox_claim(now, lease, until, SEND_BATCH)
            .await?;
        let attempted = rows.len();
        let mut sending = JoinSet::new();
        for row in rows {
            let me = self.clone();
            sending.spawn(async move {
                let outcome = me.attempt(&row).await;
                (row, outcome)
            });
        }
        let mut first_error = None;
        while let Some(done) = sending.join_next().await {
            let Ok((row, outcome)) = done else { continue };
            self.metrics.webhook_delivery(match &outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::Failed { .. } => "failed",
            });
            match &outcome {
                Outcome::Delivered { .. } => {}
                Outcome::Retry { error, next_at, .. } => tracing::warn!(
                    id = %row.id, r#type = %row.event_type, attempts = row.attempts + 1,
                    next_attempt = %next_at, error = %error, "webhook not delivered; will retry"
                ),
                Outcome::Failed { error, .. } => tracing::error!(
                    id = %row.id, r#type = %row.event_type, attempts = row.attempts + 1,
                    error = %error, "webhook failed; no attempt left (`tokenledger webhooks retry`)"
                ),
            }
            match self.store.outbox_record(row.id, lease, &outcome).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(id = %row.id, "webhook lease lost before its outcome was recorded")
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(attempted),
        }
    }

    /// POST one row; what it came to.
    async fn attempt(&self, row: &Delivery) -> Outcome {
        let t = self.clock.now().as_micros().div_euclid(1_000_000);
        let sent = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, row.id.to_string())
            .header(EVENT_HEADER, &row.event_type)
            .header(
                SIGNATURE_HEADER,
                signature(self.config.secret.expose(), t, row.body.as_bytes()),
            )
            .body(row.body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(r) if r.status().is_success() => {
                return Outcome::Delivered {
                    status: r.status().as_u16(),
                    at: self.clock.now(),
                };
            }
            Ok(r) => (Some(r.status().as_u16()), format!("HTTP {}", r.status())),
            // Never the URL: it may carry a secret of its own.
            Err(e) => (None, error_text(&e.without_url())),
        };
        let attempts = row.attempts + 1;
        if attempts >= self.config.max_attempts {
            Outcome::Failed { status, error }
        } else {
            Outcome::Retry {
                status,
                error,
                next_at: self
                    .clock
                    .now()
                    .plus(backoff(&self.config, attempts, random_u64())),
            }
        }
    }

    /// The subscriber's loop: never returns; an unreachable database is retried with a
    /// backoff of 200 ms doubling to 5 s.
    pub fn subscriber(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            let mut pause = Duration::from_millis(200);
            let mut last = loop {
                match me.start().await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: the subscriber cannot start; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            };
            pause = Duration::from_millis(200);
            loop {
                match me.step(last, Duration::from_secs(1)).await {
                    Ok(p) => {
                        last = p;
                        pause = Duration::from_millis(200);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, after = last, "webhooks: the subscriber could not read or write; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// The sender's loop: a batch at a time, woken by new rows or every [`SEND_POLL`].
    pub fn sender(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            loop {
                match me.send_due().await {
                    Ok(0) => {
                        let _ = tokio::time::timeout(SEND_POLL, me.wake.notified()).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: the outbox could not be read or written; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// The expiry scan's loop: at start, then every minute.
    pub fn expiry_scanner(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            loop {
                if let Err(e) = me.enqueue_expiring().await {
                    tracing::warn!(error = %e, "webhooks: the expiry scan failed; will retry");
                }
                tokio::time::sleep(EXPIRY_SCAN_EVERY).await;
            }
        }
    }
}

/// A transport error and its causes, on one line.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ----- the CLI's view: status and retry -----

/// One delivery as `webhooks status` shows it (never its body).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub token_id: Option<Uuid>,
    pub position: Option<u64>,
    pub status: &'static str,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            event_type: d.event_type,
            token_id: d.token_id,
            position: d.position,
            status: d.status.as_str(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| d.next_attempt_at.to_rfc3339()),
            created_at: d.created_at.to_rfc3339(),
            delivered_at: d.delivered_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// `webhooks status`: counts by status, and the pending and failed rows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutboxStatus {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// How far the subscriber has read the log (none before webhooks were first enabled).
    pub checkpoint: Option<u64>,
    pub pending_deliveries: Vec<DeliveryView>,
    pub failed_deliveries: Vec<DeliveryView>,
}

/// The outbox opened for the CLI: the log (migrations applied, head verified) and a clock.
pub struct Outbox {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
}

impl Outbox {
    pub async fn open(url: &DatabaseUrl, clock: Arc<dyn Clock>) -> Result<Outbox, StoreError> {
        let (store, _) = super::open_verified(url).await?;
        Ok(Outbox { store, clock })
    }

    /// Over an open store (the service's own, in tests).
    pub fn over(store: Arc<Store>, clock: Arc<dyn Clock>) -> Outbox {
        Outbox { store, clock }
    }

    /// Counts, and up to `limit` pending and `limit` failed rows, oldest first.
    pub async fn status(&self, limit: usize) -> Result<OutboxStatus, StoreError> {
        let DeliveryCounts {
            pending,
            delivered,
            failed,
        } = self.store.outbox_counts().await?;
        let view = |rows: Vec<Delivery>| rows.into_iter().map(DeliveryView::from).collect();
        Ok(OutboxStatus {
            pending,
            delivered,
            failed,
            checkpoint: self.store.outbox_checkpoint(SUBSCRIBER).await?,
            pending_deliveries: view(
                self.store
                    .outbox_list(DeliveryStatus::Pending, limit)
                    .await?,
            ),
            failed_deliveries: view(
                self.store
                    .outbox_list(DeliveryStatus::Failed, limit)
                    .await?,
            ),
        })
    }

    /// One delivery.
    pub async fn get(&self, id: Uuid) -> Result<Option<DeliveryView>, StoreError> {
        Ok(self.store.outbox_get(id).await?.map(DeliveryView::from))
    }

    /// Make `which` due now (failed rows get their attempts back); the ids re-queued.
    pub async fn retry(&self, which: &Requeue) -> Result<Vec<Uuid>, StoreError> {
        self.store.outbox_requeue(which, self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookSecret;

    fn config() -> WebhookConfig {
        WebhookConfig::new(
            "http://127.0.0.1:9/".into(),
            WebhookSecret::new(&"k".repeat(32)).expect("secret"),
        )
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_dot_body() {
        // RFC 4231 test case 2 shape, checked against an independent computation.
        let sig = signature(b"Jefe", 1_700_000_000, b"{\"a\":1}");
        let mut mac = <Hmac<Sha256>>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"1700000000.{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
        // RFC 4231 test case 2 itself.
        let mut mac = <Hmac<Sha256>>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn events_are_classified_by_their_stored_type_and_actor() {
        assert_eq!(
            classify("TokenRevoked", "user:a", Some("user:a")),
            Some(TOKEN_REVOKED)
        );
        assert_eq!(
            classify("TokenRevoked", REUSE_DETECTION_ACTOR, None),
            Some(TOKEN_REUSE_DETECTED)
        );
        assert_eq!(
            classify("TokenRevoked", "system", Some(REUSE_DETECTION_ACTOR)),
            Some(TOKEN_REUSE_DETECTED)
        );
        assert_eq!(
            classify("LeakReported", "leak:github", None),
            Some(TOKEN_LEAK_REPORTED)
        );
        for other in [
            "TokenUsed",
            "TokenCreated",
            "TokenRotated",
            "TokenUseDenied",
        ] {
            assert_eq!(classify(other, "x", None), None, "{other}");
        }
    }

    /// A stored event of a type this build may not know, its payload read generically.
    fn stored(event_type: &str, actor: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            position: 42,
            stream_id: tokenledger_events::StreamId::for_token(Uuid::now_v7()),
            stream_version: 3,
            event_id: Uuid::now_v7(),
            recorded_at: Timestamp::from_micros(1_800_000_000_000_000),
            actor: actor.into(),
            event_type: event_type.into(),
            // Version 1 rows store the whole event as their body; enough for a payload read.
            schema_version: 1,
            bytes: payload.to_string().into_bytes(),
            hash: tokenledger_events::Hash::ZERO,
            openings: Vec::new(),
        }
    }

    #[test]
    fn a_leak_report_is_read_from_its_stored_payload_field_by_field() {
        let e = stored(
            "LeakReported",
            "leak:github",
            json!({
                "url": "https://github.com/acme/app/blob/main/.env",
                "source": "github",
                "token_type": "tl_live",
                "reporter": "github-secret-scanning",
                "token": "tl_live_PLAINTEXT-never-copied",
                "hash": "deadbeef",
                "reason": 7,
            }),
        );
        let d = delivery_of(&e, Some("deploy bot")).expect("a leak report is sent");
        assert_eq!(d.event_type, TOKEN_LEAK_REPORTED);
        assert_eq!(d.id, e.event_id);
        assert_eq!(d.position, Some(42));
        let body: Value = serde_json::from_str(&d.body).expect("json");
        assert_eq!(body["id"], json!(e.event_id));
        assert_eq!(body["type"], TOKEN_LEAK_REPORTED);
        let data = &body["data"];
        assert_eq!(data["url"], "https://github.com/acme/app/blob/main/.env");
        assert_eq!(data["source"], "github");
        assert_eq!(data["token_type"], "tl_live");
        assert_eq!(data["reporter"], "github-secret-scanning");
        assert_eq!(data["actor"], "leak:github");
        assert_eq!(data["name"], "deploy bot");
        assert_eq!(data["position"], 42);
        assert!(
            !d.body.contains("PLAINTEXT") && !d.body.contains("deadbeef"),
            "{}",
            d.body
        );
        // A reuse revocation, and events no receiver is told of.
        let reuse = stored(
            "TokenRevoked",
            REUSE_DETECTION_ACTOR,
            json!({"actor": REUSE_DETECTION_ACTOR, "reason": "reuse"}),
        );
        let d = delivery_of(&reuse, None).expect("sent");
        assert_eq!(d.event_type, TOKEN_REUSE_DETECTED);
        let body: Value = serde_json::from_str(&d.body).expect("json");
        assert_eq!(body["data"]["reason"], "reuse");
        assert_eq!(body["data"]["name"], Value::Null);
        assert!(delivery_of(&stored("TokenUsed", "token:x", json!({})), None).is_none());
        assert!(delivery_of(&stored("SomethingNew", "x", json!({"url": "u"})), None).is_none());
    }

    #[test]
    fn thresholds_and_keys() {
        assert_eq!(threshold_for(DAY * 31), None);
        assert_eq!(threshold_for(DAY * 30), Some(30));
        assert_eq!(threshold_for(DAY * 8), Some(30));
        assert_eq!(threshold_for(DAY * 7), Some(7));
        assert_eq!(threshold_for(DAY * 5), Some(7));
        assert_eq!(threshold_for(DAY), Some(1));
        assert_eq!(threshold_for(Duration::from_secs(5)), Some(1));
        let t = Uuid::now_v7();
        let at = Timestamp::from_micros(1_800_000_000_000_000);
        assert_eq!(expiry_key(t, 7, at), expiry_key(t, 7, at), "deterministic");
        assert_ne!(expiry_key(t, 7, at), expiry_key(t, 30, at));
        assert_ne!(expiry_key(t, 7, at), expiry_key(t, 7, at.plus_micros(1)));
        assert_ne!(expiry_key(t, 7, at), expiry_key(Uuid::now_v7(), 7, at));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = config();
        for (attempts, full) in [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (10, 2560),
            (11, 3600),
            (40, 3600),
        ] {
            let full = Duration::from_secs(full);
            assert_eq!(
                backoff(&c, attempts, 0),
                full / 2,
                "{attempts}: the lower bound"
            );
            for r in [1, 12_345, 987_654_321] {
                let d = backoff(&c, attempts, r);
                assert!(
                    d >= full / 2 && d <= full,
                    "{attempts}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn a_secret_is_never_shown() {
        let secret = WebhookSecret::new(&"s3cr3t-".repeat(6)).expect("secret");
        let shown = format!("{:?} {:?}", secret, config());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(format!("{secret:?}").contains("42 bytes"), "{shown}");
    }
}
