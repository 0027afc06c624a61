//! The audit view: one row per event, in the seed guide's vocabulary
//! (`API_TOKEN_CREATED`, `API_TOKEN_USED`, `API_TOKEN_DENIED`, `API_TOKEN_REVOKED`,
//! `API_TOKEN_ROTATED`), and `API_TOKEN_LEAK_REPORTED` in its style. Rows name tokens by id and carry what happened, from where and by whom;
//! they are built field by field from the event, so a commitment, a hash or a salt has no way in.

use serde::Serialize;
use serde_json::{Value, json};
use tokenledger_events::{StoredEvent, Timestamp, TokenEvent};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AuditAction {
    #[serde(rename = "API_TOKEN_CREATED")]
    Created,
    #[serde(rename = "API_TOKEN_USED")]
    Used,
    #[serde(rename = "API_TOKEN_DENIED")]
    Denied,
    #[serde(rename = "API_TOKEN_REVOKED")]
    Revoked,
    #[serde(rename = "API_TOKEN_ROTATED")]
    Rotated,
    #[serde(rename = "API_TOKEN_LEAK_REPORTED")]
    LeakReported,
}

impl AuditAction {
    pub const ALL: [AuditAction; 6] = [
        AuditAction::Created,
        AuditAction::Used,
        AuditAction::Denied,
        AuditAction::Revoked,
        AuditAction::Rotated,
        AuditAction::LeakReported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "API_TOKEN_CREATED",
            AuditAction::Used => "API_TOKEN_USED",
            AuditAction::Denied => "API_TOKEN_DENIED",
            AuditAction::Revoked => "API_TOKEN_REVOKED",
            AuditAction::Rotated => "API_TOKEN_ROTATED",
            AuditAction::LeakReported => "API_TOKEN_LEAK_REPORTED",
        }
    }

    /// The event types whose rows carry this action: what an audit query filters the log by.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            AuditAction::Created => &["TokenCreated"],
            AuditAction::Used => &["TokenUsed"],
            AuditAction::Denied => &["TokenUseDenied", "TokenUseDeniedSummary"],
            AuditAction::Revoked => &["TokenRevoked"],
            AuditAction::Rotated => &["TokenRotated"],
            AuditAction::LeakReported => &["TokenLeakReported"],
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub position: u64,
    pub event_id: Uuid,
    pub action: AuditAction,
    pub token_id: Uuid,
    pub actor: String,
    pub ip: Option<String>,
    pub path: Option<String>,
    pub scopes: Vec<String>,
    pub occurred_at: Timestamp,
    pub details: Value,
}

/// The audit row for one event of a token stream; `scopes` are the token's scopes (fixed at
/// creation). `None` for events outside token streams.
pub fn audit_row(event: &StoredEvent, decoded: &TokenEvent, scopes: &[String]) -> Option<AuditRow> {
    let token_id = event.stream_id.token_id()?;
    let (action, ip, path, details) = match decoded {
        TokenEvent::Created(c) => {
            let mut details = json!({
                "name": c.name,
                "environment": c.environment.as_str(),
                "expires_at": c.expires_at.to_rfc3339(),
                "rotated_from": c.rotated_from,
            });
            if !c.allowed_ips.is_empty() {
                details["allowed_ips"] = json!(c.allowed_ips);
            }
            (AuditAction::Created, None, None, details)
        }
        TokenEvent::Used(u) => (
            AuditAction::Used,
            u.ip.clone(),
            Some(u.path.clone()),
            json!({"method": u.method, "command": u.command, "user_agent": u.user_agent}),
        ),
        TokenEvent::UseDenied(d) => (
            AuditAction::Denied,
            d.ip.clone(),
            Some(d.path.clone()),
            json!({"reason": d.reason.as_str()}),
        ),
        TokenEvent::UseDeniedSummary(d) => (
            AuditAction::Denied,
            d.ip.clone(),
            Some(d.path.clone()),
            json!({
                "reason": d.reason.as_str(),
                "repeats": d.count,
                "first_at": d.first_at.to_rfc3339(),
                "last_at": d.last_at.to_rfc3339(),
                "window_secs": d.window_secs,
            }),
        ),
        TokenEvent::Revoked(r) => (
            AuditAction::Revoked,
            None,
            None,
            json!({"reason": r.reason, "revoked_by": r.actor}),
        ),
        TokenEvent::Rotated(r) => {
            let mut details = json!({
                "successor_id": r.successor_id,
                "grace_until": r.old_expires_at.to_rfc3339(),
            });
            if r.until_successor_used {
                details["until_successor_used"] = json!(true);
            }
            (AuditAction::Rotated, None, None, details)
        }
        // Where it was found is caller text: escaped wherever a row is shown.
        TokenEvent::LeakReported(l) => (
            AuditAction::LeakReported,
            None,
            None,
            json!({
                "url": l.url,
                "source": l.source,
                "token_type": l.token_type,
                "reporter": l.reporter,
            }),
        ),
    };
    let scopes = match decoded {
        TokenEvent::Created(c) => c.scopes.clone(),
        _ => scopes.to_vec(),
    };
    Some(AuditRow {
        position: event.position,
        event_id: event.event_id,
        action,
        token_id,
        actor: event.actor.clone(),
        ip,
        path,
        scopes,
        occurred_at: event.recorded_at,
        details,
    })
}
