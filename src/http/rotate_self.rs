//! `POST /v1/tokens/self/rotate`: a token that holds `tokens:rotate-self` replaces itself.
//! The successor is answered once; the old token works until the successor's first use.
//! Rotating a token that was already rotated is reuse, and revokes its whole chain.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

use super::admin_api::shown_once;
use super::error::ApiError;
use super::extract::{ApiCaller, AppJson};
use super::policy::{ROTATE_SELF_SCOPES, path};
use super::state::AppState;
use crate::config::parse_positive_duration;

pub fn router() -> Router<AppState> {
    Router::new().route(path::ROTATE_SELF, post(rotate_self))
}

/// `{"expires_in"}`, optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateSelfRequest)]
pub(super) struct Body {
    /// The successor's lifetime, like 30d (default: the old token's lifetime), at most
    /// API_TOKEN_MAX_TTL.
    #[schema(pattern = "^[0-9]+[smhd]$")]
    expires_in: Option<String>,
}

/// Rotate the calling token. Its use and the rotation are one append; the successor has the
/// same name, scopes and allowlist, and its plaintext is in this answer only.
#[utoipa::path(post, path = path::ROTATE_SELF, operation_id = "rotate_self", tag = "tokens",
    request_body(content = Option<Body>, content_type = "application/json"),
    responses(
        (status = 201, description = "rotated; the successor's plaintext is in this answer only, and the old token works until the successor is first used (at most the default grace period)", body = crate::app::ShownOnce,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "the body is not accepted (the text names the field)", body = super::error::ErrorBody),
        (status = 409, description = "the token kept changing while this request decided; try again", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn rotate_self(
    State(state): State<AppState>,
    caller: ApiCaller,
    AppJson(body): AppJson<Body>,
) -> Result<Response, ApiError> {
    let expires_in = body
        .expires_in
        .map(|raw| {
            parse_positive_duration(&raw)
                .map_err(|e| ApiError::BadRequest(format!("\"expires_in\": {e}")))
        })
        .transpose()?;
    let attempt = caller.call.attempt(
        &state,
        ROTATE_SELF_SCOPES.to_vec(),
        Some("rotate-self".into()),
    );
    let minted = state
        .ledger
        .rotate_self(&caller.token, &attempt, expires_in)
        .await?;
    Ok(shown_once(&minted))
}
