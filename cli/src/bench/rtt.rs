//! `telebpf bench rtt`.
//!
//! Four figures from one run, each over the same number of round trips:
//!
//! * **raw**: a 64-byte echo over a Unix socket pair between two threads that
//!   block on read — the cost of the transport and the wake-up alone;
//! * **channel**: a 64-byte `Ping` through the sealed, authenticated channel
//!   to the proxy and back (framing, crypto, the proxy's loop);
//! * **forwarded**: `BPF_MAP_LOOKUP_ELEM` on an array map, made by a child
//!   process through `syscall(SYS_bpf)` with the preload library injected —
//!   the exact path an unmodified tool takes;
//! * **local**: the same child without the library (needs BPF privileges;
//!   reported as unavailable otherwise).
//!
//! Ratios are p50 against raw.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use telebpf_client::{Connection, Settings};
use telebpf_protocol::message::{Reply, Request};

use super::run_worker;
use crate::error::CliError;
use crate::stats::{summarize, Summary};

const PAYLOAD: usize = 64;

fn raw_echo(runs: usize) -> Result<Summary, CliError> {
    let (mut a, mut b) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; PAYLOAD];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        a.write_all(&buf)?;
        a.read_exact(&mut buf)?;
        samples.push(t.elapsed());
    }
    drop(a);
    let _ = echo.join();
    Ok(summarize(&mut samples))
}

fn channel_ping(target: &str, key_file: &Path, runs: usize) -> Result<Summary, CliError> {
    let settings = Settings::new(target, key_file.to_path_buf())?;
    let mut conn = Connection::open(&settings)?;
    let req = Request::Ping(vec![7u8; PAYLOAD]);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        match conn.call(&req)? {
            Reply::Pong(_) => {}
            other => return Err(CliError::UnexpectedReply(format!("{other:?}"))),
        }
        samples.push(t.elapsed());
    }
    Ok(summarize(&mut samples))
}

/// Runs the lookup worker as a child, with or without the preload.
fn lookup_child(runs: usize, forwarded: Option<(&str, &Path)>) -> Result<Summary, CliError> {
    let out = run_worker("lookup", runs, forwarded)?;
    let field = |name: &'static str| -> Result<f64, CliError> {
        out.word(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CliError::WorkerOutput {
                name,
                output: out.text.clone(),
            })
    };
    Ok(Summary {
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        n: field("n")? as usize,
    })
}

fn bpf(cmd: u32, attr: &mut [u8]) -> Result<i64, CliError> {
    // SAFETY: `attr` is a valid buffer of its length; the pointer fields the
    // callers set point to live locals that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr(),
            attr.len() as libc::c_long,
        )
    };
    if r < 0 {
        Err(CliError::Bpf {
            call: format!("bpf({cmd})"),
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(r)
    }
}

/// Child side: create an array map, then time lookups of key 0.
pub fn lookup_worker(runs: usize) -> Result<(), CliError> {
    const BPF_MAP_CREATE: u32 = 0;
    const BPF_MAP_LOOKUP_ELEM: u32 = 1;
    const BPF_MAP_UPDATE_ELEM: u32 = 2;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut create = [0u8; 72];
    create[0..4].copy_from_slice(&BPF_MAP_TYPE_ARRAY.to_le_bytes());
    create[4..8].copy_from_slice(&4u32.to_le_bytes());
    create[8..12].copy_from_slice(&8u32.to_le_bytes());
    create[12..16].copy_from_slice(&1u32.to_le_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut create)? as i32;

    let key = 0u32;
    let mut value = 0x1234_5678_u64;
    let elem_attr = |value: &mut u64| {
        let mut a = [0u8; 32];
        a[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
        a[8..16].copy_from_slice(&(&key as *const u32 as u64).to_le_bytes());
        a[16..24].copy_from_slice(&(value as *mut u64 as u64).to_le_bytes());
        a
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut elem_attr(&mut value))?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut got = 0u64;
        let mut a = elem_attr(&mut got);
        let t = Instant::now();
        bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
        samples.push(t.elapsed());
        if got != 0x1234_5678 {
            return Err(CliError::WrongValue(got));
        }
    }
    // SAFETY: closing the map fd we created.
    unsafe { libc::close(fd) };
    let s = summarize(&mut samples);
    println!("p50_us={:.2} p99_us={:.2} n={}", s.p50_us, s.p99_us, s.n);
    Ok(())
}

fn line(what: &str, s: &Summary, raw: f64) {
    println!(
        "{what:<34} {:>9.2} {:>9.2} {:>8.2}x",
        s.p50_us,
        s.p99_us,
        if raw > 0.0 { s.p50_us / raw } else { f64::NAN }
    );
}

/// Runs the benchmark and prints the table.
pub fn run(target: &str, key_file: &Path, runs: usize) -> Result<(), CliError> {
    let runs = runs.max(1);
    // Warm up caches and the proxy's first-connection work.
    let _ = raw_echo(100)?;
    let raw = raw_echo(runs)?;
    let channel = channel_ping(target, key_file, runs)?;
    let forwarded = lookup_child(runs, Some((target, key_file)))?;
    let local = lookup_child(runs, None);

    println!("telebpf bench rtt: {runs} round trips each, target {target}");
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "", "p50 µs", "p99 µs", "p50/raw"
    );
    line("raw unix socket echo, 64 B", &raw, raw.p50_us);
    line("sealed channel ping, 64 B", &channel, raw.p50_us);
    line("forwarded BPF_MAP_LOOKUP_ELEM", &forwarded, raw.p50_us);
    match &local {
        Ok(s) => line("local BPF_MAP_LOOKUP_ELEM", s, raw.p50_us),
        Err(e) => println!("{:<34} unavailable ({e})", "local BPF_MAP_LOOKUP_ELEM"),
    }
    println!(
        "forwarded lookup / raw round trip: {:.2}x at p50, {:.2}x at p99 (target: <= 1.5x)",
        forwarded.p50_us / raw.p50_us,
        forwarded.p99_us / raw.p99_us
    );
    Ok(())
}
