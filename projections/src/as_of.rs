//! A token's row **as of a position**: the fold of its events up to there (DESIGN invariant 8),
//! assembled from two cheap reads instead of the whole stream: its lifecycle events (every
//! event but uses, few per token) and where its stream stood at the position, with its last
//! use. A use changes only the use fields and the stream's version and position, so the rows
//! are equal; `as_of_equals_the_fold_of_every_event` checks it at every position.

use tokenledger_events::{StoredEvent, Timestamp, TokenEvent, TokenUsed};

use crate::tokens::TokenRow;

/// Where a token's stream stood at the position: its last event there, and its last use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAt {
    /// The stream version of its last event at or before the position.
    pub version: u64,
    /// That event's log position.
    pub position: u64,
    /// Its last use at or before the position, if any: when, and what.
    pub last_use: Option<(Timestamp, TokenUsed)>,
}

/// The row as of the position that `at` describes, given the token's lifecycle events at or
/// before it (decoded, in stream order). `None` when the token did not exist yet (no
/// `TokenCreated` among them).
pub fn row_as_of(lifecycle: &[(&StoredEvent, &TokenEvent)], at: &StreamAt) -> Option<TokenRow> {
    let mut events = lifecycle.iter();
    let mut row = loop {
        let (event, decoded) = events.next()?;
        if let TokenEvent::Created(c) = decoded {
            break TokenRow::created(event, c);
        }
    };
    for (event, decoded) in events {
        row.apply(event, decoded);
    }
    // Versions are dense, and every event is a use or a lifecycle event.
    row.use_count = at.version.saturating_sub(lifecycle.len() as u64);
    if let Some((when, used)) = &at.last_use {
        row.last_used_at = Some(*when);
        row.last_used_ip = used.ip.clone();
        row.last_used_path = Some(used.path.clone());
    }
    row.version = at.version;
    row.position = at.position;
    Some(row)
}

/// The largest stream version at or below `version` that is not a lifecycle event: the
/// token's last use at or before that version (`None` if there is none).
pub fn last_use_version(version: u64, lifecycle_versions: &[u64]) -> Option<u64> {
    let mut v = version;
    while v > 0 {
        if !lifecycle_versions.contains(&v) {
            return Some(v);
        }
        v -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokenledger_events::{
        Commitment, DenyReason, Environment, Hash, StreamId, TokenCreated, TokenLeakReported,
        TokenRevoked, TokenRotated, TokenUseDenied, TokenUseDeniedSummary,
    };
    use uuid::Uuid;

    fn event(position: u64, version: u64, at: i64, decoded: &TokenEvent) -> StoredEvent {
        StoredEvent {
            position,
            stream_id: StreamId::for_token(Uuid::from_u128(1)),
            stream_version: version,
            event_id: Uuid::from_u128(u128::from(position)),
            recorded_at: Timestamp::from_micros(at),
            actor: "admin:x".to_owned(),
            event_type: decoded.event_type().to_owned(),
            schema_version: 2,
            bytes: Vec::new(),
            hash: Hash([0; 32]),
            openings: Vec::new(),
        }
    }

    fn used(ip: &str, path: &str) -> TokenEvent {
        TokenEvent::Used(TokenUsed {
            ip: Some(ip.to_owned()),
            method: "POST".to_owned(),
            path: path.to_owned(),
            command: None,
            user_agent: None,
        })
    }

    #[test]
    fn as_of_equals_the_fold_of_every_event_at_every_position() {
        let history = vec![
            TokenEvent::Created(TokenCreated {
                token_id: Uuid::from_u128(1),
                name: "ci".to_owned(),
                scopes: vec!["console:exec".to_owned()],
                environment: Environment::Live,
                expires_at: Timestamp::from_micros(1_000_000),
                created_by: "admin:x".to_owned(),
                secret_commitment: Commitment([7; 32]),
                rotated_from: None,
                allowed_ips: Vec::new(),
            }),
            used("192.0.2.1", "/a"),
            used("192.0.2.2", "/b"),
            TokenEvent::UseDenied(TokenUseDenied {
                reason: DenyReason::InsufficientScope,
                ip: Some("192.0.2.9".to_owned()),
                path: "/c".to_owned(),
            }),
            used("192.0.2.3", "/d"),
            TokenEvent::Rotated(TokenRotated {
                successor_id: Uuid::from_u128(2),
                old_expires_at: Timestamp::from_micros(500_000),
                until_successor_used: false,
            }),
            used("192.0.2.1", "/e"),
            TokenEvent::UseDeniedSummary(TokenUseDeniedSummary {
                reason: DenyReason::InsufficientScope,
                ip: Some("192.0.2.9".to_owned()),
                path: "/c".to_owned(),
                count: 4,
                first_at: Timestamp::from_micros(70),
                last_at: Timestamp::from_micros(75),
                window_secs: 60,
            }),
            TokenEvent::LeakReported(TokenLeakReported {
                url: Some("https://example.com/leak".to_owned()),
                source: Some("content".to_owned()),
                token_type: None,
                reporter: "github".to_owned(),
            }),
            TokenEvent::Revoked(TokenRevoked {
                actor: "admin:x".to_owned(),
                reason: Some("incident".to_owned()),
            }),
            TokenEvent::LeakReported(TokenLeakReported {
                url: None,
                source: None,
                token_type: None,
                reporter: "user:u".to_owned(),
            }),
        ];
        // Positions interleave with other streams: the token's events sit at odd positions.
        let stored: Vec<StoredEvent> = history
            .iter()
            .enumerate()
            .map(|(i, d)| event(2 * i as u64 + 1, i as u64 + 1, 10 * i as i64, d))
            .collect();

        for p in 0..=(2 * history.len() as u64 + 1) {
            let upto: Vec<_> = stored
                .iter()
                .zip(&history)
                .filter(|(e, _)| e.position <= p)
                .collect();
            let mut rows = HashMap::new();
            for (e, d) in &upto {
                crate::tokens::fold(&mut rows, e, d);
            }
            let folded = rows.remove(&Uuid::from_u128(1));

            let lifecycle: Vec<(&StoredEvent, &TokenEvent)> = upto
                .iter()
                .filter(|(_, d)| !matches!(d, TokenEvent::Used(_)))
                .copied()
                .collect();
            let versions: Vec<u64> = lifecycle.iter().map(|(e, _)| e.stream_version).collect();
            let last = upto.last();
            let at = StreamAt {
                version: last.map_or(0, |(e, _)| e.stream_version),
                position: last.map_or(0, |(e, _)| e.position),
                last_use: last
                    .and_then(|(e, _)| last_use_version(e.stream_version, &versions))
                    .map(|v| {
                        let (e, d) = upto[v as usize - 1];
                        let TokenEvent::Used(u) = d else {
                            panic!("version {v} is a use")
                        };
                        (e.recorded_at, u.clone())
                    }),
            };

            assert_eq!(row_as_of(&lifecycle, &at), folded, "as of position {p}");
        }
    }

    #[test]
    fn the_last_use_skips_lifecycle_versions() {
        assert_eq!(last_use_version(5, &[1, 4, 5]), Some(3));
        assert_eq!(last_use_version(1, &[1]), None);
        assert_eq!(last_use_version(0, &[]), None);
    }
}
