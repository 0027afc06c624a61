//! What an audit query accepts, shared by `tokenledger audit` and `GET /api/admin/audit`, and
//! the audit tail behind `tokenledger audit --follow`.
//!
//! Each edge names its own flags or parameters in its messages; the forms accepted, and what
//! makes a query's windows empty, are decided here once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_events::{EventLog as _, StoredEvent, Timestamp, TokenEvent};
use tokenledger_projections::{AuditAction, AuditRow, audit_row};
use uuid::Uuid;

use crate::config::{DatabaseUrl, parse_duration};
use crate::store::{AuditFilter, Store, StoreError};

use super::AuditQuery;

/// The forms a time is accepted in.
pub const TIME_FORMS: &str =
    "RFC 3339 like 2026-11-24T09:30:00Z, a date like 2026-11-24, or a duration ago like 24h or 7d";

/// The forms a client address filter is accepted in.
pub const IP_FORMS: &str = "an IPv4 or IPv6 address like 203.0.113.7 or 2001:db8::1, or a CIDR block like 203.0.113.0/24 or 2001:db8::/32";

/// The longest actor or path prefix accepted: longer is no recorded value, and likely a paste.
pub const MAX_FILTER_TEXT: usize = 1000;

/// A point in time as given: an instant, or a duration before now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    At(Timestamp),
    Ago(Duration),
}

impl TimeSpec {
    /// One of [`TIME_FORMS`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<TimeSpec> {
        if let Ok(d) = parse_duration(raw) {
            return Some(TimeSpec::Ago(d));
        }
        Timestamp::parse_rfc3339(raw.trim()).ok().map(TimeSpec::At)
    }

    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::Ago(d) => now.minus(d),
        }
    }
}

/// An address (a network of one) or a CIDR block; `None` for anything else. An IPv4-mapped
/// IPv6 address is taken as the IPv4 address it maps. Host bits of a block are ignored
/// (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_ip_filter(raw: &str) -> Option<ipnet::IpNet> {
    let raw = raw.trim();
    if let Ok(addr) = raw.parse::<std::net::IpAddr>() {
        return Some(ipnet::IpNet::from(addr.to_canonical()));
    }
    raw.parse::<ipnet::IpNet>().ok().map(|net| net.trunc())
}

/// An action as the audit view names it (`API_TOKEN_REVOKED`) or by its last word
/// (`revoked`), in any case.
pub fn parse_action(raw: &str) -> Option<AuditAction> {
    let upper = raw.trim().to_ascii_uppercase();
    AuditAction::parse(&upper).or_else(|| AuditAction::parse(&format!("API_TOKEN_{upper}")))
}

/// The actions, for messages.
pub fn action_names() -> String {
    AuditAction::ALL
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query whose windows are empty by construction: refused rather than answered with
/// nothing, since it is almost always a typo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyWindow {
    /// `until` is before `since`.
    Time { since: Timestamp, until: Timestamp },
    /// `from_position` is past `to_position`.
    Positions { from: u64, to: u64 },
}

/// Whether `query`'s time and position windows can hold a row.
pub fn check_windows(query: &AuditQuery) -> Result<(), EmptyWindow> {
    if let (Some(since), Some(until)) = (query.since, query.until)
        && until < since
    {
        return Err(EmptyWindow::Time { since, until });
    }
    if let (Some(from), Some(to)) = (query.from_position, query.to_position)
        && from > to
    {
        return Err(EmptyWindow::Positions { from, to });
    }
    Ok(())
}

/// The store filter of a query's filters (its cursors and page aside).
pub(crate) fn filter_of(query: &AuditQuery) -> AuditFilter {
    AuditFilter {
        token_id: query.token_id,
        action: query.action,
        actor: query.actor.clone(),
        ip: query.ip,
        path_prefix: query.path_prefix.clone(),
        since: query.since,
        until: query.until,
        from_position: query.from_position,
        to_position: query.to_position,
        ..AuditFilter::default()
    }
}

/// One row of the tail: the event, decoded, and its audit row.
#[derive(Debug, Clone)]
pub struct TailRow {
    pub event: StoredEvent,
    pub decoded: TokenEvent,
    pub row: AuditRow,
}

/// Why the tail could not move on.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The database did not answer; nothing was consumed, so asking again is safe.
    #[error("{0}")]
    Unavailable(#[from] StoreError),
    /// An event that does not decode: asking again cannot help.
    #[error("position {position} does not decode: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// Events read per step.
const TAIL_PAGE: usize = 500;

/// Tokens whose scopes are remembered at most; past it the memory starts over (the scopes are
/// read again as needed), so a long tail of a large log stays small.
const MAX_REMEMBERED_SCOPES: usize = 100_000;

/// The audit view as the log grows: every row matching a filter, in log order, from a
/// position on. The log's positions are dense and given in commit order, so reading after
/// the last position read is exact: no row is skipped or repeated, whichever process
/// appends, and across any number of writers stopping and starting. It reads the log only
/// (see [`AuditReader`]), and writes nothing.
pub struct AuditTail {
    store: Arc<Store>,
    filter: AuditFilter,
    /// The last position read (matched or not).
    last: u64,
    /// Each token's scopes (fixed at creation), for the rows.
    scopes: HashMap<Uuid, Vec<String>>,
    /// Past `to_position` or `until`: nothing more can match.
    finished: bool,
}

/// The log opened for audit reads only: migrations applied and its head verified, as every
/// command does, but no token cache loaded (a page and a tail need nothing but the log).
pub struct AuditReader {
    store: Arc<Store>,
}

impl AuditReader {
    pub async fn open(url: &DatabaseUrl) -> Result<AuditReader, StoreError> {
        let (store, _) = super::open_verified(url).await?;
        Ok(AuditReader { store })
    }

    /// One page of the audit view (see [`super::Queries::audit`]).
    pub async fn page(&self, query: &AuditQuery) -> Result<super::AuditPage, super::QueryError> {
        super::queries::audit_page(&self.store, query).await
    }

    /// A tail of `query`'s rows after position `after` (its cursors and page aside). A
    /// `since` or `from_position` later than that starts the tail there instead.
    pub async fn tail(&self, query: &AuditQuery, after: u64) -> Result<AuditTail, StoreError> {
        let filter = filter_of(query);
        let mut last = after;
        if let Some(from) = filter.from_position {
            last = last.max(from.saturating_sub(1));
        }
        if let Some(since) = filter.since {
            last = last.max(self.store.position_at(since).await?.saturating_sub(1));
        }
        let finished = filter.to_position.is_some_and(|to| last >= to);
        Ok(AuditTail {
            store: self.store.clone(),
            filter,
            last,
            scopes: HashMap::new(),
            finished,
        })
    }
}

impl AuditTail {
    /// The last position read: the tail resumes after it.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether the tail has passed `to_position` or `until`, so no later row can match.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The matching rows among the events after [`AuditTail::last`], at most a page of
    /// events read; with none new, waits up to `patience` for one and answers none.
    /// Cancel-safe: the position moves only once every read is done.
    pub async fn next(&mut self, patience: Duration) -> Result<Vec<TailRow>, TailError> {
        if self.finished {
            return Ok(Vec::new());
        }
        let mut events = self
            .store
            .read_from(self.last, TAIL_PAGE)
            .await
            .map_err(StoreError::from)?;
        // Only the run that follows `last` with no gap. Positions are dense and visible in
        // commit order, so there is never a gap; were one seen, its far side is read again
        // rather than a position skipped.
        let run = events
            .iter()
            .zip(self.last + 1..)
            .take_while(|(e, expected)| e.position == *expected)
            .count();
        events.truncate(run);
        if events.is_empty() {
            self.store
                .wait_for(self.last + 1, patience)
                .await
                .map_err(StoreError::from)?;
            return Ok(Vec::new());
        }
        let mut decoded = Vec::with_capacity(events.len());
        for e in &events {
            decoded.push(e.decode().map_err(|err| TailError::Undecodable {
                position: e.position,
                detail: err.to_string(),
            })?);
        }
        self.load_scopes(&events, &decoded).await?;
        let mut rows = Vec::new();
        for (event, decoded) in events.into_iter().zip(decoded) {
            // Times never decrease along positions: past `until`, nothing more can match.
            if self
                .filter
                .to_position
                .is_some_and(|to| event.position > to)
                || self.filter.until.is_some_and(|t| event.recorded_at > t)
            {
                self.finished = true;
                break;
            }
            self.last = event.position;
            if let (Some(id), TokenEvent::Created(c)) = (event.stream_id.token_id(), &decoded) {
                self.scopes.insert(id, c.scopes.clone());
            }
            if !self.filter.matches(&event, &decoded) {
                continue;
            }
            let scopes = event
                .stream_id
                .token_id()
                .and_then(|id| self.scopes.get(&id))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let Some(row) = audit_row(&event, &decoded, scopes) {
                rows.push(TailRow {
                    event,
                    decoded,
                    row,
                });
            }
        }
        if self.filter.to_position.is_some_and(|to| self.last >= to) {
            self.finished = true;
        }
        Ok(rows)
    }

    /// Remember the scopes of the tokens of `events` not known yet (created before the
    /// tail's start, or forgotten).
    async fn load_scopes(
        &mut self,
        events: &[StoredEvent],
        decoded: &[TokenEvent],
    ) -> Result<(), StoreError> {
        let mut needed: Vec<Uuid> = events
            .iter()
            .zip(decoded)
            .filter(|(_, d)| !matches!(d, TokenEvent::Created(_)))
            .filter_map(|(e, _)| e.stream_id.token_id())
            .collect();
        needed.sort();
        needed.dedup();
        let mut missing: Vec<Uuid> = needed
            .iter()
            .copied()
            .filter(|id| !self.scopes.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if self.scopes.len() + missing.len() > MAX_REMEMBERED_SCOPES {
            self.scopes.clear();
            missing = needed.clone();
        }
        for row in self.store.tokens_by_id(&missing).await? {
            self.scopes.insert(row.id, row.scopes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::address_in;

    fn net(raw: &str) -> ipnet::IpNet {
        parse_ip_filter(raw).unwrap_or_else(|| panic!("{raw} parses"))
    }

    #[test]
    fn an_address_is_a_network_of_one_and_a_block_ignores_its_host_bits() {
        assert_eq!(net("203.0.113.7").to_string(), "203.0.113.7/32");
        assert_eq!(net(" 2001:db8::1 ").to_string(), "2001:db8::1/128");
        assert_eq!(net("::ffff:10.0.0.7").to_string(), "10.0.0.7/32");
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "10.0.0.300",
            "10.0.0.0/33",
            "2001:db8::/129",
            "localhost",
            "10.0.0.*",
        ] {
            assert_eq!(parse_ip_filter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_ipv4_client_matches_in_either_spelling() {
        let block = net("10.0.0.0/24");
        for inside in ["10.0.0.1", "10.0.0.255", "::ffff:10.0.0.7"] {
            assert!(address_in(&block, inside), "{inside}");
        }
        for outside in ["10.0.1.1", "2001:db8::1", "not an address", ""] {
            assert!(!address_in(&block, outside), "{outside}");
        }
        assert!(address_in(&net("::ffff:0:0/96"), "10.0.0.1"));
        assert!(address_in(&net("2001:db8::/32"), "2001:db8:ffff::1"));
    }

    #[test]
    fn times_are_instants_dates_or_durations_ago() {
        let now = Timestamp::parse_rfc3339("2026-11-24T12:00:00Z").expect("time");
        let at = |raw: &str| TimeSpec::parse(raw).map(|t| t.resolve(now).to_rfc3339());
        assert_eq!(at("24h").as_deref(), Some("2026-11-23T12:00:00.000000Z"));
        assert_eq!(
            at("2026-11-01").as_deref(),
            Some("2026-11-01T00:00:00.000000Z")
        );
        assert_eq!(
            at("2026-11-01T09:30:00+01:00").as_deref(),
            Some("2026-11-01T08:30:00.000000Z")
        );
        for bad in ["yesterday", "24", "2026-13-01", "-1h"] {
            assert_eq!(TimeSpec::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reversed_windows_are_refused_and_a_window_of_one_is_not() {
        let t = |raw: &str| Some(Timestamp::parse_rfc3339(raw).expect("time"));
        let q = |since, until, from, to| AuditQuery {
            since,
            until,
            from_position: from,
            to_position: to,
            ..AuditQuery::default()
        };
        assert!(check_windows(&q(t("2026-01-02"), t("2026-01-01"), None, None)).is_err());
        assert!(check_windows(&q(None, None, Some(9), Some(3))).is_err());
        assert!(check_windows(&q(t("2026-01-01"), t("2026-01-01"), Some(3), Some(3))).is_ok());
        assert!(check_windows(&q(None, t("2026-01-01"), Some(3), None)).is_ok());
        assert_eq!(parse_action("Revoked"), Some(AuditAction::Revoked));
        assert_eq!(parse_action("API_TOKEN_USED"), Some(AuditAction::Used));
        assert_eq!(parse_action("exploded"), None);
    }
}
