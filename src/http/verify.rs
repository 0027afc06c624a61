//! `POST /v1/verify`: a service asks whether a token may be used; the caller's use and the
//! checked token's use (or denial) are both recorded.

use std::net::IpAddr;

use crate::token_entry::TokenEntry;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokenledger_events::DenyReason;

use super::error::ApiError;
use super::extract::{ApiCaller, AppJson, parse_json};
use super::policy::{VERIFY_SCOPES, path};
use super::state::AppState;
use crate::app::Refusal;
use crate::lifecycle::{UseAttempt, UseDecision};
use crate::scope::Scope;
use crate::text::is_unsafe;

pub fn router() -> Router<AppState> {
    Router::new().route(path::VERIFY, post(verify))
}

/// `{"token", "scopes", "ip", "path"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VerifyRequest)]
pub(super) struct Body {
    /// The token to check (a plaintext; never echoed back).
    token: String,
    /// Scopes the token must all hold.
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
    /// The client address the checked use came from (IPv4 or IPv6); a token with an
    /// allowlist is checked against it, and is refused when it is missing.
    #[serde(default)]
    ip: Option<String>,
    /// The request path the checked use was for: starts with `/`, at most 2048 bytes.
    #[serde(default)]
    path: Option<String>,
}

/// What the check found.
#[derive(Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Code {
    Valid,
    Revoked,
    Expired,
    InsufficientScope,
    EnvMismatch,
    Malformed,
    NotFound,
    /// The checked token's allowlist does not hold the given `ip` (or none was given).
    IpNotAllowed,
    /// The checked token was superseded and presented after its successor took over: its
    /// rotation chain was revoked.
    ReuseDetected,
}

impl Code {
    /// The code as it is answered, for the metrics label.
    fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::Revoked => "REVOKED",
            Code::Expired => "EXPIRED",
            Code::InsufficientScope => "INSUFFICIENT_SCOPE",
            Code::EnvMismatch => "ENV_MISMATCH",
            Code::Malformed => "MALFORMED",
            Code::NotFound => "NOT_FOUND",
            Code::IpNotAllowed => "IP_NOT_ALLOWED",
            Code::ReuseDetected => "REUSE_DETECTED",
        }
    }
}

/// `valid` is true exactly when `code` is `VALID`; the token's id, scopes and expiry are
/// null when it is not one of ours.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct VerifyAnswer {
    valid: bool,
    code: Code,
    token_id: Option<uuid::Uuid>,
    scopes: Option<Vec<String>>,
    expires_at: Option<String>,
}

const MAX_PATH: usize = 2048;

impl Body {
    /// The client IP and path the checked use is recorded with.
    fn where_used(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let ip = self
            .ip
            .as_deref()
            .map(|s| {
                s.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| {
                    ApiError::BadRequest("\"ip\" must be an IPv4 or IPv6 address".into())
                })
            })
            .transpose()?;
        let path = match &self.path {
            Some(p) if !p.starts_with('/') || p.len() > MAX_PATH || p.chars().any(is_unsafe) => {
                return Err(ApiError::BadRequest(format!(
                    "\"path\" must start with / and be at most {MAX_PATH} bytes, with no control or invisible characters"
                )));
            }
            p => p.clone(),
        };
        Ok((ip, path))
    }
}

/// Decode a verify body as the handler does (the JSON object, then where the checked use
/// was made); nothing is looked up or recorded. The entry point for fuzzing and property
/// tests: a rejection is the exact answer a caller would get.
pub fn decode_body(bytes: &[u8]) -> Result<(), ApiError> {
    let body: Body = parse_json(bytes)?;
    body.where_used().map(|_| ())
}

fn answer(code: Code, token: Option<&TokenEntry>) -> Json<VerifyAnswer> {
    Json(VerifyAnswer {
        valid: matches!(code, Code::Valid),
        code,
        token_id: token.map(TokenEntry::id),
        scopes: token.map(TokenEntry::scope_names),
        expires_at: token.map(|t| t.expires_at().to_rfc3339()),
    })
}

/// Check another token: whether it may be used with these scopes. The caller's use and the
/// checked token's use (or denial) are recorded in one append before the answer.
#[utoipa::path(post, path = path::VERIFY, operation_id = "verify_token", tag = "verify",
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 200, description = "the check's outcome (a refused token is a 200 with its code)", body = VerifyAnswer),
        (status = 400, description = "the body is not accepted (the text names the field)", body = super::error::ErrorBody),
        (status = 409, description = "the caller's token kept changing while this request decided; try again", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn verify(
    State(state): State<AppState>,
    caller: ApiCaller,
    AppJson(body): AppJson<Body>,
) -> Result<Json<VerifyAnswer>, ApiError> {
    let (ip, path) = body.where_used()?;
    let attempt = caller
        .call
        .attempt(&state, VERIFY_SCOPES.to_vec(), Some("verify".into()));
    let row = match state.ledger.identify(&body.token) {
        Ok(row) => row,
        Err(refusal) => {
            // Nothing to record for a token that is not ours: only the caller's use.
            state.ledger.admit(&caller.token, &attempt).await?;
            let code = match refusal {
                Refusal::Malformed => Code::Malformed,
                Refusal::EnvironmentMismatch { .. } => Code::EnvMismatch,
                _ => Code::NotFound,
            };
            state.metrics.verify_check(code.as_str());
            return Ok(answer(code, None));
        }
    };
    // Every asked-for scope must be held: the first one that is not is the one denied.
    let missing = body
        .scopes
        .unwrap_or_default()
        .into_iter()
        .find(|s| !row.holds(*s));
    let checked = UseAttempt {
        required_any: missing.into_iter().collect(),
        server_environment: state.ledger.settings().environment,
        ip,
        method: "VERIFY".into(),
        path: path.unwrap_or_else(|| path::VERIFY.into()),
        command: Some(format!("verify by {}", caller.token.id())),
        user_agent: caller.call.user_agent.clone(),
    };
    // Both uses in one append (DESIGN invariant 5): the caller's first.
    let decisions = state
        .ledger
        .record_uses(&[(&caller.token, &attempt), (&row, &checked)])
        .await?;
    let checked_decision = match decisions.as_slice() {
        [UseDecision::Allowed(_), checked] => checked,
        [UseDecision::Denied(d), ..] => {
            return Err(Refusal::of_denial(d.reason, &attempt).into());
        }
        _ => return Err(ApiError::Internal),
    };
    let code = match checked_decision {
        UseDecision::Allowed(_) => Code::Valid,
        UseDecision::Denied(d) => match d.reason {
            DenyReason::Revoked => Code::Revoked,
            DenyReason::Expired => Code::Expired,
            DenyReason::InsufficientScope => Code::InsufficientScope,
            DenyReason::EnvironmentMismatch => Code::EnvMismatch,
            DenyReason::IpNotAllowed => Code::IpNotAllowed,
            DenyReason::ReuseDetected => Code::ReuseDetected,
        },
    };
    state.metrics.verify_check(code.as_str());
    Ok(answer(code, Some(&row)))
}

#[cfg(test)]
mod code_tests {
    use super::Code;

    #[test]
    fn the_metrics_label_is_the_code_as_answered() {
        for code in [
            Code::Valid,
            Code::Revoked,
            Code::Expired,
            Code::InsufficientScope,
            Code::EnvMismatch,
            Code::Malformed,
            Code::NotFound,
            Code::IpNotAllowed,
            Code::ReuseDetected,
        ] {
            assert_eq!(
                serde_json::to_string(&code).expect("json"),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
