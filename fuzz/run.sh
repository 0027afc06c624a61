#!/usr/bin/env bash
# Fuzz every target for SECONDS each, one after another: `bash fuzz/run.sh SECONDS`.
#
# Installs cargo-fuzz when it is missing, builds every target once, then runs each on a
# temporary copy of its seed corpus (fuzz/corpus/<target>/ is never written to), prints the
# inputs each one executed and a total line, and exits non-zero if any target crashed. A
# crashing input is kept in fuzz/artifacts/<target>/ (ignored by git) with the command that
# replays it. One libFuzzer process at a time: the machines have 2 cores.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash fuzz/run.sh SECONDS   (how long to fuzz each target)" >&2
    exit 2
fi

# cargo-fuzz passes nightly-only flags (-Z sanitizer=...); this lets the stable toolchain
# take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
# Overflow checks and debug_assert! stay on: an arithmetic overflow is a crash here too.
# No AddressSanitizer: the crates here forbid unsafe code, and it makes these targets about
# five times slower; a panic, an overflow, a hang or running out of memory is still a crash.
build_flags=(--sanitizer none --debug-assertions)

log() { printf '== %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo fuzz list)
log "building ${#targets[@]} fuzz targets"
build_start=$SECONDS
cargo fuzz build "${build_flags[@]}"
log "built in $((SECONDS - build_start)) s"
# The binaries are run as built: sources edited during a run change nothing until the next.
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

work=$(mktemp -d "${TMPDIR:-/tmp}/tokenledger-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

total=0
crashes=0
fuzz_start=$SECONDS
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    cp corpus/"$target"/* "$corpus"/
    output="$work/$target.log"
    mkdir -p "artifacts/$target"
    started=$SECONDS
    status=0
    "$bin/$target" "$corpus" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -max_len=4096 -timeout=30 -print_final_stats=1 \
        >"$output" 2>&1 || status=$?
    took=$((SECONDS - started))
    executed=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$output" | tail -n 1)
    executed=${executed:-0}
    total=$((total + executed))
    if [ "$status" -ne 0 ]; then
        crashes=$((crashes + 1))
        echo "$target: CRASHED (exit $status) after $executed inputs in $took s"
        grep -E -A 3 '^thread .* panicked' "$output" >&2 || true
        tail -n 20 "$output" >&2
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$output" | tail -n 1)
        if [ -n "$artifact" ]; then
            echo "replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $target $artifact)" >&2
        fi
    else
        echo "$target: $executed inputs in $took s ($((executed / (took > 0 ? took : 1)))/s)"
    fi
done

echo "fuzz: $total inputs over ${#targets[@]} targets in $((SECONDS - fuzz_start)) s, $crashes crashes"
[ "$crashes" -eq 0 ]
