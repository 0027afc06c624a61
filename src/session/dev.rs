//! The development signing key: an RSA key this service makes for local sign-in, kept in a
//! 0600 PEM file beside the database, used by `tokenledger dev-session` to sign and by `serve`
//! (outside production only; the caller decides) to verify.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde_json::json;
use tokenledger_events::Timestamp;

use super::{DEV_KID, MIN_RSA_BITS, rsa_decoding_key};
use crate::store::DatabaseUrl;

/// How long a development session lasts.
const DEV_SESSION_SECONDS: i64 = 8 * 3600;

/// The development signing key (RSA 2048). No `Debug` of the key material, no `Clone`.
pub struct DevKey {
    encoding: EncodingKey,
    decoding: Arc<DecodingKey>,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &DEV_KID)
            .finish_non_exhaustive()
    }
}

impl DevKey {
    /// Where the key lives for a database: `<PATH>.dev-session-key.pem` beside a SQLite file;
    /// `tokenledger-dev-session-key.pem` in the current directory for PostgreSQL.
    pub fn path_for(url: &DatabaseUrl) -> PathBuf {
        super::dev_key_path(url)
    }

    /// The key at `path`; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<DevKey>, String> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read the development session key {}: {e}",
                    path.display()
                ));
            }
        };
        let key = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|_| {
            format!(
                "{} is not a development session key (an RSA private key in PKCS#8 PEM); \
                 delete it and a new one is made",
                path.display()
            )
        })?;
        DevKey::from_private(&key, path).map(Some)
    }

    /// The key at `path`, made first (with 0600 permissions) when there is none.
    pub fn load_or_create(path: &Path) -> Result<DevKey, String> {
        if let Some(key) = DevKey::load(path)? {
            return Ok(key);
        }
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, MIN_RSA_BITS)
            .map_err(|e| format!("cannot generate the development session key: {e}"))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the development session key: {e}"))?;
        // Written whole under a temporary name, then linked into place: a reader never sees a
        // half-written key, and of two processes racing to create it, one key wins and the
        // other process loads it.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.as_deref().unwrap_or("dev-session-key"),
            uuid::Uuid::now_v7().simple()
        ));
        let written = write_private(&tmp, pem.as_bytes());
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => DevKey::from_private(&key, path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => DevKey::load(path)?
                .ok_or_else(|| format!("{} vanished while it was being made", path.display())),
            Err(e) => Err(format!(
                "cannot write the development session key {}: {e}",
                path.display()
            )),
        }
    }

    /// A development session JWT for `sub`, valid for 8 hours from `now`; an admin's carries
    /// `{"metadata":{"role":"admin"}}`.
    pub fn sign(&self, sub: &str, admin: bool, now: Timestamp) -> Result<String, String> {
        let sub = sub.trim();
        if sub.is_empty() {
            return Err("--sub must name a user, e.g. --sub user_dev".into());
        }
        let iat = now.as_micros().div_euclid(1_000_000);
        let mut claims = json!({
            "iss": DEV_KID,
            "azp": DEV_KID,
            "sub": sub,
            "sid": format!("sess_dev_{}", uuid::Uuid::now_v7().simple()),
            "iat": iat,
            "nbf": iat,
            "exp": iat.saturating_add(DEV_SESSION_SECONDS),
        });
        if admin {
            claims["metadata"] = json!({ "role": "admin" });
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(DEV_KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign the development session: {e}"))
    }

    pub(super) fn decoding_key(&self) -> Arc<DecodingKey> {
        self.decoding.clone()
    }

    fn from_private(key: &RsaPrivateKey, path: &Path) -> Result<DevKey, String> {
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "{} holds a {bits}-bit key; at least {MIN_RSA_BITS} bits are required: delete it \
                 and a new one is made",
                path.display()
            ));
        }
        let der = key
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the development session key: {e}"))?;
        Ok(DevKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: Arc::new(rsa_decoding_key(&key.to_public_key())),
        })
    }
}

/// A new file readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
