//! The application layer: one call per action, shared by the HTTP edge and the CLI.
//!
//! [`Services::open`] opens the log (applying pending migrations), verifies its head and
//! loads the token projection; [`Application::build`] does that, starts the background
//! workers and binds; [`Application::run_until`] serves a router until told to stop. This
//! module never imports the HTTP edge: the composition root (`crate::server`) hands it the
//! router.

pub mod audit;
pub mod checkpoints;
mod denials;
pub mod export;
mod forensics;
pub mod leaks;
mod ledger;
mod listen;
mod queries;
pub mod sign_in;
pub mod telemetry;
mod token_cache;
mod tokens;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_events::{Progress, VerifyReport, verify_chain_with, verify_head};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use forensics::{
    AS_OF_FORMS, Admitted, AsOf, AsOfPage, AsOfPoint, Chapter, Forensics, Incident, Related,
    RevokeStep, SeenView, UseCounts,
};
pub use ledger::{
    CreateRequest, Ledger, LedgerError, Minted, Refusal, Revocation, RotateRequest, ShownOnce,
};
pub use queries::{
    AuditPage, AuditQuery, AuditView, ChainCheck, Cursor, DEFAULT_PAGE, DbHealth, MAX_PAGE,
    ProjectionLag, ProjectionStatus, Queries, QueryError, Readiness, TokenView,
};
pub use telemetry::{Metrics, Snapshot};
pub use token_cache::Entries as TokenEntries;
pub use tokens::{
    DEFAULT_TOKEN_PAGE, MAX_NAME_PREFIX, MAX_TOKEN_PAGE, NotACursor, STATUSES, StalePage,
    StaleQuery, StatusCounts, StatusName, TokenCursor, TokenPage, TokenQuery, parse_environment,
    parse_status, status_names,
};

use crate::clock::{Clock, SystemClock};
use crate::config::{DatabaseUrl, Limits, ServeConfig, SigningConfig, Switches, TokenSettings};
use crate::session::{DevKey, SessionVerifier};
use crate::signing::SigningKeys;
use crate::store::{self, Database, Store, StoreError};
use checkpoints::{Checkpointer, checkpoint_signer};
use token_cache::TokenCache;

/// The application layer over one log, with what the HTTP edge is configured with.
#[derive(Clone)]
pub struct Services {
    store: Arc<Store>,
    cache: Arc<TokenCache>,
    ledger: Arc<Ledger>,
    queries: Queries,
    metrics: Arc<Metrics>,
    /// The guide's switches (all off unless configured).
    pub(crate) switches: Switches,
    /// Verifies admin sessions; `None` when no sign-in can be configured (production without
    /// Clerk). In development it watches for the development key, and until Clerk or that key
    /// is there the admin surface answers 503.
    pub(crate) sessions: Option<SessionVerifier>,
    /// The development sign-in link's nonces; `None` unless a link was printed.
    pub(crate) sign_in_links: Option<Arc<sign_in::SignInLinks>>,
    /// Failed authentications per client IP per minute before 429 (0: no limit).
    pub(crate) auth_failures_per_minute: u32,
    /// `APP_ENV=production`: the session cookie is set `Secure` (sent over HTTPS only).
    pub(crate) production: bool,
    /// `REQUEST_TIMEOUT`: the longest a request may take, reading its body included.
    pub(crate) request_timeout: Duration,
    /// Signs checkpoints with the log's keys; `None` where no key was loaded (most CLI
    /// commands).
    pub(crate) checkpointer: Option<Arc<Checkpointer>>,
    /// The webhook subscriber and sender, when `WEBHOOK_URL` is set.
    pub(crate) webhooks: Option<Arc<webhooks::Webhooks>>,
    /// GitHub's secret scanning keys, when `GITHUB_SECRET_SCANNING_KEYS` is set.
    pub(crate) github_keys: Option<Arc<leaks::GithubKeys>>,
}

/// Open the log at `url` (applying pending migrations) and verify its head: what every
/// command and the service do first, with or without the token cache.
pub(crate) async fn open_verified(
    url: &DatabaseUrl,
) -> Result<(Arc<Store>, tokenledger_events::Head), StoreError> {
    verified(Arc::new(Store::open(url).await?)).await
}

/// `store` with its head verified: nothing is served or changed on a log whose head does not.
async fn verified(store: Arc<Store>) -> Result<(Arc<Store>, tokenledger_events::Head), StoreError> {
    let head = verify_head(store.as_ref())
        .await
        .map_err(StoreError::from)?;
    Ok((store, head))
}

impl Services {
    /// Open the log at `url` (applying pending migrations), verify its head and load the
    /// token projection. Nothing is served or changed on a log whose head does not verify.
    pub async fn open(
        url: &DatabaseUrl,
        settings: TokenSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Services, StoreError> {
        Services::on_store(Arc::new(Store::open(url).await?), settings, clock).await
    }

    /// [`Services::open`] on a store already open: a projection database that follows a log
    /// kept elsewhere, say.
    pub async fn on_store(
        store: Arc<Store>,
        settings: TokenSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Services, StoreError> {
        let (store, head) = verified(store).await?;
        tracing::debug!(
            backend = store.backend(),
            head.position = head.position,
            head.hash = %head.hash,
            "event log head verified"
        );
        let cache = Arc::new(TokenCache::load(&store).await?);
        let ledger = Arc::new(Ledger::new(
            store.clone(),
            cache.clone(),
            settings,
            clock.clone(),
        ));
        let queries = Queries::new(store.clone(), cache.clone(), clock);
        Ok(Services {
            store,
            cache,
            ledger,
            queries,
            metrics: Arc::default(),
            switches: Switches::default(),
            sessions: None,
            sign_in_links: None,
            auth_failures_per_minute: 0,
            production: false,
            request_timeout: Limits::default().request_timeout,
            checkpointer: None,
            webhooks: None,
            github_keys: None,
        })
    }

    /// Load the log's signing keys (made first where `create` allows) and sign with them.
    pub fn with_signing_keys(
        &mut self,
        url: &DatabaseUrl,
        signing: &SigningConfig,
        create: bool,
    ) -> Result<&Arc<Checkpointer>, crate::signing::KeyFileError> {
        use tokenledger_events::EventLog as _;
        let origin = signing.origin(self.store.log_id());
        let path = signing.key_path(url, self.store.log_id());
        let keys = if create {
            SigningKeys::load_or_init(&path, &origin)?
        } else {
            SigningKeys::require(&path, &origin)?
        };
        let clock = self.ledger.clock().clone();
        Ok(self
            .checkpointer
            .insert(Arc::new(Checkpointer::new(self.store.clone(), keys, clock))))
    }

    /// The log itself.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The webhook workers, when `WEBHOOK_URL` is set.
    pub fn webhooks(&self) -> Option<&Arc<webhooks::Webhooks>> {
        self.webhooks.as_ref()
    }

    /// The checkpointer, when keys were loaded.
    pub fn checkpointer(&self) -> Option<&Arc<Checkpointer>> {
        self.checkpointer.as_ref()
    }

    /// Every token change goes through here.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Every read that is not a token lookup.
    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// GitHub's secret scanning keys, when reports from GitHub are accepted.
    pub fn github_keys(&self) -> Option<&Arc<leaks::GithubKeys>> {
        self.github_keys.as_ref()
    }

    /// The development sign-in links, where one was printed.
    pub fn sign_in_links(&self) -> Option<&Arc<sign_in::SignInLinks>> {
        self.sign_in_links.as_ref()
    }

    /// What the metrics scrape reads now: the head, the token cache's position and counts
    /// by status, and the age of the newest signed checkpoint. A read that fails leaves its
    /// value at zero or out, and says so in the log: a scrape never fails for it.
    pub async fn metrics_snapshot(&self) -> Snapshot {
        use tokenledger_events::EventLog as _;
        let now = self.ledger.now();
        let head = match self.store.head().await {
            Ok(h) => h.position,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the log head could not be read");
                self.cache.position()
            }
        };
        let (counts, _) = self
            .cache
            .with_entries(|e| tokens::count(e, &TokenQuery::default(), now));
        let checkpoint_age_seconds = match self.store.signed_checkpoints(1).await {
            Ok(latest) => latest.first().map(|c| {
                (now.as_micros().saturating_sub(c.signed_at.as_micros())).max(0) as f64 / 1e6
            }),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the newest checkpoint could not be read");
                None
            }
        };
        Snapshot {
            head,
            cache_position: self.cache.position(),
            tokens: STATUSES.map(|s| (s.as_str(), counts.of(s))),
            checkpoint_age_seconds,
            subscription: self.store.upstream().map(|u| u.lag()),
        }
    }
}

/// The service, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    /// `METRICS_BIND_ADDR`'s listener, serving only `GET /metrics`.
    metrics_listener: Option<TcpListener>,
    /// The one-time development sign-in link's nonce, when one was made.
    sign_in_nonce: Option<String>,
    services: Services,
    /// The token cache's tail and the audit subscriber; aborted when the application drops.
    workers: JoinSet<()>,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A combination of settings that cannot work (each value alone parsed).
    #[error("{0}")]
    Config(String),
    #[error("admin sign-in: {0}")]
    Sessions(String),
    #[error("log signing key: {0}")]
    Signing(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Application {
    /// Open and verify the log, load the token projection, start the workers and bind.
    pub async fn build(config: &ServeConfig) -> Result<Application, StartError> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock every decision reads (tests move a
    /// [`crate::clock::ManualClock`]).
    pub async fn build_with_clock(
        config: &ServeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartError> {
        Application::build_on(config, clock, None).await
    }

    /// As [`Application::build_with_clock`], on `store` when one is given already open (a
    /// projection database following a log kept elsewhere, in tests); else on
    /// `config.database_url`.
    pub async fn build_on(
        config: &ServeConfig,
        clock: Arc<dyn Clock>,
        store: Option<Store>,
    ) -> Result<Application, StartError> {
        // One TLS crypto provider for the process (fetching Clerk's keys); installing it
        // again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.check().map_err(StartError::Config)?;
        let mut services = match store {
            Some(store) => {
                Services::on_store(Arc::new(store), config.tokens.clone(), clock.clone()).await?
            }
            None => {
                Services::open(&config.database_url, config.tokens.clone(), clock.clone()).await?
            }
        };
        tracing::info!(
            backend = services.store.backend(),
            head.position = services.cache.position(),
            "event log head verified"
        );
        // Development sessions only outside production, once a key was made: at start, or
        // later (`tokenledger dev-session` while this runs; the verifier looks again).
        let dev_key_file = (!config.production).then(|| DevKey::path_for(&config.database_url));
        let mut sign_in_nonce = None;
        // A link on a fresh start only: no development key made yet, or nothing recorded.
        let fresh = |path: &std::path::Path| !path.exists() || services.cache.position() == 0;
        let dev_key = match &dev_key_file {
            None => None,
            Some(path) if config.sign_in_link && config.clerk.is_none() && fresh(path) => {
                // The link's sessions are signed with the key `dev-session` uses.
                let links = sign_in::SignInLinks::new(
                    DevKey::load_or_create(path).map_err(StartError::Sessions)?,
                    clock.clone(),
                );
                sign_in_nonce = Some(links.issue().map_err(StartError::Sessions)?);
                services.sign_in_links = Some(Arc::new(links));
                DevKey::load(path).map_err(StartError::Sessions)?
            }
            Some(path) => DevKey::load(path).map_err(StartError::Sessions)?,
        };
        services.sessions =
            SessionVerifier::with_dev_key_file(config.clerk.clone(), dev_key, dev_key_file)
                .map_err(StartError::Sessions)?;
        if config.metrics_bind_addr.is_some() {
            let metrics = Arc::new(Metrics::exported());
            let observed = Arc::downgrade(&metrics);
            services.store.observe_commits(Arc::new(move |waited| {
                if let Some(m) = observed.upgrade() {
                    m.committed(waited);
                }
            }));
            services.metrics = metrics;
        }
        services.switches = config.switches;
        // The route exists exactly when its keys are configured.
        services.switches.github_secret_scanning = config.github_secret_scanning_keys.is_some();
        if let Some(source) = &config.github_secret_scanning_keys {
            services.github_keys = Some(Arc::new(
                leaks::GithubKeys::new(source.clone(), clock.clone())
                    .map_err(StartError::Config)?,
            ));
            tracing::info!(keys = %source, "GitHub secret scanning reports accepted on POST /v1/leaks/github");
        }
        services.auth_failures_per_minute = config.auth_failures_per_minute;
        services.production = config.production;
        services.request_timeout = config.limits.request_timeout;
        // Production signs with a key made on purpose (`tokenledger keys init`); development
        // makes one beside the database.
        let checkpointer = services
            .with_signing_keys(&config.database_url, &config.signing, !config.production)
            .map_err(|e| {
                StartError::Signing(if config.production {
                    format!("{e}; APP_ENV=production needs LOG_SIGNING_KEY_FILE to name a key made with `tokenledger keys init`")
                } else {
                    e.to_string()
                })
            })?
            .clone();
        tracing::info!(
            origin = checkpointer.keys().origin(),
            keys = ?checkpointer.keys().verifier_keys().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "checkpoints are signed by"
        );
        let mut workers = JoinSet::new();
        workers.spawn(services.cache.tail(&services.store));
        workers.spawn(checkpoint_signer(&checkpointer, config.signing.every));
        workers.spawn(denial_flusher(&services.ledger));
        if services.store.upstream().is_some() {
            workers.spawn(store::upstream::follow(&services.store));
        }
        if services.metrics.is_exported() {
            workers.spawn(metrics_upkeep(&services.metrics));
        }
        if let Some(hooks) = &config.webhooks {
            let hooks = webhooks::Webhooks::new(
                services.store.clone(),
                hooks.clone(),
                clock.clone(),
                services.metrics.clone(),
            )
            .map_err(StartError::Config)?;
            workers.spawn(hooks.subscriber());
            workers.spawn(hooks.expiry_scanner());
            workers.spawn(hooks.sender());
            tracing::info!("webhooks on: revocations, leak reports and expiry warnings are sent");
            services.webhooks = Some(hooks);
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.bind_addr).await?;
        let metrics_listener = match config.metrics_bind_addr {
            Some(addr) => {
                let l = bind(addr).await?;
                tracing::info!(addr = ?l.local_addr().ok(), "metrics on GET /metrics");
                Some(l)
            }
            None => None,
        };
        tracing::info!(
            console = config.switches.console_enabled,
            token_auth = config.switches.token_auth_enabled,
            trust_proxy_hops = config.switches.trust_proxy_hops,
            environment = config.tokens.environment.as_str(),
            "switches"
        );
        tracing::info!(
            header_read_timeout = ?config.limits.header_read_timeout,
            request_timeout = ?config.limits.request_timeout,
            keep_alive_timeout = ?config.limits.keep_alive_timeout,
            max_connections = config.limits.max_connections,
            "connection limits"
        );
        Ok(Application {
            listener,
            metrics_listener,
            sign_in_nonce,
            services,
            workers,
            limits: config.limits,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The metrics listener's port, when `METRICS_BIND_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The one-time development sign-in link, when one was made: on loopback when the
    /// service listens on every address.
    pub fn sign_in_link(&self) -> Option<String> {
        let nonce = self.sign_in_nonce.as_deref()?;
        let addr = self.listener.local_addr().ok()?;
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Some(format!(
            "http://{host}:{}/admin/sign-in/link?nonce={nonce}",
            addr.port()
        ))
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serve `router` until `stop` completes, then finish in-flight requests, under the
    /// configured [`Limits`] (see `listen`); `metrics` beside it on the metrics listener,
    /// when there is one. The workers stop with it.
    pub async fn run_until(
        self,
        router: axum::Router,
        metrics: axum::Router,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            metrics_listener,
            services,
            workers,
            limits,
            ..
        } = self;
        tracing::info!(addr = ?listener.local_addr().ok(), "listening");
        // One stop for both listeners.
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stopping.send(true);
        });
        let stop_when = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let metrics_served = metrics_listener.map(|l| {
            tokio::spawn(listen::serve(
                l,
                metrics,
                limits,
                stop_when(stopped.clone()),
            ))
        });
        let served = listen::serve(listener, router, limits, stop_when(stopped)).await;
        if let Some(task) = metrics_served
            && let Ok(Err(e)) = task.await
        {
            tracing::warn!(error = %e, "the metrics listener stopped with an error");
        }
        drop(workers);
        // Repeats counted in open denial windows are not lost across a clean restart.
        match services.ledger.flush_denials(true).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(summaries = n, "open denial windows recorded"),
            Err(e) => tracing::error!(error = %e, "open denial windows could not be recorded"),
        }
        // The last checkpoint covers everything this node appended.
        if let Some(c) = &services.checkpointer
            && let Err(e) = c.sign_head().await
        {
            tracing::error!(error = %e, "no checkpoint signed at shutdown");
        }
        served
    }
}

/// Append the summary of each denial window as it closes.
fn denial_flusher(ledger: &Arc<Ledger>) -> impl Future<Output = ()> + Send + 'static {
    let ledger = Arc::downgrade(ledger);
    async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(l) = ledger.upgrade() else { return };
            if let Err(e) = l.flush_denials(false).await {
                tracing::warn!(error = %e, "denial summaries could not be appended; will retry");
            }
        }
    }
}

/// Fold histogram samples into buckets every few seconds, whether or not anyone scrapes.
fn metrics_upkeep(metrics: &Arc<Metrics>) -> impl Future<Output = ()> + Send + 'static {
    let metrics = Arc::downgrade(metrics);
    async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Some(m) = metrics.upgrade() else { return };
            m.upkeep();
        }
    }
}

// ----- maintenance, for the CLI -----

/// Apply pending migrations (unless `status_only`) and list every migration's state.
pub async fn migrate(
    url: &DatabaseUrl,
    status_only: bool,
) -> Result<Vec<store::migrate::MigrationState>, StoreError> {
    let db = Database::connect(url).await?;
    if !status_only {
        db.migrate().await?;
    }
    db.migration_status().await
}

/// Recompute the whole chain of the log at `url`, telling `progress` how far it has got
/// after each page (the CLI draws it; this layer never prints).
pub async fn verify(
    url: &DatabaseUrl,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<VerifyReport, StoreError> {
    let store = Store::open(url).await?;
    if let Some(upstream) = store.upstream() {
        // The log itself first: the projection database holds a copy, checked as it is made.
        verify_chain_with(&store::upstream::Primary(upstream.primary()), progress).await?;
    }
    Ok(verify_chain_with(&store, progress).await?)
}

/// Rebuild `api_tokens` and `audit_logs` from position 0: the position reached and the
/// number of tokens. `progress` hears the position folded after each page.
pub async fn rebuild(
    url: &DatabaseUrl,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(u64, usize), StoreError> {
    let store = Store::open(url).await?;
    verify_head(&store).await?;
    store.rebuild_projections_with(progress).await
}
