//! The plain-SQL baselines, measured on the same database in the same run: reads of every
//! event and every token row, the floor of a rebuild, table and index sizes.
//!
//! Reads are keyset pages of plain SELECTs (no decoding beyond the column types, no
//! openings, no JSON), so they are the least any reader of the same rows pays.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::Row as _;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokenledger_events::chain::event_hash;
use tokenledger_events::{Hash, LogId};
use uuid::Uuid;

/// Rows per keyset page.
const PAGE: i64 = 50_000;

pub enum Conn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// Run the same code on either connection (it type-checks once per backend).
macro_rules! on {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Pg($c) => $body,
        }
    };
}

fn err(what: &str) -> impl Fn(sqlx::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Conn {
    /// A connection with the service's own settings (WAL, `synchronous=FULL` on SQLite).
    pub async fn open(url: &str) -> Result<Conn, String> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(err("sqlite url"))?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(60));
            Ok(Conn::Sqlite(
                SqliteConnection::connect_with(&options)
                    .await
                    .map_err(err("connect"))?,
            ))
        } else {
            Ok(Conn::Pg(
                PgConnection::connect(url).await.map_err(err("connect"))?,
            ))
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Conn::Sqlite(_))
    }

    pub async fn exec(&mut self, sql: &str) -> Result<(), String> {
        on!(self, c => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut *c)
            .await
            .map(|_| ())
            .map_err(err(sql)))
    }

    pub async fn scalar(&mut self, sql: &str) -> Result<i64, String> {
        on!(self, c => sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut *c)
            .await
            .map(|v| v.unwrap_or(0))
            .map_err(err(sql)))
    }

    pub async fn close(self) {
        on!(self, c => { let _ = c.close().await; })
    }

    /// Move the WAL into the main file, so the file size is the database's.
    pub async fn checkpoint(&mut self) -> Result<(), String> {
        if self.is_sqlite() {
            self.exec("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        }
        Ok(())
    }
}

/// A plain read of every event's columns and body, in position order.
pub struct Scan {
    pub rows: u64,
    /// Bytes of the stored bodies.
    pub body_bytes: u64,
    pub elapsed: Duration,
}

/// Read every event (keyset pages by position); with `hash`, chain SHA-256 over each stored
/// body as verification chains over an event's bytes.
pub async fn scan_events(conn: &mut Conn, hash: bool) -> Result<Scan, String> {
    let start = Instant::now();
    let (mut rows, mut body_bytes, mut after) = (0u64, 0u64, 0i64);
    let mut prev = Hash::ZERO;
    let log = LogId(Uuid::nil());
    let sql = "SELECT position, stream_id, stream_version, event_id, recorded_at, actor, \
               event_type, schema_version, body, hash FROM events \
               WHERE position > $1 ORDER BY position LIMIT $2";
    loop {
        let page = on!(conn, c => {
            let fetched = sqlx::query(sql)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *c)
                .await
                .map_err(err("scanning events"))?;
            let mut last = None;
            for row in &fetched {
                let position: i64 = row.try_get(0).map_err(err("position"))?;
                let _stream: &str = row.try_get(1).map_err(err("stream_id"))?;
                let _version: i64 = row.try_get(2).map_err(err("stream_version"))?;
                let _id: Uuid = row.try_get(3).map_err(err("event_id"))?;
                let _at: i64 = row.try_get(4).map_err(err("recorded_at"))?;
                let _actor: &str = row.try_get(5).map_err(err("actor"))?;
                let _type: &str = row.try_get(6).map_err(err("event_type"))?;
                let _schema: i32 = row.try_get(7).map_err(err("schema_version"))?;
                let body: &[u8] = row.try_get(8).map_err(err("body"))?;
                let _hash: &[u8] = row.try_get(9).map_err(err("hash"))?;
                body_bytes += body.len() as u64;
                if hash {
                    prev = event_hash(log, position as u64, &prev, body);
                }
                last = Some(position);
            }
            (fetched.len(), last)
        });
        rows += page.0 as u64;
        match page.1 {
            Some(last) => after = last,
            None => break,
        }
    }
    std::hint::black_box(prev);
    Ok(Scan {
        rows,
        body_bytes,
        elapsed: start.elapsed(),
    })
}

/// Every event's body and hash read inside the database engine, nothing sent to the client:
/// `SELECT COUNT(*), SUM(length(body)), SUM(length(hash)) FROM events`. Returns (rows, elapsed).
pub async fn engine_scan(conn: &mut Conn) -> Result<(u64, Duration), String> {
    let len = if conn.is_sqlite() {
        "length"
    } else {
        "octet_length"
    };
    let start = Instant::now();
    let rows = conn
        .scalar(&format!(
            "SELECT COUNT(*) + 0 * SUM({len}(body)) + 0 * SUM({len}(hash)) FROM events"
        ))
        .await?;
    Ok((rows as u64, start.elapsed()))
}

/// A plain read of every `api_tokens` row (keyset pages by id): the floor of loading the
/// token table. Returns (rows, elapsed).
pub async fn scan_tokens(conn: &mut Conn) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut rows = 0u64;
    let mut after = Uuid::nil();
    let sql = "SELECT id, name, hash, environment, scopes, created_at, created_by, expires_at, \
               revoked_at, revoked_by, revoke_reason, rotated_from, rotated_to, rotated_at, \
               last_used_at, last_used_ip, last_used_path, use_count, denied_count, \
               stream_version, position FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2";
    loop {
        let page = on!(conn, c => {
            let fetched = sqlx::query(sql)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *c)
                .await
                .map_err(err("scanning api_tokens"))?;
            let mut last = None;
            for row in &fetched {
                let id: Uuid = row.try_get(0).map_err(err("id"))?;
                let _: &str = row.try_get(1).map_err(err("name"))?;
                let _: Option<&[u8]> = row.try_get(2).map_err(err("hash"))?;
                let _: &str = row.try_get(3).map_err(err("environment"))?;
                let _: &str = row.try_get(4).map_err(err("scopes"))?;
                let _: i64 = row.try_get(5).map_err(err("created_at"))?;
                let _: &str = row.try_get(6).map_err(err("created_by"))?;
                let _: i64 = row.try_get(7).map_err(err("expires_at"))?;
                let _: Option<i64> = row.try_get(8).map_err(err("revoked_at"))?;
                let _: Option<&str> = row.try_get(9).map_err(err("revoked_by"))?;
                let _: Option<&str> = row.try_get(10).map_err(err("revoke_reason"))?;
                let _: Option<Uuid> = row.try_get(11).map_err(err("rotated_from"))?;
                let _: Option<Uuid> = row.try_get(12).map_err(err("rotated_to"))?;
                let _: Option<i64> = row.try_get(13).map_err(err("rotated_at"))?;
                let _: Option<i64> = row.try_get(14).map_err(err("last_used_at"))?;
                let _: Option<&str> = row.try_get(15).map_err(err("last_used_ip"))?;
                let _: Option<&str> = row.try_get(16).map_err(err("last_used_path"))?;
                let _: i64 = row.try_get(17).map_err(err("use_count"))?;
                let _: i64 = row.try_get(18).map_err(err("denied_count"))?;
                let _: i64 = row.try_get(19).map_err(err("stream_version"))?;
                let _: i64 = row.try_get(20).map_err(err("position"))?;
                last = Some(id);
            }
            (fetched.len(), last)
        });
        rows += page.0 as u64;
        match page.1 {
            Some(last) => after = last,
            None => break,
        }
    }
    Ok((rows, start.elapsed()))
}

/// The floor of a projection rebuild, in one transaction holding the write lock as a rebuild
/// does: read every event, then write one row per token into a scratch table shaped like
/// `api_tokens` with its indexes (and, apart, one row per (token, address) into one shaped
/// like `token_addresses`), then commit. The scratch tables are dropped afterwards.
pub struct RebuildFloor {
    pub read: Scan,
    pub write_tokens: Duration,
    pub token_rows: u64,
    pub write_addresses: Duration,
    pub address_rows: u64,
    pub commit: Duration,
}

impl RebuildFloor {
    /// Read + token rows + commit: what the brief calls the floor.
    pub fn floor(&self) -> Duration {
        self.read.elapsed + self.write_tokens + self.commit
    }

    /// The floor with `token_addresses` written too (a rebuild writes both projections).
    pub fn floor_with_addresses(&self) -> Duration {
        self.floor() + self.write_addresses
    }
}

/// `CREATE` statements that copy `table` (with its indexes) as `copy`.
async fn copy_schema(conn: &mut Conn, table: &str, copy: &str) -> Result<Vec<String>, String> {
    match conn {
        Conn::Pg(_) => Ok(vec![format!(
            "CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)"
        )]),
        Conn::Sqlite(c) => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT type, sql FROM sqlite_master WHERE tbl_name = $1 AND sql IS NOT NULL \
                 ORDER BY type DESC",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await
            .map_err(err("reading the schema"))?;
            let mut out = Vec::new();
            for (k, (kind, sql)) in rows.into_iter().enumerate() {
                if kind == "table" {
                    out.push(sql.replacen(table, copy, 1));
                } else if let Some(at) = sql.find(&format!(" ON {table}")) {
                    let unique = if sql.to_ascii_uppercase().starts_with("CREATE UNIQUE") {
                        "UNIQUE "
                    } else {
                        ""
                    };
                    let rest = &sql[at + 4 + table.len()..];
                    out.push(format!(
                        "CREATE {unique}INDEX {copy}_index_{k} ON {copy}{rest}"
                    ));
                }
            }
            Ok(out)
        }
    }
}

pub async fn rebuild_floor(conn: &mut Conn) -> Result<RebuildFloor, String> {
    const TOKENS: &str = "bench_floor_tokens";
    const ADDRESSES: &str = "bench_floor_addresses";
    conn.exec(&format!("DROP TABLE IF EXISTS {TOKENS}")).await?;
    conn.exec(&format!("DROP TABLE IF EXISTS {ADDRESSES}"))
        .await?;
    let tokens_schema = copy_schema(conn, "api_tokens", TOKENS).await?;
    let addresses_schema = copy_schema(conn, "token_addresses", ADDRESSES).await?;
    conn.exec(if conn.is_sqlite() {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN"
    })
    .await?;
    let result = async {
        let read = scan_events(conn, false).await?;
        let start = Instant::now();
        for sql in &tokens_schema {
            conn.exec(sql).await?;
        }
        conn.exec(&format!("INSERT INTO {TOKENS} SELECT * FROM api_tokens"))
            .await?;
        let write_tokens = start.elapsed();
        let start = Instant::now();
        for sql in &addresses_schema {
            conn.exec(sql).await?;
        }
        conn.exec(&format!(
            "INSERT INTO {ADDRESSES} SELECT * FROM token_addresses"
        ))
        .await?;
        let write_addresses = start.elapsed();
        let token_rows = conn
            .scalar(&format!("SELECT COUNT(*) FROM {TOKENS}"))
            .await? as u64;
        let address_rows = conn
            .scalar(&format!("SELECT COUNT(*) FROM {ADDRESSES}"))
            .await? as u64;
        let start = Instant::now();
        conn.exec("COMMIT").await?;
        Ok::<_, String>(RebuildFloor {
            read,
            write_tokens,
            token_rows,
            write_addresses,
            address_rows,
            commit: start.elapsed(),
        })
    }
    .await;
    if result.is_err() {
        let _ = conn.exec("ROLLBACK").await;
    }
    conn.exec(&format!("DROP TABLE IF EXISTS {TOKENS}")).await?;
    conn.exec(&format!("DROP TABLE IF EXISTS {ADDRESSES}"))
        .await?;
    result
}

/// Bytes per relation, grouped by the table each belongs to: {table: {relation: bytes}}.
/// SQLite: `dbstat` pages (each table's b-tree and each of its indexes). PostgreSQL: each
/// table's `pg_total_relation_size` (heap, TOAST and indexes) split into the heap and TOAST
/// (`pg_table_size`) and each index (`pg_relation_size`).
pub type Sizes = BTreeMap<String, BTreeMap<String, i64>>;

pub async fn sizes(conn: &mut Conn) -> Result<Sizes, String> {
    let mut out: Sizes = BTreeMap::new();
    match conn {
        Conn::Sqlite(c) => {
            let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
                "SELECT d.name, m.tbl_name, SUM(d.pgsize) FROM dbstat d \
                 LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY d.name",
            )
            .fetch_all(&mut *c)
            .await
            .map_err(err(
                "dbstat (is SQLite built with SQLITE_ENABLE_DBSTAT_VTAB?)",
            ))?;
            for (name, table, bytes) in rows {
                let table = table.unwrap_or_else(|| name.clone());
                out.entry(table).or_default().insert(name, bytes);
            }
        }
        Conn::Pg(c) => {
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT t.relname::text, t.relname::text, pg_table_size(t.oid) FROM pg_class t \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = current_schema() AND t.relkind = 'r' \
                 UNION ALL \
                 SELECT t.relname::text, i.relname::text, pg_relation_size(i.oid) FROM pg_class t \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 JOIN pg_index x ON x.indrelid = t.oid JOIN pg_class i ON i.oid = x.indexrelid \
                 WHERE n.nspname = current_schema() AND t.relkind = 'r'",
            )
            .fetch_all(&mut *c)
            .await
            .map_err(err("relation sizes"))?;
            for (table, name, bytes) in rows {
                out.entry(table).or_default().insert(name, bytes);
            }
        }
    }
    Ok(out)
}

/// The sum of a table's relations.
pub fn table_bytes(sizes: &Sizes, table: &str) -> i64 {
    sizes.get(table).map_or(0, |r| r.values().sum())
}

/// The database's whole size: the file (SQLite, after a checkpoint) or `pg_database_size`.
pub async fn database_bytes(conn: &mut Conn) -> Result<i64, String> {
    if conn.is_sqlite() {
        let pages = conn.scalar("PRAGMA page_count").await?;
        let size = conn.scalar("PRAGMA page_size").await?;
        Ok(pages * size)
    } else {
        conn.scalar("SELECT pg_database_size(current_database())")
            .await
    }
}

/// What the use events themselves hold: (count, payload bytes, all column bytes).
pub async fn use_payload(conn: &mut Conn) -> Result<(i64, i64, i64), String> {
    let len = if conn.is_sqlite() {
        "length"
    } else {
        "octet_length"
    };
    let sql = format!(
        "SELECT COUNT(*), SUM({len}(body)), \
         SUM({len}(body) + {len}(stream_id) + {len}(actor) + {len}(event_type) + {len}(hash) \
             + 16 + 4 * 8) \
         FROM events WHERE event_type = 'TokenUsed'"
    );
    on!(conn, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *c)
            .await
            .map_err(err("use payload"))?;
        let count: i64 = row.try_get(0).map_err(err("count"))?;
        let body: Option<i64> = row.try_get(1).map_err(err("body"))?;
        let all: Option<i64> = row.try_get(2).map_err(err("columns"))?;
        Ok((count, body.unwrap_or(0), all.unwrap_or(0)))
    })
}

/// A token id `fraction` of the way through the table in id order.
pub async fn token_at(conn: &mut Conn, fraction: f64) -> Result<Option<Uuid>, String> {
    let count = conn.scalar("SELECT COUNT(*) FROM api_tokens").await?;
    let offset = ((count as f64) * fraction) as i64;
    on!(conn, c => sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM api_tokens ORDER BY id LIMIT 1 OFFSET $1",
        )
        .bind(offset.min(count.saturating_sub(1)).max(0))
        .fetch_optional(&mut *c)
        .await
        .map_err(err("a token deep in the table")))
}

/// The token with the most recorded uses.
pub async fn busiest_token(conn: &mut Conn) -> Result<Option<(Uuid, i64)>, String> {
    on!(conn, c => sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT id, use_count FROM api_tokens ORDER BY use_count DESC LIMIT 1",
        )
        .fetch_optional(&mut *c)
        .await
        .map_err(err("the busiest token")))
}

/// Create a scratch database on the PostgreSQL server `admin` names; returns its URL and name.
pub async fn create_pg_database(admin: &str, tag: &str) -> Result<(String, String), String> {
    let name = format!("tl_bench_scale_{tag}_{}", Uuid::now_v7().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .map_err(err("connecting to PostgreSQL"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(err("CREATE DATABASE"))?;
    let _ = conn.close().await;
    let base = admin.split('?').next().unwrap_or(admin);
    let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
    Ok((format!("{server}/{name}"), name))
}

pub async fn drop_pg_database(admin: &str, name: &str) -> Result<(), String> {
    let mut conn = PgConnection::connect(admin)
        .await
        .map_err(err("connecting to PostgreSQL"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map_err(err("DROP DATABASE"))?;
    let _ = conn.close().await;
    Ok(())
}
