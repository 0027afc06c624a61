//! Building the database: tokens, then recorded uses with revocations and rotations sprinkled
//! among them, all through the log's own append path (`Store::append`, in-process), with many
//! concurrent appenders sending multi-event batches so the group-commit writer fills big
//! transactions.
//!
//! Everything is derived from a token's index: its secret (so a later run can present the
//! plaintext of token `i` to a server on a kept database), its scopes, name, expiry, home
//! addresses, and whether it is revoked or rotated. Randomness is a seeded splitmix64.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenledger::store::Store;
use tokenledger::token::{PlainToken, TokenPrefix, mint_from};
use tokenledger_events::primitives::field_commitment;
use tokenledger_events::{
    AppendError, Environment, EventLog, ExpectedVersion, NewEvent, Opening, StreamAppend, StreamId,
    Timestamp, TokenCreated, TokenEvent, TokenRevoked, TokenRotated, TokenUsed,
};
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);
/// Salt of the derived secrets; a constant, so a kept database's tokens can be re-derived.
const SEED: [u8; 32] = *b"tokenledger scale-bench seed v1!";

/// Tokens created per task step, and per append batch.
const CREATE_CHUNK: u64 = 1_000;
const CREATES_PER_BATCH: u64 = 50;
/// Uses per task step, and the most events one append batch carries.
const USE_CHUNK: u64 = 4_000;
const EVENTS_PER_BATCH: u64 = 48;

/// The first `VERIFIERS` tokens are services calling `POST /v1/verify` (scope tokens:verify).
pub const VERIFIERS: u64 = 8;

/// A handful of client addresses every use comes from.
const IPS: [&str; 12] = [
    "10.0.12.7",
    "10.0.12.8",
    "10.0.40.21",
    "10.0.40.22",
    "172.16.5.10",
    "172.16.5.11",
    "192.168.1.50",
    "203.0.113.7",
    "203.0.113.19",
    "198.51.100.23",
    "2001:db8::17",
    "2001:db8::2a",
];
const USER_AGENTS: [&str; 6] = [
    "deploy-bot/2.3.1",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "GitHub-Actions-Runner/2.317.0",
    "terraform-provider-tokenledger/0.4.0",
    "Go-http-client/1.1",
];
const COMMANDS: [&str; 4] = ["db:health", "ping", "projections:status", "tokens:stale"];
const VERIFIED_PATHS: [&str; 5] = [
    "/v2/acme/api/manifests/latest",
    "/v2/acme/web/blobs/sha256:4f1e",
    "/v2/acme/worker/manifests/1.42.0",
    "/internal/billing/export",
    "/internal/search/reindex",
];
const NAMES: [&str; 6] = [
    "ci-deploy",
    "svc-billing",
    "monitoring",
    "registry-pull",
    "backup-job",
    "terraform",
];

/// Whether token `i` is revoked during the use phase (1 in 100).
pub fn is_revoked(i: u64) -> bool {
    i % 100 == 37
}

/// Whether token `i` is rotated during the use phase (1 in 200); its successor is token
/// `n + i`.
pub fn is_rotated(i: u64) -> bool {
    i % 200 == 11
}

/// Whether token `i` expires 30 days after creation (1 in 20): expired by the end of the run.
pub fn is_short_lived(i: u64) -> bool {
    i % 20 == 3
}

/// The secret of token `i` (successors are `n + i`).
fn secret(i: u64) -> [u8; 32] {
    field_commitment("scale-bench/secret", &SEED, &i.to_le_bytes()).0
}

/// The plaintext of token `i`, as minted when the database was built.
pub fn plaintext(i: u64) -> PlainToken {
    mint_from(&TokenPrefix::default(), Environment::Test, &secret(i))
}

fn scopes(i: u64) -> Vec<String> {
    let s: &[&str] = if i < VERIFIERS {
        &["tokens:verify"]
    } else if i % 50 == 6 {
        &["admin"]
    } else {
        match i % 6 {
            0 => &["registry:read"],
            1 => &["registry:read", "registry:write"],
            2 => &["console:exec"],
            3 => &["logs:read"],
            4 => &["console:exec", "logs:read"],
            _ => &["registry:read", "logs:read"],
        }
    };
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// splitmix64: fast, seeded, good enough to spread uses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5851_F42D_4C95_7F2D)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Event times: spread evenly over the 180 days before the run, in the order events are made
/// (appenders run concurrently, so neighbouring positions may be a few minutes out of order).
pub struct Clock {
    start: i64,
    step: i64,
    seq: AtomicU64,
}

impl Clock {
    pub fn new(now: Timestamp, events: u64) -> Clock {
        let span = i64::try_from((180 * DAY).as_micros()).unwrap_or(i64::MAX);
        Clock {
            start: now.minus(180 * DAY).as_micros(),
            step: (span / i64::try_from(events.max(1)).unwrap_or(i64::MAX)).max(1),
            seq: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> Timestamp {
        let k = self.seq.fetch_add(1, Ordering::Relaxed);
        Timestamp::from_micros(self.start + self.step * i64::try_from(k).unwrap_or(i64::MAX))
    }
}

fn new_event(at: Timestamp, actor: String, event: TokenEvent, openings: Vec<Opening>) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: at,
        actor,
        event,
        openings,
    }
}

/// Token `index`'s creation (a successor when `rotated_from` is set), with a real commitment
/// to its hash and the opening of it.
fn created(index: u64, id: Uuid, at: Timestamp, rotated_from: Option<Uuid>) -> NewEvent {
    let hash = plaintext(index).hash();
    let opening = Opening {
        field: TokenCreated::SECRET_FIELD.into(),
        salt: field_commitment("scale-bench/salt", &SEED, &index.to_le_bytes()).0,
        value: hash.0.to_vec(),
    };
    let lifetime = if is_short_lived(index) { 30 } else { 365 };
    let by = if index.is_multiple_of(3) {
        "cli:ops"
    } else {
        "user_2NfBenchAdmin"
    };
    let event = TokenCreated {
        token_id: id,
        name: format!(
            "{}-{index:07}",
            NAMES[(index % NAMES.len() as u64) as usize]
        ),
        scopes: scopes(index),
        environment: Environment::Test,
        expires_at: at.plus(lifetime * DAY),
        created_by: by.into(),
        secret_commitment: opening.commitment(),
        rotated_from,
        allowed_ips: Vec::new(),
    };
    new_event(at, by.into(), TokenEvent::Created(event), vec![opening])
}

/// Counters the progress line reads.
#[derive(Default)]
pub struct Progress {
    pub events: AtomicU64,
    pub uses: AtomicU64,
    pub done: AtomicBool,
}

/// Print a line every `every` until `progress.done`.
pub fn report_progress(
    label: &'static str,
    target: u64,
    progress: Arc<Progress>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(every).await;
            if progress.done.load(Ordering::Relaxed) {
                return;
            }
            let events = progress.events.load(Ordering::Relaxed);
            let uses = progress.uses.load(Ordering::Relaxed);
            let now = Instant::now();
            let recent = (events - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            let overall = events as f64 / start.elapsed().as_secs_f64();
            let shown = if label == "uses" { uses } else { events };
            println!(
                "   {label}: {} / {} after {:.0} s ({} ev/s lately, {} ev/s overall)",
                crate::thousands(shown),
                crate::thousands(target),
                start.elapsed().as_secs_f64(),
                crate::thousands(recent as u64),
                crate::thousands(overall as u64),
            );
            last = (events, now);
        }
    })
}

/// Create tokens `0..n` (ids in `ids`), `CREATES_PER_BATCH` streams per append, from
/// `appenders` concurrent tasks. Returns the events appended.
pub async fn create_tokens(
    store: &Arc<Store>,
    ids: &Arc<Vec<Uuid>>,
    appenders: usize,
    clock: &Arc<Clock>,
) -> Result<u64, String> {
    let n = ids.len() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let reporter = report_progress("tokens", n, progress.clone(), Duration::from_secs(10));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..appenders {
        let (store, ids, next, clock, progress) = (
            store.clone(),
            ids.clone(),
            next.clone(),
            clock.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                let first = chunk * CREATE_CHUNK;
                if first >= n {
                    return Ok::<(), String>(());
                }
                let end = (first + CREATE_CHUNK).min(n);
                let mut i = first;
                while i < end {
                    let stop = (i + CREATES_PER_BATCH).min(end);
                    let batch: Vec<StreamAppend> = (i..stop)
                        .map(|k| StreamAppend {
                            stream_id: StreamId::for_token(ids[k as usize]),
                            expected: ExpectedVersion::NoStream,
                            events: vec![created(k, ids[k as usize], clock.tick(), None)],
                        })
                        .collect();
                    let stored = store
                        .append(batch)
                        .await
                        .map_err(|e| format!("creating tokens {i}..{stop}: {e}"))?;
                    progress
                        .events
                        .fetch_add(stored.len() as u64, Ordering::Relaxed);
                    i = stop;
                }
            }
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(format!("an appender failed: {e}")),
        }
    }
    progress.done.store(true, Ordering::Relaxed);
    reporter.abort();
    result.map(|()| progress.events.load(Ordering::Relaxed))
}

/// What the use phase appended.
#[derive(Debug, Default, Clone, Copy)]
pub struct UseStats {
    pub events: u64,
    pub uses: u64,
    pub revoked: u64,
    pub rotated: u64,
    /// Uses dropped because their token's revocation committed first (retried without them).
    pub dropped: u64,
}

struct UsePlan {
    n: u64,
    uses: u64,
    chunks: u64,
    /// Chunks a token's revocation may run ahead of the chunk that appends it.
    margin: u64,
}

impl UsePlan {
    /// The chunk whose task revokes or rotates token `i`.
    fn lifecycle_chunk(&self, i: u64) -> u64 {
        (i as u128 * self.chunks as u128 / self.n as u128) as u64
    }

    /// Whether chunk `c` may append a use of token `i`: not an expired token, and not one
    /// that is revoked near or before `c`.
    fn usable(&self, i: u64, c: u64) -> bool {
        !is_short_lived(i) && (!is_revoked(i) || self.lifecycle_chunk(i) > c + self.margin)
    }

    /// A token to use: 30% of uses go to the busiest 1% of tokens.
    fn pick(&self, rng: &mut Rng, c: u64) -> u64 {
        loop {
            let i = if rng.below(10) < 3 {
                rng.below((self.n / 100).max(1))
            } else {
                rng.below(self.n)
            };
            if i >= VERIFIERS && self.usable(i, c) {
                return i;
            }
        }
    }
}

fn ip_of(i: u64, rng: &mut Rng) -> String {
    // A quarter of the tokens are used from two addresses, the rest from one.
    let extra = if i.is_multiple_of(4) { rng.below(2) } else { 0 };
    IPS[((i + extra) % IPS.len() as u64) as usize].to_owned()
}

fn actor(id: Uuid) -> String {
    format!("token:{id}")
}

/// One append batch's worth of uses: console calls (sometimes a burst of a few) and verify
/// calls (the caller's use and the checked token's, as `POST /v1/verify` records them).
fn use_batch(
    plan: &UsePlan,
    ids: &[Uuid],
    rng: &mut Rng,
    clock: &Clock,
    chunk: u64,
    budget: u64,
) -> (Vec<StreamAppend>, u64) {
    let mut batch: Vec<StreamAppend> = Vec::new();
    let push = |batch: &mut Vec<StreamAppend>, i: u64, event: TokenUsed| {
        let id = ids[i as usize];
        let e = new_event(clock.tick(), actor(id), TokenEvent::Used(event), Vec::new());
        let stream = StreamId::for_token(id);
        match batch.iter_mut().find(|a| a.stream_id == stream) {
            Some(a) => a.events.push(e),
            None => batch.push(StreamAppend {
                stream_id: stream,
                expected: ExpectedVersion::Any,
                events: vec![e],
            }),
        }
    };
    let mut made = 0;
    while made < budget.min(EVENTS_PER_BATCH) {
        let left = budget - made;
        if rng.below(10) < 4 && left >= 2 {
            let caller = rng.below(VERIFIERS);
            let checked = plan.pick(rng, chunk);
            let ua = USER_AGENTS[(caller % USER_AGENTS.len() as u64) as usize];
            push(
                &mut batch,
                caller,
                TokenUsed {
                    ip: Some(ip_of(caller, rng)),
                    method: "POST".into(),
                    path: "/v1/verify".into(),
                    command: Some("verify".into()),
                    user_agent: Some(ua.into()),
                },
            );
            push(
                &mut batch,
                checked,
                TokenUsed {
                    ip: Some(ip_of(checked, rng)),
                    method: "VERIFY".into(),
                    path: VERIFIED_PATHS[rng.below(VERIFIED_PATHS.len() as u64) as usize].into(),
                    command: Some(format!("verify by {}", ids[caller as usize])),
                    user_agent: Some(ua.into()),
                },
            );
            made += 2;
        } else {
            let i = plan.pick(rng, chunk);
            let burst = if rng.below(2) == 0 {
                1
            } else {
                2 + rng.below(2)
            };
            let ua = USER_AGENTS[(i % USER_AGENTS.len() as u64) as usize];
            for _ in 0..burst.min(left) {
                push(
                    &mut batch,
                    i,
                    TokenUsed {
                        ip: Some(ip_of(i, rng)),
                        method: "POST".into(),
                        path: "/api/admin/console".into(),
                        command: Some(COMMANDS[rng.below(COMMANDS.len() as u64) as usize].into()),
                        user_agent: Some(ua.into()),
                    },
                );
                made += 1;
            }
        }
    }
    (batch, made)
}

/// The revocations and rotations chunk `c` appends, as one batch (successors are tokens
/// `n + i`, created in the same batch as the rotation, as `tokenledger` rotates).
fn lifecycle_batch(
    plan: &UsePlan,
    ids: &[Uuid],
    successors: &[Uuid],
    clock: &Clock,
    c: u64,
) -> (Vec<StreamAppend>, u64, u64) {
    let first = (c as u128 * plan.n as u128).div_ceil(plan.chunks as u128) as u64;
    let end = ((c + 1) as u128 * plan.n as u128).div_ceil(plan.chunks as u128) as u64;
    let (mut revoked, mut rotated) = (0, 0);
    let mut batch = Vec::new();
    for i in first..end.min(plan.n) {
        if i < VERIFIERS || plan.lifecycle_chunk(i) != c {
            continue;
        }
        let id = ids[i as usize];
        if is_revoked(i) {
            batch.push(StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::Any,
                events: vec![new_event(
                    clock.tick(),
                    "user_2NfBenchAdmin".into(),
                    TokenEvent::Revoked(TokenRevoked {
                        actor: "user_2NfBenchAdmin".into(),
                        reason: Some("leaked in a CI log".into()),
                    }),
                    Vec::new(),
                )],
            });
            revoked += 1;
        } else if is_rotated(i) {
            let successor = successors[(i / 200) as usize];
            let at = clock.tick();
            batch.push(StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::Any,
                events: vec![new_event(
                    at,
                    "cli:ops".into(),
                    TokenEvent::Rotated(TokenRotated {
                        successor_id: successor,
                        old_expires_at: at.plus(7 * DAY),
                        until_successor_used: false,
                    }),
                    Vec::new(),
                )],
            });
            batch.push(StreamAppend {
                stream_id: StreamId::for_token(successor),
                expected: ExpectedVersion::NoStream,
                events: vec![created(plan.n + i, successor, clock.tick(), Some(id))],
            });
            rotated += 1;
        }
    }
    (batch, revoked, rotated)
}

/// Append `batch`; a use refused because its token's revocation committed first is dropped
/// and the rest appended again. Returns (events appended, uses dropped).
async fn append_uses(store: &Store, mut batch: Vec<StreamAppend>) -> Result<(u64, u64), String> {
    let mut dropped = 0;
    loop {
        if batch.is_empty() {
            return Ok((0, dropped));
        }
        match store.append(batch.clone()).await {
            Ok(stored) => return Ok((stored.len() as u64, dropped)),
            Err(AppendError::Closed { stream }) => {
                let before: usize = batch.iter().map(|a| a.events.len()).sum();
                batch.retain(|a| a.stream_id != stream);
                let after: usize = batch.iter().map(|a| a.events.len()).sum();
                dropped += (before - after) as u64;
            }
            Err(e) => return Err(format!("appending uses: {e}")),
        }
    }
}

/// Append `uses` uses over tokens `0..ids.len()`, with the revocations and rotations spread
/// over the run, from `appenders` concurrent tasks.
pub async fn record_uses(
    store: &Arc<Store>,
    ids: &Arc<Vec<Uuid>>,
    uses: u64,
    appenders: usize,
    clock: &Arc<Clock>,
) -> Result<UseStats, String> {
    let n = ids.len() as u64;
    let chunks = uses.div_ceil(USE_CHUNK).max(1);
    let plan = Arc::new(UsePlan {
        n,
        uses,
        chunks,
        margin: 2 * appenders as u64 + 2,
    });
    let successors: Arc<Vec<Uuid>> =
        Arc::new((0..n.div_ceil(200)).map(|_| Uuid::now_v7()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let reporter = report_progress("uses", uses, progress.clone(), Duration::from_secs(15));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..appenders {
        let (store, ids, next, clock, progress, plan, successors) = (
            store.clone(),
            ids.clone(),
            next.clone(),
            clock.clone(),
            progress.clone(),
            plan.clone(),
            successors.clone(),
        );
        tasks.spawn(async move {
            let mut stats = UseStats::default();
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= plan.chunks {
                    return Ok::<UseStats, String>(stats);
                }
                let mut rng = Rng::new(c.wrapping_mul(1_000_003) ^ t as u64);
                let (life, revoked, rotated) = lifecycle_batch(&plan, &ids, &successors, &clock, c);
                if !life.is_empty() {
                    let stored = store
                        .append(life)
                        .await
                        .map_err(|e| format!("revoking or rotating in chunk {c}: {e}"))?;
                    stats.events += stored.len() as u64;
                    progress
                        .events
                        .fetch_add(stored.len() as u64, Ordering::Relaxed);
                    stats.revoked += revoked;
                    stats.rotated += rotated;
                }
                let mut left = (plan.uses - c * USE_CHUNK).min(USE_CHUNK);
                while left > 0 {
                    let (batch, made) = use_batch(&plan, &ids, &mut rng, &clock, c, left);
                    left -= made;
                    let (appended, dropped) = append_uses(&store, batch).await?;
                    stats.events += appended;
                    stats.uses += appended;
                    stats.dropped += dropped;
                    progress.events.fetch_add(appended, Ordering::Relaxed);
                    progress.uses.fetch_add(appended, Ordering::Relaxed);
                }
            }
        });
    }
    let mut total = UseStats::default();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(s)) => {
                total.events += s.events;
                total.uses += s.uses;
                total.revoked += s.revoked;
                total.rotated += s.rotated;
                total.dropped += s.dropped;
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("an appender failed: {e}")),
        }
    }
    progress.done.store(true, Ordering::Relaxed);
    reporter.abort();
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// The token the incident report is measured on: one busy service token, used `uses` times
/// after the rest of the fill (it is not among the indexed tokens, so kept databases get it
/// added once).
pub const HOT_INDEX: u64 = 1 << 40;

pub fn hot_id() -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0ca1)
}

/// Create the hot token and record `uses` uses of it from a few addresses, unless the log
/// has it already; returns how many events were appended.
pub async fn hot_token(store: &Arc<Store>, uses: u64, appenders: usize) -> Result<u64, String> {
    let stream = StreamId::for_token(hot_id());
    let known = store
        .position_of_version(&stream, 1)
        .await
        .map_err(|e| format!("looking for the hot token: {e}"))?;
    if known.is_some() {
        return Ok(0);
    }
    // Recorded after the rest: times run on from now, one microsecond apart.
    let start = super::now();
    store
        .append(vec![StreamAppend {
            stream_id: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![created(HOT_INDEX, hot_id(), start, None)],
        }])
        .await
        .map_err(|e| format!("creating the hot token: {e}"))?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..appenders.clamp(1, 8) {
        let (store, next, stream) = (store.clone(), next.clone(), stream.clone());
        tasks.spawn(async move {
            let mut appended = 0;
            loop {
                let from = next.fetch_add(EVENTS_PER_BATCH, Ordering::Relaxed);
                if from >= uses {
                    return Ok::<u64, String>(appended);
                }
                let events: Vec<NewEvent> = (from..(from + EVENTS_PER_BATCH).min(uses))
                    .map(|k| {
                        let at = start.plus_micros(1 + i64::try_from(k).unwrap_or(i64::MAX));
                        let used = TokenUsed {
                            ip: Some(IPS[(k % 3) as usize].to_owned()),
                            method: "POST".into(),
                            path: "/api/admin/console".into(),
                            command: Some(COMMANDS[(k % COMMANDS.len() as u64) as usize].into()),
                            user_agent: Some(USER_AGENTS[0].into()),
                        };
                        new_event(at, actor(hot_id()), TokenEvent::Used(used), Vec::new())
                    })
                    .collect();
                let n = events.len() as u64;
                store
                    .append(vec![StreamAppend {
                        stream_id: stream.clone(),
                        expected: ExpectedVersion::Any,
                        events,
                    }])
                    .await
                    .map_err(|e| format!("appending the hot token's uses: {e}"))?;
                appended += n;
            }
        });
    }
    let mut total = 1;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(|e| e.to_string())??;
    }
    Ok(total)
}
