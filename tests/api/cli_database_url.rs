//! The CLI's global `--database-url` flag beside `DATABASE_URL`: accepted in every position,
//! on nested subcommands too, winning over the environment, and reaching PostgreSQL.

use std::process::Output;

use crate::helpers::{PgTestDb, SqliteDb, pg_admin_url, stderr, stdout, tokenledger};

fn migration_states(out: &Output) -> (bool, bool) {
    let text = stdout(out);
    (text.contains("applied"), text.contains("pending"))
}

#[test]
fn the_database_url_flag_works_in_every_position_and_wins_over_the_environment() {
    let flagged = SqliteDb::new();
    let other = SqliteDb::new();
    let flag = flagged.url_string();
    // DATABASE_URL names `other` throughout; the flag must win wherever it is written.
    let out = tokenledger(&other.url_string(), &["--database-url", &flag, "migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "database sqlite://{} is up to date",
            flagged.path().display()
        )),
        "{}",
        stdout(&out)
    );
    for args in [
        vec!["--database-url", &flag, "migrate", "--status"],
        vec!["migrate", "--status", "--database-url", &flag],
        vec!["migrate", &format!("--database-url={flag}"), "--status"],
    ] {
        let out = tokenledger(&other.url_string(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(
            migration_states(&out),
            (true, false),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    // The environment form, and proof that `other` was never touched.
    let out = tokenledger(&other.url_string(), &["migrate", "--status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(migration_states(&out), (false, true), "{}", stdout(&out));
    let out = tokenledger(&flag, &["migrate", "--status"]);
    assert_eq!(migration_states(&out), (true, false), "{}", stdout(&out));

    // Nested subcommands take the flag too.
    let out = tokenledger(
        &other.url_string(),
        &[
            "token",
            "create",
            "--name",
            "flagged",
            "--scope",
            "logs:read",
            "--database-url",
            &flag,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        vec!["--database-url", &flag, "token", "list"],
        vec!["token", "--database-url", &flag, "list"],
        vec!["token", "list", "--database-url", &flag],
    ] {
        let out = tokenledger(&other.url_string(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("flagged"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    let out = tokenledger(&other.url_string(), &["token", "list"]);
    assert!(stdout(&out).contains("no tokens yet"), "{}", stdout(&out));
}

#[test]
fn the_database_url_flag_reaches_postgres() {
    let Some(admin) = pg_admin_url("the_database_url_flag_reaches_postgres") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(PgTestDb::new(&admin));
    let unused = SqliteDb::new();
    let out = tokenledger(
        &unused.url_string(),
        &["--database-url", &db.url_string, "migrate", "--status"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(migration_states(&out), (false, true), "{}", stdout(&out));
    let out = tokenledger(
        &unused.url_string(),
        &["migrate", "--database-url", &db.url_string],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tokenledger(&db.url_string, &["migrate", "--status"]);
    assert_eq!(migration_states(&out), (true, false), "{}", stdout(&out));
    assert!(
        !unused.path().exists(),
        "the environment's database was never opened"
    );
}
