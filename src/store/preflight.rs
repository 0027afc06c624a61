//! The reads behind `tokenledger preflight`: the token table's columns, and the stored rows of
//! a few tokens (their events and audit rows, every column as bytes) with their salts, for a
//! canary scan. Nothing here writes; every read is bounded by the few tokens it is given.

use sqlx::{AssertSqlSafe, Row as _};
use uuid::Uuid;

use super::{Store, StoreError};

/// A column of a table, as the catalogue names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The declared type, lowercased (`blob`, `bytea`, `text`, ...).
    pub data_type: String,
}

/// One stored cell: where it is (`events position 12 column body`) and its bytes (text as
/// UTF-8, blobs raw, NULL empty).
#[derive(Debug)]
pub struct Cell {
    pub place: String,
    pub bytes: Vec<u8>,
}

/// What the log holds about some tokens: every cell of their events and audit rows, and the
/// salts of their commitments (the openings are the one place salts are kept).
#[derive(Debug, Default)]
pub struct StoredRows {
    pub cells: Vec<Cell>,
    pub salts: Vec<Vec<u8>>,
    /// Rows read: events plus audit rows.
    pub rows: usize,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// `position IN (1, 2, 3)`, from numbers only.
fn positions_in(positions: &[i64]) -> String {
    let list: Vec<String> = positions.iter().map(i64::to_string).collect();
    format!("position IN ({})", list.join(", "))
}

impl Store {
    /// The columns of `table` (or view), in order; empty when there is no such table.
    pub async fn columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        let rows: Vec<(String, String)> = match self {
            Store::Sqlite(log) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(log.read_pool())
                    .await
            }
            Store::Postgres(log) => {
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(log.read_pool())
                .await
            }
        }
        .map_err(StoreError::db)?;
        Ok(rows
            .into_iter()
            .map(|(name, data_type)| Column {
                name,
                data_type: data_type.to_lowercase(),
            })
            .collect())
    }

    /// How many `api_tokens` rows hold a hash that is not 32 bytes long.
    pub async fn hashes_not_32_bytes(&self) -> Result<u64, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM api_tokens WHERE hash IS NOT NULL AND length(hash) <> 32";
        let n: i64 = match self {
            Store::Sqlite(log) => sqlx::query_scalar(SQL).fetch_one(log.read_pool()).await,
            Store::Postgres(log) => sqlx::query_scalar(SQL).fetch_one(log.read_pool()).await,
        }
        .map_err(StoreError::db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every cell of the events of `tokens`' streams and of their `audit_logs` rows, and the
    /// salts of their openings.
    pub async fn rows_of_tokens(&self, tokens: &[Uuid]) -> Result<StoredRows, StoreError> {
        let mut positions = Vec::new();
        for id in tokens {
            let stream = tokenledger_events::StreamId::for_token(*id);
            const SQL: &str = "SELECT position FROM events WHERE stream_id = $1 ORDER BY position";
            let found: Vec<i64> = match self {
                Store::Sqlite(log) => {
                    sqlx::query_scalar(SQL)
                        .bind(stream.as_str())
                        .fetch_all(log.read_pool())
                        .await
                }
                Store::Postgres(log) => {
                    sqlx::query_scalar(SQL)
                        .bind(stream.as_str())
                        .fetch_all(log.read_pool())
                        .await
                }
            }
            .map_err(StoreError::db)?;
            positions.extend(found);
        }
        let mut out = StoredRows::default();
        if positions.is_empty() {
            return Ok(out);
        }
        for table in ["events", "audit_logs"] {
            let columns = self.columns(table).await?;
            out.rows += self
                .read_cells(table, &columns, &positions, &mut out.cells)
                .await?;
        }
        let sql = format!(
            "SELECT salt FROM event_openings WHERE {}",
            positions_in(&positions)
        );
        out.salts = match self {
            Store::Sqlite(log) => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(log.read_pool())
                    .await
            }
            Store::Postgres(log) => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(log.read_pool())
                    .await
            }
        }
        .map_err(StoreError::db)?;
        Ok(out)
    }

    /// The cells of `table`'s rows at `positions`, every column as bytes; the rows read.
    async fn read_cells(
        &self,
        table: &str,
        columns: &[Column],
        positions: &[i64],
        cells: &mut Vec<Cell>,
    ) -> Result<usize, StoreError> {
        let bytea = |c: &Column| matches!(c.data_type.as_str(), "bytea");
        let select: Vec<String> = columns
            .iter()
            .map(|c| match self {
                Store::Sqlite(_) => format!("CAST({} AS BLOB)", quoted(&c.name)),
                Store::Postgres(_) if bytea(c) => quoted(&c.name),
                Store::Postgres(_) => format!("CAST({} AS text)", quoted(&c.name)),
            })
            .collect();
        let sql = format!(
            "SELECT position, {} FROM {} WHERE {} ORDER BY 1",
            select.join(", "),
            quoted(table),
            positions_in(positions)
        );
        let mut rows = 0;
        match self {
            Store::Sqlite(log) => {
                let found = sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(log.read_pool())
                    .await
                    .map_err(StoreError::db)?;
                for row in &found {
                    rows += 1;
                    let position: i64 = row.try_get(0).map_err(StoreError::db)?;
                    for (i, c) in columns.iter().enumerate() {
                        let bytes: Option<Vec<u8>> =
                            row.try_get_unchecked(i + 1).map_err(StoreError::db)?;
                        cells.push(Cell {
                            place: format!("{table} position {position} column {}", c.name),
                            bytes: bytes.unwrap_or_default(),
                        });
                    }
                }
            }
            Store::Postgres(log) => {
                let found = sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(log.read_pool())
                    .await
                    .map_err(StoreError::db)?;
                for row in &found {
                    rows += 1;
                    let position: i64 = row.try_get(0).map_err(StoreError::db)?;
                    for (i, c) in columns.iter().enumerate() {
                        let bytes = if bytea(c) {
                            row.try_get::<Option<Vec<u8>>, _>(i + 1)
                        } else {
                            row.try_get::<Option<String>, _>(i + 1)
                                .map(|s| s.map(String::into_bytes))
                        }
                        .map_err(StoreError::db)?;
                        cells.push(Cell {
                            place: format!("{table} position {position} column {}", c.name),
                            bytes: bytes.unwrap_or_default(),
                        });
                    }
                }
            }
        }
        Ok(rows)
    }
}
