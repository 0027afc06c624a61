//! What every handler is handed: the application layer and the edge's configuration.

use std::sync::Arc;

use super::guard::FailureGuard;
use crate::app::{Ledger, Metrics, Queries, Services};
use crate::config::Switches;
use crate::session::SessionVerifier;

#[derive(Clone)]
pub struct AppState {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) queries: Queries,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) switches: Switches,
    /// Verifies admin sessions; `None` when no sign-in is configured (the admin surface then
    /// answers 503).
    pub(crate) sessions: Option<SessionVerifier>,
    /// Whether the sign-in page offers development sessions.
    pub(crate) dev_sessions: bool,
    /// Failed authentication, bounded per client IP.
    pub(crate) guard: Arc<FailureGuard>,
    /// `APP_ENV=production`: the session cookie is set `Secure`.
    pub(crate) production: bool,
}

impl AppState {
    pub fn new(services: &Services) -> AppState {
        AppState {
            ledger: services.ledger().clone(),
            queries: services.queries().clone(),
            metrics: services.metrics().clone(),
            switches: services.switches,
            sessions: services.sessions.clone(),
            dev_sessions: services.dev_sessions,
            guard: Arc::new(FailureGuard::new(services.auth_failures_per_minute)),
            production: services.production,
        }
    }
}
