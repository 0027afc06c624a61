//! The admin JSON API for humans: an admin's Clerk session only (the policy layer sees to
//! that), and the same ledger calls as the page.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{AdminSession, AppJson};
use super::policy::path;
use super::state::AppState;
use crate::app::{CreateRequest, Minted, RotateRequest, TokenView};
use crate::config::parse_duration;
use crate::monitoring::StaleParams;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(path::API_TOKENS, get(list).post(create))
        .route(path::API_STALE, get(stale))
        .route(path::API_REVOKE, post(revoke))
        .route(path::API_ROTATE, post(rotate))
        .route(path::API_TIMELINE, get(timeline))
}

pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest("Token id must be a UUID".into()))
}

fn duration(field: &str, raw: Option<String>) -> Result<Option<std::time::Duration>, ApiError> {
    raw.map(|raw| {
        parse_duration(&raw).map_err(|e| ApiError::BadRequest(format!("\"{field}\": {e}")))
    })
    .transpose()
}

/// A plaintext answer: never cached.
fn shown_once(minted: &Minted) -> Response {
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(minted.shown_once_json()),
    )
        .into_response()
}

/// `GET /api/admin/tokens`
async fn list(State(state): State<AppState>, _: AdminSession) -> Json<Value> {
    let now = state.ledger.now();
    let tokens: Vec<TokenView> = state
        .ledger
        .tokens()
        .iter()
        .map(|r| TokenView::new(r, now))
        .collect();
    Json(json!({ "tokens": tokens }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    expires_in: Option<String>,
}

/// `POST /api/admin/tokens` `{"name", "scopes", "expires_in"}`: the plaintext, once.
async fn create(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    AppJson(body): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::BadRequest("Missing \"name\" (1 to 100 characters)".into()))?;
    let minted = state
        .ledger
        .create(CreateRequest {
            name,
            scopes: body.scopes,
            expires_in: duration("expires_in", body.expires_in)?,
            actor: session.actor(),
        })
        .await?;
    Ok(shown_once(&minted))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Option<String>,
}

/// `POST /api/admin/tokens/{id}/revoke` `{"reason"}`
async fn revoke(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    AppJson(body): AppJson<RevokeBody>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id(&id)?;
    let row = state
        .ledger
        .revoke(id, &session.actor(), body.reason)
        .await?;
    Ok(Json(TokenView::new(&row, state.ledger.now())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

/// `POST /api/admin/tokens/{id}/rotate` `{"grace"}`: the successor's plaintext, once.
async fn rotate(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    AppJson(body): AppJson<RotateBody>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let request = RotateRequest {
        grace: duration("grace", body.grace)?,
        actor: session.actor(),
        ..RotateRequest::default()
    };
    let minted = state.ledger.rotate(id, request).await?;
    Ok(shown_once(&minted))
}

/// `GET /api/admin/tokens/{id}/audit`
async fn timeline(
    State(state): State<AppState>,
    _: AdminSession,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (row, events) = state.queries.timeline(parse_id(&id)?).await?;
    Ok(Json(json!({
        "token": TokenView::new(&row, state.ledger.now()),
        "events": events,
    })))
}

/// `GET /api/admin/tokens/stale`
async fn stale(State(state): State<AppState>, _: AdminSession) -> Result<Json<Value>, ApiError> {
    let tokens = state.queries.stale(StaleParams::default()).await?;
    Ok(Json(json!({ "tokens": tokens })))
}
