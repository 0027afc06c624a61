//! The `tokenledger` command line. Every command works without a server running; each flag
//! has its environment variable where one makes sense, and `--help` documents both.
//!
//! Exit codes: 0 done, 1 the action was refused or failed, 2 the command line was wrong.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

mod audit;
mod export;
mod forensics;
mod keys;
pub mod output;
mod preflight;
mod progress;
mod token;
mod webhooks;

use output::say;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::app::{self, Application, LedgerError, QueryError, Services};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    DEFAULT_DATABASE_URL, DatabaseUrl, Limits, ServeConfig, SigningConfig, Switches, TokenArgs,
    TokenSettings, WebhookArgs, parse_bind_addr, parse_database_url, parse_max_connections,
    parse_metrics_bind_addr, parse_trust_proxy_hops, switch, timeout, trust_proxy_removed,
};
use crate::session::{ClerkArgs, DevKey};
use crate::store::StoreError;
use audit::AuditArgs;
use token::TokenCommand;

/// Event-sourced, audit-first machine-to-machine API tokens.
#[derive(Debug, Parser)]
#[command(name = "tokenledger", version, about)]
pub struct Cli {
    /// Database holding the event log: sqlite://PATH[?mode=rwc] (embedded, the default),
    /// postgres://USER@HOST[:PORT]/DB, or (built with --features kurrentdb)
    /// kurrentdb://USER:PASSWORD@HOST:2113, whose projections live in PROJECTION_DATABASE_URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_parser = parse_database_url,
        global = true,
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,

    #[command(flatten)]
    pub tokens: TokenArgs,

    #[command(flatten)]
    pub signing: SigningConfig,

    /// What to do; with none, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parse the process arguments; with no command, as if `serve` had been given last, so
    /// `serve`'s own flags and variables are validated the same way.
    pub fn parse_args() -> Cli {
        let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
        if cli.command.is_some() {
            return cli;
        }
        Cli::try_parse_from(std::env::args_os().chain([std::ffi::OsString::from("serve")]))
            .unwrap_or_else(|e| usage_error(e))
    }
}

/// A bad value gets one line saying what was wrong and what is accepted; other usage errors
/// keep clap's own help-bearing rendering. Both exit 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        // clap's line quotes the value; a webhook secret, or a URL (which may hold a
        // password), is never echoed: only the parser's own message, which names the
        // variable and shows a URL with its password hidden.
        let hidden = matches!(
            e.get(clap::error::ContextKind::InvalidArg),
            Some(clap::error::ContextValue::String(arg))
                if arg.starts_with("--webhook-secret")
                    || arg.starts_with("--webhook-url")
                    || arg.starts_with("--database-url")
        );
        if hidden {
            let why = std::error::Error::source(&e)
                .map_or_else(|| "invalid value".to_owned(), ToString::to_string);
            eprintln!("error: {}", output::escape(&crate::token::redact(&why)));
            std::process::exit(2);
        }
        let rendered = e.to_string();
        let line = rendered.lines().next().unwrap_or("error: invalid value");
        eprintln!("{}", output::escape(&crate::token::redact(line)));
        std::process::exit(2);
    }
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    // clap's own rendering quotes what was typed (an unknown subcommand, say): keep its
    // help, without a pasted token or a control character.
    let rendered = e.to_string();
    eprint!("{}", crate::token::redact(&rendered));
    std::process::exit(e.exit_code())
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "127.0.0.1:3000", value_parser = parse_bind_addr)]
    pub bind_addr: SocketAddr,
    /// Serve POST /api/admin/console (true or false); off, it answers 404.
    #[arg(long, env = "ADMIN_CONSOLE_ENABLED", value_name = "BOOL", default_value = "false",
          value_parser = switch("ADMIN_CONSOLE_ENABLED"))]
    pub admin_console_enabled: bool,
    /// Accept API tokens on the console (true or false); off, a bearer token gets 401.
    #[arg(long, env = "ADMIN_API_TOKEN_AUTH_ENABLED", value_name = "BOOL", default_value = "false",
          value_parser = switch("ADMIN_API_TOKEN_AUTH_ENABLED"))]
    pub admin_api_token_auth_enabled: bool,
    /// How many proxies you run in front: 0 takes the client IP from the socket; N takes the
    /// Nth X-Forwarded-For entry from the right (1: the one your proxy added).
    #[arg(long, env = "TRUST_PROXY_HOPS", value_name = "N", default_value = "0",
          value_parser = parse_trust_proxy_hops)]
    pub trust_proxy_hops: u8,
    /// Replaced by TRUST_PROXY_HOPS: any value stops the process with a message saying so.
    #[arg(long, env = "TRUST_PROXY", hide = true, value_parser = trust_proxy_removed)]
    pub trust_proxy: Option<bool>,
    /// How long a client may take to send a request's headers, counted from connecting (the
    /// first request) or from their first byte (later ones); then the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = timeout("HEADER_READ_TIMEOUT"))]
    pub header_read_timeout: Duration,
    /// How long a request may take, reading its body included; then it is answered 408.
    #[arg(long, env = "REQUEST_TIMEOUT", value_name = "DURATION", default_value = "30s",
          value_parser = timeout("REQUEST_TIMEOUT"))]
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request without a byte from
    /// the client; then it is closed.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = timeout("KEEP_ALIVE_TIMEOUT"))]
    pub keep_alive_timeout: Duration,
    /// Connections served at once; past it no more are accepted until one closes (they wait
    /// in the kernel's listen backlog).
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N", default_value = "1024",
          value_parser = parse_max_connections)]
    pub max_connections: usize,
    /// Failed authentications one client IP may make per minute before it is answered 429
    /// with Retry-After (0: no limit).
    #[arg(
        long,
        env = "AUTH_FAILURES_PER_MINUTE",
        value_name = "N",
        default_value = "60"
    )]
    pub auth_failures_per_minute: u32,
    /// Serve GET /metrics (Prometheus) on this address, a listener apart from the API's so
    /// that metrics are not public; unset (the default), no metrics are recorded.
    #[arg(long = "metrics-bind", env = "METRICS_BIND_ADDR", value_name = "IP:PORT",
          value_parser = parse_metrics_bind_addr)]
    pub metrics_bind_addr: Option<SocketAddr>,
    /// Accept GitHub secret scanning reports on POST /v1/leaks/github, checked against the
    /// keys at this URL (GitHub's: https://api.github.com/meta/public_keys/secret_scanning) or
    /// file; unset or empty (the default), the route answers 404.
    #[arg(long = "github-secret-scanning-keys", env = "GITHUB_SECRET_SCANNING_KEYS",
          value_name = "URL|PATH", value_parser = github_keys_setting)]
    pub github_secret_scanning_keys: Option<GithubKeysSetting>,
    #[command(flatten)]
    pub clerk: ClerkArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// `GITHUB_SECRET_SCANNING_KEYS` as set: empty means unset (docker-compose passes an unset
/// variable on as empty).
#[derive(Clone, Debug)]
pub struct GithubKeysSetting(Option<crate::app::leaks::KeySource>);

fn github_keys_setting(raw: &str) -> Result<GithubKeysSetting, String> {
    if raw.trim().is_empty() {
        return Ok(GithubKeysSetting(None));
    }
    crate::app::leaks::parse_key_source(raw).map(|s| GithubKeysSetting(Some(s)))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (applies pending migrations and verifies the log head first).
    Serve(ServeArgs),
    /// Apply pending schema migrations.
    Migrate {
        /// List applied and pending migrations instead of applying them.
        #[arg(long)]
        status: bool,
    },
    /// Recompute the hash chain over the whole log; exits non-zero at the first bad position.
    Verify {
        /// Draw no progress bar (none is drawn anyway when standard error is not a terminal).
        #[arg(long)]
        quiet: bool,
    },
    /// Create, list, show, revoke and rotate API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read the audit view (one row per token event), oldest first, filtered by token, action,
    /// actor, client address or block, path prefix, time and position; or follow it as it
    /// grows (`--follow`).
    Audit(AuditArgs),
    /// The incident report for one token: revoke (with --revoke), the audit trail in the
    /// window, every address and path, related tokens, the scopes held and what they
    /// admitted, and the checkpoint that covers it.
    Incident(forensics::IncidentArgs),
    /// A token's life event by event: who did what, what changed and why; runs of uses are
    /// told as one line each.
    History {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// Print JSON: {"token_id", "history": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a development admin session (a JWT signed by a key kept beside the database,
    /// made on first use). `serve` accepts it only when APP_ENV is not production.
    DevSession {
        /// The user id the session names (its `sub`).
        #[arg(long)]
        sub: String,
        /// `admin` makes the session an admin's; without it, a plain user's.
        #[arg(long, value_parser = ["admin"])]
        role: Option<String>,
    },
    /// Print the route policy: every route, whether it accepts API tokens, and with which
    /// scopes.
    Routes,
    /// Print the OpenAPI 3.1 document of the JSON API (what `GET /openapi.json` serves):
    /// `tokenledger openapi > docs/openapi.json`.
    Openapi,
    /// The log's signing keys: make one, show the verifier keys to publish, or rotate.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// List the signed checkpoints of the log's Merkle tree, newest first.
    Checkpoints {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Sign the tree at the head first (needs the signing key).
        #[arg(long)]
        sign: bool,
    },
    /// Write a signed bundle of the log (or a range of it) that an auditor verifies offline
    /// with `verify-export` and the published verifier key.
    Export(export::ExportArgs),
    /// Check a bundle offline: every file's hash, the chain, the tree root against the
    /// checkpoint, the signatures and any openings. Needs no database. Exits 1 on any failure.
    VerifyExport {
        /// The bundle directory.
        dir: std::path::PathBuf,
        /// A verifier key to trust (repeat for a rotation overlap).
        #[arg(long = "key", value_name = "VKEY", required = true)]
        keys: Vec<String>,
    },
    /// Write the proof that the event at POSITION is in the signed tree (about 2 KB).
    Prove {
        position: u64,
        /// Write it here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Check a proof file (of one event, or of consistency) offline. Exits 1 when invalid.
    VerifyProof {
        file: std::path::PathBuf,
        /// A verifier key to trust.
        #[arg(long = "key", value_name = "VKEY", required = true)]
        keys: Vec<String>,
    },
    /// Prove that the signed checkpoint in NEW extends the one in OLD.
    Consistency {
        old: std::path::PathBuf,
        new: std::path::PathBuf,
        /// Write it here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Check a deployment against the seed guide's production checklist and security
    /// verification steps: the switches, migrations, the token table, scope enforcement,
    /// revocation, expiry, secrets in the audit, the route policy and the production defaults.
    /// Throwaway tokens are minted in DATABASE_URL's log (actor preflight:<user>), used
    /// against --url and revoked. Exits 1 on any ❌.
    Preflight(preflight::PreflightArgs),
    /// The webhook outbox: pending and failed deliveries (`status`), and re-queueing them
    /// (`retry`).
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
    /// Maintain the projections built from the log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild api_tokens and token_addresses from position 0 (holds the append lock meanwhile).
    Rebuild {
        /// Draw no progress bar (none is drawn anyway when standard error is not a terminal).
        #[arg(long)]
        quiet: bool,
    },
}

pub(crate) fn token_id_arg(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        format!(
            "{} is not a token id; expected a UUID like 0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b (see `tokenledger token list`)",
            crate::text::shown(raw)
        )
    })
}

/// The actor recorded for CLI actions: `cli:<os user>`.
pub fn cli_actor() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .or_else(passwd_user)
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{}", user.trim())
}

/// The name of this process's user id in /etc/passwd, when the environment names none.
fn passwd_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    })
}

/// A failed command's message.
pub(crate) struct Failure(String);

/// Refuse input that parsed but cannot be answered (a time in the future, an unknown id) as a
/// bad value on the command line is: one line, exit 2. Nothing has been written when this
/// runs.
pub(crate) fn refuse_input(message: &str) -> ! {
    eprintln!("error: {}", output::escape(&crate::token::redact(message)));
    std::process::exit(2)
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Self {
        Failure(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(e.to_string())
    }
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unavailable { what, source } => Failure(format!("{what}: {source}")),
            e @ (QueryError::NotFound(_) | QueryError::BadInput(_)) => Failure(e.to_string()),
        }
    }
}

/// Run a parsed command; the exit code is 0 on success and 1 when the action was refused or
/// failed.
pub async fn run(cli: Cli) -> ExitCode {
    let Some(command) = cli.command else {
        eprintln!("error: no command given; see `tokenledger --help`");
        return ExitCode::from(2);
    };
    let settings = cli.tokens.settings();
    let result: Result<(), Failure> = match command {
        Command::Serve(args) => {
            init_tracing();
            let clerk = match args.clerk.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let webhooks = match args.webhooks.config() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let production = cli.tokens.is_production();
            let github_keys = args.github_secret_scanning_keys.and_then(|s| s.0);
            let config = ServeConfig {
                sign_in_link: !production && clerk.is_none(),
                clerk,
                production,
                database_url: cli.database_url,
                bind_addr: args.bind_addr,
                tokens: settings,
                switches: Switches {
                    console_enabled: args.admin_console_enabled,
                    token_auth_enabled: args.admin_api_token_auth_enabled,
                    trust_proxy_hops: args.trust_proxy_hops,
                    github_secret_scanning: github_keys.is_some(),
                },
                limits: Limits {
                    header_read_timeout: args.header_read_timeout,
                    request_timeout: args.request_timeout,
                    keep_alive_timeout: args.keep_alive_timeout,
                    max_connections: args.max_connections,
                },
                auth_failures_per_minute: args.auth_failures_per_minute,
                signing: cli.signing.clone(),
                metrics_bind_addr: args.metrics_bind_addr,
                webhooks,
                github_secret_scanning_keys: github_keys,
            };
            if let Err(e) = config.check() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            serve(config).await.map_err(Failure)
        }
        Command::Migrate { status } => migrate(&cli.database_url, status).await.map_err(Failure),
        Command::Verify { quiet } => verify(&cli.database_url, quiet).await.map_err(Failure),
        // The table as it was needs only the log: no token cache is loaded for it.
        Command::Token { command } if command.as_of().is_some() => {
            match forensics::open_forensics(&cli.database_url).await {
                Ok(f) => token::run_as_of(&f, command).await,
                Err(e) => Err(e),
            }
        }
        Command::Token { command } => match open(&cli.database_url, settings).await {
            Ok(services) => token::run(&services, command).await,
            Err(e) => Err(e),
        },
        Command::Keys { command } => match open(&cli.database_url, settings).await {
            Ok(services) => keys::run_keys(&services, &cli.database_url, &cli.signing, command),
            Err(e) => Err(e),
        },
        Command::Checkpoints { limit, sign } => match open(&cli.database_url, settings).await {
            Ok(mut services) => {
                keys::run_checkpoints(&mut services, &cli.database_url, &cli.signing, limit, sign)
                    .await
            }
            Err(e) => Err(e),
        },
        Command::Export(args) => {
            match signing_services(&cli.database_url, &cli.signing, settings).await {
                Ok(services) => export::run_export(&services, args).await,
                Err(e) => Err(e),
            }
        }
        Command::VerifyExport { dir, keys } => {
            // Offline: no database is opened.
            return match export::parse_keys(&keys).and_then(|k| export::run_verify_export(&dir, &k))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(Failure(message)) => {
                    eprintln!("{}", output::escape(&message));
                    ExitCode::FAILURE
                }
            };
        }
        Command::VerifyProof { file, keys } => {
            return match export::parse_keys(&keys).and_then(|k| export::run_verify_proof(&file, &k))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(Failure(message)) => {
                    eprintln!("{}", output::escape(&message));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Prove { position, ref out } => {
            match signing_services(&cli.database_url, &cli.signing, settings).await {
                Ok(services) => export::run_prove(&services, position, out.as_deref()).await,
                Err(e) => Err(e),
            }
        }
        Command::Consistency {
            ref old,
            ref new,
            ref out,
        } => match signing_services(&cli.database_url, &cli.signing, settings).await {
            Ok(services) => export::run_consistency(&services, old, new, out.as_deref()).await,
            Err(e) => Err(e),
        },
        Command::Incident(args) => forensics::run_incident(&cli.database_url, settings, args).await,
        Command::History { id, json } => forensics::run_history(&cli.database_url, id, json).await,
        Command::Audit(args) => audit::run(&cli.database_url, args).await,
        Command::Webhooks { command } => webhooks::run(&cli.database_url, command).await,
        Command::Preflight(args) => {
            return match preflight::run(&cli.database_url, &cli.tokens, &cli.signing, args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(Failure(message)) => {
                    eprintln!("error: {}", output::escape(&crate::token::redact(&message)));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { quiet },
        } => rebuild(&cli.database_url, quiet).await,
        Command::DevSession { sub, role } => dev_session(
            &cli.database_url,
            cli.tokens.is_production(),
            &sub,
            role.is_some(),
        ),
        Command::Routes => {
            output::line(format_args!("{}", crate::server::routes().trim_end()));
            Ok(())
        }
        Command::Openapi => {
            output::line(format_args!("{}", crate::server::openapi().trim_end()));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {}", output::escape(&crate::token::redact(&message)));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(config: ServeConfig) -> Result<(), String> {
    let app = Application::build(&config)
        .await
        .map_err(|e| e.to_string())?;
    // On standard output, not in the log: it is for the person who ran the command.
    if let Some(link) = app.sign_in_link() {
        say!("Sign in to the admin page (once, within 10 minutes; development only):\n  {link}");
    }
    crate::server::run_until_stopped(app)
        .await
        .map_err(|e| e.to_string())
}

async fn migrate(url: &DatabaseUrl, status: bool) -> Result<(), String> {
    let states = app::migrate(url, status).await.map_err(|e| e.to_string())?;
    for m in &states {
        say!("{:>4} {:<24} {}", m.version, m.name, m.state);
    }
    if !status {
        say!("database {} is up to date", url.redacted());
    }
    Ok(())
}

async fn verify(url: &DatabaseUrl, quiet: bool) -> Result<(), String> {
    let bar = progress::Bar::new("verify", quiet);
    let report = app::verify(url, &|p| bar.report(p)).await;
    drop(bar);
    let report = report.map_err(|e| e.to_string())?;
    say!("ok: {} events, head {}", report.events, report.head.hash);
    Ok(())
}

/// [`open`], with the log's signing keys loaded (never made here).
async fn signing_services(
    url: &DatabaseUrl,
    signing: &SigningConfig,
    settings: TokenSettings,
) -> Result<Services, Failure> {
    let mut services = open(url, settings).await?;
    services
        .with_signing_keys(url, signing, false)
        .map_err(|e| Failure(e.to_string()))?;
    Ok(services)
}

/// Open the log and check its head: every token and audit command starts here.
async fn open(url: &DatabaseUrl, settings: TokenSettings) -> Result<Services, Failure> {
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(SystemClock);
    Ok(Services::open(url, settings, clock).await?)
}

fn dev_session(url: &DatabaseUrl, production: bool, sub: &str, admin: bool) -> Result<(), Failure> {
    if production {
        return Err(Failure(
            "dev-session is refused with APP_ENV=production; sign in through Clerk".into(),
        ));
    }
    let sub = sub.trim();
    if sub.is_empty()
        || sub.len() > 200
        || sub.chars().any(crate::text::is_unsafe)
        || crate::token::redact(sub) != sub
    {
        return Err(Failure(
            "--sub must be 1 to 200 printable characters (a user id, not an API token)".into(),
        ));
    }
    let path = DevKey::path_for(url);
    let key = DevKey::load_or_create(&path).map_err(Failure)?;
    let jwt = key.sign(sub, admin, SystemClock.now()).map_err(Failure)?;
    eprintln!(
        "development session for {sub}{} (key {}), valid 8 hours; paste it at /admin/sign-in:",
        if admin { " (admin)" } else { "" },
        path.display()
    );
    say!("{jwt}");
    Ok(())
}

async fn rebuild(url: &DatabaseUrl, quiet: bool) -> Result<(), Failure> {
    let bar = progress::Bar::new("rebuild", quiet);
    let rebuilt = app::rebuild(url, &|p| bar.report(p)).await;
    drop(bar);
    let (position, tokens) = rebuilt?;
    say!("rebuilt api_tokens and token_addresses from position 0 to {position}: {tokens} tokens");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github_keys(args: &[&str]) -> Result<Option<crate::app::leaks::KeySource>, String> {
        let cli = Cli::try_parse_from([&["tokenledger", "serve"], args].concat())
            .map_err(|e| e.to_string())?;
        match cli.command {
            Some(Command::Serve(s)) => Ok(s.github_secret_scanning_keys.and_then(|k| k.0)),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn an_empty_github_keys_setting_is_unset_and_a_bad_one_is_refused() {
        use crate::app::leaks::{GITHUB_KEYS_URL, KeySource};
        assert_eq!(github_keys(&[]), Ok(None));
        assert_eq!(
            github_keys(&["--github-secret-scanning-keys", ""]),
            Ok(None)
        );
        assert_eq!(
            github_keys(&["--github-secret-scanning-keys", GITHUB_KEYS_URL]),
            Ok(Some(KeySource::Url(GITHUB_KEYS_URL.to_owned())))
        );
        assert_eq!(
            github_keys(&["--github-secret-scanning-keys", "/etc/keys.json"]),
            Ok(Some(KeySource::File("/etc/keys.json".into())))
        );
        let refused = github_keys(&["--github-secret-scanning-keys", "ftp://x/y"]).unwrap_err();
        assert!(refused.contains("GITHUB_SECRET_SCANNING_KEYS"), "{refused}");
    }
}
