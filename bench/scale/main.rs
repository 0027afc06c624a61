//! Scale: tokenledger with a large database, each figure beside a baseline measured in the
//! same run on the same machine. Run it through `bench/scale.sh`.
//!
//! For SQLite (a temporary file, or `--keep PATH`) and, when a server is named, PostgreSQL
//! (a scratch database, `--pg-scale` of the size), it:
//!
//! 1. builds a log of `--tokens` tokens and `--uses` recorded uses in-process through
//!    `Store::append` (concurrent appenders, multi-event batches), with real commitments and
//!    openings, a few revocations and rotations, and times it;
//! 2. measures the real release binary against baselines on the same database:
//!    `serve` start-up to `/readyz` and its memory (against the same binary on an empty
//!    database, and a plain SQL read of `api_tokens`); admin API pages (against `/healthz` on
//!    the same server); `tokenledger audit` (against the same command on the empty database);
//!    `projections rebuild` (against a SQL floor: read every event, write one row per token);
//!    `verify` (against a plain scan with SHA-256 over the stored bytes); and bytes per
//!    recorded use (against the payload bytes alone).

mod fill;
mod procs;
mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokenledger::app::TokenCursor;
use tokenledger::store::{DatabaseUrl, Store};
use tokenledger_events::{EventLog, Timestamp};
use uuid::Uuid;

use procs::{Registry, Target, lock, median_max};
use sql::{Conn, Sizes, table_bytes};

/// The allocator tokenledger's binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Verification must check at least this many events per second.
const VERIFY_TARGET: f64 = 500_000.0;
/// A recorded use may cost at most this many bytes on SQLite.
const BYTES_PER_USE_TARGET: f64 = 400.0;

#[derive(Parser, Clone)]
#[command(about = "tokenledger at scale, beside same-run baselines; run through bench/scale.sh")]
struct Args {
    /// Tokens to create.
    #[arg(long, default_value_t = 1_000_000)]
    tokens: u64,
    /// Uses to record.
    #[arg(long, default_value_t = 10_000_000)]
    uses: u64,
    /// Keep the SQLite database at PATH, and reuse it (skipping the fill) when it already
    /// holds a log.
    #[arg(long, value_name = "PATH")]
    keep: Option<PathBuf>,
    /// PostgreSQL server (its `postgres` database); scratch databases are created and dropped.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    postgres: Option<String>,
    /// PostgreSQL builds this fraction of --tokens and --uses, so its run stays bounded.
    #[arg(long, default_value_t = 0.1)]
    pg_scale: f64,
    /// Skip SQLite (measure PostgreSQL only).
    #[arg(long)]
    no_sqlite: bool,
    /// The release binary to measure.
    #[arg(long, default_value = "target/release/tokenledger")]
    bin: PathBuf,
    /// Concurrent appenders during the fill.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Requests timed per route.
    #[arg(long, default_value_t = 15)]
    requests: usize,
    /// Uses of the one busy token the incident report is timed on (PostgreSQL: --pg-scale of
    /// it).
    #[arg(long, default_value_t = 1_000_000)]
    hot_uses: u64,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.2} ms", s * 1000.0)
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ratio(figure: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", figure / baseline)
    }
}

/// One line of the results: a figure, its baseline (same run), and figure / baseline.
struct Row {
    what: String,
    figure: String,
    baseline: String,
    ratio: String,
}

struct Report {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, figure: String, baseline: String, ratio: String) {
        self.rows.push(Row {
            what: what.into(),
            figure,
            baseline,
            ratio,
        });
    }

    fn section(&mut self, name: &str) {
        self.row(
            &format!("-- {name}"),
            String::new(),
            String::new(),
            String::new(),
        );
    }

    fn print(&self) {
        println!();
        println!("== {}", self.title);
        println!(
            "{:<46} {:>24}  {:<50} figure/baseline",
            "measure", "figure", "baseline (same run, same machine)"
        );
        for r in &self.rows {
            if r.figure.is_empty() && r.baseline.is_empty() {
                println!("{}", r.what);
            } else {
                println!(
                    "{:<46} {:>24}  {:<50} {}",
                    r.what, r.figure, r.baseline, r.ratio
                );
            }
        }
        for n in &self.notes {
            println!("{n}");
        }
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: nproc {nproc}, {model}, {:.1} GiB memory; load average at start {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        load.join(" ")
    )
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    Timestamp::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// What the fill recorded, kept beside a `--keep` database so a later run can report it.
#[derive(Default, Clone)]
struct FillRecord {
    tokens: u64,
    created_events: u64,
    create_time: Duration,
    use_events: u64,
    uses: u64,
    use_time: Duration,
    revoked: u64,
    rotated: u64,
    dropped: u64,
    /// Sizes after the tokens were created, before any use.
    before_uses: Sizes,
}

impl FillRecord {
    fn sidecar(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".scale-bench");
        PathBuf::from(name)
    }

    fn save(&self, path: &Path) -> Result<(), String> {
        let mut text = format!(
            "tokens {}\ncreated_events {}\ncreate_ms {}\nuse_events {}\nuses {}\nuse_ms {}\n\
             revoked {}\nrotated {}\ndropped {}\n",
            self.tokens,
            self.created_events,
            self.create_time.as_millis(),
            self.use_events,
            self.uses,
            self.use_time.as_millis(),
            self.revoked,
            self.rotated,
            self.dropped
        );
        for (table, relations) in &self.before_uses {
            for (name, bytes) in relations {
                text.push_str(&format!("size {table} {name} {bytes}\n"));
            }
        }
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn load(path: &Path) -> Option<FillRecord> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut r = FillRecord::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| {
                parts
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match parts.first().copied() {
                Some("tokens") => r.tokens = num(1),
                Some("created_events") => r.created_events = num(1),
                Some("create_ms") => r.create_time = Duration::from_millis(num(1)),
                Some("use_events") => r.use_events = num(1),
                Some("uses") => r.uses = num(1),
                Some("use_ms") => r.use_time = Duration::from_millis(num(1)),
                Some("revoked") => r.revoked = num(1),
                Some("rotated") => r.rotated = num(1),
                Some("dropped") => r.dropped = num(1),
                Some("size") if parts.len() == 4 => {
                    r.before_uses
                        .entry(parts[1].to_owned())
                        .or_default()
                        .insert(parts[2].to_owned(), num(3) as i64);
                }
                _ => {}
            }
        }
        Some(r)
    }
}

enum Backend {
    Sqlite {
        path: PathBuf,
        /// `--keep`: the database outlives the run.
        kept: bool,
    },
    Postgres {
        admin: String,
    },
}

/// Build (or reuse) the database at `url`, appending through `Store`.
async fn build(
    url: &str,
    tokens: u64,
    uses: u64,
    args: &Args,
    sidecar: Option<&Path>,
) -> Result<(FillRecord, bool), String> {
    let store = Arc::new(
        Store::open(&DatabaseUrl::parse(url).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| format!("opening the log: {e}"))?,
    );
    let head = store.head().await.map_err(|e| e.to_string())?.position;
    if head > 0 {
        let record = sidecar.and_then(FillRecord::load).unwrap_or_default();
        println!(
            "   reusing the kept database: {} events at its head (no fill; --tokens/--uses ignored)",
            thousands(head)
        );
        return Ok((record, true));
    }
    let mut conn = Conn::open(url).await?;
    let rotations = tokens.div_ceil(200);
    let clock = Arc::new(fill::Clock::new(
        now(),
        tokens + uses + tokens / 100 + 2 * rotations,
    ));
    println!(
        "   creating {} tokens ({} appenders, {} per batch) ...",
        thousands(tokens),
        args.appenders,
        50
    );
    let ids: Arc<Vec<Uuid>> = Arc::new((0..tokens).map(|_| Uuid::now_v7()).collect());
    let start = Instant::now();
    let created_events = fill::create_tokens(&store, &ids, args.appenders, &clock).await?;
    let create_time = start.elapsed();
    println!(
        "   created {} tokens in {} ({} ev/s); measuring sizes before the uses ...",
        thousands(created_events),
        secs(create_time),
        thousands(rate(created_events, create_time) as u64)
    );
    let before_uses = sql::sizes(&mut conn).await?;
    println!(
        "   recording {} uses (up to 48 events per batch, revocations and rotations among them) ...",
        thousands(uses)
    );
    let start = Instant::now();
    let stats = fill::record_uses(&store, &ids, uses, args.appenders, &clock).await?;
    let use_time = start.elapsed();
    println!(
        "   recorded {} uses, {} revocations, {} rotations ({} events) in {} ({} ev/s)",
        thousands(stats.uses),
        thousands(stats.revoked),
        thousands(stats.rotated),
        thousands(stats.events),
        secs(use_time),
        thousands(rate(stats.events, use_time) as u64)
    );
    conn.close().await;
    drop(store);
    let record = FillRecord {
        tokens,
        created_events,
        create_time,
        use_events: stats.events,
        uses: stats.uses,
        use_time,
        revoked: stats.revoked,
        rotated: stats.rotated,
        dropped: stats.dropped,
        before_uses,
    };
    if let Some(path) = sidecar {
        record.save(path)?;
    }
    Ok((record, false))
}

/// Time `path` `n` times: (median, max, last answer's body).
fn time_route(
    server: &procs::Server,
    path: &str,
    bearer: Option<&str>,
    n: usize,
) -> Result<(Duration, Duration, String), String> {
    let mut times = Vec::with_capacity(n);
    let mut body = String::new();
    for _ in 0..n {
        let r = server.get(path, bearer)?;
        if r.status != 200 {
            return Err(format!(
                "GET {path} answered {}: {}",
                r.status,
                r.body.chars().take(300).collect::<String>()
            ));
        }
        times.push(r.elapsed);
        body = r.body;
    }
    let (median, max) = median_max(times);
    Ok((median, max, body))
}

fn time_cli(target: &Target, args: &[&str], n: usize) -> Result<(Duration, Duration), String> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(target.cli(args)?.0);
    }
    Ok(median_max(times))
}

fn med_max(m: Duration, x: Duration) -> String {
    format!("{} (max {})", secs(m), secs(x))
}

async fn run_backend(args: &Args, backend: Backend, registry: &Registry) -> Result<Report, String> {
    let work = std::env::temp_dir().join(format!("tokenledger-scale-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(work.join("full")).map_err(|e| format!("temp dir: {e}"))?;
    std::fs::create_dir_all(work.join("empty")).map_err(|e| format!("temp dir: {e}"))?;
    lock(registry).dirs.push(work.clone());

    let (name, url, empty_url, tokens, uses, hot_uses, sidecar) = match &backend {
        Backend::Sqlite { path, kept } => (
            "sqlite",
            format!("sqlite://{}?mode=rwc", path.display()),
            format!(
                "sqlite://{}?mode=rwc",
                work.join("empty/empty.db").display()
            ),
            args.tokens,
            args.uses,
            args.hot_uses,
            kept.then(|| FillRecord::sidecar(path)),
        ),
        Backend::Postgres { admin } => {
            let (full, full_name) = sql::create_pg_database(admin, "full").await?;
            lock(registry).pg.push((admin.clone(), full_name));
            let (empty, empty_name) = sql::create_pg_database(admin, "empty").await?;
            lock(registry).pg.push((admin.clone(), empty_name));
            let scale = |v: u64| ((v as f64 * args.pg_scale) as u64).max(1);
            (
                "postgres",
                full,
                empty,
                scale(args.tokens).max(1_000),
                scale(args.uses),
                scale(args.hot_uses),
                None,
            )
        }
    };
    println!();
    println!(
        "== {name}: building {} tokens and {} uses",
        thousands(tokens),
        thousands(uses)
    );
    let target = Target {
        bin: args.bin.clone(),
        database_url: url.clone(),
        cwd: work.join("full"),
    };
    let empty = Target {
        bin: args.bin.clone(),
        database_url: empty_url,
        cwd: work.join("empty"),
    };

    // 1. The fill.
    let (record, reused) = build(&url, tokens, uses, args, sidecar.as_deref()).await?;
    let log_head;
    println!(
        "   the busy token of the incident report: {} uses ...",
        thousands(hot_uses)
    );
    {
        let store = Arc::new(
            Store::open(&DatabaseUrl::parse(&url).map_err(|e| e.to_string())?)
                .await
                .map_err(|e| format!("opening the log: {e}"))?,
        );
        let start = Instant::now();
        let added = fill::hot_token(&store, hot_uses, args.appenders).await?;
        log_head = store.head().await.map_err(|e| e.to_string())?.position;
        if added > 0 {
            println!(
                "   appended {} events in {}",
                thousands(added),
                secs(start.elapsed())
            );
        }
    }
    let mut conn = Conn::open(&url).await?;
    conn.checkpoint().await?;
    let events = conn.scalar("SELECT position FROM log_head").await? as u64;
    let token_count = conn.scalar("SELECT COUNT(*) FROM api_tokens").await? as u64;
    let mut report = Report {
        title: format!(
            "{name} results: {} tokens in api_tokens, {} events at the head",
            thousands(token_count),
            thousands(events)
        ),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    report.section("fill, in-process through Store::append (group-commit writer)");
    if record.created_events > 0 {
        let note = if reused { " (earlier run)" } else { "" };
        report.row(
            &format!("tokens: TokenCreated + opening{note}"),
            format!(
                "{} ev/s",
                thousands(rate(record.created_events, record.create_time) as u64)
            ),
            format!(
                "{} events in {}",
                thousands(record.created_events),
                secs(record.create_time)
            ),
            String::new(),
        );
        report.row(
            &format!("uses (+ revocations, rotations){note}"),
            format!(
                "{} ev/s",
                thousands(rate(record.use_events, record.use_time) as u64)
            ),
            format!(
                "{} events in {}",
                thousands(record.use_events),
                secs(record.use_time)
            ),
            String::new(),
        );
        report.notes.push(format!(
            "fill: {} appenders; tokens 50 per append batch, uses up to 48 events per batch over \
             ~16 streams; {} revoked, {} rotated (successor created in the same batch); {} uses \
             dropped because a revocation committed first",
            args.appenders,
            thousands(record.revoked),
            thousands(record.rotated),
            thousands(record.dropped)
        ));
    } else {
        report.row(
            "fill",
            "reused --keep database".into(),
            "no record of its fill".into(),
            String::new(),
        );
    }

    // 2. Bytes.
    println!("   measuring sizes ...");
    let start = Instant::now();
    let sizes = sql::sizes(&mut conn).await?;
    let db_bytes = sql::database_bytes(&mut conn).await?;
    let (use_count, payload, row_content) = sql::use_payload(&mut conn).await?;
    println!("   sizes measured in {}", secs(start.elapsed()));
    bytes_rows(
        &mut report,
        conn.is_sqlite(),
        &sizes,
        &record.before_uses,
        db_bytes,
        events,
        use_count,
        payload,
        row_content,
    );

    // 3. Rebuild against its floor.
    println!("   rebuild floor (plain SQL, one transaction) ...");
    let floor = sql::rebuild_floor(&mut conn).await?;
    conn.checkpoint().await?;
    println!(
        "   floor: read {} events in {}, {} token rows in {}, {} address rows in {}, commit {}",
        thousands(floor.read.rows),
        secs(floor.read.elapsed),
        thousands(floor.token_rows),
        secs(floor.write_tokens),
        thousands(floor.address_rows),
        secs(floor.write_addresses),
        secs(floor.commit)
    );
    println!("   tokenledger projections rebuild --quiet ...");
    let (rebuild_time, rebuild_out) = target.cli(&["projections", "rebuild", "--quiet"])?;
    println!("   {} in {}", rebuild_out.trim(), secs(rebuild_time));
    conn.checkpoint().await?;
    report.section("projections rebuild (tokenledger projections rebuild, the CLI process)");
    report.row(
        "rebuild api_tokens + token_addresses",
        secs(rebuild_time),
        format!(
            "floor {}: read events {} + {} token rows {} + commit {}",
            secs(floor.floor()),
            secs(floor.read.elapsed),
            thousands(floor.token_rows),
            secs(floor.write_tokens),
            secs(floor.commit)
        ),
        ratio(rebuild_time.as_secs_f64(), floor.floor().as_secs_f64()),
    );
    report.row(
        "  same, floor with token_addresses written too",
        secs(rebuild_time),
        format!(
            "floor {} (+ {} address rows {})",
            secs(floor.floor_with_addresses()),
            thousands(floor.address_rows),
            secs(floor.write_addresses)
        ),
        ratio(
            rebuild_time.as_secs_f64(),
            floor.floor_with_addresses().as_secs_f64(),
        ),
    );

    // 4. Verify against a scan with SHA-256.
    println!("   plain scans of the events (in the engine, to the client, with SHA-256) ...");
    let (engine_rows, engine_time) = sql::engine_scan(&mut conn).await?;
    let plain = sql::scan_events(&mut conn, false).await?;
    let hashed = sql::scan_events(&mut conn, true).await?;
    println!(
        "   scanned {} events, SHA-256 over {} of stored bodies, in {}",
        thousands(hashed.rows),
        mib(hashed.body_bytes as i64),
        secs(hashed.elapsed)
    );
    println!("   tokenledger verify --quiet ...");
    let (verify_time, verify_out) = target.cli(&["verify", "--quiet"])?;
    println!("   {} in {}", verify_out.trim(), secs(verify_time));
    let verify_rate = rate(events, verify_time);
    report.section("verify (tokenledger verify --quiet, the CLI process)");
    report.row(
        "verify events/s",
        format!("{} ev/s", thousands(verify_rate as u64)),
        format!(
            "SQL scan + SHA-256 {} ev/s",
            thousands(rate(hashed.rows, hashed.elapsed) as u64),
        ),
        ratio(verify_rate, rate(hashed.rows, hashed.elapsed)),
    );
    report.row(
        "  same, against the scan alone",
        format!("{} ev/s", thousands(verify_rate as u64)),
        format!(
            "SQL scan to the client {} ev/s",
            thousands(rate(plain.rows, plain.elapsed) as u64)
        ),
        ratio(verify_rate, rate(plain.rows, plain.elapsed)),
    );
    report.row(
        "  same, against the engine's own scan",
        format!("{} ev/s", thousands(verify_rate as u64)),
        format!(
            "SUM(length(body)) in SQL {} ev/s",
            thousands(rate(engine_rows, engine_time) as u64)
        ),
        ratio(verify_rate, rate(engine_rows, engine_time)),
    );
    report.row(
        "  target >= 500,000 ev/s",
        if verify_rate >= VERIFY_TARGET {
            "MET".into()
        } else {
            "MISSED".into()
        },
        format!("verify took {}", secs(verify_time)),
        ratio(verify_rate, VERIFY_TARGET),
    );

    // 5. The floor of loading the token table.
    let (token_rows, token_read) = sql::scan_tokens(&mut conn).await?;
    let deep = sql::token_at(&mut conn, 0.9).await?;
    let busiest = sql::busiest_token(&mut conn).await?;
    conn.close().await;

    // 6. The server: empty database first, then the full one.
    println!("   serve on an empty database (baseline) ...");
    empty.cli(&["migrate"])?;
    let empty_jwt = empty.dev_session()?;
    let (server, empty_ready) = empty.serve(registry, &work.join("empty/serve.log"))?;
    let empty_mem_ready = server.memory()?;
    let _ = time_route(&server, "/healthz", None, args.requests)?;
    let _ = time_route(
        &server,
        "/api/admin/tokens?limit=50",
        Some(&empty_jwt),
        args.requests,
    )?;
    let empty_mem = server.memory()?;
    server.stop();

    println!("   serve on the full database ...");
    let jwt = target.dev_session()?;
    let (server, ready) = target.serve(registry, &work.join("full/serve.log"))?;
    let mem_ready = server.memory()?;
    println!("   ready in {}; timing requests ...", secs(ready));
    let (h_med, h_max, _) = time_route(&server, "/healthz", None, args.requests)?;
    let mut pages = Vec::new();
    let (m, x, first_page) = time_route(
        &server,
        "/api/admin/tokens?limit=50",
        Some(&jwt),
        args.requests,
    )?;
    pages.push(("GET /api/admin/tokens?limit=50".to_owned(), m, x));
    if let Some(id) = deep {
        let cursor = TokenCursor::after(id).encode();
        let (m, x, _) = time_route(
            &server,
            &format!("/api/admin/tokens?limit=50&cursor={cursor}"),
            Some(&jwt),
            args.requests,
        )?;
        pages.push(("  ... &cursor=<90% into the table>".to_owned(), m, x));
    }
    let (m, x, revoked_page) = time_route(
        &server,
        "/api/admin/tokens?status=revoked&limit=50",
        Some(&jwt),
        args.requests,
    )?;
    pages.push(("  ... ?status=revoked&limit=50".to_owned(), m, x));
    let (m, x, _) = time_route(
        &server,
        "/api/admin/tokens?scope=admin&name_prefix=ci-deploy&limit=50",
        Some(&jwt),
        args.requests,
    )?;
    pages.push(("  ... ?scope=admin&name_prefix=ci-deploy".to_owned(), m, x));
    let (m, x, _) = time_route(
        &server,
        "/api/admin/tokens/stale?limit=50",
        Some(&jwt),
        args.requests,
    )?;
    pages.push(("GET /api/admin/tokens/stale?limit=50".to_owned(), m, x));
    if let Some((id, count)) = busiest {
        let (m, x, _) = time_route(
            &server,
            &format!("/api/admin/tokens/{id}/audit?limit=50"),
            Some(&jwt),
            args.requests,
        )?;
        pages.push((
            format!(
                "GET .../{{busiest}}/audit?limit=50 ({} uses)",
                thousands(count as u64)
            ),
            m,
            x,
        ));
        let (m, x, _) = time_route(
            &server,
            &format!("/api/admin/tokens/{id}/audit?limit=50&order=newest_first"),
            Some(&jwt),
            args.requests,
        )?;
        pages.push(("  ... &order=newest_first".to_owned(), m, x));
    }
    // Forensics: the token table as it was, and the incident report of the busy token.
    println!("   as-of pages and the incident report ...");
    let mut as_of = Vec::new();
    for (what, q) in [
        (
            "as_of=position:<half the log>".to_owned(),
            format!("as_of=position:{}", log_head / 2),
        ),
        (
            "as_of=position:<head - 1,000>".to_owned(),
            format!("as_of=position:{}", log_head.saturating_sub(1_000)),
        ),
        ("as_of=30d (an instant)".to_owned(), "as_of=30d".to_owned()),
    ] {
        let (m, x, body) = time_route(
            &server,
            &format!("/api/admin/tokens?{q}&limit=50"),
            Some(&jwt),
            args.requests,
        )?;
        as_of.push((
            what,
            m,
            x,
            procs::json_field(&body, "total").unwrap_or("?").to_owned(),
        ));
    }
    let hot = fill::hot_id();
    let incident_runs = args.requests.min(3);
    let (incident_med, incident_max, incident_body) = time_route(
        &server,
        &format!("/api/admin/tokens/{hot}/incident"),
        Some(&jwt),
        incident_runs,
    )?;
    let (hot_audit_med, hot_audit_max, _) = time_route(
        &server,
        &format!("/api/admin/tokens/{hot}/audit?limit=50"),
        Some(&jwt),
        args.requests,
    )?;

    // The token cache authenticates a token minted by the fill: a verifier checks another.
    let auth = server.post(
        "/v1/verify",
        fill::plaintext(0).expose(),
        &format!("{{\"token\":\"{}\"}}", fill::plaintext(100).expose()),
    )?;
    let auth_code = procs::json_field(&auth.body, "code")
        .unwrap_or("?")
        .to_owned();
    let mem = server.memory()?;
    server.stop();

    report.section("serve: start-up (spawn until GET /readyz answers 200) and memory");
    report.row(
        "start-up to ready",
        secs(ready),
        format!("empty database {}", secs(empty_ready)),
        ratio(ready.as_secs_f64(), empty_ready.as_secs_f64()),
    );
    report.row(
        "  same, against reading api_tokens in SQL",
        secs(ready),
        format!(
            "plain SQL read of {} api_tokens rows {}",
            thousands(token_rows),
            secs(token_read)
        ),
        ratio(ready.as_secs_f64(), token_read.as_secs_f64()),
    );
    report.row(
        "VmRSS when ready",
        kib_mib(mem_ready.rss_kib),
        format!("empty database {}", kib_mib(empty_mem_ready.rss_kib)),
        ratio(mem_ready.rss_kib as f64, empty_mem_ready.rss_kib as f64),
    );
    report.row(
        "VmRSS serving (after the requests below)",
        kib_mib(mem.rss_kib),
        format!("empty database {}", kib_mib(empty_mem.rss_kib)),
        ratio(mem.rss_kib as f64, empty_mem.rss_kib as f64),
    );
    report.row(
        "VmHWM (peak)",
        kib_mib(mem.hwm_kib),
        format!("empty database {}", kib_mib(empty_mem.hwm_kib)),
        ratio(mem.hwm_kib as f64, empty_mem.hwm_kib as f64),
    );
    let api_tokens_bytes = table_bytes(&sizes, "api_tokens");
    report.row(
        "  RSS over empty, per token",
        format!(
            "{:.0} B/token",
            (mem.rss_kib.saturating_sub(empty_mem.rss_kib) * 1024) as f64
                / token_count.max(1) as f64
        ),
        format!(
            "api_tokens on disk {:.0} B/token ({})",
            api_tokens_bytes as f64 / token_count.max(1) as f64,
            mib(api_tokens_bytes)
        ),
        ratio(
            (mem.rss_kib.saturating_sub(empty_mem.rss_kib) * 1024) as f64,
            api_tokens_bytes as f64,
        ),
    );
    report.section(&format!(
        "admin API ({} requests each, a new loopback connection each; median (max))",
        args.requests
    ));
    for (what, m, x) in &pages {
        report.row(
            what,
            med_max(*m, *x),
            format!("GET /healthz {}", med_max(h_med, h_max)),
            ratio(m.as_secs_f64(), h_med.as_secs_f64()),
        );
    }
    report.section(&format!(
        "forensics over {} events (as-of target <= 1 s on SQLite; median (max))",
        thousands(log_head)
    ));
    let (first_med, first_max) = (pages[0].1, pages[0].2);
    for (what, m, x, total) in &as_of {
        report.row(
            &format!("GET /api/admin/tokens?{what}&limit=50 ({total} tokens then)"),
            med_max(*m, *x),
            format!("the same page now {}", med_max(first_med, first_max)),
            ratio(m.as_secs_f64(), first_med.as_secs_f64()),
        );
    }
    let hot_uses_seen = incident_body
        .find("\"totals\"")
        .and_then(|i| procs::json_field(&incident_body[i..], "used"))
        .unwrap_or("?")
        .to_owned();
    report.row(
        &format!(
            "GET .../{{busy}}/incident ({hot_uses_seen} uses in the window; {incident_runs} runs)"
        ),
        med_max(incident_med, incident_max),
        format!(
            "its audit page GET .../audit?limit=50 {}",
            med_max(hot_audit_med, hot_audit_max)
        ),
        ratio(incident_med.as_secs_f64(), hot_audit_med.as_secs_f64()),
    );
    report.notes.push(format!(
        "first page: total {} counts {}; status=revoked total {}; POST /v1/verify with a \
         filled token: {} {}",
        procs::json_field(&first_page, "total").unwrap_or("?"),
        procs::json_field(&first_page, "counts").unwrap_or("?"),
        procs::json_field(&revoked_page, "total").unwrap_or("?"),
        auth.status,
        auth_code
    ));

    // 7. The audit CLI, against the same command on the empty database.
    println!("   tokenledger audit ...");
    report.section(
        "tokenledger audit (CLI process: open, verify head, load tokens, one page; median of 3)",
    );
    let mut audits: Vec<(String, Vec<String>)> = vec![
        (
            "audit --limit 100".into(),
            vec!["audit".into(), "--limit".into(), "100".into()],
        ),
        (
            "audit --limit 100 --reverse".into(),
            vec![
                "audit".into(),
                "--limit".into(),
                "100".into(),
                "--reverse".into(),
            ],
        ),
        (
            "audit --action revoked --limit 100".into(),
            vec![
                "audit".into(),
                "--action".into(),
                "revoked".into(),
                "--limit".into(),
                "100".into(),
            ],
        ),
    ];
    if let Some((id, _)) = busiest {
        audits.push((
            "audit --token {busiest} --limit 100".into(),
            vec![
                "audit".into(),
                "--token".into(),
                id.to_string(),
                "--limit".into(),
                "100".into(),
            ],
        ));
    }
    let (e_med, e_max) = time_cli(&empty, &["audit", "--limit", "100"], 3)?;
    for (what, argv) in &audits {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (m, x) = time_cli(&target, &argv, 3)?;
        report.row(
            what,
            med_max(m, x),
            format!("empty database audit --limit 100 {}", med_max(e_med, e_max)),
            ratio(m.as_secs_f64(), e_med.as_secs_f64()),
        );
    }

    // The sizes, in full.
    report.notes.push(format!(
        "sizes ({}), by table:",
        if conn_is_sqlite(&backend) {
            "SQLite dbstat, SUM(pgsize) per b-tree"
        } else {
            "PostgreSQL pg_table_size per table (heap + TOAST) and pg_relation_size per index; \
             pg_total_relation_size = their sum"
        }
    ));
    for (table, relations) in &sizes {
        let total: i64 = relations.values().sum();
        let before = table_bytes(&record.before_uses, table);
        let parts: Vec<String> = relations
            .iter()
            .map(|(n, b)| format!("{n} {}", mib(*b)))
            .collect();
        report.notes.push(format!(
            "  {table:<24} {:>12}  (before the uses {:>11})  {}",
            mib(total),
            if record.before_uses.is_empty() {
                "?".into()
            } else {
                mib(before)
            },
            parts.join(", ")
        ));
    }
    Ok(report)
}

fn conn_is_sqlite(b: &Backend) -> bool {
    matches!(b, Backend::Sqlite { .. })
}

/// The bytes rows: growth over the use phase per recorded use, against the payload alone.
#[allow(clippy::too_many_arguments)]
fn bytes_rows(
    report: &mut Report,
    sqlite: bool,
    sizes: &Sizes,
    before: &Sizes,
    db_bytes: i64,
    events: u64,
    uses: i64,
    payload: i64,
    row_content: i64,
) {
    let uses_f = uses.max(1) as f64;
    report.section(if sqlite {
        "bytes per recorded use (SQLite dbstat)"
    } else {
        "bytes per recorded use (PostgreSQL relation sizes)"
    });
    // Every table the use phase grew, but api_tokens (shown apart): the events and their
    // indexes, token_addresses, openings, and whatever else the append writes (tree hashes).
    let grown = |t: &str| (table_bytes(sizes, t) - table_bytes(before, t)) as f64;
    let counted: Vec<&str> = sizes
        .keys()
        .map(String::as_str)
        .filter(|t| *t != "api_tokens" && (before.is_empty() || grown(t) > 0.0))
        .collect();
    let per_use = if before.is_empty() {
        // No snapshot from before the uses: the uses' share of everything by count.
        let share = uses_f / events.max(1) as f64;
        counted
            .iter()
            .map(|t| table_bytes(sizes, t) as f64 * share)
            .sum::<f64>()
            / uses_f
    } else {
        counted.iter().map(|t| grown(t)).sum::<f64>() / uses_f
    };
    let how = if before.is_empty() {
        "uses/events of every table but api_tokens"
    } else {
        "growth of every table but api_tokens"
    };
    report.row(
        &format!("bytes per use ({how})"),
        format!("{per_use:.0} B/use"),
        format!(
            "payload alone SUM(length(body))/uses {:.0} B/use",
            payload as f64 / uses_f
        ),
        ratio(per_use, payload as f64 / uses_f),
    );
    report.row(
        "  against every column of the use rows",
        format!("{per_use:.0} B/use"),
        format!(
            "column bytes of the TokenUsed rows {:.0} B/use",
            row_content as f64 / uses_f
        ),
        ratio(per_use, row_content as f64 / uses_f),
    );
    if !before.is_empty() {
        for t in &counted {
            report.row(
                &format!("  of which {t}"),
                format!("{:.1} B/use", grown(t) / uses_f),
                String::new(),
                String::new(),
            );
        }
        report.row(
            "  not counted: api_tokens growth (last use columns)",
            format!("{:.1} B/use", grown("api_tokens") / uses_f),
            String::new(),
            String::new(),
        );
    }
    if sqlite {
        report.row(
            "  target <= 400 B/use (SQLite)",
            if per_use <= BYTES_PER_USE_TARGET {
                "MET".into()
            } else {
                "MISSED".into()
            },
            String::new(),
            ratio(per_use, BYTES_PER_USE_TARGET),
        );
    }
    report.row(
        "whole database / events",
        format!("{:.0} B/event", db_bytes as f64 / events.max(1) as f64),
        format!("{} over {} events", mib(db_bytes), thousands(events)),
        String::new(),
    );
    report.notes.push(
        "bytes per use: counted is the growth of every table and index from just after the \
         tokens were created to after the use phase (which also holds the few revocations and \
         rotations): the events table with all its indexes (primary key, event_id, (stream_id, \
         stream_version), events_by_type), token_addresses, event_openings and any other table \
         the append writes, divided by the uses recorded; api_tokens growth is shown apart."
            .into(),
    );
}

async fn run(args: Args, registry: Registry) -> Result<Vec<Report>, String> {
    if !args.bin.exists() {
        return Err(format!(
            "{} does not exist; build it with cargo build --release",
            args.bin.display()
        ));
    }
    let args = Args {
        bin: std::path::absolute(&args.bin).map_err(|e| e.to_string())?,
        keep: args
            .keep
            .as_ref()
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| e.to_string())?,
        ..args
    };
    println!("tokenledger scale benchmark");
    println!("{}", machine());
    println!(
        "binary: {}; {} tokens, {} uses; PostgreSQL {}",
        args.bin.display(),
        thousands(args.tokens),
        thousands(args.uses),
        if args.postgres.is_some() {
            format!("at {} of that size", args.pg_scale)
        } else {
            "skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)".into()
        }
    );
    let mut reports = Vec::new();
    if !args.no_sqlite {
        let backend = match &args.keep {
            Some(path) => Backend::Sqlite {
                path: path.clone(),
                kept: true,
            },
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("tokenledger-scale-db-{}", Uuid::now_v7().simple()));
                std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
                lock(&registry).dirs.push(dir.clone());
                Backend::Sqlite {
                    path: dir.join("scale.db"),
                    kept: false,
                }
            }
        };
        let report = run_backend(&args, backend, &registry).await?;
        report.print();
        reports.push(report);
        cleanup(&registry).await;
    }
    if let Some(admin) = &args.postgres {
        let report = run_backend(
            &args,
            Backend::Postgres {
                admin: admin.clone(),
            },
            &registry,
        )
        .await?;
        report.print();
        reports.push(report);
        cleanup(&registry).await;
    }
    Ok(reports)
}

/// Stop the servers, remove the temporary files, drop the PostgreSQL scratch databases.
async fn cleanup(registry: &Registry) {
    procs::kill_all(registry);
    // Each database leaves the list only once dropped, so a cleanup that a signal cuts short
    // leaves the rest to the next one (DROP DATABASE IF EXISTS repeats harmlessly).
    let pg = lock(registry).pg.clone();
    for (admin, name) in pg {
        match sql::drop_pg_database(&admin, &name).await {
            Ok(()) => lock(registry).pg.retain(|(_, n)| *n != name),
            Err(e) => eprintln!("warning: could not drop PostgreSQL database {name}: {e}"),
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let registry: Registry = Arc::default();
    let started = Instant::now();
    // The run blocks on child processes and requests between its awaits, so it gets a thread
    // of its own: the runtime's workers stay free for the appenders and for the signals.
    let handle = tokio::runtime::Handle::current();
    let for_run = registry.clone();
    let task = tokio::task::spawn_blocking(move || handle.block_on(run(args, for_run)));
    let outcome = tokio::select! {
        joined = task => match joined {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("the benchmark failed: {e}")),
        },
        signal = interrupted() => Err(format!("stopped by {signal}")),
    };
    cleanup(&registry).await;
    let code = match outcome {
        Ok(()) => {
            println!();
            println!("done in {}", secs(started.elapsed()));
            0
        }
        Err(e) => {
            eprintln!("scale-bench: {e}");
            1
        }
    };
    // Leave at once: a task still blocked in a child process or a request must not hold the
    // exit (everything it started was stopped above).
    std::process::exit(code)
}
