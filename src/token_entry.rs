//! The compact token entry: what authentication, the decisions and the monitoring list read of
//! a token, and nothing else. The in-memory token cache holds one per token (about 140 bytes,
//! no per-token heap allocation); names, creators, revoke reasons, last-use addresses and
//! counts stay in the stored `api_tokens` rows and are read from there when shown.
//!
//! An entry folds events by the rule of `tokenledger_projections::TokenRow` restricted to its
//! own fields: [`TokenEntry::of`] of a folded row equals the entry folded from the same events
//! (tested here, in the lifecycle tests and by the property tests). Pure: no I/O, no clock.

use std::fmt;
use std::sync::Arc;

use tokenledger_events::{
    Environment, StoredEvent, Timestamp, TokenCreated, TokenEvent, TokenHash,
};
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::allowlist::AllowList;
use crate::scope::{Scope, ScopeSet};

/// An optional instant in eight bytes (`Option<Timestamp>` takes sixteen): `i64::MIN`, long
/// before any recorded time, stands for none.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MaybeTime(i64);

impl MaybeTime {
    const NONE: MaybeTime = MaybeTime(i64::MIN);

    fn of(t: Option<Timestamp>) -> MaybeTime {
        t.map_or(MaybeTime::NONE, |t| MaybeTime(t.as_micros()))
    }

    fn get(self) -> Option<Timestamp> {
        (self != MaybeTime::NONE).then_some(Timestamp::from_micros(self.0))
    }
}

/// A token as the hot path sees it. `Debug` never shows its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    id: Uuid,
    /// All zeros with `has_hash` false when folded from an export without openings.
    hash: [u8; 32],
    created_at: Timestamp,
    expires_at: Timestamp,
    revoked_at: MaybeTime,
    last_used_at: MaybeTime,
    rotated_from: Option<Uuid>,
    rotated_to: Option<Uuid>,
    version: u64,
    position: u64,
    /// What few tokens have: scope names this version does not know, and a client
    /// allowlist. Shared, so copying an entry out of the cache never allocates.
    extra: Option<Arc<Extra>>,
    scopes: ScopeSet,
    environment: Environment,
    has_hash: bool,
    /// Its rotation's overlap ends at the successor's first use.
    until_successor_used: bool,
}

/// The rare parts of an entry, kept behind one pointer.
#[derive(Debug, PartialEq, Eq)]
struct Extra {
    /// Scope names this version does not know, as stored.
    legacy_scopes: Box<[Box<str>]>,
    allowed: Option<AllowList>,
}

/// The fields of a stored `api_tokens` row an entry is built from; the store streams these at
/// start-up without building whole rows.
pub struct EntryFields<'a> {
    pub id: Uuid,
    pub hash: Option<TokenHash>,
    pub environment: Environment,
    /// Space-separated scope names, as stored.
    pub scopes: &'a str,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
    pub last_used_at: Option<Timestamp>,
    pub version: u64,
    pub position: u64,
    /// Space-separated CIDR blocks, as stored; empty: any address.
    pub allowed_ips: &'a str,
    pub until_successor_used: bool,
}

/// The scope set of these names, and the entry's rare parts (unknown scope names and the
/// allowlist), allocated only when there are any.
fn scopes_of<'a, 'b>(
    names: impl IntoIterator<Item = &'a str>,
    allowed: impl IntoIterator<Item = &'b str>,
) -> (ScopeSet, Option<Arc<Extra>>) {
    let (set, unknown) = ScopeSet::parse(names);
    let allowed = AllowList::from_stored(allowed);
    let extra = (!unknown.is_empty() || allowed.is_some()).then(|| {
        Arc::new(Extra {
            legacy_scopes: unknown.into_iter().map(Box::from).collect(),
            allowed,
        })
    });
    (set, extra)
}

impl TokenEntry {
    pub fn from_fields(f: &EntryFields<'_>) -> TokenEntry {
        let (scopes, extra) = scopes_of(
            f.scopes.split_whitespace(),
            f.allowed_ips.split_whitespace(),
        );
        TokenEntry {
            id: f.id,
            hash: f.hash.map_or([0; 32], |h| h.0),
            has_hash: f.hash.is_some(),
            created_at: f.created_at,
            expires_at: f.expires_at,
            revoked_at: MaybeTime::of(f.revoked_at),
            last_used_at: MaybeTime::of(f.last_used_at),
            rotated_from: f.rotated_from,
            rotated_to: f.rotated_to,
            version: f.version,
            position: f.position,
            extra,
            scopes,
            environment: f.environment,
            until_successor_used: f.until_successor_used,
        }
    }

    /// The entry of a full row.
    pub fn of(row: &TokenRow) -> TokenEntry {
        let (scopes, extra) = scopes_of(
            row.scopes.iter().map(String::as_str),
            row.allowed_ips.iter().map(String::as_str),
        );
        TokenEntry {
            id: row.id,
            hash: row.hash.map_or([0; 32], |h| h.0),
            has_hash: row.hash.is_some(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: MaybeTime::of(row.revoked_at),
            last_used_at: MaybeTime::of(row.last_used_at),
            rotated_from: row.rotated_from,
            rotated_to: row.rotated_to,
            version: row.version,
            position: row.position,
            extra,
            scopes,
            environment: row.environment,
            until_successor_used: row.until_successor_used,
        }
    }

    /// A token's first event, as [`TokenRow::created`] folds it.
    pub fn created(event: &StoredEvent, c: &TokenCreated) -> TokenEntry {
        let hash = event
            .opening(TokenCreated::SECRET_FIELD)
            .and_then(|o| TokenHash::from_slice(&o.value));
        let (scopes, extra) = scopes_of(
            c.scopes.iter().map(String::as_str),
            c.allowed_ips.iter().map(String::as_str),
        );
        TokenEntry {
            id: c.token_id,
            hash: hash.map_or([0; 32], |h| h.0),
            has_hash: hash.is_some(),
            created_at: event.recorded_at,
            expires_at: c.expires_at,
            revoked_at: MaybeTime::NONE,
            last_used_at: MaybeTime::NONE,
            rotated_from: c.rotated_from,
            rotated_to: None,
            version: event.stream_version,
            position: event.position,
            extra,
            scopes,
            environment: c.environment,
            until_successor_used: false,
        }
    }

    /// Fold one later event of this token's stream: [`TokenRow::apply`] on these fields.
    pub fn apply(&mut self, event: &StoredEvent, decoded: &TokenEvent) {
        match decoded {
            TokenEvent::Created(_)
            | TokenEvent::UseDenied(_)
            | TokenEvent::UseDeniedSummary(_)
            | TokenEvent::LeakReported(_) => {}
            TokenEvent::Used(_) => self.last_used_at = MaybeTime::of(Some(event.recorded_at)),
            TokenEvent::Revoked(_) => {
                if self.revoked_at == MaybeTime::NONE {
                    self.revoked_at = MaybeTime::of(Some(event.recorded_at));
                }
            }
            TokenEvent::Rotated(r) => {
                self.rotated_to = Some(r.successor_id);
                self.expires_at = self.expires_at.min(r.old_expires_at);
                self.until_successor_used = r.until_successor_used;
            }
        }
        self.version = event.stream_version;
        self.position = event.position;
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The SHA-256 of the token, unless folded without openings.
    pub fn hash(&self) -> Option<TokenHash> {
        self.has_hash.then_some(TokenHash(self.hash))
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The current expiry; a rotation shortens it to the end of the grace period.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    pub fn revoked_at(&self) -> Option<Timestamp> {
        self.revoked_at.get()
    }

    pub fn last_used_at(&self) -> Option<Timestamp> {
        self.last_used_at.get()
    }

    pub fn rotated_from(&self) -> Option<Uuid> {
        self.rotated_from
    }

    pub fn rotated_to(&self) -> Option<Uuid> {
        self.rotated_to
    }

    /// Stream version of the last event folded in: the expected version for the next append.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Log position of the last event folded in.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }

    pub fn holds(&self, scope: Scope) -> bool {
        self.scopes.holds(scope)
    }

    /// The scope names held: the known ones in canonical order (the order tokens are stored
    /// with), then any this version does not know, in their stored order.
    pub fn scope_names(&self) -> Vec<String> {
        let known = self.scopes.iter().map(|s| s.as_str().to_owned());
        let legacy = self
            .extra
            .iter()
            .flat_map(|e| e.legacy_scopes.iter().map(|s| s.to_string()));
        known.chain(legacy).collect()
    }

    /// The token's client allowlist; `None`: any address.
    pub fn allowed(&self) -> Option<&AllowList> {
        self.extra.as_ref().and_then(|e| e.allowed.as_ref())
    }

    /// Whether its rotation's overlap ends at the successor's first use.
    pub fn until_successor_used(&self) -> bool {
        self.until_successor_used
    }

    /// [`TokenRow::status_at`], on the same fields.
    pub fn status_at(&self, now: Timestamp) -> TokenStatus {
        if self.revoked_at != MaybeTime::NONE {
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

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("id", &self.id)
            .field("hash", &self.has_hash.then_some("<redacted>"))
            .field("scopes", &self.scopes)
            .field("extra", &self.extra)
            .field("until_successor_used", &self.until_successor_used)
            .field("environment", &self.environment)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at())
            .field("rotated_to", &self.rotated_to)
            .field("version", &self.version)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_small() {
        // The cache's memory per token is mostly this; see bench/cache.sh.
        assert!(
            size_of::<TokenEntry>() <= 144,
            "{}",
            size_of::<TokenEntry>()
        );
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let fields = EntryFields {
            id: Uuid::nil(),
            hash: Some(TokenHash([0xab; 32])),
            environment: Environment::Test,
            scopes: "admin registry:admin",
            created_at: Timestamp::from_micros(1),
            expires_at: Timestamp::from_micros(2),
            revoked_at: None,
            rotated_from: None,
            rotated_to: None,
            last_used_at: None,
            version: 1,
            position: 1,
            allowed_ips: "10.0.0.0/8",
            until_successor_used: false,
        };
        let entry = TokenEntry::from_fields(&fields);
        let shown = format!("{entry:?}");
        assert!(
            !shown.contains("ab, ") && !shown.contains("abab"),
            "{shown}"
        );
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(entry.scope_names(), ["admin", "registry:admin"]);
    }
}
