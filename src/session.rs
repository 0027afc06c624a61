//! Admin sign-in: Clerk session JWTs verified here, without calling Clerk per request.
//!
//! This module owns the whole answer to "who is this human and may they administer tokens":
//! which keys are trusted (Clerk's PEM key, Clerk's JWKS fetched and cached, or the local
//! development key), which claims are required, and who counts as an admin. It must never
//! accept an algorithm other than RS256 (so never `none`, never HMAC with a public key), never
//! read the system clock for `exp`/`nbf` (the caller passes `now`), never fall open when nothing
//! is configured, and never put a token in an error message or a log line.
//!
//! # Layout
//!
//! - [`ClerkArgs`] → [`SessionConfig`]: the settings, checked once at startup.
//! - [`SessionVerifier`]: picks the key by the JWT's `kid`, checks the signature, then the claims.
//! - `jwks`: the cached JWKS, fetched again (at most once per interval) for an unknown `kid`.
//! - `dev`: [`DevKey`], the development signing key kept beside the database.

mod dev;
mod jwks;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Map, Value};
use tokenledger_events::Timestamp;

pub use dev::DevKey;
pub(crate) use dev::write_private;

use crate::store::DatabaseUrl;

/// The answer of the admin surface when neither Clerk nor a development key is configured.
pub const NOT_CONFIGURED: &str = "Admin sign-in is not configured";

/// The `kid`, `iss` and `azp` of development sessions.
pub const DEV_KID: &str = "tokenledger-dev";

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_MICROS: i64 = 5_000_000;

/// Real sessions are a few hundred bytes to a few KiB (cookies cap at 4 KiB); anything far
/// larger is refused before any base64 or JSON work.
const MAX_JWT_LEN: usize = 16 * 1024;

/// Smaller RSA keys are refused wherever a key enters (PEM, JWKS, development key file).
const MIN_RSA_BITS: usize = 2048;

/// Clerk settings, from flags or the environment.
#[derive(Clone, Debug, clap::Args)]
pub struct ClerkArgs {
    /// Clerk's JWT public key in PEM form (Clerk dashboard → API keys → JWT public key);
    /// sessions are then verified with no network at all. One line or literal `\n` is fine.
    #[arg(long, env = "CLERK_JWT_KEY", hide_env_values = true)]
    pub clerk_jwt_key: Option<String>,
    /// Clerk's JWKS URL (https://YOUR-APP.clerk.accounts.dev/.well-known/jwks.json): fetched
    /// on first use, cached, and fetched again when a session names an unknown key id.
    #[arg(long, env = "CLERK_JWKS_URL")]
    pub clerk_jwks_url: Option<String>,
    /// The exact `iss` of your Clerk sessions (your Clerk Frontend API URL).
    #[arg(long, env = "CLERK_ISSUER")]
    pub clerk_issuer: Option<String>,
    /// Comma-separated origins accepted as a session's `azp`, e.g. https://admin.example.com
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES", value_delimiter = ',')]
    pub clerk_authorized_parties: Vec<String>,
    /// Dot-separated path of the session claim that makes a user an admin when it equals
    /// `admin` (an organization role `o.rol` of `admin` does too).
    #[arg(long, env = "ADMIN_ROLE_CLAIM", default_value = "metadata.role")]
    pub admin_role_claim: String,
}

const BOTH_KEY_SOURCES: &str = "CLERK_JWT_KEY and CLERK_JWKS_URL are both set; set one: the PEM \
     public key (verifies with no network) or the JWKS URL (fetched and cached)";

impl ClerkArgs {
    /// The settings checked into a config; `Ok(None)` when no key source is set. Every error
    /// names the variable and what it accepts.
    pub fn config(&self) -> Result<Option<SessionConfig>, String> {
        let (keys, source_var) = match (
            non_empty(&self.clerk_jwt_key),
            non_empty(&self.clerk_jwks_url),
        ) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(BOTH_KEY_SOURCES.into()),
            (Some(pem), None) => {
                let pem = normalize_pem(pem);
                parse_rsa_public_pem(&pem).map_err(|why| format!("CLERK_JWT_KEY {why}"))?;
                (KeySource::Pem(pem), "CLERK_JWT_KEY")
            }
            (None, Some(url)) => {
                check_jwks_url(url)?;
                (KeySource::Jwks(url.to_owned()), "CLERK_JWKS_URL")
            }
        };
        let issuer = non_empty(&self.clerk_issuer).ok_or_else(|| {
            format!(
                "CLERK_ISSUER is required with {source_var}: the exact `iss` of your Clerk \
                 sessions, e.g. https://clerk.example.com"
            )
        })?;
        let authorized_parties: Vec<String> = self
            .clerk_authorized_parties
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if authorized_parties.is_empty() {
            return Err(format!(
                "CLERK_AUTHORIZED_PARTIES is required with {source_var}: comma-separated origins \
                 accepted as a session's `azp`, e.g. https://admin.example.com"
            ));
        }
        claim_path(&self.admin_role_claim)?;
        Ok(Some(SessionConfig {
            keys,
            issuer: issuer.to_owned(),
            authorized_parties,
            admin_role_claim: self.admin_role_claim.trim().to_owned(),
        }))
    }
}

/// Checked Clerk settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub keys: KeySource,
    pub issuer: String,
    pub authorized_parties: Vec<String>,
    /// Dot-separated path into the claims, e.g. `metadata.role`.
    pub admin_role_claim: String,
}

/// Where Clerk's public keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A PEM public key (normalized to one PEM block with 64-character lines).
    Pem(String),
    /// A JWKS URL (http or https).
    Jwks(String),
}

/// A verified session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub sub: String,
    pub sid: String,
    pub is_admin: bool,
}

impl Session {
    /// The actor recorded on every event this session causes: `user:<sub>/session:<sid>`.
    pub fn actor(&self) -> String {
        format!("user:{}/session:{}", self.sub, self.sid)
    }
}

/// Why a session was refused. The texts are safe to answer with: none contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// 401: what was wrong with the session.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid session of a user who is not an admin.
    #[error("Admin role required")]
    NotAdmin,
    /// 503: the keys to check it could not be fetched.
    #[error("{0}")]
    Unavailable(String),
}

impl SessionError {
    pub fn status(&self) -> u16 {
        match self {
            SessionError::Unauthorized(_) => 401,
            SessionError::NotAdmin => 403,
            SessionError::Unavailable(_) => 503,
        }
    }
}

fn unauthorized(why: impl Into<String>) -> SessionError {
    SessionError::Unauthorized(why.into())
}

fn malformed() -> SessionError {
    unauthorized("Malformed session")
}

/// Whether a bearer credential has the form of a JWT (three base64url segments, the header
/// starting `eyJ`, i.e. `{"`) rather than an API token (which has no dots). The signature
/// segment may be empty so that an unsigned token is refused as such, not as a bad API token.
pub fn looks_like_jwt(s: &str) -> bool {
    let is_b64url = |seg: &str| {
        seg.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => {
            header.starts_with("eyJ")
                && !payload.is_empty()
                && is_b64url(header)
                && is_b64url(payload)
                && is_b64url(signature)
        }
        _ => false,
    }
}

/// Verifies session JWTs; cheap to clone.
#[derive(Clone)]
pub struct SessionVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    clerk: Option<Clerk>,
    /// Set only where development sessions are accepted (never in production: the caller
    /// decides that by passing the key, or where to look for it, or neither).
    dev: std::sync::OnceLock<Dev>,
    /// Where to look for the development key while none is loaded: a server that started
    /// before `tokenledger dev-session` made the key accepts its sessions once it exists.
    dev_key_file: Option<PathBuf>,
}

struct Clerk {
    keys: ClerkKeys,
    expect: Expect,
}

struct Dev {
    key: Arc<DecodingKey>,
    expect: Expect,
}

/// What the sessions signed by a key must carry.
struct Expect {
    issuer: String,
    authorized_parties: Vec<String>,
    admin_role_claim: Vec<String>,
}

enum ClerkKeys {
    Pem(Arc<DecodingKey>),
    Jwks(jwks::JwksCache),
}

impl std::fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clerk = self.inner.clerk.as_ref().map(|c| match &c.keys {
            ClerkKeys::Pem(_) => "pem".to_owned(),
            ClerkKeys::Jwks(j) => format!("jwks {}", j.url()),
        });
        f.debug_struct("SessionVerifier")
            .field("clerk", &clerk)
            .field("dev", &self.inner.dev.get().is_some())
            .field("dev_key_file", &self.inner.dev_key_file)
            .finish()
    }
}

impl SessionVerifier {
    /// `clerk`: the Clerk settings, if any; `dev`: the development key, if this deployment
    /// accepts development sessions. `Ok(None)` when neither: the caller then answers 503
    /// [`NOT_CONFIGURED`], never open.
    pub fn new(
        clerk: Option<SessionConfig>,
        dev: Option<DevKey>,
    ) -> Result<Option<SessionVerifier>, String> {
        SessionVerifier::with_dev_key_file(clerk, dev, None)
    }

    /// As [`SessionVerifier::new`]; with `dev_key_file` (development only), while no
    /// development key is loaded, the file is looked for again when a development session
    /// arrives, so a key made after start-up is accepted without a restart.
    pub fn with_dev_key_file(
        clerk: Option<SessionConfig>,
        dev: Option<DevKey>,
        dev_key_file: Option<PathBuf>,
    ) -> Result<Option<SessionVerifier>, String> {
        if clerk.is_none() && dev.is_none() && dev_key_file.is_none() {
            return Ok(None);
        }
        let clerk = clerk.map(Clerk::new).transpose()?;
        let slot = std::sync::OnceLock::new();
        if let Some(d) = dev {
            let _ = slot.set(Dev::of(&d));
        }
        Ok(Some(SessionVerifier {
            inner: Arc::new(Inner {
                clerk,
                dev: slot,
                dev_key_file,
            }),
        }))
    }

    /// Whether any session can be verified now: Clerk is configured, or a development key
    /// is loaded (looked for again first where a key file is watched). Without either the
    /// admin surface answers 503 [`NOT_CONFIGURED`].
    pub fn is_configured(&self) -> bool {
        self.inner.clerk.is_some() || self.dev().is_some()
    }

    /// Whether development sessions may be accepted here: a key is loaded or may appear.
    pub fn accepts_dev_sessions(&self) -> bool {
        self.inner.dev.get().is_some() || self.inner.dev_key_file.is_some()
    }

    /// The development key, loading it from the watched file the first time it is there.
    fn dev(&self) -> Option<&Dev> {
        if let Some(dev) = self.inner.dev.get() {
            return Some(dev);
        }
        let path = self.inner.dev_key_file.as_deref()?;
        match DevKey::load(path) {
            Ok(Some(key)) => {
                tracing::info!(path = %path.display(), "development session key loaded");
                Some(self.inner.dev.get_or_init(|| Dev::of(&key)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "development session key unusable");
                None
            }
        }
    }

    /// An admin's session at `now`: [`SessionVerifier::authenticate`], then
    /// [`SessionError::NotAdmin`] for anyone who is not an admin.
    pub async fn verify(&self, jwt: &str, now: Timestamp) -> Result<Session, SessionError> {
        let session = self.authenticate(jwt, now).await?;
        if !session.is_admin {
            return Err(SessionError::NotAdmin);
        }
        Ok(session)
    }

    /// Any valid session at `now`, admin or not.
    pub async fn authenticate(&self, jwt: &str, now: Timestamp) -> Result<Session, SessionError> {
        if jwt.len() > MAX_JWT_LEN || !looks_like_jwt(jwt) {
            return Err(malformed());
        }
        let header = parse_header(jwt)?;
        // Checked before any key is chosen: this is what shuts out `none` and HS256-with-the-
        // public-key, whatever the library would do with them.
        if header.alg != "RS256" {
            return Err(unauthorized("Session algorithm must be RS256"));
        }
        let (key, expect) = if header.kid.as_deref() == Some(DEV_KID) {
            let dev = self.dev().ok_or_else(|| {
                unauthorized("Development sessions are not accepted by this server")
            })?;
            (dev.key.clone(), &dev.expect)
        } else {
            let clerk = self.inner.clerk.as_ref().ok_or_else(|| {
                unauthorized("Clerk sessions are not accepted: Clerk is not configured")
            })?;
            let key = match &clerk.keys {
                ClerkKeys::Pem(key) => key.clone(),
                ClerkKeys::Jwks(cache) => {
                    let kid = header
                        .kid
                        .as_deref()
                        .ok_or_else(|| unauthorized("Session has no key id (kid)"))?;
                    cache.key(kid).await?
                }
            };
            (key, &clerk.expect)
        };
        let claims = decode_claims(jwt, &key)?;
        check_claims(&claims, expect, now)
    }
}

impl Dev {
    /// Development sessions carry the role where `tokenledger dev-session` puts it, whatever
    /// ADMIN_ROLE_CLAIM says for Clerk.
    fn of(key: &DevKey) -> Dev {
        Dev {
            key: key.decoding_key(),
            expect: Expect {
                issuer: DEV_KID.to_owned(),
                authorized_parties: vec![DEV_KID.to_owned()],
                admin_role_claim: vec!["metadata".to_owned(), "role".to_owned()],
            },
        }
    }
}

impl Clerk {
    fn new(config: SessionConfig) -> Result<Clerk, String> {
        let keys = match config.keys {
            KeySource::Pem(pem) => {
                let key = parse_rsa_public_pem(&normalize_pem(&pem))
                    .map_err(|why| format!("CLERK_JWT_KEY {why}"))?;
                ClerkKeys::Pem(Arc::new(rsa_decoding_key(&key)))
            }
            KeySource::Jwks(url) => {
                check_jwks_url(&url)?;
                ClerkKeys::Jwks(jwks::JwksCache::new(url)?)
            }
        };
        Ok(Clerk {
            keys,
            expect: Expect {
                issuer: config.issuer,
                authorized_parties: config.authorized_parties,
                admin_role_claim: claim_path(&config.admin_role_claim)?,
            },
        })
    }
}

/// The two header fields that decide how a token is checked.
#[derive(serde::Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn parse_header(jwt: &str) -> Result<JwtHeader, SessionError> {
    let segment = jwt.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// The signature check, and nothing else: the library's own `exp`/`nbf`/`iss`/`aud` checks are
/// off (`exp`/`nbf` would read the system clock; the rest are checked below with our messages).
fn decode_claims(jwt: &str, key: &DecodingKey) -> Result<Map<String, Value>, SessionError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<Map<String, Value>>(jwt, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => unauthorized("Session signature is invalid"),
            ErrorKind::InvalidAlgorithm => unauthorized("Session algorithm must be RS256"),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => malformed(),
            other => {
                // A key we accepted failing to verify is ours to look into; the token stays out.
                tracing::warn!(error = ?other, "session verification failed");
                unauthorized("Session signature is invalid")
            }
        }),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expect,
    now: Timestamp,
) -> Result<Session, SessionError> {
    let now = now.as_micros();
    let exp = time_claim(claims, "exp")?;
    if now >= exp.saturating_add(LEEWAY_MICROS) {
        return Err(unauthorized("Session has expired"));
    }
    let nbf = time_claim(claims, "nbf")?;
    if now.saturating_add(LEEWAY_MICROS) < nbf {
        return Err(unauthorized("Session is not yet valid"));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer.as_str()) {
        return Err(unauthorized("Session issuer is not accepted"));
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if !azp.is_some_and(|azp| expect.authorized_parties.iter().any(|p| p == azp)) {
        return Err(unauthorized("Session is not for an authorized party"));
    }
    let sub = string_claim(claims, "sub")?;
    let sid = string_claim(claims, "sid")?;
    if claims.get("sts").and_then(Value::as_str) == Some("pending") {
        return Err(unauthorized("Session is pending"));
    }
    let is_admin = is_admin_role(lookup(claims, &expect.admin_role_claim))
        || is_admin_role(lookup(claims, &["o", "rol"]));
    Ok(Session { sub, sid, is_admin })
}

/// A NumericDate claim in microseconds; both `exp` and `nbf` are required.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<i64, SessionError> {
    let value = claims
        .get(name)
        .ok_or_else(|| unauthorized(format!("Session is missing {name}")))?;
    let seconds = value
        .as_i64()
        // NumericDate may carry a fraction; whole seconds are all that matter here.
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.floor() as i64)
        })
        .ok_or_else(|| unauthorized(format!("Session {name} is not a number")))?;
    Ok(seconds.saturating_mul(1_000_000))
}

/// A claim that names someone in the audit trail and the logs: at most this long.
const MAX_ID_CLAIM: usize = 256;

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, SessionError> {
    let value = claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| unauthorized(format!("Session is missing {name}")))?;
    // It becomes the recorded actor: a newline or an escape sequence in it could forge a log
    // line or hide part of the audit trail.
    if value.len() > MAX_ID_CLAIM || value.chars().any(crate::text::is_unsafe) {
        return Err(unauthorized(format!(
            "Session {name} must be at most {MAX_ID_CLAIM} printable characters"
        )));
    }
    Ok(value.to_owned())
}

fn lookup<'a, S: AsRef<str>>(claims: &'a Map<String, Value>, path: &[S]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first.as_ref())?, |v, k| v.get(k.as_ref()))
}

fn is_admin_role(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str) == Some("admin")
}

/// `ADMIN_ROLE_CLAIM` split on dots; every segment must be non-empty.
fn claim_path(raw: &str) -> Result<Vec<String>, String> {
    let path: Vec<String> = raw.trim().split('.').map(str::to_owned).collect();
    if path
        .iter()
        .any(|seg| seg.is_empty() || seg.chars().any(char::is_whitespace))
    {
        return Err(format!(
            "ADMIN_ROLE_CLAIM={raw:?} is not a claim path; expected dot-separated names like \
             metadata.role or public_metadata.role"
        ));
    }
    Ok(path)
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn check_jwks_url(url: &str) -> Result<(), String> {
    let ok = reqwest::Url::parse(url.trim())
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "CLERK_JWKS_URL={url:?} is not an http(s) URL; expected e.g. \
             https://YOUR-APP.clerk.accounts.dev/.well-known/jwks.json"
        ))
    }
}

/// Environment files often carry a PEM on one line, or with literal `\n`: rebuild one PEM block
/// with 64-character lines. Text that is not a PEM block is returned as it is, to be refused by
/// the parser.
fn normalize_pem(raw: &str) -> String {
    let text = raw.trim().replace("\\n", "\n");
    let Some(rest) = text.strip_prefix("-----BEGIN ") else {
        return text;
    };
    let Some((label, rest)) = rest.split_once("-----") else {
        return text;
    };
    let end = format!("-----END {label}-----");
    let Some((body, _)) = rest.split_once(&end) else {
        return text;
    };
    let body: Vec<char> = body.chars().filter(|c| !c.is_whitespace()).collect();
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.chunks(64) {
        pem.extend(line);
        pem.push('\n');
    }
    pem.push_str(&end);
    pem.push('\n');
    pem
}

/// An RSA public key from a SubjectPublicKeyInfo (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`)
/// PEM; the error completes a sentence that starts with the variable's name.
fn parse_rsa_public_pem(pem: &str) -> Result<RsaPublicKey, String> {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::pkcs8::DecodePublicKey as _;
    const EXPECTED: &str = "expected Clerk's JWT public key: -----BEGIN PUBLIC KEY----- ... \
                            -----END PUBLIC KEY-----";
    let key = if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(pem)
            .map_err(|_| format!("is not an RSA public key; {EXPECTED}"))?
    } else if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|_| format!("is not an RSA public key; {EXPECTED}"))?
    } else if pem.contains("PRIVATE KEY") {
        return Err(format!(
            "holds a private key; give the public key: {EXPECTED}"
        ));
    } else {
        return Err(format!("is not a PEM public key; {EXPECTED}"));
    };
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    Ok(key)
}

fn rsa_decoding_key(key: &RsaPublicKey) -> DecodingKey {
    DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())
}

/// Where the development key lives for a database (see [`DevKey::path_for`]).
fn dev_key_path(url: &DatabaseUrl) -> PathBuf {
    beside_database(
        url,
        ".dev-session-key.pem",
        "tokenledger-dev-session-key.pem",
    )
}

/// A file kept beside the database: `<PATH><suffix>` beside a SQLite file, `postgres_name`
/// in the working directory for PostgreSQL (which has no file to sit beside).
pub(crate) fn beside_database(url: &DatabaseUrl, suffix: &str, postgres_name: &str) -> PathBuf {
    use std::str::FromStr as _;
    match url.sql() {
        DatabaseUrl::Sqlite(raw) => {
            // Parsed as the store parses it, so `sqlite://a.db?mode=rwc` means `a.db`.
            let db = sqlx::sqlite::SqliteConnectOptions::from_str(raw)
                .map(|o| o.get_filename().to_path_buf())
                .unwrap_or_else(|_| {
                    let path = raw.trim_start_matches("sqlite:").trim_start_matches("//");
                    PathBuf::from(path.split('?').next().unwrap_or(path))
                });
            let mut name = db.into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        }
        DatabaseUrl::Postgres(_) | DatabaseUrl::Kurrent { .. } => PathBuf::from(postgres_name),
    }
}
