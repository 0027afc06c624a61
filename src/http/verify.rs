//! `POST /v1/verify`: a service asks whether a token may be used; the caller's use and the
//! checked token's use (or denial) are both recorded.

use std::net::IpAddr;

use crate::token_entry::TokenEntry;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    token: String,
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    path: Option<String>,
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

fn answer(code: &str, token: Option<&TokenEntry>) -> Json<Value> {
    Json(json!({
        "valid": code == "VALID",
        "code": code,
        "token_id": token.map(TokenEntry::id),
        "scopes": token.map(TokenEntry::scope_names),
        "expires_at": token.map(|t| t.expires_at().to_rfc3339()),
    }))
}

async fn verify(
    State(state): State<AppState>,
    caller: ApiCaller,
    AppJson(body): AppJson<Body>,
) -> Result<Json<Value>, ApiError> {
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
                Refusal::Malformed => "MALFORMED",
                Refusal::EnvironmentMismatch { .. } => "ENV_MISMATCH",
                _ => "NOT_FOUND",
            };
            state.metrics.verify_check(code);
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
        UseDecision::Allowed(_) => "VALID",
        UseDecision::Denied(d) => match d.reason {
            DenyReason::Revoked => "REVOKED",
            DenyReason::Expired => "EXPIRED",
            DenyReason::InsufficientScope => "INSUFFICIENT_SCOPE",
            DenyReason::EnvironmentMismatch => "ENV_MISMATCH",
        },
    };
    state.metrics.verify_check(code);
    Ok(answer(code, Some(&row)))
}
