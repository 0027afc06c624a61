//! Leaked-token reports.
//!
//! - `POST /v1/leaks/github`: GitHub's secret scanning partner protocol. The signature
//!   (`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`) is checked over the raw
//!   body before anything of it is parsed; the answer is GitHub's feedback body, one label per
//!   match, naming each token by the SHA-256 of the string GitHub sent (lowercase hex), never by
//!   its plaintext.
//! - `POST /v1/leaks`: the same for an admin's session or a `leaks:report` token, in GitLab's
//!   shape `[{token, location}]`; 202 with no detail, so it says nothing about which tokens
//!   exist; limited per caller.
//!
//! Both take bodies up to [`LEAK_BODY_LIMIT`], more than the service's default.

use std::num::NonZeroU32;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::ApiError;
use super::extract::{Caller, ClientIp, parse_json_array};
use super::policy::{LEAK_SCOPES, path};
use super::state::AppState;
use crate::app::leaks::{
    Label, LeakReport, MAX_REPORTS, MAX_SOURCE_CHARS, MAX_TYPE_CHARS, MAX_URL_CHARS, Reporter,
    checked, inert,
};

/// The largest body the leak routes take: GitHub may send many matches at once.
pub const LEAK_BODY_LIMIT: usize = 1024 * 1024;

/// Calls of `POST /v1/leaks` one caller may make per minute (as a burst, refilling evenly).
pub const LEAK_REPORTS_PER_MINUTE: u32 = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            path::LEAKS_GITHUB,
            post(github).layer(DefaultBodyLimit::max(LEAK_BODY_LIMIT)),
        )
        .route(
            path::LEAKS,
            post(report).layer(DefaultBodyLimit::max(LEAK_BODY_LIMIT)),
        )
}

/// One match as GitHub sends it. Fields GitHub may add later are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct GithubMatch {
    /// The matched string (a plaintext; never answered or recorded).
    token: String,
    /// The secret type name registered with GitHub.
    #[serde(rename = "type", default)]
    token_type: Option<String>,
    /// Where it was found (may be empty).
    #[serde(default)]
    url: Option<String>,
    /// What it was found in: `content`, `commit`, `issue_comment`, ...
    #[serde(default)]
    source: Option<String>,
}

/// GitHub's feedback for one match: the SHA-256 of the matched string, lowercase hex (never
/// the plaintext), the type GitHub sent, and the label.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Feedback {
    token_hash: String,
    token_type: String,
    label: Label,
}

/// One report of `POST /v1/leaks`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Report {
    /// The leaked token (a plaintext; never answered).
    token: String,
    /// Where it was found, at most 2048 characters, no control characters.
    #[serde(default)]
    location: Option<String>,
}

/// The answer of `POST /v1/leaks`: the same whatever the tokens were.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Accepted {
    /// Always `accepted`.
    status: &'static str,
}

/// A body read under the leak routes' limit.
fn leak_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadOver(LEAK_BODY_LIMIT)
        } else {
            ApiError::BodyUnreadable
        }
    })
}

fn too_many_reports(n: usize) -> ApiError {
    ApiError::BadRequest(format!(
        "At most {MAX_REPORTS} reports per request, got {n}; send the rest in another request"
    ))
}

/// A header's value as text, if it is there and is text.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decode a GitHub report body as the handler does once its signature verified: the matches,
/// their text made inert. The entry point for fuzzing; a rejection is the exact answer.
pub fn decode_github_body(bytes: &[u8]) -> Result<Vec<LeakReport>, ApiError> {
    let matches: Vec<GithubMatch> =
        parse_json_array(bytes, "{\"token\", \"type\", \"url\", \"source\"} objects")?;
    if matches.len() > MAX_REPORTS {
        return Err(too_many_reports(matches.len()));
    }
    Ok(matches
        .into_iter()
        .map(|m| LeakReport {
            url: inert(m.url.as_deref(), MAX_URL_CHARS),
            source: inert(m.source.as_deref(), MAX_SOURCE_CHARS),
            token_type: inert(m.token_type.as_deref(), MAX_TYPE_CHARS),
            token: m.token,
        })
        .collect())
}

/// GitHub's secret scanning reports: the signature is checked over the raw body first; a
/// live token of this deployment is revoked at once (with the report, in one append), a
/// revoked or expired one gets the report alone, anything else is a false positive and
/// touches nothing.
#[utoipa::path(post, path = path::LEAKS_GITHUB, operation_id = "report_leaks_github", tag = "leaks",
    request_body(content = Vec<GithubMatch>, content_type = "application/json"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "which of GitHub's secret scanning keys signed the body"),
        ("Github-Public-Key-Signature" = String, Header, description = "base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature over the raw body"),
    ),
    responses(
        (status = 200, description = "one label per match, in order: `true_positive` for a token of this deployment (live, revoked or expired), `false_positive` otherwise; `token_hash` is the SHA-256 of the matched string in lowercase hex", body = Vec<Feedback>),
        (status = 400, description = "the body is not a JSON array of matches, or holds more than 1000 (the text names the element and field)", body = super::error::ErrorBody),
        (status = 401, description = "a signature header is missing, not a signature, names an unknown key, or does not verify; nothing was recorded", body = super::error::ErrorBody),
        (status = 429, description = "too many failed authentications (bad signatures) from this client address", body = super::error::ErrorBody),
        (status = 409, description = "a reported token kept changing while this request decided; try again", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 1 MiB", body = super::error::ErrorBody),
        (status = 503, description = "GitHub's keys could not be fetched, or the audit log is unavailable: nothing was recorded", body = super::error::ErrorBody),
    ))]
pub(super) async fn github(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    let keys = state.github_keys.as_ref().ok_or(ApiError::NotFound)?;
    // A bad signature is a failed authentication: an address that keeps sending them is
    // answered 429 (AUTH_FAILURES_PER_MINUTE), unevaluated, as for tokens.
    state.guard.admit(ip)?;
    let body = leak_body(body)?;
    if let Err(e) = keys
        .verify(
            header_text(&headers, "github-public-key-identifier"),
            header_text(&headers, "github-public-key-signature"),
            &body,
        )
        .await
    {
        return Err(state.guard.refused(
            ip,
            path::LEAKS_GITHUB,
            ApiError::LeakSignature(e),
            &state.metrics,
        ));
    }
    // Only now is the body looked at; the type GitHub sent is answered back as sent.
    let types: Vec<String> = serde_json::from_slice::<Vec<GithubMatch>>(&body)
        .map(|m| {
            m.into_iter()
                .map(|m| m.token_type.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let reports = decode_github_body(&body)?;
    let labels = state
        .ledger
        .report_leaks(&reports, &Reporter::Github)
        .await?;
    Ok(Json(
        reports
            .iter()
            .zip(labels)
            .zip(types)
            .map(|((report, label), token_type)| Feedback {
                token_hash: hex::encode(Sha256::digest(report.token.as_bytes())),
                token_type,
                label,
            })
            .collect(),
    ))
}

/// Decode a `POST /v1/leaks` body as the handler does: reports whose `location` is at most
/// 2048 characters, with no control character and no token. The entry point for fuzzing.
pub fn decode_report_body(bytes: &[u8]) -> Result<Vec<LeakReport>, ApiError> {
    let reports: Vec<Report> = parse_json_array(bytes, "{\"token\", \"location\"} objects")?;
    if reports.len() > MAX_REPORTS {
        return Err(too_many_reports(reports.len()));
    }
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let location = checked("location", r.location.as_deref(), MAX_URL_CHARS)
                .map_err(|e| ApiError::BadRequest(format!("[{i}]: {e}")))?;
            Ok(LeakReport {
                token: r.token,
                url: location,
                source: None,
                token_type: None,
            })
        })
        .collect()
}

/// Report leaked tokens: each one of this deployment is handled as GitHub's reports are,
/// with the caller as the reporter. The answer is the same whatever the tokens were.
#[utoipa::path(post, path = path::LEAKS, operation_id = "report_leaks", tag = "leaks",
    request_body(content = Vec<Report>, content_type = "application/json"),
    responses(
        (status = 202, description = "the reports were recorded (the answer says nothing about which tokens exist)", body = Accepted),
        (status = 400, description = "the body is not a JSON array of reports, holds more than 1000, or a location is refused (the text names the element and field)", body = super::error::ErrorBody),
        (status = 409, description = "a reported token kept changing while this request decided; try again", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 1 MiB", body = super::error::ErrorBody),
    ))]
pub(super) async fn report(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let reporter = match &caller {
        Caller::Token(t) => Reporter::Token(t.token.id()),
        Caller::Session(s) => Reporter::User(s.0.sub.clone()),
    };
    state.leak_reports.admit(&reporter.name())?;
    let body = leak_body(body)?;
    let reports = decode_report_body(&body)?;
    if let Caller::Token(t) = &caller {
        // Audit first: the reporter's use is durable before its reports are acted on.
        let attempt = t
            .call
            .attempt(&state, LEAK_SCOPES.to_vec(), Some("leaks:report".into()));
        state.ledger.admit(&t.token, &attempt).await?;
    }
    state.ledger.report_leaks(&reports, &reporter).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })))
}

/// Calls of `POST /v1/leaks` per caller: a GCRA budget of [`LEAK_REPORTS_PER_MINUTE`].
pub struct ReportLimiter(DefaultKeyedRateLimiter<String>);

impl ReportLimiter {
    pub fn new() -> ReportLimiter {
        let per_minute = NonZeroU32::new(LEAK_REPORTS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        ReportLimiter(DefaultKeyedRateLimiter::keyed(Quota::per_minute(
            per_minute,
        )))
    }

    /// Spend one call of `caller`'s budget, or answer 429 with how long to wait.
    pub fn admit(&self, caller: &str) -> Result<(), ApiError> {
        if self.0.len() > 100_000 {
            self.0.retain_recent();
        }
        self.0.check_key(&caller.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::warn!(caller = %caller, "too many leak reports");
            ApiError::TooManyReports {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

impl Default for ReportLimiter {
    fn default() -> Self {
        ReportLimiter::new()
    }
}
