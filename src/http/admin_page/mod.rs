//! The `/admin/tokens` page (with `/`, the service's front page, and sign-in): server-rendered HTML with a little plain JavaScript (the copy
//! button) and no external assets. Forms post back here; every action is the same ledger
//! call as the JSON API's, so the page and the API cannot disagree. The policy layer admits
//! only admins and renders its refusals with [`refusal`].

pub(crate) mod views;

pub use views::incident_document;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::extract::{
    AdminSession, PageParams, TokenId, TokenListParams, body_bytes, content_type_is, same_origin,
};
use super::policy::path;
use super::state::AppState;
use crate::app::sign_in::LinkRefused;
use crate::app::{AuditQuery, CreateRequest, LedgerError, RotateRequest, TokenQuery};
use crate::config::parse_positive_duration;
use crate::lifecycle::{DomainError, parse_grace, parse_name, parse_scope};
use crate::monitoring::StaleParams;
use crate::session::Session;
use tokenledger_projections::TokenRow;
use views::{CreateForm, ListPage, Shown, layout, page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(path::PAGE_TOKENS, get(tokens).post(create))
        .route(path::PAGE_TOKEN, get(token))
        .route(path::PAGE_REVOKE, get(confirm_revoke).post(revoke))
        .route(path::PAGE_ROTATE, get(confirm_rotate).post(rotate))
        .route(path::PAGE_INCIDENT, get(incident))
        .route(path::INDEX, get(index))
        .route(path::SIGN_IN, get(sign_in_page).post(sign_in))
        .route(path::SIGN_IN_LINK, get(sign_in_link))
        .route(path::SIGN_OUT, post(sign_out))
}

/// A refused page request. A bearer API token gets the JSON 401 machines understand; a
/// person gets a page saying what to do.
pub fn refusal(e: ApiError) -> Response {
    if matches!(e, ApiError::ApiTokensRefused) {
        return e.into_response();
    }
    let audit_failure = matches!(e, ApiError::AuditUnavailable);
    let mut response = page(e.status(), views::refusal(e.status(), &e.to_string()));
    if audit_failure {
        response.extensions_mut().insert(super::error::AuditFailure);
    }
    response
}

/// The list page: a page of tokens by `query` (the first 50 by default), with the monitoring
/// badges of the tokens shown (left out, not failed, when the audit view is unavailable).
async fn list_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    query: &TokenQuery,
    form: &CreateForm,
    shown: Option<Shown<'_>>,
    notice: Option<String>,
) -> Response {
    let tokens = match state.queries.tokens(query).await {
        Ok(tokens) => tokens,
        Err(e) => return refusal(e.into()),
    };
    let ids: Vec<_> = tokens.tokens.iter().map(|t| t.id).collect();
    let flags = match state.queries.flags_of(&ids, StaleParams::default()).await {
        Ok(flags) => flags,
        Err(e) => {
            tracing::warn!(error = %e, "monitoring badges left out");
            HashMap::new()
        }
    };
    let body = views::list(&ListPage {
        tokens: &tokens,
        query,
        flags: &flags,
        form,
        shown,
        notice,
    });
    page(status, layout("API tokens", Some(session), body))
}

/// `GET /admin/tokens?status=&scope=&name_prefix=&cursor=&limit=`
async fn tokens(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    params: Result<TokenListParams, ApiError>,
) -> Response {
    let (query, as_of) = match params {
        Ok(TokenListParams(query, as_of)) => (query, as_of),
        Err(e) => {
            let body = views::bad_list_query(&e.to_string());
            return page(e.status(), layout("API tokens", Some(&session), body));
        }
    };
    if let Some(as_of) = as_of {
        let answer = state
            .queries
            .forensics()
            .tokens_as_of(as_of, query.after, query.limit)
            .await
            .map_err(|e| super::admin_api::named("as_of", e));
        return match answer {
            Ok(p) => page(
                StatusCode::OK,
                layout(
                    "API tokens as they were",
                    Some(&session),
                    views::as_of_list(&p),
                ),
            ),
            Err(e) => {
                let body = views::bad_list_query(&e.to_string());
                page(e.status(), layout("API tokens", Some(&session), body))
            }
        };
    }
    list_page(
        &state,
        &session,
        StatusCode::OK,
        &query,
        &CreateForm::default(),
        None,
        None,
    )
    .await
}

fn form_pairs(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = body_bytes(body)?;
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(
            "application/x-www-form-urlencoded",
        ));
    }
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn first(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// A list typed into one box: entries separated by spaces, commas or new lines.
fn split_list(raw: &str) -> Vec<String> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn field_of(e: &DomainError) -> &'static str {
    match e {
        DomainError::BadName(_) | DomainError::NameHasControl | DomainError::NameHoldsToken => {
            "name"
        }
        DomainError::NoScopes | DomainError::UnknownScope(_) => "scope",
        DomainError::AllowList(_) => "allowed_ips",
        _ => "expires_in",
    }
}

/// `POST /admin/tokens`: create, or re-render with the message beside each bad field.
async fn create(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&headers, body)?;
    let mut form = CreateForm {
        name: first(&pairs, "name"),
        scopes: pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
        expires_in: first(&pairs, "expires_in"),
        allowed_ips: first(&pairs, "allowed_ips"),
        errors: HashMap::new(),
    };
    let allowed_ips = split_list(&form.allowed_ips);
    if let Err(e) = crate::allowlist::parse(&allowed_ips) {
        form.errors.insert("allowed_ips", e.to_string());
    }
    if let Err(e) = parse_name(&form.name) {
        form.errors.insert("name", e.to_string());
    }
    if form.scopes.is_empty() {
        form.errors
            .insert("scope", DomainError::NoScopes.to_string());
    } else if let Some(e) = form.scopes.iter().find_map(|s| parse_scope(s).err()) {
        form.errors.insert("scope", e.to_string());
    }
    let expires_in = if form.expires_in.is_empty() {
        None
    } else {
        parse_positive_duration(&form.expires_in)
            .map_err(|e| form.errors.insert("expires_in", e))
            .ok()
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    if !form.errors.is_empty() {
        return Ok(list_page(
            &state,
            &session,
            unprocessable,
            &TokenQuery::default(),
            &form,
            None,
            None,
        )
        .await);
    }
    let request = CreateRequest {
        name: form.name.clone(),
        scopes: form.scopes.clone(),
        expires_in,
        actor: session.actor(),
        allowed_ips,
    };
    Ok(match state.ledger.create(request).await {
        Ok(minted) => {
            let shown = Shown {
                minted: &minted,
                what: "Created",
            };
            let fresh = CreateForm::default();
            list_page(
                &state,
                &session,
                StatusCode::CREATED,
                &TokenQuery::default(),
                &fresh,
                Some(shown),
                None,
            )
            .await
        }
        Err(LedgerError::Refused(refusal)) => {
            // A refusal the field checks above could not know (the configured maximum expiry).
            form.errors.insert(field_of(&refusal), refusal.to_string());
            list_page(
                &state,
                &session,
                unprocessable,
                &TokenQuery::default(),
                &form,
                None,
                None,
            )
            .await
        }
        Err(e) => return Err(e.into()),
    })
}

/// Timeline entries per page.
const PAGE_SIZE: usize = 50;

/// `GET /admin/tokens/{id}`: the token and a page of its audit timeline, newest first.
async fn token(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    cursor: PageParams,
) -> Result<Response, ApiError> {
    let query = AuditQuery {
        after: cursor.after,
        before: cursor.before,
        // People look for the latest first: a revocation is never pages away.
        newest_first: cursor.newest_first.unwrap_or(true),
        limit: cursor.limit.or(Some(PAGE_SIZE)),
        ..AuditQuery::default()
    };
    let (row, events) = state.queries.timeline(id, &query).await?;
    let body = views::token(&row, &events, state.ledger.now());
    Ok(page(StatusCode::OK, layout("Token", Some(&session), body)))
}

/// `GET /admin/tokens/{id}/incident?since=T`: the incident report, with "Revoke now".
async fn incident(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let since = super::admin_api::since_param(uri.query(), state.ledger.now())?;
    let report = state
        .queries
        .forensics()
        .incident(
            id,
            since,
            super::admin_api::not_asked(),
            &super::policy::admitted,
        )
        .await
        .map_err(|e| super::admin_api::named("since", e))?;
    Ok(page(
        StatusCode::OK,
        layout(
            "Incident report",
            Some(&session),
            views::incident(&report, true),
        ),
    ))
}

/// `GET /admin/tokens/{id}/revoke`: the confirmation step.
async fn confirm_revoke(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
) -> Result<Response, ApiError> {
    let row = state.ledger.token(id).await?;
    let chain = state.ledger.chain_still_valid(row.id).await?;
    let body = views::confirm_revoke(&row, &chain);
    Ok(page(
        StatusCode::OK,
        layout("Revoke token", Some(&session), body),
    ))
}

/// `POST /admin/tokens/{id}/revoke`
async fn revoke(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&headers, body)?;
    let reason = Some(first(&pairs, "reason")).filter(|r| !r.is_empty());
    let chain = first(&pairs, "chain") == "yes";
    let done = state
        .ledger
        .revoke_chain(id, &session.actor(), reason, chain)
        .await?;
    let names = |rows: &[TokenRow]| {
        rows.iter()
            .map(|r| format!("{} ({})", r.name, r.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut notice = format!("Revoked {}.", names(&done.revoked));
    if !done.still_valid.is_empty() {
        notice.push_str(&format!(
            " Still working in the same rotation chain: {}.",
            names(&done.still_valid)
        ));
    }
    let fresh = CreateForm::default();
    Ok(list_page(
        &state,
        &session,
        StatusCode::OK,
        &TokenQuery::default(),
        &fresh,
        None,
        Some(notice),
    )
    .await)
}

/// `GET /admin/tokens/{id}/rotate`: the confirmation step, with the grace period.
async fn confirm_rotate(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
) -> Result<Response, ApiError> {
    let row = state.ledger.token(id).await?;
    Ok(page(
        StatusCode::OK,
        layout("Rotate token", Some(&session), views::confirm_rotate(&row)),
    ))
}

/// `POST /admin/tokens/{id}/rotate`
async fn rotate(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    TokenId(id): TokenId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&headers, body)?;
    let raw = first(&pairs, "grace");
    let grace = if raw.is_empty() {
        None
    } else {
        Some(parse_grace(&raw).map_err(|e| ApiError::BadRequest(format!("Grace period: {e}")))?)
    };
    let request = RotateRequest {
        grace,
        // The form shows the old list: what it sends is the new token's list.
        allowed_ips: pairs
            .iter()
            .any(|(k, _)| k == "allowed_ips")
            .then(|| split_list(&first(&pairs, "allowed_ips"))),
        actor: session.actor(),
        ..RotateRequest::default()
    };
    let minted = state.ledger.rotate(id, request).await?;
    let shown = Shown {
        minted: &minted,
        what: "Rotated",
    };
    let fresh = CreateForm::default();
    Ok(list_page(
        &state,
        &session,
        StatusCode::CREATED,
        &TokenQuery::default(),
        &fresh,
        Some(shown),
        None,
    )
    .await)
}

/// `GET /admin/sign-in`: local development sign-in (paste the output of
/// `tokenledger dev-session`), or where to sign in with Clerk.
async fn sign_in_page(State(state): State<AppState>) -> Response {
    page(
        StatusCode::OK,
        layout(
            "Sign in",
            None,
            views::sign_in(
                state
                    .sessions
                    .as_ref()
                    .is_some_and(|v| v.accepts_dev_sessions()),
            ),
        ),
    )
}

/// The `__session` cookie; `Secure` in production, where the page is served over HTTPS, so
/// that a browser never sends the session over plain HTTP.
fn session_cookie_header(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "__session={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("__session=; Path=/; Max-Age=0"))
}

fn see_other(to: &str, cookie: HeaderValue) -> Response {
    let mut response = Redirect::to(to).into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// `POST /admin/sign-in`: check the pasted session and keep it in the `__session` cookie.
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::CrossSite);
    }
    let pairs = form_pairs(&headers, body)?;
    let jwt = first(&pairs, "session");
    let verifier = state
        .sessions
        .as_ref()
        .filter(|v| v.is_configured())
        .ok_or(ApiError::SignInNotConfigured)?;
    Ok(match verifier.verify(&jwt, state.ledger.now()).await {
        Ok(_) => see_other(
            "/admin/tokens",
            session_cookie_header(&jwt, 8 * 3600, state.production),
        ),
        Err(e) => page(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            views::sign_in_refused(&e.to_string()),
        ),
    })
}

/// `GET /admin/sign-in/link?nonce=...`: spend the one-time link `serve` printed for a
/// development admin session in the `__session` cookie, then go to the token page. A link
/// spent, expired or unknown gets a page saying so, and no cookie.
async fn sign_in_link(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let nonce = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Some(links) = &state.sign_in_links else {
        return page(
            StatusCode::NOT_FOUND,
            views::sign_in_refused(
                "This server printed no sign-in link; sign in with a development session instead",
            ),
        );
    };
    match links.redeem(&nonce) {
        Ok(jwt) => see_other(
            path::PAGE_TOKENS,
            session_cookie_header(&jwt, 8 * 3600, state.production),
        ),
        Err(refused) => {
            let status = match refused {
                LinkRefused::Spent | LinkRefused::Expired => StatusCode::GONE,
                LinkRefused::Unknown => StatusCode::NOT_FOUND,
            };
            page(status, views::sign_in_refused(&refused.to_string()))
        }
    }
}

/// `GET /`: what this service is, whether its switches are on, and where to go next; JSON
/// for a client that asks for it (`Accept: application/json`).
#[utoipa::path(get, path = path::INDEX, tag = "health", responses(
    (status = 200, description = "what this service is, its switches and links: JSON when asked for with Accept: application/json, else a page",
        content(
            (views::IndexAnswer = "application/json"),
            (String = "text/html"),
        )),
))]
pub(crate) async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let sign_in = match &state.sessions {
        Some(v) if v.is_configured() => "configured",
        Some(v) if v.accepts_dev_sessions() => {
            "not configured yet (development: run tokenledger dev-session)"
        }
        _ => "not configured",
    };
    let index = views::Index {
        version: env!("CARGO_PKG_VERSION"),
        console: state.switches.console_enabled,
        token_auth: state.switches.token_auth_enabled,
        sign_in,
        docs: concat!(env!("CARGO_PKG_REPOSITORY"), "#readme"),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("application/json") && !accept.contains("text/html") {
        return axum::Json(index.json()).into_response();
    }
    page(StatusCode::OK, views::index(&index))
}

/// `POST /admin/sign-out`
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::CrossSite);
    }
    Ok(see_other(
        "/admin/sign-in",
        session_cookie_header("", 0, state.production),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_secure_exactly_in_production() {
        let cookie = |secure| {
            session_cookie_header("jwt", 60, secure)
                .to_str()
                .expect("text")
                .to_owned()
        };
        assert_eq!(
            cookie(true),
            "__session=jwt; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert_eq!(
            cookie(false),
            "__session=jwt; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }
}
