//! The SQLite backend, the embedded default: WAL, `synchronous=FULL`, one writer connection
//! owned by the group-commit task, and `BEGIN IMMEDIATE` as the append lock (it also excludes
//! other processes, such as the CLI appending while a server runs).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use tokenledger_events::{EventLog, LogError, LogId};
use tokio::sync::oneshot;

use super::writer::{GroupCommit, Writer};
use tokenledger_projections::AuditRow;

use super::{AuditFilter, StoreError, wait_for_head};

super::sql::sql_event_log!(SqliteConnection, SqliteRow);

/// How long a writer waits for another process holding the SQLite write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected SQLite database, before its log is opened (migrations run here).
pub struct SqliteDb {
    /// The single connection appends go through.
    pub(crate) write: SqlitePool,
    options: SqliteConnectOptions,
}

impl SqliteDb {
    pub async fn connect(url: &str) -> Result<SqliteDb, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("is not a usable SQLite URL ({e})")))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if options.get_filename().as_os_str() == ":memory:"
            || options.get_filename().as_os_str().is_empty()
        {
            return Err(StoreError::BadUrl(
                "names an in-memory SQLite database; the log must be durable: use a file, \
                 e.g. sqlite://tokenledger.db?mode=rwc"
                    .into(),
            ));
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unreachable {
                target: options.get_filename().display().to_string(),
                detail: e.to_string(),
            })?;
        Ok(SqliteDb { write, options })
    }

    pub async fn open_log(&self) -> Result<SqliteLog, StoreError> {
        let mut conn = self.write.acquire().await.map_err(StoreError::db)?;
        let log_id: Vec<u8> = sqlx::query_scalar("SELECT log_id FROM log_head")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::not_migrated)?;
        let log_id = LogId(
            uuid::Uuid::from_slice(&log_id)
                .map_err(|_| StoreError::Db("log_head.log_id is not 16 bytes".into()))?,
        );
        let head = read_head(&mut conn).await.map_err(StoreError::db)?;
        drop(conn);
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(self.options.clone().read_only(true))
            .await
            .map_err(StoreError::db)?;
        let writer = Writer::spawn(
            SqliteCommitter {
                pool: self.write.clone(),
                log_id,
            },
            head,
        );
        let projector = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.options.clone());
        Ok(SqliteLog {
            log_id,
            read,
            writer,
            projector,
            options: self.options.clone(),
        })
    }
}

struct SqliteCommitter {
    pool: SqlitePool,
    log_id: LogId,
}

impl GroupCommit for SqliteCommitter {
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

/// One transaction: take the write lock, append every batch, move the head, COMMIT.
/// `hold` keeps the transaction open until it resolves (see [`SqliteLog::append_held`]).
async fn commit(
    conn: &mut SqliteConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    hold: Option<oneshot::Receiver<()>>,
) -> Result<(Vec<AppendResult>, Head), AppendError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(unavailable)?;
    let head = read_head(&mut tx).await.map_err(unavailable)?;
    let mut sealer = Sealer::new(log_id, head);
    let results = append_group(&mut tx, &mut sealer, batches)
        .await
        .map_err(unavailable)?;
    if sealer.head() != head {
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

/// The SQLite event log.
pub struct SqliteLog {
    log_id: LogId,
    read: SqlitePool,
    writer: Writer,
    /// The connection projection subscribers and rebuilds write through.
    projector: SqlitePool,
    options: SqliteConnectOptions,
}

impl SqliteLog {
    /// Append through a connection of its own whose transaction stays open, holding the write
    /// lock, until `release` resolves: a slow appender, for contract tests of what readers and
    /// other appenders see meanwhile.
    #[doc(hidden)]
    pub async fn append_held(
        &self,
        batch: Vec<StreamAppend>,
        release: oneshot::Receiver<()>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        tokenledger_events::log::validate_batch(&batch)?;
        let mut conn = SqliteConnection::connect_with(&self.options)
            .await
            .map_err(unavailable)?;
        let (mut results, _) = commit(&mut conn, self.log_id, &[batch], Some(release)).await?;
        results.remove(0)
    }

    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, LogError> {
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
        let mut conn = self.projector.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
        let step = audit_step(&mut tx, limit).await.map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(step)
    }

    pub(crate) async fn rebuild(&self) -> Result<(u64, usize), StoreError> {
        let mut conn = self.projector.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
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

impl EventLog for SqliteLog {
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
        wait_for_head(self, self.writer.head(), None, position, timeout).await
    }
}
