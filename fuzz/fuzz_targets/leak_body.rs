//! The leak report body decoders (GitHub's `[{"token", "type", "url", "source"}]` once its
//! signature verified, and `[{"token", "location"}]`) never panic, refuse with a 400 whose text
//! quotes no control character, never echo a run of the body, and keep only inert text: no
//! control character and no token in what a report would record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenledger::http::leaks;
use tokenledger_fuzz::assert_body_no_echo;

fuzz_target!(|data: &[u8]| {
    for decode in [leaks::decode_github_body, leaks::decode_report_body] {
        match decode(data) {
            Err(e) => {
                let message = e.to_string();
                assert_eq!(e.status().as_u16(), 400, "{message}");
                assert!(!message.is_empty());
                assert!(!message.chars().any(char::is_control), "{message:?}");
                assert_body_no_echo(data, &message, |b| decode(b).err().map(|e| e.to_string()));
            }
            Ok(reports) => {
                for r in &reports {
                    for text in [&r.url, &r.source, &r.token_type].into_iter().flatten() {
                        assert!(!text.chars().any(tokenledger::text::is_unsafe), "{text:?}");
                        assert_eq!(tokenledger::token::redact(text), text.as_str());
                    }
                }
            }
        }
    }
});
