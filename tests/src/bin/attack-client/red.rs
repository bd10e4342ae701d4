//! Red-team probes of the file ranges (issue #12's review): ranged reads
//! with offsets, lengths and snapshot ids the client chooses.
//!
//! Modes:
//!
//! * `range PATH OFFSET LEN SNAPSHOT`: one `FileOp::ReadRange`; prints
//!   `answer: ok SIZE SNAPSHOT LEN` (the reply's size, snapshot id and
//!   number of bytes), `errno N`, or `refused …`.
//! * `range-chain PATH N`: starts a read of `PATH` `N` times without
//!   finishing any (each its first range only), then asks for the second
//!   range of every snapshot it got; prints `stale: S` (answered `ESTALE`)
//!   and `served: K`.
//! * `decode-bomb SESSIONS MIB ROUNDS`: `SESSIONS` sessions at once each
//!   send, `ROUNDS` times, a `Request::Records` frame of `MIB` MiB made of
//!   nothing but empty records (8 bytes each on the wire, a `Vec` of 24
//!   bytes each once decoded) and wait for the answer; prints `answers: N`.
//! * `wire-bomb SESSIONS MIB ROUNDS`: the same with a `bpf()` call whose
//!   buffers are nothing but `WireBuffer::Out(0)` (12 bytes on the wire, 32
//!   decoded).
//! * `user-ring-frames N`: makes a 4 KiB user ring buffer, opens its
//!   stream and sends `N` `Request::Records` frames of one 70,000-byte
//!   record each (too large for the ring: the proxy drops it at once);
//!   then waits 500 ms and prints `sent: K` (frames the socket took) and
//!   `open: yes|no` (whether the proxy still holds the stream).

use std::process::ExitCode;

use telebpf_abi::cmd::{BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM};
use telebpf_abi::map_type::BPF_MAP_TYPE_USER_RINGBUF;
use telebpf_protocol::message::{
    BpfCall, FileOp, FileReply, Reply, Request, StreamKind, StreamRequest, WireBuffer, FILE_CHUNK,
};

use crate::peer::{connect, say};

/// Runs `mode` if it is one of this module's.
pub fn run(mode: &str, args: &[String]) -> Option<ExitCode> {
    match (mode, args) {
        ("range", [path, offset, len, snapshot]) => {
            let num = |s: &str| s.parse::<u64>().ok();
            let (Some(offset), Some(len), Some(snapshot)) = (num(offset), num(len), num(snapshot))
            else {
                eprintln!("attack-client range: OFFSET LEN SNAPSHOT are numbers");
                return Some(ExitCode::from(2));
            };
            let mut conn = connect();
            say(
                "answer",
                range(&mut conn, path, offset, len as u32, snapshot),
            );
            Some(ExitCode::SUCCESS)
        }
        ("range-chain", [path, n]) => {
            let Ok(n) = n.parse::<usize>() else {
                eprintln!("attack-client range-chain: N is a number");
                return Some(ExitCode::from(2));
            };
            let mut conn = connect();
            let mut snapshots = Vec::new();
            for _ in 0..n {
                if let Ok(Reply::File(Ok(FileReply::Range { snapshot, .. }))) =
                    conn.call(&Request::File(FileOp::ReadRange {
                        path: path.clone(),
                        offset: 0,
                        len: FILE_CHUNK as u32,
                        snapshot: 0,
                    }))
                {
                    snapshots.push(snapshot);
                }
            }
            let (mut stale, mut served) = (0, 0);
            for s in snapshots {
                let a = range(&mut conn, path, FILE_CHUNK as u64, FILE_CHUNK as u32, s);
                if a == format!("errno {}", libc::ESTALE) {
                    stale += 1;
                } else if a.starts_with("ok") {
                    served += 1;
                }
            }
            say("stale", stale);
            say("served", served);
            Some(ExitCode::SUCCESS)
        }
        ("user-ring-frames", [n]) => {
            let Ok(n) = n.parse::<usize>() else {
                eprintln!("attack-client user-ring-frames: N is a number");
                return Some(ExitCode::from(2));
            };
            user_ring_frames(n);
            Some(ExitCode::SUCCESS)
        }
        (bomb @ ("decode-bomb" | "wire-bomb"), [sessions, mib, rounds]) => {
            let num = |s: &str| s.parse::<usize>().ok();
            let (Some(sessions), Some(mib), Some(rounds)) = (num(sessions), num(mib), num(rounds))
            else {
                eprintln!("attack-client decode-bomb: SESSIONS MIB ROUNDS are numbers");
                return Some(ExitCode::from(2));
            };
            let bomb = std::sync::Arc::new(if bomb == "decode-bomb" {
                Request::Records(vec![Vec::new(); (mib << 20) / 8])
            } else {
                Request::Bpf(BpfCall {
                    cmd: BPF_MAP_LOOKUP_ELEM,
                    size: 32,
                    attr: vec![0; 32],
                    common: None,
                    common_size: 0,
                    buffers: vec![WireBuffer::Out(0); (mib << 20) / 12],
                })
            });
            let threads: Vec<_> = (0..sessions)
                .map(|_| {
                    let bomb = bomb.clone();
                    std::thread::spawn(move || {
                        let mut conn = connect();
                        (0..rounds).filter(|_| conn.call(&bomb).is_ok()).count()
                    })
                })
                .collect();
            let answers: usize = threads.into_iter().filter_map(|t| t.join().ok()).sum();
            say("answers", answers);
            Some(ExitCode::SUCCESS)
        }
        ("range" | "range-chain" | "decode-bomb" | "wire-bomb" | "user-ring-frames", _) => {
            eprintln!("usage: attack-client range PATH OFFSET LEN SNAPSHOT | range-chain PATH N");
            Some(ExitCode::from(2))
        }
        _ => None,
    }
}

fn user_ring_frames(n: usize) {
    let mut conn = connect();
    let mut attr = vec![0u8; 72];
    attr[0..4].copy_from_slice(&BPF_MAP_TYPE_USER_RINGBUF.to_le_bytes());
    attr[12..16].copy_from_slice(&4096u32.to_le_bytes());
    let fd = match conn.call(&Request::Bpf(BpfCall {
        cmd: BPF_MAP_CREATE,
        size: 72,
        attr,
        common: None,
        common_size: 0,
        buffers: Vec::new(),
    })) {
        Ok(Reply::Bpf(r)) if r.ret >= 0 => r.ret as i32,
        other => {
            say("error", format!("map create: {other:?}"));
            return;
        }
    };
    let mut stream = connect();
    let open = Request::Stream(StreamRequest {
        session: conn.session(),
        fd,
        kind: StreamKind::UserRingbuf { max_entries: 4096 },
    });
    if stream.notify(&open).is_err() {
        say("error", "stream request");
        return;
    }
    let frame = Request::Records(vec![vec![0x5a; 70_000]]);
    let sent = (0..n).take_while(|_| stream.notify(&frame).is_ok()).count();
    std::thread::sleep(std::time::Duration::from_millis(500));
    say("sent", sent);
    say("open", if stream.peer_closed() { "no" } else { "yes" });
}

fn range(
    conn: &mut telebpf_client::Connection,
    path: &str,
    offset: u64,
    len: u32,
    snapshot: u64,
) -> String {
    match conn.call(&Request::File(FileOp::ReadRange {
        path: path.to_string(),
        offset,
        len,
        snapshot,
    })) {
        Ok(Reply::File(Ok(FileReply::Range {
            size,
            snapshot,
            data,
        }))) => format!("ok {size} {snapshot} {}", data.len()),
        Ok(Reply::File(Err(e))) => format!("errno {e}"),
        Ok(Reply::Refused(r)) => format!("refused {} :: {}", r.what, r.rule),
        Ok(other) => format!("unexpected {other:?}"),
        Err(e) => format!("failed {e}"),
    }
}
