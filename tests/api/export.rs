//! Compliance exports end to end: the README's flow with the real binary (make a key, record
//! events, export a range, verify it offline with only the verifier key), tampering named by
//! file and position, proofs of one event, and the export on both backends.

use std::path::Path;

use tokenledger::app::export::{ExportRequest, export};
use tokenledger_events::{Timestamp, VerifierKey};

use crate::helpers::{SqliteDb, TestDb, spawn_app, stderr, stdout, tokenledger};

const ORIGIN: &str = "tokens.example.com/log";

/// The binary with the test origin, and no database for the offline commands.
fn offline(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run tokenledger")
}

fn with_origin<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--log-origin", ORIGIN]);
    all
}

#[test]
fn a_compliance_export_verifies_offline_and_names_every_change() {
    let db = SqliteDb::new();
    let url = db.url_string();
    let out = tokenledger(&url, &with_origin(&["keys", "init"]));
    assert!(out.status.success(), "{out:?}");
    let vkey = stdout(&out).trim().to_owned();
    for i in 0..6 {
        let out = tokenledger(
            &url,
            &[
                "token",
                "create",
                "--name",
                &format!("ci-{i}"),
                "--scope",
                "console:exec",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let bundle = db.dir.path().join("bundle");
    let to = bundle.to_str().expect("utf-8 path");
    let out = tokenledger(
        &url,
        &with_origin(&[
            "export",
            "--to",
            to,
            "--from-position",
            "2",
            "--format",
            "native,ocsf,csv",
            "--with-openings",
            "--quiet",
        ]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("exported positions 2..6 (5 events)"),
        "{}",
        stderr(&out)
    );
    let mut names: Vec<String> = std::fs::read_dir(&bundle)
        .expect("bundle")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit.csv",
            "checkpoint",
            "events.jsonl",
            "manifest",
            "ocsf.jsonl",
            "openings.jsonl"
        ]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(bundle.join("openings.jsonl"))
            .expect("openings")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "openings are secret");

    // Another machine: no database, only the directory and the verifier key.
    let out = offline(&["verify-export", to, "--key", &vkey]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "5 events valid, 0 invalid, range 2..6, signed by {}",
            vkey.splitn(3, '+').take(2).collect::<Vec<_>>().join("+")
        )
    );

    // One changed byte in the middle of an event line is named by file and position.
    let tampered = db.dir.path().join("tampered");
    copy_dir(&bundle, &tampered);
    let events = tampered.join("events.jsonl");
    let text = std::fs::read_to_string(&events).expect("events");
    let line4 = text.lines().nth(2).expect("position 4");
    assert!(line4.starts_with("{\"position\":4,"), "{line4}");
    let forged = line4.replacen("\"stream_version\":1", "\"stream_version\":7", 1);
    assert_ne!(forged, line4);
    std::fs::write(&events, text.replacen(line4, &forged, 1)).expect("write");
    let out = offline(&[
        "verify-export",
        tampered.to_str().expect("path"),
        "--key",
        &vkey,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = stdout(&out);
    assert!(
        printed.contains("INVALID: events.jsonl position 4:"),
        "{printed}"
    );
    assert!(
        printed.contains("INVALID: events.jsonl: SHA-256"),
        "{printed}"
    );

    // A key that did not sign it, an empty directory, garbage: a clear line and exit 1.
    let other = VerifierKey::new("tokens.example.com/log", &[9u8; 32])
        .map(|k| k.to_string())
        .unwrap_or_else(|_| {
            "tokens.example.com/log+00000000+AQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=".into()
        });
    let empty = db.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    let garbage = db.dir.path().join("garbage");
    std::fs::create_dir(&garbage).expect("dir");
    std::fs::write(garbage.join("manifest"), b"\x00\xff not a manifest").expect("write");
    for (dir, key) in [
        (to, other.as_str()),
        (empty.to_str().expect("path"), vkey.as_str()),
        (garbage.to_str().expect("path"), vkey.as_str()),
        ("/nonexistent/bundle", vkey.as_str()),
    ] {
        let out = offline(&["verify-export", dir, "--key", key]);
        assert_eq!(out.status.code(), Some(1), "{dir}: {out:?}");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains("INVALID"), "{dir}: {all}");
        assert!(!all.contains("panicked"), "{dir}: {all}");
    }

    // An export into a directory that is not empty is refused, and --force replaces it.
    let out = tokenledger(&url, &with_origin(&["export", "--to", to, "--quiet"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = tokenledger(
        &url,
        &with_origin(&["export", "--to", to, "--quiet", "--force"]),
    );
    assert!(out.status.success(), "{out:?}");
    let out = offline(&["verify-export", to, "--key", &vkey]);
    assert!(
        stdout(&out).contains("6 events valid, 0 invalid, range 1..6"),
        "{}",
        stdout(&out)
    );

    // One event proven on its own, in a small file.
    let proof = db.dir.path().join("p3.json");
    let out = tokenledger(
        &url,
        &with_origin(&["prove", "3", "--out", proof.to_str().expect("path")]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::metadata(&proof).expect("proof").len() < 2048);
    let out = offline(&[
        "verify-proof",
        proof.to_str().expect("path"),
        "--key",
        &vkey,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("position 3 of"), "{}", stdout(&out));
    let mut bytes = std::fs::read(&proof).expect("proof");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&proof, &bytes).expect("write");
    let out = offline(&[
        "verify-proof",
        proof.to_str().expect("path"),
        "--key",
        &vkey,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).starts_with("INVALID:"), "{}", stdout(&out));
}

#[test]
fn export_refuses_a_range_past_the_head_and_without_a_key() {
    let db = SqliteDb::new();
    let url = db.url_string();
    tokenledger(
        &url,
        &["token", "create", "--name", "a", "--scope", "logs:read"],
    );
    let to = db.dir.path().join("b");
    let out = tokenledger(
        &url,
        &with_origin(&["export", "--to", to.to_str().expect("path")]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("keys init"), "{}", stderr(&out));
    tokenledger(&url, &with_origin(&["keys", "init"]));
    let out = tokenledger(
        &url,
        &with_origin(&[
            "export",
            "--to",
            to.to_str().expect("path"),
            "--to-position",
            "9",
        ]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("past the log's head, position 1"),
        "{}",
        stderr(&out)
    );
    assert!(!to.exists(), "nothing is left behind");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

async fn an_export_of_the_last_day_verifies_on_either_backend(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create("old", &["console:exec"], None).await;
    app.clock
        .advance(std::time::Duration::from_secs(3 * 86_400));
    let since = app.now();
    for i in 0..3 {
        app.create(&format!("new-{i}"), &["console:exec"], None)
            .await;
    }
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("day");
    let done = export(
        app_services(&app),
        &ExportRequest {
            dir: target.clone(),
            since: Some((since, "1d".into())),
            ocsf_version: "1.8.0".into(),
            ..ExportRequest::default()
        },
        Timestamp::from_micros(0),
        &|_| {},
    )
    .await
    .expect("export");
    assert_eq!((done.first, done.last), (2, 4));
    let keys = app.checkpointer().keys().verifier_keys();
    let files: Vec<_> = std::fs::read_dir(&target)
        .expect("bundle")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::io::BufReader::new(std::fs::File::open(e.path()).expect("open")),
            )
        })
        .collect();
    let report = tokenledger_events::export::verify_bundle(
        files
            .into_iter()
            .map(|(n, r)| tokenledger_events::export::BundleFile::new(&n, r))
            .collect(),
        &keys,
    );
    assert!(report.is_valid(), "{:?}", report.failures);
    assert!(
        report.summary().starts_with("3 events valid"),
        "{}",
        report.summary()
    );
    app.stop().await;
}

fn app_services(app: &crate::helpers::TestApp) -> &tokenledger::app::Services {
    app.services()
}

crate::on_both_backends!(an_export_of_the_last_day_verifies_on_either_backend);
