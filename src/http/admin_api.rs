//! The admin JSON API for humans: an admin's Clerk session only (the policy layer sees to
//! that), and the same ledger calls as the page.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{
    AdminSession, AppJson, AuditParams, PageParams, StaleListParams, TokenId, TokenListParams,
};
use super::openapi::{Environment, Order};
use super::policy::path;
use super::state::AppState;
use crate::app::{
    AsOf, AsOfPage, AuditPage, AuditQuery, CreateRequest, Incident, Minted, QueryError, RevokeStep,
    RotateRequest, ShownOnce, StalePage, StaleQuery, StatusName, TokenPage, TokenView,
};
use crate::config::parse_duration;
use crate::lifecycle::parse_grace;
use crate::scope::Scope;

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

/// `GET /api/admin/tokens`: the current table, or with `as_of` the table as it was.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum TokenList {
    Current(TokenPage),
    AsOf(AsOfPage),
}

/// The revoked token, the members of its rotation chain revoked with it, and those left
/// working.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RevokeAnswer {
    #[serde(flatten)]
    token: TokenView,
    chain_revoked: Vec<TokenView>,
    chain_still_valid: Vec<TokenView>,
}

/// A page of one token's audit timeline, and the token.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TimelineAnswer {
    #[serde(flatten)]
    page: AuditPage,
    token: TokenView,
}

/// A plaintext answer: never cached.
pub(super) fn shown_once(minted: &Minted) -> Response {
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(minted.shown_once()),
    )
        .into_response()
}

/// `GET /api/admin/tokens?status=&scope=&environment=&name_prefix=&cursor=&limit=`: a page
/// of tokens with status and last use, the total matching and the counts by status.
///
/// With `as_of=T` (RFC 3339, a date, `position:N` or a duration ago), the table as it was
/// then: `{"as_of": {"position", "at", "head", "checkpoint"}, "tokens", "total", "next", ...}`.
#[utoipa::path(get, path = path::API_TOKENS, operation_id = "list_tokens", tag = "admin", params(
        ("status" = Option<StatusName>, Query, description = "tokens with this status now"),
        ("scope" = Option<Scope>, Query, description = "tokens holding this very scope"),
        ("environment" = Option<Environment>, Query, description = "live or test"),
        ("name_prefix" = Option<String>, Query, description = "names starting with this (case-sensitive, at most 100 characters)"),
        ("cursor" = Option<String>, Query, description = "the `next` of an earlier page"),
        ("limit" = Option<u64>, Query, description = "page size, at least 1 (50 unless given; more than 1000 is lowered to 1000)"),
        ("as_of" = Option<String>, Query, description = "the table as it was: RFC 3339, a date, position:N or a duration ago; combines with cursor and limit only"),
    ),
    responses(
        (status = 200, description = "a page of tokens (with `as_of`: of the table as it was then)", body = TokenList),
        (status = 400, description = "a parameter is not accepted (the text names it)", body = super::error::ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AppState>,
    _: AdminSession,
    TokenListParams(query, as_of): TokenListParams,
) -> Result<Json<TokenList>, ApiError> {
    match as_of {
        Some(as_of) => Ok(Json(TokenList::AsOf(
            state
                .queries
                .forensics()
                .tokens_as_of(as_of, query.after, query.limit)
                .await
                .map_err(|e| named("as_of", e))?,
        ))),
        None => Ok(Json(TokenList::Current(
            state.queries.tokens(&query).await?,
        ))),
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
#[utoipa::path(get, path = path::API_INCIDENT, operation_id = "token_incident", tag = "admin", params(
        ("id" = uuid::Uuid, Path, description = "the token id"),
        ("since" = Option<String>, Query, description = "the window's start: RFC 3339, a date or a duration ago (default: the token's creation)"),
    ),
    responses(
        (status = 200, description = "the incident report", body = Incident),
        (status = 400, description = "a malformed id or parameter (the text names it)", body = super::error::ErrorBody),
        (status = 404, description = "no token with this id", body = super::error::ErrorBody),
    ))]
pub(super) async fn incident(
    State(state): State<AppState>,
    _: AdminSession,
    TokenId(id): TokenId,
    uri: axum::http::Uri,
) -> Result<Json<Incident>, ApiError> {
    let since = since_param(uri.query(), state.ledger.now())?;
    let report = state
        .queries
        .forensics()
        .incident(id, since, not_asked(), &crate::http::policy::admitted)
        .await
        .map_err(|e| named("since", e))?;
    Ok(Json(report))
}

/// Step 1 when reading a report: revoking is its own request.
pub(super) fn not_asked() -> RevokeStep {
    RevokeStep {
        asked: false,
        outcome: "not revoked by this report; revoke with the button or POST /api/admin/tokens/{id}/revoke".into(),
        revoked_at: None,
    }
}

/// `{"name", "scopes", "expires_in"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateRequest)]
pub(super) struct CreateBody {
    /// 1 to 100 characters, no control or invisible characters.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<Scope>)]
    scopes: Vec<String>,
    /// A duration like 90s, 15m, 24h, 30d (default 90d, at most API_TOKEN_MAX_TTL).
    #[schema(pattern = "^[0-9]+[smhd]$")]
    expires_in: Option<String>,
    /// Client networks the token may be used from, like "10.0.0.0/8", "192.0.2.7" or
    /// "2001:db8::/32" (default: any address).
    #[serde(default)]
    allowed_ips: Vec<String>,
}

/// `POST /api/admin/tokens` `{"name", "scopes", "expires_in", "allowed_ips"}`: the
/// plaintext, once.
#[utoipa::path(post, path = path::API_TOKENS, operation_id = "create_token", tag = "admin",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "created; the plaintext is in this answer only", body = ShownOnce,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "the body is not accepted (the text names the field)", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn create(
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
            allowed_ips: body.allowed_ips,
        })
        .await?;
    Ok(shown_once(&minted))
}

/// `{"reason", "chain"}`, both optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RevokeRequest)]
pub(super) struct RevokeBody {
    /// At most 500 characters, no control or invisible characters.
    #[schema(max_length = 500)]
    reason: Option<String>,
    /// Revoke the rest of its rotation chain that still works too.
    #[serde(default)]
    chain: bool,
}

/// `POST /api/admin/tokens/{id}/revoke` `{"reason", "chain"}`: the revoked token, with the
/// chain members revoked with it and those left working.
#[utoipa::path(post, path = path::API_REVOKE, operation_id = "revoke_token", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "the token id")),
    request_body(content = Option<RevokeBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "revoked", body = RevokeAnswer),
        (status = 400, description = "a malformed id, or the body is not accepted (the text names the field)", body = super::error::ErrorBody),
        (status = 404, description = "no token with this id", body = super::error::ErrorBody),
        (status = 409, description = "already revoked, or the token kept changing while this request decided", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    AppJson(body): AppJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let done = state
        .ledger
        .revoke_chain(id, &session.actor(), body.reason, body.chain)
        .await?;
    let now = state.ledger.now();
    let views = |rows: &[tokenledger_projections::TokenRow]| -> Vec<TokenView> {
        rows.iter().map(|r| TokenView::new(r, now)).collect()
    };
    let mut revoked = views(&done.revoked).into_iter();
    let token = revoked.next().ok_or_else(|| {
        tracing::error!("a revocation answered no revoked token");
        ApiError::Internal
    })?;
    Ok(Json(RevokeAnswer {
        token,
        chain_revoked: revoked.collect(),
        chain_still_valid: views(&done.still_valid),
    }))
}

/// `{"grace"}`, optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateRequest)]
pub(super) struct RotateBody {
    /// How long the old token keeps working: a duration like 24h (default 24h; 0s revokes
    /// it now), or "until-used" / "until-used:7d": until the successor's first use, at most
    /// the given time (default: the old token's expiry).
    #[schema(pattern = "^([0-9]+[smhd]|until-used(:[0-9]+[smhd])?)$")]
    grace: Option<String>,
    /// The successor's client networks, replacing the old token's; [] lifts the list
    /// (default: the old token's list).
    allowed_ips: Option<Vec<String>>,
}

/// `POST /api/admin/tokens/{id}/rotate` `{"grace"}`: the successor's plaintext, once.
#[utoipa::path(post, path = path::API_ROTATE, operation_id = "rotate_token", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "the token id")),
    request_body(content = Option<RotateBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "rotated; the successor's plaintext is in this answer only", body = ShownOnce,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "a malformed id, or the body is not accepted (the text names the field)", body = super::error::ErrorBody),
        (status = 404, description = "no token with this id", body = super::error::ErrorBody),
        (status = 409, description = "revoked, already rotated or expired, or the token kept changing while this request decided", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn rotate(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    AppJson(body): AppJson<RotateBody>,
) -> Result<Response, ApiError> {
    let grace = body
        .grace
        .map(|raw| parse_grace(&raw).map_err(|e| ApiError::BadRequest(format!("\"grace\": {e}"))))
        .transpose()?;
    let request = RotateRequest {
        grace,
        allowed_ips: body.allowed_ips,
        actor: session.actor(),
        ..RotateRequest::default()
    };
    let minted = state.ledger.rotate(id, request).await?;
    Ok(shown_once(&minted))
}

/// `GET /api/admin/tokens/{id}/audit?limit=&after=&before=&order=`: a page of the timeline,
/// oldest first unless asked otherwise.
#[utoipa::path(get, path = path::API_TIMELINE, operation_id = "token_timeline", tag = "admin", params(
        ("id" = uuid::Uuid, Path, description = "the token id"),
        ("limit" = Option<u64>, Query, description = "page size, at least 1"),
        ("after" = Option<u64>, Query, description = "rows after this log position"),
        ("before" = Option<u64>, Query, description = "rows before this log position"),
        ("order" = Option<Order>, Query, description = "newest_first or oldest_first (the default)"),
    ),
    responses(
        (status = 200, description = "a page of the timeline and the token", body = TimelineAnswer),
        (status = 400, description = "a malformed id or parameter (the text names it)", body = super::error::ErrorBody),
        (status = 404, description = "no token with this id", body = super::error::ErrorBody),
    ))]
pub(super) async fn timeline(
    State(state): State<AppState>,
    _: AdminSession,
    TokenId(id): TokenId,
    page: PageParams,
) -> Result<Json<TimelineAnswer>, ApiError> {
    let query = AuditQuery {
        after: page.after,
        before: page.before,
        newest_first: page.newest_first.unwrap_or(false),
        limit: page.limit,
        ..AuditQuery::default()
    };
    let (row, page) = state.queries.timeline(id, &query).await?;
    Ok(Json(TimelineAnswer {
        page,
        token: TokenView::new(&row, state.ledger.now()),
    }))
}

/// `GET /api/admin/audit?token=&action=&actor=&ip=&path_prefix=&since=&until=&from_position=
/// &to_position=&after=&before=&order=&limit=`: a page of the audit view, every filter given
/// applied, with the total matching and the cursors of the pages beside it.
#[utoipa::path(get, path = path::API_AUDIT, operation_id = "audit_view", tag = "admin", params(
        ("token" = Option<uuid::Uuid>, Query, description = "rows of this token"),
        ("action" = Option<String>, Query, description = "API_TOKEN_CREATED, _USED, _DENIED, _REVOKED, _ROTATED (or created, used, ...)"),
        ("actor" = Option<String>, Query, description = "exactly this actor: cli:alice, user:ID, token:ID, system:..."),
        ("ip" = Option<String>, Query, description = "uses and denials from this address or CIDR block"),
        ("path_prefix" = Option<String>, Query, description = "uses and denials whose request path starts with this"),
        ("since" = Option<String>, Query, description = "recorded at or after: RFC 3339, a date or a duration ago"),
        ("until" = Option<String>, Query, description = "recorded at or before: RFC 3339, a date or a duration ago"),
        ("from_position" = Option<u64>, Query, description = "at this log position or later"),
        ("to_position" = Option<u64>, Query, description = "at this log position or earlier"),
        ("after" = Option<u64>, Query, description = "the page after this position (a `next` cursor)"),
        ("before" = Option<u64>, Query, description = "the page before this position (a `prev` cursor)"),
        ("order" = Option<Order>, Query, description = "newest_first or oldest_first (the default)"),
        ("limit" = Option<u64>, Query, description = "page size, at least 1"),
    ),
    responses(
        (status = 200, description = "a page of the audit view", body = AuditPage),
        (status = 400, description = "a parameter is not accepted (the text names it)", body = super::error::ErrorBody),
    ))]
pub(super) async fn audit(
    State(state): State<AppState>,
    _: AdminSession,
    params: AuditParams,
) -> Result<Json<AuditPage>, ApiError> {
    let query = params.resolve(state.ledger.now())?;
    Ok(Json(state.queries.audit(&query).await?))
}

/// `GET /api/admin/tokens/stale?cursor=&limit=`: a page of the monitoring list.
#[utoipa::path(get, path = path::API_STALE, operation_id = "stale_tokens", tag = "admin", params(
        ("cursor" = Option<String>, Query, description = "the `next` of an earlier page"),
        ("limit" = Option<u64>, Query, description = "page size, at least 1 (more than 1000 is lowered to 1000)"),
    ),
    responses(
        (status = 200, description = "a page of the monitoring list", body = StalePage),
        (status = 400, description = "a parameter is not accepted (the text names it)", body = super::error::ErrorBody),
    ))]
pub(super) async fn stale(
    State(state): State<AppState>,
    _: AdminSession,
    page: StaleListParams,
) -> Result<Json<StalePage>, ApiError> {
    let query = StaleQuery {
        after: page.after,
        limit: page.limit,
        ..StaleQuery::default()
    };
    Ok(Json(state.queries.stale(&query).await?))
}
