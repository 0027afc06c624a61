//! The token table: one row per token, folded from its stream.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;

use serde::Serialize;
use tokenledger_events::{
    Environment, StoredEvent, Timestamp, TokenCreated, TokenEvent, TokenHash,
};
use uuid::Uuid;

/// A token as its events make it. `hash` comes from the opening of its `TokenCreated`; it is
/// `None` when folding an export without openings. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub environment: Environment,
    #[serde(skip)]
    pub hash: Option<TokenHash>,
    pub created_at: Timestamp,
    pub created_by: String,
    /// The current expiry; a rotation shortens it to the end of the grace period.
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
    pub rotated_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub last_used_ip: Option<String>,
    pub last_used_path: Option<String>,
    pub use_count: u64,
    pub denied_count: u64,
    /// Stream version of the last event folded in: the expected version for the next append.
    pub version: u64,
    /// Log position of the last event folded in.
    pub position: u64,
    /// The client networks the token may be used from (canonical CIDR blocks); empty: any.
    pub allowed_ips: Vec<String>,
    /// Its rotation's overlap ends at the successor's first use (see
    /// [`tokenledger_events::TokenRotated::until_successor_used`]).
    pub until_successor_used: bool,
}

impl fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("environment", &self.environment)
            .field("hash", &self.hash.map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("rotated_to", &self.rotated_to)
            .field("use_count", &self.use_count)
            .field("denied_count", &self.denied_count)
            .field("allowed_ips", &self.allowed_ips)
            .field("until_successor_used", &self.until_successor_used)
            .field("version", &self.version)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// A token's status at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    /// Rotated, and still inside its grace period: it works until `expires_at`.
    RotatedInGrace,
    Expired,
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::RotatedInGrace => "rotated_in_grace",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        }
    }
}

impl TokenRow {
    pub fn created(event: &StoredEvent, c: &TokenCreated) -> TokenRow {
        let hash = event
            .opening(TokenCreated::SECRET_FIELD)
            .and_then(|o| TokenHash::from_slice(&o.value));
        TokenRow {
            id: c.token_id,
            name: c.name.clone(),
            scopes: c.scopes.clone(),
            environment: c.environment,
            hash,
            created_at: event.recorded_at,
            created_by: c.created_by.clone(),
            expires_at: c.expires_at,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            rotated_from: c.rotated_from,
            rotated_to: None,
            rotated_at: None,
            last_used_at: None,
            last_used_ip: None,
            last_used_path: None,
            use_count: 0,
            denied_count: 0,
            version: event.stream_version,
            position: event.position,
            allowed_ips: c.allowed_ips.clone(),
            until_successor_used: false,
        }
    }

    /// Fold one later event of this token's stream.
    pub fn apply(&mut self, event: &StoredEvent, decoded: &TokenEvent) {
        match decoded {
            // A second TokenCreated on a stream cannot be appended by the lifecycle; if one is
            // in the log it changes nothing here.
            TokenEvent::Created(_) => {}
            TokenEvent::Used(u) => {
                self.last_used_at = Some(event.recorded_at);
                self.last_used_ip = u.ip.clone();
                self.last_used_path = Some(u.path.clone());
                self.use_count += 1;
            }
            TokenEvent::UseDenied(_) => self.denied_count += 1,
            TokenEvent::UseDeniedSummary(d) => {
                self.denied_count = self.denied_count.saturating_add(d.count);
            }
            TokenEvent::Revoked(r) => {
                if self.revoked_at.is_none() {
                    self.revoked_at = Some(event.recorded_at);
                    self.revoked_by = Some(r.actor.clone());
                    self.revoke_reason = r.reason.clone();
                }
            }
            TokenEvent::Rotated(r) => {
                self.rotated_to = Some(r.successor_id);
                self.rotated_at = Some(event.recorded_at);
                self.expires_at = self.expires_at.min(r.old_expires_at);
                self.until_successor_used = r.until_successor_used;
            }
            // A report changes nothing by itself: a live token's revocation is its own event,
            // appended with it.
            TokenEvent::LeakReported(_) => {}
        }
        self.version = event.stream_version;
        self.position = event.position;
    }

    pub fn status_at(&self, now: Timestamp) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if now >= self.expires_at {
            TokenStatus::Expired
        } else if self.rotated_to.is_some() {
            TokenStatus::RotatedInGrace
        } else {
            TokenStatus::Active
        }
    }
}

/// Fold one event into `rows` (the rows of at least the event's token); returns the id of the
/// row it changed. The one folding rule, shared by the in-memory table and the stored one.
/// Events of streams that are not token streams, or of a token whose `TokenCreated` was never
/// seen, change nothing.
pub fn fold(
    rows: &mut HashMap<Uuid, TokenRow>,
    event: &StoredEvent,
    decoded: &TokenEvent,
) -> Option<Uuid> {
    let id = event.stream_id.token_id()?;
    match decoded {
        TokenEvent::Created(c) if c.token_id == id && !rows.contains_key(&id) => {
            rows.insert(id, TokenRow::created(event, c));
        }
        _ => {
            let row = rows.get_mut(&id)?;
            // A row loaded from a stored projection may already hold this event.
            if event.position > row.position {
                row.apply(event, decoded);
            }
        }
    }
    Some(id)
}

/// Every token, with a lookup by hash for authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenTable {
    rows: HashMap<Uuid, TokenRow>,
    by_hash: HashMap<TokenHash, Uuid>,
    /// Every id of `rows`, ordered: lists are read a page at a time from a cursor, which a
    /// hash map cannot resume without sorting every row. UUIDv7, so creation order.
    ids: BTreeSet<Uuid>,
    position: u64,
}

impl TokenTable {
    /// A table from stored rows that reflect the log up to `position` (rows may already hold
    /// later events; folding those again changes nothing).
    pub fn from_rows(rows: impl IntoIterator<Item = TokenRow>, position: u64) -> TokenTable {
        let mut table = TokenTable {
            position,
            ..TokenTable::default()
        };
        for row in rows {
            if let Some(hash) = row.hash {
                table.by_hash.insert(hash, row.id);
            }
            table.ids.insert(row.id);
            table.rows.insert(row.id, row);
        }
        table
    }

    /// Fold the next event of the log.
    pub fn apply(&mut self, event: &StoredEvent, decoded: &TokenEvent) {
        self.position = self.position.max(event.position);
        if let Some(id) = fold(&mut self.rows, event, decoded) {
            if matches!(decoded, TokenEvent::Created(_)) {
                self.ids.insert(id);
            }
            if let Some(hash) = self.rows[&id].hash {
                self.by_hash.insert(hash, id);
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&TokenRow> {
        self.rows.get(id)
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenRow> {
        self.by_hash.get(hash).and_then(|id| self.rows.get(id))
    }

    /// Every row, oldest first.
    pub fn rows(&self) -> Vec<&TokenRow> {
        let mut rows: Vec<_> = self.rows.values().collect();
        rows.sort_by_key(|r| (r.created_at, r.id));
        rows
    }

    /// Every row, in no particular order: for counting, without sorting.
    pub fn iter(&self) -> impl Iterator<Item = &TokenRow> {
        self.rows.values()
    }

    /// The rows with ids after `after` (all of them for `None`), in id order: a page is
    /// read from here, costing what it scans rather than a sort of the whole table.
    pub fn after(&self, after: Option<Uuid>) -> impl Iterator<Item = &TokenRow> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.ids
            .range((start, Bound::Unbounded))
            .filter_map(|id| self.rows.get(id))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The last log position folded in.
    pub fn position(&self) -> u64 {
        self.position
    }
}
