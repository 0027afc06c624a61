//! The `tokenledger` command line. Every command works without a server running; each flag
//! has its environment variable, and `--help` documents both.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::{ServeConfig, parse_database_url};
use crate::store::{self, DEFAULT_DATABASE_URL, Database, DatabaseUrl, Store};

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

    /// What to do; with none, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parse the process arguments; with no command, as if `serve` had been given last, so
    /// `serve`'s own flags and variables are validated the same way.
    pub fn parse_args() -> Cli {
        let cli = Cli::parse();
        if cli.command.is_some() {
            return cli;
        }
        Cli::parse_from(std::env::args_os().chain([std::ffi::OsString::from("serve")]))
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind_addr: SocketAddr,
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
}

/// Run a parsed command; the exit code is 0 on success and 1 when the action failed.
pub async fn run(cli: Cli) -> ExitCode {
    let Some(command) = cli.command else {
        eprintln!("error: no command given; see `tokenledger --help`");
        return ExitCode::from(2);
    };
    let result = match command {
        Command::Serve(ServeArgs { bind_addr }) => {
            init_tracing();
            serve(ServeConfig {
                database_url: cli.database_url,
                bind_addr,
            })
            .await
        }
        Command::Migrate { status } => migrate(&cli.database_url, status).await,
        Command::Verify => verify(&cli.database_url).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
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
