//! Typed configuration. Every value comes from a flag or its environment variable (clap's
//! `env`), so `--help` documents both; an unusable value stops the process with a message that
//! names the variable. Every safety switch defaults to off.

use std::net::SocketAddr;
use std::time::Duration;

use crate::lifecycle::Policy;
use crate::session::SessionConfig;
use crate::store::StoreError;
use crate::token::{Environment, TokenPrefix};

pub use crate::store::{DEFAULT_DATABASE_URL, DatabaseUrl};

/// What this deployment mints and accepts.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub prefix: TokenPrefix,
    /// The environment minted tokens carry and the only one this server accepts.
    pub environment: Environment,
    pub policy: Policy,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            prefix: TokenPrefix::default(),
            environment: Environment::Test,
            policy: Policy::default(),
        }
    }
}

/// Parse `DATABASE_URL` / `--database-url` for clap.
pub fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(raw).map_err(|e| match e {
        StoreError::BadUrl(why) => {
            format!("{why}; accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB")
        }
        other => other.to_string(),
    })
}

const DURATION_FORMS: &str = "a whole number and a unit s, m, h or d, like 90s, 15m, 24h, 30d";

/// `90s`, `15m`, `24h`, `30d`; zero is allowed (a grace period of 0 means now).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || format!("{raw:?} is not a duration; expected {DURATION_FORMS}");
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
        .ok_or_else(|| format!("{raw:?} is too long; durations go up to 36500d"))
}

/// A duration that must be positive (an expiry).
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d.is_zero() {
        return Err(format!(
            "{raw:?} is zero; an expiry must be positive: {DURATION_FORMS}"
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
    /// `APP_ENV=production`: development sessions are refused.
    pub production: bool,
}

/// The seed guide's safety switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `ADMIN_CONSOLE_ENABLED`: without it the console answers 404.
    pub console_enabled: bool,
    /// `ADMIN_API_TOKEN_AUTH_ENABLED`: without it a bearer token on the console gets 401.
    pub token_auth_enabled: bool,
    /// `TRUST_PROXY`: only then is `X-Forwarded-For` read for the client IP.
    pub trust_proxy: bool,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
