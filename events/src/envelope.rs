//! What the log adds around an event: where it sits, which stream it belongs to, who caused it
//! and when. Secret openings travel beside the envelope and are redacted from every `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::{Commitment, Hash};
use crate::codec::{self, CodecError};
use crate::vocabulary::TokenEvent;

/// Microseconds since the Unix epoch, UTC. Integer time keeps canonical bytes exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// `self + micros`, saturating instead of overflowing on absurd inputs.
    pub const fn plus_micros(self, micros: i64) -> Self {
        Timestamp(self.0.saturating_add(micros))
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        self.plus_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// `self - d`, saturating.
    pub fn minus(self, d: std::time::Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-24T20:21:00.000000Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Parse `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
        let bad = || {
            format!(
                "{text:?} is not a time; expected RFC 3339 like 2026-11-24T09:30:00Z or a date like 2026-11-24"
            )
        };
        let b = text.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
            let part = text.get(r).ok_or_else(bad)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return Err(bad());
        }
        let mut secs = days_from_civil(y, mo, d) * 86_400;
        let mut micros = 0;
        if b.len() > 10 {
            if !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b.len() < 20 {
                return Err(bad());
            }
            if b[13] != b':' || b[16] != b':' {
                return Err(bad());
            }
            let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || s > 60 {
                return Err(bad());
            }
            secs += h * 3600 + mi * 60 + s;
            let mut i = 19;
            if b[i] == b'.' {
                let start = i + 1;
                i = start;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == start {
                    return Err(bad());
                }
                let digits = &text[start..i.min(start + 6)];
                micros =
                    digits.parse::<i64>().map_err(|_| bad())? * 10_i64.pow(6 - digits.len() as u32);
            }
            match &text[i..] {
                "Z" | "z" => {}
                offset
                    if offset.len() == 6
                        && (offset.starts_with('+') || offset.starts_with('-')) =>
                {
                    if offset.as_bytes()[3] != b':' {
                        return Err(bad());
                    }
                    let oh = num(i + 1..i + 3)?;
                    let om = num(i + 4..i + 6)?;
                    let sign = if offset.starts_with('+') { 1 } else { -1 };
                    secs -= sign * (oh * 3600 + om * 60);
                }
                _ => return Err(bad()),
            }
        }
        Ok(Timestamp(secs * 1_000_000 + micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The stream an event belongs to: one per token (`token-<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl TryFrom<String> for StreamId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        StreamId::new(raw)
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.0
    }
}

impl StreamId {
    pub fn for_token(token_id: Uuid) -> Self {
        StreamId(format!("token-{token_id}"))
    }

    /// A stream id from stored text; any non-empty string up to 200 bytes is accepted.
    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > 200 {
            return Err(format!(
                "stream id must be 1 to 200 bytes, got {} bytes",
                raw.len()
            ));
        }
        Ok(StreamId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token id of a `token-<uuid>` stream.
    pub fn token_id(&self) -> Option<Uuid> {
        self.0
            .strip_prefix("token-")
            .and_then(|id| Uuid::parse_str(id).ok())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret behind a field commitment: `(field, salt, value)`. Stored only in the openings
/// table, in the same transaction as its event; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Opening {
    pub field: String,
    pub salt: [u8; 32],
    pub value: Vec<u8>,
}

impl Opening {
    pub fn commitment(&self) -> Commitment {
        crate::chain::field_commitment(&self.field, &self.salt, &self.value)
    }
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("field", &self.field)
            .field("salt", &"<redacted>")
            .field("value", &"<redacted>")
            .finish()
    }
}

/// An event as the log holds it: the envelope columns, the exact canonical bytes, the chain hash
/// and any openings.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: u64,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub event_type: String,
    pub schema_version: u32,
    /// The canonical bytes the chain hash covers, exactly as stored.
    pub bytes: Vec<u8>,
    pub hash: Hash,
    pub openings: Vec<Opening>,
}

impl StoredEvent {
    /// Decode (and upcast) the event from its stored bytes.
    pub fn decode(&self) -> Result<TokenEvent, CodecError> {
        codec::decode(&self.bytes).map(|decoded| decoded.event)
    }

    pub fn opening(&self, field: &str) -> Option<&Opening> {
        self.openings.iter().find(|o| o.field == field)
    }
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredEvent")
            .field("position", &self.position)
            .field("stream_id", &self.stream_id)
            .field("stream_version", &self.stream_version)
            .field("event_id", &self.event_id)
            .field("recorded_at", &self.recorded_at)
            .field("actor", &self.actor)
            .field("event_type", &self.event_type)
            .field("schema_version", &self.schema_version)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("hash", &self.hash)
            .field("openings", &self.openings)
            .finish()
    }
}

#[cfg(test)]
mod time_tests {
    use super::Timestamp;

    #[test]
    fn rfc3339_round_trips_and_matches_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        let t = Timestamp::parse_rfc3339("2024-02-29T23:59:58.5Z").expect("leap day");
        assert_eq!(t.as_micros(), 1_709_251_198_500_000);
        assert_eq!(t.to_rfc3339(), "2024-02-29T23:59:58.500000Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T10:00:00+02:00"),
            Timestamp::parse_rfc3339("2026-11-24T08:00:00Z")
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24").map(|t| t.to_rfc3339()),
            Ok("2026-11-24T00:00:00.000000Z".into())
        );
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn malformed_times_are_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-11-24T25:00:00Z",
            "2026-11-24T10:00:00",
            "2026-11-24T10:00:00.Z",
            "２０２６-11-24",
        ] {
            let err = Timestamp::parse_rfc3339(bad).expect_err(bad);
            assert!(err.contains("expected RFC 3339"), "{bad}: {err}");
        }
    }
}
