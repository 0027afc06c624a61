//! Tokens: `{prefix}_{live|test}_{secret}{checksum}`.
//!
//! `secret` is 43 base62 characters encoding 256 bits from the OS CSPRNG; `checksum` is 6
//! base62 characters of CRC32 over everything before it, so typos and random strings are
//! refused without a lookup. The plaintext lives only in a [`PlainToken`], shown once; what is
//! stored is its SHA-256, a [`TokenHash`].

use std::borrow::Cow;
use std::fmt;

use rand::TryRng as _;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
pub use tokenledger_events::{Environment, TokenHash};

pub const SECRET_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A token in plaintext. It exists only between minting and the one response that shows it:
/// no `Display`, no `Serialize`, and `Debug` is redacted.
pub struct PlainToken(String);

impl PlainToken {
    /// The plaintext, for the single place that shows it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        hash_token(&self.0)
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(<redacted>)")
    }
}

pub fn hash_token(plaintext: &str) -> TokenHash {
    TokenHash(Sha256::digest(plaintext.as_bytes()).into())
}

/// The token prefix (`API_TOKEN_PREFIX`): 1 to 16 lowercase letters and digits, starting
/// with a letter, so it cannot contain the `_` separator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPrefix(String);

impl TokenPrefix {
    pub fn parse(raw: &str) -> Result<TokenPrefix, String> {
        let ok = (1..=16).contains(&raw.len())
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(TokenPrefix(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a token prefix; expected 1 to 16 lowercase letters or digits, starting with a letter (e.g. tl)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TokenPrefix {
    fn default() -> Self {
        TokenPrefix("tl".into())
    }
}

/// Why a string is not a token of this deployment. Never includes the string itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFormatError {
    #[error("token does not start with the prefix \"{0}_\"")]
    WrongPrefix(String),
    #[error("token environment must be \"live\" or \"test\"")]
    UnknownEnvironment,
    #[error(
        "token has {0} characters after its environment; expected {len} ({SECRET_LEN} secret and {CHECKSUM_LEN} checksum)",
        len = SECRET_LEN + CHECKSUM_LEN
    )]
    WrongLength(usize),
    #[error("token contains a character outside 0-9, A-Z and a-z")]
    BadCharacter,
    #[error("token checksum does not match (a typo or a truncated token)")]
    BadChecksum,
}

/// A well-formed token: its environment (from the prefix) and its hash, for lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken {
    pub environment: Environment,
    pub hash: TokenHash,
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct MintError(String);

impl MintError {
    pub fn from_os(e: impl std::fmt::Display) -> Self {
        MintError(e.to_string())
    }
}

/// Mint a new token from 256 bits of the OS CSPRNG.
pub fn mint(prefix: &TokenPrefix, environment: Environment) -> Result<PlainToken, MintError> {
    let mut secret = [0u8; 32];
    SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| MintError(e.to_string()))?;
    Ok(mint_from(prefix, environment, &secret))
}

/// The token for given secret bytes; `mint` is this with fresh randomness.
pub fn mint_from(prefix: &TokenPrefix, environment: Environment, secret: &[u8; 32]) -> PlainToken {
    let mut text = format!("{}_{}_", prefix.as_str(), environment.as_str());
    text.push_str(&base62_fixed(secret, SECRET_LEN));
    let checksum = crc32fast::hash(text.as_bytes());
    text.push_str(&base62_fixed(&checksum.to_be_bytes(), CHECKSUM_LEN));
    PlainToken(text)
}

/// Check a presented token's form and checksum; on success hash it for lookup.
pub fn parse(raw: &str, prefix: &TokenPrefix) -> Result<ParsedToken, TokenFormatError> {
    let rest = raw
        .strip_prefix(prefix.as_str())
        .and_then(|r| r.strip_prefix('_'))
        .ok_or_else(|| TokenFormatError::WrongPrefix(prefix.as_str().to_owned()))?;
    let (environment, body) = if let Some(b) = rest.strip_prefix("live_") {
        (Environment::Live, b)
    } else if let Some(b) = rest.strip_prefix("test_") {
        (Environment::Test, b)
    } else {
        return Err(TokenFormatError::UnknownEnvironment);
    };
    if !body.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(TokenFormatError::BadCharacter);
    }
    if body.len() != SECRET_LEN + CHECKSUM_LEN {
        return Err(TokenFormatError::WrongLength(body.chars().count()));
    }
    let (signed, checksum) = raw.split_at(raw.len() - CHECKSUM_LEN);
    let expected = base62_fixed(
        &crc32fast::hash(signed.as_bytes()).to_be_bytes(),
        CHECKSUM_LEN,
    );
    if checksum != expected {
        return Err(TokenFormatError::BadChecksum);
    }
    Ok(ParsedToken {
        environment,
        hash: hash_token(raw),
    })
}

/// `text` with every token-shaped value (of any prefix, with a valid checksum) replaced by
/// `<prefix>_<env>_[redacted]`: for anything that echoes input (paths in logs, error texts),
/// so that a token pasted into the wrong field is not written down.
pub fn redact(text: &str) -> Cow<'_, str> {
    let body_len = SECRET_LEN + CHECKSUM_LEN;
    let mut out: Option<String> = None;
    let (mut copied, mut search) = (0, 0);
    while let Some((at, env)) = next_environment_marker(text, search) {
        let end = at + env.len() + 2 + body_len;
        let clean_end = text
            .as_bytes()
            .get(end)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        let run = text[copied..at]
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count()
            .min(16);
        // The prefix is some tail of the letters and digits before the marker.
        let start = (1..=run).map(|k| at - k).find(|&start| {
            clean_end
                && text.get(start..end).is_some_and(|candidate| {
                    TokenPrefix::parse(&text[start..at])
                        .is_ok_and(|prefix| parse(candidate, &prefix).is_ok())
                })
        });
        match start {
            Some(_) => {
                let o = out.get_or_insert_with(String::new);
                o.push_str(&text[copied..at]);
                o.push('_');
                o.push_str(env);
                o.push_str("_[redacted]");
                copied = end;
                search = end;
            }
            None => search = at + 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The next `_live_` or `_test_` at or after `from`: its position and environment.
fn next_environment_marker(text: &str, from: usize) -> Option<(usize, &'static str)> {
    let rest = text.get(from..)?;
    let live = rest.find("_live_").map(|i| (from + i, "live"));
    let test = rest.find("_test_").map(|i| (from + i, "test"));
    match (live, test) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Big-endian bytes as exactly `width` base62 digits, left-padded with `0`. `width` must be
/// enough for the value (43 digits hold 256 bits; 6 hold 32).
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        *slot = ALPHABET[remainder as usize];
    }
    debug_assert!(number.iter().all(|&b| b == 0), "width too small for value");
    String::from_utf8(digits).expect("alphabet is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_token_shaped_value_and_nothing_else() {
        let live = mint(&TokenPrefix::default(), Environment::Live).expect("mint");
        let other = mint(
            &TokenPrefix::parse("acme").expect("prefix"),
            Environment::Test,
        )
        .expect("mint");
        let (a, b) = (live.expose(), other.expose());
        let text = format!("GET /api/admin/tokens/{a}/revoke?x={b}&y=x{a}");
        let shown = redact(&text);
        assert!(!shown.contains(a) && !shown.contains(b), "{shown}");
        assert_eq!(
            shown,
            "GET /api/admin/tokens/tl_live_[redacted]/revoke?x=acme_test_[redacted]&y=xtl_live_[redacted]"
        );
        // A bad checksum, a longer run or no token at all are left as they are.
        let mut typo = a.to_owned();
        typo.pop();
        typo.push(if a.ends_with('a') { 'b' } else { 'a' });
        for plain in [typo.as_str(), "tl_test_short", "no tokens here", "é_live_ü"] {
            assert_eq!(redact(plain), plain);
        }
        assert_eq!(redact(&format!("{a}Z")), format!("{a}Z"));
    }

    fn tl() -> TokenPrefix {
        TokenPrefix::default()
    }

    #[test]
    fn a_minted_token_has_the_documented_shape_and_parses() {
        let token = mint(&tl(), Environment::Live).expect("mint");
        let text = token.expose();
        assert!(text.starts_with("tl_live_"), "{}", text.len());
        assert_eq!(text.len(), "tl_live_".len() + SECRET_LEN + CHECKSUM_LEN);
        let parsed = parse(text, &tl()).expect("parses");
        assert_eq!(parsed.environment, Environment::Live);
        assert_eq!(parsed.hash, token.hash());
        assert_ne!(
            mint(&tl(), Environment::Live).expect("mint").expose(),
            text,
            "fresh randomness"
        );
    }

    #[test]
    fn the_secret_encodes_all_256_bits() {
        let max = mint_from(&tl(), Environment::Test, &[0xff; 32]);
        let zero = mint_from(&tl(), Environment::Test, &[0; 32]);
        assert_eq!(max.expose().len(), zero.expose().len());
        assert_eq!(&zero.expose()[8..8 + SECRET_LEN], "0".repeat(SECRET_LEN));
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(
            &mint_from(&tl(), Environment::Test, &one).expose()[8..8 + SECRET_LEN],
            format!("{}1", "0".repeat(SECRET_LEN - 1))
        );
        parse(max.expose(), &tl()).expect("the largest secret parses");
    }

    #[test]
    fn every_malformation_is_refused_precisely() {
        let good = mint_from(&tl(), Environment::Test, &[42; 32]);
        let text = good.expose().to_owned();
        let cases: Vec<(String, TokenFormatError)> = vec![
            (
                text.replacen("tl_", "xx_", 1),
                TokenFormatError::WrongPrefix("tl".into()),
            ),
            (
                text.replacen("_test_", "_prod_", 1),
                TokenFormatError::UnknownEnvironment,
            ),
            (
                text[..text.len() - 1].to_owned(),
                TokenFormatError::WrongLength(48),
            ),
            (format!("{text}A"), TokenFormatError::WrongLength(50)),
            (
                format!("{}-{}", &text[..20], &text[21..]),
                TokenFormatError::BadCharacter,
            ),
            (
                {
                    let mut t = text.clone().into_bytes();
                    t[20] = if t[20] == b'a' { b'b' } else { b'a' };
                    String::from_utf8(t).expect("ascii")
                },
                TokenFormatError::BadChecksum,
            ),
            ("".into(), TokenFormatError::WrongPrefix("tl".into())),
        ];
        for (input, expected) in cases {
            let err = parse(&input, &tl()).expect_err(&input);
            assert_eq!(err, expected);
            assert!(
                !err.to_string().contains(&text[8..]),
                "errors never echo the token"
            );
        }
    }

    #[test]
    fn a_token_of_another_prefix_is_refused() {
        let other = mint_from(
            &TokenPrefix::parse("acme").expect("prefix"),
            Environment::Live,
            &[1; 32],
        );
        assert_eq!(
            parse(other.expose(), &tl()),
            Err(TokenFormatError::WrongPrefix("tl".into()))
        );
        parse(other.expose(), &TokenPrefix::parse("acme").expect("prefix"))
            .expect("its own prefix");
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in ["", "TL", "t_l", "1tl", "averyveryverylongprefix"] {
            assert!(
                TokenPrefix::parse(bad)
                    .expect_err(bad)
                    .contains("lowercase")
            );
        }
    }

    #[test]
    fn debug_never_shows_the_plaintext_or_hash() {
        let token = mint(&tl(), Environment::Test).expect("mint");
        let shown = format!("{token:?} {:?}", token.hash());
        assert!(!shown.contains(token.expose()));
        assert!(!shown.contains(&hex::encode(token.hash().0)));
        assert!(shown.contains("redacted"));
    }
}
