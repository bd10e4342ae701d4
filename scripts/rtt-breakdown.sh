#!/usr/bin/env bash
# Where a forwarded BPF_MAP_LOOKUP_ELEM spends its time, stage by stage:
# the CPU time per call of each stage on the host (the calling program with
# the preload) and in the proxy, from `perf record -e cpu-clock` samples
# with DWARF call graphs, as inclusive ("children") time of the functions
# that make each stage.
#
#   scripts/rtt-breakdown.sh TARGET KEY_FILE PROXY_PID [CALLS] [FREQ]
#
# TARGET, KEY_FILE: a running proxy (e.g. unix:/tmp/p/sock) whose process
# is PROXY_PID (its session thread is sampled). CALLS lookups (default
# 200000) are made by `telebpf bench-worker lookup` under the preload, as
# in `telebpf bench rtt`; FREQ (default 2000 Hz) is low on purpose: a DWARF
# sample copies 32 KiB of stack (8 KiB cut most of the preload's stacks
# short in some runs), and at 20 kHz that alone makes a call 5x slower.
# Needs perf, root (to sample the proxy) and a release build
# (`TELEBPF_BIN_DIR`, default target/release). Hold /tmp/telebpf-tests.lock
# around it when others use BPF on the machine.
#
# Why sampling and not counters compiled in: this machine's perf has no
# hardware events (`perf stat -e instructions` is "not supported"), but the
# software clock samples whatever runs, kernel included, without a build
# of its own; a stage's time per call is its share of the samples times
# the sampled CPU time, divided by the calls. Waiting (spinning or
# blocked) for the peer is shown apart: it is the other side's work plus
# the wire, not work of this side.
set -euo pipefail

[ $# -ge 3 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
target=$1 key=$2 proxy_pid=$3 calls=${4:-200000} freq=${5:-2000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${TELEBPF_BIN_DIR:-$root/target/release}
out=$(mktemp -d /tmp/rtt-breakdown.XXXXXX)
[ -n "${KEEP:-}" ] && echo "keeping $out" >&2 || trap 'rm -rf "$out"' EXIT

# 1. Without perf: the wall time and the CPU time per call of each side
# (the worker's rusage, the proxy's utime+stime from /proc), which scale
# the stages' shares below.
python3 - "$bin" "$target" "$key" "$proxy_pid" "$calls" >"$out/plain.txt" <<'PY'
import os, resource, subprocess, sys, time
bin_dir, target, key, pid, calls = sys.argv[1:6]
tick = os.sysconf("SC_CLK_TCK")
def proxy_cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
env = dict(os.environ, LD_PRELOAD=f"{bin_dir}/libtelebpf_preload.so",
           TELEBPF_TARGET=target, TELEBPF_KEY_FILE=key)
p0, t0 = proxy_cpu(), time.monotonic()
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
worker = subprocess.run([f"{bin_dir}/telebpf", "bench-worker", "lookup", calls],
                        env=env, check=True, capture_output=True, text=True).stdout
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
t1, p1 = time.monotonic(), proxy_cpu()
n = int(calls)
host = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1e6
print(worker.strip(), f"wall_us={(t1 - t0) / n * 1e6:.2f}",
      f"host_cpu_us={host:.2f}", f"proxy_cpu_us={(p1 - p0) / n * 1e6:.2f}")
PY

# 2. With perf: which functions the CPU time of each side goes to.
perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,32768 -p "$proxy_pid" \
    -o "$out/proxy.data" 2>"$out/perf-proxy.log" &
perf_proxy=$!
sleep 1
perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,32768 -o "$out/host.data" -- \
    env LD_PRELOAD="$bin/libtelebpf_preload.so" TELEBPF_TARGET="$target" \
    TELEBPF_KEY_FILE="$key" "$bin/telebpf" bench-worker lookup "$calls" \
    >"$out/worker.txt" 2>"$out/perf-host.log"
kill -INT "$perf_proxy"
wait "$perf_proxy" || true

for side in host proxy; do
    perf report -i "$out/$side.data" --children --stdio -g none --sort sym \
        --percent-limit 0 2>/dev/null >"$out/$side.txt"
done
echo "without perf: $(cat "$out/plain.txt") (wall_us: elapsed per call, process start included)"
echo "under perf:   $(cat "$out/worker.txt") (sampling at $freq Hz slows them)"
python3 - "$out" "$calls" <<'PY'
import re, sys
out, calls = sys.argv[1], int(sys.argv[2])
plain = dict(w.split("=") for w in open(f"{out}/plain.txt").read().split())
cpu = {"host": float(plain["host_cpu_us"]) * 1000, "proxy": float(plain["proxy_cpu_us"]) * 1000}

def load(side):
    text = open(f"{out}/{side}.txt").read()
    total = float(re.search(r"Event count \(approx\.\): (\d+)", text).group(1))
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(3)))
    return total, rows

def ns(side, *names):
    """Inclusive ns per call of the functions `names` (out of line and
    inlined: their call sites are disjoint): their share of the side's
    samples times the side's CPU time per call measured without perf."""
    _, rows = sides[side]
    return sum(
        pct / 100 * cpu[side]
        for pct, sym in rows
        if sym.removesuffix(" (inlined)").strip() in names
    )

sides = {s: load(s) for s in ("host", "proxy")}
h = lambda *n: ns("host", *n)
p = lambda *n: ns("proxy", *n)

hook = h("telebpf_preload::guard::enter")
forward = h("telebpf_host::bpf::forward")
gather = h("telebpf_marshal::host::read_attrs", "telebpf_marshal::host::gather")
send_h = h("telebpf_client::Connection::notify")
recv_h = h("telebpf_client::Connection::recv")
wait_h = h("telebpf_protocol::channel::spin_read", "<telebpf_protocol::transport::ClientStream as std::io::Read>::read")
scatter = h("telebpf_marshal::host::scatter")
ask = h("telebpf_host::state::State::ask")
conn_call = h("telebpf_client::Connection::call")

recv_p = p("telebpf_protocol::channel::recv_sealed")
wait_p = p("telebpf_protocol::channel::spin_read", "<telebpf_protocol::transport::SyncServerStream as std::io::Read>::read")
decode_p = p("telebpf_protocol::message::decode_charged")
handle = p("telebpf_proxy::session::Session::handle")
policy = p("telebpf_proxy::policy::check::<impl telebpf_proxy::policy::Policy>::check")
patch = p("telebpf_marshal::proxy::patch")
kernel = p("<telebpf_proxy::kernel::RealKernel as telebpf_proxy::kernel::Kernel>::bpf")
collect = p("telebpf_marshal::proxy::collect")
execute = p("telebpf_proxy::bpf_exec::execute")
encode_p = p("telebpf_protocol::message::encode")
send_p = p("telebpf_protocol::channel::send_sealed")

rows = [
    ("host", "interposition: the hook, guard, catch_unwind", hook - forward),
    ("host", "gather: read attr, plan, fd table, read key/value", gather),
    ("host", "session state: lock, socket check, timers", ask - conn_call),
    ("host", "encode + seal + send (sendto)", send_h),
    ("host", "open + decode the reply (after it arrived)", recv_h - wait_h),
    ("host", "scatter: write value (process_vm_writev)", scatter),
    ("host", "forward's rest (adopt, errno, views)", forward - gather - ask - scatter),
    ("proxy", "open the request frame (after it arrived)", recv_p - wait_p),
    ("proxy", "decode (bincode, charged)", decode_p),
    ("proxy", "policy check", policy),
    ("proxy", "plan + patch", patch),
    ("proxy", "bpf() syscall", kernel),
    ("proxy", "collect", collect),
    ("proxy", "execute's rest (guards, fd table, limits)", execute - patch - kernel - collect),
    ("proxy", "handle's rest (audit, dispatch)", handle - execute - policy),
    ("proxy", "encode + seal + send the reply", encode_p + send_p),
]
print(f"{'side':<6} {'stage':<52} {'µs/call':>8}")
busy = 0.0
for side, what, v in rows:
    busy += v
    print(f"{side:<6} {what:<52} {v / 1000:>8.2f}")
print(f"{'':<6} {'busy, both sides (stages above)':<52} {busy / 1000:>8.2f}")
print(f"{'host':<6} {'waiting for the reply (spin/yield/block)':<52} {wait_h / 1000:>8.2f}")
print(f"{'proxy':<6} {'waiting for the next request':<52} {wait_p / 1000:>8.2f}")
for s in ("host", "proxy"):
    print(f"{s:<6} {'CPU per call, all (rusage / proc, no perf)':<52} {cpu[s] / 1000:>8.2f}")
print(f"{'':<6} {'wall per call, p50 (no perf)':<52} {float(plain['p50_us']):>8.2f}")
# A sample whose stack perf could not unwind belongs to no stage: when few
# host samples reach `forward`, the stages above undercount (run again).
seen = forward / cpu["host"] * 100 if cpu["host"] else 0
print(f"host samples unwound into forward(): {seen:.0f}% (expect > 90%)")
PY
