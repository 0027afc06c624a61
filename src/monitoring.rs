//! The seed guide's monitoring list: tokens worth a human's look. Pure: a token's compact
//! entry, whether an address was first seen in the window, and `now` in, its flags out
//! ([`Monitor`]); the list is read a page at a time by `app`, with names from the stored rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokenledger_events::Timestamp;
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::scope::Scope;
use crate::token_entry::TokenEntry;

/// Thresholds; the defaults are the seed guide's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaleParams {
    /// Unused for at least this many days.
    pub unused_days: u32,
    /// Expiring within this many days.
    pub expiring_days: u32,
    /// A use from a new IP within this many hours.
    pub new_ip_hours: u32,
}

impl Default for StaleParams {
    fn default() -> Self {
        StaleParams {
            unused_days: 90,
            expiring_days: 7,
            new_ip_hours: 24,
        }
    }
}

/// Why a token is on the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Unused,
    ExpiringSoon,
    AdminScope,
    NewIp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Flagged {
    pub token_id: Uuid,
    pub name: String,
    pub flags: Vec<Flag>,
    pub last_used_at: Option<String>,
    pub expires_at: String,
    /// For `new_ip`: the addresses first seen within the window.
    pub new_ips: Vec<String>,
}

const DAY: u64 = 86_400;

/// The start of the "new IP" window: an address whose first use is at or after it is new.
pub fn new_ip_window_start(now: Timestamp, p: StaleParams) -> Timestamp {
    now.minus(Duration::from_secs(u64::from(p.new_ip_hours) * 3600))
}

/// The thresholds as instants at one `now`: what flags a row.
#[derive(Clone, Copy, Debug)]
pub struct Monitor {
    now: Timestamp,
    unused_since: Timestamp,
    expiring_by: Timestamp,
}

impl Monitor {
    pub fn new(now: Timestamp, p: StaleParams) -> Monitor {
        Monitor {
            now,
            unused_since: now.minus(Duration::from_secs(u64::from(p.unused_days) * DAY)),
            expiring_by: now.plus(Duration::from_secs(u64::from(p.expiring_days) * DAY)),
        }
    }

    /// Why `row` is on the list; empty (and unallocated) when it is not. Only usable tokens
    /// (active or in a rotation grace period) are flagged. `new_ip`: an address was first
    /// used at or after [`new_ip_window_start`].
    pub fn flags(&self, token: &TokenEntry, new_ip: bool) -> Vec<Flag> {
        let mut flags = Vec::new();
        if !matches!(
            token.status_at(self.now),
            TokenStatus::Active | TokenStatus::RotatedInGrace
        ) {
            return flags;
        }
        if token.last_used_at().unwrap_or(token.created_at()) <= self.unused_since {
            flags.push(Flag::Unused);
        }
        if token.expires_at() <= self.expiring_by {
            flags.push(Flag::ExpiringSoon);
        }
        if token.holds(Scope::Admin) {
            flags.push(Flag::AdminScope);
        }
        if new_ip {
            flags.push(Flag::NewIp);
        }
        flags
    }
}

impl Flagged {
    pub fn new(row: &TokenRow, flags: Vec<Flag>, new_ips: Vec<String>) -> Flagged {
        Flagged {
            token_id: row.id,
            name: row.name.clone(),
            flags,
            last_used_at: row.last_used_at.map(Timestamp::to_rfc3339),
            expires_at: row.expires_at.to_rfc3339(),
            new_ips,
        }
    }
}
