//! `ringwatch`: a libbpf-rs program in the shape of libbpf-rs's own
//! examples, which reports the `exec()`s of processes with a given `comm`
//! through both kinds of BPF output buffer and counts them in `.bss`.
//!
//! ```text
//! ringwatch --comm NAME --count N [--timeout-ms MS]
//! ```
//!
//! It writes `NAME` into the program's `.rodata` (`target_comm`) through
//! the skeleton, loads and attaches `tp/sched/sched_process_exec`, and
//! polls a `BPF_MAP_TYPE_RINGBUF` (libbpf-rs `RingBuffer`) and a
//! `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (`PerfBuffer`) until each has delivered
//! at least `N` events, printing one line per event:
//!
//! ```text
//! ring pid=1234 comm=NAME
//! perf pid=1234 comm=NAME
//! ```
//!
//! Then it prints the program's `.bss` counter of matching execs, read
//! through the skeleton's mmap of the `.bss` map, as `bss_count=<n>`, and
//! exits 0. If the events have not all arrived `MS` milliseconds after
//! attaching, it says so on stderr and exits 2; any other failure exits 1.
//!
//! Nothing in it knows about telebpf: the end-to-end tests run the same
//! binary as root and, unprivileged, through `telebpf exec`.

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{PerfBufferBuilder, RingBufferBuilder};

/// The generated skeleton (`build.rs`, in `OUT_DIR`).
#[allow(
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn,
    unused_imports
)]
mod ringwatch {
    include!(concat!(env!("OUT_DIR"), "/ringwatch.skel.rs"));
}

use ringwatch::RingwatchSkelBuilder;

/// `TASK_COMM_LEN`: a comm is at most 15 bytes and a NUL.
const COMM_LEN: usize = 16;

/// Exit status when the events did not arrive in time.
const EXIT_TIMEOUT: u8 = 2;

/// How long one poll of either buffer may block.
const POLL_SLICE: Duration = Duration::from_millis(50);

#[derive(Debug, Parser)]
#[command(about = "Report exec()s of one comm through a BPF ring buffer and a perf buffer")]
struct Args {
    /// Report processes whose comm (at most 15 bytes) is exactly this.
    #[arg(long)]
    comm: String,
    /// Exit once each buffer has delivered this many events.
    #[arg(long)]
    count: u64,
    /// Give up (exit 2) this long after attaching.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// `struct event` of `src/bpf/ringwatch.bpf.c`.
#[derive(Debug)]
struct Event {
    pid: u32,
    comm: String,
}

impl Event {
    /// Size of the C struct: `__u32 pid; char comm[16];`.
    const SIZE: usize = 4 + COMM_LEN;

    fn parse(data: &[u8]) -> Option<Event> {
        if data.len() < Event::SIZE {
            return None;
        }
        let pid = u32::from_ne_bytes(data[..4].try_into().ok()?);
        let comm = &data[4..Event::SIZE];
        let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        Some(Event {
            pid,
            comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        })
    }
}

/// Counts and prints the events of one buffer.
struct Sink {
    kind: &'static str,
    seen: Cell<u64>,
    malformed: Cell<u64>,
}

impl Sink {
    fn new(kind: &'static str) -> Sink {
        Sink {
            kind,
            seen: Cell::new(0),
            malformed: Cell::new(0),
        }
    }

    fn take(&self, data: &[u8]) {
        match Event::parse(data) {
            Some(e) => {
                println!("{} pid={} comm={}", self.kind, e.pid, e.comm);
                self.seen.set(self.seen.get() + 1);
            }
            None => {
                eprintln!(
                    "ringwatch: malformed {} record of {} bytes",
                    self.kind,
                    data.len()
                );
                self.malformed.set(self.malformed.get() + 1);
            }
        }
    }
}

/// Why `run` stopped without success.
enum Failure {
    Timeout(String),
    Error(String),
}

fn context<T>(what: &str, r: libbpf_rs::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::Error(format!("{what}: {e}")))
}

fn comm_setting(comm: &str) -> Result<[i8; COMM_LEN], Failure> {
    let bytes = comm.as_bytes();
    if bytes.is_empty() || bytes.len() >= COMM_LEN || bytes.contains(&0) {
        return Err(Failure::Error(format!(
            "--comm must be 1 to {} bytes without NUL, got {comm:?}",
            COMM_LEN - 1
        )));
    }
    let mut out = [0i8; COMM_LEN];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b as i8;
    }
    Ok(out)
}

fn run(args: &Args) -> Result<(), Failure> {
    let target_comm = comm_setting(&args.comm)?;

    let mut open_object = MaybeUninit::uninit();
    let mut open_skel = context(
        "open skeleton",
        RingwatchSkelBuilder::default().open(&mut open_object),
    )?;
    match open_skel.maps.rodata_data.as_deref_mut() {
        Some(rodata) => rodata.target_comm = target_comm,
        None => return Err(Failure::Error("the object has no mmapped .rodata".into())),
    }
    let mut skel = context("load", open_skel.load())?;

    let ring = Sink::new("ring");
    let perf = Sink::new("perf");
    let lost = RefCell::new(Vec::new());

    let mut ring_builder = RingBufferBuilder::new();
    context(
        "ring buffer",
        ring_builder.add(&skel.maps.ring_events, |data: &[u8]| {
            ring.take(data);
            0
        }),
    )?;
    let ring_buffer = context("ring buffer", ring_builder.build())?;
    let perf_buffer = context(
        "perf buffer",
        PerfBufferBuilder::new(&skel.maps.perf_events)
            .sample_cb(|_cpu: i32, data: &[u8]| perf.take(data))
            .lost_cb(|cpu: i32, n: u64| lost.borrow_mut().push((cpu, n)))
            .build(),
    )?;

    context("attach", skel.attach())?;
    eprintln!(
        "ringwatch: attached; waiting for {} exec(s) of {:?}",
        args.count, args.comm
    );

    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    while ring.seen.get() < args.count || perf.seen.get() < args.count {
        if Instant::now() >= deadline {
            return Err(Failure::Timeout(format!(
                "timed out after {} ms: {} of {} ring events, {} of {} perf events \
                 (malformed: ring {}, perf {}; perf samples lost: {:?})",
                args.timeout_ms,
                ring.seen.get(),
                args.count,
                perf.seen.get(),
                args.count,
                ring.malformed.get(),
                perf.malformed.get(),
                lost.borrow()
            )));
        }
        context("ring buffer poll", ring_buffer.poll(POLL_SLICE))?;
        context("perf buffer poll", perf_buffer.poll(POLL_SLICE))?;
    }

    let bss = skel
        .maps
        .bss_data
        .as_deref()
        .ok_or_else(|| Failure::Error("the object has no mmapped .bss".into()))?;
    // SAFETY: `bss.event_count` is a valid, aligned u64 in the mapping of
    // the .bss map; the BPF program changes it behind the compiler's back,
    // hence the volatile read.
    let count = unsafe { std::ptr::read_volatile(&bss.event_count) };
    println!("bss_count={count}");
    if !lost.borrow().is_empty() {
        eprintln!("ringwatch: perf samples lost: {:?}", lost.borrow());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Timeout(msg)) => {
            eprintln!("ringwatch: {msg}");
            ExitCode::from(EXIT_TIMEOUT)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("ringwatch: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_parse() {
        let mut raw = vec![0u8; Event::SIZE];
        raw[..4].copy_from_slice(&42u32.to_ne_bytes());
        raw[4..10].copy_from_slice(b"tbmark");
        let e = Event::parse(&raw).expect("parses");
        assert_eq!(e.pid, 42);
        assert_eq!(e.comm, "tbmark");
        assert!(Event::parse(&raw[..Event::SIZE - 1]).is_none());
    }

    #[test]
    fn comm_setting_bounds() {
        assert!(comm_setting("").is_err());
        assert!(comm_setting("0123456789abcdef").is_err());
        let c = comm_setting("0123456789abcde").ok().expect("15 bytes fit");
        assert_eq!(c[14], b'e' as i8);
        assert_eq!(c[15], 0);
    }
}
