//! The group-commit writer: one task owns the write connection and drains every append request
//! waiting at that moment into one transaction. Each caller is answered only after COMMIT, so
//! every event is durable before anyone acts on it, and throughput grows with concurrency
//! instead of each append paying its own fsync.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokenledger_events::log::{Head, validate_batch};
use tokenledger_events::{AppendError, StoredEvent, StreamAppend};
use tokio::sync::{mpsc, oneshot, watch};

/// How many append requests one transaction takes at most; bounds the time one commit holds
/// the append lock.
const MAX_GROUP: usize = 512;

/// Told of each group commit (or failed group): how long each of its requests waited, from
/// reaching the queue to the answer. The writer knows nothing of what the caller does with it.
pub type CommitObserver = Arc<dyn Fn(&[Duration]) + Send + Sync>;

/// The answer to one append request.
pub(crate) type AppendResult = Result<Vec<StoredEvent>, AppendError>;

/// A backend's transactions.
pub(crate) trait GroupCommit: Send + 'static {
    /// Append every batch it can in one transaction (a refused batch fails alone), then commit
    /// once. Per-batch results, in order, and the head after COMMIT; `Err` when the transaction
    /// as a whole failed (nothing of it was committed).
    fn commit_group(
        &mut self,
        batches: &[Vec<StreamAppend>],
    ) -> impl Future<Output = Result<(Vec<AppendResult>, Head), AppendError>> + Send;
}

enum Job {
    Append {
        batch: Vec<StreamAppend>,
        reply: oneshot::Sender<AppendResult>,
        queued: Instant,
    },
}

/// The handle callers append through; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    head: watch::Receiver<Head>,
    /// Set once, by whoever serves metrics; read by the writer task after each group.
    observer: Arc<OnceLock<CommitObserver>>,
}

impl Writer {
    /// Start the writer task. `head` is the log head when it starts.
    pub(crate) fn spawn<C: GroupCommit>(mut committer: C, head: Head) -> Writer {
        let (jobs, mut rx) = mpsc::channel::<Job>(4 * MAX_GROUP);
        let (head_tx, head_rx) = watch::channel(head);
        let observer: Arc<OnceLock<CommitObserver>> = Arc::default();
        let observe = observer.clone();
        tokio::spawn(async move {
            let mut received = Vec::with_capacity(MAX_GROUP);
            let mut batches = Vec::with_capacity(MAX_GROUP);
            let mut replies = Vec::with_capacity(MAX_GROUP);
            let mut queued = Vec::with_capacity(MAX_GROUP);
            let mut waited = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut received, MAX_GROUP).await > 0 {
                for Job::Append {
                    batch,
                    reply,
                    queued: at,
                } in received.drain(..)
                {
                    batches.push(batch);
                    replies.push(reply);
                    queued.push(at);
                }
                if !batches.is_empty() {
                    match committer.commit_group(&batches).await {
                        Ok((results, head)) => {
                            head_tx.send_if_modified(|h| {
                                let advanced = head.position > h.position;
                                if advanced {
                                    *h = head;
                                }
                                advanced
                            });
                            for (reply, result) in replies.drain(..).zip(results) {
                                // A caller that went away still had its events committed.
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, batches = batches.len(), "group commit failed");
                            for reply in replies.drain(..) {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    batches.clear();
                    if let Some(observer) = observe.get() {
                        let now = Instant::now();
                        waited.extend(queued.iter().map(|at| now.duration_since(*at)));
                        observer(&waited);
                        waited.clear();
                    }
                    queued.clear();
                }
            }
        });
        Writer {
            jobs,
            head: head_rx,
            observer,
        }
    }

    /// Tell `observer` of every group from now on (the first observer set stays).
    pub(crate) fn observe(&self, observer: CommitObserver) {
        let _ = self.observer.set(observer);
    }

    /// Append one batch and wait for its COMMIT.
    pub(crate) async fn append(&self, batch: Vec<StreamAppend>) -> AppendResult {
        validate_batch(&batch)?;
        let (reply, answer) = oneshot::channel();
        let gone = || AppendError::Unavailable("the log writer has stopped".into());
        self.jobs
            .send(Job::Append {
                batch,
                reply,
                queued: Instant::now(),
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The head as of this node's last commit; wakes waiters in `wait_for`.
    pub(crate) fn head(&self) -> watch::Receiver<Head> {
        self.head.clone()
    }
}
