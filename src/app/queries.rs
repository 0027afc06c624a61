//! Reads that the HTTP handlers and the CLI share: audit views, timelines, the monitoring
//! list, projection status, health and chain checks. Nothing here writes an event; the only
//! write is folding lagging audit rows in, which the audit view owns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokenledger_events::{EventLog, Head, Timestamp, verify_chain};
use tokenledger_projections::{AuditAction, AuditRow, TokenRow, TokenStatus};
use uuid::Uuid;

use crate::app::token_cache::TokenCache;
use crate::app::tokens::{
    StalePage, StaleQuery, TokenPage, TokenQuery, count, stale_page, stale_selection, token_page,
};
use crate::clock::Clock;
use crate::monitoring::{Flag, Monitor, StaleParams, new_ip_window_start};
use crate::store::{Store, StoreError};

use crate::store::AuditFilter;

/// A read that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no token with id {0}")]
    NotFound(Uuid),
    /// A parameter that parsed but cannot be answered (a time in the future, a window of
    /// negative length); the text follows the parameter's name.
    #[error("{0}")]
    BadInput(String),
    /// `what` names the view for the answer; `source` is for the log only.
    #[error("{what} unavailable")]
    Unavailable {
        what: &'static str,
        #[source]
        source: StoreError,
    },
}

pub(super) fn unavailable(what: &'static str) -> impl FnOnce(StoreError) -> QueryError {
    move |source| QueryError::Unavailable { what, source }
}

/// A token as people and clients see it: no hash, times in RFC 3339, status at `now`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub environment: &'static str,
    pub scopes: Vec<String>,
    /// At the time of the answer.
    #[schema(value_type = super::tokens::StatusName)]
    pub status: TokenStatus,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub last_used_path: Option<String>,
    pub use_count: u64,
    pub denied_count: u64,
    /// The client networks it may be used from (CIDR blocks); empty: any address.
    pub allowed_ips: Vec<String>,
    /// Rotated with an overlap that ends at its successor's first use.
    pub overlap_ends_at_first_use: bool,
}

impl TokenView {
    pub fn new(row: &TokenRow, now: Timestamp) -> TokenView {
        let time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
        TokenView {
            id: row.id,
            name: row.name.clone(),
            environment: row.environment.as_str(),
            scopes: row.scopes.clone(),
            status: row.status_at(now),
            created_at: row.created_at.to_rfc3339(),
            created_by: row.created_by.clone(),
            expires_at: row.expires_at.to_rfc3339(),
            revoked_at: time(row.revoked_at),
            revoked_by: row.revoked_by.clone(),
            revoke_reason: row.revoke_reason.clone(),
            rotated_from: row.rotated_from,
            rotated_to: row.rotated_to,
            last_used_at: time(row.last_used_at),
            last_used_ip: row.last_used_ip.clone(),
            last_used_path: row.last_used_path.clone(),
            use_count: row.use_count,
            denied_count: row.denied_count,
            allowed_ips: row.allowed_ips.clone(),
            overlap_ends_at_first_use: row.until_successor_used,
        }
    }
}

/// An audit row as people and clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditView {
    pub position: u64,
    pub event_id: Uuid,
    pub action: &'static str,
    pub token_id: Uuid,
    pub actor: String,
    pub ip: Option<String>,
    pub path: Option<String>,
    pub scopes: Vec<String>,
    pub occurred_at: String,
    pub details: serde_json::Value,
}

impl From<&AuditRow> for AuditView {
    fn from(r: &AuditRow) -> Self {
        AuditView {
            position: r.position,
            event_id: r.event_id,
            action: r.action.as_str(),
            token_id: r.token_id,
            actor: r.actor.clone(),
            ip: r.ip.clone(),
            path: r.path.clone(),
            scopes: r.scopes.clone(),
            occurred_at: r.occurred_at.to_rfc3339(),
            details: r.details.clone(),
        }
    }
}

/// `db:health`: whether the database answers, and how fast.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DbHealth {
    pub backend: &'static str,
    pub reachable: bool,
    pub latency_ms: f64,
    pub head_position: Option<u64>,
}

/// `events:verify`: the chain check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ChainCheck {
    Verified {
        ok: bool,
        events: u64,
        head: String,
    },
    Broken {
        ok: bool,
        first_bad_position: u64,
        problem: String,
    },
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectionLag {
    pub name: &'static str,
    pub checkpoint: u64,
    pub lag: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatus {
    pub head: u64,
    pub projections: Vec<ProjectionLag>,
}

/// `/readyz`: the head and where each projection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub head: u64,
    pub tokens: u64,
    pub audit_logs: u64,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.tokens >= self.head && self.audit_logs >= self.head
    }
}

/// The read side of the application layer. Cheap to clone.
#[derive(Clone)]
pub struct Queries {
    store: Arc<Store>,
    cache: Arc<TokenCache>,
    clock: Arc<dyn Clock>,
}

/// The rows an audit page holds when no limit is asked for, and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Which audit rows to show: a page by position cursor. Every filter given must match (see
/// [`crate::store::AuditFilter`] for what each means).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub token_id: Option<Uuid>,
    pub action: Option<AuditAction>,
    /// Rows recorded with exactly this actor.
    pub actor: Option<String>,
    /// Rows used or denied from an address in this network.
    pub ip: Option<ipnet::IpNet>,
    /// Rows whose request path starts with this.
    pub path_prefix: Option<String>,
    /// Rows that occurred at or after this time.
    pub since: Option<Timestamp>,
    /// Rows that occurred at or before this time.
    pub until: Option<Timestamp>,
    /// Rows at this log position or later.
    pub from_position: Option<u64>,
    /// Rows at this log position or earlier.
    pub to_position: Option<u64>,
    /// Rows at positions after this one.
    pub after: Option<u64>,
    /// Rows at positions before this one.
    pub before: Option<u64>,
    pub newest_first: bool,
    /// At most this many rows ([`DEFAULT_PAGE`] when unset, clamped to [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

/// Where the next or previous page starts: `{"after": 812}` or `{"before": 13}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cursor {
    After(u64),
    Before(u64),
}

/// A page of the audit view, saying how much of the whole it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditView>,
    /// Rows that match the query, on every page.
    pub total: u64,
    pub limit: usize,
    /// The limit asked for was over [`MAX_PAGE`] and was lowered to it.
    pub limit_clamped: bool,
    pub order: &'static str,
    /// The page after this one in its order, if any.
    pub next: Option<Cursor>,
    /// The page before this one in its order, if any.
    pub prev: Option<Cursor>,
    /// Whether this page holds every matching row.
    pub complete: bool,
}

impl Queries {
    pub(crate) fn new(store: Arc<Store>, cache: Arc<TokenCache>, clock: Arc<dyn Clock>) -> Self {
        Queries {
            store,
            cache,
            clock,
        }
    }

    /// The forensic reads (as-of pages, incident reports, histories) on this node's log.
    pub fn forensics(&self) -> super::forensics::Forensics {
        super::forensics::Forensics::new(self.store.clone(), self.clock.clone())
    }

    /// Signed checkpoints, newest first, at most `limit`.
    pub async fn checkpoints(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::StoredCheckpoint>, QueryError> {
        self.store
            .signed_checkpoints(limit)
            .await
            .map_err(unavailable("Checkpoints"))
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub async fn head(&self) -> Result<Head, QueryError> {
        self.store
            .head()
            .await
            .map_err(|e| unavailable("Event log")(e.into()))
    }

    /// One page of the audit view, read from the log itself (it never lags). The limit is
    /// clamped to [`MAX_PAGE`], and the answer says so.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, QueryError> {
        audit_page(&self.store, query).await
    }

    /// One token and a page of its audit timeline.
    pub async fn timeline(
        &self,
        id: Uuid,
        query: &AuditQuery,
    ) -> Result<(TokenRow, AuditPage), QueryError> {
        let row = self
            .store
            .token(id)
            .await
            .map_err(unavailable("Token table"))?
            .ok_or(QueryError::NotFound(id))?;
        let page = self
            .audit(&AuditQuery {
                token_id: Some(id),
                ..query.clone()
            })
            .await?;
        Ok((row, page))
    }

    /// A page of the token list: status at now, counts over every token (from this node's
    /// compact entries), the page's rows read from the stored table from its cursor in id
    /// order.
    pub async fn tokens(&self, query: &TokenQuery) -> Result<TokenPage, QueryError> {
        let now = self.clock.now();
        let filter = query.filter(now);
        let (counts, total) = self
            .cache
            .with_entries(|entries| count(entries, query, now));
        let total = match total {
            Some(total) => total,
            None => self
                .store
                .count_tokens(&filter)
                .await
                .map_err(unavailable("Token table"))?,
        };
        let rows = self
            .store
            .token_page(&filter)
            .await
            .map_err(unavailable("Token table"))?;
        Ok(token_page(rows, query, counts, total, now))
    }

    /// Per token, the addresses first used in the "new IP" window at `now`. Aggregated by
    /// the database, so no use row is loaded here.
    async fn new_ips(
        &self,
        now: Timestamp,
        params: StaleParams,
    ) -> Result<HashMap<Uuid, Vec<String>>, QueryError> {
        let mut new_ips: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (token, ip) in self
            .store
            .first_seen_ips(new_ip_window_start(now, params))
            .await
            .map_err(unavailable("Audit view"))?
        {
            new_ips.entry(token).or_default().push(ip);
        }
        Ok(new_ips)
    }

    /// A page of the guide's monitoring list with these thresholds, in token id order.
    pub async fn stale(&self, query: &StaleQuery) -> Result<StalePage, QueryError> {
        let now = self.clock.now();
        let new_ips = self.new_ips(now, query.params).await?;
        let selection = self
            .cache
            .with_entries(|entries| stale_selection(entries, &new_ips, query, now));
        let ids: Vec<Uuid> = selection.page.iter().map(|(id, _)| *id).collect();
        let rows = self
            .store
            .tokens_by_id(&ids)
            .await
            .map_err(unavailable("Token table"))?;
        Ok(stale_page(selection, &rows, &new_ips, query))
    }

    /// The monitoring flags of just these tokens (the ones a page shows); a token with none
    /// is left out.
    pub async fn flags_of(
        &self,
        ids: &[Uuid],
        params: StaleParams,
    ) -> Result<HashMap<Uuid, Vec<Flag>>, QueryError> {
        let now = self.clock.now();
        let new_ips = self.new_ips(now, params).await?;
        let monitor = Monitor::new(now, params);
        Ok(self.cache.with_entries(|entries| {
            ids.iter()
                .filter_map(|id| entries.get(id))
                .map(|token| {
                    let new_ip = new_ips.get(&token.id()).is_some_and(|ips| !ips.is_empty());
                    (token.id(), monitor.flags(token, new_ip))
                })
                .filter(|(_, flags)| !flags.is_empty())
                .collect()
        }))
    }

    pub async fn db_health(&self) -> DbHealth {
        let started = Instant::now();
        let head = self.store.head().await;
        let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
        if let Err(e) = &head {
            tracing::warn!(error = %e, "db:health: database unreachable");
        }
        DbHealth {
            backend: self.store.backend(),
            reachable: head.is_ok(),
            latency_ms,
            head_position: head.ok().map(|h| h.position),
        }
    }

    /// Recompute the whole chain. A broken chain is an answer; an unreadable log is not.
    pub async fn verify_chain(&self) -> Result<ChainCheck, QueryError> {
        match verify_chain(self.store.as_ref()).await {
            Ok(report) => Ok(ChainCheck::Verified {
                ok: true,
                events: report.events,
                head: report.head.hash.to_string(),
            }),
            Err(tokenledger_events::VerifyError::Chain(e)) => Ok(ChainCheck::Broken {
                ok: false,
                first_bad_position: e.position,
                problem: e.problem.to_string(),
            }),
            Err(tokenledger_events::VerifyError::Log(e)) => Err(unavailable("Event log")(e.into())),
        }
    }

    pub async fn projection_status(&self) -> Result<ProjectionStatus, QueryError> {
        let head = self.head().await?.position;
        let memory = self.cache.position();
        let lag = |name, checkpoint: u64| ProjectionLag {
            name,
            checkpoint,
            lag: head.saturating_sub(checkpoint),
        };
        Ok(ProjectionStatus {
            head,
            projections: vec![
                // api_tokens and token_addresses are written in the append transaction, and
                // audit_logs is a view over the log: all three are always at the head.
                lag("api_tokens", head),
                lag("token_addresses", head),
                lag("audit_logs", head),
                lag("tokens (this node's memory)", memory),
            ],
        })
    }

    /// Whether the database answers and both projections have reached the head read at the
    /// start of the check, waiting up to `patience` for them.
    pub async fn readiness(&self, patience: Duration) -> Result<Readiness, QueryError> {
        let head = self.head().await?.position;
        let deadline = Instant::now() + patience;
        loop {
            let readiness = Readiness {
                head,
                tokens: self.cache.position(),
                // A view over the log: at the head by construction.
                audit_logs: head,
            };
            if readiness.ready() || Instant::now() >= deadline {
                return Ok(readiness);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// One page of the audit view over `store` (see [`Queries::audit`]); it needs nothing but the
/// log, so `tokenledger audit` answers it without loading the token cache.
pub(crate) async fn audit_page(store: &Store, query: &AuditQuery) -> Result<AuditPage, QueryError> {
    let asked = query.limit.unwrap_or(DEFAULT_PAGE).max(1);
    let limit = asked.min(MAX_PAGE);
    let filter = AuditFilter {
        after: query.after,
        before: query.before,
        newest_first: query.newest_first,
        limit,
        ..super::audit::filter_of(query)
    };
    let page = store
        .audit(&filter)
        .await
        .map_err(unavailable("Audit view"))?;
    let first = page.rows.first().map(|r| r.position);
    let last = page.rows.last().map(|r| r.position);
    // Onward continues in the page's order from its last row; back returns from its first.
    let onward = |p| {
        if query.newest_first {
            Cursor::Before(p)
        } else {
            Cursor::After(p)
        }
    };
    let back = |p| {
        if query.newest_first {
            Cursor::After(p)
        } else {
            Cursor::Before(p)
        }
    };
    let next = last.filter(|_| page.more_past_end).map(onward);
    let prev = match first {
        Some(first) => page.more_before_start.then(|| back(first)),
        // An empty page past the end: back to where the cursor pointed.
        None if page.more_before_start => match (query.after, query.before) {
            (Some(a), _) if !query.newest_first => Some(Cursor::Before(a + 1)),
            (_, Some(b)) if query.newest_first => Some(Cursor::After(b.saturating_sub(1))),
            _ => None,
        },
        None => None,
    };
    Ok(AuditPage {
        complete: page.total == page.rows.len() as u64,
        events: page.rows.iter().map(AuditView::from).collect(),
        total: page.total,
        limit,
        limit_clamped: asked > MAX_PAGE,
        order: if query.newest_first {
            "newest_first"
        } else {
            "oldest_first"
        },
        next,
        prev,
    })
}
