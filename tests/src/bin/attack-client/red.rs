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

use std::process::ExitCode;

use telebpf_protocol::message::{FileOp, FileReply, Reply, Request, FILE_CHUNK};

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
        ("range" | "range-chain", _) => {
            eprintln!("usage: attack-client range PATH OFFSET LEN SNAPSHOT | range-chain PATH N");
            Some(ExitCode::from(2))
        }
        _ => None,
    }
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
