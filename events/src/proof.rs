//! Self-contained proof files a user checks offline with the log's verifier key.
//!
//! An inclusion proof (`tokenledger prove POSITION`) is one line of compact JSON:
//!
//! ```text
//! {"format":"tokenledger-proof/v1","index":<leaf index = position - 1>,"tree_size":<n>,
//!  "bytes":"<base64 canonical bytes>","inclusion":["<base64 hash>",...],
//!  "checkpoint":"<signed checkpoint note>"}
//! ```
//!
//! [`verify_proof`] opens the checkpoint with a trusted key, checks the inclusion path from the
//! leaf of the bytes to the signed root, and decodes the event, so "token X revoked at T" is
//! shown to be in the log the key signed. A consistency proof
//! (`{"format":"tokenledger-consistency/v1","older":..,"newer":..,"proof":[..]}`) shows a newer
//! signed checkpoint extends an older one. Files are read strictly: the JSON must be exactly
//! what the writer produces (key order, compact, one final newline), so no two files say the
//! same thing and any changed byte is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::chain::MAX_EVENT_BYTES;
use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::codec::{self, CodecError, Header};
use crate::merkle::{self, MerkleError};
use crate::note::VerifierKey;
use crate::primitives::Hash;
use crate::vocabulary::TokenEvent;

pub const PROOF_FORMAT: &str = "tokenledger-proof/v1";
pub const CONSISTENCY_FORMAT: &str = "tokenledger-consistency/v1";
/// The largest proof file read: the largest event in base64, a path and two checkpoints.
pub const MAX_PROOF_BYTES: usize = 2 * MAX_EVENT_BYTES;
/// A proof path of a tree below `MAX_TREE_SIZE` has at most this many hashes (62 levels, and a
/// consistency proof one more).
const MAX_PATH: usize = 64;

/// Why a proof file was not written or not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a proof file is at most {MAX_PROOF_BYTES} bytes, this one is {0}")]
    TooLarge(usize),
    #[error("not a proof file: {0}")]
    NotJson(String),
    #[error("the format is {0:?}, not {1}")]
    WrongFormat(String, &'static str),
    #[error(
        "the file is not in the one form the writer produces (compact, key order, final newline)"
    )]
    NotCanonical,
    #[error("{0} is not standard base64")]
    BadBase64(&'static str),
    #[error("hash {0} of the path is not 32 bytes")]
    BadHash(usize),
    #[error("the path has {0} hashes, more than any tree this log can have needs")]
    PathTooLong(usize),
    #[error("the event is {0} bytes, above the limit")]
    EventTooLarge(usize),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the proof is for a tree of {proof} leaves, and the checkpoint is of {checkpoint}")]
    SizeMismatch { proof: u64, checkpoint: u64 },
    #[error("the event is not in the checkpoint's tree: {0}")]
    Inclusion(MerkleError),
    #[error("the newer checkpoint does not extend the older one: {0}")]
    Consistency(CheckpointError),
    #[error("the event's bytes do not decode: {0}")]
    Undecodable(CodecError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofFile {
    format: String,
    index: u64,
    tree_size: u64,
    bytes: String,
    inclusion: Vec<String>,
    checkpoint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyFile {
    format: String,
    older: String,
    newer: String,
    proof: Vec<String>,
}

/// An event shown to be in a signed tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEvent {
    pub position: u64,
    pub header: Header,
    pub event: TokenEvent,
    pub checkpoint: Checkpoint,
    /// `<name>+<key id hex>` of the trusted key that signed the checkpoint.
    pub signed_by: String,
}

impl ProvenEvent {
    /// One line for a person: what happened to which token, when, and under which signed tree.
    pub fn summary(&self) -> String {
        let token = self.header.stream_id.token_id().map_or_else(
            || self.header.stream_id.to_string(),
            |id| format!("token {id}"),
        );
        let what = match &self.event {
            TokenEvent::Created(_) => "created".to_owned(),
            TokenEvent::Used(_) => "used".to_owned(),
            TokenEvent::UseDenied(d) => format!("denied ({})", d.reason.as_str()),
            TokenEvent::UseDeniedSummary(d) => {
                format!("denied {} more times ({})", d.count, d.reason.as_str())
            }
            TokenEvent::Revoked(_) => "revoked".to_owned(),
            TokenEvent::Rotated(r) => format!("rotated to {}", r.successor_id),
            TokenEvent::LeakReported(l) => format!("reported leaked by {}", l.reporter),
        };
        format!(
            "{token} {what} at {} by {}: position {} of {} in {}, signed by {}",
            self.header.recorded_at.to_rfc3339(),
            self.header.actor,
            self.position,
            self.checkpoint.size(),
            self.checkpoint.origin(),
            self.signed_by
        )
    }
}

/// Two signed checkpoints, the newer shown to extend the older.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenConsistency {
    pub older: Checkpoint,
    pub newer: Checkpoint,
}

fn to_file<T: Serialize>(value: &T) -> Vec<u8> {
    // Strings, integers and vectors of strings always serialize into memory.
    let mut out = serde_json::to_vec(value).expect("a proof file serializes");
    out.push(b'\n');
    out
}

/// Parse `file` as `T`, and hold it to the one form [`to_file`] writes.
fn from_file<'a, T: Serialize + Deserialize<'a>>(file: &'a [u8]) -> Result<T, ProofError> {
    if file.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge(file.len()));
    }
    let parsed: T = serde_json::from_slice(file).map_err(|e| ProofError::NotJson(e.to_string()))?;
    if to_file(&parsed) != file {
        return Err(ProofError::NotCanonical);
    }
    Ok(parsed)
}

fn decode_path(path: &[String]) -> Result<Vec<Hash>, ProofError> {
    if path.len() > MAX_PATH {
        return Err(ProofError::PathTooLong(path.len()));
    }
    path.iter()
        .enumerate()
        .map(|(i, h)| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|b| Hash::from_slice(&b))
                .ok_or(ProofError::BadHash(i))
        })
        .collect()
}

fn encode_path(path: &[Hash]) -> Vec<String> {
    path.iter().map(|h| STANDARD.encode(h.0)).collect()
}

/// The name and key id of the first trusted signature on `signed` by its origin's key.
fn signer(signed: &SignedCheckpoint, keys: &[VerifierKey]) -> String {
    signed
        .note()
        .verify(keys)
        .ok()
        .and_then(|v| {
            v.iter()
                .find(|s| s.name == signed.checkpoint().origin())
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
        })
        .unwrap_or_default()
}

/// The proof file for the event with canonical `bytes` at leaf `index` of `checkpoint`'s tree,
/// with its inclusion path. Refuses a path that does not verify, so no file that fails is
/// written.
pub fn proof_file(
    bytes: &[u8],
    index: u64,
    checkpoint: &SignedCheckpoint,
    inclusion: &[Hash],
) -> Result<Vec<u8>, ProofError> {
    checkpoint
        .checkpoint()
        .verify_includes(&merkle::leaf_hash(bytes), index, inclusion)
        .map_err(|e| match e {
            CheckpointError::Merkle(m) => ProofError::Inclusion(m),
            other => ProofError::Checkpoint(other),
        })?;
    Ok(to_file(&ProofFile {
        format: PROOF_FORMAT.to_owned(),
        index,
        tree_size: checkpoint.checkpoint().size(),
        bytes: STANDARD.encode(bytes),
        inclusion: encode_path(inclusion),
        checkpoint: checkpoint.to_string(),
    }))
}

/// Check a proof file against the trusted keys: the checkpoint's signature by its origin's
/// key, the inclusion of the event's leaf in its tree, and that the bytes decode to an event.
pub fn verify_proof(file: &[u8], keys: &[VerifierKey]) -> Result<ProvenEvent, ProofError> {
    let proof: ProofFile = from_file(file)?;
    if proof.format != PROOF_FORMAT {
        return Err(ProofError::WrongFormat(
            proof.format.chars().take(40).collect(),
            PROOF_FORMAT,
        ));
    }
    let signed = SignedCheckpoint::open(proof.checkpoint.as_bytes(), keys)?;
    let checkpoint = signed.checkpoint();
    if proof.tree_size != checkpoint.size() {
        return Err(ProofError::SizeMismatch {
            proof: proof.tree_size,
            checkpoint: checkpoint.size(),
        });
    }
    let bytes = STANDARD
        .decode(&proof.bytes)
        .map_err(|_| ProofError::BadBase64("bytes"))?;
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(ProofError::EventTooLarge(bytes.len()));
    }
    let path = decode_path(&proof.inclusion)?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&bytes),
        proof.index,
        checkpoint.size(),
        &checkpoint.root(),
        &path,
    )
    .map_err(ProofError::Inclusion)?;
    let decoded = codec::decode(&bytes).map_err(ProofError::Undecodable)?;
    Ok(ProvenEvent {
        // index < size <= u64::MAX, so this cannot overflow.
        position: proof.index + 1,
        header: decoded.header,
        event: decoded.event,
        checkpoint: checkpoint.clone(),
        signed_by: signer(&signed, keys),
    })
}

/// The consistency file showing `newer` extends `older`. Refuses a proof that does not verify.
pub fn consistency_file(
    older: &SignedCheckpoint,
    newer: &SignedCheckpoint,
    proof: &[Hash],
) -> Result<Vec<u8>, ProofError> {
    newer
        .checkpoint()
        .verify_extends(older.checkpoint(), proof)
        .map_err(ProofError::Consistency)?;
    Ok(to_file(&ConsistencyFile {
        format: CONSISTENCY_FORMAT.to_owned(),
        older: older.to_string(),
        newer: newer.to_string(),
        proof: encode_path(proof),
    }))
}

/// Check a consistency file: both checkpoints signed by their origin's trusted key, of the
/// same log, and the newer tree extends the older.
pub fn verify_consistency_file(
    file: &[u8],
    keys: &[VerifierKey],
) -> Result<ProvenConsistency, ProofError> {
    let proof: ConsistencyFile = from_file(file)?;
    if proof.format != CONSISTENCY_FORMAT {
        return Err(ProofError::WrongFormat(
            proof.format.chars().take(40).collect(),
            CONSISTENCY_FORMAT,
        ));
    }
    let older = SignedCheckpoint::open(proof.older.as_bytes(), keys)?;
    let newer = SignedCheckpoint::open(proof.newer.as_bytes(), keys)?;
    let path = decode_path(&proof.proof)?;
    newer
        .checkpoint()
        .verify_extends(older.checkpoint(), &path)
        .map_err(ProofError::Consistency)?;
    Ok(ProvenConsistency {
        older: older.checkpoint().clone(),
        newer: newer.checkpoint().clone(),
    })
}
