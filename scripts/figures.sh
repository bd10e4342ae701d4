#!/usr/bin/env bash
# The README's figures in one run: every `telebpf bench` its Figures tables
# quote, against one fresh proxy on a Unix socket, plus the idle cost of a
# tool, and with --vm the same round trips over vsock to the test guest.
# Each output goes to OUTDIR/<bench>.txt; OUTDIR/summary.txt has the
# machine's state and the lines the tables take.
#
#   scripts/figures.sh OUTDIR [--vm 6.1|6.12]
#
# Needs root (the proxy, the direct baselines of `bench ids`, the ticks of
# the proxy), a release build (`TELEBPF_BIN_DIR`, default target/release),
# valgrind and cc (`bench interpose`), Debian's libbpf-tools (`bench
# startup`, the idle tool). Holds /tmp/telebpf-tests.lock from start to
# end, so no test loads BPF meanwhile; run it on an otherwise quiet
# machine, and compare figures within one run only (this machine's figures
# move by 2× from one minute to the next under other load).
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
out=$1
shift
vm=""
if [ "${1:-}" = "--vm" ]; then
    vm=${2:?--vm needs a kernel: 6.1 or 6.12}
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${TELEBPF_BIN_DIR:-$root/target/release}
telebpf=$bin/telebpf
[ "$(id -u)" -eq 0 ] || { echo "figures.sh: run as root" >&2; exit 2; }
[ -x "$telebpf" ] && [ -x "$bin/telebpf-proxy" ] ||
    { echo "figures.sh: no release build in $bin (cargo build --release)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/telebpf-figures.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$vm" ] && [ -d "$work/vm" ]; then
        "$root/tests/vm/guest.sh" down "$work/vm" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

exec 9>/tmp/telebpf-tests.lock
flock 9

say() { echo "figures.sh: $*" | tee -a "$out/summary.txt" >&2; }
: >"$out/summary.txt"
say "$(date -u +%FT%TZ) $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# One proxy for every Unix-socket bench.
"$telebpf" keygen --out "$work/key" >/dev/null
"$bin/telebpf-proxy" --listen "unix:$work/sock" --key-file "$work/key" \
    >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 100); do
    grep -q "listening on" "$work/proxy.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "listening on" "$work/proxy.log" || { cat "$work/proxy.log" >&2; exit 1; }
target="unix:$work/sock"
bench() {
    local name=$1
    shift
    say "bench $* ($name.txt)"
    "$telebpf" bench "$@" >"$out/$name.txt" 2>&1
}

for i in 1 2 3; do
    bench "rtt-$i" rtt --target "$target" --key-file "$work/key" --runs 20000
done
bench ringbuf ringbuf --target "$target" --key-file "$work/key" --repeat 3
bench startup startup --target "$target" --key-file "$work/key" --runs 10
# The process walk wants a machine with some processes: 120 sleepers.
for _ in $(seq 120); do
    sleep 600 &
    pids+=("$!")
done
bench ids ids --target "$target" --key-file "$work/key" --runs 30 --csv "$out/ids.csv"
bench interpose interpose

# An idle tool costs nothing: opensnoop -p of a process that opens nothing,
# as nobody through telebpf exec; utime+stime ticks of the tool and of the
# proxy over 3 s, once it has settled.
if opensnoop=$(command -v opensnoop); then
    sleep 600 &
    quiet=$!
    pids+=("$quiet")
    install -m 0400 -o nobody "$work/key" "$work/nobody.key"
    setpriv --reuid nobody --regid nogroup --clear-groups \
        "$telebpf" exec --target "$target" --key-file "$work/nobody.key" -- \
        "$opensnoop" -p "$quiet" >"$work/opensnoop.out" 2>&1 &
    tool=$!
    pids+=("$tool")
    sleep 5.5
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
    # The tool's own process: telebpf exec execs it in place.
    t0=$(ticks "$tool") p0=$(ticks "$proxy")
    sleep 3
    t1=$(ticks "$tool") p1=$(ticks "$proxy")
    say "idle opensnoop -p over 3 s: tool $((t1 - t0)) ticks, proxy $((p1 - p0)) ticks" \
        "(CLK_TCK $(getconf CLK_TCK))"
    kill -INT "$tool" 2>/dev/null || true
fi

if [ -n "$vm" ]; then
    say "booting the $vm test guest"
    mkdir -p "$work/vm"
    "$root/tests/vm/guest.sh" up "$work/vm" --kernel "$vm" >"$work/vm.log" 2>&1 ||
        { cat "$work/vm.log" >&2; exit 1; }
    for i in 1 2 3; do
        bench "vsock-rtt-$i" rtt --target "vsock-uds:$work/vm/vm.vsock:5000" \
            --key-file "$work/vm/key" --runs 3000
    done
fi

{
    for f in "$out"/rtt-*.txt "$out"/vsock-rtt-*.txt; do
        [ -e "$f" ] || continue
        echo "== $(basename "$f")"
        grep -E "echo|ping|LOOKUP|/ " "$f"
    done
    for f in ringbuf startup interpose; do
        echo "== $f.txt"
        tail -n 12 "$out/$f.txt"
    done
    echo "== ids.csv"
    cat "$out/ids.csv"
} >>"$out/summary.txt"
say "done: $out"
