//! Reads for security reviewers replaying history: the token table as of any instant or
//! position, the incident report, and a token's life told event by event.
//!
//! Every read is bounded: a page of tokens, one token's stream, or indexes that leave uses
//! out (see `store::forensics`). As of position `p`, a token's row is the fold of its events
//! `1..=p` (DESIGN invariant 8); as of instant `T`, of those recorded at or before `T`.
//! Nothing here appends, except the incident report's revocation when it is asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokenledger_events::{EventLog, StoredEvent, StreamId, Timestamp, TokenEvent};
use tokenledger_projections::{
    Activity, Counts, LifeEvent, StreamAt, TokenRow, last_use_version, narrate, row_as_of,
};
use uuid::Uuid;

use super::queries::{QueryError, TokenView, unavailable};
use super::tokens::{TokenCursor, clamp};
use crate::clock::Clock;
use crate::config::parse_duration;
use crate::store::{DatabaseUrl, Store, StoreError, StoredCheckpoint};

/// The schema of the projections crate's `Counts` (a pure crate, kept free of utoipa).
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "a schema only: the answer serializes `Counts` itself"
)]
pub struct UseCounts {
    used: u64,
    denied: u64,
}

/// A point in the log's history, as asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// After the event at this position (`position:N`; 0 is before the first event).
    Position(u64),
    /// After every event recorded at or before this instant.
    At(Timestamp),
    /// This long before now.
    Ago(Duration),
}

/// What `--as-of` and `as_of` accept, for messages.
pub const AS_OF_FORMS: &str = "expected RFC 3339 like 2026-11-24T09:30:00Z, a date like 2026-11-24, position:N, or a duration ago like 3d or 12h";

impl AsOf {
    pub fn parse(raw: &str) -> Result<AsOf, String> {
        let raw = raw.trim();
        let shown = crate::text::shown(raw);
        if let Some(n) = raw.strip_prefix("position:") {
            return n
                .parse::<u64>()
                .map(AsOf::Position)
                .map_err(|_| format!("{shown} is not a position; {AS_OF_FORMS}"));
        }
        if let Ok(d) = parse_duration(raw) {
            return Ok(AsOf::Ago(d));
        }
        Timestamp::parse_rfc3339(raw)
            .map(AsOf::At)
            .map_err(|_| format!("{shown} is not a time; {AS_OF_FORMS}"))
    }
}

/// A checkpoint that proves the answer: a signed tree of at least the answer's position.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Covering {
    pub size: u64,
    pub signed_at: String,
    /// The C2SP signed note; `tokenledger prove POSITION` gives inclusion proofs against it.
    pub note: String,
}

impl From<StoredCheckpoint> for Covering {
    fn from(c: StoredCheckpoint) -> Covering {
        Covering {
            size: c.size,
            signed_at: c.signed_at.to_rfc3339(),
            note: c.note,
        }
    }
}

/// Where an as-of answer stands.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AsOfPoint {
    /// The log position the answer is the fold up to (0: before the first event).
    pub position: u64,
    /// The instant statuses are judged at: the time asked for, or the position's own time.
    pub at: Option<String>,
    /// The log's head when the answer was read.
    pub head: u64,
    /// The smallest signed checkpoint that covers `position`, if one is signed yet.
    pub checkpoint: Option<Covering>,
    /// What to do when no checkpoint covers it yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_hint: Option<String>,
    #[serde(skip)]
    at_time: Option<Timestamp>,
}

/// A page of the token table as it was.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AsOfPage {
    pub as_of: AsOfPoint,
    pub tokens: Vec<TokenView>,
    /// Tokens that existed then.
    pub total: u64,
    pub next: Option<String>,
    pub limit: usize,
    pub limit_clamped: bool,
    pub complete: bool,
}

/// Window activity as people see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SeenView {
    pub value: String,
    pub used: u64,
    pub denied: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// For addresses: first used by this token inside the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
}

/// A token related to the one under review, with the commands to act on it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Related {
    pub id: Uuid,
    pub name: String,
    pub status: &'static str,
    /// Why it is listed.
    pub relation: String,
    pub revoke: String,
    pub rotate: String,
}

/// The scopes a token of the rotation chain held, over which time, and what they admitted.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeSpan {
    pub token_id: Uuid,
    pub scopes: Vec<String>,
    pub from: String,
    /// When it stopped working: revoked, or expired; `None` if it still works.
    pub until: Option<String>,
    pub admits: Admitted,
}

/// What a set of scopes admits, from the route policy.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Admitted {
    pub routes: Vec<String>,
    pub console_commands: Vec<String>,
}

/// Step 1 of the report.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RevokeStep {
    pub asked: bool,
    /// What happened: revoked now, already revoked, or not asked.
    pub outcome: String,
    pub revoked_at: Option<String>,
}

/// Step 2.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Trail {
    #[schema(value_type = UseCounts)]
    pub totals: Counts,
    #[schema(value_type = BTreeMap<String, UseCounts>)]
    pub per_day: BTreeMap<String, Counts>,
    #[schema(value_type = BTreeMap<String, UseCounts>)]
    pub per_command: BTreeMap<String, Counts>,
    pub denial_reasons: BTreeMap<String, u64>,
    /// Every event in the window that is not a use, told as a sentence.
    pub events: Vec<LifeView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LifeView {
    pub position: u64,
    pub at: String,
    pub actor: String,
    pub event_type: String,
    pub what: String,
}

impl From<&LifeEvent> for LifeView {
    fn from(e: &LifeEvent) -> LifeView {
        LifeView {
            position: e.position,
            at: e.at.to_rfc3339(),
            actor: e.actor.clone(),
            event_type: e.event_type.clone(),
            what: e.what.clone(),
        }
    }
}

/// Step 4.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RelatedTokens {
    pub rotation_chain: Vec<Related>,
    pub same_creator: Vec<Related>,
    /// All tokens by the same creator (the list holds at most [`RELATED_MAX`]).
    pub same_creator_total: u64,
    pub same_addresses: Vec<Related>,
}

/// The guide's five incident steps for one token, in one report.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub token: TokenView,
    pub since: String,
    pub until: String,
    /// The log positions the window spans.
    pub from_position: u64,
    pub to_position: u64,
    pub revocation: RevokeStep,
    pub trail: Trail,
    pub addresses: Vec<SeenView>,
    pub paths: Vec<SeenView>,
    pub related: RelatedTokens,
    pub scopes: Vec<ScopeSpan>,
    pub checkpoint: AsOfPoint,
}

/// A run of uses, or one lifecycle event: a token's history as `tokenledger history` tells it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Chapter {
    Event(LifeView),
    Uses {
        count: u64,
        first_position: u64,
        last_position: u64,
        first_at: String,
        last_at: String,
        /// The distinct addresses, at most [`RELATED_MAX`].
        ips: BTreeSet<String>,
        paths: BTreeSet<String>,
    },
}

/// Related tokens listed per kind, at most.
pub const RELATED_MAX: usize = 100;
/// Events read per round trip along a stream.
const STREAM_PAGE: usize = 5000;

fn decode(e: &StoredEvent) -> Result<TokenEvent, QueryError> {
    e.decode().map_err(|err| QueryError::Unavailable {
        what: "Event log",
        source: StoreError::Db(format!("event at position {}: {err}", e.position)),
    })
}

/// The forensic reads: the log and a clock, no token cache. The service reaches them through
/// [`super::Queries::forensics`]; the CLI opens them alone ([`Forensics::open`]), so a
/// reviewer's command does not first load every token.
#[derive(Clone)]
pub struct Forensics {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
}

impl Forensics {
    pub(crate) fn new(store: Arc<Store>, clock: Arc<dyn Clock>) -> Forensics {
        Forensics { store, clock }
    }

    /// Open the log for forensic reads: migrations applied and its head verified, as every
    /// command does.
    pub async fn open(url: &DatabaseUrl, clock: Arc<dyn Clock>) -> Result<Forensics, StoreError> {
        let (store, _) = super::open_verified(url).await?;
        Ok(Forensics { store, clock })
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A token's current row.
    pub async fn token(&self, id: Uuid) -> Result<TokenRow, QueryError> {
        self.store
            .token(id)
            .await
            .map_err(unavailable("Token table"))?
            .ok_or(QueryError::NotFound(id))
    }

    async fn head(&self) -> Result<tokenledger_events::Head, QueryError> {
        self.store
            .head()
            .await
            .map_err(|e| unavailable("Event log")(e.into()))
    }
    /// Resolve `as_of` against the log: the position, and the instant statuses are judged
    /// at. A time in the future, or a position past the head, is refused naming the head.
    pub async fn resolve(&self, as_of: AsOf) -> Result<AsOfPoint, QueryError> {
        let store = self.store();
        let head = self.head().await?.position;
        let now = self.now();
        let head_at = match head {
            0 => None,
            p => store
                .read_from(p - 1, 1)
                .await
                .map_err(|e| unavailable("Event log")(e.into()))?
                .first()
                .map(|e| e.recorded_at),
        };
        let future = || {
            QueryError::BadInput(match head_at {
                Some(t) => format!(
                    "is in the future; the log's head is position {head}, recorded at {}",
                    t.to_rfc3339()
                ),
                None => "is in the future; the log is empty (its head is position 0)".to_owned(),
            })
        };
        let instant = match as_of {
            AsOf::Position(_) => None,
            AsOf::At(t) => Some(t),
            AsOf::Ago(d) => Some(now.minus(d)),
        };
        let (position, at) = match (as_of, instant) {
            (_, Some(t)) if t > now => return Err(future()),
            (_, Some(t)) => {
                let after = store
                    .position_at(t.plus_micros(1))
                    .await
                    .map_err(unavailable("Event log"))?;
                (after - 1, Some(t))
            }
            (AsOf::Position(p), None) if p > head => return Err(future()),
            (AsOf::Position(p), None) if p > 0 => {
                let event = store
                    .read_from(p - 1, 1)
                    .await
                    .map_err(|e| unavailable("Event log")(e.into()))?;
                (p, event.first().map(|e| e.recorded_at))
            }
            _ => (0, None),
        };
        self.point(position, at, head).await
    }

    async fn point(
        &self,
        position: u64,
        at: Option<Timestamp>,
        head: u64,
    ) -> Result<AsOfPoint, QueryError> {
        let checkpoint = if position == 0 {
            None
        } else {
            self.store()
                .checkpoint_covering(position)
                .await
                .map_err(unavailable("Checkpoints"))?
        };
        let checkpoint_hint = (checkpoint.is_none() && position > 0).then(|| {
            format!("no signed checkpoint covers position {position} yet; `tokenledger checkpoints --sign` signs the head")
        });
        Ok(AsOfPoint {
            position,
            at: at.map(Timestamp::to_rfc3339),
            head,
            checkpoint: checkpoint.map(Covering::from),
            checkpoint_hint,
            at_time: at,
        })
    }

    /// These tokens' rows as of `position`, in the order of `ids`; a token created later is
    /// left out. A row unchanged since is the stored one; others are assembled from their
    /// lifecycle events and a binary search for their last use.
    pub async fn rows_as_of(
        &self,
        ids: &[Uuid],
        position: u64,
    ) -> Result<Vec<TokenRow>, QueryError> {
        let store = self.store();
        let current = store
            .tokens_by_id(ids)
            .await
            .map_err(unavailable("Token table"))?;
        let changed: Vec<Uuid> = current
            .iter()
            .filter(|r| r.position > position)
            .map(|r| r.id)
            .collect();
        let lifecycle = store
            .lifecycle_events(&changed, position)
            .await
            .map_err(unavailable("Event log"))?;
        let mut by_token: HashMap<Uuid, Vec<(StoredEvent, TokenEvent)>> = HashMap::new();
        for e in lifecycle {
            if let Some(id) = e.stream_id.token_id() {
                let decoded = decode(&e)?;
                by_token.entry(id).or_default().push((e, decoded));
            }
        }
        let mut rows: HashMap<Uuid, TokenRow> = HashMap::new();
        for row in current {
            if row.position <= position {
                rows.insert(row.id, row);
                continue;
            }
            let Some(events) = by_token.get(&row.id) else {
                continue;
            };
            let stream = StreamId::for_token(row.id);
            let Some((last, _)) = events.last() else {
                continue;
            };
            let version = store
                .version_at_or_before(&stream, position, last.stream_version, row.version)
                .await
                .map_err(unavailable("Event log"))?;
            let versions: Vec<u64> = events.iter().map(|(e, _)| e.stream_version).collect();
            let mut at = StreamAt {
                version,
                position: last.position,
                last_use: None,
            };
            if version != last.stream_version {
                at.position = store
                    .position_of_version(&stream, version)
                    .await
                    .map_err(unavailable("Event log"))?
                    .unwrap_or(last.position);
            }
            if let Some(v) = last_use_version(version, &versions) {
                let page = store
                    .stream_page(&stream, v - 1, 1)
                    .await
                    .map_err(unavailable("Event log"))?;
                if let Some(e) = page.first()
                    && let TokenEvent::Used(u) = decode(e)?
                {
                    at.last_use = Some((e.recorded_at, u));
                }
            }
            let refs: Vec<(&StoredEvent, &TokenEvent)> =
                events.iter().map(|(e, d)| (e, d)).collect();
            if let Some(r) = row_as_of(&refs, &at) {
                rows.insert(r.id, r);
            }
        }
        Ok(ids.iter().filter_map(|id| rows.remove(id)).collect())
    }

    /// A page of the token table as it was at `as_of`, in id order from `after`.
    pub async fn tokens_as_of(
        &self,
        as_of: AsOf,
        after: Option<TokenCursor>,
        limit: Option<usize>,
    ) -> Result<AsOfPage, QueryError> {
        let point = self.resolve(as_of).await?;
        let (limit, limit_clamped) = clamp(limit);
        let store = self.store();
        let (ids, total) = if point.position == 0 {
            (Vec::new(), 0)
        } else {
            let ids = store
                .tokens_existing_at(after.map(TokenCursor::id), point.position, limit + 1)
                .await
                .map_err(unavailable("Event log"))?;
            let total = store
                .count_created_at(point.position)
                .await
                .map_err(unavailable("Event log"))?;
            (ids, total)
        };
        let more = ids.len() > limit;
        let rows = self
            .rows_as_of(&ids[..ids.len().min(limit)], point.position)
            .await?;
        let judged = point.at_time.unwrap_or(Timestamp::from_micros(0));
        let tokens: Vec<TokenView> = rows.iter().map(|r| TokenView::new(r, judged)).collect();
        Ok(AsOfPage {
            next: more
                .then(|| tokens.last().map(|t| TokenCursor::after(t.id).encode()))
                .flatten(),
            complete: !more && after.is_none(),
            total,
            limit,
            limit_clamped,
            tokens,
            as_of: point,
        })
    }

    /// One token as it was at `as_of`; `None` when it did not exist yet.
    pub async fn token_as_of(
        &self,
        id: Uuid,
        as_of: AsOf,
    ) -> Result<(AsOfPoint, Option<TokenView>), QueryError> {
        self.store()
            .token(id)
            .await
            .map_err(unavailable("Token table"))?
            .ok_or(QueryError::NotFound(id))?;
        let point = self.resolve(as_of).await?;
        let judged = point.at_time.unwrap_or(Timestamp::from_micros(0));
        let row = self.rows_as_of(&[id], point.position).await?;
        Ok((point, row.first().map(|r| TokenView::new(r, judged))))
    }

    /// Fold `id`'s events at positions from `from` on (all of them for 1), a page at a time,
    /// handing each to `f` with the row just before it (its lifecycle fields: uses are not
    /// folded into it).
    async fn walk(
        &self,
        row: &TokenRow,
        from: u64,
        mut f: impl FnMut(&StoredEvent, &TokenEvent, Option<&TokenRow>),
    ) -> Result<(), QueryError> {
        let store = self.store();
        let stream = StreamId::for_token(row.id);
        let first = if from <= 1 {
            1
        } else {
            store
                .first_version_from(&stream, from, row.version)
                .await
                .map_err(unavailable("Event log"))?
        };
        let mut before: Option<TokenRow> = if first > 1 {
            let start = store
                .position_of_version(&stream, first - 1)
                .await
                .map_err(unavailable("Event log"))?
                .unwrap_or(0);
            self.rows_as_of(&[row.id], start).await?.pop()
        } else {
            None
        };
        let mut after = first - 1;
        loop {
            let page = store
                .stream_page(&stream, after, STREAM_PAGE)
                .await
                .map_err(unavailable("Event log"))?;
            for e in &page {
                let decoded = decode(e)?;
                f(e, &decoded, before.as_ref());
                match (&mut before, &decoded) {
                    // What a sentence says of a row (status, expiry, successor) does not
                    // change with a use: a busy token's uses are not folded into it.
                    (_, TokenEvent::Used(_)) => {}
                    (Some(b), d) => b.apply(e, d),
                    (None, TokenEvent::Created(c)) => before = Some(TokenRow::created(e, c)),
                    (None, _) => {}
                }
            }
            match page.last() {
                Some(e) if page.len() == STREAM_PAGE => after = e.stream_version,
                _ => return Ok(()),
            }
        }
    }

    /// A token's life, event by event; runs of uses are told as one chapter each.
    pub async fn history(&self, id: Uuid) -> Result<(TokenRow, Vec<Chapter>), QueryError> {
        let row = self
            .store()
            .token(id)
            .await
            .map_err(unavailable("Token table"))?
            .ok_or(QueryError::NotFound(id))?;
        let mut chapters: Vec<Chapter> = Vec::new();
        self.walk(&row, 1, |e, d, before| {
            if let TokenEvent::Used(u) = d {
                let ip = u.ip.clone().unwrap_or_else(|| "(none recorded)".to_owned());
                let at = e.recorded_at.to_rfc3339();
                if let Some(Chapter::Uses {
                    count,
                    last_position,
                    last_at,
                    ips,
                    paths,
                    ..
                }) = chapters.last_mut()
                {
                    *count += 1;
                    *last_position = e.position;
                    *last_at = at;
                    if ips.len() < RELATED_MAX {
                        ips.insert(ip);
                    }
                    if paths.len() < RELATED_MAX {
                        paths.insert(u.path.clone());
                    }
                    return;
                }
                chapters.push(Chapter::Uses {
                    count: 1,
                    first_position: e.position,
                    last_position: e.position,
                    first_at: at.clone(),
                    last_at: at,
                    ips: BTreeSet::from([ip]),
                    paths: BTreeSet::from([u.path.clone()]),
                });
                return;
            }
            chapters.push(Chapter::Event(LifeView {
                position: e.position,
                at: e.recorded_at.to_rfc3339(),
                actor: e.actor.clone(),
                event_type: e.event_type.clone(),
                what: narrate(d, before),
            }));
        })
        .await?;
        Ok((row, chapters))
    }

    /// The incident report's read side (steps 2 to 5 and the checkpoint) for `id` since
    /// `since` (its creation when `None`); `admits` says what a set of scopes allows.
    pub async fn incident(
        &self,
        id: Uuid,
        since: Option<Timestamp>,
        revocation: RevokeStep,
        admits: &(dyn Fn(&[String]) -> Admitted + Sync),
    ) -> Result<Incident, QueryError> {
        let store = self.store();
        let row = store
            .token(id)
            .await
            .map_err(unavailable("Token table"))?
            .ok_or(QueryError::NotFound(id))?;
        let now = self.now();
        // A window asked for must not start in the future; the default one starts at the
        // token's creation, whatever this node's clock says.
        if let Some(since) = since
            && since > now
        {
            return Err(QueryError::BadInput(format!(
                "is after now ({}): the window would have a negative length",
                now.to_rfc3339()
            )));
        }
        let since = since.unwrap_or(row.created_at);
        let head = self.head().await?.position;
        let from = store
            .position_at(since)
            .await
            .map_err(unavailable("Event log"))?;

        // Steps 2 and 3: the window's uses, grouped by the database, then its other events
        // told against the row just before each.
        let stream = StreamId::for_token(id);
        let first_version = if from <= 1 {
            1
        } else {
            store
                .first_version_from(&stream, from, row.version)
                .await
                .map_err(unavailable("Event log"))?
        };
        let mut activity = Activity::default();
        for group in store
            .use_groups(&stream, first_version)
            .await
            .map_err(unavailable("Event log"))?
        {
            activity.add_uses(&group);
        }
        let mut before = match from {
            0 | 1 => None,
            p => self.rows_as_of(&[id], p - 1).await?.pop(),
        };
        for e in store
            .lifecycle_from(&stream, from)
            .await
            .map_err(unavailable("Event log"))?
        {
            let decoded = decode(&e)?;
            activity.fold(&e, &decoded, before.as_ref());
            match (&mut before, &decoded) {
                (Some(b), d) => b.apply(&e, d),
                (None, TokenEvent::Created(c)) => before = Some(TokenRow::created(&e, c)),
                (None, _) => {}
            }
        }
        let all_time: HashMap<String, Timestamp> = store
            .addresses_of(id)
            .await
            .map_err(unavailable("IP history"))?
            .into_iter()
            .map(|a| (a.ip, a.first_seen))
            .collect();
        let seen =
            |(value, s): (&String, &tokenledger_projections::Seen), new: Option<bool>| SeenView {
                value: value.clone(),
                used: s.used,
                denied: s.denied,
                first_seen: s.first_seen.to_rfc3339(),
                last_seen: s.last_seen.to_rfc3339(),
                new,
            };
        let addresses: Vec<SeenView> = activity
            .ips
            .iter()
            .map(|(ip, s)| {
                // New: this token's first use from it (over its whole life) is in the window.
                let new = all_time.get(ip).is_some_and(|first| *first >= since);
                seen((ip, s), Some(new))
            })
            .collect();
        let paths = activity.paths.iter().map(|p| seen(p, None)).collect();

        // Step 4: related tokens.
        let chain = self.rotation_chain(&row).await?;
        let related = |r: &TokenRow, relation: String| Related {
            id: r.id,
            name: r.name.clone(),
            status: r.status_at(now).as_str(),
            relation,
            revoke: format!("tokenledger token revoke {} --reason incident", r.id),
            rotate: format!("tokenledger token rotate {}", r.id),
        };
        let rotation_chain = chain
            .iter()
            .filter(|r| r.id != id)
            .map(|r| {
                let relation = if r.created_at < row.created_at {
                    "rotation predecessor"
                } else {
                    "rotation successor"
                };
                related(r, relation.to_owned())
            })
            .collect();
        let (by_creator, same_creator_total) = store
            .tokens_created_by(&row.created_by, RELATED_MAX + 1)
            .await
            .map_err(unavailable("Token table"))?;
        let same_creator = by_creator
            .iter()
            .filter(|r| r.id != id)
            .take(RELATED_MAX)
            .map(|r| related(r, format!("also created by {}", row.created_by)))
            .collect();
        let mut via: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
        for ip in activity.ips.keys().take(RELATED_MAX) {
            for other in store
                .tokens_seen_from(ip, since, RELATED_MAX + 1)
                .await
                .map_err(unavailable("IP history"))?
            {
                if other != id {
                    via.entry(other).or_default().push(ip.clone());
                }
            }
        }
        let ids: Vec<Uuid> = via.keys().copied().take(RELATED_MAX).collect();
        let same_addresses = store
            .tokens_by_id(&ids)
            .await
            .map_err(unavailable("Token table"))?
            .iter()
            .map(|r| {
                related(
                    r,
                    format!("used from {} in the window", via[&r.id].join(", ")),
                )
            })
            .collect();

        // Step 5: scopes over time, along the rotation chain.
        let scopes = chain
            .iter()
            .map(|r| ScopeSpan {
                token_id: r.id,
                scopes: r.scopes.clone(),
                from: r.created_at.to_rfc3339(),
                until: match r.status_at(now) {
                    tokenledger_projections::TokenStatus::Revoked => {
                        r.revoked_at.map(Timestamp::to_rfc3339)
                    }
                    tokenledger_projections::TokenStatus::Expired => {
                        Some(r.expires_at.to_rfc3339())
                    }
                    _ => None,
                },
                admits: admits(&r.scopes),
            })
            .collect();

        Ok(Incident {
            token: TokenView::new(&row, now),
            since: since.to_rfc3339(),
            until: now.to_rfc3339(),
            from_position: from,
            to_position: head,
            revocation,
            trail: Trail {
                totals: activity.totals,
                per_day: activity.per_day.clone(),
                per_command: activity.per_command.clone(),
                denial_reasons: activity.denial_reasons.clone(),
                events: activity.lifecycle.iter().map(LifeView::from).collect(),
            },
            addresses,
            paths,
            related: RelatedTokens {
                rotation_chain,
                same_creator,
                same_creator_total: same_creator_total.saturating_sub(1),
                same_addresses,
            },
            scopes,
            checkpoint: self.point(head, Some(now), head).await?,
        })
    }

    /// The token's rotation chain, oldest first (itself included), at most
    /// [`RELATED_MAX`] each way.
    async fn rotation_chain(&self, row: &TokenRow) -> Result<Vec<TokenRow>, QueryError> {
        let store = self.store();
        let mut back = Vec::new();
        let mut from = row.rotated_from;
        while let Some(id) = from.filter(|_| back.len() < RELATED_MAX) {
            let Some(r) = store.token(id).await.map_err(unavailable("Token table"))? else {
                break;
            };
            from = r.rotated_from;
            back.push(r);
        }
        back.reverse();
        back.push(row.clone());
        let mut to = row.rotated_to;
        let mut forward = 0;
        while let Some(id) = to.filter(|_| forward < RELATED_MAX) {
            let Some(r) = store.token(id).await.map_err(unavailable("Token table"))? else {
                break;
            };
            to = r.rotated_to;
            back.push(r);
            forward += 1;
        }
        Ok(back)
    }
}
