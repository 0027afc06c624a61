//! `tokenledger export`, `verify-export`, `prove`, `verify-proof` and `consistency`: what a
//! compliance team takes away, and what an auditor runs on another machine with no database,
//! trusting only the published verifier key.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use tokenledger_events::{Timestamp, VerifierKey};

use super::Failure;
use super::audit::{Since, since_arg};
use super::output::say;
use super::progress::Bar;
use crate::app::Services;
use crate::app::export::{ExportRequest, consistency, export, prove};

/// A time given on the command line, kept as typed for the manifest.
#[derive(Clone, Debug)]
pub struct TimeArg {
    raw: String,
    at: Since,
}

fn time_arg(raw: &str) -> Result<TimeArg, String> {
    Ok(TimeArg {
        raw: raw.trim().to_owned(),
        at: since_arg(raw)?,
    })
}

impl TimeArg {
    fn resolve(&self, now: Timestamp) -> (Timestamp, String) {
        let at = match self.at {
            Since::At(t) => t,
            Since::Ago(d) => now.minus(d),
        };
        (at, self.raw.clone())
    }
}

fn vkey(raw: &str) -> Result<VerifierKey, String> {
    VerifierKey::parse(raw.trim()).map_err(|e| {
        format!("--key: {e}; expected the verifier key `tokenledger keys show` prints")
    })
}

/// The formats of an export, beside the native `events.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Native,
    Ocsf,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The directory to write the bundle to (new or empty).
    #[arg(long = "to", value_name = "DIR")]
    pub dir: PathBuf,
    /// The first position to export (default 1).
    #[arg(long, value_name = "P")]
    pub from_position: Option<u64>,
    /// The last position to export (default the head).
    #[arg(long, value_name = "P")]
    pub to_position: Option<u64>,
    /// Events recorded at or after T: RFC 3339, a date, or a duration ago like 30d.
    #[arg(long, value_name = "T", value_parser = time_arg)]
    pub since: Option<TimeArg>,
    /// Events recorded at or before T.
    #[arg(long, value_name = "T", value_parser = time_arg)]
    pub until: Option<TimeArg>,
    /// Also write openings.jsonl: the salts and token hashes behind the events' commitments
    /// (secret: written 0600).
    #[arg(long)]
    pub with_openings: bool,
    /// Files to write besides the signed native bundle: ocsf (ocsf.jsonl), csv (audit.csv).
    #[arg(long, value_delimiter = ',', default_value = "native")]
    pub format: Vec<Format>,
    /// The OCSF schema version the records claim (SIEMs lag behind the newest).
    #[arg(long, default_value = "1.8.0")]
    pub ocsf_version: String,
    /// Replace a directory that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Draw no progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn run_export(services: &Services, args: ExportArgs) -> Result<(), Failure> {
    let now = services.ledger().now();
    let req = ExportRequest {
        dir: args.dir,
        from_position: args.from_position,
        to_position: args.to_position,
        since: args.since.map(|t| t.resolve(now)),
        until: args.until.map(|t| t.resolve(now)),
        with_openings: args.with_openings,
        ocsf: args.format.contains(&Format::Ocsf),
        csv: args.format.contains(&Format::Csv),
        force: args.force,
        ocsf_version: args.ocsf_version,
    };
    let bar = Bar::new("export", args.quiet);
    let started = std::time::Instant::now();
    let done = export(services, &req, now, &|p| bar.report(p)).await;
    drop(bar);
    let done = done.map_err(|e| Failure(e.to_string()))?;
    let secs = started.elapsed().as_secs_f64();
    let events = done.last - done.first + 1;
    eprintln!(
        "exported positions {}..{} ({events} events) to {} in {secs:.2} s ({:.0} events/s), \
         under the checkpoint at size {}",
        done.first,
        done.last,
        done.dir.display(),
        events as f64 / secs.max(1e-9),
        done.checkpoint_size
    );
    for f in &done.files {
        say!("{}  {}  {} bytes", f.name, hex::encode(f.sha256), f.len);
    }
    Ok(())
}

/// Check a bundle offline. Prints one `INVALID: ...` line per failure, then the summary.
/// Returns whether it is valid; never touches a database.
pub fn run_verify_export(dir: &Path, keys: &[VerifierKey]) -> Result<bool, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Failure(format!(
            "INVALID: {}: cannot read the bundle directory: {e}",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure(format!("INVALID: {}: {e}", dir.display())))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = std::fs::File::open(&path)
            .map_err(|e| Failure(format!("INVALID: {name}: cannot be read: {e}")))?;
        files.push((name, BufReader::with_capacity(1 << 20, file)));
    }
    let started = std::time::Instant::now();
    let report = tokenledger_events::export::verify_bundle(
        files
            .into_iter()
            .map(|(name, reader)| tokenledger_events::export::BundleFile::new(&name, reader))
            .collect(),
        keys,
    );
    for failure in &report.failures {
        say!("INVALID: {}", crate::text::escape(&failure.to_string()));
    }
    say!("{}", crate::text::escape(&report.summary()));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "checked in {secs:.2} s ({:.0} events/s)",
        report.valid_events as f64 / secs.max(1e-9)
    );
    Ok(report.is_valid())
}

pub fn parse_keys(raw: &[String]) -> Result<Vec<VerifierKey>, Failure> {
    raw.iter().map(|k| vkey(k).map_err(Failure)).collect()
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match out {
        Some(path) => {
            std::fs::write(path, bytes).map_err(|e| Failure(format!("{}: {e}", path.display())))
        }
        None => {
            say!("{}", String::from_utf8_lossy(bytes).trim_end());
            Ok(())
        }
    }
}

pub async fn run_prove(
    services: &Services,
    position: u64,
    out: Option<&Path>,
) -> Result<(), Failure> {
    let proof = prove(services, position)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    eprintln!(
        "inclusion proof of position {position}: {} bytes",
        proof.len()
    );
    write_out(out, &proof)
}

pub async fn run_consistency(
    services: &Services,
    old: &Path,
    new: &Path,
    out: Option<&Path>,
) -> Result<(), Failure> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Failure(format!("{}: {e}", p.display())));
    let proof = consistency(services, &read(old)?, &read(new)?)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    write_out(out, &proof)
}

/// Check a proof file (an inclusion proof or a consistency proof) offline.
pub fn run_verify_proof(file: &Path, keys: &[VerifierKey]) -> Result<bool, Failure> {
    let bytes =
        std::fs::read(file).map_err(|e| Failure(format!("INVALID: {}: {e}", file.display())))?;
    let consistency = bytes
        .windows(b"tokenledger-consistency/".len())
        .take(64)
        .any(|w| w == b"tokenledger-consistency/");
    let outcome = if consistency {
        tokenledger_events::proof::verify_consistency_file(&bytes, keys).map(|c| {
            format!(
                "valid: the checkpoint at size {} extends the one at size {} ({})",
                c.newer.size(),
                c.older.size(),
                c.newer.origin()
            )
        })
    } else {
        tokenledger_events::proof::verify_proof(&bytes, keys)
            .map(|p| format!("valid: {}", p.summary()))
    };
    match outcome {
        Ok(line) => {
            say!("{}", crate::text::escape(&line));
            Ok(true)
        }
        Err(e) => {
            say!(
                "INVALID: {}: {}",
                file.display(),
                crate::text::escape(&e.to_string())
            );
            Ok(false)
        }
    }
}
