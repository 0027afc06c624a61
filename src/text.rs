//! Text that came from a caller, made safe to show. A token name, a revoke reason, a request
//! path or a user agent reaches terminals, pages and logs; control characters in it could
//! move the cursor, hide the rest of a line, forge a new one, or reorder what a reader sees.
//! [`escape`] is the one function every output path uses; [`is_unsafe`] is what names and
//! reasons are refused for at the edge.

use std::borrow::Cow;
use std::fmt::Write as _;

/// C0 and C1 controls, DEL (and so ESC), and the bidi and invisible format characters.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character shown as `\u{..}`; borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// An input value for a message saying what was wrong with it: quoted when it is short and
/// plain enough to be a typo, else not shown (a long value may be a pasted secret).
pub fn shown(raw: &str) -> String {
    if raw.chars().count() <= 32 && raw.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        format!("{raw:?}")
    } else {
        "(value not shown)".to_owned()
    }
}

/// JSON text with every unsafe character that serde leaves raw (DEL, C1, bidi and format
/// characters; serde already escapes C0) written as a JSON `\uXXXX` escape: the same
/// document, safe on a terminal.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    // A C0 character left in serde's output is the document's own white space: strings
    // never hold one raw.
    let raw = |c: char| is_unsafe(c) && u32::from(c) >= 0x20;
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if raw(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_unsafe_character_is_escaped() {
        let forged = "ok\nAPI_TOKEN_REVOKED\u{1b}[8m\u{7f}\u{9b}\u{202e}\u{200b}\u{2066}\t";
        let shown = escape(forged);
        assert_eq!(
            shown,
            "ok\\u{a}API_TOKEN_REVOKED\\u{1b}[8m\\u{7f}\\u{9b}\\u{202e}\\u{200b}\\u{2066}\\u{9}"
        );
        assert!(!shown.chars().any(is_unsafe));
        assert!(matches!(escape("plain / path é ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_json_is_the_same_document() {
        let value = serde_json::json!({"path": "/a\u{9b}b\u{202e}c\u{7f}\n"});
        let raw = serde_json::to_string_pretty(&value).expect("json");
        let safe = escape_json(&raw);
        assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
        assert!(safe.contains('\n'), "pretty printing keeps its lines");
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value);
    }
}
