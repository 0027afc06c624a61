//! The PostgreSQL backend, the production store. The single `log_head` row, locked
//! `FOR UPDATE` inside the append transaction, is the append lock for every node sharing the
//! database; each node's group-commit writer takes it once per group. A commit sends
//! `NOTIFY tokenledger_log` so other nodes' tails wake at once, but the wake-up is only a
//! hint: they read by position, and poll, for correctness.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use tokenledger_events::{EventLog, LogError, LogId};
use tokio::sync::{oneshot, watch};

use super::writer::{GroupCommit, Writer};
use tokenledger_projections::AuditRow;

use super::{AuditFilter, StoreError, wait_for_head};

super::sql::sql_event_log!(PgConnection, PgRow);

/// The channel commits notify on; the payload is the new head position.
const CHANNEL: &str = "tokenledger_log";

/// A connected PostgreSQL database, before its log is opened (migrations run here).
pub struct PgDb {
    pub(crate) pool: PgPool,
    options: PgConnectOptions,
}

impl PgDb {
    pub async fn connect(url: &str, target: &str) -> Result<PgDb, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("is not a usable PostgreSQL URL ({e})")))?
            .application_name("tokenledger");
        // One direct connection first: a pool would only report that it timed out, while a
        // connection says why (refused, unknown host, authentication, missing database).
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Unreachable {
                target: target.to_owned(),
                detail: e.to_string(),
            })?
            .close()
            .await
            .map_err(StoreError::db)?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unreachable {
                target: target.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(PgDb { pool, options })
    }

    pub async fn open_log(&self) -> Result<PgLog, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db)?;
        let log_id: uuid::Uuid = sqlx::query_scalar("SELECT log_id FROM log_head")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::not_migrated)?;
        let head = read_head(&mut conn).await.map_err(StoreError::db)?;
        drop(conn);
        let log_id = LogId(log_id);
        let write = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(self.options.clone());
        let writer = Writer::spawn(
            PgCommitter {
                pool: write,
                log_id,
            },
            head,
        );
        let (notified, wake) = watch::channel(head.position);
        tokio::spawn(listen(self.options.clone(), notified));
        Ok(PgLog {
            log_id,
            read: self.pool.clone(),
            writer,
            wake,
            options: self.options.clone(),
        })
    }
}

/// Forward commit notifications from every node into `notified` until the log is dropped.
async fn listen(options: PgConnectOptions, notified: watch::Sender<u64>) {
    let run = async {
        loop {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options.clone());
            if let Ok(mut listener) = PgListener::connect_with(&pool).await
                && listener.listen(CHANNEL).await.is_ok()
            {
                while let Ok(n) = listener.recv().await {
                    if let Ok(position) = n.payload().parse::<u64>() {
                        notified.send_if_modified(|p| {
                            let newer = position > *p;
                            *p = (*p).max(position);
                            newer
                        });
                    }
                }
            }
            // Lost the connection: readers keep polling meanwhile.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = notified.closed() => {}
    }
}

struct PgCommitter {
    pool: PgPool,
    log_id: LogId,
}

impl GroupCommit for PgCommitter {
    async fn commit_group(
        &mut self,
        batches: &[Vec<StreamAppend>],
    ) -> Result<(Vec<AppendResult>, Head), AppendError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        commit(&mut conn, self.log_id, batches, None).await
    }
}

fn unavailable(e: sqlx::Error) -> AppendError {
    AppendError::Unavailable(e.to_string())
}

/// Take the append lock and read the head under it, in one round trip.
async fn lock_head(conn: &mut PgConnection) -> Result<Head, sqlx::Error> {
    let row = sqlx::query("SELECT position, hash FROM log_head FOR UPDATE")
        .fetch_one(&mut *conn)
        .await?;
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(Head {
        position: from_sql(row.try_get("position")?, "position")?,
        hash: Hash::from_slice(&hash).ok_or_else(|| decode_err("head hash is not 32 bytes"))?,
    })
}

/// One transaction: lock the head row, append every batch, move the head, COMMIT.
/// `hold` keeps the transaction open until it resolves (see [`PgLog::append_held`]).
async fn commit(
    conn: &mut PgConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    hold: Option<oneshot::Receiver<()>>,
) -> Result<(Vec<AppendResult>, Head), AppendError> {
    let mut tx = conn.begin().await.map_err(unavailable)?;
    let head = lock_head(&mut tx).await.map_err(unavailable)?;
    let mut sealer = Sealer::new(log_id, head);
    let results = append_group(&mut tx, &mut sealer, batches)
        .await
        .map_err(unavailable)?;
    if sealer.head() != head {
        // The log_head_notify trigger tells the other nodes.
        write_head(&mut tx, sealer.head())
            .await
            .map_err(unavailable)?;
    }
    if let Some(hold) = hold {
        let _ = hold.await;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok((results, sealer.head()))
}

/// The PostgreSQL event log.
pub struct PgLog {
    log_id: LogId,
    read: PgPool,
    writer: Writer,
    /// The newest head position another node announced.
    wake: watch::Receiver<u64>,
    options: PgConnectOptions,
}

impl PgLog {
    /// Append through a connection of its own whose transaction stays open, holding the head
    /// row lock, until `release` resolves: a slow appender, for contract tests of what readers
    /// and other appenders see meanwhile.
    #[doc(hidden)]
    pub async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        tokenledger_events::log::validate_batch(&batch)?;
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(unavailable)?;
        let (mut results, _) = commit(&mut conn, self.log_id, &[batch], Some(release)).await?;
        results.remove(0)
    }

    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, LogError> {
        self.read.acquire().await.map_err(log_unavailable)
    }

    pub(crate) async fn token(&self, id: Uuid) -> Result<Option<TokenRow>, StoreError> {
        token_by_id(&mut *self.reader().await?, id)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<TokenRow>, StoreError> {
        token_by_hash(&mut *self.reader().await?, hash)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        all_tokens(&mut *self.reader().await?)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        audit_query(&mut *self.reader().await?, filter)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        checkpoints(&mut *self.reader().await?)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn audit_step(&self, limit: usize) -> Result<(u64, usize), StoreError> {
        let mut conn = self.read.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn.begin().await.map_err(StoreError::db)?;
        // The checkpoint row is the subscriber's lock: one step at a time, across nodes.
        sqlx::query(
            "SELECT position FROM projection_checkpoints WHERE name = 'audit_logs' FOR UPDATE",
        )
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let step = audit_step(&mut tx, limit).await.map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(step)
    }

    pub(crate) async fn rebuild(&self) -> Result<(u64, usize), StoreError> {
        let mut conn = self.read.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn.begin().await.map_err(StoreError::db)?;
        // The append lock, then every projection's checkpoint: no append and no subscriber
        // step interleaves with the rebuild.
        lock_head(&mut tx).await.map_err(StoreError::db)?;
        sqlx::query("SELECT position FROM projection_checkpoints FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        let rebuilt = rebuild(&mut tx).await.map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(rebuilt)
    }
}

fn log_unavailable(e: sqlx::Error) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl EventLog for PgLog {
    fn log_id(&self) -> LogId {
        self.log_id
    }

    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        self.writer.append(batch).await
    }

    async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        let mut conn = self.reader().await?;
        read_from(&mut conn, after, limit)
            .await
            .map_err(log_unavailable)
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
        let mut conn = self.reader().await?;
        read_stream(&mut conn, stream)
            .await
            .map_err(log_unavailable)
    }

    async fn head(&self) -> Result<Head, LogError> {
        let mut conn = self.reader().await?;
        read_head(&mut conn).await.map_err(log_unavailable)
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> Result<Head, LogError> {
        let remote = self.wake.clone();
        wait_for_head(self, self.writer.head(), Some(remote), position, timeout).await
    }
}
