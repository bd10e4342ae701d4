//! userring: produces records into a `BPF_MAP_TYPE_USER_RINGBUF` with
//! libbpf-rs's `UserRingBuffer` (libbpf's `user_ring_buffer__reserve` /
//! `__submit`) and has the kernel consume them: a `SEC("syscall")` program,
//! run with `BPF_PROG_TEST_RUN`, drains the ring with
//! `bpf_user_ringbuf_drain` and adds the records up in an array map.
//!
//! Records are the u64 values `1..=count`, produced in batches of `batch`;
//! after each batch the drain program runs until it has counted every
//! record so far (or `--timeout-ms` passes). The ring (16 KiB) is smaller
//! than the records in all, so both positions wrap. Then the drained ring
//! is filled exactly and one more record is reserved with
//! `user_ring_buffer__reserve_blocking` while another thread drains (see
//! `blocking_phase`); the total is `count + 1025` records. Prints
//! `count=<n> sum=<s> bad=<b>`; exits 1 when the totals are not the
//! expected ones.

use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, ProgramInput, UserRingBuffer};

/// The generated skeleton (`build.rs`, in `OUT_DIR`).
#[allow(
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn,
    unused_imports
)]
mod userring {
    include!(concat!(env!("OUT_DIR"), "/userring.skel.rs"));
}

use userring::UserringSkelBuilder;

/// Command line.
#[derive(Parser, Debug)]
struct Args {
    /// Records to produce.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Records per batch (a batch must fit in the 16 KiB ring: 16 bytes each).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// How long one batch may take to be drained.
    #[arg(long, default_value_t = 20_000)]
    timeout_ms: u64,
}

/// `struct totals` of the BPF program.
fn totals(skel: &userring::UserringSkel<'_>) -> Result<[u64; 3], String> {
    let v = skel
        .maps
        .totals
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| format!("lookup totals: {e}"))?
        .ok_or("no totals")?;
    let word = |i: usize| u64::from_ne_bytes(v[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    Ok([word(0), word(1), word(2)])
}

fn run(args: &Args) -> Result<[u64; 3], String> {
    let mut open_object = MaybeUninit::uninit();
    let open_skel = UserringSkelBuilder::default()
        .open(&mut open_object)
        .map_err(|e| format!("open skeleton: {e}"))?;
    let skel = open_skel.load().map_err(|e| format!("load: {e}"))?;
    let ring = UserRingBuffer::new(&skel.maps.user_ring).map_err(|e| format!("user ring: {e}"))?;
    let mut next = 1u64;
    while next <= args.count {
        let end = (next + args.batch - 1).min(args.count);
        for v in next..=end {
            let mut sample = ring
                .reserve(8)
                .map_err(|e| format!("reserve record {v}: {e}"))?;
            sample.as_mut().copy_from_slice(&v.to_ne_bytes());
            ring.submit(sample)
                .map_err(|e| format!("submit record {v}: {e}"))?;
        }
        let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
        loop {
            let out = skel
                .progs
                .drain
                .test_run(ProgramInput::default())
                .map_err(|e| format!("test run: {e}"))?;
            if out.return_value != 0 {
                return Err(format!("drain returned {}", out.return_value as i32));
            }
            let t = totals(&skel)?;
            if t[0] >= end {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {} of {end} records drained", t[0]));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        next = end + 1;
    }
    blocking_phase(&skel, args)?;
    totals(&skel)
}

/// Records `count+1..=count+RING_RECORDS` fill the (drained) ring exactly;
/// one more is reserved with libbpf's `user_ring_buffer__reserve_blocking`
/// (which waits for `EPOLLOUT` on the map fd) while another thread drains
/// the ring after 100 ms; then everything is drained.
fn blocking_phase(skel: &userring::UserringSkel<'_>, args: &Args) -> Result<(), String> {
    use std::os::fd::{AsFd, AsRawFd};
    let map_fd = skel.maps.user_ring.as_fd().as_raw_fd();
    let prog_fd = skel.progs.drain.as_fd().as_raw_fd();
    // SAFETY: a live user ring buffer map fd and no options.
    let rb = unsafe { libbpf_rs::libbpf_sys::user_ring_buffer__new(map_fd, std::ptr::null()) };
    if rb.is_null() {
        return Err("user_ring_buffer__new failed".into());
    }
    let mut result = Ok(());
    for v in args.count + 1..=args.count + RING_RECORDS {
        // SAFETY: `rb` is live; a non-null sample has 8 writable bytes.
        unsafe {
            let p = libbpf_rs::libbpf_sys::user_ring_buffer__reserve(rb, 8);
            if p.is_null() {
                result = Err(format!("reserve record {v}: no room in a drained ring"));
                break;
            }
            p.cast::<u64>().write_unaligned(v);
            libbpf_rs::libbpf_sys::user_ring_buffer__submit(rb, p);
        }
    }
    if result.is_ok() {
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: zeroed options with their size set, as libbpf wants.
            let mut opts: libbpf_rs::libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
            opts.sz = std::mem::size_of_val(&opts) as _;
            // SAFETY: a live program fd and valid options.
            unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog_fd, &mut opts) }
        });
        let v = args.count + RING_RECORDS + 1;
        // SAFETY: `rb` is live; a non-null sample has 8 writable bytes.
        unsafe {
            let p = libbpf_rs::libbpf_sys::user_ring_buffer__reserve_blocking(rb, 8, 10_000);
            if p.is_null() {
                result = Err(format!("reserve_blocking record {v} failed"));
            } else {
                p.cast::<u64>().write_unaligned(v);
                libbpf_rs::libbpf_sys::user_ring_buffer__submit(rb, p);
            }
        }
        if drainer.join().ok() != Some(0) {
            result = result.and(Err("the drain thread's test run failed".into()));
        }
    }
    // SAFETY: `rb` is live and not used again.
    unsafe { libbpf_rs::libbpf_sys::user_ring_buffer__free(rb) };
    result?;
    let total = args.count + RING_RECORDS + 1;
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    loop {
        let out = skel
            .progs
            .drain
            .test_run(ProgramInput::default())
            .map_err(|e| format!("test run: {e}"))?;
        if out.return_value != 0 {
            return Err(format!("drain returned {}", out.return_value as i32));
        }
        let t = totals(skel)?;
        if t[0] >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {total} records drained", t[0]));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// 8-byte records the 16 KiB ring holds (16 bytes each with the header).
const RING_RECORDS: u64 = 16 * 1024 / 16;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok([count, sum, bad]) => {
            println!("count={count} sum={sum} bad={bad}");
            let n = args.count + RING_RECORDS + 1;
            let want = n * (n + 1) / 2;
            if count == n && sum == want && bad == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("userring: want count={n} sum={want} bad=0");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("userring: {e}");
            ExitCode::FAILURE
        }
    }
}
