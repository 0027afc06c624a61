#!/usr/bin/env bash
# Schemathesis against a live service and its own /openapi.json: every operation is called with
# generated requests (a bounded number per operation) by a caller holding valid credentials,
# and the run fails on any 5xx, any answer that breaks its schema, any status the document does
# not list, and any content type or documented header that differs.
#
#   bash tests/schemathesis.sh          # 20 examples per operation (ST_EXAMPLES)
#   ST_ARGS="--report har --report-dir /tmp/st" bash tests/schemathesis.sh   # more schemathesis options
#
# It builds the binary, installs schemathesis (PyPI) into a virtualenv under the target
# directory when missing, serves a fresh SQLite database with the console and token auth
# switched on and the failed-authentication limit off (refusals are tested in tests/api; here
# a 429 would hide the operation behind it), mints a token holding every scope and a
# development admin session, and calls the API-token operations (console, verify) with the
# token and the admin API with the session.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${ST_EXAMPLES:-20}"
SCHEMATHESIS_VERSION="4.32.5"
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/debug/tokenledger"

log() { printf '== schemathesis: %s\n' "$*"; }

# The newest Python 3.12 or later on the machine (pyenv's too): under 3.11 Hypothesis can fail
# inside CPython's own parser while schemathesis builds its coverage cases, so with only an
# older Python the coverage phase is left out.
pick_python() {
    local candidates=("${ST_PYTHON:-}" python3.13 python3.12)
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=($(ls -d "$(pyenv root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -Vr))
    fi
    candidates+=(python3)
    for candidate in "${candidates[@]}"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "no python3 found" >&2
    return 1
}
PYTHON=$(pick_python)
PYVERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PHASES="examples,coverage,fuzzing"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    PHASES="examples,fuzzing"
    log "Python $PYVERSION: the coverage phase needs 3.12 or later and is left out"
fi
VENV="$TARGET/schemathesis-venv-$PYVERSION"

cargo build --quiet --bin tokenledger

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 has no venv module without this package.
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

export DATABASE_URL="sqlite://$work/schemathesis.db?mode=rwc"
unset APP_ENV
export LOG_ORIGIN=schemathesis.invalid/log
"$BIN" keys init >/dev/null
mint() {
    "$BIN" token create --name "$1" "${@:2}" --json |
        python3 -c 'import json, sys; t = json.load(sys.stdin); print(t["id"], t["token"])'
}
read -r _ token < <(mint schemathesis --scope admin --scope console:exec --scope logs:read \
    --scope registry:read --scope registry:write --scope tokens:verify)
# The operations on one token get real ids: one to read, one to revoke, one to rotate (their
# first call succeeds, the later ones answer 409).
read -r subject _ < <(mint subject --scope registry:read)
read -r to_revoke _ < <(mint to-revoke --scope registry:read)
read -r to_rotate _ < <(mint to-rotate --scope registry:read)
if [ -z "$token" ] || [ -z "$to_rotate" ]; then
    echo "could not mint the tokens the run needs" >&2
    exit 1
fi
session=$("$BIN" dev-session --sub ci --role admin 2>/dev/null)

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
BIND_ADDR="127.0.0.1:$port" ADMIN_CONSOLE_ENABLED=true ADMIN_API_TOKEN_AUTH_ENABLED=true \
    AUTH_FAILURES_PER_MINUTE=0 CHECKPOINT_EVERY=1s RUST_LOG=warn "$BIN" serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || {
    cat "$work/serve.log" >&2
    echo "the service did not become ready on $base" >&2
    exit 1
}

# Who calls what, as the document's security says: the API token on the console and verify,
# the admin session on the admin API and on leak reports, nobody on the public routes
# (GitHub's leak route is off: its 404 is documented).
cat >"$work/schemathesis.toml" <<EOF
[[operations]]
include-path-regex = '^/(api/admin/console|v1/verify)$'
headers = { Authorization = "Bearer $token" }

[[operations]]
include-path-regex = '^/api/admin/(tokens|audit)'
headers = { Authorization = "Bearer $session" }

[[operations]]
include-path-regex = '^/v1/leaks$'
headers = { Authorization = "Bearer $session" }

[[operations]]
include-path-regex = '/tokens/\{id\}/(audit|incident)$'
parameters = { "path.id" = "$subject" }

[[operations]]
include-path-regex = '/revoke$'
parameters = { "path.id" = "$to_revoke" }

[[operations]]
include-path-regex = '/rotate$'
parameters = { "path.id" = "$to_rotate" }
EOF
status=0
started=$SECONDS
# From the scratch directory: schemathesis keeps a cache where it runs.
venv=$(cd "$VENV" && pwd)
cd "$work"
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance \
    --phases "$PHASES" \
    --max-examples "$EXAMPLES" \
    --workers 2 \
    --request-timeout 10 \
    --suppress-health-check all \
    --no-color \
    ${ST_ARGS:-} || status=1
log "done in $((SECONDS - started)) s"
if [ "$status" -ne 0 ]; then
    echo "== the service's log:" >&2
    tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
