//! Token lifecycles end to end, against the real stores.
//!
//! - Random operation sequences (create, use, denied use, revoke, rotate, clock moves): the
//!   live projections must equal a rebuild from position 0, an independent fold of the log and
//!   a small model of what each operation should have done (Invariants 6 and 7).
//! - A canary scan: every plaintext, hash and salt of a session, in every encoding, must appear
//!   in no table row (outside the token hash column and the openings), no CLI output (outside
//!   the one line that shows a new token), no log line and no `Debug` output (Invariant 4).
//! - The CLI's global `--database-url` flag beside `DATABASE_URL`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sqlx::Connection as _;
use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;
use tokenledger::ledger::{
    Clock as _, CreateRequest, Ledger, LedgerError, ManualClock, Minted, RotateRequest,
    SystemClock, TokenSettings,
};
use tokenledger::lifecycle::{DomainError, KNOWN_SCOPES, UseAttempt, UseDecision};
use tokenledger::store::{AuditFilter, DatabaseUrl, Store};
use tokenledger::token::{TokenPrefix, hash_token};
use tokenledger_events::{DenyReason, Environment, EventLog, Timestamp, TokenHash};
use tokenledger_projections::{
    AuditAction, AuditRow, TokenRow, TokenStatus, TokenTable, audit_row,
};
use uuid::Uuid;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

/// A fresh database on either backend; dropping it removes it.
enum TestDb {
    Sqlite(SqliteDb),
    Postgres(PgTestDb),
}

impl TestDb {
    async fn fresh(backend: &Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::Sqlite(SqliteDb::new()),
            Backend::Postgres(admin) => TestDb::Postgres(PgTestDb::new(admin).await),
        }
    }

    fn url(&self) -> &DatabaseUrl {
        match self {
            TestDb::Sqlite(db) => &db.url,
            TestDb::Postgres(db) => &db.url,
        }
    }

    fn url_string(&self) -> String {
        match self {
            TestDb::Sqlite(db) => db.url_string(),
            TestDb::Postgres(db) => db.url_string.clone(),
        }
    }
}

/// Run `$body` with `$c` bound to a direct connection of either backend (same SQL on both).
macro_rules! with_conn {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            TestDb::Sqlite(d) => {
                let mut $c = SqliteConnection::connect(&d.url_string())
                    .await
                    .expect("connect to sqlite");
                $body
            }
            TestDb::Postgres(d) => {
                let mut $c = d.connect().await;
                $body
            }
        }
    };
}

enum Backend {
    Sqlite,
    /// The admin URL new databases are created through.
    Postgres(String),
}

// ---------------------------------------------------------------------------------------------
// 1. Random lifecycles: live projections = rebuild = fold of the log = model
// ---------------------------------------------------------------------------------------------

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// 2026-01-01T00:00:00Z: the injected clock starts here, so runs are reproducible.
const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);
/// The last name is refused (empty after trimming); the third is stored trimmed.
const NAMES: [&str; 4] = ["ci-deploy", "metrics scraper", "  padded name  ", "   "];
/// In seconds; the last exceeds the default maximum (365d) and is refused.
const EXPIRIES: [Option<u64>; 6] = [
    None,
    Some(HOUR),
    Some(DAY),
    Some(30 * DAY),
    Some(365 * DAY),
    Some(400 * DAY),
];
/// In seconds; `None` is the policy's default grace.
const GRACES: [Option<u64>; 4] = [Some(0), Some(HOUR), Some(DAY), None];
const IPS: [Option<&str>; 4] = [
    Some("10.0.0.1"),
    Some("10.0.0.2"),
    Some("2001:db8::7"),
    None,
];
const PATHS: [&str; 2] = ["/api/admin/console", "/v1/verify"];

#[derive(Clone, Debug)]
enum Op {
    /// `scopes` is a non-empty bit set over [`KNOWN_SCOPES`].
    Create {
        name: usize,
        scopes: u8,
        expiry: usize,
    },
    /// `scope == KNOWN_SCOPES.len()` requires no scope; `wrong_env` presents the token to a
    /// server of the other environment.
    Use {
        token: Index,
        scope: usize,
        ip: usize,
        path: usize,
        wrong_env: bool,
    },
    Revoke {
        token: Index,
    },
    Rotate {
        token: Index,
        grace: usize,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let name = prop_oneof![8 => 0..NAMES.len() - 1, 1 => Just(NAMES.len() - 1)];
    prop_oneof![
        3 => (name, 1u8..(1 << KNOWN_SCOPES.len()), 0..EXPIRIES.len())
            .prop_map(|(name, scopes, expiry)| Op::Create { name, scopes, expiry }),
        5 => (
            any::<Index>(),
            0..=KNOWN_SCOPES.len(),
            0..IPS.len(),
            0..PATHS.len(),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(token, scope, ip, path, wrong_env)| Op::Use {
                token,
                scope,
                ip,
                path,
                wrong_env,
            }),
        1 => any::<Index>().prop_map(|token| Op::Revoke { token }),
        2 => (any::<Index>(), 0..GRACES.len()).prop_map(|(token, grace)| Op::Rotate { token, grace }),
        2 => prop_oneof![0..2 * HOUR, 0..7 * DAY, 0..200 * DAY].prop_map(|secs| Op::Advance { secs }),
    ]
}

/// What a token should look like, kept by the test independently of the projections.
#[derive(Clone, Debug)]
struct Expected {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    hash: TokenHash,
    created_at: Timestamp,
    expires_at: Timestamp,
    revoked_at: Option<Timestamp>,
    rotated_from: Option<Uuid>,
    rotated_to: Option<Uuid>,
    rotated_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
    last_used_ip: Option<String>,
    last_used_path: Option<String>,
    use_count: u64,
    denied_count: u64,
}

impl Expected {
    fn status_at(&self, now: Timestamp) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if now >= self.expires_at {
            TokenStatus::Expired
        } else if self.rotated_to.is_some() {
            TokenStatus::RotatedInGrace
        } else {
            TokenStatus::Active
        }
    }

    fn check(&self, row: &TokenRow) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        macro_rules! same {
            ($field:ident) => {
                if row.$field != self.$field {
                    wrong.push(format!(
                        "{}: stored {:?}, expected {:?}",
                        stringify!($field),
                        row.$field,
                        self.$field
                    ));
                }
            };
        }
        same!(name);
        same!(scopes);
        same!(created_at);
        same!(expires_at);
        same!(revoked_at);
        same!(rotated_from);
        same!(rotated_to);
        same!(rotated_at);
        same!(last_used_at);
        same!(last_used_ip);
        same!(last_used_path);
        same!(use_count);
        same!(denied_count);
        if row.hash != Some(self.hash) {
            wrong.push("hash: stored hash is not the SHA-256 of the minted token".into());
        }
        ensure!(wrong.is_empty(), "token {}: {}", self.id, wrong.join("; "));
        Ok(())
    }
}

struct Model {
    tokens: Vec<Expected>,
    /// The audit actions the log should hold, in order.
    actions: Vec<(AuditAction, Uuid)>,
}

fn new_expected(minted: &Minted, now: Timestamp, expires_at: Timestamp) -> Expected {
    let row = &minted.row;
    Expected {
        id: row.id,
        name: row.name.clone(),
        scopes: row.scopes.clone(),
        hash: minted.token.hash(),
        created_at: now,
        expires_at,
        revoked_at: None,
        rotated_from: row.rotated_from,
        rotated_to: None,
        rotated_at: None,
        last_used_at: None,
        last_used_ip: None,
        last_used_path: None,
        use_count: 0,
        denied_count: 0,
    }
}

async fn head(store: &Store) -> anyhow::Result<u64> {
    Ok(store.head().await?.position)
}

impl Model {
    async fn step(&mut self, ledger: &Ledger, clock: &ManualClock, op: &Op) -> anyhow::Result<()> {
        let store = ledger.store();
        let policy = ledger.settings().policy.clone();
        let now = clock.now();
        let before = head(store).await?;
        match op {
            Op::Create {
                name,
                scopes,
                expiry,
            } => {
                let scopes: Vec<String> = KNOWN_SCOPES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| scopes & (1 << i) != 0)
                    .map(|(_, s)| (*s).to_owned())
                    .collect();
                let expires_in = EXPIRIES[*expiry].map(Duration::from_secs);
                let result = ledger
                    .create(CreateRequest {
                        name: NAMES[*name].into(),
                        scopes: scopes.clone(),
                        expires_in,
                        actor: "test:lifecycle".into(),
                    })
                    .await;
                let ttl = expires_in.unwrap_or(policy.default_ttl);
                if NAMES[*name].trim().is_empty() {
                    ensure!(
                        matches!(result, Err(LedgerError::Refused(DomainError::BadName(0)))),
                        "an empty name must be refused, got {result:?}"
                    );
                } else if ttl > policy.max_ttl {
                    ensure!(
                        matches!(
                            result,
                            Err(LedgerError::Refused(DomainError::ExpiryTooLong { .. }))
                        ),
                        "an expiry over the maximum must be refused, got {result:?}"
                    );
                } else {
                    let minted = result.context("create")?;
                    ensure!(
                        minted.row.name == NAMES[*name].trim(),
                        "name is stored trimmed"
                    );
                    ensure!(minted.row.scopes == scopes, "scopes in canonical order");
                    self.actions.push((AuditAction::Created, minted.row.id));
                    self.tokens.push(new_expected(&minted, now, now.plus(ttl)));
                    ensure!(
                        head(store).await? == before + 1,
                        "a create appends one event"
                    );
                    return Ok(());
                }
            }
            Op::Use {
                token,
                scope,
                ip,
                path,
                wrong_env,
            } => {
                if self.tokens.is_empty() {
                    return Ok(());
                }
                let t = token.index(self.tokens.len());
                let required: Vec<String> = KNOWN_SCOPES
                    .get(*scope)
                    .map(|s| vec![(*s).to_owned()])
                    .unwrap_or_default();
                let expected = {
                    let e = &self.tokens[t];
                    if *wrong_env {
                        Some(DenyReason::EnvironmentMismatch)
                    } else {
                        match e.status_at(now) {
                            TokenStatus::Revoked => Some(DenyReason::Revoked),
                            TokenStatus::Expired => Some(DenyReason::Expired),
                            _ if !required.is_empty()
                                && !required.iter().any(|r| e.scopes.contains(r)) =>
                            {
                                Some(DenyReason::InsufficientScope)
                            }
                            _ => None,
                        }
                    }
                };
                let id = self.tokens[t].id;
                let row = ledger.token(id).await.context("read the token")?;
                let attempt = UseAttempt {
                    required_any: required,
                    server_environment: if *wrong_env {
                        Environment::Live
                    } else {
                        Environment::Test
                    },
                    ip: IPS[*ip].map(str::to_owned),
                    method: "POST".into(),
                    path: PATHS[*path].into(),
                    command: Some("db:health".into()),
                    user_agent: Some("lifecycle-test".into()),
                };
                let (decision, event) = ledger.record_use(&row, &attempt).await.context("use")?;
                ensure!(
                    event.position == before + 1 && event.stream_id.token_id() == Some(id),
                    "a use appends one event on its token's stream"
                );
                let e = &mut self.tokens[t];
                match (decision, expected) {
                    (UseDecision::Allowed(_), None) => {
                        e.use_count += 1;
                        e.last_used_at = Some(now);
                        e.last_used_ip = attempt.ip.clone();
                        e.last_used_path = Some(attempt.path.clone());
                        self.actions.push((AuditAction::Used, id));
                    }
                    (UseDecision::Denied(d), Some(reason)) if d.reason == reason => {
                        e.denied_count += 1;
                        self.actions.push((AuditAction::Denied, id));
                    }
                    (decision, expected) => {
                        bail!("use of {id} decided {decision:?}, expected denial {expected:?}")
                    }
                }
                return Ok(());
            }
            Op::Revoke { token } => {
                if self.tokens.is_empty() {
                    return Ok(());
                }
                let t = token.index(self.tokens.len());
                let id = self.tokens[t].id;
                let result = ledger
                    .revoke(id, "user:lifecycle", Some("drill".into()))
                    .await;
                if self.tokens[t].revoked_at.is_some() {
                    ensure!(
                        matches!(&result, Err(LedgerError::Refused(DomainError::AlreadyRevoked(x))) if *x == id),
                        "revoking a revoked token must be refused, got {result:?}"
                    );
                } else {
                    let row = result.context("revoke")?;
                    ensure!(row.revoked_at == Some(now), "revoked now");
                    self.tokens[t].revoked_at = Some(now);
                    self.actions.push((AuditAction::Revoked, id));
                    ensure!(
                        head(store).await? == before + 1,
                        "a revoke appends one event"
                    );
                    return Ok(());
                }
            }
            Op::Rotate { token, grace } => {
                if self.tokens.is_empty() {
                    return Ok(());
                }
                let t = token.index(self.tokens.len());
                let old = self.tokens[t].clone();
                let grace = GRACES[*grace].map(Duration::from_secs);
                let result = ledger
                    .rotate(
                        old.id,
                        RotateRequest {
                            name: None,
                            scopes: None,
                            expires_in: None,
                            grace,
                            actor: "user:lifecycle".into(),
                        },
                    )
                    .await;
                // Revoked first, then rotated (naming the successor), then expired.
                let refusal = match (old.status_at(now), old.rotated_to) {
                    (TokenStatus::Revoked, _) => Some(DomainError::AlreadyRevoked(old.id)),
                    (_, Some(to)) => Some(DomainError::AlreadyRotated(old.id, to)),
                    (TokenStatus::Expired, None) => Some(DomainError::Expired(old.id)),
                    _ => None,
                };
                match (result, refusal) {
                    (Err(LedgerError::Refused(got)), Some(want)) if got == want => {}
                    (Ok(minted), None) => {
                        let grace = grace.unwrap_or(policy.default_grace);
                        let new_id = minted.row.id;
                        let e = &mut self.tokens[t];
                        e.rotated_to = Some(new_id);
                        e.rotated_at = Some(now);
                        e.expires_at = e.expires_at.min(now.plus(grace));
                        self.actions.push((AuditAction::Rotated, old.id));
                        let mut appended = 2;
                        if grace.is_zero() {
                            e.revoked_at = Some(now);
                            self.actions.push((AuditAction::Revoked, old.id));
                            appended += 1;
                        }
                        let new = new_expected(&minted, now, now.plus(policy.default_ttl));
                        ensure!(
                            minted.row.name == old.name && minted.row.scopes == old.scopes,
                            "a rotation keeps name and scopes"
                        );
                        ensure!(new.rotated_from == Some(old.id), "successor links back");
                        self.actions.push((AuditAction::Created, new_id));
                        self.tokens.push(new);
                        ensure!(
                            head(store).await? == before + appended,
                            "a rotation appends {appended} events"
                        );
                        return Ok(());
                    }
                    (result, refusal) => bail!(
                        "rotate of {} answered {:?}, expected refusal {refusal:?}",
                        old.id,
                        result.map(|m| m.row.id)
                    ),
                }
            }
            Op::Advance { secs } => {
                clock.advance(Duration::from_secs(*secs));
                return Ok(());
            }
        }
        // Only refusals get here.
        ensure!(head(store).await? == before, "a refusal appends nothing");
        Ok(())
    }
}

/// Every projection a store keeps, as read back from the database.
#[derive(Debug, PartialEq)]
struct Projections {
    tokens: Vec<TokenRow>,
    audit: Vec<AuditRow>,
    checkpoints: Vec<(String, u64)>,
}

async fn projections(store: &Store) -> anyhow::Result<Projections> {
    Ok(Projections {
        tokens: store.tokens().await?,
        audit: store.audit(&AuditFilter::default()).await?,
        checkpoints: store.checkpoints().await?,
    })
}

/// Every field of a row except the hash, whose equality is reported separately.
fn describe(r: &TokenRow) -> String {
    format!(
        "id={} name={:?} scopes={:?} env={:?} created={:?}/{:?} expires={:?} revoked={:?}/{:?}/{:?} \
         rotated_from={:?} rotated_to={:?} rotated_at={:?} last_used={:?}/{:?}/{:?} uses={} denied={} \
         version={} position={}",
        r.id,
        r.name,
        r.scopes,
        r.environment,
        r.created_at,
        r.created_by,
        r.expires_at,
        r.revoked_at,
        r.revoked_by,
        r.revoke_reason,
        r.rotated_from,
        r.rotated_to,
        r.rotated_at,
        r.last_used_at,
        r.last_used_ip,
        r.last_used_path,
        r.use_count,
        r.denied_count,
        r.version,
        r.position
    )
}

fn same_tokens(what: &str, got: &[TokenRow], want: &[TokenRow]) -> anyhow::Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} token rows, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        ensure!(
            g == w,
            "{what}: token row {i} differs (hash {}):\n  got  {}\n  want {}",
            if g.hash == w.hash { "equal" } else { "differs" },
            describe(g),
            describe(w)
        );
    }
    Ok(())
}

fn same_rows<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &[T],
    want: &[T],
) -> anyhow::Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} rows, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        ensure!(
            g == w,
            "{what}: row {i} differs:\n  got  {g:?}\n  want {w:?}"
        );
    }
    Ok(())
}

/// The whole log read through [`EventLog::read_from`] in small pages, folded with the
/// projections crate: the token table and the audit rows it implies.
async fn fold_log(store: &Store, head: u64) -> anyhow::Result<(Vec<TokenRow>, Vec<AuditRow>)> {
    const PAGE: usize = 7;
    let mut table = TokenTable::default();
    let mut audit = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_from(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        ensure!(page.len() <= PAGE, "read_from returned more than its limit");
        for (i, e) in page.iter().enumerate() {
            ensure!(
                e.position == after + 1 + i as u64,
                "read_from({after}) is not dense at {}",
                e.position
            );
            let decoded = e
                .decode()
                .with_context(|| format!("decode {}", e.position))?;
            table.apply(e, &decoded);
            let id = e.stream_id.token_id().context("a token stream")?;
            let scopes = table.get(&id).map(|r| r.scopes.clone()).unwrap_or_default();
            audit.extend(audit_row(e, &decoded, &scopes));
        }
        after = last.position;
    }
    ensure!(after == head, "the log read to {after}, its head is {head}");
    ensure!(
        table.position() == head,
        "the fold reached {}",
        table.position()
    );
    Ok((table.rows().into_iter().cloned().collect(), audit))
}

async fn run_case(backend: &Backend, ops: &[Op]) -> anyhow::Result<()> {
    let db = TestDb::fresh(backend).await;
    let store = Arc::new(Store::open(db.url()).await.context("open store")?);
    let clock = ManualClock::new(START);
    let ledger = Ledger::new(
        store.clone(),
        TokenSettings::default(),
        Arc::new(clock.clone()),
    );
    let mut model = Model {
        tokens: Vec::new(),
        actions: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        model
            .step(&ledger, &clock, op)
            .await
            .with_context(|| format!("step {i}: {op:?}"))?;
    }

    let settled = ledger.settle().await?;
    let head = head(&store).await?;
    ensure!(
        settled == head,
        "settle reached {settled}, the head is {head}"
    );
    let live = projections(&store).await?;
    ensure!(
        live.checkpoints.contains(&("audit_logs".to_owned(), head)),
        "the audit checkpoint is at the head after settle: {:?}",
        live.checkpoints
    );

    // The model: what each operation should have done.
    ensure!(
        live.tokens.len() == model.tokens.len(),
        "{} stored tokens, {} created",
        live.tokens.len(),
        model.tokens.len()
    );
    for expected in &model.tokens {
        let row = live
            .tokens
            .iter()
            .find(|r| r.id == expected.id)
            .with_context(|| format!("token {} is not stored", expected.id))?;
        expected.check(row)?;
    }
    let actions: Vec<(AuditAction, Uuid)> =
        live.audit.iter().map(|r| (r.action, r.token_id)).collect();
    same_rows("audit actions against the model", &actions, &model.actions)?;

    // An independent fold of the whole log.
    let (folded_tokens, folded_audit) = fold_log(&store, head).await?;
    same_tokens(
        "live api_tokens against a fold of the log",
        &live.tokens,
        &folded_tokens,
    )?;
    same_rows(
        "live audit_logs against a fold of the log",
        &live.audit,
        &folded_audit,
    )?;

    // A rebuild from position 0 gives exactly the live state.
    let (rebuilt_to, count) = store.rebuild_projections().await?;
    ensure!(
        rebuilt_to == head && count == live.tokens.len(),
        "rebuild reached {rebuilt_to} with {count} tokens; head {head}, {} tokens",
        live.tokens.len()
    );
    let rebuilt = projections(&store).await?;
    same_tokens("api_tokens after rebuild", &rebuilt.tokens, &live.tokens)?;
    same_rows("audit_logs after rebuild", &rebuilt.audit, &live.audit)?;
    same_rows(
        "checkpoints after rebuild",
        &rebuilt.checkpoints,
        &live.checkpoints,
    )?;
    ensure!(
        rebuilt == live,
        "projections after rebuild differ from the live ones"
    );
    Ok(())
}

/// Run the property on `backend`: `PROPTEST_CASES` cases (16 unless set), up to 40 steps each,
/// a fresh database per case.
fn random_lifecycles(backend: Backend) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        // A manual runner has no source file to persist failures beside; the failing
        // sequence is printed instead.
        failure_persistence: None,
        // Each shrink step is a fresh database and a whole sequence; this bounds a failing
        // PostgreSQL run to a few minutes while still reaching short sequences.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = runner.run(&prop::collection::vec(op(), 1..=40), |ops| {
        rt.block_on(run_case(&backend, &ops))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_lifecycles_keep_live_projections_equal_to_a_rebuild_and_a_fold_on_sqlite() {
    random_lifecycles(Backend::Sqlite);
}

#[test]
fn random_lifecycles_keep_live_projections_equal_to_a_rebuild_and_a_fold_on_postgres() {
    let Some(admin) = pg_admin_url(
        "random_lifecycles_keep_live_projections_equal_to_a_rebuild_and_a_fold_on_postgres",
    ) else {
        return;
    };
    random_lifecycles(Backend::Postgres(admin));
}

// ---------------------------------------------------------------------------------------------
// 2. Canaries: no secret anywhere it must not be
// ---------------------------------------------------------------------------------------------

/// The side table of commitment openings (migrations 0001): the one place besides
/// `api_tokens.hash` where a token's hash is stored, and the only place salts are.
const OPENINGS: &str = "event_openings";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raw {
    Hash,
    Salt,
}

/// One secret in one encoding. `what` names it without revealing it.
struct Canary {
    what: String,
    needle: Vec<u8>,
    raw: Option<Raw>,
}

#[derive(Default)]
struct Canaries(Vec<Canary>);

fn encodings(bytes: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        ("base64", STANDARD.encode(bytes)),
        ("base64 without padding", STANDARD_NO_PAD.encode(bytes)),
        ("base64url", URL_SAFE.encode(bytes)),
        ("base64url without padding", URL_SAFE_NO_PAD.encode(bytes)),
    ]
}

impl Canaries {
    fn push(&mut self, what: String, needle: impl Into<Vec<u8>>, raw: Option<Raw>) {
        self.0.push(Canary {
            what,
            needle: needle.into(),
            raw,
        });
    }

    fn token(&mut self, label: &str, plaintext: &str) {
        self.push(format!("plaintext of {label}"), plaintext, None);
        // The part after `tl_test_`: a leak that dropped the prefix is still a leak.
        let body = plaintext.rsplit('_').next().expect("a token has a body");
        assert!(body.len() > 40, "token body of {label}");
        self.push(
            format!("secret part of the plaintext of {label}"),
            body,
            None,
        );
        let hash = hash_token(plaintext);
        self.push(
            format!("SHA-256 (raw bytes) of {label}"),
            hash.0,
            Some(Raw::Hash),
        );
        for (encoding, text) in encodings(&hash.0) {
            self.push(format!("SHA-256 ({encoding}) of {label}"), text, None);
        }
    }

    fn salt(&mut self, label: &str, salt: &[u8]) {
        self.push(
            format!("salt (raw bytes) of {label}"),
            salt,
            Some(Raw::Salt),
        );
        for (encoding, text) in encodings(salt) {
            self.push(format!("salt ({encoding}) of {label}"), text, None);
        }
    }

    fn found_in<'a>(&'a self, haystack: &'a [u8]) -> impl Iterator<Item = &'a Canary> + 'a {
        self.0.iter().filter(move |c| contains(haystack, &c.needle))
    }

    /// One message per canary found in `haystack`.
    fn scan(&self, place: &str, haystack: &[u8], leaks: &mut Vec<String>) {
        for c in self.found_in(haystack) {
            leaks.push(format!("{} found in {place}", c.what));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && needle.len() <= haystack.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// One table, every row, every column as bytes (text as UTF-8, blobs raw, NULL empty).
struct Table {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<Vec<u8>>>,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Every table of the database, found in its catalogue so a new table is scanned too.
async fn all_tables(db: &TestDb) -> Vec<Table> {
    let mut tables = Vec::new();
    match db {
        TestDb::Sqlite(d) => {
            let mut c = SqliteConnection::connect(&d.url_string())
                .await
                .expect("connect");
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            )
            .fetch_all(&mut c)
            .await
            .expect("list tables");
            for name in names {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                        .bind(&name)
                        .fetch_all(&mut c)
                        .await
                        .expect("list columns");
                let select: Vec<String> = columns
                    .iter()
                    .map(|col| format!("CAST({} AS BLOB)", quoted(col)))
                    .collect();
                let sql = format!("SELECT {} FROM {}", select.join(", "), quoted(&name));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .expect("read table");
                let rows = rows
                    .iter()
                    .map(|row| {
                        (0..columns.len())
                            .map(|i| {
                                row.try_get_unchecked::<Option<Vec<u8>>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .collect();
                tables.push(Table {
                    name,
                    columns,
                    rows,
                });
            }
        }
        TestDb::Postgres(d) => {
            let mut c = d.connect().await;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
            )
            .fetch_all(&mut c)
            .await
            .expect("list tables");
            for name in names {
                let columns: Vec<(String, String)> = sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                )
                .bind(&name)
                .fetch_all(&mut c)
                .await
                .expect("list columns");
                let select: Vec<String> = columns
                    .iter()
                    .map(|(col, ty)| match ty.as_str() {
                        "bytea" => quoted(col),
                        _ => format!("{}::text", quoted(col)),
                    })
                    .collect();
                let sql = format!("SELECT {} FROM {}", select.join(", "), quoted(&name));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .expect("read table");
                let rows = rows
                    .iter()
                    .map(|row| {
                        columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, ty))| match ty.as_str() {
                                "bytea" => row
                                    .try_get::<Option<Vec<u8>>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default(),
                                _ => row
                                    .try_get::<Option<String>, _>(i)
                                    .expect("cell")
                                    .unwrap_or_default()
                                    .into_bytes(),
                            })
                            .collect()
                    })
                    .collect();
                tables.push(Table {
                    name,
                    columns: columns.into_iter().map(|(c, _)| c).collect(),
                    rows,
                });
            }
        }
    }
    tables
}

/// Scan every cell of every table. A token's raw hash may sit only in `api_tokens.hash` and
/// `event_openings.value`, a raw salt only in `event_openings.salt`; anything else is a leak.
/// Returns the leaks and how many times each allowed place held its secret.
fn scan_tables(tables: &[Table], canaries: &Canaries) -> (Vec<String>, HashMap<String, usize>) {
    let mut leaks = Vec::new();
    let mut allowed_hits: HashMap<String, usize> = HashMap::new();
    for table in tables {
        for (r, row) in table.rows.iter().enumerate() {
            for (column, cell) in table.columns.iter().zip(row) {
                for c in canaries.found_in(cell) {
                    let allowed = matches!(
                        (table.name.as_str(), column.as_str(), c.raw),
                        ("api_tokens", "hash", Some(Raw::Hash))
                            | (OPENINGS, "value", Some(Raw::Hash))
                            | (OPENINGS, "salt", Some(Raw::Salt))
                    );
                    if allowed {
                        *allowed_hits
                            .entry(format!("{}.{column}", table.name))
                            .or_default() += 1;
                    } else {
                        leaks.push(format!(
                            "{} found in table {}, row {r}, column {column}",
                            c.what, table.name
                        ));
                    }
                }
            }
        }
    }
    (leaks, allowed_hits)
}

/// An in-memory log sink for a tracing subscriber.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("log buffer").clone()
    }
}

/// Run the real binary off the runtime's thread.
async fn cli(url: &str, args: &[&str]) -> Output {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokenledger(&url, &args)
    })
    .await
    .expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the CLI printed, with each new token's plaintext taken out of the one place it
/// belongs, so everything left can be scanned.
#[derive(Default)]
struct Printed(Vec<(String, Vec<u8>)>);

impl Printed {
    /// A command that shows no secret: all of its output is scanned.
    fn plain(&mut self, command: &str, out: &Output) {
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        self.keep(command, out);
    }

    fn keep(&mut self, command: &str, out: &Output) {
        self.0
            .push((format!("stdout of `{command}`"), out.stdout.clone()));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
    }

    /// `token create`/`rotate` without `--json`: exactly one line is a token; it is dropped.
    /// Returns (id, plaintext).
    fn minted_text(&mut self, command: &str, out: &Output) -> (Uuid, String) {
        let text = stdout(out);
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        let prefix = TokenPrefix::default();
        let (tokens, rest): (Vec<&str>, Vec<&str>) = text
            .lines()
            .partition(|l| tokenledger::token::parse(l, &prefix).is_ok());
        assert_eq!(
            tokens.len(),
            1,
            "`{command}` prints its token on exactly one line of its own"
        );
        let id = rest
            .iter()
            .find_map(|l| {
                l.strip_prefix("created token ").or_else(|| {
                    l.strip_prefix("rotated token ")
                        .and_then(|r| r.split_once(" to "))
                        .map(|(_, id)| id)
                })
            })
            .and_then(|id| Uuid::parse_str(id.trim()).ok())
            .unwrap_or_else(|| panic!("`{command}` names the new token's id"));
        self.0.push((
            format!("stdout of `{command}` (minus the token line)"),
            rest.join("\n").into_bytes(),
        ));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
        (id, tokens[0].to_owned())
    }

    /// `token create`/`rotate --json`: the "token" field is dropped, the rest scanned.
    fn minted_json(&mut self, command: &str, out: &Output) -> (Uuid, String) {
        assert!(out.status.success(), "`{command}` failed: {}", stderr(out));
        let mut value: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("`{command}`: {e}"));
        let token = value
            .as_object_mut()
            .and_then(|o| o.remove("token"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("`{command}` prints a \"token\" field"));
        let id = value["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(|| panic!("`{command}` prints an \"id\""));
        for key in ["name", "scopes", "environment", "expires_at"] {
            assert!(value.get(key).is_some(), "`{command}` prints {key:?}");
        }
        self.0.push((
            format!("stdout of `{command}` (minus the \"token\" field)"),
            value.to_string().into_bytes(),
        ));
        self.0
            .push((format!("stderr of `{command}`"), out.stderr.clone()));
        (id, token)
    }
}

/// A token this test made, and how.
struct Made {
    label: String,
    id: Uuid,
    plaintext: String,
}

/// Keep a minted token's plaintext as a canary, and its renderings for the scan.
fn remember(made: &mut Vec<Made>, rendered: &mut Vec<(String, String)>, label: &str, m: &Minted) {
    rendered.push((format!("Debug of the Minted of {label}"), format!("{m:?}")));
    rendered.push((
        format!("Debug of the TokenRow of {label}"),
        format!("{:?}", m.row),
    ));
    rendered.push((
        format!("Serialize of the TokenRow of {label}"),
        serde_json::to_string(&m.row).expect("serialize"),
    ));
    made.push(Made {
        label: label.to_owned(),
        id: m.row.id,
        plaintext: m.token.expose().to_owned(),
    });
}

async fn secrets_never_leak(db: TestDb) {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    // Thread-local, so parallel tests keep their own logging: this test runs on a
    // current-thread runtime, so the ledger and its writer task log here. sqlx-sqlite runs
    // statements on worker threads of its own, which this does not see; on PostgreSQL sqlx's
    // statement logs are captured too.
    let _logging = tracing::subscriber::set_default(subscriber);
    // With a single registered dispatcher, tracing-core computes a callsite's cached interest
    // from the default of whichever thread reaches it first: a callsite first reached by a
    // parallel test (no subscriber there) would be cached as "never" and its events lost here.
    // A second registered dispatcher makes it ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    let url = db.url_string();
    let store = Arc::new(Store::open(db.url()).await.expect("open store"));
    let clock = ManualClock::new(SystemClock.now());
    let ledger = Ledger::new(
        store.clone(),
        TokenSettings::default(),
        Arc::new(clock.clone()),
    );
    let mut made: Vec<Made> = Vec::new();
    // Debug, Display and Serialize renderings of values that pass near secrets.
    let mut rendered: Vec<(String, String)> = Vec::new();
    let create = |name: &str, scopes: &[&str]| CreateRequest {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_in: None,
        actor: "user:canary".into(),
    };
    let attempt = |scope: &str, env: Environment, ip: &str, path: &str| UseAttempt {
        required_any: vec![scope.into()],
        server_environment: env,
        ip: Some(ip.into()),
        method: "POST".into(),
        path: path.into(),
        command: Some("db:health".into()),
        user_agent: Some("canary/1".into()),
    };

    // In process: create, use (allowed and denied), revoke, rotate.
    let console = ledger
        .create(create("ledger console", &["console:exec"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger console' (ledger create)",
        &console,
    );
    let revoked = ledger
        .create(create("ledger revoked", &["logs:read"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger revoked' (ledger create)",
        &revoked,
    );
    let rotated_now = ledger
        .create(create(
            "ledger rotated now",
            &["registry:read", "registry:write"],
        ))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger rotated now' (ledger create)",
        &rotated_now,
    );
    let rotated_later = ledger
        .create(create("ledger rotated later", &["tokens:verify"]))
        .await
        .expect("create");
    remember(
        &mut made,
        &mut rendered,
        "token 'ledger rotated later' (ledger create)",
        &rotated_later,
    );

    clock.advance(Duration::from_secs(90));
    let used_at = clock.now();
    let row = ledger.token(console.row.id).await.expect("token");
    let mut decisions = Vec::new();
    for (scope, env) in [
        ("console:exec", Environment::Test),
        ("registry:write", Environment::Test),
        ("console:exec", Environment::Live),
    ] {
        let (decision, event) = ledger
            .record_use(
                &row,
                &attempt(scope, env, "198.51.100.23", "/api/admin/console"),
            )
            .await
            .expect("record use");
        rendered.push((
            "Debug of a use's decision and event".into(),
            format!("{decision:?} {event:?}"),
        ));
        decisions.push(decision);
    }
    assert!(
        matches!(decisions[0], UseDecision::Allowed(_)),
        "{:?}",
        decisions[0]
    );
    assert!(
        matches!(&decisions[1], UseDecision::Denied(d) if d.reason == DenyReason::InsufficientScope)
    );
    assert!(
        matches!(&decisions[2], UseDecision::Denied(d) if d.reason == DenyReason::EnvironmentMismatch)
    );
    // The last allowed use is the one the columns show.
    clock.advance(Duration::from_secs(30));

    ledger
        .revoke(
            revoked.row.id,
            "user:canary",
            Some("left in a CI log".into()),
        )
        .await
        .expect("revoke");
    let again = ledger
        .revoke(revoked.row.id, "user:canary", None)
        .await
        .expect_err("a second revoke is refused");
    rendered.push(("a refused revoke".into(), format!("{again} {again:?}")));
    let row = ledger.token(revoked.row.id).await.expect("token");
    let (decision, _) = ledger
        .record_use(
            &row,
            &attempt("logs:read", Environment::Test, "192.0.2.1", "/v1/verify"),
        )
        .await
        .expect("record use");
    assert!(matches!(&decision, UseDecision::Denied(d) if d.reason == DenyReason::Revoked));

    let rotate = |grace: Option<Duration>| RotateRequest {
        name: None,
        scopes: None,
        expires_in: None,
        grace,
        actor: "user:canary".into(),
    };
    let successor = ledger
        .rotate(rotated_now.row.id, rotate(Some(Duration::ZERO)))
        .await
        .expect("rotate with no grace");
    remember(
        &mut made,
        &mut rendered,
        "the successor of 'ledger rotated now' (ledger rotate, grace 0)",
        &successor,
    );
    let refused = ledger
        .rotate(rotated_now.row.id, rotate(None))
        .await
        .expect_err("a revoked token cannot be rotated");
    rendered.push((
        "a refused rotation".into(),
        format!("{refused} {refused:?}"),
    ));
    let successor = ledger
        .rotate(rotated_later.row.id, rotate(None))
        .await
        .expect("rotate with the default grace");
    remember(
        &mut made,
        &mut rendered,
        "the successor of 'ledger rotated later' (ledger rotate)",
        &successor,
    );

    // The real binary: create (text and JSON), rotate (text and JSON), revoke.
    let mut printed = Printed::default();
    let cmd = "token create --name cli-json --scope registry:read --scope tokens:verify --json";
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_json, plaintext) = printed.minted_json(cmd, &out);
    made.push(Made {
        label: "token 'cli-json' (CLI create --json)".into(),
        id: cli_json,
        plaintext,
    });

    let cmd = "token create --name cli-text --scope admin --expires-in 30d";
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_text, plaintext) = printed.minted_text(cmd, &out);
    made.push(Made {
        label: "token 'cli-text' (CLI create)".into(),
        id: cli_text,
        plaintext,
    });

    let cmd = format!("token rotate {cli_text} --grace 0s");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_text_next, plaintext) = printed.minted_text(&cmd, &out);
    made.push(Made {
        label: "the successor of 'cli-text' (CLI rotate --grace 0s)".into(),
        id: cli_text_next,
        plaintext,
    });

    let cmd = format!("token rotate {cli_json} --json");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    let (cli_json_next, plaintext) = printed.minted_json(&cmd, &out);
    made.push(Made {
        label: "the successor of 'cli-json' (CLI rotate --json)".into(),
        id: cli_json_next,
        plaintext,
    });

    let cmd = format!("token revoke {cli_json_next} --reason rotated-by-mistake");
    printed.plain(&cmd, &cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await);
    let cmd = format!("token revoke {cli_json_next}");
    let out = cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second revoke is refused: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    printed.keep(&cmd, &out);

    // In process again: uses of the tokens the CLI made.
    for (id, scope, ip) in [
        (cli_json, "tokens:verify", "203.0.113.9"),
        (cli_text, "admin", "203.0.113.10"),
        (cli_json_next, "registry:read", "203.0.113.11"),
    ] {
        let row = ledger.token(id).await.expect("token");
        let (decision, event) = ledger
            .record_use(&row, &attempt(scope, row.environment, ip, "/v1/verify"))
            .await
            .expect("record use");
        rendered.push((
            "Debug of a use's decision and event".into(),
            format!("{decision:?} {event:?}"),
        ));
    }
    ledger.settle().await.expect("settle");
    for row in ledger.tokens().await.expect("tokens") {
        rendered.push(("Debug of a stored TokenRow".into(), format!("{row:?}")));
    }
    for row in store.audit(&AuditFilter::default()).await.expect("audit") {
        rendered.push(("Debug of an AuditRow".into(), format!("{row:?}")));
    }

    // Every read the CLI offers, after all of the above.
    let mut reads = vec![
        "token list".to_owned(),
        "token list --json".to_owned(),
        "audit".to_owned(),
        "audit --json".to_owned(),
        "verify".to_owned(),
    ];
    for m in &made {
        reads.push(format!("token show {}", m.id));
        reads.push(format!("token show {} --json", m.id));
        reads.push(format!("audit --token {} --json", m.id));
    }
    for cmd in &reads {
        printed.plain(cmd, &cli(&url, &cmd.split(' ').collect::<Vec<_>>()).await);
    }

    // The canaries: every token and every salt, in every encoding.
    assert_eq!(made.len(), 10, "tokens made");
    let mut canaries = Canaries::default();
    for m in &made {
        canaries.token(&m.label, &m.plaintext);
    }
    let openings: Vec<(Vec<u8>, Vec<u8>)> = with_conn!(&db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT salt, value FROM {OPENINGS} ORDER BY position"
        )))
            .fetch_all(&mut c)
            .await
            .expect("read openings")
    });
    assert_eq!(openings.len(), made.len(), "one opening per token");
    for (i, (salt, value)) in openings.iter().enumerate() {
        assert_eq!(salt.len(), 32, "salt {i} is 32 bytes");
        assert!(
            made.iter()
                .any(|m| hash_token(&m.plaintext).0[..] == value[..]),
            "opening {i} holds the hash of a token this test made"
        );
        canaries.salt(&format!("opening {i}"), salt);
    }

    // Positive facts: api_tokens stores each hash in `hash`, and the last use in its columns.
    for m in &made {
        let (hash, last_at, last_ip, last_path): (
            Option<Vec<u8>>,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = with_conn!(&db, c => {
            sqlx::query_as(
                "SELECT hash, last_used_at, last_used_ip, last_used_path FROM api_tokens WHERE id = $1",
            )
            .bind(m.id)
            .fetch_one(&mut c)
            .await
            .expect("read api_tokens")
        });
        assert_eq!(
            hash.as_deref(),
            Some(&hash_token(&m.plaintext).0[..]),
            "api_tokens.hash of {} holds its SHA-256",
            m.label
        );
        if m.id == console.row.id {
            assert_eq!(
                last_at,
                Some(used_at.as_micros()),
                "last_used_at after a use"
            );
            assert_eq!(
                last_ip.as_deref(),
                Some("198.51.100.23"),
                "last_used_ip after a use"
            );
            assert_eq!(
                last_path.as_deref(),
                Some("/api/admin/console"),
                "last_used_path after a use"
            );
        }
        if m.id == revoked.row.id {
            assert_eq!(
                (last_at, last_ip, last_path),
                (None, None, None),
                "a denied use is not a use"
            );
        }
    }

    // The scan. Tables first (live), then again after a rebuild through the CLI.
    let mut leaks = Vec::new();
    let tables = all_tables(&db).await;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for expected in ["api_tokens", OPENINGS, "audit_logs", "events", "log_head"] {
        assert!(
            names.contains(&expected),
            "table {expected} is scanned: {names:?}"
        );
    }
    let (found, allowed) = scan_tables(&tables, &canaries);
    leaks.extend(found);
    // The scan sees what is there: each hash where it belongs, each salt where it belongs.
    assert_eq!(
        allowed.get("api_tokens.hash"),
        Some(&made.len()),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.get(&format!("{OPENINGS}.value")),
        Some(&made.len()),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.get(&format!("{OPENINGS}.salt")),
        Some(&made.len()),
        "{allowed:?}"
    );

    printed.plain(
        "projections rebuild",
        &cli(&url, &["projections", "rebuild"]).await,
    );
    let (found, allowed_after) = scan_tables(&all_tables(&db).await, &canaries);
    leaks.extend(found.into_iter().map(|l| format!("{l} (after a rebuild)")));
    assert_eq!(
        allowed_after, allowed,
        "a rebuild stores each secret where it did"
    );

    for (place, bytes) in &printed.0 {
        canaries.scan(place, bytes, &mut leaks);
    }
    for (place, text) in &rendered {
        canaries.scan(place, text.as_bytes(), &mut leaks);
    }
    let log = logs.contents();
    let log_text = String::from_utf8_lossy(&log);
    for needle in ["token created", "token revoked", "token rotated"] {
        assert!(
            log_text.contains(needle),
            "the captured log holds the ledger's lines (no {needle:?}), so its scan means something"
        );
    }
    for (n, line) in log.split(|b| *b == b'\n').enumerate() {
        canaries.scan(&format!("log line {}", n + 1), line, &mut leaks);
    }
    // Debug of what the ledger hands out, checked directly as well.
    assert!(!format!("{console:?}").contains(console.token.expose()));
    assert!(!format!("{console:?}").contains(&hex::encode(console.token.hash().0)));
    assert!(!format!("{:?}", console.row).contains(&hex::encode(console.token.hash().0)));

    let mut report = String::new();
    for leak in leaks.iter().take(40) {
        let _ = writeln!(report, "  {leak}");
    }
    assert!(
        leaks.is_empty(),
        "{} secret(s) leaked (of {} canaries over {} tables, {} outputs, {} renderings and {} log bytes):\n{report}",
        leaks.len(),
        canaries.0.len(),
        tables.len(),
        printed.0.len(),
        rendered.len(),
        log.len()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_sqlite() {
    secrets_never_leak(TestDb::Sqlite(SqliteDb::new())).await;
}

#[tokio::test(flavor = "current_thread")]
async fn no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_postgres() {
    let Some(admin) =
        pg_admin_url("no_plaintext_hash_or_salt_reaches_a_table_output_log_or_debug_on_postgres")
    else {
        return;
    };
    secrets_never_leak(TestDb::Postgres(PgTestDb::new(&admin).await)).await;
}

// ---------------------------------------------------------------------------------------------
// 3. The CLI's global --database-url
// ---------------------------------------------------------------------------------------------

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
