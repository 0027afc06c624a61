//! HTTP handlers. Every error is JSON `{"error": "..."}` saying what was wrong; nothing here
//! panics on input, and a refused request appends nothing but its recorded denial.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokenledger_events::{DenyReason, EventLog};
use tokenledger_projections::TokenRow;

use crate::app::AppState;
use crate::auth::{Refusal, identify, unmet};
use crate::console;
use crate::lifecycle::{KNOWN_SCOPES, UseAttempt, UseDecision, decide_use};
use crate::routes::{CONSOLE_SCOPES, VERIFY_SCOPES};
use crate::session::looks_like_jwt;
use crate::store::AuditFilter;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(404, "Not found")
    }

    pub fn audit_unavailable() -> ApiError {
        ApiError::new(503, "Audit log unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// So page handlers, which answer `Result<Response, Response>`, can use `?` on API errors.
impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        e.into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "Method not allowed on this path; see `tokenledger routes`",
    )
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and both projections have reached the head read at the
/// start of the check (waiting up to two seconds for them).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let head = match state.store.head().await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            return ApiError::new(503, "Database unavailable").into_response();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let tokens = state.cache.position();
        let audit = state.audit_checkpoint().await.unwrap_or(0);
        if tokens >= head.position && audit >= head.position {
            return Json(json!({
                "status": "ready",
                "head": head.position,
                "projections": {"tokens": tokens, "audit_logs": audit},
            }))
            .into_response();
        }
        if Instant::now() >= deadline {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": "Projections are catching up",
                    "head": head.position,
                    "projections": {"tokens": tokens, "audit_logs": audit},
                })),
            )
                .into_response();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The bearer credential, if any. `Ok(None)`: no Authorization header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request("Authorization header is not valid text; expected Bearer <token>")
    })?;
    let mut parts = text.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let credential = parts.next().map(str::trim).unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::new(
            401,
            "Unsupported Authorization scheme; expected Bearer <token>",
        ));
    }
    if credential.is_empty() {
        return Ok(None);
    }
    Ok(Some(credential))
}

/// The client address: the socket's, or with `TRUST_PROXY=true` the last entry of
/// `X-Forwarded-For` (the one the trusted proxy added).
fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    if state.switches.trust_proxy
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return ip.to_string();
    }
    peer.ip().to_string()
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).map(|v| {
        let text = String::from_utf8_lossy(v.as_bytes());
        text.chars().take(256).collect()
    })
}

/// Require the body's `Content-Type` to be `mime` (parameters such as `charset` aside).
pub(crate) fn require_content_type(headers: &HeaderMap, mime: &str) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(415, format!("Content-Type must be {mime}")))
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    require_content_type(headers, "application/json")
}

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                413,
                format!("Request body is larger than the limit of {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::new(
                rejection.status().as_u16(),
                "Request body could not be read",
            )
        }
    })
}

/// Parse a JSON object body with messages that never echo its values.
pub(crate) fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected data",
                serde_json::error::Category::Io => "read error",
            }
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("Body must be a JSON object")),
    }
}

/// Record a use of a known token and answer: the event is durable before this returns
/// `Ok`. A denial is recorded too, and comes back as the refusal to answer with.
async fn admit(state: &AppState, row: &TokenRow, attempt: &UseAttempt) -> Result<(), ApiError> {
    match record(state, row, attempt).await? {
        UseDecision::Allowed(_) => Ok(()),
        UseDecision::Denied(denied) => Err(refused(
            state,
            &Refusal::Denied {
                reason: denied.reason,
                required_any: attempt.required_any.clone(),
            },
        )),
    }
}

/// Decide and durably record a use of a known token, and fold the event into this node's
/// token projection; a failed append is 503 `Audit log unavailable`.
async fn record(
    state: &AppState,
    row: &TokenRow,
    attempt: &UseAttempt,
) -> Result<UseDecision, ApiError> {
    let (decision, event) = state.ledger.record_use(row, attempt).await.map_err(|e| {
        tracing::error!(error = %e, token_id = %row.id, "use could not be recorded");
        ApiError::audit_unavailable()
    })?;
    if let Err(e) = state.cache.apply(std::slice::from_ref(&event)) {
        tracing::warn!(error = %e, "token projection could not fold a use");
    }
    Ok(decision)
}

fn refused(state: &AppState, refusal: &Refusal) -> ApiError {
    let (status, message) = refusal.answer(state.ledger.settings().environment);
    ApiError::new(status, message)
}

/// Find the token a bearer credential names (no event yet).
fn presented(state: &AppState, headers: &HeaderMap) -> Result<TokenRow, ApiError> {
    let settings = state.ledger.settings();
    let credential =
        bearer(headers)?.ok_or_else(|| refused(state, &Refusal::MissingCredentials))?;
    identify(
        &state.cache,
        credential,
        &settings.prefix,
        settings.environment,
    )
    .map_err(|r| refused(state, &r))
}

struct Call<'a> {
    state: &'a AppState,
    ip: String,
    method: Method,
    path: String,
    user_agent: Option<String>,
}

impl<'a> Call<'a> {
    fn new(
        state: &'a AppState,
        peer: SocketAddr,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Call<'a> {
        Call {
            state,
            ip: client_ip(state, peer, headers),
            method,
            path: uri.path().to_owned(),
            user_agent: user_agent(headers),
        }
    }

    fn attempt(&self, required_any: Vec<String>, command: Option<String>) -> UseAttempt {
        UseAttempt {
            required_any,
            server_environment: self.state.ledger.settings().environment,
            ip: Some(self.ip.clone()),
            method: self.method.to_string(),
            path: self.path.clone(),
            command,
            user_agent: self.user_agent.clone(),
        }
    }

    /// Refuse (and record) a known token that is unusable whatever it asks for: wrong
    /// environment, revoked or expired.
    async fn refuse_unusable(&self, row: &TokenRow) -> Result<(), ApiError> {
        let attempt = self.attempt(Vec::new(), None);
        match decide_use(row, &attempt, self.state.ledger.now()) {
            UseDecision::Allowed(_) => Ok(()),
            UseDecision::Denied(_) => admit(self.state, row, &attempt).await,
        }
    }
}

/// `POST /api/admin/console`, in DESIGN's order of checks.
pub async fn console(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.switches.console_enabled {
        return Err(ApiError::not_found());
    }
    if bearer(&headers)?.is_some_and(|c| !looks_like_jwt(c)) && !state.switches.token_auth_enabled {
        return Err(ApiError::new(401, "API token authentication is disabled"));
    }
    let row = presented(&state, &headers)?;
    let call = Call::new(&state, peer, method, &uri, &headers);
    call.refuse_unusable(&row).await?;
    require_json(&headers)?;
    let body = body_bytes(body)?;
    let command = console::parse(&json_object(&body)?)?;
    let spec = command.spec();
    let mut requirements: Vec<&[&str]> = vec![CONSOLE_SCOPES];
    let extra;
    match spec.scope {
        Some("admin") => requirements.push(&["admin"]),
        Some(scope) => {
            extra = [scope, "admin"];
            requirements.push(&extra);
        }
        None => {}
    }
    let required_any = match unmet(&row, &requirements) {
        missing if missing.is_empty() => Vec::new(),
        missing => missing,
    };
    admit(
        &state,
        &row,
        &call.attempt(required_any, Some(spec.name.to_owned())),
    )
    .await?;
    // The use is durable; only now does the command run.
    state
        .metrics
        .console_runs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = console::run(&state, &row, command).await?;
    Ok(Json(json!({"cmd": spec.name, "result": result})).into_response())
}

/// A request to `POST /v1/verify`.
struct VerifyRequest {
    token: String,
    scopes: Vec<String>,
    ip: Option<String>,
    path: Option<String>,
}

fn parse_verify(map: &serde_json::Map<String, Value>) -> Result<VerifyRequest, ApiError> {
    for key in map.keys() {
        if !["token", "scopes", "ip", "path"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unknown field {key:?}; accepted: token, scopes, ip, path"
            )));
        }
    }
    let token = match map.get("token") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(ApiError::bad_request("\"token\" must be a string")),
        None => {
            return Err(ApiError::bad_request(
                "Missing \"token\": the token to check",
            ));
        }
    };
    let scopes = match map.get("scopes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut scopes = Vec::new();
            for item in items {
                let Value::String(s) = item else {
                    return Err(ApiError::bad_request(
                        "\"scopes\" must be an array of strings",
                    ));
                };
                if !KNOWN_SCOPES.contains(&s.as_str()) {
                    let shown = if s.len() <= 32 {
                        format!("{s:?}")
                    } else {
                        "(too long to show)".into()
                    };
                    return Err(ApiError::bad_request(format!(
                        "Unknown scope {shown}; known scopes: {}",
                        KNOWN_SCOPES.join(", ")
                    )));
                }
                scopes.push(s.clone());
            }
            scopes
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "\"scopes\" must be an array of strings",
            ));
        }
    };
    let ip = match map.get("ip") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| ApiError::bad_request("\"ip\" must be an IPv4 or IPv6 address"))?
                .to_string(),
        ),
        Some(_) => return Err(ApiError::bad_request("\"ip\" must be a string")),
    };
    let path = match map.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.starts_with('/') && s.len() <= 2048 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "\"path\" must be a string starting with / of at most 2048 bytes",
            ));
        }
    };
    Ok(VerifyRequest {
        token,
        scopes,
        ip,
        path,
    })
}

/// `POST /v1/verify`: a service asks whether a token may be used, and the use is recorded.
pub async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = presented(&state, &headers)?;
    let call = Call::new(&state, peer, method, &uri, &headers);
    call.refuse_unusable(&caller).await?;
    require_json(&headers)?;
    let body = body_bytes(body)?;
    let req = parse_verify(&json_object(&body)?)?;
    admit(
        &state,
        &caller,
        &call.attempt(unmet(&caller, &[VERIFY_SCOPES]), Some("verify".into())),
    )
    .await?;

    let settings = state.ledger.settings();
    let answer = |code: &str, row: Option<&TokenRow>| {
        Json(json!({
            "valid": code == "VALID",
            "code": code,
            "token_id": row.map(|r| r.id),
            "scopes": row.map(|r| r.scopes.clone()),
            "expires_at": row.map(|r| r.expires_at.to_rfc3339()),
        }))
        .into_response()
    };
    let row = match identify(
        &state.cache,
        &req.token,
        &settings.prefix,
        settings.environment,
    ) {
        Ok(row) => row,
        Err(Refusal::Malformed) => return Ok(answer("MALFORMED", None)),
        Err(Refusal::EnvironmentMismatch) => return Ok(answer("ENV_MISMATCH", None)),
        Err(_) => return Ok(answer("NOT_FOUND", None)),
    };
    let required: Vec<&str> = req.scopes.iter().map(String::as_str).collect();
    let missing = required
        .iter()
        .find(|s| !row.scopes.iter().any(|held| held == *s))
        .map(|s| vec![(*s).to_owned()])
        .unwrap_or_default();
    let attempt = UseAttempt {
        required_any: missing,
        server_environment: settings.environment,
        ip: req.ip,
        method: "VERIFY".into(),
        path: req.path.unwrap_or_else(|| "/v1/verify".into()),
        command: Some(format!("verify by {}", caller.id)),
        user_agent: call.user_agent.clone(),
    };
    let code = match record(&state, &row, &attempt).await? {
        UseDecision::Allowed(_) => "VALID",
        UseDecision::Denied(d) => match d.reason {
            DenyReason::Revoked => "REVOKED",
            DenyReason::Expired => "EXPIRED",
            DenyReason::InsufficientScope => "INSUFFICIENT_SCOPE",
            DenyReason::EnvironmentMismatch => "ENV_MISMATCH",
        },
    };
    Ok(answer(code, Some(&row)))
}

/// Reads shared by console commands and the admin surface.
pub async fn used_rows(
    state: &AppState,
) -> Result<Vec<tokenledger_projections::AuditRow>, ApiError> {
    if let Err(e) = state.store.catch_up_audit().await {
        tracing::warn!(error = %e, "audit view could not catch up");
    }
    state
        .store
        .audit(&AuditFilter {
            action: Some(tokenledger_projections::AuditAction::Used),
            limit: 1_000_000,
            ..AuditFilter::default()
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit view unavailable");
            ApiError::new(503, "Audit view unavailable")
        })
}
