#!/usr/bin/env bash
# A GitHub secret scanning report against a live service, the way GitHub sends it: a fresh
# P-256 key (openssl) published in GitHub's public_keys format in a file, a service reading it
# (GITHUB_SECRET_SCANNING_KEYS), a token leaked next to a look-alike of it, the body signed
# over its raw bytes (base64 of the DER signature), and the exchange printed: the request, the
# feedback GitHub gets back, the leaked token refused afterwards, and its audit rows.
#
# Usage: bench/leak-roundtrip.sh          (SQLite in a scratch directory; needs openssl, curl, jq)
# Exit status: 0 when the live token was labelled true_positive and then refused as revoked.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in openssl curl jq; do
    command -v "$tool" >/dev/null || { echo "bench/leak-roundtrip.sh: needs $tool" >&2; exit 1; }
done
cargo build -q --bin tokenledger
BIN="${CARGO_TARGET_DIR:-target}/debug/tokenledger"

DIR="$(mktemp -d)"
SERVER=""
cleanup() {
    if [[ -n "$SERVER" ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
export DATABASE_URL="sqlite://$DIR/log.db?mode=rwc"
export APP_ENV=development LOG_SIGNING_KEY_FILE="$DIR/log.signing-key"
PORT=$((20000 + RANDOM % 20000))

# GitHub's side: a key and its public_keys document.
openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/github.pem" 2>/dev/null
openssl ec -in "$DIR/github.pem" -pubout -out "$DIR/github.pub.pem" 2>/dev/null
KEY_ID="roundtrip-$(date +%s)"
jq -n --arg id "$KEY_ID" --rawfile key "$DIR/github.pub.pem" \
    '{public_keys: [{key_identifier: $id, key: $key, is_current: true}]}' >"$DIR/keys.json"

# The deployment: a token that is about to leak.
"$BIN" keys init >/dev/null 2>&1 || true
LEAKED="$("$BIN" token create --name leaked-in-a-repo --scope tokens:verify --json | jq -r .token)"
LEAKED_ID="$("$BIN" token list --json | jq -r '.tokens[0].id')"
LOOK_ALIKE="${LEAKED%?}$([[ "${LEAKED: -1}" == A ]] && echo B || echo A)"

GITHUB_SECRET_SCANNING_KEYS="$DIR/keys.json" BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
    "$BIN" serve >"$DIR/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

BODY="$(jq -cn --arg t "$LEAKED" --arg f "$LOOK_ALIKE" '[
  {token: $t, type: "tokenledger_api_token", url: "https://github.com/octo/app/blob/1a2b3c/.env", source: "content"},
  {token: $f, type: "tokenledger_api_token", url: "https://github.com/octo/app/blob/1a2b3c/README.md", source: "content"}]')"
printf '%s' "$BODY" >"$DIR/body.json"
SIGNATURE="$(openssl dgst -sha256 -sign "$DIR/github.pem" "$DIR/body.json" | base64 -w0)"

echo "POST /v1/leaks/github"
echo "Github-Public-Key-Identifier: $KEY_ID"
echo "Github-Public-Key-Signature: $SIGNATURE"
echo "$BODY" | jq .
echo
echo "GitHub's feedback:"
FEEDBACK="$(curl -sS -X POST "http://127.0.0.1:$PORT/v1/leaks/github" \
    -H "Content-Type: application/json" \
    -H "Github-Public-Key-Identifier: $KEY_ID" \
    -H "Github-Public-Key-Signature: $SIGNATURE" \
    --data-binary @"$DIR/body.json")"
echo "$FEEDBACK" | jq .
echo "(sha256 of the leaked token: $(printf '%s' "$LEAKED" | sha256sum | cut -d' ' -f1))"
echo

echo "The leaked token, used afterwards:"
AFTER="$(curl -sS -X POST "http://127.0.0.1:$PORT/v1/verify" -H "Authorization: Bearer $LEAKED" \
    -H "Content-Type: application/json" -d '{"token":"x"}' -w ' %{http_code}')"
echo "$AFTER"
echo
echo "Its audit rows:"
"$BIN" audit --token "$LEAKED_ID"

[[ "$(echo "$FEEDBACK" | jq -r '.[0].label')" == true_positive ]] || exit 1
[[ "$(echo "$FEEDBACK" | jq -r '.[1].label')" == false_positive ]] || exit 1
[[ "$AFTER" == *"Token has been revoked"*" 401" ]] || exit 1
echo
echo "ok: revoked by leak:github in the same append as its report"
