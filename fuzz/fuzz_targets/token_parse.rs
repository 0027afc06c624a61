//! `token::parse` accepts exactly the tokens `token::mint_from` makes, with their environment
//! and hash; a token with any one character changed, dropped or added is refused; and a
//! refusal never echoes the input.
//!
//! Input: a token, or a prefix line and a token (`acme\nacme_live_...`) to parse it under a
//! prefix other than `tl`. The same bytes also pick a secret to mint and a change to make.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenledger::token::{self, CHECKSUM_LEN, Environment, SECRET_LEN, TokenPrefix};
use tokenledger_fuzz::assert_no_echo;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The big-endian 256-bit number that base62 `digits` spell, if it fits.
fn base62_decode(digits: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for &digit in digits {
        let mut carry = ALPHABET.iter().position(|&a| a == digit)? as u32;
        for byte in out.iter_mut().rev() {
            let acc = u32::from(*byte) * 62 + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// The token `mint_from` makes with the environment and secret digits `raw` carries, when
/// `raw` has a token's shape (whatever its checksum): `parse` must accept `raw` exactly when
/// it is this token.
fn minted_twin(raw: &str, prefix: &TokenPrefix) -> Option<(Environment, String)> {
    let rest = raw.strip_prefix(prefix.as_str())?.strip_prefix('_')?;
    let (environment, body) = if let Some(b) = rest.strip_prefix("live_") {
        (Environment::Live, b)
    } else {
        (Environment::Test, rest.strip_prefix("test_")?)
    };
    if body.len() != SECRET_LEN + CHECKSUM_LEN {
        return None;
    }
    let secret = base62_decode(body.get(..SECRET_LEN)?.as_bytes())?;
    let minted = token::mint_from(prefix, environment, &secret);
    Some((environment, minted.expose().to_owned()))
}

fn refusal(raw: &[u8], prefix: &TokenPrefix) -> Option<String> {
    token::parse(&String::from_utf8_lossy(raw), prefix)
        .err()
        .map(|e| e.to_string())
}

/// What `data` asks to parse: under its first line as the prefix when that is one.
fn split(data: &str) -> (TokenPrefix, &str) {
    if let Some((line, rest)) = data.split_once('\n')
        && let Ok(prefix) = TokenPrefix::parse(line)
    {
        return (prefix, rest);
    }
    (TokenPrefix::default(), data)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (prefix, raw) = split(&text);
    let twin = minted_twin(raw, &prefix);

    match token::parse(raw, &prefix) {
        Ok(parsed) => {
            assert_eq!(parsed.hash, token::hash_token(raw));
            let live = raw
                .strip_prefix(prefix.as_str())
                .is_some_and(|r| r.starts_with("_live_"));
            let expected = if live {
                Environment::Live
            } else {
                Environment::Test
            };
            assert_eq!(parsed.environment, expected);
            // A secret above 2^256 has no minted twin; every other accepted token re-renders
            // to itself.
            if let Some((environment, minted)) = &twin {
                assert_eq!(*environment, parsed.environment);
                assert_eq!(minted, raw, "an accepted token is not the one minted");
            }
        }
        Err(e) => {
            if let Some((_, minted)) = &twin {
                assert_ne!(minted, raw, "a minted token was refused: {e}");
            }
            assert_no_echo(raw.as_bytes(), &e.to_string(), |b| refusal(b, &prefix));
        }
    }

    // A token minted from these bytes parses, and no one-character change of it does.
    let Some((&first, _)) = data.split_first() else {
        return;
    };
    let mut secret = [0u8; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = data[i % data.len()] ^ (i as u8);
    }
    let environment = if first & 1 == 0 {
        Environment::Live
    } else {
        Environment::Test
    };
    let minted = token::mint_from(&prefix, environment, &secret);
    let good = minted.expose();
    let parsed = token::parse(good, &prefix).expect("a minted token parses");
    assert_eq!(parsed.environment, environment);
    assert_eq!(parsed.hash, minted.hash());

    let at = usize::from(data.get(1).copied().unwrap_or(0)) % good.len();
    // Any ASCII character but the one in place.
    let with = char::from(data.last().copied().unwrap_or(0) & 0x7f);
    if good.as_bytes()[at] != with as u8 {
        let mut changed = good.to_owned();
        changed.replace_range(at..=at, with.encode_utf8(&mut [0; 4]));
        assert!(
            token::parse(&changed, &prefix).is_err(),
            "a token with position {at} changed to {with:?} was accepted"
        );
    }
    let mut dropped = good.to_owned();
    dropped.remove(at);
    assert!(token::parse(&dropped, &prefix).is_err());
    let mut added = good.to_owned();
    added.insert(at, with);
    assert!(token::parse(&added, &prefix).is_err());
});
