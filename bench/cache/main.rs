//! Memory per token of the in-memory token cache, against a baseline measured in the same run.
//!
//! It fills the compact cache (`app::TokenEntries`, what `serve` holds) with N tokens, then the
//! former cache, a `TokenTable` of whole `TokenRow`s, with the same N tokens, and prints the
//! resident memory each added per token (from `/proc/self/statm`, under mimalloc as in the
//! service). Each token is built as a realistic stored row (name, creator, two scopes, a last
//! use with address and path, a revoked one in ten with a reason) and folded the way start-up
//! loads it; the compact cache never keeps the row.

use std::time::Instant;

use clap::Parser;
use tokenledger::app::TokenEntries;
use tokenledger::token_entry::TokenEntry;
use tokenledger_events::{Environment, Timestamp, TokenHash};
use tokenledger_projections::{TokenRow, TokenTable};
use uuid::Uuid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Tokens in each cache.
    #[arg(long, default_value_t = 1_000_000)]
    tokens: usize,
}

/// Resident bytes of this process.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

const START: i64 = 1_767_225_600_000_000;
const SCOPES: [&str; 6] = [
    "admin",
    "console:exec",
    "logs:read",
    "registry:read",
    "registry:write",
    "tokens:verify",
];

/// Token `i` as `api_tokens` would hold it.
fn row(i: usize) -> TokenRow {
    let n = i as u64;
    let mut hash = [0u8; 32];
    for (k, b) in hash.iter_mut().enumerate() {
        *b = (n
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(k as u32 * 7)
            >> 3) as u8;
    }
    hash[..8].copy_from_slice(&n.to_le_bytes());
    let at = |offset: i64| Timestamp::from_micros(START + offset);
    let revoked = i.is_multiple_of(10);
    TokenRow {
        id: Uuid::from_u64_pair(0x0190_0000_0000_7000 | (n >> 32), n),
        name: format!("service-{i:07}-deploy"),
        scopes: vec![SCOPES[i % 6].to_owned(), SCOPES[(i + 3) % 6].to_owned()],
        environment: Environment::Live,
        hash: Some(TokenHash(hash)),
        created_at: at(i as i64),
        created_by: "alice@example.com".to_owned(),
        expires_at: at(90 * 86_400_000_000),
        revoked_at: revoked.then(|| at(86_400_000_000)),
        revoked_by: revoked.then(|| "bob@example.com".to_owned()),
        revoke_reason: revoked.then(|| "leaked in a build log".to_owned()),
        rotated_from: None,
        rotated_to: None,
        rotated_at: None,
        last_used_at: Some(at(3_600_000_000)),
        last_used_ip: Some(format!("10.{}.{}.{}", i % 256, (i / 256) % 256, i % 200)),
        last_used_path: Some("/api/admin/console".to_owned()),
        use_count: n % 1000,
        denied_count: n % 7,
        version: 1 + n % 1000,
        position: n + 1,
        allowed_ips: Vec::new(),
        until_successor_used: false,
    }
}

fn main() {
    let args = Args::parse();
    let n = args.tokens;

    let before = rss();
    let started = Instant::now();
    let mut compact = TokenEntries::with_capacity(n, n as u64);
    for i in 0..n {
        compact.insert(TokenEntry::of(&row(i)));
    }
    let compact_time = started.elapsed();
    let compact_bytes = rss().saturating_sub(before);
    assert_eq!(compact.len(), n);
    // Both look-ups work, so nothing above was optimised away.
    let probe = row(n / 2);
    assert!(compact.get(&probe.id).is_some());
    assert!(compact.by_hash(&probe.hash.expect("hashed")).is_some());

    let before = rss();
    let started = Instant::now();
    let table = TokenTable::from_rows((0..n).map(row), n as u64);
    let table_time = started.elapsed();
    let table_bytes = rss().saturating_sub(before);
    assert_eq!(table.len(), n);
    assert!(table.by_hash(&probe.hash.expect("hashed")).is_some());

    let per = |bytes: u64| bytes as f64 / n as f64;
    println!("token cache memory, {n} tokens (resident bytes added, /proc/self/statm, mimalloc)");
    println!(
        "  compact entries (TokenEntries)    {:>8.1} bytes/token  {:>8.1} MB  filled in {:.2?}",
        per(compact_bytes),
        compact_bytes as f64 / 1e6,
        compact_time
    );
    println!(
        "  baseline: TokenTable of TokenRows {:>8.1} bytes/token  {:>8.1} MB  filled in {:.2?}",
        per(table_bytes),
        table_bytes as f64 / 1e6,
        table_time
    );
    println!(
        "  compact / baseline                {:>8.3}",
        per(compact_bytes) / per(table_bytes)
    );
    println!(
        "  (size_of::<TokenEntry>() = {} bytes)",
        size_of::<TokenEntry>()
    );
    drop(table);
    drop(compact);
}
