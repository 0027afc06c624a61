//! How long a revocation written on node A takes to reach node B's reader, with the log kept
//! apart from the projections (`store::upstream`, the arrangement of a KurrentDB log) beside
//! the baseline of two nodes sharing one SQL log, measured in the same run.
//!
//! - **Baseline**: A and B open the same log; B's reader tails it (`wait_for` + `read_from`,
//!   as the token cache does), woken by LISTEN/NOTIFY on PostgreSQL.
//! - **Split**: the primary log is that same kind of log (PostgreSQL standing in for KurrentDB,
//!   which no machine here runs); A and B each follow it with a projection database of their
//!   own (SQLite files). B's follower copies each new event into B's projections, and B's
//!   reader tails those. The difference is what the split adds: the subscription lag.
//!
//! For each of `--revocations` tokens: A creates it (untimed, B catches up), then A revokes
//! it; the clock runs from A's append returning to B's reader holding the revocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokenledger::store::{Database, DatabaseUrl, Store};
use tokenledger_events::{
    EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Timestamp, TokenEvent,
    TokenRevoked,
};
use tokio::sync::watch;
use uuid::Uuid;

#[path = "../pg.rs"]
mod pg;
use pg::{create_pg_database, drop_pg_database};

#[derive(Parser)]
struct Args {
    /// Revocations timed per arrangement.
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// PostgreSQL server (its `postgres` database); scratch databases are created and dropped.
    /// Without it both arrangements use a SQLite file as the log (B then polls every 50 ms).
    #[arg(long, env = "BENCH_DATABASE_URL")]
    postgres: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("tokenledger-lag-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = |name: &str| {
        DatabaseUrl::parse(&format!("sqlite://{}?mode=rwc", dir.join(name).display()))
            .expect("sqlite url")
    };

    let mut scratch = Vec::new();
    let (log_shared, log_primary, kind) = match &args.postgres {
        Some(admin) => {
            let (a, an) = create_pg_database(admin).await;
            let (b, bn) = create_pg_database(admin).await;
            scratch.extend([an, bn]);
            (
                DatabaseUrl::parse(&a).expect("pg url"),
                DatabaseUrl::parse(&b).expect("pg url"),
                "PostgreSQL",
            )
        }
        None => (sqlite("shared.db"), sqlite("primary.db"), "SQLite"),
    };

    println!(
        "revocation reaching another node's reader, {} revocations each, the log in {kind}",
        args.revocations
    );
    let a = Arc::new(Store::open(&log_shared).await.expect("open"));
    let b = Arc::new(Store::open(&log_shared).await.expect("open"));
    let baseline = measure(&a, &b, args.revocations).await;
    report("baseline: two nodes on one log", &baseline);

    let primary_a = Store::open(&log_primary).await.expect("open primary");
    let primary_b = Store::open(&log_primary).await.expect("open primary");
    let a = Arc::new(follow(&sqlite("projections-a.db"), primary_a).await);
    let b = Arc::new(follow(&sqlite("projections-b.db"), primary_b).await);
    let follower = tokio::spawn(tokenledger::store::upstream::follow(&b));
    let split = measure(&a, &b, args.revocations).await;
    follower.abort();
    report("split: each node's projections follow the log", &split);
    let lag = b.upstream().expect("follows").lag();
    println!(
        "B's follower at the end: primary head {}, copied {}, lag {} events",
        lag.primary,
        lag.copied,
        lag.events()
    );
    println!(
        "the split adds {:.2} ms at p50 and {:.2} ms at p99",
        ms(pct(&split, 0.50)) - ms(pct(&baseline, 0.50)),
        ms(pct(&split, 0.99)) - ms(pct(&baseline, 0.99))
    );

    if let Some(admin) = &args.postgres {
        for name in scratch {
            drop_pg_database(admin, &name).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn follow(url: &DatabaseUrl, primary: Store) -> Store {
    let db = Database::connect(url).await.expect("connect");
    db.migrate().await.expect("migrate");
    Store::open_following(&db, Arc::new(primary), "the primary log".into())
        .await
        .expect("follow")
}

/// Time each revocation from A's append returning to B's reader holding it.
async fn measure(a: &Arc<Store>, b: &Arc<Store>, revocations: usize) -> Vec<Duration> {
    let start = b.head().await.expect("head").position;
    let (seen_tx, mut seen) = watch::channel(start);
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut at = start;
            loop {
                let head = b
                    .wait_for(at + 1, Duration::from_secs(1))
                    .await
                    .expect("wait");
                if head.position > at {
                    let events = b.read_from(at, 1000).await.expect("read");
                    if let Some(last) = events.last() {
                        at = last.position;
                        seen_tx.send_replace(at);
                    }
                }
            }
        })
    };
    let mut times = Vec::with_capacity(revocations);
    for _ in 0..revocations {
        let id = Uuid::now_v7();
        let s = StreamId::for_token(id);
        let created = a
            .append(vec![StreamAppend {
                stream_id: s.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![created(id)],
            }])
            .await
            .expect("create");
        wait_seen(&mut seen, created[0].position).await;
        let revoked = a
            .append(vec![StreamAppend {
                stream_id: s,
                expected: ExpectedVersion::Exact(1),
                events: vec![event(TokenEvent::Revoked(TokenRevoked {
                    actor: "bench:lag".into(),
                    reason: Some("timed".into()),
                }))],
            }])
            .await
            .expect("revoke");
        let t0 = Instant::now();
        wait_seen(&mut seen, revoked[0].position).await;
        times.push(t0.elapsed());
    }
    reader.abort();
    times.sort();
    times
}

async fn wait_seen(seen: &mut watch::Receiver<u64>, position: u64) {
    tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|p| *p >= position))
        .await
        .expect("B's reader holds it within 30 s")
        .expect("reader running");
}

fn created(id: Uuid) -> NewEvent {
    let salt = [7u8; 32];
    let hash = format!("bench-{id}").into_bytes();
    let commitment = tokenledger_events::chain::field_commitment(
        tokenledger_events::TokenCreated::SECRET_FIELD,
        &salt,
        &hash,
    );
    let mut created = event(TokenEvent::Created(tokenledger_events::TokenCreated {
        token_id: id,
        name: "lag".into(),
        scopes: vec!["console:exec".into()],
        environment: tokenledger_events::Environment::Test,
        expires_at: Timestamp::from_micros(4_000_000_000_000_000),
        created_by: "bench:lag".into(),
        secret_commitment: commitment,
        rotated_from: None,
        allowed_ips: Vec::new(),
    }));
    created.openings.push(tokenledger_events::Opening {
        field: tokenledger_events::TokenCreated::SECRET_FIELD.into(),
        salt,
        value: hash,
    });
    created
}

fn event(event: TokenEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: Timestamp::from_micros(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
        ),
        actor: "bench:lag".into(),
        event,
        openings: Vec::new(),
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, sorted: &[Duration]) {
    println!(
        "  {what:<48} p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        ms(pct(sorted, 0.50)),
        ms(pct(sorted, 0.90)),
        ms(pct(sorted, 0.99)),
        ms(*sorted.last().expect("measured"))
    );
}
