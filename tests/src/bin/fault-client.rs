//! `fault-client`: the host program of the fault tests (`tests/faults.rs`).
//!
//! It makes raw `bpf()` calls through libc's `syscall`, as libbpf does, so
//! under the preload (as nobody) every call goes through the proxy, and as
//! root without the preload it runs on this kernel (the tests' producer).
//! Each mode prints `key=value` lines, one per event, flushed at once, with
//! `t=` a `CLOCK_MONOTONIC` time in ms that the test compares with its own.
//!
//! Modes:
//! * `slow-load N` — two maps, then programs whose verification walks a
//!   bounded loop of N iterations, loaded again and again; prints
//!   `loaded ms=…` after each, `loading t=…` before each.
//! * `mid-call N` — like `slow-load`, until a call fails (the proxy went
//!   away); then, for 3 s, tries to create a map every 50 ms (each must
//!   fail with the errno of the first failure: the lost session held a
//!   map, so the preload does not reconnect behind the program's back) and
//!   prints the errnos it got; uses the fd of the first map, which belonged
//!   to the lost session; closes it, and then creates a map every 50 ms
//!   until one succeeds (with no fd of the lost session left, the preload
//!   reconnects).
//! * `no-objects ROUNDS MS` — ROUNDS rounds, MS apart, each creating a map,
//!   writing and reading it and closing it, so that between rounds the
//!   program holds no guest object; prints `round=… result=…` per round.
//! * `batch ENTRIES` — a hash map of ENTRIES, then `BPF_MAP_UPDATE_BATCH`
//!   and `BPF_MAP_LOOKUP_BATCH` of all of it, round after round.
//! * `ringbuf` — a ring buffer map and a socket filter that writes a 64-byte
//!   record to it; mmaps the ring as libbpf does (the preload mirrors it)
//!   and consumes forever, printing the count.
//! * `produce PROG_ID RUNS` — as root: runs that program with
//!   `BPF_PROG_TEST_RUN` RUNS times (1000 repeats each).
//! * `counter PIN KEY SECONDS` — opens the pinned array map and, for
//!   SECONDS, increments element KEY by lookup and update, checking each
//!   update with a lookup.
//! * `maps N` — creates up to N maps, stops at the first error.
//! * `rate N` — N lookups as fast as possible, counting the errnos.
//! * `btf-fds N` — opens the first BTF object (vmlinux) by id up to N
//!   times, stops at the first error, prints `fds=K errno=E`, then holds
//!   every fd until killed.
//! * `bigmaps N MIB HOLD` — creates N arrays of MIB MiB each (4 KiB values),
//!   printing `map=I errno=E id=ID` for each (id 0 when it failed); with
//!   HOLD `1` prints `holding` and keeps them until killed.
//! * `hold-map ID` — opens map ID by id, prints `held errno=E`, and keeps it
//!   until killed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use telebpf_abi::cmd::*;
use telebpf_abi::map_type::*;
use telebpf_abi::prog_type::BPF_PROG_TYPE_SOCKET_FILTER;
use telebpf_tests::raw_bpf::{bpf, errno, lookup, map_create, update};

const BPF_FUNC_RINGBUF_OUTPUT: i32 = 130;

/// `CLOCK_MONOTONIC` in ms, comparable with the test's own reading.
fn now_ms() -> f64 {
    // SAFETY: plain data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// One eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = dst | (src << 4);
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const ADD64_K: u8 = 0x07;
const JLT_K: u8 = 0xa5;
const ST_DW: u8 = 0x7a;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

fn prog_load(prog_type: u32, insns: &[[u8; 8]]) -> Result<i32, i32> {
    let code: Vec<u8> = insns.iter().flatten().copied().collect();
    let license = c"GPL";
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog_type);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, code.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    bpf(BPF_PROG_LOAD, &mut a).map(|fd| fd as i32)
}

/// A socket filter whose verification walks `n` iterations of a loop with
/// a known counter (no state is pruned), so it takes a while.
fn slow_prog(n: i32) -> Result<i32, i32> {
    prog_load(
        BPF_PROG_TYPE_SOCKET_FILTER,
        &[
            insn(MOV64_K, 0, 0, 0, 0),
            insn(ADD64_K, 0, 0, 0, 1),
            insn(JLT_K, 0, 0, -2, n),
            insn(MOV64_K, 0, 0, 0, 0),
            insn(EXIT, 0, 0, 0, 0),
        ],
    )
}

/// A socket filter that writes one 64-byte record to ring buffer `map_fd`.
fn ring_producer(map_fd: i32) -> Result<i32, i32> {
    let mut p = Vec::new();
    for i in 1..=8i16 {
        p.push(insn(ST_DW, 10, 0, -8 * i, i as i32));
    }
    p.push(insn(LD_IMM64, 1, 1, 0, map_fd));
    p.push(insn(0, 0, 0, 0, 0));
    p.push(insn(MOV64_X, 2, 10, 0, 0));
    p.push(insn(ADD64_K, 2, 0, 0, -64));
    p.push(insn(MOV64_K, 3, 0, 0, 64));
    p.push(insn(MOV64_K, 4, 0, 0, 0));
    p.push(insn(CALL, 0, 0, 0, BPF_FUNC_RINGBUF_OUTPUT));
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    prog_load(BPF_PROG_TYPE_SOCKET_FILTER, &p)
}

fn prog_id(fd: i32) -> Result<u32, i32> {
    let mut info = [0u8; 256];
    let mut a = [0u8; 16];
    put32(&mut a, 0, fd as u32);
    put32(&mut a, 4, info.len() as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(u32::from_le_bytes(info[4..8].try_into().expect("4 bytes")))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i}: {what}"))
}

fn slow_load(n: i32) {
    let a = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 16).expect("map");
    let b = map_create(BPF_MAP_TYPE_HASH, 4, 8, 1024).expect("map");
    println!("maps={a},{b}");
    loop {
        println!("loading t={:.1}", now_ms());
        let t0 = Instant::now();
        let r = slow_prog(n);
        println!("loaded ms={} result={r:?}", t0.elapsed().as_millis(),);
        if let Ok(fd) = r {
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
        }
    }
}

fn mid_call(n: i32) {
    let first = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 16).expect("map");
    update(first, 1, 7).expect("update");
    println!("map={first}");
    loop {
        println!("loading t={:.1}", now_ms());
        let r = slow_prog(n);
        match r {
            Ok(fd) => {
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                println!("loaded");
            }
            Err(e) => {
                println!("failed errno={e} t={:.1}", now_ms());
                break;
            }
        }
    }
    // The lost session held `first`: no silent new session while its fd is
    // held, whatever the proxy does meanwhile.
    let t0 = Instant::now();
    let mut errnos: BTreeMap<i32, u32> = BTreeMap::new();
    while t0.elapsed() < Duration::from_secs(3) {
        match map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 16) {
            Ok(fd) => {
                println!("reconnected while the lost session's fd is held: fd {fd}");
                std::process::exit(1);
            }
            Err(e) => *errnos.entry(e).or_default() += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts: Vec<String> = errnos
        .iter()
        .map(|(e, c)| format!("errno{e}={c}"))
        .collect();
    println!("retries {}", counts.join(" "));
    let old = lookup(first, 1);
    println!(
        "old_fd lookup={}",
        match old {
            Ok(v) => format!("value {v}"),
            Err(e) => format!("errno {e}"),
        }
    );
    // SAFETY: closing our own fd.
    unsafe { libc::close(first) };
    let t0 = Instant::now();
    let mut attempts = 0;
    let fresh = loop {
        attempts += 1;
        match map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 16) {
            Ok(fd) => break fd,
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                println!("never reconnected errno={e}");
                std::process::exit(1);
            }
        }
    };
    update(fresh, 1, 9).expect("update on the new session");
    println!(
        "reconnected attempts={attempts} fresh_value={}",
        lookup(fresh, 1).expect("lookup on the new session")
    );
}

/// Loads slow programs, closing each, so that the process holds no guest
/// object while a load waits for its reply; prints `loading t=…` before
/// each and `failed errno=E t=…` when one fails, then, 3 s later,
/// `after result=…` for a map made next.
fn mid_call_no_objects(n: i32) {
    loop {
        println!("loading t={:.1}", now_ms());
        match slow_prog(n) {
            Ok(fd) => {
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                println!("loaded");
            }
            Err(e) => {
                println!("failed errno={e} t={:.1}", now_ms());
                break;
            }
        }
    }
    // Nothing was held: the next call may open a new session once the
    // proxy answers again.
    std::thread::sleep(Duration::from_secs(3));
    let r = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 4);
    println!(
        "after result={}",
        match r {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("errno{e}"),
        }
    );
}

/// Rounds that each hold a map only during the round.
fn no_objects(rounds: u32, ms: u64) {
    for round in 1..=rounds {
        let result = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 4).and_then(|fd| {
            let r = update(fd, 1, u64::from(round)).and_then(|_| lookup(fd, 1));
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
            r
        });
        println!(
            "round={round} result={} t={:.1}",
            match result {
                Ok(v) => format!("value{v}"),
                Err(e) => format!("errno{e}"),
            },
            now_ms()
        );
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn batch(entries: u32) {
    let fd = map_create(BPF_MAP_TYPE_HASH, 4, 8, entries).expect("map");
    let keys: Vec<u32> = (0..entries).collect();
    let mut round = 0u64;
    println!("map={fd}");
    loop {
        round += 1;
        let values: Vec<u64> = keys.iter().map(|&k| k as u64 + round).collect();
        let mut a = [0u8; 56];
        put64(&mut a, 16, keys.as_ptr() as u64);
        put64(&mut a, 24, values.as_ptr() as u64);
        put32(&mut a, 32, entries);
        put32(&mut a, 36, fd as u32);
        println!("update_batch t={:.1}", now_ms());
        bpf(BPF_MAP_UPDATE_BATCH, &mut a).expect("update batch");
        let mut out_keys = vec![0u32; entries as usize];
        let mut out_values = vec![0u64; entries as usize];
        let mut token = 0u64;
        let mut a = [0u8; 56];
        put64(&mut a, 8, &mut token as *mut u64 as u64);
        put64(&mut a, 16, out_keys.as_mut_ptr() as u64);
        put64(&mut a, 24, out_values.as_mut_ptr() as u64);
        put32(&mut a, 32, entries);
        put32(&mut a, 36, fd as u32);
        println!("lookup_batch t={:.1}", now_ms());
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        let got = u32::from_le_bytes(a[32..36].try_into().expect("4 bytes"));
        // The whole map in one batch ends with ENOENT (no more entries).
        if !matches!(r, Ok(_) | Err(libc::ENOENT)) || got != entries {
            println!("lookup batch {r:?} count {got}");
            std::process::exit(1);
        }
        let bad = out_keys
            .iter()
            .zip(&out_values)
            .filter(|(k, v)| **v != **k as u64 + round)
            .count();
        println!("round={round} bad={bad}");
    }
}

fn ringbuf() {
    const SIZE: usize = 256 << 10;
    let map = map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, SIZE as u32).expect("ringbuf map");
    let prog = ring_producer(map).unwrap_or_else(|e| panic!("producer load: errno {e}"));
    let page = 4096usize;
    // SAFETY: maps the ring as libbpf's ring_buffer__add does: the consumer
    // page read-write, the producer page and twice the data read-only.
    let cons = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map,
            0,
        )
    };
    // SAFETY: as above.
    let prod = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page + 2 * SIZE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            map,
            page as i64,
        )
    };
    assert!(
        cons != libc::MAP_FAILED && prod != libc::MAP_FAILED,
        "mmap ring: errno {}",
        errno()
    );
    let cons_pos = cons.cast::<std::sync::atomic::AtomicU64>();
    let prod_pos = prod.cast::<std::sync::atomic::AtomicU64>();
    // SAFETY: the data area starts one page after the producer page.
    let data = unsafe { prod.cast::<u8>().add(page) };
    println!(
        "ready prog_id={} t={:.1}",
        prog_id(prog).expect("prog id"),
        now_ms()
    );
    let mut count = 0u64;
    let mut reported = 0u64;
    loop {
        use std::sync::atomic::Ordering;
        // SAFETY: both pointers point into live mappings of the ring; the
        // positions are 8-byte aligned at the start of their pages.
        let (mut c, p) = unsafe {
            (
                (*cons_pos).load(Ordering::Acquire),
                (*prod_pos).load(Ordering::Acquire),
            )
        };
        while c < p {
            // SAFETY: the header lies in the (double-mapped) data area.
            let hdr = unsafe {
                (*data
                    .add(c as usize & (SIZE - 1))
                    .cast::<std::sync::atomic::AtomicU32>())
                .load(Ordering::Acquire)
            };
            if hdr & (1 << 31) != 0 {
                break;
            }
            let len = (hdr & !(3 << 30)) as u64;
            c += (len + 8 + 7) & !7;
            count += 1;
            // SAFETY: as above.
            unsafe { (*cons_pos).store(c, Ordering::Release) };
        }
        if count != reported {
            println!("consumed={count} t={:.1}", now_ms());
            reported = count;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn produce(id: u32, runs: u32) {
    let mut a = [0u8; 8];
    put32(&mut a, 0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a).expect("prog by id") as u32;
    let data = [0u8; 64];
    for _ in 0..runs {
        let mut a = [0u8; 80];
        put32(&mut a, 0, fd);
        put32(&mut a, 8, data.len() as u32);
        put64(&mut a, 16, data.as_ptr() as u64);
        put32(&mut a, 32, 1000);
        bpf(BPF_PROG_TEST_RUN, &mut a).expect("test run");
    }
    println!("produced={}", runs as u64 * 1000);
}

fn counter(pin: &str, key: u32, seconds: u64) {
    let path = std::ffi::CString::new(pin).expect("path");
    let mut a = [0u8; 16];
    put64(&mut a, 0, path.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut a).unwrap_or_else(|e| {
        println!("updates=0 errors=1 first_error=obj_get:{e}");
        std::process::exit(1)
    }) as i32;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut updates, mut errors) = (0u64, 0u64);
    let mut first_error = String::new();
    let mut note = |what: &str, e: String, errors: &mut u64| {
        *errors += 1;
        if first_error.is_empty() {
            first_error = format!("{what}:{e}");
        }
    };
    while Instant::now() < deadline {
        let v = match lookup(fd, key) {
            Ok(v) => v,
            Err(e) => {
                note("lookup", e.to_string(), &mut errors);
                continue;
            }
        };
        if let Err(e) = update(fd, key, v + 1) {
            note("update", e.to_string(), &mut errors);
            continue;
        }
        updates += 1;
        match lookup(fd, key) {
            Ok(w) if w == v + 1 => {}
            Ok(w) => note("reread", format!("{w}!={}", v + 1), &mut errors),
            Err(e) => note("reread", e.to_string(), &mut errors),
        }
    }
    println!(
        "updates={updates} errors={errors} first_error={} final={}",
        if first_error.is_empty() {
            "none"
        } else {
            &first_error
        },
        lookup(fd, key)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("errno{e}"))
    );
}

fn maps(n: u32) {
    let mut created = 0;
    let mut err = 0;
    for _ in 0..n {
        match map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1) {
            Ok(_) => created += 1,
            Err(e) => {
                err = e;
                break;
            }
        }
    }
    println!("created={created} errno={err}");
}

fn rate(n: u32) {
    let fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1).expect("map");
    let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
    for _ in 0..n {
        let e = lookup(fd, 0).err().unwrap_or(0);
        *counts.entry(e).or_default() += 1;
    }
    let line: Vec<String> = counts
        .iter()
        .map(|(e, c)| format!("errno{e}={c}"))
        .collect();
    println!("{}", line.join(" "));
}

/// Keeps every fd open until the process is killed.
fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The next object id after `start` (`BPF_*_GET_NEXT_ID`).
fn next_id(command: u32, start: u32) -> Result<u32, i32> {
    let mut a = [0u8; 12];
    put32(&mut a, 0, start);
    bpf(command, &mut a)?;
    Ok(u32::from_le_bytes(a[4..8].try_into().expect("4 bytes")))
}

/// `BPF_*_GET_FD_BY_ID`.
fn fd_by_id(command: u32, id: u32) -> Result<i32, i32> {
    let mut a = [0u8; 12];
    put32(&mut a, 0, id);
    bpf(command, &mut a).map(|fd| fd as i32)
}

fn btf_fds(n: u32) {
    let id = next_id(BPF_BTF_GET_NEXT_ID, 0).expect("a BTF object exists");
    let (mut fds, mut err) = (0, 0);
    for _ in 0..n {
        match fd_by_id(BPF_BTF_GET_FD_BY_ID, id) {
            Ok(_) => fds += 1,
            Err(e) => {
                err = e;
                break;
            }
        }
    }
    println!("fds={fds} errno={err}");
    hold();
}

fn map_id(fd: i32) -> u32 {
    let mut info = [0u8; 88];
    let mut a = [0u8; 16];
    put32(&mut a, 0, fd as u32);
    put32(&mut a, 4, info.len() as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    match bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) {
        Ok(_) => u32::from_le_bytes(info[4..8].try_into().expect("4 bytes")),
        Err(_) => 0,
    }
}

fn bigmaps(n: u32, mib: u32, keep: bool) {
    for i in 0..n {
        match map_create(BPF_MAP_TYPE_ARRAY, 4, 4096, mib * 256) {
            Ok(fd) => println!("map={i} errno=0 id={}", map_id(fd)),
            Err(e) => println!("map={i} errno={e} id=0"),
        }
    }
    if keep {
        println!("holding");
        hold();
    }
}

fn hold_map(id: u32) {
    match fd_by_id(BPF_MAP_GET_FD_BY_ID, id) {
        Ok(_) => println!("held errno=0"),
        Err(e) => {
            println!("held errno={e}");
            return;
        }
    }
    hold();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("slow-load") => slow_load(arg(&args, 2, "iterations")),
        Some("mid-call") => mid_call(arg(&args, 2, "iterations")),
        Some("batch") => batch(arg(&args, 2, "entries")),
        Some("ringbuf") => ringbuf(),
        Some("produce") => produce(arg(&args, 2, "prog id"), arg(&args, 3, "runs")),
        Some("counter") => counter(
            &args.get(2).cloned().expect("pin path"),
            arg(&args, 3, "key"),
            arg(&args, 4, "seconds"),
        ),
        Some("maps") => maps(arg(&args, 2, "count")),
        Some("mid-call-no-objects") => mid_call_no_objects(arg(&args, 2, "iterations")),
        Some("no-objects") => no_objects(arg(&args, 2, "rounds"), arg(&args, 3, "ms")),
        Some("rate") => rate(arg(&args, 2, "count")),
        Some("btf-fds") => btf_fds(arg(&args, 2, "count")),
        Some("bigmaps") => bigmaps(
            arg(&args, 2, "count"),
            arg(&args, 3, "MiB"),
            arg::<u32>(&args, 4, "hold") == 1,
        ),
        Some("hold-map") => hold_map(arg(&args, 2, "map id")),
        _ => {
            eprintln!(
                "usage: fault-client slow-load|mid-call|mid-call-no-objects|batch|ringbuf|produce|counter|maps|no-objects|rate|btf-fds|bigmaps|hold-map …"
            );
            std::process::exit(2);
        }
    }
}
