//! The event vocabulary: every fact the log can hold about a token.
//!
//! Events carry no secret material. A token's hash appears only as a salted commitment
//! ([`Commitment`]); its opening is stored beside the log, never inside it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::primitives::{Commitment, Timestamp};

/// Which deployment a token belongs to; it is part of the token's visible prefix so a test token
/// can never authenticate against a production server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

/// A token was minted, either fresh or as the successor of a rotated token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    pub token_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub environment: Environment,
    pub expires_at: Timestamp,
    pub created_by: String,
    /// Commitment to the token's SHA-256 hash (field [`TokenCreated::SECRET_FIELD`]). The hash
    /// itself lives in the openings table so an export without openings reveals nothing.
    pub secret_commitment: Commitment,
    /// Set when this token is the successor of a rotation.
    pub rotated_from: Option<Uuid>,
    /// The client networks the token may be used from, as canonical CIDR blocks (`10.0.0.0/8`,
    /// `2001:db8::/32`); empty means any address. Absent from the payload when empty, so events
    /// written before allowlists existed keep their exact bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

impl TokenCreated {
    /// The opening field name under which the token hash is committed.
    pub const SECRET_FIELD: &'static str = "token_hash";
}

/// A token authenticated a request that was allowed to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUsed {
    pub ip: Option<String>,
    pub method: String,
    pub path: String,
    /// The console command or verify call that ran, when there is one.
    pub command: Option<String>,
    pub user_agent: Option<String>,
}

/// Why a known token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    Revoked,
    Expired,
    InsufficientScope,
    EnvironmentMismatch,
    /// The client's address is outside the token's allowlist.
    IpNotAllowed,
    /// A superseded token was presented after its successor took over: the rotation chain
    /// was revoked in the same append.
    ReuseDetected,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Revoked => "revoked",
            DenyReason::Expired => "expired",
            DenyReason::InsufficientScope => "insufficient_scope",
            DenyReason::EnvironmentMismatch => "environment_mismatch",
            DenyReason::IpNotAllowed => "ip_not_allowed",
            DenyReason::ReuseDetected => "reuse_detected",
        }
    }
}

/// A known token was presented and refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUseDenied {
    pub reason: DenyReason,
    pub ip: Option<String>,
    pub path: String,
}

/// Repeats of one denial (same token, reason and client IP) inside a denial window, counted
/// rather than recorded one by one: the first denial of the window is a [`TokenUseDenied`]
/// of its own, and this event carries how many followed it. It bounds what a caller with a
/// refused token can add to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUseDeniedSummary {
    pub reason: DenyReason,
    pub ip: Option<String>,
    /// The path of the last repeat.
    pub path: String,
    /// Repeats after the window's first denial.
    pub count: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The window's length, in seconds.
    pub window_secs: u64,
}

/// A token was revoked; it never authenticates again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRevoked {
    pub actor: String,
    pub reason: Option<String>,
}

/// A token was replaced by a successor; it keeps working until `old_expires_at` (the grace period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRotated {
    pub successor_id: Uuid,
    /// The old token's new expiry: the end of the grace period.
    pub old_expires_at: Timestamp,
    /// The overlap ends earlier, at the successor's first use: that use's append also revokes
    /// this token. Such a rotation has one holder, so this token presented after the switch
    /// is treated as reuse. Absent from the payload when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub until_successor_used: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A token was reported as leaked: found somewhere it should not be (GitHub's secret scanning,
/// a scanner or a person). Each report is kept, so every place a token was seen is on record;
/// a token still live when reported is revoked in the same append. No secret field: the
/// report names where, never what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLeakReported {
    /// Where the token was found (GitHub's `url`, a scanner's `location`), when given; caller
    /// text, bounded and with no control characters.
    pub url: Option<String>,
    /// GitHub's `source` (`content`, `commit`, `issue_comment`, ...), when given.
    pub source: Option<String>,
    /// The reporter's name for the kind of secret (GitHub's `type`), when given.
    pub token_type: Option<String>,
    /// Who reported it: `github`, `user:<id>` or `token:<id>`.
    pub reporter: String,
}

/// Every event the log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    Created(TokenCreated),
    Used(TokenUsed),
    UseDenied(TokenUseDenied),
    UseDeniedSummary(TokenUseDeniedSummary),
    Revoked(TokenRevoked),
    Rotated(TokenRotated),
    LeakReported(TokenLeakReported),
}

impl TokenEvent {
    /// A terminal event: after it, the token's stream accepts no use.
    pub fn closes_stream(&self) -> bool {
        matches!(self, TokenEvent::Revoked(_))
    }

    /// An event that may only be appended to an open stream.
    pub fn requires_open_stream(&self) -> bool {
        matches!(self, TokenEvent::Used(_))
    }

    /// The secret fields this event commits to, by opening field name.
    pub fn commitments(&self) -> Vec<(&'static str, Commitment)> {
        match self {
            TokenEvent::Created(c) => vec![(TokenCreated::SECRET_FIELD, c.secret_commitment)],
            _ => Vec::new(),
        }
    }
}

impl TokenEvent {
    /// The schema version new events are written with.
    pub const CURRENT_SCHEMA: u32 = 2;

    /// The stable name stored in the `event_type` column and the canonical bytes.
    pub fn event_type(&self) -> &'static str {
        match self {
            TokenEvent::Created(_) => "TokenCreated",
            TokenEvent::Used(_) => "TokenUsed",
            TokenEvent::UseDenied(_) => "TokenUseDenied",
            TokenEvent::UseDeniedSummary(_) => "TokenUseDeniedSummary",
            TokenEvent::Revoked(_) => "TokenRevoked",
            TokenEvent::Rotated(_) => "TokenRotated",
            TokenEvent::LeakReported(_) => "TokenLeakReported",
        }
    }
}

/// The SHA-256 of a token's plaintext: the only form of a token that is ever stored (in the
/// token projection, for lookup, and in the openings table). Never printed: `Debug` is
/// redacted and there is no `Display` or `Serialize`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        bytes.try_into().ok().map(TokenHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}
