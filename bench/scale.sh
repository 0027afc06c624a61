#!/usr/bin/env bash
# tokenledger at scale, each figure beside a baseline measured in the same run:
#   - the fill: N tokens and M recorded uses (with a few revocations and rotations) appended
#     in-process through Store::append by concurrent appenders in multi-event batches (ev/s);
#   - `serve` start-up until GET /readyz answers 200, and its VmRSS/VmHWM, against the same
#     binary on an empty database and a plain SQL read of every api_tokens row;
#   - admin API pages (first, deep cursor, status filter, stale list, a token's audit timeline)
#     against GET /healthz on the same server; `tokenledger audit` against the empty database;
#   - `tokenledger projections rebuild` against a SQL floor (read every event, write one row
#     per token into a scratch copy of api_tokens, one transaction);
#   - `tokenledger verify` events/s against a plain scan with SHA-256 over the stored bytes
#     (target >= 500,000 ev/s);
#   - bytes per recorded use (dbstat) against the payload bytes alone (target <= 400 on SQLite).
#
# Usage: bench/scale.sh [--tokens N] [--uses M] [--keep PATH] [--pg-scale F] [--requests R]
#                       [--appenders A] [--no-sqlite]
#   defaults: 1,000,000 tokens and 10,000,000 uses (several minutes on 2 cores, ~5 GB of
#   temporary disk); --keep PATH keeps the SQLite database there and reuses it next time
#   (no fill). PostgreSQL is measured too when BENCH_DATABASE_URL (or TEST_DATABASE_URL) names
#   a server, at --pg-scale (default 0.1) of the size, in scratch databases dropped afterwards.
# Every server started is stopped and every temporary file removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"
[ -n "$BENCH_DATABASE_URL" ] || unset BENCH_DATABASE_URL
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# The measured binary is the release build of the service itself.
cargo build --release -p tokenledger --bin tokenledger -p tokenledger-bench --bin scale-bench
exec "$TARGET_DIR/release/scale-bench" --bin "$TARGET_DIR/release/tokenledger" "$@"
