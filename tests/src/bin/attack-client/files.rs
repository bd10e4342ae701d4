//! Attacks through the proxy's file requests: what a key holder gets when
//! it names a file itself, at the protocol level (the preload never sends
//! some of these, e.g. a read of a bpffs file), and peers that ask for big
//! files and never read the answer.
//!
//! Modes:
//!
//! * `file-op OP PATH`: one file request, `OP` one of `read`, `stat`,
//!   `lstat`, `statfs`, `access`, `readlink`, `mkdir`, `digest`. Prints
//!   `answer: …` — `ok BYTES` (read: the content's length; other kinds
//!   `ok stat`, `ok done`, …), `errno N`, or `refused WHAT :: RULE` with
//!   every occurrence of `PATH` in it replaced by `<path>`, so answers for
//!   two paths compare as text — and for a read `text: …` (the content's
//!   first 4 KiB, lossy, newlines as `\n`).
//! * `file-slow-readers N PATH`: opens `N` sessions; each asks for `PATH`
//!   again and again without ever reading a reply (the whole file at once,
//!   and range after range of it, each asking for as much as it may), so
//!   the proxy's replies pile up on its side of the socket. Prints `ready: N`, then holds the sessions until
//!   its stdin closes.

use std::io::Read;
use std::process::ExitCode;

use telebpf_protocol::message::{FileOp, FileReply, Reply, Request, FILE_CHUNK};

use crate::peer::{connect, say};

/// Runs `mode` if it is one of this module's.
pub fn run(mode: &str, args: &[String]) -> Option<ExitCode> {
    match (mode, args) {
        ("file-op", [op, path]) => Some(file_op(op, path)),
        ("file-slow-readers", [n, path]) => Some(slow_readers(n, path)),
        ("file-op" | "file-slow-readers", _) => {
            eprintln!("usage: attack-client file-op OP PATH | file-slow-readers N PATH");
            Some(ExitCode::from(2))
        }
        _ => None,
    }
}

fn request(op: &str, path: &str) -> Option<FileOp> {
    let path = path.to_string();
    Some(match op {
        "read" => FileOp::Read { path },
        "stat" => FileOp::Stat { path, follow: true },
        "lstat" => FileOp::Stat {
            path,
            follow: false,
        },
        "statfs" => FileOp::Statfs { path },
        "access" => FileOp::Access {
            path,
            mode: libc::R_OK,
        },
        "readlink" => FileOp::Readlink { path },
        "mkdir" => FileOp::Mkdir { path, mode: 0o755 },
        "digest" => FileOp::Digest { path },
        _ => return None,
    })
}

fn file_op(op: &str, path: &str) -> ExitCode {
    let Some(req) = request(op, path) else {
        eprintln!("attack-client: unknown file op {op:?}");
        return ExitCode::from(2);
    };
    let mut conn = connect();
    let reply = match conn.call(&Request::File(req)) {
        Ok(r) => r,
        Err(e) => {
            say("answer", format!("failed {e}"));
            return ExitCode::SUCCESS;
        }
    };
    let answer = match &reply {
        Reply::File(Ok(FileReply::Data(d) | FileReply::Range { data: d, .. })) => {
            format!("ok {}", d.len())
        }
        Reply::File(Ok(FileReply::Stat(_))) => "ok stat".into(),
        Reply::File(Ok(FileReply::Statfs(_))) => "ok statfs".into(),
        Reply::File(Ok(FileReply::Link(_))) => "ok link".into(),
        Reply::File(Ok(FileReply::Done)) => "ok done".into(),
        Reply::File(Ok(other)) => format!("ok {other:?}"),
        Reply::File(Err(errno)) => format!("errno {errno}"),
        Reply::Refused(r) => format!("refused {} :: {}", r.what, r.rule),
        Reply::Error(e) => format!("error {} {}", e.errno, e.message),
        other => format!("unexpected {other:?}"),
    };
    say("answer", answer.replace(path, "<path>"));
    if let Reply::File(Ok(FileReply::Data(d) | FileReply::Range { data: d, .. })) = &reply {
        let text = String::from_utf8_lossy(&d[..d.len().min(4096)]).replace('\n', "\\n");
        say("text", text);
    }
    ExitCode::SUCCESS
}

fn slow_readers(n: &str, path: &str) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("attack-client: N must be a number, not {n:?}");
        return ExitCode::from(2);
    };
    let requests = hoard_requests(path);
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = connect();
        for req in &requests {
            // A send fails only once the proxy stopped reading too (its
            // socket buffer is full): enough is queued then.
            if conn.notify(req).is_err() {
                break;
            }
        }
        sessions.push(conn);
    }
    say("ready", sessions.len());
    // Hold every session, reading nothing, until the test lets go.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(sessions);
    ExitCode::SUCCESS
}

/// What one slow reader asks for: the whole file, twice, then range after
/// range of it (8 MiB's worth, as large as the proxy answers), each as if
/// it were the start of a read.
fn hoard_requests(path: &str) -> Vec<Request> {
    let whole = (0..2).map(|_| {
        Request::File(FileOp::Read {
            path: path.to_string(),
        })
    });
    let ranges = (0..(8 << 20) / FILE_CHUNK as u64).map(|i| {
        Request::File(FileOp::ReadRange {
            path: path.to_string(),
            offset: i * FILE_CHUNK as u64,
            len: u32::MAX,
            snapshot: 0,
        })
    });
    whole.chain(ranges).collect()
}
