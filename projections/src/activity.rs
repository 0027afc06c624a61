//! What one token did in a window, for the incident report: allowed and denied uses per day,
//! per command, per client address and per path, each with first and last seen, and its
//! lifecycle events told as sentences (also what `tokenledger history` prints).
//!
//! Folded from the token's own events in the window, read along its stream: the cost is the
//! window's events of that token, never the rest of the log.

use std::collections::BTreeMap;

use serde::Serialize;
use tokenledger_events::{StoredEvent, Timestamp, TokenEvent};

use crate::tokens::TokenRow;

/// Allowed and denied uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub used: u64,
    pub denied: u64,
}

/// Uses of one address or path: counts with the first and last time seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub used: u64,
    pub denied: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl Seen {
    fn add(&mut self, used: u64, denied: u64, first: Timestamp, last: Timestamp) {
        self.used += used;
        self.denied += denied;
        self.first_seen = self.first_seen.min(first);
        self.last_seen = self.last_seen.max(last);
    }
}

/// One event of the token's life that is not a use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LifeEvent {
    pub position: u64,
    pub at: Timestamp,
    pub actor: String,
    pub event_type: String,
    /// What changed and why, as a sentence.
    pub what: String,
}

/// Uses of one token that share a UTC day, an address, a path, a method and a command: what a
/// database aggregates so that a window of a million uses crosses as a few rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseGroup {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub ip: Option<String>,
    pub path: String,
    pub method: String,
    pub command: Option<String>,
    pub count: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

/// The address a use came from, or this when none was recorded.
pub const NO_ADDRESS: &str = "(none recorded)";

/// A token's activity in a window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    pub totals: Counts,
    /// By UTC day (`2026-11-24`). A denial summary counts on the day it was recorded.
    pub per_day: BTreeMap<String, Counts>,
    /// By console command (`console db:health`) or, for other routes, method and path.
    /// Denials record only the path.
    pub per_command: BTreeMap<String, Counts>,
    pub ips: BTreeMap<String, Seen>,
    pub paths: BTreeMap<String, Seen>,
    /// Denials by reason.
    pub denial_reasons: BTreeMap<String, u64>,
    pub lifecycle: Vec<LifeEvent>,
    /// The last event folded in.
    pub position: u64,
    /// The day key of the last event folded, by day number: events come in time order, so a
    /// use costs no date formatting.
    #[serde(skip)]
    day: Option<(i64, String)>,
    /// Scratch space for a command key, so a use costs no allocation once its key is known.
    #[serde(skip)]
    key: String,
}

/// Add to the counts under `key`, allocating the key only the first time.
fn bump<'m>(map: &'m mut BTreeMap<String, Counts>, key: &str) -> &'m mut Counts {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), Counts::default());
    }
    map.get_mut(key).expect("inserted above")
}

fn day(t: Timestamp) -> String {
    t.to_rfc3339()[..10].to_owned()
}

fn seen(
    map: &mut BTreeMap<String, Seen>,
    key: &str,
    used: u64,
    denied: u64,
    first: Timestamp,
    last: Timestamp,
) {
    match map.get_mut(key) {
        Some(s) => s.add(used, denied, first, last),
        None => {
            map.insert(
                key.to_owned(),
                Seen {
                    used,
                    denied,
                    first_seen: first,
                    last_seen: last,
                },
            );
        }
    }
}

impl Activity {
    /// Fold one event of the token's stream. `before` is the token's row just before it
    /// (`None` for its `TokenCreated`), to say what a lifecycle event changed.
    pub fn fold(&mut self, event: &StoredEvent, decoded: &TokenEvent, before: Option<&TokenRow>) {
        self.position = self.position.max(event.position);
        let at = event.recorded_at;
        match decoded {
            TokenEvent::Used(u) => {
                self.totals.used += 1;
                self.on_day(at).used += 1;
                self.key.clear();
                match &u.command {
                    Some(c) => {
                        self.key.push_str("console ");
                        self.key.push_str(c);
                    }
                    None => {
                        self.key.push_str(&u.method);
                        self.key.push(' ');
                        self.key.push_str(&u.path);
                    }
                }
                bump(&mut self.per_command, &self.key).used += 1;
                seen(
                    &mut self.ips,
                    u.ip.as_deref().unwrap_or(NO_ADDRESS),
                    1,
                    0,
                    at,
                    at,
                );
                seen(&mut self.paths, &u.path, 1, 0, at, at);
            }
            TokenEvent::UseDenied(d) => {
                self.denied(at, 1, d.reason.as_str(), d.ip.as_deref(), &d.path, at, at);
                self.note(event, decoded, before);
            }
            TokenEvent::UseDeniedSummary(d) => {
                let reason = d.reason.as_str();
                self.denied(
                    at,
                    d.count,
                    reason,
                    d.ip.as_deref(),
                    &d.path,
                    d.first_at,
                    d.last_at,
                );
                self.note(event, decoded, before);
            }
            TokenEvent::Created(_)
            | TokenEvent::Revoked(_)
            | TokenEvent::Rotated(_)
            | TokenEvent::LeakReported(_) => {
                self.note(event, decoded, before);
            }
        }
    }

    /// Add a group of uses: the same as folding each of them.
    pub fn add_uses(&mut self, g: &UseGroup) {
        self.totals.used += g.count;
        self.on_day(g.first_at).used += g.count;
        self.key.clear();
        match &g.command {
            Some(c) => {
                self.key.push_str("console ");
                self.key.push_str(c);
            }
            None => {
                self.key.push_str(&g.method);
                self.key.push(' ');
                self.key.push_str(&g.path);
            }
        }
        bump(&mut self.per_command, &self.key).used += g.count;
        let ip = g.ip.as_deref().unwrap_or(NO_ADDRESS);
        seen(&mut self.ips, ip, g.count, 0, g.first_at, g.last_at);
        seen(&mut self.paths, &g.path, g.count, 0, g.first_at, g.last_at);
    }

    /// The counts of `at`'s UTC day.
    fn on_day(&mut self, at: Timestamp) -> &mut Counts {
        let number = at.as_micros().div_euclid(86_400_000_000);
        let key = match &mut self.day {
            Some((n, key)) if *n == number => key,
            slot => &mut slot.insert((number, day(at))).1,
        };
        bump(&mut self.per_day, key)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one denial's fields, named at the call"
    )]
    fn denied(
        &mut self,
        at: Timestamp,
        count: u64,
        reason: &str,
        ip: Option<&str>,
        path: &str,
        first: Timestamp,
        last: Timestamp,
    ) {
        self.totals.denied += count;
        self.on_day(at).denied += count;
        bump(&mut self.per_command, path).denied += count;
        *self.denial_reasons.entry(reason.to_owned()).or_default() += count;
        seen(
            &mut self.ips,
            ip.unwrap_or(NO_ADDRESS),
            0,
            count,
            first,
            last,
        );
        seen(&mut self.paths, path, 0, count, first, last);
    }

    fn note(&mut self, event: &StoredEvent, decoded: &TokenEvent, before: Option<&TokenRow>) {
        self.lifecycle.push(LifeEvent {
            position: event.position,
            at: event.recorded_at,
            actor: event.actor.clone(),
            event_type: event.event_type.clone(),
            what: narrate(decoded, before),
        });
    }
}

/// What an event changed about the token and why, as a sentence. `before` is the row just
/// before it.
pub fn narrate(decoded: &TokenEvent, before: Option<&TokenRow>) -> String {
    let status = |row: Option<&TokenRow>| {
        row.map_or("new".to_owned(), |r| {
            if r.revoked_at.is_some() {
                "revoked".to_owned()
            } else if r.rotated_to.is_some() {
                "rotated".to_owned()
            } else {
                "active".to_owned()
            }
        })
    };
    match decoded {
        TokenEvent::Created(c) => {
            let mut s = format!(
                "created \"{}\" ({}) with scopes [{}], expiring {}",
                c.name,
                c.environment.as_str(),
                c.scopes.join(", "),
                c.expires_at.to_rfc3339()
            );
            if let Some(from) = c.rotated_from {
                s.push_str(&format!("; the successor of {from}"));
            }
            if !c.allowed_ips.is_empty() {
                s.push_str(&format!("; usable only from {}", c.allowed_ips.join(", ")));
            }
            s
        }
        TokenEvent::Used(u) => format!(
            "used: {} {} from {}",
            u.method,
            u.command.as_deref().unwrap_or(&u.path),
            u.ip.as_deref().unwrap_or(NO_ADDRESS)
        ),
        TokenEvent::UseDenied(d) => format!(
            "use denied ({}) on {} from {}",
            d.reason.as_str(),
            d.path,
            d.ip.as_deref().unwrap_or(NO_ADDRESS)
        ),
        TokenEvent::UseDeniedSummary(d) => format!(
            "{} more uses denied ({}) on {} from {} between {} and {}",
            d.count,
            d.reason.as_str(),
            d.path,
            d.ip.as_deref().unwrap_or(NO_ADDRESS),
            d.first_at.to_rfc3339(),
            d.last_at.to_rfc3339()
        ),
        TokenEvent::Revoked(r) => format!(
            "status {} -> revoked by {}; reason: {}",
            status(before),
            r.actor,
            r.reason.as_deref().unwrap_or("none given")
        ),
        TokenEvent::Rotated(r) => {
            let expiry = match before {
                Some(b) if r.old_expires_at < b.expires_at => format!(
                    "; its expiry moves from {} to {} (the grace period)",
                    b.expires_at.to_rfc3339(),
                    r.old_expires_at.to_rfc3339()
                ),
                _ => String::new(),
            };
            let overlap = if r.until_successor_used {
                "; it works until the successor's first use at the latest"
            } else {
                ""
            };
            format!(
                "status {} -> rotated; successor {}{expiry}{overlap}",
                status(before),
                r.successor_id
            )
        }
        // The place and kinds are caller text: whoever shows this sentence escapes it.
        TokenEvent::LeakReported(l) => {
            let mut s = format!("reported leaked by {}", l.reporter);
            if let Some(url) = &l.url {
                s.push_str(&format!(" at {url}"));
            }
            let kinds: Vec<&str> = [l.source.as_deref(), l.token_type.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if !kinds.is_empty() {
                s.push_str(&format!(" ({})", kinds.join(", ")));
            }
            s.push_str(&format!("; status {}", status(before)));
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::{Hash, StreamId, TokenUsed};
    use uuid::Uuid;

    const DAY: i64 = 86_400_000_000;

    fn used(at: i64, ip: &str, path: &str, command: Option<&str>) -> (StoredEvent, TokenEvent) {
        let event = StoredEvent {
            position: 1,
            stream_id: StreamId::for_token(Uuid::from_u128(1)),
            stream_version: 2,
            event_id: Uuid::from_u128(at as u128),
            recorded_at: Timestamp::from_micros(at),
            actor: "token:x".to_owned(),
            event_type: "TokenUsed".to_owned(),
            schema_version: 2,
            bytes: Vec::new(),
            hash: Hash([0; 32]),
            openings: Vec::new(),
        };
        let decoded = TokenEvent::Used(TokenUsed {
            ip: Some(ip.to_owned()),
            method: "POST".to_owned(),
            path: path.to_owned(),
            command: command.map(str::to_owned),
            user_agent: None,
        });
        (event, decoded)
    }

    #[test]
    fn adding_groups_of_uses_equals_folding_each_use() {
        let uses = [
            (5, "192.0.2.1", "/api/admin/console", Some("ping")),
            (9, "192.0.2.1", "/api/admin/console", Some("ping")),
            (DAY + 3, "192.0.2.1", "/api/admin/console", Some("ping")),
            (DAY + 4, "192.0.2.2", "/v1/verify", None),
            (DAY + 8, "192.0.2.2", "/v1/verify", None),
        ];
        let mut folded = Activity::default();
        for (at, ip, path, command) in uses {
            let (e, d) = used(at, ip, path, command);
            folded.fold(&e, &d, None);
        }
        let mut grouped: std::collections::BTreeMap<(i64, &str, &str, Option<&str>), UseGroup> =
            std::collections::BTreeMap::new();
        for (at, ip, path, command) in uses {
            let g = grouped
                .entry((at.div_euclid(DAY), ip, path, command))
                .or_insert(UseGroup {
                    day: at.div_euclid(DAY),
                    ip: Some(ip.to_owned()),
                    path: path.to_owned(),
                    method: "POST".to_owned(),
                    command: command.map(str::to_owned),
                    count: 0,
                    first_at: Timestamp::from_micros(at),
                    last_at: Timestamp::from_micros(at),
                });
            g.count += 1;
            g.last_at = Timestamp::from_micros(at);
        }
        let mut added = Activity::default();
        for g in grouped.values() {
            added.add_uses(g);
        }
        assert_eq!(
            (
                added.totals,
                &added.per_day,
                &added.per_command,
                &added.ips,
                &added.paths
            ),
            (
                folded.totals,
                &folded.per_day,
                &folded.per_command,
                &folded.ips,
                &folded.paths
            )
        );
    }
}
