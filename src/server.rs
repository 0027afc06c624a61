//! The composition root: an [`Application`] served through the HTTP edge. The one module
//! that knows both halves, so that neither the application layer nor the CLI imports the
//! edge.

use std::future::Future;

use crate::app::Application;
use crate::http;

/// Serve until SIGINT or SIGTERM, then finish in-flight requests.
pub async fn run_until_stopped(app: Application) -> std::io::Result<()> {
    run_until(app, shutdown_signal()).await
}

/// Serve until `stop` completes, then finish in-flight requests.
pub async fn run_until(
    app: Application,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = http::router(app.services());
    let metrics = http::metrics::router(app.services());
    app.run_until(router, metrics, stop).await
}

/// The route policy as `tokenledger routes` prints it.
pub fn routes() -> String {
    http::policy::render()
}

/// The OpenAPI 3.1 document of the JSON API, as `GET /openapi.json` serves it.
pub fn openapi() -> String {
    http::openapi::document()
}

/// What a token holding `scopes` is admitted to, from the route policy: for the incident
/// report the CLI writes.
pub fn admitted(scopes: &[String]) -> crate::app::Admitted {
    http::policy::admitted(scopes)
}

/// The routes that accept API tokens, from the route policy: for `preflight`.
pub fn token_routes() -> Vec<TokenRoute> {
    use http::policy::{Access, ROUTES};
    ROUTES
        .iter()
        .filter_map(|r| match r.access {
            Access::ApiToken {
                any_of,
                tokens_switch,
            } => Some(TokenRoute {
                methods: r.methods,
                path: r.path,
                scopes: any_of.iter().map(ToString::to_string).collect(),
                switches: r
                    .switch
                    .iter()
                    .chain(tokens_switch.iter())
                    .map(|s| s.variable())
                    .collect(),
            }),
            Access::SessionOrApiToken { any_of } => Some(TokenRoute {
                methods: r.methods,
                path: r.path,
                scopes: any_of.iter().map(ToString::to_string).collect(),
                switches: r.switch.iter().map(|s| s.variable()).collect(),
            }),
            _ => None,
        })
        .collect()
}

/// A route that accepts API tokens.
#[derive(Clone, Debug)]
pub struct TokenRoute {
    pub methods: &'static str,
    pub path: &'static str,
    /// Any one of these admits a token.
    pub scopes: Vec<String>,
    /// The switches that must be on for it to take a token.
    pub switches: Vec<&'static str>,
}

/// How many routes the policy declares, and how many of them take only a Clerk session.
pub fn route_counts() -> (usize, usize) {
    use http::policy::{Access, ROUTES};
    let sessions = ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::Session))
        .count();
    (ROUTES.len(), sessions)
}

/// The HTTP edge's own answers that `preflight` expects, from its error type.
pub struct EdgeAnswers {
    /// A bearer token on the console while `ADMIN_API_TOKEN_AUTH_ENABLED` is off.
    pub token_auth_disabled: String,
    /// An API token on a session-only route.
    pub tokens_refused: String,
    /// A session-only route with no sign-in configured.
    pub sign_in_not_configured: String,
}

pub fn edge_answers() -> EdgeAnswers {
    use http::ApiError;
    EdgeAnswers {
        token_auth_disabled: ApiError::TokenAuthDisabled.to_string(),
        tokens_refused: ApiError::ApiTokensRefused.to_string(),
        sign_in_not_configured: ApiError::SignInNotConfigured.to_string(),
    }
}

/// The incident report as the self-contained HTML page `incident --html` writes.
pub fn incident_document(report: &crate::app::Incident) -> String {
    http::incident_document(report)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
