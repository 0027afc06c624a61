#!/usr/bin/env bash
# Append throughput of the group-commit writer (1 and 32 appenders, SQLite and PostgreSQL),
# printed beside a one-transaction-per-event baseline measured in the same run.
# Usage: bench/append.sh [--seconds N] [--appenders 1,32]
# PostgreSQL is measured when BENCH_DATABASE_URL (or TEST_DATABASE_URL) names a server.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
[ -n "$BENCH_DATABASE_URL" ] || unset BENCH_DATABASE_URL
cargo build --release -p tokenledger-bench --bin append-bench
exec target/release/append-bench "$@"
