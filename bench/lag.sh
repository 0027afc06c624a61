#!/usr/bin/env bash
# The subscription lag: how long a revocation written on one node takes to reach another
# node's reader when each node's projections follow the log (the arrangement of
# DATABASE_URL=kurrentdb://), beside the baseline of two nodes sharing one SQL log, measured in
# the same run. PostgreSQL stands in for the log (no KurrentDB server runs here); the split
# adds the follower's copy into each node's own projection database (SQLite).
#
# Usage: bench/lag.sh [--revocations N]        (default 200)
# PostgreSQL is used when BENCH_DATABASE_URL (or TEST_DATABASE_URL) names a server; scratch
# databases are created there and dropped. Without one, a SQLite file is the log.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
[ -n "$BENCH_DATABASE_URL" ] || unset BENCH_DATABASE_URL
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p tokenledger-bench --bin lag-bench
exec "$TARGET_DIR/release/lag-bench" "$@"
