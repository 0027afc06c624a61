//! Admin sessions: Clerk JWTs checked against a real JWKS served over HTTP on 127.0.0.1, a PEM
//! key, and the development key on disk. Keys are made here; the clock is a fixed timestamp.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use tokenledger::session::{
    ClerkArgs, DevKey, KeySource, Session, SessionConfig, SessionError, SessionVerifier,
    looks_like_jwt,
};
use tokenledger::store::DatabaseUrl;
use tokenledger_events::Timestamp;

const ISSUER: &str = "https://clerk.tokenledger.test";
const PARTY: &str = "https://admin.tokenledger.test";
/// 2027-01-15T08:00:00Z, in seconds.
const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_micros(NOW * 1_000_000)
}

fn unauthorized(why: &str) -> SessionError {
    SessionError::Unauthorized(why.to_owned())
}

/// An RSA test key, made once per test binary (2048-bit generation takes a moment).
struct TestKey {
    kid: &'static str,
    private: RsaPrivateKey,
    encoding: EncodingKey,
}

impl TestKey {
    fn new(kid: &'static str) -> TestKey {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
        let der = private.to_pkcs1_der().expect("pkcs1 der");
        TestKey {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            private,
        }
    }

    fn public_pem(&self) -> String {
        self.private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public pem")
    }

    fn jwk(&self) -> Value {
        let public = self.private.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    /// Signed RS256 with this key, with the header naming `kid`.
    fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(self.kid), claims)
    }
}

static KEY_A: LazyLock<TestKey> = LazyLock::new(|| TestKey::new("ins_key_a"));
static KEY_B: LazyLock<TestKey> = LazyLock::new(|| TestKey::new("ins_key_b"));
static KEY_C: LazyLock<TestKey> = LazyLock::new(|| TestKey::new("ins_key_c"));

/// A valid Clerk admin session's claims at [`NOW`].
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "azp": PARTY,
        "sub": "user_1",
        "sid": "sess_1",
        "iat": NOW - 30,
        "nbf": NOW - 40,
        "exp": NOW + 60,
        "sts": "active",
        "metadata": { "role": "admin" },
    })
}

fn claims_with(changes: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    changes(c.as_object_mut().expect("object"));
    c
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn admin() -> Session {
    Session {
        sub: "user_1".into(),
        sid: "sess_1".into(),
        is_admin: true,
    }
}

fn clerk_args() -> ClerkArgs {
    ClerkArgs {
        clerk_jwt_key: None,
        clerk_jwks_url: None,
        clerk_issuer: Some(ISSUER.into()),
        clerk_authorized_parties: vec![PARTY.into()],
        admin_role_claim: "metadata.role".into(),
    }
}

fn pem_args(pem: String) -> ClerkArgs {
    ClerkArgs {
        clerk_jwt_key: Some(pem),
        ..clerk_args()
    }
}

fn verifier(args: ClerkArgs, dev: Option<DevKey>) -> SessionVerifier {
    let config = args.config().expect("config").expect("clerk configured");
    SessionVerifier::new(Some(config), dev)
        .expect("verifier")
        .expect("verifier configured")
}

/// A JWKS endpoint on 127.0.0.1 whose key set the test can change, counting its fetches.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Value>>,
}

#[derive(Clone)]
struct JwksState {
    fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Value>>,
    status: StatusCode,
}

async fn serve_jwks(State(s): State<JwksState>) -> (StatusCode, Json<Value>) {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = s.keys.lock().expect("keys").clone();
    (s.status, Json(json!({ "keys": keys })))
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        JwksServer::start_answering(StatusCode::OK, keys).await
    }

    async fn start_answering(status: StatusCode, keys: Vec<Value>) -> JwksServer {
        let state = JwksState {
            fetches: Arc::new(AtomicUsize::new(0)),
            keys: Arc::new(Mutex::new(Value::Array(keys))),
            status,
        };
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            fetches: state.fetches,
            keys: state.keys,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().expect("keys") = Value::Array(keys);
    }

    fn args(&self) -> ClerkArgs {
        ClerkArgs {
            clerk_jwks_url: Some(self.url.clone()),
            ..clerk_args()
        }
    }
}

#[tokio::test]
async fn each_session_is_accepted_or_refused_with_the_exact_reason() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let sessions = verifier(server.args(), None);
    let a = &*KEY_A;
    let valid = a.sign(&claims());
    let (valid_header, valid_payload) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(a.kid.into());
        let secret = EncodingKey::from_secret(a.public_pem().as_bytes());
        jsonwebtoken::encode(&header, &claims(), &secret).expect("hs256")
    };
    let rs384 = {
        let mut header = Header::new(Algorithm::RS384);
        header.kid = Some(a.kid.into());
        jsonwebtoken::encode(&header, &claims(), &a.encoding).expect("rs384")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": a.kid})),
        b64(&claims())
    );
    let signed_not_json = {
        // A signature over a payload that is not JSON: well signed, still malformed.
        let message = format!("{valid_header}.{}", URL_SAFE_NO_PAD.encode(b"not json"));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &a.encoding, Algorithm::RS256)
                .expect("sign");
        format!("{message}.{signature}")
    };
    let member = || Err(SessionError::NotAdmin);

    let cases: Vec<(&str, String, Result<Session, SessionError>)> = vec![
        ("valid admin", valid.clone(), Ok(admin())),
        (
            "organization admin via o.rol",
            a.sign(&claims_with(|c| {
                c.remove("metadata");
                c.insert(
                    "o".into(),
                    json!({"id": "org_1", "rol": "admin", "slg": "acme"}),
                );
            })),
            Ok(admin()),
        ),
        (
            "member (metadata.role is not admin)",
            a.sign(&claims_with(|c| {
                c.insert("metadata".into(), json!({"role": "member"}));
            })),
            member(),
        ),
        (
            "organization member",
            a.sign(&claims_with(|c| {
                c.remove("metadata");
                c.insert("o".into(), json!({"id": "org_1", "rol": "member"}));
            })),
            member(),
        ),
        (
            "role admin at the top level, not at metadata.role",
            a.sign(&claims_with(|c| {
                c.remove("metadata");
                c.insert("role".into(), json!("admin"));
            })),
            member(),
        ),
        (
            "signed with another key under the JWKS kid",
            KEY_B.sign_as(Some(a.kid), &claims()),
            Err(unauthorized("Session signature is invalid")),
        ),
        (
            "signature of another token",
            format!(
                "{valid_header}.{}.{}",
                b64(&claims_with(|c| {
                    c.insert("sub".into(), json!("user_2"));
                })),
                valid.rsplit('.').next().unwrap()
            ),
            Err(unauthorized("Session signature is invalid")),
        ),
        (
            "wrong iss",
            a.sign(&claims_with(|c| {
                c.insert("iss".into(), json!("https://clerk.evil.test"));
            })),
            Err(unauthorized("Session issuer is not accepted")),
        ),
        (
            "no iss",
            a.sign(&claims_with(|c| {
                c.remove("iss");
            })),
            Err(unauthorized("Session issuer is not accepted")),
        ),
        (
            "wrong azp",
            a.sign(&claims_with(|c| {
                c.insert("azp".into(), json!("https://evil.test"));
            })),
            Err(unauthorized("Session is not for an authorized party")),
        ),
        (
            "no azp",
            a.sign(&claims_with(|c| {
                c.remove("azp");
            })),
            Err(unauthorized("Session is not for an authorized party")),
        ),
        (
            "expired 10 s ago",
            a.sign(&claims_with(|c| {
                c.insert("exp".into(), json!(NOW - 10));
            })),
            Err(unauthorized("Session has expired")),
        ),
        (
            "expired 3 s ago, within the 5 s skew",
            a.sign(&claims_with(|c| {
                c.insert("exp".into(), json!(NOW - 3));
            })),
            Ok(admin()),
        ),
        (
            "no exp",
            a.sign(&claims_with(|c| {
                c.remove("exp");
            })),
            Err(unauthorized("Session is missing exp")),
        ),
        (
            "nbf 10 s ahead",
            a.sign(&claims_with(|c| {
                c.insert("nbf".into(), json!(NOW + 10));
            })),
            Err(unauthorized("Session is not yet valid")),
        ),
        (
            "nbf 3 s ahead, within the 5 s skew",
            a.sign(&claims_with(|c| {
                c.insert("nbf".into(), json!(NOW + 3));
            })),
            Ok(admin()),
        ),
        (
            "alg none",
            alg_none,
            Err(unauthorized("Session algorithm must be RS256")),
        ),
        (
            "HS256 keyed with the RSA public key PEM",
            hs256_with_public_key,
            Err(unauthorized("Session algorithm must be RS256")),
        ),
        (
            "RS384",
            rs384,
            Err(unauthorized("Session algorithm must be RS256")),
        ),
        (
            "no sid",
            a.sign(&claims_with(|c| {
                c.remove("sid");
            })),
            Err(unauthorized("Session is missing sid")),
        ),
        (
            "no sub",
            a.sign(&claims_with(|c| {
                c.remove("sub");
            })),
            Err(unauthorized("Session is missing sub")),
        ),
        (
            "sts pending",
            a.sign(&claims_with(|c| {
                c.insert("sts".into(), json!("pending"));
            })),
            Err(unauthorized("Session is pending")),
        ),
        (
            "no kid with a JWKS",
            a.sign_as(None, &claims()),
            Err(unauthorized("Session has no key id (kid)")),
        ),
        (
            "garbage",
            "not a session".into(),
            Err(unauthorized("Malformed session")),
        ),
        (
            "an API token",
            "tl_test_4fGh8kLmNpQrStUvWxYz0123456789abcdefghijkABCDEF".into(),
            Err(unauthorized("Malformed session")),
        ),
        (
            "two segments",
            format!("{valid_header}.{valid_payload}"),
            Err(unauthorized("Malformed session")),
        ),
        (
            "header that is not JSON",
            format!("eyJub3Q.{valid_payload}.c2ln"),
            Err(unauthorized("Malformed session")),
        ),
        (
            "signed payload that is not JSON",
            signed_not_json,
            Err(unauthorized("Malformed session")),
        ),
        (
            "empty",
            String::new(),
            Err(unauthorized("Malformed session")),
        ),
    ];

    let mut wrong = Vec::new();
    for (name, jwt, expected) in &cases {
        let got = sessions.verify(jwt, now()).await;
        if &got != expected {
            wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
        if let Err(e) = &got {
            let text = e.to_string();
            let echoed = jwt
                .split('.')
                .any(|part| part.len() > 8 && text.contains(part));
            if echoed {
                wrong.push(format!("{name}: the error echoes the token: {text}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(unauthorized("x").status(), 401);
    assert_eq!(SessionError::NotAdmin.status(), 403);
    assert_eq!(SessionError::NotAdmin.to_string(), "Admin role required");
    assert_eq!(SessionError::Unavailable("x".into()).status(), 503);
}

#[tokio::test]
async fn authenticate_returns_non_admins_that_verify_refuses() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let sessions = verifier(server.args(), None);
    let jwt = KEY_A.sign(&claims_with(|c| {
        c.remove("metadata");
    }));
    assert_eq!(
        sessions.authenticate(&jwt, now()).await,
        Ok(Session {
            is_admin: false,
            ..admin()
        })
    );
    assert_eq!(
        sessions.verify(&jwt, now()).await,
        Err(SessionError::NotAdmin)
    );
    assert_eq!(admin().actor(), "user:user_1/session:sess_1");
}

#[tokio::test]
async fn the_admin_role_claim_path_is_configurable() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let sessions = verifier(
        ClerkArgs {
            admin_role_claim: "public_metadata.access.role".into(),
            ..server.args()
        },
        None,
    );
    let nested = KEY_A.sign(&claims_with(|c| {
        c.remove("metadata");
        c.insert(
            "public_metadata".into(),
            json!({"access": {"role": "admin"}}),
        );
    }));
    assert_eq!(sessions.verify(&nested, now()).await, Ok(admin()));
    // metadata.role is no longer the claim that counts.
    let old_place = KEY_A.sign(&claims());
    assert_eq!(
        sessions.verify(&old_place, now()).await,
        Err(SessionError::NotAdmin)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_set_is_fetched_once_and_again_once_for_a_rotated_key() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let sessions = verifier(server.args(), None);
    assert_eq!(
        server.fetches(),
        0,
        "nothing is fetched before the first session"
    );

    // Concurrent first uses make one fetch between them.
    let jwt = KEY_A.sign(&claims());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (sessions, jwt) = (sessions.clone(), jwt.clone());
        tasks.spawn(async move { sessions.verify(&jwt, now()).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), Ok(admin()));
    }
    for _ in 0..50 {
        assert_eq!(sessions.verify(&jwt, now()).await, Ok(admin()));
    }
    assert_eq!(server.fetches(), 1);

    // Clerk rotates: the set now also has key C, which the cache has never seen.
    server.set_keys(vec![KEY_A.jwk(), KEY_C.jwk()]);
    let rotated = KEY_C.sign(&claims());
    assert_eq!(sessions.verify(&rotated, now()).await, Ok(admin()));
    assert_eq!(server.fetches(), 2);
    for _ in 0..20 {
        assert_eq!(sessions.verify(&rotated, now()).await, Ok(admin()));
        assert_eq!(sessions.verify(&jwt, now()).await, Ok(admin()));
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_cause_at_most_one_refetch() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let sessions = verifier(server.args(), None);
    assert_eq!(
        sessions.verify(&KEY_A.sign(&claims()), now()).await,
        Ok(admin())
    );
    assert_eq!(server.fetches(), 1);

    let unknown = KEY_B.sign_as(Some("ins_unknown_1"), &claims());
    assert_eq!(
        sessions.verify(&unknown, now()).await,
        Err(unauthorized("Session key ins_unknown_1 is unknown"))
    );
    assert_eq!(
        server.fetches(),
        2,
        "an unknown kid fetches the set again, once"
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let sessions = sessions.clone();
        let jwt = KEY_B.sign_as(Some(&format!("ins_unknown_{i}_x")), &claims());
        tasks.spawn(async move { sessions.verify(&jwt, now()).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task").map_err(|e| e.status()), Err(401));
    }
    // A kid that is not plain text is not repeated back.
    let odd = KEY_B.sign_as(Some("<script>"), &claims());
    assert_eq!(
        sessions.verify(&odd, now()).await,
        Err(unauthorized("Session key is unknown"))
    );
    assert_eq!(server.fetches(), 2, "made-up kids do not hammer the JWKS");
    // Known keys are unaffected.
    assert_eq!(
        sessions.verify(&KEY_A.sign(&claims()), now()).await,
        Ok(admin())
    );
}

#[tokio::test]
async fn a_key_set_that_cannot_be_fetched_answers_503() {
    let failing = JwksServer::start_answering(StatusCode::INTERNAL_SERVER_ERROR, vec![]).await;
    let sessions = verifier(failing.args(), None);
    let result = sessions.verify(&KEY_A.sign(&claims()), now()).await;
    assert!(
        matches!(&result, Err(SessionError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(result.unwrap_err().status(), 503);

    // Nothing listening at all.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let sessions = verifier(
        ClerkArgs {
            clerk_jwks_url: Some(format!("http://{closed}/jwks.json")),
            ..clerk_args()
        },
        None,
    );
    let result = sessions.verify(&KEY_A.sign(&claims()), now()).await;
    assert_eq!(result.map_err(|e| e.status()), Err(503));
}

#[tokio::test]
async fn a_pem_key_verifies_without_any_network() {
    let pem = KEY_A.public_pem();
    let sessions = verifier(pem_args(pem.clone()), None);
    assert_eq!(
        sessions.verify(&KEY_A.sign(&claims()), now()).await,
        Ok(admin())
    );
    assert_eq!(
        sessions
            .verify(&KEY_A.sign_as(None, &claims()), now())
            .await,
        Ok(admin()),
        "a single PEM key needs no kid"
    );
    assert_eq!(
        sessions.verify(&KEY_B.sign(&claims()), now()).await,
        Err(unauthorized("Session signature is invalid"))
    );
    assert_eq!(
        sessions
            .verify(
                &KEY_A.sign(&claims_with(|c| {
                    c.insert("exp".into(), json!(NOW - 10));
                })),
                now()
            )
            .await,
        Err(unauthorized("Session has expired"))
    );

    // The forms an environment file tends to hold: one line, or literal \n.
    let one_line = pem.replace('\n', "");
    let escaped = pem.replace('\n', "\\n");
    for form in [one_line, escaped] {
        let sessions = verifier(pem_args(form), None);
        assert_eq!(
            sessions.verify(&KEY_A.sign(&claims()), now()).await,
            Ok(admin())
        );
    }
}

#[test]
fn clerk_settings_errors_name_the_variable() {
    let pem = KEY_A.public_pem();
    let error = |args: ClerkArgs| args.config().expect_err("config must be refused");
    let cases: Vec<(&str, ClerkArgs, &[&str])> = vec![
        (
            "key without issuer",
            ClerkArgs {
                clerk_issuer: None,
                ..pem_args(pem.clone())
            },
            &["CLERK_ISSUER", "CLERK_JWT_KEY"],
        ),
        (
            "JWKS without issuer",
            ClerkArgs {
                clerk_issuer: Some("  ".into()),
                clerk_jwks_url: Some("https://clerk.example.com/.well-known/jwks.json".into()),
                ..clerk_args()
            },
            &["CLERK_ISSUER", "CLERK_JWKS_URL"],
        ),
        (
            "key without authorized parties",
            ClerkArgs {
                clerk_authorized_parties: vec![" ".into()],
                ..pem_args(pem.clone())
            },
            &["CLERK_AUTHORIZED_PARTIES"],
        ),
        (
            "both key sources",
            ClerkArgs {
                clerk_jwks_url: Some("https://clerk.example.com/.well-known/jwks.json".into()),
                ..pem_args(pem.clone())
            },
            &["CLERK_JWT_KEY", "CLERK_JWKS_URL"],
        ),
        (
            "PEM that does not parse",
            pem_args("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----".into()),
            &["CLERK_JWT_KEY"],
        ),
        (
            "not PEM at all",
            pem_args("sk_live_123".into()),
            &["CLERK_JWT_KEY"],
        ),
        (
            "a private key",
            pem_args(
                KEY_A
                    .private
                    .to_pkcs8_pem(LineEnding::LF)
                    .expect("pem")
                    .to_string(),
            ),
            &["CLERK_JWT_KEY", "private"],
        ),
        (
            "JWKS URL that is not http(s)",
            ClerkArgs {
                clerk_jwks_url: Some("ftp://clerk.example.com/jwks.json".into()),
                ..clerk_args()
            },
            &["CLERK_JWKS_URL", "https://"],
        ),
        (
            "JWKS URL that is not a URL",
            ClerkArgs {
                clerk_jwks_url: Some("clerk.example.com".into()),
                ..clerk_args()
            },
            &["CLERK_JWKS_URL"],
        ),
        (
            "claim path with an empty segment",
            ClerkArgs {
                admin_role_claim: "metadata..role".into(),
                ..pem_args(pem.clone())
            },
            &["ADMIN_ROLE_CLAIM"],
        ),
    ];
    for (name, args, words) in cases {
        let message = error(args);
        for word in words {
            assert!(message.contains(word), "{name}: {message:?} lacks {word:?}");
        }
    }

    // Issuer and parties alone configure nothing: no key source means no Clerk.
    assert!(clerk_args().config().expect("config").is_none());
    let config = pem_args(pem).config().expect("config").expect("some");
    assert!(matches!(config.keys, KeySource::Pem(_)));
    assert_eq!(config.authorized_parties, vec![PARTY.to_owned()]);
}

#[test]
fn nothing_configured_means_no_verifier() {
    assert!(
        SessionVerifier::new(None, None)
            .expect("no error")
            .is_none()
    );
}

#[test]
fn clerk_settings_come_from_flags_with_comma_separated_parties() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        clerk: ClerkArgs,
    }
    let cli = Cli::try_parse_from([
        "tokenledger",
        "--clerk-jwks-url",
        "https://clerk.example.com/.well-known/jwks.json",
        "--clerk-issuer",
        ISSUER,
        "--clerk-authorized-parties",
        "https://a.example.com,https://b.example.com",
    ])
    .expect("parse");
    assert_eq!(
        cli.clerk.clerk_authorized_parties,
        vec!["https://a.example.com", "https://b.example.com"]
    );
    assert_eq!(cli.clerk.admin_role_claim, "metadata.role");
    let config: SessionConfig = cli.clerk.config().expect("config").expect("some");
    assert!(matches!(config.keys, KeySource::Jwks(url) if url.ends_with("/jwks.json")));
}

#[test]
fn looks_like_jwt_tells_sessions_from_api_tokens() {
    let jwt = KEY_A.sign(&claims());
    assert!(looks_like_jwt(&jwt));
    assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
    for not in [
        "tl_test_4fGh8kLmNpQrStUvWxYz0123456789abcdefghijkABCDEF",
        "",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
        "eyJhbGciOiJSUzI1NiJ9..sig",
        "abc.def.ghi",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig.extra",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIi+OiJ4In0.sig",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig=",
    ] {
        assert!(!looks_like_jwt(not), "{not:?}");
    }
}

#[test]
fn the_dev_key_lives_beside_the_database() {
    let url = |raw: &str| DatabaseUrl::parse(raw).expect("url");
    assert_eq!(
        DevKey::path_for(&url("sqlite:///var/lib/tokenledger/log.db?mode=rwc")),
        std::path::PathBuf::from("/var/lib/tokenledger/log.db.dev-session-key.pem")
    );
    assert_eq!(
        DevKey::path_for(&url("sqlite://tokenledger.db?mode=rwc")),
        std::path::PathBuf::from("tokenledger.db.dev-session-key.pem")
    );
    assert_eq!(
        DevKey::path_for(&url("postgres://app:secret@db.internal/tokenledger")),
        std::path::PathBuf::from("tokenledger-dev-session-key.pem")
    );
}

#[tokio::test]
async fn the_dev_key_is_made_once_with_owner_only_permissions_and_signs_sessions() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("log.db.dev-session-key.pem");
    assert!(DevKey::load(&path).expect("load").is_none());

    let made = DevKey::load_or_create(&path).expect("create");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let stored = std::fs::read(&path).expect("read");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    // A second call loads the same key: what one signed, the other verifies.
    let again = DevKey::load_or_create(&path).expect("load");
    assert_eq!(std::fs::read(&path).expect("read"), stored);
    let admin_jwt = made.sign("user_dev", true, now()).expect("sign");
    let member_jwt = made.sign("user_dev", false, now()).expect("sign");
    let sessions = SessionVerifier::new(None, Some(again))
        .expect("verifier")
        .expect("configured");

    let session = sessions.verify(&admin_jwt, now()).await.expect("admin");
    assert_eq!(session.sub, "user_dev");
    assert!(session.is_admin);
    assert!(session.sid.starts_with("sess_dev_"), "{}", session.sid);
    assert_eq!(
        sessions.verify(&member_jwt, now()).await,
        Err(SessionError::NotAdmin)
    );
    let member = sessions
        .authenticate(&member_jwt, now())
        .await
        .expect("member");
    assert!(!member.is_admin);

    // Eight hours, with the same skew as any session.
    let eight_hours = std::time::Duration::from_secs(8 * 3600);
    assert!(
        sessions
            .verify(
                &admin_jwt,
                now()
                    .plus(eight_hours)
                    .minus(std::time::Duration::from_secs(1))
            )
            .await
            .is_ok()
    );
    assert_eq!(
        sessions
            .verify(
                &admin_jwt,
                now()
                    .plus(eight_hours)
                    .plus(std::time::Duration::from_secs(6))
            )
            .await,
        Err(unauthorized("Session has expired"))
    );

    // A dev-looking token signed by some other key is not a dev session.
    let forged = KEY_B.sign_as(
        Some("tokenledger-dev"),
        &json!({"iss": "tokenledger-dev", "azp": "tokenledger-dev", "sub": "x", "sid": "y",
                "nbf": NOW, "exp": NOW + 60, "metadata": {"role": "admin"}}),
    );
    assert_eq!(
        sessions.verify(&forged, now()).await,
        Err(unauthorized("Session signature is invalid"))
    );
    // Clerk sessions are not accepted where only the dev key is configured.
    assert_eq!(
        sessions
            .verify(&KEY_A.sign(&claims()), now())
            .await
            .map_err(|e| e.status()),
        Err(401)
    );
    assert!(made.sign("  ", true, now()).is_err());
}

#[tokio::test]
async fn a_dev_session_is_refused_without_the_dev_key() {
    let dir = tempfile::tempdir().expect("dir");
    let dev = DevKey::load_or_create(&dir.path().join("k.pem")).expect("create");
    let jwt = dev.sign("user_dev", true, now()).expect("sign");
    let refused = Err(unauthorized(
        "Development sessions are not accepted by this server",
    ));

    let server = JwksServer::start(vec![KEY_A.jwk()]).await;
    let clerk_only = verifier(server.args(), None);
    assert_eq!(clerk_only.verify(&jwt, now()).await, refused);
    assert_eq!(server.fetches(), 0, "a dev kid never reaches the JWKS");
    let pem_only = verifier(pem_args(KEY_A.public_pem()), None);
    assert_eq!(pem_only.verify(&jwt, now()).await, refused);

    // With both, each kind of session goes to its own key.
    let both = verifier(server.args(), Some(dev));
    assert!(both.verify(&jwt, now()).await.expect("dev").is_admin);
    assert_eq!(
        both.verify(&KEY_A.sign(&claims()), now()).await,
        Ok(admin())
    );
    // Clerk's key does not make a dev-issued claim set acceptable, nor the reverse.
    let clerk_signed_dev_claims = KEY_A.sign(&json!({
        "iss": "tokenledger-dev", "azp": "tokenledger-dev", "sub": "x", "sid": "y",
        "nbf": NOW, "exp": NOW + 60, "metadata": {"role": "admin"}
    }));
    assert_eq!(
        both.verify(&clerk_signed_dev_claims, now()).await,
        Err(unauthorized("Session issuer is not accepted"))
    );
}

#[test]
fn a_damaged_dev_key_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("log.db.dev-session-key.pem");
    std::fs::write(&path, "not a key").expect("write");
    let message = DevKey::load(&path).expect_err("refused");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(DevKey::load_or_create(&path).is_err());
    let debug = format!(
        "{:?}",
        DevKey::load_or_create(&dir.path().join("new.pem")).expect("new")
    );
    assert!(!debug.contains("PRIVATE"), "{debug}");
}
