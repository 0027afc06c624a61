//! What every handler is handed: the application layer and the edge's configuration.

use std::sync::Arc;

use super::guard::FailureGuard;
use super::leaks::ReportLimiter;
use crate::app::leaks::GithubKeys;
use crate::app::sign_in::SignInLinks;
use crate::app::{Ledger, Metrics, Queries, Services};
use crate::config::Switches;
use crate::session::SessionVerifier;

#[derive(Clone)]
pub struct AppState {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) queries: Queries,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) switches: Switches,
    /// Verifies admin sessions; while it is `None` or not yet configured (development before
    /// a key exists) the admin surface answers 503.
    pub(crate) sessions: Option<SessionVerifier>,
    /// Failed authentication, bounded per client IP.
    pub(crate) guard: Arc<FailureGuard>,
    /// `APP_ENV=production`: the session cookie is set `Secure`.
    pub(crate) production: bool,
    /// The development sign-in link's nonces, where `serve` printed one.
    pub(crate) sign_in_links: Option<Arc<SignInLinks>>,
    /// GitHub's secret scanning keys, when `GITHUB_SECRET_SCANNING_KEYS` is set.
    pub(crate) github_keys: Option<Arc<GithubKeys>>,
    /// Leak reports per caller on `POST /v1/leaks`.
    pub(crate) leak_reports: Arc<ReportLimiter>,
}

impl AppState {
    pub fn new(services: &Services) -> AppState {
        AppState {
            ledger: services.ledger().clone(),
            queries: services.queries().clone(),
            metrics: services.metrics().clone(),
            switches: services.switches,
            sessions: services.sessions.clone(),
            guard: Arc::new(FailureGuard::new(services.auth_failures_per_minute)),
            production: services.production,
            sign_in_links: services.sign_in_links().cloned(),
            github_keys: services.github_keys().cloned(),
            leak_reports: Arc::new(ReportLimiter::new()),
        }
    }
}
