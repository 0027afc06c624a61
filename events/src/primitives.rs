//! The plain values every other module speaks in: times, stream ids, chain hashes, field
//! commitments, log ids and heads. A leaf: it imports nothing from this crate, so the layers
//! above can all use it without reaching into each other.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

/// A chain hash. Public: it commits to the log, not to any secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.try_into().ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A salted commitment to a secret field. Without the opening it reveals nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment(pub [u8; 32]);

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commitment({})", hex::encode(self.0))
    }
}

impl Serialize for Commitment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Commitment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        let lowercase = text.bytes().all(|c| !c.is_ascii_uppercase());
        hex::decode_to_slice(&text, &mut out)
            .ok()
            .filter(|_| lowercase)
            .ok_or_else(|| {
                serde::de::Error::custom("commitment must be 64 lowercase hex characters")
            })?;
        Ok(Commitment(out))
    }
}

/// Domain separator of [`field_commitment`]; distinct from the event hash's, so a commitment can
/// never stand in for an event hash.
pub const FIELD_DOMAIN: &[u8] = b"tokenledger/field/v1";

/// `SHA-256("tokenledger/field/v1" || field || 0x00 || salt || value)`: the only way a
/// [`Commitment`] is made. It lives beside the type so an opening checks itself without the chain.
pub fn field_commitment(field: &str, salt: &[u8; 32], value: &[u8]) -> Commitment {
    let mut h = Sha256::new();
    h.update(FIELD_DOMAIN);
    h.update(field.as_bytes());
    h.update([0u8]);
    h.update(salt);
    h.update(value);
    Commitment(h.finalize().into())
}

/// Identifies one log; bound into every hash so events cannot be spliced between logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogId(pub Uuid);

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The end of the log: its last position (0 when empty) and that event's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: Hash,
}

impl Head {
    pub const GENESIS: Head = Head {
        position: 0,
        hash: Hash::ZERO,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(preimage: &[u8]) -> [u8; 32] {
        Sha256::digest(preimage).into()
    }

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

    #[test]
    fn field_commitment_is_sha256_over_the_documented_layout() {
        let salt = [0x5a; 32];
        let value = b"hash-of-the-token";
        let mut preimage = Vec::new();
        preimage.extend_from_slice(b"tokenledger/field/v1");
        preimage.extend_from_slice(b"token_hash");
        preimage.push(0x00);
        preimage.extend_from_slice(&[0x5a; 32]);
        preimage.extend_from_slice(value);

        let commitment = field_commitment("token_hash", &salt, value);

        assert_eq!(commitment, Commitment(sha256(&preimage)));
    }

    #[test]
    fn every_input_of_a_field_commitment_changes_it() {
        let salt = [0x22; 32];
        let base = field_commitment("token_hash", &salt, b"value");
        let mut other_salt = salt;
        other_salt[0] ^= 0x01;

        assert_ne!(
            field_commitment("token_hashx", &salt, b"value"),
            base,
            "field"
        );
        assert_ne!(
            field_commitment("token_hash", &other_salt, b"value"),
            base,
            "salt"
        );
        assert_ne!(
            field_commitment("token_hash", &salt, b"valuf"),
            base,
            "value"
        );
        // The 0x00 separator keeps the field name from running into the salt.
        assert_ne!(
            field_commitment(
                "token_has",
                &[&b"h"[..], &salt[..31]]
                    .concat()
                    .try_into()
                    .expect("32 bytes"),
                &[0x22, b'v']
            ),
            field_commitment("token_hash", &salt, b"v"),
        );
    }

    #[test]
    fn a_commitment_serializes_as_64_lowercase_hex_characters_and_back() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(0xa0);
        }
        let commitment = Commitment(bytes);

        let json = serde_json::to_string(&commitment).unwrap();

        assert_eq!(json, format!("\"{}\"", hex::encode(bytes)));
        assert_eq!(json.len(), 64 + 2);
        assert!(!json.chars().any(|c| c.is_ascii_uppercase()));
        assert_eq!(
            serde_json::from_str::<Commitment>(&json).unwrap(),
            commitment
        );
    }

    #[test]
    fn a_commitment_that_is_not_64_hex_characters_is_refused() {
        let good = "ab".repeat(32);
        let refused = [
            format!("\"{}\"", "zz".repeat(32)),
            format!("\"{}\"", &good[..62]),
            format!("\"{good}00\""),
            format!("\"{}\"", &good[..63]),
            "\"\"".to_owned(),
            "42".to_owned(),
        ];
        for json in refused {
            assert!(
                serde_json::from_str::<Commitment>(&json).is_err(),
                "{json} must be refused"
            );
        }
    }
}
