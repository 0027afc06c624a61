//! Token lists a page at a time: the token list (the admin API, the page, `token list`) and
//! the monitoring list, both in id order (UUIDv7, so creation order) and resumed from an
//! opaque cursor this module issues and checks. The pure halves live here: the filter a page
//! is read with, counts over the in-memory compact entries (read where they lie), choosing
//! the monitoring list's page, and assembling the answer from the stored rows
//! [`crate::app::Queries`] reads for it. A page costs its own rows, never a copy of the table.
//! Nothing here touches the store or decides anything about a token.

use std::collections::{BinaryHeap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use tokenledger_events::{Environment, Timestamp};
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::app::queries::TokenView;
use crate::app::token_cache::Entries;
use crate::monitoring::{Flag, Flagged, Monitor, StaleParams};
use crate::scope::Scope;
use crate::store::TokenFilter;
use crate::token_entry::TokenEntry;

/// The tokens a page holds when no limit is asked for, and at most.
pub const DEFAULT_TOKEN_PAGE: usize = 50;
pub const MAX_TOKEN_PAGE: usize = 1000;

/// Where a page of tokens resumes: after this token id. Callers see only
/// [`TokenCursor::encode`]'s text, `t1.` and base64url of the id and a CRC-32 of it: the
/// tag leaves room for another form later, and the checksum tells a cursor we issued from a
/// garbled or hand-made one. It is no secret and needs none: any id is a valid place to
/// resume, so there is nothing to forge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCursor(Uuid);

/// A cursor that [`TokenCursor::encode`] did not make. Its text follows the parameter's name
/// and never includes the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor this service issued; use the \"next\" value of a previous page")]
pub struct NotACursor;

impl TokenCursor {
    const TAG: &'static str = "t1.";
    /// Binds the checksum to this use, so other base64 of the right length is refused.
    const DOMAIN: &'static [u8] = b"tokenledger/token-cursor/v1";

    /// The cursor that resumes after `id`.
    pub fn after(id: Uuid) -> TokenCursor {
        TokenCursor(id)
    }

    fn checksum(id: &Uuid) -> [u8; 4] {
        let mut crc = crc32fast::Hasher::new();
        crc.update(Self::DOMAIN);
        crc.update(id.as_bytes());
        crc.finalize().to_be_bytes()
    }

    /// The id the next page starts after.
    pub fn id(self) -> Uuid {
        self.0
    }

    pub fn encode(self) -> String {
        let mut bytes = [0u8; 20];
        bytes[..16].copy_from_slice(self.0.as_bytes());
        bytes[16..].copy_from_slice(&Self::checksum(&self.0));
        format!("{}{}", Self::TAG, URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(raw: &str) -> Result<TokenCursor, NotACursor> {
        let body = raw.trim().strip_prefix(Self::TAG).ok_or(NotACursor)?;
        // 20 bytes are 27 characters; anything longer is not worth decoding.
        if body.len() != 27 {
            return Err(NotACursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| NotACursor)?;
        let (id, sum) = bytes.split_at_checked(16).ok_or(NotACursor)?;
        let id = Uuid::from_slice(id).map_err(|_| NotACursor)?;
        if sum != Self::checksum(&id) {
            return Err(NotACursor);
        }
        Ok(TokenCursor(id))
    }
}

/// Every status, in the order lists and counts show them.
pub const STATUSES: [TokenStatus; 4] = [
    TokenStatus::Active,
    TokenStatus::RotatedInGrace,
    TokenStatus::Expired,
    TokenStatus::Revoked,
];

/// A status by its name (`active`, `rotated_in_grace`, `expired`, `revoked`).
pub fn parse_status(raw: &str) -> Option<TokenStatus> {
    STATUSES.into_iter().find(|s| s.as_str() == raw)
}

/// A token status in the OpenAPI document: one of [`STATUSES`] by name.
pub struct StatusName;

impl utoipa::PartialSchema for StatusName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(STATUSES.map(TokenStatus::as_str)))
            .into()
    }
}

impl utoipa::ToSchema for StatusName {}

/// `active, rotated_in_grace, expired, revoked`: for messages that list what is accepted.
pub fn status_names() -> String {
    STATUSES.map(TokenStatus::as_str).join(", ")
}

/// An environment by its name (`live`, `test`).
pub fn parse_environment(raw: &str) -> Option<Environment> {
    [Environment::Live, Environment::Test]
        .into_iter()
        .find(|e| e.as_str() == raw)
}

/// The longest name prefix worth asking for: a name is at most this long.
pub const MAX_NAME_PREFIX: usize = 100;

/// The limit to use, and whether the one asked for was lowered to [`MAX_TOKEN_PAGE`].
pub(crate) fn clamp(asked: Option<usize>) -> (usize, bool) {
    let asked = asked.unwrap_or(DEFAULT_TOKEN_PAGE).max(1);
    (asked.min(MAX_TOKEN_PAGE), asked > MAX_TOKEN_PAGE)
}

/// Which tokens to list: every filter given must match. Status is the status at the time
/// the page is read; `scope` matches tokens that hold that very scope (an `admin` token is
/// not listed under `logs:read`); `name_prefix` is case-sensitive.
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    pub status: Option<TokenStatus>,
    pub scope: Option<Scope>,
    pub environment: Option<Environment>,
    pub name_prefix: Option<String>,
    /// Tokens after this one (the `next` of an earlier page).
    pub after: Option<TokenCursor>,
    /// At most this many ([`DEFAULT_TOKEN_PAGE`] when unset, clamped to [`MAX_TOKEN_PAGE`]).
    pub limit: Option<usize>,
}

impl TokenQuery {
    /// Whether `token` matches every filter but the name prefix (its entry has no name).
    fn matches(&self, token: &TokenEntry, status: TokenStatus) -> bool {
        self.status.is_none_or(|s| s == status)
            && self.scope.is_none_or(|s| token.holds(s))
            && self.environment.is_none_or(|e| e == token.environment())
    }

    /// The stored rows to read for this page at `now`: one more than the limit, which tells
    /// whether another page follows.
    pub(crate) fn filter(&self, now: Timestamp) -> TokenFilter<'_> {
        TokenFilter {
            after: self.after.map(|c| c.0),
            status: self.status,
            now,
            scope: self.scope,
            environment: self.environment,
            name_prefix: self.name_prefix.as_deref(),
            limit: clamp(self.limit).0 + 1,
        }
    }

    /// Whether any filter is set (the cursor and limit aside).
    pub fn is_filtered(&self) -> bool {
        self.status.is_some()
            || self.scope.is_some()
            || self.environment.is_some()
            || self.name_prefix.is_some()
    }
}

/// Tokens by status, over every token whatever the filters: the page header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    pub active: u64,
    pub rotated_in_grace: u64,
    pub expired: u64,
    pub revoked: u64,
}

impl StatusCounts {
    fn count(&mut self, status: TokenStatus) {
        *match status {
            TokenStatus::Active => &mut self.active,
            TokenStatus::RotatedInGrace => &mut self.rotated_in_grace,
            TokenStatus::Expired => &mut self.expired,
            TokenStatus::Revoked => &mut self.revoked,
        } += 1;
    }

    pub fn of(&self, status: TokenStatus) -> u64 {
        match status {
            TokenStatus::Active => self.active,
            TokenStatus::RotatedInGrace => self.rotated_in_grace,
            TokenStatus::Expired => self.expired,
            TokenStatus::Revoked => self.revoked,
        }
    }

    pub fn all(&self) -> u64 {
        self.active + self.rotated_in_grace + self.expired + self.revoked
    }
}

/// A page of tokens, saying how much of the whole it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPage {
    pub tokens: Vec<TokenView>,
    /// Tokens that match the filters, on every page.
    pub total: u64,
    pub counts: StatusCounts,
    /// The cursor of the page after this one, if any.
    pub next: Option<String>,
    pub limit: usize,
    /// The limit asked for was over [`MAX_TOKEN_PAGE`] and was lowered to it.
    pub limit_clamped: bool,
    /// Whether this page holds every matching token.
    pub complete: bool,
}

/// Counts by status over every entry at `now`, and how many match `query`; the total is
/// `None` when a name prefix is asked for, which only the stored rows can answer. One pass,
/// nothing copied.
pub(crate) fn count(
    entries: &Entries,
    query: &TokenQuery,
    now: Timestamp,
) -> (StatusCounts, Option<u64>) {
    let mut counts = StatusCounts::default();
    let mut total = 0u64;
    for token in entries.iter() {
        let status = token.status_at(now);
        counts.count(status);
        total += u64::from(query.matches(token, status));
    }
    (counts, query.name_prefix.is_none().then_some(total))
}

/// The page answering `query`, from `rows` as read with [`TokenQuery::filter`] (up to one
/// more than the limit, in id order).
pub(crate) fn token_page(
    mut rows: Vec<TokenRow>,
    query: &TokenQuery,
    counts: StatusCounts,
    total: u64,
    now: Timestamp,
) -> TokenPage {
    let (limit, limit_clamped) = clamp(query.limit);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let tokens: Vec<TokenView> = rows.iter().map(|row| TokenView::new(row, now)).collect();
    let next = tokens
        .last()
        .filter(|_| more)
        .map(|v| TokenCursor(v.id).encode());
    TokenPage {
        complete: tokens.len() as u64 == total,
        tokens,
        total,
        counts,
        next,
        limit,
        limit_clamped,
    }
}

/// Which page of the monitoring list to read, with which thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleQuery {
    pub params: StaleParams,
    /// Flagged tokens after this one (the `next` of an earlier page).
    pub after: Option<TokenCursor>,
    /// At most this many ([`DEFAULT_TOKEN_PAGE`] when unset, clamped to [`MAX_TOKEN_PAGE`]).
    pub limit: Option<usize>,
}

/// A page of the monitoring list, in token id order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StalePage {
    pub tokens: Vec<Flagged>,
    /// Flagged tokens, on every page.
    pub total: u64,
    pub next: Option<String>,
    pub limit: usize,
    pub limit_clamped: bool,
    pub complete: bool,
}

/// The monitoring list's page chosen from the entries: the flagged tokens after the cursor,
/// in id order, with their flags.
pub(crate) struct StaleSelection {
    /// Flagged tokens, on every page.
    pub(crate) total: u64,
    pub(crate) page: Vec<(Uuid, Vec<Flag>)>,
    pub(crate) more: bool,
}

/// Choose a page of the monitoring list over `entries` at `now`. `new_ips` holds, per token,
/// the addresses first used in the window. One pass: the page's ids are kept in a heap of
/// at most limit + 1, so nothing grows with the table.
pub(crate) fn stale_selection(
    entries: &Entries,
    new_ips: &HashMap<Uuid, Vec<String>>,
    query: &StaleQuery,
    now: Timestamp,
) -> StaleSelection {
    let (limit, _) = clamp(query.limit);
    let monitor = Monitor::new(now, query.params);
    let after = query.after.map(|c| c.0);
    let mut total = 0u64;
    // The smallest ids seen so far, largest on top.
    let mut page: BinaryHeap<Uuid> = BinaryHeap::with_capacity(limit + 1);
    for token in entries.iter() {
        let new_ip = new_ips.get(&token.id()).is_some_and(|ips| !ips.is_empty());
        if monitor.flags(token, new_ip).is_empty() {
            continue;
        }
        total += 1;
        if after.is_some_and(|a| token.id() <= a) {
            continue;
        }
        if page.len() <= limit {
            page.push(token.id());
        } else if page.peek().is_some_and(|top| token.id() < *top) {
            page.pop();
            page.push(token.id());
        }
    }
    let more = page.len() > limit;
    let mut ids = page.into_sorted_vec();
    ids.truncate(limit);
    let page = ids
        .into_iter()
        .filter_map(|id| {
            let token = entries.get(&id)?;
            let new_ip = new_ips.get(&id).is_some_and(|ips| !ips.is_empty());
            Some((id, monitor.flags(token, new_ip)))
        })
        .collect();
    StaleSelection { total, page, more }
}

/// The page of the monitoring list: `selection` with the stored rows of its tokens (for
/// their names), in id order.
pub(crate) fn stale_page(
    selection: StaleSelection,
    rows: &[TokenRow],
    new_ips: &HashMap<Uuid, Vec<String>>,
    query: &StaleQuery,
) -> StalePage {
    let (limit, limit_clamped) = clamp(query.limit);
    let rows: HashMap<Uuid, &TokenRow> = rows.iter().map(|r| (r.id, r)).collect();
    let tokens: Vec<Flagged> = selection
        .page
        .into_iter()
        .filter_map(|(id, flags)| {
            let ips = new_ips.get(&id).cloned().unwrap_or_default();
            rows.get(&id).map(|row| Flagged::new(row, flags, ips))
        })
        .collect();
    let next = tokens
        .last()
        .filter(|_| selection.more)
        .map(|f| TokenCursor(f.token_id).encode());
    StalePage {
        complete: tokens.len() as u64 == selection.total,
        tokens,
        total: selection.total,
        next,
        limit,
        limit_clamped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_a_changed_one_is_refused() {
        let id = Uuid::now_v7();
        let text = TokenCursor::after(id).encode();
        assert!(text.starts_with("t1.") && text.len() == 30, "{text}");
        assert_eq!(TokenCursor::parse(&text), Ok(TokenCursor(id)));
        // Every single-character change is caught.
        for (i, c) in text.char_indices() {
            let other = if c == 'A' { 'B' } else { 'A' };
            let mut changed = text.clone();
            changed.replace_range(i..i + 1, &other.to_string());
            assert_eq!(TokenCursor::parse(&changed), Err(NotACursor), "{changed}");
        }
        for raw in [
            "",
            "t1.",
            "t2.",
            &id.to_string(),
            &text[..29],
            &format!("{text}A"),
        ] {
            assert_eq!(TokenCursor::parse(raw), Err(NotACursor), "{raw:?}");
        }
        let plain = format!("t1.{}", URL_SAFE_NO_PAD.encode([0u8; 20]));
        assert_eq!(TokenCursor::parse(&plain), Err(NotACursor));
    }

    #[test]
    fn limits_default_to_fifty_and_are_clamped_to_a_thousand() {
        assert_eq!(clamp(None), (50, false));
        assert_eq!(clamp(Some(0)), (1, false));
        assert_eq!(clamp(Some(1000)), (1000, false));
        assert_eq!(clamp(Some(1001)), (1000, true));
    }
}
