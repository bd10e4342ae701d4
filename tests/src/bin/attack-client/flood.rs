//! Exhaustion and log attacks (`tests/tests/faults.rs`): floods of
//! connections that never authenticate, floods of refused requests, and
//! client-chosen strings made to look like the proxy's own log lines.
//!
//! Modes:
//! * `flood SILENT GARBAGE MS` — no key needed. For MS milliseconds keeps
//!   SILENT connections open that send nothing (one the proxy closes is
//!   opened again at once) and GARBAGE connections that each send a few
//!   bytes no handshake accepts (an oversized length prefix, a short frame
//!   of noise, bare noise) and are opened again as soon as the proxy closes
//!   them. Then closes everything and prints `connections: N` (every
//!   connection the kernel queued for the proxy: each one reaches `accept`),
//!   `closed_by_proxy: N` and `refused: N` (connects that failed because the
//!   listen queue was full: no connection, nothing for the proxy to count).
//!   Unix targets only.
//! * `refusals N` — with a key whose policy refuses `BPF_PROG_LOAD`: sends
//!   N such loads over one session, then prints `refused: R` (replies that
//!   were refusals) and `other: O`.
//! * `forge` — with a key whose policy refuses probe definitions: sends file
//!   requests whose paths carry a newline and a fake proxy log line
//!   (`telebpf-proxy: session 4242 from …: opened …`), then prints `sent: N`.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use telebpf_abi::cmd::BPF_PROG_LOAD;
use telebpf_protocol::message::{BpfCall, FileOp, Reply, Request};

use crate::peer::{self, say};

/// The fake log line the `forge` mode smuggles into paths.
pub const FORGED: &str =
    "telebpf-proxy: session 4242 from unix peer pid 1 uid 0: opened (key #0 'root', policy 'full')";

/// Runs `mode` if it is one of this module's.
pub fn run(mode: &str, args: &[String]) -> Option<ExitCode> {
    let num = |i: usize| -> u64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            eprintln!("attack-client {mode}: argument {} must be a number", i + 1);
            std::process::exit(2)
        })
    };
    match mode {
        "flood" => flood(
            num(0) as usize,
            num(1) as usize,
            Duration::from_millis(num(2)),
        ),
        "refusals" => refusals(num(0)),
        "forge" => forge(),
        _ => return None,
    }
    Some(ExitCode::SUCCESS)
}

/// The Unix socket `TELEBPF_TARGET` names.
fn unix_target() -> String {
    let target = std::env::var("TELEBPF_TARGET").unwrap_or_default();
    match target.strip_prefix("unix:") {
        Some(path) => path.to_string(),
        None => {
            eprintln!("attack-client flood: TELEBPF_TARGET must be unix:PATH, not {target:?}");
            std::process::exit(2)
        }
    }
}

/// What one garbage connection sends: its handshake frame is refused for
/// its length, fails to parse, or is not a frame at all.
fn garbage(n: u64) -> Vec<u8> {
    let noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| {
                ((n as usize * 31 + i) as u32)
                    .wrapping_mul(2654435761)
                    .to_le_bytes()[3]
            })
            .collect()
    };
    match n % 3 {
        0 => u32::MAX.to_le_bytes().to_vec(),
        1 => {
            let mut f = 100u32.to_le_bytes().to_vec();
            f.extend(noise(100));
            f
        }
        _ => noise(64),
    }
}

/// Connects without waiting for the proxy: `None` when the listen queue is
/// full (the kernel refused; nothing reaches the proxy).
fn connect(path: &str) -> Option<UnixStream> {
    match UnixStream::connect(path) {
        Ok(s) => {
            s.set_nonblocking(true).ok()?;
            Some(s)
        }
        Err(_) => None,
    }
}

fn flood(silent: usize, garbage_conns: usize, run_for: Duration) {
    let path = unix_target();
    let mut conns: Vec<Option<UnixStream>> = (0..silent + garbage_conns).map(|_| None).collect();
    let (mut connections, mut closed, mut refused, mut sent) = (0u64, 0u64, 0u64, 0u64);
    let end = Instant::now() + run_for;
    while Instant::now() < end {
        // (Re)open every missing connection.
        for (i, slot) in conns.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            // A blocking connect waits while the listen queue is full: the
            // flood goes as fast as the proxy accepts.
            let Some(mut stream) = connect(&path) else {
                refused += 1;
                continue;
            };
            connections += 1;
            if i >= silent {
                let _ = stream.write_all(&garbage(sent));
                sent += 1;
            }
            *slot = Some(stream);
        }
        // Wait for the proxy to close some.
        let mut pfds: Vec<libc::pollfd> = conns
            .iter()
            .flatten()
            .map(|c| libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a valid array of pollfds for the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 20) };
        let ready: Vec<i32> = pfds
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| p.fd)
            .collect();
        for slot in conns.iter_mut() {
            let Some(c) = slot else { continue };
            if !ready.contains(&c.as_raw_fd()) {
                continue;
            }
            let mut buf = [0u8; 256];
            let gone = match c.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            if gone {
                closed += 1;
                *slot = None;
            }
        }
    }
    drop(conns);
    say("connections", connections);
    say("closed_by_proxy", closed);
    say("refused", refused);
}

fn refusals(n: u64) {
    let mut conn = peer::connect();
    let call = BpfCall {
        cmd: BPF_PROG_LOAD,
        size: 128,
        attr: vec![0; 128],
        common: None,
        common_size: 0,
        buffers: Vec::new(),
    };
    let req = Request::Bpf(call);
    let (mut refused, mut other) = (0u64, 0u64);
    for _ in 0..n {
        match conn.call(&req) {
            Ok(Reply::Refused(_)) => refused += 1,
            Ok(_) => other += 1,
            Err(e) => {
                eprintln!("attack-client refusals: {e}");
                break;
            }
        }
    }
    say("refused", refused);
    say("other", other);
}

fn forge() {
    let mut conn = peer::connect();
    let requests = [
        // Refused by the policy: its refusal names the file.
        Request::File(FileOp::Append {
            path: format!("/sys/kernel/tracing/x\n{FORGED}"),
            data: format!("p:x do_sys_open\n{FORGED}\n").into_bytes(),
        }),
        // Not a kernel-describing file: refused, and logged with its path.
        Request::File(FileOp::Read {
            path: format!("/proc/x\n{FORGED}\r"),
        }),
        // Outside bpffs (and not allowed): mkdir is refused by the policy.
        Request::File(FileOp::Mkdir {
            path: format!("/sys/fs/bpf/x\n{FORGED}\u{1b}[2K"),
            mode: 0o755,
        }),
    ];
    let mut sent = 0;
    for req in &requests {
        match conn.call(req) {
            Ok(_) => sent += 1,
            Err(e) => eprintln!("attack-client forge: {e}"),
        }
    }
    say("sent", sent);
}
