//! The SQL both backends share. SQLite and PostgreSQL accept the same `$n` placeholders and
//! the same column types here, so the statements are written once and instantiated per
//! dialect by [`sql_event_log!`]; only taking the append lock differs, and each backend module
//! writes that part itself.

/// Positions and versions are `u64` in the domain and `BIGINT`/`INTEGER` in SQL.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(v: i64, what: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(v).map_err(|_| sqlx::Error::Decode(format!("negative {what}: {v}").into()))
}

/// Instantiates the shared statements for one dialect: `$conn` is its connection type and
/// `$row` its row type.
macro_rules! sql_event_log {
    ($conn:ty, $row:ty) => {
        use std::collections::{HashMap, HashSet};

        use sqlx::{Connection as _, Row as _};
        use tokenledger_events::log::{Sealer, batch_event_ids, classify_retry};
        use tokenledger_events::{
            AppendError, Hash, Head, Opening, StoredEvent, StreamAppend, StreamId, Timestamp,
        };
        use uuid::Uuid;

        use $crate::store::sql::{from_sql, to_sql};
        use $crate::store::writer::AppendResult;

        fn event_from_row(row: &$row) -> Result<StoredEvent, sqlx::Error> {
            let stream: String = row.try_get("stream_id")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            Ok(StoredEvent {
                position: from_sql(row.try_get("position")?, "position")?,
                stream_id: StreamId::new(stream).map_err(|e| sqlx::Error::Decode(e.into()))?,
                stream_version: from_sql(row.try_get("stream_version")?, "stream_version")?,
                event_id: row.try_get("event_id")?,
                recorded_at: Timestamp::from_micros(row.try_get("recorded_at")?),
                actor: row.try_get("actor")?,
                event_type: row.try_get("event_type")?,
                schema_version: u32::try_from(row.try_get::<i32, _>("schema_version")?)
                    .map_err(|e| sqlx::Error::Decode(e.into()))?,
                bytes: row.try_get("body")?,
                hash: Hash::from_slice(&hash)
                    .ok_or_else(|| sqlx::Error::Decode("hash is not 32 bytes".into()))?,
                openings: Vec::new(),
            })
        }

        fn opening_from_row(row: &$row) -> Result<(u64, Opening), sqlx::Error> {
            let salt: Vec<u8> = row.try_get("salt")?;
            Ok((
                from_sql(row.try_get("position")?, "position")?,
                Opening {
                    field: row.try_get("field")?,
                    salt: salt
                        .try_into()
                        .map_err(|_| sqlx::Error::Decode("salt is not 32 bytes".into()))?,
                    value: row.try_get("value")?,
                },
            ))
        }

        fn attach_openings(events: &mut [StoredEvent], openings: Vec<(u64, Opening)>) {
            let first = match events.first() {
                Some(e) => e.position,
                None => return,
            };
            for (position, opening) in openings {
                // `events` is sorted and dense when read by position; read by stream it is
                // sorted, so fall back to a search.
                let index = position
                    .checked_sub(first)
                    .map(|i| i as usize)
                    .filter(|&i| events.get(i).is_some_and(|e| e.position == position))
                    .or_else(|| events.iter().position(|e| e.position == position));
                if let Some(i) = index {
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
                hash: Hash::from_slice(&hash)
                    .ok_or_else(|| sqlx::Error::Decode("head hash is not 32 bytes".into()))?,
            })
        }

        pub(crate) async fn read_from(
            conn: &mut $conn,
            after: u64,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT position, stream_id, stream_version, event_id, recorded_at, actor, \
                 event_type, schema_version, body, hash \
                 FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .bind(to_sql(after))
            .bind(to_sql(limit as u64))
            .fetch_all(&mut *conn)
            .await?;
            let mut events = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            if let (Some(first), Some(last)) = (events.first(), events.last()) {
                let (first, last) = (first.position, last.position);
                let openings = sqlx::query(
                    "SELECT position, field, salt, value FROM event_openings \
                     WHERE position >= $1 AND position <= $2 ORDER BY position, field",
                )
                .bind(to_sql(first))
                .bind(to_sql(last))
                .fetch_all(&mut *conn)
                .await?;
                let openings = openings
                    .iter()
                    .map(opening_from_row)
                    .collect::<Result<_, _>>()?;
                attach_openings(&mut events, openings);
            }
            Ok(events)
        }

        pub(crate) async fn read_stream(
            conn: &mut $conn,
            stream: &StreamId,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT position, stream_id, stream_version, event_id, recorded_at, actor, \
                 event_type, schema_version, body, hash \
                 FROM events WHERE stream_id = $1 ORDER BY stream_version",
            )
            .bind(stream.as_str())
            .fetch_all(&mut *conn)
            .await?;
            let mut events = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let openings = sqlx::query(
                "SELECT o.position, o.field, o.salt, o.value FROM event_openings o \
                 JOIN events e ON e.position = o.position \
                 WHERE e.stream_id = $1 ORDER BY o.position, o.field",
            )
            .bind(stream.as_str())
            .fetch_all(&mut *conn)
            .await?;
            let openings = openings
                .iter()
                .map(opening_from_row)
                .collect::<Result<_, _>>()?;
            attach_openings(&mut events, openings);
            Ok(events)
        }

        async fn read_at(conn: &mut $conn, position: u64) -> Result<StoredEvent, sqlx::Error> {
            let mut events = read_from(&mut *conn, position - 1, 1).await?;
            events.pop().ok_or(sqlx::Error::RowNotFound)
        }

        async fn stored_positions(
            conn: &mut $conn,
            ids: &[Uuid],
        ) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
            let mut found = HashMap::new();
            for id in ids {
                let position: Option<i64> =
                    sqlx::query_scalar("SELECT position FROM events WHERE event_id = $1")
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                if let Some(p) = position {
                    found.insert(*id, from_sql(p, "position")?);
                }
            }
            Ok(found)
        }

        async fn stream_version(conn: &mut $conn, stream: &StreamId) -> Result<u64, sqlx::Error> {
            let version: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = $1",
            )
            .bind(stream.as_str())
            .fetch_one(&mut *conn)
            .await?;
            from_sql(version, "stream_version")
        }

        async fn insert_event(conn: &mut $conn, e: &StoredEvent) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO events (position, stream_id, stream_version, event_id, recorded_at, \
                 actor, event_type, schema_version, body, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(to_sql(e.position))
            .bind(e.stream_id.as_str())
            .bind(to_sql(e.stream_version))
            .bind(e.event_id)
            .bind(e.recorded_at.as_micros())
            .bind(&e.actor)
            .bind(&e.event_type)
            .bind(e.schema_version as i32)
            .bind(&e.bytes)
            .bind(&e.hash.0[..])
            .execute(&mut *conn)
            .await?;
            for o in &e.openings {
                sqlx::query(
                    "INSERT INTO event_openings (position, field, salt, value) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(to_sql(e.position))
                .bind(&o.field)
                .bind(&o.salt[..])
                .bind(&o.value)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(crate) async fn write_head(conn: &mut $conn, head: Head) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE log_head SET position = $1, hash = $2")
                .bind(to_sql(head.position))
                .bind(&head.hash.0[..])
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Why one batch of a group was not appended.
        enum BatchFailure {
            /// The log refused it (version conflict, partial retry); its savepoint is undone.
            Refused(AppendError),
            /// The database failed while appending it.
            Database(sqlx::Error),
        }

        impl From<sqlx::Error> for BatchFailure {
            fn from(e: sqlx::Error) -> Self {
                BatchFailure::Database(e)
            }
        }

        impl From<AppendError> for BatchFailure {
            fn from(e: AppendError) -> Self {
                BatchFailure::Refused(e)
            }
        }

        /// Append one batch inside the open transaction, or return the stored events when the
        /// batch is a retry of one already committed.
        async fn append_one(
            conn: &mut $conn,
            sealer: &mut Sealer,
            batch: &[StreamAppend],
        ) -> Result<Vec<StoredEvent>, BatchFailure> {
            let ids = batch_event_ids(batch);
            let stored = stored_positions(&mut *conn, &ids).await?;
            let known: HashSet<Uuid> = stored.keys().copied().collect();
            if classify_retry(&ids, &known)? {
                let mut events = Vec::with_capacity(ids.len());
                for id in &ids {
                    events.push(read_at(&mut *conn, stored[id]).await?);
                }
                return Ok(events);
            }
            let mut appended = Vec::new();
            for append in batch {
                let current = stream_version(&mut *conn, &append.stream_id).await?;
                let sealed = sealer.seal(append, current)?;
                for e in &sealed {
                    insert_event(&mut *conn, e).await?;
                }
                appended.extend(sealed);
            }
            Ok(appended)
        }

        /// Append every batch under its own savepoint inside the caller's transaction, which
        /// holds the append lock and started at `sealer`'s head. Returns per-batch results;
        /// `Err` only when the transaction itself is broken.
        pub(crate) async fn append_group(
            tx: &mut $conn,
            sealer: &mut Sealer,
            batches: &[Vec<StreamAppend>],
        ) -> Result<Vec<AppendResult>, sqlx::Error> {
            let mut results = Vec::with_capacity(batches.len());
            for batch in batches {
                let before = sealer.head();
                let mut savepoint = tx.begin().await?;
                match append_one(&mut savepoint, sealer, batch).await {
                    Ok(events) => {
                        savepoint.commit().await?;
                        results.push(Ok(events));
                    }
                    Err(failure) => {
                        savepoint.rollback().await?;
                        sealer.reset(before);
                        results.push(Err(match failure {
                            BatchFailure::Refused(e) => e,
                            BatchFailure::Database(e) => AppendError::Unavailable(e.to_string()),
                        }));
                    }
                }
            }
            Ok(results)
        }
    };
}

pub(crate) use sql_event_log;
