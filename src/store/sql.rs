//! The SQL both backends share. SQLite and PostgreSQL accept the same `$n` placeholders, the
//! same multi-row `INSERT ... ON CONFLICT` and the same column types here, so the statements
//! are written once and instantiated per dialect by [`sql_event_log!`]; only taking the append
//! lock differs, and each backend module writes that part itself.
//!
//! An append group costs a fixed number of statements however many batches it holds: one read
//! of the stored event ids, one of the stream versions, one of the token rows touched, then
//! multi-row inserts and upserts. Every refusal is decided in memory before anything is
//! written, so no savepoints are needed and a refused batch leaves no trace.

/// Positions and versions are `u64` in the domain and `BIGINT`/`INTEGER` in SQL.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(v: i64, what: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(v).map_err(|_| sqlx::Error::Decode(format!("negative {what}: {v}").into()))
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// `$1, $2, ..., $n`.
pub(crate) fn in_list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row statement; keeps every statement far below both dialects' parameter
/// limits (SQLite 32766, PostgreSQL 65535) at 21 columns.
pub(crate) const CHUNK: usize = 500;

pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, stream_version, event_id, recorded_at, actor, event_type, schema_version, body, hash";

pub(crate) const TOKEN_COLUMNS: &str = "id, name, hash, environment, scopes, created_at, created_by, expires_at, revoked_at, revoked_by, revoke_reason, rotated_from, rotated_to, rotated_at, last_used_at, last_used_ip, last_used_path, use_count, denied_count, stream_version, position";

pub(crate) const AUDIT_COLUMNS: &str =
    "position, event_id, action, token_id, actor, ip, path, scopes, occurred_at, details";

/// Instantiates the shared statements for one dialect: `$conn` is its connection type and
/// `$row` its row type.
macro_rules! sql_event_log {
    ($conn:ty, $row:ty) => {
        use std::collections::{HashMap, HashSet};

        use sqlx::{AssertSqlSafe, Row as _};
        use tokenledger_events::log::{Sealer, batch_event_ids, classify_retry};
        use tokenledger_events::{
            AppendError, Environment, Hash, Head, Opening, StoredEvent, StreamAppend, StreamId,
            Timestamp, TokenHash,
        };
        use tokenledger_projections::TokenRow;
        use uuid::Uuid;

        use $crate::store::sql::{
            CHUNK, EVENT_COLUMNS, TOKEN_COLUMNS, from_sql, in_list, to_sql, values_list,
        };
        use $crate::store::writer::AppendResult;

        fn decode_err(e: impl std::fmt::Display) -> sqlx::Error {
            sqlx::Error::Decode(e.to_string().into())
        }

        fn event_from_row(row: &$row) -> Result<StoredEvent, sqlx::Error> {
            let stream: String = row.try_get("stream_id")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            Ok(StoredEvent {
                position: from_sql(row.try_get("position")?, "position")?,
                stream_id: StreamId::new(stream).map_err(decode_err)?,
                stream_version: from_sql(row.try_get("stream_version")?, "stream_version")?,
                event_id: row.try_get("event_id")?,
                recorded_at: Timestamp::from_micros(row.try_get("recorded_at")?),
                actor: row.try_get("actor")?,
                event_type: row.try_get("event_type")?,
                schema_version: u32::try_from(row.try_get::<i32, _>("schema_version")?)
                    .map_err(decode_err)?,
                bytes: row.try_get("body")?,
                hash: Hash::from_slice(&hash).ok_or_else(|| decode_err("hash is not 32 bytes"))?,
                openings: Vec::new(),
            })
        }

        fn opening_from_row(row: &$row) -> Result<(u64, Opening), sqlx::Error> {
            let salt: Vec<u8> = row.try_get("salt")?;
            Ok((
                from_sql(row.try_get("position")?, "position")?,
                Opening {
                    field: row.try_get("field")?,
                    salt: salt.try_into().map_err(|_| decode_err("salt is not 32 bytes"))?,
                    value: row.try_get("value")?,
                },
            ))
        }

        /// Attach openings to the events they belong to (`events` sorted by position).
        fn attach_openings(events: &mut [StoredEvent], openings: Vec<(u64, Opening)>) {
            for (position, opening) in openings {
                if let Ok(i) = events.binary_search_by_key(&position, |e| e.position) {
                    events[i].openings.push(opening);
                }
            }
        }

        pub(crate) async fn read_head(conn: &mut $conn) -> Result<Head, sqlx::Error> {
            let row = sqlx::query("SELECT position, hash FROM log_head")
                .fetch_one(&mut *conn)
                .await?;
            let hash: Vec<u8> = row.try_get("hash")?;
            Ok(Head {
                position: from_sql(row.try_get("position")?, "position")?,
                hash: Hash::from_slice(&hash).ok_or_else(|| decode_err("head hash is not 32 bytes"))?,
            })
        }

        /// Load the openings of the events with positions in `first..=last`.
        async fn with_openings(
            conn: &mut $conn,
            mut events: Vec<StoredEvent>,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Ok(events);
            };
            let openings = sqlx::query(
                "SELECT position, field, salt, value FROM event_openings \
                 WHERE position >= $1 AND position <= $2 ORDER BY position, field",
            )
            .bind(to_sql(first.position))
            .bind(to_sql(last.position))
            .fetch_all(&mut *conn)
            .await?;
            let openings = openings.iter().map(opening_from_row).collect::<Result<_, _>>()?;
            attach_openings(&mut events, openings);
            Ok(events)
        }

        pub(crate) async fn read_from(
            conn: &mut $conn,
            after: u64,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(to_sql(after))
                .bind(to_sql(limit as u64))
                .fetch_all(&mut *conn)
                .await?;
            let events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
            with_openings(conn, events).await
        }

        pub(crate) async fn read_stream(
            conn: &mut $conn,
            stream: &StreamId,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(stream.as_str())
                .fetch_all(&mut *conn)
                .await?;
            let mut events = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
            let openings = sqlx::query(
                "SELECT o.position, o.field, o.salt, o.value FROM event_openings o \
                 JOIN events e ON e.position = o.position \
                 WHERE e.stream_id = $1 ORDER BY o.position, o.field",
            )
            .bind(stream.as_str())
            .fetch_all(&mut *conn)
            .await?;
            let openings = openings.iter().map(opening_from_row).collect::<Result<_, _>>()?;
            attach_openings(&mut events, openings);
            Ok(events)
        }

        /// The events at `positions` (each stored), with their openings, in position order.
        async fn read_positions(
            conn: &mut $conn,
            positions: &[u64],
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let mut events = Vec::with_capacity(positions.len());
            for chunk in positions.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position IN ({}) ORDER BY position",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for p in chunk {
                    q = q.bind(to_sql(*p));
                }
                let rows = q.fetch_all(&mut *conn).await?;
                for row in &rows {
                    let event = event_from_row(row)?;
                    let opened = with_openings(&mut *conn, vec![event]).await?;
                    events.extend(opened);
                }
            }
            events.sort_by_key(|e| e.position);
            Ok(events)
        }

        async fn stored_positions(
            conn: &mut $conn,
            ids: &[Uuid],
        ) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
            let mut found = HashMap::new();
            for chunk in ids.chunks(CHUNK) {
                let sql = format!(
                    "SELECT event_id, position FROM events WHERE event_id IN ({})",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    found.insert(
                        row.try_get::<Uuid, _>("event_id")?,
                        from_sql(row.try_get("position")?, "position")?,
                    );
                }
            }
            Ok(found)
        }

        async fn stream_versions(
            conn: &mut $conn,
            streams: &[&StreamId],
        ) -> Result<HashMap<StreamId, u64>, sqlx::Error> {
            let mut found = HashMap::new();
            for chunk in streams.chunks(CHUNK) {
                // One index seek per stream: a MAX over a GROUP BY would read every version
                // of every stream, and a busy token's stream grows with each use.
                let sql = format!(
                    "SELECT s.column1 AS stream_id, \
                     (SELECT MAX(e.stream_version) FROM events e WHERE e.stream_id = s.column1) AS version \
                     FROM (VALUES {}) AS s",
                    values_list(chunk.len(), 1)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for s in chunk {
                    q = q.bind(s.as_str());
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let stream: String = row.try_get("stream_id")?;
                    if let Some(version) = row.try_get::<Option<i64>, _>("version")? {
                        found.insert(
                            StreamId::new(stream).map_err(decode_err)?,
                            from_sql(version, "stream_version")?,
                        );
                    }
                }
            }
            Ok(found)
        }

        /// The token streams of `batches` that need an open stream and whose token is
        /// revoked, read from the token table (current inside the append transaction).
        async fn closed_streams(
            conn: &mut $conn,
            batches: &[Vec<StreamAppend>],
        ) -> Result<HashSet<StreamId>, sqlx::Error> {
            let mut ids: Vec<Uuid> = batches
                .iter()
                .flatten()
                .filter(|a| a.events.iter().any(|e| e.event.requires_open_stream()))
                .filter_map(|a| a.stream_id.token_id())
                .collect();
            ids.sort();
            ids.dedup();
            let mut closed = HashSet::new();
            for chunk in ids.chunks(CHUNK) {
                let sql = format!(
                    "SELECT id FROM api_tokens WHERE revoked_at IS NOT NULL AND id IN ({})",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let id: Uuid = row.try_get("id")?;
                    closed.insert(StreamId::for_token(id));
                }
            }
            Ok(closed)
        }

        async fn insert_events(conn: &mut $conn, events: &[StoredEvent]) -> Result<(), sqlx::Error> {
            for chunk in events.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
                    values_list(chunk.len(), 10)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for e in chunk {
                    q = q
                        .bind(to_sql(e.position))
                        .bind(e.stream_id.as_str())
                        .bind(to_sql(e.stream_version))
                        .bind(e.event_id)
                        .bind(e.recorded_at.as_micros())
                        .bind(e.actor.as_str())
                        .bind(e.event_type.as_str())
                        .bind(e.schema_version as i32)
                        .bind(e.bytes.as_slice())
                        .bind(&e.hash.0[..]);
                }
                q.execute(&mut *conn).await?;
            }
            let openings: Vec<(u64, &Opening)> = events
                .iter()
                .flat_map(|e| e.openings.iter().map(move |o| (e.position, o)))
                .collect();
            for chunk in openings.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO event_openings (position, field, salt, value) VALUES {}",
                    values_list(chunk.len(), 4)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (position, o) in chunk {
                    q = q
                        .bind(to_sql(*position))
                        .bind(o.field.as_str())
                        .bind(&o.salt[..])
                        .bind(o.value.as_slice());
                }
                q.execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Move the head. The inline token projection needs no checkpoint of its own: it is
        /// written in the same transaction, so it is always at the head.
        pub(crate) async fn write_head(conn: &mut $conn, head: Head) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE log_head SET position = $1, hash = $2")
                .bind(to_sql(head.position))
                .bind(&head.hash.0[..])
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        fn token_from_row(row: &$row) -> Result<TokenRow, sqlx::Error> {
            let hash: Option<Vec<u8>> = row.try_get("hash")?;
            let environment: String = row.try_get("environment")?;
            let scopes: String = row.try_get("scopes")?;
            let micros = |c: &str| -> Result<Option<Timestamp>, sqlx::Error> {
                Ok(row.try_get::<Option<i64>, _>(c)?.map(Timestamp::from_micros))
            };
            Ok(TokenRow {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                environment: match environment.as_str() {
                    "live" => Environment::Live,
                    "test" => Environment::Test,
                    other => return Err(decode_err(format!("unknown environment {other:?}"))),
                },
                hash: hash
                    .map(|h| TokenHash::from_slice(&h).ok_or_else(|| decode_err("token hash is not 32 bytes")))
                    .transpose()?,
                created_at: Timestamp::from_micros(row.try_get("created_at")?),
                created_by: row.try_get("created_by")?,
                expires_at: Timestamp::from_micros(row.try_get("expires_at")?),
                revoked_at: micros("revoked_at")?,
                revoked_by: row.try_get("revoked_by")?,
                revoke_reason: row.try_get("revoke_reason")?,
                rotated_from: row.try_get("rotated_from")?,
                rotated_to: row.try_get("rotated_to")?,
                rotated_at: micros("rotated_at")?,
                last_used_at: micros("last_used_at")?,
                last_used_ip: row.try_get("last_used_ip")?,
                last_used_path: row.try_get("last_used_path")?,
                use_count: from_sql(row.try_get("use_count")?, "use_count")?,
                denied_count: from_sql(row.try_get("denied_count")?, "denied_count")?,
                version: from_sql(row.try_get("stream_version")?, "stream_version")?,
                position: from_sql(row.try_get("position")?, "position")?,
            })
        }

        async fn load_tokens(
            conn: &mut $conn,
            ids: &[Uuid],
        ) -> Result<HashMap<Uuid, TokenRow>, sqlx::Error> {
            let mut rows = HashMap::new();
            for chunk in ids.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id IN ({})",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let token = token_from_row(&row)?;
                    rows.insert(token.id, token);
                }
            }
            Ok(rows)
        }

        pub(crate) async fn token_by_id(conn: &mut $conn, id: Uuid) -> Result<Option<TokenRow>, sqlx::Error> {
            Ok(load_tokens(conn, &[id]).await?.remove(&id))
        }

        pub(crate) async fn token_by_hash(
            conn: &mut $conn,
            hash: &TokenHash,
        ) -> Result<Option<TokenRow>, sqlx::Error> {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1");
            sqlx::query(AssertSqlSafe(sql))
                .bind(&hash.0[..])
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(token_from_row)
                .transpose()
        }

        pub(crate) async fn all_tokens(conn: &mut $conn) -> Result<Vec<TokenRow>, sqlx::Error> {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id");
            sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(token_from_row)
                .collect()
        }

        /// Write token rows, replacing any stored row of the same id.
        async fn upsert_tokens(conn: &mut $conn, rows: &[&TokenRow]) -> Result<(), sqlx::Error> {
            for chunk in rows.chunks(CHUNK / 2) {
                let updates = TOKEN_COLUMNS
                    .split(", ")
                    .skip(1)
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES {} ON CONFLICT (id) DO UPDATE SET {updates}",
                    values_list(chunk.len(), 21)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for t in chunk {
                    q = q
                        .bind(t.id)
                        .bind(t.name.as_str())
                        .bind(t.hash.map(|h| h.0.to_vec()))
                        .bind(t.environment.as_str())
                        .bind(t.scopes.join(" "))
                        .bind(t.created_at.as_micros())
                        .bind(t.created_by.as_str())
                        .bind(t.expires_at.as_micros())
                        .bind(t.revoked_at.map(Timestamp::as_micros))
                        .bind(t.revoked_by.as_deref())
                        .bind(t.revoke_reason.as_deref())
                        .bind(t.rotated_from)
                        .bind(t.rotated_to)
                        .bind(t.rotated_at.map(Timestamp::as_micros))
                        .bind(t.last_used_at.map(Timestamp::as_micros))
                        .bind(t.last_used_ip.as_deref())
                        .bind(t.last_used_path.as_deref())
                        .bind(to_sql(t.use_count))
                        .bind(to_sql(t.denied_count))
                        .bind(to_sql(t.version))
                        .bind(to_sql(t.position));
                }
                q.execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Fold `events` into the stored token rows they touch (the inline projection).
        async fn project_tokens(conn: &mut $conn, events: &[StoredEvent]) -> Result<(), sqlx::Error> {
            let mut ids: Vec<Uuid> = events.iter().filter_map(|e| e.stream_id.token_id()).collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return Ok(());
            }
            let mut rows = load_tokens(&mut *conn, &ids).await?;
            let mut changed = HashSet::new();
            for e in events {
                let decoded = e.decode().map_err(decode_err)?;
                if let Some(id) = tokenledger_projections::tokens::fold(&mut rows, e, &decoded) {
                    changed.insert(id);
                }
            }
            let changed: Vec<&TokenRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
            upsert_tokens(conn, &changed).await
        }

        pub(crate) async fn checkpoints(conn: &mut $conn) -> Result<Vec<(String, u64)>, sqlx::Error> {
            sqlx::query("SELECT name, position FROM projection_checkpoints ORDER BY name")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("name")?, from_sql(r.try_get("position")?, "position")?)))
                .collect()
        }

        async fn set_checkpoint(conn: &mut $conn, name: &str, position: u64) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
                .bind(to_sql(position))
                .bind(name)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        async fn insert_audit_rows(
            conn: &mut $conn,
            rows: &[tokenledger_projections::AuditRow],
        ) -> Result<(), sqlx::Error> {
            for chunk in rows.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO audit_logs ({}) VALUES {}",
                    $crate::store::sql::AUDIT_COLUMNS,
                    values_list(chunk.len(), 10)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(to_sql(r.position))
                        .bind(r.event_id)
                        .bind(r.action.as_str())
                        .bind(r.token_id)
                        .bind(r.actor.as_str())
                        .bind(r.ip.as_deref())
                        .bind(r.path.as_deref())
                        .bind(r.scopes.join(" "))
                        .bind(r.occurred_at.as_micros())
                        .bind(r.details.to_string());
                }
                q.execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// The audit rows of `events`, taking each token's scopes from `tokens` (scopes never
        /// change after creation).
        fn audit_rows_of(
            events: &[StoredEvent],
            tokens: &HashMap<Uuid, TokenRow>,
        ) -> Result<Vec<tokenledger_projections::AuditRow>, sqlx::Error> {
            let mut rows = Vec::with_capacity(events.len());
            for e in events {
                let decoded = e.decode().map_err(decode_err)?;
                let scopes = e
                    .stream_id
                    .token_id()
                    .and_then(|id| tokens.get(&id))
                    .map(|t| t.scopes.as_slice())
                    .unwrap_or(&[]);
                rows.extend(tokenledger_projections::audit_row(e, &decoded, scopes));
            }
            Ok(rows)
        }

        /// One step of the audit subscriber inside the caller's transaction (which holds the
        /// checkpoint row): fold up to `limit` events past the checkpoint into `audit_logs` and
        /// move the checkpoint with them. Returns the new checkpoint and how many events it read.
        pub(crate) async fn audit_step(conn: &mut $conn, limit: usize) -> Result<(u64, usize), sqlx::Error> {
            let checkpoint: i64 = sqlx::query_scalar(
                "SELECT position FROM projection_checkpoints WHERE name = 'audit_logs'",
            )
            .fetch_one(&mut *conn)
            .await?;
            let checkpoint = from_sql(checkpoint, "checkpoint")?;
            let events = read_from(&mut *conn, checkpoint, limit).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok((checkpoint, 0));
            };
            let mut ids: Vec<Uuid> = events.iter().filter_map(|e| e.stream_id.token_id()).collect();
            ids.sort();
            ids.dedup();
            let tokens = load_tokens(&mut *conn, &ids).await?;
            let rows = audit_rows_of(&events, &tokens)?;
            insert_audit_rows(&mut *conn, &rows).await?;
            set_checkpoint(&mut *conn, "audit_logs", last).await?;
            Ok((last, events.len()))
        }

        /// Rebuild both projections from position 0 inside the caller's transaction, which
        /// holds the append lock. Returns the position rebuilt to and the number of tokens.
        pub(crate) async fn rebuild(conn: &mut $conn) -> Result<(u64, usize), sqlx::Error> {
            sqlx::query("DELETE FROM audit_logs").execute(&mut *conn).await?;
            sqlx::query("DELETE FROM api_tokens").execute(&mut *conn).await?;
            let head = read_head(&mut *conn).await?;
            let mut tokens: HashMap<Uuid, TokenRow> = HashMap::new();
            let mut after = 0;
            while after < head.position {
                let events = read_from(&mut *conn, after, CHUNK).await?;
                let Some(last) = events.last().map(|e| e.position) else { break };
                let mut audit = Vec::with_capacity(events.len());
                for e in events.iter().take_while(|e| e.position <= head.position) {
                    let decoded = e.decode().map_err(decode_err)?;
                    tokenledger_projections::tokens::fold(&mut tokens, e, &decoded);
                    audit.extend(audit_rows_of(std::slice::from_ref(e), &tokens)?);
                }
                insert_audit_rows(&mut *conn, &audit).await?;
                after = last;
            }
            let rows: Vec<&TokenRow> = tokens.values().collect();
            upsert_tokens(&mut *conn, &rows).await?;
            set_checkpoint(&mut *conn, "audit_logs", head.position).await?;
            Ok((head.position, tokens.len()))
        }

        fn audit_from_row(row: &$row) -> Result<tokenledger_projections::AuditRow, sqlx::Error> {
            let action: String = row.try_get("action")?;
            let scopes: String = row.try_get("scopes")?;
            let details: String = row.try_get("details")?;
            Ok(tokenledger_projections::AuditRow {
                position: from_sql(row.try_get("position")?, "position")?,
                event_id: row.try_get("event_id")?,
                action: tokenledger_projections::AuditAction::parse(&action)
                    .ok_or_else(|| decode_err(format!("unknown audit action {action:?}")))?,
                token_id: row.try_get("token_id")?,
                actor: row.try_get("actor")?,
                ip: row.try_get("ip")?,
                path: row.try_get("path")?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                occurred_at: Timestamp::from_micros(row.try_get("occurred_at")?),
                details: serde_json::from_str(&details).map_err(decode_err)?,
            })
        }

        pub(crate) async fn audit_query(
            conn: &mut $conn,
            filter: &$crate::store::AuditFilter,
        ) -> Result<Vec<tokenledger_projections::AuditRow>, sqlx::Error> {
            let mut conditions = Vec::new();
            let mut n = 0;
            let mut next = || {
                n += 1;
                n
            };
            if filter.token_id.is_some() {
                conditions.push(format!("token_id = ${}", next()));
            }
            if filter.action.is_some() {
                conditions.push(format!("action = ${}", next()));
            }
            if filter.since.is_some() {
                conditions.push(format!("occurred_at >= ${}", next()));
            }
            let limit = next();
            let sql = format!(
                "SELECT {} FROM audit_logs {} ORDER BY position LIMIT ${limit}",
                $crate::store::sql::AUDIT_COLUMNS,
                if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) },
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(id) = filter.token_id {
                q = q.bind(id);
            }
            if let Some(action) = filter.action {
                q = q.bind(action.as_str());
            }
            if let Some(since) = filter.since {
                q = q.bind(since.as_micros());
            }
            q.bind(to_sql(filter.limit as u64))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(audit_from_row)
                .collect()
        }

        /// What happened to one batch of a group, before the group's writes.
        enum Outcome {
            Appended(Vec<StoredEvent>),
            /// Every event is stored already (or sealed earlier in this group).
            Retry(Vec<Uuid>),
            Refused(AppendError),
        }

        /// Append every batch inside the caller's transaction, which holds the append lock and
        /// started at `sealer`'s head. Refusals are per batch; `Err` only when the database
        /// failed, and then nothing of the group may be committed.
        pub(crate) async fn append_group(
            tx: &mut $conn,
            sealer: &mut Sealer,
            batches: &[Vec<StreamAppend>],
        ) -> Result<Vec<AppendResult>, sqlx::Error> {
            let ids: Vec<Uuid> = batches.iter().flat_map(|b| batch_event_ids(b)).collect();
            let mut stored = stored_positions(&mut *tx, &ids).await?;
            let mut streams: Vec<&StreamId> = batches
                .iter()
                .flat_map(|b| b.iter().map(|a| &a.stream_id))
                .collect();
            streams.sort();
            streams.dedup();
            let mut versions = stream_versions(&mut *tx, &streams).await?;
            let mut closed = closed_streams(&mut *tx, batches).await?;

            let mut sealed: HashMap<Uuid, StoredEvent> = HashMap::new();
            let mut new_events: Vec<StoredEvent> = Vec::new();
            let mut outcomes = Vec::with_capacity(batches.len());
            for batch in batches {
                let batch_ids = batch_event_ids(batch);
                let known: HashSet<Uuid> = batch_ids
                    .iter()
                    .filter(|id| stored.contains_key(id) || sealed.contains_key(id))
                    .copied()
                    .collect();
                match classify_retry(&batch_ids, &known) {
                    Err(e) => outcomes.push(Outcome::Refused(e)),
                    Ok(true) => outcomes.push(Outcome::Retry(batch_ids)),
                    Ok(false) => {
                        let before = sealer.head();
                        let mut staged = Vec::new();
                        let mut moved: Vec<(StreamId, u64)> = Vec::new();
                        let mut closing: HashSet<StreamId> = HashSet::new();
                        let mut refusal = None;
                        for append in batch {
                            let current = moved
                                .iter()
                                .rev()
                                .find(|(s, _)| *s == append.stream_id)
                                .map(|(_, v)| *v)
                                .or_else(|| versions.get(&append.stream_id).copied())
                                .unwrap_or(0);
                            let sealed_events = tokenledger_events::log::check_open(
                                append,
                                closed.contains(&append.stream_id)
                                    || closing.contains(&append.stream_id),
                            )
                            .and_then(|()| sealer.seal(append, current));
                            match sealed_events {
                                Ok(events) => {
                                    if tokenledger_events::log::closes(append) {
                                        closing.insert(append.stream_id.clone());
                                    }
                                    moved.push((append.stream_id.clone(), current + events.len() as u64));
                                    staged.extend(events);
                                }
                                Err(e) => {
                                    refusal = Some(e);
                                    break;
                                }
                            }
                        }
                        match refusal {
                            Some(e) => {
                                sealer.reset(before);
                                outcomes.push(Outcome::Refused(e));
                            }
                            None => {
                                versions.extend(moved);
                                closed.extend(closing);
                                for e in &staged {
                                    sealed.insert(e.event_id, e.clone());
                                }
                                new_events.extend(staged.iter().cloned());
                                outcomes.push(Outcome::Appended(staged));
                            }
                        }
                    }
                }
            }

            insert_events(&mut *tx, &new_events).await?;
            project_tokens(&mut *tx, &new_events).await?;

            // Retries answer with the events as first stored.
            let wanted: Vec<u64> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Retry(ids) => Some(ids),
                    _ => None,
                })
                .flatten()
                .filter(|id| !sealed.contains_key(id))
                .map(|id| stored[id])
                .collect();
            if !wanted.is_empty() {
                for e in read_positions(&mut *tx, &wanted).await? {
                    stored.remove(&e.event_id);
                    sealed.insert(e.event_id, e);
                }
            }
            Ok(outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Appended(events) => Ok(events),
                    Outcome::Refused(e) => Err(e),
                    Outcome::Retry(ids) => Ok(ids.iter().map(|id| sealed[id].clone()).collect()),
                })
                .collect())
        }
    };
}

pub(crate) use sql_event_log;
