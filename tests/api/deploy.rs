//! The deployment files agree with the binary: every variable docker-compose.yml gives a
//! tokenledger service and every variable in .env.example is one the binary reads, and
//! .env.example lists every variable it reads. The known set comes from the clap command
//! itself, so a variable added to the CLI and forgotten here fails this test. No database.

use std::collections::BTreeSet;

use clap::CommandFactory as _;

/// Read outside clap: the log filter of `serve`.
const READ_ELSEWHERE: &[&str] = &["RUST_LOG", "PROJECTION_DATABASE_URL", "KURRENTDB_STREAM"];

/// Every variable the clap command reads, walking every subcommand.
fn clap_variables() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&tokenledger::cli::Cli::command(), &mut out);
    out
}

/// What the binary knows: clap's variables, those read elsewhere, and the test suite's own.
fn known(name: &str, clap: &BTreeSet<String>) -> bool {
    clap.contains(name) || READ_ELSEWHERE.contains(&name) || name.starts_with("TEST_")
}

fn read(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The variable names of docker-compose.yml's environment mappings that tokenledger reads:
/// the `x-tokenledger*` blocks (merged into its services) and the `environment:` mapping of
/// every service whose image is tokenledger. Other images (postgres, kurrentdb) read their own
/// variables. The file keeps the mapping form (`KEY: value`), which this reads line by line.
fn compose_variables(text: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_entry = |l: &&str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        // A top-level `x-tokenledger...: &anchor` block of variables.
        if line.starts_with("x-tokenledger") {
            let mut j = i + 1;
            while j < lines.len() && (!is_entry(&lines[j]) || indent(lines[j]) > 0) {
                let entry = lines[j].trim();
                if is_entry(&lines[j]) && !entry.starts_with("<<") {
                    let key = entry.split(':').next().unwrap_or_default();
                    out.insert(key.to_owned());
                }
                j += 1;
            }
            i = j;
            continue;
        }
        // A service (two spaces in, under `services:`): its block, when its image is ours.
        if indent(line) == 2 && line.trim_end().ends_with(':') && is_entry(&line) {
            let mut j = i + 1;
            while j < lines.len() && (!is_entry(&lines[j]) || indent(lines[j]) > 2) {
                j += 1;
            }
            let block = &lines[i + 1..j];
            let ours = block
                .iter()
                .any(|l| l.trim().starts_with("image: tokenledger"));
            if ours {
                let mut k = 0;
                while k < block.len() {
                    let l = block[k].trim();
                    if l == "environment:" {
                        let depth = indent(block[k]);
                        k += 1;
                        while k < block.len() && (!is_entry(&block[k]) || indent(block[k]) > depth)
                        {
                            if is_entry(&block[k]) {
                                let entry = block[k].trim().trim_start_matches("- ");
                                let key = entry.split([':', '=']).next().unwrap_or_default();
                                out.insert(key.trim().to_owned());
                            }
                            k += 1;
                        }
                        continue;
                    }
                    k += 1;
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// The names in .env.example: `NAME=value` lines and commented-out `# NAME=value` ones.
fn env_example_variables(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('#').trim();
            let (name, _) = l.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            is_name.then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn the_clap_command_names_the_variables_of_every_group() {
    let clap = clap_variables();
    for expected in [
        "DATABASE_URL",
        "BIND_ADDR",
        "ADMIN_CONSOLE_ENABLED",
        "ADMIN_API_TOKEN_AUTH_ENABLED",
        "APP_ENV",
        "LOG_SIGNING_KEY_FILE",
        "CLERK_JWT_KEY",
    ] {
        assert!(clap.contains(expected), "{expected} not in {clap:?}");
    }
}

#[test]
fn every_variable_docker_compose_gives_tokenledger_is_one_it_reads() {
    let clap = clap_variables();
    let compose = compose_variables(&read("docker-compose.yml"));
    for expected in [
        "DATABASE_URL",
        "APP_ENV",
        "ADMIN_CONSOLE_ENABLED",
        "BIND_ADDR",
    ] {
        assert!(
            compose.contains(expected),
            "{expected} not found in {compose:?}"
        );
    }
    let unknown: Vec<_> = compose.iter().filter(|v| !known(v, &clap)).collect();
    assert!(
        unknown.is_empty(),
        "docker-compose.yml sets variables tokenledger does not read: {unknown:?}"
    );
}

#[test]
fn compose_keeps_the_guides_production_defaults() {
    let text = read("docker-compose.yml");
    for line in [
        "APP_ENV: production",
        "ADMIN_CONSOLE_ENABLED: ${ADMIN_CONSOLE_ENABLED:-false}",
        "ADMIN_API_TOKEN_AUTH_ENABLED: ${ADMIN_API_TOKEN_AUTH_ENABLED:-false}",
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "missing: {line}");
    }
}

#[test]
fn env_example_lists_exactly_the_variables_the_binary_reads() {
    let clap = clap_variables();
    let listed = env_example_variables(&read(".env.example"));
    let unknown: Vec<_> = listed.iter().filter(|v| !known(v, &clap)).collect();
    assert!(
        unknown.is_empty(),
        ".env.example lists variables tokenledger does not read: {unknown:?}"
    );
    let missing: Vec<_> = clap
        .iter()
        .map(String::as_str)
        .chain(READ_ELSEWHERE.iter().copied())
        .filter(|v| !listed.contains(*v))
        .collect();
    assert!(
        missing.is_empty(),
        ".env.example does not list: {missing:?}"
    );
}

#[test]
fn env_example_defaults_keep_every_switch_off() {
    let text = read(".env.example");
    for line in [
        "ADMIN_CONSOLE_ENABLED=false",
        "ADMIN_API_TOKEN_AUTH_ENABLED=false",
        "API_TOKEN_PREFIX_ENV=auto",
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "missing: {line}");
    }
    // TRUST_PROXY stops the process whatever its value: only ever commented out.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("TRUST_PROXY="))
    );
}
