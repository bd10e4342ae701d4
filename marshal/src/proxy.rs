//! The proxy end of a forwarded `bpf()` call: [`patch`] before the
//! syscall, [`collect`] after it.
//!
//! The proxy never trusts the layout a client might imply: [`patch`]
//! derives the plan from the received attr with the same `telebpf-abi` code
//! the client used, checks that every received buffer has exactly the
//! length the plan gives, allocates its own copies, points the attr (and
//! nested structs) at them, and replaces every fd the session does not own
//! with `-1`, so a client can only ever reach its own objects. [`collect`]
//! puts the client's pointer values and fds back, so the attr it returns
//! differs from the one it received only where the kernel wrote, and takes
//! the buffers the kernel may have written.
//!
//! Between the two the caller makes the system call with
//! [`Patched::attr_mut`] and [`Patched::common_arg`]; nothing here calls
//! the kernel.

use telebpf_abi::cmd::BPF_COMMON_ATTRS;
use telebpf_abi::{
    write_u32, write_u64, AbiError, BufferSpec, Content, Direction, FdSlot, Objects, Parent, Plan,
};
use telebpf_protocol::message::{BpfCall, BpfResult, WireBuffer, FOREIGN_FD, MAX_ATTR};

/// The session's view needed to run a call.
pub trait SessionFds: Objects {
    /// Whether the session owns guest fd `fd`.
    fn owns(&self, fd: i32) -> bool;

    /// Whether the call may create one more guest object (an errno, e.g.
    /// `EMFILE`, if not); asked before a call that returns an fd runs.
    fn may_create(&self) -> Result<(), i32> {
        Ok(())
    }

    /// Charges `bytes` of buffers the reply needs (sizes the client chose:
    /// log sizes, batch counts, info lengths) before they are allocated;
    /// an errno refuses the call.
    fn reserve(&self, bytes: usize) -> Result<(), i32> {
        let _ = bytes;
        Ok(())
    }
}

/// Why a received call does not reach the kernel.
///
/// Some are answers the kernel would have given ([`PatchError::refusal`]:
/// the client gets a failed call with that errno); the others mean the
/// client broke the protocol (the session answers with an error reply).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// `size` is over a page: the kernel refuses such an attr unread.
    #[error("attr of {size} bytes is larger than a page")]
    AttrTooLarge {
        /// The `size` the client sent.
        size: u32,
    },
    /// No plan for the call: the kernel would refuse it the same way.
    #[error("planning the call: {0}")]
    Plan(#[from] AbiError),
    /// The session refused: out of objects or of memory (its errno).
    #[error("the session refuses the call: errno {errno}")]
    Session {
        /// From [`SessionFds::may_create`] or [`SessionFds::reserve`].
        errno: i32,
    },
    /// The attr's length is not the `size` sent with it.
    #[error("attr has {len} bytes but size says {size}")]
    AttrSize {
        /// Bytes received.
        len: usize,
        /// The `size` sent.
        size: u32,
    },
    /// Common attributes without `BPF_COMMON_ATTRS`.
    #[error("common attributes present without BPF_COMMON_ATTRS")]
    CommonWithoutFlag,
    /// Common attributes whose length is not their size (or over a page).
    #[error("common attributes do not match their size")]
    CommonSize,
    /// The plan has a buffer the client did not send.
    #[error("buffer {index} of the plan is missing")]
    MissingBuffer {
        /// Its index in the plan.
        index: usize,
    },
    /// A buffer of the wrong kind or length.
    #[error("buffer {index} does not match the call's plan")]
    BufferMismatch {
        /// Its index in the plan.
        index: usize,
    },
    /// More buffers than the plan has.
    #[error("{sent} buffers sent, the plan has {planned}")]
    BufferCount {
        /// Buffers received.
        sent: usize,
        /// Buffers planned.
        planned: usize,
    },
}

impl PatchError {
    /// The errno of a call refused as the kernel (or the session's limits)
    /// would refuse it; `None` for a protocol violation.
    pub fn refusal(&self) -> Option<i32> {
        match self {
            PatchError::AttrTooLarge { .. } => Some(libc::E2BIG),
            PatchError::Plan(e) => Some(e.errno()),
            PatchError::Session { errno } => Some(*errno),
            _ => None,
        }
    }

    /// The errno the calling program sees: the refusal's, else `EPROTO`.
    pub fn errno(&self) -> i32 {
        self.refusal().unwrap_or(libc::EPROTO)
    }
}

/// A call ready for the kernel: the attrs point at the proxy's own copies
/// of every buffer, fds are the session's or harmless.
///
/// The buffers live (and never move or resize) as long as this value: the
/// pointers in [`Patched::attr_mut`] stay valid until [`collect`].
#[derive(Debug)]
pub struct Patched {
    plan: Plan,
    attr: Vec<u8>,
    common: Option<Vec<u8>>,
    /// Whether the call has a 4th and 5th argument.
    has_common: bool,
    /// For unreadable common attributes: the caller's size.
    common_size: u32,
    buffers: Vec<Vec<u8>>,
    /// The fd slots whose value was replaced, to restore.
    replaced: Vec<FdSlot>,
}

impl Patched {
    /// The proxy's plan of the call (fds in the guest's numbering, the
    /// client's pointer values).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The attr to pass to the kernel (its length is the `size` argument).
    pub fn attr_mut(&mut self) -> &mut [u8] {
        &mut self.attr
    }

    /// The common attributes to pass to the kernel, when readable (the
    /// bytes behind [`Patched::common_arg`]).
    pub fn common_mut(&mut self) -> Option<&mut [u8]> {
        self.common.as_deref_mut()
    }

    /// The 4th and 5th arguments: the common attributes and their size.
    ///
    /// Unreadable common attributes of the caller become an unreadable
    /// pointer with the caller's size, so the kernel decides as it would
    /// have for the caller (address 1 is never mapped).
    pub fn common_arg(&mut self) -> (*mut u8, u32) {
        match self.common.as_mut() {
            Some(c) => (c.as_mut_ptr(), c.len() as u32),
            None if self.has_common => (std::ptr::without_provenance_mut(1), self.common_size),
            None => (std::ptr::null_mut(), 0),
        }
    }

    /// The proxy's buffer whose address is `addr`, as a kernel would find
    /// it through a pointer field (for fake kernels: they find the buffers
    /// the way the real one does, without `unsafe`).
    pub fn buffer_at(&mut self, addr: u64) -> Option<&mut [u8]> {
        self.buffers
            .iter_mut()
            .find(|b| b.as_ptr() as u64 == addr)
            .map(Vec::as_mut_slice)
    }
}

/// Where a pointer or fd field lives, resolved to the bytes that hold it.
fn parent_bytes<'a>(
    parent: &Parent,
    attr: &'a mut [u8],
    common: &'a mut Option<Vec<u8>>,
    buffers: &'a mut [Vec<u8>],
) -> Option<&'a mut [u8]> {
    match parent {
        Parent::Attr => Some(attr),
        Parent::Common => common.as_deref_mut(),
        Parent::Buffer(j) => buffers.get_mut(*j).map(|b| b.as_mut_slice()),
    }
}

/// Receives one buffer, checking it against its spec.
fn accept_buffer(
    index: usize,
    spec: &BufferSpec,
    wire: &WireBuffer,
) -> Result<Vec<u8>, PatchError> {
    let mut buf = match (spec.dir, wire) {
        (Direction::Out, WireBuffer::Out(_)) => vec![0u8; spec.alloc_len()],
        (Direction::Out, WireBuffer::Data(d)) if d.len() == spec.alloc_len() => d.clone(),
        (Direction::In | Direction::InOut, WireBuffer::Data(d)) if spec.len.accepts(d) => d.clone(),
        _ => return Err(PatchError::BufferMismatch { index }),
    };
    // A zero-length buffer still needs a real, non-NULL address so the
    // kernel sees "pointer given, length 0" exactly as the caller wrote.
    buf.reserve(1);
    Ok(buf)
}

/// Checks a received call against the proxy's own plan and prepares it for
/// the kernel. `not_bpf_fd` gives an open fd that is no BPF object, the
/// stand-in for [`FOREIGN_FD`] (asked only when one is named).
pub fn patch(
    call: &BpfCall,
    fds: &dyn SessionFds,
    not_bpf_fd: &dyn Fn() -> i32,
) -> Result<Patched, PatchError> {
    if call.size as usize > MAX_ATTR {
        // The kernel refuses attrs larger than a page before reading them.
        return Err(PatchError::AttrTooLarge { size: call.size });
    }
    if call.attr.len() != call.size as usize {
        return Err(PatchError::AttrSize {
            len: call.attr.len(),
            size: call.size,
        });
    }
    let has_common = call.cmd & BPF_COMMON_ATTRS != 0;
    if !has_common && call.common.is_some() {
        return Err(PatchError::CommonWithoutFlag);
    }
    if call
        .common
        .as_ref()
        .is_some_and(|c| c.len() > MAX_ATTR || c.len() != call.common_size as usize)
    {
        return Err(PatchError::CommonSize);
    }

    let mut attr = call.attr.clone();
    let mut common = call.common.clone();
    let mut plan = Plan::new(call.cmd, &attr, common.as_deref(), fds)?;

    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(call.buffers.len());
    let mut i = 0;
    while i < plan.buffers.len() {
        let spec = &plan.buffers[i];
        let wire = call
            .buffers
            .get(i)
            .ok_or(PatchError::MissingBuffer { index: i })?;
        if matches!(spec.dir, Direction::Out | Direction::InOut) {
            fds.reserve(spec.alloc_len())
                .map_err(|errno| PatchError::Session { errno })?;
        }
        let buf = accept_buffer(i, spec, wire)?;
        if !matches!(spec.dir, Direction::Out) {
            plan.expand(i, &buf, fds)?;
        }
        buffers.push(buf);
        i += 1;
    }
    if call.buffers.len() != plan.buffers.len() {
        return Err(PatchError::BufferCount {
            sent: call.buffers.len(),
            planned: plan.buffers.len(),
        });
    }

    if plan.returns_fd {
        fds.may_create()
            .map_err(|errno| PatchError::Session { errno })?;
    }

    // Only the session's own objects may be named. A host fd that is not a
    // guest object becomes an open fd of ours that is no BPF object (the
    // kernel answers EINVAL, as locally); anything else an fd that cannot
    // exist (EBADF, as for a stale fd).
    let mut replaced = Vec::new();
    for slot in &plan.fds {
        let substitute = match slot.value {
            0 | -1 => continue,
            FOREIGN_FD => not_bpf_fd(),
            v if fds.owns(v) => continue,
            _ => -1,
        };
        if let Some(bytes) = parent_bytes(&slot.parent, &mut attr, &mut common, &mut buffers) {
            write_u32(bytes, slot.offset, substitute as u32);
            replaced.push(*slot);
        }
    }

    // Point every pointer field at our copy. Addresses are taken first: no
    // buffer is resized from here on, so they stay valid for the call.
    let addresses: Vec<u64> = buffers.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
    for (spec, addr) in plan.buffers.iter().zip(&addresses) {
        if let Some(bytes) = parent_bytes(&spec.parent, &mut attr, &mut common, &mut buffers) {
            write_u64(bytes, spec.ptr_offset, *addr);
        }
    }

    Ok(Patched {
        plan,
        attr,
        common,
        has_common,
        common_size: call.common_size,
        buffers,
        replaced,
    })
}

/// What [`collect`] makes of a finished call.
#[derive(Debug)]
pub struct Collected {
    /// The reply, without [`BpfResult::object`] (describing a new fd is the
    /// caller's: it asks the kernel).
    pub result: BpfResult,
    /// The new guest fd a successful fd-returning call made.
    pub new_fd: Option<i32>,
}

/// Takes the reply out of a call the kernel has run: restores the client's
/// pointer values and fds in the attrs, and returns every buffer the kernel
/// may have written, cut to the length it wrote (a log to its text).
/// `outcome` is the syscall's return value or errno.
pub fn collect(patched: Patched, outcome: Result<i64, i32>) -> Collected {
    let Patched {
        plan,
        mut attr,
        mut common,
        mut buffers,
        replaced,
        ..
    } = patched;
    // Restore the client's pointer values and fds.
    for spec in &plan.buffers {
        if let Some(bytes) = parent_bytes(&spec.parent, &mut attr, &mut common, &mut buffers) {
            write_u64(bytes, spec.ptr_offset, spec.ptr);
        }
    }
    for slot in &replaced {
        if let Some(bytes) = parent_bytes(&slot.parent, &mut attr, &mut common, &mut buffers) {
            write_u32(bytes, slot.offset, slot.value as u32);
        }
    }

    let mut out = Vec::new();
    for (i, (spec, mut buf)) in plan.buffers.iter().zip(buffers).enumerate() {
        if matches!(spec.dir, Direction::In) {
            continue;
        }
        buf.truncate(plan.reply_len(i, &attr));
        if matches!(spec.content, Content::Log) {
            // Only the text travels back; the rest of a large log buffer is
            // zeros the kernel did not write.
            if let Some(nul) = buf.iter().position(|&b| b == 0) {
                buf.truncate(nul + 1);
            }
        }
        out.push((i as u32, buf));
    }

    let (ret, errno) = match outcome {
        Ok(v) => (v, 0),
        Err(e) => (-1, e),
    };
    let new_fd = (plan.returns_fd && ret >= 0).then_some(ret as i32);
    Collected {
        result: BpfResult {
            ret,
            errno,
            attr,
            common,
            out,
            object: None,
        },
        new_fd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_protocol_errors_are_told_apart() {
        assert_eq!(
            PatchError::AttrTooLarge { size: 5000 }.refusal(),
            Some(libc::E2BIG)
        );
        assert_eq!(PatchError::Session { errno: 24 }.refusal(), Some(24));
        let e = PatchError::BufferMismatch { index: 3 };
        assert_eq!(e.refusal(), None);
        assert_eq!(e.errno(), libc::EPROTO);
        assert_eq!(e.to_string(), "buffer 3 does not match the call's plan");
        assert_eq!(
            PatchError::BufferCount {
                sent: 2,
                planned: 1
            }
            .to_string(),
            "2 buffers sent, the plan has 1"
        );
    }
}
