//! Extractors: everything a handler needs from a request, checked once here.
//!
//! - [`AppJson`]: a JSON body into a typed request; a rejection names the field and what is
//!   accepted, and never echoes a value.
//! - [`PageParams`], [`TokenListParams`], [`StaleListParams`], [`AuditParams`]: a list's
//!   page and filters
//!   from the query string; a rejection names the parameter and what is accepted, never the
//!   value.
//! - [`Bearer`]: the credential of exactly one `Authorization: Bearer` header.
//! - [`ClientIp`]: the socket's address, or with `TRUST_PROXY_HOPS=N` the Nth
//!   `X-Forwarded-For` entry from the right.
//! - [`ApiCaller`], [`AdminSession`]: who is calling, put in place by [`apply_policy`] from the
//!   route's row in [`super::policy`]. A handler names one of them; it never checks access.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::admin_page;
use super::error::ApiError;
use super::policy::{self, Access, Answer};
use super::state::AppState;
use crate::app::audit::{
    EmptyWindow, IP_FORMS, MAX_FILTER_TEXT, TIME_FORMS, TimeSpec, action_names, check_windows,
    parse_action, parse_ip_filter,
};
use crate::app::{
    AS_OF_FORMS, AsOf, AuditQuery, MAX_NAME_PREFIX, MAX_PAGE, MAX_TOKEN_PAGE, Refusal, TokenCursor,
    TokenQuery, parse_environment, parse_status, status_names,
};
use crate::lifecycle::UseAttempt;
use crate::scope::Scope;
use crate::session::{Session, looks_like_jwt};
use crate::text::shown;
use crate::token_entry::TokenEntry;

// ----- JSON bodies -----

/// A JSON body of type `T`. An empty body reads as `{}`, so that a request whose fields are
/// all optional may send none; anything else must be `application/json`.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = content_type_is(req.headers(), "application/json");
        let bytes = body_bytes(Bytes::from_request(req, state).await)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse_json(b"{}").map(AppJson);
        }
        if !json_type {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        parse_json(&bytes).map(AppJson)
    }
}

/// Whether the `Content-Type` is `mime` (parameters such as `charset` aside).
pub fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
}

/// A body read under the limit, or the answer to give.
pub fn body_bytes(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BodyUnreadable
        }
    })
}

/// Deserialize `bytes`, naming the field of any failure and what it accepts.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from an array too; every body here is an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::BadRequest("Body must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_rejection(&safe_path(e.path()), e.inner()))?;
    de.end().map_err(|e| json_rejection(".", &e))?;
    Ok(value)
}

/// Deserialize a body that must be a JSON array (of `shape`, for the message), naming the
/// element and field of any failure and what it accepts, never a value.
pub fn parse_json_array<T: DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    let not_array = || ApiError::BadRequest(format!("Body must be a JSON array of {shape}"));
    if bytes.trim_ascii_start().first() != Some(&b'[') {
        return Err(not_array());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_rejection(&safe_path(e.path()), e.inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| json_rejection(".", &e)));
    match value {
        Err(ApiError::BadRequest(m)) if m == "Body must be a JSON object" => Err(not_array()),
        other => other,
    }
}

/// Deserialize part of a body already read as a value (`what` says which part).
pub fn from_value<T: DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        match json_rejection(&safe_path(e.path()), e.inner()) {
            ApiError::BadRequest(m) => ApiError::BadRequest(format!("{what}: {m}")),
            other => other,
        }
    })
}

/// The path to the failing value, with any key that is not a short plain name left out (a
/// key is input too). An unknown field is the last key of its own path: it is named, when
/// safe, by the message instead.
fn safe_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = key.len() <= 32 && key.chars().all(|c| c.is_ascii_graphic());
                out.push_str(if plain { key } else { "(value not shown)" });
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

fn json_rejection(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let at = || format!("Invalid JSON at line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => ApiError::BadRequest(format!("{}: unexpected end of input", at())),
        Category::Syntax => {
            // serde_json names these two only in its message text.
            let message = e.to_string();
            let what = if message.starts_with("number out of range") {
                "number out of range"
            } else if message.starts_with("recursion limit exceeded") {
                "nesting too deep (at most 128 levels)"
            } else {
                "syntax error"
            };
            ApiError::BadRequest(format!("{}: {what}", at()))
        }
        Category::Io => ApiError::BodyUnreadable,
        Category::Data => ApiError::BadRequest(data_error(path, &without_position(e))),
    }
}

/// serde_json's message without the " at line L column C" it appends when it has a position
/// (a value's own text may hold those words, so the suffix is cut exactly).
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(bare) if e.line() > 0 => bare.to_owned(),
        _ => message,
    }
}

/// serde's data errors, rewritten so no value of the input appears: "invalid type: string
/// \"...\", expected u32" keeps only what was expected; an unknown field is named only when
/// it is short and plain.
fn data_error(path: &str, message: &str) -> String {
    // The last ", expected ": what comes before it may be input, which can hold those words.
    let expected = message
        .rfind(", expected ")
        .map(|i| &message[i + ", expected ".len()..]);
    let root = path.is_empty() || path == ".";
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde ends the message with "`, there are no fields" or "`, expected ...": the name
        // before that may hold backticks, and those very words, too.
        let (name, accepted) = if let Some(name) = rest.strip_suffix("`, there are no fields") {
            (name, "; accepted: none".to_owned())
        } else if let Some(i) = rest.rfind("`, expected ") {
            let e = &rest[i + "`, expected ".len()..];
            let accepted = e.replace('`', "").replace("one of ", "");
            (&rest[..i], format!("; accepted: {accepted}"))
        } else {
            (rest, String::new())
        };
        let shown = shown(name);
        // The path ends at the unknown field itself; where it was is the path before it.
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        let at = if parent.is_empty() {
            String::new()
        } else {
            format!(" in \"{parent}\"")
        };
        return format!("Unknown field {shown}{at}{accepted}");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let full = if root {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        return format!("Missing \"{full}\"");
    }
    let is_shape = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .any(|p| message.starts_with(p));
    match (is_shape, expected) {
        (true, Some(_)) if root => "Body must be a JSON object".to_owned(),
        (true, Some(expected)) => {
            let expected = expected.replace('`', "");
            format!("\"{path}\" must be {}", article(&expected))
        }
        // Our own deserializers' messages (a scope, a duration) never contain the input in
        // full; they say what is accepted.
        _ if root => message.to_owned(),
        _ => format!("\"{path}\": {message}"),
    }
}

/// serde's "a string" / "u32" / "struct X" as a reader would say it.
fn article(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number of at least 0".to_owned(),
        e if e.starts_with("struct ") || e == "a map" => "a JSON object".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a boolean" => "true or false".to_owned(),
        e => e.to_owned(),
    }
}

// ----- pages -----

/// A page of a list: `?limit=N&after=P&before=P&order=newest_first|oldest_first`.
#[derive(Clone, Debug, Default)]
pub struct PageParams {
    pub limit: Option<usize>,
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub newest_first: Option<bool>,
}

impl PageParams {
    const ACCEPTED: &str = "limit, after, before, order";

    pub fn parse(query: Option<&str>) -> Result<PageParams, ApiError> {
        let mut p = PageParams::default();
        let number = |key: &str, value: &str| {
            value.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "\"{key}\" must be a whole number (a log position or a page size)"
                ))
            })
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "limit" => match number("limit", &value)? {
                    0 => {
                        return Err(ApiError::BadRequest("\"limit\" must be at least 1".into()));
                    }
                    n => p.limit = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                },
                "after" => p.after = Some(number("after", &value)?),
                "before" => p.before = Some(number("before", &value)?),
                "order" => {
                    p.newest_first = Some(match value.as_ref() {
                        "newest_first" => true,
                        "oldest_first" => false,
                        _ => {
                            return Err(ApiError::BadRequest(
                                "\"order\" must be newest_first or oldest_first".into(),
                            ));
                        }
                    });
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "Unknown query parameter {}; accepted: {}",
                        shown(other),
                        Self::ACCEPTED
                    )));
                }
            }
        }
        Ok(p)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        PageParams::parse(parts.uri.query())
    }
}

/// The token list's query: `?status=&scope=&environment=&name_prefix=&cursor=&limit=`. An
/// empty value is the same as none (the page's filter form sends every field); a parameter
/// given twice is refused rather than one of them silently ignored.
#[derive(Clone, Debug, Default)]
pub struct TokenListParams(pub TokenQuery, pub Option<AsOf>);

/// A query string's pairs, each key at most once, with empty values left out; `accepted`
/// names the parameters for the message about any other.
fn query_pairs(
    query: Option<&str>,
    accepted: &'static [&'static str],
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut pairs: Vec<(&'static str, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let Some(known) = accepted.iter().find(|k| **k == key.as_ref()) else {
            return Err(ApiError::BadRequest(format!(
                "Unknown query parameter {}; accepted: {}",
                shown(&key),
                accepted.join(", ")
            )));
        };
        if pairs.iter().any(|(k, _)| k == known) {
            return Err(ApiError::BadRequest(format!(
                "\"{known}\" is given more than once; give it at most once"
            )));
        }
        if !value.is_empty() {
            pairs.push((known, value.into_owned()));
        }
    }
    Ok(pairs)
}

fn cursor_param(value: &str) -> Result<TokenCursor, ApiError> {
    TokenCursor::parse(value).map_err(|e| ApiError::BadRequest(format!("\"cursor\" {e}")))
}

fn token_limit_param(value: &str) -> Result<usize, ApiError> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(ApiError::BadRequest(format!(
            "\"limit\" must be a whole number of at least 1 (a page size; more than {MAX_TOKEN_PAGE} is lowered to {MAX_TOKEN_PAGE})"
        ))),
    }
}

impl TokenListParams {
    const ACCEPTED: &[&str] = &[
        "status",
        "scope",
        "environment",
        "name_prefix",
        "cursor",
        "limit",
        "as_of",
    ];

    pub fn parse(query: Option<&str>) -> Result<TokenListParams, ApiError> {
        let mut q = TokenQuery::default();
        let mut as_of = None;
        for (key, value) in query_pairs(query, Self::ACCEPTED)? {
            match key {
                "as_of" => {
                    as_of = Some(AsOf::parse(&value).map_err(|_| {
                        ApiError::BadRequest(format!(
                            "\"as_of\" is not a point in time; {AS_OF_FORMS}"
                        ))
                    })?);
                }
                "status" => {
                    q.status = Some(parse_status(&value).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "\"status\" must be one of {}",
                            status_names()
                        ))
                    })?);
                }
                "scope" => {
                    q.scope = Some(value.parse::<Scope>().map_err(|_| {
                        ApiError::BadRequest(format!("\"scope\" must be one of {}", Scope::known()))
                    })?);
                }
                "environment" => {
                    q.environment = Some(parse_environment(&value).ok_or_else(|| {
                        ApiError::BadRequest("\"environment\" must be live or test".into())
                    })?);
                }
                "name_prefix" => {
                    if value.chars().count() > MAX_NAME_PREFIX {
                        return Err(ApiError::BadRequest(format!(
                            "\"name_prefix\" must be at most {MAX_NAME_PREFIX} characters (the start of a token name)"
                        )));
                    }
                    q.name_prefix = Some(value);
                }
                "cursor" => q.after = Some(cursor_param(&value)?),
                _ => q.limit = Some(token_limit_param(&value)?),
            }
        }
        let filtered = q.status.is_some()
            || q.scope.is_some()
            || q.environment.is_some()
            || q.name_prefix.is_some();
        if as_of.is_some() && filtered {
            return Err(ApiError::BadRequest(
                "\"as_of\" combines with \"cursor\" and \"limit\" only; the table as it was lists every token".into(),
            ));
        }
        Ok(TokenListParams(q, as_of))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TokenListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        TokenListParams::parse(parts.uri.query())
    }
}

/// The monitoring list's page: `?cursor=&limit=`.
#[derive(Clone, Debug, Default)]
pub struct StaleListParams {
    pub after: Option<TokenCursor>,
    pub limit: Option<usize>,
}

impl StaleListParams {
    const ACCEPTED: &[&str] = &["cursor", "limit"];

    pub fn parse(query: Option<&str>) -> Result<StaleListParams, ApiError> {
        let mut p = StaleListParams::default();
        for (key, value) in query_pairs(query, Self::ACCEPTED)? {
            match key {
                "cursor" => p.after = Some(cursor_param(&value)?),
                _ => p.limit = Some(token_limit_param(&value)?),
            }
        }
        Ok(p)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StaleListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        StaleListParams::parse(parts.uri.query())
    }
}

/// The audit view's query: `?token=&action=&actor=&ip=&path_prefix=&since=&until=
/// &from_position=&to_position=&after=&before=&order=&limit=`. As for the token list, an
/// empty value is the same as none and a parameter given twice is refused. Times are kept as
/// given until [`AuditParams::resolve`] reads them at the service's `now`.
#[derive(Clone, Debug, Default)]
pub struct AuditParams {
    query: AuditQuery,
    since: Option<TimeSpec>,
    until: Option<TimeSpec>,
}

impl AuditParams {
    const ACCEPTED: &[&str] = &[
        "token",
        "action",
        "actor",
        "ip",
        "path_prefix",
        "since",
        "until",
        "from_position",
        "to_position",
        "after",
        "before",
        "order",
        "limit",
    ];

    pub fn parse(query: Option<&str>) -> Result<AuditParams, ApiError> {
        let bad = |text: String| ApiError::BadRequest(text);
        let position = |key: &str, value: &str| {
            value.parse::<u64>().map_err(|_| {
                bad(format!(
                    "\"{key}\" must be a whole number (a log position; 1 is the first event)"
                ))
            })
        };
        let text = |key: &str, value: String, what: &str| {
            if value.chars().count() > MAX_FILTER_TEXT {
                return Err(bad(format!(
                    "\"{key}\" must be at most {MAX_FILTER_TEXT} characters ({what})"
                )));
            }
            Ok(value)
        };
        let time = |key: &str, value: &str| {
            TimeSpec::parse(value)
                .ok_or_else(|| bad(format!("\"{key}\" must be a time: {TIME_FORMS}")))
        };
        let mut p = AuditParams::default();
        for (key, value) in query_pairs(query, Self::ACCEPTED)? {
            let q = &mut p.query;
            match key {
                "token" => {
                    q.token_id = Some(
                        uuid::Uuid::parse_str(value.trim())
                            .map_err(|_| bad("\"token\" must be a token id (a UUID)".into()))?,
                    );
                }
                "action" => {
                    q.action = Some(parse_action(&value).ok_or_else(|| {
                        bad(format!(
                            "\"action\" must be one of {} (or created, used, denied, revoked, rotated)",
                            action_names()
                        ))
                    })?);
                }
                "actor" => {
                    q.actor = Some(text(key, value, "an actor like cli:alice or token:ID")?);
                }
                "ip" => {
                    q.ip = Some(
                        parse_ip_filter(&value)
                            .ok_or_else(|| bad(format!("\"ip\" must be {IP_FORMS}")))?,
                    );
                }
                "path_prefix" => {
                    q.path_prefix = Some(text(key, value, "the start of a request path")?);
                }
                "since" => p.since = Some(time(key, &value)?),
                "until" => p.until = Some(time(key, &value)?),
                "from_position" => q.from_position = Some(position(key, &value)?),
                "to_position" => q.to_position = Some(position(key, &value)?),
                "after" => q.after = Some(position(key, &value)?),
                "before" => q.before = Some(position(key, &value)?),
                "order" => {
                    q.newest_first = match value.as_str() {
                        "newest_first" => true,
                        "oldest_first" => false,
                        _ => {
                            return Err(bad(
                                "\"order\" must be newest_first or oldest_first".into()
                            ));
                        }
                    };
                }
                _ => match value.parse::<u64>() {
                    Ok(n) if n >= 1 => q.limit = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                    _ => {
                        return Err(bad(format!(
                            "\"limit\" must be a whole number of at least 1 (a page size; more than {MAX_PAGE} is lowered to {MAX_PAGE})"
                        )));
                    }
                },
            }
        }
        Ok(p)
    }

    /// The query, its times read at `now`; a window that cannot hold a row is refused.
    pub fn resolve(self, now: tokenledger_events::Timestamp) -> Result<AuditQuery, ApiError> {
        let query = AuditQuery {
            since: self.since.map(|t| t.resolve(now)),
            until: self.until.map(|t| t.resolve(now)),
            ..self.query
        };
        match check_windows(&query) {
            Ok(()) => Ok(query),
            Err(EmptyWindow::Time { .. }) => Err(ApiError::BadRequest(
                "\"until\" is before \"since\"; give an until at or after since".into(),
            )),
            Err(EmptyWindow::Positions { .. }) => Err(ApiError::BadRequest(
                "\"from_position\" is past \"to_position\"; give a from_position at most to_position"
                    .into(),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        AuditParams::parse(parts.uri.query())
    }
}

/// The `{id}` of a route: a token id. A malformed one, UTF-8 or not, is a JSON 400.
pub struct TokenId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for TokenId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest("Token id must be a UUID".into());
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| bad())?;
        uuid::Uuid::parse_str(&raw).map(TokenId).map_err(|_| bad())
    }
}

// ----- credentials -----

/// The credential of the request's one `Authorization: Bearer` header. Its `Debug` never
/// shows it.
pub struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Bearer {
    /// `Ok(None)`: no header, or an empty credential. More than one header is refused, so
    /// that no layer in front of this one can see a different credential than this one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Bearer>, ApiError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::DuplicateAuthorization);
        }
        let text = value.to_str().map_err(|_| {
            ApiError::BadRequest(
                "Authorization header is not valid text; expected Bearer <token>".into(),
            )
        })?;
        let (scheme, credential) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::UnsupportedScheme);
        }
        let credential = credential.trim();
        Ok((!credential.is_empty()).then(|| Bearer(credential.to_owned())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A Clerk session rather than an API token.
    pub fn is_session(&self) -> bool {
        looks_like_jwt(&self.0)
    }
}

/// The client's address: the socket's, or with `TRUST_PROXY_HOPS=N` the Nth entry from the
/// right of `X-Forwarded-For` (every such header, in order, as one list): each proxy appends
/// the address it was reached from, so the N rightmost entries are your N proxies' and
/// anything left of them is the client's to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    fn of(parts: &Parts, hops: u8) -> ClientIp {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        if hops == 0 {
            return ClientIp(peer);
        }
        match forwarded_for(&parts.headers, hops) {
            Some(ip) => ClientIp(ip),
            None => {
                // Never a guess from further left: that part is the client's.
                tracing::debug!(
                    hops,
                    "X-Forwarded-For has no address at TRUST_PROXY_HOPS; using the socket's"
                );
                ClientIp(peer)
            }
        }
    }
}

/// The `hops`th `X-Forwarded-For` entry from the right, if it is an address: `1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`. A header that is not
/// text makes the count unknowable, so it gives `None` too.
fn forwarded_for(headers: &HeaderMap, hops: u8) -> Option<IpAddr> {
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(value.to_str().ok()?.split(','));
    }
    let entry = entries
        .iter()
        .rev()
        .nth(usize::from(hops).checked_sub(1)?)?
        .trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let bare = entry.strip_prefix('[')?.strip_suffix(']')?;
            bare.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        })
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ClientIp::of(parts, state.switches.trust_proxy_hops))
    }
}

/// Where a call came from and what it asked for: what its recorded use says.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub ip: ClientIp,
    pub method: Method,
    pub path: String,
    pub user_agent: Option<String>,
}

impl CallContext {
    fn of(parts: &Parts, ip: IpAddr) -> CallContext {
        CallContext {
            ip: ClientIp(ip),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            user_agent: parts.headers.get(header::USER_AGENT).map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                text.chars().take(256).collect()
            }),
        }
    }

    /// The use this call makes of a token, needing any one of `required_any`.
    pub fn attempt(
        &self,
        state: &AppState,
        required_any: Vec<Scope>,
        command: Option<String>,
    ) -> UseAttempt {
        UseAttempt {
            required_any,
            server_environment: state.ledger.settings().environment,
            ip: Some(self.ip.0.to_string()),
            method: self.method.to_string(),
            path: self.path.clone(),
            command,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// An API token that holds the route's scopes and is usable now. A refusal on the way here
/// was recorded as a denied use; an allowed use is recorded by the handler, which knows what
/// the call does.
#[derive(Clone, Debug)]
pub struct ApiCaller {
    pub token: TokenEntry,
    pub call: CallContext,
}

/// A verified admin session.
#[derive(Clone, Debug)]
pub struct AdminSession(pub Session);

/// Both are put in place by [`apply_policy`]; a handler that names one on a route whose
/// policy does not provide it is a wiring mistake, answered as an internal error.
macro_rules! placed_by_policy {
    ($t:ty) => {
        impl FromRequestParts<AppState> for $t {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
                parts.extensions.get::<$t>().cloned().ok_or_else(|| {
                    tracing::error!(
                        path = parts.uri.path(),
                        "handler needs {} but its route's policy does not provide it",
                        stringify!($t)
                    );
                    ApiError::Internal
                })
            }
        }
    };
}

/// Who called a route that takes an admin's session or an API token
/// ([`Access::SessionOrApiToken`]).
#[derive(Clone, Debug)]
pub enum Caller {
    Token(ApiCaller),
    Session(AdminSession),
}

placed_by_policy!(ApiCaller);
placed_by_policy!(AdminSession);
placed_by_policy!(Caller);

// ----- the policy, applied -----

/// The route layer: look the matched route up in the policy table, answer 404 while its
/// switch is off, and admit only the callers its access column admits.
pub async fn apply_policy(
    State(state): State<AppState>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let Some(route) = policy::route(matched.as_str()) else {
        tracing::error!(path = matched.as_str(), "a routed path has no policy");
        return ApiError::Internal.into_response();
    };
    if let Some(slot) = request.extensions().get::<super::metrics::RouteSlot>() {
        slot.set(route.path);
    }
    if route.switch.is_some_and(|s| !s.is_on(&state.switches)) {
        return ApiError::NotFound.into_response();
    }
    let (mut parts, body) = request.into_parts();
    if route.access == Access::Public {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let ip = ClientIp::of(&parts, state.switches.trust_proxy_hops).0;
    let credential = match route.access {
        Access::ApiToken { .. } => "api_token",
        Access::SessionOrApiToken { .. } if api_token_presented(&parts) => "api_token",
        Access::Session | Access::SessionOrApiToken { .. } | Access::Public => "session",
    };
    let admitted = match state.guard.admit(ip) {
        Err(e) => Err(e),
        Ok(()) => match route.access {
            Access::ApiToken {
                any_of,
                tokens_switch,
            } => api_caller(&state, &parts, ip, any_of, tokens_switch)
                .await
                .map(|caller| {
                    parts.extensions.insert(caller);
                }),
            Access::SessionOrApiToken { any_of } if credential == "api_token" => {
                api_caller(&state, &parts, ip, any_of, None)
                    .await
                    .map(|caller| {
                        parts.extensions.insert(Caller::Token(caller));
                    })
            }
            Access::SessionOrApiToken { .. } => {
                let has_session = parts.headers.contains_key(header::AUTHORIZATION)
                    || session_cookie(&parts.headers).is_some();
                if has_session {
                    admin_session(&state, &parts).await.map(|session| {
                        parts
                            .extensions
                            .insert(Caller::Session(AdminSession(session)));
                    })
                } else {
                    Err(Refusal::MissingCredentials.into())
                }
            }
            Access::Session | Access::Public => {
                admin_session(&state, &parts).await.map(|session| {
                    parts.extensions.insert(AdminSession(session));
                })
            }
        },
    };
    match admitted {
        Ok(()) => {
            state.metrics.authentication(credential, true, "ok");
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => {
            state
                .metrics
                .authentication(credential, false, e.auth_reason());
            let e = state.guard.refused(ip, parts.uri.path(), e, &state.metrics);
            if matches!(e, ApiError::TooManyFailures { .. }) {
                state.metrics.rate_limited();
            }
            match route.answer {
                Answer::Json => e.into_response(),
                Answer::Html => admin_page::refusal(e),
            }
        }
    }
}

/// Whether the request's one bearer credential is an API token rather than a session (a
/// malformed one counts as a token: it is refused as one).
fn api_token_presented(parts: &Parts) -> bool {
    matches!(Bearer::from_headers(&parts.headers), Ok(Some(b)) if !b.is_session())
}

/// Authenticate an API token in the authentication table's order.
async fn api_caller(
    state: &AppState,
    parts: &Parts,
    ip: IpAddr,
    any_of: &'static [Scope],
    tokens_switch: Option<policy::Switch>,
) -> Result<ApiCaller, ApiError> {
    let bearer = Bearer::from_headers(&parts.headers)?;
    let tokens_off = tokens_switch.is_some_and(|s| !s.is_on(&state.switches));
    if tokens_off && bearer.as_ref().is_some_and(|b| !b.is_session()) {
        return Err(ApiError::TokenAuthDisabled);
    }
    let bearer = bearer.ok_or(Refusal::MissingCredentials)?;
    let token = state.ledger.identify(bearer.expose())?;
    let call = CallContext::of(parts, ip);
    state
        .ledger
        .screen(&token, &call.attempt(state, any_of.to_vec(), None))
        .await?;
    Ok(ApiCaller { token, call })
}

/// Where the session came from; only a cookie needs the cross-site check.
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

/// A verified admin session, or the answer to give: API tokens are refused outright, a
/// cookie-authenticated change needs a same-origin `Origin`.
async fn admin_session(state: &AppState, parts: &Parts) -> Result<Session, ApiError> {
    let bearer = Bearer::from_headers(&parts.headers)?;
    if bearer.as_ref().is_some_and(|b| !b.is_session()) {
        return Err(ApiError::ApiTokensRefused);
    }
    let Some(verifier) = state.sessions.as_ref().filter(|v| v.is_configured()) else {
        return Err(ApiError::SignInNotConfigured);
    };
    let (jwt, source) = match bearer {
        Some(b) => (b.0, Source::Header),
        None => (
            session_cookie(&parts.headers).ok_or(ApiError::SignInRequired)?,
            Source::Cookie,
        ),
    };
    let session = verifier.verify(&jwt, state.ledger.now()).await?;
    if !session.is_admin {
        return Err(crate::session::SessionError::NotAdmin.into());
    }
    let changes_state = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if source == Source::Cookie && changes_state && !same_origin(&parts.headers) {
        return Err(ApiError::CrossSite);
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only the rejections are tested")]
    struct Body {
        token: String,
        #[serde(default)]
        scopes: Vec<Scope>,
        #[serde(default)]
        days: Option<u32>,
        #[serde(default)]
        meta: Option<serde_json::Value>,
    }

    fn rejection(body: &str) -> String {
        parse_json::<Body>(body.as_bytes())
            .expect_err(body)
            .to_string()
    }

    #[test]
    fn rejections_name_the_field_and_never_echo_the_value() {
        let secret = "tl_test_4f9aQ2hB7xK1mN3pR5sT7vW9yZ0bD2fH4jL6nP8rT0vX2zB4dF6";
        let cases = [
            (r#"{"token": 5}"#.to_owned(), "\"token\" must be a string"),
            (
                format!(r#"{{"token": "x", "days": "{secret}"}}"#),
                "\"days\" must be a whole number",
            ),
            (
                format!(r#"{{"token": "x", "scopes": ["{secret}"]}}"#),
                "\"scopes[0]\": unknown scope (value not shown); known scopes: admin",
            ),
            (
                format!(r#"{{"token": "x", "{secret}": 1}}"#),
                "Unknown field (value not shown); accepted: token, scopes, days, meta",
            ),
            (
                r#"{"token": "x", "extra": 1}"#.to_owned(),
                "Unknown field \"extra\"; accepted: token, scopes, days, meta",
            ),
            (r#"{"scopes": []}"#.to_owned(), "Missing \"token\""),
            (format!(r#"["{secret}"]"#), "Body must be a JSON object"),
            (
                format!(r#"{{"token": "{secret}""#),
                "Invalid JSON at line 1 column",
            ),
            (
                r#"{"token": "x"} trailing"#.to_owned(),
                "Invalid JSON at line 1 column",
            ),
        ];
        let deep = rejection(&format!("{{\"meta\": {}", "[".repeat(10_000)));
        assert!(
            deep.ends_with("nesting too deep (at most 128 levels)"),
            "{deep}"
        );
        for (body, expected) in cases {
            let got = rejection(&body);
            assert!(got.starts_with(expected), "{body}: {got}");
            assert!(!got.contains(secret), "{body}: {got}");
        }
    }

    #[test]
    fn the_forwarded_address_is_counted_from_the_right_in_every_form() {
        let mut headers = HeaderMap::new();
        for value in [
            "198.51.100.1, not-an-ip",
            "[2001:db8::1]:443,2001:db8::2",
            " [2001:db8::3] , 203.0.113.4:5678",
        ] {
            headers.append("x-forwarded-for", value.parse().expect("value"));
        }
        let at = |hops| forwarded_for(&headers, hops).map(|ip| ip.to_string());
        assert_eq!(at(1).as_deref(), Some("203.0.113.4"));
        assert_eq!(at(2).as_deref(), Some("2001:db8::3"));
        assert_eq!(at(3).as_deref(), Some("2001:db8::2"));
        assert_eq!(at(4).as_deref(), Some("2001:db8::1"));
        assert_eq!(at(5), None, "not an address: no fallback further left");
        assert_eq!(at(6).as_deref(), Some("198.51.100.1"));
        assert_eq!(at(7), None, "past the list");
        assert_eq!(at(0), None);
        assert_eq!(forwarded_for(&HeaderMap::new(), 1), None);
    }

    #[test]
    fn only_one_authorization_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer a".parse().expect("value"));
        assert_eq!(
            Bearer::from_headers(&headers).expect("one").map(|b| b.0),
            Some("a".to_owned())
        );
        headers.append(header::AUTHORIZATION, "Bearer b".parse().expect("value"));
        assert!(matches!(
            Bearer::from_headers(&headers),
            Err(ApiError::DuplicateAuthorization)
        ));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert!(matches!(
            Bearer::from_headers(&basic),
            Err(ApiError::UnsupportedScheme)
        ));
        assert_eq!(
            format!("{:?}", Bearer("tl_secret".into())),
            "Bearer(<redacted>)"
        );
    }
}
