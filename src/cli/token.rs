//! `tokenledger token ...`: create, list, show, revoke and rotate, each one ledger call.

use std::time::Duration;

use clap::Subcommand;
use uuid::Uuid;

use super::forensics::{as_of_arg, print_point, refuse};
use super::output::{self, escape, say};
use super::{Failure, cli_actor, token_id_arg};
use crate::app::{
    AsOf, CreateRequest, Forensics, MAX_NAME_PREFIX, MAX_TOKEN_PAGE, Minted, NotACursor,
    RotateRequest, Services, TokenCursor, TokenQuery, TokenView, parse_environment, parse_status,
    status_names,
};
use crate::config::parse_positive_duration;
use crate::lifecycle::{Grace, parse_grace, parse_name, parse_reason, parse_scope};
use crate::scope::Scope;
use crate::token::Environment;
use tokenledger_projections::TokenStatus;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token; its plaintext is printed once, on a line of its own, and never again.
    Create {
        /// What the token is for (1 to 100 characters).
        #[arg(long, value_parser = name_arg)]
        name: String,
        /// A scope the token holds; repeat for more. Known: admin, console:exec, logs:read,
        /// registry:read, registry:write, tokens:verify, tokens:rotate-self.
        #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = scope_arg)]
        scopes: Vec<String>,
        /// Lifetime like 90s, 15m, 24h or 30d (default 90d, at most API_TOKEN_MAX_TTL).
        #[arg(long, value_name = "D", allow_hyphen_values = true, value_parser = parse_positive_duration)]
        expires_in: Option<Duration>,
        /// A client network the token may be used from, like 10.0.0.0/8, 192.0.2.7 or
        /// 2001:db8::/32; repeat for more (default: any address).
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = allow_ip_arg)]
        allowed_ips: Vec<String>,
        /// Print {"id","token","name","scopes","environment","expires_at"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens a page at a time, oldest first, with status and last use (never a secret).
    List {
        /// Only tokens with this status now: active, rotated_in_grace, expired or revoked.
        #[arg(long, value_name = "S", value_parser = status_arg)]
        status: Option<TokenStatus>,
        /// Only tokens holding this very scope (an admin token is not listed under logs:read).
        #[arg(long, value_name = "SCOPE", value_parser = scope_filter_arg)]
        scope: Option<Scope>,
        /// Only tokens of this environment: live or test.
        #[arg(long = "env", value_name = "ENV", value_parser = env_arg)]
        environment: Option<Environment>,
        /// Only tokens whose name starts with this (case-sensitive).
        #[arg(long, value_name = "P", value_parser = name_prefix_arg)]
        name_prefix: Option<String>,
        /// The next page: the cursor an earlier page printed.
        #[arg(long, value_name = "C", value_parser = CursorArg)]
        cursor: Option<TokenCursor>,
        /// At most this many tokens (default 50; more than 1000 is lowered to 1000).
        #[arg(long, value_name = "N", value_parser = limit_arg)]
        limit: Option<usize>,
        /// Print the page as JSON: {"tokens", "total", "counts", "next", "limit", ...}.
        #[arg(long)]
        json: bool,
        /// The table as it was then: RFC 3339, a date, position:N, or a duration ago like 3d.
        /// Combines with --cursor and --limit only.
        #[arg(long, value_name = "T", value_parser = as_of_arg,
              conflicts_with_all = ["status", "scope", "environment", "name_prefix"])]
        as_of: Option<AsOf>,
    },
    /// Show one token.
    Show {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The token as it was then: RFC 3339, a date, position:N, or a duration ago like 3d.
        #[arg(long, value_name = "T", value_parser = as_of_arg)]
        as_of: Option<AsOf>,
    },
    /// Revoke a token now. Revoking a revoked token is refused and records nothing.
    Revoke {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// Why, kept in the audit trail (at most 500 characters).
        #[arg(long, value_parser = reason_arg)]
        reason: Option<String>,
        /// Also revoke every other token of its rotation chain that still works (a rotated
        /// predecessor in its grace period, a successor), in the same append.
        #[arg(long)]
        chain: bool,
        /// Print the revoked token as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a token with a new one; the old one keeps working for the grace period.
    Rotate {
        /// The token's id (a UUID).
        #[arg(value_parser = token_id_arg)]
        id: Uuid,
        /// How long the old token keeps working: a duration like 0s, 15m or 24h (default 24h;
        /// 0 revokes it now), or until-used[:MAX]: until the new token's first use, and at
        /// most MAX (default: the old token's expiry).
        #[arg(long, value_name = "G", allow_hyphen_values = true, value_parser = grace_arg)]
        grace: Option<Grace>,
        /// The new token's client networks, replacing the old token's list; repeatable
        /// (default: the old token's list).
        #[arg(long = "allow-ip", value_name = "CIDR", value_parser = allow_ip_arg)]
        allowed_ips: Vec<String>,
        /// The new token may be used from any address (lifts the old token's list).
        #[arg(long, conflicts_with = "allowed_ips")]
        allow_any_ip: bool,
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

/// The `--allow-ip` list as a whole (each entry was checked alone by clap): bad input, so
/// exit 2 before anything is opened.
fn check_allowlist(entries: &[String]) {
    if let Err(e) = crate::allowlist::parse(entries) {
        super::refuse_input(&format!("--allow-ip: {e}"));
    }
}

fn grace_arg(raw: &str) -> Result<Grace, String> {
    parse_grace(raw).map_err(|e| e.to_string())
}

/// One `--allow-ip` entry, checked alone (the whole list is checked again on create).
fn allow_ip_arg(raw: &str) -> Result<String, String> {
    crate::allowlist::parse(&[raw.to_owned()])
        .map(|mut one| one.pop().unwrap_or_default())
        .or_else(|e| match e {
            // 0.0.0.0/0 beside other entries is judged with the whole list.
            crate::allowlist::AllowListError::CoversEverything => Ok(raw.trim().to_owned()),
            e => Err(e.to_string().replace("entry 1", "entry")),
        })
}

fn reason_arg(raw: &str) -> Result<String, String> {
    parse_reason(Some(raw))
        .map(Option::unwrap_or_default)
        .map_err(|e| e.to_string())
}

fn name_arg(raw: &str) -> Result<String, String> {
    parse_name(raw).map_err(|e| e.to_string())
}

fn scope_arg(raw: &str) -> Result<String, String> {
    parse_scope(raw)
        .map(|s| s.as_str().to_owned())
        .map_err(|e| e.to_string())
}

fn status_arg(raw: &str) -> Result<TokenStatus, String> {
    parse_status(raw.trim()).ok_or_else(|| {
        format!(
            "unknown status {}; expected one of {}",
            crate::text::shown(raw),
            status_names()
        )
    })
}

fn scope_filter_arg(raw: &str) -> Result<Scope, String> {
    parse_scope(raw).map_err(|e| e.to_string())
}

fn env_arg(raw: &str) -> Result<Environment, String> {
    parse_environment(raw.trim()).ok_or_else(|| "expected live or test".to_owned())
}

fn name_prefix_arg(raw: &str) -> Result<String, String> {
    if raw.chars().count() > MAX_NAME_PREFIX {
        return Err(format!(
            "at most {MAX_NAME_PREFIX} characters (the start of a token name)"
        ));
    }
    Ok(raw.to_owned())
}

fn limit_arg(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{} is not a page size; expected a whole number from 1 to {MAX_TOKEN_PAGE}",
            crate::text::shown(raw)
        )),
    }
}

/// `--cursor`: refused with a message of its own, so that clap does not quote the value
/// back (a cursor is opaque: what was typed says nothing to fix).
#[derive(Clone)]
struct CursorArg;

impl clap::builder::TypedValueParser for CursorArg {
    type Value = TokenCursor;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<TokenCursor, clap::Error> {
        value
            .to_str()
            .and_then(|v| TokenCursor::parse(v).ok())
            .ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--cursor {NotACursor}\n"),
                )
            })
    }
}

fn print_minted(minted: &Minted, json: bool) {
    let row = &minted.row;
    if json {
        let out = minted.shown_once_json();
        say!("{out}");
        return;
    }
    match row.rotated_from {
        Some(from) => say!("rotated token {from} to {}", row.id),
        None => say!("created token {}", row.id),
    }
    say!("  name:        {}", escape(&row.name));
    say!("  environment: {}", row.environment.as_str());
    say!("  scopes:      {}", row.scopes.join(" "));
    say!("  expires at:  {}", row.expires_at.to_rfc3339());
    if !row.allowed_ips.is_empty() {
        say!("  allowed IPs: {}", row.allowed_ips.join(" "));
    }
    say!("Copy the token below now; it is not stored and will not be shown again:");
    say!("{}", minted.token.expose());
}

/// The view with every caller-supplied text escaped for a terminal.
fn safe(view: &TokenView) -> TokenView {
    let text = |s: &str| escape(s).into_owned();
    let opt = |s: &Option<String>| s.as_deref().map(text);
    TokenView {
        name: text(&view.name),
        created_by: text(&view.created_by),
        revoked_by: opt(&view.revoked_by),
        revoke_reason: opt(&view.revoke_reason),
        last_used_ip: opt(&view.last_used_ip),
        last_used_path: opt(&view.last_used_path),
        ..view.clone()
    }
}

fn print_token(view: &TokenView) {
    let view = &safe(view);
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    say!("id:           {}", view.id);
    say!("name:         {}", view.name);
    say!("status:       {}", view.status.as_str());
    say!("environment:  {}", view.environment);
    say!("scopes:       {}", view.scopes.join(" "));
    say!("created at:   {} by {}", view.created_at, view.created_by);
    say!("expires at:   {}", view.expires_at);
    if !view.allowed_ips.is_empty() {
        say!("allowed IPs:  {}", view.allowed_ips.join(" "));
    }
    if let Some(at) = &view.revoked_at {
        say!(
            "revoked at:   {at} by {}{}",
            opt(&view.revoked_by),
            view.revoke_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    if let Some(from) = view.rotated_from {
        say!("rotated from: {from}");
    }
    if let Some(to) = view.rotated_to {
        match view.overlap_ends_at_first_use {
            true => say!("rotated to:   {to} (the overlap ends at its first use)"),
            false => say!("rotated to:   {to}"),
        }
    }
    say!(
        "last used:    {} from {} on {}",
        opt(&view.last_used_at),
        opt(&view.last_used_ip),
        opt(&view.last_used_path)
    );
    say!(
        "uses:         {} allowed, {} denied",
        view.use_count,
        view.denied_count
    );
}

impl TokenCommand {
    /// The point in the past a list or show asks about, if any.
    pub fn as_of(&self) -> Option<AsOf> {
        match self {
            TokenCommand::List { as_of, .. } | TokenCommand::Show { as_of, .. } => *as_of,
            _ => None,
        }
    }
}

/// `token list --as-of` and `token show --as-of`: reads of the log alone.
pub(super) async fn run_as_of(forensics: &Forensics, command: TokenCommand) -> Result<(), Failure> {
    match command {
        // clap refuses the other filters beside --as-of.
        TokenCommand::List {
            cursor,
            limit,
            json,
            as_of: Some(as_of),
            ..
        } => {
            let page = forensics
                .tokens_as_of(as_of, cursor, limit)
                .await
                .map_err(|e| refuse("--as-of", e))?;
            if json {
                say!("{}", output::json(&page));
                return Ok(());
            }
            print_point(&page.as_of);
            if page.tokens.is_empty() {
                say!("no tokens existed then");
            } else {
                print_rows(&page.tokens);
            }
            if page.limit_clamped {
                note_clamped();
            }
            if !page.complete {
                note_extent(
                    page.tokens.len(),
                    page.total,
                    page.next.as_deref(),
                    "tokens",
                );
            }
        }
        TokenCommand::Show {
            id,
            json,
            as_of: Some(as_of),
        } => {
            let (point, view) = forensics
                .token_as_of(id, as_of)
                .await
                .map_err(|e| refuse("--as-of", e))?;
            if json {
                say!(
                    "{}",
                    output::json(&serde_json::json!({"as_of": point, "token": view}))
                );
                return Ok(());
            }
            print_point(&point);
            match view {
                Some(view) => print_token(&view),
                None => say!(
                    "token {id} did not exist yet at position {}",
                    point.position
                ),
            }
        }
        _ => {
            return Err(Failure(
                "only `token list` and `token show` take --as-of".into(),
            ));
        }
    }
    Ok(())
}

pub(super) async fn run(services: &Services, command: TokenCommand) -> Result<(), Failure> {
    let ledger = services.ledger();
    let actor = cli_actor();
    match command {
        TokenCommand::Create {
            name,
            scopes,
            expires_in,
            allowed_ips,
            json,
        } => {
            check_allowlist(&allowed_ips);
            let minted = ledger
                .create(CreateRequest {
                    name,
                    scopes,
                    expires_in,
                    actor,
                    allowed_ips,
                })
                .await?;
            print_minted(&minted, json);
        }
        command @ (TokenCommand::List { as_of: Some(_), .. }
        | TokenCommand::Show { as_of: Some(_), .. }) => {
            return run_as_of(&services.queries().forensics(), command).await;
        }
        TokenCommand::List {
            status,
            scope,
            environment,
            name_prefix,
            cursor,
            limit,
            json,
            as_of: None,
        } => {
            let query = TokenQuery {
                status,
                scope,
                environment,
                name_prefix,
                after: cursor,
                limit,
            };
            let page = services.queries().tokens(&query).await?;
            if json {
                say!("{}", output::json(&page));
                return Ok(());
            }
            if page.counts.all() == 0 {
                say!(
                    "no tokens yet; create one with `tokenledger token create --name NAME --scope SCOPE`"
                );
            } else if page.tokens.is_empty() {
                say!("no matching tokens");
            } else {
                print_rows(&page.tokens);
            }
            // The page's extent goes to standard error, so that piped rows stay rows.
            if page.limit_clamped {
                note_clamped();
            }
            if !page.complete {
                note_extent(
                    page.tokens.len(),
                    page.total,
                    page.next.as_deref(),
                    "matching tokens",
                );
            }
        }
        TokenCommand::Show {
            id,
            json,
            as_of: None,
        } => {
            let view = TokenView::new(&ledger.token(id).await?, ledger.now());
            if json {
                say!("{}", output::json(&view));
            } else {
                print_token(&view);
            }
        }
        TokenCommand::Revoke {
            id,
            reason,
            chain,
            json,
        } => {
            let done = ledger.revoke_chain(id, &actor, reason, chain).await?;
            let now = ledger.now();
            let views = |rows: &[tokenledger_projections::TokenRow]| -> Vec<TokenView> {
                rows.iter().map(|r| TokenView::new(r, now)).collect()
            };
            let (revoked, still_valid) = (views(&done.revoked), views(&done.still_valid));
            if json {
                let mut out = serde_json::json!(revoked[0]);
                out["chain_revoked"] = serde_json::json!(revoked[1..]);
                out["chain_still_valid"] = serde_json::json!(still_valid);
                say!("{}", output::json(&out));
                return Ok(());
            }
            for v in revoked.iter().map(safe) {
                say!(
                    "revoked token {} ({}) at {}",
                    v.id,
                    v.name,
                    v.revoked_at.as_deref().unwrap_or("-")
                );
            }
            for v in still_valid.iter().map(safe) {
                let until = v.expires_at.clone();
                eprintln!(
                    "warning: token {} ({}) of the same rotation chain still works ({}, until {until}); revoke it too with --chain",
                    v.id,
                    v.name,
                    v.status.as_str()
                );
            }
        }
        TokenCommand::Rotate {
            id,
            grace,
            name,
            scopes,
            expires_in,
            allowed_ips,
            allow_any_ip,
            json,
        } => {
            check_allowlist(&allowed_ips);
            let minted = ledger
                .rotate(
                    id,
                    RotateRequest {
                        name,
                        scopes: (!scopes.is_empty()).then_some(scopes),
                        expires_in,
                        grace,
                        allowed_ips: if allow_any_ip {
                            Some(Vec::new())
                        } else {
                            (!allowed_ips.is_empty()).then_some(allowed_ips)
                        },
                        actor,
                    },
                )
                .await?;
            if !json {
                let old = ledger.token(id).await?;
                match old.revoked_at {
                    Some(at) => say!("old token {id} was revoked at {}", at.to_rfc3339()),
                    None => say!(
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

fn note_clamped() {
    eprintln!("note: --limit is at most {MAX_TOKEN_PAGE}; showing pages of {MAX_TOKEN_PAGE}");
}

/// A page's extent, on standard error so that piped rows stay rows.
fn note_extent(shown: usize, total: u64, next: Option<&str>, what: &str) {
    let next = next.map_or_else(|| "none".to_owned(), |c| format!("--cursor {c}"));
    eprintln!("showing {shown} of {total} {what}; next page: {next}");
}

/// A table of tokens, one line each.
fn print_rows(tokens: &[TokenView]) {
    say!(
        "{:<36}  {:<24}  {:<4}  {:<16}  {:<27}  {:<27}  SCOPES",
        "ID",
        "NAME",
        "ENV",
        "STATUS",
        "EXPIRES",
        "LAST USED"
    );
    for v in tokens.iter().map(safe) {
        say!(
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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}
