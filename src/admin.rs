//! The admin surface for humans: Clerk sessions only (an API token gets 401), admins only,
//! and a same-origin `Origin` on every state-changing request authenticated by cookie.
//! [`admin_session`] is the gate; the JSON API below and the page in [`crate::admin_page`]
//! both go through it and through the same [`crate::ledger`] calls.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokenledger_projections::TokenRow;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::parse_duration;
use crate::http::{ApiError, body_bytes, json_object, require_content_type, used_rows};
use crate::ledger::{AuditView, CreateRequest, LedgerError, Minted, RotateRequest, TokenView};
use crate::monitoring::{StaleParams, stale};
use crate::session::{NOT_CONFIGURED, Session, looks_like_jwt};
use crate::store::AuditFilter;

/// The answer to an API token on a route for humans.
pub const API_TOKENS_REFUSED: &str = "API tokens are not accepted on this endpoint";

/// The answer to a cookie-authenticated change without a same-origin `Origin`.
pub const CROSS_SITE_REFUSED: &str =
    "Cross-site request refused: a state-changing request needs a same-origin Origin header";

/// Where the session came from; only a cookie needs the CSRF check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Header,
    Cookie,
}

/// The `__session` cookie's value, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "__session")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether `Origin` names this very site (scheme http or https, same host and port).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        _ => false,
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The gate of every admin route: a verified admin session, or the answer to give.
pub async fn admin_session(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Session, ApiError> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "Authorization header is not valid text; expected Bearer <session>",
                )
            })?;
            let credential = text
                .trim()
                .strip_prefix("Bearer ")
                .or_else(|| text.trim().strip_prefix("bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if !looks_like_jwt(credential) {
                return Err(ApiError::new(401, API_TOKENS_REFUSED));
            }
            Some(credential.to_owned())
        }
    };
    let Some(verifier) = &state.sessions else {
        return Err(ApiError::new(503, NOT_CONFIGURED));
    };
    let (jwt, source) = match bearer {
        Some(jwt) => (jwt, Source::Header),
        None => match session_cookie(headers) {
            Some(jwt) => (jwt, Source::Cookie),
            None => return Err(ApiError::new(401, "Sign-in required")),
        },
    };
    let session = verifier
        .verify(&jwt, state.ledger.now())
        .await
        .map_err(|e| ApiError::new(e.status(), e.to_string()))?;
    if !session.is_admin {
        return Err(ApiError::new(403, "Admin role required"));
    }
    if source == Source::Cookie && changes_state(method) && !same_origin(headers) {
        return Err(ApiError::new(403, CROSS_SITE_REFUSED));
    }
    Ok(session)
}

/// A ledger failure as an answer: refusals are the caller's (404 unknown, 409 state, 400
/// input); anything else is ours and says only that the log is unavailable.
pub fn ledger_error(e: LedgerError) -> ApiError {
    match &e {
        LedgerError::NotFound(id) => ApiError::new(404, format!("No token with id {id}")),
        LedgerError::Refused(d) => {
            use crate::lifecycle::DomainError as D;
            let status = match d {
                D::AlreadyRevoked(_) | D::AlreadyRotated(..) | D::Expired(_) => 409,
                _ => 400,
            };
            ApiError::new(status, d.to_string())
        }
        LedgerError::Busy(_) => ApiError::new(409, e.to_string()),
        _ => {
            tracing::error!(error = %e, "admin action failed");
            ApiError::audit_unavailable()
        }
    }
}

/// Fold this node's own write in before answering, so the next read sees it.
pub async fn settle(state: &AppState, position: u64) {
    if let Err(e) = state.cache.reach(&state.store, position).await {
        tracing::warn!(error = %e, "token projection could not catch up");
    }
}

pub async fn create(
    state: &AppState,
    session: &Session,
    req: CreateRequest,
) -> Result<Minted, ApiError> {
    let minted = state
        .ledger
        .create(CreateRequest {
            actor: session.actor(),
            ..req
        })
        .await
        .map_err(ledger_error)?;
    settle(state, minted.row.position).await;
    Ok(minted)
}

pub async fn revoke(
    state: &AppState,
    session: &Session,
    id: Uuid,
    reason: Option<String>,
) -> Result<TokenRow, ApiError> {
    let row = state
        .ledger
        .revoke(id, &session.actor(), reason)
        .await
        .map_err(ledger_error)?;
    settle(state, row.position).await;
    Ok(row)
}

pub async fn rotate(
    state: &AppState,
    session: &Session,
    id: Uuid,
    grace: Option<Duration>,
) -> Result<Minted, ApiError> {
    let minted = state
        .ledger
        .rotate(
            id,
            RotateRequest {
                grace,
                actor: session.actor(),
                ..RotateRequest::default()
            },
        )
        .await
        .map_err(ledger_error)?;
    settle(state, minted.row.position).await;
    Ok(minted)
}

/// One token's audit timeline, oldest first.
pub async fn timeline(state: &AppState, id: Uuid) -> Result<(TokenRow, Vec<AuditView>), ApiError> {
    let row = state
        .cache
        .get(&id)
        .ok_or_else(|| ApiError::new(404, format!("No token with id {id}")))?;
    if let Err(e) = state.store.catch_up_audit().await {
        tracing::warn!(error = %e, "audit view could not catch up");
    }
    let rows = state
        .store
        .audit(&AuditFilter {
            token_id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit view unavailable");
            ApiError::new(503, "Audit view unavailable")
        })?;
    Ok((row, rows.iter().map(AuditView::from).collect()))
}

/// The monitoring list with the seed guide's thresholds.
pub async fn stale_list(state: &AppState) -> Result<Vec<crate::monitoring::Flagged>, ApiError> {
    let uses = used_rows(state).await?;
    Ok(stale(
        &state.cache.rows(),
        &uses,
        state.ledger.now(),
        StaleParams::default(),
    ))
}

// ----- the JSON API -----

/// A JSON object body; an empty body means `{}` (every field optional).
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    require_content_type(headers, "application/json")?;
    json_object(&bytes)
}

fn only_fields(map: &Map<String, Value>, accepted: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "Unknown field {k:?}; accepted: {}",
            accepted.join(", ")
        ))),
        None => Ok(()),
    }
}

fn optional_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("\"{key}\" must be a string"))),
    }
}

fn optional_duration(map: &Map<String, Value>, key: &str) -> Result<Option<Duration>, ApiError> {
    optional_string(map, key)?
        .map(|raw| {
            parse_duration(&raw).map_err(|e| ApiError::bad_request(format!("\"{key}\": {e}")))
        })
        .transpose()
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("Token id must be a UUID"))
}

fn no_store(status: StatusCode, body: Value) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /api/admin/tokens`
pub async fn api_list(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_session(&state, &method, &headers).await?;
    let now = state.ledger.now();
    let tokens: Vec<TokenView> = state
        .cache
        .rows()
        .iter()
        .map(|r| TokenView::new(r, now))
        .collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `POST /api/admin/tokens` `{"name", "scopes", "expires_in"}`: the plaintext, once.
pub async fn api_create(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let session = admin_session(&state, &method, &headers).await?;
    let map = json_body(&headers, body)?;
    only_fields(&map, &["name", "scopes", "expires_in"])?;
    let name = optional_string(&map, "name")?
        .ok_or_else(|| ApiError::bad_request("Missing \"name\" (1 to 100 characters)"))?;
    let scopes = match map.get("scopes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| ApiError::bad_request("\"scopes\" must be an array of strings"))?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "\"scopes\" must be an array of strings",
            ));
        }
    };
    let expires_in = optional_duration(&map, "expires_in")?;
    let minted = create(
        &state,
        &session,
        CreateRequest {
            name,
            scopes,
            expires_in,
            actor: String::new(),
        },
    )
    .await?;
    Ok(no_store(StatusCode::CREATED, minted.shown_once_json()))
}

/// `POST /api/admin/tokens/{id}/revoke` `{"reason"}`
pub async fn api_revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let session = admin_session(&state, &method, &headers).await?;
    let id = parse_id(&id)?;
    let map = json_body(&headers, body)?;
    only_fields(&map, &["reason"])?;
    let reason = optional_string(&map, "reason")?;
    let row = revoke(&state, &session, id, reason).await?;
    Ok(Json(json!(TokenView::new(&row, state.ledger.now()))).into_response())
}

/// `POST /api/admin/tokens/{id}/rotate` `{"grace"}`: the successor's plaintext, once.
pub async fn api_rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let session = admin_session(&state, &method, &headers).await?;
    let id = parse_id(&id)?;
    let map = json_body(&headers, body)?;
    only_fields(&map, &["grace"])?;
    let grace = optional_duration(&map, "grace")?;
    let minted = rotate(&state, &session, id, grace).await?;
    Ok(no_store(StatusCode::CREATED, minted.shown_once_json()))
}

/// `GET /api/admin/tokens/{id}/audit`
pub async fn api_timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_session(&state, &method, &headers).await?;
    let (row, events) = timeline(&state, parse_id(&id)?).await?;
    Ok(Json(json!({
        "token": TokenView::new(&row, state.ledger.now()),
        "events": events,
    }))
    .into_response())
}

/// `GET /api/admin/tokens/stale`
pub async fn api_stale(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_session(&state, &method, &headers).await?;
    Ok(Json(json!({ "tokens": stale_list(&state).await? })).into_response())
}
