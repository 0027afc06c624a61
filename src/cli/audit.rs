//! `tokenledger audit`: the audit view, a page at a time by position cursor, oldest first
//! unless `--reverse`. A page that is not the whole answer says so, and how to get the next.

use std::time::Duration;

use tokenledger_events::Timestamp;
use tokenledger_projections::AuditAction;
use uuid::Uuid;

use super::output::{self, escape, say};
use super::{Failure, token_id_arg};
use crate::app::{AuditQuery, Cursor, MAX_PAGE, Services};
use crate::config::parse_duration;

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
    /// At most this many rows (default 100; more than 1000 is lowered to 1000).
    #[arg(long, value_name = "N", value_parser = limit_arg)]
    pub limit: Option<usize>,
    /// Only rows after this log position (the `next` cursor of an earlier page).
    #[arg(long, value_name = "POSITION")]
    pub after: Option<u64>,
    /// Only rows before this log position.
    #[arg(long, value_name = "POSITION")]
    pub before: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Print the page as JSON: {"events", "total", "next", "prev", ...}.
    #[arg(long)]
    pub json: bool,
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

pub(super) fn since_arg(raw: &str) -> Result<Since, String> {
    if let Ok(d) = parse_duration(raw) {
        return Ok(Since::Ago(d));
    }
    Timestamp::parse_rfc3339(raw.trim()).map(Since::At).map_err(|_| {
        format!(
            "{raw:?} is not a time; expected RFC 3339 like 2026-11-24T09:30:00Z, a date like 2026-11-24, or a duration ago like 24h or 7d"
        )
    })
}

pub(super) async fn run(services: &Services, args: AuditArgs) -> Result<(), Failure> {
    let ledger = services.ledger();
    let since = args.since.map(|s| match s {
        Since::At(t) => t,
        Since::Ago(d) => ledger.now().minus(d),
    });
    let page = services
        .queries()
        .audit(&AuditQuery {
            token_id: args.token_id,
            action: args.action,
            since,
            after: args.after,
            before: args.before,
            newest_first: args.reverse,
            limit: args.limit,
            ..AuditQuery::default()
        })
        .await?;
    if args.json {
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
