//! Fakes for driving the real marshalling without a process, a proxy or a
//! kernel: the caller's memory as a byte arena, one session's objects as
//! both sides number them, and a kernel that writes where a command's
//! kernel would.
//!
//! Used by the round-trip property ([`crate::roundtrip`]), its property
//! test and the `bpf_attr` fuzz target (feature `fuzzing`); not part of the
//! normal build.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};

use telebpf_abi::cmd::*;
use telebpf_abi::memory::{Memory, EFAULT};
use telebpf_abi::{
    off, read_i32, read_u64, write_u32, Content, Direction, ObjectKind, Objects, Parent, Plan,
};
use telebpf_protocol::message::FOREIGN_FD;

use crate::host::HostFds;
use crate::proxy::{Patched, SessionFds};

/// Addresses below this (the NULL page) are unmapped: `EFAULT`.
pub const UNMAPPED_BELOW: u64 = 0x1000;

/// Where bytes nobody has read or written yet come from.
#[derive(Clone, Debug)]
pub enum Fill {
    /// The n-th stretch of fresh memory holds `chunks[n % len]`, cut or
    /// padded with zeros to its length (no chunks: zeros).
    Chunks(Vec<Vec<u8>>),
    /// Fresh memory holds the next bytes of this stream, then zeros.
    Stream(Vec<u8>),
    /// Fresh memory holds these runs at their addresses, zeros elsewhere;
    /// what it held is logged ([`FakeMemory::filled`]), so that a
    /// [`Fill::Stream`] of the log fills the same reads the same way.
    Map(BTreeMap<u64, Vec<u8>>),
}

/// The calling program's memory: every address from [`UNMAPPED_BELOW`] up
/// is mapped, and reads the [`Fill`] the first time it is touched, so that
/// whatever pointers an attr holds name memory with content. One read of
/// more than `limit` fresh bytes fails with `EFAULT` and marks the memory
/// as having declined (a 256 MiB buffer is legal, but copying it in every
/// test case is not worth it).
#[derive(Debug)]
pub struct FakeMemory {
    /// Materialised bytes: non-overlapping runs by start address.
    runs: RefCell<BTreeMap<u64, Vec<u8>>>,
    fill: RefCell<(Fill, usize)>,
    limit: usize,
    declined: Cell<Option<usize>>,
    writes: RefCell<Vec<(u64, Vec<u8>)>>,
    filled: RefCell<Vec<u8>>,
}

impl Clone for FakeMemory {
    fn clone(&self) -> FakeMemory {
        FakeMemory {
            runs: RefCell::new(self.runs.borrow().clone()),
            fill: RefCell::new(self.fill.borrow().clone()),
            limit: self.limit,
            declined: Cell::new(self.declined.get()),
            writes: RefCell::new(self.writes.borrow().clone()),
            filled: RefCell::new(self.filled.borrow().clone()),
        }
    }
}

impl FakeMemory {
    /// Memory whose fresh bytes come from `fill`; one read may take at
    /// most `limit` fresh bytes.
    pub fn new(fill: Fill, limit: usize) -> FakeMemory {
        FakeMemory {
            runs: RefCell::default(),
            fill: RefCell::new((fill, 0)),
            limit,
            declined: Cell::new(None),
            writes: RefCell::default(),
            filled: RefCell::default(),
        }
    }

    /// Memory holding `runs` (fresh bytes read as zeros).
    pub fn with(runs: &[(u64, Vec<u8>)]) -> FakeMemory {
        let m = FakeMemory::new(Fill::Chunks(Vec::new()), usize::MAX);
        for (addr, bytes) in runs {
            m.put(*addr, bytes);
        }
        m
    }

    /// Places `bytes` at `addr` (the caller set them up before the call).
    pub fn put(&self, addr: u64, bytes: &[u8]) {
        self.store(addr, bytes);
    }

    /// The bytes at `addr` if all are materialised, without filling.
    pub fn peek(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let runs = self.runs.borrow();
        let mut out = Vec::with_capacity(len);
        let mut at = addr;
        let end = addr.checked_add(len as u64)?;
        while at < end {
            let (start, run) = runs.range(..=at).next_back()?;
            let from = (at - start) as usize;
            if from >= run.len() {
                return None;
            }
            let n = (run.len() - from).min((end - at) as usize);
            out.extend_from_slice(&run[from..from + n]);
            at += n as u64;
        }
        Some(out)
    }

    /// Every write made through [`Memory::write`], in order.
    pub fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        self.writes.borrow().clone()
    }

    /// How many fresh bytes a read asked for when it was declined.
    pub fn declined(&self) -> Option<usize> {
        self.declined.get()
    }

    /// The most fresh bytes one read may take.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What a [`Fill::Map`] filled fresh memory with, in order.
    pub fn filled(&self) -> Vec<u8> {
        self.filled.borrow().clone()
    }

    /// The materialised bytes as maximal contiguous runs, to compare two
    /// memories.
    pub fn contents(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (start, run) in self.runs.borrow().iter() {
            match out.last_mut() {
                Some((s, r)) if *s + r.len() as u64 == *start => r.extend_from_slice(run),
                _ => out.push((*start, run.clone())),
            }
        }
        out
    }

    fn check(addr: u64, len: usize) -> Result<u64, i32> {
        let end = addr.checked_add(len as u64).ok_or(EFAULT)?;
        if addr < UNMAPPED_BELOW {
            return Err(EFAULT);
        }
        Ok(end)
    }

    /// Makes every byte of `[addr, end)` materialised, filling gaps.
    fn materialise(&self, addr: u64, end: u64) -> Result<(), i32> {
        let mut gaps = Vec::new();
        {
            let runs = self.runs.borrow();
            let mut at = addr;
            if let Some((s, r)) = runs.range(..=at).next_back() {
                at = at.max(s + r.len() as u64);
            }
            for (s, r) in runs.range(addr..end) {
                if *s > at {
                    gaps.push((at, *s));
                }
                at = at.max(s + r.len() as u64);
            }
            if at < end {
                gaps.push((at, end));
            }
        }
        let fresh: u64 = gaps.iter().map(|(a, b)| b - a).sum();
        if fresh as usize > self.limit {
            self.declined.set(Some(fresh as usize));
            return Err(EFAULT);
        }
        for (a, b) in gaps {
            let n = (b - a) as usize;
            let bytes = {
                let mut fill = self.fill.borrow_mut();
                let (source, next) = &mut *fill;
                match source {
                    Fill::Chunks(chunks) if !chunks.is_empty() => {
                        let mut c = chunks[*next % chunks.len()].clone();
                        *next += 1;
                        c.resize(n, 0);
                        c
                    }
                    Fill::Chunks(_) => vec![0; n],
                    Fill::Stream(s) => {
                        let from = (*next).min(s.len());
                        let to = (from + n).min(s.len());
                        *next = to;
                        let mut c = s[from..to].to_vec();
                        c.resize(n, 0);
                        c
                    }
                    Fill::Map(map) => {
                        let held = FakeMemory::with(
                            &map.iter().map(|(a, r)| (*a, r.clone())).collect::<Vec<_>>(),
                        );
                        let c: Vec<u8> = (a..b)
                            .map(|at| held.peek(at, 1).map_or(0, |v| v[0]))
                            .collect();
                        self.filled.borrow_mut().extend_from_slice(&c);
                        c
                    }
                }
            };
            self.runs.borrow_mut().insert(a, bytes);
        }
        Ok(())
    }

    /// Stores `bytes` at `addr`, replacing whatever runs overlap.
    fn store(&self, addr: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = addr + bytes.len() as u64;
        let mut runs = self.runs.borrow_mut();
        // Cut the runs that overlap [addr, end) into what lies outside it.
        let overlapping: Vec<u64> = runs
            .range(..end)
            .filter(|(s, r)| *s + r.len() as u64 > addr)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let r = runs.remove(&s).expect("listed");
            if s < addr {
                runs.insert(s, r[..(addr - s) as usize].to_vec());
            }
            let r_end = s + r.len() as u64;
            if r_end > end {
                runs.insert(end, r[(end - s) as usize..].to_vec());
            }
        }
        runs.insert(addr, bytes.to_vec());
    }
}

impl Memory for FakeMemory {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = Self::check(addr, len)?;
        self.materialise(addr, end)?;
        Ok(self.peek(addr, len).expect("materialised"))
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32> {
        if data.is_empty() {
            return Ok(());
        }
        Self::check(addr, data.len())?;
        self.writes.borrow_mut().push((addr, data.to_vec()));
        self.store(addr, data);
        Ok(())
    }
}

/// The fd number the proxy gives the kernel for [`FOREIGN_FD`] (an open
/// fd that is no BPF object).
pub const NOT_BPF_FD: i32 = 900;

/// How far guest fds are from the host fds of the same objects, so that a
/// plan that used an untranslated number would be caught.
pub const GUEST_FD_SHIFT: i32 = 1000;

/// One host fd and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The host fd (the guest fd is this plus [`GUEST_FD_SHIFT`]).
    pub host_fd: i32,
    /// `None`: open on the host but no guest object (a socket, a cgroup):
    /// [`ObjectKind::Other`] on the host, [`FOREIGN_FD`] on the wire.
    pub kind: Option<ObjectKind>,
    /// The link type both sides know for a link.
    pub link_type: Option<u32>,
    /// What [`Objects::struct_ops_fd_offsets`] answers for it.
    pub struct_ops: Option<Vec<usize>>,
}

/// The objects of one session as both sides see them: the host's fd table
/// and the proxy's session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The host fds that are open (the first entry for an fd wins).
    pub entries: Vec<Entry>,
    /// Possible CPUs of the guest.
    pub cpus: u32,
}

impl Table {
    fn by_host(&self, fd: i32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.host_fd == fd)
    }

    fn by_guest(&self, fd: i32) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind.is_some() && e.host_fd.checked_add(GUEST_FD_SHIFT) == Some(fd))
            .filter(|e| self.by_host(e.host_fd) == Some(*e))
    }

    /// The preload's translation rule: 0 stays 0; a guest object's fd
    /// becomes its guest fd; another open fd becomes [`FOREIGN_FD`];
    /// anything else `-1`.
    pub fn to_guest(&self, host_fd: i32) -> i32 {
        if host_fd == 0 {
            return 0;
        }
        match self.by_host(host_fd) {
            Some(Entry { kind: Some(_), .. }) => host_fd.wrapping_add(GUEST_FD_SHIFT),
            Some(Entry { kind: None, .. }) => FOREIGN_FD,
            None => -1,
        }
    }

    /// What the host side knows (its fd table).
    pub fn host(&self) -> View<'_> {
        View {
            table: self,
            guest: false,
            limit: usize::MAX,
            declined: Cell::new(None),
        }
    }

    /// What the proxy's session knows (as `guest-proxy/src/session.rs`
    /// answers); it lets buffers of at most `limit` bytes each be reserved.
    pub fn guest(&self, limit: usize) -> View<'_> {
        View {
            table: self,
            guest: true,
            limit,
            declined: Cell::new(None),
        }
    }
}

/// One side's view of a [`Table`]: the host's fd table ([`HostFds`]) or
/// the proxy's session ([`SessionFds`], with a limit for
/// [`SessionFds::reserve`]).
#[derive(Debug)]
pub struct View<'a> {
    table: &'a Table,
    guest: bool,
    limit: usize,
    declined: Cell<Option<usize>>,
}

impl View<'_> {
    /// How many bytes a reservation asked for when it was refused.
    pub fn declined(&self) -> Option<usize> {
        self.declined.get()
    }

    fn entry(&self, fd: i32) -> Option<&Entry> {
        if self.guest {
            self.table.by_guest(fd)
        } else {
            self.table.by_host(fd)
        }
    }
}

impl Objects for View<'_> {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        if self.guest && fd == FOREIGN_FD {
            return Some(ObjectKind::Other);
        }
        let e = self.entry(fd)?;
        match &e.kind {
            Some(k) => Some(k.clone()),
            None if self.guest => None,
            None => Some(ObjectKind::Other),
        }
    }

    fn possible_cpus(&self) -> u32 {
        self.table.cpus
    }

    fn link_type(&self, fd: i32) -> Option<u32> {
        self.entry(fd)?.link_type
    }

    // `iter_target`: neither the preload nor the proxy knows it (both use
    // the default).

    fn struct_ops_fd_offsets(&self, map_fd: i32) -> Option<Vec<usize>> {
        self.entry(map_fd)?.struct_ops.clone()
    }
}

impl HostFds for View<'_> {
    fn to_guest(&self, host_fd: i32) -> i32 {
        self.table.to_guest(host_fd)
    }
}

impl SessionFds for View<'_> {
    fn owns(&self, fd: i32) -> bool {
        self.guest && self.table.by_guest(fd).is_some()
    }

    fn reserve(&self, bytes: usize) -> Result<(), i32> {
        if bytes > self.limit {
            self.declined.set(Some(bytes));
            return Err(12); // ENOMEM
        }
        Ok(())
    }
}

/// What the [`FakeKernel`] did to a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wrote {
    /// `(offset, bytes)` written into the attr, in order.
    pub attr: Vec<(usize, Vec<u8>)>,
    /// Per buffer of the plan: the `(offset, byte)`s written into it.
    pub buffers: Vec<Vec<(usize, u8)>>,
}

/// A kernel that runs any command on a [`Patched`] call the way the real
/// one would touch it: it finds every buffer through the pointer fields
/// (which must name the proxy's buffers), checks that every fd it is given
/// is the session's own (or `0`, `-1`, [`NOT_BPF_FD`]), writes the
/// command's output fields of the attr and the start and end of every
/// buffer it may write (a log as text), and returns a new fd for a command
/// that returns one. `seed` varies the values; odd seeds make the call fail
/// after writing (as a failing kernel may have written a log).
#[derive(Clone, Copy, Debug)]
pub struct FakeKernel {
    /// Varies what is written and returned.
    pub seed: u32,
}

/// Bytes the [`FakeKernel`] writes at the start of a buffer.
pub const HEAD: usize = 64;
/// Bytes the [`FakeKernel`] writes at the end of a buffer.
pub const TAIL: usize = 16;
/// The guest fd a fd-returning command returns (plus the seed's low bits).
pub const NEW_FD: i64 = 7000;

impl FakeKernel {
    /// The byte the kernel writes at `at` of buffer `index` (never zero).
    pub fn byte(&self, index: usize, at: usize) -> u8 {
        ((self.seed as usize)
            .wrapping_mul(31)
            .wrapping_add(index * 7)
            .wrapping_add(at)
            % 255) as u8
            + 1
    }

    /// The attr output fields of `cmd` (offsets of 32-bit fields).
    fn output_fields(cmd: u32) -> &'static [usize] {
        match cmd {
            BPF_PROG_LOAD => &[off::prog_load::LOG_TRUE_SIZE],
            BPF_BTF_LOAD => &[off::btf_load::BTF_LOG_TRUE_SIZE],
            BPF_PROG_TEST_RUN => &[
                off::test_run::RETVAL,
                off::test_run::DATA_SIZE_OUT,
                off::test_run::CTX_SIZE_OUT,
            ],
            BPF_OBJ_GET_INFO_BY_FD => &[off::info::INFO_LEN],
            BPF_PROG_GET_NEXT_ID | BPF_MAP_GET_NEXT_ID | BPF_BTF_GET_NEXT_ID
            | BPF_LINK_GET_NEXT_ID => &[off::get_id::NEXT_ID],
            BPF_PROG_QUERY => &[off::query::ATTACH_FLAGS, off::query::PROG_CNT],
            BPF_MAP_LOOKUP_BATCH
            | BPF_MAP_LOOKUP_AND_DELETE_BATCH
            | BPF_MAP_UPDATE_BATCH
            | BPF_MAP_DELETE_BATCH => &[off::batch::COUNT],
            BPF_TASK_FD_QUERY => &[off::task_fd_query::BUF_LEN],
            _ => &[],
        }
    }

    /// Runs the call: `Err` describes a broken promise of the proxy
    /// (a pointer that names no buffer of its own, an fd not its session's);
    /// `Ok` holds the syscall's outcome and what was written.
    pub fn run(
        &self,
        call: &mut Patched,
        session: &dyn SessionFds,
    ) -> Result<(Result<i64, i32>, Wrote), String> {
        let plan: Plan = call.plan().clone();
        // Find every buffer as the kernel does: through its pointer field,
        // parents before children.
        let mut addrs: Vec<u64> = Vec::with_capacity(plan.buffers.len());
        for (i, spec) in plan.buffers.iter().enumerate() {
            let parent: Vec<u8> = match spec.parent {
                Parent::Attr => call.attr_mut().to_vec(),
                Parent::Common => call
                    .common_mut()
                    .ok_or(format!(
                        "buffer {i}: in common attributes that are not there"
                    ))?
                    .to_vec(),
                Parent::Buffer(j) => call
                    .buffer_at(addrs[j])
                    .ok_or(format!("buffer {i}: parent {j} is gone"))?
                    .to_vec(),
            };
            let addr = read_u64(&parent, spec.ptr_offset);
            let Some(buf) = call.buffer_at(addr) else {
                return Err(format!(
                    "buffer {i}: pointer {addr:#x} names no buffer of the proxy"
                ));
            };
            if !spec.len.accepts(buf) {
                return Err(format!(
                    "buffer {i}: {} bytes where the plan says {:?}",
                    buf.len(),
                    spec.len
                ));
            }
            addrs.push(addr);
        }
        // Every fd the kernel is given is the session's own or harmless.
        for slot in &plan.fds {
            let value = match slot.parent {
                Parent::Attr => read_i32(call.attr_mut(), slot.offset),
                Parent::Common => match call.common_mut() {
                    Some(c) => read_i32(c, slot.offset),
                    None => continue,
                },
                Parent::Buffer(j) => {
                    read_i32(call.buffer_at(addrs[j]).expect("found above"), slot.offset)
                }
            };
            if !matches!(value, 0 | -1 | NOT_BPF_FD) && !session.owns(value) {
                return Err(format!("fd slot {slot:?} gives the kernel fd {value}"));
            }
        }
        let mut wrote = Wrote {
            attr: Vec::new(),
            buffers: vec![Vec::new(); plan.buffers.len()],
        };
        let taken = taken(&plan);
        // Output fields, unless the plan has a pointer or fd there (the
        // kernel never writes those back changed) or the caller's attr is
        // too short.
        for (k, &at) in Self::output_fields(plan.cmd).iter().enumerate() {
            let attr = call.attr_mut();
            if at + 4 > attr.len() || (at..at + 4).any(|b| taken.contains(&(Parent::Attr, b))) {
                continue;
            }
            let v = self.seed.rotate_left(k as u32 * 5) % 0x2_0000;
            write_u32(attr, at, v);
            wrote.attr.push((at, v.to_le_bytes().to_vec()));
        }
        for (i, spec) in plan.buffers.iter().enumerate() {
            if spec.dir == Direction::In {
                continue;
            }
            let buf = call.buffer_at(addrs[i]).expect("found above");
            let n = buf.len();
            let head = n.min(HEAD);
            let positions: Vec<usize> = if spec.content == Content::Log {
                (0..head).collect()
            } else {
                (0..head)
                    .chain(n.saturating_sub(TAIL).max(head)..n)
                    .collect()
            };
            for at in positions {
                if taken.contains(&(Parent::Buffer(i), at)) {
                    continue;
                }
                // A log is text: its last written byte is the NUL.
                let b = if spec.content == Content::Log && at + 1 == head {
                    0
                } else {
                    self.byte(i, at)
                };
                buf[at] = b;
                wrote.buffers[i].push((at, b));
            }
        }
        let outcome = if self.seed % 2 == 1 {
            Err(22) // EINVAL
        } else if plan.returns_fd {
            Ok(NEW_FD + i64::from(self.seed % 64))
        } else {
            Ok(0)
        };
        Ok((outcome, wrote))
    }
}

/// The bytes (parent, offset) that belong to a pointer field or an fd slot
/// of the plan: the kernel hands those back as it found them.
fn taken(plan: &Plan) -> HashSet<(Parent, usize)> {
    let fds = plan.fds.iter().map(|s| (s.parent, s.offset, 4));
    let pointers = plan.buffers.iter().map(|b| (b.parent, b.ptr_offset, 8));
    fds.chain(pointers)
        .flat_map(|(parent, at, n)| (at..at.saturating_add(n)).map(move |b| (parent, b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fills_fresh_bytes_once_and_keeps_writes() {
        let m = FakeMemory::new(Fill::Chunks(vec![vec![1, 2, 3]]), 100);
        assert_eq!(m.read(0x2000, 4).unwrap(), vec![1, 2, 3, 0]);
        // The same bytes again, not a new fill.
        assert_eq!(m.read(0x2001, 2).unwrap(), vec![2, 3]);
        m.write(0x2002, &[9, 9, 9]).unwrap();
        assert_eq!(m.read(0x2000, 6).unwrap(), vec![1, 2, 9, 9, 9, 1]);
        assert_eq!(m.contents(), vec![(0x2000, vec![1, 2, 9, 9, 9, 1])]);
        assert_eq!(m.read(8, 1), Err(EFAULT));
        assert_eq!(m.write(u64::MAX, &[1]), Err(EFAULT));
        assert_eq!(m.read(0x9000, 200), Err(EFAULT));
        assert_eq!(m.declined(), Some(200));
    }
}
