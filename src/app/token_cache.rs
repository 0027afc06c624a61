//! The token projection in memory: token hashes to token state with no database round trip.
//!
//! It is loaded from the stored `api_tokens` projection at start and advanced by every commit:
//! [`crate::app::Ledger`] folds this node's own appends in before it answers (so no caller
//! sees state older than its own writes), and [`TokenCache::spawn_tail`] folds in what other
//! processes append. It never writes to the store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokenledger_events::{EventLog, StoredEvent, TokenEvent};
use tokenledger_projections::{TokenRow, TokenTable};
use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::token::TokenHash;

/// How many events one catch-up read asks for.
const PAGE: usize = 1000;

#[derive(Default)]
struct Inner {
    table: TokenTable,
    /// Events that arrived ahead of a gap, folded once the gap is filled.
    ahead: BTreeMap<u64, (StoredEvent, TokenEvent)>,
}

/// The token projection in memory.
pub(crate) struct TokenCache {
    inner: RwLock<Inner>,
}

impl TokenCache {
    /// Load the stored projection and catch up to the head.
    pub(crate) async fn load(store: &Store) -> Result<TokenCache, StoreError> {
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
    pub(crate) fn position(&self) -> u64 {
        self.read().table.position()
    }

    pub(crate) fn by_hash(&self, hash: &TokenHash) -> Option<TokenRow> {
        self.read().table.by_hash(hash).cloned()
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<TokenRow> {
        self.read().table.get(id).cloned()
    }

    pub(crate) fn rows(&self) -> Vec<TokenRow> {
        self.read().table.rows().into_iter().cloned().collect()
    }

    /// Read the table in place (a page copies only its own rows). Folds wait meanwhile, so
    /// `read` must not block.
    pub(crate) fn with_table<R>(&self, read: impl FnOnce(&TokenTable) -> R) -> R {
        read(&self.read().table)
    }

    /// Fold committed events in position order; events past a gap wait for it to fill.
    /// Events already folded are ignored, so callers may hand in overlapping ranges.
    pub(crate) fn apply(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
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
    pub(crate) async fn catch_up(&self, store: &Store) -> Result<u64, StoreError> {
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
    pub(crate) async fn reach(&self, store: &Store, position: u64) -> Result<(), StoreError> {
        if self.position() < position {
            self.catch_up(store).await?;
        }
        Ok(())
    }

    /// Follow the log for appends made elsewhere, until the store goes away (a worker of
    /// [`crate::app::Application`]).
    pub(crate) fn tail(
        self: &Arc<Self>,
        store: &Arc<Store>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let cache = Arc::downgrade(self);
        let store = Arc::downgrade(store);
        async move {
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
        }
    }
}
