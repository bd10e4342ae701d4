//! The host end of a forwarded `bpf()` call: [`gather`] before it is sent,
//! [`scatter`] after the reply.
//!
//! Everything here goes through the caller's [`Memory`] and the host's fd
//! table ([`HostFds`]), never through a system call, so the same code serves
//! the preload (its own process), a supervisor (another process) and the
//! tests (a byte arena).
//!
//! 1. [`read_attrs`]: read the attr (and the common attributes) from the
//!    caller's memory, `EFAULT` as the kernel would;
//! 2. [`gather`]: derive the plan with `telebpf-abi` (the proxy derives the
//!    same one itself), copy every `In`/`InOut` buffer out of the caller's
//!    memory, expanding nested ones (info structs, instructions) as their
//!    content arrives, and write every fd slot in the guest's numbering into
//!    the copies that are sent: ours → the guest fd, `0` stays `0`, an open
//!    fd that is no guest object → [`FOREIGN_FD`], anything else → `-1` (the
//!    guest kernel then answers as it would for such an fd);
//! 3. [`scatter`]: after the call, write back only the attr bytes the kernel
//!    changed (pointer and fd fields come back as sent, so they never
//!    differ) and every buffer the reply carries, at most as long as the
//!    plan allows.

use telebpf_abi::cmd::BPF_COMMON_ATTRS;
use telebpf_abi::memory::Memory;
use telebpf_abi::{write_u32, AbiError, Content, Direction, Length, Objects, Parent, Plan};
use telebpf_protocol::message::{BpfCall, BpfResult, WireBuffer, MAX_ATTR, PREFILL_MAX};

#[cfg(doc)]
use telebpf_protocol::message::FOREIGN_FD;

/// The host's fd table, as the marshalling needs it: what each fd is (for
/// the plan) and its number in the guest.
pub trait HostFds: Objects {
    /// Host fd `host_fd` (never `0`) in the guest's numbering: the guest fd
    /// of our object, [`FOREIGN_FD`] for an fd that is open but no guest
    /// object, else `-1`.
    fn to_guest(&self, host_fd: i32) -> i32;
}

/// Why a call was not sent; [`GatherError::errno`] is what the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// `size` is over a page: the kernel refuses such an attr unread.
    #[error("attr of {size} bytes is larger than a page")]
    AttrTooLarge {
        /// The `size` argument.
        size: u32,
    },
    /// The attr could not be read from the caller's memory.
    #[error("reading the attr: errno {errno}")]
    Attr {
        /// From [`Memory::read`] (`EFAULT`).
        errno: i32,
    },
    /// No plan for the call: the kernel would refuse it the same way.
    #[error("planning the call: {0}")]
    Plan(#[from] AbiError),
    /// An `In`/`InOut` buffer could not be read from the caller's memory.
    #[error("reading buffer {index}: errno {errno}")]
    Buffer {
        /// Its index in the plan.
        index: usize,
        /// From [`Memory::read`] (`EFAULT`).
        errno: i32,
    },
}

impl GatherError {
    /// The errno the calling program sees.
    pub fn errno(&self) -> i32 {
        match self {
            GatherError::AttrTooLarge { .. } => libc::E2BIG,
            GatherError::Attr { errno } | GatherError::Buffer { errno, .. } => *errno,
            GatherError::Plan(e) => e.errno(),
        }
    }
}

/// Why the reply could not be written back; [`ScatterError::errno`] is
/// what the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum ScatterError {
    /// The reply's attr (or common attributes) has another length than
    /// what was sent: the proxy broke the protocol.
    #[error("the reply's {what} has {got} bytes, {sent} were sent")]
    Length {
        /// `"attr"` or `"common attributes"`.
        what: &'static str,
        /// Bytes sent.
        sent: usize,
        /// Bytes received.
        got: usize,
    },
    /// The reply carries a buffer the plan has not, an `In` buffer, or one
    /// longer than the plan allows: the proxy broke the protocol.
    #[error("the reply's buffer {index} does not fit the plan")]
    Buffer {
        /// The index the reply gave.
        index: u32,
    },
    /// The caller's memory is not writable where the kernel wrote.
    #[error("writing to the caller's memory: errno {errno}")]
    Fault {
        /// From [`Memory::write`] (`EFAULT`).
        errno: i32,
    },
}

impl ScatterError {
    /// The errno the calling program sees.
    pub fn errno(&self) -> i32 {
        match self {
            ScatterError::Length { .. } | ScatterError::Buffer { .. } => libc::EPROTO,
            ScatterError::Fault { errno } => *errno,
        }
    }
}

/// The raw arguments of an intercepted call with the attrs read from the
/// caller's memory ([`read_attrs`]).
#[derive(Clone, Debug)]
pub struct Attrs {
    raw_cmd: u32,
    size: u32,
    attr_addr: u64,
    attr: Vec<u8>,
    common_addr: u64,
    /// `None`: no `BPF_COMMON_ATTRS`, or unreadable.
    common: Option<Vec<u8>>,
    /// 0 without `BPF_COMMON_ATTRS`.
    common_size: u32,
}

impl Attrs {
    /// The attr as the caller wrote it.
    pub fn attr(&self) -> &[u8] {
        &self.attr
    }

    /// The common attributes as the caller wrote them (`None`: none, or
    /// unreadable).
    pub fn common(&self) -> Option<&[u8]> {
        self.common.as_deref()
    }
}

/// Reads the attr of `bpf(raw_cmd, attr_addr, size, common_addr,
/// common_size)` from the caller's memory.
///
/// Unreadable common attributes are the guest kernel's to judge (one
/// without them ignores them): they travel as `None`.
pub fn read_attrs(
    mem: &dyn Memory,
    raw_cmd: u32,
    attr_addr: u64,
    size: u32,
    common_addr: u64,
    common_size: u32,
) -> Result<Attrs, GatherError> {
    if size as usize > MAX_ATTR {
        return Err(GatherError::AttrTooLarge { size });
    }
    let has_common = raw_cmd & BPF_COMMON_ATTRS != 0;
    let attr = mem
        .read(attr_addr, size as usize)
        .map_err(|errno| GatherError::Attr { errno })?;
    let common = if has_common && common_size as usize <= MAX_ATTR {
        mem.read(common_addr, common_size as usize).ok()
    } else {
        None
    };
    Ok(Attrs {
        raw_cmd,
        size,
        attr_addr,
        attr,
        common_addr,
        common,
        common_size: if has_common { common_size } else { 0 },
    })
}

/// A gathered call: what is sent, and what [`scatter`] needs afterwards.
#[derive(Debug)]
pub struct Gathered {
    /// The request to send.
    pub call: BpfCall,
    /// Kept for the reply.
    pub sent: Sent,
}

/// What [`scatter`] needs of a sent call: the host's plan (with the
/// caller's pointer values and host fds), and the attrs as sent, to tell
/// which bytes the kernel changed.
#[derive(Clone, Debug)]
pub struct Sent {
    plan: Plan,
    attr_addr: u64,
    attr: Vec<u8>,
    common_addr: u64,
    common: Option<Vec<u8>>,
}

impl Sent {
    /// The host's plan of the call.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the call returns a new fd (a guest fd, on success).
    pub fn returns_fd(&self) -> bool {
        self.plan.returns_fd
    }
}

/// Plans the call and copies out of the caller's memory what the proxy
/// needs: the attrs with fds in the guest's numbering, and one
/// [`WireBuffer`] per buffer of the plan, in plan order.
pub fn gather(mem: &dyn Memory, fds: &dyn HostFds, attrs: Attrs) -> Result<Gathered, GatherError> {
    let Attrs {
        raw_cmd,
        size,
        attr_addr,
        mut attr,
        common_addr,
        mut common,
        common_size,
    } = attrs;
    let mut plan = Plan::new(raw_cmd, &attr, common.as_deref(), fds)?;
    let mut buffers: Vec<WireBuffer> = Vec::with_capacity(plan.buffers.len());
    // The byte buffers the plan names before any expansion, read in one
    // go (a lookup's key and value: one system call, not two). Reads have
    // no effect, so reading ahead changes no outcome; a buffer whose
    // range an expansion changed is read again.
    let mut ahead: Vec<Option<ReadAhead>> = {
        let ranges: Vec<Option<(u64, usize)>> = plan
            .buffers
            .iter()
            .map(|spec| match spec.len {
                Length::Bytes(n) if reads_bytes(spec, n) => Some((spec.ptr, n)),
                _ => None,
            })
            .collect();
        let wanted: Vec<(u64, usize)> = ranges.iter().flatten().copied().collect();
        let mut got = mem.read_each(&wanted).into_iter();
        ranges
            .into_iter()
            .map(|r| r.and_then(|range| Some((range, got.next()?))))
            .collect()
    };
    // Expanding a buffer appends the buffers nested in it: the plan grows
    // while it is walked.
    let mut i = 0;
    while i < plan.buffers.len() {
        let spec = &plan.buffers[i];
        let read_in = |errno| GatherError::Buffer { index: i, errno };
        let mut read = |n: usize| match ahead.get_mut(i).and_then(Option::take) {
            Some((range, r)) if range == (spec.ptr, n) => r,
            _ => mem.read(spec.ptr, n),
        };
        let wire = match (&spec.len, &spec.dir) {
            (Length::Bytes(n), Direction::Out) if reads_bytes(spec, *n) => match read(*n) {
                Ok(current) => WireBuffer::Data(current),
                // The kernel may never write there (a failing lookup):
                // let it decide, and fault on write-back.
                Err(_) => WireBuffer::Out(*n as u64),
            },
            (Length::Bytes(n), Direction::Out) => WireBuffer::Out(*n as u64),
            (Length::Bytes(n), _) => WireBuffer::Data(read(*n).map_err(read_in)?),
            (Length::CString { max }, _) => {
                WireBuffer::Data(mem.read_cstr(spec.ptr, *max).map_err(read_in)?)
            }
        };
        // Out buffers may carry the caller's current bytes; they hold
        // nothing to expand.
        if let (WireBuffer::Data(content), false) = (&wire, spec.dir == Direction::Out) {
            plan.expand(i, content, fds)?;
        }
        buffers.push(wire);
        i += 1;
    }
    // Translate fds into the guest's numbering, in the copies we send.
    for slot in &plan.fds {
        let guest = match slot.value {
            0 => 0,
            v => fds.to_guest(v),
        };
        let bytes: Option<&mut [u8]> = match slot.parent {
            Parent::Attr => Some(&mut attr),
            Parent::Common => common.as_deref_mut(),
            Parent::Buffer(j) => match buffers.get_mut(j) {
                Some(WireBuffer::Data(d)) => Some(d),
                _ => None,
            },
        };
        if let Some(bytes) = bytes {
            write_u32(bytes, slot.offset, guest as u32);
        }
    }
    let sent = Sent {
        plan,
        attr_addr,
        attr: attr.clone(),
        common_addr,
        common: common.clone(),
    };
    let call = BpfCall {
        cmd: raw_cmd,
        size,
        attr,
        common,
        common_size,
        buffers,
    };
    Ok(Gathered { call, sent })
}

/// A buffer [`gather`] read ahead: the range `(ptr, len)` it read, and
/// what the read gave.
type ReadAhead = ((u64, usize), Result<Vec<u8>, i32>);

/// Whether [`gather`] reads a buffer of `n` bytes from the caller: every
/// `In`/`InOut` buffer, and an `Out` buffer small enough to carry the
/// caller's current bytes (not a log: the kernel writes it from the start).
fn reads_bytes(spec: &telebpf_abi::BufferSpec, n: usize) -> bool {
    spec.dir != Direction::Out || (n <= PREFILL_MAX && spec.content != Content::Log)
}

/// Writes back what the kernel wrote: attr bytes that differ from what was
/// sent, and every returned buffer, at most as long as the plan says.
///
/// Called whatever the call returned: a failing kernel may have written
/// (a log, a count). The first error stops the write-back.
pub fn scatter(mem: &dyn Memory, sent: &Sent, result: &BpfResult) -> Result<(), ScatterError> {
    write_changed(mem, "attr", sent.attr_addr, &sent.attr, &result.attr)?;
    if let (Some(before), Some(after)) = (sent.common.as_deref(), result.common.as_deref()) {
        write_changed(mem, "common attributes", sent.common_addr, before, after)?;
    }
    for (index, content) in &result.out {
        let Some(spec) = sent.plan.buffers.get(*index as usize) else {
            return Err(ScatterError::Buffer { index: *index });
        };
        if content.len() > spec.alloc_len() || matches!(spec.dir, Direction::In) {
            return Err(ScatterError::Buffer { index: *index });
        }
        mem.write(spec.ptr, content)
            .map_err(|errno| ScatterError::Fault { errno })?;
    }
    Ok(())
}

/// The runs `[start, end)` where `a` and `b` (of one length) differ: what
/// is written back of an attr, and what a two-way map sync exchanges.
pub fn changed_runs(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let len = a.len().min(b.len());
    let mut runs = Vec::new();
    let mut i = 0;
    while i < len {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < len && a[i] != b[i] {
            i += 1;
        }
        runs.push((start, i));
    }
    runs
}

/// Writes the runs of `got` that differ from `sent` to `addr`.
fn write_changed(
    mem: &dyn Memory,
    what: &'static str,
    addr: u64,
    sent: &[u8],
    got: &[u8],
) -> Result<(), ScatterError> {
    if got.len() != sent.len() {
        return Err(ScatterError::Length {
            what,
            sent: sent.len(),
            got: got.len(),
        });
    }
    for (start, end) in changed_runs(sent, got) {
        mem.write(addr + start as u64, &got[start..end])
            .map_err(|errno| ScatterError::Fault { errno })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMemory;

    #[test]
    fn only_changed_runs_are_written() {
        let mem = FakeMemory::with(&[(0x1000, vec![0u8, 1, 2, 3, 4, 5])]);
        let sent = [0u8, 1, 2, 3, 4, 5];
        let got = [0u8, 9, 9, 3, 4, 7];
        write_changed(&mem, "attr", 0x1000, &sent, &got).unwrap();
        assert_eq!(mem.peek(0x1000, 6).unwrap(), got);
        assert_eq!(
            mem.writes(),
            vec![(0x1001, vec![9, 9]), (0x1005, vec![7])],
            "unchanged bytes are not written"
        );
        assert!(matches!(
            write_changed(&mem, "attr", 0x1000, &sent, &got[..3]),
            Err(ScatterError::Length { .. })
        ));
    }

    #[test]
    fn errors_render_and_map_to_errno() {
        let e = GatherError::AttrTooLarge { size: 5000 };
        assert_eq!(e.errno(), libc::E2BIG);
        assert_eq!(e.to_string(), "attr of 5000 bytes is larger than a page");
        let e = GatherError::Buffer {
            index: 2,
            errno: libc::EFAULT,
        };
        assert_eq!(e.errno(), libc::EFAULT);
        assert_eq!(e.to_string(), "reading buffer 2: errno 14");
        let e = ScatterError::Buffer { index: 7 };
        assert_eq!(e.errno(), libc::EPROTO);
        assert_eq!(e.to_string(), "the reply's buffer 7 does not fit the plan");
        assert_eq!(ScatterError::Fault { errno: 14 }.errno(), libc::EFAULT);
    }
}
