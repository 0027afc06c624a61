//! Authentication of API tokens against the in-memory token projection.
//!
//! [`TokenCache`] maps token hashes to token state with no database round trip. It is loaded
//! from the stored `api_tokens` projection at start and advanced by every commit: this node's
//! own appends are folded in as they return (so it never answers from state older than its
//! own writes), and a tail task folds in what other processes append.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokenledger_events::{DenyReason, EventLog, StoredEvent, TokenEvent};
use tokenledger_projections::{TokenRow, TokenTable};
use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::token::{self, Environment, TokenHash, TokenPrefix};

/// How many events one catch-up read asks for.
const PAGE: usize = 1000;

#[derive(Default)]
struct Inner {
    table: TokenTable,
    /// Events that arrived ahead of a gap, folded once the gap is filled.
    ahead: BTreeMap<u64, (StoredEvent, TokenEvent)>,
}

/// The token projection in memory.
pub struct TokenCache {
    inner: RwLock<Inner>,
}

impl TokenCache {
    /// Load the stored projection and catch up to the head.
    pub async fn load(store: &Store) -> Result<TokenCache, StoreError> {
        // Head first: the rows read next reflect at least this position, and folding an
        // event a row already holds changes nothing.
        let head = store.head().await?;
        let rows = store.tokens().await?;
        let cache = TokenCache {
            inner: RwLock::new(Inner {
                table: TokenTable::from_rows(rows, head.position),
                ahead: BTreeMap::new(),
            }),
        };
        cache.catch_up(store).await?;
        Ok(cache)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last log position folded in.
    pub fn position(&self) -> u64 {
        self.read().table.position()
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<TokenRow> {
        self.read().table.by_hash(hash).cloned()
    }

    pub fn get(&self, id: &Uuid) -> Option<TokenRow> {
        self.read().table.get(id).cloned()
    }

    pub fn rows(&self) -> Vec<TokenRow> {
        self.read().table.rows().into_iter().cloned().collect()
    }

    /// Fold committed events in position order; events past a gap wait for it to fill.
    /// Events already folded are ignored, so callers may hand in overlapping ranges.
    pub fn apply(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        let mut decoded = Vec::with_capacity(events.len());
        for e in events {
            let d = e.decode().map_err(|err| {
                StoreError::Db(format!(
                    "event at position {} does not decode: {err}",
                    e.position
                ))
            })?;
            decoded.push((e, d));
        }
        let mut inner = self.write();
        for (event, d) in decoded {
            let next = inner.table.position() + 1;
            if event.position > next {
                inner.ahead.insert(event.position, (event.clone(), d));
                continue;
            }
            // The next one, as a handler folding its own use usually finds it: folded
            // without a copy.
            if event.position == next {
                inner.table.apply(event, &d);
            }
            loop {
                let next = inner.table.position() + 1;
                let Some((event, d)) = inner.ahead.remove(&next) else {
                    break;
                };
                inner.table.apply(&event, &d);
            }
        }
        let folded = inner.table.position();
        inner.ahead.retain(|position, _| *position > folded);
        Ok(())
    }

    /// Read and fold everything committed after the current position.
    pub async fn catch_up(&self, store: &Store) -> Result<u64, StoreError> {
        loop {
            let after = self.position();
            let page = store.read_from(after, PAGE).await?;
            let full = page.len() == PAGE;
            self.apply(&page)?;
            if !full {
                return Ok(self.position());
            }
        }
    }

    /// Make sure everything up to `position` is folded in.
    pub async fn reach(&self, store: &Store, position: u64) -> Result<(), StoreError> {
        if self.position() < position {
            self.catch_up(store).await?;
        }
        Ok(())
    }

    /// Follow the log for appends made elsewhere, until the store goes away.
    pub fn spawn_tail(self: &Arc<Self>, store: &Arc<Store>) -> tokio::task::JoinHandle<()> {
        let cache = Arc::downgrade(self);
        let store = Arc::downgrade(store);
        tokio::spawn(async move {
            loop {
                let (Some(c), Some(s)) = (cache.upgrade(), store.upgrade()) else {
                    return;
                };
                let target = c.position() + 1;
                match s.wait_for(target, Duration::from_secs(1)).await {
                    Ok(head) if head.position >= target => {
                        // This node's own commits are usually folded by their callers a
                        // moment later; give them that moment before reading.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if c.position() < head.position
                            && let Err(e) = c.catch_up(&s).await
                        {
                            tracing::warn!(error = %e, "token projection could not catch up");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "token projection tail cannot read the head");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    }
}

/// Why a presented credential was refused, before or after its use was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    MissingCredentials,
    /// Not of our form, prefix or checksum.
    Malformed,
    /// Of the other environment (and unknown here).
    EnvironmentMismatch,
    /// Well-formed but not a token of this deployment.
    Unknown,
    /// A known token, refused; the denial is recorded.
    Denied {
        reason: DenyReason,
        /// For `InsufficientScope`: the scopes any one of which would have done.
        required_any: Vec<String>,
    },
}

impl Refusal {
    /// DESIGN's exact answer: status and message.
    pub fn answer(&self, server_environment: Environment) -> (u16, String) {
        match self {
            Refusal::MissingCredentials => (401, "Missing credentials".into()),
            Refusal::Malformed => (401, "Malformed token".into()),
            Refusal::EnvironmentMismatch
            | Refusal::Denied {
                reason: DenyReason::EnvironmentMismatch,
                ..
            } => (
                401,
                format!(
                    "Token environment mismatch: expected {}",
                    server_environment.as_str()
                ),
            ),
            Refusal::Unknown => (401, "Invalid token".into()),
            Refusal::Denied {
                reason: DenyReason::Revoked,
                ..
            } => (401, "Token has been revoked".into()),
            Refusal::Denied {
                reason: DenyReason::Expired,
                ..
            } => (401, "Token has expired".into()),
            Refusal::Denied {
                reason: DenyReason::InsufficientScope,
                required_any,
            } => (
                403,
                format!("Missing required scope: {}", required_any.join(" or ")),
            ),
        }
    }
}

/// What a presented string is: a known token (whatever its state), or a refusal that needs
/// no recording.
pub fn identify(
    cache: &TokenCache,
    raw: &str,
    prefix: &TokenPrefix,
    server_environment: Environment,
) -> Result<TokenRow, Refusal> {
    let parsed = token::parse(raw.trim(), prefix).map_err(|_| Refusal::Malformed)?;
    match cache.by_hash(&parsed.hash) {
        Some(row) => Ok(row),
        None if parsed.environment != server_environment => Err(Refusal::EnvironmentMismatch),
        None => Err(Refusal::Unknown),
    }
}

/// Of `required_any` alternatives in turn (each a set, any one of which suffices), the first
/// one `row` does not satisfy; empty when it satisfies all.
pub fn unmet(row: &TokenRow, requirements: &[&[&str]]) -> Vec<String> {
    requirements
        .iter()
        .find(|any| !any.iter().any(|s| row.scopes.iter().any(|held| held == s)))
        .map(|any| any.iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default()
}
