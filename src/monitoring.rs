//! The seed guide's monitoring list: tokens worth a human's look. Pure: rows, first-seen
//! addresses and `now` in, flagged tokens out.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokenledger_events::Timestamp;
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::scope::Scope;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Unused,
    ExpiringSoon,
    AdminScope,
    NewIp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// Flag the usable tokens (active or in a rotation grace period) of `rows`. `new_ips` holds,
/// per token, the addresses first used at or after [`new_ip_window_start`].
pub fn stale(
    rows: &[TokenRow],
    mut new_ips: HashMap<Uuid, Vec<String>>,
    now: Timestamp,
    p: StaleParams,
) -> Vec<Flagged> {
    let unused_since = now.minus(Duration::from_secs(u64::from(p.unused_days) * DAY));
    let expiring_by = now.plus(Duration::from_secs(u64::from(p.expiring_days) * DAY));
    let mut out = Vec::new();
    for row in rows {
        if !matches!(
            row.status_at(now),
            TokenStatus::Active | TokenStatus::RotatedInGrace
        ) {
            continue;
        }
        let mut flags = Vec::new();
        if row.last_used_at.unwrap_or(row.created_at) <= unused_since {
            flags.push(Flag::Unused);
        }
        if row.expires_at <= expiring_by {
            flags.push(Flag::ExpiringSoon);
        }
        if Scope::Admin.held_by(&row.scopes) {
            flags.push(Flag::AdminScope);
        }
        let ips = new_ips.remove(&row.id).unwrap_or_default();
        if !ips.is_empty() {
            flags.push(Flag::NewIp);
        }
        if !flags.is_empty() {
            out.push(Flagged {
                token_id: row.id,
                name: row.name.clone(),
                flags,
                last_used_at: row.last_used_at.map(Timestamp::to_rfc3339),
                expires_at: row.expires_at.to_rfc3339(),
                new_ips: ips,
            });
        }
    }
    out
}
