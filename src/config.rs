//! Typed configuration. Every value comes from a flag or its environment variable (clap's
//! `env`), so `--help` documents both; an unusable value stops the process with a message that
//! names the variable. Every safety switch defaults to off.

use std::net::SocketAddr;
use std::time::Duration;

use crate::lifecycle::Policy;
use crate::session::SessionConfig;
use crate::store::StoreError;
use crate::text::shown;
use crate::token::{Environment, TokenPrefix};

pub use crate::store::{DEFAULT_DATABASE_URL, DatabaseUrl};

/// What this deployment mints and accepts.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub prefix: TokenPrefix,
    /// The environment minted tokens carry and the only one this server accepts.
    pub environment: Environment,
    pub policy: Policy,
    /// `DENIAL_WINDOW`: repeats of a denial (same token, reason, client IP) within this long
    /// of the first are counted into one summary event; zero records every denial.
    pub denial_window: Duration,
}

/// The default `DENIAL_WINDOW`.
pub const DEFAULT_DENIAL_WINDOW: Duration = Duration::from_secs(60);

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            prefix: TokenPrefix::default(),
            environment: Environment::Test,
            policy: Policy::default(),
            denial_window: DEFAULT_DENIAL_WINDOW,
        }
    }
}

/// Parse `DATABASE_URL` / `--database-url` for clap.
pub fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(raw).map_err(|e| match e {
        StoreError::BadUrl(why) => {
            format!(
                "{why}; accepted: sqlite://PATH[?mode=rwc], postgres://USER@HOST[:PORT]/DB, or kurrentdb://USER:PASSWORD@HOST:2113 with PROJECTION_DATABASE_URL (a build with --features kurrentdb)"
            )
        }
        other => other.to_string(),
    })
}

const DURATION_FORMS: &str = "a whole number and a unit s, m, h or d, like 90s, 15m, 24h, 30d";

/// `90s`, `15m`, `24h`, `30d`; zero is allowed (a grace period of 0 means now).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{} is not a duration; expected {DURATION_FORMS}",
            shown(raw)
        )
    };
    let raw_trimmed = raw.trim();
    let unit_at = raw_trimmed.len().checked_sub(1).ok_or_else(bad)?;
    if !raw_trimmed.is_char_boundary(unit_at) {
        return Err(bad());
    }
    let (number, unit) = raw_trimmed.split_at(unit_at);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds_per)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{} is too long; durations go up to 36500d", shown(raw)))
}

/// A duration that must be positive (an expiry).
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d.is_zero() {
        return Err(format!(
            "{} is zero; an expiry must be positive: {DURATION_FORMS}",
            shown(raw)
        ));
    }
    Ok(d)
}

/// `APP_ENV`: a known name only, so a typo of `production` cannot quietly mean test tokens.
pub fn parse_app_env(raw: &str) -> Result<String, String> {
    const KNOWN: [&str; 4] = ["development", "test", "staging", "production"];
    KNOWN
        .iter()
        .find(|k| **k == raw.trim())
        .map(|k| (*k).to_owned())
        .ok_or_else(|| {
            format!(
                "APP_ENV={raw:?} is not known; expected one of {}",
                KNOWN.join(", ")
            )
        })
}

/// `API_TOKEN_PREFIX_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixEnv {
    /// `live` when APP_ENV=production, else `test`.
    Auto,
    Live,
    Test,
}

pub fn parse_prefix_env(raw: &str) -> Result<PrefixEnv, String> {
    match raw.trim() {
        "auto" => Ok(PrefixEnv::Auto),
        "live" => Ok(PrefixEnv::Live),
        "test" => Ok(PrefixEnv::Test),
        _ => Err(format!(
            "API_TOKEN_PREFIX_ENV={raw:?} is not known; expected auto, live or test"
        )),
    }
}

fn parse_prefix(raw: &str) -> Result<TokenPrefix, String> {
    TokenPrefix::parse(raw).map_err(|e| format!("API_TOKEN_PREFIX: {e}"))
}

fn parse_max_ttl(raw: &str) -> Result<Duration, String> {
    parse_positive_duration(raw).map_err(|e| format!("API_TOKEN_MAX_TTL: {e}"))
}

/// A timeout variable's value: a positive duration; the error names the variable.
pub fn timeout(
    variable: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |raw: &str| {
        if parse_duration(raw).is_ok_and(|d| d.is_zero()) {
            return Err(format!(
                "{variable}={} is zero; a timeout must be positive: {DURATION_FORMS}",
                shown(raw)
            ));
        }
        parse_positive_duration(raw).map_err(|e| format!("{variable}: {e}"))
    }
}

/// The most connections `MAX_CONNECTIONS` may allow (each is a file descriptor).
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `MAX_CONNECTIONS`: a whole number from 1.
pub fn parse_max_connections(raw: &str) -> Result<usize, String> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n))
        .ok_or_else(|| {
            format!(
                "MAX_CONNECTIONS={} is not a connection count; expected a whole number from 1 \
                 to {MAX_CONNECTIONS_LIMIT}, like 1024",
                shown(raw)
            )
        })
}

/// `TRUST_PROXY_HOPS`: how many proxies you run in front, 0 to 255.
pub fn parse_trust_proxy_hops(raw: &str) -> Result<u8, String> {
    raw.trim().parse::<u8>().map_err(|_| {
        format!(
            "TRUST_PROXY_HOPS={} is not a number of proxies; expected a whole number from 0 \
             (no proxy: the socket address is the client) to 255, like 1 for one proxy you run",
            shown(raw)
        )
    })
}

/// `TRUST_PROXY` was a switch that read the last `X-Forwarded-For` entry that parsed; it is
/// replaced by `TRUST_PROXY_HOPS`, and any value stops the process rather than being ignored.
pub fn trust_proxy_removed(raw: &str) -> Result<bool, String> {
    Err(format!(
        "TRUST_PROXY={} is no longer read; set TRUST_PROXY_HOPS=1 for one proxy you run in \
         front (TRUST_PROXY_HOPS=N for N of them, 0 for none) and unset TRUST_PROXY",
        shown(raw)
    ))
}

/// `BIND_ADDR`: an IP address and port.
pub fn parse_bind_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim().parse().map_err(|_| {
        format!("BIND_ADDR={raw:?} is not an address; expected IP:PORT like 127.0.0.1:3000 or [::1]:3000")
    })
}

/// Token settings shared by every command that mints or checks tokens.
#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// Prefix of every token this deployment mints and accepts (1-16 lowercase letters or
    /// digits).
    #[arg(long, env = "API_TOKEN_PREFIX", default_value = "tl", value_parser = parse_prefix, global = true)]
    pub token_prefix: TokenPrefix,

    /// Environment of minted and accepted tokens: auto means live exactly when
    /// APP_ENV=production, else test.
    #[arg(
        long,
        env = "API_TOKEN_PREFIX_ENV",
        value_name = "auto|live|test",
        value_parser = parse_prefix_env,
        default_value = "auto",
        global = true
    )]
    pub token_env: PrefixEnv,

    /// The deployment environment: development, test, staging or production; production
    /// makes API_TOKEN_PREFIX_ENV=auto mean live.
    #[arg(long, env = "APP_ENV", global = true, value_parser = parse_app_env)]
    pub app_env: Option<String>,

    /// Longest expiry a token may be given.
    #[arg(long, env = "API_TOKEN_MAX_TTL", default_value = "365d", value_parser = parse_max_ttl, global = true)]
    pub max_ttl: Duration,

    /// Repeats of a denied use (same token, reason and client IP) within this long of the
    /// first are counted into one summary event instead of one event each (0s: record every
    /// denial).
    #[arg(long, env = "DENIAL_WINDOW", value_name = "D", default_value = "60s", value_parser = parse_denial_window, global = true)]
    pub denial_window: Duration,
}

fn parse_denial_window(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| format!("DENIAL_WINDOW: {e}"))
}

impl TokenArgs {
    pub fn is_production(&self) -> bool {
        self.app_env.as_deref() == Some("production")
    }

    pub fn settings(&self) -> TokenSettings {
        let environment = match self.token_env {
            PrefixEnv::Live => Environment::Live,
            PrefixEnv::Test => Environment::Test,
            PrefixEnv::Auto if self.is_production() => Environment::Live,
            PrefixEnv::Auto => Environment::Test,
        };
        let defaults = Policy::default();
        TokenSettings {
            prefix: self.token_prefix.clone(),
            environment,
            policy: Policy {
                max_ttl: self.max_ttl,
                default_ttl: defaults.default_ttl.min(self.max_ttl),
                ..defaults
            },
            denial_window: self.denial_window,
        }
    }
}

/// A strict boolean switch for clap: exactly `true` or `false`, and an error that names the
/// variable, so a typo never silently means "on" or "off".
pub fn switch(
    variable: &'static str,
) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |raw: &str| match raw.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "{variable}={other:?} is not a switch; expected true or false"
        )),
    }
}

/// The shortest `WEBHOOK_SECRET` accepted, in bytes (256 bits as hex is 64).
pub const MIN_WEBHOOK_SECRET: usize = 32;

/// The webhook signing secret. Never printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A secret of at least [`MIN_WEBHOOK_SECRET`] bytes, without control characters.
    pub fn new(raw: &str) -> Result<WebhookSecret, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            // Unset (an empty variable, as docker-compose passes one): checked with WEBHOOK_URL.
            return Ok(WebhookSecret(String::new()));
        }
        if raw.len() < MIN_WEBHOOK_SECRET {
            return Err(format!(
                "WEBHOOK_SECRET is {} bytes long; it must be at least {MIN_WEBHOOK_SECRET} \
                 (make one with `openssl rand -hex 32`)",
                raw.len()
            ));
        }
        if raw.chars().any(crate::text::is_unsafe) {
            return Err(
                "WEBHOOK_SECRET holds control or invisible characters; use printable ones, \
                 like the output of `openssl rand -hex 32`"
                    .into(),
            );
        }
        Ok(WebhookSecret(raw.to_owned()))
    }

    /// The key bytes, for signing only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// `WEBHOOK_URL`: an http:// or https:// URL with a host; empty means unset. The value is
/// never echoed (a webhook URL may carry a secret of its own).
pub fn parse_webhook_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    const FORMS: &str =
        "expected an http:// or https:// URL like https://hooks.example.com/tokenledger";
    let url =
        reqwest::Url::parse(raw).map_err(|e| format!("WEBHOOK_URL is not a URL ({e}); {FORMS}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "WEBHOOK_URL has the scheme {}; {FORMS}",
            shown(url.scheme())
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("WEBHOOK_URL has no host; {FORMS}"));
    }
    Ok(url.to_string())
}

fn parse_webhook_secret(raw: &str) -> Result<WebhookSecret, String> {
    WebhookSecret::new(raw)
}

/// `https://host:port/<redacted>`: what may be shown of a webhook URL.
fn webhook_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/<redacted>",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<redacted>".into(),
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &webhook_origin(&self.url))
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("retry_cap", &self.retry_cap)
            .finish()
    }
}

/// Where webhooks go and how they are signed (`serve` only). `Debug` redacts the URL as
/// [`WebhookConfig`] does.
#[derive(Clone, clap::Args)]
pub struct WebhookArgs {
    /// POST a signed JSON body here on every revocation, leak report and expiry warning
    /// (30, 7 and 1 days before); unset, no webhooks are sent.
    #[arg(long = "webhook-url", env = "WEBHOOK_URL", value_name = "URL",
          value_parser = parse_webhook_url, hide_env_values = true)]
    pub url: Option<String>,
    /// The HMAC-SHA256 key of the Tokenledger-Signature header (at least 32 bytes); required
    /// with WEBHOOK_URL.
    #[arg(long = "webhook-secret", env = "WEBHOOK_SECRET", value_name = "SECRET",
          value_parser = parse_webhook_secret, hide_env_values = true)]
    pub secret: Option<WebhookSecret>,
    /// How long one delivery may take before it counts as failed and is retried.
    #[arg(long = "webhook-timeout", env = "WEBHOOK_TIMEOUT", value_name = "DURATION",
          default_value = "10s", value_parser = timeout("WEBHOOK_TIMEOUT"))]
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookArgs")
            .field("url", &self.url.as_deref().map(webhook_origin))
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookArgs {
    /// The configuration, `None` without a URL; a URL without a secret is refused.
    pub fn config(&self) -> Result<Option<WebhookConfig>, String> {
        let Some(url) = self.url.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let Some(secret) = self.secret.clone().filter(|s| !s.is_empty()) else {
            return Err(format!(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is not; every webhook is signed: set \
                 WEBHOOK_SECRET to at least {MIN_WEBHOOK_SECRET} random bytes (`openssl rand -hex 32`)"
            ));
        };
        let mut config = WebhookConfig::new(url, secret);
        config.timeout = self.timeout;
        Ok(Some(config))
    }
}

/// What the webhook sender needs. `Debug` shows only the URL's scheme and host: a webhook
/// URL may carry a credential in its path, query or user part.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: WebhookSecret,
    /// One delivery's timeout (`WEBHOOK_TIMEOUT`).
    pub timeout: Duration,
    /// Attempts before a delivery is `failed`.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each (with jitter), up to
    /// `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl WebhookConfig {
    /// Defaults: 10 s timeout, 12 attempts, 5 s doubling to 1 h (about 2.5 hours in all).
    pub fn new(url: String, secret: WebhookSecret) -> WebhookConfig {
        WebhookConfig {
            url,
            secret,
            timeout: Duration::from_secs(10),
            max_attempts: 12,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(3600),
        }
    }
}

/// What `tokenledger serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub database_url: DatabaseUrl,
    /// Where to listen; port 0 picks a free port (tests).
    pub bind_addr: SocketAddr,
    pub tokens: TokenSettings,
    /// The safety switches; every one defaults to off.
    pub switches: Switches,
    /// Clerk session verification, when configured.
    pub clerk: Option<SessionConfig>,
    /// `APP_ENV=production`: development sessions are refused and the session cookie is
    /// `Secure`.
    pub production: bool,
    /// How long a client may keep a connection waiting, and how many are served at once.
    pub limits: Limits,
    /// `AUTH_FAILURES_PER_MINUTE`: failed authentications one client IP may make per minute
    /// (as a burst, refilling evenly) before it is answered 429; 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// The log's signing keys and how often checkpoints are signed.
    pub signing: SigningConfig,
    /// `METRICS_BIND_ADDR`: where `GET /metrics` is served, on a listener of its own so that
    /// it is not public on the API port; `None` (the default): no metrics are recorded.
    pub metrics_bind_addr: Option<SocketAddr>,
    /// `GITHUB_SECRET_SCANNING_KEYS`: where GitHub's secret scanning keys are read from;
    /// `None` (the default): `POST /v1/leaks/github` answers 404.
    pub github_secret_scanning_keys: Option<crate::app::leaks::KeySource>,
    /// Make a one-time development sign-in link (`serve` asks for one; the CLI prints it).
    /// One is made only outside production, with no Clerk configured, on a fresh start (no
    /// development key yet, or an empty log): the development key is made then, and the
    /// link's nonce kept in memory.
    pub sign_in_link: bool,
    /// `WEBHOOK_URL` and its secret: deliveries are sent when set.
    pub webhooks: Option<WebhookConfig>,
}

/// Where the log's signing keys are, the name they sign for, and how often.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SigningConfig {
    /// The file holding the log's signing keys (0600); by default beside the SQLite file, or
    /// tokenledger-<log id>.signing-key in the working directory for PostgreSQL.
    #[arg(
        long = "signing-key-file",
        env = "LOG_SIGNING_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub key_file: Option<std::path::PathBuf>,
    /// The log's name in its checkpoints, a schema-less URL like tokens.example.com/log; by
    /// default derived from the log id.
    #[arg(long = "log-origin", env = "LOG_ORIGIN", value_name = "ORIGIN",
          value_parser = crate::signing::parse_origin, global = true)]
    pub origin: Option<String>,
    /// Sign a checkpoint every N events, every duration, or both (whichever comes first).
    #[arg(long = "checkpoint-every", env = "CHECKPOINT_EVERY", value_name = "N|D|N,D",
          default_value = "10000,60s", value_parser = crate::app::checkpoints::parse_checkpoint_every,
          global = true)]
    pub every: crate::app::checkpoints::CheckpointEvery,
}

impl SigningConfig {
    /// The origin of the log with id `log_id`.
    pub fn origin(&self, log_id: tokenledger_events::LogId) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| crate::signing::default_origin(log_id))
    }

    /// The key file for the log `log_id` at `url`.
    pub fn key_path(
        &self,
        url: &DatabaseUrl,
        log_id: tokenledger_events::LogId,
    ) -> std::path::PathBuf {
        crate::signing::key_path(url, self.key_file.as_deref(), log_id)
    }
}

/// The default `AUTH_FAILURES_PER_MINUTE`.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 60;

/// What bounds a client's hold on the server: without these, a client that sends its headers
/// or body a byte at a time, or keeps an idle connection open, holds a socket and a task for
/// as long as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `HEADER_READ_TIMEOUT`: a request's headers must arrive whole this long after the
    /// connection opened (for its first request) or after their first byte (for later ones);
    /// past it the connection is closed.
    pub header_read_timeout: Duration,
    /// `REQUEST_TIMEOUT`: a request, reading its body included, is answered within this; past
    /// it the answer is 408 `Request timed out`.
    pub request_timeout: Duration,
    /// `KEEP_ALIVE_TIMEOUT`: a kept-alive connection waiting for its next request is closed
    /// after this long without a byte from the client.
    pub keep_alive_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once. Past it the server accepts no more until
    /// one closes; new ones wait in the kernel's listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// The seed guide's safety switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `ADMIN_CONSOLE_ENABLED`: without it the console answers 404.
    pub console_enabled: bool,
    /// `ADMIN_API_TOKEN_AUTH_ENABLED`: without it a bearer token on the console gets 401.
    pub token_auth_enabled: bool,
    /// `TRUST_PROXY_HOPS`: how many proxies you run in front. 0 (the default): the socket's
    /// address is the client's; N: the Nth `X-Forwarded-For` entry from the right, the one the
    /// outermost of your proxies added (entries left of it are the client's to forge).
    pub trust_proxy_hops: u8,
    /// `GITHUB_SECRET_SCANNING_KEYS` is set: `POST /v1/leaks/github` answers (404 otherwise).
    pub github_secret_scanning: bool,
}

impl ServeConfig {
    /// A configuration on `database_url` with every default, listening on a free loopback
    /// port.
    pub fn local(database_url: DatabaseUrl) -> ServeConfig {
        ServeConfig {
            database_url,
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: TokenSettings::default(),
            switches: Switches::default(),
            clerk: None,
            production: false,
            limits: Limits::default(),
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            signing: SigningConfig::default(),
            metrics_bind_addr: None,
            github_secret_scanning_keys: None,
            sign_in_link: false,
            webhooks: None,
        }
    }

    /// What no single value shows: the metrics listener must not share the API's address
    /// (port 0 picks a free port for each, so it never clashes).
    pub fn check(&self) -> Result<(), String> {
        if let Some(metrics) = self.metrics_bind_addr
            && same_listener(metrics, self.bind_addr)
        {
            return Err(format!(
                "METRICS_BIND_ADDR={metrics} is the same address as BIND_ADDR={}; metrics need a listener of their own so that they are not public on the API port: choose another port, like 127.0.0.1:9464",
                self.bind_addr
            ));
        }
        Ok(())
    }
}

/// Whether two listening addresses would take the same port: the same port (not 0) on the
/// same address, or on any address where one of them is the unspecified one.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `METRICS_BIND_ADDR`: an IP address and port.
pub fn parse_metrics_bind_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim().parse().map_err(|_| {
        format!("METRICS_BIND_ADDR={raw:?} is not an address; expected IP:PORT like 127.0.0.1:9464")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_a_webhook_urls_origin_only() {
        let url = "https://user:pw@hooks.example.com:8443/services/T0/B0/s3cr3tpath?key=s3cr3tq";
        let config = WebhookConfig::new(
            url.to_owned(),
            WebhookSecret::new(&"k".repeat(32)).expect("secret"),
        );
        let args = WebhookArgs {
            url: Some(url.to_owned()),
            secret: None,
            timeout: Duration::from_secs(10),
        };
        for shown in [format!("{config:?}"), format!("{args:?}")] {
            assert!(
                shown.contains("https://hooks.example.com:8443/<redacted>"),
                "{shown}"
            );
            for secret in ["s3cr3t", "pw@", "kkkk"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn the_metrics_listener_may_not_take_the_api_address() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let mut config = ServeConfig::local(DatabaseUrl::Sqlite("sqlite://x.db".into()));
        config.bind_addr = addr("127.0.0.1:3000");
        config.metrics_bind_addr = Some(addr("127.0.0.1:3000"));
        let err = config.check().expect_err("same address");
        assert!(err.contains("METRICS_BIND_ADDR=127.0.0.1:3000"), "{err}");
        assert!(err.contains("BIND_ADDR=127.0.0.1:3000"), "{err}");
        config.metrics_bind_addr = Some(addr("0.0.0.0:3000"));
        assert!(config.check().is_err(), "every address includes the API's");
        config.metrics_bind_addr = Some(addr("127.0.0.1:9464"));
        assert_eq!(config.check(), Ok(()));
        config.bind_addr = addr("127.0.0.1:0");
        config.metrics_bind_addr = Some(addr("127.0.0.1:0"));
        assert_eq!(config.check(), Ok(()), "port 0 picks two free ports");
    }

    #[test]
    fn durations_take_the_four_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in [
            "", "5", "d", "-5m", "1.5h", "10w", "5 m", "5M", "1e3s", "5mm", "9é",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("like 90s, 15m, 24h, 30d"), "{bad}: {err}");
        }
        assert!(
            parse_duration("99999999999999999d")
                .expect_err("huge")
                .contains("too long")
        );
        assert!(
            parse_positive_duration("0d")
                .expect_err("zero")
                .contains("must be positive")
        );
    }

    #[test]
    fn auto_means_live_exactly_in_production() {
        let args = |env: PrefixEnv, app: Option<&str>| TokenArgs {
            token_prefix: TokenPrefix::default(),
            token_env: env,
            app_env: app.map(str::to_owned),
            max_ttl: Duration::from_secs(365 * 86_400),
            denial_window: DEFAULT_DENIAL_WINDOW,
        };
        assert_eq!(
            args(PrefixEnv::Auto, Some("production"))
                .settings()
                .environment,
            Environment::Live
        );
        assert_eq!(
            args(PrefixEnv::Auto, Some("staging"))
                .settings()
                .environment,
            Environment::Test
        );
        assert_eq!(
            args(PrefixEnv::Auto, None).settings().environment,
            Environment::Test
        );
        assert_eq!(
            args(PrefixEnv::Test, Some("production"))
                .settings()
                .environment,
            Environment::Test
        );
        assert_eq!(
            args(PrefixEnv::Live, None).settings().environment,
            Environment::Live
        );
    }
}
