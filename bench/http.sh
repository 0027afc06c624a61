#!/usr/bin/env bash
# HTTP requests/s and p50/p99 latency of authenticated console calls to a cheap command
# (`ping`) and of `POST /v1/verify` (a tokens:verify caller checking a registry:read token) on
# tokenledger, SQLite then PostgreSQL, beside a bare axum endpoint (200, no auth, no I/O)
# measured in the same run with the same wrk settings. Each service run also checks that
# every 2xx answer has its uses recorded in the ledger (two per verify call: the caller's and
# the checked token's).
#
# Usage: bench/http.sh [--seconds N] [--connections C]        (defaults 10 and 64)
# PostgreSQL is measured when BENCH_DATABASE_URL (or TEST_DATABASE_URL) names a server; a
# scratch database tl_bench_http_<pid> is created there with psql and dropped afterwards.
# Target: console req/s >= 0.40 of the bare endpoint's, with every use durably recorded.
#
# Exit status: 0 when every target was measured (PASS or BELOW); 1 when a step failed or a
# measurement is INVALID (non-2xx answers, socket errors, a server that died, or uses missing
# from the ledger), so a broken run never passes for a slow one.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
CONNECTIONS=64
TARGET_RATIO=0.40
# Requests slower than wrk's default 2 s would be dropped from its latency figures as
# "timeouts"; a long timeout keeps them in p99 where they belong.
WRK_TIMEOUT=30s

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
    echo "bench/http.sh: $*" >&2
    exit 1
}
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1: expected a positive whole number, got '$2'"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) [ $# -ge 2 ] || die "--seconds needs a value"; DURATION="$2"; shift 2 ;;
    --seconds=*) DURATION="${1#*=}"; shift ;;
    --connections) [ $# -ge 2 ] || die "--connections needs a value"; CONNECTIONS="$2"; shift 2 ;;
    --connections=*) CONNECTIONS="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1'; accepted: --seconds N, --connections C (see --help)" ;;
    esac
done
positive --seconds "$DURATION"
positive --connections "$CONNECTIONS"
# wrk needs at least one connection per thread; one thread per core is its own advice.
THREADS=$(nproc)
[ "$THREADS" -le "$CONNECTIONS" ] || THREADS=$CONNECTIONS

PG_ADMIN="${BENCH_DATABASE_URL:-${TEST_DATABASE_URL:-}}"

# ---------------------------------------------------------------------------------------------
# Tools

ensure_wrk() {
    command -v wrk >/dev/null 2>&1 && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "wrk is not installed and this is not root without sudo; install it: apt-get install -y wrk"
        sudo=(sudo)
    fi
    echo "== installing wrk (Debian package)"
    # The package lists may be missing or stale on a fresh machine: update once and retry.
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null ||
            die "could not install wrk with apt-get; install it by hand (Debian package 'wrk')"
    fi
    command -v wrk >/dev/null 2>&1 || die "apt-get reported success but wrk is not on PATH"
}

command -v python3 >/dev/null 2>&1 || die "python3 is needed to read tokenledger's JSON output"
ensure_wrk
if [ -n "$PG_ADMIN" ]; then
    command -v psql >/dev/null 2>&1 ||
        die "psql is needed to create the PostgreSQL scratch database (apt-get install -y postgresql-client), or unset BENCH_DATABASE_URL/TEST_DATABASE_URL"
fi

# ---------------------------------------------------------------------------------------------
# Clean-up: whatever was started or created is stopped, removed or dropped on every exit.

WORK=$(mktemp -d -t tokenledger-bench-http.XXXXXX)
PIDS=()
PG_DB=""

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$PG_DB" ]; then
        psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
            echo "warning: could not drop PostgreSQL database $PG_DB" >&2
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)' "$1" 2>/dev/null
    fi
}

# wait_ready URL PID LOG: until URL answers 200; fails if the process exits or 60 s pass.
wait_ready() {
    local url=$1 pid=$2 log=$3 i
    for i in $(seq 1 300); do
        http_ok "$url" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server exited before $url answered; its log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "$url did not answer 200 within 60 s; server log:" >&2
    tail -n 30 "$log" >&2
    return 1
}

# stop PID: SIGTERM, then wait for it to finish in-flight requests and exit.
stop() {
    local pid=$1 p kept=()
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}

# run_wrk URL OUT [TOKEN] [SCRIPT]: drive URL with SCRIPT (default bench/http/console.lua),
# tee wrk's report to the terminal and OUT. BENCH_TARGET_TOKEN passes through to the script.
run_wrk() {
    local url=$1 out=$2 token=${3:-} script=${4:-bench/http/console.lua}
    echo "-- wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --timeout $WRK_TIMEOUT --latency -s $script $url"
    if ! BENCH_TOKEN="$token" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        --timeout "$WRK_TIMEOUT" --latency -s "$script" "$url" | tee "$out"; then
        echo "wrk failed against $url" | tee -a "$out" >&2
    fi
}

# parse_wrk OUT: one tab-separated line:
# req/s, p50 ms, p99 ms, requests, 2xx, non-2xx, statuses, socket errors
parse_wrk() {
    awk '
        function ms(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return -1
        }
        BEGIN { rps = 0; p50 = -1; p99 = -1; reqs = 0; ok = 0; bad = 0; st = "-"; sock = 0 }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { reqs = $1 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Socket errors:/ {
            line = $0; gsub(/[^0-9]+/, " ", line); n = split(line, a, " ")
            for (i = 1; i <= n; i++) sock += a[i]
        }
        /^BENCH_STATUS / {
            for (i = 2; i <= NF; i++) {
                eq = index($i, "="); k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
                if (k == "2xx") ok = v; else if (k == "non2xx") bad = v
                else if (k == "statuses" && v != "") st = v
            }
        }
        END { printf "%s\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\n", rps, p50, p99, reqs, ok, bad, st, sock }
    ' "$1"
}

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# used_rows URL ID: the API_TOKEN_USED rows of one token in the audit view (its total, which
# counts every page).
used_rows() {
    "$TL" --database-url "$1" audit --token "$2" --action used --limit 1 --json | json_field total
}

# Results, one tab-separated line per target:
# name, req/s, p50, p99, requests, 2xx, non-2xx, statuses, socket errors, recorded uses,
# audit rows, denied, note. A verify row's uses, audit rows and denied are "caller+target".
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

TL=target/release/tokenledger
BARE=target/release/bare-http

# ---------------------------------------------------------------------------------------------
# Build

echo "== cargo build --release -p tokenledger -p tokenledger-bench"
cargo build --release -p tokenledger -p tokenledger-bench

# ---------------------------------------------------------------------------------------------
# The bare endpoint

bench_bare() {
    local port log pid
    port=$(free_port)
    log="$WORK/bare.log"
    echo
    echo "== bare axum endpoint on 127.0.0.1:$port"
    "$BARE" --bind "127.0.0.1:$port" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "http://127.0.0.1:$port/" "$pid" "$log" || die "the bare endpoint did not start"
    run_wrk "http://127.0.0.1:$port/api/admin/console" "$WORK/wrk-bare.txt"
    local note="-"
    kill -0 "$pid" 2>/dev/null || note="server exited during the run"
    stop "$pid"
    printf 'bare\t%s\t-\t-\t-\t%s\n' "$(parse_wrk "$WORK/wrk-bare.txt")" "$note" >>"$RESULTS"
}

# ---------------------------------------------------------------------------------------------
# tokenledger on one database

# bench_service NAME DATABASE_URL
bench_service() {
    local name=$1 url=$2 port log pid minted id token
    echo
    echo "== tokenledger on $name"
    minted=$("$TL" --database-url "$url" token create --name bench --scope console:exec --json) ||
        die "$name: token create failed"
    id=$(json_field id <<<"$minted")
    token=$(json_field token <<<"$minted")
    # /v1/verify: a caller allowed to check tokens, and the token it checks.
    local caller_id caller target_id target
    minted=$("$TL" --database-url "$url" token create --name bench-verifier --scope tokens:verify --json) ||
        die "$name: token create (tokens:verify) failed"
    caller_id=$(json_field id <<<"$minted")
    caller=$(json_field token <<<"$minted")
    minted=$("$TL" --database-url "$url" token create --name bench-checked --scope registry:read --json) ||
        die "$name: token create (registry:read) failed"
    target_id=$(json_field id <<<"$minted")
    target=$(json_field token <<<"$minted")

    port=$(free_port)
    log="$WORK/serve-$name.log"
    ADMIN_CONSOLE_ENABLED=true ADMIN_API_TOKEN_AUTH_ENABLED=true RUST_LOG=warn \
        "$TL" --database-url "$url" serve --bind "127.0.0.1:$port" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "http://127.0.0.1:$port/healthz" "$pid" "$log" || die "$name: tokenledger did not start"
    echo "-- /healthz answers 200; token $id (console:exec)"

    run_wrk "http://127.0.0.1:$port/api/admin/console" "$WORK/wrk-$name.txt" "$token"
    local note="-" verify_note="-"
    kill -0 "$pid" 2>/dev/null || note="server exited during the run"
    echo "-- verify caller $caller_id (tokens:verify), checked token $target_id (registry:read)"
    BENCH_TARGET_TOKEN="$target" run_wrk "http://127.0.0.1:$port/v1/verify" \
        "$WORK/wrk-$name-verify.txt" "$caller" bench/http/verify.lua
    kill -0 "$pid" 2>/dev/null || verify_note="server exited during the run"
    stop "$pid"
    if [ -s "$log" ]; then
        echo "-- server log (warnings and errors, last 10 lines):"
        tail -n 10 "$log"
    fi

    # The ledger's own count, read after the server stopped: each token's use_count (kept in
    # the same transaction as each Used event) and its API_TOKEN_USED rows in the audit view.
    local shown uses denied audit_rows
    shown=$("$TL" --database-url "$url" token show "$id" --json) || die "$name: token show failed"
    uses=$(json_field use_count <<<"$shown")
    denied=$(json_field denied_count <<<"$shown")
    audit_rows=$(used_rows "$url" "$id") || die "$name: audit --action used failed"
    echo "-- recorded (ping): use_count $uses, denied_count $denied, audit API_TOKEN_USED rows $audit_rows"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name:ping" "$(parse_wrk "$WORK/wrk-$name.txt")" \
        "$uses" "$audit_rows" "$denied" "$note" >>"$RESULTS"

    local who vuses=() vdenied=() vrows=()
    for who in "$caller_id" "$target_id"; do
        shown=$("$TL" --database-url "$url" token show "$who" --json) || die "$name: token show failed"
        vuses+=("$(json_field use_count <<<"$shown")")
        vdenied+=("$(json_field denied_count <<<"$shown")")
        vrows+=("$(used_rows "$url" "$who")") || die "$name: audit --action used failed"
    done
    echo "-- recorded (verify, caller+target): use_count ${vuses[0]}+${vuses[1]}," \
        "denied_count ${vdenied[0]}+${vdenied[1]}, audit API_TOKEN_USED rows ${vrows[0]}+${vrows[1]}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name:verify" "$(parse_wrk "$WORK/wrk-$name-verify.txt")" \
        "${vuses[0]}+${vuses[1]}" "${vrows[0]}+${vrows[1]}" "${vdenied[0]}+${vdenied[1]}" \
        "$verify_note" >>"$RESULTS"
}

bench_bare

bench_service sqlite "sqlite://$WORK/bench.db?mode=rwc"

if [ -n "$PG_ADMIN" ]; then
    # As bench/append does: the scratch database lives on the same server as the admin URL.
    PG_DB="tl_bench_http_$$"
    # A database of this name can only be left over from a killed run with the same pid.
    PGOPTIONS='-c client_min_messages=warning' \
        psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null ||
        die "could not create PostgreSQL database $PG_DB"
    base="${PG_ADMIN%%\?*}"
    bench_service postgres "${base%/*}/$PG_DB"
else
    echo
    echo "== postgres: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)"
fi

# ---------------------------------------------------------------------------------------------
# Report

echo
echo "ping: console POST {\"cmd\":\"ping\"}; verify: POST /v1/verify {\"token\", \"scopes\":[\"registry:read\"]}"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(nproc) cores shared by wrk and the server"
printf '%-16s %10s %9s %9s %6s %9s %8s %23s  %s\n' \
    target "req/s" "p50 ms" "p99 ms" ratio 2xx non-2xx "uses recorded" verdict
status=0
bare_rps=$(awk -F'\t' '$1 == "bare" { print $2 }' "$RESULTS")
reasons=()
while IFS=$'\t' read -r name rps p50 p99 reqs ok bad statuses sock uses audit_rows denied note; do
    ratio=$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    problems=()
    [ "$note" = "-" ] || problems+=("$note")
    [ "$bad" -eq 0 ] || problems+=("$bad non-2xx answers ($statuses)")
    [ "$sock" -eq 0 ] || problems+=("$sock socket errors")
    [ "$ok" -gt 0 ] || problems+=("no 2xx answer at all")
    if [ "$name" = bare ]; then
        recorded="-"
    else
        recorded="$uses/$ok"
        # A verify call records two uses, one on each token: each must reach the 2xx count.
        IFS=+ read -r -a per_token <<<"$uses"
        IFS=+ read -r -a rows_per_token <<<"$audit_rows"
        labels=("")
        [ ${#per_token[@]} -eq 1 ] || labels=("caller " "checked token ")
        for i in "${!per_token[@]}"; do
            u=${per_token[$i]} rows=${rows_per_token[$i]}
            [ "$u" -ge "$ok" ] ||
                problems+=("$((ok - u)) 2xx answers have no recorded ${labels[$i]}use")
            # The audit view's count must agree with use_count.
            [ "$rows" -eq "$u" ] ||
                problems+=("audit view has $rows ${labels[$i]}API_TOKEN_USED rows but use_count is $u")
        done
    fi
    if [ ${#problems[@]} -gt 0 ]; then
        verdict=INVALID
        status=1
        for p in "${problems[@]}"; do reasons+=("$name: $p"); done
    elif [ "$name" = bare ]; then
        verdict="(reference)"
    elif awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(r + 0 >= t + 0) }'; then
        verdict=PASS
    else
        verdict=BELOW
    fi
    printf '%-16s %10.0f %9s %9s %6s %9s %8s %23s  %s\n' \
        "$name" "$rps" "$p50" "$p99" "$ratio" "$ok" "$bad" "$recorded" "$verdict"
done <"$RESULTS"
echo "target: >= $TARGET_RATIO of bare (req/s), every 2xx answer with its use recorded (uses recorded/2xx);"
echo "        a verify answer records two uses, so each of caller+target must reach the 2xx count"
for r in "${reasons[@]+"${reasons[@]}"}"; do
    echo "INVALID $r"
done
exit "$status"
