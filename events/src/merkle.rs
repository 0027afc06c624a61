//! The RFC 6962 Merkle tree over the events' canonical bytes: what a checkpoint signs.
//!
//! Leaf `SHA-256(0x00 || bytes)`, node `SHA-256(0x01 || left || right)`, and the empty tree
//! `SHA-256()`. The event at position `p` is leaf `p - 1`.
//!
//! The tree is kept as *stored hashes*, in the layout of Go's sumdb `tlog` (Crosby and Wallach's
//! ordering): appending leaf `n` stores its leaf hash and the root of every perfect subtree it
//! completes, `1 + trailing_ones(n)` hashes (just under two per leaf), at consecutive indexes
//! from [`stored_hash_index`]`(0, n)`. A stored hash never changes once written, so a store
//! writes them in the append transaction, and the root, an inclusion proof or a consistency proof
//! for any tree size up to the head comes from at most a few dozen of them, without reading an
//! event body.
//!
//! Everything that reads asks a [`HashReader`] once, for indexes in increasing order. A store
//! that reads asynchronously asks [`tree_root_indexes`], [`inclusion_proof_indexes`] or
//! [`consistency_proof_indexes`] what to fetch, fetches those rows into a map (which is a
//! [`HashReader`]), and calls the same function with the map. A writer keeps a [`RightEdge`]
//! in memory and appends thousands of leaves without reading anything.
//!
//! [`verify_inclusion`] and [`verify_consistency`] are RFC 9162's algorithms (§2.1.3.2 and
//! §2.1.4.2): they need only the proof, and are what an offline verifier runs.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use sha2::{Digest, Sha256};

use crate::primitives::Hash;

/// The largest tree a store keeps. Below it every stored index is under 2^63, so it fits a
/// signed 64-bit column, and no index arithmetic can overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// The root of the empty tree, `SHA-256()` (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// `SHA-256(0x00 || bytes)`: the leaf of one event's canonical bytes. The prefix keeps a leaf
/// from ever standing in for a node.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(bytes);
    Hash(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`: an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Why a tree question or a proof does not hold. Every answer is one of these, never a panic:
/// sizes and proofs may come from a file someone else wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}, and a log only grows")]
    OldLargerThanNew { old: u64, new: u64 },
    #[error("tree size {size} is above the largest a store keeps ({MAX_TREE_SIZE})")]
    TooLarge { size: u64 },
    #[error("the proof has {got} hashes, and a proof for these sizes has exactly {expected}")]
    WrongProofLength { expected: usize, got: usize },
    #[error(
        "the proof does not lead to the given root: the leaf or old tree is not in that tree, or the proof or root was altered"
    )]
    RootMismatch,
    #[error(
        "the proof does not lead to the old root: the old tree is not a prefix of the new one, or the proof or root was altered"
    )]
    OldRootMismatch,
    #[error("the root given for the empty tree is not SHA-256 of nothing")]
    EmptyRootMismatch,
}

/// Why an answer read from stored hashes could not be given.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeError<E> {
    /// The question itself is wrong (an index past the size, sizes out of order, too large).
    #[error(transparent)]
    Invalid(#[from] MerkleError),
    #[error("reading stored hashes failed: {0}")]
    Read(E),
    /// A reader broke its contract; answering from a short read would give a wrong hash.
    #[error("the store was asked for {asked} stored hashes and answered {got}")]
    ReadCount { asked: usize, got: usize },
}

/// A stored hash the in-memory readers do not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored hash {index} is missing")]
pub struct MissingHash {
    pub index: u64,
}

/// Reads stored hashes by index. One call per answer, with indexes in increasing order, so a
/// store can answer with one query.
pub trait HashReader {
    type Error;

    /// The hashes at `indexes`, in the same order; exactly one per index.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

/// Every stored hash from index 0, as a writer that keeps them all in order has them.
impl HashReader for [Hash] {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(MissingHash { index })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        self.as_slice().read_hashes(indexes)
    }
}

/// The rows a store fetched for the indexes a `*_indexes` function named.
impl HashReader for BTreeMap<u64, Hash> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| self.get(&index).copied().ok_or(MissingHash { index }))
            .collect()
    }
}

impl<S: BuildHasher> HashReader for HashMap<u64, Hash, S> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| self.get(&index).copied().ok_or(MissingHash { index }))
            .collect()
    }
}

/// Any function from indexes to hashes, e.g. a closure over a blocking database handle.
impl<F, E> HashReader for F
where
    F: Fn(&[u64]) -> Result<Vec<Hash>, E>,
{
    type Error = E;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, E> {
        self(indexes)
    }
}

/// Where the hash of the node at `level` (0 for leaves) and `index` (counted from the left at
/// that level) is stored: Go's `tlog.StoredHashIndex`. `None` for a node of a tree larger than
/// [`MAX_TREE_SIZE`].
pub fn stored_hash_index(level: u8, index: u64) -> Option<u64> {
    let width = 1u64.checked_shl(u32::from(level))?;
    // The tree size at which the node is complete: it is written with leaf `complete_at - 1`.
    let complete_at = index.checked_add(1)?.checked_mul(width)?;
    if complete_at > MAX_TREE_SIZE {
        return None;
    }
    let last = complete_at - 1;
    // Leaf n is written after n + n/2 + n/4 + ... earlier hashes, a sum equal to
    // 2n - popcount(n); the node sits `level` places after its last leaf.
    Some(2 * last - u64::from(last.count_ones()) + u64::from(level))
}

/// How many hashes a tree of `size` leaves has stored: `2 * size - popcount(size)`, the nodes
/// of all its perfect subtrees.
pub fn stored_hash_count(size: u64) -> Result<u64, MerkleError> {
    check_size(size)?;
    Ok(2 * size - u64::from(size.count_ones()))
}

/// The hashes appending one leaf stores: write `hashes[i]` at `first_index + i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHashes {
    pub first_index: u64,
    pub hashes: Vec<Hash>,
}

/// The hashes to store for leaf `index` (Go's `tlog.StoredHashesForRecordHash`), reading the
/// `trailing_ones(index)` stored roots of the perfect subtrees it completes. A writer appending
/// many leaves uses a [`RightEdge`] instead and reads nothing.
pub fn stored_hashes<R: HashReader + ?Sized>(
    index: u64,
    leaf: &Hash,
    reader: &R,
) -> Result<StoredHashes, TreeError<R::Error>> {
    let too_large = MerkleError::TooLarge {
        size: index.saturating_add(1),
    };
    let first_index = stored_hash_index(0, index).ok_or(too_large.clone())?;
    // Each trailing one bit of `index` closes a perfect subtree of that height; its left half is
    // the stored subtree of the same height just before. `index >> level` is odd there, so the
    // subtraction cannot underflow. Largest first, so the indexes increase.
    let lefts = (0..index.trailing_ones())
        .rev()
        .map(|level| {
            let level = u8::try_from(level).ok()?;
            stored_hash_index(level, (index >> level) - 1)
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or(too_large)?;
    let lefts = read(reader, &lefts)?;
    let mut hash = *leaf;
    let mut hashes = Vec::with_capacity(1 + lefts.len());
    hashes.push(hash);
    for left in lefts.iter().rev() {
        hash = node_hash(left, &hash);
        hashes.push(hash);
    }
    Ok(StoredHashes {
        first_index,
        hashes,
    })
}

/// The right edge of the tree: the roots of its perfect subtrees, largest first (one per set bit
/// of the size). It is all a writer needs to compute the stored hashes of the next leaves and
/// the root, so appending reads nothing; it is loaded once from stored hashes at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RightEdge {
    size: u64,
    subtrees: Vec<Hash>,
}

impl RightEdge {
    /// The edge of the empty tree.
    pub fn new() -> Self {
        RightEdge::default()
    }

    /// The edge of the tree of `size` leaves, read from its stored hashes (the same indexes as
    /// [`tree_root_indexes`]).
    pub fn load<R: HashReader + ?Sized>(
        size: u64,
        reader: &R,
    ) -> Result<RightEdge, TreeError<R::Error>> {
        let indexes = tree_root_indexes(size)?;
        let subtrees = read(reader, &indexes)?;
        Ok(RightEdge { size, subtrees })
    }

    /// The edge of the tree of `size` leaves from its perfect subtree roots (largest first), as
    /// an export's left edge carries them: one per set bit of `size`. Refuses any other count
    /// or a size above [`MAX_TREE_SIZE`], since the peaks come from a file.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Result<RightEdge, MerkleError> {
        if size > MAX_TREE_SIZE {
            return Err(MerkleError::TooLarge { size });
        }
        let expected = size.count_ones() as usize;
        if peaks.len() != expected {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: peaks.len(),
            });
        }
        Ok(RightEdge {
            size,
            subtrees: peaks,
        })
    }

    /// The roots of the perfect subtrees, largest first: with the size, all an offline verifier
    /// needs to recompute the root of a larger tree from the leaves after this one.
    pub fn peaks(&self) -> &[Hash] {
        &self.subtrees
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree: the perfect subtrees joined from the right.
    pub fn root(&self) -> Hash {
        join_from_right(&self.subtrees)
    }

    /// Append one leaf (its [`leaf_hash`]) and return the hashes to store for it.
    pub fn append(&mut self, leaf: &Hash) -> Result<StoredHashes, MerkleError> {
        let index = self.size;
        let first_index = stored_hash_index(0, index).ok_or(MerkleError::TooLarge {
            size: index.saturating_add(1),
        })?;
        // The new leaf closes one perfect subtree per trailing one bit of `index`: it joins the
        // smallest subtrees on the edge, right to left.
        let joins = index.trailing_ones() as usize;
        let keep = self.subtrees.len().saturating_sub(joins);
        let mut hash = *leaf;
        let mut hashes = Vec::with_capacity(1 + joins);
        hashes.push(hash);
        for left in self.subtrees.drain(keep..).rev() {
            hash = node_hash(&left, &hash);
            hashes.push(hash);
        }
        self.subtrees.push(hash);
        self.size += 1;
        Ok(StoredHashes {
            first_index,
            hashes,
        })
    }
}

/// The stored indexes [`tree_root`] reads for `size`: one per perfect subtree.
pub fn tree_root_indexes(size: u64) -> Result<Vec<u64>, MerkleError> {
    check_size(size)?;
    span_indexes(&root_spans(size))
}

/// The root of the tree of `size` leaves (RFC 6962's MTH), from stored hashes.
pub fn tree_root<R: HashReader + ?Sized>(
    size: u64,
    reader: &R,
) -> Result<Hash, TreeError<R::Error>> {
    check_size(size)?;
    Ok(hash_spans(&root_spans(size), reader)?
        .pop()
        .unwrap_or(EMPTY_ROOT))
}

/// The stored indexes [`inclusion_proof`] reads.
pub fn inclusion_proof_indexes(index: u64, size: u64) -> Result<Vec<u64>, MerkleError> {
    check_inclusion(index, size)?;
    span_indexes(&inclusion_spans(index, size))
}

/// The proof that leaf `index` is in the tree of `size` leaves: RFC 9162 §2.1.3.1's inclusion
/// path, from the leaf's sibling up.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_inclusion(index, size)?;
    hash_spans(&inclusion_spans(index, size), reader)
}

/// The stored indexes [`consistency_proof`] reads.
pub fn consistency_proof_indexes(old_size: u64, new_size: u64) -> Result<Vec<u64>, MerkleError> {
    check_consistency(old_size, new_size)?;
    span_indexes(&consistency_spans(old_size, new_size))
}

/// The proof that the tree of `old_size` leaves is a prefix of the tree of `new_size`: RFC 9162
/// §2.1.4.1's consistency path. Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_consistency(old_size, new_size)?;
    hash_spans(&consistency_spans(old_size, new_size), reader)
}

/// Check that `proof` shows leaf `index`, whose hash is `leaf`, in the tree of `size` leaves
/// with root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_spans(index, size).len();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Check that `proof` shows the tree of `old_size` leaves with root `old_root` to be a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Equal sizes need
/// equal roots and an empty proof; every tree extends the empty one, whose root must be
/// [`EMPTY_ROOT`].
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldLargerThanNew {
            old: old_size,
            new: new_size,
        });
    }
    let expected = consistency_spans(old_size, new_size).len();
    let wrong_length = MerkleError::WrongProofLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if old_size == 0 {
        return if *old_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(MerkleError::EmptyRootMismatch)
        };
    }
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    // When the old tree is a perfect subtree the proof leaves its root out: the verifier has it.
    let (first, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(wrong_length),
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if s == 0 {
            return Err(wrong_length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

fn check_size(size: u64) -> Result<(), MerkleError> {
    if size > MAX_TREE_SIZE {
        return Err(MerkleError::TooLarge { size });
    }
    Ok(())
}

fn check_inclusion(index: u64, size: u64) -> Result<(), MerkleError> {
    check_size(size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    Ok(())
}

fn check_consistency(old_size: u64, new_size: u64) -> Result<(), MerkleError> {
    check_size(new_size)?;
    if old_size > new_size {
        return Err(MerkleError::OldLargerThanNew {
            old: old_size,
            new: new_size,
        });
    }
    Ok(())
}

/// Ask `reader` for `indexes`, holding it to one hash per index.
fn read<R: HashReader + ?Sized>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(indexes).map_err(TreeError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ReadCount {
            asked: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

/// The leaves `lo..hi` of a subtree RFC 6962 hashes as one (MTH of `D[lo:hi]`). Every span here
/// starts at a multiple of a power of two at least as large as the span, so it is a run of
/// perfect subtrees, largest first, each of them stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    lo: u64,
    hi: u64,
}

impl Span {
    /// The perfect subtrees making up the span, left to right, as (level, index at that level).
    fn subtrees(self) -> impl Iterator<Item = (u8, u64)> {
        let mut lo = self.lo;
        std::iter::from_fn(move || {
            if lo >= self.hi {
                return None;
            }
            let level = (self.hi - lo).ilog2();
            let node = (u8::try_from(level).ok()?, lo >> level);
            lo += 1 << level;
            Some(node)
        })
    }
}

/// RFC 6962's split: the largest power of two smaller than `n` (for `n >= 2`).
fn split(n: u64) -> u64 {
    1 << (n - 1).ilog2()
}

fn root_spans(size: u64) -> Vec<Span> {
    if size == 0 {
        Vec::new()
    } else {
        vec![Span { lo: 0, hi: size }]
    }
}

/// The siblings on the path from leaf `index` to the root, from the leaf up. Needs
/// `index < size`.
fn inclusion_spans(index: u64, size: u64) -> Vec<Span> {
    let (mut lo, mut hi) = (0, size);
    let mut spans = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            spans.push(Span { lo: lo + k, hi });
            hi = lo + k;
        } else {
            spans.push(Span { lo, hi: lo + k });
            lo += k;
        }
    }
    spans.reverse();
    spans
}

/// RFC 9162 §2.1.4.1's SUBPROOF(old, D[0:new], true), from the bottom up. Empty when `old` is
/// 0 or `new`; needs `old <= new`.
fn consistency_spans(old: u64, new: u64) -> Vec<Span> {
    let mut spans = Vec::new();
    if old == 0 || old >= new {
        return spans;
    }
    // `old` stays in (lo, hi]; `whole` is the SUBPROOF flag: the old tree's root is this
    // subtree's, which the verifier already has.
    let (mut lo, mut hi, mut whole) = (0, new, true);
    while old != hi {
        let k = split(hi - lo);
        if old <= lo + k {
            spans.push(Span { lo: lo + k, hi });
            hi = lo + k;
        } else {
            spans.push(Span { lo, hi: lo + k });
            lo += k;
            whole = false;
        }
    }
    if !whole {
        spans.push(Span { lo, hi });
    }
    spans.reverse();
    spans
}

/// The spans in the order their stored hashes are read: left to right, so indexes increase.
fn reading_order(spans: &[Span]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| spans[i].lo);
    order
}

fn span_indexes(spans: &[Span]) -> Result<Vec<u64>, MerkleError> {
    let mut indexes = Vec::new();
    for i in reading_order(spans) {
        for (level, n) in spans[i].subtrees() {
            let index =
                stored_hash_index(level, n).ok_or(MerkleError::TooLarge { size: spans[i].hi })?;
            indexes.push(index);
        }
    }
    Ok(indexes)
}

/// The hash of each span, in the order given, from one read.
fn hash_spans<R: HashReader + ?Sized>(
    spans: &[Span],
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    let indexes = span_indexes(spans)?;
    let mut stored = read(reader, &indexes)?.into_iter();
    let mut hashes = vec![EMPTY_ROOT; spans.len()];
    for i in reading_order(spans) {
        let parts: Vec<Hash> = stored.by_ref().take(spans[i].subtrees().count()).collect();
        hashes[i] = join_from_right(&parts);
    }
    Ok(hashes)
}

/// The root over perfect subtrees given largest first: RFC 6962's MTH, whose split always puts
/// the largest perfect subtree on the left.
fn join_from_right(subtrees: &[Hash]) -> Hash {
    let mut from_right = subtrees.iter().rev();
    let Some(mut hash) = from_right.next().copied() else {
        return EMPTY_ROOT;
    };
    for left in from_right {
        hash = node_hash(left, &hash);
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::OnceLock;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    fn h(hex_text: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut out).expect("64 hex characters");
        Hash(out)
    }

    fn b64(text: &str) -> Hash {
        Hash::from_slice(&STANDARD.decode(text).expect("base64")).expect("32 bytes")
    }

    fn hashes(hex_text: &str) -> Vec<Hash> {
        assert_eq!(hex_text.len() % 64, 0);
        (0..hex_text.len() / 64)
            .map(|i| h(&hex_text[i * 64..(i + 1) * 64]))
            .collect()
    }

    /// The stored hashes of a tree with `leaves`, appended one at a time the way a writer does.
    fn store(leaves: &[Vec<u8>]) -> (Vec<Hash>, RightEdge) {
        let mut stored = Vec::new();
        let mut edge = RightEdge::new();
        for leaf in leaves {
            let new = edge.append(&leaf_hash(leaf)).expect("small tree");
            assert_eq!(
                new.first_index,
                stored.len() as u64,
                "stored hashes are dense"
            );
            stored.extend(new.hashes);
        }
        (stored, edge)
    }

    /// The certificate-transparency reference tree: eight leaves, used for RFC 6962 test vectors
    /// by certificate-transparency-go (merkletree tests) and transparency-dev/merkle
    /// (testonly/reference_test.go).
    fn reference_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|leaf| hex::decode(leaf).expect("hex"))
        .collect()
    }

    /// The roots of the reference tree's first 0 to 8 leaves.
    const REFERENCE_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn leaves_nodes_and_the_empty_tree_hash_as_rfc_6962_says() {
        assert_eq!(EMPTY_ROOT, Hash(Sha256::digest(b"").into()));
        assert_eq!(
            leaf_hash(b"abc"),
            Hash(Sha256::digest([&[0x00][..], b"abc"].concat()).into())
        );
        let (l, r) = (Hash([0x11; 32]), Hash([0x22; 32]));
        let mut preimage = vec![0x01];
        preimage.extend_from_slice(&[0x11; 32]);
        preimage.extend_from_slice(&[0x22; 32]);
        assert_eq!(node_hash(&l, &r), Hash(Sha256::digest(&preimage).into()));
        assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
    }

    #[test]
    fn the_reference_tree_has_the_published_roots_at_every_size() {
        let leaves = reference_leaves();
        let (stored, _) = store(&leaves);
        for (size, root) in REFERENCE_ROOTS.iter().enumerate() {
            let (_, edge) = store(&leaves[..size]);
            assert_eq!(edge.root(), h(root), "right edge, size {size}");
            assert_eq!(
                tree_root(size as u64, &stored).expect("stored"),
                h(root),
                "stored hashes, size {size}"
            );
        }
    }

    #[test]
    fn the_reference_tree_gives_the_published_inclusion_proofs() {
        // transparency-dev/merkle testonly/reference_test.go, as copied into ct-merkle 0.3's
        // tests/known_answer.rs: (tree size, leaf index, proof).
        let vectors = [
            (1, 0, ""),
            (
                2,
                0,
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            ),
            (
                2,
                1,
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            ),
            (
                3,
                2,
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            ),
            (
                5,
                1,
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d\
                 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
                 bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ),
            (
                8,
                0,
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7\
                 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
                 6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ),
            (
                8,
                5,
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b\
                 ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
                 d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ),
        ];
        let leaves = reference_leaves();
        let (stored, _) = store(&leaves);
        for (size, index, proof) in vectors {
            let want = hashes(proof);
            let got = inclusion_proof(index, size, &stored).expect("in range");
            assert_eq!(got, want, "inclusion of {index} in {size}");
            let leaf = leaf_hash(&leaves[index as usize]);
            let root = h(REFERENCE_ROOTS[size as usize]);
            assert_eq!(verify_inclusion(&leaf, index, size, &root, &want), Ok(()));
        }
    }

    #[test]
    fn the_reference_tree_gives_the_published_consistency_proofs() {
        // Same source as the inclusion vectors: (old size, new size, proof).
        let vectors = [
            (1, 1, ""),
            (
                1,
                8,
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7\
                 5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
                 6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ),
            (
                2,
                5,
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
                 bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ),
            (
                6,
                8,
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\
                 ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
                 d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ),
        ];
        let (stored, _) = store(&reference_leaves());
        for (old, new, proof) in vectors {
            let want = hashes(proof);
            let got = consistency_proof(old, new, &stored).expect("in range");
            assert_eq!(got, want, "consistency of {old} in {new}");
            let (old_root, new_root) = (
                h(REFERENCE_ROOTS[old as usize]),
                h(REFERENCE_ROOTS[new as usize]),
            );
            assert_eq!(
                verify_consistency(old, &old_root, new, &new_root, &want),
                Ok(())
            );
        }
    }

    /// Proofs a public certificate-transparency log (Google's argon2020) served for a tree of
    /// 961,984,011 leaves, as vendored in tlog_tiles 0.2's tests/http_get (from Go's
    /// sumdb/tlog ct_test.go). The leaf hash is that of entry 10,000, computed from its
    /// `leaf_input` in the same files.
    const CT_SIZE: u64 = 961_984_011;
    const CT_ROOT: &str = "AWxD3p811N3m4WTinWRXPvBZHfT9IR9g/R4C7SKLPiU=";
    const CT_LEAF: &str = "nCs3mfIydh9x4CKyQ+u2xtmpxmFggA5MLymHwNQSlLg=";
    const CT_AUDIT_PATH: [&str; 30] = [
        "T46AmJsuOM/gFiGlUp+IJJebp+1Z5qratFNW7U0JyOQ=",
        "9Jj1Feodn42uRYEfffkV4HF/EIPFQ5Zo9IwkxbQ2uhk=",
        "D53/1oCNebF4J59HHgioovKZxrmrKcVuCVhy3Izg8Ck=",
        "wSFDgGSrsXRPA+1c8WHoAFCsWeUv8NDyP/Q/SgsyVyY=",
        "516/RcwsgdwdzHn18v1dJHqBkgFUbNhmCIWOGjsMJaE=",
        "naTFY2ajLFgrgs5XUl+zJYZnnlJksLGsA1VYwpLfqbY=",
        "mKBRJo6qao+0Kdh/rhGkZUbHUAxMhrtrclrTpIbNjIg=",
        "Co4ueOFE7lpifLio94irxxsv1wFMMaK3tPu2ZQkHlro=",
        "yRgy800K6JMYCC05sWfqF2kvCg2riT/pVM+nEa6V5+0=",
        "n2O38XJZC8/Wpbwi9HhgVizlUyeUHVZvYyQB1607MRc=",
        "go3tAjuNfNSCj87y2Rg1xOroDknGN1eaf3cgvzObf7Q=",
        "8D0Mj3/J7ySSnFb0afIHYXv6rlOhECnsebY6XKi1IR8=",
        "6rcez46ZU8M5vPiWVMAUfJfAOV0pPP/mch/lYzZhj/M=",
        "2rtIeXrPvSdUyHc5maIgSAVB2BzaKaupWxSAiVayDE4=",
        "nniW/IMFQPN5xw8UsHFn7CRStYbm1gLu7NNa6kkRqJQ=",
        "mRPPi7sQS22MduIEyvcNzCNFqIt6kLwYPkNKrVtIcu8=",
        "JvTivzESNS9wHI8aph5a7uieVmtS/p9PciMZ5D6GyOo=",
        "UTyQd+Ym0wY4zG+qK806bBORwi1CSVvFQ/KknnqoZj8=",
        "hXODrqN+ff+U6zPqRQ+ZQKs6im1fPcxIerDSfNwflhE=",
        "II6GE+WY/DrpZzfHztLwkR46o37zVkNLCyPYlf68zA0=",
        "d609kWWcNBllbA8Jb/ad4XAVVGnScLRmtP8FYyr+Dck=",
        "rikBsP0G0gioXRpBFED2CzQdSLrGPvRd0bEcbEZw1rI=",
        "GXIElfmnRuWfbA4z7ubV/UwlpSRUbUeec7oL5HDDnh0=",
        "pR0SH/NYP6s9+8azWwaeUXA4Ze/3WCIgMfh5YW6wvcE=",
        "f3GuAKYVrF8RBg3s15jvA/YvV9oAliWtzP/imwPhQVA=",
        "WHn8zDxlVgkV+lSlmzaOdfSBrTHoRr5nT3d76q0KKWE=",
        "f2uV2ZxVgULzLPKuZcowRY3ZY7fRlX59iDBjV1R8kNQ=",
        "NzQVjJsvQwbi7WStMr9oFkh9VbHfK7LB6o7WwAqwNTs=",
        "C0LttBeYHZHgL+032JIcJC3CTBIyza/hsbmJUgJfmDI=",
        "30HzZbwT4DdqHQi4f7+WRG6M4YwVGaKgGXicDvSFT6k=",
    ];
    const CT_OLD_SIZE: u64 = 3_654_490;
    const CT_OLD_ROOT: &str = "AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=";
    const CT_CONSISTENCY: [&str; 30] = [
        "80Sfbj6UQEdVSZCSIgh9NMPj3vCBzcc1A48B2crJSWg=",
        "FZcrgAHUk6nNPviJZq8kEK6jCG1d18pJOFE45ZDc1TQ=",
        "Q67reWXmPBo1UfmwBap4Xi9PMPfFdUSSw3WGlRZdG7k=",
        "eJ7CyhR4PxzBxDIsWgrVYW1eFUb9ndgf46tFmiqVrxA=",
        "QrDwp062Grm5WY8KdrhFsBuuNjGzRox2Jb8PmVL5OYw=",
        "XM4YMjMEdLH/XJam/ZWyaP14k3cmsOtnPsOWQ54lW1s=",
        "SGiBh+jOTGccXU48ZzgQ88lRcBmtB4wz4oSDndv2QTg=",
        "WAS6txqNLYKGL1GdBdpqmV42TTfn6cJsuDsqLXuTCNI=",
        "QFmRS0rirUA7ZN3lxFjDncV+E1OCrn3NUB4RCp+5fzc=",
        "Hdbp7It2XBNZmNDBpCN/KPd7vfVqxgzwOosqVIaEA9E=",
        "mxvHL0ZiblBdD7j7pIa1jlfB0gSqfJ6oX0UGo7L0VsU=",
        "q5hjyvoW6TL/PThgcitpDcSTrnKX2p1+aqscqH2euRA=",
        "jTOWDqt3IHj2NVFeezyBz2ofpru+ztEywqKUAfFclKI=",
        "GIRn0w3HqJdvU9j1WVD//eR6lk2AaTVjyzjsJNP8U88=",
        "x52GJvxG81fnQBrgOTbll1A5tz95/LXK0Ag1NhB0r1I=",
        "6/0OqrcTgc3o5dD5PymmoC96lB9yLPFuTHVvLy8fSGk=",
        "Gf+iKLfcXO5l4JEFmsZvSdG5q1uEeWPfYLrds6pmjz0=",
        "DGuaco+McyM3AfRSF6qX7RwSetwe2ieYJmxw5e9rVx0=",
        "2tQJ9V32hnYp+fdpP6TcjmgJmLeNVOMKM0Ml1kk4cNU=",
        "3PapK+IkyJr8I9yAErAmzuZezzLMzsg+PfeRCgNW8NQ=",
        "s6xiYeejb+wtqHA+URJZ2I/SCPyIW8coP6aB00FJbMY=",
        "z9lSpmdTcr5M5ZzKlc4EPh3SrSypKFdk6JUF/UccaZU=",
        "GXIElfmnRuWfbA4z7ubV/UwlpSRUbUeec7oL5HDDnh0=",
        "pR0SH/NYP6s9+8azWwaeUXA4Ze/3WCIgMfh5YW6wvcE=",
        "f3GuAKYVrF8RBg3s15jvA/YvV9oAliWtzP/imwPhQVA=",
        "WHn8zDxlVgkV+lSlmzaOdfSBrTHoRr5nT3d76q0KKWE=",
        "f2uV2ZxVgULzLPKuZcowRY3ZY7fRlX59iDBjV1R8kNQ=",
        "NzQVjJsvQwbi7WStMr9oFkh9VbHfK7LB6o7WwAqwNTs=",
        "C0LttBeYHZHgL+032JIcJC3CTBIyza/hsbmJUgJfmDI=",
        "30HzZbwT4DdqHQi4f7+WRG6M4YwVGaKgGXicDvSFT6k=",
    ];

    #[test]
    fn proofs_served_by_a_public_ct_log_verify_and_fail_with_any_flipped_bit() {
        let root = b64(CT_ROOT);
        let leaf = b64(CT_LEAF);
        let path: Vec<Hash> = CT_AUDIT_PATH.iter().map(|p| b64(p)).collect();
        assert_eq!(
            verify_inclusion(&leaf, 10_000, CT_SIZE, &root, &path),
            Ok(())
        );
        let old_root = b64(CT_OLD_ROOT);
        let proof: Vec<Hash> = CT_CONSISTENCY.iter().map(|p| b64(p)).collect();
        assert_eq!(
            verify_consistency(CT_OLD_SIZE, &old_root, CT_SIZE, &root, &proof),
            Ok(())
        );

        assert!(verify_inclusion(&leaf, 10_001, CT_SIZE, &root, &path).is_err());
        assert!(verify_consistency(CT_OLD_SIZE + 1, &old_root, CT_SIZE, &root, &proof).is_err());
        for i in 0..path.len() {
            let mut bad = path.clone();
            bad[i].0[i] ^= 0x80;
            assert!(verify_inclusion(&leaf, 10_000, CT_SIZE, &root, &bad).is_err());
        }
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i].0[31 - i] ^= 0x01;
            assert!(verify_consistency(CT_OLD_SIZE, &old_root, CT_SIZE, &root, &bad).is_err());
        }
    }

    /// tlog_tiles' reader over our stored hashes, so Go's algorithms (as ported) read the very
    /// layout this module writes.
    struct Oracle(Vec<tlog_tiles::Hash>);

    impl tlog_tiles::HashReader for Oracle {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
            Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
        }
    }

    fn ours(hashes: Vec<tlog_tiles::Hash>) -> Vec<Hash> {
        hashes.into_iter().map(|hash| Hash(hash.0)).collect()
    }

    #[test]
    fn the_stored_layout_roots_and_proofs_match_gos_tlog() {
        let leaves: Vec<Vec<u8>> = (0..70).map(|i| format!("leaf {i}").into_bytes()).collect();
        let mut stored = Vec::new();
        let mut oracle = Oracle(Vec::new());
        for (n, leaf) in (0u64..).zip(&leaves) {
            let theirs = tlog_tiles::stored_hashes(n, leaf, &oracle).expect("oracle");
            let mine = stored_hashes(n, &leaf_hash(leaf), &stored).expect("stored");
            assert_eq!(mine.first_index, stored.len() as u64);
            assert_eq!(
                mine.hashes,
                ours(theirs.clone()),
                "stored hashes of leaf {n}"
            );
            stored.extend(mine.hashes);
            oracle.0.extend(theirs);

            let size = n + 1;
            assert_eq!(
                stored_hash_count(size),
                Ok(tlog_tiles::stored_hash_count(size))
            );
            let root = tree_root(size, &stored).expect("root");
            assert_eq!(
                root.0,
                tlog_tiles::tree_hash(size, &oracle).expect("oracle").0
            );
            for i in 0..size {
                assert_eq!(
                    inclusion_proof(i, size, &stored).expect("proof"),
                    ours(tlog_tiles::prove_record(size, i, &oracle).expect("oracle")),
                    "inclusion of {i} in {size}"
                );
            }
            for old in 1..=size {
                assert_eq!(
                    consistency_proof(old, size, &stored).expect("proof"),
                    ours(tlog_tiles::prove_tree(size, old, &oracle).expect("oracle")),
                    "consistency of {old} in {size}"
                );
            }
        }
        for level in 0..=20 {
            for n in 0..200 {
                assert_eq!(
                    stored_hash_index(level, n),
                    Some(tlog_tiles::stored_hash_index(level, n)),
                    "({level}, {n})"
                );
            }
        }
    }

    #[test]
    fn every_read_asks_once_for_increasing_indexes_and_the_planned_ones() {
        let leaves: Vec<Vec<u8>> = (0..45).map(|i| vec![i as u8; 3]).collect();
        let (stored, _) = store(&leaves);
        let asked = RefCell::new(Vec::new());
        let reader = |indexes: &[u64]| -> Result<Vec<Hash>, MissingHash> {
            asked.borrow_mut().push(indexes.to_vec());
            stored.read_hashes(indexes)
        };
        let once_increasing = |planned: Vec<u64>| {
            let calls = asked.take();
            if planned.is_empty() {
                assert!(calls.is_empty(), "nothing to read, nothing asked");
                return;
            }
            assert_eq!(
                calls,
                vec![planned.clone()],
                "one read of the planned indexes"
            );
            assert!(planned.windows(2).all(|w| w[0] < w[1]), "{planned:?}");
        };
        for size in 0..=45 {
            tree_root(size, &reader).expect("root");
            once_increasing(tree_root_indexes(size).expect("plan"));
            for i in 0..size {
                inclusion_proof(i, size, &reader).expect("proof");
                once_increasing(inclusion_proof_indexes(i, size).expect("plan"));
            }
            for old in 0..=size {
                consistency_proof(old, size, &reader).expect("proof");
                once_increasing(consistency_proof_indexes(old, size).expect("plan"));
            }
        }
    }

    #[test]
    fn an_async_store_answers_from_a_map_of_the_planned_rows() {
        let leaves: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8]).collect();
        let (stored, _) = store(&leaves);
        let fetch = |indexes: Vec<u64>| -> BTreeMap<u64, Hash> {
            indexes
                .into_iter()
                .map(|i| (i, stored[i as usize]))
                .collect()
        };
        let rows = fetch(inclusion_proof_indexes(37, 91).expect("plan"));
        assert_eq!(
            inclusion_proof(37, 91, &rows).expect("from the rows"),
            inclusion_proof(37, 91, &stored).expect("from everything")
        );
        let rows: HashMap<u64, Hash> = fetch(consistency_proof_indexes(13, 100).expect("plan"))
            .into_iter()
            .collect();
        assert_eq!(
            consistency_proof(13, 100, &rows).expect("from the rows"),
            consistency_proof(13, 100, &stored).expect("from everything")
        );
        // A row left out is named, not papered over.
        let mut rows = fetch(tree_root_indexes(99).expect("plan"));
        let dropped = *rows.keys().next().expect("a row");
        rows.remove(&dropped);
        assert!(matches!(
            tree_root(99, &rows),
            Err(TreeError::Read(MissingHash { index })) if index == dropped
        ));
    }

    #[test]
    fn a_right_edge_loaded_from_the_store_continues_where_the_writer_left_off() {
        let leaves: Vec<Vec<u8>> = (0..64).map(|i| format!("event {i}").into_bytes()).collect();
        let (stored, full) = store(&leaves);
        for size in 0..=40u64 {
            let count = stored_hash_count(size).expect("small") as usize;
            let mut edge = RightEdge::load(size, &stored[..count]).expect("edge");
            assert_eq!(edge.size(), size);
            assert_eq!(edge.root(), tree_root(size, &stored).expect("root"));
            let mut continued = stored[..count].to_vec();
            for leaf in &leaves[size as usize..] {
                continued.extend(edge.append(&leaf_hash(leaf)).expect("append").hashes);
            }
            assert_eq!(continued, stored, "from size {size}");
            assert_eq!(edge, full);
        }
    }

    #[test]
    fn an_edge_rebuilt_from_its_peaks_continues_like_the_original() {
        let leaves: Vec<Vec<u8>> = (0..40).map(|i| format!("event {i}").into_bytes()).collect();
        let (_, full) = store(&leaves);
        for size in 0..=30usize {
            let (_, edge) = store(&leaves[..size]);
            assert_eq!(edge.peaks().len(), size.count_ones() as usize);
            let mut rebuilt =
                RightEdge::from_peaks(size as u64, edge.peaks().to_vec()).expect("peaks");
            assert_eq!(rebuilt, edge);
            for leaf in &leaves[size..] {
                rebuilt.append(&leaf_hash(leaf)).expect("append");
            }
            assert_eq!(rebuilt, full, "from size {size}");
        }
        assert_eq!(
            RightEdge::from_peaks(3, vec![EMPTY_ROOT]),
            Err(MerkleError::WrongProofLength {
                expected: 2,
                got: 1
            })
        );
        assert!(matches!(
            RightEdge::from_peaks(u64::MAX, Vec::new()),
            Err(MerkleError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_questions_are_refused_with_what_was_wrong() {
        let (stored, _) = store(&reference_leaves());
        assert!(matches!(
            inclusion_proof(8, 8, &stored),
            Err(TreeError::Invalid(MerkleError::IndexOutOfRange {
                index: 8,
                size: 8
            }))
        ));
        assert!(matches!(
            inclusion_proof(0, 0, &stored),
            Err(TreeError::Invalid(MerkleError::IndexOutOfRange {
                index: 0,
                size: 0
            }))
        ));
        assert!(matches!(
            consistency_proof(5, 4, &stored),
            Err(TreeError::Invalid(MerkleError::OldLargerThanNew {
                old: 5,
                new: 4
            }))
        ));
        assert!(matches!(
            tree_root(MAX_TREE_SIZE + 1, &stored),
            Err(TreeError::Invalid(MerkleError::TooLarge { .. }))
        ));
        assert!(matches!(
            tree_root(9, &stored),
            Err(TreeError::Read(MissingHash { .. }))
        ));
        assert_eq!(
            inclusion_proof_indexes(u64::MAX, u64::MAX),
            Err(MerkleError::TooLarge { size: u64::MAX })
        );
        assert_eq!(
            consistency_proof_indexes(1, u64::MAX),
            Err(MerkleError::TooLarge { size: u64::MAX })
        );
        assert_eq!(stored_hash_index(62, 1), None);
        assert_eq!(stored_hash_index(255, 0), None);
        assert_eq!(stored_hash_index(0, u64::MAX), None);
        assert!(stored_hash_index(0, MAX_TREE_SIZE - 1).is_some_and(|i| i < 1 << 63));
        assert!(stored_hash_index(62, 0).is_some_and(|i| i < 1 << 63));
        assert_eq!(
            stored_hash_count(MAX_TREE_SIZE + 1),
            Err(MerkleError::TooLarge {
                size: MAX_TREE_SIZE + 1
            })
        );
    }

    #[test]
    fn a_reader_that_answers_the_wrong_number_of_hashes_is_an_error_not_a_wrong_answer() {
        let (stored, _) = store(&reference_leaves());
        let short = |indexes: &[u64]| -> Result<Vec<Hash>, MissingHash> {
            let mut answer = stored.read_hashes(indexes)?;
            answer.pop();
            Ok(answer)
        };
        let long = |indexes: &[u64]| -> Result<Vec<Hash>, MissingHash> {
            let mut answer = stored.read_hashes(indexes)?;
            answer.push(EMPTY_ROOT);
            Ok(answer)
        };
        assert!(matches!(
            tree_root(7, &short),
            Err(TreeError::ReadCount { asked: 3, got: 2 })
        ));
        assert!(matches!(
            inclusion_proof(2, 7, &long),
            Err(TreeError::ReadCount { .. })
        ));
        assert!(matches!(
            RightEdge::load(7, &short),
            Err(TreeError::ReadCount { .. })
        ));
        assert!(matches!(
            stored_hashes(7, &EMPTY_ROOT, &long),
            Err(TreeError::ReadCount { .. })
        ));
        let failing = |_: &[u64]| -> Result<Vec<Hash>, String> { Err("disk on fire".to_owned()) };
        let err = consistency_proof(3, 7, &failing).expect_err("read fails");
        assert_eq!(
            err.to_string(),
            "reading stored hashes failed: disk on fire"
        );
    }

    #[test]
    fn a_full_tree_refuses_another_leaf() {
        // A tree of MAX_TREE_SIZE - 1 leaves: its edge is 62 perfect subtrees, fed as stored
        // rows so nothing of that size is ever built.
        let size = MAX_TREE_SIZE - 1;
        let rows: BTreeMap<u64, Hash> = tree_root_indexes(size)
            .expect("plan")
            .into_iter()
            .map(|i| (i, Hash([i as u8; 32])))
            .collect();
        let mut edge = RightEdge::load(size, &rows).expect("edge");
        let last = edge.append(&EMPTY_ROOT).expect("the last leaf fits");
        assert_eq!(last.hashes.len(), 63);
        assert!(last.first_index < 1 << 63);
        assert_eq!(edge.size(), MAX_TREE_SIZE);
        assert_eq!(
            edge.append(&EMPTY_ROOT),
            Err(MerkleError::TooLarge {
                size: MAX_TREE_SIZE + 1
            })
        );
    }

    #[test]
    fn degenerate_consistency_questions_have_exact_answers() {
        let (stored, _) = store(&reference_leaves());
        let root = |n: usize| h(REFERENCE_ROOTS[n]);
        assert_eq!(consistency_proof(0, 8, &stored).expect("empty"), vec![]);
        assert_eq!(consistency_proof(8, 8, &stored).expect("same"), vec![]);
        assert_eq!(verify_consistency(0, &EMPTY_ROOT, 8, &root(8), &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, &EMPTY_ROOT, 0, &EMPTY_ROOT, &[]),
            Ok(())
        );
        assert_eq!(
            verify_consistency(0, &root(1), 8, &root(8), &[]),
            Err(MerkleError::EmptyRootMismatch)
        );
        assert_eq!(verify_consistency(5, &root(5), 5, &root(5), &[]), Ok(()));
        assert_eq!(
            verify_consistency(5, &root(5), 5, &root(6), &[]),
            Err(MerkleError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, &root(5), 5, &root(5), &[root(1)]),
            Err(MerkleError::WrongProofLength {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(
            verify_consistency(6, &root(6), 5, &root(5), &[]),
            Err(MerkleError::OldLargerThanNew { old: 6, new: 5 })
        );
        assert_eq!(
            verify_consistency(3, &root(3), 8, &root(8), &[]),
            Err(MerkleError::WrongProofLength {
                expected: 4,
                got: 0
            })
        );
        assert_eq!(
            verify_inclusion(&root(1), 3, 3, &root(3), &[]),
            Err(MerkleError::IndexOutOfRange { index: 3, size: 3 })
        );
        // A one-leaf tree's root is its leaf.
        assert_eq!(verify_inclusion(&root(1), 0, 1, &root(1), &[]), Ok(()));
    }

    /// One tree of 1,100 leaves for the property tests. Stored hashes only grow, so every
    /// smaller tree is a prefix of it, as a store's would be.
    fn big() -> &'static (Vec<Vec<u8>>, Vec<Hash>) {
        static TREE: OnceLock<(Vec<Vec<u8>>, Vec<Hash>)> = OnceLock::new();
        TREE.get_or_init(|| {
            let leaves: Vec<Vec<u8>> = (0..1100u32).map(|i| i.to_be_bytes().to_vec()).collect();
            let (stored, _) = store(&leaves);
            (leaves, stored)
        })
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out.0[bit / 8 % 32] ^= 1 << (bit % 8);
        out
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_no_flipped_bit_does(
            size in 1u64..=1100,
            index_seed in any::<u64>(),
            bit in 0usize..256,
        ) {
            let (leaves, stored) = big();
            let index = index_seed % size;
            let root = tree_root(size, stored).expect("root");
            let leaf = leaf_hash(&leaves[index as usize]);
            let proof = inclusion_proof(index, size, stored).expect("proof");
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &root, &proof), Ok(()));

            prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &root, &proof).is_err());
            prop_assert!(verify_inclusion(&leaf, index, size, &flip(&root, bit), &proof).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i], bit);
                prop_assert!(verify_inclusion(&leaf, index, size, &root, &bad).is_err());
            }
            if size > 1 {
                let other = (index + 1) % size;
                prop_assert!(verify_inclusion(&leaf, other, size, &root, &proof).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_no_flipped_bit_does(
            new in 1u64..=1100,
            old_seed in any::<u64>(),
            bit in 0usize..256,
        ) {
            let (_, stored) = big();
            let old = old_seed % (new + 1);
            let old_root = tree_root(old, stored).expect("root");
            let new_root = tree_root(new, stored).expect("root");
            let proof = consistency_proof(old, new, stored).expect("proof");
            prop_assert_eq!(verify_consistency(old, &old_root, new, &new_root, &proof), Ok(()));

            prop_assert!(
                verify_consistency(old, &flip(&old_root, bit), new, &new_root, &proof).is_err()
            );
            if old > 0 {
                prop_assert!(
                    verify_consistency(old, &old_root, new, &flip(&new_root, bit), &proof).is_err()
                );
            }
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i], bit);
                prop_assert!(verify_consistency(old, &old_root, new, &new_root, &bad).is_err());
            }
        }

        #[test]
        fn a_tree_stores_just_under_two_hashes_per_leaf(size in 0u64..=1100) {
            let (_, stored) = big();
            let count = stored_hash_count(size).expect("small");
            prop_assert_eq!(count, 2 * size - u64::from(size.count_ones()));
            prop_assert!(count <= 2 * size && count + 64 >= 2 * size);
            // The store of a smaller tree is exactly a prefix: appends never rewrite a hash.
            prop_assert_eq!(tree_root(size, &stored[..count as usize]), tree_root(size, stored));
        }

        #[test]
        fn verifying_any_sizes_and_proof_never_panics(
            index in any::<u64>(),
            size in prop_oneof![any::<u64>(), 0u64..70, Just(u64::MAX)],
            old in prop_oneof![any::<u64>(), 0u64..70],
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
        ) {
            let proof: Vec<Hash> = proof.into_iter().map(Hash).collect();
            let root = Hash([7; 32]);
            let _ = verify_inclusion(&root, index, size, &root, &proof);
            let _ = verify_consistency(old, &root, size, &root, &proof);
            let _ = inclusion_proof_indexes(index, size);
            let _ = consistency_proof_indexes(old, size);
        }
    }
}
