//! The one error type of the HTTP edge. Every variant's text is the exact answer a caller
//! gets as `{"error": "..."}`, and [`ApiError::status`] is the one place a status is chosen.
//! No variant carries request input; an internal failure answers a generic text and the
//! detail goes to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::{LedgerError, QueryError, Refusal};
use crate::lifecycle::DomainError;
use crate::session::{NOT_CONFIGURED, SessionError};

/// Every error answer: `{"error": "..."}`, the text saying what was wrong and what is
/// accepted.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Not found")]
    NotFound,
    /// Nothing to answer with yet at a path that exists.
    #[error("{0}")]
    NothingYet(&'static str),
    #[error("Method not allowed on this path; see `tokenledger routes`")]
    MethodNotAllowed,
    /// Bad input; the text says what was wrong and what is accepted, never echoing secrets.
    #[error("{0}")]
    BadRequest(String),
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("Request body is larger than the limit of {BODY_LIMIT} bytes")]
    PayloadTooLarge,
    /// A body over a route's own limit (the leak report routes take more than the default).
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadOver(usize),
    /// A GitHub secret scanning report whose signature was not accepted.
    #[error(transparent)]
    LeakSignature(crate::app::leaks::SignatureError),
    #[error("Too many leak reports from this caller; retry after {retry_after_secs} s")]
    TooManyReports { retry_after_secs: u64 },
    #[error("Request body could not be read")]
    BodyUnreadable,
    /// `REQUEST_TIMEOUT` passed before the request was answered (a slow body, most likely).
    #[error("Request timed out")]
    RequestTimeout,
    #[error("Send exactly one Authorization header")]
    DuplicateAuthorization,
    #[error("Unsupported Authorization scheme; expected Bearer <token>")]
    UnsupportedScheme,
    #[error("API token authentication is disabled")]
    TokenAuthDisabled,
    /// An API token presented where only a person's session is accepted.
    #[error("API tokens are not accepted on this endpoint")]
    ApiTokensRefused,
    #[error("Sign-in required")]
    SignInRequired,
    #[error(
        "Cross-site request refused: a state-changing request needs a same-origin Origin header"
    )]
    CrossSite,
    #[error("{NOT_CONFIGURED}")]
    SignInNotConfigured,
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A presented token refused, with the authentication table's exact answer.
    #[error(transparent)]
    Refused(Refusal),
    /// A lifecycle command refused (bad input or the token's state).
    #[error(transparent)]
    Domain(DomainError),
    #[error("No token with id {0}")]
    UnknownToken(uuid::Uuid),
    #[error("Token {0} kept changing while this request decided; try again")]
    Busy(uuid::Uuid),
    #[error("Too many failed attempts; retry after {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    /// The use could not be recorded, so nothing ran.
    #[error("Audit log unavailable")]
    AuditUnavailable,
    /// A read could not be answered; the text names the view.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error("Internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError as E;
        match self {
            E::NotFound | E::NothingYet(_) | E::UnknownToken(_) => StatusCode::NOT_FOUND,
            E::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            E::BadRequest(_) | E::DuplicateAuthorization => StatusCode::BAD_REQUEST,
            E::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::PayloadTooLarge | E::PayloadOver(_) => StatusCode::PAYLOAD_TOO_LARGE,
            E::LeakSignature(crate::app::leaks::SignatureError::KeysUnavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::LeakSignature(_) => StatusCode::UNAUTHORIZED,
            E::TooManyReports { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::BodyUnreadable => StatusCode::BAD_REQUEST,
            E::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            E::UnsupportedScheme
            | E::TokenAuthDisabled
            | E::ApiTokensRefused
            | E::SignInRequired
            | E::Session(SessionError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            E::Session(SessionError::NotAdmin) | E::CrossSite => StatusCode::FORBIDDEN,
            E::Session(SessionError::Unavailable(_)) | E::SignInNotConfigured => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Refused(Refusal::MissingScope { .. } | Refusal::IpNotAllowed) => {
                StatusCode::FORBIDDEN
            }
            E::Refused(_) => StatusCode::UNAUTHORIZED,
            E::Domain(
                DomainError::AlreadyRevoked(_)
                | DomainError::AlreadyRotated(..)
                | DomainError::Expired(_),
            )
            | E::Busy(_) => StatusCode::CONFLICT,
            E::Domain(_) => StatusCode::BAD_REQUEST,
            E::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::AuditUnavailable | E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// Why an authentication was refused, as the metrics label it: a fixed set of names.
    pub fn auth_reason(&self) -> &'static str {
        use ApiError as E;
        match self {
            E::Refused(Refusal::MissingCredentials) => "missing_credentials",
            E::Refused(Refusal::Malformed) => "malformed",
            E::Refused(Refusal::EnvironmentMismatch { .. }) => "environment_mismatch",
            E::Refused(Refusal::Unknown) => "unknown_token",
            E::Refused(Refusal::Revoked) => "revoked",
            E::Refused(Refusal::Expired) => "expired",
            E::Refused(Refusal::MissingScope { .. }) => "missing_scope",
            E::Refused(Refusal::IpNotAllowed) => "ip_not_allowed",
            E::TokenAuthDisabled => "token_auth_disabled",
            E::DuplicateAuthorization => "duplicate_authorization",
            E::UnsupportedScheme => "unsupported_scheme",
            E::ApiTokensRefused => "api_token_refused",
            E::SignInRequired => "sign_in_required",
            E::SignInNotConfigured => "sign_in_not_configured",
            E::Session(SessionError::Unauthorized(_)) => "session_invalid",
            E::Session(SessionError::NotAdmin) => "not_admin",
            E::Session(SessionError::Unavailable(_)) => "session_keys_unavailable",
            E::CrossSite => "cross_site",
            E::TooManyFailures { .. } => "rate_limited",
            E::AuditUnavailable => "audit_unavailable",
            E::BadRequest(_) => "bad_request",
            _ => "other",
        }
    }
}

/// Marks an answer that was 503 `Audit log unavailable`, for the request metrics.
#[derive(Clone, Copy, Debug)]
pub struct AuditFailure;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // No variant carries input, but a token pasted where a name belongs must not come
        // back even if one ever did.
        let text = crate::token::redact(&self.to_string()).into_owned();
        let mut response = (self.status(), Json(ErrorBody { error: text })).into_response();
        if let ApiError::TooManyFailures { retry_after_secs }
        | ApiError::TooManyReports { retry_after_secs } = self
            && let Ok(value) = axum::http::HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        if matches!(self, ApiError::AuditUnavailable) {
            response.extensions_mut().insert(AuditFailure);
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Refused(r)
    }
}

/// Refusals are the caller's; a failure to write is ours and says only that the log is
/// unavailable (the detail is logged here).
impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Refused(d) => ApiError::Domain(d),
            LedgerError::Denied(r) => ApiError::Refused(r),
            LedgerError::NotFound(id) => ApiError::UnknownToken(id),
            LedgerError::Busy(id) => ApiError::Busy(id),
            LedgerError::Store(_) | LedgerError::Append(_) => {
                tracing::error!(error = %e, "the log refused a write");
                ApiError::AuditUnavailable
            }
            LedgerError::Mint(_) => {
                tracing::error!(error = %e, "no token could be minted");
                ApiError::Internal
            }
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound(id) => ApiError::UnknownToken(id),
            QueryError::BadInput(message) => ApiError::BadRequest(message),
            QueryError::Unavailable { what, ref source } => {
                tracing::error!(error = %source, "{what} unavailable");
                ApiError::Unavailable(what)
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Domain(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn refusals_answer_the_authentication_tables_status_and_text() {
        let cases = [
            (Refusal::MissingCredentials, 401, "Missing credentials"),
            (Refusal::Malformed, 401, "Malformed token"),
            (
                Refusal::EnvironmentMismatch {
                    expected: crate::token::Environment::Live,
                },
                401,
                "Token environment mismatch: expected live",
            ),
            (Refusal::Unknown, 401, "Invalid token"),
            (Refusal::Revoked, 401, "Token has been revoked"),
            (Refusal::Expired, 401, "Token has expired"),
            (
                Refusal::MissingScope {
                    required_any: vec![Scope::ConsoleExec, Scope::Admin],
                },
                403,
                "Missing required scope: console:exec or admin",
            ),
            (
                Refusal::IpNotAllowed,
                403,
                "Client IP not allowed for this token",
            ),
        ];
        for (refusal, status, text) in cases {
            let e = ApiError::from(refusal);
            assert_eq!(e.status().as_u16(), status, "{text}");
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn a_failed_write_answers_audit_unavailable_without_its_detail() {
        let e = ApiError::from(LedgerError::Store(crate::store::StoreError::Db(
            "disk I/O error at /secret/path".into(),
        )));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.to_string(), "Audit log unavailable");
    }
}
