//! The HTTP service: [`Application::build`] opens and verifies the log, loads the token
//! projection and binds; [`Application::run_until_stopped`] serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use tokenledger_events::EventLog;
use tokio::net::TcpListener;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::TokenCache;
use crate::config::{ServeConfig, Switches};
use crate::http::{self, BODY_LIMIT};
use crate::ledger::{Clock, Ledger, SystemClock};
use crate::routes::ROUTES;
use crate::session::{DevKey, SessionVerifier};
use crate::store::{self, Store, StoreError};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub ledger: Arc<Ledger>,
    pub cache: Arc<TokenCache>,
    pub switches: Switches,
    pub metrics: Arc<Metrics>,
    /// Verifies admin sessions; `None` when no sign-in is configured (the admin surface then
    /// answers 503).
    pub sessions: Option<SessionVerifier>,
    /// Whether development sessions (`tokenledger dev-session`) are accepted.
    pub dev_sessions: bool,
}

/// Counters of what this node did.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Console commands that ran (each after its use was recorded).
    pub console_runs: std::sync::atomic::AtomicU64,
}

impl AppState {
    /// The audit view's checkpoint.
    pub async fn audit_checkpoint(&self) -> Result<u64, StoreError> {
        Ok(self
            .store
            .checkpoints()
            .await?
            .into_iter()
            .find(|(name, _)| name == "audit_logs")
            .map_or(0, |(_, position)| position))
    }
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
    #[error("admin sign-in: {0}")]
    Sessions(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl Application {
    /// Open the log (applying pending migrations), verify its head, load the token
    /// projection and bind. Nothing is served from a log whose head does not verify.
    pub async fn build(config: &ServeConfig) -> Result<Application, StartError> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock every decision reads (tests move a
    /// [`crate::ledger::ManualClock`]).
    pub async fn build_with_clock(
        config: &ServeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartError> {
        // One TLS crypto provider for the process (fetching Clerk's keys); installing it
        // again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Arc::new(Store::open(&config.database_url).await?);
        let head = store::verify_head(store.as_ref()).await?;
        tracing::info!(
            backend = store.backend(),
            head.position = head.position,
            head.hash = %head.hash,
            "event log head verified"
        );
        let cache = Arc::new(TokenCache::load(&store).await?);
        cache.spawn_tail(&store);
        spawn_audit_subscriber(&store);
        let ledger = Arc::new(Ledger::new(store.clone(), config.tokens.clone(), clock));
        // Development sessions only outside production, and only once a key was made.
        let dev_key = if config.production {
            None
        } else {
            DevKey::load(&DevKey::path_for(&config.database_url)).map_err(StartError::Sessions)?
        };
        let dev_sessions = dev_key.is_some();
        let sessions =
            SessionVerifier::new(config.clerk.clone(), dev_key).map_err(StartError::Sessions)?;
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        tracing::info!(
            console = config.switches.console_enabled,
            token_auth = config.switches.token_auth_enabled,
            trust_proxy = config.switches.trust_proxy,
            environment = config.tokens.environment.as_str(),
            "switches"
        );
        Ok(Application {
            listener,
            state: AppState {
                store,
                ledger,
                cache,
                switches: config.switches,
                metrics: Arc::default(),
                sessions,
                dev_sessions,
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
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `stop` completes, then finish in-flight requests.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "listening");
        axum::serve(
            self.listener,
            router(self.state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
    }
}

/// Keep `audit_logs` at the head. Appends fold their own audit rows while the view is at the
/// head, so this acts only when it lags (a log written before that, or by a writer that found
/// it behind): it checks with two reads, and each catch-up step runs on the writer's
/// connection between groups, never contending with appends for the append lock.
fn spawn_audit_subscriber(store: &Arc<Store>) {
    let store = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut checkpoint = 0;
        loop {
            let Some(s) = store.upgrade() else { return };
            match s.wait_for(checkpoint + 1, Duration::from_secs(1)).await {
                Ok(head) if head.position > checkpoint => {
                    // Let a burst of appends gather so one transaction folds many.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match s.catch_up_audit().await {
                        Ok(reached) => checkpoint = reached,
                        Err(e) => {
                            tracing::warn!(error = %e, "audit view could not catch up");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "audit subscriber cannot read the head");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// The whole router, built from the route policy table.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Give every request an id: on its tracing span and in the `x-request-id` response header.
async fn request_id(request: Request, next: Next) -> Response {
    let id = Uuid::now_v7();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
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
