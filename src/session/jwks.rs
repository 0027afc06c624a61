//! Clerk's JWKS: fetched on first use, cached, and fetched again when a session names a key id
//! the cache does not know (Clerk rotated its keys). That refetch is rate-limited, so a stream
//! of made-up key ids costs at most one request to Clerk per [`REFETCH_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;

use super::{MIN_RSA_BITS, SessionError, rsa_decoding_key, unauthorized};

/// The least time between two fetches caused by unknown key ids. The first fetch, and the
/// first refetch after a quiet period, are never delayed.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A fetch that takes longer answers 503 rather than holding the admin request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed fetch, requests that were waiting for it fail at once instead of each
/// waiting for a fetch of its own.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// A key set is a few KiB; a larger answer is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

type KeySet = HashMap<String, Arc<DecodingKey>>;

pub(super) struct JwksCache {
    url: String,
    client: reqwest::Client,
    /// `None` until the first successful fetch. A std lock: it is never held across an await.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held for the whole of a fetch, so concurrent misses make one request, not many.
    fetching: tokio::sync::Mutex<Refetch>,
}

struct Refetch {
    /// When an unknown key id last caused a fetch.
    last: Option<Instant>,
    /// When a fetch last failed.
    failed: Option<Instant>,
}

impl JwksCache {
    pub(super) fn new(url: String) -> Result<JwksCache, String> {
        // reqwest is built with rustls but no crypto provider of its own, so that TLS uses
        // `ring` (which needs only a C compiler) rather than aws-lc; rustls then takes the
        // process default, which must exist before the client is built. A second install
        // (another verifier, or another part of the process) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tokenledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("CLERK_JWKS_URL: cannot build the HTTP client: {e}"))?;
        Ok(JwksCache {
            url,
            client,
            keys: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(Refetch {
                last: None,
                failed: None,
            }),
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The key named `kid`, fetching the set when it is not cached yet or does not have it.
    pub(super) async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, SessionError> {
        if let Some(key) = self.cached().and_then(|set| set.get(kid).cloned()) {
            return Ok(key);
        }
        let mut refetch = self.fetching.lock().await;
        if refetch
            .failed
            .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
        {
            return Err(keys_unavailable());
        }
        // Whoever held the lock before may have fetched the key this request needs.
        if let Some(set) = self.cached() {
            if let Some(key) = set.get(kid) {
                return Ok(key.clone());
            }
            if refetch.last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return Err(unknown_kid(kid));
            }
            refetch.last = Some(Instant::now());
        }
        let set = match self.fetch().await {
            Ok(set) => Arc::new(set),
            Err(e) => {
                refetch.failed = Some(Instant::now());
                return Err(e);
            }
        };
        refetch.failed = None;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(set.clone());
        set.get(kid).cloned().ok_or_else(|| unknown_kid(kid))
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tracing::instrument(skip_all, fields(url = %self.url))]
    async fn fetch(&self) -> Result<KeySet, SessionError> {
        let unavailable = |detail: String| {
            tracing::warn!(%detail, "session keys could not be fetched");
            keys_unavailable()
        };
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!(
                    "answered more than {MAX_JWKS_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("answered something that is not JSON: {e}")))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| unavailable("answered JSON without a \"keys\" array".into()))?;
        let set: KeySet = keys.iter().filter_map(signing_key).collect();
        if set.is_empty() {
            tracing::warn!("the key set has no usable RS256 key");
        }
        tracing::info!(keys = set.len(), "session keys fetched");
        Ok(set)
    }
}

/// An RSA signing key with a `kid`; others (encryption keys, other algorithms, keys under
/// 2048 bits, malformed entries) are skipped rather than failing the whole set.
fn signing_key(jwk: &Value) -> Option<(String, Arc<DecodingKey>)> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("RSA")
        || field("use").is_some_and(|u| u != "sig")
        || field("alg").is_some_and(|a| a != "RS256")
    {
        return None;
    }
    let kid = field("kid")?;
    let n = URL_SAFE_NO_PAD.decode(field("n")?).ok()?;
    let e = URL_SAFE_NO_PAD.decode(field("e")?).ok()?;
    let key = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).ok()?;
    if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
        return None;
    }
    Some((kid.to_owned(), Arc::new(rsa_decoding_key(&key))))
}

fn keys_unavailable() -> SessionError {
    SessionError::Unavailable(
        "Session keys could not be fetched from CLERK_JWKS_URL; try again shortly".into(),
    )
}

/// The key id is the caller's text: named only when it is short and plain.
fn unknown_kid(kid: &str) -> SessionError {
    let plain = !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        unauthorized(format!("Session key {kid} is unknown"))
    } else {
        unauthorized("Session key is unknown")
    }
}
