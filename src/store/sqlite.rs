//! The SQLite backend, the embedded default: WAL, `synchronous=FULL`, one writer connection
//! owned by the group-commit task, and `BEGIN IMMEDIATE` as the append lock (it also excludes
//! other processes, such as the CLI appending while a server runs). The projections written
//! inline (`api_tokens`, `token_addresses`) commit with their events.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use tokenledger_events::{EventLog, LogError, LogId};
use tokio::sync::oneshot;

use super::sql::{WriterCache, plan_group};
use super::writer::{GroupCommit, Writer};

use super::{AuditFilter, StoreError, wait_for_head};

super::sql::sql_event_log!(sqlx::Sqlite, SqliteConnection, SqliteRow, Params::Anonymous);
super::forensics::forensic_sql!(SqliteConnection);

/// How long a writer waits for another process holding the SQLite write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected SQLite database, before its log is opened (migrations run here).
pub struct SqliteDb {
    /// Migrations and the first reads go through this connection.
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
        let created = creates_file(url) && create_private(options.get_filename());
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unreachable {
                target: options.get_filename().display().to_string(),
                detail: e.to_string(),
            })?;
        if created {
            // Connecting set WAL mode, which made both files.
            for suffix in ["-wal", "-shm"] {
                let mut name = options.get_filename().as_os_str().to_owned();
                name.push(suffix);
                make_private(std::path::Path::new(&name));
            }
        }
        Ok(SqliteDb { write, options })
    }

    /// Make this database the projection database of the log `log_id`, called `name`: an
    /// empty database takes that log id; one that holds events must already have it.
    pub async fn follow(&self, log_id: LogId, name: &str) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await.map_err(StoreError::db)?;
        sqlx::query("UPDATE log_head SET log_id = ? WHERE position = 0 AND log_id IS NOT ?")
            .bind(log_id.0)
            .bind(log_id.0)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::not_migrated)?;
        let (held, position): (uuid::Uuid, i64) =
            sqlx::query_as("SELECT log_id, position FROM log_head")
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        if held != log_id.0 {
            return Err(super::upstream::other_log(held, position, log_id, name));
        }
        sqlx::query(
            "INSERT INTO log_primary (singleton, name) VALUES (1, ?) \
             ON CONFLICT (singleton) DO UPDATE SET name = excluded.name",
        )
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)
    }

    /// Keep the openings of a primary log's events (see `super::upstream`).
    pub async fn keep_openings(
        &self,
        openings: &[(uuid::Uuid, tokenledger_events::Opening)],
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await.map_err(StoreError::db)?;
        for (id, o) in openings {
            sqlx::query(
                "INSERT INTO log_openings (event_id, field, salt, value) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (event_id, field) DO NOTHING",
            )
            .bind(id)
            .bind(&o.field)
            .bind(&o.salt[..])
            .bind(&o.value)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        }
        tx.commit().await.map_err(StoreError::db)
    }

    /// The kept openings of these events.
    pub async fn kept_openings(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<(uuid::Uuid, tokenledger_events::Opening)>, StoreError> {
        let mut kept = Vec::new();
        for chunk in ids.chunks(super::sql::CHUNK) {
            let sql = format!(
                "SELECT event_id, field, salt, value FROM log_openings WHERE event_id IN ({})",
                super::sql::in_list(chunk.len(), super::sql::Params::Anonymous)
            );
            let mut query = sqlx::query_as::<_, (uuid::Uuid, String, Vec<u8>, Vec<u8>)>(
                sqlx::AssertSqlSafe(sql),
            );
            for id in chunk {
                query = query.bind(id);
            }
            let rows = query.fetch_all(&self.write).await.map_err(StoreError::db)?;
            kept.extend(rows.into_iter().filter_map(super::upstream::opening_row));
        }
        Ok(kept)
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
        // A log written before the tree was kept gets its tree hashes now, under the lock.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
        let filled = fill_tree(&mut tx).await.map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        if filled > 0 {
            tracing::info!(
                leaves = filled,
                "stored the Merkle tree of events written before it was kept"
            );
        }
        drop(conn);
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(self.options.clone().read_only(true))
            .await
            .map_err(StoreError::db)?;
        let writer = Writer::spawn(
            SqliteCommitter {
                // The writer's batches differ in text by group size: keep the sizes of a busy
                // server prepared (sqlx keeps 100 statements by default).
                options: self.options.clone().statement_cache_capacity(256),
                conn: None,
                log_id,
                cache: WriterCache::default(),
            },
            head,
        );
        let projector = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.options.clone());
        let primary: Option<String> = sqlx::query_scalar("SELECT name FROM log_primary")
            .fetch_optional(&read)
            .await
            .map_err(StoreError::not_migrated)?;
        Ok(SqliteLog {
            log_id,
            follows: super::upstream::Follows {
                primary,
                ..Default::default()
            },
            read,
            writer,
            projector,
            options: self.options.clone(),
        })
    }
}

/// Whether `url` asks for the file to be made when missing (`mode=rwc`; the last `mode` wins,
/// as in sqlx).
fn creates_file(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "mode")
        .last()
        .is_some_and(|(_, mode)| mode == "rwc")
}

/// Make a missing database file, readable by its owner only (it holds the log and every
/// token's hash), before SQLite opens it: SQLite gives the `-wal` and `-shm` files the main
/// file's mode. Whether the file was made here; any failure is left for the connection to
/// report.
fn create_private(path: &std::path::Path) -> bool {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).is_ok()
}

/// `path` readable by its owner only, if it exists: a file SQLite made beside a database
/// made here (SQLite already matches the main file's mode; this does not rely on it).
fn make_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot make it 0600"),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The writer task's side: the one connection appends go through, kept open (not taken from a
/// pool per group: returning a connection to a pool is a task of its own that the next group
/// would wait for).
struct SqliteCommitter {
    options: SqliteConnectOptions,
    conn: Option<SqliteConnection>,
    log_id: LogId,
    cache: WriterCache,
}

impl SqliteCommitter {
    async fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        match &mut self.conn {
            Some(conn) => Ok(conn),
            slot => Ok(slot.insert(SqliteConnection::connect_with(&self.options).await?)),
        }
    }
}

impl GroupCommit for SqliteCommitter {
    async fn commit_group(
        &mut self,
        batches: &[Vec<StreamAppend>],
    ) -> Result<(Vec<AppendResult>, Head), AppendError> {
        let log_id = self.log_id;
        let mut cache = std::mem::take(&mut self.cache);
        let conn = self.conn().await.map_err(unavailable)?;
        let result = commit(conn, log_id, batches, &mut cache, None).await;
        self.cache = cache;
        result
    }
}

fn unavailable(e: sqlx::Error) -> AppendError {
    AppendError::Unavailable(e.to_string())
}

/// Append a group. Usually in one trip to sqlx's worker thread: planned at the head the writer
/// remembers and sent as `BEGIN IMMEDIATE`, the writes, `COMMIT` (see [`WriterCache`]). When
/// the cache cannot plan it, or the database refuses the guess, by [`transaction`]: without
/// looking up the group's event ids first (a retry is rare), and again with them when that
/// attempt finds the group may hold a retry.
/// `hold` keeps the transaction open until it resolves (see [`SqliteLog::append_held`]).
async fn commit(
    conn: &mut SqliteConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    cache: &mut WriterCache,
    mut hold: Option<oneshot::Receiver<()>>,
) -> Result<(Vec<AppendResult>, Head), AppendError> {
    let mut with_stored = false;
    if hold.is_none()
        && let Some(plan) = cache.plan_ahead(log_id, batches)
    {
        let written = async {
            let mut writes = Batch::new();
            writes.statement("BEGIN IMMEDIATE");
            append_plan(&mut writes, &plan)?;
            writes.statement("COMMIT");
            writes.execute(conn).await
        }
        .await;
        match written {
            Ok(()) => {
                cache.committed(&plan);
                return Ok((plan.answers(&[]), plan.head));
            }
            Err(e) => {
                // Another writer moved the head, or the group holds a retry, or the database
                // failed: the careful way tells which. Nothing of this attempt stays.
                let _ = rollback(conn).await;
                cache.forget();
                with_stored = unique_violation(&e);
            }
        }
    }
    let mut attempt = transaction(conn, log_id, batches, cache, with_stored, &mut hold).await;
    if let Ok(None) = attempt {
        attempt = transaction(conn, log_id, batches, cache, true, &mut hold).await;
    }
    match attempt {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(AppendError::Unavailable(
            "an append hit a unique constraint with every stored event id known".into(),
        )),
        Err(e) => {
            cache.forget();
            Err(e)
        }
    }
}

/// One transaction, in two trips to sqlx's worker thread when nothing needs reading beyond
/// the head: `BEGIN IMMEDIATE` (the append lock) with the read of the head, then every write with `COMMIT`. sqlx does not see this transaction, so every
/// way out but a commit rolls it back here. `Ok(None)`: rolled back because an insert hit a
/// unique constraint while the stored event ids were not looked up (`with_stored` false):
/// plan again with them.
async fn transaction(
    conn: &mut SqliteConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    cache: &mut WriterCache,
    with_stored: bool,
    hold: &mut Option<oneshot::Receiver<()>>,
) -> Result<Option<(Vec<AppendResult>, Head)>, AppendError> {
    let begun = sqlx::query(
        "BEGIN IMMEDIATE; \
         SELECT position, hash FROM log_head",
    )
    .fetch_one(&mut *conn)
    .await;
    let result = match begun {
        Ok(row) => in_transaction(conn, log_id, &row, batches, cache, with_stored, hold).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Some(done)) => Ok(Some(done)),
        Ok(None) => {
            rollback(conn).await.map_err(unavailable)?;
            Ok(None)
        }
        Err(e) => {
            // The error may have come before BEGIN took effect or after COMMIT failed, with
            // no transaction left to roll back: that error says nothing new.
            let _ = rollback(conn).await;
            Err(unavailable(e))
        }
    }
}

async fn rollback(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("ROLLBACK")
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The body of [`transaction`], from the head row read under the append lock to COMMIT.
/// `Ok(None)`: a unique violation to plan again for; the caller rolls back.
async fn in_transaction(
    conn: &mut SqliteConnection,
    log_id: LogId,
    head_row: &SqliteRow,
    batches: &[Vec<StreamAppend>],
    cache: &mut WriterCache,
    with_stored: bool,
    hold: &mut Option<oneshot::Receiver<()>>,
) -> Result<Option<(Vec<AppendResult>, Head)>, sqlx::Error> {
    let head = head_from_row(head_row)?;
    cache.validate(head);
    if cache.edge.as_ref().map(|e| e.size()) != Some(head.position) {
        cache.edge = Some(load_edge(conn, head.position).await?);
    }
    let edge = cache.edge.clone().unwrap_or_default();
    let mut stored = HashMap::new();
    let mut knows_stored = with_stored;
    load_state(
        conn,
        batches,
        &mut cache.state,
        knows_stored.then_some(&mut stored),
    )
    .await?;
    let mut plan = plan_group(
        &mut Sealer::new(log_id, head),
        batches,
        &stored,
        &cache.state,
        &edge,
    );
    if !knows_stored && plan.refused_any() {
        // A refused batch may be a retry of a stored one; nothing is written yet.
        knows_stored = true;
        load_state(conn, batches, &mut cache.state, Some(&mut stored)).await?;
        plan = plan_group(
            &mut Sealer::new(log_id, head),
            batches,
            &stored,
            &cache.state,
            &edge,
        );
    }
    let results = answer(conn, &plan, &stored).await?;
    let mut writes = Batch::new();
    append_plan(&mut writes, &plan)?;
    if hold.is_none() {
        writes.statement("COMMIT");
    }
    match writes.execute(conn).await {
        Ok(()) => {}
        Err(e) if !knows_stored && unique_violation(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    if let Some(hold) = hold.take() {
        let _ = hold.await;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
    }
    cache.committed(&plan);
    Ok(Some((results, plan.head)))
}

/// Insert `events` and their openings.
fn push_events(b: &mut Batch, events: &[StoredEvent]) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(CHUNK) {
        b.statement(&format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES "));
        b.values(chunk.len(), 10);
        for e in chunk {
            b.bind(to_sql(e.position))?;
            b.bind(e.stream_id.as_str())?;
            b.bind(to_sql(e.stream_version))?;
            b.bind(e.event_id)?;
            b.bind(e.recorded_at.as_micros())?;
            b.bind(e.actor.as_str())?;
            b.bind(e.event_type.as_str())?;
            b.bind(e.schema_version as i32)?;
            b.bind(e.stored_body())?;
            b.bind(&e.hash.0[..])?;
        }
    }
    let openings: Vec<(u64, &Opening)> = events
        .iter()
        .flat_map(|e| e.openings.iter().map(move |o| (e.position, o)))
        .collect();
    for chunk in openings.chunks(CHUNK) {
        b.statement("INSERT INTO event_openings (position, field, salt, value) VALUES ");
        b.values(chunk.len(), 4);
        for (position, o) in chunk {
            b.bind(to_sql(*position))?;
            b.bind(o.field.as_str())?;
            b.bind(&o.salt[..])?;
            b.bind(o.value.as_slice())?;
        }
    }
    Ok(())
}

/// Move the head. The inline token projection needs no checkpoint of its own: it is
/// written in the same transaction, so it is always at the head.
fn push_head(b: &mut Batch, head: Head) -> Result<(), sqlx::Error> {
    b.statement("UPDATE log_head SET position = ");
    b.value();
    b.bind(to_sql(head.position))?;
    b.sql.push_str(", hash = ");
    b.value();
    b.bind(&head.hash.0[..])
}

/// Add a plan's writes to `b`, one statement per table it touches: events and
/// openings, tree hashes, token rows, address uses, head. Tables
/// it does not touch cost nothing; a plan that appends nothing writes nothing.
fn append_plan(b: &mut Batch, plan: &Plan) -> Result<(), sqlx::Error> {
    if plan.head == plan.start {
        return Ok(());
    }
    push_events(b, &plan.events)?;
    push_tree_json(b, &plan.tree)?;
    let rows: Vec<&TokenRow> = plan.tokens.iter().collect();
    push_tokens(b, &rows)?;
    push_addresses(b, &plan.addresses)?;
    push_head(b, plan.head)
}

/// Insert a group's tree hashes with one statement whose text never changes: the batch's text
/// is the prepared-statement cache's key, and a row count in it (the hashes per group vary
/// with the positions) would make nearly every group's batch a new statement to prepare. A
/// group's hashes are consecutive stored-hash indexes, so they travel as the first index and
/// a JSON array of hex hashes.
fn push_tree_json(b: &mut Batch, hashes: &[(u64, Hash)]) -> Result<(), sqlx::Error> {
    let Some(&(first, _)) = hashes.first() else {
        return Ok(());
    };
    if hashes
        .iter()
        .zip(first..)
        .any(|((index, _), expected)| *index != expected)
    {
        return push_tree(b, hashes);
    }
    let json = serde_json::to_string(&hashes.iter().map(|(_, h)| h.to_hex()).collect::<Vec<_>>())
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    b.statement("INSERT INTO tree_hashes (idx, hash) SELECT ");
    b.value();
    b.bind(to_sql(first))?;
    b.sql.push_str(" + key, unhex(value) FROM json_each(");
    b.value();
    b.bind(json)?;
    b.sql.push(')');
    Ok(())
}

/// The SQLite event log.
pub struct SqliteLog {
    log_id: LogId,
    pub(super) follows: super::upstream::Follows,
    read: SqlitePool,
    writer: Writer,
    /// The connection rebuilds write through.
    projector: SqlitePool,
    options: SqliteConnectOptions,
}

impl SqliteLog {
    /// The read pool, for the preflight reads (`super::preflight`).
    pub(super) fn read_pool(&self) -> &SqlitePool {
        &self.read
    }

    /// The projector's write connection, for the webhook outbox (`super::outbox`).
    pub(super) fn write_pool(&self) -> &SqlitePool {
        &self.projector
    }

    /// Tell `observer` of every group commit of this node's writer.
    pub fn observe_commits(&self, observer: super::writer::CommitObserver) {
        self.writer.observe(observer);
    }

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
        let mut cache = WriterCache::default();
        let (mut results, _) =
            commit(&mut conn, self.log_id, &[batch], &mut cache, Some(release)).await?;
        results.remove(0)
    }

    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, LogError> {
        self.read.acquire().await.map_err(log_unavailable)
    }

    projection_reads!();
    forensic_reads!();

    pub(crate) async fn save_checkpoint(
        &self,
        c: &super::StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let mut conn = self.projector.acquire().await.map_err(StoreError::db)?;
        insert_checkpoint(&mut conn, c)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn rebuild(
        &self,
        progress: &(dyn Fn(tokenledger_events::Progress) + Sync),
    ) -> Result<(u64, usize), StoreError> {
        let mut conn = self.projector.acquire().await.map_err(StoreError::db)?;
        // A rebuild rewrites every token row in one transaction: a page cache that holds the
        // table (256 MiB at most, for this connection only) keeps SQLite from spilling dirty
        // pages to the WAL and reading them back mid-transaction.
        sqlx::query("PRAGMA cache_size = -262144")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db)?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
        let rebuilt = rebuild(&mut tx, progress).await.map_err(StoreError::db)?;
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
