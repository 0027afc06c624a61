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
    app.run_until(router, stop).await
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
