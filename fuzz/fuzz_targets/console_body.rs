//! The console body decoder (`{"cmd": "...", "args": {...}}`) never panics, accepts only
//! known commands, refuses with a 400 whose text quotes no control character, and never
//! echoes a run of the body (a secret pasted into a field must not come back in the answer;
//! only a short name may, quoted as a likely typo: see `assert_body_no_echo`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenledger::http::console;
use tokenledger::http::policy::console_command;
use tokenledger_fuzz::assert_body_no_echo;

fuzz_target!(|data: &[u8]| {
    match console::decode_body(data) {
        Ok(name) => assert!(console_command(name).is_some(), "{name} is not a command"),
        Err(e) => {
            let message = e.to_string();
            assert_eq!(e.status().as_u16(), 400, "{message}");
            assert!(!message.is_empty());
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert_body_no_echo(data, &message, |b| {
                console::decode_body(b).err().map(|e| e.to_string())
            });
        }
    }
});
