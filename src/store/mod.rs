//! Storage: the [`EventLog`] backends (SQLite, the embedded default; PostgreSQL, the production
//! store), the group-commit writer they share, and migrations. Chain verification over any log
//! lives in the events crate (`tokenledger_events::verify`).
//!
//! This module owns every byte written to the database. It must never write outside an
//! append transaction, and never log event bodies or openings.

mod forensics;
#[cfg(feature = "kurrentdb")]
pub mod kurrent;
pub mod migrate;
pub mod outbox;
pub mod postgres;
pub mod preflight;
pub(crate) mod sql;
pub mod sqlite;
pub mod upstream;
pub(crate) mod writer;

pub use writer::CommitObserver;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokenledger_events::merkle;
use tokenledger_events::{
    AppendError, ChainError, EventLog, Head, LogError, LogId, StoredEvent, StreamAppend, StreamId,
    Timestamp, TokenEvent, TokenHash,
};
use tokenledger_projections::{AuditAction, AuditRow, TokenRow};
use tokio::sync::watch;

pub use postgres::{PgDb, PgLog};
pub use sqlite::{SqliteDb, SqliteLog};

/// The embedded default: a SQLite file beside the working directory, created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tokenledger.db?mode=rwc";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "DATABASE_URL {0}; accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB"
    )]
    BadUrl(String),
    #[error(
        "DATABASE_URL names a KurrentDB log, but this binary was built without KurrentDB support; build it with `cargo build --release --features kurrentdb` (the Docker image: `docker build --build-arg FEATURES=kurrentdb .`); accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB, and kurrentdb:// in a build with that feature"
    )]
    NoKurrent,
    /// Connecting to a KurrentDB log failed; the message names the server, password hidden.
    #[error("{0}")]
    Kurrent(String),
    #[error("cannot reach the database at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("migrations failed: {0}")]
    Migrate(String),
    #[error("the database has no event log yet ({0}); run `tokenledger migrate`")]
    NotMigrated(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("the event log does not verify: {0}")]
    Chain(#[from] ChainError),
    #[error("the Merkle tree: {0}")]
    Tree(String),
}

impl From<tokenledger_events::VerifyError> for StoreError {
    fn from(e: tokenledger_events::VerifyError) -> Self {
        match e {
            tokenledger_events::VerifyError::Log(e) => StoreError::Log(e),
            tokenledger_events::VerifyError::Chain(e) => StoreError::Chain(e),
        }
    }
}

impl StoreError {
    /// A tree question that cannot be answered: a size or index out of range, or a stored
    /// hash missing.
    pub(crate) fn tree(e: impl std::fmt::Display) -> StoreError {
        StoreError::Tree(e.to_string())
    }

    pub(crate) fn db(e: sqlx::Error) -> StoreError {
        StoreError::Db(e.to_string())
    }

    pub(crate) fn not_migrated(e: sqlx::Error) -> StoreError {
        StoreError::NotMigrated(e.to_string())
    }
}

/// Which database a `DATABASE_URL` names.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
    /// A KurrentDB log (`kurrentdb://`, `esdb://`), with its projections in a SQL database
    /// (`PROJECTION_DATABASE_URL`).
    Kurrent {
        log: String,
        projections: Box<DatabaseUrl>,
    },
}

/// The schemes of KurrentDB (and EventStoreDB) connection strings.
pub const KURRENT_SCHEMES: [&str; 6] = [
    "kurrentdb",
    "kurrentdb+discover",
    "kurrent",
    "kurrent+discover",
    "esdb",
    "esdb+discover",
];

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, StoreError> {
        let raw = raw.trim();
        let scheme = raw.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(DatabaseUrl::Sqlite(raw.to_owned())),
            "postgres" | "postgresql" => {
                if !raw.contains("://") || raw.split_once("://").is_some_and(|(_, r)| r.is_empty())
                {
                    return Err(StoreError::BadUrl(format!("{:?} has no host", redact(raw))));
                }
                Ok(DatabaseUrl::Postgres(raw.to_owned()))
            }
            s if KURRENT_SCHEMES.contains(&s) => {
                if !cfg!(feature = "kurrentdb") {
                    return Err(StoreError::NoKurrent);
                }
                let projections = std::env::var("PROJECTION_DATABASE_URL").map_err(|_| {
                    StoreError::Kurrent(
                        "DATABASE_URL names a KurrentDB log, whose projections live in a SQL database: set PROJECTION_DATABASE_URL too; accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB".into(),
                    )
                })?;
                DatabaseUrl::kurrent(raw, &projections)
            }
            "" => Err(StoreError::BadUrl(format!(
                "{:?} has no scheme",
                redact(raw)
            ))),
            other => Err(StoreError::BadUrl(format!(
                "has the unsupported scheme {other:?}"
            ))),
        }
    }

    /// A KurrentDB log at `log` with its projections at `projections` (SQLite or
    /// PostgreSQL).
    pub fn kurrent(log: &str, projections: &str) -> Result<DatabaseUrl, StoreError> {
        let log = log.trim();
        if !log.contains("://") || log.split_once("://").is_some_and(|(_, r)| r.is_empty()) {
            return Err(StoreError::BadUrl(format!("{:?} has no host", redact(log))));
        }
        const ACCEPTED: &str = "accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB, where the projections live";
        let scheme = projections
            .trim()
            .split_once(':')
            .map(|(s, _)| s)
            .unwrap_or("");
        if KURRENT_SCHEMES.contains(&scheme) {
            return Err(StoreError::Kurrent(format!(
                "PROJECTION_DATABASE_URL must name SQLite or PostgreSQL; {ACCEPTED}"
            )));
        }
        match DatabaseUrl::parse(projections) {
            Ok(p) => Ok(DatabaseUrl::Kurrent {
                log: log.to_owned(),
                projections: Box::new(p),
            }),
            Err(StoreError::BadUrl(why)) => Err(StoreError::Kurrent(format!(
                "PROJECTION_DATABASE_URL {why}; {ACCEPTED}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// The URL without any password, for messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(u) | DatabaseUrl::Postgres(u) => redact(u),
            DatabaseUrl::Kurrent { log, .. } => redact(log),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
            DatabaseUrl::Kurrent { .. } => "kurrentdb",
        }
    }

    /// The SQL database: this one, or a KurrentDB log's projection database.
    pub fn sql(&self) -> &DatabaseUrl {
        match self {
            DatabaseUrl::Kurrent { projections, .. } => projections,
            sql => sql,
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// `scheme://user:secret@host/db` becomes `scheme://user:***@host/db`, and so does the same
/// URL typed without its slashes (`scheme:user:secret@host/db`, refused as having no host,
/// but shown in that refusal); query strings are dropped, since they may carry a password too.
fn redact(url: &str) -> String {
    let url = url.split_once('?').map(|(u, _)| u).unwrap_or(url);
    let split = url
        .split_once("://")
        .map(|(scheme, rest)| (scheme, "://", rest))
        .or_else(|| {
            url.split_once(':')
                .map(|(scheme, rest)| (scheme, ":", rest))
        });
    let Some((scheme, separator, rest)) = split else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            if userinfo.contains(':') {
                format!("{scheme}{separator}{user}:***@{host}")
            } else {
                format!("{scheme}{separator}{user}@{host}")
            }
        }
        None => format!("{scheme}{separator}{rest}"),
    }
}

/// A connected database whose log is not open yet: migrations and their status work here.
pub enum Database {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Database {
    /// Connect to the SQL database of `url` (for a KurrentDB log, its projection database).
    pub async fn connect(url: &DatabaseUrl) -> Result<Database, StoreError> {
        let url = url.sql();
        match url {
            DatabaseUrl::Sqlite(u) => SqliteDb::connect(u).await.map(Database::Sqlite),
            DatabaseUrl::Postgres(u) => PgDb::connect(u, &url.redacted())
                .await
                .map(Database::Postgres),
            DatabaseUrl::Kurrent { .. } => Err(StoreError::BadUrl(
                "PROJECTION_DATABASE_URL must name SQLite or PostgreSQL".into(),
            )),
        }
    }

    /// Make this the projection database of the log `log_id` (see [`upstream`]).
    pub async fn follow(&self, log_id: LogId, name: &str) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(d) => d.follow(log_id, name).await,
            Database::Postgres(d) => d.follow(log_id, name).await,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(self).await
    }

    pub async fn migration_status(&self) -> Result<Vec<migrate::MigrationState>, StoreError> {
        migrate::status(self).await
    }

    pub async fn open_log(&self) -> Result<Store, StoreError> {
        match self {
            Database::Sqlite(d) => d.open_log().await.map(Store::Sqlite),
            Database::Postgres(d) => d.open_log().await.map(Store::Postgres),
        }
    }
}

/// The log of whichever backend is configured.
pub enum Store {
    Sqlite(SqliteLog),
    Postgres(PgLog),
}

impl Store {
    /// Connect, apply pending migrations and open the log: what the server and CLI do first.
    /// For a KurrentDB log, its projection database is brought up to the log's head too.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        let db = Database::connect(url).await?;
        db.migrate().await?;
        match url {
            DatabaseUrl::Kurrent { log, .. } => open_kurrent(db, log, &url.redacted()).await,
            _ => db.open_log().await,
        }
    }

    pub fn backend(&self) -> &'static str {
        if self.upstream().is_some() {
            return "kurrentdb";
        }
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $log:ident => $call:expr) => {
        match $self {
            Store::Sqlite($log) => $call,
            Store::Postgres($log) => $call,
        }
    };
}
pub(crate) use delegate;

#[cfg(feature = "kurrentdb")]
async fn open_kurrent(db: Database, log: &str, target: &str) -> Result<Store, StoreError> {
    kurrent::open(db, log, target).await
}

#[cfg(not(feature = "kurrentdb"))]
async fn open_kurrent(_: Database, _: &str, _: &str) -> Result<Store, StoreError> {
    Err(StoreError::NoKurrent)
}

/// A checkpoint the log signed: the tree's size and root, and the signed note's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: tokenledger_events::Hash,
    /// The C2SP signed note: the checkpoint body, a blank line, the signatures.
    pub note: String,
    pub signed_at: Timestamp,
}

/// Which audit rows to read: a page of at most `limit` rows by position, after the cursor
/// `after` and/or before `before`, oldest first unless `newest_first`. Every filter given must
/// match. Token, action, actor and the time and position windows are SQL conditions; the
/// client address and the path live only in the event's body, so rows are read by those
/// conditions and the body is checked here ([`AuditFilter::body_matches`]).
#[derive(Debug, Clone)]
pub struct AuditFilter {
    pub token_id: Option<uuid::Uuid>,
    pub action: Option<AuditAction>,
    /// Rows whose actor is exactly this.
    pub actor: Option<String>,
    /// Rows used or denied from an address in this network (a single address is a /32 or
    /// /128). Rows without an address (creations, revocations) never match.
    pub ip: Option<ipnet::IpNet>,
    /// Rows whose request path starts with this (case-sensitive). Rows without a path never
    /// match.
    pub path_prefix: Option<String>,
    /// Rows that occurred at or after this time.
    pub since: Option<Timestamp>,
    /// Rows that occurred at or before this time.
    pub until: Option<Timestamp>,
    /// Rows at this position or later.
    pub from_position: Option<u64>,
    /// Rows at this position or earlier.
    pub to_position: Option<u64>,
    /// Only rows at positions greater than this.
    pub after: Option<u64>,
    /// Only rows at positions less than this.
    pub before: Option<u64>,
    pub newest_first: bool,
    pub limit: usize,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            token_id: None,
            action: None,
            actor: None,
            ip: None,
            path_prefix: None,
            since: None,
            until: None,
            from_position: None,
            to_position: None,
            after: None,
            before: None,
            newest_first: false,
            limit: 100,
        }
    }
}

/// The event types whose rows carry a client address and a path: uses and denials.
pub(crate) const ADDRESSED_TYPES: [&str; 3] =
    ["TokenUsed", "TokenUseDenied", "TokenUseDeniedSummary"];

impl AuditFilter {
    /// Every row, in log order: for rebuild checks and tests, never for a view.
    pub fn everything() -> AuditFilter {
        AuditFilter {
            limit: usize::MAX,
            ..AuditFilter::default()
        }
    }

    /// Whether a filter needs each event's body: the address or the path.
    pub fn filters_body(&self) -> bool {
        self.ip.is_some() || self.path_prefix.is_some()
    }

    /// Whether the address and path of an event match the filter's (true when it has
    /// neither).
    pub fn body_matches(&self, decoded: &TokenEvent) -> bool {
        if !self.filters_body() {
            return true;
        }
        let (ip, path) = match decoded {
            TokenEvent::Used(u) => (u.ip.as_deref(), u.path.as_str()),
            TokenEvent::UseDenied(d) => (d.ip.as_deref(), d.path.as_str()),
            TokenEvent::UseDeniedSummary(d) => (d.ip.as_deref(), d.path.as_str()),
            _ => return false,
        };
        self.ip
            .is_none_or(|net| ip.is_some_and(|ip| address_in(&net, ip)))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }

    /// Whether one event's row passes every filter (the cursors aside): what a follower
    /// applies to each event as it reads the log in order. The same conditions as the SQL
    /// of a page, written out.
    pub fn matches(&self, event: &StoredEvent, decoded: &TokenEvent) -> bool {
        let Some(token_id) = event.stream_id.token_id() else {
            return false;
        };
        self.token_id.is_none_or(|t| t == token_id)
            && self
                .action
                .is_none_or(|a| a.event_types().contains(&event.event_type.as_str()))
            && self.actor.as_deref().is_none_or(|a| a == event.actor)
            && self.since.is_none_or(|t| event.recorded_at >= t)
            && self.until.is_none_or(|t| event.recorded_at <= t)
            && self.from_position.is_none_or(|p| event.position >= p)
            && self.to_position.is_none_or(|p| event.position <= p)
            && self.body_matches(decoded)
    }
}

/// Whether the recorded address `ip` lies in `net`. A recorded address that does not parse
/// never matches. An IPv4 address and its IPv4-mapped IPv6 form (`::ffff:10.0.0.1`, what a
/// dual-stack socket reports) are the same client, so either form of either side matches.
pub fn address_in(net: &ipnet::IpNet, ip: &str) -> bool {
    let Ok(addr) = ip.trim().parse::<std::net::IpAddr>() else {
        return false;
    };
    address_forms(addr).iter().any(|a| net.contains(a))
}

/// An address as itself, as its canonical form, and (IPv4) as its IPv4-mapped IPv6 form.
pub(crate) fn address_forms(addr: std::net::IpAddr) -> [std::net::IpAddr; 3] {
    let mapped = match addr.to_canonical() {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    [addr, addr.to_canonical(), mapped]
}

/// Which stored tokens to read: every filter given must match (see `sql::token_filter`).
#[derive(Debug, Clone, Copy)]
pub struct TokenFilter<'a> {
    /// Only tokens with ids greater than this.
    pub after: Option<uuid::Uuid>,
    /// The status at `now`.
    pub status: Option<tokenledger_projections::TokenStatus>,
    pub now: Timestamp,
    /// Tokens holding this very scope.
    pub scope: Option<crate::scope::Scope>,
    pub environment: Option<tokenledger_events::Environment>,
    pub name_prefix: Option<&'a str>,
    pub limit: usize,
}

impl Default for TokenFilter<'_> {
    fn default() -> Self {
        TokenFilter {
            after: None,
            status: None,
            now: Timestamp::from_micros(0),
            scope: None,
            environment: None,
            name_prefix: None,
            limit: 50,
        }
    }
}

/// A page of audit rows, in the order asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// Rows matching the filter, on every page.
    pub total: u64,
    /// More rows follow the page's last row (in its order).
    pub more_past_end: bool,
    /// More rows precede the page's first row (in its order).
    pub more_before_start: bool,
}

impl AuditPage {
    /// A page from a scan: `rows` already in the order asked for; the scan ran newest first
    /// when `scan_desc`, found more rows past its limit (`more_in_scan`) and rows behind the
    /// cursor it started from (`behind_start`).
    pub(crate) fn from_scan(
        rows: Vec<AuditRow>,
        total: u64,
        scan_desc: bool,
        newest_first: bool,
        more_in_scan: bool,
        behind_start: bool,
    ) -> AuditPage {
        let (more_past_end, more_before_start) = if scan_desc == newest_first {
            (more_in_scan, behind_start)
        } else {
            (behind_start, more_in_scan)
        };
        AuditPage {
            rows,
            total,
            more_past_end,
            more_before_start,
        }
    }
}

impl Store {
    pub async fn token(&self, id: uuid::Uuid) -> Result<Option<TokenRow>, StoreError> {
        delegate!(self, l => l.token(id).await)
    }

    /// The token with this hash: the authentication lookup.
    pub async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRow>, StoreError> {
        delegate!(self, l => l.token_by_hash(hash).await)
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        delegate!(self, l => l.tokens().await)
    }

    /// How many tokens are stored.
    pub async fn token_count(&self) -> Result<u64, StoreError> {
        delegate!(self, l => l.token_count().await)
    }

    /// Every stored token as a compact entry, handed to `add` as its row arrives (a
    /// streaming read: the rows are never collected). Returns how many were read.
    pub async fn stream_token_entries(
        &self,
        add: &mut dyn FnMut(crate::token_entry::TokenEntry),
    ) -> Result<u64, StoreError> {
        delegate!(self, l => l.stream_token_entries(add).await)
    }

    /// A page of stored rows matching `filter`, in id order after its cursor.
    pub async fn token_page(&self, filter: &TokenFilter<'_>) -> Result<Vec<TokenRow>, StoreError> {
        delegate!(self, l => l.token_page(filter).await)
    }

    /// How many stored tokens match `filter` (cursor and limit aside).
    pub async fn count_tokens(&self, filter: &TokenFilter<'_>) -> Result<u64, StoreError> {
        delegate!(self, l => l.count_tokens(filter).await)
    }

    /// The stored rows of these tokens, in id order.
    pub async fn tokens_by_id(&self, ids: &[uuid::Uuid]) -> Result<Vec<TokenRow>, StoreError> {
        delegate!(self, l => l.tokens_by_id(ids).await)
    }

    /// A page of audit rows.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        delegate!(self, l => l.audit(filter).await)
    }

    /// Per token, the addresses first used at or after `since`.
    pub async fn first_seen_ips(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(uuid::Uuid, String)>, StoreError> {
        delegate!(self, l => l.first_seen_ips(since).await)
    }

    /// Tell `observer` how long the requests of every group commit waited (for metrics).
    pub fn observe_commits(&self, observer: writer::CommitObserver) {
        delegate!(self, l => l.observe_commits(observer))
    }

    /// Each projection's checkpoint (the last position folded in).
    pub async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        delegate!(self, l => l.checkpoints().await)
    }

    /// The first position recorded at or after `at` (one past the head when none is).
    pub async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        delegate!(self, l => l.position_at(at).await)
    }

    /// Signed checkpoints, newest (largest) first.
    pub async fn signed_checkpoints(
        &self,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        delegate!(self, l => l.signed_checkpoints(limit).await)
    }

    /// Store a signed checkpoint (a size already stored keeps the note it has).
    pub async fn save_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        delegate!(self, l => l.save_checkpoint(checkpoint).await)
    }

    /// The stored Merkle tree hashes at `indexes` (those present).
    pub async fn tree_hashes(
        &self,
        indexes: &[u64],
    ) -> Result<std::collections::HashMap<u64, tokenledger_events::Hash>, StoreError> {
        delegate!(self, l => l.tree_hashes(indexes).await)
    }

    /// The root of the Merkle tree of the first `size` events, from stored hashes only.
    pub async fn tree_root(&self, size: u64) -> Result<tokenledger_events::Hash, StoreError> {
        let indexes = merkle::tree_root_indexes(size).map_err(StoreError::tree)?;
        let hashes = self.tree_hashes(&indexes).await?;
        merkle::tree_root(size, &hashes).map_err(StoreError::tree)
    }

    /// The inclusion proof of the event at `position` in the tree of the first `size` events.
    pub async fn inclusion_proof(
        &self,
        position: u64,
        size: u64,
    ) -> Result<Vec<tokenledger_events::Hash>, StoreError> {
        let index = position.checked_sub(1).ok_or_else(|| {
            StoreError::Db("positions start at 1; there is no position 0 to prove".into())
        })?;
        let indexes = merkle::inclusion_proof_indexes(index, size).map_err(StoreError::tree)?;
        let hashes = self.tree_hashes(&indexes).await?;
        merkle::inclusion_proof(index, size, &hashes).map_err(StoreError::tree)
    }

    /// The proof that the tree of `new` events extends the tree of `old` events.
    pub async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<tokenledger_events::Hash>, StoreError> {
        let indexes = merkle::consistency_proof_indexes(old, new).map_err(StoreError::tree)?;
        let hashes = self.tree_hashes(&indexes).await?;
        merkle::consistency_proof(old, new, &hashes).map_err(StoreError::tree)
    }

    /// Every (token, address) row of `token_addresses`, in token then address order.
    pub async fn addresses(&self) -> Result<Vec<tokenledger_projections::AddressUse>, StoreError> {
        delegate!(self, l => l.addresses().await)
    }

    /// Rebuild `api_tokens` and `token_addresses` from position 0, holding the append lock.
    /// Returns the position rebuilt to and the number of tokens.
    pub async fn rebuild_projections(&self) -> Result<(u64, usize), StoreError> {
        self.rebuild_projections_with(&|_| {}).await
    }

    /// [`Store::rebuild_projections`], telling `progress` the position folded after each page.
    pub async fn rebuild_projections_with(
        &self,
        progress: &(dyn Fn(tokenledger_events::Progress) + Sync),
    ) -> Result<(u64, usize), StoreError> {
        delegate!(self, l => l.rebuild(progress).await)
    }
}

impl EventLog for Store {
    fn log_id(&self) -> LogId {
        delegate!(self, l => l.log_id())
    }

    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        if let Some(upstream) = self.upstream() {
            return upstream.append(self, batch).await;
        }
        if let Some(primary) = self.primary_name() {
            return Err(AppendError::Unavailable(format!(
                "this database holds the projections of {primary}; appends go there: set DATABASE_URL to that log and PROJECTION_DATABASE_URL to this database"
            )));
        }
        delegate!(self, l => l.append(batch).await)
    }

    async fn read_from(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LogError> {
        delegate!(self, l => l.read_from(after, limit).await)
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<StoredEvent>, LogError> {
        delegate!(self, l => l.read_stream(stream).await)
    }

    async fn head(&self) -> Result<Head, LogError> {
        delegate!(self, l => l.head().await)
    }

    async fn wait_for(&self, position: u64, timeout: Duration) -> Result<Head, LogError> {
        delegate!(self, l => l.wait_for(position, timeout).await)
    }
}

/// How often a tail re-reads the head when no wake-up arrives: the correctness path for
/// appends made by other processes or nodes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Wait until `log`'s head reaches `position`, waking on this node's commits (`local`), on
/// other nodes' notifications (`remote`) and on a poll, whichever comes first. This node's
/// own commits are answered from `local` without a read: under local load a tail asks after
/// every group, and the database head is only needed for what other nodes appended.
pub(crate) async fn wait_for_head<L: EventLog>(
    log: &L,
    mut local: watch::Receiver<Head>,
    mut remote: Option<watch::Receiver<u64>>,
    position: u64,
    timeout: Duration,
) -> Result<Head, LogError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut local_alive, mut remote_alive) = (true, remote.is_some());
    loop {
        let committed = *local.borrow_and_update();
        if committed.position >= position {
            return Ok(committed);
        }
        let head = log.head().await?;
        let now = tokio::time::Instant::now();
        if head.position >= position || now >= deadline {
            return Ok(head);
        }
        let nap = tokio::time::sleep_until(deadline.min(now + POLL_INTERVAL));
        tokio::select! {
            changed = local.changed(), if local_alive => local_alive = changed.is_ok(),
            changed = async { remote.as_mut().expect("guarded").changed().await }, if remote_alive => {
                remote_alive = changed.is_ok();
            }
            _ = nap => {}
        }
    }
}
