#!/usr/bin/env bash
# Memory per token of the in-memory token cache (the compact entries `serve` holds), printed
# beside the former cache of whole TokenRows filled with the same tokens in the same run.
# Usage: bench/cache.sh [--tokens N]        (default 1000000)
# Target: compact <= 300 MB at 1.1M tokens serving (about 270 bytes/token, all else included).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tokenledger-bench --bin cache-bench
exec "${CARGO_TARGET_DIR:-target}/release/cache-bench" "$@"
