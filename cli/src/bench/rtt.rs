//! `telebpf bench rtt`.
//!
//! Five figures from one run, each over the same number of round trips:
//!
//! * **raw, blocking**: a 64-byte echo where both ends block on read — the
//!   transport and a cross-core wake-up per message;
//! * **raw, spin-then-block**: the same echo with the channel's waiting
//!   policy (`TELEBPF_SPIN_US` on this side, the echo's own budget —
//!   `TELEBPF_PROXY_SPIN_US` — on the other), the real limit of a round
//!   trip over this transport;
//! * **channel**: a 64-byte `Ping` through the sealed, authenticated channel
//!   to the proxy and back (framing, crypto, the proxy's loop);
//! * **forwarded**: `BPF_MAP_LOOKUP_ELEM` on an array map, made by a child
//!   process through `syscall(SYS_bpf)` with the preload library injected —
//!   the exact path an unmodified tool takes;
//! * **local**: the same child without the library (needs BPF privileges;
//!   reported as unavailable otherwise).
//!
//! Where the raw echo runs ([`raw_echo_address`]): for a Unix-socket target
//! in a thread of this process over a socket pair; for a vsock target on
//! the guest (`telebpf-proxy --echo`, which the test guest runs beside its
//! proxy), so the base crosses the same guest, device and muxer as the
//! calls; `--raw-echo ADDR` names another. The echo is
//! [`telebpf_protocol::echo`].
//!
//! Ratios are p50 against the blocking raw echo (the first column, kept
//! for scripts that read it), the spinning raw echo and the sealed ping.
//!
//! Last, the **floor** of a forwarded lookup, from the same run: the sealed
//! ping plus what a lookup cannot do without ([`copies`]) — the host reads
//! the caller's attr and then its key and value buffers with
//! `process_vm_readv` and writes the value back with `process_vm_writev`
//! (so that a bad pointer is `EFAULT` as in the kernel, never a crash), and
//! the guest runs `bpf()` (the local lookup's time: this kernel's, which
//! for a guest over vsock only stands in for the guest's). Nothing else —
//! fd translation, marshalling, the proxy's checks — is counted, so a
//! forwarded lookup cannot come below it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use telebpf_client::{Connection, Settings};
use telebpf_protocol::echo::{EchoClient, Wait};
use telebpf_protocol::message::{Reply, Request};
use telebpf_protocol::Address;

use super::run_worker;
use crate::error::CliError;
use crate::stats::{summarize, Summary};

const PAYLOAD: usize = 64;

/// The proxy's spin setting, read here for the in-process echo that stands
/// in for it (the proxy's default is the client's: 50 µs).
const ENV_PROXY_SPIN_US: &str = "TELEBPF_PROXY_SPIN_US";

/// Where the raw echo for `target` is: `given` (`--raw-echo`) if any; for
/// a vsock target the same CID or muxer socket one port up (the test
/// guest's proxy listens on 5000, its echo on 5001); `None` for a Unix
/// target, whose echo runs in this process.
pub fn raw_echo_address(
    target: &Address,
    given: Option<&str>,
) -> Result<Option<Address>, CliError> {
    if let Some(addr) = given {
        return addr
            .parse()
            .map(Some)
            .map_err(|source| CliError::RawEchoAddress {
                addr: addr.to_string(),
                source,
            });
    }
    Ok(match target {
        Address::Unix(_) => None,
        Address::Vsock { cid, port } => Some(Address::Vsock {
            cid: *cid,
            port: port.wrapping_add(1),
        }),
        Address::VsockListen { port } => Some(Address::VsockListen {
            port: port.wrapping_add(1),
        }),
        Address::VsockUds { path, port } => Some(Address::VsockUds {
            path: path.clone(),
            port: port.wrapping_add(1),
        }),
    })
}

/// Times `runs` round trips of 64 bytes through `echo`.
fn time_echo<S: Read + Write + AsRawFd>(
    mut echo: EchoClient<S>,
    runs: usize,
) -> Result<Summary, CliError> {
    let mut buf = [7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        echo.round_trip(&mut buf)?;
        samples.push(t.elapsed());
    }
    Ok(summarize(&mut samples))
}

/// The raw echo, waiting as `wait` says: in a thread over a socket pair
/// (`at` is `None`), or the echo service at `at`.
fn raw_echo(
    at: Option<&Address>,
    wait: Wait,
    settings: &Settings,
    runs: usize,
) -> Result<Summary, CliError> {
    match at {
        None => {
            let (a, b) = UnixStream::pair()?;
            let echo_spin = std::env::var(ENV_PROXY_SPIN_US)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map_or(settings.spin, Duration::from_micros);
            let echo = std::thread::spawn(move || telebpf_protocol::echo::serve(b, echo_spin));
            let summary = time_echo(EchoClient::start(a, wait, settings.spin)?, runs);
            // The echo ends when the client end (dropped in `time_echo`)
            // closes; an error of its own would have failed the timing.
            let _ = echo.join();
            summary
        }
        Some(addr) => {
            let stream =
                telebpf_protocol::connect(addr, settings.connect_timeout).map_err(|source| {
                    CliError::RawEcho {
                        addr: addr.clone(),
                        source,
                    }
                })?;
            time_echo(EchoClient::start(stream, wait, settings.spin)?, runs)
        }
    }
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
    lookup_summary(run_worker("lookup", runs, forwarded)?)
}

/// Runs the lookup worker under the seccomp supervisor (`telebpf exec
/// --supervise`), as a static or Go client is served.
fn supervised_lookup(runs: usize, target: &str, key_file: &Path) -> Result<Summary, CliError> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(&exe)
        .args(["exec", "--supervise", "--target", target, "--key-file"])
        .arg(key_file)
        .arg("--")
        .arg(&exe)
        .args(["bench-worker", "lookup", &runs.to_string()])
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::Worker(
            err.lines().last().unwrap_or("failed").trim().to_string(),
        ));
    }
    lookup_summary(super::Figures {
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The worker's `p50_us=… p99_us=… n=…` line.
fn lookup_summary(out: super::Figures) -> Result<Summary, CliError> {
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

/// The label of the raw echo rows.
fn raw_label(at: Option<&Address>, wait: Wait) -> String {
    let kind = match at {
        None | Some(Address::Unix(_)) => "raw unix socket echo",
        Some(_) => "raw vsock echo",
    };
    match wait {
        Wait::Block => format!("{kind}, 64 B"),
        Wait::Spin => format!("{kind}, spin-then-block, 64 B"),
    }
}

/// One row: p50, p99, and p50 against each base.
fn line(what: &str, s: &Summary, bases: [f64; 3]) {
    let ratio = |base: f64| {
        if base > 0.0 {
            s.p50_us / base
        } else {
            f64::NAN
        }
    };
    println!(
        "{what:<44} {:>9.2} {:>9.2} {:>8.2}x {:>8.2}x {:>8.2}x",
        s.p50_us,
        s.p99_us,
        ratio(bases[0]),
        ratio(bases[1]),
        ratio(bases[2]),
    );
}

/// Runs the benchmark and prints the table.
pub fn run(
    target: &str,
    key_file: &Path,
    runs: usize,
    raw_echo_at: Option<&str>,
) -> Result<(), CliError> {
    let runs = runs.max(1);
    let settings = Settings::new(target, key_file.to_path_buf())?;
    let echo_at = raw_echo_address(&settings.target, raw_echo_at)?;
    let echo_at = echo_at.as_ref();
    // Warm up caches and the proxy's first-connection work.
    let _ = raw_echo(echo_at, Wait::Block, &settings, 100)?;
    let raw = raw_echo(echo_at, Wait::Block, &settings, runs)?;
    let raw_spin = raw_echo(echo_at, Wait::Spin, &settings, runs)?;
    let channel = channel_ping(target, key_file, runs)?;
    let forwarded = lookup_child(runs, Some((target, key_file)))?;
    let supervised = supervised_lookup(runs, target, key_file)?;
    let local = lookup_child(runs, None);
    let copies = copies(runs)?;

    println!("telebpf bench rtt: {runs} round trips each, target {target}");
    println!(
        "raw echo: {}; spin budget {} µs here ({})",
        echo_at.map_or(
            "a thread of this process over a socket pair".to_string(),
            |a| { format!("the echo service at {a}") }
        ),
        settings.spin.as_micros(),
        telebpf_client::ENV_SPIN_US,
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50 µs", "p99 µs", "p50/raw", "p50/spin", "p50/ping"
    );
    let bases = [raw.p50_us, raw_spin.p50_us, channel.p50_us];
    line(&raw_label(echo_at, Wait::Block), &raw, bases);
    line(&raw_label(echo_at, Wait::Spin), &raw_spin, bases);
    line("sealed channel ping, 64 B", &channel, bases);
    line("forwarded BPF_MAP_LOOKUP_ELEM", &forwarded, bases);
    line(
        "supervised (seccomp) BPF_MAP_LOOKUP_ELEM",
        &supervised,
        bases,
    );
    match &local {
        Ok(s) => line("local BPF_MAP_LOOKUP_ELEM", s, bases),
        Err(e) => println!("{:<44} unavailable ({e})", "local BPF_MAP_LOOKUP_ELEM"),
    }
    println!(
        "forwarded lookup / raw round trip: {:.2}x at p50, {:.2}x at p99 (target: <= 1.5x)",
        forwarded.p50_us / raw.p50_us,
        forwarded.p99_us / raw.p99_us
    );
    println!(
        "forwarded lookup / spinning raw echo: {:.2}x at p50, {:.2}x at p99",
        forwarded.p50_us / raw_spin.p50_us,
        forwarded.p99_us / raw_spin.p99_us
    );
    println!(
        "forwarded lookup / sealed ping: {:.2}x at p50, {:.2}x at p99 (goal: <= 1.3x at p50, and p50 <= 10 µs)",
        forwarded.p50_us / channel.p50_us,
        forwarded.p99_us / channel.p99_us
    );
    println!(
        "supervised lookup / preload's forwarded lookup: {:.2}x at p50, {:.2}x at p99 (goal: <= 2x at p50)",
        supervised.p50_us / forwarded.p50_us,
        supervised.p99_us / forwarded.p99_us
    );
    let bpf_us = local.as_ref().map_or(0.0, |s| s.p50_us);
    let floor = channel.p50_us + copies.total_us() + bpf_us;
    println!(
        "floor of a forwarded lookup: sealed ping {:.2} + process_vm_readv of the attr {:.2} \
         + of key and value {:.2} + process_vm_writev of the value {:.2} + bpf() {:.2} \
         = {floor:.2} µs, {:.2}x the ping{}; forwarded is {:.2}x the floor",
        channel.p50_us,
        copies.attr_us,
        copies.buffers_us,
        copies.write_back_us,
        bpf_us,
        floor / channel.p50_us,
        if local.is_ok() {
            ""
        } else {
            " (bpf() not counted: no local lookup)"
        },
        forwarded.p50_us / floor,
    );
    Ok(())
}

/// What the host side of a lookup must spend on the caller's memory, each
/// a p50 over batches of calls in this process (on its own memory, as the
/// preload does), in µs.
struct Copies {
    /// `process_vm_readv` of the 32-byte attr (`bpf_map_lookup_elem`'s).
    attr_us: f64,
    /// One `process_vm_readv` of the 4-byte key and the 8-byte value
    /// (`Memory::read_each`: a lookup sends the value buffer's bytes too).
    buffers_us: f64,
    /// `process_vm_writev` of the 8-byte value.
    write_back_us: f64,
}

impl Copies {
    fn total_us(&self) -> f64 {
        self.attr_us + self.buffers_us + self.write_back_us
    }
}

/// Times [`Copies`] over about `runs` calls each, in batches of 100 (a
/// clock read per call would weigh on calls of a few hundred ns).
fn copies(runs: usize) -> Result<Copies, CliError> {
    const BATCH: usize = 100;
    let attr = [7u8; 32];
    let key = 0u32;
    let mut value = 0u64;
    let mut attr_in = [0u8; 32];
    let mut key_in = [0u8; 4];
    let mut value_in = [0u8; 8];
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let iov = |p: *const u8, len: usize| libc::iovec {
        iov_base: p as *mut libc::c_void,
        iov_len: len,
    };
    let time = |call: &mut dyn FnMut() -> isize, want: isize| -> Result<f64, CliError> {
        let mut samples = Vec::with_capacity(runs / BATCH + 1);
        for _ in 0..(runs / BATCH).max(1) {
            let t = Instant::now();
            for _ in 0..BATCH {
                if call() != want {
                    return Err(CliError::Io(std::io::Error::last_os_error()));
                }
            }
            samples.push(t.elapsed() / BATCH as u32);
        }
        Ok(summarize(&mut samples).p50_us)
    };
    let attr_us = time(
        &mut || {
            let local = [iov(attr_in.as_mut_ptr(), 32)];
            let remote = [iov(attr.as_ptr(), 32)];
            // SAFETY: both iovecs name live buffers of this process of
            // their lengths.
            unsafe { libc::process_vm_readv(me, local.as_ptr(), 1, remote.as_ptr(), 1, 0) }
        },
        32,
    )?;
    let buffers_us = time(
        &mut || {
            let local = [iov(key_in.as_mut_ptr(), 4), iov(value_in.as_mut_ptr(), 8)];
            let remote = [
                iov((&key as *const u32).cast(), 4),
                iov((&value as *const u64).cast(), 8),
            ];
            // SAFETY: as above.
            unsafe { libc::process_vm_readv(me, local.as_ptr(), 2, remote.as_ptr(), 2, 0) }
        },
        12,
    )?;
    let write_back_us = time(
        &mut || {
            let local = [iov(value_in.as_ptr(), 8)];
            let remote = [iov((&mut value as *mut u64).cast(), 8)];
            // SAFETY: as above; `value` is ours to write.
            unsafe { libc::process_vm_writev(me, local.as_ptr(), 1, remote.as_ptr(), 1, 0) }
        },
        8,
    )?;
    Ok(Copies {
        attr_us,
        buffers_us,
        write_back_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_echo_of_a_vsock_target_is_one_port_up_on_the_same_path() {
        let at = |target: &str, given| {
            raw_echo_address(&target.parse().unwrap(), given)
                .unwrap()
                .map(|a| a.to_string())
        };
        assert_eq!(at("unix:/tmp/p.sock", None), None);
        assert_eq!(
            at("vsock-uds:/tmp/g/vm.vsock:5000", None).as_deref(),
            Some("vsock-uds:/tmp/g/vm.vsock:5001")
        );
        assert_eq!(at("vsock:3:5000", None).as_deref(), Some("vsock:3:5001"));
        assert_eq!(
            at("unix:/tmp/p.sock", Some("unix:/tmp/echo")).as_deref(),
            Some("unix:/tmp/echo")
        );
        assert!(matches!(
            raw_echo_address(&"unix:/x".parse().unwrap(), Some("nowhere")),
            Err(CliError::RawEchoAddress { .. })
        ));
    }

    #[test]
    fn the_in_process_raw_echo_answers_both_ways_of_waiting() {
        let settings = Settings::new("unix:/nonexistent", "/nonexistent".into()).unwrap();
        for wait in [Wait::Block, Wait::Spin] {
            let s = raw_echo(None, wait, &settings, 50).unwrap();
            assert_eq!(s.n, 50);
            assert!(s.p50_us > 0.0);
        }
    }
}
