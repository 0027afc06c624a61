//! Export bundles end to end: a small sealed log written as a `tokenledger-export/v1` bundle
//! (events, openings, checkpoint, OCSF, CSV, signed manifest), verified offline, and tampered
//! with in every way the tamper matrix lists. Proof files likewise.

use std::collections::HashMap;

use tokenledger_events::chain::field_commitment;
use tokenledger_events::checkpoint::{Checkpoint, SignedCheckpoint};
use tokenledger_events::export::{
    AUDIT_CSV, BundleFile, BundleReport, CHECKPOINT, EVENTS, EventsWriter, ExportStart, FileDigest,
    HashingWriter, MANIFEST, Manifest, ManifestError, OCSF, OPENINGS, OpeningsWriter,
    checkpoint_file, verify_bundle,
};
use tokenledger_events::log::{ExpectedVersion, NewEvent, Sealer, StreamAppend};
use tokenledger_events::merkle::{self, RightEdge};
use tokenledger_events::note::{NoteSigner, VerifierKey};
use tokenledger_events::proof::{
    ProofError, consistency_file, proof_file, verify_consistency_file, verify_proof,
};
use tokenledger_events::{
    DenyReason, Environment, Hash, Head, LogId, Opening, StoredEvent, StreamId, Timestamp,
    TokenCreated, TokenEvent, TokenLeakReported, TokenRevoked, TokenRotated, TokenUseDenied,
    TokenUseDeniedSummary, TokenUsed,
};
use tokenledger_projections::ocsf::{OcsfOptions, missing_required, ocsf_record};
use tokenledger_projections::{audit_row, write_csv_header, write_csv_row, write_ocsf_line};
use uuid::Uuid;

const ORIGIN: &str = "tokenledger.example/log";
const LOG: LogId = LogId(Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210));
const OLD: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa);
const NEW: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00bb);

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[0x5a; 32]).expect("signer")
}

fn stranger() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[0x11; 32]).expect("signer")
}

fn keys() -> Vec<VerifierKey> {
    vec![signer().verifier_key()]
}

fn opening(n: u8) -> Opening {
    Opening {
        field: TokenCreated::SECRET_FIELD.to_owned(),
        salt: [0xa0 + n; 32],
        value: vec![0xd0 + n; 32],
    }
}

fn created(token_id: Uuid, n: u8, rotated_from: Option<Uuid>) -> (TokenEvent, Vec<Opening>) {
    let o = opening(n);
    let event = TokenEvent::Created(TokenCreated {
        token_id,
        name: format!("=deploy, \"bot\" {n}"),
        scopes: vec!["console:exec".to_owned(), "logs:read".to_owned()],
        environment: Environment::Test,
        expires_at: Timestamp::from_micros(1_800_000_000_000_000),
        created_by: "admin:alice".to_owned(),
        secret_commitment: field_commitment(&o.field, &o.salt, &o.value),
        rotated_from,
        allowed_ips: Vec::new(),
    });
    (event, vec![o])
}

/// Nine events of every kind over two tokens, sealed as the log seals them, and the tree's
/// stored hashes.
fn log() -> (Vec<StoredEvent>, Vec<Hash>) {
    let old = StreamId::for_token(OLD);
    let new = StreamId::for_token(NEW);
    let used = |command: Option<&str>, ip: Option<&str>| {
        (
            TokenEvent::Used(TokenUsed {
                ip: ip.map(str::to_owned),
                method: "POST".to_owned(),
                path: "/api/admin/console".to_owned(),
                command: command.map(str::to_owned),
                user_agent: Some("curl/8.0\u{1b}[2J".to_owned()),
            }),
            Vec::new(),
        )
    };
    let script: Vec<(&StreamId, (TokenEvent, Vec<Opening>))> = vec![
        (&old, created(OLD, 1, None)),
        (&old, used(None, Some("203.0.113.7"))),
        (&old, used(Some("db:health"), None)),
        (
            &old,
            (
                TokenEvent::UseDenied(TokenUseDenied {
                    reason: DenyReason::InsufficientScope,
                    ip: Some("203.0.113.9".to_owned()),
                    path: "/api/admin/console".to_owned(),
                }),
                Vec::new(),
            ),
        ),
        (
            &old,
            (
                TokenEvent::UseDeniedSummary(TokenUseDeniedSummary {
                    reason: DenyReason::InsufficientScope,
                    ip: None,
                    path: "/v1/verify".to_owned(),
                    count: 41,
                    first_at: Timestamp::from_micros(1_700_000_000_000_000),
                    last_at: Timestamp::from_micros(1_700_000_050_000_000),
                    window_secs: 60,
                }),
                Vec::new(),
            ),
        ),
        (
            &old,
            (
                TokenEvent::Rotated(TokenRotated {
                    successor_id: NEW,
                    old_expires_at: Timestamp::from_micros(1_700_000_100_000_000),
                    until_successor_used: false,
                }),
                Vec::new(),
            ),
        ),
        (&new, created(NEW, 2, Some(OLD))),
        (
            &old,
            (
                TokenEvent::Revoked(TokenRevoked {
                    actor: "admin:bob".to_owned(),
                    reason: Some("leaked, in a CI log".to_owned()),
                }),
                Vec::new(),
            ),
        ),
        (&new, used(Some("events:verify"), Some("2001:db8::1"))),
        (
            &old,
            (
                TokenEvent::LeakReported(TokenLeakReported {
                    url: Some("https://github.com/o/r/blob/1/.env\u{1b}[2J".to_owned()),
                    source: Some("content".to_owned()),
                    token_type: Some("tokenledger_api_token".to_owned()),
                    reporter: "github".to_owned(),
                }),
                Vec::new(),
            ),
        ),
    ];
    let mut sealer = Sealer::new(LOG, Head::GENESIS);
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut events = Vec::new();
    for (i, (stream, (event, openings))) in script.into_iter().enumerate() {
        let version = versions.entry(stream.clone()).or_default();
        let append = StreamAppend {
            stream_id: stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: Uuid::from_u128(0x1000 + i as u128),
                recorded_at: Timestamp::from_micros(1_700_000_000_000_000 + i as i64 * 1_000_123),
                actor: "admin:alice".to_owned(),
                event,
                openings,
            }],
        };
        let sealed = sealer.seal(&append, *version).expect("seal");
        *version += 1;
        events.extend(sealed);
    }
    let mut edge = RightEdge::new();
    let mut stored = Vec::new();
    for event in &events {
        stored.extend(
            edge.append(&merkle::leaf_hash(&event.bytes))
                .expect("append")
                .hashes,
        );
    }
    (events, stored)
}

fn signed_checkpoint(stored: &[Hash], size: u64, key: &NoteSigner) -> SignedCheckpoint {
    let root = merkle::tree_root(size, stored).expect("root");
    SignedCheckpoint::sign(
        Checkpoint::new(ORIGIN, size, root).expect("checkpoint"),
        key,
    )
    .expect("sign")
}

type Files = Vec<(String, Vec<u8>)>;

struct Options {
    first: u64,
    last: u64,
    openings: bool,
    checkpoint_key: NoteSigner,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            first: 1,
            last: 9,
            openings: true,
            checkpoint_key: signer(),
        }
    }
}

/// Write a bundle the way the service does, through the public writer API, into memory.
fn bundle(options: Options) -> Files {
    let (events, stored) = log();
    let Options {
        first,
        last,
        openings,
        checkpoint_key,
    } = options;
    let start = ExportStart {
        log_id: LOG,
        first,
        last,
        prev_hash: if first == 1 {
            Hash::ZERO
        } else {
            events[first as usize - 2].hash
        },
        left_edge: RightEdge::load(first - 1, &stored).expect("edge"),
    };
    let mut writer = EventsWriter::new(Vec::new(), start).expect("writer");
    let mut openings_out = OpeningsWriter::new(Vec::new());
    let mut ocsf_out = HashingWriter::new(OCSF, Vec::new());
    let mut csv_out = HashingWriter::new(AUDIT_CSV, Vec::new());
    write_csv_header(&mut csv_out).expect("csv");
    let mut scopes: HashMap<StreamId, Vec<String>> = HashMap::new();
    for event in &events[first as usize - 1..last as usize] {
        writer.write_event(event).expect("write");
        openings_out.write_event_openings(event).expect("openings");
        let decoded = event.decode().expect("decodes");
        if let TokenEvent::Created(c) = &decoded {
            scopes.insert(event.stream_id.clone(), c.scopes.clone());
        }
        let record = ocsf_record(event, &decoded, &OcsfOptions::default()).expect("record");
        write_ocsf_line(&mut ocsf_out, &record).expect("ocsf");
        let token_scopes = scopes.get(&event.stream_id).cloned().unwrap_or_default();
        let row = audit_row(event, &decoded, &token_scopes).expect("row");
        write_csv_row(&mut csv_out, &row).expect("csv");
    }
    let (events_bytes, summary) = writer.finish().expect("finish");
    let (openings_bytes, openings_digest) = openings_out.finish().expect("openings");
    let (ocsf_bytes, ocsf_digest) = ocsf_out.finish().expect("ocsf");
    let (csv_bytes, csv_digest) = csv_out.finish().expect("csv");
    let checkpoint = signed_checkpoint(&stored, last, &checkpoint_key);
    let (checkpoint_bytes, checkpoint_digest) = checkpoint_file(&checkpoint);
    let mut digests = vec![checkpoint_digest, ocsf_digest, csv_digest];
    let mut files = vec![
        (CHECKPOINT.to_owned(), checkpoint_bytes),
        (EVENTS.to_owned(), events_bytes),
        (OCSF.to_owned(), ocsf_bytes),
        (AUDIT_CSV.to_owned(), csv_bytes),
    ];
    if openings {
        digests.push(openings_digest);
        files.push((OPENINGS.to_owned(), openings_bytes));
    }
    let manifest = Manifest::new(
        &summary,
        &checkpoint,
        Timestamp::from_micros(1_760_000_000_123_456),
        Some("2023-11-14"),
        None,
        digests,
    )
    .expect("manifest");
    assert_eq!(Manifest::parse(&manifest.to_text()), Ok(manifest.clone()));
    files.push((
        MANIFEST.to_owned(),
        manifest.sign(&signer()).expect("sign").into_bytes(),
    ));
    files
}

fn verify_with(files: &Files, keys: &[VerifierKey]) -> BundleReport {
    verify_bundle(
        files
            .iter()
            .map(|(name, bytes)| BundleFile::new(name, bytes.as_slice()))
            .collect(),
        keys,
    )
}

fn verify(files: &Files) -> BundleReport {
    verify_with(files, &keys())
}

fn file<'a>(files: &'a mut Files, name: &str) -> &'a mut Vec<u8> {
    &mut files
        .iter_mut()
        .find(|(n, _)| n == name)
        .expect("the file")
        .1
}

/// The bundle's manifest rebuilt with `edit` applied to its text and signed again with the
/// log's key: what an insider holding the key could write, so the checks behind the hashes are
/// exercised.
fn resign(files: &mut Files, edit: impl FnOnce(&mut Manifest)) {
    let text = String::from_utf8(file(files, MANIFEST).clone()).expect("utf-8");
    let body = &text[..text.rfind("\n\n").expect("signed") + 1];
    let mut manifest = Manifest::parse(body).expect("parses");
    edit(&mut manifest);
    *file(files, MANIFEST) = manifest.sign(&signer()).expect("sign").into_bytes();
}

/// Replace a file and list its new digest in a re-signed manifest.
fn replace_and_resign(files: &mut Files, name: &str, bytes: Vec<u8>) {
    let digest = FileDigest::of(name, &bytes);
    *file(files, name) = bytes;
    resign(files, |m| {
        for f in &mut m.files {
            if f.name == digest.name {
                *f = digest.clone();
            }
        }
    });
}

fn problems(report: &BundleReport) -> Vec<String> {
    report.failures.iter().map(ToString::to_string).collect()
}

#[test]
fn a_written_bundle_verifies_and_says_so() {
    let files = bundle(Options::default());
    let report = verify(&files);
    assert!(report.is_valid(), "{:#?}", problems(&report));
    let key = signer().verifier_key();
    assert_eq!(
        report.summary(),
        format!(
            "9 events valid, 0 invalid, range 1..9, signed by {ORIGIN}+{:08x}",
            key.key_id()
        )
    );
    let manifest = String::from_utf8(file(&mut files.clone(), MANIFEST).clone()).unwrap();
    assert!(manifest.starts_with("tokenledger-export/v1\norigin tokenledger.example/log\n"));
    assert!(
        manifest.contains("\nformats events,openings,ocsf,csv\n"),
        "{manifest}"
    );
    assert!(manifest.contains("\nsince 2023-11-14\n"));
    assert!(manifest.contains("\nexported-at 2025-10-09T08:53:20.123456Z\n"));
}

#[test]
fn a_range_from_the_middle_verifies_from_its_left_edge_alone() {
    for first in 1..=9 {
        for last in first..=9 {
            let files = bundle(Options {
                first,
                last,
                ..Options::default()
            });
            let report = verify(&files);
            assert!(
                report.is_valid(),
                "{first}..={last}: {:#?}",
                problems(&report)
            );
            assert_eq!(report.valid_events, last - first + 1);
        }
    }
}

#[test]
fn an_event_line_holds_the_columns_in_order_and_the_bytes() {
    let files = bundle(Options::default());
    let events = String::from_utf8(files[1].1.clone()).unwrap();
    let first = events.lines().next().unwrap();
    assert!(
        first.starts_with(
            r#"{"position":1,"event_id":"00000000-0000-0000-0000-000000001000","stream_id":"token-01900000-0000-7000-8000-0000000000aa","stream_version":1,"recorded_at":"2023-11-14T22:13:20.000000Z","actor":"admin:alice","event_type":"TokenCreated","schema_version":2,"bytes":""#
        ),
        "{first}"
    );
    assert!(events.ends_with("\"}\n"));
    assert_eq!(events.lines().count(), 9);
}

#[derive(Default)]
struct Tally {
    tried: u64,
    detected: u64,
    undetected: Vec<String>,
}

impl Tally {
    fn check(&mut self, what: String, tampered: Files) {
        self.tried += 1;
        if verify(&tampered).is_valid() {
            self.undetected.push(what);
        } else {
            self.detected += 1;
        }
    }
}

/// Every single-byte change of every file, every line deleted or duplicated in every file,
/// and every reorder of two `events.jsonl` lines, must be reported.
#[test]
fn the_tamper_matrix_is_detected_in_full() {
    let files = bundle(Options {
        first: 3,
        ..Options::default()
    });
    assert!(verify(&files).is_valid());
    let mut tally = Tally::default();
    let mut per_kind: Vec<(&str, u64)> = Vec::new();
    let mut counted = 0;
    for (index, (name, bytes)) in files.iter().enumerate() {
        for (at, &original) in bytes.iter().enumerate() {
            let digit = if original == b'0' { b'1' } else { b'0' };
            for replacement in [original ^ 0x01, digit] {
                let mut tampered = files.clone();
                tampered[index].1[at] = replacement;
                tally.check(format!("{name} byte {at} -> {replacement:#04x}"), tampered);
            }
        }
    }
    per_kind.push(("single-byte changes", tally.tried - counted));
    counted = tally.tried;
    for (index, (name, bytes)) in files.iter().enumerate() {
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        for at in 0..lines.len() {
            let mut deleted = lines.clone();
            deleted.remove(at);
            let mut tampered = files.clone();
            tampered[index].1 = deleted.concat();
            tally.check(format!("{name} line {at} deleted"), tampered);

            let mut duplicated = lines.clone();
            duplicated.insert(at, lines[at]);
            let mut tampered = files.clone();
            tampered[index].1 = duplicated.concat();
            tally.check(format!("{name} line {at} duplicated"), tampered);
        }
    }
    per_kind.push(("line deletions and duplications", tally.tried - counted));
    counted = tally.tried;
    let events_index = files.iter().position(|(n, _)| n == EVENTS).unwrap();
    let lines: Vec<&[u8]> = files[events_index]
        .1
        .split_inclusive(|b| *b == b'\n')
        .collect();
    for a in 0..lines.len() {
        for b in a + 1..lines.len() {
            let mut swapped = lines.clone();
            swapped.swap(a, b);
            let mut tampered = files.clone();
            tampered[events_index].1 = swapped.concat();
            tally.check(format!("events.jsonl lines {a} and {b} swapped"), tampered);
        }
        let mut appended = lines.clone();
        appended.push(lines[a]);
        let mut tampered = files.clone();
        tampered[events_index].1 = appended.concat();
        tally.check(format!("events.jsonl line {a} appended again"), tampered);
    }
    per_kind.push((
        "events.jsonl reorders and re-appends",
        tally.tried - counted,
    ));
    // Whole files dropped or added.
    counted = tally.tried;
    for index in 0..files.len() {
        let mut tampered = files.clone();
        tampered.remove(index);
        tally.check(format!("file {} removed", files[index].0), tampered);
    }
    let mut tampered = files.clone();
    tampered.push(("notes.txt".to_owned(), b"hello\n".to_vec()));
    tally.check("an unlisted file added".to_owned(), tampered);
    per_kind.push(("files removed or added", tally.tried - counted));

    for (kind, count) in &per_kind {
        println!("tamper matrix: {count} {kind}");
    }
    let Tally {
        tried,
        detected,
        undetected,
    } = tally;
    println!("tamper matrix: {tried} cases tried, {detected} detected");
    assert!(undetected.is_empty(), "undetected: {undetected:#?}");
    assert_eq!(tried, detected);
    assert!(tried > 20_000, "{tried}");
}

#[test]
fn an_altered_event_under_a_resigned_manifest_is_named_at_its_position() {
    let mut files = bundle(Options::default());
    let events = String::from_utf8(file(&mut files, EVENTS).clone()).unwrap();
    let mut lines: Vec<String> = events.lines().map(str::to_owned).collect();
    // A column that disagrees with the bytes.
    lines[2] = lines[2].replacen(
        "\"actor\":\"admin:alice\"",
        "\"actor\":\"admin:mallory\"",
        1,
    );
    // Bytes altered: one character of the base64 changed to another valid one.
    let at = lines[4].find("\"bytes\":\"").unwrap() + 20;
    let c = lines[4].as_bytes()[at];
    lines[4].replace_range(at..=at, if c == b'A' { "B" } else { "A" });
    let tampered = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    replace_and_resign(&mut files, EVENTS, tampered.into_bytes());

    let report = verify(&files);
    let found = problems(&report);
    assert!(
        found.contains(
            &"events.jsonl position 3: column actor disagrees with the decoded bytes".to_owned()
        ),
        "{found:#?}"
    );
    assert!(
        found.contains(&"events.jsonl position 5: chain hash does not recompute".to_owned()),
        "{found:#?}"
    );
    assert!(
        found.contains(&"events.jsonl: the tree root recomputed from the left edge and the events is not the checkpoint's root".to_owned()),
        "{found:#?}"
    );
    assert_eq!((report.valid_events, report.invalid_events), (7, 2));
    assert!(
        report
            .summary()
            .starts_with("7 events valid, 2 invalid, range 1..9")
    );
}

#[test]
fn a_truncated_range_is_reported_and_never_written() {
    let mut files = bundle(Options::default());
    let events = file(&mut files, EVENTS).clone();
    let kept: Vec<&[u8]> = events.split_inclusive(|b| *b == b'\n').take(7).collect();
    replace_and_resign(&mut files, EVENTS, kept.concat());
    let found = problems(&verify(&files));
    assert!(
        found.contains(&"events.jsonl position 8: positions 8..=9 are missing".to_owned()),
        "{found:#?}"
    );

    // The writer refuses to finish short of the range, or to sign a checkpoint of another size.
    let (events, stored) = log();
    let start = ExportStart {
        log_id: LOG,
        first: 1,
        last: 9,
        prev_hash: Hash::ZERO,
        left_edge: RightEdge::new(),
    };
    let mut writer = EventsWriter::new(Vec::new(), start.clone()).unwrap();
    for event in &events[..7] {
        writer.write_event(event).unwrap();
    }
    assert!(writer.finish().is_err());
    let mut writer = EventsWriter::new(Vec::new(), start).unwrap();
    assert!(writer.write_event(&events[1]).is_err(), "out of order");
    for event in &events[..9] {
        writer.write_event(event).unwrap();
    }
    let (_, summary) = writer.finish().unwrap();
    let short = signed_checkpoint(&stored, 8, &signer());
    assert!(
        Manifest::new(
            &summary,
            &short,
            Timestamp::from_micros(0),
            None,
            None,
            vec![]
        )
        .is_err()
    );
}

#[test]
fn a_checkpoint_signed_by_another_key_is_invalid() {
    let files = bundle(Options {
        checkpoint_key: stranger(),
        ..Options::default()
    });
    let found = problems(&verify(&files));
    assert!(
        found.contains(&"checkpoint: no signature on the note is by a known key".to_owned()),
        "{found:#?}"
    );
    // Trusting both keys, the checkpoint opens, but not by the manifest's key.
    let both = [signer().verifier_key(), stranger().verifier_key()];
    let found = problems(&verify_with(&files, &both));
    assert_eq!(
        found,
        vec!["checkpoint: the checkpoint and the manifest are not signed by the same key"]
    );
}

#[test]
fn a_manifest_with_a_wrong_file_hash_is_invalid() {
    let mut files = bundle(Options::default());
    resign(&mut files, |m| {
        m.files.iter_mut().find(|f| f.name == OCSF).unwrap().sha256[0] ^= 1;
    });
    assert_eq!(
        problems(&verify(&files)),
        vec!["ocsf.jsonl: SHA-256 does not match the manifest"]
    );
}

#[test]
fn a_wrong_verifier_key_trusts_nothing() {
    let files = bundle(Options::default());
    let report = verify_with(&files, &[stranger().verifier_key()]);
    assert!(!report.is_valid());
    assert_eq!(report.signed_by, None);
    let found = problems(&report);
    assert!(
        found.contains(
            &"manifest: signature: no signature on the note is by a known key".to_owned()
        )
    );
    assert!(found.contains(&"checkpoint: no signature on the note is by a known key".to_owned()));
    assert!(report.summary().ends_with("signed by no trusted key"));
}

#[test]
fn an_empty_bundle_garbage_and_another_version_are_clear_failures() {
    let report = verify(&Vec::new());
    assert_eq!(
        problems(&report),
        vec!["manifest: no manifest: this is not an export bundle, or it was not finished"]
    );
    assert!(!report.is_valid());

    let mut garbage: Files = vec![(
        MANIFEST.to_owned(),
        (0..=255u8).cycle().take(5000).collect(),
    )];
    assert!(!verify(&garbage).is_valid());
    garbage.push((EVENTS.to_owned(), b"\xff\x00{{{\n\n".to_vec()));
    assert!(!verify(&garbage).is_valid());

    let mut files = bundle(Options::default());
    let text = String::from_utf8(file(&mut files, MANIFEST).clone()).unwrap();
    let body = &text[..text.rfind("\n\n").unwrap() + 1];
    let v2 = body.replacen("tokenledger-export/v1", "tokenledger-export/v2", 1);
    let note = tokenledger_events::Note::sign(&v2, &signer()).unwrap();
    *file(&mut files, MANIFEST) = note.to_string().into_bytes();
    assert_eq!(
        problems(&verify(&files)),
        vec![
            "manifest: line 1 is \"tokenledger-export/v2\", not tokenledger-export/v1: another format or version"
        ]
    );

    // Garbage in each evidence file is reported, never a panic. (The derived views, OCSF and
    // CSV, are checked by their signed hashes only: re-signed garbage there passes.)
    for name in [CHECKPOINT, EVENTS, OPENINGS] {
        let mut files = bundle(Options::default());
        replace_and_resign(
            &mut files,
            name,
            b"\x00\xff garbage {\"position\":1}\n\n".to_vec(),
        );
        assert!(!verify(&files).is_valid(), "{name}");
    }
}

#[test]
fn listed_but_missing_and_present_but_unlisted_files_are_named() {
    let files = bundle(Options {
        openings: false,
        ..Options::default()
    });
    assert!(verify(&files).is_valid());
    let mut extra = files.clone();
    extra.push((OPENINGS.to_owned(), b"".to_vec()));
    assert_eq!(
        problems(&verify(&extra)),
        vec!["openings.jsonl: present but not listed in the manifest"]
    );
    let mut missing = files.clone();
    missing.retain(|(n, _)| n != AUDIT_CSV);
    assert_eq!(
        problems(&verify(&missing)),
        vec!["audit.csv: listed in the manifest but missing"]
    );
}

#[test]
fn openings_are_held_to_the_commitments_of_their_events() {
    let mut files = bundle(Options::default());
    let openings = String::from_utf8(file(&mut files, OPENINGS).clone()).unwrap();
    assert_eq!(openings.lines().count(), 2);
    assert!(openings.starts_with(&format!(
        "{{\"position\":1,\"field\":\"token_hash\",\"salt\":\"{}\",\"value\":\"{}\"}}\n",
        hex::encode([0xa1; 32]),
        hex::encode([0xd1; 32])
    )));
    let wrong = openings.replacen(&hex::encode([0xd1; 32]), &hex::encode([0xd2; 32]), 1);
    let missing: String = openings.lines().take(1).map(|l| format!("{l}\n")).collect();
    let cases = [
        (
            wrong,
            "openings.jsonl position 1: the opening of \"token_hash\" does not open the event's commitment",
        ),
        (
            missing,
            "openings.jsonl position 7: the event commits field \"token_hash\" and openings.jsonl has no opening for it",
        ),
    ];
    for (tampered, expected) in cases {
        let mut files = files.clone();
        replace_and_resign(&mut files, OPENINGS, tampered.into_bytes());
        assert_eq!(problems(&verify(&files)), vec![expected]);
    }
}

#[test]
fn the_manifest_parser_is_strict_and_names_the_line() {
    let files = bundle(Options::default());
    let text = String::from_utf8(files.last().unwrap().1.clone()).unwrap();
    let body = text[..text.rfind("\n\n").unwrap() + 1].to_owned();
    let manifest = Manifest::parse(&body).unwrap();
    assert_eq!(manifest.to_text(), body);
    let cases = [
        (
            body.replacen("range 1 9", "range 01 9", 1),
            ManifestError::BadValue {
                line: 4,
                key: "range",
                problem: "is not two positions <first> <last>, 1 <= first <= last",
            },
        ),
        (
            body.replacen("events 9", "events 8", 1),
            ManifestError::BadValue {
                line: 5,
                key: "events",
                problem: "is not the number of positions in the range",
            },
        ),
        (
            body.replacen("origin ", "origin: ", 1),
            ManifestError::Expected {
                line: 2,
                expected: "origin",
            },
        ),
        (
            format!("{body}extra line\n"),
            ManifestError::Trailing { line: 16 },
        ),
        (body.trim_end().to_owned(), ManifestError::Unterminated),
        (String::new(), ManifestError::Unterminated),
        (
            format!("{}\n", "x".repeat(5000)),
            ManifestError::LineTooLong { line: 1 },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(Manifest::parse(&text), Err(expected), "{text}");
    }
}

#[test]
fn every_ocsf_record_has_every_required_attribute_and_no_secret() {
    let (events, _) = log();
    let mut classes = Vec::new();
    for event in &events {
        let decoded = event.decode().unwrap();
        let record = ocsf_record(event, &decoded, &OcsfOptions::default()).unwrap();
        assert_eq!(missing_required(&record), Vec::<String>::new(), "{record}");
        let class = record["class_uid"].as_u64().unwrap();
        let activity = record["activity_id"].as_u64().unwrap();
        assert_eq!(record["type_uid"].as_u64().unwrap(), class * 100 + activity);
        assert_eq!(record["metadata"]["version"], "1.8.0");
        assert_eq!(record["metadata"]["product"]["name"], "tokenledger");
        assert_eq!(
            record["time"].as_i64().unwrap(),
            event.recorded_at.as_micros() / 1000
        );
        classes.push((
            event.event_type.clone(),
            class,
            activity,
            record["status_id"].as_u64().unwrap(),
        ));
        if let TokenEvent::Created(_) | TokenEvent::Rotated(_) | TokenEvent::Revoked(_) = decoded {
            assert_eq!(record["entity"]["type"], "api_token");
            assert_eq!(record["entity"]["type_id"], 99);
        }
        if let TokenEvent::UseDenied(_) = decoded {
            assert_eq!(record["status_detail"], "insufficient_scope");
        }
    }
    assert_eq!(
        classes,
        vec![
            ("TokenCreated".to_owned(), 3004, 1, 1),
            ("TokenUsed".to_owned(), 3002, 1, 1),
            ("TokenUsed".to_owned(), 6003, 2, 1),
            ("TokenUseDenied".to_owned(), 3002, 1, 2),
            ("TokenUseDeniedSummary".to_owned(), 3002, 1, 2),
            ("TokenRotated".to_owned(), 3004, 3, 1),
            ("TokenCreated".to_owned(), 3004, 1, 1),
            ("TokenRevoked".to_owned(), 3004, 4, 1),
            ("TokenUsed".to_owned(), 6003, 2, 1),
            ("TokenLeakReported".to_owned(), 3004, 99, 1),
        ]
    );
    let lagging = OcsfOptions {
        version: "1.1.0".to_owned(),
        ..OcsfOptions::default()
    };
    let record = ocsf_record(&events[0], &events[0].decode().unwrap(), &lagging).unwrap();
    assert_eq!(record["metadata"]["version"], "1.1.0");
    // A record without a required attribute is caught by the table.
    let mut broken = record.clone();
    broken.as_object_mut().unwrap().remove("entity");
    assert_eq!(
        missing_required(&broken),
        vec!["entity", "one of entity.uid, entity.name"]
    );

    // No secret, in any encoding the files use, in the derived views.
    let files = bundle(Options::default());
    let views: Vec<&[u8]> = files
        .iter()
        .filter(|(n, _)| n == OCSF || n == AUDIT_CSV)
        .map(|(_, b)| b.as_slice())
        .collect();
    for n in [1u8, 2] {
        let o = opening(n);
        let secrets = [
            hex::encode(o.salt),
            hex::encode(&o.value),
            hex::encode(o.commitment().0),
        ];
        for view in &views {
            let text = String::from_utf8_lossy(view);
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "{secret} in a view");
                assert!(!text.contains(&secret[..16]), "part of {secret} in a view");
            }
        }
    }
}

#[test]
fn the_csv_is_guarded_and_has_a_row_per_event() {
    let files = bundle(Options::default());
    let csv = String::from_utf8(
        files
            .iter()
            .find(|(n, _)| n == AUDIT_CSV)
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(rows.len(), 10);
    assert!(rows[0].starts_with("position,event_id,action,"));
    assert!(!csv.contains('\u{1b}'));
    assert!(rows[2].contains(r#"curl/8.0\u001b[2J"#), "{}", rows[2]);
    assert!(
        rows[1].contains(r#"""name"":""=deploy, \""bot\"" 1"""#),
        "{}",
        rows[1]
    );
    assert!(rows[8].contains("API_TOKEN_REVOKED"));
    // The log's tenth event, a leak report, with a control character in its URL.
    let whole = bundle(Options {
        last: 10,
        ..Options::default()
    });
    let csv = String::from_utf8(
        whole
            .iter()
            .find(|(n, _)| n == AUDIT_CSV)
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(rows.len(), 11);
    assert!(!csv.contains('\u{1b}'));
    assert!(rows[10].contains("API_TOKEN_LEAK_REPORTED"), "{}", rows[10]);
    assert!(rows[10].contains(r#"\u001b[2J"#), "{}", rows[10]);
}

#[test]
fn every_event_has_a_proof_that_verifies_and_no_changed_byte_does() {
    let (events, stored) = log();
    let size = events.len() as u64;
    let checkpoint = signed_checkpoint(&stored, size, &signer());
    let mut largest = 0;
    for (index, event) in events.iter().enumerate() {
        let path = merkle::inclusion_proof(index as u64, size, &stored).unwrap();
        let file = proof_file(&event.bytes, index as u64, &checkpoint, &path).unwrap();
        largest = largest.max(file.len() - path.len() * 47);
        let proven = verify_proof(&file, &keys()).expect("verifies");
        assert_eq!(proven.position, event.position);
        assert_eq!(proven.event, event.decode().unwrap());
        assert!(verify_proof(&file, &[stranger().verifier_key()]).is_err());
        if index == 7 {
            assert!(
                proven.summary().starts_with(&format!(
                    "token {OLD} revoked at 2023-11-14T22:13:27.000861Z by admin:alice: position 8 of 10 in {ORIGIN}, signed by {ORIGIN}+"
                )),
                "{}",
                proven.summary()
            );
            let mut tried = 0;
            for at in 0..file.len() {
                for replacement in [file[at] ^ 0x01, if file[at] == b'0' { b'1' } else { b'0' }] {
                    let mut tampered = file.clone();
                    tampered[at] = replacement;
                    tried += 1;
                    assert!(
                        verify_proof(&tampered, &keys()).is_err(),
                        "byte {at} -> {replacement}"
                    );
                }
            }
            println!(
                "proof file: {} bytes, {tried} byte changes all rejected",
                file.len()
            );
        }
    }
    // At a million events a path has 20 hashes of 47 bytes each in the file.
    println!("proof file at 1M events: about {} bytes", largest + 20 * 47);
    assert!(largest + 20 * 47 < 2048);
    // A path for another leaf is refused at writing.
    let path = merkle::inclusion_proof(1, size, &stored).unwrap();
    assert!(matches!(
        proof_file(&events[0].bytes, 0, &checkpoint, &path),
        Err(ProofError::Inclusion(_))
    ));
}

#[test]
fn a_consistency_file_shows_a_newer_checkpoint_extends_an_older_one() {
    let (_, stored) = log();
    let older = signed_checkpoint(&stored, 4, &signer());
    let newer = signed_checkpoint(&stored, 9, &signer());
    let proof = merkle::consistency_proof(4, 9, &stored).unwrap();
    let file = consistency_file(&older, &newer, &proof).unwrap();
    let proven = verify_consistency_file(&file, &keys()).unwrap();
    assert_eq!((proven.older.size(), proven.newer.size()), (4, 9));
    assert!(consistency_file(&newer, &older, &proof).is_err());
    assert!(verify_consistency_file(&file, &[stranger().verifier_key()]).is_err());
    for at in 0..file.len() {
        let mut tampered = file.clone();
        tampered[at] ^= 0x01;
        assert!(
            verify_consistency_file(&tampered, &keys()).is_err(),
            "byte {at}"
        );
    }
}

/// Throughput of the writer and the verifier, in release:
/// `cargo test --release -p tokenledger-projections --test export_bundle -- --ignored --nocapture`.
#[test]
#[ignore = "a timing run, for release builds"]
fn writing_and_verifying_200k_events_is_fast_enough() {
    const N: u64 = 200_000;
    let stream = StreamId::for_token(OLD);
    let mut sealer = Sealer::new(LOG, Head::GENESIS);
    let mut events = Vec::with_capacity(N as usize);
    for i in 0..N {
        let append = StreamAppend {
            stream_id: stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: Uuid::from_u128(u128::from(i) + 1),
                recorded_at: Timestamp::from_micros(1_700_000_000_000_000 + i as i64),
                actor: "token:01900000-0000-7000-8000-0000000000aa".to_owned(),
                event: TokenEvent::Used(TokenUsed {
                    ip: Some("203.0.113.7".to_owned()),
                    method: "POST".to_owned(),
                    path: "/v1/verify".to_owned(),
                    command: Some("tokens.verify".to_owned()),
                    user_agent: Some("ci-runner/2.3 (linux; x86_64)".to_owned()),
                }),
                openings: Vec::new(),
            }],
        };
        events.extend(sealer.seal(&append, i).expect("seal"));
    }
    let started = std::time::Instant::now();
    let start = ExportStart {
        log_id: LOG,
        first: 1,
        last: N,
        prev_hash: Hash::ZERO,
        left_edge: RightEdge::new(),
    };
    let mut writer = EventsWriter::new(Vec::new(), start).expect("writer");
    for event in &events {
        writer.write_event(event).expect("write");
    }
    let (events_bytes, summary) = writer.finish().expect("finish");
    let written = started.elapsed();
    let checkpoint = SignedCheckpoint::sign(
        Checkpoint::new(ORIGIN, N, summary.root).expect("checkpoint"),
        &signer(),
    )
    .expect("sign");
    let (checkpoint_bytes, checkpoint_digest) = checkpoint_file(&checkpoint);
    let manifest = Manifest::new(
        &summary,
        &checkpoint,
        Timestamp::from_micros(0),
        None,
        None,
        vec![checkpoint_digest],
    )
    .expect("manifest")
    .sign(&signer())
    .expect("sign");
    let started = std::time::Instant::now();
    let report = verify_bundle(
        vec![
            BundleFile::new(MANIFEST, manifest.as_bytes()),
            BundleFile::new(CHECKPOINT, checkpoint_bytes.as_slice()),
            BundleFile::new(EVENTS, events_bytes.as_slice()),
        ],
        &keys(),
    );
    let verified = started.elapsed();
    assert!(report.is_valid(), "{:#?}", problems(&report));
    println!(
        "{N} events, {} bytes: written in {written:?} ({:.0}/s), verified in {verified:?} ({:.0}/s)",
        events_bytes.len(),
        N as f64 / written.as_secs_f64(),
        N as f64 / verified.as_secs_f64()
    );
}
