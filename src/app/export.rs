//! Compliance exports and single-event proofs: the log read from the store, written through the
//! pure bundle writers of `tokenledger_events::export`, signed with the log's keys.
//!
//! An export is written into a temporary directory beside its target and renamed into place
//! once whole, so an interrupted export leaves nothing that looks like a bundle.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tokenledger_events::export::{
    self, EventsWriter, ExportStart, FileDigest, HashingWriter, Manifest, OpeningsWriter,
};
use tokenledger_events::merkle::{RightEdge, tree_root_indexes};
use tokenledger_events::{EventLog as _, Hash, Progress, SignedCheckpoint, Timestamp, TokenEvent};
use tokenledger_projections::{OcsfOptions, audit_row, ocsf_record};
use uuid::Uuid;

use super::Services;
use crate::store::StoreError;

/// Events read from the store per page.
const PAGE: usize = 5000;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub dir: PathBuf,
    pub from_position: Option<u64>,
    pub to_position: Option<u64>,
    /// Events recorded at or after this instant, with the text it was given as (for the
    /// manifest).
    pub since: Option<(Timestamp, String)>,
    /// Events recorded at or before this instant.
    pub until: Option<(Timestamp, String)>,
    pub with_openings: bool,
    pub ocsf: bool,
    pub csv: bool,
    /// Replace a directory that is not empty.
    pub force: bool,
    /// `metadata.version` of the OCSF records.
    pub ocsf_version: String,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    pub first: u64,
    pub last: u64,
    pub files: Vec<FileDigest>,
    pub checkpoint_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportFailure {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error(transparent)]
    Bundle(#[from] export::ExportError),
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoints::CheckpointFailure),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ExportFailure + '_ {
    move |e| ExportFailure::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The range `[first, last]` a request asks for, on a log whose head is `head`.
async fn range(
    services: &Services,
    req: &ExportRequest,
    head: u64,
) -> Result<(u64, u64), ExportFailure> {
    let store = services.store();
    let mut first = req.from_position.unwrap_or(1).max(1);
    let mut last = req.to_position.unwrap_or(head);
    if last > head {
        return Err(ExportFailure::Refused(format!(
            "--to-position {last} is past the log's head, position {head}"
        )));
    }
    if let Some((since, _)) = &req.since {
        first = first.max(store.position_at(*since).await?);
    }
    if let Some((until, _)) = &req.until {
        // The last position recorded at or before `until`.
        let after = store.position_at(until.plus_micros(1)).await?;
        last = last.min(after.saturating_sub(1));
    }
    if head == 0 || first > last {
        return Err(ExportFailure::Refused(format!(
            "the range asked for holds no events (the log's head is position {head})"
        )));
    }
    Ok((first, last))
}

/// Write the bundle `req` asks for; `progress` hears the position written after each page.
pub async fn export(
    services: &Services,
    req: &ExportRequest,
    now: Timestamp,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Exported, ExportFailure> {
    let checkpointer = services.checkpointer().ok_or_else(|| {
        ExportFailure::Refused("an export is signed: the log's signing key is needed".into())
    })?;
    let store = services.store();
    let head = store.head().await.map_err(StoreError::from)?.position;
    let (first, last) = range(services, req, head).await?;
    progress(Progress {
        position: 0,
        head: last - first + 1,
    });

    // The target must be new or empty (or replaced with --force), before anything is signed.
    let target = req.dir.clone();
    let occupied = match std::fs::read_dir(&target) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(&target)(e)),
    };
    if occupied && !req.force {
        return Err(ExportFailure::Refused(format!(
            "{} is not empty; choose a new directory, or pass --force to replace it",
            target.display()
        )));
    }

    let stored = checkpointer.sign_at(last).await?;
    let signed = checkpointer
        .open(&stored)
        .map_err(|e| ExportFailure::Refused(format!("the checkpoint does not verify: {e}")))?;
    let prev_hash = if first == 1 {
        Hash::ZERO
    } else {
        store
            .read_from(first - 2, 1)
            .await
            .map_err(StoreError::from)?
            .first()
            .map(|e| e.hash)
            .ok_or_else(|| ExportFailure::Refused(format!("position {} is missing", first - 1)))?
    };
    let edge_hashes = store
        .tree_hashes(&tree_root_indexes(first - 1).map_err(StoreError::tree)?)
        .await?;
    let left_edge = RightEdge::load(first - 1, &edge_hashes).map_err(StoreError::tree)?;

    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let tmp = parent.join(format!(".{name}.partial-{}", Uuid::now_v7().simple()));
    let written = write_bundle(
        services,
        req,
        &tmp,
        ExportStart {
            log_id: store.log_id(),
            first,
            last,
            prev_hash,
            left_edge,
        },
        &signed,
        now,
        progress,
    )
    .await;
    let files = match written {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Into place: a replaced directory is moved aside first and removed after.
    let aside = parent.join(format!(".{name}.replaced-{}", Uuid::now_v7().simple()));
    if occupied {
        std::fs::rename(&target, &aside).map_err(io(&target))?;
    } else if target.exists() {
        std::fs::remove_dir(&target).map_err(io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    if occupied {
        let _ = std::fs::remove_dir_all(&aside);
    }
    Ok(Exported {
        dir: target,
        first,
        last,
        files,
        checkpoint_size: signed.checkpoint().size(),
    })
}

/// A file of the bundle, buffered and made durable when finished.
fn create(dir: &Path, name: &str, private: bool) -> Result<BufWriter<File>, ExportFailure> {
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        // Openings hold every token's hash: readable by the exporter only.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let file = options.open(&path).map_err(io(&path))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn close(dir: &Path, name: &str, out: BufWriter<File>) -> Result<(), ExportFailure> {
    let path = dir.join(name);
    let file = out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
    file.sync_all().map_err(io(&path))
}

async fn write_bundle(
    services: &Services,
    req: &ExportRequest,
    dir: &Path,
    start: ExportStart,
    signed: &SignedCheckpoint,
    now: Timestamp,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<FileDigest>, ExportFailure> {
    std::fs::create_dir(dir).map_err(io(dir))?;
    let (first, last) = (start.first, start.last);
    let mut events = EventsWriter::new(create(dir, export::EVENTS, false)?, start)?;
    let mut openings = match req.with_openings {
        true => Some(OpeningsWriter::new(create(dir, export::OPENINGS, true)?)),
        false => None,
    };
    let mut ocsf = match req.ocsf {
        true => Some(HashingWriter::new(
            export::OCSF,
            create(dir, export::OCSF, false)?,
        )),
        false => None,
    };
    let mut csv = match req.csv {
        true => {
            let mut w =
                HashingWriter::new(export::AUDIT_CSV, create(dir, export::AUDIT_CSV, false)?);
            tokenledger_projections::write_csv_header(&mut w).map_err(io(dir))?;
            Some(w)
        }
        false => None,
    };
    let options = OcsfOptions {
        version: req.ocsf_version.clone(),
        vendor_name: "tokenledger".into(),
        product_version: Some(env!("CARGO_PKG_VERSION").into()),
    };
    // Each token's scopes (fixed at creation), for the audit rows.
    let mut scopes: HashMap<Uuid, Vec<String>> = HashMap::new();
    let store = services.store();
    let mut after = first - 1;
    while after < last {
        let page = store
            .read_from(after, PAGE.min((last - after) as usize))
            .await
            .map_err(StoreError::from)?;
        let Some(end) = page.last().map(|e| e.position) else {
            break;
        };
        for e in page.iter().take_while(|e| e.position <= last) {
            events.write_event(e)?;
            if let Some(o) = &mut openings {
                o.write_event_openings(e)?;
            }
            if ocsf.is_none() && csv.is_none() {
                continue;
            }
            let decoded = e.decode().map_err(|err| {
                ExportFailure::Refused(format!("position {} does not decode: {err}", e.position))
            })?;
            if let Some(w) = &mut ocsf
                && let Some(record) = ocsf_record(e, &decoded, &options)
            {
                tokenledger_projections::write_ocsf_line(w, &record).map_err(io(dir))?;
            }
            if let Some(w) = &mut csv {
                let token_scopes = match (&decoded, e.stream_id.token_id()) {
                    (TokenEvent::Created(c), _) => c.scopes.clone(),
                    (_, Some(id)) => match scopes.get(&id) {
                        Some(s) => s.clone(),
                        None => {
                            let s = store.token(id).await?.map(|t| t.scopes).unwrap_or_default();
                            scopes.insert(id, s.clone());
                            s
                        }
                    },
                    (_, None) => Vec::new(),
                };
                if let (TokenEvent::Created(c), Some(id)) = (&decoded, e.stream_id.token_id()) {
                    scopes.insert(id, c.scopes.clone());
                }
                if let Some(row) = audit_row(e, &decoded, &token_scopes) {
                    tokenledger_projections::write_csv_row(w, &row).map_err(io(dir))?;
                }
            }
        }
        after = end.min(last);
        progress(Progress {
            position: after - first + 1,
            head: last - first + 1,
        });
    }
    let (out, summary) = events.finish()?;
    close(dir, export::EVENTS, out)?;
    let mut files = Vec::new();
    if let Some(o) = openings {
        let (out, digest) = o.finish()?;
        close(dir, export::OPENINGS, out)?;
        files.push(digest);
    }
    for (name, w) in [(export::OCSF, ocsf), (export::AUDIT_CSV, csv)] {
        if let Some(w) = w {
            let (out, digest) = w.finish().map_err(io(dir))?;
            close(dir, name, out)?;
            files.push(digest);
        }
    }
    let (checkpoint, digest) = export::checkpoint_file(signed);
    let mut out = create(dir, export::CHECKPOINT, false)?;
    out.write_all(&checkpoint).map_err(io(dir))?;
    close(dir, export::CHECKPOINT, out)?;
    files.push(digest);
    let manifest = Manifest::new(
        &summary,
        signed,
        now,
        req.since.as_ref().map(|(_, raw)| raw.as_str()),
        req.until.as_ref().map(|(_, raw)| raw.as_str()),
        files.clone(),
    )?;
    let checkpointer = services
        .checkpointer()
        .expect("checked before the bundle was started");
    let note = checkpointer
        .keys()
        .sign(&manifest.to_text())
        .map_err(|e| ExportFailure::Refused(format!("cannot sign the manifest: {e}")))?;
    let mut out = create(dir, export::MANIFEST, false)?;
    out.write_all(note.to_string().as_bytes())
        .map_err(io(dir))?;
    close(dir, export::MANIFEST, out)?;
    files.insert(0, summary.file);
    Ok(files)
}

/// The inclusion proof of the event at `position`, under the latest signed checkpoint that
/// covers it (signing one at the head when none does): a file a verifier checks offline.
pub async fn prove(services: &Services, position: u64) -> Result<Vec<u8>, ExportFailure> {
    let checkpointer = services.checkpointer().ok_or_else(|| {
        ExportFailure::Refused("a proof is signed: the log's signing key is needed".into())
    })?;
    let store = services.store();
    let head = store.head().await.map_err(StoreError::from)?.position;
    if position == 0 || position > head {
        return Err(ExportFailure::Refused(format!(
            "position {position} is not in the log; positions run from 1 to {head}"
        )));
    }
    let latest = store.signed_checkpoints(1).await?.into_iter().next();
    let stored = match latest {
        Some(c) if c.size >= position => c,
        _ => checkpointer.sign_at(head).await?,
    };
    let signed = checkpointer
        .open(&stored)
        .map_err(|e| ExportFailure::Refused(format!("the checkpoint does not verify: {e}")))?;
    let event = store
        .read_from(position - 1, 1)
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .next()
        .ok_or_else(|| ExportFailure::Refused(format!("position {position} is missing")))?;
    let inclusion = store.inclusion_proof(position, stored.size).await?;
    tokenledger_events::proof::proof_file(&event.bytes, position - 1, &signed, &inclusion)
        .map_err(|e| ExportFailure::Refused(e.to_string()))
}

/// The proof that the signed checkpoint `newer` extends `older` (both signed by this log).
pub async fn consistency(
    services: &Services,
    older: &[u8],
    newer: &[u8],
) -> Result<Vec<u8>, ExportFailure> {
    let checkpointer = services.checkpointer().ok_or_else(|| {
        ExportFailure::Refused("checkpoints are opened with the log's verifier keys".into())
    })?;
    let keys = checkpointer.keys().verifier_keys();
    let open = |which: &str, bytes: &[u8]| {
        SignedCheckpoint::open(bytes, &keys)
            .map_err(|e| ExportFailure::Refused(format!("{which}: {e}")))
    };
    let (older, newer) = (open("OLD", older)?, open("NEW", newer)?);
    let proof = services
        .store()
        .consistency_proof(older.checkpoint().size(), newer.checkpoint().size())
        .await?;
    tokenledger_events::proof::consistency_file(&older, &newer, &proof)
        .map_err(|e| ExportFailure::Refused(e.to_string()))
}
