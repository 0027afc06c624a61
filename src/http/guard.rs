//! Failed authentication, bounded per client IP. Guessing tokens (or sessions) from one
//! address costs it a cell of a GCRA budget per failure (governor); once the budget is spent,
//! every attempt from that address is answered 429 with `Retry-After`, unevaluated, until the
//! budget refills. Each refusal is logged with the client IP and why, never the credential;
//! unknown tokens are counted per IP in-process (addresses are never exported as metrics).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ApiError;
use crate::app::leaks::SignatureError;
use crate::app::{Metrics, Refusal};
use crate::session::SessionError;

pub struct FailureGuard {
    /// `None`: failures are not limited (`AUTH_FAILURES_PER_MINUTE=0`).
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses whose budget is spent, and when they may try again.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Whether any address may be blocked: while none is, admitting takes no lock (it runs
    /// on every authenticated request).
    any_blocked: AtomicBool,
    /// Refusals seen, to tidy every so often.
    refusals: AtomicU64,
}

/// Tidy after this many refusals.
const TIDY_EVERY: u64 = 4096;

/// Blocked addresses kept at most; past it the oldest lapse first (a flood of addresses
/// cannot grow this without bound).
const MAX_BLOCKED: usize = 100_000;

impl FailureGuard {
    pub fn new(per_minute: u32) -> FailureGuard {
        FailureGuard {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            blocked: Mutex::new(HashMap::new()),
            any_blocked: AtomicBool::new(false),
            refusals: AtomicU64::new(0),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before authenticating: 429 while `ip`'s budget is spent.
    pub fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.any_blocked.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        let mut blocked = self.blocked();
        match blocked.get(&ip) {
            Some(until) if *until > now => Err(too_many(*until - now)),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// After a refusal: log it, count it, and answer 429 instead when it spent `ip`'s budget.
    pub fn refused(&self, ip: IpAddr, path: &str, error: ApiError, metrics: &Metrics) -> ApiError {
        let failed_authentication = matches!(
            error,
            ApiError::Refused(
                Refusal::Malformed
                    | Refusal::Unknown
                    | Refusal::EnvironmentMismatch { .. }
                    | Refusal::Revoked
                    | Refusal::Expired
            ) | ApiError::Session(SessionError::Unauthorized(_))
                | ApiError::LeakSignature(
                    SignatureError::MissingHeader(_)
                        | SignatureError::Malformed
                        | SignatureError::UnknownKey
                        | SignatureError::Invalid
                )
        );
        tracing::info!(client_ip = %ip, path = ?crate::token::redact(path), reason = %error, "refused");
        if self.refusals.fetch_add(1, Ordering::Relaxed) % TIDY_EVERY == TIDY_EVERY - 1 {
            self.tidy();
        }
        if matches!(
            error,
            ApiError::Refused(Refusal::Unknown | Refusal::EnvironmentMismatch { .. })
        ) {
            metrics.count_unknown_token(ip);
        }
        let Some(limiter) = self.limiter.as_ref().filter(|_| failed_authentication) else {
            return error;
        };
        match limiter.check_key(&ip) {
            Ok(()) => error,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut blocked = self.blocked();
                if blocked.len() >= MAX_BLOCKED {
                    let now = Instant::now();
                    blocked.retain(|_, until| *until > now);
                }
                blocked.insert(ip, Instant::now() + wait);
                self.any_blocked.store(true, Ordering::Release);
                tracing::warn!(client_ip = %ip, retry_after_s = wait.as_secs_f64().ceil(), "too many failed attempts");
                too_many(wait)
            }
        }
    }

    /// Drop what has lapsed: budgets back to full and blocks that ended.
    pub fn tidy(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
        let now = Instant::now();
        let mut blocked = self.blocked();
        blocked.retain(|_, until| *until > now);
        // Under the lock, so a block inserted meanwhile is not forgotten.
        self.any_blocked
            .store(!blocked.is_empty(), Ordering::Release);
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::TooManyFailures {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}
