//! C2SP signed notes (c2sp.org/signed-note) with Ed25519: how a checkpoint is signed, and how
//! anyone holding the log's verifier key checks it offline.
//!
//! A signed note is a text ending in a newline, a blank line, then one line per signature:
//!
//! ```text
//! <text, ending in \n>
//!
//! — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>
//! ```
//!
//! The dash is an em dash (U+2014). The key id is `SHA-256(name || 0x0A || 0x01 || public
//! key)[:4]`, big-endian; a verifier key prints as `<name>+<8 hex key id>+<base64(0x01 || public
//! key)>`, Go's `sumdb/note` vkey. Following the spec, a signature by a key the verifier does not
//! know is ignored, a bad signature by a known key rejects the whole note, and a note with no
//! valid signature by a known key is rejected. Notes come from files and may be hostile, so
//! parsing is bounded ([`MAX_NOTE_BYTES`], [`MAX_SIGNATURES`]) and never panics.
//!
//! This module does no I/O: a signing key is made from 32 random bytes the caller draws.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 in key ids and verifier keys.
pub const ED25519: u8 = 0x01;

/// The largest signed note accepted or produced, signatures included.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// The most signature lines a note may carry (the spec asks verifiers to accept at least 16);
/// past it a note is refused before any signature is checked.
pub const MAX_SIGNATURES: usize = 100;

/// What begins every signature line: an em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// `SHA-256(name || 0x0A || 0x01 || public_key)[:4]` as a big-endian u32: the key id of an
/// Ed25519 key. It names the key in a signature; the verifier's configured key is what is
/// trusted.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public_key);
    let digest: [u8; 32] = h.finalize().into();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Why a key name or a verifier key was refused. It never holds key material beyond a name and
/// a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key name {0:?} is not usable: it must be non-empty, without spaces, control characters or '+'"
    )]
    BadName(String),
    #[error("a verifier key has the form <name>+<8 hex digit key id>+<base64 key>")]
    NotAVerifierKey,
    #[error("key id {0:?} is not 8 hexadecimal digits")]
    BadKeyId(String),
    #[error("the key after the key id is not standard base64 with padding")]
    BadBase64,
    #[error("key type {0:#04x} is not Ed25519 (0x01)")]
    UnknownAlgorithm(u8),
    #[error("an Ed25519 public key is 32 bytes after the type byte, this one is {0}")]
    WrongLength(usize),
    #[error("key id {stated:08x} is not the id of this name and key ({computed:08x})")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("the key is not a usable Ed25519 public key (not a curve point, or of small order)")]
    BadPublicKey,
}

/// Why a note could not be read, signed or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("a signed note is at most {MAX_NOTE_BYTES} bytes, this one is {len}")]
    TooLarge { len: usize },
    #[error("a signed note is UTF-8, and byte {offset} is not")]
    NotUtf8 { offset: usize },
    #[error("byte {offset} is a control character; a note holds none but newlines")]
    ControlCharacter { offset: usize },
    #[error("the note text must end in a newline")]
    TextWithoutNewline,
    #[error("no blank line separates the text from signature lines")]
    NoSignatures,
    #[error("the last signature line does not end in a newline")]
    UnterminatedLine,
    #[error("line {line}: {problem}")]
    BadSignatureLine { line: usize, problem: &'static str },
    #[error("a note carries at most {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("two different verifier keys are both {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error(
        "the signature by {name}+{key_id:08x} does not verify: the note was altered or the signature is not that key's"
    )]
    InvalidSignature { name: String, key_id: u32 },
    #[error("no signature on the note is by a known key")]
    NoKnownSignature,
}

/// Non-empty, with no Unicode space, no '+' (Go's rule) and no control character (which no
/// note may hold).
fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
    {
        return Err(KeyError::BadName(name.to_owned()));
    }
    Ok(())
}

/// A key that verifies notes: a name, its key id and an Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// The verifier for `public_key` under `name`; refuses a bad name and keys that are not
    /// points or are of small order (those verify signatures nobody made).
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<VerifierKey, KeyError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::BadPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::BadPublicKey);
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id: key_id(name, public_key),
            key,
        })
    }

    /// Parse `<name>+<8 hex key id>+<base64(0x01 || 32-byte public key)>`; the key id must be
    /// the one the name and key give.
    pub fn parse(vkey: &str) -> Result<VerifierKey, KeyError> {
        let (name, rest) = vkey.split_once('+').ok_or(KeyError::NotAVerifierKey)?;
        let (id, key) = rest.split_once('+').ok_or(KeyError::NotAVerifierKey)?;
        check_name(name)?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::BadKeyId(id.to_owned()));
        }
        let stated = u32::from_str_radix(id, 16).map_err(|_| KeyError::BadKeyId(id.to_owned()))?;
        let key = STANDARD.decode(key).map_err(|_| KeyError::BadBase64)?;
        let (&algorithm, public_key) = key.split_first().ok_or(KeyError::WrongLength(0))?;
        if algorithm != ED25519 {
            return Err(KeyError::UnknownAlgorithm(algorithm));
        }
        let public_key: &[u8; 32] = public_key
            .try_into()
            .map_err(|_| KeyError::WrongLength(public_key.len()))?;
        let computed = key_id(name, public_key);
        if computed != stated {
            return Err(KeyError::KeyIdMismatch { stated, computed });
        }
        VerifierKey::new(name, public_key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The vkey string: `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ED25519);
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(key))
    }

    /// Strict Ed25519 verification: no small-order points, no malleable encodings, so a note
    /// has one valid signature per key and text.
    fn verifies(&self, text: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|signature| self.key.verify_strict(text, &signature).is_ok())
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({})", self.to_vkey())
    }
}

impl FromStr for VerifierKey {
    type Err = KeyError;

    fn from_str(vkey: &str) -> Result<VerifierKey, KeyError> {
        VerifierKey::parse(vkey)
    }
}

/// A key that signs notes. Its `Debug` shows the name and key id only; the private key is never
/// printed, and is zeroed when dropped.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// The signer whose Ed25519 private key is `seed`: 32 bytes from a secure random generator,
    /// drawn by the caller (this crate reads nothing), or the stored seed of an existing key.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The key that verifies this signer's notes, to publish.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    fn signature(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// One signature line: who signed (name and key id) and the signature bytes after the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl fmt::Display for NoteSignature {
    /// The signature line, newline included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = Vec::with_capacity(4 + self.signature.len());
        payload.extend_from_slice(&self.key_id.to_be_bytes());
        payload.extend_from_slice(&self.signature);
        writeln!(
            f,
            "{SIGNATURE_PREFIX}{} {}",
            self.name,
            STANDARD.encode(payload)
        )
    }
}

/// A signed note: its text and signature lines. [`Note::parse`] checks the form only;
/// [`Note::verify`] (or [`Note::open`], both at once) decides whether the text can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// Sign `text`, which must end in a newline and hold no control character but newlines.
    pub fn sign(text: &str, signer: &NoteSigner) -> Result<Note, NoteError> {
        check_text(text)?;
        let mut note = Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        };
        note.add_signature(signer)?;
        Ok(note)
    }

    /// Add `signer`'s signature, replacing any earlier one by the same name and key id.
    pub fn add_signature(&mut self, signer: &NoteSigner) -> Result<(), NoteError> {
        self.signatures
            .retain(|s| !(s.name == signer.name && s.key_id == signer.key_id));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        self.signatures.push(signer.signature(&self.text));
        let len = self.encoded_len();
        if len > MAX_NOTE_BYTES {
            self.signatures.pop();
            return Err(NoteError::TooLarge { len });
        }
        Ok(())
    }

    /// Read a signed note without trusting it: the form is checked (size, UTF-8, no control
    /// characters, the blank line, each signature line), no signature is.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: bytes.len() });
        }
        let all = std::str::from_utf8(bytes).map_err(|e| NoteError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        if let Some(offset) = all.bytes().position(|b| b < b' ' && b != b'\n') {
            return Err(NoteError::ControlCharacter { offset });
        }
        // The text may hold blank lines; the last one separates it from the signatures.
        let split = all.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
        let (text, lines) = (&all[..=split], &all[split + 2..]);
        if lines.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        if !lines.ends_with('\n') {
            return Err(NoteError::UnterminatedLine);
        }
        let first_line = text.matches('\n').count() + 2;
        let mut signatures = Vec::new();
        for (line, content) in (first_line..).zip(lines.split_terminator('\n')) {
            if signatures.len() >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(
                parse_signature_line(content)
                    .map_err(|problem| NoteError::BadSignatureLine { line, problem })?,
            );
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// [`Note::parse`] then [`Note::verify`]: the note, if it is signed by one of `keys`.
    pub fn open(bytes: &[u8], keys: &[VerifierKey]) -> Result<Note, NoteError> {
        let note = Note::parse(bytes)?;
        note.verify(keys)?;
        Ok(note)
    }

    /// Check every signature by one of `keys` and return those that verify, each once.
    /// Signatures by other keys are ignored, as the spec requires (they may be witnesses' or a
    /// rotated key's); a signature by a known key that does not verify rejects the note, and so
    /// does a note no known key signed.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Vec<&NoteSignature>, NoteError> {
        let mut verified: Vec<&NoteSignature> = Vec::new();
        for signature in &self.signatures {
            let mut known = keys
                .iter()
                .filter(|k| k.name == signature.name && k.key_id == signature.key_id);
            let Some(key) = known.next() else {
                continue;
            };
            if known.any(|other| other.key != key.key) {
                return Err(NoteError::AmbiguousKey {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                });
            }
            if verified.contains(&signature) {
                continue;
            }
            if !key.verifies(self.text.as_bytes(), &signature.signature) {
                return Err(NoteError::InvalidSignature {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                });
            }
            verified.push(signature);
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }

    /// The signed text, final newline included. Untrusted until [`Note::verify`] passes.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    fn encoded_len(&self) -> usize {
        // Each line: prefix, name, space, base64 of (4 + n) bytes, newline.
        self.text.len()
            + 1
            + self
                .signatures
                .iter()
                .map(|s| {
                    SIGNATURE_PREFIX.len()
                        + s.name.len()
                        + 2
                        + (4 + s.signature.len()).div_ceil(3) * 4
                })
                .sum::<usize>()
    }
}

impl fmt::Display for Note {
    /// The signed note as it is written to a file or served.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            signature.fmt(f)?;
        }
        Ok(())
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: text.len() });
    }
    if !text.ends_with('\n') {
        return Err(NoteError::TextWithoutNewline);
    }
    if let Some(offset) = text.bytes().position(|b| b < b' ' && b != b'\n') {
        return Err(NoteError::ControlCharacter { offset });
    }
    Ok(())
}

/// `— <name> <base64(key id || signature)>`, newline already cut.
fn parse_signature_line(line: &str) -> Result<NoteSignature, &'static str> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or("a signature line begins with an em dash (U+2014) and a space")?;
    let (name, encoded) = rest
        .split_once(' ')
        .ok_or("a signature line is the key name, a space and the signature")?;
    check_name(name)
        .map_err(|_| "the key name is empty or holds a space, a control character or '+'")?;
    let payload = STANDARD
        .decode(encoded)
        .map_err(|_| "the signature is not standard base64 with padding")?;
    if payload.len() < 5 {
        return Err("the signature is shorter than a key id and one byte");
    }
    let (id, signature) = payload.split_at(4);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        signature: signature.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // golang.org/x/mod sumdb/note/note_test.go (TestSign, TestOpen, TestNewVerifier), the
    // example of the package documentation that c2sp.org/signed-note grew from. PETER_SKEY is
    // Go's private key format, PRIVATE+KEY+<name>+<id>+base64(0x01 || seed).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    // The example of c2sp.org/signed-note.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    fn vkey(text: &str) -> VerifierKey {
        VerifierKey::parse(text).expect("a verifier key")
    }

    fn peter_seed() -> [u8; 32] {
        let encoded = PETER_SKEY.splitn(5, '+').nth(4).expect("key part");
        let key = STANDARD.decode(encoded).expect("base64");
        assert_eq!(key[0], ED25519);
        key[1..].try_into().expect("32-byte seed")
    }

    fn peter_signer() -> NoteSigner {
        NoteSigner::from_seed("PeterNeumann", &peter_seed()).expect("signer")
    }

    fn signer(name: &str, n: u8) -> NoteSigner {
        NoteSigner::from_seed(name, &[n; 32]).expect("signer")
    }

    #[test]
    fn signing_the_go_example_reproduces_its_signature_byte_for_byte() {
        let signer = peter_signer();
        assert_eq!(signer.key_id(), 0xc74f_20a3);
        assert_eq!(signer.verifier_key().to_vkey(), PETER_VKEY);
        assert_eq!(signer.verifier_key(), vkey(PETER_VKEY));

        let note = Note::sign(TEXT, &signer).expect("sign");

        assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn the_spec_example_verifies_and_no_changed_byte_does() {
        let key = vkey(SPEC_VKEY);
        assert_eq!(key.name(), "example.com/foo");
        assert_eq!(key.key_id(), 0x530d_903a);
        assert_eq!(key.to_string(), SPEC_VKEY);

        let note = Note::open(SPEC_NOTE.as_bytes(), std::slice::from_ref(&key)).expect("opens");
        assert_eq!(note.text(), "This is an example message.\n");
        assert_eq!(note.to_string(), SPEC_NOTE);

        let mut bytes = SPEC_NOTE.as_bytes().to_vec();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x20] {
                bytes[i] ^= bit;
                assert!(
                    Note::open(&bytes, std::slice::from_ref(&key)).is_err(),
                    "byte {i} ^ {bit:#x} still verifies"
                );
                bytes[i] ^= bit;
            }
        }
    }

    #[test]
    fn the_go_example_opens_with_unknown_signatures_ignored() {
        let (peter, enoch) = (vkey(PETER_VKEY), vkey(ENOCH_VKEY));
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");

        let note = Note::parse(both.as_bytes()).expect("parses");
        assert_eq!(note.text(), TEXT);
        assert_eq!(note.signatures().len(), 2);
        assert_eq!(note.signatures()[1].key_id, 0xaf0c_fe78);

        let verified = note
            .verify(std::slice::from_ref(&peter))
            .expect("Peter's verifies");
        assert_eq!(verified, vec![&note.signatures()[0]]);
        let verified = note.verify(&[peter, enoch.clone()]).expect("both verify");
        assert_eq!(verified.len(), 2);
        assert_eq!(note.verify(&[]), Err(NoteError::NoKnownSignature));

        // A key that shares the name but not the id (or the id but not the name) is unknown.
        let other = signer("PeterNeumann", 9).verifier_key();
        assert_eq!(
            Note::open(format!("{TEXT}\n{PETER_SIG}").as_bytes(), &[other, enoch]),
            Err(NoteError::NoKnownSignature)
        );
    }

    #[test]
    fn a_bad_signature_by_a_known_key_rejects_the_note() {
        let peter = vkey(PETER_VKEY);
        // Go's TestOpen: four base64 characters slipped into the signature.
        let forged = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        let expected = Err(NoteError::InvalidSignature {
            name: "PeterNeumann".to_owned(),
            key_id: 0xc74f_20a3,
        });
        assert_eq!(
            Note::open(forged.as_bytes(), std::slice::from_ref(&peter)),
            expected
        );
        let altered = format!("{}\n{PETER_SIG}", TEXT.replace("answer", "answers"));
        assert_eq!(
            Note::open(altered.as_bytes(), std::slice::from_ref(&peter)),
            expected
        );
        // Even beside a valid signature by the same key.
        let both = format!(
            "{TEXT}\n{PETER_SIG}{}ABCD{}",
            &PETER_SIG[..60],
            &PETER_SIG[60..]
        );
        assert_eq!(Note::open(both.as_bytes(), &[peter]), expected);
    }

    #[test]
    fn repeated_signatures_count_once_and_two_keys_under_one_id_are_refused() {
        let peter = vkey(PETER_VKEY);
        let repeated = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}");
        let note = Note::parse(repeated.as_bytes()).expect("parses");
        assert_eq!(
            note.verify(std::slice::from_ref(&peter))
                .expect("verifies")
                .len(),
            1
        );

        let impostor = VerifierKey {
            key: signer("PeterNeumann", 3).verifier_key().key,
            ..peter.clone()
        };
        assert_eq!(
            note.verify(&[peter.clone(), impostor]),
            Err(NoteError::AmbiguousKey {
                name: "PeterNeumann".to_owned(),
                key_id: 0xc74f_20a3
            })
        );
        // The same key listed twice is not ambiguous.
        assert!(note.verify(&[peter.clone(), peter]).is_ok());
    }

    #[test]
    fn malformed_notes_are_refused_with_what_was_wrong() {
        let cases: Vec<(Vec<u8>, NoteError)> = vec![
            (TEXT.into(), NoteError::NoSignatures),
            (format!("{TEXT}\n").into(), NoteError::NoSignatures),
            (
                format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]).into(),
                NoteError::UnterminatedLine,
            ),
            (
                format!("\x01{TEXT}\n{PETER_SIG}").into(),
                NoteError::ControlCharacter { offset: 0 },
            ),
            (
                format!("{TEXT}\r\n{PETER_SIG}").into(),
                NoteError::ControlCharacter { offset: TEXT.len() },
            ),
            (
                [b"\xff", format!("{TEXT}\n{PETER_SIG}").as_bytes()].concat(),
                NoteError::NotUtf8 { offset: 0 },
            ),
            (
                format!("{TEXT}\n{}", PETER_SIG.replace("PeterNeumann", "Bad Name")).into(),
                NoteError::BadSignatureLine {
                    line: 4,
                    problem: "the signature is not standard base64 with padding",
                },
            ),
            (
                format!(
                    "{TEXT}\n{}",
                    PETER_SIG.replace("PeterNeumann", "Peter+Neumann")
                )
                .into(),
                NoteError::BadSignatureLine {
                    line: 4,
                    problem: "the key name is empty or holds a space, a control character or '+'",
                },
            ),
            (
                format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into(),
                NoteError::BadSignatureLine {
                    line: 5,
                    problem: "a signature line begins with an em dash (U+2014) and a space",
                },
            ),
            (
                format!("{TEXT}\n{}", PETER_SIG.replacen('\u{2014}', "-", 1)).into(),
                NoteError::BadSignatureLine {
                    line: 4,
                    problem: "a signature line begins with an em dash (U+2014) and a space",
                },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann\n").into(),
                NoteError::BadSignatureLine {
                    line: 4,
                    problem: "a signature line is the key name, a space and the signature",
                },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann AAAAAA==\n").into(),
                NoteError::BadSignatureLine {
                    line: 4,
                    problem: "the signature is shorter than a key id and one byte",
                },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann x08go/ZJ\n").into(),
                NoteError::InvalidSignature {
                    name: "PeterNeumann".to_owned(),
                    key_id: 0xc74f_20a3,
                },
            ),
        ];
        let peter = vkey(PETER_VKEY);
        for (bytes, expected) in cases {
            assert_eq!(
                Note::open(&bytes, std::slice::from_ref(&peter)),
                Err(expected.clone()),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn notes_are_bounded_in_size_and_signatures() {
        let peter = vkey(PETER_VKEY);
        let at_limit = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
        assert!(Note::open(at_limit.as_bytes(), std::slice::from_ref(&peter)).is_ok());
        let over = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            Note::open(over.as_bytes(), std::slice::from_ref(&peter)),
            Err(NoteError::TooManySignatures)
        );
        assert_eq!(
            Note::parse(over.as_bytes()),
            Err(NoteError::TooManySignatures)
        );

        let huge = format!("{}\n{PETER_SIG}", "a\n".repeat(MAX_NOTE_BYTES / 2));
        assert_eq!(
            Note::parse(huge.as_bytes()),
            Err(NoteError::TooLarge { len: huge.len() })
        );
        let big_text = "a".repeat(MAX_NOTE_BYTES - 100) + "\n";
        assert!(matches!(
            Note::sign(&big_text, &peter_signer()),
            Err(NoteError::TooLarge { .. })
        ));

        let mut note = Note::sign(TEXT, &signer("a", 0)).expect("sign");
        for n in 1..MAX_SIGNATURES {
            note.add_signature(&signer(&format!("w{n}"), n as u8))
                .expect("room");
        }
        assert_eq!(
            note.add_signature(&signer("one-too-many", 200)),
            Err(NoteError::TooManySignatures)
        );
        assert_eq!(note.signatures().len(), MAX_SIGNATURES);
        let reparsed = Note::parse(note.to_string().as_bytes()).expect("a full note parses");
        assert_eq!(reparsed, note);
    }

    #[test]
    fn signing_refuses_text_a_note_cannot_carry_and_re_signing_replaces() {
        let signer = peter_signer();
        assert_eq!(
            Note::sign("abc", &signer),
            Err(NoteError::TextWithoutNewline)
        );
        assert_eq!(
            Note::sign("a\tb\n", &signer),
            Err(NoteError::ControlCharacter { offset: 1 })
        );
        let mut note = Note::sign(TEXT, &signer).expect("sign");
        note.add_signature(&signer).expect("again");
        assert_eq!(note.signatures().len(), 1, "one signature per key");
        note.add_signature(&signer_named_enoch()).expect("cosign");
        assert_eq!(note.signatures().len(), 2);
        // Text with blank lines, and text that looks like signatures, still round-trips.
        for text in ["\n", "a\n\nb\n", "a\n\n\n", "x\n\n\u{2014} fake AAAAAAAA\n"] {
            let note = Note::sign(text, &signer).expect("sign");
            let opened =
                Note::open(note.to_string().as_bytes(), &[signer.verifier_key()]).expect("opens");
            assert_eq!(opened.text(), text);
        }
    }

    fn signer_named_enoch() -> NoteSigner {
        signer("EnochRoot", 7)
    }

    #[test]
    fn verifier_keys_refuse_every_mangling_with_a_reason() {
        // Go's TestNewVerifier: no proper substring and no byte changed by one is a key.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let part = std::str::from_utf8(&b[i..j]).expect("ASCII");
                    assert!(VerifierKey::parse(part).is_err(), "{part}");
                }
            }
        }
        let mut mangled = b.to_vec();
        for i in 0..mangled.len() {
            mangled[i] += 1;
            let text = std::str::from_utf8(&mangled).expect("ASCII");
            assert!(VerifierKey::parse(text).is_err(), "{text}");
            mangled[i] -= 1;
        }
        // Go's two keys whose id was adjusted to match: a wrong length (whose base64 is not
        // canonical, which Go reads and this module does not), an unknown algorithm.
        assert_eq!(
            VerifierKey::parse(
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
            ),
            Err(KeyError::BadBase64)
        );
        let long_key = STANDARD.encode([[ED25519].as_slice(), &[7; 36]].concat());
        assert_eq!(
            VerifierKey::parse(&format!("PeterNeumann+cc469956+{long_key}")),
            Err(KeyError::WrongLength(36))
        );
        assert_eq!(
            VerifierKey::parse(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(KeyError::UnknownAlgorithm(0x65))
        );

        let cases = [
            ("PeterNeumann", KeyError::NotAVerifierKey),
            ("PeterNeumann+c74f20a3", KeyError::NotAVerifierKey),
            (
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::BadName("Peter Neumann".to_owned()),
            ),
            (
                "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::BadName(String::new()),
            ),
            (
                "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::BadKeyId("c74f20a".to_owned()),
            ),
            (
                "PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::BadKeyId("c74f20ag".to_owned()),
            ),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
                KeyError::BadBase64,
            ),
            ("PeterNeumann+c74f20a3+", KeyError::WrongLength(0)),
            (
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::KeyIdMismatch {
                    stated: 0xc74f_20a4,
                    computed: 0xc74f_20a3,
                },
            ),
            (
                "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                KeyError::BadKeyId("KEY".to_owned()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(VerifierKey::parse(text), Err(expected), "{text}");
        }
        // Upper-case hex is read, as Go reads it; the key prints in lower case.
        assert_eq!(
            VerifierKey::parse(&PETER_VKEY.replace("c74f20a3", "C74F20A3")).map(|k| k.to_vkey()),
            Ok(PETER_VKEY.to_owned())
        );
    }

    #[test]
    fn small_order_and_off_curve_keys_are_refused() {
        // The identity point, of small order: it would "verify" forged signatures.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            VerifierKey::new("log", &identity),
            Err(KeyError::BadPublicKey)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            VerifierKey::new("log", &off_curve),
            Err(KeyError::BadPublicKey)
        );
        assert!(matches!(
            NoteSigner::from_seed("a+b", &[1; 32]),
            Err(KeyError::BadName(_))
        ));
        assert!(matches!(
            NoteSigner::from_seed("a\nb", &[1; 32]),
            Err(KeyError::BadName(_))
        ));
    }

    #[test]
    fn the_private_key_is_never_printed() {
        let seed = peter_seed();
        let signer = peter_signer();
        let shown = format!("{signer:?} {:?}", signer.verifier_key());
        assert!(
            shown.contains("PeterNeumann") && shown.contains("c74f20a3"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        let secret_forms = [
            hex::encode(seed),
            hex::encode_upper(seed),
            STANDARD.encode(seed),
            format!("{seed:?}"),
            format!("{:?}", &seed[..8]),
            PETER_SKEY.splitn(5, '+').nth(4).expect("key").to_owned(),
        ];
        for secret in secret_forms {
            assert!(!shown.contains(&secret), "{shown} holds {secret}");
        }
    }

    #[test]
    fn key_id_is_sha256_over_the_documented_layout() {
        let public_key = [0x42; 32];
        let mut preimage = b"example.com/log".to_vec();
        preimage.push(0x0a);
        preimage.push(0x01);
        preimage.extend_from_slice(&public_key);
        let digest = Sha256::digest(&preimage);
        assert_eq!(
            key_id("example.com/log", &public_key),
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        );
    }

    proptest! {
        #[test]
        fn any_signable_text_round_trips_and_verifies(
            lines in proptest::collection::vec("[^\\x00-\\x1f]{0,40}", 1..6),
            seed in any::<[u8; 32]>(),
        ) {
            let text = lines.join("\n") + "\n";
            let signer = NoteSigner::from_seed("example.com/log", &seed).expect("signer");
            let note = Note::sign(&text, &signer).expect("sign");
            let written = note.to_string();
            let opened = Note::open(written.as_bytes(), &[signer.verifier_key()]).expect("open");
            prop_assert_eq!(opened.text(), text.as_str());
            prop_assert_eq!(&opened, &note);
            let parsed_key = VerifierKey::parse(&signer.verifier_key().to_vkey());
            prop_assert_eq!(parsed_key, Ok(signer.verifier_key()));
        }

        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Note::open(&bytes, &[vkey(PETER_VKEY)]);
            let _ = VerifierKey::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn parsing_mangled_notes_never_panics(
            at in 0usize..200,
            with in "[\\x00-\\x7f\u{2014}]{0,3}",
        ) {
            let note = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
            let at = (0..=at.min(note.len())).rev().find(|&i| note.is_char_boundary(i)).unwrap_or(0);
            let mangled = format!("{}{with}{}", &note[..at], &note[at..]);
            let _ = Note::open(mangled.as_bytes(), &[vkey(PETER_VKEY), vkey(ENOCH_VKEY)]);
        }
    }
}
