//! `config::parse_database_url` (over `store::DatabaseUrl::parse`): never panics, agrees with
//! the store's parser, refuses with a text that names what is accepted, and never shows a
//! password: not in a refusal, nor in an accepted URL's redacted form or `Debug`.
//!
//! The input is read two ways: as a URL as it is, and as the parts of a URL assembled with a
//! password (in the userinfo, and sometimes in the query string), with and without the `//`
//! a person may leave out.

#![no_main]

use std::ops::Range;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tokenledger::config::parse_database_url;
use tokenledger::store::DatabaseUrl;
use tokenledger_fuzz::echoes;

/// Everything the parser lets a person see of a URL.
fn shown(raw: &[u8]) -> Option<String> {
    let raw = String::from_utf8_lossy(raw);
    Some(match parse_database_url(&raw) {
        Ok(url) => format!("{} {url:?}", url.redacted()),
        Err(e) => e,
    })
}

fn check(raw: &str) {
    let ours = parse_database_url(raw);
    let store = DatabaseUrl::parse(raw);
    assert_eq!(ours.is_ok(), store.is_ok(), "{raw:?}");
    match ours {
        Ok(url) => {
            let scheme = raw.trim().split(':').next().unwrap_or_default();
            let backend = if scheme == "sqlite" {
                "sqlite"
            } else {
                "postgres"
            };
            assert_eq!(url.backend(), backend, "{raw:?}");
        }
        Err(e) => assert!(e.contains("accepted: "), "{e}"),
    }
}

fn text(u: &mut Unstructured<'_>, alphabet: &[u8], len: Range<usize>) -> Result<String> {
    let n = u.int_in_range(len.start..=len.end - 1)?;
    (0..n)
        .map(|_| u.choose(alphabet).map(|&b| char::from(b)))
        .collect()
}

/// A URL with a password, and where the password stands in it.
fn assembled(u: &mut Unstructured<'_>) -> Result<(String, Vec<Range<usize>>)> {
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // What a password may hold unencoded in a userinfo, `@` included (the last `@` ends it).
    const SECRET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:%@";
    let scheme = *u.choose(&[
        "postgres",
        "postgresql",
        "sqlite",
        "",
        "mysql",
        "Postgres",
        "kurrentdb",
        "esdb+discover",
    ])?;
    // Without a separator the password would be the text after the scheme's colon: a user.
    let separator = *u.choose(&["://", ":", ":/", ":///", "//"])?;
    let user = text(u, LOWER, 0..9)?;
    let password = text(u, SECRET, 8..25)?;
    let host = text(u, b"abcdefghijklmnopqrstuvwxyz0123456789.-", 0..13)?;
    let port = if u.arbitrary()? { ":5432" } else { "" };
    let path = text(u, b"abcdefghijklmnopqrstuvwxyz0123456789_/", 0..9)?;
    let mut url = format!(
        "{}{scheme}{separator}{user}:",
        if u.arbitrary()? { " " } else { "" }
    );
    let mut secrets = Vec::new();
    secrets.push(url.len()..url.len() + password.len());
    url.push_str(&password);
    url.push('@');
    url.push_str(&host);
    url.push_str(port);
    if !path.is_empty() {
        url.push('/');
        url.push_str(&path);
    }
    match u.int_in_range(0..=2)? {
        0 => {}
        1 => url.push_str("?sslmode=require"),
        _ => {
            // A password in the query string is not a userinfo's: it may not hold `@`.
            let again = password.replace('@', "~");
            url.push_str("?password=");
            secrets.push(url.len()..url.len() + again.len());
            url.push_str(&again);
        }
    }
    Ok((url, secrets))
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));

    let Ok((url, secrets)) = assembled(&mut Unstructured::new(data)) else {
        return;
    };
    check(&url);
    let seen = shown(url.as_bytes()).expect("always some text");
    for secret in secrets {
        assert!(
            !echoes(url.as_bytes(), &seen, secret.clone(), &shown),
            "the password {:?} of {url:?} is shown: {seen:?}",
            &url[secret]
        );
    }
});
