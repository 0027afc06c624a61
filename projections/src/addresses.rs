//! Where each token was used from: per (token, client address), the first and last use and how
//! many. Kept beside the token table, so "a new address in the last 24 hours" is answered from
//! one row per address rather than from every recorded use.

use std::collections::BTreeMap;

use tokenledger_events::{StoredEvent, Timestamp, TokenEvent};
use uuid::Uuid;

/// The uses of one token from one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressUse {
    pub token_id: Uuid,
    pub ip: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub uses: u64,
}

impl AddressUse {
    /// Combine with `other`, the same (token, address) seen elsewhere in the log: what a store
    /// does when it upserts a group's aggregate onto the stored row.
    pub fn merge(&mut self, other: &AddressUse) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.uses = self.uses.saturating_add(other.uses);
    }
}

/// The address uses of some events, keyed by (token, address) so that the result is in a
/// deterministic order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressUses(BTreeMap<(Uuid, String), AddressUse>);

impl AddressUses {
    /// Fold one event: an allowed use with a known address counts; nothing else does.
    pub fn fold(&mut self, event: &StoredEvent, decoded: &TokenEvent) {
        let (Some(token_id), TokenEvent::Used(used)) = (event.stream_id.token_id(), decoded) else {
            return;
        };
        let Some(ip) = &used.ip else {
            return;
        };
        let seen = AddressUse {
            token_id,
            ip: ip.clone(),
            first_seen: event.recorded_at,
            last_seen: event.recorded_at,
            uses: 1,
        };
        match self.0.get_mut(&(token_id, ip.clone())) {
            Some(known) => known.merge(&seen),
            None => {
                self.0.insert((token_id, ip.clone()), seen);
            }
        }
    }

    /// Every (token, address), in token then address order.
    pub fn iter(&self) -> impl Iterator<Item = &AddressUse> {
        self.0.values()
    }

    pub fn into_vec(self) -> Vec<AddressUse> {
        self.0.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::{StreamId, TokenUsed};

    fn used(token: u128, ip: Option<&str>, at: i64) -> (StoredEvent, TokenEvent) {
        let event = StoredEvent {
            position: 1,
            stream_id: StreamId::for_token(Uuid::from_u128(token)),
            stream_version: 2,
            event_id: Uuid::from_u128(at as u128),
            recorded_at: Timestamp::from_micros(at),
            actor: "token:x".to_owned(),
            event_type: "TokenUsed".to_owned(),
            schema_version: 2,
            bytes: Vec::new(),
            hash: tokenledger_events::Hash([0; 32]),
            openings: Vec::new(),
        };
        let decoded = TokenEvent::Used(TokenUsed {
            ip: ip.map(str::to_owned),
            method: "POST".to_owned(),
            path: "/v1/verify".to_owned(),
            command: None,
            user_agent: None,
        });
        (event, decoded)
    }

    #[test]
    fn uses_are_counted_per_token_and_address_with_first_and_last_seen() {
        let mut uses = AddressUses::default();
        for (token, ip, at) in [
            (1, Some("10.0.0.1"), 30),
            (1, Some("10.0.0.1"), 10),
            (1, Some("10.0.0.2"), 20),
            (2, Some("10.0.0.1"), 40),
            (2, None, 50),
        ] {
            let (e, d) = used(token, ip, at);
            uses.fold(&e, &d);
        }

        let rows = uses.into_vec();

        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].ip.as_str(),
                rows[0].first_seen,
                rows[0].last_seen,
                rows[0].uses
            ),
            (
                "10.0.0.1",
                Timestamp::from_micros(10),
                Timestamp::from_micros(30),
                2
            )
        );
        assert_eq!((rows[1].ip.as_str(), rows[1].uses), ("10.0.0.2", 1));
        assert_eq!((rows[2].token_id, rows[2].uses), (Uuid::from_u128(2), 1));
    }

    #[test]
    fn merging_two_parts_of_the_log_equals_folding_them_together() {
        let events: Vec<_> = (0..6)
            .map(|i| used(1, Some("192.0.2.1"), 100 - i * 7))
            .collect();
        let mut whole = AddressUses::default();
        let (mut left, mut right) = (AddressUses::default(), AddressUses::default());
        for (i, (e, d)) in events.iter().enumerate() {
            whole.fold(e, d);
            if i < 2 {
                left.fold(e, d)
            } else {
                right.fold(e, d)
            }
        }

        let mut merged = left.into_vec().remove(0);
        merged.merge(&right.into_vec()[0]);

        assert_eq!(merged, whole.into_vec().remove(0));
    }
}
