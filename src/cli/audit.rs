//! `tokenledger audit`: the audit view, a page at a time by position cursor, oldest first
//! unless `--reverse`. A page that is not the whole answer says so, and how to get the next.
//! With `--follow` it is a tail instead: every matching row as it commits, one JSON line each,
//! until interrupted.

use std::io::Write as _;
use std::time::Duration;

use tokenledger_events::Timestamp;
use tokenledger_projections::{AuditAction, OcsfOptions, ocsf_record};
use uuid::Uuid;

use super::output::{self, escape, say};
use super::{Failure, token_id_arg};
use crate::app::audit::{
    AuditReader, EmptyWindow, IP_FORMS, MAX_FILTER_TEXT, TIME_FORMS, TailError, TailRow, TimeSpec,
    action_names, check_windows, parse_action, parse_ip_filter,
};
use crate::app::{AuditQuery, AuditView, Cursor, MAX_PAGE};
use crate::clock::{Clock as _, SystemClock};
use crate::config::DatabaseUrl;

/// `--since` and `--until`: a point in time, or a duration before now.
pub use crate::app::audit::TimeSpec as Since;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only rows about this token id.
    #[arg(long = "token", value_name = "ID", value_parser = token_id_arg)]
    pub token_id: Option<Uuid>,
    /// Only this action: API_TOKEN_CREATED, _USED, _DENIED, _REVOKED or _ROTATED (or just
    /// created, used, denied, revoked, rotated).
    #[arg(long, value_parser = action_arg)]
    pub action: Option<AuditAction>,
    /// Only rows recorded with exactly this actor: cli:alice, user:ID, token:ID (a token's own
    /// uses), system:reuse-detection, ...
    #[arg(long, value_name = "ACTOR", value_parser = actor_arg)]
    pub actor: Option<String>,
    /// Only uses and denials from this client address, or from any address in this CIDR block
    /// (203.0.113.7, 10.0.0.0/8, 2001:db8::/32).
    #[arg(long, value_name = "ADDR|CIDR", value_parser = ip_arg)]
    pub ip: Option<ipnet::IpNet>,
    /// Only uses and denials whose request path starts with this (case-sensitive), like
    /// /api/admin/.
    #[arg(long, value_name = "PREFIX", value_parser = path_prefix_arg)]
    pub path_prefix: Option<String>,
    /// Only rows at or after this time: RFC 3339 (2026-11-24T09:30:00Z), a date (2026-11-24)
    /// or a duration ago (24h, 7d).
    #[arg(long, value_name = "T", value_parser = since_arg)]
    pub since: Option<Since>,
    /// Only rows at or before this time, in the same forms as --since.
    #[arg(long, value_name = "T", value_parser = until_arg)]
    pub until: Option<Since>,
    /// Only rows at this log position or later.
    #[arg(long, value_name = "P", value_parser = position_arg)]
    pub from_position: Option<u64>,
    /// Only rows at this log position or earlier.
    #[arg(long, value_name = "P", value_parser = position_arg)]
    pub to_position: Option<u64>,
    /// At most this many rows (default 100; more than 1000 is lowered to 1000).
    #[arg(long, value_name = "N", value_parser = limit_arg, conflicts_with = "follow")]
    pub limit: Option<usize>,
    /// Only rows after this log position (the `next` cursor of an earlier page; with
    /// --follow, where to resume).
    #[arg(long, value_name = "POSITION", value_parser = position_arg)]
    pub after: Option<u64>,
    /// Only rows before this log position.
    #[arg(long, value_name = "POSITION", value_parser = position_arg, conflicts_with = "follow")]
    pub before: Option<u64>,
    /// Newest first.
    #[arg(long, conflicts_with = "follow")]
    pub reverse: bool,
    /// Print the page as JSON: {"events", "total", "next", "prev", ...}.
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Keep printing matching rows as they commit, one JSON line each, oldest first from the
    /// start of the log (or after --after), until interrupted (SIGINT, SIGTERM, a closed
    /// pipe) or past --to-position or --until. Keeps going while writers stop and start and
    /// while the database is briefly unreachable.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: jsonl (each row as --json shows it) or ocsf (the OCSF 1.8.0 record
    /// `export --format ocsf` writes).
    #[arg(long, value_enum, default_value = "jsonl", requires = "follow")]
    pub format: FollowFormat,
}

/// What `--follow` prints per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FollowFormat {
    Jsonl,
    Ocsf,
}

fn limit_arg(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{:?} is not a page size; expected a whole number from 1 to {MAX_PAGE}",
            escape(raw)
        )),
    }
}

fn position_arg(raw: &str) -> Result<u64, String> {
    raw.trim().parse::<u64>().map_err(|_| {
        format!(
            "{} is not a log position; expected a whole number (1 is the first event)",
            crate::text::shown(raw)
        )
    })
}

fn action_arg(raw: &str) -> Result<AuditAction, String> {
    parse_action(raw).ok_or_else(|| {
        format!(
            "unknown action {}; known actions: {}",
            crate::text::shown(raw),
            action_names()
        )
    })
}

/// Text a filter compares exactly: not empty, not absurdly long.
fn filter_text(raw: &str, what: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().count() > MAX_FILTER_TEXT {
        return Err(format!(
            "expected {what} of 1 to {MAX_FILTER_TEXT} characters"
        ));
    }
    Ok(raw.to_owned())
}

fn actor_arg(raw: &str) -> Result<String, String> {
    filter_text(raw, "an actor (like cli:alice or token:ID)")
}

fn path_prefix_arg(raw: &str) -> Result<String, String> {
    filter_text(raw, "the start of a request path (like /api/admin/)")
}

fn ip_arg(raw: &str) -> Result<ipnet::IpNet, String> {
    parse_ip_filter(raw).ok_or_else(|| {
        format!(
            "{} is not an address or CIDR block; expected {IP_FORMS}",
            crate::text::shown(raw)
        )
    })
}

pub(super) fn since_arg(raw: &str) -> Result<Since, String> {
    TimeSpec::parse(raw).ok_or_else(|| {
        format!(
            "{} is not a time; expected {TIME_FORMS}",
            crate::text::shown(raw)
        )
    })
}

fn until_arg(raw: &str) -> Result<Since, String> {
    since_arg(raw)
}

/// The query the flags ask for, its times resolved at `now`.
fn query_of(args: &AuditArgs, now: Timestamp) -> AuditQuery {
    AuditQuery {
        token_id: args.token_id,
        action: args.action,
        actor: args.actor.clone(),
        ip: args.ip,
        path_prefix: args.path_prefix.clone(),
        since: args.since.map(|t| t.resolve(now)),
        until: args.until.map(|t| t.resolve(now)),
        from_position: args.from_position,
        to_position: args.to_position,
        after: args.after,
        before: args.before,
        newest_first: args.reverse,
        limit: args.limit,
    }
}

/// Refuse windows that cannot hold a row, as a usage error (one line, exit 2), before any
/// database is opened.
fn refuse_empty_windows(query: &AuditQuery) {
    let message = match check_windows(query) {
        Ok(()) => return,
        Err(EmptyWindow::Time { since, until }) => format!(
            "--until {} is before --since {}; expected --until at or after --since",
            until.to_rfc3339(),
            since.to_rfc3339()
        ),
        Err(EmptyWindow::Positions { from, to }) => format!(
            "--from-position {from} is past --to-position {to}; expected --from-position at most --to-position"
        ),
    };
    let mut command = <super::Cli as clap::CommandFactory>::command();
    super::usage_error(command.error(clap::error::ErrorKind::ValueValidation, message))
}

pub(super) async fn run(url: &DatabaseUrl, args: AuditArgs) -> Result<(), Failure> {
    let query = query_of(&args, SystemClock.now());
    refuse_empty_windows(&query);
    if args.follow {
        return follow(url, &query, args.after.unwrap_or(0), args.format).await;
    }
    // The log alone: a page needs no token cache.
    let reader = AuditReader::open(url).await?;
    page(&reader, &query, args.json).await
}

async fn page(reader: &AuditReader, query: &AuditQuery, json: bool) -> Result<(), Failure> {
    let page = reader.page(query).await?;
    if json {
        say!("{}", output::json(&page));
        return Ok(());
    }
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or("-")).into_owned();
    for v in &page.events {
        say!(
            "{:>8}  {}  {:<18}  {}  {}  ip={} path={}  {}",
            v.position,
            v.occurred_at,
            v.action,
            v.token_id,
            escape(&v.actor),
            opt(&v.ip),
            opt(&v.path),
            escape(&v.details.to_string())
        );
    }
    // The page's extent goes to standard error, so that piped rows stay rows.
    if page.limit_clamped {
        eprintln!("note: --limit is at most {MAX_PAGE}; showing pages of {MAX_PAGE}");
    }
    if !page.complete {
        let cursor = |c: Option<Cursor>| match c {
            Some(Cursor::After(p)) => format!("--after {p}"),
            Some(Cursor::Before(p)) => format!("--before {p}"),
            None => "none".to_owned(),
        };
        eprintln!(
            "showing {} of {} matching rows ({}); next page: {}; previous page: {}",
            page.events.len(),
            page.total,
            page.order.replace('_', " "),
            cursor(page.next),
            cursor(page.prev),
        );
    }
    Ok(())
}

/// How long the tail waits for a new event before asking again (it polls the head meanwhile).
const PATIENCE: Duration = Duration::from_millis(200);
/// The first and the longest wait before asking an unreachable database again.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// `--follow`: print each matching row as it commits, after position `after`. Ends with
/// success on SIGINT or SIGTERM, on a closed standard output, and past `--to-position` or
/// `--until`.
async fn follow(
    url: &DatabaseUrl,
    query: &AuditQuery,
    after: u64,
    format: FollowFormat,
) -> Result<(), Failure> {
    // Listening before anything else, so a signal at any point stops the tail cleanly.
    let mut stop = Stop::listen()?;
    let mut tail = tokio::select! {
        () = stop.requested() => return Ok(()),
        tail = async { AuditReader::open(url).await?.tail(query, after).await } => tail?,
    };
    let options = OcsfOptions {
        product_version: Some(env!("CARGO_PKG_VERSION").into()),
        ..OcsfOptions::default()
    };
    let mut retry: Option<Duration> = None;
    while !tail.finished() {
        let resumes_after = tail.last();
        let next = tokio::select! {
            () = stop.requested() => return Ok(()),
            next = tail.next(PATIENCE) => next,
        };
        match next {
            Ok(rows) => {
                if retry.take().is_some() {
                    eprintln!(
                        "note: the database answers again; following on after position {resumes_after}"
                    );
                }
                if !print_rows(&rows, format, &options)? {
                    // The reader went away: what it wanted, it read.
                    return Ok(());
                }
            }
            Err(TailError::Unavailable(e)) => {
                let wait = match retry {
                    None => {
                        eprintln!(
                            "warning: {}; retrying (the last position read is {})",
                            escape(&crate::token::redact(&e.to_string())),
                            tail.last()
                        );
                        FIRST_RETRY
                    }
                    Some(w) => (w * 2).min(MAX_RETRY),
                };
                retry = Some(wait);
                tokio::select! {
                    () = stop.requested() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e @ TailError::Undecodable { .. }) => return Err(Failure(e.to_string())),
        }
    }
    Ok(())
}

/// Write `rows` as JSON lines and flush them together. `false` when standard output is
/// closed.
fn print_rows(
    rows: &[TailRow],
    format: FollowFormat,
    options: &OcsfOptions,
) -> Result<bool, Failure> {
    if rows.is_empty() {
        return Ok(true);
    }
    let mut text = String::new();
    for r in rows {
        let line = match format {
            FollowFormat::Jsonl => serde_json::to_string(&AuditView::from(&r.row)),
            FollowFormat::Ocsf => match ocsf_record(&r.event, &r.decoded, options) {
                Some(record) => serde_json::to_string(&record),
                None => continue,
            },
        }
        .map_err(|e| Failure(format!("cannot write a row as JSON: {e}")))?;
        // The same document, safe on a terminal.
        text.push_str(&crate::text::escape_json(&line));
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure(format!("cannot write to standard output: {e}"))),
    }
}

/// SIGINT and SIGTERM, listened for from creation on.
struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn listen() -> Result<Stop, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen =
                |kind| signal(kind).map_err(|e| Failure(format!("cannot listen for signals: {e}")));
            Ok(Stop {
                interrupt: listen(SignalKind::interrupt())?,
                terminate: listen(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Stop {})
    }

    /// Completes when a stop was asked for.
    async fn requested(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
