//! Signed checkpoints: the tree's size and root at a moment, signed by the log's keys as a
//! C2SP signed note, stored, and served to witnesses and monitors.
//!
//! The log never signs two checkpoints that are not consistent: before it signs a size it
//! proves, from the stored tree, that the new tree extends (or is a prefix of) the latest
//! checkpoint already signed, and refuses to sign when the proof does not hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenledger_events::merkle::verify_consistency;
use tokenledger_events::{Checkpoint, EventLog as _, SignedCheckpoint};

use crate::clock::Clock;
use crate::signing::SigningKeys;
use crate::store::{Store, StoreError, StoredCheckpoint};

/// `CHECKPOINT_EVERY`: sign once this many events were appended since the last checkpoint, or
/// once this long has passed with anything new, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEvery {
    pub events: Option<u64>,
    pub interval: Option<Duration>,
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery {
            events: Some(10_000),
            interval: Some(Duration::from_secs(60)),
        }
    }
}

/// Parse `CHECKPOINT_EVERY`: `10000` (events), `60s` (a duration) or both, `10000,60s`.
pub fn parse_checkpoint_every(raw: &str) -> Result<CheckpointEvery, String> {
    let bad = || {
        format!(
            "CHECKPOINT_EVERY={} is not understood; expected a number of events, a duration, \
             or both, like 10000, 60s or 10000,60s",
            crate::text::shown(raw)
        )
    };
    let mut every = CheckpointEvery {
        events: None,
        interval: None,
    };
    for part in raw.split(',').map(str::trim) {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = part.parse().map_err(|_| bad())?;
            if n == 0 || every.events.replace(n).is_some() {
                return Err(bad());
            }
        } else {
            let d = crate::config::parse_positive_duration(part).map_err(|_| bad())?;
            if every.interval.replace(d).is_some() {
                return Err(bad());
            }
        }
    }
    Ok(every)
}

/// Why a checkpoint was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored tree does not extend what was signed before: the log was changed behind the
    /// service's back. Nothing is signed.
    #[error(
        "refusing to sign the tree at size {size}: it is not consistent with the checkpoint \
         signed at size {signed} ({detail})"
    )]
    Inconsistent {
        size: u64,
        signed: u64,
        detail: String,
    },
    #[error("cannot sign a checkpoint: {0}")]
    Sign(String),
}

/// Signs checkpoints with the log's keys.
pub struct Checkpointer {
    store: Arc<Store>,
    keys: SigningKeys,
    clock: Arc<dyn Clock>,
    /// One signing at a time in this process, so two never race to store sizes out of order.
    signing: tokio::sync::Mutex<()>,
}

impl Checkpointer {
    pub fn new(store: Arc<Store>, keys: SigningKeys, clock: Arc<dyn Clock>) -> Checkpointer {
        Checkpointer {
            store,
            keys,
            clock,
            signing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Sign the tree at the log's head, unless the latest checkpoint is at it already; the
    /// checkpoint at the head either way (`None` for an empty log).
    pub async fn sign_head(&self) -> Result<Option<StoredCheckpoint>, CheckpointFailure> {
        let head = self.store.head().await.map_err(StoreError::from)?.position;
        if head == 0 {
            return Ok(None);
        }
        self.sign_at(head).await.map(Some)
    }

    /// Sign the tree of the first `size` events (at most the head), after proving it
    /// consistent with the latest checkpoint signed.
    pub async fn sign_at(&self, size: u64) -> Result<StoredCheckpoint, CheckpointFailure> {
        let _one = self.signing.lock().await;
        let root = self.store.tree_root(size).await?;
        let latest = self.store.signed_checkpoints(1).await?.into_iter().next();
        if let Some(latest) = &latest {
            if latest.size == size && latest.root == root {
                return Ok(latest.clone());
            }
            let (old, old_root, new, new_root) = if latest.size <= size {
                (latest.size, latest.root, size, root)
            } else {
                (size, root, latest.size, latest.root)
            };
            let proof = self.store.consistency_proof(old, new).await?;
            verify_consistency(old, &old_root, new, &new_root, &proof).map_err(|e| {
                CheckpointFailure::Inconsistent {
                    size,
                    signed: latest.size,
                    detail: e.to_string(),
                }
            })?;
        }
        let checkpoint = Checkpoint::new(self.keys.origin(), size, root)
            .map_err(|e| CheckpointFailure::Sign(e.to_string()))?;
        let note = self
            .keys
            .sign(&checkpoint.to_text())
            .map_err(|e| CheckpointFailure::Sign(e.to_string()))?;
        let stored = StoredCheckpoint {
            size,
            root,
            note: note.to_string(),
            signed_at: self.clock.now(),
        };
        self.store.save_checkpoint(&stored).await?;
        tracing::info!(size, key_ids = ?self.keys.verifier_keys().iter().map(|k| format!("{:08x}", k.key_id())).collect::<Vec<_>>(), "checkpoint signed");
        Ok(stored)
    }

    /// The stored checkpoint's note, opened with this log's keys: what a witness would check.
    pub fn open(&self, stored: &StoredCheckpoint) -> Result<SignedCheckpoint, String> {
        SignedCheckpoint::open(stored.note.as_bytes(), &self.keys.verifier_keys())
            .map_err(|e| e.to_string())
    }
}

/// Sign checkpoints as `every` says, until the checkpointer goes away (a worker of
/// [`crate::app::Application`]).
pub(crate) fn checkpoint_signer(
    checkpointer: &Arc<Checkpointer>,
    every: CheckpointEvery,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let checkpointer = Arc::downgrade(checkpointer);
    async move {
        let mut last_signed_at = Instant::now();
        let mut signed_size: Option<u64> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(c) = checkpointer.upgrade() else {
                return;
            };
            let head = match c.store.head().await {
                Ok(h) => h.position,
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint signer cannot read the head");
                    continue;
                }
            };
            let since = match signed_size {
                Some(s) => s,
                None => match c.store.signed_checkpoints(1).await {
                    Ok(latest) => latest.first().map_or(0, |l| l.size),
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint signer cannot read checkpoints");
                        continue;
                    }
                },
            };
            let new = head.saturating_sub(since);
            let due = new > 0
                && (every.events.is_some_and(|n| new >= n)
                    || every
                        .interval
                        .is_some_and(|d| last_signed_at.elapsed() >= d));
            if !due {
                signed_size = Some(since);
                continue;
            }
            match c.sign_at(head).await {
                Ok(signed) => {
                    signed_size = Some(signed.size);
                    last_signed_at = Instant::now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint not signed");
                    signed_size = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_every_takes_events_a_duration_or_both() {
        assert_eq!(
            parse_checkpoint_every("500"),
            Ok(CheckpointEvery {
                events: Some(500),
                interval: None
            })
        );
        assert_eq!(
            parse_checkpoint_every("30s"),
            Ok(CheckpointEvery {
                events: None,
                interval: Some(Duration::from_secs(30))
            })
        );
        assert_eq!(
            parse_checkpoint_every("10000, 1m"),
            Ok(CheckpointEvery {
                events: Some(10_000),
                interval: Some(Duration::from_secs(60))
            })
        );
        for bad in ["", "0", "1,2", "5s,6s", "ten", "-1", "0s"] {
            let err = parse_checkpoint_every(bad).expect_err(bad);
            assert!(err.contains("CHECKPOINT_EVERY"), "{err}");
        }
    }
}
