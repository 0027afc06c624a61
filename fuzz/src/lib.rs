//! Checks the fuzz targets share.
//!
//! The main one: a rejection never echoes its input. "Echoes" means the message copies a run
//! of the input, not that it happens to contain the same text: a fuzzer that learns the
//! message's own words ("known commands: ping, db:health") and sends them back has not found
//! a leak. So a run of input seen in a message counts only when the message follows it: the
//! run is changed (every letter and digit moved one place along its alphabet, which keeps
//! the input's shape to a parser), and the new message must hold the changed run where the
//! old one held the run.
//!
//! One echo is on purpose: a short name (an unknown command, field or scope) is quoted back
//! as a likely typo, beside the accepted names (`text::shown`: up to [`SHORT_NAME_MAX`]
//! characters). [`assert_body_no_echo`] lets a JSON body's short strings come back; a longer
//! string, or a run across two of them, still counts.

use std::ops::Range;

/// The shortest run of input that counts as echoed. A short name may be quoted back as a
/// likely typo; anything this long could be (part of) a secret.
pub const ECHO_WINDOW: usize = 16;

/// The longest JSON string of a body that a rejection may quote back: the library's limit
/// for names it shows. Set it to 0 to count those echoes too.
pub const SHORT_NAME_MAX: usize = 32;

/// `input` with the letters and digits in `span` moved one place along their alphabets
/// (`z` to `a`, `9` to `0`); every other byte is kept, so JSON stays JSON and a URL a URL.
pub fn rotated(input: &[u8], span: Range<usize>) -> Vec<u8> {
    let mut out = input.to_vec();
    for b in &mut out[span] {
        *b = match *b {
            b'z' => b'a',
            b'Z' => b'A',
            b'9' => b'0',
            b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => *b + 1,
            other => other,
        };
    }
    out
}

/// Whether `message`, what `render` says about `input`, copies `input[span]`: changing the
/// run in the input (see [`rotated`]) changes the message as a copy would, with one
/// occurrence of the run fewer and one of the changed run more. A message that only happens
/// to hold the same text stays as it was. `render` answers `None` for an input it accepts
/// (nothing to echo). A run without a letter or digit is never counted: rotation cannot
/// change it.
pub fn echoes(
    input: &[u8],
    message: &str,
    span: Range<usize>,
    render: &impl Fn(&[u8]) -> Option<String>,
) -> bool {
    let run = &input[span.clone()];
    if !run.iter().any(u8::is_ascii_alphanumeric) || !contains(message.as_bytes(), run) {
        return false;
    }
    let changed = rotated(input, span.clone());
    let Some(second) = render(&changed) else {
        return false;
    };
    let (before, after) = (message.as_bytes(), second.as_bytes());
    count(after, run) < count(before, run)
        && count(after, &changed[span.clone()]) > count(before, &changed[span])
}

/// How many times `needle` (not empty) occurs in `haystack`, overlaps included.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Panic when `message`, the rejection of `input`, echoes a run of [`ECHO_WINDOW`] bytes of
/// it. `render` rejects an input again (to tell a copy from a coincidence; see [`echoes`]).
pub fn assert_no_echo(input: &[u8], message: &str, render: impl Fn(&[u8]) -> Option<String>) {
    check_echo(input, message, &render, |_| false);
}

/// [`assert_no_echo`] for a JSON body, but a run whose letters and digits all lie in one JSON
/// string of at most [`SHORT_NAME_MAX`] characters may come back: a short name, quoted.
pub fn assert_body_no_echo(input: &[u8], message: &str, render: impl Fn(&[u8]) -> Option<String>) {
    let strings = json_strings(input);
    check_echo(input, message, &render, |span| {
        let first = span.clone().find(|&i| input[i].is_ascii_alphanumeric());
        let last = span
            .clone()
            .rev()
            .find(|&i| input[i].is_ascii_alphanumeric());
        let (Some(first), Some(last)) = (first, last) else {
            return false;
        };
        strings.iter().any(|(content, chars)| {
            content.contains(&first) && content.contains(&last) && *chars <= SHORT_NAME_MAX
        })
    });
}

fn check_echo(
    input: &[u8],
    message: &str,
    render: &impl Fn(&[u8]) -> Option<String>,
    allowed: impl Fn(Range<usize>) -> bool,
) {
    for start in windows_in(input, message.as_bytes()) {
        let span = start..start + ECHO_WINDOW;
        if echoes(input, message, span.clone(), render) && !allowed(span.clone()) {
            panic!(
                "the rejection echoes input bytes {span:?} ({:?}): {message:?}",
                String::from_utf8_lossy(&input[span.clone()])
            );
        }
    }
}

/// The JSON strings of `input` (as a lexer would find them, however malformed the rest): the
/// byte range of each one's content between its quotes, and how many characters it decodes
/// to.
pub fn json_strings(input: &[u8]) -> Vec<(Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        let mut chars = 0;
        while j < input.len() && input[j] != b'"' {
            j += match (input[j], input.get(j + 1)) {
                (b'\\', Some(b'u')) => 6,
                (b'\\', _) => 2,
                _ => 1,
            };
            // A UTF-8 continuation byte is part of the character before it.
            if input
                .get(j.wrapping_sub(1))
                .is_some_and(|b| b & 0xc0 != 0x80)
                || j >= input.len()
            {
                chars += 1;
            }
        }
        let end = j.min(input.len());
        out.push((start..end, chars));
        i = end + 1;
    }
    out
}

/// Where the [`ECHO_WINDOW`]-byte runs of `input` that `text` also contains start. Runs are
/// compared as 128-bit words against the text's sorted runs: linear in the input, since
/// fuzzing calls this on every rejection.
pub fn windows_in(input: &[u8], text: &[u8]) -> Vec<usize> {
    const _: () = assert!(ECHO_WINDOW == 16, "runs are compared as u128");
    if input.len() < ECHO_WINDOW || text.len() < ECHO_WINDOW {
        return Vec::new();
    }
    let word = |run: &[u8]| u128::from_le_bytes(run.try_into().expect("16 bytes"));
    let mut runs: Vec<u128> = text.windows(ECHO_WINDOW).map(word).collect();
    runs.sort_unstable();
    input
        .windows(ECHO_WINDOW)
        .enumerate()
        .filter(|(_, run)| runs.binary_search(&word(run)).is_ok())
        .map(|(i, _)| i)
        .collect()
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(input: &[u8]) -> Option<String> {
        Some(format!("bad value {}", String::from_utf8_lossy(input)))
    }

    fn fixed(_: &[u8]) -> Option<String> {
        Some("Unknown command; known commands: projections:status".to_owned())
    }

    #[test]
    fn a_copied_run_is_an_echo() {
        let input = b"{\"cmd\": \"tl_test_abcdefghijklmnopqrstuvwxyz\"}";
        let message = echo(input).expect("rejected");
        let result = std::panic::catch_unwind(|| assert_no_echo(input, &message, echo));
        assert!(result.is_err());
    }

    #[test]
    fn the_messages_own_words_sent_back_are_not_an_echo() {
        let input = b"known commands: projections:status";
        let message = fixed(input).expect("rejected");
        assert!(!windows_in(input, message.as_bytes()).is_empty());
        assert_no_echo(input, &message, fixed);
    }

    #[test]
    fn a_short_name_quoted_back_is_not_an_echo_but_a_long_one_is() {
        let quote = |input: &[u8]| {
            let body = String::from_utf8_lossy(input);
            let cmd = body.split('"').nth(3).unwrap_or_default();
            Some(format!("Unknown command {cmd:?}; known: ping"))
        };
        let short = br#"{"cmd": "projections:statux"}"#;
        assert_body_no_echo(short, &quote(short).expect("rejected"), quote);
        let long = br#"{"cmd": "projections:status-and-then-some-more"}"#;
        let result = std::panic::catch_unwind(|| {
            assert_body_no_echo(long, &quote(long).expect("rejected"), quote)
        });
        assert!(result.is_err());
        let result = std::panic::catch_unwind(|| {
            assert_no_echo(short, &quote(short).expect("rejected"), quote)
        });
        assert!(result.is_err(), "outside a body every echo counts");
    }

    #[test]
    fn json_strings_are_found_with_their_length_in_characters() {
        let body = b"{\"cmd\": \"a\\\"b\", \"x\": \"\\u00e9\xc3\xa9\"}";
        let found: Vec<(&[u8], usize)> = json_strings(body)
            .into_iter()
            .map(|(r, n)| (&body[r], n))
            .collect();
        assert_eq!(
            found,
            [
                (&b"cmd"[..], 3),
                (br#"a\"b"#, 3),
                (b"x", 1),
                (b"\\u00e9\xc3\xa9", 2)
            ]
        );
    }

    #[test]
    fn a_run_the_message_holds_whatever_the_input_is_not_an_echo() {
        // The message quotes the body's first string (a short name, which may come back); a
        // run outside it that the quoted name happens to hold is not copied from there.
        let quote = |input: &[u8]| {
            let body = String::from_utf8_lossy(input);
            Some(format!(
                "Unknown field {:?}",
                body.split('"').nth(1).unwrap_or_default()
            ))
        };
        let input = br#"{"c\\\\\\\\;d\\\\\\\\\\\\": 1} c\\\\\\\\\\\\\\\\"#;
        let message = quote(input).expect("rejected");
        assert!(windows_in(input, message.as_bytes()).contains(&31));
        assert_body_no_echo(input, &message, quote);
    }

    #[test]
    fn rotation_keeps_everything_but_letters_and_digits() {
        assert_eq!(rotated(b"{\"az\": Z9}", 0..10), b"{\"ba\": A0}");
        assert_eq!(rotated(b"abc", 1..2), b"acc");
    }
}
