//! The real binary: `migrate`, `verify`, and refusing to serve a log that does not verify.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenledger::app::Application;
use tokenledger::config::ServeConfig;

use crate::helpers::*;
use crate::log_contract::{Harness, Postgres, RawSql, Sqlite, seed};

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_status_lists_pending_then_applied() {
    let db = SqliteDb::new();
    let out = tokenledger(&db.url_string(), &["migrate", "--status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("0001_event_log") && stdout.contains("pending"),
        "{stdout}"
    );

    let out = tokenledger(&db.url_string(), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = tokenledger(&db.url_string(), &["migrate", "--status"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("0001_event_log") && stdout.contains("applied"),
        "{stdout}"
    );
    assert!(!stdout.contains("pending"), "{stdout}");
}

#[tokio::test]
async fn verify_prints_the_event_count_and_head() {
    let h = Sqlite::start("verify").await.expect("sqlite");
    seed(&*h.nodes()[0], 4).await;
    let head = {
        use tokenledger_events::EventLog;
        h.nodes()[0].head().await.expect("head")
    };
    let out = tokenledger(&h.db.url_string(), &["verify"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("ok: 4 events, head {}", head.hash));
}

async fn verify_names_the_bad_position<H: RawSql>(h: H, url: &str) {
    seed(&*h.nodes()[0], 6).await;
    h.tamper(2).await;
    let out = tokenledger(url, &["verify"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("ok:"), "{stdout}");
    assert!(
        stderr.contains("does not verify: position 2: stored hash does not match"),
        "{stderr}"
    );
}

#[tokio::test]
async fn verify_names_the_first_bad_position_on_sqlite() {
    let h = Sqlite::start("verify").await.expect("sqlite");
    let url = h.db.url_string();
    verify_names_the_bad_position(h, &url).await;
}

#[tokio::test]
async fn verify_names_the_first_bad_position_on_postgres() {
    let Some(h) = Postgres::start("verify_names_the_first_bad_position_on_postgres").await else {
        return;
    };
    let url = h.db.url_string.clone();
    verify_names_the_bad_position(h, &url).await;
}

#[test]
fn a_malformed_database_url_is_named_with_what_is_accepted() {
    for bad in ["mysql://root@localhost/db", "tokenledger.db", "postgres://"] {
        let out = tokenledger(bad, &["verify"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{bad}: {stderr}");
        assert!(stderr.contains("accepted: sqlite://"), "{bad}: {stderr}");
    }
}

#[test]
fn an_unreachable_database_is_named_and_nothing_starts() {
    let out = tokenledger(
        "postgres://postgres:s3cret@127.0.0.1:1/tokenledger",
        &["serve", "--bind", "127.0.0.1:0"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot reach the database at postgres://postgres:***@127.0.0.1:1/tokenledger"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password never reaches output: {stderr}"
    );
}

/// Run `tokenledger serve` and wait for it to exit on its own; a server that starts is killed
/// and fails the test.
fn serve_expecting_exit(url: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running on a log whose head does not verify");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_refuses_a_log_whose_head_does_not_verify() {
    let h = Sqlite::start("serve").await.expect("sqlite");
    seed(&*h.nodes()[0], 3).await;
    h.tamper(3).await;
    let url = h.db.url_string();
    let (code, stderr) = tokio::task::spawn_blocking(move || serve_expecting_exit(&url))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not verify: position 3"), "{stderr}");
}

#[tokio::test]
async fn serve_answers_health_and_readiness_on_a_verified_log() {
    let db = SqliteDb::new();
    let app = Application::build(&ServeConfig::local(db.url.clone()))
        .await
        .expect("build");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
}
