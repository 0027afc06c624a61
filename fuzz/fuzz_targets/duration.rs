//! `config::parse_duration` and `parse_positive_duration`: an accepted duration is the number
//! and unit as written, within the limit, and round-trips through
//! `lifecycle::format_duration`; every duration up to the limit does; a refusal says what is
//! accepted; the positive parser differs only in refusing zero.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokenledger::config::{parse_duration, parse_positive_duration};
use tokenledger::lifecycle::format_duration;

/// The longest duration accepted: 36500d.
const MAX_SECS: u64 = 100 * 365 * 86_400;

fn round_trips(d: Duration) {
    let shown = format_duration(d);
    assert_eq!(parse_duration(&shown), Ok(d), "{d:?} shown as {shown}");
    assert_eq!(parse_positive_duration(&shown).is_ok(), !d.is_zero());
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    match parse_duration(&raw) {
        Ok(d) => {
            assert_eq!(d.subsec_nanos(), 0);
            assert!(d.as_secs() <= MAX_SECS, "{raw:?}: {d:?}");
            let written = raw.trim();
            let (number, unit) = written.split_at(written.len() - 1);
            let per = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                other => panic!("{raw:?} accepted with unit {other:?}"),
            };
            let n: u64 = number.parse().expect("digits");
            assert_eq!(d.as_secs(), n * per, "{raw:?}");
            round_trips(d);
            assert_eq!(parse_positive_duration(&raw).is_ok(), !d.is_zero());
        }
        Err(e) => {
            assert!(parse_positive_duration(&raw).is_err());
            assert!(
                e.contains("expected") || e.contains("up to 36500d"),
                "a refusal must say what is accepted: {e}"
            );
        }
    }
    if data.len() >= 8 {
        let secs = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) % (MAX_SECS + 1);
        round_trips(Duration::from_secs(secs));
    }
});
