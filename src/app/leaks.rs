//! Leaked-token reports: what a report says, how its caller text is made inert, and GitHub's
//! secret scanning keys (fetched, cached, and used to check a report's signature over the raw
//! body). The decision and the append are [`super::Ledger::report_leaks`]; the HTTP edge only
//! reads the request and answers.
//!
//! GitHub's secret scanning partner program posts `[{token, type, url, source}]` signed with
//! ECDSA P-256 / SHA-256 (`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`: the
//! base64 of an ASN.1 DER signature); the keys are published as
//! `{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use tokenledger_events::Timestamp;

use crate::clock::Clock;
use crate::text::is_unsafe;

/// Where GitHub publishes its secret scanning keys.
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// An unknown key identifier causes a refetch at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// The most reports one request may carry; past it the request is refused whole.
pub const MAX_REPORTS: usize = 1000;
/// The longest `url` (or `location`) kept, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// The longest `source` kept, in characters.
pub const MAX_SOURCE_CHARS: usize = 64;
/// The longest `type` kept, in characters.
pub const MAX_TYPE_CHARS: usize = 128;
/// The longest `token` looked at, in bytes: a token of ours is far shorter.
pub const MAX_TOKEN_BYTES: usize = 256;

/// The key list is a few KiB; a larger answer is not one.
const MAX_KEYS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Who reported a leak. The actor recorded is `leak:` and this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// GitHub's secret scanning, through a signed report.
    Github,
    /// An admin's session: `user:<sub>`.
    User(String),
    /// An API token holding `leaks:report`: `token:<id>`.
    Token(uuid::Uuid),
}

impl Reporter {
    /// `github`, `user:<sub>` or `token:<id>`: the event's `reporter`.
    pub fn name(&self) -> String {
        match self {
            Reporter::Github => "github".to_owned(),
            Reporter::User(sub) => format!("user:{sub}"),
            Reporter::Token(id) => format!("token:{id}"),
        }
    }

    /// `leak:github`, `leak:user:<sub>`, `leak:token:<id>`: the actor of every event a report
    /// appends, and of the revocation it causes.
    pub fn actor(&self) -> String {
        format!("leak:{}", self.name())
    }
}

/// One reported token and where it was found (caller text, made inert again before it is
/// kept). `Debug` never shows the token, nor one pasted into the other fields.
#[derive(Clone, PartialEq, Eq)]
pub struct LeakReport {
    pub token: String,
    pub url: Option<String>,
    pub source: Option<String>,
    pub token_type: Option<String>,
}

impl std::fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn shown(t: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
            t.as_deref().map(crate::token::redact)
        }
        f.debug_struct("LeakReport")
            .field("token", &"<redacted>")
            .field("url", &shown(&self.url))
            .field("source", &shown(&self.source))
            .field("token_type", &shown(&self.token_type))
            .finish()
    }
}

/// GitHub's feedback label for one reported string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A token of this deployment (live, revoked or expired).
    TruePositive,
    /// Not one: a look-alike whose checksum fails, another prefix or environment, or a
    /// well-formed token this deployment never minted.
    FalsePositive,
}

/// Caller text made inert to keep: token-shaped values redacted, control and invisible
/// characters shown as `\u{..}` ([`crate::text::escape`]), cut to `max` characters. `None`
/// for an empty value. For reports that must not be refused whole for one odd field
/// (GitHub's, whose retry would carry the same field).
pub fn inert(text: Option<&str>, max: usize) -> Option<String> {
    let text = text?.trim();
    if text.is_empty() {
        return None;
    }
    let redacted = crate::token::redact(text);
    let escaped = crate::text::escape(&redacted);
    Some(escaped.chars().take(max).collect())
}

/// Why a field of a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("\"{field}\" must be at most {max} characters, got {got}")]
    TooLong {
        field: &'static str,
        max: usize,
        got: usize,
    },
    #[error(
        "\"{field}\" must not contain control or invisible characters (newlines, escape sequences, bidi overrides, zero-width spaces)"
    )]
    Control { field: &'static str },
    #[error(
        "\"{field}\" must not contain an API token (it would be kept wherever the report is shown); send the token in \"token\""
    )]
    HoldsToken { field: &'static str },
}

/// Caller text checked strictly, for a caller who can fix and resend it: at most `max`
/// characters, no control or invisible character, no token. `None` for an empty value.
pub fn checked(
    field: &'static str,
    text: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let got = text.chars().count();
    if got > max {
        return Err(FieldError::TooLong { field, max, got });
    }
    if text.chars().any(is_unsafe) {
        return Err(FieldError::Control { field });
    }
    if matches!(crate::token::redact(text), std::borrow::Cow::Owned(_)) {
        return Err(FieldError::HoldsToken { field });
    }
    Ok(Some(text.to_owned()))
}

/// Where GitHub's keys come from (`GITHUB_SECRET_SCANNING_KEYS`): an `http(s)://` URL, or a
/// file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Url(String),
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Url(url) => f.write_str(url),
            KeySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `GITHUB_SECRET_SCANNING_KEYS`: `https://...` (GitHub's is [`GITHUB_KEYS_URL`]), `http://...`
/// or a path to a file in the same format.
pub fn parse_key_source(raw: &str) -> Result<KeySource, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(format!(
            "GITHUB_SECRET_SCANNING_KEYS is empty; expected a URL like {GITHUB_KEYS_URL} or a path to a file of GitHub's public_keys JSON"
        ));
    }
    if raw.starts_with("https://") || raw.starts_with("http://") {
        return reqwest::Url::parse(raw)
            .map(|_| KeySource::Url(raw.to_owned()))
            .map_err(|_| {
                format!(
                    "GITHUB_SECRET_SCANNING_KEYS={} is not a URL; expected one like {GITHUB_KEYS_URL}",
                    crate::text::shown(raw)
                )
            });
    }
    if raw.contains("://") {
        return Err(format!(
            "GITHUB_SECRET_SCANNING_KEYS={} names a scheme other than http or https; expected a URL like {GITHUB_KEYS_URL} or a file path",
            crate::text::shown(raw)
        ));
    }
    Ok(KeySource::File(PathBuf::from(raw)))
}

/// Why a GitHub report's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "Missing {0} header; GitHub signs each report with Github-Public-Key-Identifier and Github-Public-Key-Signature"
    )]
    MissingHeader(&'static str),
    #[error(
        "Github-Public-Key-Signature is not a signature; expected the base64 of an ASN.1 DER ECDSA P-256 signature"
    )]
    Malformed,
    #[error(
        "Github-Public-Key-Identifier names no key of GitHub's secret scanning keys; accepted: an identifier from {GITHUB_KEYS_URL}"
    )]
    UnknownKey,
    #[error(
        "Github-Public-Key-Signature does not verify over the body with the named key (ECDSA P-256 / SHA-256 over the raw body)"
    )]
    Invalid,
    #[error("GitHub's secret scanning keys could not be fetched; try again")]
    KeysUnavailable,
}

/// GitHub's secret scanning keys, by identifier: read from the configured source on first use
/// and again when a report names a key not held, at most once per [`REFETCH_EVERY`] (on the
/// injected clock).
pub struct GithubKeys {
    source: KeySource,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    /// Held for the whole of a fetch, so concurrent misses make one request, not many.
    state: tokio::sync::Mutex<KeyState>,
    fetches: AtomicU64,
}

#[derive(Default)]
struct KeyState {
    keys: HashMap<String, VerifyingKey>,
    /// When the keys were last fetched (or a fetch was last tried).
    fetched_at: Option<Timestamp>,
}

impl GithubKeys {
    pub fn new(source: KeySource, clock: Arc<dyn Clock>) -> Result<GithubKeys, String> {
        // As for Clerk's keys: rustls takes the process's ring provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tokenledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                format!("GITHUB_SECRET_SCANNING_KEYS: cannot build the HTTP client: {e}")
            })?;
        Ok(GithubKeys {
            source,
            clock,
            client,
            state: tokio::sync::Mutex::new(KeyState::default()),
            fetches: AtomicU64::new(0),
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// How many times the keys were read from their source.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Check a report's signature over its raw body: the header values as sent (`None` when
    /// missing). Nothing of the body is parsed before this succeeds.
    pub async fn verify(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let key_id = key_id.map(str::trim).filter(|k| !k.is_empty()).ok_or(
            SignatureError::MissingHeader("Github-Public-Key-Identifier"),
        )?;
        let signature = signature
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::MissingHeader("Github-Public-Key-Signature"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
        // Either half of s verifies the same signature; the library checks the low one.
        let signature = signature.normalize_s().unwrap_or(signature);
        let key = self.key(key_id).await?;
        key.verify(body, &signature)
            .map_err(|_| SignatureError::Invalid)
    }

    /// The key named `key_id`, fetching the keys on first use, and again for an unknown
    /// identifier when the last fetch is [`REFETCH_EVERY`] old.
    async fn key(&self, key_id: &str) -> Result<VerifyingKey, SignatureError> {
        let mut state = self.state.lock().await;
        if let Some(key) = state.keys.get(key_id) {
            return Ok(*key);
        }
        let now = self.clock.now();
        let due = state.fetched_at.is_none_or(|at| {
            now.as_micros().saturating_sub(at.as_micros())
                >= i64::try_from(REFETCH_EVERY.as_micros()).unwrap_or(i64::MAX)
        });
        if !due {
            return Err(SignatureError::UnknownKey);
        }
        state.fetched_at = Some(now);
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let fetched = self.fetch().await;
        match fetched {
            Ok(keys) => state.keys = keys,
            Err(detail) => {
                tracing::warn!(source = %self.source, %detail, "GitHub's secret scanning keys could not be fetched");
                if state.keys.is_empty() {
                    return Err(SignatureError::KeysUnavailable);
                }
            }
        }
        state
            .keys
            .get(key_id)
            .copied()
            .ok_or(SignatureError::UnknownKey)
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let bytes = match &self.source {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            KeySource::Url(url) => {
                let mut response = self
                    .client
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("answered {}", response.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                    if body.len() + chunk.len() > MAX_KEYS_BYTES {
                        return Err(format!("answered more than {MAX_KEYS_BYTES} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                body
            }
        };
        parse_public_keys(&bytes)
    }
}

#[derive(serde::Deserialize)]
struct PublicKeys {
    public_keys: Vec<PublicKey>,
}

#[derive(serde::Deserialize)]
struct PublicKey {
    key_identifier: String,
    key: String,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "every published key verifies; GitHub may sign with any"
    )]
    is_current: bool,
}

/// GitHub's `public_keys` document: every P-256 key in it by identifier. A key that is not one
/// is skipped (and said so); a document with none is refused.
pub fn parse_public_keys(bytes: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    if bytes.len() > MAX_KEYS_BYTES {
        return Err(format!("more than {MAX_KEYS_BYTES} bytes"));
    }
    let doc: PublicKeys = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not GitHub's public_keys JSON ({{\"public_keys\": [{{\"key_identifier\", \"key\", \"is_current\"}}]}}): {e}"
        )
    })?;
    let mut keys = HashMap::new();
    for k in doc.public_keys {
        match p256::PublicKey::from_public_key_pem(&k.key) {
            Ok(key) => {
                keys.insert(k.key_identifier, VerifyingKey::from(&key));
            }
            Err(_) => tracing::warn!(
                key_identifier = %crate::text::escape(&k.key_identifier),
                "a secret scanning key is not a P-256 public key in PEM; skipped"
            ),
        }
    }
    if keys.is_empty() {
        return Err("no P-256 public key in the document".to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_kept_inert_or_refused() {
        let token = crate::token::mint(
            &crate::token::TokenPrefix::default(),
            crate::token::Environment::Test,
        )
        .expect("mint");
        let with_token = format!("https://x.test/{}", token.expose());
        let kept = inert(Some(&with_token), MAX_URL_CHARS).expect("kept");
        assert!(!kept.contains(token.expose()), "{kept}");
        assert_eq!(
            inert(Some("a\u{1b}[2Jb\u{202e}"), 100).as_deref(),
            Some("a\\u{1b}[2Jb\\u{202e}")
        );
        assert_eq!(
            inert(Some(&"x".repeat(5000)), 10).map(|s| s.len()),
            Some(10)
        );
        assert_eq!(inert(Some("  "), 10), None);
        assert_eq!(inert(None, 10), None);

        assert_eq!(
            checked("location", Some(" a "), 10),
            Ok(Some("a".to_owned()))
        );
        assert!(matches!(
            checked("location", Some(&"x".repeat(11)), 10),
            Err(FieldError::TooLong { got: 11, .. })
        ));
        assert!(matches!(
            checked("location", Some("a\nb"), 10),
            Err(FieldError::Control { .. })
        ));
        let refused = checked("location", Some(&with_token), MAX_URL_CHARS).unwrap_err();
        assert!(matches!(refused, FieldError::HoldsToken { .. }));
        assert!(!refused.to_string().contains(token.expose()));
    }

    #[test]
    fn the_key_source_is_a_url_or_a_path() {
        assert_eq!(
            parse_key_source(GITHUB_KEYS_URL),
            Ok(KeySource::Url(GITHUB_KEYS_URL.to_owned()))
        );
        assert_eq!(
            parse_key_source("/etc/tokenledger/github-keys.json"),
            Ok(KeySource::File("/etc/tokenledger/github-keys.json".into()))
        );
        assert!(parse_key_source("ftp://x/y").is_err());
        assert!(parse_key_source(" ").is_err());
    }

    #[test]
    fn reporters_name_their_actor() {
        let id = uuid::Uuid::from_u128(7);
        assert_eq!(Reporter::Github.actor(), "leak:github");
        assert_eq!(Reporter::User("u_1".into()).actor(), "leak:user:u_1");
        assert_eq!(Reporter::Token(id).actor(), format!("leak:token:{id}"));
    }

    #[test]
    fn a_report_never_shows_its_token() {
        let token = crate::token::mint(
            &crate::token::TokenPrefix::default(),
            crate::token::Environment::Test,
        )
        .expect("mint");
        let report = LeakReport {
            token: token.expose().to_owned(),
            url: Some(format!("https://x.test/{}", token.expose())),
            source: None,
            token_type: None,
        };
        let debug = format!("{report:?}");
        assert!(!debug.contains(token.expose()), "{debug}");
        assert!(
            debug.contains("https://x.test/tl_test_[redacted]"),
            "{debug}"
        );
    }
}
