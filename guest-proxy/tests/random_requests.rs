//! The proxy's request handling never panics, whatever an authenticated
//! client sends: random `bpf()` calls (random commands, attrs of any size,
//! buffers that do or do not match the plan, fds it does not own), random
//! file operations and random closes, executed with the real syscall (as
//! root they reach the kernel; otherwise they fail with EPERM, which still
//! exercises every decoding and checking path). Objects a random call
//! happens to create are closed when the session is dropped.

use std::sync::Arc;

use telebpf_abi::cmd;
use telebpf_protocol::message::{self, BpfCall, FileOp, Reply, Request, WireBuffer, FOREIGN_FD};
use telebpf_proxy::kernel::RealKernel;
use telebpf_proxy::session::Session;

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn random_call(r: &mut Rng) -> BpfCall {
    let mut cmd = r.below(48) as u32;
    if r.below(8) == 0 {
        cmd |= cmd::BPF_COMMON_ATTRS;
    }
    let size = match r.below(10) {
        0 => r.below(8192) as u32,
        1 => 0,
        _ => r.below(160) as u32,
    };
    let attr_len = if r.below(20) == 0 {
        r.below(300) as usize
    } else {
        size.min(4096) as usize
    };
    let mut attr = r.bytes(attr_len);
    // Mostly-small fd and size fields make it past the first checks more
    // often than uniformly random words would.
    for chunk in attr.chunks_mut(4) {
        if r.below(2) == 0 {
            let v = [r.below(16) as u8, 0, 0, 0];
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    let common = if cmd & cmd::BPF_COMMON_ATTRS != 0 && r.below(2) == 0 {
        let n = r.below(32) as usize;
        Some(r.bytes(n))
    } else {
        None
    };
    let buffers = (0..r.below(5))
        .map(|_| {
            if r.below(2) == 0 {
                WireBuffer::Out(r.next() % 100_000)
            } else {
                let n = r.below(200) as usize;
                WireBuffer::Data(r.bytes(n))
            }
        })
        .collect();
    BpfCall {
        cmd,
        size,
        common_size: common
            .as_ref()
            .map_or(r.below(64) as u32, |c| c.len() as u32),
        attr,
        common,
        buffers,
    }
}

fn random_path(r: &mut Rng) -> String {
    const BASES: &[&str] = &[
        "/sys/kernel/btf/",
        "/proc/sys/kernel/",
        "/sys/fs/bpf/",
        "/etc/",
        "/proc/self/",
        "relative/",
        "/sys/kernel/btf/../../../etc/",
        "/sys/bus/event_source/devices/",
        "/proc/kallsyms",
    ];
    let base = BASES[r.below(BASES.len() as u64) as usize];
    let tail: String = (0..r.below(12))
        .map(|_| (b'a' + r.below(26) as u8) as char)
        .collect();
    format!("{base}{tail}")
}

fn random_request(r: &mut Rng) -> Request {
    match r.below(10) {
        0..=5 => Request::Bpf(random_call(r)),
        6 => Request::Close {
            fd: r.below(64) as i32 - 2,
        },
        7 => Request::Read {
            fd: r.below(64) as i32 - 2,
            len: r.next() as u32,
        },
        8 => Request::File(match r.below(7) {
            5 => FileOp::ReadRange {
                path: random_path(r),
                offset: (r.next() % 4) << 17,
                len: r.next() as u32,
                snapshot: [0, r.next(), 1 << 63 | r.below(4)][r.below(3) as usize],
            },
            0 => FileOp::Read {
                path: random_path(r),
            },
            1 => FileOp::Stat {
                path: random_path(r),
                follow: r.below(2) == 0,
            },
            2 => FileOp::Statfs {
                path: random_path(r),
            },
            3 => FileOp::Access {
                path: random_path(r),
                mode: r.below(8) as i32,
            },
            4 => FileOp::Readlink {
                path: random_path(r),
            },
            _ => FileOp::Fdinfo {
                fd: r.below(64) as i32 - 2,
            },
        }),
        _ => {
            let n = r.below(64) as usize;
            Request::Ping(r.bytes(n))
        }
    }
}

#[test]
fn random_requests_never_panic() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut session = Session::new(1, 2, Arc::new(RealKernel));
    let mut answered = 0;
    for _ in 0..20_000 {
        let req = random_request(&mut r);
        let expects_reply = !matches!(req, Request::Close { .. });
        let reply = session.handle(req);
        assert_eq!(
            reply.is_some(),
            expects_reply,
            "exactly one reply per request but Close"
        );
        if let Some(reply) = reply {
            // Every reply must be encodable to go back on the wire.
            message::encode(&reply).expect("reply encodes");
            answered += 1;
            if let Reply::Bpf(res) = reply {
                assert!(
                    res.ret >= 0 || res.errno > 0,
                    "a failed call carries an errno"
                );
            }
        }
    }
    assert!(answered > 15_000);
    drop(session);
}

#[test]
fn never_owned_or_foreign_fds_are_not_reachable() {
    // fd 0..=2 of the proxy and FOREIGN_FD are never an object of a session.
    let mut session = Session::new(2, 2, Arc::new(RealKernel));
    for fd in [0, 1, 2, FOREIGN_FD, -1, 1_000_000] {
        assert_eq!(
            session.handle(Request::Read { fd, len: 16 }),
            Some(Reply::Read(Err(libc::EBADF)))
        );
        assert_eq!(
            session.handle(Request::File(FileOp::Fdinfo { fd })),
            Some(Reply::File(Err(libc::EBADF)))
        );
    }
}

#[test]
fn random_bytes_are_not_requests() {
    let mut r = Rng(42);
    for _ in 0..20_000 {
        let n = r.below(64) as usize;
        let bytes = r.bytes(n);
        // Must return, never panic or allocate what the bytes claim.
        let _ = message::decode::<Request>(&bytes);
    }
}
