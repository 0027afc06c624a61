//! Signed exports, `tokenledger-export/v1`: a directory of files a compliance team checks
//! offline, trusting only the log's published verifier key.
//!
//! A bundle holds the events `first..=last` of one log:
//!
//! - `events.jsonl`: one compact JSON object per event, in position order, `\n` terminated,
//!   keys in this order: `position`, `event_id`, `stream_id`, `stream_version`, `recorded_at`
//!   (RFC 3339 UTC, microseconds), `actor`, `event_type`, `schema_version`, `bytes` (standard
//!   base64 of the canonical bytes) and `hash` (the chain hash, lower-case hex). The envelope
//!   columns are there for readers; only `bytes` and `hash` are evidence, and the verifier
//!   holds the columns to what the bytes decode to.
//! - `checkpoint`: the signed C2SP checkpoint of the tree at size `last`.
//! - `openings.jsonl` (only when asked): `{"position","field","salt","value"}` per opening,
//!   salt and value in hex, ordered by position then field. It holds secrets.
//! - `ocsf.jsonl`, `audit.csv` (optional): views derived from the events; the verifier checks
//!   them against the manifest's hashes only.
//! - `manifest`: a C2SP signed note by the origin's key (the checkpoint's key) whose text is
//!
//! ```text
//! tokenledger-export/v1
//! origin <origin, as in the checkpoint>
//! log-id <uuid>
//! range <first> <last>
//! events <last - first + 1>
//! exported-at <RFC 3339 UTC, microseconds>
//! prev-hash <chain hash at first - 1, hex; zeros when first is 1>
//! left-edge <hex>            one line per perfect subtree of the tree at first - 1, largest first
//! checkpoint <size> <base64 root>
//! since <text>               only if the export was filtered so, as the caller gave it
//! until <text>               likewise
//! formats <events[,openings][,ocsf][,csv]>
//! file <name> <sha-256 hex> <byte length>    one per file, in the order listed above
//! ```
//!
//! The left edge and `prev-hash` let a verifier start at `first` without the events before
//! it: the chain continues from `prev-hash`, and the tree root at `last` is the left edge with
//! every exported leaf appended ([`RightEdge::from_peaks`]). The manifest is strictly parsed
//! (one text per manifest, bounded lines) because it is read from a hostile directory.
//!
//! Writing is streamed: [`EventsWriter`] and [`OpeningsWriter`] write one line per event into
//! any [`Write`] and hash it as it goes ([`HashingWriter`], which the derived views use too),
//! so nothing is buffered whole. The service writes every file into a temporary directory,
//! then [`Manifest::new`] and [`Manifest::sign`] for the manifest (written last), then renames
//! the directory: a bundle without its manifest is refused, so a half-written one never passes.
//!
//! [`verify_bundle`] streams `events.jsonl` line by line and reports every problem it finds,
//! not just the first. This module does no I/O of its own: it reads and writes what the caller
//! hands it.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::chain::{MAX_EVENT_BYTES, event_hash};
use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::codec::{self, CodecError};
use crate::envelope::Opening;
use crate::envelope::StoredEvent;
use crate::merkle::{self, MerkleError, RightEdge};
use crate::note::{MAX_NOTE_BYTES, Note, NoteError, NoteSigner, VerifierKey};
use crate::primitives::{Commitment, Hash, Head, LogId, Timestamp};
use crate::vocabulary::TokenEvent;

/// The first line of every manifest of this format.
pub const FORMAT: &str = "tokenledger-export/v1";
pub const MANIFEST: &str = "manifest";
pub const CHECKPOINT: &str = "checkpoint";
pub const EVENTS: &str = "events.jsonl";
pub const OPENINGS: &str = "openings.jsonl";
pub const OCSF: &str = "ocsf.jsonl";
pub const AUDIT_CSV: &str = "audit.csv";

/// The files a v1 manifest may list, in the order it lists them, with the name each has in
/// the `formats` line (the checkpoint is always there and is not a format).
const FILES: [(&str, Option<&str>); 5] = [
    (CHECKPOINT, None),
    (EVENTS, Some("events")),
    (OPENINGS, Some("openings")),
    (OCSF, Some("ocsf")),
    (AUDIT_CSV, Some("csv")),
];

/// The longest `events.jsonl` line read: the base64 of the largest event and the columns.
pub const MAX_EVENT_LINE: usize = 2 * MAX_EVENT_BYTES;
/// The longest `openings.jsonl` line read.
pub const MAX_OPENING_LINE: usize = 4096;
/// The longest manifest line; the longest legitimate one is a checkpoint origin.
pub const MAX_MANIFEST_LINE: usize = 1024;
/// The longest `since` or `until` filter text a manifest carries.
pub const MAX_FILTER_BYTES: usize = 200;
/// Failures kept in a report; past it they are counted, so a hostile file cannot exhaust
/// memory through the report.
pub const MAX_FAILURES: usize = 1000;

/// A file's name, SHA-256 and length, as the manifest lists it.
#[derive(Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub name: String,
    pub sha256: [u8; 32],
    pub len: u64,
}

impl FileDigest {
    /// The digest of a file held whole (the checkpoint, a test's bytes).
    pub fn of(name: &str, bytes: &[u8]) -> FileDigest {
        FileDigest {
            name: name.to_owned(),
            sha256: Sha256::digest(bytes).into(),
            len: bytes.len() as u64,
        }
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileDigest({} {} {})",
            self.name,
            hex::encode(self.sha256),
            self.len
        )
    }
}

/// A [`Write`] that hashes and counts every byte it passes on, so a file's manifest line is
/// known the moment it is written, without reading it back.
pub struct HashingWriter<W> {
    name: String,
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(name: &str, inner: W) -> Self {
        HashingWriter {
            name: name.to_owned(),
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Flush, and hand back the writer and the digest of everything written.
    pub fn finish(mut self) -> io::Result<(W, FileDigest)> {
        self.inner.flush()?;
        let digest = FileDigest {
            name: self.name,
            sha256: self.hasher.finalize().into(),
            len: self.len,
        };
        Ok((self.inner, digest))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why an export could not be written. The writer refuses to produce a bundle that would not
/// verify: a broken chain or a checkpoint of other events is an error here, not a file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing {file} failed: {source}")]
    Io { file: String, source: io::Error },
    #[error("the range {first}..={last} is empty or starts before position 1")]
    BadRange { first: u64, last: u64 },
    #[error("the left edge is of a tree of {edge} leaves; an export from position {first} needs the tree of {} leaves", first.saturating_sub(1))]
    EdgeSize { edge: u64, first: u64 },
    #[error("the event at position {found} was given where position {expected} comes next")]
    OutOfOrder { expected: u64, found: u64 },
    #[error(
        "position {position}: the stored hash does not recompute from the previous one; a log that does not verify is not exported"
    )]
    ChainBroken { position: u64 },
    #[error("position {position}: the event is {len} bytes, above the limit")]
    EventTooLarge { position: u64, len: usize },
    #[error("the events end at position {written}, before the range's last position {last}")]
    Incomplete { written: u64, last: u64 },
    #[error("the checkpoint is of a tree of {size} leaves, and the export ends at position {last}")]
    CheckpointSize { size: u64, last: u64 },
    #[error("the checkpoint's root is not the root of the left edge with the exported events")]
    CheckpointRoot,
    #[error("{0:?} is not a file of a tokenledger-export/v1 bundle")]
    UnknownFile(String),
    #[error("the bundle needs a {0} file")]
    MissingFile(&'static str),
    #[error("file {0:?} is given twice")]
    DuplicateFile(String),
    #[error("the {name} filter {problem}")]
    BadFilter {
        name: &'static str,
        problem: &'static str,
    },
    #[error("openings must come in position order: position {found} after {after}")]
    OpeningOrder { after: u64, found: u64 },
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("signing the manifest: {0}")]
    Note(#[from] NoteError),
}

fn io_error(file: &str) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        file: file.to_owned(),
        source,
    }
}

/// Where an export starts: the log, the range, and what the verifier needs to begin at
/// `first` without the earlier events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportStart {
    pub log_id: LogId,
    pub first: u64,
    pub last: u64,
    /// The chain hash of position `first - 1` ([`Hash::ZERO`] when `first` is 1).
    pub prev_hash: Hash,
    /// The tree at size `first - 1`, e.g. `RightEdge::load(first - 1, &store)`.
    pub left_edge: RightEdge,
}

/// One line of `events.jsonl`; the field order is the key order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine<'a> {
    position: u64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    stream_version: u64,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    bytes: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

/// One line of `openings.jsonl`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpeningLine<'a> {
    position: u64,
    #[serde(borrow)]
    field: Cow<'a, str>,
    #[serde(borrow)]
    salt: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// The line `events.jsonl` holds for `event`, newline included: what [`EventsWriter`] writes.
pub fn event_line(event: &StoredEvent) -> Vec<u8> {
    let line = EventLine {
        position: event.position,
        event_id: Cow::Owned(event.event_id.hyphenated().to_string()),
        stream_id: Cow::Borrowed(event.stream_id.as_str()),
        stream_version: event.stream_version,
        recorded_at: Cow::Owned(event.recorded_at.to_rfc3339()),
        actor: Cow::Borrowed(&event.actor),
        event_type: Cow::Borrowed(&event.event_type),
        schema_version: event.schema_version,
        bytes: Cow::Owned(STANDARD.encode(&event.bytes)),
        hash: Cow::Owned(event.hash.to_hex()),
    };
    // A struct of strings and integers always serializes into memory.
    let mut out = serde_json::to_vec(&line).expect("an event line serializes");
    out.push(b'\n');
    out
}

/// Writes `events.jsonl` one event at a time, in position order, checking the chain and
/// growing the tree as it goes, so the manifest can only name a root these events make.
pub struct EventsWriter<W> {
    out: HashingWriter<W>,
    start: ExportStart,
    head: Head,
    edge: RightEdge,
}

impl<W: Write> EventsWriter<W> {
    pub fn new(out: W, start: ExportStart) -> Result<Self, ExportError> {
        if start.first == 0 || start.last < start.first {
            return Err(ExportError::BadRange {
                first: start.first,
                last: start.last,
            });
        }
        if start.left_edge.size() != start.first - 1 {
            return Err(ExportError::EdgeSize {
                edge: start.left_edge.size(),
                first: start.first,
            });
        }
        Ok(EventsWriter {
            out: HashingWriter::new(EVENTS, out),
            head: Head {
                position: start.first - 1,
                hash: start.prev_hash,
            },
            edge: start.left_edge.clone(),
            start,
        })
    }

    /// Write the next event (position `first`, then each next one up to `last`).
    pub fn write_event(&mut self, event: &StoredEvent) -> Result<(), ExportError> {
        let expected = self.head.position + 1;
        if event.position != expected || expected > self.start.last {
            return Err(ExportError::OutOfOrder {
                expected,
                found: event.position,
            });
        }
        if event.bytes.len() > MAX_EVENT_BYTES {
            return Err(ExportError::EventTooLarge {
                position: expected,
                len: event.bytes.len(),
            });
        }
        let hash = event_hash(self.start.log_id, expected, &self.head.hash, &event.bytes);
        if hash != event.hash {
            return Err(ExportError::ChainBroken { position: expected });
        }
        self.edge.append(&merkle::leaf_hash(&event.bytes))?;
        self.out
            .write_all(&event_line(event))
            .map_err(io_error(EVENTS))?;
        self.head = Head {
            position: expected,
            hash,
        };
        Ok(())
    }

    /// Finish the file: every position of the range must have been written.
    pub fn finish(self) -> Result<(W, EventsSummary), ExportError> {
        if self.head.position != self.start.last {
            return Err(ExportError::Incomplete {
                written: self.head.position,
                last: self.start.last,
            });
        }
        let (out, file) = self.out.finish().map_err(io_error(EVENTS))?;
        Ok((
            out,
            EventsSummary {
                root: self.edge.root(),
                head: self.head,
                start: self.start,
                file,
            },
        ))
    }
}

/// What writing `events.jsonl` established, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSummary {
    pub start: ExportStart,
    /// The tree root at size `last`: the left edge with every exported leaf.
    pub root: Hash,
    /// The chain head at `last`.
    pub head: Head,
    pub file: FileDigest,
}

/// Writes `openings.jsonl`: the openings of each event, in position order.
pub struct OpeningsWriter<W> {
    out: HashingWriter<W>,
    last: u64,
}

impl<W: Write> OpeningsWriter<W> {
    pub fn new(out: W) -> Self {
        OpeningsWriter {
            out: HashingWriter::new(OPENINGS, out),
            last: 0,
        }
    }

    /// Write `event`'s openings (none is fine), ordered by field name.
    pub fn write_event_openings(&mut self, event: &StoredEvent) -> Result<(), ExportError> {
        if event.openings.is_empty() {
            return Ok(());
        }
        if event.position <= self.last {
            return Err(ExportError::OpeningOrder {
                after: self.last,
                found: event.position,
            });
        }
        let mut openings: Vec<&Opening> = event.openings.iter().collect();
        openings.sort_by(|a, b| a.field.cmp(&b.field));
        for opening in openings {
            let line = OpeningLine {
                position: event.position,
                field: Cow::Borrowed(&opening.field),
                salt: Cow::Owned(hex::encode(opening.salt)),
                value: Cow::Owned(hex::encode(&opening.value)),
            };
            let mut bytes = serde_json::to_vec(&line).expect("an opening line serializes");
            bytes.push(b'\n');
            self.out.write_all(&bytes).map_err(io_error(OPENINGS))?;
        }
        self.last = event.position;
        Ok(())
    }

    pub fn finish(self) -> Result<(W, FileDigest), ExportError> {
        self.out.finish().map_err(io_error(OPENINGS))
    }
}

/// The `checkpoint` file's bytes and digest.
pub fn checkpoint_file(checkpoint: &SignedCheckpoint) -> (Vec<u8>, FileDigest) {
    let bytes = checkpoint.to_string().into_bytes();
    let digest = FileDigest::of(CHECKPOINT, &bytes);
    (bytes, digest)
}

/// Why a manifest text was refused. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest text does not end in a newline")]
    Unterminated,
    #[error("line 1 is {0:?}, not {FORMAT}: another format or version")]
    WrongFormat(String),
    #[error("line {line} is longer than {MAX_MANIFEST_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("line {line}: expected the {expected} line")]
    Expected { line: usize, expected: &'static str },
    #[error("the manifest ends before its {0} line")]
    Missing(&'static str),
    #[error("line {line}: the {key} value {problem}")]
    BadValue {
        line: usize,
        key: &'static str,
        problem: &'static str,
    },
    #[error("line {line}: unexpected after the last file line")]
    Trailing { line: usize },
}

/// The manifest's contents. [`Manifest::to_text`] and [`Manifest::parse`] are inverse: one
/// manifest has exactly one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub origin: String,
    pub log_id: LogId,
    pub first: u64,
    pub last: u64,
    pub exported_at: Timestamp,
    pub prev_hash: Hash,
    pub left_edge: Vec<Hash>,
    pub checkpoint_size: u64,
    pub checkpoint_root: Hash,
    pub since: Option<String>,
    pub until: Option<String>,
    /// In the order of the format's file list; `checkpoint` and `events.jsonl` always.
    pub files: Vec<FileDigest>,
}

fn check_filter(name: &'static str, text: &str) -> Result<(), ExportError> {
    let problem = if text.is_empty() {
        "is empty"
    } else if text.len() > MAX_FILTER_BYTES {
        "is longer than 200 bytes"
    } else if text.chars().any(char::is_control) {
        "holds a control character"
    } else {
        return Ok(());
    };
    Err(ExportError::BadFilter { name, problem })
}

impl Manifest {
    /// The manifest of a written export: refuses a checkpoint that is not of these events
    /// (other size or root), and files that are not the format's. `files` are the other files
    /// written (the checkpoint's, openings, OCSF, CSV); the events file comes from `events`.
    /// `exported_at` is the caller's clock reading; `since` and `until` are the filters as the
    /// caller was given them.
    pub fn new(
        events: &EventsSummary,
        checkpoint: &SignedCheckpoint,
        exported_at: Timestamp,
        since: Option<&str>,
        until: Option<&str>,
        files: Vec<FileDigest>,
    ) -> Result<Manifest, ExportError> {
        let cp = checkpoint.checkpoint();
        if cp.size() != events.start.last {
            return Err(ExportError::CheckpointSize {
                size: cp.size(),
                last: events.start.last,
            });
        }
        if cp.root() != events.root {
            return Err(ExportError::CheckpointRoot);
        }
        if let Some(since) = since {
            check_filter("since", since)?;
        }
        if let Some(until) = until {
            check_filter("until", until)?;
        }
        let mut all = files;
        all.push(events.file.clone());
        let mut ordered = Vec::new();
        for (name, _) in FILES {
            let mut matching = all.iter().filter(|f| f.name == name);
            if let Some(file) = matching.next() {
                if matching.next().is_some() {
                    return Err(ExportError::DuplicateFile(name.to_owned()));
                }
                ordered.push(file.clone());
            }
        }
        if let Some(unknown) = all
            .iter()
            .find(|f| !FILES.iter().any(|(n, _)| *n == f.name))
        {
            return Err(ExportError::UnknownFile(unknown.name.clone()));
        }
        if !ordered.iter().any(|f| f.name == CHECKPOINT) {
            return Err(ExportError::MissingFile(CHECKPOINT));
        }
        Ok(Manifest {
            origin: cp.origin().to_owned(),
            log_id: events.start.log_id,
            first: events.start.first,
            last: events.start.last,
            exported_at,
            prev_hash: events.start.prev_hash,
            left_edge: events.start.left_edge.peaks().to_vec(),
            checkpoint_size: cp.size(),
            checkpoint_root: cp.root(),
            since: since.map(str::to_owned),
            until: until.map(str::to_owned),
            files: ordered,
        })
    }

    /// The formats present, for the `formats` line.
    pub fn formats(&self) -> Vec<&'static str> {
        FILES
            .iter()
            .filter(|(name, _)| self.files.iter().any(|f| f.name == *name))
            .filter_map(|(_, format)| *format)
            .collect()
    }

    /// The manifest text, final newline included.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{FORMAT}");
        let _ = writeln!(out, "origin {}", self.origin);
        let _ = writeln!(out, "log-id {}", self.log_id.0.hyphenated());
        let _ = writeln!(out, "range {} {}", self.first, self.last);
        let _ = writeln!(
            out,
            "events {}",
            self.last.saturating_sub(self.first).saturating_add(1)
        );
        let _ = writeln!(out, "exported-at {}", self.exported_at.to_rfc3339());
        let _ = writeln!(out, "prev-hash {}", self.prev_hash.to_hex());
        for peak in &self.left_edge {
            let _ = writeln!(out, "left-edge {}", peak.to_hex());
        }
        let _ = writeln!(
            out,
            "checkpoint {} {}",
            self.checkpoint_size,
            STANDARD.encode(self.checkpoint_root.0)
        );
        if let Some(since) = &self.since {
            let _ = writeln!(out, "since {since}");
        }
        if let Some(until) = &self.until {
            let _ = writeln!(out, "until {until}");
        }
        let _ = writeln!(out, "formats {}", self.formats().join(","));
        for file in &self.files {
            let _ = writeln!(
                out,
                "file {} {} {}",
                file.name,
                hex::encode(file.sha256),
                file.len
            );
        }
        out
    }

    /// Sign the manifest with the log's key, which must be named for the origin (the key that
    /// signs the checkpoint). Returns the `manifest` file's text.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, ExportError> {
        if signer.name() != self.origin {
            return Err(ExportError::Checkpoint(
                CheckpointError::SignerIsNotOrigin {
                    signer: signer.name().to_owned(),
                    origin: self.origin.clone(),
                },
            ));
        }
        Ok(Note::sign(&self.to_text(), signer)?.to_string())
    }

    /// Read a manifest text strictly: every line in its place, every value in its one form.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let body = text.strip_suffix('\n').ok_or(ManifestError::Unterminated)?;
        let mut lines = Lines {
            lines: body.split('\n').collect(),
            at: 0,
        };
        for (i, line) in lines.lines.iter().enumerate() {
            if line.len() > MAX_MANIFEST_LINE {
                return Err(ManifestError::LineTooLong { line: i + 1 });
            }
        }
        let format = lines.lines.first().copied().unwrap_or_default();
        if format != FORMAT {
            return Err(ManifestError::WrongFormat(
                format.chars().take(40).collect(),
            ));
        }
        lines.at = 1;
        let origin = lines.value("origin")?;
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(lines.bad("origin", "is empty or holds a control character"));
        }
        let origin = origin.to_owned();
        let log_id = lines.value("log-id")?;
        let log_id = Uuid::try_parse(log_id)
            .ok()
            .filter(|id| id.hyphenated().to_string() == log_id)
            .ok_or_else(|| lines.bad("log-id", "is not a lower-case hyphenated UUID"))?;
        let range = lines.value("range")?;
        let (first, last) = range
            .split_once(' ')
            .and_then(|(a, b)| Some((decimal(a)?, decimal(b)?)))
            .filter(|(first, last)| *first >= 1 && first <= last)
            .ok_or_else(|| {
                lines.bad(
                    "range",
                    "is not two positions <first> <last>, 1 <= first <= last",
                )
            })?;
        let count = lines.value("events")?;
        if decimal(count) != Some(last - first + 1) {
            return Err(lines.bad("events", "is not the number of positions in the range"));
        }
        let exported_at = lines.value("exported-at")?;
        let exported_at = Timestamp::parse_rfc3339(exported_at)
            .ok()
            .filter(|t| t.to_rfc3339() == exported_at)
            .ok_or_else(|| lines.bad("exported-at", "is not RFC 3339 UTC with microseconds"))?;
        let prev_hash = lines.value("prev-hash")?;
        let prev_hash = hex_hash(prev_hash)
            .ok_or_else(|| lines.bad("prev-hash", "is not 64 lower-case hex digits"))?;
        let peaks = (first - 1).count_ones() as usize;
        let mut left_edge = Vec::with_capacity(peaks);
        for _ in 0..peaks {
            let peak = lines.value("left-edge")?;
            left_edge.push(
                hex_hash(peak)
                    .ok_or_else(|| lines.bad("left-edge", "is not 64 lower-case hex digits"))?,
            );
        }
        let checkpoint = lines.value("checkpoint")?;
        let (checkpoint_size, checkpoint_root) = checkpoint
            .split_once(' ')
            .and_then(|(size, root)| {
                let cp = Checkpoint::parse(&format!("x\n{size}\n{root}\n")).ok()?;
                Some((cp.size(), cp.root()))
            })
            .ok_or_else(|| lines.bad("checkpoint", "is not <size> <base64 root>"))?;
        let mut filter = |key: &'static str| -> Result<Option<String>, ManifestError> {
            match lines.optional(key) {
                Some(text) => {
                    check_filter(key, text).map_err(|_| {
                        lines.bad(key, "is empty, too long or holds a control character")
                    })?;
                    Ok(Some(text.to_owned()))
                }
                None => Ok(None),
            }
        };
        let since = filter("since")?;
        let until = filter("until")?;
        let formats = lines.value("formats")?.to_owned();
        let formats_line = lines.at;
        let mut files = Vec::new();
        let mut next_kind = 0;
        while let Some(file) = lines.optional("file") {
            let bad = |lines: &Lines<'_>| {
                lines.bad(
                    "file",
                    "is not <name> <sha-256 hex> <length> of a file of the format, in order",
                )
            };
            let mut parts = file.split(' ');
            let (Some(name), Some(sha), Some(len), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(&lines));
            };
            let Some(kind) = FILES.iter().position(|(n, _)| *n == name) else {
                return Err(bad(&lines));
            };
            if kind < next_kind {
                return Err(bad(&lines));
            }
            next_kind = kind + 1;
            let (Some(sha256), Some(len)) = (hex_hash(sha), decimal(len)) else {
                return Err(bad(&lines));
            };
            files.push(FileDigest {
                name: name.to_owned(),
                sha256: sha256.0,
                len,
            });
        }
        if lines.at < lines.lines.len() {
            return Err(ManifestError::Trailing { line: lines.at + 1 });
        }
        for required in [CHECKPOINT, EVENTS] {
            if !files.iter().any(|f| f.name == required) {
                return Err(ManifestError::Missing(if required == CHECKPOINT {
                    "file checkpoint"
                } else {
                    "file events.jsonl"
                }));
            }
        }
        let manifest = Manifest {
            origin,
            log_id: LogId(log_id),
            first,
            last,
            exported_at,
            prev_hash,
            left_edge,
            checkpoint_size,
            checkpoint_root,
            since,
            until,
            files,
        };
        if manifest.formats().join(",") != formats {
            return Err(ManifestError::BadValue {
                line: formats_line,
                key: "formats",
                problem: "does not name exactly the formats of the files listed",
            });
        }
        Ok(manifest)
    }

    fn file(&self, name: &str) -> Option<&FileDigest> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// A cursor over the manifest's lines, naming the line of each problem.
struct Lines<'a> {
    lines: Vec<&'a str>,
    at: usize,
}

impl<'a> Lines<'a> {
    fn value(&mut self, key: &'static str) -> Result<&'a str, ManifestError> {
        let Some(line) = self.lines.get(self.at) else {
            return Err(ManifestError::Missing(key));
        };
        match line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
            Some(value) => {
                self.at += 1;
                Ok(value)
            }
            None => Err(ManifestError::Expected {
                line: self.at + 1,
                expected: key,
            }),
        }
    }

    fn optional(&mut self, key: &'static str) -> Option<&'a str> {
        let line = self.lines.get(self.at)?;
        let value = line.strip_prefix(key)?.strip_prefix(' ')?;
        self.at += 1;
        Some(value)
    }

    /// A problem with the value on the line just read.
    fn bad(&self, key: &'static str, problem: &'static str) -> ManifestError {
        ManifestError::BadValue {
            line: self.at,
            key,
            problem,
        }
    }
}

/// A decimal number without sign, spaces or leading zeros.
fn decimal(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// 64 lower-case hex digits.
fn hex_hash(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(Hash(out))
}

/// One file of a bundle handed to [`verify_bundle`]: its name in the directory and a reader
/// over its bytes.
pub struct BundleFile<'a> {
    pub name: String,
    pub reader: Box<dyn BufRead + 'a>,
}

impl<'a> BundleFile<'a> {
    pub fn new(name: &str, reader: impl BufRead + 'a) -> Self {
        BundleFile {
            name: name.to_owned(),
            reader: Box::new(reader),
        }
    }
}

/// What is wrong with a bundle, at one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no manifest: this is not an export bundle, or it was not finished")]
    NoManifest,
    #[error("listed in the manifest but missing")]
    MissingFile,
    #[error("present but not listed in the manifest")]
    UnlistedFile,
    #[error("given twice")]
    DuplicateFile,
    #[error("could not be read: {0}")]
    Unreadable(String),
    #[error("SHA-256 does not match the manifest")]
    DigestMismatch,
    #[error("is {len} bytes, and the manifest says {listed}")]
    LengthMismatch { len: u64, listed: u64 },
    #[error("is larger than a signed note may be")]
    TooLarge,
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("signature: {0}")]
    Signature(NoteError),
    #[error("a signature line is repeated")]
    RepeatedSignature,
    #[error("no trusted signature is by the key of the origin {0:?}")]
    NotSignedByOrigin(String),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the checkpoint is of origin {checkpoint:?}, the manifest of {manifest:?}")]
    OriginMismatch {
        manifest: String,
        checkpoint: String,
    },
    #[error("the checkpoint is of a tree of {size} leaves, and the range ends at {last}")]
    CheckpointSize { size: u64, last: u64 },
    #[error("the checkpoint's size or root is not the one the manifest names")]
    CheckpointNotManifests,
    #[error("the checkpoint and the manifest are not signed by the same key")]
    DifferentSigners,
    #[error("not an event line: {0}")]
    BadLine(String),
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the last line does not end in a newline")]
    Unterminated,
    #[error("expected position {expected} next, found {found} (missing, duplicated or reordered)")]
    OutOfSequence { expected: u64, found: u64 },
    #[error("past the end of the range ({last})")]
    PastRange { last: u64 },
    #[error("positions {from}..={to} are missing")]
    MissingEvents { from: u64, to: u64 },
    #[error("bytes is not standard base64")]
    BadBase64,
    #[error("hash is not 64 lower-case hex digits")]
    BadHash,
    #[error("the event is {0} bytes, above the limit")]
    EventTooLarge(usize),
    #[error("chain hash does not recompute")]
    ChainHash,
    #[error("the bytes do not decode: {0}")]
    Undecodable(CodecError),
    #[error("the bytes are not in canonical form")]
    NotCanonical,
    #[error("column {0} disagrees with the decoded bytes")]
    ColumnMismatch(&'static str),
    #[error("the left edge is not a tree of {0} leaves: {1}")]
    BadLeftEdge(u64, MerkleError),
    #[error(
        "the tree root recomputed from the left edge and the events is not the checkpoint's root"
    )]
    RootMismatch,
    #[error("not an opening line: {0}")]
    BadOpening(String),
    #[error("openings out of order (by position, then field)")]
    OpeningOrder,
    #[error("no event in the range commits field {0:?} at this position")]
    NoCommitment(String),
    #[error("the opening of {0:?} does not open the event's commitment")]
    OpeningMismatch(String),
    #[error("the event commits field {0:?} and openings.jsonl has no opening for it")]
    MissingOpening(String),
}

/// One problem: the file, the position or line when known, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: String,
    pub position: Option<u64>,
    pub line: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for Failure {
    /// `events.jsonl position 1234: chain hash does not recompute`; a caller prints it after
    /// `INVALID: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(position) = self.position {
            write!(f, " position {position}")?;
        } else if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What [`verify_bundle`] found. Valid only with no failure at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BundleReport {
    pub failures: Vec<Failure>,
    /// Failures past [`MAX_FAILURES`], counted only.
    pub more_failures: u64,
    pub valid_events: u64,
    pub invalid_events: u64,
    /// The range the manifest claims, when it could be read.
    pub range: Option<(u64, u64)>,
    /// `<name>+<key id hex>` of the trusted key that signed the manifest.
    pub signed_by: Option<String>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.failures.is_empty() && self.more_failures == 0 && self.signed_by.is_some()
    }

    /// `N events valid, M invalid, range P..Q, signed by <name>+<key id>`.
    pub fn summary(&self) -> String {
        let range = match self.range {
            Some((p, q)) => format!("range {p}..{q}"),
            None => "range unknown".to_owned(),
        };
        let signer = self.signed_by.as_deref().unwrap_or("no trusted key");
        format!(
            "{} events valid, {} invalid, {range}, signed by {signer}",
            self.valid_events, self.invalid_events
        )
    }

    fn fail(&mut self, file: &str, position: Option<u64>, line: Option<u64>, problem: Problem) {
        if self.failures.len() >= MAX_FAILURES {
            self.more_failures += 1;
            return;
        }
        self.failures.push(Failure {
            file: file.to_owned(),
            position,
            line,
            problem,
        });
    }
}

/// Reads lines off a [`BufRead`], hashing and counting every byte, keeping at most `limit`
/// bytes of a line (a longer one is skipped to its newline, so a hostile file cannot make it
/// buffer without bound).
struct LineReader<'r, 'a> {
    reader: &'r mut (dyn BufRead + 'a),
    hasher: Sha256,
    len: u64,
}

struct LineStatus {
    too_long: bool,
    terminated: bool,
}

impl<'r, 'a> LineReader<'r, 'a> {
    fn new(reader: &'r mut (dyn BufRead + 'a)) -> Self {
        LineReader {
            reader,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn next_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<Option<LineStatus>> {
        buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(any.then_some(LineStatus {
                    too_long,
                    terminated: false,
                }));
            }
            any = true;
            let newline = memchr::memchr(b'\n', available);
            let taken = newline.map_or(available.len(), |i| i + 1);
            let chunk = &available[..taken];
            self.hasher.update(chunk);
            self.len += taken as u64;
            let content = &chunk[..newline.unwrap_or(taken)];
            if !too_long && buf.len() + content.len() <= limit {
                buf.extend_from_slice(content);
            } else {
                too_long = true;
            }
            self.reader.consume(taken);
            if newline.is_some() {
                return Ok(Some(LineStatus {
                    too_long,
                    terminated: true,
                }));
            }
        }
    }

    /// Hash the rest of the file, keeping nothing.
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        while self.next_line(&mut buf, 0)?.is_some() {}
        Ok(())
    }

    fn digest(self, name: &str) -> FileDigest {
        FileDigest {
            name: name.to_owned(),
            sha256: self.hasher.finalize().into(),
            len: self.len,
        }
    }
}

/// Read a small file whole (up to `limit` bytes kept), hashing all of it.
fn read_small(file: &mut BundleFile<'_>, limit: usize) -> (Vec<u8>, FileDigest, Option<String>) {
    let mut kept = Vec::new();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut chunk = [0u8; 8192];
    let mut error = None;
    loop {
        match file.reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&chunk[..n]);
                len += n as u64;
                let room = (limit + 1).saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&chunk[..room]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let digest = FileDigest {
        name: file.name.clone(),
        sha256: hasher.finalize().into(),
        len,
    };
    (kept, digest, error)
}

/// Compare a file's digest with its manifest line.
fn check_digest(report: &mut BundleReport, manifest: &Manifest, digest: &FileDigest) {
    let Some(listed) = manifest.file(&digest.name) else {
        return;
    };
    if listed.len != digest.len {
        report.fail(
            &digest.name,
            None,
            None,
            Problem::LengthMismatch {
                len: digest.len,
                listed: listed.len,
            },
        );
    } else if listed.sha256 != digest.sha256 {
        report.fail(&digest.name, None, None, Problem::DigestMismatch);
    }
}

/// Verify a bundle offline against the trusted verifier key(s): every file's hash and length
/// against the signed manifest; the manifest's and the checkpoint's signatures by the origin's
/// trusted key (the same key); the checkpoint's origin, size and root; every event line (its
/// sequence, its chain hash, its columns against its bytes); the tree root from the left edge
/// and every leaf; and, when `openings.jsonl` is present, every opening against its event's
/// commitment. Every problem found is reported; a bundle that cannot be read at all (no
/// manifest, another format, garbage) is one failure that says so. Never panics on input.
pub fn verify_bundle(files: Vec<BundleFile<'_>>, keys: &[VerifierKey]) -> BundleReport {
    let mut report = BundleReport::default();
    let mut files: Vec<Option<BundleFile<'_>>> = files.into_iter().map(Some).collect();
    for i in 0..files.len() {
        let name = files[i]
            .as_ref()
            .map(|f| f.name.clone())
            .unwrap_or_default();
        if files[..i]
            .iter()
            .any(|f| f.as_ref().is_some_and(|f| f.name == name))
        {
            report.fail(&name, None, None, Problem::DuplicateFile);
        }
    }

    // The manifest: read untrusted, verified, then parsed; a bad signature is reported and the
    // rest still checked, so the report says everything that is wrong.
    let Some(mut manifest_file) = take(&mut files, MANIFEST) else {
        report.fail(MANIFEST, None, None, Problem::NoManifest);
        return report;
    };
    let (bytes, _, error) = read_small(&mut manifest_file, MAX_NOTE_BYTES);
    if let Some(error) = error {
        report.fail(MANIFEST, None, None, Problem::Unreadable(error));
        return report;
    }
    let note = match Note::parse(&bytes) {
        Ok(note) => note,
        Err(e) => {
            report.fail(MANIFEST, None, None, Problem::Signature(e));
            return report;
        }
    };
    let manifest = match Manifest::parse(note.text()) {
        Ok(manifest) => manifest,
        Err(e) => {
            report.fail(MANIFEST, None, None, Problem::Manifest(e));
            return report;
        }
    };
    report.range = Some((manifest.first, manifest.last));
    // One signature line per key: a repeated line changes the file but not what is signed, and
    // a bundle has one form.
    let signatures = note.signatures();
    if signatures
        .iter()
        .enumerate()
        .any(|(i, s)| signatures[..i].contains(s))
    {
        report.fail(MANIFEST, None, None, Problem::RepeatedSignature);
    }
    let mut manifest_signer = None;
    match note.verify(keys) {
        Ok(verified) => match verified.iter().find(|s| s.name == manifest.origin) {
            Some(s) => {
                manifest_signer = Some((s.name.clone(), s.key_id));
                report.signed_by = Some(format!("{}+{:08x}", s.name, s.key_id));
            }
            None => report.fail(
                MANIFEST,
                None,
                None,
                Problem::NotSignedByOrigin(manifest.origin.clone()),
            ),
        },
        Err(e) => report.fail(MANIFEST, None, None, Problem::Signature(e)),
    }

    // Which files are there and which are listed.
    for listed in &manifest.files {
        if !files
            .iter()
            .any(|f| f.as_ref().is_some_and(|f| f.name == listed.name))
        {
            report.fail(&listed.name, None, None, Problem::MissingFile);
        }
    }
    for file in files.iter().flatten() {
        if manifest.file(&file.name).is_none() {
            report.fail(&file.name, None, None, Problem::UnlistedFile);
        }
    }

    // The checkpoint.
    let mut root = manifest.checkpoint_root;
    if let Some(mut file) = take(&mut files, CHECKPOINT) {
        let (bytes, digest, error) = read_small(&mut file, MAX_NOTE_BYTES);
        check_digest(&mut report, &manifest, &digest);
        if let Some(error) = error {
            report.fail(CHECKPOINT, None, None, Problem::Unreadable(error));
        } else if bytes.len() > MAX_NOTE_BYTES {
            report.fail(CHECKPOINT, None, None, Problem::TooLarge);
        } else {
            let checkpoint = match SignedCheckpoint::open(&bytes, keys) {
                Ok(signed) => {
                    let same = manifest_signer.as_ref().is_some_and(|(name, id)| {
                        signed
                            .note()
                            .verify(keys)
                            .is_ok_and(|v| v.iter().any(|s| s.name == *name && s.key_id == *id))
                    });
                    if !same && manifest_signer.is_some() {
                        report.fail(CHECKPOINT, None, None, Problem::DifferentSigners);
                    }
                    Some(signed.checkpoint().clone())
                }
                Err(e) => {
                    report.fail(CHECKPOINT, None, None, Problem::Checkpoint(e));
                    // Read it untrusted to report what else disagrees.
                    Note::parse(&bytes)
                        .ok()
                        .and_then(|n| Checkpoint::parse(n.text()).ok())
                }
            };
            if let Some(cp) = checkpoint {
                if cp.origin() != manifest.origin {
                    report.fail(
                        CHECKPOINT,
                        None,
                        None,
                        Problem::OriginMismatch {
                            manifest: manifest.origin.clone(),
                            checkpoint: cp.origin().to_owned(),
                        },
                    );
                }
                if cp.size() != manifest.last {
                    report.fail(
                        CHECKPOINT,
                        None,
                        None,
                        Problem::CheckpointSize {
                            size: cp.size(),
                            last: manifest.last,
                        },
                    );
                }
                if cp.size() != manifest.checkpoint_size || cp.root() != manifest.checkpoint_root {
                    report.fail(CHECKPOINT, None, None, Problem::CheckpointNotManifests);
                }
                root = cp.root();
            }
        }
    }

    // The events, streamed.
    let mut commitments: Vec<(u64, &'static str, Commitment)> = Vec::new();
    if let Some(mut file) = take(&mut files, EVENTS) {
        let digest = verify_events(&mut report, &manifest, &root, &mut file, &mut commitments);
        check_digest(&mut report, &manifest, &digest);
    }

    // The openings, against the commitments the events made.
    commitments.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let listed = manifest.file(OPENINGS).is_some();
    if let Some(mut file) = take(&mut files, OPENINGS).filter(|_| listed) {
        let digest = verify_openings(&mut report, &mut file, &commitments);
        check_digest(&mut report, &manifest, &digest);
    }

    // Everything else is checked by its hash alone.
    for file in files.iter_mut().filter_map(Option::take) {
        let mut file = file;
        let mut lines = LineReader::new(&mut *file.reader);
        if let Err(e) = lines.drain() {
            report.fail(&file.name, None, None, Problem::Unreadable(e.to_string()));
        }
        let digest = lines.digest(&file.name);
        check_digest(&mut report, &manifest, &digest);
    }
    report
}

/// Take the file named `name` out of the list, to read it.
fn take<'a>(files: &mut [Option<BundleFile<'a>>], name: &str) -> Option<BundleFile<'a>> {
    files
        .iter_mut()
        .find(|f| f.as_ref().is_some_and(|f| f.name == name))
        .and_then(Option::take)
}

/// Check `events.jsonl` line by line; returns the file's digest.
fn verify_events(
    report: &mut BundleReport,
    manifest: &Manifest,
    root: &Hash,
    file: &mut BundleFile<'_>,
    commitments: &mut Vec<(u64, &'static str, Commitment)>,
) -> FileDigest {
    let mut edge = match RightEdge::from_peaks(manifest.first - 1, manifest.left_edge.clone()) {
        Ok(edge) => Some(edge),
        Err(e) => {
            report.fail(
                MANIFEST,
                None,
                None,
                Problem::BadLeftEdge(manifest.first - 1, e),
            );
            None
        }
    };
    let mut prev = manifest.prev_hash;
    let mut next = manifest.first;
    let mut lines = LineReader::new(&mut *file.reader);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut uuid_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    loop {
        let status = match lines.next_line(&mut buf, MAX_EVENT_LINE) {
            Ok(Some(status)) => status,
            Ok(None) => break,
            Err(e) => {
                report.fail(
                    EVENTS,
                    None,
                    Some(line_no + 1),
                    Problem::Unreadable(e.to_string()),
                );
                break;
            }
        };
        line_no += 1;
        let fail = |report: &mut BundleReport, position: Option<u64>, problem| {
            report.fail(EVENTS, position, Some(line_no), problem);
        };
        if !status.terminated {
            fail(report, None, Problem::Unterminated);
        }
        if status.too_long {
            fail(report, None, Problem::LineTooLong(MAX_EVENT_LINE));
            report.invalid_events += 1;
            continue;
        }
        let line: EventLine<'_> = match serde_json::from_slice(&buf) {
            Ok(line) => line,
            Err(e) => {
                fail(report, None, Problem::BadLine(e.to_string()));
                report.invalid_events += 1;
                continue;
            }
        };
        let position = line.position;
        let failures_before = report.failures.len() as u64 + report.more_failures;
        let at = Some(position);
        if position != next {
            fail(
                report,
                at,
                Problem::OutOfSequence {
                    expected: next,
                    found: position,
                },
            );
        }
        if position > manifest.last {
            fail(
                report,
                at,
                Problem::PastRange {
                    last: manifest.last,
                },
            );
        }
        next = position.saturating_add(1);
        let bytes = STANDARD.decode(line.bytes.as_bytes()).ok();
        let hash = hex_hash(&line.hash);
        if bytes.is_none() {
            fail(report, at, Problem::BadBase64);
        }
        if hash.is_none() {
            fail(report, at, Problem::BadHash);
        }
        if let Some(bytes) = bytes {
            if bytes.len() > MAX_EVENT_BYTES {
                fail(report, at, Problem::EventTooLarge(bytes.len()));
            } else {
                let computed = event_hash(manifest.log_id, position, &prev, &bytes);
                if hash.is_some_and(|h| h != computed) {
                    fail(report, at, Problem::ChainHash);
                }
                // Continue from the stated hash, so one altered event is one failure.
                prev = hash.unwrap_or(computed);
                if let Some(e) = edge.as_mut()
                    && let Err(error) = e.append(&merkle::leaf_hash(&bytes))
                {
                    fail(report, at, Problem::BadLeftEdge(e.size(), error));
                    edge = None;
                }
                check_columns(&line, &bytes, &mut uuid_buf, |problem| {
                    fail(report, at, problem)
                })
                .into_iter()
                .for_each(|(field, c)| commitments.push((position, field, c)));
            }
        }
        if let Some(hash) = hash {
            prev = hash;
        }
        if report.failures.len() as u64 + report.more_failures == failures_before {
            report.valid_events += 1;
        } else {
            report.invalid_events += 1;
        }
    }
    if let Err(e) = lines.drain() {
        report.fail(EVENTS, None, None, Problem::Unreadable(e.to_string()));
    }
    if next <= manifest.last {
        report.fail(
            EVENTS,
            Some(next),
            None,
            Problem::MissingEvents {
                from: next,
                to: manifest.last,
            },
        );
    }
    if edge.is_some_and(|edge| edge.root() != *root) {
        report.fail(EVENTS, None, None, Problem::RootMismatch);
    }
    lines.digest(EVENTS)
}

/// Decode an event's bytes and hold its columns to them; returns the commitments it makes.
fn check_columns(
    line: &EventLine<'_>,
    bytes: &[u8],
    uuid_buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH],
    mut fail: impl FnMut(Problem),
) -> Vec<(&'static str, Commitment)> {
    let decoded = match codec::decode(bytes) {
        Ok(decoded) => decoded,
        Err(e) => {
            fail(Problem::Undecodable(e));
            return Vec::new();
        }
    };
    let h = &decoded.header;
    // The binary envelope has one encoding per header (fixed widths, length prefixes), so the
    // bytes are canonical exactly when the payload is the event's compact JSON.
    if h.schema_version == TokenEvent::CURRENT_SCHEMA {
        let canonical = codec::payload_offset(bytes)
            .is_some_and(|offset| bytes[offset..] == codec::payload(&decoded.event));
        if !canonical {
            fail(Problem::NotCanonical);
        }
    }
    let column = if *line.event_id != *h.event_id.hyphenated().encode_lower(uuid_buf) {
        Some("event_id")
    } else if *line.stream_id != *h.stream_id.as_str() {
        Some("stream_id")
    } else if line.stream_version != h.stream_version {
        Some("stream_version")
    } else if *line.recorded_at != h.recorded_at.to_rfc3339() {
        Some("recorded_at")
    } else if *line.actor != *h.actor {
        Some("actor")
    } else if *line.event_type != *h.event_type {
        Some("event_type")
    } else if line.schema_version != h.schema_version {
        Some("schema_version")
    } else {
        None
    };
    if let Some(column) = column {
        fail(Problem::ColumnMismatch(column));
    }
    decoded.event.commitments()
}

/// Check `openings.jsonl` against the commitments of the exported events; returns its digest.
fn verify_openings(
    report: &mut BundleReport,
    file: &mut BundleFile<'_>,
    commitments: &[(u64, &'static str, Commitment)],
) -> FileDigest {
    let mut opened = vec![false; commitments.len()];
    let mut lines = LineReader::new(&mut *file.reader);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut last: Option<(u64, String)> = None;
    loop {
        let status = match lines.next_line(&mut buf, MAX_OPENING_LINE) {
            Ok(Some(status)) => status,
            Ok(None) => break,
            Err(e) => {
                report.fail(
                    OPENINGS,
                    None,
                    Some(line_no + 1),
                    Problem::Unreadable(e.to_string()),
                );
                break;
            }
        };
        line_no += 1;
        if !status.terminated {
            report.fail(OPENINGS, None, Some(line_no), Problem::Unterminated);
        }
        if status.too_long {
            report.fail(
                OPENINGS,
                None,
                Some(line_no),
                Problem::LineTooLong(MAX_OPENING_LINE),
            );
            continue;
        }
        let line: OpeningLine<'_> = match serde_json::from_slice(&buf) {
            Ok(line) => line,
            Err(e) => {
                report.fail(
                    OPENINGS,
                    None,
                    Some(line_no),
                    Problem::BadOpening(e.to_string()),
                );
                continue;
            }
        };
        let at = Some(line.position);
        let key = (line.position, line.field.to_string());
        if last.as_ref().is_some_and(|last| *last >= key) {
            report.fail(OPENINGS, at, Some(line_no), Problem::OpeningOrder);
        }
        last = Some(key);
        let salt = hex_hash(&line.salt);
        let value = hex::decode(line.value.as_bytes()).ok();
        let (Some(salt), Some(value)) = (salt, value) else {
            report.fail(
                OPENINGS,
                at,
                Some(line_no),
                Problem::BadOpening(
                    "salt is not 32 bytes of lower-case hex, or value is not hex".to_owned(),
                ),
            );
            continue;
        };
        let found =
            commitments.binary_search_by(|(p, f, _)| (*p, *f).cmp(&(line.position, &*line.field)));
        let Ok(index) = found else {
            report.fail(
                OPENINGS,
                at,
                Some(line_no),
                Problem::NoCommitment(line.field.to_string()),
            );
            continue;
        };
        let opening = Opening {
            field: line.field.to_string(),
            salt: salt.0,
            value,
        };
        if opening.commitment() != commitments[index].2 {
            report.fail(
                OPENINGS,
                at,
                Some(line_no),
                Problem::OpeningMismatch(opening.field),
            );
        }
        opened[index] = true;
    }
    for ((position, field, _), opened) in commitments.iter().zip(&opened) {
        if !opened {
            report.fail(
                OPENINGS,
                Some(*position),
                None,
                Problem::MissingOpening((*field).to_owned()),
            );
        }
    }
    lines.digest(OPENINGS)
}
