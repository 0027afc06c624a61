//! The reads behind as-of queries, the incident report and token histories. Each is bounded:
//! by a page of tokens, by one token's stream, or by an index that leaves uses out. None
//! scans the log.

use tokenledger_events::{StoredEvent, StreamId, Timestamp};
use tokenledger_projections::{AddressUse, TokenRow};
use uuid::Uuid;

use super::{Store, StoreError, StoredCheckpoint};

/// A token's uses from a stream version on, grouped by UTC day, address, path, method and
/// command inside the database: a window of a million uses crosses as a few rows. Bodies of
/// schema version 1 hold the payload under `data`.
pub(crate) const USE_GROUPS_SQLITE: &str = "\
    SELECT recorded_at / 86400000000 AS day, ip, path, method, command, COUNT(*) AS n, \
           MIN(recorded_at) AS first_at, MAX(recorded_at) AS last_at \
    FROM (SELECT recorded_at, json_extract(b, '$.ip') AS ip, json_extract(b, '$.path') AS path, \
                 json_extract(b, '$.method') AS method, json_extract(b, '$.command') AS command \
          FROM (SELECT recorded_at, \
                       CASE WHEN schema_version >= 2 THEN CAST(body AS TEXT) \
                            ELSE json_extract(CAST(body AS TEXT), '$.data') END AS b \
                FROM events \
                WHERE stream_id = $1 AND stream_version >= $2 AND event_type = 'TokenUsed')) \
    GROUP BY day, ip, path, method, command";
pub(crate) const USE_GROUPS_POSTGRES: &str = "\
    SELECT recorded_at / 86400000000 AS day, d ->> 'ip' AS ip, d ->> 'path' AS path, \
           d ->> 'method' AS method, d ->> 'command' AS command, COUNT(*) AS n, \
           MIN(recorded_at) AS first_at, MAX(recorded_at) AS last_at \
    FROM (SELECT recorded_at, \
                 CASE WHEN schema_version >= 2 THEN convert_from(body, 'UTF8')::jsonb \
                      ELSE convert_from(body, 'UTF8')::jsonb -> 'data' END AS d \
          FROM events \
          WHERE stream_id = $1 AND stream_version >= $2 AND event_type = 'TokenUsed') u \
    GROUP BY 1, 2, 3, 4, 5";

/// Instantiates the forensic statements for one dialect, beside `sql_event_log!` (whose
/// helpers they use); `forensic_reads!()` then adds the methods to the log type.
macro_rules! forensic_sql {
    ($conn:ty) => {
        /// Token ids after `after` (in id order) whose `TokenCreated` is at or before `upto`.
        /// A token's first lifecycle event is its creation.
        pub(crate) async fn tokens_existing_at(
            conn: &mut $conn,
            after: Option<Uuid>,
            upto: u64,
            limit: usize,
        ) -> Result<Vec<Uuid>, sqlx::Error> {
            let from = after.map_or_else(|| "token-".to_owned(), |id| StreamId::for_token(id).as_str().to_owned());
            // Token streams are `token-<uuid>`: they sort between "token-" and "token.".
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT stream_id FROM events \
                 WHERE event_type <> 'TokenUsed' AND stream_id > $1 AND stream_id < 'token.' \
                 GROUP BY stream_id HAVING MIN(position) <= $2 ORDER BY stream_id LIMIT $3",
            )
            .bind(from)
            .bind(to_sql(upto))
            .bind(to_sql(limit as u64))
            .fetch_all(&mut *conn)
            .await?;
            Ok(rows
                .into_iter()
                .filter_map(|s| StreamId::new(s).ok().and_then(|s| s.token_id()))
                .collect())
        }

        /// How many tokens had been created at `upto` (counted on the index that leaves uses
        /// out).
        pub(crate) async fn count_created_at(conn: &mut $conn, upto: u64) -> Result<u64, sqlx::Error> {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE event_type = 'TokenCreated' \
                 AND event_type <> 'TokenUsed' AND position <= $1",
            )
            .bind(to_sql(upto))
            .fetch_one(&mut *conn)
            .await?;
            from_sql(n, "count")
        }

        /// The lifecycle events (all but uses) of these tokens at or before `upto`, in
        /// position order.
        pub(crate) async fn lifecycle_events(
            conn: &mut $conn,
            ids: &[Uuid],
            upto: u64,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let mut events = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id IN ({}) \
                     AND event_type <> 'TokenUsed' AND position <= {} ORDER BY position",
                    in_list(chunk.len()),
                    match PARAMS {
                        $crate::store::sql::Params::Numbered => format!("${}", chunk.len() + 1),
                        $crate::store::sql::Params::Anonymous => "?".to_owned(),
                    }
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(StreamId::for_token(*id).as_str().to_owned());
                }
                let rows = q.bind(to_sql(upto)).fetch_all(&mut *conn).await?;
                for row in &rows {
                    events.push(event_from_row(row)?);
                }
            }
            events.sort_by_key(|e| e.position);
            Ok(events)
        }

        /// `stream`'s uses from `from_version` on, grouped (see [`USE_GROUPS_SQLITE`]).
        pub(crate) async fn use_groups(
            conn: &mut $conn,
            stream: &StreamId,
            from_version: u64,
        ) -> Result<Vec<tokenledger_projections::UseGroup>, sqlx::Error> {
            let sql = match PARAMS {
                $crate::store::sql::Params::Numbered => super::forensics::USE_GROUPS_POSTGRES,
                $crate::store::sql::Params::Anonymous => super::forensics::USE_GROUPS_SQLITE,
            };
            sqlx::query(sql)
                .bind(stream.as_str())
                .bind(to_sql(from_version))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    Ok(tokenledger_projections::UseGroup {
                        day: row.try_get("day")?,
                        ip: row.try_get("ip")?,
                        path: row.try_get::<Option<String>, _>("path")?.unwrap_or_default(),
                        method: row.try_get::<Option<String>, _>("method")?.unwrap_or_default(),
                        command: row.try_get("command")?,
                        count: from_sql(row.try_get("n")?, "count")?,
                        first_at: Timestamp::from_micros(row.try_get("first_at")?),
                        last_at: Timestamp::from_micros(row.try_get("last_at")?),
                    })
                })
                .collect()
        }

        /// `stream`'s lifecycle events (all but uses) at or after `from`, in order.
        pub(crate) async fn lifecycle_from(
            conn: &mut $conn,
            stream: &StreamId,
            from: u64,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 \
                 AND event_type <> 'TokenUsed' AND position >= $2 ORDER BY position"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(stream.as_str())
                .bind(to_sql(from))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(event_from_row)
                .collect()
        }

        /// The log position of `stream`'s event at `version`, if there is one.
        pub(crate) async fn position_of_version(
            conn: &mut $conn,
            stream: &StreamId,
            version: u64,
        ) -> Result<Option<u64>, sqlx::Error> {
            let p: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM events WHERE stream_id = $1 AND stream_version = $2",
            )
            .bind(stream.as_str())
            .bind(to_sql(version))
            .fetch_optional(&mut *conn)
            .await?;
            p.map(|p| from_sql(p, "position")).transpose()
        }

        /// `stream`'s events after `after_version`, at most `limit`, in stream order (without
        /// openings: nothing here reads a secret).
        pub(crate) async fn stream_page(
            conn: &mut $conn,
            stream: &StreamId,
            after_version: u64,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 \
                 ORDER BY stream_version LIMIT $3"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(stream.as_str())
                .bind(to_sql(after_version))
                .bind(to_sql(limit as u64))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(event_from_row)
                .collect()
        }

        /// One token's addresses, with first and last use and a count.
        pub(crate) async fn addresses_of(
            conn: &mut $conn,
            id: Uuid,
        ) -> Result<Vec<tokenledger_projections::AddressUse>, sqlx::Error> {
            let sql = format!(
                "SELECT {} FROM token_addresses WHERE token_id = $1 ORDER BY ip",
                $crate::store::sql::ADDRESS_COLUMNS
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(address_from_row)
                .collect()
        }

        /// Other tokens used from `ip` at or after `since`.
        pub(crate) async fn tokens_seen_from(
            conn: &mut $conn,
            ip: &str,
            since: Timestamp,
            limit: usize,
        ) -> Result<Vec<Uuid>, sqlx::Error> {
            sqlx::query_scalar(
                "SELECT token_id FROM token_addresses WHERE ip = $1 AND last_seen >= $2 \
                 ORDER BY token_id LIMIT $3",
            )
            .bind(ip)
            .bind(since.as_micros())
            .bind(to_sql(limit as u64))
            .fetch_all(&mut *conn)
            .await
        }

        /// Tokens created by `actor`, in id order, at most `limit`, and how many there are.
        pub(crate) async fn tokens_created_by(
            conn: &mut $conn,
            actor: &str,
            limit: usize,
        ) -> Result<(Vec<TokenRow>, u64), sqlx::Error> {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE created_by = $1 ORDER BY id LIMIT $2"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(actor)
                .bind(to_sql(limit as u64))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(token_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE created_by = $1")
                .bind(actor)
                .fetch_one(&mut *conn)
                .await?;
            Ok((rows, from_sql(n, "count")?))
        }

        /// The smallest signed checkpoint of at least `size` events.
        pub(crate) async fn checkpoint_covering(
            conn: &mut $conn,
            size: u64,
        ) -> Result<Option<$crate::store::StoredCheckpoint>, sqlx::Error> {
            let row = sqlx::query(
                "SELECT size, root, note, signed_at FROM checkpoints WHERE size >= $1 \
                 ORDER BY size LIMIT 1",
            )
            .bind(to_sql(size))
            .fetch_optional(&mut *conn)
            .await?;
            row.map(|row| {
                let root: Vec<u8> = row.try_get("root")?;
                Ok($crate::store::StoredCheckpoint {
                    size: from_sql(row.try_get("size")?, "size")?,
                    root: Hash::from_slice(&root)
                        .ok_or_else(|| decode_err("checkpoint root is not 32 bytes"))?,
                    note: row.try_get("note")?,
                    signed_at: Timestamp::from_micros(row.try_get("signed_at")?),
                })
            })
            .transpose()
        }

        /// The log type's forensic reads, each on a pooled read connection.
        macro_rules! forensic_reads {
            () => {
                pub(crate) async fn tokens_existing_at(
                    &self,
                    after: Option<Uuid>,
                    upto: u64,
                    limit: usize,
                ) -> Result<Vec<Uuid>, StoreError> {
                    tokens_existing_at(&mut *self.reader().await?, after, upto, limit)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn count_created_at(&self, upto: u64) -> Result<u64, StoreError> {
                    count_created_at(&mut *self.reader().await?, upto)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn lifecycle_events(
                    &self,
                    ids: &[Uuid],
                    upto: u64,
                ) -> Result<Vec<StoredEvent>, StoreError> {
                    lifecycle_events(&mut *self.reader().await?, ids, upto)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn use_groups(
                    &self,
                    stream: &StreamId,
                    from_version: u64,
                ) -> Result<Vec<tokenledger_projections::UseGroup>, StoreError> {
                    use_groups(&mut *self.reader().await?, stream, from_version)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn lifecycle_from(
                    &self,
                    stream: &StreamId,
                    from: u64,
                ) -> Result<Vec<StoredEvent>, StoreError> {
                    lifecycle_from(&mut *self.reader().await?, stream, from)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn position_of_version(
                    &self,
                    stream: &StreamId,
                    version: u64,
                ) -> Result<Option<u64>, StoreError> {
                    position_of_version(&mut *self.reader().await?, stream, version)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn stream_page(
                    &self,
                    stream: &StreamId,
                    after_version: u64,
                    limit: usize,
                ) -> Result<Vec<StoredEvent>, StoreError> {
                    stream_page(&mut *self.reader().await?, stream, after_version, limit)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn addresses_of(
                    &self,
                    id: Uuid,
                ) -> Result<Vec<tokenledger_projections::AddressUse>, StoreError> {
                    addresses_of(&mut *self.reader().await?, id)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn tokens_seen_from(
                    &self,
                    ip: &str,
                    since: Timestamp,
                    limit: usize,
                ) -> Result<Vec<Uuid>, StoreError> {
                    tokens_seen_from(&mut *self.reader().await?, ip, since, limit)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn tokens_created_by(
                    &self,
                    actor: &str,
                    limit: usize,
                ) -> Result<(Vec<TokenRow>, u64), StoreError> {
                    tokens_created_by(&mut *self.reader().await?, actor, limit)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn checkpoint_covering(
                    &self,
                    size: u64,
                ) -> Result<Option<$crate::store::StoredCheckpoint>, StoreError> {
                    checkpoint_covering(&mut *self.reader().await?, size)
                        .await
                        .map_err(StoreError::db)
                }
            };
        }
    };
}
pub(crate) use forensic_sql;

macro_rules! delegate {
    ($self:ident, $log:ident => $call:expr) => {
        match $self {
            Store::Sqlite($log) => $call,
            Store::Postgres($log) => $call,
        }
    };
}

impl Store {
    /// Up to `limit` token ids after `after`, in id order, of tokens that existed at
    /// position `upto`.
    pub async fn tokens_existing_at(
        &self,
        after: Option<Uuid>,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        delegate!(self, l => l.tokens_existing_at(after, upto, limit).await)
    }

    /// How many tokens existed at position `upto`.
    pub async fn count_created_at(&self, upto: u64) -> Result<u64, StoreError> {
        delegate!(self, l => l.count_created_at(upto).await)
    }

    /// The lifecycle events (all but uses) of these tokens at or before `upto`, in position
    /// order.
    pub async fn lifecycle_events(
        &self,
        ids: &[Uuid],
        upto: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, l => l.lifecycle_events(ids, upto).await)
    }

    /// `stream`'s uses from `from_version` on, grouped by UTC day, address, path, method and
    /// command in the database.
    pub async fn use_groups(
        &self,
        stream: &StreamId,
        from_version: u64,
    ) -> Result<Vec<tokenledger_projections::UseGroup>, StoreError> {
        delegate!(self, l => l.use_groups(stream, from_version).await)
    }

    /// `stream`'s lifecycle events (all but uses) at or after position `from`, in order.
    pub async fn lifecycle_from(
        &self,
        stream: &StreamId,
        from: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, l => l.lifecycle_from(stream, from).await)
    }

    /// The position of `stream`'s event at `version`.
    pub async fn position_of_version(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<u64>, StoreError> {
        delegate!(self, l => l.position_of_version(stream, version).await)
    }

    /// `stream`'s events after `after_version`, at most `limit`, in order (no openings).
    pub async fn stream_page(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, l => l.stream_page(stream, after_version, limit).await)
    }

    /// The largest version of `stream` (at most `hi`) whose event is at or before `upto`,
    /// given that the event at `lo` is: a binary search of point reads, so a token with a
    /// million uses costs twenty of them.
    pub async fn version_at_or_before(
        &self,
        stream: &StreamId,
        upto: u64,
        lo: u64,
        hi: u64,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match self.position_of_version(stream, mid).await? {
                Some(p) if p <= upto => lo = mid,
                _ => hi = mid - 1,
            }
        }
        Ok(lo)
    }

    /// The first version of `stream` (from 1 to `last`) whose event is at or after
    /// `position`; `last + 1` when none is.
    pub async fn first_version_from(
        &self,
        stream: &StreamId,
        position: u64,
        last: u64,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (1, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.position_of_version(stream, mid).await? {
                Some(p) if p >= position => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// One token's rows of the IP history.
    pub async fn addresses_of(&self, id: Uuid) -> Result<Vec<AddressUse>, StoreError> {
        delegate!(self, l => l.addresses_of(id).await)
    }

    /// Tokens used from `ip` at or after `since`, at most `limit`.
    pub async fn tokens_seen_from(
        &self,
        ip: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        delegate!(self, l => l.tokens_seen_from(ip, since, limit).await)
    }

    /// Tokens created by `actor` (at most `limit`, in id order) and how many there are.
    pub async fn tokens_created_by(
        &self,
        actor: &str,
        limit: usize,
    ) -> Result<(Vec<TokenRow>, u64), StoreError> {
        delegate!(self, l => l.tokens_created_by(actor, limit).await)
    }

    /// The smallest signed checkpoint of at least `size` events: the one that proves them.
    pub async fn checkpoint_covering(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        delegate!(self, l => l.checkpoint_covering(size).await)
    }
}
