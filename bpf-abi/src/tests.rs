//! Unit tests with hand-built attrs.

use crate::attach_type::*;
use crate::cmd::*;
use crate::flags::*;
use crate::link_type::*;
use crate::map_type::*;
use crate::off;
use crate::prog_type::*;
use crate::*;
use std::collections::HashMap;

#[derive(Default)]
struct Fake {
    kinds: HashMap<i32, ObjectKind>,
    cpus: u32,
    links: HashMap<i32, u32>,
    iters: HashMap<i32, IterTarget>,
    struct_ops: HashMap<i32, Vec<usize>>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            cpus: 4,
            ..Fake::default()
        }
    }
    fn map(mut self, fd: i32, map_type: u32, key_size: u32, value_size: u32) -> Fake {
        self.kinds.insert(
            fd,
            ObjectKind::Map(MapMeta {
                map_type,
                key_size,
                value_size,
                max_entries: 16,
                map_flags: 0,
            }),
        );
        self
    }
    fn prog(mut self, fd: i32, prog_type: u32) -> Fake {
        self.kinds.insert(fd, ObjectKind::Prog { prog_type });
        self
    }
    fn kind(mut self, fd: i32, kind: ObjectKind) -> Fake {
        self.kinds.insert(fd, kind);
        self
    }
}

impl Objects for Fake {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        self.kinds.get(&fd).cloned()
    }
    fn possible_cpus(&self) -> u32 {
        self.cpus
    }
    fn link_type(&self, fd: i32) -> Option<u32> {
        self.links.get(&fd).copied()
    }
    fn iter_target(&self, prog_fd: i32) -> Option<IterTarget> {
        self.iters.get(&prog_fd).copied()
    }
    fn struct_ops_fd_offsets(&self, map_fd: i32) -> Option<Vec<usize>> {
        self.struct_ops.get(&map_fd).cloned()
    }
}

fn attr() -> Vec<u8> {
    vec![0; off::ATTR_SIZE]
}

fn w32(b: &mut [u8], at: usize, v: u32) {
    write_u32(b, at, v);
}

fn w64(b: &mut [u8], at: usize, v: u64) {
    write_u64(b, at, v);
}

fn slot(parent: Parent, offset: usize, value: i32) -> FdSlot {
    FdSlot {
        parent,
        offset,
        value,
    }
}

/// Run expand over every buffer, feeding In/InOut buffers from `mem` (pointer → bytes) or
/// zeros.
fn expand_all(plan: &mut Plan, objs: &dyn Objects, mem: &HashMap<u64, Vec<u8>>) {
    let mut i = 0;
    while i < plan.buffers.len() {
        let b = &plan.buffers[i];
        let bytes = if b.dir.copies_in() {
            mem.get(&b.ptr)
                .cloned()
                .unwrap_or_else(|| vec![0; b.alloc_len()])
        } else {
            Vec::new()
        };
        plan.expand(i, &bytes, objs).unwrap();
        i += 1;
    }
}

#[test]
fn map_lookup_hash() {
    let objs = Fake::new().map(5, BPF_MAP_TYPE_HASH, 4, 8);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a[..32], None, &objs).unwrap();
    assert_eq!(p.cmd, BPF_MAP_LOOKUP_ELEM);
    assert!(!p.common && !p.returns_fd);
    assert_eq!(p.fds, vec![slot(Parent::Attr, 0, 5)]);
    assert_eq!(p.buffers.len(), 2);
    let k = &p.buffers[0];
    assert_eq!(
        (k.parent, k.ptr_offset, k.ptr, k.len, k.dir),
        (Parent::Attr, 8, 0x1000, Length::Bytes(4), Direction::In)
    );
    let v = &p.buffers[1];
    assert_eq!(
        (v.ptr_offset, v.ptr, v.len, v.dir),
        (16, 0x2000, Length::Bytes(8), Direction::Out)
    );
}

#[test]
fn map_lookup_percpu() {
    let objs = Fake::new().map(5, BPF_MAP_TYPE_PERCPU_HASH, 4, 12);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap();
    // round_up(12, 8) * 4 cpus
    assert_eq!(p.buffers[1].len, Length::Bytes(64));
    // BPF_F_CPU: one slot of value_size.
    w64(&mut a, off::map_elem::FLAGS, BPF_F_CPU | (2 << 32));
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].len, Length::Bytes(12));
    // percpu array, lookup_and_delete, 0 cpus treated as 1
    let mut objs = Fake::new().map(6, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8);
    objs.cpus = 0;
    w32(&mut a, off::map_elem::MAP_FD, 6);
    w64(&mut a, off::map_elem::FLAGS, 0);
    let p = Plan::new(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].len, Length::Bytes(8));
    assert_eq!(p.buffers[1].dir, Direction::Out);
}

#[test]
fn map_elem_variants() {
    let objs = Fake::new()
        .map(3, BPF_MAP_TYPE_BLOOM_FILTER, 0, 8)
        .map(4, BPF_MAP_TYPE_QUEUE, 0, 16)
        .map(5, BPF_MAP_TYPE_HASH, 8, 32)
        .map(6, BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4);
    let mut a = attr();
    // Bloom filter lookup: value travels in.
    w32(&mut a, off::map_elem::MAP_FD, 3);
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    assert_eq!(p.buffers[0].dir, Direction::In);
    assert_eq!(p.buffers[0].len, Length::Bytes(8));
    // Queue with a (bogus) non-NULL key: zero-length buffer, the kernel decides.
    w32(&mut a, off::map_elem::MAP_FD, 4);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::Bytes(0));
    assert_eq!(p.buffers[1].len, Length::Bytes(16));
    // GET_NEXT_KEY with NULL key: only next_key.
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0);
    let p = Plan::new(BPF_MAP_GET_NEXT_KEY, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    assert_eq!(
        (p.buffers[0].ptr_offset, p.buffers[0].len, p.buffers[0].dir),
        (16, Length::Bytes(8), Direction::Out)
    );
    // DELETE with key, FREEZE: no buffers.
    w64(&mut a, off::map_elem::KEY, 0x1000);
    let p = Plan::new(BPF_MAP_DELETE_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    let p = Plan::new(BPF_MAP_FREEZE, &a, None, &objs).unwrap();
    assert!(p.buffers.is_empty());
    assert_eq!(p.fds, vec![slot(Parent::Attr, 0, 5)]);
    // fd map lookup: 4-byte id.
    w32(&mut a, off::map_elem::MAP_FD, 6);
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].len, Length::Bytes(4));
}

#[test]
fn map_errors() {
    let objs = Fake::new().prog(7, BPF_PROG_TYPE_XDP);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 9);
    let e = Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs).unwrap_err();
    assert_eq!(e, AbiError::BadFd { fd: 9 });
    assert_eq!(e.errno(), 9);
    w32(&mut a, off::map_elem::MAP_FD, 7);
    let e = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap_err();
    assert_eq!(e.errno(), 22);
    w32(&mut a, off::batch::MAP_FD, 9);
    let e = Plan::new(BPF_MAP_LOOKUP_BATCH, &a, None, &objs).unwrap_err();
    assert_eq!(e.errno(), 9);
}

#[test]
fn update_prog_array_fd_in_value() {
    let objs = Fake::new().map(5, BPF_MAP_TYPE_PROG_ARRAY, 4, 4);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let mut p = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].content, Content::MapValueFds);
    assert_eq!(p.buffers[1].dir, Direction::In);
    p.expand(0, &[1, 0, 0, 0], &objs).unwrap();
    p.expand(1, &[7, 0, 0, 0], &objs).unwrap();
    assert_eq!(
        p.fds,
        vec![slot(Parent::Attr, 0, 5), slot(Parent::Buffer(1), 0, 7)]
    );
}

#[test]
fn storage_map_keys_are_fd_slots() {
    for t in [
        BPF_MAP_TYPE_TASK_STORAGE,
        BPF_MAP_TYPE_SK_STORAGE,
        BPF_MAP_TYPE_INODE_STORAGE,
        BPF_MAP_TYPE_CGRP_STORAGE,
    ] {
        let objs = Fake::new().map(5, t, 4, 16);
        let mut a = attr();
        w32(&mut a, off::map_elem::MAP_FD, 5);
        w64(&mut a, off::map_elem::KEY, 0x1000);
        w64(&mut a, off::map_elem::VALUE, 0x2000);
        for (cmd, value_dir) in [
            (BPF_MAP_UPDATE_ELEM, Some(Direction::In)),
            (BPF_MAP_LOOKUP_ELEM, Some(Direction::Out)),
            (BPF_MAP_DELETE_ELEM, None),
        ] {
            let mut p = Plan::new(cmd, &a, None, &objs).unwrap();
            assert_eq!(p.buffers[0].content, Content::KeyFd, "type {t} cmd {cmd}");
            assert_eq!(p.buffers[0].len, Length::Bytes(4));
            assert_eq!(p.buffers.get(1).map(|b| b.dir), value_dir);
            p.expand(0, &[9, 0, 0, 0], &objs).unwrap();
            // The key holds fd 9: a slot the host translates and the proxy
            // checks like the map fd.
            assert_eq!(
                p.fds,
                vec![slot(Parent::Attr, 0, 5), slot(Parent::Buffer(0), 0, 9)]
            );
        }
        // Freezing reads no key.
        let p = Plan::new(BPF_MAP_FREEZE, &a, None, &objs).unwrap();
        assert!(p.buffers.is_empty());
    }
    // Other maps' keys are plain bytes.
    let objs = Fake::new().map(5, BPF_MAP_TYPE_HASH, 4, 16);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    let p = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].content, Content::Plain);
}

#[test]
fn expected_attach_types_that_bind_a_program() {
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_TRACING, BPF_MODIFY_RETURN),
        Some(BPF_MODIFY_RETURN)
    );
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_LSM, BPF_LSM_MAC),
        Some(BPF_LSM_MAC)
    );
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_CGROUP_SKB, 0),
        Some(BPF_CGROUP_INET_INGRESS)
    );
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_CGROUP_SOCK, 0),
        Some(BPF_CGROUP_INET_SOCK_CREATE)
    );
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI),
        Some(BPF_TRACE_KPROBE_MULTI)
    );
    // Ignored, or required to be 0, or no attach type at all.
    assert_eq!(bound_at_load(BPF_PROG_TYPE_KPROBE, 0), None);
    assert_eq!(
        bound_at_load(BPF_PROG_TYPE_TRACEPOINT, BPF_MODIFY_RETURN),
        None
    );
    assert_eq!(bound_at_load(BPF_PROG_TYPE_SOCKET_FILTER, 0), None);
    assert_eq!(bound_at_load(BPF_PROG_TYPE_EXT, 0), None);
    assert_eq!(bound_at_load(BPF_PROG_TYPE_STRUCT_OPS, 3), None);
}

#[test]
fn update_devmap_and_sockmap_values() {
    let objs = Fake::new()
        .map(5, BPF_MAP_TYPE_DEVMAP, 4, 8)
        .map(6, BPF_MAP_TYPE_DEVMAP, 4, 4)
        .map(7, BPF_MAP_TYPE_SOCKMAP, 4, 8)
        .map(8, BPF_MAP_TYPE_HASH, 4, 8);
    let mut a = attr();
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let value = [3u8, 0, 0, 0, 11, 0, 0, 0];
    for (fd, expect) in [(5, Some(4)), (6, None), (7, Some(0)), (8, None)] {
        w32(&mut a, off::map_elem::MAP_FD, fd);
        let mut p = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap();
        let len = p.buffers[0].alloc_len();
        p.expand(0, &value[..len], &objs).unwrap();
        let inner: Vec<_> = p.fds[1..].iter().map(|s| s.offset).collect();
        assert_eq!(inner, expect.into_iter().collect::<Vec<_>>(), "map fd {fd}");
    }
}

#[test]
fn struct_ops_update_needs_hint() {
    let mut objs = Fake::new().map(5, BPF_MAP_TYPE_STRUCT_OPS, 4, 64);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    w64(&mut a, off::map_elem::VALUE, 0x2000);
    let e = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap_err();
    assert_eq!(e.errno(), 95);
    objs.struct_ops.insert(5, vec![16, 24, 200]);
    let mut p = Plan::new(BPF_MAP_UPDATE_ELEM, &a, None, &objs).unwrap();
    let mut v = vec![0u8; 64];
    v[16] = 9;
    v[24] = 10;
    p.expand(0, &[0; 4], &objs).unwrap();
    p.expand(1, &v, &objs).unwrap();
    // offset 200 lies outside the value and is ignored.
    assert_eq!(
        p.fds[1..],
        [
            slot(Parent::Buffer(1), 16, 9),
            slot(Parent::Buffer(1), 24, 10)
        ]
    );
}

#[test]
fn batch_token_sizes() {
    let objs = Fake::new()
        .map(1, BPF_MAP_TYPE_HASH, 16, 8)
        .map(2, BPF_MAP_TYPE_ARRAY, 4, 8)
        .map(3, BPF_MAP_TYPE_LPM_TRIE, 8, 8)
        .map(4, BPF_MAP_TYPE_LRU_PERCPU_HASH, 16, 12)
        .map(5, BPF_MAP_TYPE_HASH_OF_MAPS, 16, 4);
    let mut a = attr();
    w64(&mut a, off::batch::IN_BATCH, 0x10);
    w64(&mut a, off::batch::OUT_BATCH, 0x20);
    w64(&mut a, off::batch::KEYS, 0x30);
    w64(&mut a, off::batch::VALUES, 0x40);
    w32(&mut a, off::batch::COUNT, 10);
    for (fd, token, key, val) in [
        (1, 4, 160, 80),
        (2, 4, 40, 80),
        (3, 8, 80, 80),
        (4, 4, 160, 10 * 16 * 4),
        (5, 4, 160, 40),
    ] {
        w32(&mut a, off::batch::MAP_FD, fd);
        let p = Plan::new(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &a, None, &objs).unwrap();
        let lens: Vec<_> = p.buffers.iter().map(|b| b.alloc_len()).collect();
        assert_eq!(lens, vec![token, token, key, val], "map fd {fd}");
        let dirs: Vec<_> = p.buffers.iter().map(|b| b.dir).collect();
        assert_eq!(
            dirs,
            vec![
                Direction::In,
                Direction::Out,
                Direction::Out,
                Direction::Out
            ]
        );
        assert_eq!(
            p.fds,
            vec![slot(Parent::Attr, off::batch::MAP_FD, fd as i32)]
        );
    }
    // The array's key size is 4: token == key_size there as well; use a wider array key.
    let objs = Fake::new().map(2, BPF_MAP_TYPE_ARRAY, 8, 8);
    w32(&mut a, off::batch::MAP_FD, 2);
    let p = Plan::new(BPF_MAP_LOOKUP_BATCH, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::Bytes(8));
    // in_batch NULL (start): no buffer.
    w64(&mut a, off::batch::IN_BATCH, 0);
    let p = Plan::new(BPF_MAP_LOOKUP_BATCH, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 3);
    assert_eq!(p.buffers[0].ptr_offset, off::batch::OUT_BATCH);
}

#[test]
fn batch_update_and_delete() {
    let objs =
        Fake::new()
            .map(5, BPF_MAP_TYPE_HASH_OF_MAPS, 4, 4)
            .map(6, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4);
    let mut a = attr();
    w64(&mut a, off::batch::IN_BATCH, 0x10);
    w64(&mut a, off::batch::KEYS, 0x30);
    w64(&mut a, off::batch::VALUES, 0x40);
    w32(&mut a, off::batch::COUNT, 3);
    w32(&mut a, off::batch::MAP_FD, 5);
    let mut p = Plan::new(BPF_MAP_UPDATE_BATCH, &a, None, &objs).unwrap();
    // in_batch is ignored by update: keys In, values In with fds.
    assert_eq!(p.buffers.len(), 2);
    assert_eq!(p.buffers[1].content, Content::MapValueFds);
    let vals = [21u8, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0];
    p.expand(0, &[0; 12], &objs).unwrap();
    p.expand(1, &vals, &objs).unwrap();
    let v: Vec<_> = p.fds[1..].iter().map(|s| (s.offset, s.value)).collect();
    assert_eq!(v, vec![(0, 21), (4, 22), (8, 0)]);
    w32(&mut a, off::batch::MAP_FD, 6);
    w64(&mut a, off::batch::ELEM_FLAGS, BPF_F_ALL_CPUS);
    let p = Plan::new(BPF_MAP_UPDATE_BATCH, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].len, Length::Bytes(12));
    let p = Plan::new(BPF_MAP_DELETE_BATCH, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    assert_eq!(p.buffers[0].ptr_offset, off::batch::KEYS);
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
}

#[test]
fn prog_load_insn_fds_and_fd_array() {
    let objs = Fake::new();
    let prog: Vec<[u8; 8]> = vec![
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, 9), // 0: map fd 9
        insn(0, 0, 0, 0, 0),
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_IDX, 0, 3), // 2: fd_array[3]
        insn(0, 0, 0, 0, 0),
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_BTF_ID, 0, 77), // 4: module btf fd 12
        insn(0, 0, 0, 0, 12),
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_BTF_ID, 0, 78), // 6: vmlinux (0): no slot
        insn(0, 0, 0, 0, 0),
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_VALUE, 0, 10), // 8: map fd 10
        insn(0, 0, 0, 0, 16),
        insn(BPF_JMP_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 5, 1234), // 10: fd_array[5]
        insn(BPF_JMP_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 99),   // vmlinux kfunc
        insn(BPF_JMP_CALL, 0, BPF_PSEUDO_CALL, 7, 1),          // bpf-to-bpf: ignored
        insn(0x95, 0, 0, 0, 0),                                // exit
    ];
    let insns: Vec<u8> = prog.concat();
    let mut a = attr();
    w32(&mut a, off::prog_load::PROG_TYPE, BPF_PROG_TYPE_KPROBE);
    w32(&mut a, off::prog_load::INSN_CNT, prog.len() as u32);
    w64(&mut a, off::prog_load::INSNS, 0x1000);
    w64(&mut a, off::prog_load::LICENSE, 0x2000);
    w32(&mut a, off::prog_load::LOG_LEVEL, 1);
    w32(&mut a, off::prog_load::LOG_SIZE, 4096);
    w64(&mut a, off::prog_load::LOG_BUF, 0x3000);
    w64(&mut a, off::prog_load::FD_ARRAY, 0x4000);
    w32(&mut a, off::prog_load::FD_ARRAY_CNT, 2);
    w32(&mut a, off::prog_load::PROG_BTF_FD, 8);
    w32(&mut a, off::prog_load::FUNC_INFO_REC_SIZE, 8);
    w32(&mut a, off::prog_load::FUNC_INFO_CNT, 3);
    w64(&mut a, off::prog_load::FUNC_INFO, 0x5000);
    let mut p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    assert!(p.returns_fd);
    let shape: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.ptr_offset, b.len, b.dir, b.content))
        .collect();
    assert_eq!(
        shape,
        vec![
            (8, Length::Bytes(112), Direction::In, Content::Insns),
            (
                16,
                Length::CString { max: 128 },
                Direction::In,
                Content::Plain
            ),
            (32, Length::Bytes(4096), Direction::Out, Content::Log),
            (80, Length::Bytes(24), Direction::In, Content::Plain),
            (120, Length::Bytes(8), Direction::In, Content::FdArray),
        ]
    );
    assert_eq!(
        p.fds,
        vec![
            slot(Parent::Attr, off::prog_load::PROG_BTF_FD, 8),
            slot(Parent::Attr, off::prog_load::ATTACH_PROG_FD, 0),
        ]
    );
    p.expand(0, &insns, &objs).unwrap();
    // fd_array grown to cover index 5 (kfunc off) > 3 (MAP_IDX) > fd_array_cnt 2.
    assert_eq!(p.buffers[4].len, Length::Bytes(24));
    let ins = Parent::Buffer(0);
    assert_eq!(
        p.fds[2..],
        [
            slot(ins, 4, 9),
            slot(ins, 5 * 8 + 4, 12),
            slot(ins, 8 * 8 + 4, 10)
        ]
    );
    let fd_array: Vec<u8> = [31u32, 32, 0, 33, 0, 34]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut mem = HashMap::new();
    mem.insert(0x4000u64, fd_array);
    for i in 1..p.buffers.len() {
        let b = &p.buffers[i];
        let bytes = if b.dir.copies_in() {
            mem.get(&b.ptr)
                .cloned()
                .unwrap_or_else(|| vec![0; b.alloc_len()])
        } else {
            Vec::new()
        };
        p.expand(i, &bytes, &objs).unwrap();
    }
    let fa: Vec<_> = p
        .fds
        .iter()
        .filter(|s| s.parent == Parent::Buffer(4))
        .map(|s| (s.offset, s.value))
        .collect();
    assert_eq!(
        fa,
        vec![(0, 31), (4, 32), (8, 0), (12, 33), (16, 0), (20, 34)]
    );
}

#[test]
fn prog_load_token_and_fd_array_cnt() {
    let objs = Fake::new();
    let mut a = attr();
    w32(&mut a, off::prog_load::PROG_FLAGS, BPF_F_TOKEN_FD);
    w32(&mut a, off::prog_load::PROG_TOKEN_FD, 44);
    w64(&mut a, off::prog_load::FD_ARRAY, 0x4000);
    w32(&mut a, off::prog_load::FD_ARRAY_CNT, 4);
    w64(&mut a, off::prog_load::SIGNATURE, 0x6000);
    w32(&mut a, off::prog_load::SIGNATURE_SIZE, 300);
    w64(&mut a, off::prog_load::CORE_RELOS, 0x7000);
    w32(&mut a, off::prog_load::CORE_RELO_CNT, 2);
    w32(&mut a, off::prog_load::CORE_RELO_REC_SIZE, 16);
    let p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    let lens: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len()))
        .collect();
    assert_eq!(lens, vec![(120, 16), (128, 32), (152, 300)]);
    assert!(p
        .fds
        .contains(&slot(Parent::Attr, off::prog_load::PROG_TOKEN_FD, 44)));
}

#[test]
fn get_info_prog_nested() {
    let objs = Fake::new().prog(3, BPF_PROG_TYPE_XDP);
    let mut a = attr();
    w32(&mut a, off::info::BPF_FD, 3);
    w32(&mut a, off::info::INFO_LEN, off::prog_info::SIZE as u32);
    w64(&mut a, off::info::INFO, 0x9000);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    assert_eq!(p.buffers[0].dir, Direction::InOut);
    assert_eq!(p.buffers[0].content, Content::ProgInfo);
    assert_eq!(p.buffers[0].len, Length::Bytes(232));
    assert_eq!(p.fds, vec![slot(Parent::Attr, 0, 3)]);

    use off::prog_info as o;
    let mut info = vec![0u8; o::SIZE];
    w32(&mut info, o::JITED_PROG_LEN, 0); // non-NULL pointer, length 0
    w64(&mut info, o::JITED_PROG_INSNS, 0xa000);
    w32(&mut info, o::XLATED_PROG_LEN, 96);
    w64(&mut info, o::XLATED_PROG_INSNS, 0xb000);
    w32(&mut info, o::NR_MAP_IDS, 3);
    w64(&mut info, o::MAP_IDS, 0xc000);
    w32(&mut info, o::NR_JITED_KSYMS, 2);
    w64(&mut info, o::JITED_KSYMS, 0xd000);
    w32(&mut info, o::NR_JITED_FUNC_LENS, 2);
    w64(&mut info, o::JITED_FUNC_LENS, 0xe000);
    w32(&mut info, o::NR_FUNC_INFO, 2);
    w32(&mut info, o::FUNC_INFO_REC_SIZE, 8);
    w64(&mut info, o::FUNC_INFO, 0xf000);
    w32(&mut info, o::NR_LINE_INFO, 5);
    w32(&mut info, o::LINE_INFO_REC_SIZE, 16);
    w64(&mut info, o::LINE_INFO, 0x10000);
    w32(&mut info, o::NR_JITED_LINE_INFO, 5);
    w32(&mut info, o::JITED_LINE_INFO_REC_SIZE, 8);
    w64(&mut info, o::JITED_LINE_INFO, 0x11000);
    w32(&mut info, o::NR_PROG_TAGS, 2);
    w64(&mut info, o::PROG_TAGS, 0x12000);
    p.expand(0, &info, &objs).unwrap();
    let nested: Vec<_> = p.buffers[1..]
        .iter()
        .map(|b| {
            assert_eq!(b.parent, Parent::Buffer(0));
            assert_eq!(b.dir, Direction::Out);
            (b.ptr_offset, b.ptr, b.alloc_len())
        })
        .collect();
    assert_eq!(
        nested,
        vec![
            (o::JITED_PROG_INSNS, 0xa000, 0),
            (o::XLATED_PROG_INSNS, 0xb000, 96),
            (o::MAP_IDS, 0xc000, 12),
            (o::JITED_KSYMS, 0xd000, 16),
            (o::JITED_FUNC_LENS, 0xe000, 8),
            (o::FUNC_INFO, 0xf000, 16),
            (o::LINE_INFO, 0x10000, 80),
            (o::JITED_LINE_INFO, 0x11000, 40),
            (o::PROG_TAGS, 0x12000, 16),
        ]
    );
    // Nested Out buffers expand to nothing.
    for i in 1..p.buffers.len() {
        p.expand(i, &[], &objs).unwrap();
    }
    assert_eq!(p.buffers.len(), 10);

    // info_len = 56: map_ids (56..64) and later fields are outside: ignored.
    w32(&mut a, off::info::INFO_LEN, 56);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info[..56], &objs).unwrap();
    let offs: Vec<_> = p.buffers[1..].iter().map(|b| b.ptr_offset).collect();
    assert_eq!(offs, vec![o::JITED_PROG_INSNS, o::XLATED_PROG_INSNS]);
    // info_len = 60 cuts the non-zero map_ids pointer.
    w32(&mut a, off::info::INFO_LEN, 60);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    let e = p.expand(0, &info[..60], &objs).unwrap_err();
    assert_eq!(e, AbiError::Truncated { offset: o::MAP_IDS });
    assert_eq!(e.errno(), 14);
}

#[test]
fn get_info_btf_map_link() {
    let mut objs = Fake::new()
        .kind(3, ObjectKind::Btf)
        .map(4, BPF_MAP_TYPE_ARRAY, 4, 4)
        .kind(5, ObjectKind::Link)
        .kind(6, ObjectKind::Link)
        .kind(7, ObjectKind::Other);
    objs.links.insert(5, BPF_LINK_TYPE_KPROBE_MULTI);
    let mut a = attr();
    w64(&mut a, off::info::INFO, 0x9000);

    // BTF: btf + name.
    w32(&mut a, off::info::BPF_FD, 3);
    w32(&mut a, off::info::INFO_LEN, 32);
    let mut info = vec![0u8; 32];
    w64(&mut info, off::btf_info::BTF, 0xa000);
    w32(&mut info, off::btf_info::BTF_SIZE, 1000);
    w64(&mut info, off::btf_info::NAME, 0xb000);
    w32(&mut info, off::btf_info::NAME_LEN, 64);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info, &objs).unwrap();
    let n: Vec<_> = p.buffers[1..]
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len()))
        .collect();
    assert_eq!(n, vec![(0, 1000), (16, 64)]);

    // Map: hash.
    w32(&mut a, off::info::BPF_FD, 4);
    w32(&mut a, off::info::INFO_LEN, 104);
    let mut info = vec![0u8; 104];
    w64(&mut info, off::map_info::HASH, 0xa000);
    w32(&mut info, off::map_info::HASH_SIZE, 32);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].content, Content::MapInfo);
    p.expand(0, &info, &objs).unwrap();
    assert_eq!(p.buffers[1].len, Length::Bytes(32));

    // Link with a known type (kprobe_multi): addrs + cookies of count u64.
    w32(&mut a, off::info::BPF_FD, 5);
    w32(&mut a, off::info::INFO_LEN, 64);
    let mut info = vec![0u8; 64];
    w64(&mut info, off::link_info::KPROBE_MULTI_ADDRS, 0xa000);
    w32(&mut info, off::link_info::KPROBE_MULTI_COUNT, 7);
    w64(&mut info, off::link_info::KPROBE_MULTI_COOKIES, 0xb000);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info, &objs).unwrap();
    let n: Vec<_> = p.buffers[1..]
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len()))
        .collect();
    assert_eq!(n, vec![(16, 56), (40, 56)]);

    // Link of unknown type: zero union -> nothing; type in the info -> used; neither -> error.
    w32(&mut a, off::info::BPF_FD, 6);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &[0; 64], &objs).unwrap();
    assert_eq!(p.buffers.len(), 1);
    let mut info = vec![0u8; 64];
    w64(&mut info, off::link_info::NAME, 0xa000);
    w32(&mut info, off::link_info::NAME_LEN, 128);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    let e = p.expand(0, &info, &objs).unwrap_err();
    assert_eq!(e.errno(), 95);
    w32(
        &mut info,
        off::link_info::TYPE,
        BPF_LINK_TYPE_RAW_TRACEPOINT,
    );
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info, &objs).unwrap();
    assert_eq!(p.buffers[1].ptr_offset, off::link_info::NAME);
    assert_eq!(p.buffers[1].len, Length::Bytes(128));

    // perf_event link: the name pointer sits at 24 for every perf event kind.
    let mut info = vec![0u8; 64];
    w32(&mut info, off::link_info::TYPE, BPF_LINK_TYPE_PERF_EVENT);
    w64(&mut info, off::link_info::PERF_EVENT_NAME, 0xa000);
    w32(&mut info, off::link_info::PERF_EVENT_NAME_LEN, 256);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info, &objs).unwrap();
    assert_eq!(
        (p.buffers[1].ptr_offset, p.buffers[1].alloc_len()),
        (24, 256)
    );

    // Something else (token): plain InOut buffer.
    w32(&mut a, off::info::BPF_FD, 7);
    let p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].content, Content::Plain);
    // Unknown fd.
    w32(&mut a, off::info::BPF_FD, 99);
    assert_eq!(
        Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs)
            .unwrap_err()
            .errno(),
        9
    );
}

#[test]
fn uprobe_multi_link_info() {
    let mut objs = Fake::new().kind(5, ObjectKind::Link);
    objs.links.insert(5, BPF_LINK_TYPE_UPROBE_MULTI);
    let mut a = attr();
    w32(&mut a, off::info::BPF_FD, 5);
    w32(&mut a, off::info::INFO_LEN, 64);
    w64(&mut a, off::info::INFO, 0x9000);
    let mut info = vec![0u8; 64];
    use off::link_info as o;
    w64(&mut info, o::UPROBE_MULTI_PATH, 0xa000);
    w32(&mut info, o::UPROBE_MULTI_PATH_SIZE, 4096);
    w64(&mut info, o::UPROBE_MULTI_OFFSETS, 0xb000);
    w64(&mut info, o::UPROBE_MULTI_COOKIES, 0xc000);
    w32(&mut info, o::UPROBE_MULTI_COUNT, 3);
    let mut p = Plan::new(BPF_OBJ_GET_INFO_BY_FD, &a, None, &objs).unwrap();
    p.expand(0, &info, &objs).unwrap();
    let n: Vec<_> = p.buffers[1..]
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len()))
        .collect();
    assert_eq!(n, vec![(16, 4096), (24, 24), (40, 24)]);
}

#[test]
fn kprobe_multi_nested_strings() {
    let objs = Fake::new().prog(3, BPF_PROG_TYPE_KPROBE);
    let mut a = attr();
    use off::link_create as o;
    w32(&mut a, o::PROG_FD, 3);
    w32(&mut a, o::ATTACH_TYPE, BPF_TRACE_KPROBE_MULTI);
    w32(&mut a, o::KPROBE_MULTI_CNT, 3);
    w64(&mut a, o::KPROBE_MULTI_SYMS, 0x1000);
    w64(&mut a, o::KPROBE_MULTI_COOKIES, 0x3000);
    let mut p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert!(p.returns_fd);
    assert_eq!(p.fds, vec![slot(Parent::Attr, 0, 3)]);
    let top: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len(), b.content))
        .collect();
    assert_eq!(
        top,
        vec![(24, 24, Content::PtrArray), (40, 24, Content::Plain)]
    );
    let mut syms = Vec::new();
    for ptr in [0x5000u64, 0, 0x6000] {
        syms.extend_from_slice(&ptr.to_le_bytes());
    }
    p.expand(0, &syms, &objs).unwrap();
    p.expand(1, &[0; 24], &objs).unwrap();
    let kids: Vec<_> = p.buffers[2..]
        .iter()
        .map(|b| (b.parent, b.ptr_offset, b.ptr, b.len, b.dir))
        .collect();
    let cs = Length::CString { max: 512 };
    assert_eq!(
        kids,
        vec![
            (Parent::Buffer(0), 0, 0x5000, cs, Direction::In),
            (Parent::Buffer(0), 16, 0x6000, cs, Direction::In),
        ]
    );
    // Strings contain nothing further.
    p.expand(2, b"tcp_v4_connect\0", &objs).unwrap();
    p.expand(3, b"x\0", &objs).unwrap();
    assert_eq!(p.buffers.len(), 4);
}

#[test]
fn link_create_arms() {
    let mut objs = Fake::new()
        .prog(3, BPF_PROG_TYPE_SCHED_CLS)
        .prog(4, BPF_PROG_TYPE_TRACING)
        .prog(5, BPF_PROG_TYPE_KPROBE)
        .prog(6, BPF_PROG_TYPE_CGROUP_SKB)
        .prog(7, BPF_PROG_TYPE_XDP)
        .prog(8, BPF_PROG_TYPE_PERF_EVENT)
        .prog(9, BPF_PROG_TYPE_TRACING);
    objs.iters.insert(4, IterTarget::Map);
    use off::link_create as o;
    let fd_offsets =
        |p: &Plan| -> Vec<(Parent, usize)> { p.fds.iter().map(|s| (s.parent, s.offset)).collect() };

    // tcx: ifindex, relative fd unless BPF_F_ID.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 3);
    w32(&mut a, o::TARGET_FD, 2); // ifindex
    w32(&mut a, o::ATTACH_TYPE, BPF_TCX_INGRESS);
    w32(&mut a, o::RELATIVE_FD, 11);
    w32(&mut a, o::FLAGS, BPF_F_BEFORE);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(fd_offsets(&p), vec![(Parent::Attr, 0), (Parent::Attr, 16)]);
    w32(&mut a, o::FLAGS, BPF_F_BEFORE | BPF_F_ID);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(fd_offsets(&p), vec![(Parent::Attr, 0)]);

    // cgroup: cgroup fd + relative fd.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 6);
    w32(&mut a, o::TARGET_FD, 20);
    w32(&mut a, o::ATTACH_TYPE, BPF_CGROUP_INET_INGRESS);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(
        fd_offsets(&p),
        vec![(Parent::Attr, 0), (Parent::Attr, 4), (Parent::Attr, 16)]
    );

    // xdp: ifindex only. perf_event: perf fd.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 7);
    w32(&mut a, o::ATTACH_TYPE, BPF_XDP);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(fd_offsets(&p), vec![(Parent::Attr, 0)]);
    w32(&mut a, o::PROG_FD, 8);
    w32(&mut a, o::ATTACH_TYPE, BPF_PERF_EVENT);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(fd_offsets(&p), vec![(Parent::Attr, 0), (Parent::Attr, 4)]);

    // iter with a known map target: map_fd inside iter_info.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 4);
    w32(&mut a, o::ATTACH_TYPE, BPF_TRACE_ITER);
    w64(&mut a, o::ITER_INFO, 0x1000);
    w32(&mut a, o::ITER_INFO_LEN, 16);
    let mut p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].content, Content::IterLinkInfo);
    let mut info = [0u8; 16];
    info[0] = 13;
    p.expand(0, &info, &objs).unwrap();
    assert_eq!(p.fds[1], slot(Parent::Buffer(0), 0, 13));
    // Unknown target: every non-zero candidate word.
    w32(&mut a, o::PROG_FD, 9);
    let mut p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    let mut info = [0u8; 16];
    info[4] = 14; // cgroup_fd
    p.expand(0, &info, &objs).unwrap();
    assert_eq!(p.fds[1..], [slot(Parent::Buffer(0), 4, 14)]);
    // Short iter_info cutting a non-zero fd.
    w32(&mut a, o::ITER_INFO_LEN, 6);
    let mut p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(p.expand(0, &info[..6], &objs).unwrap_err().errno(), 14);

    // uprobe_multi: path string, arrays, path_fd.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 5);
    w32(&mut a, o::ATTACH_TYPE, BPF_TRACE_UPROBE_MULTI);
    w64(&mut a, o::UPROBE_MULTI_PATH, 0x1000);
    w64(&mut a, o::UPROBE_MULTI_OFFSETS, 0x2000);
    w32(&mut a, o::UPROBE_MULTI_CNT, 4);
    w32(&mut a, o::UPROBE_MULTI_FLAGS, BPF_F_UPROBE_MULTI_PATH_FD);
    w32(&mut a, o::UPROBE_MULTI_PATH_FD, 17);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    let b: Vec<_> = p.buffers.iter().map(|b| (b.ptr_offset, b.len)).collect();
    assert_eq!(
        b,
        vec![(16, Length::CString { max: 4096 }), (24, Length::Bytes(32))]
    );
    assert_eq!(p.fds[1], slot(Parent::Attr, o::UPROBE_MULTI_PATH_FD, 17));

    // struct_ops link: map fd only, no prog lookup.
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 55);
    w32(&mut a, o::ATTACH_TYPE, BPF_STRUCT_OPS);
    let p = Plan::new(BPF_LINK_CREATE, &a, None, &objs).unwrap();
    assert_eq!(p.fds, vec![slot(Parent::Attr, 0, 55)]);
    // Unknown prog fd.
    w32(&mut a, o::ATTACH_TYPE, BPF_XDP);
    assert_eq!(
        Plan::new(BPF_LINK_CREATE, &a, None, &objs)
            .unwrap_err()
            .errno(),
        9
    );
}

#[test]
fn attach_detach_query() {
    let objs = Fake::new();
    use off::attach as o;
    let fds = |p: &Plan| -> Vec<usize> { p.fds.iter().map(|s| s.offset).collect() };
    let mut a = attr();
    w32(&mut a, o::ATTACH_TYPE, BPF_CGROUP_INET_EGRESS);
    w32(&mut a, o::ATTACH_FLAGS, BPF_F_ALLOW_MULTI | BPF_F_REPLACE);
    let p = Plan::new(BPF_PROG_ATTACH, &a, None, &objs).unwrap();
    assert_eq!(fds(&p), vec![0, 4, 16, 20]);
    let p = Plan::new(BPF_PROG_DETACH, &a, None, &objs).unwrap();
    assert_eq!(fds(&p), vec![0, 4, 20]);
    w32(&mut a, o::ATTACH_TYPE, BPF_TCX_EGRESS);
    w32(&mut a, o::ATTACH_FLAGS, BPF_F_AFTER | BPF_F_ID);
    let p = Plan::new(BPF_PROG_ATTACH, &a, None, &objs).unwrap();
    assert_eq!(fds(&p), vec![4]);
    w32(&mut a, o::ATTACH_TYPE, BPF_SK_SKB_STREAM_VERDICT);
    let p = Plan::new(BPF_PROG_ATTACH, &a, None, &objs).unwrap();
    assert_eq!(fds(&p), vec![0, 4]);

    use off::query as q;
    let mut a = attr();
    w32(&mut a, q::ATTACH_TYPE, BPF_CGROUP_INET_INGRESS);
    w32(&mut a, q::PROG_CNT, 8);
    w64(&mut a, q::PROG_IDS, 0x1000);
    w64(&mut a, q::PROG_ATTACH_FLAGS, 0x2000);
    let p = Plan::new(BPF_PROG_QUERY, &a, None, &objs).unwrap();
    assert_eq!(fds(&p), vec![0]);
    let b: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len(), b.dir))
        .collect();
    assert_eq!(b, vec![(16, 32, Direction::Out), (32, 32, Direction::Out)]);
    w32(&mut a, q::ATTACH_TYPE, BPF_NETKIT_PEER);
    let p = Plan::new(BPF_PROG_QUERY, &a, None, &objs).unwrap();
    assert!(p.fds.is_empty());
}

#[test]
fn obj_pin_get_and_misc_commands() {
    let objs = Fake::new();
    let mut a = attr();
    w64(&mut a, off::obj::PATHNAME, 0x1000);
    w32(&mut a, off::obj::BPF_FD, 5);
    let p = Plan::new(BPF_OBJ_PIN, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::CString { max: 4096 });
    assert_eq!(p.fds, vec![slot(Parent::Attr, 8, 5)]);
    assert!(!p.returns_fd);
    w32(&mut a, off::obj::FILE_FLAGS, BPF_F_PATH_FD);
    w32(&mut a, off::obj::PATH_FD, 6);
    let p = Plan::new(BPF_OBJ_GET, &a, None, &objs).unwrap();
    assert!(p.returns_fd);
    assert_eq!(p.fds, vec![slot(Parent::Attr, 16, 6)]);

    let mut a = attr();
    w64(&mut a, off::raw_tp::NAME, 0x1000);
    w32(&mut a, off::raw_tp::PROG_FD, 4);
    let p = Plan::new(BPF_RAW_TRACEPOINT_OPEN, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::CString { max: 128 });
    assert_eq!(p.fds, vec![slot(Parent::Attr, 8, 4)]);
    assert!(p.returns_fd);

    let mut a = attr();
    w64(&mut a, off::btf_load::BTF, 0x1000);
    w32(&mut a, off::btf_load::BTF_SIZE, 100);
    w64(&mut a, off::btf_load::BTF_LOG_BUF, 0x2000);
    w32(&mut a, off::btf_load::BTF_LOG_SIZE, 200);
    w32(&mut a, off::btf_load::BTF_FLAGS, BPF_F_TOKEN_FD);
    w32(&mut a, off::btf_load::BTF_TOKEN_FD, 9);
    let p = Plan::new(BPF_BTF_LOAD, &a, None, &objs).unwrap();
    let b: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.alloc_len(), b.dir, b.content))
        .collect();
    assert_eq!(
        b,
        vec![
            (100, Direction::In, Content::Plain),
            (200, Direction::Out, Content::Log)
        ]
    );
    assert_eq!(p.fds, vec![slot(Parent::Attr, 36, 9)]);

    for c in [
        BPF_PROG_GET_FD_BY_ID,
        BPF_MAP_GET_FD_BY_ID,
        BPF_BTF_GET_FD_BY_ID,
        BPF_LINK_GET_FD_BY_ID,
        BPF_ENABLE_STATS,
        BPF_TOKEN_CREATE,
        BPF_ITER_CREATE,
    ] {
        assert!(Plan::new(c, &attr(), None, &objs).unwrap().returns_fd);
    }
    for c in [
        BPF_PROG_GET_NEXT_ID,
        BPF_MAP_GET_NEXT_ID,
        BPF_LINK_DETACH,
        BPF_PROG_BIND_MAP,
        BPF_LINK_UPDATE,
        BPF_PROG_ASSOC_STRUCT_OPS,
    ] {
        assert!(!Plan::new(c, &attr(), None, &objs).unwrap().returns_fd);
    }
    let mut a = attr();
    w32(&mut a, off::get_id::OPEN_FLAGS, BPF_F_TOKEN_FD);
    w32(&mut a, off::get_id::TOKEN_FD, 12);
    let p = Plan::new(BPF_MAP_GET_FD_BY_ID, &a, None, &objs).unwrap();
    assert_eq!(p.fds, vec![slot(Parent::Attr, 12, 12)]);

    let mut a = attr();
    w32(&mut a, off::link_update::LINK_FD, 3);
    w32(&mut a, off::link_update::NEW_PROG_FD, 4);
    w32(&mut a, off::link_update::OLD_PROG_FD, 5);
    assert_eq!(
        Plan::new(BPF_LINK_UPDATE, &a, None, &objs)
            .unwrap()
            .fds
            .len(),
        2
    );
    w32(&mut a, off::link_update::FLAGS, BPF_F_REPLACE);
    assert_eq!(
        Plan::new(BPF_LINK_UPDATE, &a, None, &objs)
            .unwrap()
            .fds
            .len(),
        3
    );

    let mut a = attr();
    w32(&mut a, off::token_create::BPFFS_FD, 3);
    let p = Plan::new(BPF_TOKEN_CREATE, &a, None, &objs).unwrap();
    assert_eq!(p.fds, vec![slot(Parent::Attr, 4, 3)]);

    let mut a = attr();
    w64(&mut a, off::prog_stream_read::STREAM_BUF, 0x1000);
    w32(&mut a, off::prog_stream_read::STREAM_BUF_LEN, 512);
    w32(&mut a, off::prog_stream_read::PROG_FD, 3);
    let p = Plan::new(BPF_PROG_STREAM_READ_BY_FD, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::Bytes(512));
    assert_eq!(p.buffers[0].dir, Direction::Out);
    assert_eq!(p.fds, vec![slot(Parent::Attr, 16, 3)]);

    let mut a = attr();
    w64(&mut a, off::task_fd_query::BUF, 0x1000);
    w32(&mut a, off::task_fd_query::BUF_LEN, 256);
    w32(&mut a, off::task_fd_query::FD, 3);
    let p = Plan::new(BPF_TASK_FD_QUERY, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::Bytes(256));
    assert!(p.fds.is_empty());
}

#[test]
fn map_create_fds() {
    let objs = Fake::new();
    use off::map_create as o;
    let mut a = attr();
    w32(&mut a, o::MAP_TYPE, BPF_MAP_TYPE_HASH_OF_MAPS);
    w32(&mut a, o::INNER_MAP_FD, 5);
    w32(&mut a, o::BTF_FD, 6);
    w32(&mut a, o::BTF_VALUE_TYPE_ID, 3);
    w32(
        &mut a,
        o::MAP_FLAGS,
        BPF_F_TOKEN_FD | BPF_F_VTYPE_BTF_OBJ_FD,
    );
    w32(&mut a, o::VALUE_TYPE_BTF_OBJ_FD, 7);
    w32(&mut a, o::MAP_TOKEN_FD, 8);
    w64(&mut a, o::EXCL_PROG_HASH, 0x1000);
    w32(&mut a, o::EXCL_PROG_HASH_SIZE, 32);
    let p = Plan::new(BPF_MAP_CREATE, &a, None, &objs).unwrap();
    assert!(p.returns_fd);
    let v: Vec<_> = p.fds.iter().map(|s| (s.offset, s.value)).collect();
    assert_eq!(v, vec![(20, 5), (48, 6), (72, 7), (76, 8)]);
    assert_eq!(p.buffers[0].len, Length::Bytes(32));
    // Plain hash without BTF ids or flags: no fd fields at all.
    let mut a = attr();
    w32(&mut a, o::MAP_TYPE, BPF_MAP_TYPE_HASH);
    w32(&mut a, o::INNER_MAP_FD, 5);
    w32(&mut a, o::BTF_FD, 6);
    let p = Plan::new(BPF_MAP_CREATE, &a, None, &objs).unwrap();
    assert!(p.fds.is_empty() && p.buffers.is_empty());
}

#[test]
fn test_run_sizes_and_reply_len() {
    let objs = Fake::new()
        .prog(3, BPF_PROG_TYPE_SCHED_CLS)
        .prog(4, BPF_PROG_TYPE_SYSCALL);
    use off::test_run as o;
    let mut a = attr();
    w32(&mut a, o::PROG_FD, 3);
    w64(&mut a, o::DATA_IN, 0x1000);
    w32(&mut a, o::DATA_SIZE_IN, 100);
    w64(&mut a, o::DATA_OUT, 0x2000);
    w64(&mut a, o::CTX_IN, 0x3000);
    w32(&mut a, o::CTX_SIZE_IN, 20);
    w64(&mut a, o::CTX_OUT, 0x4000);
    w32(&mut a, o::CTX_SIZE_OUT, 24);
    let p = Plan::new(BPF_PROG_TEST_RUN, &a, None, &objs).unwrap();
    let b: Vec<_> = p
        .buffers
        .iter()
        .map(|b| (b.ptr_offset, b.alloc_len(), b.dir))
        .collect();
    assert_eq!(
        b,
        vec![
            (16, 100, Direction::In),
            (24, 100 + (128 << 10), Direction::Out),
            (48, 20, Direction::In),
            (56, 24, Direction::Out),
        ]
    );
    let mut after = a.clone();
    w32(&mut after, o::DATA_SIZE_OUT, 114);
    w32(&mut after, o::CTX_SIZE_OUT, 400);
    assert_eq!(p.reply_len(0, &after), 0);
    assert_eq!(p.reply_len(1, &after), 114);
    assert_eq!(p.reply_len(2, &after), 0);
    assert_eq!(p.reply_len(3, &after), 24);
    assert_eq!(p.reply_len(9, &after), 0);
    // Explicit data_size_out; syscall programs get ctx_in back.
    w32(&mut a, o::DATA_SIZE_OUT, 64);
    w32(&mut a, o::PROG_FD, 4);
    let p = Plan::new(BPF_PROG_TEST_RUN, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[1].alloc_len(), 64);
    assert_eq!(p.buffers[2].dir, Direction::InOut);
    assert_eq!(p.reply_len(2, &after), 20);
}

#[test]
fn common_attrs_and_unknown_commands() {
    let objs = Fake::new();
    let mut c = vec![0u8; off::common::SIZE];
    w64(&mut c, off::common::LOG_BUF, 0x1000);
    w32(&mut c, off::common::LOG_SIZE, 1024);
    w32(&mut c, off::common::LOG_LEVEL, 1);
    let p = Plan::new(BPF_MAP_CREATE | BPF_COMMON_ATTRS, &attr(), Some(&c), &objs).unwrap();
    assert_eq!(p.cmd, BPF_MAP_CREATE);
    assert!(p.common && p.returns_fd);
    assert_eq!(
        p.buffers,
        vec![BufferSpec {
            parent: Parent::Common,
            ptr_offset: 0,
            ptr: 0x1000,
            len: Length::Bytes(1024),
            dir: Direction::Out,
            content: Content::Log,
        }]
    );
    // Flag without bytes: nothing to find.
    let p = Plan::new(BPF_MAP_CREATE | BPF_COMMON_ATTRS, &attr(), None, &objs).unwrap();
    assert!(p.common && p.buffers.is_empty());
    // Common bytes without the flag are ignored.
    let p = Plan::new(BPF_MAP_CREATE, &attr(), Some(&c), &objs).unwrap();
    assert!(p.buffers.is_empty());
    for cmd in [39, 40, 1000, 0xffff, u32::MAX] {
        let mut a = vec![0xffu8; 200];
        a[0] = 1;
        let p = Plan::new(cmd, &a, Some(&c), &objs).unwrap();
        assert!(p.buffers.is_empty() && p.fds.is_empty() && !p.returns_fd);
    }
    assert_eq!(cmd::name(BPF_PROG_LOAD | BPF_COMMON_ATTRS), "BPF_PROG_LOAD");
    assert_eq!(cmd::name(BPF_PROG_RUN), "BPF_PROG_TEST_RUN");
    assert_eq!(cmd::name(77), "BPF_UNKNOWN");
}

#[test]
fn null_pointers_make_no_buffers() {
    let objs = Fake::new()
        .map(5, BPF_MAP_TYPE_HASH, 4, 8)
        .prog(3, BPF_PROG_TYPE_XDP);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    for c in [
        BPF_MAP_LOOKUP_ELEM,
        BPF_MAP_UPDATE_ELEM,
        BPF_MAP_DELETE_ELEM,
        BPF_MAP_GET_NEXT_KEY,
        BPF_MAP_LOOKUP_AND_DELETE_ELEM,
    ] {
        let p = Plan::new(c, &a, None, &objs).unwrap();
        assert!(p.buffers.is_empty());
        assert_eq!(p.fds.len(), 1);
    }
    // Huge counts behind NULL pointers are not an error.
    let mut a = attr();
    w32(&mut a, off::prog_load::INSN_CNT, u32::MAX);
    w32(&mut a, off::prog_load::LOG_SIZE, u32::MAX);
    w32(&mut a, off::prog_load::FUNC_INFO_CNT, u32::MAX);
    w32(&mut a, off::prog_load::FUNC_INFO_REC_SIZE, u32::MAX);
    let p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    assert!(p.buffers.is_empty());
    // Non-NULL pointer, zero length: zero-length buffer (so the kernel sees a valid pointer).
    let mut a = attr();
    w32(&mut a, off::test_run::PROG_FD, 3);
    w64(&mut a, off::test_run::DATA_IN, 0x1000);
    let p = Plan::new(BPF_PROG_TEST_RUN, &a, None, &objs).unwrap();
    assert_eq!(p.buffers[0].len, Length::Bytes(0));
}

#[test]
fn huge_sizes_are_e2big() {
    let objs = Fake {
        cpus: u32::MAX,
        ..Fake::new()
    }
    .map(5, BPF_MAP_TYPE_PERCPU_HASH, u32::MAX, u32::MAX)
    .map(6, BPF_MAP_TYPE_HASH, 4, 1 << 20);
    let mut a = attr();
    w32(&mut a, off::batch::MAP_FD, 5);
    w32(&mut a, off::batch::COUNT, u32::MAX);
    w64(&mut a, off::batch::KEYS, 1);
    w64(&mut a, off::batch::VALUES, 1);
    for c in [
        BPF_MAP_LOOKUP_BATCH,
        BPF_MAP_UPDATE_BATCH,
        BPF_MAP_DELETE_BATCH,
    ] {
        let e = Plan::new(c, &a, None, &objs).unwrap_err();
        assert_eq!(e.errno(), 7, "{c}");
    }
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::VALUE, 1);
    assert_eq!(
        Plan::new(BPF_MAP_LOOKUP_ELEM, &a, None, &objs)
            .unwrap_err()
            .errno(),
        7
    );
    // Single buffer above 256 MiB.
    let mut a = attr();
    w32(&mut a, off::prog_load::INSN_CNT, u32::MAX);
    w64(&mut a, off::prog_load::INSNS, 1);
    assert_eq!(
        Plan::new(BPF_PROG_LOAD, &a, None, &objs)
            .unwrap_err()
            .errno(),
        7
    );
    // Total above 512 MiB: three 200 MiB buffers.
    let mut a = attr();
    let big = 200u32 << 20;
    w32(&mut a, off::prog_load::INSN_CNT, big / 8);
    w64(&mut a, off::prog_load::INSNS, 1);
    w32(&mut a, off::prog_load::LOG_SIZE, big);
    w64(&mut a, off::prog_load::LOG_BUF, 2);
    let p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    assert_eq!(p.buffers.len(), 2);
    w32(&mut a, off::prog_load::FUNC_INFO_CNT, big / 8);
    w32(&mut a, off::prog_load::FUNC_INFO_REC_SIZE, 8);
    w64(&mut a, off::prog_load::FUNC_INFO, 3);
    let e = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap_err();
    assert_eq!(e.errno(), 7);
    // fd_array index from instructions beyond the limit.
    let mut a = attr();
    w32(&mut a, off::prog_load::INSN_CNT, 2);
    w64(&mut a, off::prog_load::INSNS, 1);
    w64(&mut a, off::prog_load::FD_ARRAY, 2);
    let mut p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    let prog = [
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_IDX, 0, -1),
        insn(0, 0, 0, 0, 0),
    ]
    .concat();
    assert_eq!(p.expand(0, &prog, &objs).unwrap_err().errno(), 7);
    // Too many fd slots in an fd_array.
    let mut a = attr();
    w32(
        &mut a,
        off::prog_load::FD_ARRAY_CNT,
        (MAX_FD_SLOTS + 1) as u32,
    );
    w64(&mut a, off::prog_load::FD_ARRAY, 2);
    let mut p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    let zeros = vec![0u8; (MAX_FD_SLOTS + 1) * 4];
    assert_eq!(p.expand(0, &zeros, &objs).unwrap_err().errno(), 7);
    // Out-of-range expand index.
    assert_eq!(p.expand(5, &[], &objs).unwrap_err().errno(), 22);
}

#[test]
fn truncated_attr_fields() {
    let objs = Fake::new().map(5, BPF_MAP_TYPE_HASH, 4, 8);
    let mut a = attr();
    w32(&mut a, off::map_elem::MAP_FD, 5);
    w64(&mut a, off::map_elem::KEY, 0x1000);
    // attr of 12 bytes: key pointer cut in half.
    let e = Plan::new(BPF_MAP_LOOKUP_ELEM, &a[..12], None, &objs).unwrap_err();
    assert_eq!(e, AbiError::Truncated { offset: 8 });
    // attr of 8 bytes: key missing entirely -> NULL.
    let p = Plan::new(BPF_MAP_LOOKUP_ELEM, &a[..8], None, &objs).unwrap();
    assert!(p.buffers.is_empty());
    // attr of 2 bytes: map fd 5 still readable (low bytes), but cut.
    let e = Plan::new(BPF_MAP_FREEZE, &a[..2], None, &objs).unwrap_err();
    assert_eq!(e.errno(), 14);
}

#[test]
fn length_accepts() {
    let cs = Length::CString { max: 4 };
    assert!(cs.accepts(b"ab\0"));
    assert!(cs.accepts(b"\0"));
    assert!(cs.accepts(b"abcd")); // over-long string, max bytes without NUL
    assert!(!cs.accepts(b"ab"));
    assert!(!cs.accepts(b""));
    assert!(!cs.accepts(b"abcd\0"));
    assert!(Length::Bytes(3).accepts(b"abc"));
    assert!(!Length::Bytes(3).accepts(b"ab"));
    assert_eq!(cs.max_len(), 4);
}

#[test]
fn read_write_helpers() {
    let mut b = [0u8; 6];
    write_u32(&mut b, 2, 0xdead_beef);
    assert_eq!(read_u32(&b, 2), 0xdead_beef);
    assert_eq!(read_u32(&b, 4), 0xdead); // partly outside: zero-filled
    assert_eq!(read_u64(&b, 100), 0);
    assert_eq!(read_u64(&b, usize::MAX), 0);
    write_u64(&mut b, 0, u64::MAX); // does not fit: ignored
    write_u32(&mut b, usize::MAX - 1, 1); // overflow: ignored
    assert_eq!(b, [0, 0, 0xef, 0xbe, 0xad, 0xde]);
    assert_eq!(read_i32(&[0xff; 4], 0), -1);
}

#[test]
fn iter_target_names() {
    assert_eq!(
        IterTarget::from_target_name("bpf_map_elem"),
        IterTarget::Map
    );
    assert_eq!(IterTarget::from_target_name("cgroup"), IterTarget::Cgroup);
    assert_eq!(IterTarget::from_target_name("task_vma"), IterTarget::Task);
    assert_eq!(IterTarget::from_target_name("tcp"), IterTarget::NoFds);
}

/// Cross-check the hand-computed offsets with `offset_of!` on `repr(C)` mirrors of the UAPI
/// structs (field lists transcribed from `linux/bpf.h`).
#[test]
fn offsets_match_repr_c_mirrors() {
    use core::mem::{offset_of, size_of};
    #[allow(dead_code)]
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        prog_btf_fd: u32,
        func_info_rec_size: u32,
        func_info: u64,
        func_info_cnt: u32,
        line_info_rec_size: u32,
        line_info: u64,
        line_info_cnt: u32,
        attach_btf_id: u32,
        attach_prog_fd: u32,
        core_relo_cnt: u32,
        fd_array: u64,
        core_relos: u64,
        core_relo_rec_size: u32,
        log_true_size: u32,
        prog_token_fd: i32,
        fd_array_cnt: u32,
        signature: u64,
        signature_size: u32,
        keyring_id: i32,
    }
    use off::prog_load as pl;
    assert_eq!(offset_of!(ProgLoad, insns), pl::INSNS);
    assert_eq!(offset_of!(ProgLoad, license), pl::LICENSE);
    assert_eq!(offset_of!(ProgLoad, log_buf), pl::LOG_BUF);
    assert_eq!(offset_of!(ProgLoad, prog_flags), pl::PROG_FLAGS);
    assert_eq!(offset_of!(ProgLoad, prog_btf_fd), pl::PROG_BTF_FD);
    assert_eq!(offset_of!(ProgLoad, func_info), pl::FUNC_INFO);
    assert_eq!(offset_of!(ProgLoad, line_info), pl::LINE_INFO);
    assert_eq!(offset_of!(ProgLoad, attach_prog_fd), pl::ATTACH_PROG_FD);
    assert_eq!(offset_of!(ProgLoad, fd_array), pl::FD_ARRAY);
    assert_eq!(offset_of!(ProgLoad, core_relos), pl::CORE_RELOS);
    assert_eq!(offset_of!(ProgLoad, prog_token_fd), pl::PROG_TOKEN_FD);
    assert_eq!(offset_of!(ProgLoad, fd_array_cnt), pl::FD_ARRAY_CNT);
    assert_eq!(offset_of!(ProgLoad, signature), pl::SIGNATURE);
    assert_eq!(offset_of!(ProgLoad, keyring_id), pl::KEYRING_ID);
    assert_eq!(size_of::<ProgLoad>(), off::ATTR_SIZE);

    #[allow(dead_code)]
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
        map_ifindex: u32,
        btf_fd: u32,
        btf_key_type_id: u32,
        btf_value_type_id: u32,
        btf_vmlinux_value_type_id: u32,
        map_extra: u64,
        value_type_btf_obj_fd: i32,
        map_token_fd: i32,
        excl_prog_hash: u64,
        excl_prog_hash_size: u32,
    }
    use off::map_create as mc;
    assert_eq!(offset_of!(MapCreate, inner_map_fd), mc::INNER_MAP_FD);
    assert_eq!(offset_of!(MapCreate, btf_fd), mc::BTF_FD);
    assert_eq!(
        offset_of!(MapCreate, btf_vmlinux_value_type_id),
        mc::BTF_VMLINUX_VALUE_TYPE_ID
    );
    assert_eq!(
        offset_of!(MapCreate, value_type_btf_obj_fd),
        mc::VALUE_TYPE_BTF_OBJ_FD
    );
    assert_eq!(offset_of!(MapCreate, map_token_fd), mc::MAP_TOKEN_FD);
    assert_eq!(offset_of!(MapCreate, excl_prog_hash), mc::EXCL_PROG_HASH);
    assert_eq!(
        offset_of!(MapCreate, excl_prog_hash_size),
        mc::EXCL_PROG_HASH_SIZE
    );

    #[allow(dead_code)]
    #[repr(C)]
    struct Test {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
    }
    use off::test_run as tr;
    assert_eq!(offset_of!(Test, data_out), tr::DATA_OUT);
    assert_eq!(offset_of!(Test, ctx_size_in), tr::CTX_SIZE_IN);
    assert_eq!(offset_of!(Test, ctx_in), tr::CTX_IN);
    assert_eq!(offset_of!(Test, ctx_out), tr::CTX_OUT);
    assert_eq!(offset_of!(Test, flags), tr::FLAGS);

    #[allow(dead_code)]
    #[repr(C)]
    struct UprobeMulti {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        path: u64,
        offsets: u64,
        ref_ctr_offsets: u64,
        cookies: u64,
        cnt: u32,
        uflags: u32,
        pid: u32,
        path_fd: u32,
    }
    use off::link_create as lc;
    assert_eq!(offset_of!(UprobeMulti, path), lc::UPROBE_MULTI_PATH);
    assert_eq!(offset_of!(UprobeMulti, cookies), lc::UPROBE_MULTI_COOKIES);
    assert_eq!(offset_of!(UprobeMulti, cnt), lc::UPROBE_MULTI_CNT);
    assert_eq!(offset_of!(UprobeMulti, path_fd), lc::UPROBE_MULTI_PATH_FD);

    #[allow(dead_code)]
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    use off::query as q;
    assert_eq!(offset_of!(Query, prog_ids), q::PROG_IDS);
    assert_eq!(offset_of!(Query, prog_cnt), q::PROG_CNT);
    assert_eq!(offset_of!(Query, prog_attach_flags), q::PROG_ATTACH_FLAGS);
    assert_eq!(offset_of!(Query, link_attach_flags), q::LINK_ATTACH_FLAGS);

    #[allow(dead_code)]
    #[repr(C)]
    struct ProgInfo {
        type_: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
        load_time: u64,
        created_by_uid: u32,
        nr_map_ids: u32,
        map_ids: u64,
        name: [u8; 16],
        ifindex: u32,
        gpl_compatible: u32,
        netns_dev: u64,
        netns_ino: u64,
        nr_jited_ksyms: u32,
        nr_jited_func_lens: u32,
        jited_ksyms: u64,
        jited_func_lens: u64,
        btf_id: u32,
        func_info_rec_size: u32,
        func_info: u64,
        nr_func_info: u32,
        nr_line_info: u32,
        line_info: u64,
        jited_line_info: u64,
        nr_jited_line_info: u32,
        line_info_rec_size: u32,
        jited_line_info_rec_size: u32,
        nr_prog_tags: u32,
        prog_tags: u64,
        run_time_ns: u64,
        run_cnt: u64,
        recursion_misses: u64,
        verified_insns: u32,
        attach_btf_obj_id: u32,
        attach_btf_id: u32,
        pad: u32,
    }
    use off::prog_info as pi;
    assert_eq!(offset_of!(ProgInfo, jited_prog_insns), pi::JITED_PROG_INSNS);
    assert_eq!(offset_of!(ProgInfo, nr_map_ids), pi::NR_MAP_IDS);
    assert_eq!(offset_of!(ProgInfo, map_ids), pi::MAP_IDS);
    assert_eq!(offset_of!(ProgInfo, nr_jited_ksyms), pi::NR_JITED_KSYMS);
    assert_eq!(offset_of!(ProgInfo, jited_func_lens), pi::JITED_FUNC_LENS);
    assert_eq!(
        offset_of!(ProgInfo, func_info_rec_size),
        pi::FUNC_INFO_REC_SIZE
    );
    assert_eq!(offset_of!(ProgInfo, func_info), pi::FUNC_INFO);
    assert_eq!(offset_of!(ProgInfo, line_info), pi::LINE_INFO);
    assert_eq!(offset_of!(ProgInfo, jited_line_info), pi::JITED_LINE_INFO);
    assert_eq!(
        offset_of!(ProgInfo, jited_line_info_rec_size),
        pi::JITED_LINE_INFO_REC_SIZE
    );
    assert_eq!(offset_of!(ProgInfo, nr_prog_tags), pi::NR_PROG_TAGS);
    assert_eq!(offset_of!(ProgInfo, prog_tags), pi::PROG_TAGS);
    assert_eq!(size_of::<ProgInfo>(), pi::SIZE);

    #[allow(dead_code)]
    #[repr(C)]
    struct LinkUprobe {
        type_: u32,
        id: u32,
        prog_id: u32,
        pad: u32,
        path: u64,
        offsets: u64,
        ref_ctr_offsets: u64,
        cookies: u64,
        path_size: u32,
        count: u32,
        flags: u32,
        pid: u32,
    }
    use off::link_info as li;
    assert_eq!(offset_of!(LinkUprobe, path), li::UPROBE_MULTI_PATH);
    assert_eq!(
        offset_of!(LinkUprobe, path_size),
        li::UPROBE_MULTI_PATH_SIZE
    );
    assert_eq!(offset_of!(LinkUprobe, count), li::UPROBE_MULTI_COUNT);
    assert_eq!(size_of::<LinkUprobe>(), li::SIZE);
}

/// xorshift64* generator for the robustness test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
        // Make small values (valid-looking counts and fds) common.
        for chunk in v.chunks_mut(4) {
            match self.below(4) {
                0 => chunk.iter_mut().for_each(|b| *b = 0),
                1 | 2 => {
                    let x = self.below(16) as u8;
                    chunk.iter_mut().for_each(|b| *b = 0);
                    chunk[0] = x;
                }
                _ => {}
            }
        }
        v
    }
}

struct RandomObjects {
    seed: u64,
}

impl Objects for RandomObjects {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        let mut r = Rng((fd as u64 ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        match r.below(8) {
            0 => None,
            1 => Some(ObjectKind::Link),
            2 => Some(ObjectKind::Btf),
            3 => Some(ObjectKind::Other),
            4 | 5 => Some(ObjectKind::Prog {
                prog_type: r.below(40) as u32,
            }),
            _ => Some(ObjectKind::Map(MapMeta {
                map_type: r.below(40) as u32,
                key_size: if r.below(2) == 0 {
                    r.below(64) as u32
                } else {
                    r.next() as u32
                },
                value_size: if r.below(2) == 0 {
                    r.below(64) as u32
                } else {
                    r.next() as u32
                },
                max_entries: r.next() as u32,
                map_flags: r.next() as u32,
            })),
        }
    }
    fn possible_cpus(&self) -> u32 {
        (self.seed % 300) as u32
    }
    fn link_type(&self, fd: i32) -> Option<u32> {
        let v = (fd as u64).wrapping_add(self.seed) % 20;
        (v < 17).then_some(v as u32)
    }
    fn iter_target(&self, prog_fd: i32) -> Option<IterTarget> {
        match (prog_fd as u64 ^ self.seed) % 5 {
            0 => Some(IterTarget::Map),
            1 => Some(IterTarget::Cgroup),
            2 => Some(IterTarget::Task),
            3 => Some(IterTarget::NoFds),
            _ => None,
        }
    }
    fn struct_ops_fd_offsets(&self, map_fd: i32) -> Option<Vec<usize>> {
        match (map_fd as u64 ^ self.seed) % 3 {
            0 => None,
            1 => Some(vec![0, 8, 16, usize::MAX - 2, 1 << 40]),
            _ => Some(Vec::new()),
        }
    }
}

#[test]
fn random_attrs_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..20000u32 {
        let objs = RandomObjects { seed: rng.next() };
        let cmd = round % 42;
        let raw_cmd = if rng.below(4) == 0 {
            cmd | BPF_COMMON_ATTRS
        } else {
            cmd
        };
        let len = match rng.below(4) {
            0 => rng.below(off::ATTR_SIZE as u64 + 40) as usize,
            _ => off::ATTR_SIZE,
        };
        let a = rng.bytes(len);
        let clen = rng.below(32) as usize;
        let c = rng.bytes(clen);
        let common = if rng.below(2) == 0 {
            Some(&c[..])
        } else {
            None
        };
        let Ok(mut plan) = Plan::new(raw_cmd, &a, common, &objs) else {
            continue;
        };
        assert_eq!(plan.cmd, cmd);
        let mut i = 0;
        while i < plan.buffers.len() && i < 64 {
            let b = &plan.buffers[i];
            // Random content of at most 4 KiB (buffers may be planned much larger).
            let n = b.alloc_len().min(4096);
            let n = if rng.below(3) == 0 {
                rng.below(n as u64 + 1) as usize
            } else {
                n
            };
            let content = rng.bytes(n);
            if plan.expand(i, &content, &objs).is_err() {
                break;
            }
            for (j, b) in plan.buffers.iter().enumerate() {
                if let Parent::Buffer(p) = b.parent {
                    assert!(p < j, "parent after child");
                }
                assert!(b.ptr != 0);
                assert!(b.alloc_len() <= MAX_BUFFER_LEN);
            }
            let _ = plan.reply_len(i, &a);
            i += 1;
        }
        assert!(plan.fds.len() <= MAX_FD_SLOTS);
    }
}

#[test]
fn expand_all_helper_roundtrip() {
    // A full host-style walk over a PROG_LOAD plan using `expand_all`.
    let objs = Fake::new();
    let prog = [
        insn(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, 4),
        insn(0, 0, 0, 0, 0),
        insn(0x95, 0, 0, 0, 0),
    ]
    .concat();
    let mut a = attr();
    w32(&mut a, off::prog_load::INSN_CNT, 3);
    w64(&mut a, off::prog_load::INSNS, 0x1000);
    w64(&mut a, off::prog_load::LICENSE, 0x2000);
    let mut mem = HashMap::new();
    mem.insert(0x1000u64, prog);
    mem.insert(0x2000u64, b"GPL\0".to_vec());
    let mut p = Plan::new(BPF_PROG_LOAD, &a, None, &objs).unwrap();
    expand_all(&mut p, &objs, &mem);
    assert_eq!(p.fds.last(), Some(&slot(Parent::Buffer(0), 4, 4)));
    assert!(p.buffers[1].len.accepts(b"GPL\0"));
}

#[test]
fn name_tables_are_unique_and_round_trip() {
    for (table, lookup, canonical) in [
        (
            cmd::NAMES,
            cmd::by_name as fn(&str) -> Option<u32>,
            cmd::short_name as fn(u32) -> Option<&'static str>,
        ),
        (
            crate::prog_type::NAMES,
            crate::prog_type::by_name,
            crate::prog_type::short_name,
        ),
        (
            crate::map_type::NAMES,
            crate::map_type::by_name,
            crate::map_type::short_name,
        ),
        (
            crate::attach_type::NAMES,
            crate::attach_type::by_name,
            crate::attach_type::short_name,
        ),
    ] {
        let mut seen = std::collections::HashSet::new();
        for &(name, value) in table {
            assert!(seen.insert(name), "{name} twice");
            assert_eq!(name, name.to_lowercase());
            assert_eq!(lookup(name), Some(value));
            // The canonical name of the number names the same number.
            assert_eq!(lookup(canonical(value).unwrap()), Some(value));
        }
    }
    assert_eq!(cmd::by_name("prog_load"), Some(cmd::BPF_PROG_LOAD));
    assert_eq!(cmd::short_name(cmd::BPF_PROG_RUN), Some("prog_test_run"));
    assert_eq!(cmd::by_name("common_attrs"), None);
    assert_eq!(
        crate::map_type::short_name(crate::map_type::BPF_MAP_TYPE_CGROUP_STORAGE),
        Some("cgroup_storage")
    );
    assert_eq!(
        crate::attach_type::by_name("perf_event"),
        Some(crate::attach_type::BPF_PERF_EVENT)
    );
    assert_eq!(
        crate::prog_type::by_name("tracepoint"),
        Some(crate::prog_type::BPF_PROG_TYPE_TRACEPOINT)
    );
}
