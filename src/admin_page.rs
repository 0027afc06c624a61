//! The `/admin/tokens` page: server-rendered HTML with a little plain JavaScript (the copy
//! button) and no external assets. Forms post back here; every action goes through
//! [`crate::admin`]'s gate and ledger calls, so the page and the JSON API cannot disagree.

// Page handlers answer early with a finished `Response` (a page or a JSON error); boxing it
// would only add noise to every call site.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tokenledger_events::Timestamp;
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::admin::{self, API_TOKENS_REFUSED, CROSS_SITE_REFUSED, admin_session, same_origin};
use crate::app::AppState;
use crate::config::{parse_duration, parse_positive_duration};
use crate::http::{ApiError, body_bytes, require_content_type};
use crate::ledger::{CreateRequest, LedgerError, Minted};
use crate::lifecycle::{DomainError, KNOWN_SCOPES, parse_name, parse_scope};
use crate::monitoring::Flag;
use crate::session::NOT_CONFIGURED;
use crate::session::Session;

const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --bg:#f7f8fb; --accent:#2f5bd3; --warn:#a15c00; --bad:#b3261e; --ok:#1e7d3a; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; justify-content:space-between; padding:.75rem 1rem; background:#fff; border-bottom:1px solid var(--line); }
header h1 { font-size:1.1rem; margin:0; }
main { padding:1rem; max-width:1400px; margin:0 auto; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:1rem; margin-bottom:1rem; }
h2 { font-size:1rem; margin:0 0 .75rem; }
label { display:block; font-weight:600; margin:.5rem 0 .25rem; }
input[type=text] { width:100%; max-width:28rem; padding:.45rem .5rem; border:1px solid var(--line); border-radius:6px; font:inherit; }
fieldset { border:0; padding:0; margin:.5rem 0; }
fieldset label { display:inline-flex; gap:.3rem; font-weight:400; margin-right:1rem; }
button, .button { font:inherit; padding:.45rem .9rem; border-radius:6px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; text-decoration:none; display:inline-block; }
.button.secondary, button.secondary { background:#fff; color:var(--accent); }
button.danger { background:var(--bad); border-color:var(--bad); }
.error { color:var(--bad); font-size:.9rem; margin:.25rem 0 0; }
.notice { border-left:4px solid var(--ok); }
.warning { border-left:4px solid var(--warn); }
code.secret { display:block; overflow-wrap:anywhere; background:#f1f3f8; padding:.6rem; border-radius:6px; margin:.5rem 0; font-size:.95rem; }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.5rem; border-bottom:1px solid var(--line); vertical-align:top; font-size:.9rem; }
th { color:var(--muted); font-weight:600; white-space:nowrap; }
td.id { font-family:ui-monospace, monospace; font-size:.8rem; overflow-wrap:anywhere; }
.badge { display:inline-block; border-radius:999px; padding:.05rem .5rem; font-size:.75rem; margin:0 .25rem .25rem 0; border:1px solid currentColor; white-space:nowrap; }
.badge.active { color:var(--ok); } .badge.revoked, .badge.expired { color:var(--bad); }
.badge.rotated_in_grace, .badge.expiring, .badge.stale, .badge.new-ip { color:var(--warn); }
.badge.admin { color:var(--accent); }
.muted { color:var(--muted); }
ol.timeline { padding-left:1.25rem; } ol.timeline li { margin-bottom:.6rem; }
@media (max-width: 760px) {
  table, thead, tbody, tr, td { display:block; }
  thead { display:none; }
  tr { border:1px solid var(--line); border-radius:8px; margin-bottom:.75rem; padding:.25rem .5rem; }
  td { border:0; padding:.3rem 0; overflow-wrap:anywhere; }
  td::before { content: attr(data-label); display:block; color:var(--muted); font-size:.75rem; }
}
"#;

const COPY_JS: &str = r#"
document.addEventListener('DOMContentLoaded', function () {
  var button = document.getElementById('copy-token');
  if (!button) return;
  button.addEventListener('click', function () {
    var value = document.getElementById('new-token-value').textContent;
    var done = function () { button.textContent = 'Copied'; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done);
    } else {
      var area = document.createElement('textarea');
      area.value = value; document.body.appendChild(area); area.select();
      document.execCommand('copy'); document.body.removeChild(area); done();
    }
  });
});
"#;

/// A page answer: HTML that is never cached, never framed, and loads nothing from elsewhere.
fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, maud::Markup::into_string(markup)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tokenledger" }
                style { (PreEscaped(CSS)) }
                script { (PreEscaped(COPY_JS)) }
            }
            body {
                header {
                    h1 { a href="/admin/tokens" style="color:inherit;text-decoration:none" { "tokenledger" } " · " (title) }
                    @if let Some(s) = session {
                        form method="post" action="/admin/sign-out" {
                            span.muted { "Signed in as " (s.sub) " " }
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The gate for pages: a bearer API token gets the JSON 401 machines understand; a person
/// without a usable session gets a page saying what to do.
async fn gate(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Session, Response> {
    match admin_session(state, method, headers).await {
        Ok(session) => Ok(session),
        Err(e) if e.message == API_TOKENS_REFUSED => Err(e.into_response()),
        Err(e) => {
            let hint = match e.status.as_u16() {
                401 => {
                    html! { p { "Sign in through your Clerk application, or locally with a " a href="/admin/sign-in" { "development session" } "." } }
                }
                503 => {
                    html! { p { "Set CLERK_JWT_KEY or CLERK_JWKS_URL with CLERK_ISSUER and CLERK_AUTHORIZED_PARTIES, or create a development session with " code { "tokenledger dev-session" } "." } }
                }
                _ => html! {},
            };
            Err(page(
                e.status,
                layout(
                    "Admin",
                    None,
                    html! { section.warning { h2 { (e.message) } (hint) } },
                ),
            ))
        }
    }
}

fn status_label(s: TokenStatus) -> &'static str {
    match s {
        TokenStatus::Active => "active",
        TokenStatus::RotatedInGrace => "rotated (in grace)",
        TokenStatus::Expired => "expired",
        TokenStatus::Revoked => "revoked",
    }
}

fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
}

/// The create form's input and what was wrong with it, field by field.
#[derive(Default)]
struct CreateForm {
    name: String,
    scopes: Vec<String>,
    expires_in: String,
    errors: HashMap<&'static str, String>,
}

/// A new plaintext to show once, with what happened.
struct Shown<'a> {
    minted: &'a Minted,
    what: &'static str,
}

async fn list_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    form: &CreateForm,
    shown: Option<Shown<'_>>,
    notice: Option<String>,
) -> Response {
    let now = state.ledger.now();
    let rows = state.cache.rows();
    let flags: HashMap<Uuid, Vec<Flag>> = match admin::stale_list(state).await {
        Ok(list) => list.into_iter().map(|f| (f.token_id, f.flags)).collect(),
        Err(_) => HashMap::new(),
    };
    let body = html! {
        @if let Some(n) = &notice { section.notice id="notice" { (n) } }
        @if let Some(s) = &shown {
            section.warning id="new-token" {
                h2 { (s.what) ": " (s.minted.row.name) }
                p { strong { "Copy this token now. It will not be shown again." } " Only its hash is stored." }
                code.secret id="new-token-value" { (s.minted.token.expose()) }
                button id="copy-token" type="button" { "Copy" }
            }
        }
        section id="create" {
            h2 { "Create a token" }
            form id="create-token" method="post" action="/admin/tokens" {
                label for="name" { "Name" }
                input type="text" id="name" name="name" maxlength="100" value=(form.name) placeholder="ci-deploy";
                @if let Some(e) = form.errors.get("name") { p.error id="name-error" { (e) } }
                fieldset id="scopes" {
                    legend { strong { "Scopes" } }
                    @for scope in KNOWN_SCOPES {
                        label { input type="checkbox" name="scope" value=(scope) checked[form.scopes.iter().any(|s| s == scope)]; (scope) }
                    }
                }
                @if let Some(e) = form.errors.get("scope") { p.error id="scope-error" { (e) } }
                label for="expires_in" { "Expires in " span.muted { "(like 30d, 24h; default 90d)" } }
                input type="text" id="expires_in" name="expires_in" value=(form.expires_in) placeholder="90d";
                @if let Some(e) = form.errors.get("expires_in") { p.error id="expires-error" { (e) } }
                p { button id="create-submit" type="submit" { "Create token" } }
            }
        }
        section {
            h2 { "Tokens" }
            div.table-wrap {
                table id="tokens" {
                    thead { tr {
                        th { "Name" } th { "ID" } th { "Env" } th { "Scopes" } th { "Created" } th { "Expires" }
                        th { "Last used" } th { "Status" } th { "Actions" }
                    } }
                    tbody {
                        @for row in &rows {
                            @let status = row.status_at(now);
                            @let row_flags = flags.get(&row.id).cloned().unwrap_or_default();
                            tr data-token-id=(row.id) {
                                td data-label="Name" { a href={"/admin/tokens/" (row.id)} { (row.name) } }
                                td.id data-label="ID" { (row.id) }
                                td data-label="Env" { (row.environment.as_str()) }
                                td data-label="Scopes" { @for s in &row.scopes { span.badge.admin[s == "admin"] { (s) } } }
                                td data-label="Created" { (row.created_at.to_rfc3339()) br; span.muted { (row.created_by) } }
                                td data-label="Expires" { (row.expires_at.to_rfc3339()) }
                                td data-label="Last used" {
                                    (time(row.last_used_at))
                                    @if let Some(ip) = &row.last_used_ip { br; span.muted { "from " (ip) } }
                                    @if let Some(p) = &row.last_used_path { br; span.muted { "on " (p) } }
                                }
                                td.status data-label="Status" {
                                    span class={"badge " (status.as_str())} { (status_label(status)) }
                                    @for f in &row_flags {
                                        @match f {
                                            Flag::Unused => span.badge.stale { "stale" },
                                            Flag::ExpiringSoon => span.badge.expiring { "expiring soon" },
                                            Flag::AdminScope => span.badge.admin { "admin scope" },
                                            Flag::NewIp => span.badge."new-ip" { "new IP" },
                                        }
                                    }
                                }
                                td data-label="Actions" {
                                    @if row.revoked_at.is_none() {
                                        a.button.secondary.revoke href={"/admin/tokens/" (row.id) "/revoke"} { "Revoke" } " "
                                    }
                                    @if row.revoked_at.is_none() && row.rotated_to.is_none() && status != TokenStatus::Expired {
                                        a.button.secondary.rotate href={"/admin/tokens/" (row.id) "/rotate"} { "Rotate" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No tokens yet." } }
        }
    };
    page(status, layout("API tokens", Some(session), body))
}

/// `GET /admin/tokens`
pub async fn tokens(State(state): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    match gate(&state, &method, &headers).await {
        Ok(session) => {
            list_page(
                &state,
                &session,
                StatusCode::OK,
                &CreateForm::default(),
                None,
                None,
            )
            .await
        }
        Err(r) => r,
    }
}

fn form_pairs(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = body_bytes(body)?;
    require_content_type(headers, "application/x-www-form-urlencoded")?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn first(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

fn field_of(e: &DomainError) -> &'static str {
    match e {
        DomainError::BadName(_) | DomainError::NameHasControl => "name",
        DomainError::NoScopes | DomainError::UnknownScope(_) => "scope",
        _ => "expires_in",
    }
}

/// `POST /admin/tokens`: create, or re-render with the message beside each bad field.
pub async fn create(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let pairs = form_pairs(&headers, body)?;
    let mut form = CreateForm {
        name: first(&pairs, "name"),
        scopes: pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
        expires_in: first(&pairs, "expires_in"),
        errors: HashMap::new(),
    };
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
        match parse_positive_duration(&form.expires_in) {
            Ok(d) => Some(d),
            Err(e) => {
                form.errors.insert("expires_in", e);
                None
            }
        }
    };
    if !form.errors.is_empty() {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(list_page(&state, &session, status, &form, None, None).await);
    }
    let request = CreateRequest {
        name: form.name.clone(),
        scopes: form.scopes.clone(),
        expires_in,
        actor: session.actor(),
    };
    Ok(match state.ledger.create(request).await {
        Ok(minted) => {
            admin::settle(&state, minted.row.position).await;
            let shown = Shown {
                minted: &minted,
                what: "Created",
            };
            list_page(
                &state,
                &session,
                StatusCode::CREATED,
                &CreateForm::default(),
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
                StatusCode::UNPROCESSABLE_ENTITY,
                &form,
                None,
                None,
            )
            .await
        }
        Err(e) => return Err(admin::ledger_error(e).into()),
    })
}

fn parse_id(raw: &str) -> Result<Uuid, Response> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("Token id must be a UUID").into_response())
}

fn token_or_404(state: &AppState, id: Uuid) -> Result<TokenRow, Response> {
    state
        .cache
        .get(&id)
        .ok_or_else(|| ApiError::new(404, format!("No token with id {id}")).into_response())
}

/// `GET /admin/tokens/{id}`: the token and its audit timeline.
pub async fn token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let id = parse_id(&id)?;
    let (row, events) = admin::timeline(&state, id).await?;
    let status = row.status_at(state.ledger.now());
    let body = html! {
        section {
            h2 { (row.name) " " span class={"badge " (status.as_str())} { (status_label(status)) } }
            p.muted { "ID " code { (row.id) } " · " (row.environment.as_str()) " · scopes " (row.scopes.join(", ")) }
            p { "Expires " (row.expires_at.to_rfc3339()) " · last used " (time(row.last_used_at))
                @if let Some(ip) = &row.last_used_ip { " from " (ip) }
                @if let Some(p) = &row.last_used_path { " on " (p) } }
            @if let Some(from) = row.rotated_from { p { "Rotated from " a href={"/admin/tokens/" (from)} { (from) } } }
            @if let Some(to) = row.rotated_to { p { "Rotated to " a href={"/admin/tokens/" (to)} { (to) } } }
        }
        section {
            h2 { "Audit timeline" }
            ol.timeline id="timeline" {
                @for e in &events {
                    li data-action=(e.action) {
                        strong { (e.action) } " " span.muted { (e.occurred_at) } br;
                        "by " (e.actor)
                        @if let Some(ip) = &e.ip { " from " (ip) }
                        @if let Some(p) = &e.path { " on " (p) }
                        br; code { (e.details.to_string()) }
                    }
                }
            }
        }
        p { a.button.secondary href="/admin/tokens" { "Back to tokens" } }
    };
    Ok(page(StatusCode::OK, layout("Token", Some(&session), body)))
}

/// `GET /admin/tokens/{id}/revoke`: the confirmation step.
pub async fn confirm_revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let row = token_or_404(&state, parse_id(&id)?)?;
    let body = html! {
        section.warning {
            h2 { "Revoke " (row.name) "?" }
            p { "Token " code { (row.id) } " stops working at once, everywhere this log is read. This cannot be undone." }
            form id="confirm-revoke" method="post" action={"/admin/tokens/" (row.id) "/revoke"} {
                label for="reason" { "Reason " span.muted { "(kept in the audit trail)" } }
                input type="text" id="reason" name="reason" maxlength="200";
                p { button.danger id="confirm-revoke-submit" type="submit" { "Revoke token" } " "
                    a.button.secondary href="/admin/tokens" { "Cancel" } }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        layout("Revoke token", Some(&session), body),
    ))
}

/// `POST /admin/tokens/{id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let id = parse_id(&id)?;
    let pairs = form_pairs(&headers, body)?;
    let reason = Some(first(&pairs, "reason")).filter(|r| !r.is_empty());
    let row = admin::revoke(&state, &session, id, reason).await?;
    let notice = format!("Revoked {} ({}).", row.name, row.id);
    Ok(list_page(
        &state,
        &session,
        StatusCode::OK,
        &CreateForm::default(),
        None,
        Some(notice),
    )
    .await)
}

/// `GET /admin/tokens/{id}/rotate`: the confirmation step, with the grace period.
pub async fn confirm_rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let row = token_or_404(&state, parse_id(&id)?)?;
    let body = html! {
        section.warning {
            h2 { "Rotate " (row.name) "?" }
            p { "A new token with the same name and scopes is created and shown once. The old token keeps working for the grace period, so you can switch your integration over first; a grace of 0s revokes it now." }
            form id="confirm-rotate" method="post" action={"/admin/tokens/" (row.id) "/rotate"} {
                label for="grace" { "Grace period " span.muted { "(like 24h, 15m, 0s)" } }
                input type="text" id="grace" name="grace" value="24h";
                p { button id="confirm-rotate-submit" type="submit" { "Rotate token" } " "
                    a.button.secondary href="/admin/tokens" { "Cancel" } }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        layout("Rotate token", Some(&session), body),
    ))
}

/// `POST /admin/tokens/{id}/rotate`
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let session = gate(&state, &method, &headers).await?;
    let id = parse_id(&id)?;
    let pairs = form_pairs(&headers, body)?;
    let raw = first(&pairs, "grace");
    let grace = if raw.is_empty() {
        None
    } else {
        Some(
            parse_duration(&raw)
                .map_err(|e| ApiError::bad_request(format!("Grace period: {e}")))?,
        )
    };
    let minted = admin::rotate(&state, &session, id, grace).await?;
    let shown = Shown {
        minted: &minted,
        what: "Rotated",
    };
    Ok(list_page(
        &state,
        &session,
        StatusCode::CREATED,
        &CreateForm::default(),
        Some(shown),
        None,
    )
    .await)
}

/// `GET /admin/sign-in`: local development sign-in (paste the output of
/// `tokenledger dev-session`), or where to sign in with Clerk.
pub async fn sign_in_page(State(state): State<AppState>) -> Response {
    let dev = state.dev_sessions;
    let body = html! {
        section {
            h2 { "Sign in" }
            @if dev {
                p { "Development sign-in: run " code { "tokenledger dev-session --sub YOU --role admin" } " and paste the session it prints." }
                form id="sign-in" method="post" action="/admin/sign-in" {
                    label for="session" { "Session" }
                    input type="text" id="session" name="session" autocomplete="off";
                    p { button id="sign-in-submit" type="submit" { "Sign in" } }
                }
            } @else {
                p { "Sign in through your Clerk application; its " code { "__session" } " cookie is accepted here." }
            }
        }
    };
    page(StatusCode::OK, layout("Sign in", None, body))
}

fn session_cookie_header(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "__session={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("__session=; Path=/; Max-Age=0"))
}

/// `POST /admin/sign-in`: check the pasted session and keep it in the `__session` cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    if !same_origin(&headers) {
        return Err(ApiError::new(403, CROSS_SITE_REFUSED).into());
    }
    let pairs = form_pairs(&headers, body)?;
    let jwt = first(&pairs, "session");
    let Some(verifier) = &state.sessions else {
        return Err(ApiError::new(503, NOT_CONFIGURED).into());
    };
    Ok(match verifier.verify(&jwt, state.ledger.now()).await {
        Ok(_) => {
            let mut response = Redirect::to("/admin/tokens").into_response();
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie_header(&jwt, 8 * 3600));
            response
        }
        Err(e) => page(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            layout(
                "Sign in",
                None,
                html! { section.warning { h2 { (e.to_string()) } p { a href="/admin/sign-in" { "Try again" } } } },
            ),
        ),
    })
}

/// `POST /admin/sign-out`
pub async fn sign_out(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return ApiError::new(403, CROSS_SITE_REFUSED).into_response();
    }
    let mut response = Redirect::to("/admin/sign-in").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header("", 0));
    response
}
