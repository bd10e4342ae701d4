//! `telebpf bench ringbuf`.
//!
//! Records go from a guest `bpf_ringbuf_submit` to an unmodified libbpf
//! consumer (`ring_buffer__poll`, through `libbpf_rs::RingBufferBuilder`:
//! it mmaps the ring and waits in `epoll_wait` exactly as the libbpf-tools
//! do). The same worker runs as a child of this process, plainly
//! (**local**, needs BPF privileges) and with the preload library injected
//! (**forwarded**: the ring is the guest's, mirrored into host memory by the
//! preload), alternately `--repeat` times each; the table shows each side's
//! run with the median rate, and the ratios between the two.
//!
//! The producer is `bpf/bench/ringbuf_bench.bpf.c`, a `SEC("syscall")`
//! program that `bpf_loop`s `bpf_ringbuf_reserve` + `bpf_ringbuf_submit` of
//! 64-byte records, each carrying `bpf_ktime_get_ns()` and a sequence
//! number. A second thread of the worker runs it with `BPF_PROG_TEST_RUN`
//! while the main thread consumes. When this kernel has the program (the
//! proxy runs here) that thread runs it *directly*, with a raw `syscall`
//! instruction the preload does not see, so that in the forwarded worker
//! records appear in the guest ring as real guest events would, not paced by
//! a forwarded request per batch; otherwise through libbpf (see
//! [`Trigger`]; the table says which). Two phases:
//!
//! * **throughput**: `--events` records in batches of [`BATCH`] per
//!   `BPF_PROG_TEST_RUN`, the producer keeping at most [`WINDOW`] records
//!   submitted but not yet consumed (so a fast producer measures the
//!   pipeline, not how many records a full ring drops). Events/s is records
//!   consumed over the time from the first submit to the last consumption;
//!   latency here includes the queueing of a saturated pipeline.
//! * **one at a time**: [`IDLE_SAMPLES`] single records, each submitted once
//!   the previous one was consumed and the consumer went back to waiting:
//!   the wake-up latency of an idle pipeline.
//!
//! Latency is host `CLOCK_MONOTONIC` at consumption minus the record's
//! `bpf_ktime_get_ns()`. The two are the same clock only when the "guest"
//! kernel is this machine's kernel, as when the proxy runs here (which is
//! how this bench is meant to run, so local and forwarded are measured on
//! one kernel); against a real VM the difference would include the offset
//! between the guest's and the host's monotonic clocks and mean nothing.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::{libbpf_sys, MapCore, ObjectBuilder, RingBufferBuilder};

use super::{chart, run_worker, Figures};
use crate::error::CliError;
use crate::stats::{percentile_us, summarize, Summary};

/// The producer object, built by `build.rs` (empty if clang failed).
const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ringbuf_bench.bpf.o"));
/// Why the object could not be built, if it could not.
const OBJECT_ERROR: &str = env!("TELEBPF_BENCH_BPF_ERROR");

/// Bytes per record (`struct rb_bench_record`).
const RECORD: usize = 64;
/// Records per `BPF_PROG_TEST_RUN` in the throughput phase.
const BATCH: u64 = 1024;
/// Most records submitted and not yet consumed in the throughput phase:
/// 16384 records take 1.1 MiB of the 4 MiB ring (72 bytes each with the
/// header), so the guest ring never fills while the producer waits on it.
const WINDOW: u64 = 16384;
/// Records of the one-at-a-time phase.
const IDLE_SAMPLES: u64 = 1000;
/// Sequence numbers of the one-at-a-time phase start here.
const IDLE_SEQ: u64 = 1 << 40;
/// How long the worker waits for records that do not come before it calls
/// them missing.
const STALL: Duration = Duration::from_secs(2);

/// `CLOCK_MONOTONIC` in nanoseconds: `bpf_ktime_get_ns()`'s clock.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the producer is run.
#[derive(Clone, Copy)]
enum Trigger {
    /// `BPF_PROG_TEST_RUN` through libbpf (so, in the forwarded worker,
    /// through the preload and the proxy: a round trip per batch).
    Libbpf(i32),
    /// `BPF_PROG_TEST_RUN` made with a raw `syscall` instruction, which the
    /// preload does not see, on an fd opened by the program's id: the
    /// records are produced in the guest kernel directly, as real events
    /// are, rather than on a forwarded request whose round trip (and the
    /// wake-ups of the threads that serve it, on CPUs the ring pipeline
    /// keeps busy) would pace the producer. Possible only when the proxy
    /// runs on this kernel, as for the latency figures.
    Direct(i32),
}

/// `bpf(cmd, attr, size)` with the `syscall` instruction itself: invisible
/// to an `LD_PRELOAD` library, so it reaches this machine's kernel.
#[cfg(target_arch = "x86_64")]
fn direct_bpf(cmd: u64, attr: &mut [u8]) -> Result<i64, i32> {
    let ret: i64;
    // SAFETY: the bpf syscall (321 on x86-64) with an attr buffer that is
    // valid and writable for its length, whose pointer fields the callers
    // set to live locals; the syscall instruction clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_bpf => ret,
            in("rdi") cmd,
            in("rsi") attr.as_mut_ptr(),
            in("rdx") attr.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(-ret as i32)
    } else {
        Ok(ret)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn direct_bpf(_cmd: u64, _attr: &mut [u8]) -> Result<i64, i32> {
    Err(libc::ENOSYS)
}

impl Trigger {
    /// [`Trigger::Direct`] if this kernel has the program (the proxy runs
    /// here), else [`Trigger::Libbpf`].
    fn for_prog(prog_fd: i32) -> Trigger {
        const BPF_PROG_GET_FD_BY_ID: u64 = 13;
        // SAFETY: bpf_prog_info is plain data; all-zero is valid.
        let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: `info` is a writable bpf_prog_info of `len` bytes.
        let r = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog_fd, &mut info, &mut len) };
        if r != 0 {
            return Trigger::Libbpf(prog_fd);
        }
        let mut attr = [0u8; 16];
        attr[0..4].copy_from_slice(&info.id.to_ne_bytes());
        match direct_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
            Ok(fd) => Trigger::Direct(fd as i32),
            Err(_) => Trigger::Libbpf(prog_fd),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Trigger::Libbpf(_) => "libbpf",
            Trigger::Direct(_) => "direct",
        }
    }

    /// Runs the producer once: `count` records from sequence number
    /// `first_seq`; returns how many could not be reserved (ring full).
    fn produce(self, count: u64, first_seq: u64) -> Result<u64, CliError> {
        // `struct rb_bench_ctx`. The kernel copies a syscall program's
        // context back into ctx_in, so it must be writable.
        let mut ctx = [count, first_seq];
        let ctx_size = std::mem::size_of_val(&ctx) as u32;
        let (r, retval) = match self {
            Trigger::Libbpf(fd) => {
                let mut opts = libbpf_sys::bpf_test_run_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
                    ctx_in: ctx.as_mut_ptr().cast(),
                    ctx_size_in: ctx_size,
                    ..Default::default()
                };
                // SAFETY: `opts` is a valid, sized bpf_test_run_opts whose
                // ctx_in points to `ctx`, a live, writable local of
                // ctx_size_in bytes; the other pointers are null with zero
                // sizes.
                let r = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut opts) };
                (if r < 0 { Err(-r) } else { Ok(()) }, opts.retval)
            }
            Trigger::Direct(fd) => {
                const BPF_PROG_TEST_RUN: u64 = 10;
                // union bpf_attr's test: prog_fd @0, retval @4,
                // ctx_size_in @40, ctx_in @48.
                let mut attr = [0u8; 80];
                attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
                attr[40..44].copy_from_slice(&ctx_size.to_ne_bytes());
                attr[48..56].copy_from_slice(&(ctx.as_mut_ptr() as u64).to_ne_bytes());
                let r = direct_bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ());
                (
                    r,
                    u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes")),
                )
            }
        };
        match r {
            Ok(()) => Ok(u64::from(retval)),
            Err(e) => Err(CliError::Bpf {
                call: "BPF_PROG_TEST_RUN".to_string(),
                source: std::io::Error::from_raw_os_error(e),
            }),
        }
    }
}

/// What the consumer publishes to the producer.
#[derive(Default)]
struct Progress {
    /// Throughput-phase records consumed.
    consumed: AtomicU64,
    /// One-at-a-time records consumed.
    idle_consumed: AtomicU64,
    /// The producer has finished.
    done: AtomicBool,
    /// Records submitted in both phases (valid once `done`).
    submitted_total: AtomicU64,
}

/// What the producer thread reports.
struct Produced {
    /// `CLOCK_MONOTONIC` just before the first submit.
    t0_ns: u64,
    /// Throughput-phase records the guest kernel accepted.
    submitted: u64,
    /// Throughput-phase records that found the ring full.
    dropped: u64,
    /// One-at-a-time records submitted.
    idle_submitted: u64,
}

/// Waits (sleeping briefly, so the consumer keeps the CPU) until `cond`
/// holds or nothing has happened for [`STALL`]; whether it holds.
fn wait_for(mut cond: impl FnMut() -> bool, pause: Duration) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > STALL {
            return false;
        }
        if pause.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
        }
    }
    true
}

fn producer(trigger: Trigger, events: u64, progress: &Progress) -> Result<Produced, CliError> {
    let t0_ns = monotonic_ns();
    let (mut next_seq, mut submitted, mut dropped) = (0u64, 0u64, 0u64);
    while next_seq < events {
        let n = BATCH.min(events - next_seq);
        // Records lost on the way would keep the window full for ever:
        // after STALL the producer goes on regardless.
        wait_for(
            || submitted - progress.consumed.load(Ordering::Acquire) + n <= WINDOW,
            Duration::from_micros(20),
        );
        let d = trigger.produce(n, next_seq)?;
        dropped += d;
        submitted += n - d;
        next_seq += n;
    }
    // Let the pipeline drain before measuring single records.
    wait_for(
        || progress.consumed.load(Ordering::Acquire) >= submitted,
        Duration::from_micros(100),
    );
    let mut idle_submitted = 0u64;
    for i in 0..IDLE_SAMPLES {
        // Give the consumer time to go back to waiting for the next record.
        std::thread::sleep(Duration::from_micros(200));
        idle_submitted += 1 - trigger.produce(1, IDLE_SEQ + i)?;
        wait_for(
            || progress.idle_consumed.load(Ordering::Acquire) >= idle_submitted,
            Duration::ZERO,
        );
    }
    progress
        .submitted_total
        .store(submitted + idle_submitted, Ordering::Release);
    progress.done.store(true, Ordering::Release);
    Ok(Produced {
        t0_ns,
        submitted,
        dropped,
        idle_submitted,
    })
}

/// What the consumer saw.
#[derive(Default)]
struct Consumed {
    load_ns: Vec<u64>,
    idle_ns: Vec<u64>,
    last_ns: u64,
    next_seq: u64,
    reordered: u64,
    malformed: u64,
}

impl Consumed {
    fn sample(&mut self, data: &[u8], progress: &Progress) {
        if data.len() != RECORD {
            self.malformed += 1;
            return;
        }
        let now = monotonic_ns();
        let word = |i: usize| u64::from_ne_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let (ts, seq) = (word(0), word(8));
        let latency = now.saturating_sub(ts);
        if seq >= IDLE_SEQ {
            self.idle_ns.push(latency);
            progress
                .idle_consumed
                .store(self.idle_ns.len() as u64, Ordering::Release);
        } else {
            if seq < self.next_seq {
                self.reordered += 1;
            } else {
                self.next_seq = seq + 1;
            }
            self.load_ns.push(latency);
            self.last_ns = now;
            progress
                .consumed
                .store(self.load_ns.len() as u64, Ordering::Release);
        }
    }
}

/// The latencies at the percentiles 0, 1, …, 100 (nearest rank, µs), as
/// one `key=value` word's value: `v0,v1,…,v100` (empty for no samples).
fn percentiles_word(ns: &[u64]) -> String {
    let mut d: Vec<Duration> = ns.iter().map(|&n| Duration::from_nanos(n)).collect();
    d.sort_unstable();
    if d.is_empty() {
        return String::new();
    }
    (0..=100)
        .map(|p| format!("{:.2}", percentile_us(&d, p as f64 / 100.0)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The percentiles [`percentiles_word`] wrote.
fn parse_percentiles(word: Option<&str>) -> Vec<f64> {
    word.map(|w| w.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

fn summary_ns(ns: &[u64]) -> Summary {
    let mut d: Vec<Duration> = ns.iter().map(|&n| Duration::from_nanos(n)).collect();
    summarize(&mut d)
}

/// Child side: load the producer, consume with libbpf, print the figures
/// as `key=value` words.
pub fn worker(events: usize) -> Result<(), CliError> {
    if OBJECT.is_empty() {
        return Err(CliError::NoBenchObject(OBJECT_ERROR));
    }
    let events = events.max(1) as u64;
    let obj = ObjectBuilder::default()
        .open_memory(OBJECT)
        .and_then(|o| o.load())
        .map_err(|source| CliError::Libbpf {
            what: "loading the producer object",
            source,
        })?;
    let map = obj
        .maps()
        .find(|m| m.name() == "rb_events")
        .ok_or(CliError::NotInObject("map rb_events"))?;
    let prog = obj
        .progs()
        .find(|p| p.name() == "rb_bench_produce")
        .ok_or(CliError::NotInObject("program rb_bench_produce"))?;
    let trigger = Trigger::for_prog(prog.as_fd().as_raw_fd());

    let progress = Arc::new(Progress::default());
    let mut seen = Consumed {
        load_ns: Vec::with_capacity(events as usize),
        idle_ns: Vec::with_capacity(IDLE_SAMPLES as usize),
        ..Consumed::default()
    };
    let mut builder = RingBufferBuilder::new();
    {
        let progress = progress.clone();
        let seen = &mut seen;
        builder
            .add(&map, move |data: &[u8]| {
                seen.sample(data, &progress);
                0
            })
            .map_err(|source| CliError::Libbpf {
                what: "ring_buffer__add",
                source,
            })?;
    }
    let rb = builder.build().map_err(|source| CliError::Libbpf {
        what: "ring_buffer__new",
        source,
    })?;

    // The producer gets the program's fd only; the object stays here.
    let producer_progress = progress.clone();
    let producer = std::thread::spawn(move || producer(trigger, events, &producer_progress));

    let total =
        |p: &Progress| p.consumed.load(Ordering::Acquire) + p.idle_consumed.load(Ordering::Acquire);
    let mut last_total = 0;
    let mut last_progress = Instant::now();
    loop {
        rb.poll(Duration::from_millis(50))
            .map_err(|source| CliError::Libbpf {
                what: "ring_buffer__poll",
                source,
            })?;
        let now_total = total(&progress);
        if now_total != last_total {
            last_total = now_total;
            last_progress = Instant::now();
        }
        if progress.done.load(Ordering::Acquire) {
            let expected = progress.submitted_total.load(Ordering::Acquire);
            if now_total >= expected || last_progress.elapsed() > STALL {
                break;
            }
        } else if producer.is_finished() {
            break; // it failed: its error is reported below
        }
    }
    drop(rb);
    let produced = producer.join().map_err(|_| CliError::ProducerPanicked)??;
    if let Trigger::Direct(fd) = trigger {
        // SAFETY: closing the fd Trigger::for_prog opened; nothing uses it now.
        unsafe { libc::close(fd) };
    }
    drop(obj);

    let consumed = seen.load_ns.len() as u64;
    let elapsed_s = seen.last_ns.saturating_sub(produced.t0_ns) as f64 / 1e9;
    let rate = if elapsed_s > 0.0 {
        consumed as f64 / elapsed_s
    } else {
        0.0
    };
    let load = summary_ns(&seen.load_ns);
    let idle = summary_ns(&seen.idle_ns);
    println!(
        "events={events} submitted={} dropped={} consumed={consumed} missing={} \
         reordered={} malformed={} elapsed_s={elapsed_s:.6} rate={rate:.0} \
         load_p50_us={:.2} load_p99_us={:.2} idle_p50_us={:.2} idle_p99_us={:.2} \
         idle_n={} idle_missing={} trigger={} idle_pct_us={}",
        produced.submitted,
        produced.dropped,
        produced.submitted.saturating_sub(consumed),
        seen.reordered,
        seen.malformed,
        load.p50_us,
        load.p99_us,
        idle.p50_us,
        idle.p99_us,
        idle.n,
        produced
            .idle_submitted
            .saturating_sub(seen.idle_ns.len() as u64),
        trigger.name(),
        percentiles_word(&seen.idle_ns),
    );
    Ok(())
}

/// Runs the worker as a child, with or without the preload.
fn child(events: usize, forwarded: Option<(&str, &Path)>) -> Result<Figures, CliError> {
    run_worker("ringbuf", events, forwarded)
}

/// The run with the median rate.
fn median_run(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.get("rate").total_cmp(&b.get("rate")));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn rates(runs: &[Figures]) -> String {
    runs.iter()
        .map(|f| format!("{:.2}M", f.get("rate") / 1e6))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each run's one-at-a-time p50, in µs: the table shows only the run with
/// the median rate, and on a busy machine single runs differ a lot.
fn idle_p50s(runs: &[Figures]) -> String {
    runs.iter()
        .map(|f| format!("{:.1}", f.get("idle_p50_us")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the benchmark and prints the table.
pub fn run(
    target: &str,
    key_file: &Path,
    events: usize,
    repeat: usize,
    svg: Option<&Path>,
) -> Result<(), CliError> {
    let events = events.max(1);
    let repeat = repeat.max(1);
    // Local and forwarded alternate, so that whatever else the machine does
    // meanwhile affects both alike.
    let (mut locals, mut forwardeds) = (Vec::new(), Vec::new());
    let mut local_err = None;
    for _ in 0..repeat {
        if local_err.is_none() {
            match child(events, None) {
                Ok(f) => locals.push(f),
                Err(e) => local_err = Some(e),
            }
        }
        forwardeds.push(child(events, Some((target, key_file)))?);
    }
    println!(
        "telebpf bench ringbuf: {events} records of {RECORD} B, {BATCH} per BPF_PROG_TEST_RUN, \
         at most {WINDOW} in flight; then {IDLE_SAMPLES} one at a time; target {target}"
    );
    println!(
        "events/s of each run: local [{}], forwarded [{}]; the table shows each side's median run",
        rates(&locals),
        rates(&forwardeds)
    );
    println!(
        "one-at-a-time p50 (µs) of each run: local [{}], forwarded [{}]",
        idle_p50s(&locals),
        idle_p50s(&forwardeds)
    );
    let local = if locals.is_empty() {
        // Every local run failed: the loop kept the first failure.
        Err(local_err.unwrap_or_else(|| CliError::Worker(String::new())))
    } else {
        Ok(median_run(locals))
    };
    let forwarded = median_run(forwardeds);
    let empty = Figures {
        text: String::new(),
    };
    let (l, local_note) = match &local {
        Ok(f) => (f, None),
        Err(e) => (&empty, Some(e)),
    };
    let f = &forwarded;
    println!(
        "producer run: local {}, forwarded {} (direct: BPF_PROG_TEST_RUN on this kernel, unseen by \
         the preload, as guest activity; libbpf: through the preload, a round trip per batch)",
        l.word("trigger").unwrap_or("-"),
        f.word("trigger").unwrap_or("-"),
    );
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "", "local", "forwarded", "fwd/local"
    );
    let row = |what: &str, key: &str, digits: usize| {
        let (a, b) = (l.get(key), f.get(key));
        println!("{what:<40} {a:>12.digits$} {b:>12.digits$} {:>9.2}x", b / a);
    };
    row("events/s", "rate", 0);
    row("latency p50 under load (µs)", "load_p50_us", 1);
    row("latency p99 under load (µs)", "load_p99_us", 1);
    row("latency p50 one at a time (µs)", "idle_p50_us", 1);
    row("latency p99 one at a time (µs)", "idle_p99_us", 1);
    println!(
        "(under load the producer keeps up to {WINDOW} records in flight, so there latency is \
         about {WINDOW} / (events/s): queueing)"
    );
    let count = |what: &str, key: &str| {
        println!("{what:<40} {:>12} {:>12}", l.get(key), f.get(key));
    };
    count("records submitted", "submitted");
    count("lost: guest ring full at reserve", "dropped");
    count("lost: submitted, never consumed", "missing");
    count("out of order", "reordered");
    count("one-at-a-time records never consumed", "idle_missing");
    if let Some(e) = local_note {
        println!("local run unavailable: {e}");
    }
    let rate = f.get("rate");
    println!(
        "forwarded: {:.2} M events/s (target >= 1 M/s: {}), {:.0}% of local (target >= 100%: {})",
        rate / 1e6,
        if rate >= 1e6 { "met" } else { "NOT met" },
        100.0 * rate / l.get("rate"),
        if rate >= l.get("rate") {
            "met"
        } else {
            "NOT met"
        },
    );
    if let Some(path) = svg {
        let (lp, fp) = (
            parse_percentiles(l.word("idle_pct_us")),
            parse_percentiles(f.word("idle_pct_us")),
        );
        let (ln, fname) = (
            format!("local (p50 {:.1} µs)", l.get("idle_p50_us")),
            format!("forwarded (p50 {:.1} µs)", f.get("idle_p50_us")),
        );
        let mut series = Vec::new();
        if !lp.is_empty() {
            series.push(chart::Distribution {
                name: &ln,
                percentiles: &lp,
            });
        }
        series.push(chart::Distribution {
            name: &fname,
            percentiles: &fp,
        });
        chart::distribution(
            path,
            &format!("bench ringbuf: {IDLE_SAMPLES} records one at a time, local vs forwarded"),
            &series,
        )?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}
