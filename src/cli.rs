//! The `tokenledger` command line. Every command works without a server running; each flag
//! has its environment variable where one makes sense, and `--help` documents both.
//!
//! Exit codes: 0 done, 1 the action was refused or failed, 2 the command line was wrong.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokenledger_events::Timestamp;
use tokenledger_projections::AuditAction;
use uuid::Uuid;

use crate::app::Application;
use crate::config::{
    ServeConfig, Switches, TokenArgs, parse_bind_addr, parse_database_url, parse_duration,
    parse_positive_duration, switch,
};
use crate::ledger::{
    AuditView, Clock, CreateRequest, Ledger, LedgerError, Minted, RotateRequest, SystemClock,
    TokenView,
};
use crate::lifecycle::{parse_name, parse_scope};
use crate::session::{ClerkArgs, DevKey};
use crate::store::{self, AuditFilter, DEFAULT_DATABASE_URL, Database, DatabaseUrl, Store};

/// Event-sourced, audit-first machine-to-machine API tokens.
#[derive(Debug, Parser)]
#[command(name = "tokenledger", version, about)]
pub struct Cli {
    /// Database holding the event log: sqlite://PATH[?mode=rwc] (embedded, the default) or
    /// postgres://USER@HOST[:PORT]/DB.
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
        let rendered = e.to_string();
        let line = rendered.lines().next().unwrap_or("error: invalid value");
        eprintln!("{line}");
        std::process::exit(2);
    }
    e.exit()
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
    /// Read the client IP from X-Forwarded-For (its last entry, added by your proxy) instead
    /// of the socket (true or false). Only behind a proxy you run.
    #[arg(long, env = "TRUST_PROXY", value_name = "BOOL", default_value = "false",
          value_parser = switch("TRUST_PROXY"))]
    pub trust_proxy: bool,
    #[command(flatten)]
    pub clerk: ClerkArgs,
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
    Verify,
    /// Create, list, show, revoke and rotate API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read the audit view (one row per token event), oldest first.
    Audit(AuditArgs),
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
    /// Maintain the projections built from the log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token; its plaintext is printed once, on a line of its own, and never again.
    Create {
        /// What the token is for (1 to 100 characters).
        #[arg(long, value_parser = name_arg)]
        name: String,
        /// A scope the token holds; repeat for more. Known: admin, console:exec, logs:read,
        /// registry:read, registry:write, tokens:verify.
        #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = scope_arg)]
        scopes: Vec<String>,
        /// Lifetime like 90s, 15m, 24h or 30d (default 90d, at most API_TOKEN_MAX_TTL).
        #[arg(long, value_name = "D", allow_hyphen_values = true, value_parser = parse_positive_duration)]
        expires_in: Option<Duration>,
        /// Print {"id","token","name","scopes","environment","expires_at"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every token with its status and last use (never a secret).
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one token.
    Show {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token now. Revoking a revoked token is refused and records nothing.
    Revoke {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// Why, kept in the audit trail.
        #[arg(long)]
        reason: Option<String>,
        /// Print the revoked token as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a token with a new one; the old one keeps working for the grace period.
    Rotate {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// How long the old token keeps working, like 0s, 15m or 24h (default 24h; 0 revokes
        /// it now).
        #[arg(long, value_name = "D", allow_hyphen_values = true, value_parser = parse_duration)]
        grace: Option<Duration>,
        /// A new name (default: the old token's).
        #[arg(long, value_parser = name_arg)]
        name: Option<String>,
        /// New scopes, repeatable (default: the old token's).
        #[arg(long = "scope", value_name = "SCOPE", value_parser = scope_arg)]
        scopes: Vec<String>,
        /// The new token's lifetime (default 90d).
        #[arg(long, value_name = "D", allow_hyphen_values = true, value_parser = parse_positive_duration)]
        expires_in: Option<Duration>,
        /// Print as `create --json` does, plus "rotated_from".
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only rows about this token id.
    #[arg(long = "token", value_name = "ID", value_parser = token_id_arg)]
    pub token_id: Option<Uuid>,
    /// Only this action: API_TOKEN_CREATED, _USED, _DENIED, _REVOKED or _ROTATED (or just
    /// created, used, denied, revoked, rotated).
    #[arg(long, value_parser = action_arg)]
    pub action: Option<AuditAction>,
    /// Only rows at or after this time: RFC 3339 (2026-11-24T09:30:00Z), a date (2026-11-24)
    /// or a duration ago (24h, 7d).
    #[arg(long, value_name = "T", value_parser = since_arg)]
    pub since: Option<Since>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild api_tokens and audit_logs from position 0 (holds the append lock meanwhile).
    Rebuild,
}

fn name_arg(raw: &str) -> Result<String, String> {
    parse_name(raw).map_err(|e| e.to_string())
}

fn scope_arg(raw: &str) -> Result<String, String> {
    parse_scope(raw).map_err(|e| e.to_string())
}

fn token_id_arg(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        format!("{raw:?} is not a token id; expected a UUID like 0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b (see `tokenledger token list`)")
    })
}

fn action_arg(raw: &str) -> Result<AuditAction, String> {
    let upper = raw.trim().to_ascii_uppercase();
    AuditAction::parse(&upper)
        .or_else(|| AuditAction::parse(&format!("API_TOKEN_{upper}")))
        .ok_or_else(|| {
            let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
            format!(
                "unknown action {raw:?}; known actions: {}",
                known.join(", ")
            )
        })
}

/// `--since`: a point in time, or a duration before now.
#[derive(Clone, Copy, Debug)]
pub enum Since {
    At(Timestamp),
    Ago(Duration),
}

fn since_arg(raw: &str) -> Result<Since, String> {
    if let Ok(d) = parse_duration(raw) {
        return Ok(Since::Ago(d));
    }
    Timestamp::parse_rfc3339(raw.trim()).map(Since::At).map_err(|_| {
        format!(
            "{raw:?} is not a time; expected RFC 3339 like 2026-11-24T09:30:00Z, a date like 2026-11-24, or a duration ago like 24h or 7d"
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
struct Failure(String);

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

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        Failure(e.to_string())
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
            serve(ServeConfig {
                clerk,
                production: cli.tokens.is_production(),
                database_url: cli.database_url,
                bind_addr: args.bind_addr,
                tokens: settings,
                switches: Switches {
                    console_enabled: args.admin_console_enabled,
                    token_auth_enabled: args.admin_api_token_auth_enabled,
                    trust_proxy: args.trust_proxy,
                },
            })
            .await
            .map_err(Failure)
        }
        Command::Migrate { status } => migrate(&cli.database_url, status).await.map_err(Failure),
        Command::Verify => verify(&cli.database_url).await.map_err(Failure),
        Command::Token { command } => match open_ledger(&cli.database_url, settings).await {
            Ok(ledger) => token_command(&ledger, command).await,
            Err(e) => Err(e),
        },
        Command::Audit(args) => match open_ledger(&cli.database_url, settings).await {
            Ok(ledger) => audit(&ledger, args).await,
            Err(e) => Err(e),
        },
        Command::Projections {
            command: ProjectionsCommand::Rebuild,
        } => rebuild(&cli.database_url).await,
        Command::DevSession { sub, role } => dev_session(
            &cli.database_url,
            cli.tokens.is_production(),
            &sub,
            role.is_some(),
        ),
        Command::Routes => {
            print!("{}", crate::routes::render());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
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
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn migrate(url: &DatabaseUrl, status: bool) -> Result<(), String> {
    let db = Database::connect(url).await.map_err(|e| e.to_string())?;
    if !status {
        db.migrate().await.map_err(|e| e.to_string())?;
    }
    let states = db.migration_status().await.map_err(|e| e.to_string())?;
    for m in &states {
        println!("{:>4} {:<24} {}", m.version, m.name, m.state);
    }
    if !status {
        println!("database {} is up to date", url.redacted());
    }
    Ok(())
}

async fn verify(url: &DatabaseUrl) -> Result<(), String> {
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let report = store::verify_chain(&store)
        .await
        .map_err(|e| e.to_string())?;
    println!("ok: {} events, head {}", report.events, report.head.hash);
    Ok(())
}

/// Open the log, check its head, and bring the audit view up to date.
async fn open_ledger(
    url: &DatabaseUrl,
    settings: crate::ledger::TokenSettings,
) -> Result<Ledger, Failure> {
    let store = Store::open(url).await?;
    store::verify_head(&store).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Ledger::new(Arc::new(store), settings, clock))
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn print_minted(minted: &Minted, json: bool) {
    let row = &minted.row;
    if json {
        let out = minted.shown_once_json();
        println!("{out}");
        return;
    }
    match row.rotated_from {
        Some(from) => println!("rotated token {from} to {}", row.id),
        None => println!("created token {}", row.id),
    }
    println!("  name:        {}", row.name);
    println!("  environment: {}", row.environment.as_str());
    println!("  scopes:      {}", row.scopes.join(" "));
    println!("  expires at:  {}", row.expires_at.to_rfc3339());
    println!("Copy the token below now; it is not stored and will not be shown again:");
    println!("{}", minted.token.expose());
}

fn print_token(view: &TokenView) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("id:           {}", view.id);
    println!("name:         {}", view.name);
    println!("status:       {}", view.status.as_str());
    println!("environment:  {}", view.environment);
    println!("scopes:       {}", view.scopes.join(" "));
    println!("created at:   {} by {}", view.created_at, view.created_by);
    println!("expires at:   {}", view.expires_at);
    if let Some(at) = &view.revoked_at {
        println!(
            "revoked at:   {at} by {}{}",
            opt(&view.revoked_by),
            view.revoke_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    if let Some(from) = view.rotated_from {
        println!("rotated from: {from}");
    }
    if let Some(to) = view.rotated_to {
        println!("rotated to:   {to}");
    }
    println!(
        "last used:    {} from {} on {}",
        opt(&view.last_used_at),
        opt(&view.last_used_ip),
        opt(&view.last_used_path)
    );
    println!(
        "uses:         {} allowed, {} denied",
        view.use_count, view.denied_count
    );
}

async fn token_command(ledger: &Ledger, command: TokenCommand) -> Result<(), Failure> {
    let actor = cli_actor();
    match command {
        TokenCommand::Create {
            name,
            scopes,
            expires_in,
            json,
        } => {
            let minted = ledger
                .create(CreateRequest {
                    name,
                    scopes,
                    expires_in,
                    actor,
                })
                .await?;
            ledger.settle().await?;
            print_minted(&minted, json);
        }
        TokenCommand::List { json } => {
            let now = ledger.now();
            let views: Vec<TokenView> = ledger
                .tokens()
                .await?
                .iter()
                .map(|r| TokenView::new(r, now))
                .collect();
            if json {
                println!("{}", to_json(&views));
            } else if views.is_empty() {
                println!(
                    "no tokens yet; create one with `tokenledger token create --name NAME --scope SCOPE`"
                );
            } else {
                println!(
                    "{:<36}  {:<24}  {:<4}  {:<16}  {:<27}  {:<27}  SCOPES",
                    "ID", "NAME", "ENV", "STATUS", "EXPIRES", "LAST USED"
                );
                for v in &views {
                    println!(
                        "{:<36}  {:<24}  {:<4}  {:<16}  {:<27}  {:<27}  {}",
                        v.id,
                        truncate(&v.name, 24),
                        v.environment,
                        v.status.as_str(),
                        v.expires_at,
                        v.last_used_at.as_deref().unwrap_or("never"),
                        v.scopes.join(" ")
                    );
                }
            }
        }
        TokenCommand::Show { id, json } => {
            let view = TokenView::new(&ledger.token(id).await?, ledger.now());
            if json {
                println!("{}", to_json(&view));
            } else {
                print_token(&view);
            }
        }
        TokenCommand::Revoke { id, reason, json } => {
            let row = ledger.revoke(id, &actor, reason).await?;
            ledger.settle().await?;
            let view = TokenView::new(&row, ledger.now());
            if json {
                println!("{}", to_json(&view));
            } else {
                println!(
                    "revoked token {id} ({}) at {}",
                    view.name,
                    view.revoked_at.as_deref().unwrap_or("-")
                );
            }
        }
        TokenCommand::Rotate {
            id,
            grace,
            name,
            scopes,
            expires_in,
            json,
        } => {
            let minted = ledger
                .rotate(
                    id,
                    RotateRequest {
                        name,
                        scopes: (!scopes.is_empty()).then_some(scopes),
                        expires_in,
                        grace,
                        actor,
                    },
                )
                .await?;
            ledger.settle().await?;
            if !json {
                let old = ledger.token(id).await?;
                match old.revoked_at {
                    Some(at) => println!("old token {id} was revoked at {}", at.to_rfc3339()),
                    None => println!(
                        "old token {id} keeps working until {}",
                        old.expires_at.to_rfc3339()
                    ),
                }
            }
            print_minted(&minted, json);
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

async fn audit(ledger: &Ledger, args: AuditArgs) -> Result<(), Failure> {
    ledger.settle().await?;
    let since = args.since.map(|s| match s {
        Since::At(t) => t,
        Since::Ago(d) => ledger.now().minus(d),
    });
    let rows = ledger
        .store()
        .audit(&AuditFilter {
            token_id: args.token_id,
            action: args.action,
            since,
            ..AuditFilter::default()
        })
        .await?;
    let views: Vec<AuditView> = rows.iter().map(AuditView::from).collect();
    if args.json {
        println!("{}", to_json(&views));
        return Ok(());
    }
    for v in &views {
        println!(
            "{}  {:<18}  {}  {}  ip={} path={}  {}",
            v.occurred_at,
            v.action,
            v.token_id,
            v.actor,
            v.ip.as_deref().unwrap_or("-"),
            v.path.as_deref().unwrap_or("-"),
            v.details
        );
    }
    Ok(())
}

fn dev_session(url: &DatabaseUrl, production: bool, sub: &str, admin: bool) -> Result<(), Failure> {
    if production {
        return Err(Failure(
            "dev-session is refused with APP_ENV=production; sign in through Clerk".into(),
        ));
    }
    let sub = sub.trim();
    if sub.is_empty() || sub.len() > 200 || sub.chars().any(char::is_control) {
        return Err(Failure(
            "--sub must be 1 to 200 printable characters (a user id)".into(),
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
    println!("{jwt}");
    Ok(())
}

async fn rebuild(url: &DatabaseUrl) -> Result<(), Failure> {
    let store = Store::open(url).await?;
    store::verify_head(&store).await?;
    let (position, tokens) = store.rebuild_projections().await?;
    println!("rebuilt api_tokens and audit_logs from position 0 to {position}: {tokens} tokens");
    Ok(())
}
