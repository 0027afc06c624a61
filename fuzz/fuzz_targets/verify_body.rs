//! The verify body decoder (`{"token", "scopes", "ip", "path"}`) never panics, refuses with a
//! 400 whose text quotes no control character, and never echoes a run of the body: the
//! checked token, or anything pasted beside it, must not come back in the answer (only a
//! short name may, quoted as a likely typo: see `assert_body_no_echo`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenledger::http::verify;
use tokenledger_fuzz::assert_body_no_echo;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = verify::decode_body(data) {
        let message = e.to_string();
        assert_eq!(e.status().as_u16(), 400, "{message}");
        assert!(!message.is_empty());
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert_body_no_echo(data, &message, |b| {
            verify::decode_body(b).err().map(|e| e.to_string())
        });
    }
});
