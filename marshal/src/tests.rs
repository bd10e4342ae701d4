//! Worked examples of both ends, one call each, with the fakes: what
//! travels, what the kernel sees, what the caller gets back.

use telebpf_abi::cmd::{BPF_MAP_LOOKUP_ELEM, BPF_OBJ_PIN};
use telebpf_abi::memory::Memory;
use telebpf_abi::{off, read_i32, read_u64, write_u32, write_u64, MapMeta, ObjectKind};
use telebpf_protocol::message::{BpfCall, WireBuffer, FOREIGN_FD};

use crate::fake::{Entry, FakeMemory, Table, NOT_BPF_FD};
use crate::{collect, gather, patch, read_attrs, scatter, PatchError};

const ATTR: u64 = 0x10_0000;
const KEY: u64 = 0x20_0000;
const VALUE: u64 = 0x30_0000;
const PATH: u64 = 0x40_0000;

/// Host fds 3 (a hash map, 4-byte keys, 8-byte values) and 9 (open, no
/// guest object).
fn table() -> Table {
    let map = ObjectKind::Map(MapMeta {
        map_type: 1,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        map_flags: 0,
    });
    let entry = |host_fd, kind| Entry {
        host_fd,
        kind,
        link_type: None,
        struct_ops: None,
    };
    Table {
        entries: vec![entry(3, Some(map)), entry(9, None)],
        cpus: 2,
    }
}

/// A lookup of key 7 in host fd 3: its attr, and memory holding the attr,
/// the key and a value buffer of `0xaa`s.
fn lookup_of_key_7() -> (Vec<u8>, FakeMemory) {
    let mut attr = vec![0u8; 32];
    write_u32(&mut attr, off::map_elem::MAP_FD, 3);
    write_u64(&mut attr, off::map_elem::KEY, KEY);
    write_u64(&mut attr, off::map_elem::VALUE, VALUE);
    let mem = FakeMemory::with(&[
        (ATTR, attr.clone()),
        (KEY, vec![7, 0, 0, 0]),
        (VALUE, vec![0xaa; 8]),
    ]);
    (attr, mem)
}

#[test]
fn map_lookup_travels_and_only_the_value_comes_back() {
    let table = table();
    let (attr, mem) = lookup_of_key_7();

    // Host: the key is copied, the small value buffer carries the caller's
    // bytes (what a kernel that does not write leaves), the map fd is the
    // guest's.
    let attrs = read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, ATTR, 32, 0, 0).unwrap();
    let sent = gather(&mem, &table.host(), attrs).unwrap();
    assert_eq!(read_i32(&sent.call.attr, off::map_elem::MAP_FD), 1003);
    assert_eq!(
        sent.call.buffers,
        vec![
            WireBuffer::Data(vec![7, 0, 0, 0]),
            WireBuffer::Data(vec![0xaa; 8])
        ]
    );

    // Proxy: the kernel sees the proxy's own copies.
    let session = table.guest(usize::MAX);
    let mut patched = patch(&sent.call, &session, &|| NOT_BPF_FD).unwrap();
    let value_at = read_u64(patched.attr_mut(), off::map_elem::VALUE);
    assert_ne!(value_at, VALUE);
    let key_at = read_u64(patched.attr_mut(), off::map_elem::KEY);
    assert_eq!(patched.buffer_at(key_at).unwrap(), [7, 0, 0, 0]);
    // The kernel writes the value.
    patched
        .buffer_at(value_at)
        .unwrap()
        .copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let collected = collect(patched, Ok(0));
    assert_eq!(collected.result.attr, sent.call.attr, "pointers restored");
    assert_eq!(
        collected.result.out,
        vec![(1, vec![1, 2, 3, 4, 5, 6, 7, 8])]
    );
    assert_eq!(collected.new_fd, None);

    // Host: only the value is written; the attr keeps the host's fd.
    scatter(&mem, &sent.sent, &collected.result).unwrap();
    assert_eq!(mem.writes(), vec![(VALUE, vec![1, 2, 3, 4, 5, 6, 7, 8])]);
    assert_eq!(mem.read(ATTR, 32).unwrap(), attr);
}

/// An `BPF_OBJ_PIN` of `bpf_fd` as the host sends it.
fn pin(bpf_fd: i32) -> BpfCall {
    let mut attr = vec![0u8; 16];
    write_u64(&mut attr, off::obj::PATHNAME, PATH);
    write_u32(&mut attr, off::obj::BPF_FD, bpf_fd as u32);
    BpfCall {
        cmd: BPF_OBJ_PIN,
        size: 16,
        attr,
        common: None,
        common_size: 0,
        buffers: vec![WireBuffer::Data(b"/sys/fs/bpf/x\0".to_vec())],
    }
}

#[test]
fn host_fds_travel_in_the_guests_numbering() {
    let table = table();
    for (host, guest) in [(3, 1003), (9, FOREIGN_FD), (42, -1)] {
        let mut attr = vec![0u8; 16];
        write_u64(&mut attr, off::obj::PATHNAME, PATH);
        write_u32(&mut attr, off::obj::BPF_FD, host as u32);
        let mem = FakeMemory::with(&[(ATTR, attr), (PATH, b"/sys/fs/bpf/x\0".to_vec())]);
        let attrs = read_attrs(&mem, BPF_OBJ_PIN, ATTR, 16, 0, 0).unwrap();
        let sent = gather(&mem, &table.host(), attrs).unwrap();
        assert_eq!(sent.call, pin(guest), "host fd {host}");
    }
}

#[test]
fn the_kernel_sees_only_the_sessions_fds_and_the_client_gets_its_own_back() {
    let table = table();
    let session = table.guest(usize::MAX);
    // Owned, foreign, not the session's.
    for (sent, kernel) in [(1003, 1003), (FOREIGN_FD, NOT_BPF_FD), (1009, -1)] {
        let call = pin(sent);
        let mut patched = patch(&call, &session, &|| NOT_BPF_FD).unwrap();
        assert_eq!(read_i32(patched.attr_mut(), off::obj::BPF_FD), kernel);
        let collected = collect(patched, Err(9));
        assert_eq!(collected.result.attr, call.attr, "fd {sent} restored");
        assert_eq!((collected.result.ret, collected.result.errno), (-1, 9));
    }
}

#[test]
fn a_call_off_its_plan_is_a_protocol_error_an_impossible_one_a_refusal() {
    let table = table();
    let session = table.guest(usize::MAX);
    let mut call = pin(1003);
    call.buffers = vec![WireBuffer::Out(14)];
    let e = patch(&call, &session, &|| NOT_BPF_FD).unwrap_err();
    assert!(matches!(e, PatchError::BufferMismatch { index: 0 }), "{e}");
    assert_eq!(e.refusal(), None);

    call.buffers.clear();
    let e = patch(&call, &session, &|| NOT_BPF_FD).unwrap_err();
    assert_eq!(e.to_string(), "buffer 0 of the plan is missing");

    let mut call = pin(1003);
    call.size = 5000;
    let e = patch(&call, &session, &|| NOT_BPF_FD).unwrap_err();
    assert_eq!(e.refusal(), Some(7), "E2BIG, as the kernel");

    // The session's limits refuse before anything is allocated.
    let mut attr = vec![0u8; 32];
    write_u32(&mut attr, off::map_elem::MAP_FD, 1003);
    write_u64(&mut attr, off::map_elem::KEY, KEY);
    write_u64(&mut attr, off::map_elem::VALUE, VALUE);
    let call = BpfCall {
        cmd: BPF_MAP_LOOKUP_ELEM,
        size: 32,
        attr,
        common: None,
        common_size: 0,
        buffers: vec![WireBuffer::Data(vec![0; 4]), WireBuffer::Out(8)],
    };
    let tight = table.guest(4);
    let e = patch(&call, &tight, &|| NOT_BPF_FD).unwrap_err();
    assert!(matches!(e, PatchError::Session { errno: 12 }), "{e}");
}

#[test]
fn a_bad_pointer_is_efault_on_either_way() {
    let table = table();
    let mut attr = vec![0u8; 32];
    write_u32(&mut attr, off::map_elem::MAP_FD, 3);
    write_u64(&mut attr, off::map_elem::KEY, 8); // the NULL page
    write_u64(&mut attr, off::map_elem::VALUE, VALUE);
    let mem = FakeMemory::with(&[(ATTR, attr)]);
    assert_eq!(
        read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, 16, 32, 0, 0)
            .unwrap_err()
            .errno(),
        14
    );
    let attrs = read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, ATTR, 32, 0, 0).unwrap();
    let e = gather(&mem, &table.host(), attrs).unwrap_err();
    assert_eq!(e.errno(), 14, "{e}");
}

/// A [`FakeMemory`] that counts the host's reads: single reads, and
/// batches of [`Memory::read_each`] with their ranges.
struct CountingMemory {
    inner: FakeMemory,
    reads: std::cell::Cell<usize>,
    batches: std::cell::RefCell<Vec<Vec<(u64, usize)>>>,
}

impl Memory for CountingMemory {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(addr, len)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32> {
        self.inner.write(addr, data)
    }
    fn read_each(&self, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>, i32>> {
        self.batches.borrow_mut().push(ranges.to_vec());
        ranges.iter().map(|&(a, n)| self.inner.read(a, n)).collect()
    }
}

#[test]
fn a_lookups_key_and_value_are_read_in_one_batch() {
    let table = table();
    let (mut attr, inner) = lookup_of_key_7();
    let mem = CountingMemory {
        inner,
        reads: Default::default(),
        batches: Default::default(),
    };
    let attrs = read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, ATTR, 32, 0, 0).unwrap();
    assert_eq!(mem.reads.get(), 1, "the attr");
    let sent = gather(&mem, &table.host(), attrs).unwrap();
    assert_eq!(mem.reads.get(), 1, "no single read after the attr");
    assert_eq!(*mem.batches.borrow(), vec![vec![(KEY, 4), (VALUE, 8)]]);
    assert_eq!(
        sent.call.buffers,
        vec![
            WireBuffer::Data(vec![7, 0, 0, 0]),
            WireBuffer::Data(vec![0xaa; 8])
        ]
    );

    // Read ahead or not, an unreadable value buffer (below the fake's
    // mapped memory) still travels as its length, and an unreadable key
    // is still the caller's EFAULT.
    write_u64(&mut attr, off::map_elem::VALUE, 8);
    mem.inner.put(ATTR, &attr);
    let attrs = read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, ATTR, 32, 0, 0).unwrap();
    let sent = gather(&mem, &table.host(), attrs).unwrap();
    assert_eq!(sent.call.buffers[1], WireBuffer::Out(8));
    write_u64(&mut attr, off::map_elem::KEY, 16);
    mem.inner.put(ATTR, &attr);
    let attrs = read_attrs(&mem, BPF_MAP_LOOKUP_ELEM, ATTR, 32, 0, 0).unwrap();
    let err = gather(&mem, &table.host(), attrs).unwrap_err();
    assert_eq!(err.errno(), libc::EFAULT);
}
