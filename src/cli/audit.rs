//! `tokenledger audit`: the audit view, oldest first.

use std::time::Duration;

use tokenledger_events::Timestamp;
use tokenledger_projections::AuditAction;
use uuid::Uuid;

use super::{Failure, to_json, token_id_arg};
use crate::app::{AuditFilter, AuditView, Services};
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
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
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

pub(super) async fn run(services: &Services, args: AuditArgs) -> Result<(), Failure> {
    let ledger = services.ledger();
    let since = args.since.map(|s| match s {
        Since::At(t) => t,
        Since::Ago(d) => ledger.now().minus(d),
    });
    let views: Vec<AuditView> = services
        .queries()
        .audit(&AuditFilter {
            token_id: args.token_id,
            action: args.action,
            since,
            ..AuditFilter::default()
        })
        .await?;
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
