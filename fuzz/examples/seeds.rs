//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! The seeds are the messages telebpf really exchanges: a `bpf()` call of
//! every command as libbpf and bpftool fill its attr (with the buffers the
//! preload would copy), the other requests, the proxy's replies, the sealed
//! frames that carry them and the handshake messages. Each bpf seed is
//! checked to round-trip through the real marshalling before it is written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use telebpf_abi::attach_type::*;
use telebpf_abi::cmd::*;
use telebpf_abi::flags::{BPF_F_TOKEN_FD, BPF_LD_IMM64, BPF_PSEUDO_MAP_FD};
use telebpf_abi::link_type::BPF_LINK_TYPE_PERF_EVENT;
use telebpf_abi::map_type::*;
use telebpf_abi::prog_type::*;
use telebpf_abi::{off, write_u32, write_u64, Direction, Length, MapMeta, ObjectKind};
use telebpf_fuzz::{
    frame_input, handshake_keys, seal_all, AttrCall, Object, RingInput, RingMode, RingOp,
    COPY_LIMIT,
};
use telebpf_marshal::fake::{FakeKernel, FakeMemory, Fill};
use telebpf_marshal::roundtrip::{check, Call as RoundTrip, Verdict};
use telebpf_protocol::message::*;
use telebpf_protocol::{ClientHandshake, ServerHandshake, ServerHelloStep};

/// The objects every bpf seed's session holds, host fds 3, 4, ...
fn objects() -> Vec<Object> {
    let map = |type_, key_size, value_size| Object {
        tag: 0,
        link_type: 0,
        struct_ops: 0,
        type_,
        key_size,
        value_size,
    };
    let other = |tag, link_type, type_| Object {
        tag,
        link_type,
        struct_ops: 0,
        type_,
        key_size: 0,
        value_size: 0,
    };
    vec![
        map(BPF_MAP_TYPE_HASH, 4, 8),                // 3
        other(1, 0, BPF_PROG_TYPE_KPROBE),           // 4
        other(2, BPF_LINK_TYPE_PERF_EVENT as u8, 0), // 5
        other(3, 0, 0),                              // 6: BTF
        map(BPF_MAP_TYPE_PROG_ARRAY, 4, 4),          // 7
        other(1, 0, BPF_PROG_TYPE_SYSCALL),          // 8
        other(5, 0, 0),                              // 9: a socket
        other(1, 0, BPF_PROG_TYPE_TRACING),          // 10
    ]
}

/// One call: the attr's fields and the caller's memory behind its pointers.
struct Call {
    name: &'static str,
    cmd: u32,
    attr: Vec<u8>,
    common: Option<Vec<u8>>,
    memory: HashMap<u64, Vec<u8>>,
}

impl Call {
    fn new(name: &'static str, cmd: u32) -> Call {
        Call {
            name,
            cmd,
            attr: vec![0; off::ATTR_SIZE],
            common: None,
            memory: HashMap::new(),
        }
    }
    fn u32(mut self, at: usize, v: u32) -> Call {
        write_u32(&mut self.attr, at, v);
        self
    }
    /// A pointer field at `at` to `bytes` in the caller's memory.
    fn ptr(mut self, at: usize, bytes: &[u8]) -> Call {
        let addr = 0x7000_0000 + 0x1_0000 * (self.memory.len() as u64 + 1);
        write_u64(&mut self.attr, at, addr);
        self.memory.insert(addr, bytes.to_vec());
        self
    }
    /// A pointer to `len` bytes the kernel writes.
    fn out(self, at: usize, len: usize) -> Call {
        self.ptr(at, &vec![0; len])
    }
}

fn insn(code: u8, regs: u8, off: i16, imm: i32) -> Vec<u8> {
    let mut v = vec![code, regs];
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&imm.to_le_bytes());
    v
}

/// A small program as libbpf loads it: `r1 = map fd 3` (`ld_imm64` with
/// `BPF_PSEUDO_MAP_FD`, two slots), `r0 = 0`, `exit`.
fn program() -> Vec<u8> {
    [
        insn(BPF_LD_IMM64, 1 | (BPF_PSEUDO_MAP_FD << 4), 0, 3),
        insn(0, 0, 0, 0),
        insn(0xb7, 0, 0, 0),
        insn(0x95, 0, 0, 0),
    ]
    .concat()
}

fn calls() -> Vec<Call> {
    use off::*;
    let key = 7u32.to_le_bytes();
    let value = 0x1122_3344_5566_7788u64.to_le_bytes();
    let mut prog_info = vec![0u8; prog_info::SIZE];
    write_u32(&mut prog_info, prog_info::XLATED_PROG_LEN, 32);
    write_u64(&mut prog_info, prog_info::XLATED_PROG_INSNS, 0x9000_0000);
    write_u32(&mut prog_info, prog_info::NR_MAP_IDS, 2);
    write_u64(&mut prog_info, prog_info::MAP_IDS, 0x9100_0000);
    let mut map_info = vec![0u8; map_info::SIZE];
    write_u32(&mut map_info, map_info::HASH_SIZE, 32);
    write_u64(&mut map_info, map_info::HASH, 0x9200_0000);
    let mut btf_info = vec![0u8; btf_info::SIZE];
    write_u32(&mut btf_info, btf_info::BTF_SIZE, 64);
    write_u64(&mut btf_info, btf_info::BTF, 0x9300_0000);
    write_u32(&mut btf_info, btf_info::NAME_LEN, 16);
    write_u64(&mut btf_info, btf_info::NAME, 0x9400_0000);
    let mut link_info = vec![0u8; link_info::SIZE];
    write_u32(&mut link_info, link_info::TYPE, BPF_LINK_TYPE_PERF_EVENT);
    write_u32(&mut link_info, link_info::PERF_EVENT_NAME_LEN, 64);
    write_u64(&mut link_info, link_info::PERF_EVENT_NAME, 0x9500_0000);
    let syms: Vec<u8> = [0x9600_0000u64, 0x9700_0000]
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    let btf = {
        // struct btf_header: magic 0xeb9f, version 1, flags 0, hdr_len 24, empty sections.
        let mut b = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.push(0); // the string section's empty string
        b
    };
    vec![
        Call::new("map_create_hash", BPF_MAP_CREATE)
            .u32(map_create::MAP_TYPE, BPF_MAP_TYPE_HASH)
            .u32(map_create::KEY_SIZE, 4)
            .u32(map_create::VALUE_SIZE, 8)
            .u32(map_create::MAX_ENTRIES, 64),
        Call::new("map_create_btf_token", BPF_MAP_CREATE)
            .u32(map_create::MAP_TYPE, BPF_MAP_TYPE_ARRAY_OF_MAPS)
            .u32(map_create::KEY_SIZE, 4)
            .u32(map_create::VALUE_SIZE, 4)
            .u32(map_create::MAX_ENTRIES, 4)
            .u32(map_create::INNER_MAP_FD, 3)
            .u32(map_create::BTF_FD, 6)
            .u32(map_create::BTF_KEY_TYPE_ID, 1)
            .u32(map_create::BTF_VALUE_TYPE_ID, 2)
            .u32(map_create::MAP_FLAGS, BPF_F_TOKEN_FD)
            .u32(map_create::MAP_TOKEN_FD, 9),
        Call::new("map_lookup", BPF_MAP_LOOKUP_ELEM)
            .u32(map_elem::MAP_FD, 3)
            .ptr(map_elem::KEY, &key)
            .out(map_elem::VALUE, 8),
        Call::new("map_update", BPF_MAP_UPDATE_ELEM)
            .u32(map_elem::MAP_FD, 3)
            .ptr(map_elem::KEY, &key)
            .ptr(map_elem::VALUE, &value),
        Call::new("prog_array_update", BPF_MAP_UPDATE_ELEM)
            .u32(map_elem::MAP_FD, 7)
            .ptr(map_elem::KEY, &0u32.to_le_bytes())
            .ptr(map_elem::VALUE, &4u32.to_le_bytes()),
        Call::new("map_delete", BPF_MAP_DELETE_ELEM)
            .u32(map_elem::MAP_FD, 3)
            .ptr(map_elem::KEY, &key),
        Call::new("map_next_key", BPF_MAP_GET_NEXT_KEY)
            .u32(map_elem::MAP_FD, 3)
            .ptr(map_elem::KEY, &key)
            .out(map_elem::VALUE, 4),
        Call::new("map_lookup_and_delete", BPF_MAP_LOOKUP_AND_DELETE_ELEM)
            .u32(map_elem::MAP_FD, 3)
            .ptr(map_elem::KEY, &key)
            .out(map_elem::VALUE, 8),
        Call::new("map_freeze", BPF_MAP_FREEZE).u32(map_elem::MAP_FD, 3),
        Call::new("prog_load", BPF_PROG_LOAD)
            .u32(prog_load::PROG_TYPE, BPF_PROG_TYPE_KPROBE)
            .u32(prog_load::INSN_CNT, 4)
            .ptr(prog_load::INSNS, &program())
            .ptr(prog_load::LICENSE, b"GPL\0")
            .u32(prog_load::LOG_LEVEL, 1)
            .u32(prog_load::LOG_SIZE, 256)
            .out(prog_load::LOG_BUF, 256)
            .u32(prog_load::PROG_BTF_FD, 6)
            .u32(prog_load::FD_ARRAY_CNT, 1)
            .ptr(prog_load::FD_ARRAY, &3u32.to_le_bytes()),
        Call::new("obj_pin", BPF_OBJ_PIN)
            .ptr(obj::PATHNAME, b"/sys/fs/bpf/telebpf_seed\0")
            .u32(obj::BPF_FD, 3),
        Call::new("obj_get", BPF_OBJ_GET).ptr(obj::PATHNAME, b"/sys/fs/bpf/telebpf_seed\0"),
        Call::new("prog_attach_cgroup", BPF_PROG_ATTACH)
            .u32(attach::TARGET_FD, 9)
            .u32(attach::ATTACH_BPF_FD, 4)
            .u32(attach::ATTACH_TYPE, BPF_CGROUP_INET_INGRESS),
        Call::new("prog_detach_cgroup", BPF_PROG_DETACH)
            .u32(attach::TARGET_FD, 9)
            .u32(attach::ATTACH_BPF_FD, 4)
            .u32(attach::ATTACH_TYPE, BPF_CGROUP_INET_INGRESS),
        Call::new("test_run_syscall", BPF_PROG_TEST_RUN)
            .u32(test_run::PROG_FD, 8)
            .u32(test_run::CTX_SIZE_IN, 16)
            .ptr(test_run::CTX_IN, &[5; 16]),
        Call::new("test_run_data", BPF_PROG_TEST_RUN)
            .u32(test_run::PROG_FD, 4)
            .u32(test_run::DATA_SIZE_IN, 14)
            .ptr(test_run::DATA_IN, &[0xaa; 14])
            .u32(test_run::DATA_SIZE_OUT, 64)
            .out(test_run::DATA_OUT, 64),
        Call::new("prog_get_next_id", BPF_PROG_GET_NEXT_ID).u32(get_id::ID, 0),
        Call::new("map_get_fd_by_id", BPF_MAP_GET_FD_BY_ID).u32(get_id::ID, 12),
        Call::new("link_get_fd_by_id_token", BPF_LINK_GET_FD_BY_ID)
            .u32(get_id::ID, 3)
            .u32(get_id::OPEN_FLAGS, BPF_F_TOKEN_FD)
            .u32(get_id::TOKEN_FD, 9),
        Call::new("prog_info", BPF_OBJ_GET_INFO_BY_FD)
            .u32(info::BPF_FD, 4)
            .u32(info::INFO_LEN, prog_info::SIZE as u32)
            .ptr(info::INFO, &prog_info),
        Call::new("map_info", BPF_OBJ_GET_INFO_BY_FD)
            .u32(info::BPF_FD, 3)
            .u32(info::INFO_LEN, map_info::SIZE as u32)
            .ptr(info::INFO, &map_info),
        Call::new("btf_info", BPF_OBJ_GET_INFO_BY_FD)
            .u32(info::BPF_FD, 6)
            .u32(info::INFO_LEN, btf_info::SIZE as u32)
            .ptr(info::INFO, &btf_info),
        Call::new("link_info", BPF_OBJ_GET_INFO_BY_FD)
            .u32(info::BPF_FD, 5)
            .u32(info::INFO_LEN, link_info::SIZE as u32)
            .ptr(info::INFO, &link_info),
        Call::new("prog_query_cgroup", BPF_PROG_QUERY)
            .u32(query::TARGET_FD, 9)
            .u32(query::ATTACH_TYPE, BPF_CGROUP_INET_INGRESS)
            .u32(query::PROG_CNT, 4)
            .out(query::PROG_IDS, 16),
        Call::new("raw_tp_open", BPF_RAW_TRACEPOINT_OPEN)
            .ptr(raw_tp::NAME, b"sched_switch\0")
            .u32(raw_tp::PROG_FD, 10),
        Call::new("btf_load", BPF_BTF_LOAD)
            .u32(btf_load::BTF_SIZE, btf.len() as u32)
            .ptr(btf_load::BTF, &btf)
            .u32(btf_load::BTF_LOG_SIZE, 128)
            .u32(btf_load::BTF_LOG_LEVEL, 1)
            .out(btf_load::BTF_LOG_BUF, 128),
        Call::new("task_fd_query", BPF_TASK_FD_QUERY)
            .u32(task_fd_query::PID, 1)
            .u32(task_fd_query::FD, 9)
            .u32(task_fd_query::BUF_LEN, 64)
            .out(task_fd_query::BUF, 64),
        Call::new("lookup_batch", BPF_MAP_LOOKUP_BATCH)
            .u32(batch::MAP_FD, 3)
            .u32(batch::COUNT, 4)
            .out(batch::OUT_BATCH, 4)
            .out(batch::KEYS, 16)
            .out(batch::VALUES, 32),
        Call::new("update_batch", BPF_MAP_UPDATE_BATCH)
            .u32(batch::MAP_FD, 3)
            .u32(batch::COUNT, 2)
            .ptr(batch::KEYS, &[1, 0, 0, 0, 2, 0, 0, 0])
            .ptr(batch::VALUES, &[9; 16]),
        Call::new("delete_batch", BPF_MAP_DELETE_BATCH)
            .u32(batch::MAP_FD, 3)
            .u32(batch::COUNT, 1)
            .ptr(batch::KEYS, &key),
        Call::new("link_create_perf_event", BPF_LINK_CREATE)
            .u32(link_create::PROG_FD, 4)
            .u32(link_create::TARGET_FD, 9)
            .u32(link_create::ATTACH_TYPE, BPF_PERF_EVENT),
        Call::new("link_create_kprobe_multi", BPF_LINK_CREATE)
            .u32(link_create::PROG_FD, 4)
            .u32(link_create::ATTACH_TYPE, BPF_TRACE_KPROBE_MULTI)
            .u32(link_create::KPROBE_MULTI_CNT, 2)
            .ptr(link_create::KPROBE_MULTI_SYMS, &syms),
        Call::new("link_create_iter", BPF_LINK_CREATE)
            .u32(link_create::PROG_FD, 10)
            .u32(link_create::ATTACH_TYPE, BPF_TRACE_ITER)
            .u32(link_create::ITER_INFO_LEN, 4)
            .ptr(link_create::ITER_INFO, &3u32.to_le_bytes()),
        Call::new("link_create_uprobe_multi", BPF_LINK_CREATE)
            .u32(link_create::PROG_FD, 4)
            .u32(link_create::ATTACH_TYPE, BPF_TRACE_UPROBE_MULTI)
            .ptr(link_create::UPROBE_MULTI_PATH, b"/usr/bin/true\0")
            .u32(link_create::UPROBE_MULTI_CNT, 1)
            .ptr(link_create::UPROBE_MULTI_OFFSETS, &0x1000u64.to_le_bytes()),
        Call::new("link_update", BPF_LINK_UPDATE)
            .u32(link_update::LINK_FD, 5)
            .u32(link_update::NEW_PROG_FD, 4),
        Call::new("enable_stats", BPF_ENABLE_STATS),
        Call::new("iter_create", BPF_ITER_CREATE).u32(off::LINK_FD, 5),
        Call::new("link_detach", BPF_LINK_DETACH).u32(off::LINK_FD, 5),
        Call::new("prog_bind_map", BPF_PROG_BIND_MAP)
            .u32(prog_bind_map::PROG_FD, 4)
            .u32(prog_bind_map::MAP_FD, 3),
        Call::new("token_create", BPF_TOKEN_CREATE).u32(token_create::BPFFS_FD, 9),
        Call::new("prog_stream_read", BPF_PROG_STREAM_READ_BY_FD)
            .u32(prog_stream_read::PROG_FD, 4)
            .u32(prog_stream_read::STREAM_BUF_LEN, 128)
            .out(prog_stream_read::STREAM_BUF, 128),
        Call::new("prog_assoc_struct_ops", BPF_PROG_ASSOC_STRUCT_OPS)
            .u32(prog_assoc_struct_ops::MAP_FD, 3)
            .u32(prog_assoc_struct_ops::PROG_FD, 4),
        {
            let mut c = Call::new("map_create_common_log", BPF_MAP_CREATE | BPF_COMMON_ATTRS)
                .u32(map_create::MAP_TYPE, BPF_MAP_TYPE_HASH)
                .u32(map_create::KEY_SIZE, 4)
                .u32(map_create::VALUE_SIZE, 8)
                .u32(map_create::MAX_ENTRIES, 8);
            let mut common = vec![0u8; off::common::SIZE];
            write_u64(&mut common, off::common::LOG_BUF, 0x9800_0000);
            write_u32(&mut common, off::common::LOG_SIZE, 64);
            c.common = Some(common);
            c
        },
    ]
}

/// The fuzz input of `call`, and the request the preload would send for it.
fn marshal(call: &Call) -> (Vec<u8>, Request) {
    let objects = objects();
    let mut seed = AttrCall {
        raw_cmd: call.cmd,
        cpus: 2,
        objects,
        attr: call.attr.clone(),
        common: call.common.clone(),
        kernel: 0,
        memory: Vec::new(),
    };
    let table = seed.table();
    // Nested pointers (symbol arrays) point at fixed addresses that hold
    // short strings; the caller's memory is zeros elsewhere.
    let mut held: BTreeMap<u64, Vec<u8>> = call.memory.clone().into_iter().collect();
    held.insert(0x9600_0000, b"vfs_read\0".to_vec());
    held.insert(0x9700_0000, b"do_sys_open\0".to_vec());
    let mem = FakeMemory::new(Fill::Map(held), COPY_LIMIT);
    let verdict = check(
        &table,
        RoundTrip {
            raw_cmd: call.cmd,
            attr: &call.attr,
            common: call.common.as_deref(),
        },
        &mem,
        FakeKernel { seed: 0 },
    );
    let plan = match verdict {
        Ok(Verdict::Agreed(plan)) => plan,
        other => panic!("seed {} does not plan: {other:?}", call.name),
    };
    // The fuzz input's memory is what the reads of the marshalling found,
    // in order: replayed as a stream, it fills the same reads the same way.
    seed.memory = mem.filled();
    // The In/InOut buffers' bytes, one after another.
    let mut memory = Vec::new();
    for spec in plan.buffers.iter().filter(|s| s.dir.copies_in()) {
        let mut b = call.memory.get(&spec.ptr).cloned().unwrap_or_else(|| {
            if spec.ptr == 0x9600_0000 {
                b"vfs_read\0".to_vec()
            } else {
                b"do_sys_open\0".to_vec()
            }
        });
        if let Length::Bytes(n) = spec.len {
            b.resize(n, 0);
        }
        memory.extend_from_slice(&b);
    }
    let mut buffers = Vec::new();
    // The request as sent: In/InOut buffers with their bytes, fds translated
    // (`Table::to_guest`). Fds inside buffers stay as the caller wrote them:
    // a seed, not an exact replay.
    let mut attr = call.attr.clone();
    for slot in plan
        .fds
        .iter()
        .filter(|s| s.parent == telebpf_abi::Parent::Attr)
    {
        write_u32(&mut attr, slot.offset, table.to_guest(slot.value) as u32);
    }
    let mut mem = memory.as_slice();
    for spec in &plan.buffers {
        let wire = if spec.dir == Direction::Out {
            WireBuffer::Out(spec.alloc_len() as u64)
        } else {
            let n = match spec.len {
                Length::Bytes(n) => n,
                Length::CString { .. } => mem
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(mem.len(), |p| p + 1),
            };
            let (a, b) = mem.split_at(n.min(mem.len()));
            mem = b;
            WireBuffer::Data(a.to_vec())
        };
        buffers.push(wire);
    }
    let request = Request::Bpf(BpfCall {
        cmd: call.cmd,
        size: attr.len() as u32,
        attr,
        common: call.common.clone(),
        common_size: call.common.as_ref().map_or(0, |c| c.len() as u32),
        buffers,
    });
    (seed.encode(), request)
}

fn other_requests() -> Vec<(&'static str, Request)> {
    vec![
        ("netlink_open", Request::Netlink(NetlinkOp::Open)),
        (
            "netlink_send",
            Request::Netlink(NetlinkOp::Send {
                fd: 1010,
                data: telebpf_abi::netlink::build::xdp(1004),
            }),
        ),
        (
            "netlink_recv",
            Request::Netlink(NetlinkOp::Recv {
                fd: 1010,
                len: 4096,
                peek: true,
                dont_wait: false,
            }),
        ),
        (
            "interface_index",
            Request::Interface(InterfaceOp::Index("lo".into())),
        ),
        ("close", Request::Close { fd: 1003 }),
        (
            "read_iter",
            Request::Read {
                fd: 1005,
                len: 4096,
            },
        ),
        (
            "file_read_btf",
            Request::File(FileOp::Read {
                path: "/sys/kernel/btf/vmlinux".into(),
            }),
        ),
        (
            "file_stat",
            Request::File(FileOp::Stat {
                path: "/sys/fs/bpf".into(),
                follow: true,
            }),
        ),
        (
            "file_append_kprobe",
            Request::File(FileOp::Append {
                path: "/sys/kernel/tracing/kprobe_events".into(),
                data: b"p:kprobes/telebpf do_sys_open\n".to_vec(),
            }),
        ),
        (
            "file_digest",
            Request::File(FileOp::Digest {
                path: "/proc/config.gz".into(),
            }),
        ),
        ("fdinfo", Request::File(FileOp::Fdinfo { fd: 1003 })),
        ("ping", Request::Ping(vec![0x55; 64])),
        (
            "perf_event_open_tracepoint",
            Request::PerfEventOpen {
                attr: {
                    let mut a = vec![0u8; 136];
                    a[0] = 2; // PERF_TYPE_TRACEPOINT
                    a[4] = 136;
                    a[8] = 0x4b; // tracepoint id
                    a
                },
                pid: -1,
                cpu: 0,
                group_fd: -1,
                flags: 8,
                config1_string: None,
            },
        ),
        (
            "ioctl_set_bpf",
            Request::Ioctl {
                fd: 1009,
                cmd: 0x4004_2408,
                arg: IoctlValue::Fd(1004),
            },
        ),
        (
            "map_snapshot",
            Request::MapSnapshot {
                fd: 1003,
                len: 4096,
                offset: 0,
            },
        ),
        (
            "map_write",
            Request::MapWrite {
                fd: 1003,
                offset: 8,
                data: vec![1, 2, 3, 4],
            },
        ),
        (
            "stream_ringbuf",
            Request::Stream(StreamRequest {
                session: [7; 16],
                fd: 1003,
                kind: StreamKind::Ringbuf { max_entries: 4096 },
            }),
        ),
        (
            "records",
            Request::Records(vec![vec![1; 8], vec![2; 24], Vec::new()]),
        ),
        (
            "read_dir_proc",
            Request::File(FileOp::ReadDir {
                path: "/proc".into(),
            }),
        ),
        (
            "collect",
            Request::Collect(CollectRequest {
                collector: [0x11; 32],
                object: None,
                mode: CollectMode::Roots,
                start: Start::Current,
                base: None,
            }),
        ),
        (
            "peek",
            Request::Peek(vec![MemoryRange {
                addr: 0xffff_ffff_8100_0000,
                len: 64,
            }]),
        ),
        (
            "file_read_range",
            Request::File(FileOp::ReadRange {
                path: "/proc/kallsyms".into(),
                offset: 131072,
                len: 131072,
                snapshot: 1 << 63 | 1,
            }),
        ),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        (
            "netlink_received",
            Reply::Netlink(Ok(NetlinkReply::Received {
                data: telebpf_abi::netlink::build::message(3, 4, &[]),
                len: 20,
            })),
        ),
        (
            "interface_name",
            Reply::Interface(Ok(InterfaceReply::Name("lo".into()))),
        ),
        (
            "welcome",
            Reply::Welcome(Welcome {
                facts: Facts {
                    uname: [
                        "Linux".into(),
                        "guest".into(),
                        "6.18.0".into(),
                        "#1 SMP".into(),
                        "x86_64".into(),
                        "(none)".into(),
                    ],
                    possible_cpus: 2,
                    caps: [[u32::MAX, 0x1ff], [u32::MAX, 0x1ff], [0, 0]],
                    proxy_version: "0.1.0".into(),
                },
                session: [9; 16],
            }),
        ),
        (
            "bpf_map_created",
            Reply::Bpf(BpfResult {
                ret: 7,
                errno: 0,
                attr: vec![0; off::ATTR_SIZE],
                common: None,
                out: vec![(1, vec![0x11; 8])],
                object: Some(NewObject {
                    kind: ObjectKind::Map(MapMeta {
                        map_type: BPF_MAP_TYPE_HASH,
                        key_size: 4,
                        value_size: 8,
                        max_entries: 64,
                        map_flags: 0,
                    }),
                    link: "anon_inode:bpf-map".into(),
                    link_type: None,
                }),
            }),
        ),
        ("read", Reply::Read(Ok(b"iter output\n".to_vec()))),
        ("file_error", Reply::File(Err(2))),
        ("pong", Reply::Pong(vec![0x55; 64])),
        (
            "error",
            Reply::Error(ErrorReply {
                errno: 71,
                message: "buffer 0 does not match the call's plan".into(),
            }),
        ),
        ("ioctl", Reply::Ioctl(Ok((0, Some(42))))),
        ("snapshot", Reply::Snapshot(Ok(vec![0; 64]))),
        ("records", Reply::Records(vec![vec![3; 64], vec![4; 16]])),
        ("lost", Reply::Lost(12)),
        (
            "collected",
            Reply::Collected(Ok(Batch {
                root: 1,
                visited: 2,
                records: vec![7; 32],
                ..Batch::default()
            })),
        ),
        (
            "memory",
            Reply::Memory(Ok(Memory {
                readable: vec![true],
                bytes: vec![0x90; 64],
            })),
        ),
        (
            "refused",
            Reply::Refused(Refusal {
                what: "BPF_PROG_LOAD".into(),
                rule: "'prog_load' is not in commands".into(),
                key: "monitor".into(),
                policy: "read-only".into(),
            }),
        ),
        (
            "entries",
            Reply::File(Ok(FileReply::Entries(vec!["1".into(), "self".into()]))),
        ),
        (
            "file_range",
            Reply::File(Ok(FileReply::Range {
                size: 5_480_506,
                snapshot: 3,
                data: b"\x9f\xeb\x01\x00\x18\x00\x00\x00".to_vec(),
            })),
        ),
    ]
}

/// Seeds of the `ring_consumer` target: honest rings of each kind (across
/// the wrap, busy and discarded records, lost samples, a full user ring)
/// and the attacks of issue #12 (a consumer position moved onto a forged
/// header, headers and positions changed under the consumer).
fn ring_seeds() -> Vec<(&'static str, RingInput)> {
    let record = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i as u8) ^ seed).collect() };
    let take = |limit: u16| RingOp::Proxy {
        limit,
        record: Vec::new(),
    };
    let put = |n: usize, seed: u8| RingOp::Kernel {
        record: record(n, seed),
        discard: false,
    };
    let tamper = |region: u8, after: u8, off: u16, bytes: &[u8]| RingOp::Tamper {
        region,
        after,
        off,
        bytes: bytes.to_vec(),
    };
    // Ring buffers of 256 data bytes after a 64-byte page.
    let rb = 3 | (2 << 3);
    let mut forged = record(64, 0);
    forged[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    vec![
        (
            "ringbuf_honest_wrap",
            RingInput {
                mode: RingMode::Ringbuf,
                geometry: rb,
                start: 256 * 5 - 16,
                ops: vec![
                    put(10, 1),
                    put(100, 2),
                    put(0, 3),
                    RingOp::Kernel {
                        record: record(20, 4),
                        discard: true,
                    },
                    RingOp::Reserve { len: 30 },
                    put(7, 5),
                    take(u16::MAX),
                    RingOp::Commit,
                    take(1),
                    take(u16::MAX),
                    put(240, 6),
                    take(u16::MAX),
                ],
            },
        ),
        (
            "ringbuf_moved_consumer",
            RingInput {
                mode: RingMode::Ringbuf,
                geometry: rb,
                start: 0,
                ops: vec![
                    RingOp::Kernel {
                        record: forged.clone(),
                        discard: false,
                    },
                    take(u16::MAX),
                    tamper(0, 0, 0, &8u64.to_le_bytes()),
                    RingOp::Kernel {
                        record: forged,
                        discard: false,
                    },
                    take(u16::MAX),
                ],
            },
        ),
        (
            "ringbuf_header_changed_mid_read",
            RingInput {
                mode: RingMode::Ringbuf,
                geometry: rb,
                start: 64,
                ops: vec![
                    put(40, 7),
                    tamper(1, 1, 64 + 64, &0xffff_fff0u32.to_le_bytes()),
                    take(u16::MAX),
                ],
            },
        ),
        (
            "ringbuf_producer_far_ahead",
            RingInput {
                mode: RingMode::Ringbuf,
                geometry: rb,
                start: 0,
                ops: vec![
                    put(40, 8),
                    tamper(1, 0, 0, &(1u64 << 40).to_le_bytes()),
                    take(u16::MAX),
                ],
            },
        ),
        (
            "perf_honest_wrap_and_lost",
            RingInput {
                mode: RingMode::Perf,
                geometry: 0,
                start: 2048 * 3 - 16,
                ops: vec![
                    put(5, 1),
                    put(300, 2),
                    put(0, 3),
                    take(100),
                    take(u16::MAX),
                    put(1000, 4),
                    put(1000, 5),
                    put(1000, 6),
                    take(u16::MAX),
                    put(8, 7),
                    take(u16::MAX),
                ],
            },
        ),
        (
            "perf_record_size_forged",
            RingInput {
                mode: RingMode::Perf,
                geometry: 0,
                start: 0,
                ops: vec![
                    put(16, 1),
                    tamper(0, 1, 2048 + 6, &0xfff8u16.to_le_bytes()),
                    take(u16::MAX),
                ],
            },
        ),
        (
            "user_honest_full",
            RingInput {
                mode: RingMode::User,
                geometry: rb,
                start: 256 * 3 - 8,
                ops: vec![
                    RingOp::Proxy {
                        limit: 0,
                        record: record(100, 1),
                    },
                    RingOp::Proxy {
                        limit: 0,
                        record: record(100, 2),
                    },
                    RingOp::Proxy {
                        limit: 0,
                        record: record(100, 3),
                    },
                    RingOp::Commit,
                    RingOp::Proxy {
                        limit: 0,
                        record: record(248, 4),
                    },
                    RingOp::Commit,
                ],
            },
        ),
        (
            "user_consumer_position_forged",
            RingInput {
                mode: RingMode::User,
                geometry: rb,
                start: 256,
                ops: vec![
                    tamper(0, 0, 0, &(1u64 << 20).to_le_bytes()),
                    RingOp::Proxy {
                        limit: 0,
                        record: record(16, 1),
                    },
                ],
            },
        ),
    ]
}

/// Datagrams libbpf and bpftool send over a relayed `NETLINK_ROUTE`
/// socket, and ones the relay refuses.
fn netlink_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use telebpf_abi::netlink::build::{attr, filter, message, xdp};
    use telebpf_abi::netlink::{
        IFLA_LINKINFO, IFLA_NET_NS_FD, RTM_GETLINK, RTM_NEWLINK, TCA_BPF_ACT, TCA_BPF_FD,
    };

    let mut two = xdp(4);
    two.extend(xdp(-1));
    vec![
        ("getlink_dump", message(RTM_GETLINK, 16, &[])),
        ("xdp_attach", xdp(4)),
        ("xdp_detach", xdp(-1)),
        ("two_messages", two),
        (
            "tc_bpf_filter",
            filter(b"bpf\0", &attr(TCA_BPF_FD, &5u32.to_ne_bytes())),
        ),
        (
            "tc_bpf_action",
            filter(b"bpf\0", &attr(TCA_BPF_ACT, &[0; 4])),
        ),
        ("tc_u32_filter", filter(b"u32\0", &[])),
        (
            "newlink_netns",
            message(RTM_NEWLINK, 16, &attr(IFLA_NET_NS_FD, &[3, 0, 0, 0])),
        ),
        (
            "newlink_linkinfo",
            message(RTM_NEWLINK, 16, &attr(IFLA_LINKINFO, &[])),
        ),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dirs: HashMap<&str, PathBuf> = [
        "bpf_attr",
        "request",
        "frame",
        "handshake",
        "ring_consumer",
        "netlink",
    ]
    .into_iter()
    .map(|t| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).expect("corpus dir");
        (t, d)
    })
    .collect();

    let mut requests = Vec::new();
    for call in calls() {
        let (input, request) = marshal(&call);
        telebpf_fuzz::bpf_attr(&input);
        write(&dirs["bpf_attr"], call.name, &input);
        requests.push((call.name, request));
    }
    requests.extend(other_requests());
    let mut encoded = Vec::new();
    for (name, req) in &requests {
        let bytes = encode(req).expect("encode");
        telebpf_fuzz::request(&bytes);
        write(&dirs["request"], &format!("req_{name}"), &bytes);
        encoded.push(bytes);
    }
    for (name, rep) in replies() {
        let bytes = encode(&rep).expect("encode");
        telebpf_fuzz::request(&bytes);
        write(&dirs["request"], &format!("reply_{name}"), &bytes);
    }

    // Frames: a session's first requests, sealed; then tampered versions.
    for (i, chunk) in encoded.chunks(4).enumerate() {
        let chunk = chunk.to_vec();
        let mut raw = vec![0u8];
        raw.extend_from_slice(&seal_all(&chunk));
        write(&dirs["frame"], &format!("raw_{i}"), &raw);
        let clean = frame_input(&chunk, &[]);
        write(&dirs["frame"], &format!("messages_{i}"), &clean);
    }
    let few: Vec<Vec<u8>> = encoded.iter().take(3).cloned().collect();
    for (name, op) in [
        ("flip", [3u8, 30, 0, 2]),
        ("truncate", [5, 40, 0, 0]),
        ("insert", [6, 10, 0, 0xff]),
        ("replay", [0, 2, 0, 0]),
        ("reorder", [1, 0, 0, 1]),
        ("drop", [2, 0, 0, 0]),
    ] {
        let input = frame_input(&few, &[op]);
        telebpf_fuzz::frame(&input);
        write(&dirs["frame"], &format!("tamper_{name}"), &input);
    }

    // Handshake: a real ClientHello for each server key and an unknown one,
    // each with a (wrong) proof; the server's real answer as a client input.
    let keys = handshake_keys();
    let unknown = telebpf_protocol::Psk::from_bytes([3; 32]);
    for (name, key) in [
        ("key0", &keys[0]),
        ("key1", &keys[1]),
        ("unknown", &unknown),
    ] {
        let (_, hello) = ClientHandshake::start(key).expect("hello");
        let body = &hello[4..];
        let mut input = (body.len() as u16).to_le_bytes().to_vec();
        input.extend_from_slice(body);
        input.extend_from_slice(&[0x5a; 32]);
        telebpf_fuzz::handshake(&input);
        write(&dirs["handshake"], &format!("hello_{name}"), &input);
        if let Ok(ServerHelloStep::Continue { reply, .. }) = ServerHandshake::respond(&keys, body) {
            let mut input = vec![0xff, 0xff];
            input.extend_from_slice(&reply[4..]);
            write(&dirs["handshake"], &format!("server_hello_{name}"), &input);
        }
    }
    for (name, input) in ring_seeds() {
        let bytes = input.encode();
        assert_eq!(RingInput::decode(&bytes), input, "{name} round-trips");
        telebpf_fuzz::ring_consumer(&bytes);
        write(&dirs["ring_consumer"], name, &bytes);
    }
    for (name, datagram) in netlink_seeds() {
        telebpf_fuzz::netlink(&datagram);
        write(&dirs["netlink"], name, &datagram);
    }

    let total: usize = dirs
        .values()
        .map(|d| std::fs::read_dir(d).map_or(0, |r| r.count()))
        .sum();
    println!("{total} seeds in {}", root.display());
}
