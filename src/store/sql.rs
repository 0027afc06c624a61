//! The SQL both backends share, and the planning of an append group, which is pure.
//!
//! SQLite and PostgreSQL accept the same multi-row `INSERT ... ON CONFLICT` and the same column
//! types here, so the statements are written once and instantiated per dialect by
//! [`sql_event_log!`]. Placeholders differ: PostgreSQL numbers them (`$1`), and SQLite gets
//! anonymous `?`, because sqlx-sqlite resolves every named parameter of a statement with a
//! linear search of SQLite's parameter list, which makes binding an n-parameter statement cost
//! O(n^2) (a 640-parameter insert spent more time binding than inserting).
//!
//! An append group is planned in memory by [`plan_group`] from the head, the stream versions
//! and the token rows of the streams it touches, as read under the append lock or remembered by
//! the writer from its last commit ([`WriterCache`]). Every refusal is decided there before
//! anything is written, so no savepoints are needed and a refused batch leaves no trace. The
//! plan also carries the group's token rows and address uses, folded from the events as decided
//! (no decoding). The backends then write it in one trip where they can: SQLite as one
//! multi-statement batch, PostgreSQL as one statement.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use tokenledger_events::log::{Sealer, batch_event_ids, check_open, classify_retry, closes};
use tokenledger_events::merkle::{RightEdge, leaf_hash};
use tokenledger_events::{AppendError, Hash, Head, StoredEvent, StreamAppend, StreamId};
use tokenledger_projections::{AddressUse, AddressUses, TokenRow};
use uuid::Uuid;

use super::writer::AppendResult;

/// Positions and versions are `u64` in the domain and `BIGINT`/`INTEGER` in SQL.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(v: i64, what: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(v).map_err(|_| sqlx::Error::Decode(format!("negative {what}: {v}").into()))
}

/// How a dialect writes the placeholders of generated statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, ...` (PostgreSQL).
    Numbered,
    /// `?, ?, ...`, bound in order (SQLite; see the module doc for why not `$n`).
    Anonymous,
}

impl Params {
    /// Append placeholder number `n` (counting from 1).
    pub(crate) fn push(self, out: &mut String, n: usize) {
        match self {
            Params::Numbered => {
                out.push('$');
                out.push_str(&n.to_string());
            }
            Params::Anonymous => out.push('?'),
        }
    }
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns, numbered from `first`.
pub(crate) fn values_list(rows: usize, cols: usize, params: Params, first: usize) -> String {
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
            params.push(&mut out, first + r * cols + c);
        }
        out.push(')');
    }
    out
}

/// `$1, $2, ..., $n`.
pub(crate) fn in_list(n: usize, params: Params) -> String {
    let mut out = String::with_capacity(n * 4);
    for i in 1..=n {
        if i > 1 {
            out.push_str(", ");
        }
        params.push(&mut out, i);
    }
    out
}

/// Rows per multi-row statement; keeps every statement far below both dialects' parameter
/// limits (SQLite 32766, PostgreSQL 65535) at 23 columns.
pub(crate) const CHUNK: usize = 500;

pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, stream_version, event_id, recorded_at, actor, event_type, schema_version, body, hash";

pub(crate) const TOKEN_COLUMNS: &str = "id, name, hash, environment, scopes, created_at, created_by, expires_at, revoked_at, revoked_by, revoke_reason, rotated_from, rotated_to, rotated_at, last_used_at, last_used_ip, last_used_path, use_count, denied_count, stream_version, position, allowed_ips, rotation_overlap";

pub(crate) const ADDRESS_COLUMNS: &str = "token_id, ip, first_seen, last_seen, uses";

/// `api_tokens.rotation_overlap` of a row: the one value it holds, or NULL.
pub(crate) fn overlap_column(until_successor_used: bool) -> Option<&'static str> {
    until_successor_used.then_some("until_successor_used")
}

/// Read back `api_tokens.rotation_overlap`.
pub(crate) fn overlap_until_used(stored: Option<String>) -> bool {
    stored.as_deref() == Some("until_successor_used")
}

/// What the start-up load reads of each `api_tokens` row: the compact entry's columns.
pub(crate) const ENTRY_COLUMNS: &str = "id, hash, environment, scopes, created_at, expires_at, revoked_at, rotated_from, rotated_to, last_used_at, stream_version, position, allowed_ips, rotation_overlap";

/// An argument of a generated statement (a token filter, an audit page), bound in order.
#[derive(Clone)]
pub(crate) enum Arg {
    Id(Uuid),
    Int(i64),
    Small(i32),
    Text(String),
}

/// Add `arg` to `args`, returning its placeholder (`$n`; SQLite reads `$n` as a parameter too).
pub(crate) fn push_arg(args: &mut Vec<Arg>, arg: Arg) -> String {
    args.push(arg);
    format!("${}", args.len())
}

/// ` WHERE ...` for a token filter (empty when nothing is filtered), with its arguments.
/// Every condition is written the same on both dialects. The status is the status at the
/// filter's `now`, as `TokenRow::status_at` decides it; a scope is matched as a whole word of
/// the space-separated `scopes` column, case-sensitively (a `LIKE` would ignore case on
/// SQLite); a name prefix is compared by characters, case-sensitively.
pub(crate) fn token_filter(
    f: &super::TokenFilter<'_>,
    cursor: bool,
    params: Params,
) -> (String, Vec<Arg>) {
    use tokenledger_projections::TokenStatus;
    let mut conds: Vec<String> = Vec::new();
    let mut args = Vec::new();
    let mut sql = String::new();
    let next = |arg: Arg, args: &mut Vec<Arg>| -> String {
        args.push(arg);
        let mut p = String::new();
        params.push(&mut p, args.len());
        p
    };
    if let (true, Some(after)) = (cursor, f.after) {
        conds.push(format!("id > {}", next(Arg::Id(after), &mut args)));
    }
    if let Some(status) = f.status {
        let now = f.now.as_micros();
        conds.push(match status {
            TokenStatus::Revoked => "revoked_at IS NOT NULL".to_owned(),
            TokenStatus::Expired => format!(
                "revoked_at IS NULL AND expires_at <= {}",
                next(Arg::Int(now), &mut args)
            ),
            TokenStatus::RotatedInGrace => format!(
                "revoked_at IS NULL AND expires_at > {} AND rotated_to IS NOT NULL",
                next(Arg::Int(now), &mut args)
            ),
            TokenStatus::Active => format!(
                "revoked_at IS NULL AND expires_at > {} AND rotated_to IS NULL",
                next(Arg::Int(now), &mut args)
            ),
        });
    }
    if let Some(scope) = f.scope {
        let word = next(Arg::Text(format!(" {} ", scope.as_str())), &mut args);
        conds.push(format!(
            "replace(' ' || scopes || ' ', {word}, '') <> ' ' || scopes || ' '"
        ));
    }
    if let Some(environment) = f.environment {
        conds.push(format!(
            "environment = {}",
            next(Arg::Text(environment.as_str().to_owned()), &mut args)
        ));
    }
    if let Some(prefix) = f.name_prefix {
        let chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let n = next(Arg::Small(chars), &mut args);
        let p = next(Arg::Text(prefix.to_owned()), &mut args);
        conds.push(format!("substr(name, 1, {n}) = {p}"));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    (sql, args)
}

/// What the append lock's holder knows of the streams a group touches: each stream's version
/// (0 for a stream with no events) and each token stream's row (`None`: no row, e.g. a stream
/// whose `TokenCreated` was never appended).
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub versions: HashMap<StreamId, u64>,
    pub tokens: HashMap<Uuid, Option<TokenRow>>,
}

impl StreamState {
    /// The streams of `batches` whose version is not known, and the token ids whose row is not.
    pub(crate) fn missing<'b>(
        &self,
        batches: &'b [Vec<StreamAppend>],
    ) -> (Vec<&'b StreamId>, Vec<Uuid>) {
        let mut streams: Vec<&StreamId> = batches.iter().flatten().map(|a| &a.stream_id).collect();
        streams.sort();
        streams.dedup();
        let ids: Vec<Uuid> = streams
            .iter()
            .filter_map(|s| s.token_id())
            .filter(|id| !self.tokens.contains_key(id))
            .collect();
        streams.retain(|s| !self.versions.contains_key(*s));
        (streams, ids)
    }
}

/// What a writer remembers of the log between its groups: the head after its last commit, and the versions and token rows of the streams it touched. With it a group
/// usually needs no reads at all: it is planned at the remembered head and written in one trip,
/// and the database checks the guess under the append lock (the events' primary key and the
/// dense-positions trigger refuse positions another writer took; on PostgreSQL every write is
/// also conditional on the head row still holding the remembered position). A wrong guess
/// costs a rollback and a group planned the careful way.
///
/// Valid only at the head it was taken at: every append moves the head, so a head read under
/// the append lock that differs means another writer (another node, the CLI) appended, and the
/// cache is dropped. A projection rebuild rewrites `api_tokens` without moving the head, but
/// rebuilding gives exactly the rows maintained live (invariant 7), so the cache stays right.
#[derive(Debug, Default)]
pub(crate) struct WriterCache {
    at: Option<Head>,
    /// The tree's right edge at `at`: a group's tree hashes are computed from it with no read.
    pub edge: Option<RightEdge>,
    pub state: StreamState,
}

/// Above this many streams the cache is dropped rather than grown.
const CACHE_STREAMS: usize = 100_000;

impl WriterCache {
    /// Keep the cache only if it was taken at `head` (read under the append lock), then
    /// remember `head`.
    pub(crate) fn validate(&mut self, head: Head) {
        if self.at != Some(head) || self.state.versions.len() > CACHE_STREAMS {
            self.forget();
        }
        self.at = Some(head);
    }

    pub(crate) fn forget(&mut self) {
        self.at = None;
        self.edge = None;
        self.state.versions.clear();
        self.state.tokens.clear();
    }

    /// After the plan's COMMIT: the state is the plan's, at its head.
    pub(crate) fn committed(&mut self, plan: &Plan) {
        self.at = Some(plan.head);
        self.edge = Some(plan.edge.clone());
        self.state.versions.extend(plan.versions.iter().cloned());
        for row in &plan.tokens {
            self.state.tokens.insert(row.id, Some(row.clone()));
        }
    }

    /// The group planned at the remembered head, if the cache knows every stream it touches
    /// and no batch is refused (a refusal may be a retry, which only a read can tell).
    pub(crate) fn plan_ahead(
        &self,
        log_id: tokenledger_events::LogId,
        batches: &[Vec<StreamAppend>],
    ) -> Option<Plan> {
        let head = self.at?;
        let edge = self.edge.as_ref().filter(|e| e.size() == head.position)?;
        let (streams, ids) = self.state.missing(batches);
        if !streams.is_empty() || !ids.is_empty() {
            return None;
        }
        let plan = plan_group(
            &mut Sealer::new(log_id, head),
            batches,
            &HashMap::new(),
            &self.state,
            edge,
        );
        (!plan.refused_any() && plan.head != plan.start).then_some(plan)
    }
}

/// What happened to one batch of a group, before the group's writes.
#[derive(Debug)]
enum Outcome {
    /// Its events, as `plan.events[range]`.
    Appended(Range<usize>),
    /// Every event is stored already (or sealed earlier in this group).
    Retry(Vec<Uuid>),
    Refused(AppendError),
}

/// A planned group: what to write and what to answer each batch.
#[derive(Debug)]
pub(crate) struct Plan {
    outcomes: Vec<Outcome>,
    /// The new events, in position order.
    pub events: Vec<StoredEvent>,
    /// The token rows the new events changed, as they are after the group.
    pub tokens: Vec<TokenRow>,
    /// Per (token, address), the uses the new events add: upserted onto `token_addresses`.
    pub addresses: Vec<AddressUse>,
    /// The tree hashes the new events make final, by stored-hash index.
    pub tree: Vec<(u64, Hash)>,
    /// The tree's right edge after the group.
    pub edge: RightEdge,
    /// The version of every stream the group appended to, after the group.
    versions: Vec<(StreamId, u64)>,
    /// Where each new event is in `events`, by id.
    sealed: HashMap<Uuid, usize>,
    /// The head before and after the group.
    pub start: Head,
    pub head: Head,
}

impl Plan {
    /// Whether some batch was refused: it may be a retry that the ids stored already would
    /// explain, so a plan made without them must be made again with them.
    pub(crate) fn refused_any(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Refused(_)))
    }

    /// The positions of stored events that retried batches must be answered with.
    pub(crate) fn retried_positions(&self, stored: &HashMap<Uuid, u64>) -> Vec<u64> {
        self.outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Retry(ids) => Some(ids),
                _ => None,
            })
            .flatten()
            .filter(|id| !self.sealed.contains_key(id))
            .filter_map(|id| stored.get(id).copied())
            .collect()
    }

    /// Each batch's answer; `retried` holds the stored events of
    /// [`Plan::retried_positions`].
    pub(crate) fn answers(&self, retried: &[StoredEvent]) -> Vec<AppendResult> {
        let by_id: HashMap<Uuid, &StoredEvent> = retried.iter().map(|e| (e.event_id, e)).collect();
        self.outcomes
            .iter()
            .map(|o| match o {
                Outcome::Appended(range) => Ok(self.events[range.clone()].to_vec()),
                Outcome::Refused(e) => Err(e.clone()),
                Outcome::Retry(ids) => ids
                    .iter()
                    .map(|id| match self.sealed.get(id) {
                        Some(i) => Some(self.events[*i].clone()),
                        None => by_id.get(id).map(|e| (*e).clone()),
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        AppendError::Unavailable("a retried event could not be read back".into())
                    }),
            })
            .collect()
    }
}

/// Plan a group as the append lock's holder, starting at `sealer`'s head (read under the lock,
/// or remembered by the writer and checked by the database when written): decide every batch
/// (append, retry or refusal) in order, seal the appended events, fold them into the token rows
/// and the address uses. `stored` holds the event ids of the group already in the
/// log (may be empty: a retry then shows up as a refusal or as a unique violation at insert,
/// and the caller plans again with them); `state` must know every stream of the group, and
/// `edge` is the tree's right edge at the sealer's head.
pub(crate) fn plan_group(
    sealer: &mut Sealer,
    batches: &[Vec<StreamAppend>],
    stored: &HashMap<Uuid, u64>,
    state: &StreamState,
    edge: &RightEdge,
) -> Plan {
    let start = sealer.head();
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    let mut rows: HashMap<Uuid, TokenRow> = HashMap::new();
    let mut closed: HashSet<&StreamId> = HashSet::new();
    for append in batches.iter().flatten() {
        let s = &append.stream_id;
        versions.insert(s, state.versions.get(s).copied().unwrap_or(0));
        if let Some(Some(row)) = s.token_id().and_then(|id| state.tokens.get(&id)) {
            if row.revoked_at.is_some() {
                closed.insert(s);
            }
            rows.entry(row.id).or_insert_with(|| row.clone());
        }
    }
    let mut plan = Plan {
        outcomes: Vec::with_capacity(batches.len()),
        events: Vec::new(),
        tokens: Vec::new(),
        addresses: Vec::new(),
        tree: Vec::new(),
        edge: edge.clone(),
        versions: Vec::new(),
        sealed: HashMap::new(),
        start,
        head: start,
    };
    let mut changed: Vec<Uuid> = Vec::new();
    let mut addresses = AddressUses::default();
    let mut touched: HashSet<&StreamId> = HashSet::new();
    for batch in batches {
        let batch_ids = batch_event_ids(batch);
        let known: HashSet<Uuid> = batch_ids
            .iter()
            .filter(|id| stored.contains_key(*id) || plan.sealed.contains_key(*id))
            .copied()
            .collect();
        match classify_retry(&batch_ids, &known) {
            Err(e) => plan.outcomes.push(Outcome::Refused(e)),
            Ok(true) => plan.outcomes.push(Outcome::Retry(batch_ids)),
            Ok(false) => {
                let before = sealer.head();
                let first = plan.events.len();
                let mut moved: Vec<(&StreamId, u64)> = Vec::new();
                let mut closing: Vec<&StreamId> = Vec::new();
                let mut refusal = None;
                for append in batch {
                    let s = &append.stream_id;
                    let current = moved
                        .iter()
                        .rev()
                        .find(|(m, _)| *m == s)
                        .map(|(_, v)| *v)
                        .unwrap_or(versions[s]);
                    let sealed = check_open(append, closed.contains(s) || closing.contains(&s))
                        .and_then(|()| sealer.seal(append, current));
                    match sealed {
                        Ok(events) => {
                            if closes(append) {
                                closing.push(s);
                            }
                            moved.push((s, current + events.len() as u64));
                            plan.events.extend(events);
                        }
                        Err(e) => {
                            refusal = Some(e);
                            break;
                        }
                    }
                }
                let mut grown = plan.edge.clone();
                let mut tree = Vec::new();
                if refusal.is_none() {
                    for e in &plan.events[first..] {
                        match grown.append(&leaf_hash(&e.bytes)) {
                            Ok(s) => tree.extend((s.first_index..).zip(s.hashes)),
                            Err(e) => {
                                refusal = Some(AppendError::Invalid(format!(
                                    "the tree cannot grow: {e}"
                                )));
                                break;
                            }
                        }
                    }
                }
                if let Some(e) = refusal {
                    sealer.reset(before);
                    plan.events.truncate(first);
                    plan.outcomes.push(Outcome::Refused(e));
                    continue;
                }
                plan.edge = grown;
                plan.tree.extend(tree);
                for (s, v) in moved {
                    versions.insert(s, v);
                    touched.insert(s);
                }
                closed.extend(closing);
                // The events as decided, in the order sealed: folding them needs no decoding.
                let decided = batch.iter().flat_map(|a| a.events.iter().map(|e| &e.event));
                for (i, event) in (first..plan.events.len()).zip(decided) {
                    let stored_event = &plan.events[i];
                    plan.sealed.insert(stored_event.event_id, i);
                    if let Some(id) =
                        tokenledger_projections::tokens::fold(&mut rows, stored_event, event)
                        && !changed.contains(&id)
                    {
                        changed.push(id);
                    }
                    addresses.fold(stored_event, event);
                }
                plan.outcomes
                    .push(Outcome::Appended(first..plan.events.len()));
            }
        }
    }
    plan.head = sealer.head();
    plan.addresses = addresses.into_vec();
    plan.tokens = changed.iter().filter_map(|id| rows.remove(id)).collect();
    plan.versions = touched
        .into_iter()
        .map(|s| (s.clone(), versions[s]))
        .collect();
    plan
}

/// Instantiates the shared statements for one dialect: `$db` is its sqlx database, `$conn` its
/// connection type, `$row` its row type and `$params` its [`Params`] style.
macro_rules! sql_event_log {
    ($db:ty, $conn:ty, $row:ty, $params:expr) => {
        use std::collections::HashMap;

        use sqlx::{AssertSqlSafe, Row as _};
        use tokenledger_events::log::Sealer;
        use tokenledger_events::{
            AppendError, Environment, Hash, Head, Opening, StoredEvent, StreamAppend, StreamId,
            Timestamp, TokenHash,
        };
        use tokenledger_projections::TokenRow;
        use uuid::Uuid;

        use $crate::store::sql::{
            CHUNK, EVENT_COLUMNS, Params, Plan, StreamState, TOKEN_COLUMNS, from_sql, to_sql,
        };
        use $crate::store::writer::AppendResult;

        /// This dialect's placeholder style.
        const PARAMS: Params = $params;

        fn values_list(rows: usize, cols: usize) -> String {
            $crate::store::sql::values_list(rows, cols, PARAMS, 1)
        }

        /// Statements and their arguments, sent by one [`Batch::execute`]. On SQLite they
        /// are joined into one multi-statement query: one trip to sqlx's worker thread
        /// instead of one per statement, which under load costs more than the statements
        /// (the thread waits for a core each time). sqlx documents multi-statement queries
        /// with arguments as SQLite-only behaviour it may drop in a later version; then
        /// `statement` would have to keep them apart, as it does for PostgreSQL, whose
        /// extended protocol takes one statement per query.
        pub(crate) struct Batch {
            done: Vec<(String, <$db as sqlx::Database>::Arguments)>,
            sql: String,
            args: <$db as sqlx::Database>::Arguments,
        }

        impl Batch {
            pub(crate) fn new() -> Batch {
                Batch {
                    done: Vec::new(),
                    sql: String::new(),
                    args: Default::default(),
                }
            }

            /// Start a statement with `sql`.
            pub(crate) fn statement(&mut self, sql: &str) {
                if !self.sql.is_empty() {
                    if PARAMS == Params::Anonymous {
                        self.sql.push_str(";\n");
                    } else {
                        let sql = std::mem::take(&mut self.sql);
                        self.done.push((sql, std::mem::take(&mut self.args)));
                    }
                }
                self.sql.push_str(sql);
            }

            /// Append the placeholders of `rows` rows of `cols` values each.
            fn values(&mut self, rows: usize, cols: usize) {
                let first = sqlx::Arguments::len(&self.args) + 1;
                self.sql
                    .push_str(&$crate::store::sql::values_list(rows, cols, PARAMS, first));
            }

            /// Append the placeholder of one value.
            // Only the SQLite instantiation of this macro uses it, so `expect` cannot fit both.
            #[allow(dead_code)]
            fn value(&mut self) {
                PARAMS.push(&mut self.sql, sqlx::Arguments::len(&self.args) + 1);
            }

            fn bind<'t, T>(&mut self, value: T) -> Result<(), sqlx::Error>
            where
                T: sqlx::Encode<'t, $db> + sqlx::Type<$db>,
            {
                sqlx::Arguments::add(&mut self.args, value).map_err(sqlx::Error::Encode)
            }

            pub(crate) async fn execute(mut self, conn: &mut $conn) -> Result<(), sqlx::Error> {
                if !self.sql.is_empty() {
                    self.done.push((self.sql, self.args));
                }
                for (sql, args) in self.done {
                    sqlx::query_with(AssertSqlSafe(sql), args)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }
        }

        fn in_list(n: usize) -> String {
            $crate::store::sql::in_list(n, PARAMS)
        }

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
            }
            .from_stored_body())
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

        /// The head from a row with `position` and `hash` columns.
        pub(crate) fn head_from_row(row: &$row) -> Result<Head, sqlx::Error> {
            let hash: Vec<u8> = row.try_get("hash")?;
            Ok(Head {
                position: from_sql(row.try_get("position")?, "position")?,
                hash: Hash::from_slice(&hash).ok_or_else(|| decode_err("head hash is not 32 bytes"))?,
            })
        }

        pub(crate) async fn read_head(conn: &mut $conn) -> Result<Head, sqlx::Error> {
            let row = sqlx::query("SELECT position, hash FROM log_head")
                .fetch_one(&mut *conn)
                .await?;
            head_from_row(&row)
        }

        /// Reads of the stored projections, shared by both backends' log types (each has a
        /// `reader()` giving a pooled read connection).
        macro_rules! projection_reads {
            () => {
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

                pub(crate) async fn token_count(&self) -> Result<u64, StoreError> {
                    count_tokens(&mut *self.reader().await?, &$crate::store::TokenFilter::default())
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn stream_token_entries(
                    &self,
                    add: &mut dyn FnMut($crate::token_entry::TokenEntry),
                ) -> Result<u64, StoreError> {
                    stream_token_entries(&mut *self.reader().await?, add)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn token_page(
                    &self,
                    filter: &$crate::store::TokenFilter<'_>,
                ) -> Result<Vec<TokenRow>, StoreError> {
                    token_page(&mut *self.reader().await?, filter)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn count_tokens(
                    &self,
                    filter: &$crate::store::TokenFilter<'_>,
                ) -> Result<u64, StoreError> {
                    count_tokens(&mut *self.reader().await?, filter)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn tokens_by_id(&self, ids: &[Uuid]) -> Result<Vec<TokenRow>, StoreError> {
                    tokens_by_id(&mut *self.reader().await?, ids)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn audit(
                    &self,
                    filter: &AuditFilter,
                ) -> Result<$crate::store::AuditPage, StoreError> {
                    audit_query(&mut *self.reader().await?, filter)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn first_seen_ips(
                    &self,
                    since: tokenledger_events::Timestamp,
                ) -> Result<Vec<(Uuid, String)>, StoreError> {
                    first_seen_ips(&mut *self.reader().await?, since)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn addresses(
                    &self,
                ) -> Result<Vec<tokenledger_projections::AddressUse>, StoreError> {
                    all_addresses(&mut *self.reader().await?)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
                    checkpoints(&mut *self.reader().await?)
                        .await
                        .map_err(StoreError::db)
                }

                pub(crate) async fn position_at(
                    &self,
                    at: Timestamp,
                ) -> Result<u64, StoreError> {
                    first_position_at(&mut *self.reader().await?, at)
                        .await
                        .map_err(StoreError::db)
                }

                /// Signed checkpoints, newest (largest) first.
                pub(crate) async fn signed_checkpoints(
                    &self,
                    limit: usize,
                ) -> Result<Vec<$crate::store::StoredCheckpoint>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT size, root, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT $1",
                    )
                    .bind(to_sql(limit as u64))
                    .fetch_all(&mut *self.reader().await?)
                    .await
                    .map_err(StoreError::db)?;
                    rows.iter()
                        .map(|row| {
                            let root: Vec<u8> = row.try_get("root")?;
                            Ok($crate::store::StoredCheckpoint {
                                size: from_sql(row.try_get("size")?, "size")?,
                                root: Hash::from_slice(&root)
                                    .ok_or_else(|| decode_err("checkpoint root is not 32 bytes"))?,
                                note: row.try_get("note")?,
                                signed_at: Timestamp::from_micros(row.try_get("signed_at")?),
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(StoreError::db)
                }

                pub(crate) async fn tree_hashes(
                    &self,
                    indexes: &[u64],
                ) -> Result<HashMap<u64, Hash>, StoreError> {
                    read_tree_hashes(&mut *self.reader().await?, indexes)
                        .await
                        .map_err(StoreError::db)
                }

            };
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
                allowed_ips: row
                    .try_get::<String, _>("allowed_ips")?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                until_successor_used: $crate::store::sql::overlap_until_used(
                    row.try_get("rotation_overlap")?,
                ),
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

        fn entry_from_row(
            row: &$row,
            add: &mut dyn FnMut($crate::token_entry::TokenEntry),
        ) -> Result<(), sqlx::Error> {
            let hash: Option<&[u8]> = row.try_get(1)?;
            let environment: &str = row.try_get(2)?;
            let micros = |i: usize| -> Result<Option<Timestamp>, sqlx::Error> {
                Ok(row.try_get::<Option<i64>, _>(i)?.map(Timestamp::from_micros))
            };
            let fields = $crate::token_entry::EntryFields {
                id: row.try_get(0)?,
                hash: hash
                    .map(|h| TokenHash::from_slice(h).ok_or_else(|| decode_err("token hash is not 32 bytes")))
                    .transpose()?,
                environment: match environment {
                    "live" => Environment::Live,
                    "test" => Environment::Test,
                    other => return Err(decode_err(format!("unknown environment {other:?}"))),
                },
                scopes: row.try_get(3)?,
                created_at: Timestamp::from_micros(row.try_get(4)?),
                expires_at: Timestamp::from_micros(row.try_get(5)?),
                revoked_at: micros(6)?,
                rotated_from: row.try_get(7)?,
                rotated_to: row.try_get(8)?,
                last_used_at: micros(9)?,
                version: from_sql(row.try_get(10)?, "stream_version")?,
                position: from_sql(row.try_get(11)?, "position")?,
                allowed_ips: row.try_get(12)?,
                until_successor_used: $crate::store::sql::overlap_until_used(row.try_get(13)?),
            };
            add($crate::token_entry::TokenEntry::from_fields(&fields));
            Ok(())
        }

        /// Every stored token as a compact entry, handed to `add` row by row as the rows
        /// arrive: no row, and no list of rows, is kept.
        pub(crate) async fn stream_token_entries(
            conn: &mut $conn,
            add: &mut dyn FnMut($crate::token_entry::TokenEntry),
        ) -> Result<u64, sqlx::Error> {
            use futures_util::TryStreamExt as _;
            let sql = format!("SELECT {} FROM api_tokens", $crate::store::sql::ENTRY_COLUMNS);
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
            let mut read = 0;
            while let Some(row) = rows.try_next().await? {
                entry_from_row(&row, add)?;
                read += 1;
            }
            Ok(read)
        }

        fn bind_filter<'q>(
            mut q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            args: Vec<$crate::store::sql::Arg>,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            use $crate::store::sql::Arg;
            for arg in args {
                q = match arg {
                    Arg::Id(id) => q.bind(id),
                    Arg::Int(v) => q.bind(v),
                    Arg::Small(v) => q.bind(v),
                    Arg::Text(t) => q.bind(t),
                };
            }
            q
        }

        /// A page of stored token rows: those matching `filter` after its cursor, in id
        /// order, at most `filter.limit`. Read along the primary key, so a page costs what it
        /// scans, never a sort of the table.
        pub(crate) async fn token_page(
            conn: &mut $conn,
            filter: &$crate::store::TokenFilter<'_>,
        ) -> Result<Vec<TokenRow>, sqlx::Error> {
            let (cond, args) = $crate::store::sql::token_filter(filter, true, PARAMS);
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens{cond} ORDER BY id LIMIT {}",
                filter.limit
            );
            bind_filter(sqlx::query(AssertSqlSafe(sql)), args)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(token_from_row)
                .collect()
        }

        /// How many stored tokens match `filter` (its cursor and limit aside).
        pub(crate) async fn count_tokens(
            conn: &mut $conn,
            filter: &$crate::store::TokenFilter<'_>,
        ) -> Result<u64, sqlx::Error> {
            let (cond, args) = $crate::store::sql::token_filter(filter, false, PARAMS);
            let sql = format!("SELECT COUNT(*) FROM api_tokens{cond}");
            let n: i64 = bind_filter(sqlx::query(AssertSqlSafe(sql)), args)
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            from_sql(n, "count")
        }

        /// The stored rows of these tokens, in id order; unknown ids are left out.
        pub(crate) async fn tokens_by_id(
            conn: &mut $conn,
            ids: &[Uuid],
        ) -> Result<Vec<TokenRow>, sqlx::Error> {
            let mut rows: Vec<TokenRow> = load_tokens(conn, ids).await?.into_values().collect();
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        }

        /// Write token rows, replacing any stored row of the same id.
        fn push_tokens(b: &mut Batch, rows: &[&TokenRow]) -> Result<(), sqlx::Error> {
            for chunk in rows.chunks(CHUNK / 2) {
                let updates = TOKEN_COLUMNS
                    .split(", ")
                    .skip(1)
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                b.statement(&format!("INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES "));
                b.values(chunk.len(), 23);
                b.sql.push_str(&format!(" ON CONFLICT (id) DO UPDATE SET {updates}"));
                for t in chunk {
                    b.bind(t.id)?;
                    b.bind(t.name.as_str())?;
                    b.bind(t.hash.map(|h| h.0.to_vec()))?;
                    b.bind(t.environment.as_str())?;
                    b.bind(t.scopes.join(" "))?;
                    b.bind(t.created_at.as_micros())?;
                    b.bind(t.created_by.as_str())?;
                    b.bind(t.expires_at.as_micros())?;
                    b.bind(t.revoked_at.map(Timestamp::as_micros))?;
                    b.bind(t.revoked_by.as_deref())?;
                    b.bind(t.revoke_reason.as_deref())?;
                    b.bind(t.rotated_from)?;
                    b.bind(t.rotated_to)?;
                    b.bind(t.rotated_at.map(Timestamp::as_micros))?;
                    b.bind(t.last_used_at.map(Timestamp::as_micros))?;
                    b.bind(t.last_used_ip.as_deref())?;
                    b.bind(t.last_used_path.as_deref())?;
                    b.bind(to_sql(t.use_count))?;
                    b.bind(to_sql(t.denied_count))?;
                    b.bind(to_sql(t.version))?;
                    b.bind(to_sql(t.position))?;
                    b.bind(t.allowed_ips.join(" "))?;
                    b.bind($crate::store::sql::overlap_column(t.until_successor_used))?;
                }
            }
            Ok(())
        }

        pub(crate) async fn checkpoints(conn: &mut $conn) -> Result<Vec<(String, u64)>, sqlx::Error> {
            sqlx::query("SELECT name, position FROM projection_checkpoints ORDER BY name")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("name")?, from_sql(r.try_get("position")?, "position")?)))
                .collect()
        }

        /// Upsert a group's address uses onto `token_addresses`: the first and last seen widen
        /// and the counts add up.
        pub(crate) fn push_addresses(
            b: &mut Batch,
            rows: &[tokenledger_projections::AddressUse],
        ) -> Result<(), sqlx::Error> {
            let (least, greatest) = match PARAMS {
                Params::Anonymous => ("min", "max"),
                Params::Numbered => ("LEAST", "GREATEST"),
            };
            for chunk in rows.chunks(CHUNK) {
                b.statement(&format!(
                    "INSERT INTO token_addresses ({}) VALUES ",
                    $crate::store::sql::ADDRESS_COLUMNS
                ));
                b.values(chunk.len(), 5);
                for r in chunk {
                    b.bind(r.token_id)?;
                    b.bind(r.ip.as_str())?;
                    b.bind(r.first_seen.as_micros())?;
                    b.bind(r.last_seen.as_micros())?;
                    b.bind(to_sql(r.uses))?;
                }
                b.sql.push_str(&format!(
                    " ON CONFLICT (token_id, ip) DO UPDATE SET \
                     first_seen = {least}(token_addresses.first_seen, excluded.first_seen), \
                     last_seen = {greatest}(token_addresses.last_seen, excluded.last_seen), \
                     uses = token_addresses.uses + excluded.uses"
                ));
            }
            Ok(())
        }

        /// Store a signed checkpoint; a size signed before (by another node) keeps its note.
        pub(crate) async fn insert_checkpoint(
            conn: &mut $conn,
            c: &$crate::store::StoredCheckpoint,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO checkpoints (size, root, note, signed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (size) DO NOTHING",
            )
            .bind(to_sql(c.size))
            .bind(&c.root.0[..])
            .bind(c.note.as_str())
            .bind(c.signed_at.as_micros())
            .execute(&mut *conn)
            .await
            .map(|_| ())
        }

        /// Insert tree hashes by stored-hash index.
        pub(crate) fn push_tree(b: &mut Batch, hashes: &[(u64, Hash)]) -> Result<(), sqlx::Error> {
            for chunk in hashes.chunks(CHUNK) {
                b.statement("INSERT INTO tree_hashes (idx, hash) VALUES ");
                b.values(chunk.len(), 2);
                for (index, hash) in chunk {
                    b.bind(to_sql(*index))?;
                    b.bind(&hash.0[..])?;
                }
            }
            Ok(())
        }

        /// The stored tree hashes at `indexes` (those present; a missing one is the caller's
        /// [`tokenledger_events::merkle::TreeError`] to report).
        pub(crate) async fn read_tree_hashes(
            conn: &mut $conn,
            indexes: &[u64],
        ) -> Result<HashMap<u64, Hash>, sqlx::Error> {
            let mut found = HashMap::with_capacity(indexes.len());
            for chunk in indexes.chunks(CHUNK) {
                let sql = format!(
                    "SELECT idx, hash FROM tree_hashes WHERE idx IN ({})",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for index in chunk {
                    q = q.bind(to_sql(*index));
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let hash: Vec<u8> = row.try_get("hash")?;
                    found.insert(
                        from_sql(row.try_get("idx")?, "idx")?,
                        Hash::from_slice(&hash).ok_or_else(|| decode_err("tree hash is not 32 bytes"))?,
                    );
                }
            }
            Ok(found)
        }

        /// The tree's right edge at `size` leaves, from its stored hashes.
        pub(crate) async fn load_edge(
            conn: &mut $conn,
            size: u64,
        ) -> Result<tokenledger_events::merkle::RightEdge, sqlx::Error> {
            let indexes = tokenledger_events::merkle::tree_root_indexes(size).map_err(decode_err)?;
            let hashes = read_tree_hashes(&mut *conn, &indexes).await?;
            tokenledger_events::merkle::RightEdge::load(size, &hashes).map_err(decode_err)
        }

        /// How many leaves the stored tree holds, at most `head`: a log written before the tree
        /// was kept holds fewer until [`fill_tree`] runs. Leaves are stored in order, so this is
        /// a binary search over "leaf n - 1 is stored".
        pub(crate) async fn tree_size(conn: &mut $conn, head: u64) -> Result<u64, sqlx::Error> {
            async fn has_leaf(conn: &mut $conn, n: u64) -> Result<bool, sqlx::Error> {
                let Some(index) = tokenledger_events::merkle::stored_hash_index(0, n - 1) else {
                    return Ok(false);
                };
                let found: Option<i64> = sqlx::query_scalar("SELECT idx FROM tree_hashes WHERE idx = $1")
                    .bind(to_sql(index))
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(found.is_some())
            }
            if head == 0 || has_leaf(&mut *conn, head).await? {
                return Ok(head);
            }
            // Invariant: leaf `lo` is stored (or lo = 0), leaf `hi` is not.
            let (mut lo, mut hi) = (0, head);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if has_leaf(&mut *conn, mid).await? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        }

        /// Store the tree hashes of every event the stored tree lacks, inside the caller's
        /// transaction, which holds the append lock. Returns how many leaves were added.
        pub(crate) async fn fill_tree(conn: &mut $conn) -> Result<u64, sqlx::Error> {
            const PAGE: usize = 10 * CHUNK;
            let head = read_head(&mut *conn).await?.position;
            let size = tree_size(&mut *conn, head).await?;
            let mut edge = load_edge(&mut *conn, size).await?;
            let mut after = size;
            while after < head {
                let events = read_from(&mut *conn, after, PAGE).await?;
                let Some(last) = events.last().map(|e| e.position) else { break };
                let mut hashes = Vec::new();
                for e in events.iter().take_while(|e| e.position <= head) {
                    let stored = edge
                        .append(&tokenledger_events::merkle::leaf_hash(&e.bytes))
                        .map_err(decode_err)?;
                    hashes.extend((stored.first_index..).zip(stored.hashes));
                }
                let mut b = Batch::new();
                push_tree(&mut b, &hashes)?;
                b.execute(&mut *conn).await?;
                after = last;
            }
            Ok(head - size)
        }

        /// Rebuild the projections (`api_tokens`, `token_addresses`) from position 0 inside the
        /// caller's transaction, which holds the append lock. Returns the position rebuilt to
        /// and the number of tokens. `progress` hears position 0 once the head is read, then
        /// the position after each page folded; the final writes come after the last report.
        pub(crate) async fn rebuild(
            conn: &mut $conn,
            progress: &(dyn Fn(tokenledger_events::Progress) + Sync),
        ) -> Result<(u64, usize), sqlx::Error> {
            /// Events read per page: large pages keep the per-query cost out of the figure.
            const PAGE: usize = 10 * CHUNK;
            sqlx::query("DELETE FROM api_tokens").execute(&mut *conn).await?;
            sqlx::query("DELETE FROM token_addresses").execute(&mut *conn).await?;
            let head = read_head(&mut *conn).await?;
            let report = |position: u64| {
                progress(tokenledger_events::Progress {
                    position: position.min(head.position),
                    head: head.position,
                })
            };
            report(0);
            let mut tokens: HashMap<Uuid, TokenRow> = HashMap::new();
            let mut addresses = tokenledger_projections::AddressUses::default();
            // The next page is read (on the database's side) while this one is folded.
            let mut events = if head.position > 0 {
                read_from(&mut *conn, 0, PAGE).await?
            } else {
                Vec::new()
            };
            while let Some(last) = events.last().map(|e| e.position) {
                let more = last < head.position;
                let read_next = async {
                    if more {
                        read_from(&mut *conn, last, PAGE).await
                    } else {
                        Ok(Vec::new())
                    }
                };
                let fold = async {
                    for e in events.iter().take_while(|e| e.position <= head.position) {
                        let decoded = e.decode().map_err(decode_err)?;
                        tokenledger_projections::tokens::fold(&mut tokens, e, &decoded);
                        addresses.fold(e, &decoded);
                    }
                    Ok::<(), sqlx::Error>(())
                };
                let (next, folded) = tokio::join!(read_next, fold);
                folded?;
                report(last);
                events = next?;
            }
            // Written a few thousand rows per trip: one batch of every row would hold all
            // their arguments in memory at once.
            // In id order (UUIDv7, so creation order): the rows go in at the end of the table's
            // key instead of splitting pages all over it.
            let mut rows: Vec<&TokenRow> = tokens.values().collect();
            rows.sort_unstable_by_key(|r| r.id);
            for chunk in rows.chunks(PAGE) {
                let mut b = Batch::new();
                push_tokens(&mut b, chunk)?;
                b.execute(&mut *conn).await?;
            }
            for chunk in addresses.into_vec().chunks(PAGE) {
                let mut b = Batch::new();
                push_addresses(&mut b, chunk)?;
                b.execute(&mut *conn).await?;
            }
            Ok((head.position, tokens.len()))
        }

        /// The first position recorded at or after `at` (one past the head if none): positions
        /// never go back in time (the writer clamps `recorded_at`), so a binary search over
        /// primary-key reads finds it without an index on time.
        pub(crate) async fn first_position_at(
            conn: &mut $conn,
            at: Timestamp,
        ) -> Result<u64, sqlx::Error> {
            let head = read_head(&mut *conn).await?;
            let (mut lo, mut hi) = (1, head.position + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let t: i64 = sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
                    .bind(to_sql(mid))
                    .fetch_one(&mut *conn)
                    .await?;
                if t >= at.as_micros() {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Ok(lo)
        }

        /// The audit rows of `events` (those of token streams), each with its token's scopes.
        async fn audit_rows(
            conn: &mut $conn,
            events: &[StoredEvent],
        ) -> Result<Vec<tokenledger_projections::AuditRow>, sqlx::Error> {
            let mut ids: Vec<Uuid> = events.iter().filter_map(|e| e.stream_id.token_id()).collect();
            ids.sort();
            ids.dedup();
            let tokens = load_tokens(&mut *conn, &ids).await?;
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

        /// The events matching `base` (with its `args`) whose `col` lies strictly between
        /// `after` and `before` (either open), in `col` order, descending when `desc`, at most
        /// `limit`.
        #[expect(clippy::too_many_arguments, reason = "a statement's parts, each used once")]
        async fn events_between(
            conn: &mut $conn,
            base: &str,
            args: &[$crate::store::sql::Arg],
            col: &str,
            after: Option<u64>,
            before: Option<u64>,
            desc: bool,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            use std::fmt::Write as _;
            use $crate::store::sql::{Arg, push_arg};
            let mut args = args.to_vec();
            let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {base}");
            if let Some(after) = after {
                let p = push_arg(&mut args, Arg::Int(to_sql(after)));
                let _ = write!(sql, " AND {col} > {p}");
            }
            if let Some(before) = before {
                let p = push_arg(&mut args, Arg::Int(to_sql(before)));
                let _ = write!(sql, " AND {col} < {p}");
            }
            let p = push_arg(&mut args, Arg::Int(to_sql(limit as u64)));
            let _ = write!(
                sql,
                " ORDER BY {col} {} LIMIT {p}",
                if desc { "DESC" } else { "ASC" }
            );
            bind_filter(sqlx::query(AssertSqlSafe(sql)), args)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(event_from_row)
                .collect()
        }

        /// The tokens `token_addresses` says were used from an address in `net` (only
        /// `token`, when given); `None` when they are too many to be worth listing. Read after
        /// the head, so every use up to that head is counted: the rows are upserted in the
        /// append transaction.
        async fn tokens_used_from(
            conn: &mut $conn,
            net: &ipnet::IpNet,
            token: Option<Uuid>,
        ) -> Result<Option<std::collections::HashSet<Uuid>>, sqlx::Error> {
            use futures_util::TryStreamExt as _;
            use $crate::store::sql::{Arg, push_arg};
            /// Past this many tokens a set would cost more than it saves: every use is read.
            const MAX_LISTED: usize = 100_000;
            let mut args = Vec::new();
            let mut conds = Vec::new();
            if let Some(token) = token {
                conds.push(format!("token_id = {}", push_arg(&mut args, Arg::Id(token))));
            }
            // One address: its stored spellings (`IpAddr`'s text, plain or IPv4-mapped), so
            // the database finds the rows; a network is matched here, row by row.
            if net.prefix_len() == net.max_prefix_len() {
                let mut forms: Vec<String> = $crate::store::address_forms(net.addr())
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                forms.sort();
                forms.dedup();
                let list: Vec<String> = forms
                    .into_iter()
                    .map(|f| push_arg(&mut args, Arg::Text(f)))
                    .collect();
                conds.push(format!("ip IN ({})", list.join(", ")));
            }
            let mut sql = String::from("SELECT token_id, ip FROM token_addresses");
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            let mut found = std::collections::HashSet::new();
            let q = bind_filter(sqlx::query(AssertSqlSafe(sql)), args);
            let mut rows = q.fetch(&mut *conn);
            while let Some(row) = rows.try_next().await? {
                let ip: String = row.try_get("ip")?;
                if $crate::store::address_in(net, &ip) {
                    found.insert(row.try_get::<Uuid, _>("token_id")?);
                    if found.len() > MAX_LISTED {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(found))
        }

        /// One page of audit rows (see [`AuditFilter`]): the rows in the order asked for,
        /// whether more lie beyond the page in each direction, and how many rows match in all.
        /// Rows are read from the log itself (by stream, by type, by position) and built by the
        /// same fold as the `audit_logs` view; a page decodes only its own events.
        ///
        /// Token, action, actor and the windows of time and position are SQL conditions. An
        /// address or path filter needs each candidate's body, so such a query reads its
        /// candidates once, a chunk at a time, up to the head as it was when the query began:
        /// only uses and denials (the events that carry an address and a path) and, for an
        /// address, only the uses of tokens `token_addresses` lists as used from it (denials
        /// are not in that table, so every denial stays a candidate). That one pass counts the
        /// matches exactly and keeps the page; it costs the candidates in the window, not the
        /// page, which is why the time, position, token and action filters come first.
        pub(crate) async fn audit_query(
            conn: &mut $conn,
            filter: &$crate::store::AuditFilter,
        ) -> Result<$crate::store::AuditPage, sqlx::Error> {
            use std::fmt::Write as _;
            use $crate::store::sql::{Arg, push_arg};
            let nothing = $crate::store::AuditPage {
                rows: Vec::new(),
                total: 0,
                more_past_end: false,
                more_before_start: false,
            };
            // The window of positions the time and position filters leave: `since` is the
            // first position recorded at or after it, `until` the last recorded at or before
            // it (positions never go back in time).
            let mut lo = filter.from_position.unwrap_or(1).max(1);
            if let Some(t) = filter.since {
                lo = lo.max(first_position_at(&mut *conn, t).await?);
            }
            let mut hi = filter.to_position;
            if let Some(t) = filter.until {
                let last = first_position_at(&mut *conn, t.plus_micros(1))
                    .await?
                    .saturating_sub(1);
                hi = Some(hi.map_or(last, |h| h.min(last)));
            }
            let stream = filter.token_id.map(StreamId::for_token);
            let mut types: Vec<&'static str> =
                filter.action.map_or_else(Vec::new, |a| a.event_types().to_vec());
            // With a body filter: the tokens whose uses may match (`None`: any token's).
            let mut used_by: Option<std::collections::HashSet<Uuid>> = None;
            if filter.filters_body() {
                let head = read_head(&mut *conn).await?.position;
                hi = Some(hi.map_or(head, |h| h.min(head)));
                if types.is_empty() {
                    types = $crate::store::ADDRESSED_TYPES.to_vec();
                } else {
                    types.retain(|t| $crate::store::ADDRESSED_TYPES.contains(t));
                }
                if let Some(net) = &filter.ip
                    && types.contains(&"TokenUsed")
                {
                    used_by = tokens_used_from(&mut *conn, net, filter.token_id).await?;
                    if used_by.as_ref().is_some_and(|s| s.is_empty()) {
                        types.retain(|t| *t != "TokenUsed");
                        used_by = None;
                    }
                }
                if types.is_empty() {
                    return Ok(nothing);
                }
            }
            if hi.is_some_and(|hi| hi < lo) {
                return Ok(nothing);
            }

            // The filter's conditions; the cursor's are added per statement.
            let mut base = String::from("1 = 1");
            let mut args: Vec<Arg> = Vec::new();
            if let Some(s) = &stream {
                let p = push_arg(&mut args, Arg::Text(s.as_str().to_owned()));
                let _ = write!(base, " AND stream_id = {p}");
            }
            if !types.is_empty() {
                let list: Vec<String> = types
                    .iter()
                    .map(|t| push_arg(&mut args, Arg::Text((*t).to_owned())))
                    .collect();
                let _ = write!(base, " AND event_type IN ({})", list.join(", "));
                // Said outright so the planner sees the partial index `events_by_type` (which
                // leaves uses out) covers the query.
                if !types.contains(&"TokenUsed") {
                    base.push_str(" AND event_type <> 'TokenUsed'");
                }
            }
            if let Some(actor) = &filter.actor {
                let p = push_arg(&mut args, Arg::Text(actor.clone()));
                let _ = write!(base, " AND actor = {p}");
            }
            if lo > 1 {
                let p = push_arg(&mut args, Arg::Int(to_sql(lo)));
                let _ = write!(base, " AND position >= {p}");
            }
            if let Some(hi) = hi {
                let p = push_arg(&mut args, Arg::Int(to_sql(hi)));
                let _ = write!(base, " AND position <= {p}");
            }

            if filter.filters_body() {
                return audit_scan(conn, filter, &base, &args, stream.is_some(), used_by.as_ref())
                    .await;
            }

            // Every event is a token event, so without a stream, type or actor the count is
            // the span of positions in the window, and needs no scan of the log; uses are that
            // span less the other events, which the partial index counts.
            let span = |head: u64| hi.map_or(head, |h| h.min(head)).saturating_sub(lo - 1);
            let total = if stream.is_none() && types.is_empty() && filter.actor.is_none() {
                span(read_head(&mut *conn).await?.position)
            } else if stream.is_none() && types == ["TokenUsed"] && filter.actor.is_none() {
                let head = read_head(&mut *conn).await?.position;
                let mut window = Vec::new();
                let mut sql =
                    String::from("SELECT COUNT(*) AS n FROM events WHERE event_type <> 'TokenUsed'");
                if lo > 1 {
                    let p = push_arg(&mut window, Arg::Int(to_sql(lo)));
                    let _ = write!(sql, " AND position >= {p}");
                }
                if let Some(hi) = hi {
                    let p = push_arg(&mut window, Arg::Int(to_sql(hi)));
                    let _ = write!(sql, " AND position <= {p}");
                }
                let others: i64 = bind_filter(sqlx::query(AssertSqlSafe(sql)), window)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("n")?;
                span(head).saturating_sub(from_sql(others, "count")?)
            } else {
                let sql = format!("SELECT COUNT(*) AS n FROM events WHERE {base}");
                let n: i64 = bind_filter(sqlx::query(AssertSqlSafe(sql)), args.clone())
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("n")?;
                from_sql(n, "count")?
            };

            // Read toward the cursor that was given: rows just after `after`, or just before
            // `before`; with both or neither, in the order asked for.
            let scan_desc = match (filter.after, filter.before) {
                (None, Some(_)) => true,
                (Some(_), None) => false,
                _ => filter.newest_first,
            };
            // Within one stream, versions run in position order: a token's page is read along
            // the (stream_id, stream_version) key, its position cursors turned into versions,
            // so a busy token's page costs the page, not a sort of all its events.
            let (col, after, before) = match &stream {
                Some(s) => {
                    let a = match filter.after {
                        Some(p) => version_at(&mut *conn, s, p).await?.map(Some),
                        None => Some(None),
                    };
                    let b = match filter.before {
                        Some(p) => version_at(&mut *conn, s, p).await?.map(Some),
                        None => Some(None),
                    };
                    match (a, b) {
                        (Some(a), Some(b)) => ("stream_version", a, b),
                        _ => ("position", filter.after, filter.before),
                    }
                }
                None => ("position", filter.after, filter.before),
            };
            let mut events = events_between(
                &mut *conn,
                &base,
                &args,
                col,
                after,
                before,
                scan_desc,
                filter.limit.saturating_add(1),
            )
            .await?;
            let more_in_scan = events.len() > filter.limit;
            events.truncate(filter.limit);
            let mut rows = audit_rows(&mut *conn, &events).await?;

            // Whether rows lie on the far side of the cursor the scan started from.
            let start = if scan_desc {
                before.map(|b| (b, ">="))
            } else {
                after.map(|a| (a, "<="))
            };
            let behind_start = match start {
                None => false,
                Some((at, op)) => {
                    let mut args = args.clone();
                    let p = push_arg(&mut args, Arg::Int(to_sql(at)));
                    let sql = format!(
                        "SELECT EXISTS (SELECT 1 FROM events WHERE {base} AND {col} {op} {p}) AS e"
                    );
                    let e: bool = bind_filter(sqlx::query(AssertSqlSafe(sql)), args)
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get("e")?;
                    e
                }
            };
            if scan_desc != filter.newest_first {
                rows.reverse();
            }
            Ok($crate::store::AuditPage::from_scan(
                rows,
                total,
                scan_desc,
                filter.newest_first,
                more_in_scan,
                behind_start,
            ))
        }

        /// An audit page whose filter needs each candidate's body (see [`audit_query`]): one
        /// pass over the candidates matching `base`, oldest first and a chunk at a time,
        /// counting every match and keeping the page's. A use of a token outside `used_by`
        /// (when given) cannot match and is not decoded.
        async fn audit_scan(
            conn: &mut $conn,
            filter: &$crate::store::AuditFilter,
            base: &str,
            args: &[$crate::store::sql::Arg],
            by_stream: bool,
            used_by: Option<&std::collections::HashSet<Uuid>>,
        ) -> Result<$crate::store::AuditPage, sqlx::Error> {
            // One token's events in order along its (stream_id, stream_version) key.
            let col = if by_stream { "stream_version" } else { "position" };
            let key = |e: &StoredEvent| if by_stream { e.stream_version } else { e.position };
            let candidate = |e: &StoredEvent| -> Result<bool, sqlx::Error> {
                if e.event_type == "TokenUsed"
                    && let (Some(used_by), Some(id)) = (used_by, e.stream_id.token_id())
                    && !used_by.contains(&id)
                {
                    return Ok(false);
                }
                Ok(filter.body_matches(&e.decode().map_err(decode_err)?))
            };
            // The page is read toward the cursor given, as in `audit_query`.
            let scan_desc = match (filter.after, filter.before) {
                (None, Some(_)) => true,
                (Some(_), None) => false,
                _ => filter.newest_first,
            };
            let on_page = |p: u64| {
                filter.after.is_none_or(|a| p > a) && filter.before.is_none_or(|b| p < b)
            };
            // Beyond the cursor the scan starts from, on its far side.
            let behind = |p: u64| {
                if scan_desc {
                    filter.before.is_some_and(|b| p >= b)
                } else {
                    filter.after.is_some_and(|a| p <= a)
                }
            };
            let (mut total, mut behind_start, mut more_in_scan) = (0u64, false, false);
            // Oldest first: a descending page keeps the last `limit` matches before its cursor.
            let mut page: std::collections::VecDeque<StoredEvent> =
                std::collections::VecDeque::new();
            let mut from = None;
            loop {
                let chunk =
                    events_between(&mut *conn, base, args, col, from, None, false, CHUNK).await?;
                let full = chunk.len() == CHUNK;
                from = chunk.last().map(key);
                for e in chunk {
                    if !candidate(&e)? {
                        continue;
                    }
                    total += 1;
                    behind_start |= behind(e.position);
                    if !on_page(e.position) {
                        continue;
                    }
                    if scan_desc {
                        page.push_back(e);
                        if page.len() > filter.limit {
                            page.pop_front();
                            more_in_scan = true;
                        }
                    } else if page.len() < filter.limit {
                        page.push_back(e);
                    } else {
                        more_in_scan = true;
                    }
                }
                if !full {
                    break;
                }
            }
            let events: Vec<StoredEvent> = page.into();
            let mut rows = audit_rows(&mut *conn, &events).await?;
            if filter.newest_first {
                rows.reverse();
            }
            Ok($crate::store::AuditPage::from_scan(
                rows,
                total,
                scan_desc,
                filter.newest_first,
                more_in_scan,
                behind_start,
            ))
        }

        /// The version of `stream`'s event at `position`, if the event there is of that stream.
        async fn version_at(
            conn: &mut $conn,
            stream: &StreamId,
            position: u64,
        ) -> Result<Option<u64>, sqlx::Error> {
            let v: Option<i64> = sqlx::query_scalar(
                "SELECT stream_version FROM events WHERE position = $1 AND stream_id = $2",
            )
            .bind(to_sql(position))
            .bind(stream.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            v.map(|v| from_sql(v, "stream_version")).transpose()
        }

        /// Per token, the addresses first used at or after `since`: the monitoring list's
        /// "new IP", one row per (token, address) rather than one per use.
        pub(crate) async fn first_seen_ips(
            conn: &mut $conn,
            since: tokenledger_events::Timestamp,
        ) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
            sqlx::query(
                "SELECT token_id, ip FROM token_addresses WHERE first_seen >= $1 \
                 ORDER BY token_id, first_seen",
            )
            .bind(since.as_micros())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("token_id")?, row.try_get("ip")?)))
            .collect()
        }

        /// Every (token, address) row: for rebuild checks and tests.
        pub(crate) async fn all_addresses(
            conn: &mut $conn,
        ) -> Result<Vec<tokenledger_projections::AddressUse>, sqlx::Error> {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {} FROM token_addresses ORDER BY token_id, ip",
                $crate::store::sql::ADDRESS_COLUMNS
            )))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(address_from_row)
            .collect()
        }

        /// A `token_addresses` row read with [`ADDRESS_COLUMNS`].
        pub(crate) fn address_from_row(
            row: &$row,
        ) -> Result<tokenledger_projections::AddressUse, sqlx::Error> {
            Ok(tokenledger_projections::AddressUse {
                token_id: row.try_get("token_id")?,
                ip: row.try_get("ip")?,
                first_seen: Timestamp::from_micros(row.try_get("first_seen")?),
                last_seen: Timestamp::from_micros(row.try_get("last_seen")?),
                uses: from_sql(row.try_get("uses")?, "uses")?,
            })
        }

        /// Read what `state` lacks for `batches` (stream versions, token rows) and, when
        /// `stored` is given, which of the group's event ids are in the log already; inside
        /// the caller's transaction, which holds the append lock.
        pub(crate) async fn load_state(
            conn: &mut $conn,
            batches: &[Vec<StreamAppend>],
            state: &mut StreamState,
            stored: Option<&mut HashMap<Uuid, u64>>,
        ) -> Result<(), sqlx::Error> {
            let (streams, ids) = state.missing(batches);
            if !streams.is_empty() {
                let found = stream_versions(&mut *conn, &streams).await?;
                for s in streams {
                    state.versions.insert(s.clone(), found.get(s).copied().unwrap_or(0));
                }
            }
            if !ids.is_empty() {
                let mut rows = load_tokens(&mut *conn, &ids).await?;
                for id in ids {
                    state.tokens.insert(id, rows.remove(&id));
                }
            }
            if let Some(stored) = stored {
                let ids: Vec<Uuid> = batches
                    .iter()
                    .flat_map(|b| tokenledger_events::log::batch_event_ids(b))
                    .collect();
                *stored = stored_positions(&mut *conn, &ids).await?;
            }
            Ok(())
        }

        /// The answers of a written plan: retried batches get their events as first stored.
        pub(crate) async fn answer(
            conn: &mut $conn,
            plan: &Plan,
            stored: &HashMap<Uuid, u64>,
        ) -> Result<Vec<AppendResult>, sqlx::Error> {
            let wanted = plan.retried_positions(stored);
            let retried = if wanted.is_empty() {
                Vec::new()
            } else {
                read_positions(&mut *conn, &wanted).await?
            };
            Ok(plan.answers(&retried))
        }

        /// Whether a failed statement hit a unique constraint: in a plan made without the
        /// stored event ids, an event id stored already (a retry).
        pub(crate) fn unique_violation(e: &sqlx::Error) -> bool {
            e.as_database_error()
                .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
        }
    };
}

pub(crate) use sql_event_log;
