#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (libFuzzer) from its committed seed
# corpus for a bounded number of runs; any crash fails the script (libFuzzer
# leaves the input in fuzz/artifacts/<target>/). scripts/test.sh calls it.
#
#   bash scripts/fuzz.sh                 # the bounded runs of the test command
#   FUZZ_SECONDS=3600 bash scripts/fuzz.sh   # each target for an hour instead
#   FUZZ_RUNS_SCALE=10 bash scripts/fuzz.sh  # ten times the bounded runs
#
# The targets build with the stable toolchain: RUSTC_BOOTSTRAP=1 lets it
# accept the -Z flags cargo-fuzz passes (no nightly toolchain can be fetched
# on these machines). Release build with debug assertions and overflow
# checks. No sanitizer for the decoders (safe Rust; ASan would halve their
# runs per second); ring_consumer, whose consumers read raw shared memory
# through unsafe code, builds with the address sanitizer (ASan's runtime
# ships with the stable toolchain) into a target directory of its own.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing (bash scripts/setup.sh installs it)" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1
flags=(--release --debug-assertions --sanitizer none)
asan_flags=(--release --debug-assertions --sanitizer address --target-dir fuzz/target/asan)

# Runs per target (together well over the 100,000 the issue asks for).
declare -A runs=(
    [bpf_attr]=200000
    [frame]=100000
    [request]=300000
    [handshake]=100000
    [ring_consumer]=200000
    [netlink]=100000
)
scale=${FUZZ_RUNS_SCALE:-1}

cargo fuzz build "${flags[@]}"
cargo fuzz build "${asan_flags[@]}" ring_consumer

work=$(mktemp -d /tmp/telebpf-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
total=0
for target in bpf_attr frame request handshake ring_consumer netlink; do
    if [ "$target" = ring_consumer ]; then
        target_flags=("${asan_flags[@]}")
    else
        target_flags=("${flags[@]}")
    fi
    # New inputs go to a scratch corpus: the committed one stays as it is.
    mkdir -p "$work/$target"
    if [ -n "${FUZZ_SECONDS:-}" ]; then
        limit=(-max_total_time="$FUZZ_SECONDS")
    else
        limit=(-runs=$((runs[$target] * scale)))
    fi
    log="$work/$target.log"
    if ! cargo fuzz run "${target_flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" \
        -- "${limit[@]}" -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $target FAILED (input kept in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)
    n=$(echo "$done_line" | awk '{print $2}')
    total=$((total + n))
    echo "fuzz.sh: $target: $done_line; $(grep -E 'stat::new_units_added|cov:' "$log" | tail -n 1)"
done
echo "fuzz.sh: $total runs in total, no crash"
