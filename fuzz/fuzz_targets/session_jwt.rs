//! Session verification accepts a correctly signed RS256 session and nothing else.
//!
//! The verifier trusts one RSA key twice over: as the development key (`kid` tokenledger-dev)
//! and as Clerk's PEM key (any other `kid`). The key is made fresh in each process, so no
//! input can carry a valid signature by chance. The first byte of the input picks a mode
//! (`0` to `4`, so that a seed reads as text; any other byte counts modulo 5):
//!
//! - 0: the rest, as text, is a session: always refused;
//! - 1: one character of a valid session changed: refused;
//! - 2: one segment of a valid session replaced by the rest, base64url-encoded: refused
//!   unless it is the segment already there;
//! - 3: header, payload and signature all from the rest (its lines), base64url-encoded:
//!   refused;
//! - 4: a valid session checked at another time: accepted exactly inside its validity window.
//!
//! No refusal's text echoes the session.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
use tokenledger::session::{DevKey, KeySource, SessionConfig, SessionVerifier};
use tokenledger_events::Timestamp;
use tokenledger_fuzz::assert_no_echo;

const ISSUER: &str = "https://clerk.fuzz.example";
const PARTY: &str = "https://admin.fuzz.example";
const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);
const SECOND: i64 = 1_000_000;
/// The verifier's tolerance on `exp` and `nbf`.
const LEEWAY: i64 = 5 * SECOND;
/// A Clerk session here lasts an hour; a development session eight.
const CLERK_SECONDS: i64 = 3600;
const DEV_SECONDS: i64 = 8 * 3600;

/// A correctly signed admin session and the instants it is valid between (`nbf`, `exp`).
struct Valid {
    jwt: String,
    nbf: i64,
    exp: i64,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: SessionVerifier,
    /// A development session and a Clerk session.
    valid: [Valid; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // The development key is made as `serve` makes it, in a directory of this process's own
    // that is gone again before the first input.
    let dir = std::env::temp_dir().join(format!("tokenledger-fuzz-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join("dev-session-key.pem");
    let dev = DevKey::load_or_create(&path).expect("development key");
    let private_pem = std::fs::read_to_string(&path).expect("development key file");
    std::fs::remove_dir_all(&dir).expect("temporary directory removed");

    let private = RsaPrivateKey::from_pkcs8_pem(&private_pem).expect("PKCS#8 key");
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public PEM");
    let clerk = SessionConfig {
        keys: KeySource::Pem(public_pem),
        issuer: ISSUER.to_owned(),
        authorized_parties: vec![PARTY.to_owned()],
        admin_role_claim: "metadata.role".to_owned(),
    };

    let now_s = NOW.as_micros() / SECOND;
    let dev_jwt = dev
        .sign("user_fuzz", true, NOW)
        .expect("development session");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("clerk-fuzz".to_owned());
    let claims = serde_json::json!({
        "iss": ISSUER,
        "azp": PARTY,
        "sub": "user_fuzz",
        "sid": "sess_fuzz",
        "iat": now_s,
        "nbf": now_s,
        "exp": now_s + CLERK_SECONDS,
        "metadata": {"role": "admin"},
    });
    let der = private.to_pkcs1_der().expect("PKCS#1 key");
    let clerk_jwt =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(der.as_bytes()))
            .expect("Clerk session");

    let verifier = SessionVerifier::new(Some(clerk), Some(dev))
        .expect("verifier")
        .expect("configured");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let fixture = Fixture {
        runtime,
        verifier,
        valid: [
            Valid {
                jwt: dev_jwt,
                nbf: NOW.as_micros(),
                exp: NOW.as_micros() + DEV_SECONDS * SECOND,
            },
            Valid {
                jwt: clerk_jwt,
                nbf: NOW.as_micros(),
                exp: NOW.as_micros() + CLERK_SECONDS * SECOND,
            },
        ],
    };
    for valid in &fixture.valid {
        let session = fixture
            .runtime
            .block_on(fixture.verifier.verify(&valid.jwt, NOW))
            .expect("a correctly signed admin session is accepted");
        assert_eq!(session.sub, "user_fuzz");
    }
    fixture
});

fn refusal(f: &Fixture, jwt: &str, now: Timestamp) -> Option<String> {
    f.runtime
        .block_on(f.verifier.authenticate(jwt, now))
        .err()
        .map(|e| e.to_string())
}

/// `jwt` must be refused, with a text that does not echo it.
fn refused(f: &Fixture, jwt: &str) {
    match f.runtime.block_on(f.verifier.authenticate(jwt, NOW)) {
        Ok(session) => panic!("accepted a session the key did not sign: {jwt:?} as {session:?}"),
        Err(e) => assert_no_echo(jwt.as_bytes(), &e.to_string(), |b| {
            refusal(f, &String::from_utf8_lossy(b), NOW)
        }),
    }
}

fn number(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

fuzz_target!(init: { LazyLock::force(&FIXTURE); }, |data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = match mode {
        b'0'..=b'4' => mode - b'0',
        other => other % 5,
    };
    let pick = rest.first().copied().unwrap_or(0);
    let valid = &f.valid[usize::from(pick & 1)];
    match mode {
        0 => refused(f, &String::from_utf8_lossy(rest)),
        1 => {
            let good = valid.jwt.as_str();
            let at = number(rest.get(1..3).unwrap_or_default()) as usize % good.len();
            let with = char::from(rest.get(3).copied().unwrap_or(0) & 0x7f);
            if good.as_bytes()[at] == with as u8 {
                return;
            }
            let mut changed = good.to_owned();
            changed.replace_range(at..=at, with.encode_utf8(&mut [0; 4]));
            refused(f, &changed);
        }
        2 => {
            let mut segments: Vec<String> = valid.jwt.split('.').map(str::to_owned).collect();
            let which = usize::from(pick >> 1) % 3;
            let replacement = URL_SAFE_NO_PAD.encode(rest.get(1..).unwrap_or_default());
            if segments[which] == replacement {
                return;
            }
            segments[which] = replacement;
            refused(f, &segments.join("."));
        }
        3 => {
            let mut parts = rest.splitn(3, |&b| b == b'\n');
            let mut next = || URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default());
            let jwt = format!("{}.{}.{}", next(), next(), next());
            refused(f, &jwt);
        }
        _ => {
            // Anywhere from two days before the session to two days after it ends.
            let span = valid.exp - valid.nbf + 4 * 86_400 * SECOND;
            let offset = (number(rest.get(1..).unwrap_or_default()) % span as u64) as i64;
            let at = valid.nbf - 2 * 86_400 * SECOND + offset;
            let inside = at + LEEWAY >= valid.nbf && at < valid.exp + LEEWAY;
            let answer = f.runtime.block_on(f.verifier.verify(&valid.jwt, Timestamp::from_micros(at)));
            assert_eq!(answer.is_ok(), inside, "at {at}: {answer:?}");
        }
    }
});
