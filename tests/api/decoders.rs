//! The console, verify and leak report body decoders under random input (the same properties the fuzz
//! targets in fuzz/ check at length): they never panic, refuse with a 400, and never echo a
//! secret planted anywhere in a body, including in the spots where a rejection's text is
//! built from the input (an unknown field, an unknown command, serde's own messages). And
//! the database URL parser, whose refusals and redacted form never show a password.

use proptest::prelude::*;
use serde_json::{Value, json};
use tokenledger::config::parse_database_url;
use tokenledger::http::policy::console_command;
use tokenledger::http::{ApiError, console, leaks, verify};

/// The shortest run of a secret that must never come back (as in fuzz/src/lib.rs).
const ECHO_WINDOW: usize = 16;

/// A secret: letters and digits, longer than any name a rejection quotes back as a likely
/// typo (32 characters, `text::shown`), and long enough that no rejection's own text holds a
/// run of it by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{33,64}"
}

/// How a secret may be wrapped to look like the text a rejection is built from.
const WRAPS: [&str; 9] = [
    "{}",
    "x, expected {}",
    "{} at line 1 column 2",
    "`, expected one of `cmd`, `{}",
    "{}`",
    "a.{}",
    "{}.a",
    "unknown field `{}",
    "tl_test_{}",
];

/// The text planted, and the secret in it.
fn wrapped() -> impl Strategy<Value = (String, String)> {
    (0..WRAPS.len(), secret()).prop_map(|(i, s)| (WRAPS[i].replace("{}", &s), s))
}

/// Where in a console body the secret `{}` goes (JSON-escaped where it is a string).
const CONSOLE_BODIES: [&str; 14] = [
    r#"{"cmd":{}}"#,
    r#"{"cmd":{},"args":{}}"#,
    r#"{"cmd":"ping",{}:1}"#,
    r#"{{}:1}"#,
    r#"{"cmd":"tokens:stale","args":{"unused_days":{}}}"#,
    r#"{"cmd":"tokens:stale","args":{{}:1}}"#,
    r#"{"cmd":"tokens:stale","args":{"unused_days":[{}]}}"#,
    r#"{"cmd":"ping","args":{{}:true}}"#,
    r#"{"cmd":"ping","args":{}}"#,
    r#"{"cmd":[{}]}"#,
    r#"{"cmd":"ping"} {}"#,
    r#"[{}]"#,
    r#"{"cmd":{}"#,
    r#"{"cmd":"ping","args":{"nested":{{}:{}}}}"#,
];

const VERIFY_BODIES: [&str; 12] = [
    r#"{"token":{},"scopes":[{}]}"#,
    r#"{"token":"x","ip":{}}"#,
    r#"{"token":"x","path":{}}"#,
    r#"{"token":{{}:1}}"#,
    r#"{"token":{},{}:1}"#,
    r#"{"token":5,"scopes":{}}"#,
    r#"{"token":"x","scopes":[1,{}]}"#,
    r#"{"token":"x","ip":[{}]}"#,
    r#"{{}:"x"}"#,
    r#"{"token":{}"#,
    r#"{"token":"x"}{}"#,
    r#"{"token":"x","scopes":[{}],"path":"/v1/verify","ip":"10.0.0.1"}"#,
];

/// Leak reports: GitHub's `[{token, type, url, source}]` and `[{token, location}]`.
const LEAK_BODIES: [&str; 12] = [
    r#"[{"token":{}}]"#,
    r#"[{"token":"x","url":{},"source":{},"type":{}}]"#,
    r#"[{"token":"x","location":{}}]"#,
    r#"[{"token":{},"location":[{}]}]"#,
    r#"[{"token":"x",{}:1}]"#,
    r#"[{{}:"x"}]"#,
    r#"[{"token":5,"url":{}}]"#,
    r#"[{"token":{}"#,
    r#"[{"token":"x"}]{}"#,
    r#"{"token":{}}"#,
    r#"[{}]"#,
    r#"[{"token":"x","type":[{}]}]"#,
];

fn planted(template: &str, secret: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(secret).expect("a string serializes");
    template.replace("{}", &quoted).into_bytes()
}

/// A refusal is a 400 that holds no run of [`ECHO_WINDOW`] characters of `secret` (which
/// has at least that many).
fn assert_refusal_hides(e: &ApiError, secret: &str) -> Result<(), TestCaseError> {
    let message = e.to_string();
    prop_assert_eq!(e.status().as_u16(), 400, "{}", message);
    prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
    for start in 0..=secret.len() - ECHO_WINDOW {
        let run = &secret[start..start + ECHO_WINDOW];
        prop_assert!(
            !message.contains(run),
            "{:?} echoes {:?} of the secret",
            message,
            run
        );
    }
    Ok(())
}

/// JSON values of every kind, with object keys and strings that may be the secret.
fn json_value(secret: String) -> impl Strategy<Value = Value> {
    let s = secret.clone();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::from(secret.clone())),
        "[a-z:_]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        let key = prop_oneof![
            Just(s.clone()),
            Just("cmd".to_owned()),
            Just("args".to_owned()),
            Just("token".to_owned()),
            Just("scopes".to_owned()),
            Just("ip".to_owned()),
            Just("path".to_owned()),
            Just("unused_days".to_owned()),
            "[a-z_.]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn a_secret_planted_in_a_console_body_is_never_echoed(
        template in 0..CONSOLE_BODIES.len(),
        (text, secret) in wrapped(),
    ) {
        let body = planted(CONSOLE_BODIES[template], &text);
        if let Err(e) = console::decode_body(&body) {
            assert_refusal_hides(&e, &secret)?;
        }
    }

    #[test]
    fn a_secret_planted_in_a_verify_body_is_never_echoed(
        template in 0..VERIFY_BODIES.len(),
        (text, secret) in wrapped(),
    ) {
        let body = planted(VERIFY_BODIES[template], &text);
        if let Err(e) = verify::decode_body(&body) {
            assert_refusal_hides(&e, &secret)?;
        }
    }

    #[test]
    fn a_secret_planted_in_a_leak_report_body_is_never_echoed(
        template in 0..LEAK_BODIES.len(),
        (text, secret) in wrapped(),
    ) {
        let body = planted(LEAK_BODIES[template], &text);
        for e in [
            leaks::decode_github_body(&body).err(),
            leaks::decode_report_body(&body).err(),
        ]
        .into_iter()
        .flatten()
        {
            assert_refusal_hides(&e, &secret)?;
        }
    }

    #[test]
    fn random_json_bodies_are_decoded_or_refused_without_echo(
        (secret, value) in secret().prop_flat_map(|s| (Just(s.clone()), json_value(s))),
    ) {
        let body = serde_json::to_vec(&value).expect("a value serializes");
        match console::decode_body(&body) {
            Ok(name) => prop_assert!(console_command(name).is_some()),
            Err(e) => assert_refusal_hides(&e, &secret)?,
        }
        if let Err(e) = verify::decode_body(&body) {
            assert_refusal_hides(&e, &secret)?;
        }
        let wrapped = serde_json::to_vec(&json!([value])).expect("a value serializes");
        for e in [
            leaks::decode_github_body(&wrapped).err(),
            leaks::decode_report_body(&wrapped).err(),
        ]
        .into_iter()
        .flatten()
        {
            assert_refusal_hides(&e, &secret)?;
        }
    }

    #[test]
    fn a_database_urls_password_is_never_shown(
        scheme in prop::sample::select(vec!["postgres", "postgresql", "sqlite", "", "mysql"]),
        // With and without the slashes a person may leave out.
        separator in prop::sample::select(vec!["://", ":", ":/", ":///"]),
        user in "[a-z0-9_]{0,8}",
        password in "[A-Z][A-Za-z0-9]{11,23}",
        host in "[a-z0-9.-]{0,12}",
        rest in prop::sample::select(vec!["", "/app", ":5432/app?sslmode=require", "/app?password=X"]),
    ) {
        let rest = rest.replace('X', &password);
        let url = format!("{scheme}{separator}{user}:{password}@{host}{rest}");
        let shown = match parse_database_url(&url) {
            Ok(parsed) => format!("{} {parsed:?}", parsed.redacted()),
            Err(e) => e,
        };
        prop_assert!(!shown.contains(&password), "{} shows {}", url, shown);
    }

    #[test]
    fn arbitrary_bytes_are_refused_with_a_400_and_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        for e in [
            console::decode_body(&bytes).err(),
            verify::decode_body(&bytes).err(),
            leaks::decode_github_body(&bytes).err(),
            leaks::decode_report_body(&bytes).err(),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert_eq!(e.status().as_u16(), 400, "{}", e);
        }
    }
}

#[test]
fn every_console_command_decodes_to_its_name() {
    for (body, name) in [
        (r#"{"cmd":"ping"}"#, "ping"),
        (r#"{"cmd":"db:health","args":{}}"#, "db:health"),
        (r#"{"cmd":"events:verify","args":null}"#, "events:verify"),
        (r#" {"cmd":"projections:status"} "#, "projections:status"),
        (
            r#"{"cmd":"tokens:stale","args":{"unused_days":30,"expiring_days":7,"new_ip_hours":24}}"#,
            "tokens:stale",
        ),
    ] {
        assert_eq!(
            console::decode_body(body.as_bytes()).expect(body),
            name,
            "{body}"
        );
    }
}

#[test]
fn a_well_formed_verify_body_decodes() {
    let body = json!({
        "token": "tl_test_x",
        "scopes": ["console:exec", "logs:read"],
        "ip": "2001:db8::1",
        "path": "/v1/things",
    });
    verify::decode_body(body.to_string().as_bytes()).expect("decodes");
}
