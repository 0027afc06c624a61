//! Signed checkpoints: the service signs the tree's root with the log's keys, stores and serves
//! the latest one, and never signs a tree that does not extend what it signed before. The
//! keys CLI makes, shows and rotates the keys a verifier needs.

use axum::http::HeaderMap;
use sqlx::Connection as _;
use tokenledger_events::{EventLog as _, SignedCheckpoint, VerifierKey};

use crate::helpers::{TestDb, spawn_app, stderr, stdout, tokenledger};

fn published(app: &crate::helpers::TestApp) -> Vec<VerifierKey> {
    app.checkpointer().keys().verifier_keys()
}

async fn latest_served(app: &crate::helpers::TestApp) -> (u16, String) {
    let (status, text, _) = app
        .send_text(
            reqwest::Method::GET,
            "/v1/checkpoint",
            HeaderMap::new(),
            None,
        )
        .await;
    (status.as_u16(), text)
}

async fn the_latest_checkpoint_is_signed_served_and_extends_the_one_before(db: TestDb) {
    let app = spawn_app(&db).await;
    let (status, body) = latest_served(&app).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No checkpoint has been signed yet"), "{body}");

    for i in 0..3 {
        app.create(&format!("ci-{i}"), &["console:exec"], None)
            .await;
    }
    let first = app
        .checkpointer()
        .sign_head()
        .await
        .expect("sign")
        .expect("a checkpoint");
    assert_eq!(first.size, 3);
    let (status, note) = latest_served(&app).await;
    assert_eq!(status, 200);
    assert_eq!(note, first.note);
    // A monitor holding only the published key checks it, and its root is the tree's.
    let signed = SignedCheckpoint::open(note.as_bytes(), &published(&app)).expect("verifies");
    let origin = app.checkpointer().keys().origin().to_owned();
    assert_eq!(signed.checkpoint().origin(), origin);
    assert_eq!(signed.checkpoint().size(), 3);
    assert_eq!(signed.checkpoint().root(), first.root);

    app.create("ci-3", &["console:exec"], None).await;
    let second = app
        .checkpointer()
        .sign_head()
        .await
        .expect("sign")
        .expect("a checkpoint");
    assert_eq!(second.size, 4);
    let newer = SignedCheckpoint::open(second.note.as_bytes(), &published(&app)).expect("verifies");
    newer
        .checkpoint()
        .verify_extends(
            signed.checkpoint(),
            &tokenledger::store::Store::open(&db.url())
                .await
                .expect("open")
                .consistency_proof(3, 4)
                .await
                .expect("proof"),
        )
        .expect("the newer checkpoint extends the older");
    let listed = app.queries().checkpoints(10).await.expect("list");
    assert_eq!(
        listed.iter().map(|c| c.size).collect::<Vec<_>>(),
        [4, 3],
        "newest first"
    );
    // The same head again signs nothing new.
    let again = app
        .checkpointer()
        .sign_head()
        .await
        .expect("sign")
        .expect("cp");
    assert_eq!(again, second);
    assert_eq!(app.queries().checkpoints(10).await.expect("list").len(), 2);
    app.stop().await;
}

async fn a_tree_that_does_not_extend_the_signed_checkpoint_is_not_signed(db: TestDb) {
    let app = spawn_app(&db).await;
    for i in 0..4 {
        app.create(&format!("t-{i}"), &["logs:read"], None).await;
    }
    // A checkpoint at size 2 whose root is not the log's: as if the stored history had been
    // rewritten after it was signed.
    let forged =
        "INSERT INTO checkpoints (size, root, note, signed_at) VALUES (2, $1, 'forged', 0)";
    let root = vec![7u8; 32];
    match &db {
        TestDb::Sqlite(d) => {
            let mut c = sqlx::SqliteConnection::connect(&d.url_string())
                .await
                .expect("connect");
            sqlx::query(forged)
                .bind(&root)
                .execute(&mut c)
                .await
                .expect("insert");
        }
        TestDb::Postgres(d) => {
            let mut c = d.connect().await;
            sqlx::query(forged)
                .bind(&root)
                .execute(&mut c)
                .await
                .expect("insert");
        }
    }

    let refused = app.checkpointer().sign_head().await.expect_err("refused");

    let text = refused.to_string();
    assert!(text.contains("not consistent"), "{text}");
    assert!(text.contains("size 2"), "{text}");
    let sizes: Vec<u64> = app
        .queries()
        .checkpoints(10)
        .await
        .expect("list")
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, [2], "nothing new was signed");
    app.stop().await;
}

async fn a_clean_stop_signs_the_head(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create("svc", &["tokens:verify"], None).await;
    app.create("svc-2", &["tokens:verify"], None).await;
    let keys = published(&app);
    let url = db.url();
    app.stop().await;

    let store = tokenledger::store::Store::open(&url).await.expect("open");
    let latest = store.signed_checkpoints(1).await.expect("list");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].size, store.head().await.expect("head").position);
    SignedCheckpoint::open(latest[0].note.as_bytes(), &keys).expect("verifies");
}

crate::on_both_backends!(
    the_latest_checkpoint_is_signed_served_and_extends_the_one_before,
    a_tree_that_does_not_extend_the_signed_checkpoint_is_not_signed,
    a_clean_stop_signs_the_head,
);

#[test]
fn the_keys_cli_makes_shows_and_rotates_the_key_a_verifier_needs() {
    let db = crate::helpers::SqliteDb::new();
    let url = db.url_string();
    let key_file = db.dir.path().join("log.db.signing-key");

    let out = tokenledger(&url, &["keys", "show"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("keys init"), "{}", stderr(&out));

    let out = tokenledger(
        &url,
        &["keys", "init", "--log-origin", "tokens.example.com/log"],
    );
    assert!(out.status.success(), "{out:?}");
    let first = stdout(&out).trim().to_owned();
    assert!(first.starts_with("tokens.example.com/log+"), "{first}");
    VerifierKey::parse(&first).expect("a C2SP verifier key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&key_file).expect("read");

    let out = tokenledger(
        &url,
        &["keys", "init", "--log-origin", "tokens.example.com/log"],
    );
    assert_eq!(out.status.code(), Some(1), "a second init is refused");
    assert_eq!(std::fs::read_to_string(&key_file).expect("read"), secret);

    let out = tokenledger(
        &url,
        &["keys", "show", "--log-origin", "tokens.example.com/log"],
    );
    assert_eq!(stdout(&out).trim(), first);

    let out = tokenledger(
        &url,
        &["keys", "rotate", "--log-origin", "tokens.example.com/log"],
    );
    assert!(out.status.success(), "{out:?}");
    let both: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], first);

    // A key made for another origin is not used for this one.
    let out = tokenledger(&url, &["keys", "show", "--log-origin", "other.example/log"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("LOG_ORIGIN"), "{}", stderr(&out));

    // Both keys sign; a verifier with either accepts.
    tokenledger(
        &url,
        &["token", "create", "--name", "ci", "--scope", "console:exec"],
    );
    let out = tokenledger(
        &url,
        &[
            "checkpoints",
            "--sign",
            "--log-origin",
            "tokens.example.com/log",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    assert!(listed.trim_start().starts_with("1 "), "{listed}");
    for vkey in &both {
        assert!(listed.contains(&vkey.splitn(3, '+').take(2).collect::<Vec<_>>().join("+")));
    }
    for line in [stdout(&out), stderr(&out)] {
        let seed = secret.trim().splitn(5, '+').nth(4).expect("key");
        assert!(!line.contains(seed), "the private key is never printed");
    }
}

#[test]
fn production_refuses_to_serve_without_a_signing_key() {
    let db = crate::helpers::SqliteDb::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", db.url_string())
        .env("APP_ENV", "production")
        .env_remove("LOG_SIGNING_KEY_FILE")
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("LOG_SIGNING_KEY_FILE"), "{err}");
    assert!(err.contains("keys init"), "{err}");
}
