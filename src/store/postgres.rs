//! The PostgreSQL backend, the production store. The single `log_head` row, locked
//! `FOR UPDATE` inside the append transaction, is the append lock for every node sharing the
//! database; each node's group-commit writer takes it once per group. A commit sends
//! `NOTIFY tokenledger_log` so other nodes' tails wake at once, but the wake-up is only a
//! hint: they read by position, and poll, for correctness.
//!
//! The projections written inline (`api_tokens`, `token_addresses`) are part of the same
//! statement as their events.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow, Postgres,
};
use tokenledger_events::{EventLog, LogError, LogId};
use tokio::sync::{oneshot, watch};

use super::sql::{ADDRESS_COLUMNS, WriterCache, plan_group};
use super::writer::{GroupCommit, Writer};

use super::{AuditFilter, StoreError, wait_for_head};

super::sql::sql_event_log!(sqlx::Postgres, PgConnection, PgRow, Params::Numbered);
super::forensics::forensic_sql!(PgConnection);

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

    /// Make this database the projection database of the log `log_id`, called `name`: an
    /// empty database takes that log id; one that holds events must already have it.
    pub async fn follow(&self, log_id: LogId, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::db)?;
        sqlx::query("UPDATE log_head SET log_id = $1 WHERE position = 0 AND log_id <> $1")
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
            "INSERT INTO log_primary (singleton, name) VALUES (TRUE, $1) \
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
        let ids: Vec<uuid::Uuid> = openings.iter().map(|(id, _)| *id).collect();
        let fields: Vec<&str> = openings.iter().map(|(_, o)| o.field.as_str()).collect();
        let salts: Vec<&[u8]> = openings.iter().map(|(_, o)| &o.salt[..]).collect();
        let values: Vec<&[u8]> = openings.iter().map(|(_, o)| &o.value[..]).collect();
        sqlx::query(
            "INSERT INTO log_openings (event_id, field, salt, value) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[]) \
             ON CONFLICT (event_id, field) DO NOTHING",
        )
        .bind(ids)
        .bind(fields)
        .bind(salts)
        .bind(values)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(())
    }

    /// The kept openings of these events.
    pub async fn kept_openings(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<(uuid::Uuid, tokenledger_events::Opening)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT event_id, field, salt, value FROM log_openings WHERE event_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(rows
            .into_iter()
            .filter_map(super::upstream::opening_row)
            .collect())
    }

    pub async fn open_log(&self) -> Result<PgLog, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db)?;
        let log_id: uuid::Uuid = sqlx::query_scalar("SELECT log_id FROM log_head")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::not_migrated)?;
        // A log written before the tree was kept gets its tree hashes now, under the lock.
        let mut tx = conn.begin().await.map_err(StoreError::db)?;
        lock_head(&mut tx).await.map_err(StoreError::db)?;
        let filled = fill_tree(&mut tx).await.map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        if filled > 0 {
            tracing::info!(
                leaves = filled,
                "stored the Merkle tree of events written before it was kept"
            );
        }
        let head = read_head(&mut conn).await.map_err(StoreError::db)?;
        drop(conn);
        let log_id = LogId(log_id);
        // No liveness check before each group: it costs a round trip, and a lost connection
        // fails the group it carries (answered 503) and is replaced for the next one.
        let write = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(self.options.clone());
        let writer = Writer::spawn(
            PgCommitter {
                pool: write,
                conn: None,
                log_id,
                cache: WriterCache::default(),
            },
            head,
        );
        let (notified, wake) = watch::channel(head.position);
        tokio::spawn(listen(self.options.clone(), notified));
        let primary: Option<String> = sqlx::query_scalar("SELECT name FROM log_primary")
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::not_migrated)?;
        Ok(PgLog {
            log_id,
            follows: super::upstream::Follows {
                primary,
                ..Default::default()
            },
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

/// The writer task's side. It keeps its connection between groups (returning one to the pool
/// is a task of its own that the next group would wait for) and lets it go after a failure,
/// which may have been the connection's.
struct PgCommitter {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    log_id: LogId,
    cache: WriterCache,
}

impl PgCommitter {
    async fn conn(&mut self) -> Result<&mut PoolConnection<Postgres>, sqlx::Error> {
        match &mut self.conn {
            Some(conn) => Ok(conn),
            slot => Ok(slot.insert(self.pool.acquire().await?)),
        }
    }
}

impl GroupCommit for PgCommitter {
    async fn commit_group(
        &mut self,
        batches: &[Vec<StreamAppend>],
    ) -> Result<(Vec<AppendResult>, Head), AppendError> {
        let log_id = self.log_id;
        let mut cache = std::mem::take(&mut self.cache);
        let conn = self.conn().await.map_err(unavailable)?;
        let result = commit(conn, log_id, batches, &mut cache, None).await;
        self.cache = cache;
        if result.is_err() {
            self.conn = None;
        }
        result
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
    head_from_row(&row)
}

/// A plan's writes as one statement: each table's rows travel as arrays and are unnested by
/// data-modifying CTEs, so a group costs one round trip however many tables it touches, and
/// the text never changes, so it is prepared once.
///
/// Every write is conditional on the first: moving the head row from the position the plan
/// started at (`$49`). That UPDATE takes the head row lock, the append lock, before any row is
/// inserted (the inserts read its result), and matches nothing if another writer moved the
/// head meanwhile, in which case nothing is written and the statement answers 0. So the
/// statement is a whole append on its own, in autocommit, when the writer's guess of the head
/// is right, and a harmless no-op when it is not. Inside a transaction that already holds the
/// lock it always answers 1.
///
/// Parameters: events `$1..$10`, openings `$11..$14`, token rows `$15..$35`, address uses
/// `$36..$40`, tree hashes `$41, $42`, new head `$43, $44`, old head position `$45`. (The foreign key of openings is checked at the end of the statement, after the events
/// CTE; the dense-positions trigger sees the rows in position order.)
static WRITE_PLAN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let updates = TOKEN_COLUMNS
        .split(", ")
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let moved = "EXISTS (SELECT 1 FROM h)";
    format!(
        "WITH h AS (\
           UPDATE log_head SET position = $43, hash = $44 WHERE position = $45 RETURNING 1), \
         ev AS (\
           INSERT INTO events ({EVENT_COLUMNS}) \
           SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::bigint[], \
             $6::text[], $7::text[], $8::int[], $9::bytea[], $10::bytea[]) \
           WHERE {moved} ORDER BY 1), \
         op AS (\
           INSERT INTO event_openings (position, field, salt, value) \
           SELECT * FROM UNNEST($11::bigint[], $12::text[], $13::bytea[], $14::bytea[]) \
           WHERE {moved}), \
         tk AS (\
           INSERT INTO api_tokens ({TOKEN_COLUMNS}) \
           SELECT * FROM UNNEST($15::uuid[], $16::text[], $17::bytea[], $18::text[], $19::text[], \
             $20::bigint[], $21::text[], $22::bigint[], $23::bigint[], $24::text[], $25::text[], \
             $26::uuid[], $27::uuid[], $28::bigint[], $29::bigint[], $30::text[], $31::text[], \
             $32::bigint[], $33::bigint[], $34::bigint[], $35::bigint[], $46::text[], $47::text[]) \
           WHERE {moved} \
           ON CONFLICT (id) DO UPDATE SET {updates}), \
         th AS (\
           INSERT INTO tree_hashes (idx, hash) \
           SELECT * FROM UNNEST($41::bigint[], $42::bytea[]) WHERE {moved}), \
         ad AS (\
           INSERT INTO token_addresses ({ADDRESS_COLUMNS}) \
           SELECT * FROM UNNEST($36::uuid[], $37::text[], $38::bigint[], $39::bigint[], \
             $40::bigint[]) \
           WHERE {moved} \
           ON CONFLICT (token_id, ip) DO UPDATE SET \
             first_seen = LEAST(token_addresses.first_seen, excluded.first_seen), \
             last_seen = GREATEST(token_addresses.last_seen, excluded.last_seen), \
             uses = token_addresses.uses + excluded.uses) \
         SELECT count(*) AS moved FROM h"
    )
});

/// Write a plan (see [`WRITE_PLAN`]) in one round trip; `false` when the head was not at the
/// plan's start, and nothing was written.
async fn write_plan_at_once(conn: &mut PgConnection, plan: &Plan) -> Result<bool, sqlx::Error> {
    if plan.head == plan.start {
        return Ok(true);
    }
    fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
        rows.iter().map(f).collect()
    }
    let events = &plan.events;
    let openings: Vec<(i64, &Opening)> = events
        .iter()
        .flat_map(|e| e.openings.iter().map(move |o| (to_sql(e.position), o)))
        .collect();
    let tokens = &plan.tokens;
    let addresses = &plan.addresses;
    sqlx::query(WRITE_PLAN.as_str())
        .bind(col(events, |e| to_sql(e.position)))
        .bind(col(events, |e| e.stream_id.as_str()))
        .bind(col(events, |e| to_sql(e.stream_version)))
        .bind(col(events, |e| e.event_id))
        .bind(col(events, |e| e.recorded_at.as_micros()))
        .bind(col(events, |e| e.actor.as_str()))
        .bind(col(events, |e| e.event_type.as_str()))
        .bind(col(events, |e| e.schema_version as i32))
        .bind(col(events, |e| e.stored_body()))
        .bind(col(events, |e| &e.hash.0[..]))
        .bind(col(&openings, |(p, _)| *p))
        .bind(col(&openings, |(_, o)| o.field.as_str()))
        .bind(col(&openings, |(_, o)| &o.salt[..]))
        .bind(col(&openings, |(_, o)| o.value.as_slice()))
        .bind(col(tokens, |t| t.id))
        .bind(col(tokens, |t| t.name.as_str()))
        .bind(col(tokens, |t| t.hash.map(|h| h.0.to_vec())))
        .bind(col(tokens, |t| t.environment.as_str()))
        .bind(col(tokens, |t| t.scopes.join(" ")))
        .bind(col(tokens, |t| t.created_at.as_micros()))
        .bind(col(tokens, |t| t.created_by.as_str()))
        .bind(col(tokens, |t| t.expires_at.as_micros()))
        .bind(col(tokens, |t| t.revoked_at.map(Timestamp::as_micros)))
        .bind(col(tokens, |t| t.revoked_by.as_deref()))
        .bind(col(tokens, |t| t.revoke_reason.as_deref()))
        .bind(col(tokens, |t| t.rotated_from))
        .bind(col(tokens, |t| t.rotated_to))
        .bind(col(tokens, |t| t.rotated_at.map(Timestamp::as_micros)))
        .bind(col(tokens, |t| t.last_used_at.map(Timestamp::as_micros)))
        .bind(col(tokens, |t| t.last_used_ip.as_deref()))
        .bind(col(tokens, |t| t.last_used_path.as_deref()))
        .bind(col(tokens, |t| to_sql(t.use_count)))
        .bind(col(tokens, |t| to_sql(t.denied_count)))
        .bind(col(tokens, |t| to_sql(t.version)))
        .bind(col(tokens, |t| to_sql(t.position)))
        .bind(col(addresses, |a| a.token_id))
        .bind(col(addresses, |a| a.ip.as_str()))
        .bind(col(addresses, |a| a.first_seen.as_micros()))
        .bind(col(addresses, |a| a.last_seen.as_micros()))
        .bind(col(addresses, |a| to_sql(a.uses)))
        .bind(col(&plan.tree, |(i, _)| to_sql(*i)))
        .bind(col(&plan.tree, |(_, h)| &h.0[..]))
        .bind(to_sql(plan.head.position))
        .bind(&plan.head.hash.0[..])
        .bind(to_sql(plan.start.position))
        .bind(col(tokens, |t| t.allowed_ips.join(" ")))
        .bind(col(tokens, |t| {
            crate::store::sql::overlap_column(t.until_successor_used)
        }))
        .fetch_one(&mut *conn)
        .await?
        .try_get::<i64, _>("moved")
        .map(|moved| moved == 1)
}

/// Append a group. Usually in one round trip: planned at the head the writer remembers and
/// written by one statement in autocommit (see [`WriterCache`] and [`WRITE_PLAN`]). When the
/// cache cannot plan it, or the database refuses the guess, by [`transaction`]: without
/// looking up the group's event ids first (a retry is rare), and again with them when that
/// attempt finds the group may hold a retry.
/// `hold` keeps the transaction open until it resolves (see [`PgLog::append_held`]).
async fn commit(
    conn: &mut PgConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    cache: &mut WriterCache,
    mut hold: Option<oneshot::Receiver<()>>,
) -> Result<(Vec<AppendResult>, Head), AppendError> {
    let mut with_stored = false;
    if hold.is_none()
        && let Some(plan) = cache.plan_ahead(log_id, batches)
    {
        let written = write_plan_at_once(conn, &plan).await;
        match written {
            Ok(true) => {
                cache.committed(&plan);
                return Ok((plan.answers(&[]), plan.head));
            }
            // Another writer moved the head (nothing was written), or the group holds a
            // retry, or the database failed (the statement rolled back): the careful way
            // tells which.
            Ok(false) => cache.forget(),
            Err(e) => {
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

/// One transaction: lock the head row, plan the group, write
/// it, COMMIT. `Ok(None)`: rolled back because an insert hit a unique constraint while the
/// stored event ids were not looked up (`with_stored` false): plan again with them.
async fn transaction(
    conn: &mut PgConnection,
    log_id: LogId,
    batches: &[Vec<StreamAppend>],
    cache: &mut WriterCache,
    with_stored: bool,
    hold: &mut Option<oneshot::Receiver<()>>,
) -> Result<Option<(Vec<AppendResult>, Head)>, AppendError> {
    let mut tx = conn.begin().await.map_err(unavailable)?;
    let head = lock_head(&mut tx).await.map_err(unavailable)?;
    cache.validate(head);
    if cache.edge.as_ref().map(|e| e.size()) != Some(head.position) {
        cache.edge = Some(
            load_edge(&mut tx, head.position)
                .await
                .map_err(unavailable)?,
        );
    }
    let edge = cache.edge.clone().unwrap_or_default();
    let mut stored = HashMap::new();
    let mut knows_stored = with_stored;
    load_state(
        &mut tx,
        batches,
        &mut cache.state,
        knows_stored.then_some(&mut stored),
    )
    .await
    .map_err(unavailable)?;
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
        load_state(&mut tx, batches, &mut cache.state, Some(&mut stored))
            .await
            .map_err(unavailable)?;
        plan = plan_group(
            &mut Sealer::new(log_id, head),
            batches,
            &stored,
            &cache.state,
            &edge,
        );
    }
    // The log_head_notify trigger tells the other nodes.
    match write_plan_at_once(&mut tx, &plan).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(AppendError::Unavailable(
                "the head moved while this writer held its lock".into(),
            ));
        }
        Err(e) if !knows_stored && unique_violation(&e) => {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(None);
        }
        Err(e) => return Err(unavailable(e)),
    }
    let results = answer(&mut tx, &plan, &stored).await.map_err(unavailable)?;
    if let Some(hold) = hold.take() {
        let _ = hold.await;
    }
    tx.commit().await.map_err(unavailable)?;
    cache.committed(&plan);
    Ok(Some((results, plan.head)))
}

/// The PostgreSQL event log.
pub struct PgLog {
    log_id: LogId,
    pub(super) follows: super::upstream::Follows,
    read: PgPool,
    writer: Writer,
    /// The newest head position another node announced.
    wake: watch::Receiver<u64>,
    options: PgConnectOptions,
}

impl PgLog {
    /// The read pool, for the preflight reads (`super::preflight`).
    pub(super) fn read_pool(&self) -> &PgPool {
        &self.read
    }

    /// Tell `observer` of every group commit of this node's writer.
    pub fn observe_commits(&self, observer: super::writer::CommitObserver) {
        self.writer.observe(observer);
    }

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
        let mut cache = WriterCache::default();
        let (mut results, _) =
            commit(&mut conn, self.log_id, &[batch], &mut cache, Some(release)).await?;
        results.remove(0)
    }

    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, LogError> {
        self.read.acquire().await.map_err(log_unavailable)
    }

    projection_reads!();
    forensic_reads!();

    pub(crate) async fn save_checkpoint(
        &self,
        c: &super::StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let mut conn = self.read.acquire().await.map_err(StoreError::db)?;
        insert_checkpoint(&mut conn, c)
            .await
            .map_err(StoreError::db)
    }

    pub(crate) async fn rebuild(
        &self,
        progress: &(dyn Fn(tokenledger_events::Progress) + Sync),
    ) -> Result<(u64, usize), StoreError> {
        let mut conn = self.read.acquire().await.map_err(StoreError::db)?;
        let mut tx = conn.begin().await.map_err(StoreError::db)?;
        // The append lock, then every projection's checkpoint: no append and no subscriber
        // step interleaves with the rebuild.
        lock_head(&mut tx).await.map_err(StoreError::db)?;
        sqlx::query("SELECT position FROM projection_checkpoints FOR UPDATE")
            .execute(&mut *tx)
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
