//! Append throughput of the group-commit writer, against a baseline measured in the same run.
//!
//! For each backend (SQLite always; PostgreSQL when a URL is given) and for 1 and 32
//! concurrent appenders, it appends single-event batches for a fixed time through
//! tokenledger's log, then runs the baseline on the same database: one plain INSERT per
//! transaction with the same durability (what an append costs without group commit, hash
//! chain, version checks or openings). It prints events/s for both and their ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokenledger::store::{DatabaseUrl, Store};
use tokenledger_events::{
    EventLog, ExpectedVersion, NewEvent, StreamAppend, StreamId, Timestamp, TokenEvent, TokenUsed,
};
use uuid::Uuid;

#[path = "../pg.rs"]
mod pg;
use pg::{create_pg_database, drop_pg_database};

#[derive(Parser)]
struct Args {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    appenders: Vec<usize>,
    /// PostgreSQL server (its `postgres` database); a scratch database is created and dropped.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    postgres: Option<String>,
}

struct Row {
    backend: &'static str,
    appenders: usize,
    ours: f64,
    baseline: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let run = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();

    let dir = std::env::temp_dir().join(format!("tokenledger-bench-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for &n in &args.appenders {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("log-{n}.db")).display()
        );
        let ours = tokenledger_rate(&url, n, run).await;
        let baseline = sqlite_baseline(&url, n, run).await;
        rows.push(Row {
            backend: "sqlite",
            appenders: n,
            ours,
            baseline,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);

    match &args.postgres {
        Some(admin) => {
            for &n in &args.appenders {
                let (url, name) = create_pg_database(admin).await;
                let ours = tokenledger_rate(&url, n, run).await;
                let baseline = pg_baseline(&url, n, run).await;
                drop_pg_database(admin, &name).await;
                rows.push(Row {
                    backend: "postgres",
                    appenders: n,
                    ours,
                    baseline,
                });
            }
        }
        None => println!("postgres: skipped (set BENCH_DATABASE_URL or pass --postgres)"),
    }

    println!();
    println!("append throughput, {}s per measurement", args.seconds);
    println!(
        "{:<9} {:>9} {:>16} {:>22} {:>7}",
        "backend", "appenders", "tokenledger ev/s", "baseline ev/s (1 tx/ev)", "ratio"
    );
    for r in &rows {
        println!(
            "{:<9} {:>9} {:>16.0} {:>22.0} {:>7.2}",
            r.backend,
            r.appenders,
            r.ours,
            r.baseline,
            r.ours / r.baseline
        );
    }
}

fn used_event() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        recorded_at: Timestamp::from_micros(1_700_000_000_000_000),
        actor: "bench".into(),
        event: TokenEvent::Used(TokenUsed {
            ip: Some("127.0.0.1".into()),
            method: "POST".into(),
            path: "/api/admin/console".into(),
            command: Some("db:health".into()),
            user_agent: Some("bench".into()),
        }),
        openings: Vec::new(),
    }
}

/// Run `n` tasks calling `step` until `run` passes; returns completed steps per second.
async fn measure<F, Fut>(n: usize, run: Duration, step: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let step = Arc::new(step);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..n {
        let (step, done) = (step.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                step(task).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn tokenledger_rate(url: &str, n: usize, run: Duration) -> f64 {
    let store = Arc::new(
        Store::open(&DatabaseUrl::parse(url).expect("url"))
            .await
            .expect("open store"),
    );
    let streams: Arc<Vec<StreamId>> = Arc::new(
        (0..n)
            .map(|_| StreamId::for_token(Uuid::now_v7()))
            .collect(),
    );
    let log = store.clone();
    let rate = measure(n, run, move |task| {
        let (log, stream) = (log.clone(), streams[task].clone());
        async move {
            log.append(vec![StreamAppend {
                stream_id: stream,
                expected: ExpectedVersion::Any,
                events: vec![used_event()],
            }])
            .await
            .expect("append");
        }
    })
    .await;
    tokenledger_events::verify_chain(&*store)
        .await
        .expect("the benchmarked log verifies");
    rate
}

const BASELINE_TABLE: &str =
    "CREATE TABLE bench_baseline (id BIGINT NOT NULL PRIMARY KEY, body BYTEA NOT NULL)";

async fn sqlite_baseline(url: &str, n: usize, run: Duration) -> f64 {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use std::str::FromStr;
    let options = SqliteConnectOptions::from_str(url)
        .expect("url")
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    // One connection, as SQLite allows one writer; every insert is its own transaction.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect");
    sqlx::query(BASELINE_TABLE)
        .execute(&pool)
        .await
        .expect("table");
    let next = Arc::new(AtomicU64::new(1));
    measure(n, run, move |_| {
        let (pool, id) = (pool.clone(), next.fetch_add(1, Ordering::Relaxed));
        async move {
            sqlx::query("INSERT INTO bench_baseline (id, body) VALUES ($1, $2)")
                .bind(id as i64)
                .bind(&[0u8; 300][..])
                .execute(&pool)
                .await
                .expect("insert");
        }
    })
    .await
}

async fn pg_baseline(url: &str, n: usize, run: Duration) -> f64 {
    use sqlx::postgres::PgPoolOptions;
    // A connection per appender: the best a plain per-event commit can do.
    let pool = PgPoolOptions::new()
        .max_connections(n as u32)
        .connect(url)
        .await
        .expect("connect");
    sqlx::query(BASELINE_TABLE)
        .execute(&pool)
        .await
        .expect("table");
    let next = Arc::new(AtomicU64::new(1));
    measure(n, run, move |_| {
        let (pool, id) = (pool.clone(), next.fetch_add(1, Ordering::Relaxed));
        async move {
            sqlx::query("INSERT INTO bench_baseline (id, body) VALUES ($1, $2)")
                .bind(id as i64)
                .bind(&[0u8; 300][..])
                .execute(&pool)
                .await
                .expect("insert");
        }
    })
    .await
}
