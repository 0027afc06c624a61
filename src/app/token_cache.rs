//! The token projection in memory: token hashes to token state with no database round trip.
//! It holds compact entries ([`TokenEntry`]: status, scopes, expiry, links, versions), not
//! whole rows; what a page or `token show` adds is read from the stored `api_tokens` table,
//! which every append writes in its own transaction.
//!
//! It is loaded from the stored `api_tokens` projection at start, streamed row by row, and
//! advanced by every commit:
//! [`crate::app::Ledger`] folds this node's own appends in before it answers (so no caller
//! sees state older than its own writes), and [`TokenCache::spawn_tail`] folds in what other
//! processes append. It never writes to the store.

use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hashbrown::HashTable;
use tokenledger_events::{EventLog, StoredEvent, TokenEvent};
use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::token::TokenHash;
use crate::token_entry::TokenEntry;

/// How long a caller waits for its own group's other callers to fill a gap before it reads
/// the store.
const GAP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// How many events one catch-up read asks for.
const PAGE: usize = 1000;

/// Every token's compact entry, with look-ups by hash and by id. The entries sit in one
/// `Vec`; each index is a hash table of `u32` positions into it (about five bytes a token,
/// where a map keyed by a copy of the hash or id would take forty), hashed and compared
/// through the entry itself.
///
/// Public (as `app::TokenEntries`) for `bench/cache.sh`, which measures its memory per token.
#[derive(Default)]
pub struct Entries {
    entries: Vec<TokenEntry>,
    by_hash: HashTable<u32>,
    by_id: HashTable<u32>,
    /// Seeded per process: ids come from callers too (cursors, paths).
    hasher: RandomState,
    /// The last log position folded in.
    position: u64,
}

impl Entries {
    /// Room for `tokens` entries without growing: at start-up the count is read first, so
    /// the load never holds a grown and a growing copy at once.
    pub fn with_capacity(tokens: usize, position: u64) -> Entries {
        Entries {
            entries: Vec::with_capacity(tokens),
            by_hash: HashTable::with_capacity(tokens),
            by_id: HashTable::with_capacity(tokens),
            hasher: RandomState::new(),
            position,
        }
    }

    fn index_of_id(&self, id: &Uuid) -> Option<usize> {
        let entries = &self.entries;
        self.by_id
            .find(self.hasher.hash_one(id), |&i| {
                entries[i as usize].id() == *id
            })
            .map(|&i| i as usize)
    }

    fn index_of_hash(&self, hash: &TokenHash) -> Option<usize> {
        let entries = &self.entries;
        self.by_hash
            .find(self.hasher.hash_one(hash.0), |&i| {
                entries[i as usize].hash().as_ref() == Some(hash)
            })
            .map(|&i| i as usize)
    }

    /// Add an entry, or replace the one of the same id.
    pub fn insert(&mut self, entry: TokenEntry) {
        if let Some(i) = self.index_of_id(&entry.id()) {
            self.entries[i] = entry;
            self.index_hash(i);
            return;
        }
        // Four billion tokens would need another index type; the store refuses long before.
        let Ok(i) = u32::try_from(self.entries.len()) else {
            tracing::error!("the token cache is full; a token is left out of it");
            return;
        };
        let hasher = &self.hasher;
        let id_hash = hasher.hash_one(entry.id());
        self.entries.push(entry);
        let entries = &self.entries;
        self.by_id
            .insert_unique(id_hash, i, |&j| hasher.hash_one(entries[j as usize].id()));
        self.index_hash(i as usize);
    }

    fn index_hash(&mut self, i: usize) {
        let Some(hash) = self.entries[i].hash() else {
            return;
        };
        let hasher = &self.hasher;
        let entries = &self.entries;
        let rehash = |&j: &u32| {
            entries[j as usize]
                .hash()
                .map_or(0, |h| hasher.hash_one(h.0))
        };
        let i = i as u32;
        match self.by_hash.entry(
            hasher.hash_one(hash.0),
            |&j| entries[j as usize].hash() == Some(hash),
            rehash,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = i,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&TokenEntry> {
        self.index_of_id(id).map(|i| &self.entries[i])
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenEntry> {
        self.index_of_hash(hash).map(|i| &self.entries[i])
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &TokenEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Fold the next event of the log by the projection's rule
    /// (`tokenledger_projections::tokens::fold`): a stream's first `TokenCreated` makes its
    /// entry, later events change it once (an entry loaded from the stored table may already
    /// hold them), and events of streams with no entry change nothing.
    pub fn apply(&mut self, event: &StoredEvent, decoded: &TokenEvent) {
        self.position = self.position.max(event.position);
        let Some(id) = event.stream_id.token_id() else {
            return;
        };
        let index = self.index_of_id(&id);
        match (decoded, index) {
            (TokenEvent::Created(c), None) if c.token_id == id => {
                self.insert(TokenEntry::created(event, c));
            }
            (_, Some(i)) => {
                let entry = &mut self.entries[i];
                if event.position > entry.position() {
                    entry.apply(event, decoded);
                }
            }
            (_, None) => {}
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: Entries,
    /// Events that arrived ahead of a gap, folded once the gap is filled.
    ahead: BTreeMap<u64, (StoredEvent, TokenEvent)>,
}

/// The token projection in memory, as compact entries.
pub(crate) struct TokenCache {
    inner: RwLock<Inner>,
    /// Woken whenever events are folded in: a caller waiting for a gap below its own commit
    /// (usually the rest of its own group, folded that moment by their callers) waits here
    /// before it reads the store.
    folded: tokio::sync::Notify,
}

impl TokenCache {
    /// Load the stored projection row by row and catch up to the head.
    pub(crate) async fn load(store: &Store) -> Result<TokenCache, StoreError> {
        // Head first: the rows read next reflect at least this position, and folding an
        // event a row already holds changes nothing.
        let head = store.head().await?;
        let count = usize::try_from(store.token_count().await?).unwrap_or(0);
        // A little room for tokens created while the rows stream in.
        let mut entries = Entries::with_capacity(count + count / 64 + 16, head.position);
        store
            .stream_token_entries(&mut |entry| entries.insert(entry))
            .await?;
        let cache = TokenCache {
            inner: RwLock::new(Inner {
                entries,
                ahead: BTreeMap::new(),
            }),
            folded: tokio::sync::Notify::new(),
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
        self.read().entries.position()
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<TokenEntry> {
        self.read().entries.by_hash(hash).cloned()
    }

    pub fn get(&self, id: &Uuid) -> Option<TokenEntry> {
        self.read().entries.get(id).cloned()
    }

    /// Read the entries in place (counting copies nothing). Folds wait meanwhile, so `read`
    /// must not block.
    pub(crate) fn with_entries<R>(&self, read: impl FnOnce(&Entries) -> R) -> R {
        read(&self.read().entries)
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
            let next = inner.entries.position() + 1;
            if event.position > next {
                inner.ahead.insert(event.position, (event.clone(), d));
                continue;
            }
            // The next one, as a handler folding its own use usually finds it: folded
            // without a copy.
            if event.position == next {
                inner.entries.apply(event, &d);
            }
            loop {
                let next = inner.entries.position() + 1;
                let Some((event, d)) = inner.ahead.remove(&next) else {
                    break;
                };
                inner.entries.apply(&event, &d);
            }
        }
        let folded = inner.entries.position();
        inner.ahead.retain(|position, _| *position > folded);
        drop(inner);
        self.folded.notify_waiters();
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
    ///
    /// A gap below a caller's own commit is nearly always the rest of its own group, whose
    /// callers fold their events a moment later: wait for them (a little while) rather than
    /// read the group back from the store once per caller; then read what is still missing
    /// (another process's commit the tail has not folded yet).
    pub(crate) async fn reach(&self, store: &Store, position: u64) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + GAP_PATIENCE;
        while self.position() < position {
            let notified = self.folded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.position() >= position {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.catch_up(store).await?;
                break;
            }
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
