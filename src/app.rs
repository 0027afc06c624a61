//! The HTTP service: [`Application::build`] opens and verifies the log, then binds;
//! [`Application::run_until_stopped`] serves until SIGINT or SIGTERM.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokenledger_events::EventLog;
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::store::{self, Store, StoreError};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
}

/// The service, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl Application {
    /// Open the log (applying pending migrations), verify its head, and bind. Nothing is
    /// served from a log whose head does not verify.
    pub async fn build(config: &ServeConfig) -> Result<Application, StartError> {
        let store = Store::open(&config.database_url).await?;
        let head = store::verify_head(&store).await?;
        tracing::info!(
            backend = store.backend(),
            head.position = head.position,
            head.hash = %head.hash,
            "event log head verified"
        );
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        Ok(Application {
            listener,
            state: AppState {
                store: Arc::new(store),
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until SIGINT or SIGTERM, then finish in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "listening");
        axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    }
}

/// The whole router; tests may drive it directly.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.head().await {
        Ok(head) => Json(json!({"status": "ready", "head": head.position})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "Event log unavailable"})),
            )
                .into_response()
        }
    }
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
