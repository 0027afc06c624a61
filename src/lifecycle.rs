//! Decisions: what a command means for a token, as events. Pure and synchronous: the state, the
//! command, `now` and any minted secret material come in; events or a refusal go out. Minting,
//! clocks and storage stay in the shell ([`crate::app::Ledger`]).

use std::time::Duration;

use tokenledger_events::{
    Commitment, DenyReason, Environment, Timestamp, TokenCreated, TokenRevoked, TokenRotated,
    TokenUseDenied, TokenUsed,
};
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::allowlist::{self, AllowListError};
use crate::scope::{Scope, UnknownScope};
use crate::text::is_unsafe;
use crate::token_entry::TokenEntry;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_REASON_CHARS: usize = 500;

const DAY: Duration = Duration::from_secs(86_400);

/// Limits that come from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Expiry when a create does not name one.
    pub default_ttl: Duration,
    /// The longest expiry a token may have (`API_TOKEN_MAX_TTL`).
    pub max_ttl: Duration,
    /// How long a rotated token keeps working when a rotation does not say.
    pub default_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_ttl: 90 * DAY,
            max_ttl: 365 * DAY,
            default_grace: DAY,
        }
    }
}

/// Why a command was refused. Each message says what was wrong and what is accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("name must be 1 to {MAX_NAME_CHARS} characters, got {0}")]
    BadName(usize),
    #[error(
        "name must not contain control or invisible characters (tabs, newlines, escape sequences, bidi overrides, zero-width spaces)"
    )]
    NameHasControl,
    #[error("name must not contain an API token (it would be shown wherever the name is)")]
    NameHoldsToken,
    #[error("reason must not contain an API token (it would be shown wherever the reason is)")]
    ReasonHoldsToken,
    #[error("reason must be at most {MAX_REASON_CHARS} characters, got {0}")]
    ReasonTooLong(usize),
    #[error(
        "reason must not contain control or invisible characters (newlines, escape sequences, bidi overrides, zero-width spaces)"
    )]
    ReasonHasControl,
    #[error("at least one scope is required; known scopes: {}", Scope::known())]
    NoScopes,
    #[error(transparent)]
    UnknownScope(#[from] UnknownScope),
    #[error("expiry must be positive, like 90s, 15m, 24h or 30d")]
    NonPositiveExpiry,
    #[error("expiry of {requested} exceeds the maximum of {max} (API_TOKEN_MAX_TTL)")]
    ExpiryTooLong { requested: String, max: String },
    #[error("token {0} is already revoked")]
    AlreadyRevoked(Uuid),
    #[error("token {0} was already rotated to {1}; rotate its successor instead")]
    AlreadyRotated(Uuid, Uuid),
    #[error("token {0} has expired; create a new token instead")]
    Expired(Uuid),
    #[error(transparent)]
    AllowList(#[from] AllowListError),
    #[error(
        "grace must be a duration like 0s, 15m or 24h, or until-used, or until-used:MAX with MAX a duration like 7d"
    )]
    BadGrace,
}

/// Check a scope name against [`Scope::ALL`].
pub fn parse_scope(raw: &str) -> Result<Scope, DomainError> {
    Ok(raw.parse::<Scope>()?)
}

/// Check a token name: 1 to 100 characters, trimmed.
pub fn parse_name(raw: &str) -> Result<String, DomainError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&chars) {
        Err(DomainError::BadName(chars))
    } else if name.chars().any(is_unsafe) {
        Err(DomainError::NameHasControl)
    } else if crate::token::redact(name) != name {
        Err(DomainError::NameHoldsToken)
    } else {
        Ok(name.to_owned())
    }
}

/// Check a revoke reason: at most 500 characters, trimmed; empty means none.
pub fn parse_reason(raw: Option<&str>) -> Result<Option<String>, DomainError> {
    let Some(reason) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        Err(DomainError::ReasonTooLong(chars))
    } else if reason.chars().any(is_unsafe) {
        Err(DomainError::ReasonHasControl)
    } else if crate::token::redact(reason) != reason {
        Err(DomainError::ReasonHoldsToken)
    } else {
        Ok(Some(reason.to_owned()))
    }
}

/// `90s`, `15m`, `24h`, `30d`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A new token, as asked for.
#[derive(Clone, Debug)]
pub struct CreateToken {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub environment: Environment,
    pub actor: String,
    /// Client networks the token may be used from (`--allow-ip`); empty: any.
    pub allowed_ips: Vec<String>,
}

fn checked_scopes(scopes: &[String]) -> Result<Vec<String>, DomainError> {
    if scopes.is_empty() {
        return Err(DomainError::NoScopes);
    }
    let mut out = Vec::new();
    for s in scopes {
        let s = parse_scope(s)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    // Stored in the canonical order so equal scope sets compare equal.
    out.sort();
    Ok(out.into_iter().map(|s| s.as_str().to_owned()).collect())
}

fn expiry(
    expires_in: Option<Duration>,
    now: Timestamp,
    policy: &Policy,
) -> Result<Timestamp, DomainError> {
    let ttl = expires_in.unwrap_or(policy.default_ttl);
    if ttl.is_zero() {
        return Err(DomainError::NonPositiveExpiry);
    }
    if ttl > policy.max_ttl {
        return Err(DomainError::ExpiryTooLong {
            requested: format_duration(ttl),
            max: format_duration(policy.max_ttl),
        });
    }
    Ok(now.plus(ttl))
}

/// Decide a create. `token_id` and `secret_commitment` come from minting in the shell.
pub fn decide_create(
    cmd: &CreateToken,
    token_id: Uuid,
    secret_commitment: Commitment,
    now: Timestamp,
    policy: &Policy,
) -> Result<TokenCreated, DomainError> {
    Ok(TokenCreated {
        token_id,
        name: parse_name(&cmd.name)?,
        scopes: checked_scopes(&cmd.scopes)?,
        environment: cmd.environment,
        expires_at: expiry(cmd.expires_in, now, policy)?,
        created_by: cmd.actor.clone(),
        secret_commitment,
        rotated_from: None,
        allowed_ips: allowlist::parse(&cmd.allowed_ips)?,
    })
}

/// A request presenting a known token.
#[derive(Clone, Debug)]
pub struct UseAttempt {
    /// The token must hold at least one of these scopes (none: no scope is asked for).
    pub required_any: Vec<Scope>,
    /// The environment this server accepts.
    pub server_environment: Environment,
    pub ip: Option<String>,
    pub method: String,
    pub path: String,
    pub command: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UseDecision {
    Allowed(TokenUsed),
    Denied(TokenUseDenied),
}

/// Decide a use, with DESIGN's order of checks: environment, revoked, expired, client
/// address, scope. Reads
/// only the compact entry, as the authentication path holds it.
pub fn decide_use(token: &TokenEntry, attempt: &UseAttempt, now: Timestamp) -> UseDecision {
    let deny = |reason| {
        UseDecision::Denied(TokenUseDenied {
            reason,
            ip: attempt.ip.clone(),
            path: attempt.path.clone(),
        })
    };
    if token.environment() != attempt.server_environment {
        return deny(DenyReason::EnvironmentMismatch);
    }
    match token.status_at(now) {
        TokenStatus::Revoked => return deny(DenyReason::Revoked),
        TokenStatus::Expired => return deny(DenyReason::Expired),
        TokenStatus::Active | TokenStatus::RotatedInGrace => {}
    }
    if let Some(allowed) = token.allowed()
        && !allowed.admits(attempt.ip.as_deref())
    {
        return deny(DenyReason::IpNotAllowed);
    }
    if !token.scopes().any_of(&attempt.required_any) {
        return deny(DenyReason::InsufficientScope);
    }
    UseDecision::Allowed(TokenUsed {
        ip: attempt.ip.clone(),
        method: attempt.method.clone(),
        path: attempt.path.clone(),
        command: attempt.command.clone(),
        user_agent: attempt.user_agent.clone(),
    })
}

/// Decide a revoke. Revoking a revoked token is refused and appends nothing; an expired or
/// rotated token can still be revoked (it ends a grace period at once).
pub fn decide_revoke(
    token: &TokenEntry,
    actor: &str,
    reason: Option<String>,
) -> Result<TokenRevoked, DomainError> {
    let reason = parse_reason(reason.as_deref())?;
    if token.revoked_at().is_some() {
        return Err(DomainError::AlreadyRevoked(token.id()));
    }
    Ok(TokenRevoked {
        actor: actor.to_owned(),
        reason,
    })
}

/// How long a rotated token keeps working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grace {
    /// For this long after the rotation; zero revokes it at once.
    For(Duration),
    /// Until the successor's first use, and at most `max` after the rotation (without `max`,
    /// at most until its own expiry). The successor's first use revokes it in the same
    /// append; presented after that, it is treated as reuse.
    UntilUsed { max: Option<Duration> },
}

/// `24h`, `0s`, `until-used` or `until-used:7d`.
pub fn parse_grace(raw: &str) -> Result<Grace, DomainError> {
    let raw = raw.trim();
    let duration = |d: &str| crate::config::parse_duration(d).map_err(|_| DomainError::BadGrace);
    match raw.strip_prefix("until-used") {
        Some("") => Ok(Grace::UntilUsed { max: None }),
        Some(rest) => {
            let max = duration(rest.strip_prefix(':').ok_or(DomainError::BadGrace)?)?;
            if max.is_zero() {
                return Err(DomainError::BadGrace);
            }
            Ok(Grace::UntilUsed { max: Some(max) })
        }
        None => duration(raw).map(Grace::For),
    }
}

/// A rotation, as asked for: the name, scopes and allowlist are kept from the old token
/// unless overridden; the successor's expiry is `expires_in` or the policy's default, counted
/// from the rotation (a rotation renews).
#[derive(Clone, Debug, Default)]
pub struct RotateToken {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_in: Option<Duration>,
    /// How long the old token keeps working; `None` means the policy's default.
    pub grace: Option<Grace>,
    /// A new allowlist for the successor (`Some(vec![])` lifts it); `None` keeps the old one.
    pub allowed_ips: Option<Vec<String>>,
    pub actor: String,
}

/// The events of one rotation: on the old stream `rotated` (and `revoked` when the grace is
/// zero), on the new stream `created`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub rotated: TokenRotated,
    pub revoked: Option<TokenRevoked>,
    pub created: TokenCreated,
}

pub fn decide_rotate(
    token: &TokenRow,
    cmd: &RotateToken,
    successor_id: Uuid,
    secret_commitment: Commitment,
    now: Timestamp,
    policy: &Policy,
) -> Result<Rotation, DomainError> {
    // Revoked first, then rotated (pointing at the successor to rotate instead), then expired.
    if token.revoked_at.is_some() {
        return Err(DomainError::AlreadyRevoked(token.id));
    }
    if let Some(successor) = token.rotated_to {
        return Err(DomainError::AlreadyRotated(token.id, successor));
    }
    if token.status_at(now) == TokenStatus::Expired {
        return Err(DomainError::Expired(token.id));
    }
    let created = decide_create(
        &CreateToken {
            name: cmd.name.clone().unwrap_or_else(|| token.name.clone()),
            scopes: cmd.scopes.clone().unwrap_or_else(|| token.scopes.clone()),
            expires_in: cmd.expires_in,
            environment: token.environment,
            actor: cmd.actor.clone(),
            allowed_ips: cmd
                .allowed_ips
                .clone()
                .unwrap_or_else(|| token.allowed_ips.clone()),
        },
        successor_id,
        secret_commitment,
        now,
        policy,
    )?;
    let grace = cmd.grace.unwrap_or(Grace::For(policy.default_grace));
    let (old_expires_at, until_successor_used) = match grace {
        Grace::For(grace) => (token.expires_at.min(now.plus(grace)), false),
        Grace::UntilUsed { max: Some(max) } => (token.expires_at.min(now.plus(max)), true),
        Grace::UntilUsed { max: None } => (token.expires_at, true),
    };
    Ok(Rotation {
        rotated: TokenRotated {
            successor_id,
            old_expires_at,
            until_successor_used,
        },
        revoked: (grace == Grace::For(Duration::ZERO)).then(|| TokenRevoked {
            actor: cmd.actor.clone(),
            reason: Some(format!("rotated to {successor_id} with no grace period")),
        }),
        created: TokenCreated {
            rotated_from: Some(token.id),
            ..created
        },
    })
}

#[cfg(test)]
mod tests;
