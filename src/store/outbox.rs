//! The webhook outbox (migration 0008): deliveries waiting, delivered or failed, and the
//! checkpoint of the subscriber that fills it from the log.
//!
//! Not a projection: a row holds delivery state the log does not (attempts, the last answer),
//! so `projections rebuild` leaves these tables alone. Rows are inserted idempotently (the
//! primary key is the delivery's idempotency key, `ON CONFLICT DO NOTHING`), and the
//! subscriber's rows commit in one transaction with its checkpoint. A sender claims due rows
//! with a lease (on PostgreSQL through `FOR UPDATE SKIP LOCKED`, so nodes sharing the database
//! never claim the same row at once; SQLite has one writer) and records an outcome only while
//! its lease is the row's.
//!
//! The same SQL serves both dialects (`$n` placeholders are read by SQLite too).

use sqlx::Row as _;
use tokenledger_events::Timestamp;
use uuid::Uuid;

use super::sql::{from_sql, to_sql};
use super::{Store, StoreError};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Result<DeliveryStatus, sqlx::Error> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown delivery status {raw:?}").into()))
    }
}

/// A row to insert: what to send, and to whom it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The idempotency key (and the body's `id`).
    pub id: Uuid,
    /// The webhook type, like `token.revoked`.
    pub event_type: String,
    pub token_id: Option<Uuid>,
    /// The log position it came from (none for expiry warnings).
    pub position: Option<u64>,
    /// The JSON body, fixed at insert: every attempt sends the same bytes.
    pub body: String,
    pub created_at: Timestamp,
}

/// A stored delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: Uuid,
    pub event_type: String,
    pub token_id: Option<Uuid>,
    pub position: Option<u64>,
    pub body: String,
    pub created_at: Timestamp,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub lease_until: Option<Timestamp>,
    /// The HTTP status of the last answer, when there was one.
    pub last_status: Option<u16>,
    /// Why the last attempt did not deliver.
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
        at: Timestamp,
    },
    /// Not delivered; due again at `next_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: Timestamp,
    },
    /// Not delivered, and no attempt is left.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// Deliveries by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// Which rows `requeue` makes due now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// These ids (pending or failed; delivered ones are left as they are).
    Ids(Vec<Uuid>),
    /// Every failed row.
    Failed,
}

const COLUMNS: &str = "id, event_type, token_id, position, body, created_at, status, attempts, next_attempt_at, lease_until, last_status, last_error, delivered_at";

/// The longest error text kept for a row.
const MAX_ERROR: usize = 500;

fn micros(t: Timestamp) -> i64 {
    t.as_micros()
}

fn time(v: i64) -> Timestamp {
    Timestamp::from_micros(v)
}

macro_rules! outbox_sql {
    ($db:ty, $row:ty, $lock:literal) => {
        use super::*;
        use sqlx::Connection as _;

        type Conn = <$db as sqlx::Database>::Connection;

        fn delivery(r: &$row) -> Result<Delivery, sqlx::Error> {
            Ok(Delivery {
                id: r.try_get("id")?,
                event_type: r.try_get("event_type")?,
                token_id: r.try_get("token_id")?,
                position: r
                    .try_get::<Option<i64>, _>("position")?
                    .map(|p| from_sql(p, "position"))
                    .transpose()?,
                body: r.try_get("body")?,
                created_at: time(r.try_get("created_at")?),
                status: DeliveryStatus::parse(&r.try_get::<String, _>("status")?)?,
                attempts: u32::try_from(r.try_get::<i32, _>("attempts")?).unwrap_or(0),
                next_attempt_at: time(r.try_get("next_attempt_at")?),
                lease_until: r.try_get::<Option<i64>, _>("lease_until")?.map(time),
                last_status: r
                    .try_get::<Option<i32>, _>("last_status")?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: r.try_get("last_error")?,
                delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(time),
            })
        }

        async fn insert(conn: &mut Conn, rows: &[NewDelivery]) -> Result<u64, sqlx::Error> {
            let mut inserted = 0;
            for d in rows {
                inserted += sqlx::query(
                    "INSERT INTO webhook_outbox (id, event_type, token_id, position, body, \
                     created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(d.id)
                .bind(&d.event_type)
                .bind(d.token_id)
                .bind(d.position.map(to_sql))
                .bind(&d.body)
                .bind(micros(d.created_at))
                .bind(micros(d.created_at))
                .execute(&mut *conn)
                .await?
                .rows_affected();
            }
            Ok(inserted)
        }

        pub(super) async fn start(conn: &mut Conn, name: &str, at: u64) -> Result<u64, sqlx::Error> {
            sqlx::query(
                "INSERT INTO webhook_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(to_sql(at))
            .execute(&mut *conn)
            .await?;
            let p: i64 = sqlx::query_scalar("SELECT position FROM webhook_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *conn)
                .await?;
            from_sql(p, "position")
        }

        pub(super) async fn checkpoint(conn: &mut Conn, name: &str) -> Result<Option<u64>, sqlx::Error> {
            let p: Option<i64> =
                sqlx::query_scalar("SELECT position FROM webhook_checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?;
            p.map(|p| from_sql(p, "position")).transpose()
        }

        pub(super) async fn enqueue(
            conn: &mut Conn,
            name: &str,
            from: u64,
            to: u64,
            rows: &[NewDelivery],
        ) -> Result<bool, sqlx::Error> {
            let mut tx = conn.begin().await?;
            let moved = sqlx::query(
                "UPDATE webhook_checkpoints SET position = $1 WHERE name = $2 AND position = $3",
            )
            .bind(to_sql(to))
            .bind(name)
            .bind(to_sql(from))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            insert(&mut tx, rows).await?;
            tx.commit().await?;
            Ok(true)
        }

        pub(super) async fn insert_all(conn: &mut Conn, rows: &[NewDelivery]) -> Result<u64, sqlx::Error> {
            let mut tx = conn.begin().await?;
            let n = insert(&mut tx, rows).await?;
            tx.commit().await?;
            Ok(n)
        }

        pub(super) async fn claim(
            conn: &mut Conn,
            now: Timestamp,
            lease_id: Uuid,
            lease_until: Timestamp,
            limit: usize,
        ) -> Result<Vec<Delivery>, sqlx::Error> {
            let sql = format!(
                "UPDATE webhook_outbox SET lease_id = $1, lease_until = $2 WHERE id IN (\
                 SELECT id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY next_attempt_at, id LIMIT $4{}) RETURNING {COLUMNS}",
                $lock
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(lease_id)
                .bind(micros(lease_until))
                .bind(micros(now))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(delivery)
                .collect::<Result<Vec<_>, _>>()?;
            rows.sort_by_key(|d| (d.next_attempt_at, d.id));
            Ok(rows)
        }

        pub(super) async fn record(
            conn: &mut Conn,
            id: Uuid,
            lease_id: Uuid,
            outcome: &Outcome,
        ) -> Result<bool, sqlx::Error> {
            let clip = |e: &str| e.chars().take(MAX_ERROR).collect::<String>();
            let (status, http, error, next_at, delivered_at) = match outcome {
                Outcome::Delivered { status, at } => {
                    ("delivered", Some(*status), None, None, Some(micros(*at)))
                }
                Outcome::Retry { status, error, next_at } => {
                    ("pending", *status, Some(clip(error)), Some(micros(*next_at)), None)
                }
                Outcome::Failed { status, error } => ("failed", *status, Some(clip(error)), None, None),
            };
            let done = sqlx::query(
                "UPDATE webhook_outbox SET status = $1, attempts = attempts + 1, last_status = $2, \
                 last_error = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
                 delivered_at = $5, lease_id = NULL, lease_until = NULL \
                 WHERE id = $6 AND lease_id = $7 AND status = 'pending'",
            )
            .bind(status)
            .bind(http.map(i32::from))
            .bind(error)
            .bind(next_at)
            .bind(delivered_at)
            .bind(id)
            .bind(lease_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(done == 1)
        }

        pub(super) async fn counts(conn: &mut Conn) -> Result<DeliveryCounts, sqlx::Error> {
            let mut counts = DeliveryCounts::default();
            for r in sqlx::query("SELECT status, COUNT(*) AS n FROM webhook_outbox GROUP BY status")
                .fetch_all(&mut *conn)
                .await?
            {
                let n = from_sql(r.try_get::<i64, _>("n")?, "count")?;
                match DeliveryStatus::parse(&r.try_get::<String, _>("status")?)? {
                    DeliveryStatus::Pending => counts.pending = n,
                    DeliveryStatus::Delivered => counts.delivered = n,
                    DeliveryStatus::Failed => counts.failed = n,
                }
            }
            Ok(counts)
        }

        pub(super) async fn list(
            conn: &mut Conn,
            status: DeliveryStatus,
            limit: usize,
        ) -> Result<Vec<Delivery>, sqlx::Error> {
            let sql = format!(
                "SELECT {COLUMNS} FROM webhook_outbox WHERE status = $1 \
                 ORDER BY created_at, id LIMIT $2"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(status.as_str())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(delivery)
                .collect()
        }

        pub(super) async fn get(conn: &mut Conn, id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
            let sql = format!("SELECT {COLUMNS} FROM webhook_outbox WHERE id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(delivery)
                .transpose()
        }

        pub(super) async fn requeue(
            conn: &mut Conn,
            which: &Requeue,
            now: Timestamp,
        ) -> Result<Vec<Uuid>, sqlx::Error> {
            // A failed row gets its attempts back; a pending one is only made due now. A row
            // out on a live lease is being sent: it is left to that sender.
            const SET: &str = "UPDATE webhook_outbox SET attempts = CASE WHEN status = 'failed' \
                 THEN 0 ELSE attempts END, status = 'pending', next_attempt_at = $1, \
                 lease_id = NULL, lease_until = NULL WHERE (lease_until IS NULL OR lease_until <= $1)";
            let mut done = Vec::new();
            let mut tx = conn.begin().await?;
            match which {
                Requeue::Failed => {
                    let sql = format!("{SET} AND status = 'failed' RETURNING id");
                    for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(micros(now))
                        .fetch_all(&mut *tx)
                        .await?
                    {
                        done.push(r.try_get("id")?);
                    }
                }
                Requeue::Ids(ids) => {
                    let sql = format!(
                        "{SET} AND status IN ('pending', 'failed') AND id = $2 RETURNING id"
                    );
                    for id in ids {
                        for r in sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(micros(now))
                            .bind(*id)
                            .fetch_all(&mut *tx)
                            .await?
                        {
                            done.push(r.try_get("id")?);
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok(done)
        }

        pub(super) async fn expiring(
            conn: &mut Conn,
            now: Timestamp,
            until: Timestamp,
        ) -> Result<Vec<(Uuid, String, Timestamp)>, sqlx::Error> {
            sqlx::query(
                "SELECT id, name, expires_at FROM api_tokens WHERE revoked_at IS NULL \
                 AND rotated_to IS NULL AND expires_at > $1 AND expires_at <= $2 ORDER BY id",
            )
            .bind(micros(now))
            .bind(micros(until))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?, time(r.try_get("expires_at")?))))
            .collect()
        }
    };
}

mod on_sqlite {
    outbox_sql!(sqlx::Sqlite, sqlx::sqlite::SqliteRow, "");
}

mod on_postgres {
    outbox_sql!(
        sqlx::Postgres,
        sqlx::postgres::PgRow,
        " FOR UPDATE SKIP LOCKED"
    );
}

/// Run `$f(conn, args...)` of the backend's SQL on a connection: on SQLite the write
/// connection (`write`) or the read pool (`read`), on PostgreSQL the pool.
macro_rules! on_conn {
    ($self:ident, $kind:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(l) => {
                let mut c = on_conn!(@pool l, $kind)
                    .acquire()
                    .await
                    .map_err(StoreError::db)?;
                on_sqlite::$f(&mut *c, $($arg),*).await.map_err(StoreError::db)
            }
            Store::Postgres(l) => {
                let mut c = l.read_pool().acquire().await.map_err(StoreError::db)?;
                on_postgres::$f(&mut *c, $($arg),*).await.map_err(StoreError::db)
            }
        }
    };
    (@pool $l:ident, write) => {
        $l.write_pool()
    };
    (@pool $l:ident, read) => {
        $l.read_pool()
    };
}

impl Store {
    /// The subscriber `name`'s checkpoint, made at `at` when it has none yet.
    pub async fn outbox_start(&self, name: &str, at: u64) -> Result<u64, StoreError> {
        on_conn!(self, write, start(name, at))
    }

    /// The subscriber `name`'s checkpoint, if it was ever started.
    pub async fn outbox_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        on_conn!(self, read, checkpoint(name))
    }

    /// In one transaction: move `name`'s checkpoint from `from` to `to` and insert `rows`
    /// (those already there are left as they are). `false`, with nothing written, when the
    /// checkpoint was not at `from` (another node moved it).
    pub async fn outbox_enqueue(
        &self,
        name: &str,
        from: u64,
        to: u64,
        rows: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        on_conn!(self, write, enqueue(name, from, to, rows))
    }

    /// Insert `rows` not there yet; how many were new.
    pub async fn outbox_insert(&self, rows: &[NewDelivery]) -> Result<u64, StoreError> {
        on_conn!(self, write, insert_all(rows))
    }

    /// Lease up to `limit` pending rows due at `now` (and not leased) until `lease_until`.
    pub async fn outbox_claim(
        &self,
        now: Timestamp,
        lease_id: Uuid,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        on_conn!(self, write, claim(now, lease_id, lease_until, limit))
    }

    /// Record an attempt's outcome, if the lease `lease_id` still holds the row.
    pub async fn outbox_record(
        &self,
        id: Uuid,
        lease_id: Uuid,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        on_conn!(self, write, record(id, lease_id, outcome))
    }

    pub async fn outbox_counts(&self) -> Result<DeliveryCounts, StoreError> {
        on_conn!(self, read, counts())
    }

    /// Up to `limit` rows in `status`, oldest first.
    pub async fn outbox_list(
        &self,
        status: DeliveryStatus,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        on_conn!(self, read, list(status, limit))
    }

    pub async fn outbox_get(&self, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        on_conn!(self, read, get(id))
    }

    /// Make rows due at `now` again (failed ones with their attempts reset); the ids done.
    pub async fn outbox_requeue(
        &self,
        which: &Requeue,
        now: Timestamp,
    ) -> Result<Vec<Uuid>, StoreError> {
        on_conn!(self, write, requeue(which, now))
    }

    /// Active tokens (not revoked, not rotated) expiring after `now` and by `until`: id, name
    /// and expiry.
    pub async fn expiring_tokens(
        &self,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        on_conn!(self, read, expiring(now, until))
    }
}
