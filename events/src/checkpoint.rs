//! Checkpoints (c2sp.org/tlog-checkpoint): the log's size and Merkle root, signed as a note by
//! the log's key, whose name is the origin.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//!
//! — <origin> <base64(key id || Ed25519 signature)>
//! ```
//!
//! This log writes no extension lines and reads none: they are not auditable, and a reader that
//! skipped them would trust text it cannot check. Parsing is strict (no leading zeros, padded
//! standard base64 of exactly 32 bytes), so one tree head has exactly one text. Anyone holding
//! the log's [`VerifierKey`] checks a checkpoint offline with [`SignedCheckpoint::open`], and
//! checks an exported event or a newer checkpoint against it with the Merkle proofs in
//! [`Checkpoint::verify_includes`] and [`Checkpoint::verify_extends`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::merkle::{self, MerkleError};
use crate::note::{Note, NoteError, NoteSigner, VerifierKey};
use crate::primitives::Hash;

/// Why a checkpoint could not be made, read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error("a checkpoint ends in a newline")]
    MissingNewline,
    #[error("a checkpoint is three lines (origin, tree size, root hash); this one has {0}")]
    TooFewLines(usize),
    #[error("the checkpoint has {0} extension line(s), and this log's checkpoints have none")]
    ExtensionLines(usize),
    #[error("the origin {0}")]
    BadOrigin(&'static str),
    #[error("the tree size is not a decimal number without leading zeros below 2^64")]
    BadSize,
    #[error("the root hash is not 32 bytes of standard base64 with padding")]
    BadRoot,
    #[error(
        "the log's key is named {signer:?}, and a checkpoint is signed by its origin {origin:?}"
    )]
    SignerIsNotOrigin { signer: String, origin: String },
    #[error("no signature that verifies is by the key of the origin {origin:?}")]
    OriginNotSigned { origin: String },
    #[error("the checkpoints are of two logs, {older:?} and {newer:?}")]
    OriginChanged { older: String, newer: String },
}

/// A tree head: which log (origin), how many leaves, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
}

impl Checkpoint {
    /// The checkpoint of `origin`'s tree of `size` leaves with root `root`. The origin must be
    /// one non-empty line without control characters.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, CheckpointError> {
        check_origin(origin)?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Read a checkpoint body, exactly `<origin>\n<size>\n<base64 root>\n`.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines(lines.len()));
        };
        if !extensions.is_empty() {
            return Err(CheckpointError::ExtensionLines(extensions.len()));
        }
        check_origin(origin)?;
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size: parse_size(size)?,
            root: parse_root(root)?,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> Hash {
        self.root
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.0)
        )
    }

    /// Check that `proof` shows `leaf` (a [`merkle::leaf_hash`]) at leaf `index` of this
    /// checkpoint's tree; the event at position `p` is leaf `p - 1`.
    pub fn verify_includes(
        &self,
        leaf: &Hash,
        index: u64,
        proof: &[Hash],
    ) -> Result<(), CheckpointError> {
        Ok(merkle::verify_inclusion(
            leaf, index, self.size, &self.root, proof,
        )?)
    }

    /// Check that `proof` shows this checkpoint's tree to extend `older`'s, of the same log: the
    /// log rewrote nothing between them.
    pub fn verify_extends(
        &self,
        older: &Checkpoint,
        proof: &[Hash],
    ) -> Result<(), CheckpointError> {
        if older.origin != self.origin {
            return Err(CheckpointError::OriginChanged {
                older: older.origin.clone(),
                newer: self.origin.clone(),
            });
        }
        Ok(merkle::verify_consistency(
            older.size,
            &older.root,
            self.size,
            &self.root,
            proof,
        )?)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A checkpoint and the signed note that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
}

impl SignedCheckpoint {
    /// Sign `checkpoint` with the log's key, which must be named for the origin.
    pub fn sign(
        checkpoint: Checkpoint,
        signer: &NoteSigner,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        if signer.name() != checkpoint.origin {
            return Err(CheckpointError::SignerIsNotOrigin {
                signer: signer.name().to_owned(),
                origin: checkpoint.origin,
            });
        }
        let note = Note::sign(&checkpoint.to_text(), signer)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// Read a signed checkpoint and trust it only if a key of `keys` named for its origin signed
    /// it. Signatures by the other keys given (witnesses) must verify too; unknown ones are
    /// ignored. The text is parsed only after the signatures verified.
    pub fn open(bytes: &[u8], keys: &[VerifierKey]) -> Result<SignedCheckpoint, CheckpointError> {
        let note = Note::parse(bytes)?;
        let verified = note.verify(keys)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if !verified.iter().any(|s| s.name == checkpoint.origin) {
            return Err(CheckpointError::OriginNotSigned {
                origin: checkpoint.origin,
            });
        }
        Ok(SignedCheckpoint { checkpoint, note })
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    pub fn note(&self) -> &Note {
        &self.note
    }
}

impl fmt::Display for SignedCheckpoint {
    /// The signed note, as served and exported.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.note.fmt(f)
    }
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() {
        return Err(CheckpointError::BadOrigin("is empty"));
    }
    if origin.chars().any(char::is_control) {
        return Err(CheckpointError::BadOrigin(
            "holds a newline or another control character",
        ));
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(CheckpointError::BadSize);
    }
    text.parse().map_err(|_| CheckpointError::BadSize)
}

fn parse_root(text: &str) -> Result<Hash, CheckpointError> {
    if text.len() != 44 {
        return Err(CheckpointError::BadRoot);
    }
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| CheckpointError::BadRoot)?;
    Hash::from_slice(&bytes).ok_or(CheckpointError::BadRoot)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::merkle::{RightEdge, consistency_proof, inclusion_proof, leaf_hash, tree_root};

    const ORIGIN: &str = "tokenledger.example/log";

    fn log_key() -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, &[0x5a; 32]).expect("signer")
    }

    fn root(n: u8) -> Hash {
        Hash([n; 32])
    }

    #[test]
    fn the_body_is_origin_size_and_base64_root_each_on_a_line() {
        let checkpoint = Checkpoint::new(ORIGIN, 1234, root(0xff)).expect("checkpoint");
        let text = "tokenledger.example/log\n1234\n//////////////////////////////////////////8=\n";
        assert_eq!(checkpoint.to_text(), text);
        assert_eq!(checkpoint.to_string(), text);
        assert_eq!(Checkpoint::parse(text), Ok(checkpoint));
        let empty = Checkpoint::new(ORIGIN, 0, merkle::EMPTY_ROOT).expect("checkpoint");
        assert_eq!(
            empty.to_text(),
            "tokenledger.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse(&empty.to_text()), Ok(empty));
    }

    #[test]
    fn the_spec_examples_body_parses() {
        // c2sp.org/tlog-checkpoint's example, signature lines left off.
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let checkpoint = Checkpoint::parse(text).expect("parses");
        assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size(), 20_852_163);
        assert_eq!(checkpoint.to_text(), text);
    }

    #[test]
    fn a_real_sumdb_checkpoint_verifies_as_a_note_but_is_not_signed_by_its_origin() {
        // A signed tree head served by sum.golang.org, checked with the key the go command
        // ships. Its origin ("go.sum database tree") is not its key's name, which this log's
        // checkpoints require.
        let key = VerifierKey::parse(
            "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
        )
        .expect("the go command's key");
        let served = "go.sum database tree\n15368405\n/g9am3I6YWNKaZX/jkne1fqd9zEyjss+JXyPXG0WfkY=\n\n\u{2014} sum.golang.org Az3grqJGUaSGukG9p8nI2vKgiFn7qGHxn0W+mrwyI6Gz3F0t1J3LzmWk/p96Ybf295EjwdSwlzgijq5WA9d1Ded7owM=\n";
        let note = Note::open(served.as_bytes(), std::slice::from_ref(&key)).expect("verifies");
        let checkpoint = Checkpoint::parse(note.text()).expect("a checkpoint");
        assert_eq!(checkpoint.size(), 15_368_405);
        assert_eq!(
            SignedCheckpoint::open(served.as_bytes(), &[key]),
            Err(CheckpointError::OriginNotSigned {
                origin: "go.sum database tree".to_owned()
            })
        );
    }

    #[test]
    fn parsing_is_strict_and_says_what_is_wrong() {
        let r = "//////////////////////////////////////////8=";
        let cases = [
            (format!("{ORIGIN}\n5\n{r}"), CheckpointError::MissingNewline),
            (format!("{ORIGIN}\n5\n"), CheckpointError::TooFewLines(2)),
            (String::from("\n"), CheckpointError::TooFewLines(1)),
            (
                format!("{ORIGIN}\n5\n{r}\nextension\n"),
                CheckpointError::ExtensionLines(1),
            ),
            (
                format!("{ORIGIN}\n5\n{r}\n\n"),
                CheckpointError::ExtensionLines(1),
            ),
            (
                format!("\n5\n{r}\n"),
                CheckpointError::BadOrigin("is empty"),
            ),
            (
                format!("log\r\n5\n{r}\n"),
                CheckpointError::BadOrigin("holds a newline or another control character"),
            ),
            (format!("{ORIGIN}\n05\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n00\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n+5\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n-5\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n 5\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n\n{r}\n"), CheckpointError::BadSize),
            (format!("{ORIGIN}\n５\n{r}\n"), CheckpointError::BadSize),
            (
                format!("{ORIGIN}\n18446744073709551616\n{r}\n"),
                CheckpointError::BadSize,
            ),
            (
                format!("{ORIGIN}\n5\n{}\n", &r[..43]),
                CheckpointError::BadRoot,
            ),
            (
                format!("{ORIGIN}\n5\n{}\n", r.replace('/', "_")),
                CheckpointError::BadRoot,
            ),
            (
                format!("{ORIGIN}\n5\n{}9\n", &r[..43]),
                CheckpointError::BadRoot,
            ),
            (
                format!("{ORIGIN}\n5\n{}\n", STANDARD.encode([1u8; 31])),
                CheckpointError::BadRoot,
            ),
            (
                format!("{ORIGIN}\n5\n{}\n", STANDARD.encode([1u8; 33])),
                CheckpointError::BadRoot,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Checkpoint::parse(&text), Err(expected), "{text:?}");
        }
        assert_eq!(
            Checkpoint::parse(&format!("{ORIGIN}\n18446744073709551615\n{r}\n")).map(|c| c.size()),
            Ok(u64::MAX)
        );
        assert_eq!(
            Checkpoint::new("a\nb", 1, root(1)),
            Err(CheckpointError::BadOrigin(
                "holds a newline or another control character"
            ))
        );
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_logs_key_and_not_otherwise() {
        let signer = log_key();
        let checkpoint = Checkpoint::new(ORIGIN, 42, root(7)).expect("checkpoint");
        let signed = SignedCheckpoint::sign(checkpoint.clone(), &signer).expect("sign");
        let written = signed.to_string();
        assert!(written.starts_with(&format!("{}\n\u{2014} {ORIGIN} ", checkpoint.to_text())));

        let opened =
            SignedCheckpoint::open(written.as_bytes(), &[signer.verifier_key()]).expect("opens");
        assert_eq!(opened.checkpoint(), &checkpoint);
        assert_eq!(opened, signed);

        let stranger = NoteSigner::from_seed(ORIGIN, &[1; 32]).expect("signer");
        assert_eq!(
            SignedCheckpoint::open(written.as_bytes(), &[stranger.verifier_key()]),
            Err(CheckpointError::Note(NoteError::NoKnownSignature))
        );
        let grown = written.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            SignedCheckpoint::open(grown.as_bytes(), &[signer.verifier_key()]),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));
    }

    #[test]
    fn only_the_origins_key_signs_and_witnesses_alone_do_not_make_it_trusted() {
        let checkpoint = Checkpoint::new(ORIGIN, 3, root(3)).expect("checkpoint");
        let witness = NoteSigner::from_seed("witness.example/w1", &[9; 32]).expect("signer");
        assert_eq!(
            SignedCheckpoint::sign(checkpoint.clone(), &witness),
            Err(CheckpointError::SignerIsNotOrigin {
                signer: "witness.example/w1".to_owned(),
                origin: ORIGIN.to_owned()
            })
        );

        let mut signed = SignedCheckpoint::sign(checkpoint, &log_key()).expect("sign");
        signed.note.add_signature(&witness).expect("cosign");
        let written = signed.to_string();
        let both = [log_key().verifier_key(), witness.verifier_key()];
        assert!(SignedCheckpoint::open(written.as_bytes(), &both).is_ok());
        // The log's key alone suffices; the witness's signature is then unknown and ignored.
        assert!(SignedCheckpoint::open(written.as_bytes(), &[log_key().verifier_key()]).is_ok());
        assert_eq!(
            SignedCheckpoint::open(written.as_bytes(), &[witness.verifier_key()]),
            Err(CheckpointError::OriginNotSigned {
                origin: ORIGIN.to_owned()
            })
        );
    }

    #[test]
    fn an_exported_event_and_a_newer_checkpoint_check_against_a_checkpoint() {
        let events: Vec<Vec<u8>> = (0..13u8).map(|i| vec![i; 1 + i as usize]).collect();
        let mut stored = Vec::new();
        let mut edge = RightEdge::new();
        for event in &events {
            stored.extend(edge.append(&leaf_hash(event)).expect("append").hashes);
        }
        let at = |size: u64| {
            Checkpoint::new(ORIGIN, size, tree_root(size, &stored).expect("root"))
                .expect("checkpoint")
        };
        let (older, newer) = (at(7), at(13));
        assert_eq!(newer.root(), edge.root());

        let proof = inclusion_proof(4, 7, &stored).expect("proof");
        assert_eq!(
            older.verify_includes(&leaf_hash(&events[4]), 4, &proof),
            Ok(())
        );
        assert_eq!(
            older.verify_includes(&leaf_hash(&events[5]), 4, &proof),
            Err(CheckpointError::Merkle(MerkleError::RootMismatch))
        );

        let proof = consistency_proof(7, 13, &stored).expect("proof");
        assert_eq!(newer.verify_extends(&older, &proof), Ok(()));
        let forked = Checkpoint::new(ORIGIN, 13, root(1)).expect("checkpoint");
        assert_eq!(
            forked.verify_extends(&older, &proof),
            Err(CheckpointError::Merkle(MerkleError::RootMismatch))
        );
        let elsewhere = Checkpoint::new("other.example/log", 13, newer.root()).expect("ok");
        assert!(matches!(
            elsewhere.verify_extends(&older, &proof),
            Err(CheckpointError::OriginChanged { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_checkpoint_round_trips_through_a_signed_note(
            origin in "[a-z0-9./-]{1,40}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            seed in any::<[u8; 32]>(),
        ) {
            let signer = NoteSigner::from_seed(&origin, &seed).expect("signer");
            let checkpoint = Checkpoint::new(&origin, size, Hash(root)).expect("checkpoint");
            prop_assert_eq!(Checkpoint::parse(&checkpoint.to_text()), Ok(checkpoint.clone()));
            let signed = SignedCheckpoint::sign(checkpoint, &signer).expect("sign");
            let opened = SignedCheckpoint::open(signed.to_string().as_bytes(), &[signer.verifier_key()]);
            prop_assert_eq!(opened, Ok(signed));
        }

        #[test]
        fn parsing_any_text_never_panics(text in "[a-z0-9+/=\n\r ]{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Checkpoint::parse(&text);
            let _ = SignedCheckpoint::open(&bytes, &[log_key().verifier_key()]);
        }
    }
}
