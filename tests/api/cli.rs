//! The real binary: `migrate`, `verify`, and refusing to serve a log that does not verify.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// The summary lines of `verify` and `projections rebuild` on a log of one token's creation.
fn summaries(url: &str) -> (String, String) {
    let created = json_of(&tokenledger_with(
        url,
        &[],
        &[
            "token", "create", "--name", "bar", "--scope", "admin", "--json",
        ],
    ));
    assert!(created["id"].is_string(), "{created}");
    let verified = "ok: 1 events, head ".to_owned();
    let rebuilt =
        "rebuilt api_tokens and token_addresses from position 0 to 1: 1 tokens".to_owned();
    (verified, rebuilt)
}

#[test]
fn verify_and_rebuild_draw_no_progress_on_a_pipe_and_accept_quiet() {
    let db = SqliteDb::new();
    let url = db.url_string();
    let (verified, rebuilt) = summaries(&url);
    for args in [
        &["verify"][..],
        &["verify", "--quiet"],
        &["projections", "rebuild"],
        &["projections", "rebuild", "--quiet"],
    ] {
        let out = tokenledger(&url, args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        let summary = if args[0] == "verify" {
            &verified
        } else {
            &rebuilt
        };
        assert!(
            stdout.starts_with(summary.as_str()) && stdout.lines().count() == 1,
            "{args:?}: {stdout}"
        );
        assert!(
            !stderr.contains('\r') && !stderr.contains("ETA") && !stderr.contains("=="),
            "{args:?} drew progress on a pipe: {stderr:?}"
        );
    }
}

/// On a terminal (a pty from util-linux `script`) the bar is drawn on standard error and
/// cleared, and the summary line still follows; `--quiet` draws nothing. Skipped where
/// `script` is missing.
#[test]
fn verify_and_rebuild_draw_progress_on_a_terminal_unless_quiet() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let db = SqliteDb::new();
    let url = db.url_string();
    let (verified, rebuilt) = summaries(&url);
    let bin = env!("CARGO_BIN_EXE_tokenledger");
    let on_a_pty = |args: &str| {
        let out = Command::new("script")
            .args(["-qec", &format!("{bin} {args}"), "/dev/null"])
            .env("DATABASE_URL", &url)
            .env("TERM", "xterm")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args}: {stdout}{stderr}");
        stdout
    };
    for (args, what, summary) in [
        ("verify", "verify [", &verified),
        ("projections rebuild", "rebuild [", &rebuilt),
    ] {
        let drawn = on_a_pty(args);
        assert!(
            drawn.contains(what) && drawn.contains("events"),
            "{drawn:?}"
        );
        assert!(drawn.contains(summary.as_str()), "{drawn:?}");

        let quiet = on_a_pty(&format!("{args} --quiet"));
        assert!(!quiet.contains(what) && !quiet.contains("ETA"), "{quiet:?}");
        assert!(quiet.contains(summary.as_str()), "{quiet:?}");
    }
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
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let port = app.port;
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

/// The binary with extra environment variables.
fn tokenledger_with(url: &str, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env("USER", "alice")
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("run tokenledger")
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Log head position, read through `verify`.
fn events_in(url: &str) -> u64 {
    let out = tokenledger(url, &["verify"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
        .strip_prefix("ok: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verify output: {stdout}"))
}

#[test]
fn token_commands_create_list_show_revoke_rotate_and_audit() {
    let db = SqliteDb::new();
    let url = db.url_string();
    let run = |args: &[&str]| tokenledger_with(&url, &[], args);

    // A fresh database with no configuration: the first command works.
    let out = run(&["token", "create", "--name", "ci", "--scope", "console:exec"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let plaintext: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("tl_test_"))
        .collect();
    assert_eq!(
        plaintext.len(),
        1,
        "the plaintext is printed exactly once: {stdout}"
    );
    assert_eq!(plaintext[0].len(), "tl_test_".len() + 49);

    let created = json_of(&run(&[
        "token",
        "create",
        "--name",
        "deploy",
        "--scope",
        "registry:write",
        "--scope",
        "registry:read",
        "--expires-in",
        "30d",
        "--json",
    ]));
    let keys: Vec<&str> = created
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["environment", "expires_at", "id", "name", "scopes", "token"]
    );
    assert_eq!(
        created["scopes"],
        serde_json::json!(["registry:read", "registry:write"])
    );
    assert_eq!(created["environment"], "test");
    let id = created["id"].as_str().expect("id").to_owned();

    let list = json_of(&run(&["token", "list", "--json"]));
    assert_eq!(
        list["tokens"].as_array().expect("a page of tokens").len(),
        2
    );
    assert_eq!(
        (list["total"].as_u64(), list["complete"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(list["counts"]["active"], 2);
    assert!(list["next"].is_null(), "{list}");
    assert!(
        !list
            .to_string()
            .contains(created["token"].as_str().expect("token"))
    );
    let shown = json_of(&run(&["token", "show", &id, "--json"]));
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["created_by"], "cli:alice");

    let rotated = json_of(&run(&["token", "rotate", &id, "--grace", "1h", "--json"]));
    assert_eq!(rotated["rotated_from"], serde_json::json!(id));
    assert_eq!(rotated["scopes"], created["scopes"]);
    assert_ne!(rotated["token"], created["token"]);
    let shown = json_of(&run(&["token", "show", &id, "--json"]));
    assert_eq!(shown["status"], "rotated_in_grace");

    let out = run(&["token", "revoke", &id, "--reason", "rotated out"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let shown = json_of(&run(&["token", "show", &id, "--json"]));
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revoke_reason"], "rotated out");

    let audit = json_of(&run(&["audit", "--token", &id, "--json"]));
    assert_eq!(audit["total"], 3, "{audit}");
    assert_eq!(audit["complete"], true);
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "API_TOKEN_CREATED",
            "API_TOKEN_ROTATED",
            "API_TOKEN_REVOKED"
        ]
    );
    let revoked = json_of(&run(&[
        "audit", "--action", "revoked", "--since", "1h", "--json",
    ]));
    assert_eq!(revoked["events"].as_array().expect("array").len(), 1);
    assert_eq!(revoked["events"][0]["actor"], "cli:alice");
    let future = json_of(&run(&["audit", "--since", "2999-01-01", "--json"]));
    assert_eq!(future["events"], serde_json::json!([]));
    assert_eq!(
        (&future["total"], &future["next"]),
        (&serde_json::json!(0), &serde_json::Value::Null)
    );

    let out = run(&["projections", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(json_of(&run(&["token", "show", &id, "--json"])), shown);
}

#[test]
fn bad_token_commands_say_what_is_accepted_and_append_nothing() {
    let db = SqliteDb::new();
    let url = db.url_string();
    let run = |args: &[&str]| tokenledger_with(&url, &[], args);
    let created = json_of(&run(&[
        "token", "create", "--name", "x", "--scope", "admin", "--json",
    ]));
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(run(&["token", "revoke", &id]).status.success());
    let before = events_in(&url);

    let long_name = "n".repeat(101);
    let unknown_id = "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["token", "create", "--name", "x", "--scope", "root"],
            2,
            "unknown scope \"root\"; known scopes: admin, console:exec, logs:read, registry:read, registry:write, tokens:verify, tokens:rotate-self, leaks:report",
        ),
        (
            vec![
                "token",
                "create",
                "--name",
                "x",
                "--scope",
                "admin",
                "--expires-in",
                "0d",
            ],
            2,
            "must be positive",
        ),
        (
            vec![
                "token",
                "create",
                "--name",
                "x",
                "--scope",
                "admin",
                "--expires-in",
                "-5m",
            ],
            2,
            "like 90s, 15m, 24h, 30d",
        ),
        (
            vec![
                "token",
                "create",
                "--name",
                "x",
                "--scope",
                "admin",
                "--expires-in",
                "2w",
            ],
            2,
            "unit s, m, h or d",
        ),
        (
            vec!["token", "create", "--name", &long_name, "--scope", "admin"],
            2,
            "name must be 1 to 100 characters, got 101",
        ),
        (
            vec![
                "token",
                "create",
                "--name",
                "x",
                "--scope",
                "admin",
                "--expires-in",
                "400d",
            ],
            1,
            "exceeds the maximum of 365d",
        ),
        (
            vec!["token", "show", "not-a-uuid"],
            2,
            "is not a token id; expected a UUID",
        ),
        (
            vec!["token", "revoke", "12345"],
            2,
            "is not a token id; expected a UUID",
        ),
        (vec!["token", "show", unknown_id], 1, "no token with id"),
        (vec!["token", "revoke", unknown_id], 1, "no token with id"),
        (vec!["token", "revoke", &id], 1, "is already revoked"),
        (vec!["token", "rotate", &id], 1, "is already revoked"),
        (
            vec!["audit", "--action", "deleted"],
            2,
            "known actions: API_TOKEN_CREATED",
        ),
        (
            vec!["audit", "--since", "yesterday"],
            2,
            "or a duration ago like 24h",
        ),
    ];
    for (args, code, message) in cases {
        let out = run(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    assert_eq!(events_in(&url), before, "nothing was appended");
}

#[test]
fn unknown_configuration_values_stop_the_process_naming_the_variable() {
    let db = SqliteDb::new();
    for (var, value, message) in [
        (
            "ADMIN_CONSOLE_ENABLED",
            "yes",
            "ADMIN_CONSOLE_ENABLED=\"yes\" is not a switch; expected true or false",
        ),
        (
            "ADMIN_API_TOKEN_AUTH_ENABLED",
            "1",
            "ADMIN_API_TOKEN_AUTH_ENABLED=\"1\" is not a switch",
        ),
        (
            "TRUST_PROXY",
            "true",
            "TRUST_PROXY=\"true\" is no longer read; set TRUST_PROXY_HOPS=1",
        ),
        (
            "API_TOKEN_PREFIX_ENV",
            "staging",
            "API_TOKEN_PREFIX_ENV=\"staging\" is not known; expected auto, live or test",
        ),
        ("API_TOKEN_PREFIX", "Bad_Prefix", "API_TOKEN_PREFIX"),
        ("APP_ENV", "prod", "APP_ENV=\"prod\" is not known"),
        ("API_TOKEN_MAX_TTL", "1y", "API_TOKEN_MAX_TTL"),
        (
            "BIND_ADDR",
            "localhost:3000",
            "BIND_ADDR=\"localhost:3000\" is not an address",
        ),
    ] {
        let out = tokenledger_with(&db.url_string(), &[(var, value)], &["serve"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(stderr.contains(message), "{var}: {stderr}");
    }
}

#[test]
fn production_mints_live_tokens_and_the_routes_table_prints() {
    let db = SqliteDb::new();
    let out = tokenledger_with(
        &db.url_string(),
        &[("APP_ENV", "production")],
        &[
            "token", "create", "--name", "prod", "--scope", "admin", "--json",
        ],
    );
    let created = json_of(&out);
    assert_eq!(created["environment"], "live");
    assert!(
        created["token"]
            .as_str()
            .expect("token")
            .starts_with("tl_live_")
    );

    let out = tokenledger(&db.url_string(), &["routes"]);
    let (stdout, _) = text(&out);
    for route in tokenledger::http::policy::ROUTES {
        assert!(
            stdout.contains(route.path),
            "{} missing: {stdout}",
            route.path
        );
    }
    assert!(
        stdout.contains("/admin/tokens") && stdout.contains("Clerk admin session (no API tokens)")
    );
    for command in tokenledger::http::policy::CONSOLE_COMMANDS {
        assert!(stdout.contains(command.name), "{stdout}");
    }
}
