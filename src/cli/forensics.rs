//! `tokenledger incident` and `tokenledger history`, and the `--as-of` of `token list` and
//! `token show`: the reviewer's commands. Only `incident --revoke` appends anything.

use std::path::PathBuf;

use uuid::Uuid;

use super::audit::{Since, since_arg};
use super::output::{self, escape, say};
use super::{Failure, cli_actor, token_id_arg};
use std::sync::Arc;

use crate::app::{AsOf, AsOfPoint, Chapter, Forensics, Incident, QueryError, RevokeStep};
use crate::clock::{Clock as _, SystemClock};
use crate::config::{DatabaseUrl, TokenSettings};

/// `--as-of`: RFC 3339, a date, `position:N` or a duration ago.
pub(super) fn as_of_arg(raw: &str) -> Result<AsOf, String> {
    AsOf::parse(raw)
}

#[derive(Debug, clap::Args)]
pub struct IncidentArgs {
    /// The token under review (a UUID).
    #[arg(value_parser = token_id_arg)]
    pub id: Uuid,
    /// The window's start: RFC 3339, a date, or a duration ago like 7d (default: the token's
    /// creation).
    #[arg(long, value_name = "T", value_parser = since_arg)]
    pub since: Option<Since>,
    /// Revoke the token first, recorded with reason `incident` and you as the actor. The only
    /// flag here that writes.
    #[arg(long)]
    pub revoke: bool,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "html")]
    pub json: bool,
    /// Write the report as a self-contained HTML page to FILE (and a summary to the terminal).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Refuse bad input the way clap does: one line naming the flag, exit 2, nothing written.
pub(super) fn refuse(flag: &str, e: QueryError) -> Failure {
    match e {
        QueryError::BadInput(why) => super::refuse_input(&format!("{flag}: {why}")),
        QueryError::NotFound(id) => super::refuse_input(&format!(
            "no token with id {id}; `tokenledger token list` lists them"
        )),
        e => e.into(),
    }
}

pub(super) fn print_point(p: &AsOfPoint) {
    // To standard error: piped rows stay rows.
    eprintln!(
        "as of position {} of {}{}",
        p.position,
        p.head,
        p.at.as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default()
    );
    match (&p.checkpoint, &p.checkpoint_hint) {
        (Some(c), _) => eprintln!(
            "covered by the checkpoint of {} events signed at {}; `tokenledger prove POSITION` proves any event of it",
            c.size, c.signed_at
        ),
        (None, Some(hint)) => eprintln!("{hint}"),
        (None, None) => {}
    }
}

/// The log for forensic reads alone: no token cache is loaded.
pub(super) async fn open_forensics(url: &DatabaseUrl) -> Result<Forensics, Failure> {
    Ok(Forensics::open(url, Arc::new(SystemClock)).await?)
}

pub(super) async fn run_incident(
    url: &DatabaseUrl,
    settings: TokenSettings,
    args: IncidentArgs,
) -> Result<(), Failure> {
    let now = SystemClock.now();
    let since = args.since.map(|s| match s {
        Since::At(t) => t,
        Since::Ago(d) => now.minus(d),
    });
    if let Some(t) = since
        && t > now
    {
        return Err(refuse(
            "--since",
            QueryError::BadInput(format!(
                "{} is after now: the window would have a negative length",
                t.to_rfc3339()
            )),
        ));
    }
    // Only --revoke writes, and only it needs the ledger (and the token cache it loads).
    let services = match args.revoke {
        true => Some(super::open(url, settings).await?),
        false => None,
    };
    let forensics = match &services {
        Some(s) => s.queries().forensics(),
        None => open_forensics(url).await?,
    };
    // Before anything is written: an unknown id is bad input.
    let row = forensics
        .token(args.id)
        .await
        .map_err(|e| refuse("ID", e))?;
    let revocation = match (&services, row.revoked_at) {
        (None, at) => RevokeStep {
            asked: false,
            outcome: match at {
                Some(at) => format!("already revoked at {}", at.to_rfc3339()),
                None => "not revoked: run again with --revoke to revoke it now".to_owned(),
            },
            revoked_at: at.map(|t| t.to_rfc3339()),
        },
        (Some(_), Some(at)) => RevokeStep {
            asked: true,
            outcome: format!("already revoked at {}; nothing appended", at.to_rfc3339()),
            revoked_at: Some(at.to_rfc3339()),
        },
        (Some(services), None) => {
            let revoked = services
                .ledger()
                .revoke(args.id, &cli_actor(), Some("incident".to_owned()))
                .await?;
            RevokeStep {
                asked: true,
                outcome: format!("revoked now by {} with reason incident", cli_actor()),
                revoked_at: revoked.revoked_at.map(|t| t.to_rfc3339()),
            }
        }
    };
    let report = forensics
        .incident(args.id, since, revocation, &crate::server::admitted)
        .await
        .map_err(|e| refuse("--since", e))?;
    if args.json {
        say!("{}", output::json(&report));
        return Ok(());
    }
    if let Some(path) = &args.html {
        let html = crate::server::incident_document(&report);
        std::fs::write(path, html)
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
        say!("wrote the incident report to {}", path.display());
    }
    print_incident(&report);
    Ok(())
}

fn print_incident(r: &Incident) {
    let t = |s: &str| escape(s).into_owned();
    say!(
        "Incident report: token {} ({}), {}",
        r.token.id,
        t(&r.token.name),
        r.token.status.as_str()
    );
    say!(
        "window: {} to {} (positions {} to {})",
        r.since,
        r.until,
        r.from_position,
        r.to_position
    );
    say!("");
    say!("1. Revoke");
    say!("   {}", r.revocation.outcome);
    say!("");
    say!("2. Audit trail in the window");
    if r.trail.totals.used == 0 {
        say!("   no uses");
    }
    say!(
        "   {} allowed uses, {} denied",
        r.trail.totals.used,
        r.trail.totals.denied
    );
    for (day, c) in &r.trail.per_day {
        say!("   {day}  {:>8} used  {:>6} denied", c.used, c.denied);
    }
    for (command, c) in &r.trail.per_command {
        say!(
            "   {:<40}  {:>8} used  {:>6} denied",
            t(command),
            c.used,
            c.denied
        );
    }
    for (reason, n) in &r.trail.denial_reasons {
        say!("   denied ({reason}): {n}");
    }
    for e in &r.trail.events {
        say!(
            "   {:>8}  {}  {}: {}",
            e.position,
            e.at,
            t(&e.actor),
            t(&e.what)
        );
    }
    say!("");
    say!("3. Addresses and paths");
    if r.addresses.is_empty() {
        say!("   no uses");
    }
    for a in &r.addresses {
        say!(
            "   ip {:<39} {:>8} used {:>6} denied  first {}  last {}{}",
            t(&a.value),
            a.used,
            a.denied,
            a.first_seen,
            a.last_seen,
            if a.new == Some(true) { "  NEW" } else { "" }
        );
    }
    for p in &r.paths {
        say!(
            "   path {:<37} {:>8} used {:>6} denied  first {}  last {}",
            t(&p.value),
            p.used,
            p.denied,
            p.first_seen,
            p.last_seen
        );
    }
    say!("");
    say!("4. Related tokens");
    let related = [
        ("rotation chain", &r.related.rotation_chain),
        ("same creator", &r.related.same_creator),
        ("same addresses", &r.related.same_addresses),
    ];
    for (kind, list) in related {
        if list.is_empty() {
            say!("   {kind}: none");
        }
        for x in list {
            say!(
                "   {kind}: {} ({}) {}; {}",
                x.id,
                t(&x.name),
                x.status,
                t(&x.relation)
            );
            say!("      revoke: {}", x.revoke);
            say!("      rotate: {}", x.rotate);
        }
    }
    if r.related.same_creator_total > r.related.same_creator.len() as u64 {
        say!(
            "   (and {} more by the same creator)",
            r.related.same_creator_total - r.related.same_creator.len() as u64
        );
    }
    say!("");
    say!("5. Scopes held over time, and what they admitted");
    for s in &r.scopes {
        say!(
            "   {} from {} until {}: [{}]",
            s.token_id,
            s.from,
            s.until.as_deref().unwrap_or("now (still works)"),
            s.scopes.join(", ")
        );
        let routes = if s.admits.routes.is_empty() {
            "none".to_owned()
        } else {
            s.admits.routes.join("; ")
        };
        let commands = if s.admits.console_commands.is_empty() {
            "none".to_owned()
        } else {
            s.admits.console_commands.join(", ")
        };
        say!("      routes: {routes}");
        say!("      console commands: {commands}");
    }
    say!("");
    let p = &r.checkpoint;
    match (&p.checkpoint, &p.checkpoint_hint) {
        (Some(c), _) => say!(
            "Checkpoint: the signed tree of {} events (signed at {}) covers this report's position {}.",
            c.size,
            c.signed_at,
            p.position
        ),
        (None, Some(hint)) => say!("Checkpoint: {hint}."),
        (None, None) => say!("Checkpoint: the log is empty."),
    }
}

pub(super) async fn run_history(url: &DatabaseUrl, id: Uuid, json: bool) -> Result<(), Failure> {
    let (row, chapters) = open_forensics(url)
        .await?
        .history(id)
        .await
        .map_err(|e| refuse("ID", e))?;
    if json {
        say!(
            "{}",
            output::json(&serde_json::json!({"token_id": row.id, "history": chapters}))
        );
        return Ok(());
    }
    say!("token {} ({})", row.id, escape(&row.name));
    for c in &chapters {
        match c {
            Chapter::Event(e) => say!(
                "{:>8}  {}  {}  {}",
                e.position,
                e.at,
                escape(&e.actor),
                escape(&e.what)
            ),
            Chapter::Uses {
                count,
                first_position,
                last_position,
                first_at,
                last_at,
                ips,
                paths,
            } => {
                let list = |s: &std::collections::BTreeSet<String>| {
                    escape(&s.iter().cloned().collect::<Vec<_>>().join(", ")).into_owned()
                };
                if *count == 1 {
                    say!(
                        "{first_position:>8}  {first_at}  used from {} on {}",
                        list(ips),
                        list(paths)
                    );
                } else {
                    say!(
                        "{first_position:>8}  {first_at}  used {count} times until {last_at} (position {last_position}) from {} on {}",
                        list(ips),
                        list(paths)
                    );
                }
            }
        }
    }
    Ok(())
}
