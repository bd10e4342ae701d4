//! Attacks on ring streams (issue #12, §1): a key holder who lies to the
//! proxy about a ring's geometry, or moves a ring's consumer position under
//! the proxy's consumer so that it reads a record header the key holder
//! wrote.
//!
//! Both modes build everything over the protocol themselves, as the
//! session's own connection must (only it knows the session token a stream
//! request names): a `BPF_MAP_TYPE_RINGBUF` map, a tracepoint program on
//! `syscalls/sys_enter_getpid` that reserves one record of a chosen size,
//! writes a chosen 8-byte "record header" at its start and submits it with
//! `BPF_RB_FORCE_WAKEUP`, and a perf event of that tracepoint for this
//! process (`PERF_EVENT_IOC_SET_BPF`, `PERF_EVENT_IOC_ENABLE`). Each
//! `getpid()` of this process then produces one record in the guest.
//!
//! * `ring-lie TP_ID RING_BYTES LIE_BYTES RECORD_BYTES`: opens a stream on
//!   the ring naming `max_entries = LIE_BYTES` (smaller than the real
//!   `RING_BYTES`), produces one record, and reports what arrived
//!   (`lie.*`); then opens an honest stream on the same ring and reports
//!   (`honest.*`) what it delivers.
//! * `ring-cons TP_ID RING_BYTES RECORD_BYTES FORGED_LEN`: opens an honest
//!   stream, produces a record whose first word is `FORGED_LEN`, waits for
//!   it, then `MapWrite`s the ring's `consumer_pos` to 8 (the forged header
//!   inside the record already consumed) and produces a second record
//!   (`cons.*`).
//!
//! Every mode ends with `session_after` (a map lookup on the first session
//! still answers) and prints `records` of each stream as their lengths.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use telebpf_abi::cmd::{BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_PROG_LOAD};
use telebpf_abi::map_type::{BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF};
use telebpf_abi::prog_type::BPF_PROG_TYPE_TRACEPOINT;
use telebpf_abi::{perf, Direction, Length, ObjectKind, Objects, Plan};
use telebpf_client::{Connection, Settings};
use telebpf_protocol::message::{
    BpfCall, BpfResult, IoctlValue, Reply, Request, StreamKind, StreamRequest, WireBuffer,
};

use crate::peer::{connect, say};

/// Runs `mode` if it is one of this module's.
pub fn run(mode: &str, args: &[String]) -> Option<ExitCode> {
    let nums = |n: usize| -> Option<Vec<u64>> {
        if args.len() != n {
            return None;
        }
        args.iter().map(|a| a.parse().ok()).collect()
    };
    let usage = |u: &str| {
        eprintln!("usage: attack-client {mode} {u}");
        ExitCode::from(2)
    };
    Some(match mode {
        "ring-lie" => match nums(4) {
            Some(v) => lie(v[0], v[1] as u32, v[2] as u32, v[3] as u32),
            None => usage("TP_ID RING_BYTES LIE_BYTES RECORD_BYTES"),
        },
        "ring-cons" => match nums(4) {
            Some(v) => cons(v[0], v[1] as u32, v[2] as u32, v[3] as u32),
            None => usage("TP_ID RING_BYTES RECORD_BYTES FORGED_LEN"),
        },
        _ => return None,
    })
}

/// How long a stream is watched for records after a trigger.
const WATCH: Duration = Duration::from_secs(3);

/// The session's objects, as the plan needs them.
#[derive(Default)]
struct Table(Vec<(i32, ObjectKind)>);

impl Objects for Table {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        self.0
            .iter()
            .find(|(f, _)| *f == fd)
            .map(|(_, k)| k.clone())
    }

    fn possible_cpus(&self) -> u32 {
        1
    }
}

/// One `bpf()` call over the protocol. `memory` holds, by the pointer value
/// written in the attr, the bytes of every `In` buffer.
fn try_bpf(
    conn: &mut Connection,
    table: &mut Table,
    cmd: u32,
    attr: Vec<u8>,
    memory: &[(u64, &[u8])],
) -> Result<BpfResult, String> {
    let mut plan = Plan::new(cmd, &attr, None, table).map_err(|e| format!("plan: {e}"))?;
    let mut buffers = Vec::new();
    for i in 0..plan.buffers.len() {
        let spec = plan.buffers[i].clone();
        let wire = if spec.dir == Direction::Out {
            WireBuffer::Out(spec.alloc_len() as u64)
        } else {
            let bytes = memory
                .iter()
                .find(|(p, _)| *p == spec.ptr)
                .map(|(_, b)| b.to_vec())
                .ok_or_else(|| format!("no memory at {:#x}", spec.ptr))?;
            if let Length::Bytes(n) = spec.len {
                if bytes.len() != n {
                    return Err(format!(
                        "buffer {i} has {} bytes, the plan {n}",
                        bytes.len()
                    ));
                }
            }
            plan.expand(i, &bytes, table)
                .map_err(|e| format!("expand: {e}"))?;
            WireBuffer::Data(bytes)
        };
        buffers.push(wire);
    }
    let call = BpfCall {
        cmd,
        size: attr.len() as u32,
        attr,
        common: None,
        common_size: 0,
        buffers,
    };
    match conn.call(&Request::Bpf(call)) {
        Ok(Reply::Bpf(r)) => {
            if let Some(obj) = &r.object {
                table.0.push((r.ret as i32, obj.kind.clone()));
            }
            Ok(r)
        }
        Ok(other) => Err(format!("bpf {cmd}: {other:?}")),
        Err(e) => Err(format!("bpf {cmd}: {e}")),
    }
}

/// [`try_bpf`], exiting on a transport or planning failure.
fn bpf(
    conn: &mut Connection,
    table: &mut Table,
    cmd: u32,
    attr: Vec<u8>,
    memory: &[(u64, &[u8])],
) -> BpfResult {
    try_bpf(conn, table, cmd, attr, memory).unwrap_or_else(|e| fail(&e))
}

fn fail(what: &str) -> ! {
    say("error", what);
    std::process::exit(1)
}

fn put(a: &mut [u8], off: usize, bytes: &[u8]) {
    a[off..off + bytes.len()].copy_from_slice(bytes);
}

fn map_create(
    conn: &mut Connection,
    t: &mut Table,
    ty: u32,
    key: u32,
    value: u32,
    max: u32,
) -> i32 {
    let mut a = vec![0u8; 72];
    put(&mut a, 0, &ty.to_le_bytes());
    put(&mut a, 4, &key.to_le_bytes());
    put(&mut a, 8, &value.to_le_bytes());
    put(&mut a, 12, &max.to_le_bytes());
    let r = bpf(conn, t, BPF_MAP_CREATE, a, &[]);
    if r.ret < 0 {
        fail(&format!("map_create type {ty}: errno {}", r.errno));
    }
    r.ret as i32
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// `bpf_get_current_pid_tgid`, `bpf_ringbuf_reserve`, `bpf_ringbuf_submit`.
const GET_CURRENT_PID_TGID: i32 = 14;
const RINGBUF_RESERVE: i32 = 131;
const RINGBUF_SUBMIT: i32 = 132;
/// `BPF_RB_FORCE_WAKEUP`: the consumer is woken for every record.
const RB_FORCE_WAKEUP: i32 = 2;

/// A tracepoint program: for this process only (a program attached to a
/// tracepoint runs for every task that hits it, whatever the perf event's
/// pid), reserve `size` bytes of the ring, write `header` as the record's
/// first u32 (and 0 after it), submit with a forced wake-up.
fn prog_load(conn: &mut Connection, t: &mut Table, ring: i32, size: u32, header: u32) -> i32 {
    let pid = std::process::id() as i32;
    let p: Vec<u64> = vec![
        insn(0x85, 0, 0, 0, GET_CURRENT_PID_TGID),
        insn(0x77, 0, 0, 0, 32),   // r0 >>= 32 (the tgid)
        insn(0x55, 0, 0, 11, pid), // if r0 != pid goto out
        insn(0x18, 1, 1, 0, ring), // r1 = map (BPF_PSEUDO_MAP_FD)
        0,
        insn(0xb7, 2, 0, 0, size as i32), // r2 = size
        insn(0xb7, 3, 0, 0, 0),           // r3 = 0
        insn(0x85, 0, 0, 0, RINGBUF_RESERVE),
        insn(0x15, 0, 0, 5, 0),               // if r0 == 0 goto out
        insn(0x62, 0, 0, 0, header as i32),   // *(u32 *)(r0 + 0) = header
        insn(0x62, 0, 0, 4, 0),               // *(u32 *)(r0 + 4) = 0
        insn(0xbf, 1, 0, 0, 0),               // r1 = r0
        insn(0xb7, 2, 0, 0, RB_FORCE_WAKEUP), // r2 = flags
        insn(0x85, 0, 0, 0, RINGBUF_SUBMIT),
        insn(0xb7, 0, 0, 0, 0), // out: r0 = 0
        insn(0x95, 0, 0, 0, 0),
    ];
    let code: Vec<u8> = p.iter().flat_map(|i| i.to_le_bytes()).collect();
    let license = b"GPL\0";
    let (code_ptr, license_ptr, log_ptr) = (0x1000_0000u64, 0x2000_0000u64, 0x3000_0000u64);
    let log_size = 1u32 << 16;
    let mut a = vec![0u8; 128];
    put(&mut a, 0, &BPF_PROG_TYPE_TRACEPOINT.to_le_bytes());
    put(&mut a, 4, &(p.len() as u32).to_le_bytes());
    put(&mut a, 8, &code_ptr.to_le_bytes());
    put(&mut a, 16, &license_ptr.to_le_bytes());
    put(&mut a, 24, &1u32.to_le_bytes()); // log_level
    put(&mut a, 28, &log_size.to_le_bytes());
    put(&mut a, 32, &log_ptr.to_le_bytes());
    let r = bpf(
        conn,
        t,
        BPF_PROG_LOAD,
        a,
        &[(code_ptr, &code), (license_ptr, license)],
    );
    if r.ret < 0 {
        let log = r
            .out
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("");
        fail(&format!("prog_load: errno {}: {log}", r.errno));
    }
    r.ret as i32
}

/// A tracepoint perf event for this process with `prog` attached and
/// enabled.
fn attach(conn: &mut Connection, tp_id: u64, prog: i32) -> i32 {
    let size = 128u32;
    let mut attr = vec![0u8; size as usize];
    put(
        &mut attr,
        perf::ATTR_TYPE,
        &perf::TYPE_TRACEPOINT.to_le_bytes(),
    );
    put(&mut attr, perf::ATTR_SIZE, &size.to_le_bytes());
    put(&mut attr, 8, &tp_id.to_le_bytes()); // config
    put(&mut attr, 16, &1u64.to_le_bytes()); // sample_period
    let req = Request::PerfEventOpen {
        attr,
        pid: std::process::id() as i32,
        cpu: -1,
        group_fd: -1,
        flags: 8, // PERF_FLAG_FD_CLOEXEC
        config1_string: None,
    };
    let fd = match conn.call(&req) {
        Ok(Reply::Opened(Ok((fd, _)))) => fd as i32,
        other => fail(&format!("perf_event_open: {other:?}")),
    };
    for (cmd, arg) in [
        (perf::IOC_SET_BPF, IoctlValue::Fd(prog)),
        (perf::IOC_ENABLE, IoctlValue::Value(0)),
    ] {
        match conn.call(&Request::Ioctl { fd, cmd, arg }) {
            Ok(Reply::Ioctl(Ok(_))) => {}
            other => fail(&format!("ioctl {cmd:#x}: {other:?}")),
        }
    }
    fd
}

/// What arrives on a stream connection, read by a thread of its own.
enum Pushed {
    Records(Vec<(usize, u64)>),
    Lost(u64),
    Other(String),
    Closed(String),
}

/// A stream connection on `ring` of the session `main`, naming `kind`.
fn open_stream(main: &Connection, ring: i32, kind: StreamKind) -> mpsc::Receiver<Pushed> {
    let settings = Settings::from_env().unwrap_or_else(|e| fail(&e.to_string()));
    let mut conn = Connection::open(&settings).unwrap_or_else(|e| fail(&e.to_string()));
    let req = Request::Stream(StreamRequest {
        session: main.session(),
        fd: ring,
        kind,
    });
    conn.notify(&req).unwrap_or_else(|e| fail(&e.to_string()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let pushed = match conn.recv() {
            Ok(Reply::Records(r)) => Pushed::Records(
                r.iter()
                    .map(|r| {
                        let mut head = [0u8; 8];
                        let n = r.len().min(8);
                        head[..n].copy_from_slice(&r[..n]);
                        (r.len(), u64::from_le_bytes(head))
                    })
                    .collect(),
            ),
            Ok(Reply::Lost(n)) => Pushed::Lost(n),
            Ok(other) => Pushed::Other(format!("{other:?}")),
            Err(e) => Pushed::Closed(e.to_string()),
        };
        let end = matches!(pushed, Pushed::Closed(_));
        if tx.send(pushed).is_err() || end {
            return;
        }
    });
    rx
}

/// What one stream delivered in a watch.
#[derive(Default)]
struct Seen {
    /// Length and first word of each record.
    records: Vec<(usize, u64)>,
    closed: Option<String>,
    other: Vec<String>,
}

/// Collects what `rx` delivers until `want` records came, the stream
/// closed, or [`WATCH`] passed.
fn watch(rx: &mpsc::Receiver<Pushed>, want: usize, seen: &mut Seen) {
    let deadline = Instant::now() + WATCH;
    while seen.records.len() < want && seen.closed.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Pushed::Records(r)) => seen.records.extend(r),
            Ok(Pushed::Lost(n)) => seen.other.push(format!("lost {n}")),
            Ok(Pushed::Other(o)) => seen.other.push(o),
            Ok(Pushed::Closed(why)) => seen.closed = Some(why),
            Err(_) => return,
        }
    }
}

fn report(prefix: &str, seen: &Seen) {
    let lengths: Vec<usize> = seen.records.iter().map(|r| r.0).collect();
    say(&format!("{prefix}.records"), format!("{lengths:?}"));
    let heads: Vec<String> = seen.records.iter().map(|r| format!("{:#x}", r.1)).collect();
    say(&format!("{prefix}.first_words"), heads.join(" "));
    say(
        &format!("{prefix}.max_record"),
        lengths.iter().max().copied().unwrap_or(0),
    );
    say(
        &format!("{prefix}.closed"),
        seen.closed.as_deref().unwrap_or("no"),
    );
    say(&format!("{prefix}.other"), format!("{:?}", seen.other));
}

/// One `getpid()` through the kernel (glibc does not cache it, but say so).
fn trigger() {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::syscall(libc::SYS_getpid) };
}

/// Whether the session still answers: a lookup in a small array of its
/// own (a dead proxy is reported, not fatal).
fn session_after(conn: &mut Connection, t: &mut Table, array: i32) {
    let (key_ptr, value_ptr) = (0x4000_0000u64, 0x5000_0000u64);
    let key = 0u32.to_le_bytes();
    let mut a = vec![0u8; 32];
    put(&mut a, 0, &(array as u32).to_le_bytes());
    put(&mut a, 8, &key_ptr.to_le_bytes());
    put(&mut a, 16, &value_ptr.to_le_bytes());
    let line = match try_bpf(conn, t, BPF_MAP_LOOKUP_ELEM, a, &[(key_ptr, &key)]) {
        Ok(r) if r.ret == 0 => "ok".to_string(),
        Ok(r) => format!("errno {}", r.errno),
        Err(e) => format!("failed: {e}"),
    };
    say("session_after", line);
}

/// The ring, its producing program and the array `session_after` reads.
struct Setup {
    conn: Connection,
    table: Table,
    ring: i32,
    array: i32,
}

fn setup(tp_id: u64, ring_bytes: u32, record: u32, header: u32) -> Setup {
    let mut conn = connect();
    let mut table = Table::default();
    let ring = map_create(
        &mut conn,
        &mut table,
        BPF_MAP_TYPE_RINGBUF,
        0,
        0,
        ring_bytes,
    );
    let array = map_create(&mut conn, &mut table, BPF_MAP_TYPE_ARRAY, 4, 8, 1);
    let prog = prog_load(&mut conn, &mut table, ring, record, header);
    attach(&mut conn, tp_id, prog);
    say(
        "setup",
        format!("ring {ring} of {ring_bytes} bytes, records of {record}"),
    );
    Setup {
        conn,
        table,
        ring,
        array,
    }
}

/// Opens a stream on the ring naming `max_entries`, lets the proxy attach
/// (or refuse) before the record exists, produces one record and collects
/// what arrives (up to `want` records).
fn stream_one_record(s: &Setup, max_entries: u32, want: usize) -> (mpsc::Receiver<Pushed>, Seen) {
    let rx = open_stream(&s.conn, s.ring, StreamKind::Ringbuf { max_entries });
    std::thread::sleep(Duration::from_millis(300));
    trigger();
    let mut seen = Seen::default();
    watch(&rx, want, &mut seen);
    (rx, seen)
}

fn lie(tp_id: u64, ring_bytes: u32, lie_bytes: u32, record: u32) -> ExitCode {
    let mut s = setup(tp_id, ring_bytes, record, record);
    let (rx, seen) = stream_one_record(&s, lie_bytes, 1);
    report("lie", &seen);
    drop(rx);
    // The record made meanwhile, and a new one.
    let (_rx, seen) = stream_one_record(&s, ring_bytes, 2);
    report("honest", &seen);
    session_after(&mut s.conn, &mut s.table, s.array);
    ExitCode::SUCCESS
}

fn cons(tp_id: u64, ring_bytes: u32, record: u32, forged: u32) -> ExitCode {
    let mut s = setup(tp_id, ring_bytes, record, forged);
    let (rx, mut first) = stream_one_record(&s, ring_bytes, 1);
    // Whatever else this thread's syscalls produced is consumed before the
    // consumer position is moved (the proxy stores its own position after
    // each batch).
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(Pushed::Records(r)) = rx.try_recv() {
        first.records.extend(r);
    }
    report("cons.first", &first);

    // consumer_pos := 8: the forged header inside the record just consumed.
    let write = Request::MapWrite {
        fd: s.ring,
        offset: 0,
        data: 8u64.to_le_bytes().to_vec(),
    };
    let answer = match s.conn.call(&write) {
        Ok(Reply::Snapshot(Ok(_))) => "ok".to_string(),
        Ok(Reply::Snapshot(Err(e))) => format!("errno {e}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("failed: {e}"),
    };
    say("cons.mapwrite", answer);
    trigger();
    let mut after = Seen::default();
    watch(&rx, 1, &mut after);
    report("cons.after", &after);
    session_after(&mut s.conn, &mut s.table, s.array);
    ExitCode::SUCCESS
}
