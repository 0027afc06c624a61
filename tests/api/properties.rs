//! Random token lifecycles end to end, against the real stores.
//!
//! Random operation sequences (create, use, denied use, revoke, rotate, leak reports, clock
//! moves) run through the application layer: the live projections must equal a rebuild from
//! position 0, an independent fold of the log and a small model of what each operation should
//! have done (Invariants 6 and 7).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokenledger::app::leaks::{Label, LeakReport, Reporter};
use tokenledger::app::{
    CreateRequest, Ledger, LedgerError, Minted, RotateRequest, Services, TokenView,
};
use tokenledger::clock::{Clock as _, ManualClock};
use tokenledger::config::TokenSettings;
use tokenledger::lifecycle::{DomainError, Grace, UseAttempt, UseDecision};
use tokenledger::scope::Scope;
use tokenledger::store::{AuditFilter, Store};
use tokenledger::token_entry::TokenEntry;
use tokenledger_events::{DenyReason, Environment, EventLog, Timestamp, TokenHash};
use tokenledger_projections::{
    AddressUse, AddressUses, AuditAction, AuditRow, TokenRow, TokenStatus, TokenTable, audit_row,
};
use uuid::Uuid;

use crate::helpers::{PgTestDb, TestDb, pg_admin_url};

// ---------------------------------------------------------------------------------------------
// Random lifecycles: live projections = rebuild = fold of the log = model
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
    /// `scopes` is a non-empty bit set over [`Scope::ALL`].
    Create {
        name: usize,
        scopes: u16,
        expiry: usize,
    },
    /// `scope == Scope::ALL.len()` requires no scope; `wrong_env` presents the token to a
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
    /// Report the token leaked at `places` distinct places (one of them twice), or a
    /// look-alike of it (its checksum broken).
    Leak {
        token: Index,
        places: usize,
        look_alike: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let name = prop_oneof![8 => 0..NAMES.len() - 1, 1 => Just(NAMES.len() - 1)];
    prop_oneof![
        3 => (name, 1u16..(1 << Scope::ALL.len()), 0..EXPIRIES.len())
            .prop_map(|(name, scopes, expiry)| Op::Create { name, scopes, expiry }),
        5 => (
            any::<Index>(),
            0..=Scope::ALL.len(),
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
        1 => (any::<Index>(), 1..=2usize, prop::bool::weighted(0.2))
            .prop_map(|(token, places, look_alike)| Op::Leak { token, places, look_alike }),
    ]
}

/// What a token should look like, kept by the test independently of the projections.
#[derive(Clone, Debug)]
struct Expected {
    id: Uuid,
    /// The plaintext, for leak reports.
    plaintext: String,
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
        plaintext: minted.token.expose().to_owned(),
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
    /// Run `op` through `ledger`, checking each answer against the model; `store` is the
    /// same log, opened beside the application layer to read its head and events.
    async fn step(
        &mut self,
        ledger: &Ledger,
        store: &Store,
        clock: &ManualClock,
        op: &Op,
    ) -> anyhow::Result<()> {
        let policy = ledger.settings().policy.clone();
        let now = clock.now();
        let before = head(store).await?;
        match op {
            Op::Create {
                name,
                scopes,
                expiry,
            } => {
                let scopes: Vec<String> = Scope::ALL
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| scopes & (1 << i) != 0)
                    .map(|(_, s)| s.as_str().to_owned())
                    .collect();
                let expires_in = EXPIRIES[*expiry].map(Duration::from_secs);
                let result = ledger
                    .create(CreateRequest {
                        name: NAMES[*name].into(),
                        scopes: scopes.clone(),
                        expires_in,
                        actor: "test:lifecycle".into(),
                        allowed_ips: Vec::new(),
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
                let required: Vec<Scope> =
                    Scope::ALL.get(*scope).map(|s| vec![*s]).unwrap_or_default();
                let expected = {
                    let e = &self.tokens[t];
                    if *wrong_env {
                        Some(DenyReason::EnvironmentMismatch)
                    } else {
                        match e.status_at(now) {
                            TokenStatus::Revoked => Some(DenyReason::Revoked),
                            TokenStatus::Expired => Some(DenyReason::Expired),
                            _ if !required.is_empty()
                                && !required
                                    .iter()
                                    .any(|r| e.scopes.iter().any(|s| s == r.as_str())) =>
                            {
                                Some(DenyReason::InsufficientScope)
                            }
                            _ => None,
                        }
                    }
                };
                let id = self.tokens[t].id;
                let row = ledger.entry(id).context("the token is in the cache")?;
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
                let decision = ledger.record_use(&row, &attempt).await.context("use")?;
                // The use's event, read back from the log: the ledger no longer returns it.
                let appended = store.read_from(before, 2).await?;
                ensure!(
                    appended.len() == 1
                        && appended[0].position == before + 1
                        && appended[0].stream_id.token_id() == Some(id),
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
                            grace: grace.map(Grace::For),
                            allowed_ips: None,
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
            Op::Leak {
                token,
                places,
                look_alike,
            } => {
                if self.tokens.is_empty() {
                    return Ok(());
                }
                let t = token.index(self.tokens.len());
                let e = &mut self.tokens[t];
                let mut reported = e.plaintext.clone();
                if *look_alike {
                    let last = reported.pop().context("a token")?;
                    reported.push(if last == 'A' { 'B' } else { 'A' });
                }
                // The first place is reported twice: it is kept once.
                let reports: Vec<LeakReport> = (0..*places)
                    .chain([0])
                    .map(|i| LeakReport {
                        token: reported.clone(),
                        url: Some(format!("https://leak.test/{i}")),
                        source: Some("content".into()),
                        token_type: None,
                    })
                    .collect();
                let labels = ledger
                    .report_leaks(&reports, &Reporter::User("lifecycle".into()))
                    .await
                    .context("report leaks")?;
                let want = if *look_alike {
                    Label::FalsePositive
                } else {
                    Label::TruePositive
                };
                ensure!(labels.iter().all(|l| *l == want), "labels {labels:?}");
                if !*look_alike {
                    self.actions
                        .extend((0..*places).map(|_| (AuditAction::LeakReported, e.id)));
                    let live = matches!(
                        e.status_at(now),
                        TokenStatus::Active | TokenStatus::RotatedInGrace
                    );
                    if live {
                        e.revoked_at = Some(now);
                        self.actions.push((AuditAction::Revoked, e.id));
                    }
                    let appended = *places as u64 + u64::from(live);
                    ensure!(
                        head(store).await? == before + appended,
                        "a report appends {appended} events"
                    );
                    return Ok(());
                }
            }
        }
        // Only refusals get here.
        ensure!(head(store).await? == before, "a refusal appends nothing");
        Ok(())
    }
}

/// Every projection a store keeps, as read back from the database.
#[derive(Debug, PartialEq)]
pub(crate) struct Projections {
    pub(crate) tokens: Vec<TokenRow>,
    pub(crate) audit: Vec<AuditRow>,
    pub(crate) addresses: Vec<AddressUse>,
}

pub(crate) async fn projections(store: &Store) -> anyhow::Result<Projections> {
    Ok(Projections {
        tokens: store.tokens().await?,
        audit: store.audit(&AuditFilter::everything()).await?.rows,
        addresses: store.addresses().await?,
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
pub(crate) async fn fold_log(
    store: &Store,
    head: u64,
) -> anyhow::Result<(Vec<TokenRow>, Vec<AuditRow>, Vec<AddressUse>)> {
    const PAGE: usize = 7;
    let mut table = TokenTable::default();
    let mut audit = Vec::new();
    let mut addresses = AddressUses::default();
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
            addresses.fold(e, &decoded);
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
    Ok((
        table.rows().into_iter().cloned().collect(),
        audit,
        addresses.into_vec(),
    ))
}

async fn run_case(backend: &Backend, ops: &[Op]) -> anyhow::Result<()> {
    let db = backend.fresh().await;
    let url = db.url();
    let clock = ManualClock::new(START);
    // The model records every denial as its own event; coalescing repeats in a window has
    // tests of its own (abuse::repeated_denials_...).
    let settings = TokenSettings {
        denial_window: Duration::ZERO,
        ..TokenSettings::default()
    };
    let services = Services::open(&url, settings.clone(), Arc::new(clock.clone()))
        .await
        .context("open services")?;
    let ledger = services.ledger();
    // The same log opened beside the application layer: its head, events and projections.
    let store = Store::open(&url).await.context("open store")?;
    let mut model = Model {
        tokens: Vec::new(),
        actions: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        model
            .step(ledger, &store, &clock, op)
            .await
            .with_context(|| format!("step {i}: {op:?}"))?;
    }

    let head = head(&store).await?;
    let live = projections(&store).await?;

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

    // The cache's compact entries, folded live and streamed by a fresh start, are the
    // entries of the stored rows: the entry folds as the row does.
    let restarted = Services::open(&url, settings.clone(), Arc::new(clock.clone()))
        .await
        .context("open a second node")?;
    for row in &live.tokens {
        let stored = TokenEntry::of(row);
        ensure!(
            ledger.entry(row.id).as_ref() == Some(&stored),
            "the live cache's entry of {} differs from its stored row's: {:?} vs {stored:?}",
            row.id,
            ledger.entry(row.id)
        );
        ensure!(
            restarted.ledger().entry(row.id).as_ref() == Some(&stored),
            "the entry streamed at start-up for {} differs from its stored row's",
            row.id
        );
    }

    // An independent fold of the whole log.
    let (folded_tokens, folded_audit, folded_addresses) = fold_log(&store, head).await?;
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
    same_rows(
        "live token_addresses against a fold of the log",
        &live.addresses,
        &folded_addresses,
    )?;

    // As of every position, the token table is the fold of the events up to it (DESIGN
    // invariant 8), read through the as-of path (lifecycle index, binary search for the last
    // use) rather than a fold.
    let ids: Vec<Uuid> = live.tokens.iter().map(|r| r.id).collect();
    let now = clock.now();
    for p in 0..=head {
        let mut upto = TokenTable::default();
        let mut after = 0;
        while after < p {
            let page = store.read_from(after, 64).await?;
            let Some(last) = page.last() else { break };
            for e in page.iter().filter(|e| e.position <= p) {
                upto.apply(e, &e.decode()?);
            }
            after = last.position;
        }
        let view = |r: &TokenRow| TokenView::new(r, now);
        let mut want: Vec<TokenView> = upto.rows().into_iter().map(view).collect();
        want.sort_by_key(|v| v.id);
        let mut got: Vec<TokenView> = services
            .queries()
            .forensics()
            .rows_as_of(&ids, p)
            .await?
            .iter()
            .map(view)
            .collect();
        got.sort_by_key(|v| v.id);
        ensure!(
            got == want,
            "as of position {p}: {got:#?}\nthe fold: {want:#?}"
        );
    }

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
        "token_addresses after rebuild",
        &rebuilt.addresses,
        &live.addresses,
    )?;
    ensure!(
        rebuilt == live,
        "projections after rebuild differ from the live ones"
    );
    Ok(())
}

/// Where each case's fresh database is made.
enum Backend {
    Sqlite,
    /// The admin URL new databases are created through.
    Postgres(String),
}

impl Backend {
    async fn fresh(&self) -> TestDb {
        match self {
            Backend::Sqlite => TestDb::sqlite(),
            Backend::Postgres(admin) => TestDb::Postgres(PgTestDb::new(admin).await),
        }
    }
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
