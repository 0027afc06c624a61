//! What this node counts: the in-process counters the service reads itself, and the
//! Prometheus metrics scraped from `GET /metrics` on `METRICS_BIND_ADDR`.
//!
//! Each service has a recorder of its own (not the process-wide one the `metrics` macros
//! default to): a process may run several services (the tests do), and each one's gauges and
//! counters must be its own. Every record goes through [`Metrics::record`], which points the
//! macros at this service's recorder for the length of the call. With no `METRICS_BIND_ADDR`
//! there is no recorder and recording costs a branch.
//!
//! No metric carries a token id, a hash, a name or a client address: every label comes from a
//! small fixed set (route templates, status codes, refusal reasons, token statuses), so the
//! number of series is bounded whatever callers send.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The metric names, spelled once for the recorders, the README and the tests.
pub mod name {
    /// Counter: answered requests by `route` (the matched template, `unmatched` for none),
    /// `method` and `status`.
    pub const HTTP_REQUESTS: &str = "tokenledger_http_requests_total";
    /// Counter: authentications of callers by `credential` (`api_token`, `session`),
    /// `outcome` (`allowed`, `refused`) and `reason`.
    pub const AUTHENTICATIONS: &str = "tokenledger_authentications_total";
    /// Counter: tokens checked through `POST /v1/verify`, by the answer's `code` (`VALID`,
    /// `NOT_FOUND`, `REVOKED`, ...).
    pub const VERIFY_CHECKS: &str = "tokenledger_verify_checks_total";
    /// Counter: requests answered 429 because their client IP failed too often.
    pub const RATE_LIMITED: &str = "tokenledger_rate_limited_total";
    /// Histogram: seconds from an append request reaching the writer's queue to its COMMIT.
    pub const APPEND_SECONDS: &str = "tokenledger_append_seconds";
    /// Histogram: append requests committed together in one transaction.
    pub const APPEND_GROUP_SIZE: &str = "tokenledger_append_group_size";
    /// Counter: writes to the log that failed (answered 503 `Audit log unavailable`).
    pub const AUDIT_APPEND_FAILURES: &str = "tokenledger_audit_append_failures_total";
    /// Gauge: events in the log that this node's token cache has not folded in yet.
    pub const PROJECTION_LAG: &str = "tokenledger_projection_lag_events";
    /// Gauge: the log's head position.
    pub const LOG_HEAD: &str = "tokenledger_log_head_position";
    /// Gauge: tokens by `status` (`active`, `rotated_in_grace`, `expired`, `revoked`), from
    /// the token cache.
    pub const TOKENS: &str = "tokenledger_tokens";
    /// Gauge: seconds since the newest signed checkpoint was signed (absent before the first).
    pub const CHECKPOINT_AGE: &str = "tokenledger_checkpoint_age_seconds";
    /// Gauge: with the log in KurrentDB, events in the log not yet in this node's projection
    /// database (absent when the log is kept in the SQL database itself).
    pub const SUBSCRIPTION_LAG_EVENTS: &str = "tokenledger_subscription_lag_events";
    /// Gauge: with the log in KurrentDB, seconds from the last event copied into the
    /// projection database being recorded to its copy.
    pub const SUBSCRIPTION_LAG_SECONDS: &str = "tokenledger_subscription_lag_seconds";
    /// Counter: webhook delivery attempts by `outcome` (`delivered`, `retry`, `failed`).
    pub const WEBHOOK_DELIVERIES: &str = "tokenledger_webhook_deliveries_total";
}

/// Append latency buckets, in seconds: a SQLite fsync is around a millisecond, a PostgreSQL
/// commit across a network a few.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Group size buckets: the writer takes at most 512 requests at once.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Counters of what this node did.
#[derive(Default)]
pub struct Metrics {
    /// Console commands that ran (each after its use was recorded).
    pub console_runs: AtomicU64,
    /// Refusals of tokens this deployment does not know, per client IP. Read in-process only:
    /// addresses are never exported.
    unknown_tokens: Mutex<HashMap<IpAddr, u64>>,
    /// This service's Prometheus recorder; `None` without `METRICS_BIND_ADDR`.
    prometheus: Option<Prometheus>,
}

struct Prometheus {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("console_runs", &self.console_runs)
            .field("exported", &self.prometheus.is_some())
            .finish_non_exhaustive()
    }
}

/// Addresses counted apart at most; past it new ones are counted under the unspecified
/// address, so a flood of addresses cannot grow the map without bound.
const MAX_COUNTED_IPS: usize = 10_000;

/// Why an authentication ended as it did: a label value from a fixed set.
pub type Reason = &'static str;

/// What the scrape reads at the moment it is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub head: u64,
    pub cache_position: u64,
    /// Tokens by status name.
    pub tokens: [(&'static str, u64); 4],
    /// Seconds since the newest signed checkpoint, if there is one.
    pub checkpoint_age_seconds: Option<f64>,
    /// How far the projections trail a log kept elsewhere, if the log is.
    pub subscription: Option<crate::store::upstream::Lag>,
}

impl Metrics {
    /// Counters with a Prometheus recorder of this service's own.
    pub fn exported() -> Metrics {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(name::APPEND_SECONDS.into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(name::APPEND_GROUP_SIZE.into()),
                    GROUP_BUCKETS,
                )
            })
            // Both bucket lists are constants and not empty.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            prometheus: Some(Prometheus { recorder, handle }),
            ..Metrics::default()
        };
        metrics.describe();
        metrics
    }

    /// Whether metrics are recorded (`METRICS_BIND_ADDR` is set).
    pub fn is_exported(&self) -> bool {
        self.prometheus.is_some()
    }

    /// Run `record` with the `metrics` macros pointed at this service's recorder; nothing
    /// runs without one.
    pub fn record(&self, record: impl FnOnce()) {
        if let Some(p) = &self.prometheus {
            ::metrics::with_local_recorder(&p.recorder, record);
        }
    }

    fn describe(&self) {
        use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        self.record(|| {
            describe_counter!(
                name::HTTP_REQUESTS,
                "Answered requests by route template, method and status"
            );
            describe_counter!(
                name::AUTHENTICATIONS,
                "Caller authentications by credential, outcome and reason"
            );
            describe_counter!(
                name::VERIFY_CHECKS,
                "Tokens checked through POST /v1/verify, by answer code"
            );
            describe_counter!(
                name::RATE_LIMITED,
                "Requests answered 429 after too many failed authentications"
            );
            describe_histogram!(
                name::APPEND_SECONDS,
                Unit::Seconds,
                "Append request latency, queued to COMMIT"
            );
            describe_histogram!(
                name::APPEND_GROUP_SIZE,
                Unit::Count,
                "Append requests per group commit"
            );
            describe_counter!(
                name::AUDIT_APPEND_FAILURES,
                "Log writes that failed (answered 503 Audit log unavailable)"
            );
            describe_gauge!(
                name::PROJECTION_LAG,
                Unit::Count,
                "Events the token cache has not folded in"
            );
            describe_gauge!(name::LOG_HEAD, Unit::Count, "The log's head position");
            describe_gauge!(name::TOKENS, Unit::Count, "Tokens by status");
            describe_counter!(
                name::WEBHOOK_DELIVERIES,
                "Webhook delivery attempts by outcome (delivered, retry, failed)"
            );
            describe_gauge!(
                name::SUBSCRIPTION_LAG_EVENTS,
                Unit::Count,
                "Events in the KurrentDB log not yet in this node's projections"
            );
            describe_gauge!(
                name::SUBSCRIPTION_LAG_SECONDS,
                Unit::Seconds,
                "Seconds from an event's recording to its copy into this node's projections"
            );
            describe_gauge!(
                name::CHECKPOINT_AGE,
                Unit::Seconds,
                "Seconds since the newest signed checkpoint"
            );
        });
    }

    pub fn count_unknown_token(&self, ip: IpAddr) {
        let mut counts = self
            .unknown_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = if counts.len() < MAX_COUNTED_IPS || counts.contains_key(&ip) {
            ip
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        *counts.entry(key).or_default() += 1;
    }

    /// Unknown-token refusals from `ip`.
    pub fn unknown_tokens_from(&self, ip: IpAddr) -> u64 {
        let counts = self
            .unknown_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }

    /// One answered request.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16) {
        self.record(|| {
            ::metrics::counter!(name::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
                .increment(1);
        });
    }

    /// One caller authenticated (`reason` is `ok`) or refused.
    pub fn authentication(&self, credential: &'static str, allowed: bool, reason: Reason) {
        let outcome = if allowed { "allowed" } else { "refused" };
        self.record(|| {
            ::metrics::counter!(name::AUTHENTICATIONS, "credential" => credential, "outcome" => outcome, "reason" => reason)
                .increment(1);
        });
    }

    /// One token checked through `POST /v1/verify`, answered `code` (a fixed set).
    pub fn verify_check(&self, code: &'static str) {
        self.record(|| {
            ::metrics::counter!(name::VERIFY_CHECKS, "code" => code).increment(1);
        });
    }

    /// One request answered 429.
    /// One webhook delivery attempt; `outcome` is `delivered`, `retry` or `failed`.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.record(|| {
            ::metrics::counter!(name::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        });
    }

    pub fn rate_limited(&self) {
        self.record(|| ::metrics::counter!(name::RATE_LIMITED).increment(1));
    }

    /// One write to the log failed.
    pub fn audit_append_failed(&self) {
        self.record(|| ::metrics::counter!(name::AUDIT_APPEND_FAILURES).increment(1));
    }

    /// One group commit of `waited.len()` append requests, each waited for as long as given.
    pub fn committed(&self, waited: &[Duration]) {
        self.record(|| {
            let latency = ::metrics::histogram!(name::APPEND_SECONDS);
            for w in waited {
                latency.record(w.as_secs_f64());
            }
            ::metrics::histogram!(name::APPEND_GROUP_SIZE).record(waited.len() as f64);
        });
    }

    /// The text exposition, with the gauges set from `snapshot` first; `None` when metrics
    /// are not exported.
    pub fn render(&self, snapshot: &Snapshot) -> Option<String> {
        let p = self.prometheus.as_ref()?;
        self.record(|| {
            ::metrics::gauge!(name::LOG_HEAD).set(snapshot.head as f64);
            ::metrics::gauge!(name::PROJECTION_LAG)
                .set(snapshot.head.saturating_sub(snapshot.cache_position) as f64);
            for (status, n) in snapshot.tokens {
                ::metrics::gauge!(name::TOKENS, "status" => status).set(n as f64);
            }
            if let Some(age) = snapshot.checkpoint_age_seconds {
                ::metrics::gauge!(name::CHECKPOINT_AGE).set(age);
            }
            if let Some(lag) = snapshot.subscription {
                ::metrics::gauge!(name::SUBSCRIPTION_LAG_EVENTS).set(lag.events() as f64);
                ::metrics::gauge!(name::SUBSCRIPTION_LAG_SECONDS).set(lag.seconds);
            }
        });
        Some(p.handle.render())
    }

    /// Fold recorded histogram samples into their buckets, so that samples do not pile up
    /// between scrapes (or without any).
    pub fn upkeep(&self) {
        if let Some(p) = &self.prometheus {
            p.handle.run_upkeep();
        }
    }
}
