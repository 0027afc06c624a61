//! The log's signing keys: Ed25519 keys that sign checkpoints (and export manifests) as C2SP
//! signed notes, named by the log's origin.
//!
//! They live in one file, readable by its owner only (`LOG_SIGNING_KEY_FILE`, or beside the
//! database), one key per line in the signed-note private-key form
//! `PRIVATE+KEY+<origin>+<hex key id>+<base64(0x01 || seed)>`. `keys rotate` appends a line;
//! every key in the file signs, so while both are published a verifier holding either one
//! accepts what is signed. A private key never reaches a log line, an error or `Debug` output.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokenledger_events::note::{NoteSigner, VerifierKey};
use tokenledger_events::{LogId, Note};

use crate::config::DatabaseUrl;

/// The first field of a private-key line.
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";
/// The signature algorithm byte of Ed25519 keys in C2SP notes.
const ED25519: u8 = 0x01;

/// `LOG_ORIGIN`: the log's name in its checkpoints and its keys' name. A schema-less URL:
/// printable, no spaces, no `+`, no scheme.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim();
    let bad = |why: &str| {
        format!(
            "LOG_ORIGIN={} {why}; expected a schema-less URL like tokens.example.com/log",
            crate::text::shown(raw)
        )
    };
    if origin.is_empty() {
        return Err(bad("is empty"));
    }
    if origin.contains("://") {
        return Err(bad("has a scheme"));
    }
    if origin.len() > 200 {
        return Err(bad("is longer than 200 bytes"));
    }
    if origin
        .chars()
        .any(|c| c.is_whitespace() || c == '+' || crate::text::is_unsafe(c))
    {
        return Err(bad("holds a space, a '+' or a control character"));
    }
    Ok(origin.to_owned())
}

/// The origin a log has when `LOG_ORIGIN` is not set: derived from its id, so two logs never
/// share one. `.invalid` says plainly that it names no host.
pub fn default_origin(log_id: LogId) -> String {
    format!("tokenledger.invalid/log/{}", log_id.0.simple())
}

/// Where the key file is: `LOG_SIGNING_KEY_FILE` when set, else `<PATH>.signing-key` beside a
/// SQLite file, or `tokenledger-<log id>.signing-key` in the working directory for PostgreSQL
/// (named by the log, so keys made for two logs never collide).
pub fn key_path(url: &DatabaseUrl, configured: Option<&Path>, log_id: LogId) -> PathBuf {
    match configured {
        Some(path) => path.to_owned(),
        None => crate::session::beside_database(
            url,
            ".signing-key",
            &format!("tokenledger-{}.signing-key", log_id.0.simple()),
        ),
    }
}

/// Why the key file could not be used. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: no signing key; run `tokenledger keys init` (or set LOG_SIGNING_KEY_FILE)")]
    Missing { path: String },
    #[error("{path} exists already; `tokenledger keys rotate` adds a key to it")]
    Exists { path: String },
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path} line {line}: {problem}")]
    Bad {
        path: String,
        line: usize,
        problem: String,
    },
    #[error(
        "{path} holds keys for {found:?}, not for this log's origin {origin:?}; set LOG_ORIGIN to \
         the origin its keys were made for, or LOG_SIGNING_KEY_FILE to this log's key file"
    )]
    WrongOrigin {
        path: String,
        found: String,
        origin: String,
    },
}

/// The keys that sign for one origin, oldest first.
pub struct SigningKeys {
    origin: String,
    signers: Vec<NoteSigner>,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("origin", &self.origin)
            .field("key_ids", &self.key_ids())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// The keys in `path` for `origin`; `Ok(None)` when there is no file.
    pub fn load(path: &Path, origin: &str) -> Result<Option<SigningKeys>, KeyFileError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(KeyFileError::Io {
                    path: shown,
                    detail: e.to_string(),
                });
            }
        };
        let mut signers = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |problem: &str| KeyFileError::Bad {
                path: shown.clone(),
                line: i + 1,
                problem: problem.to_owned(),
            };
            let (name, seed) = parse_private_line(line.trim()).map_err(|p| bad(&p))?;
            if name != origin {
                return Err(KeyFileError::WrongOrigin {
                    path: shown,
                    found: name,
                    origin: origin.to_owned(),
                });
            }
            let signer = NoteSigner::from_seed(&name, &seed).map_err(|e| bad(&e.to_string()))?;
            signers.push(signer);
        }
        if signers.is_empty() {
            return Err(KeyFileError::Bad {
                path: shown,
                line: 0,
                problem: "holds no key".into(),
            });
        }
        Ok(Some(SigningKeys {
            origin: origin.to_owned(),
            signers,
            path: path.to_owned(),
        }))
    }

    /// The keys in `path`, or [`KeyFileError::Missing`].
    pub fn require(path: &Path, origin: &str) -> Result<SigningKeys, KeyFileError> {
        SigningKeys::load(path, origin)?.ok_or_else(|| KeyFileError::Missing {
            path: path.display().to_string(),
        })
    }

    /// Make the key file with one new key; refused when it exists.
    pub fn init(path: &Path, origin: &str) -> Result<SigningKeys, KeyFileError> {
        let line = new_private_line(origin, path)?;
        write_new_private(path, line.as_bytes())?;
        SigningKeys::require(path, origin)
    }

    /// The keys in `path`, made first (one key) when there is no file: development only.
    pub fn load_or_init(path: &Path, origin: &str) -> Result<SigningKeys, KeyFileError> {
        match SigningKeys::load(path, origin)? {
            Some(keys) => Ok(keys),
            None => match SigningKeys::init(path, origin) {
                // Another process made it first.
                Err(KeyFileError::Exists { .. }) => SigningKeys::require(path, origin),
                other => other,
            },
        }
    }

    /// Add a new key to the file; every key in it signs from now on.
    pub fn rotate(path: &Path, origin: &str) -> Result<SigningKeys, KeyFileError> {
        let mut keys = SigningKeys::require(path, origin)?;
        let line = new_private_line(origin, path)?;
        let io = |e: std::io::Error| KeyFileError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        keys = SigningKeys::require(path, &keys.origin)?;
        Ok(keys)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verifier keys to publish, oldest first (`<origin>+<key id>+<base64 key>`).
    pub fn verifier_keys(&self) -> Vec<VerifierKey> {
        self.signers.iter().map(NoteSigner::verifier_key).collect()
    }

    fn key_ids(&self) -> Vec<String> {
        self.signers
            .iter()
            .map(|s| format!("{:08x}", s.key_id()))
            .collect()
    }

    /// `text` signed by every key.
    pub fn sign(&self, text: &str) -> Result<Note, tokenledger_events::note::NoteError> {
        let (first, rest) = self
            .signers
            .split_first()
            .expect("a key set holds at least one key (checked when loaded)");
        let mut note = Note::sign(text, first)?;
        for signer in rest {
            note.add_signature(signer)?;
        }
        Ok(note)
    }
}

/// A fresh key line for `origin`, from 32 bytes of the OS CSPRNG.
fn new_private_line(origin: &str, path: &Path) -> Result<String, KeyFileError> {
    use rand::TryRng as _;
    let mut seed = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyFileError::Io {
            path: path.display().to_string(),
            detail: format!("no randomness for a key: {e}"),
        })?;
    let signer = NoteSigner::from_seed(origin, &seed).map_err(|e| KeyFileError::Bad {
        path: path.display().to_string(),
        line: 0,
        problem: format!("origin: {e}"),
    })?;
    let mut key = Vec::with_capacity(33);
    key.push(ED25519);
    key.extend_from_slice(&seed);
    Ok(format!(
        "{PRIVATE_PREFIX}{origin}+{:08x}+{}\n",
        signer.key_id(),
        STANDARD.encode(key)
    ))
}

/// The origin and seed of a `PRIVATE+KEY+<name>+<id>+<base64>` line. The problem text names
/// what is wrong and never quotes the key.
fn parse_private_line(line: &str) -> Result<(String, [u8; 32]), String> {
    let rest = line
        .strip_prefix(PRIVATE_PREFIX)
        .ok_or("is not a PRIVATE+KEY+<origin>+<key id>+<key> line")?;
    // The name holds no '+'; the base64 key may.
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("is not a PRIVATE+KEY+<origin>+<key id>+<key> line".into());
    };
    let bytes = STANDARD
        .decode(key)
        .map_err(|_| "its key is not base64".to_owned())?;
    let [alg, seed @ ..] = bytes.as_slice() else {
        return Err("its key is empty".into());
    };
    if *alg != ED25519 {
        return Err(format!("its key is of algorithm {alg}, not Ed25519 (1)"));
    }
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| format!("its key is {} bytes, not 32", seed.len()))?;
    let signer = NoteSigner::from_seed(name, &seed).map_err(|e| e.to_string())?;
    if format!("{:08x}", signer.key_id()) != id {
        return Err("its key id does not match its key".into());
    }
    Ok((name.to_owned(), seed))
}

/// Write `bytes` to a new file at `path` with mode 0600, whole or not at all: under a
/// temporary name, then linked into place (refused if `path` exists).
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let shown = path.display().to_string();
    if path.exists() {
        return Err(KeyFileError::Exists { path: shown });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing-key".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()));
    let written = crate::session::write_private(&tmp, bytes);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists { path: shown })
        }
        Err(e) => Err(KeyFileError::Io {
            path: shown,
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn init_makes_a_private_file_whose_key_signs_and_verifies() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = dir();
        let path = d.path().join("log.signing-key");
        let keys = SigningKeys::init(&path, "tokens.example.com/log").expect("init");

        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let vkeys = keys.verifier_keys();
        assert_eq!(vkeys.len(), 1);
        assert!(
            vkeys[0].to_string().starts_with("tokens.example.com/log+"),
            "{}",
            vkeys[0]
        );
        let note = keys.sign("hello\n").expect("sign");
        Note::open(note.to_string().as_bytes(), &vkeys).expect("verifies");
        assert!(matches!(
            SigningKeys::init(&path, "tokens.example.com/log"),
            Err(KeyFileError::Exists { .. })
        ));
    }

    #[test]
    fn a_rotation_adds_a_key_and_both_sign() {
        let d = dir();
        let path = d.path().join("k");
        let first = SigningKeys::init(&path, "o.example/log").expect("init");
        let old = first.verifier_keys();
        let rotated = SigningKeys::rotate(&path, "o.example/log").expect("rotate");
        let both = rotated.verifier_keys();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], old[0]);
        let note = rotated.sign("text\n").expect("sign");
        // A verifier holding only the old key, or only the new one, accepts it.
        Note::open(note.to_string().as_bytes(), &old).expect("old key");
        Note::open(note.to_string().as_bytes(), &both[1..]).expect("new key");
    }

    #[test]
    fn a_key_file_for_another_origin_or_garbled_is_refused_without_quoting_the_key() {
        let d = dir();
        let path = d.path().join("k");
        SigningKeys::init(&path, "a.example/log").expect("init");
        let secret = std::fs::read_to_string(&path).expect("read");
        let err = SigningKeys::load(&path, "b.example/log").expect_err("other origin");
        assert!(matches!(err, KeyFileError::WrongOrigin { .. }), "{err}");
        let key = secret.trim().splitn(5, '+').nth(4).expect("key");
        assert!(!err.to_string().contains(key));

        for garbled in [
            "not a key\n".to_owned(),
            secret.replace("PRIVATE+KEY+", "PUBLIC+KEY+"),
            format!("{}x\n", secret.trim()),
            secret.replacen('+', "+0", 4),
        ] {
            std::fs::write(&path, &garbled).expect("write");
            let err = SigningKeys::load(&path, "a.example/log").expect_err(&garbled);
            assert!(!format!("{err} {err:?}").contains(key), "{err}");
        }
        assert!(
            !format!(
                "{:?}",
                SigningKeys::init(&d.path().join("j"), "x.example").expect("init")
            )
            .contains(key)
        );
    }

    #[test]
    fn origins_are_schema_less_urls() {
        assert_eq!(
            parse_origin(" tokens.example.com/log "),
            Ok("tokens.example.com/log".into())
        );
        for bad in ["", "https://tokens.example.com", "a b", "a+b", "a\u{1b}b"] {
            let err = parse_origin(bad).expect_err(bad);
            assert!(err.contains("LOG_ORIGIN"), "{err}");
        }
    }
}
