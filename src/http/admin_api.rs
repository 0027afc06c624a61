//! The admin JSON API for humans: an admin's Clerk session only (the policy layer sees to
//! that), and the same ledger calls as the page.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{
    AdminSession, AppJson, AuditParams, PageParams, StaleListParams, TokenId, TokenListParams,
};
use super::policy::path;
use super::state::AppState;
use crate::app::{
    AsOf, AuditQuery, CreateRequest, Minted, QueryError, RevokeStep, RotateRequest, StaleQuery,
    TokenView,
};
use crate::config::parse_duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(path::API_TOKENS, get(list).post(create))
        .route(path::API_STALE, get(stale))
        .route(path::API_REVOKE, post(revoke))
        .route(path::API_ROTATE, post(rotate))
        .route(path::API_TIMELINE, get(timeline))
        .route(path::API_INCIDENT, get(incident))
        .route(path::API_AUDIT, get(audit))
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

/// `GET /api/admin/tokens?status=&scope=&environment=&name_prefix=&cursor=&limit=`: a page
/// of tokens with status and last use, the total matching and the counts by status.
///
/// With `as_of=T` (RFC 3339, a date, `position:N` or a duration ago), the table as it was
/// then: `{"as_of": {"position", "at", "head", "checkpoint"}, "tokens", "total", "next", ...}`.
async fn list(
    State(state): State<AppState>,
    _: AdminSession,
    TokenListParams(query, as_of): TokenListParams,
) -> Result<Json<Value>, ApiError> {
    match as_of {
        Some(as_of) => Ok(Json(json!(
            state
                .queries
                .tokens_as_of(as_of, query.after, query.limit)
                .await
                .map_err(|e| named("as_of", e))?
        ))),
        None => Ok(Json(json!(state.queries.tokens(&query).await?))),
    }
}

/// A query error about parameter `name`: its message follows the name.
pub(super) fn named(name: &str, e: QueryError) -> ApiError {
    match e {
        QueryError::BadInput(why) => ApiError::BadRequest(format!("\"{name}\" {why}")),
        e => e.into(),
    }
}

/// `?since=T`: RFC 3339, a date, or a duration ago.
pub(super) fn since_param(
    query: Option<&str>,
    now: tokenledger_events::Timestamp,
) -> Result<Option<tokenledger_events::Timestamp>, ApiError> {
    let mut since = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "since" {
            return Err(ApiError::BadRequest(format!(
                "Unknown query parameter {}; accepted: since",
                crate::text::shown(&key)
            )));
        }
        let bad = || {
            ApiError::BadRequest(
                "\"since\" is not a time; expected RFC 3339 like 2026-11-24T09:30:00Z, a date like 2026-11-24, or a duration ago like 7d".into(),
            )
        };
        since = match AsOf::parse(&value).map_err(|_| bad())? {
            AsOf::At(t) => Some(t),
            AsOf::Ago(d) => Some(now.minus(d)),
            AsOf::Position(_) => return Err(bad()),
        };
    }
    Ok(since)
}

/// `GET /api/admin/tokens/{id}/incident?since=T`: the incident report (steps 2 to 5 and the
/// covering checkpoint; revoking is `POST .../revoke` with reason `incident`).
async fn incident(
    State(state): State<AppState>,
    _: AdminSession,
    TokenId(id): TokenId,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let since = since_param(uri.query(), state.ledger.now())?;
    let report = state
        .queries
        .incident(id, since, not_asked(), &crate::http::policy::admitted)
        .await
        .map_err(|e| named("since", e))?;
    Ok(Json(json!(report)))
}

/// Step 1 when reading a report: revoking is its own request.
pub(super) fn not_asked() -> RevokeStep {
    RevokeStep {
        asked: false,
        outcome: "not revoked by this report; revoke with the button or POST /api/admin/tokens/{id}/revoke".into(),
        revoked_at: None,
    }
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
    /// Revoke the rest of its rotation chain that still works too.
    #[serde(default)]
    chain: bool,
}

/// `POST /api/admin/tokens/{id}/revoke` `{"reason", "chain"}`: the revoked token, with the
/// chain members revoked with it and those left working.
async fn revoke(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    AppJson(body): AppJson<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    let done = state
        .ledger
        .revoke_chain(id, &session.actor(), body.reason, body.chain)
        .await?;
    let now = state.ledger.now();
    let views = |rows: &[tokenledger_projections::TokenRow]| -> Vec<TokenView> {
        rows.iter().map(|r| TokenView::new(r, now)).collect()
    };
    let revoked = views(&done.revoked);
    let mut answer = json!(revoked[0]);
    answer["chain_revoked"] = json!(revoked[1..]);
    answer["chain_still_valid"] = json!(views(&done.still_valid));
    Ok(Json(answer))
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
    TokenId(id): TokenId,
    AppJson(body): AppJson<RotateBody>,
) -> Result<Response, ApiError> {
    let request = RotateRequest {
        grace: duration("grace", body.grace)?,
        actor: session.actor(),
        ..RotateRequest::default()
    };
    let minted = state.ledger.rotate(id, request).await?;
    Ok(shown_once(&minted))
}

/// `GET /api/admin/tokens/{id}/audit?limit=&after=&before=&order=`: a page of the timeline,
/// oldest first unless asked otherwise.
async fn timeline(
    State(state): State<AppState>,
    _: AdminSession,
    TokenId(id): TokenId,
    page: PageParams,
) -> Result<Json<Value>, ApiError> {
    let query = AuditQuery {
        after: page.after,
        before: page.before,
        newest_first: page.newest_first.unwrap_or(false),
        limit: page.limit,
        ..AuditQuery::default()
    };
    let (row, page) = state.queries.timeline(id, &query).await?;
    let mut answer = json!(page);
    answer["token"] = json!(TokenView::new(&row, state.ledger.now()));
    Ok(Json(answer))
}

/// `GET /api/admin/audit?token=&action=&actor=&ip=&path_prefix=&since=&until=&from_position=
/// &to_position=&after=&before=&order=&limit=`: a page of the audit view, every filter given
/// applied, with the total matching and the cursors of the pages beside it.
async fn audit(
    State(state): State<AppState>,
    _: AdminSession,
    params: AuditParams,
) -> Result<Json<Value>, ApiError> {
    let query = params.resolve(state.ledger.now())?;
    Ok(Json(json!(state.queries.audit(&query).await?)))
}

/// `GET /api/admin/tokens/stale?cursor=&limit=`: a page of the monitoring list.
async fn stale(
    State(state): State<AppState>,
    _: AdminSession,
    page: StaleListParams,
) -> Result<Json<Value>, ApiError> {
    let query = StaleQuery {
        after: page.after,
        limit: page.limit,
        ..StaleQuery::default()
    };
    Ok(Json(json!(state.queries.stale(&query).await?)))
}
