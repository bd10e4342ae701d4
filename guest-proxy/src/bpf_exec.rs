//! Turns a forwarded [`BpfCall`] into a checked `bpf()` syscall.
//!
//! The proxy never trusts the layout a client might imply: it derives the
//! plan from the received attr with the same `telebpf-abi` code the client
//! used, checks that every received buffer has exactly the length the plan
//! gives, allocates its own copies, points the attr (and nested structs) at
//! them, and replaces every fd the session does not own with `-1`, so a
//! client can only ever reach its own objects. After the call it puts the
//! client's pointer values and fds back, so the attr it returns differs from
//! the one it received only where the kernel wrote.

use telebpf_abi::{
    cmd, write_u32, write_u64, BufferSpec, Content, Direction, Objects, Parent, Plan,
};
use telebpf_protocol::message::{
    BpfCall, BpfResult, ErrorReply, NewObject, WireBuffer, FOREIGN_FD, MAX_ATTR,
};

use crate::kernel::Kernel;
use crate::sys;

/// Result of executing a call.
#[derive(Debug)]
pub struct Outcome {
    /// What goes back to the client.
    pub result: BpfResult,
    /// A new guest fd the session must now own.
    pub new_fd: Option<i32>,
}

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

fn protocol_error(message: String) -> ErrorReply {
    ErrorReply {
        errno: libc::EPROTO,
        message,
    }
}

/// The reply to a call refused with `errno` before (or instead of)
/// reaching the kernel: the attr as it came, no output.
pub fn failed_call(call: &BpfCall, errno: i32) -> BpfResult {
    BpfResult {
        ret: -1,
        errno,
        attr: call.attr.clone(),
        common: call.common.clone(),
        out: Vec::new(),
        object: None,
    }
}

fn failed(call: &BpfCall, errno: i32) -> Outcome {
    Outcome {
        result: failed_call(call, errno),
        new_fd: None,
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
) -> Result<Vec<u8>, ErrorReply> {
    let mut buf = match (spec.dir, wire) {
        (Direction::Out, WireBuffer::Out(_)) => vec![0u8; spec.alloc_len()],
        (Direction::Out, WireBuffer::Data(d)) if d.len() == spec.alloc_len() => d.clone(),
        (Direction::In | Direction::InOut, WireBuffer::Data(d)) if spec.len.accepts(d) => d.clone(),
        _ => {
            return Err(protocol_error(format!(
                "buffer {index} does not match the call's plan"
            )))
        }
    };
    // A zero-length buffer still needs a real, non-NULL address so the
    // kernel sees "pointer given, length 0" exactly as the caller wrote.
    buf.reserve(1);
    Ok(buf)
}

/// Executes `call` for a session, in `kernel`.
pub fn execute(
    call: &BpfCall,
    fds: &dyn SessionFds,
    kernel: &dyn Kernel,
) -> Result<Outcome, ErrorReply> {
    if call.size as usize > MAX_ATTR {
        // The kernel refuses attrs larger than a page before reading them.
        return Ok(failed(call, libc::E2BIG));
    }
    if call.attr.len() != call.size as usize {
        return Err(protocol_error(format!(
            "attr has {} bytes but size says {}",
            call.attr.len(),
            call.size
        )));
    }
    let has_common = call.cmd & cmd::BPF_COMMON_ATTRS != 0;
    if !has_common && call.common.is_some() {
        return Err(protocol_error(
            "common attributes present without BPF_COMMON_ATTRS".into(),
        ));
    }
    if call
        .common
        .as_ref()
        .is_some_and(|c| c.len() > MAX_ATTR || c.len() != call.common_size as usize)
    {
        return Err(protocol_error(
            "common attributes do not match their size".into(),
        ));
    }

    let mut attr = call.attr.clone();
    let mut common = call.common.clone();
    let mut plan = match Plan::new(call.cmd, &attr, common.as_deref(), fds) {
        Ok(p) => p,
        Err(e) => return Ok(failed(call, e.errno())),
    };

    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(call.buffers.len());
    let mut i = 0;
    while i < plan.buffers.len() {
        let spec = &plan.buffers[i];
        let wire = call
            .buffers
            .get(i)
            .ok_or_else(|| protocol_error(format!("buffer {i} of the plan is missing")))?;
        if matches!(spec.dir, Direction::Out | Direction::InOut) {
            if let Err(errno) = fds.reserve(spec.alloc_len()) {
                return Ok(failed(call, errno));
            }
        }
        let buf = accept_buffer(i, spec, wire)?;
        let known = !matches!(spec.dir, Direction::Out);
        if known {
            if let Err(e) = plan.expand(i, &buf, fds) {
                return Ok(failed(call, e.errno()));
            }
        }
        buffers.push(buf);
        i += 1;
    }
    if call.buffers.len() != plan.buffers.len() {
        return Err(protocol_error(format!(
            "{} buffers sent, the plan has {}",
            call.buffers.len(),
            plan.buffers.len()
        )));
    }

    if plan.returns_fd {
        if let Err(errno) = fds.may_create() {
            return Ok(failed(call, errno));
        }
    }

    // Only the session's own objects may be named. A host fd that is not a
    // guest object becomes an open fd of ours that is no BPF object (the
    // kernel answers EINVAL, as locally); anything else an fd that cannot
    // exist (EBADF, as for a stale fd).
    let mut replaced = Vec::new();
    for slot in &plan.fds {
        let substitute = match slot.value {
            0 | -1 => continue,
            FOREIGN_FD => sys::not_bpf_fd(),
            v if fds.owns(v) => continue,
            _ => -1,
        };
        if let Some(bytes) = parent_bytes(&slot.parent, &mut attr, &mut common, &mut buffers) {
            write_u32(bytes, slot.offset, substitute as u32);
            replaced.push(slot);
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

    let (common_ptr, common_len) = match common.as_mut() {
        Some(c) => (c.as_mut_ptr(), c.len() as u32),
        // The caller's common attributes were unreadable: hand the kernel an
        // unreadable pointer with the caller's size, so it decides as it
        // would have for the caller (address 1 is never mapped).
        None if has_common => (std::ptr::without_provenance_mut(1), call.common_size),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: `attr` is `attr.len()` bytes; every pointer field the plan
    // knows was set to one of `buffers`, each allocated with exactly the
    // length the plan gives for it (the same length the kernel derives from
    // the attr), and none is moved or freed before the call returns.
    let outcome = unsafe {
        kernel.bpf(
            call.cmd,
            attr.as_mut_ptr(),
            attr.len() as u32,
            common_ptr,
            common_len,
        )
    };

    // Restore the client's pointer values and fds.
    for spec in &plan.buffers {
        if let Some(bytes) = parent_bytes(&spec.parent, &mut attr, &mut common, &mut buffers) {
            write_u64(bytes, spec.ptr_offset, spec.ptr);
        }
    }
    for slot in replaced {
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
    let object = new_fd.map(|fd| describe_in(fd, kernel));
    Ok(Outcome {
        result: BpfResult {
            ret,
            errno,
            attr,
            common,
            out,
            object,
        },
        new_fd,
    })
}

/// Says what a guest fd stands for, as the client needs to plan later
/// calls and to answer `readlink("/proc/self/fd/N")`: a guest fd of the
/// machine's own kernel (see [`describe_in`]).
pub fn describe(fd: i32) -> NewObject {
    describe_in(fd, &crate::kernel::RealKernel)
}

/// Says what fd `fd` of `kernel` stands for (see [`describe`]).
pub fn describe_in(fd: i32, kernel: &dyn Kernel) -> NewObject {
    use telebpf_abi::{MapMeta, ObjectKind};
    let link = kernel.fd_link(fd).unwrap_or_default();
    let kind = match link.as_str() {
        "anon_inode:bpf-map" => {
            let mut info = [0u8; 88];
            match kernel.object_info(fd, &mut info) {
                Ok(_) => {
                    let u = |o: usize| {
                        u32::from_le_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]])
                    };
                    ObjectKind::Map(MapMeta {
                        map_type: u(0),
                        key_size: u(8),
                        value_size: u(12),
                        max_entries: u(16),
                        map_flags: u(20),
                    })
                }
                Err(_) => ObjectKind::Other,
            }
        }
        "anon_inode:bpf-prog" => {
            let mut info = [0u8; 8];
            match kernel.object_info(fd, &mut info) {
                Ok(_) => ObjectKind::Prog {
                    prog_type: u32::from_le_bytes([info[0], info[1], info[2], info[3]]),
                },
                Err(_) => ObjectKind::Other,
            }
        }
        // 6.x kernels say `bpf-link`; older ones `bpf_link`.
        "anon_inode:bpf-link" | "anon_inode:bpf_link" => ObjectKind::Link,
        "anon_inode:btf" => ObjectKind::Btf,
        "anon_inode:bpf-iter" | "anon_inode:bpf_iter" => ObjectKind::Iter,
        _ => ObjectKind::Other,
    };
    // Which union arm of `bpf_link_info` carries pointers depends on the
    // link's type. It comes from the kernel, never from a caller's info
    // struct: a caller naming the wrong type would otherwise make the kernel
    // write through union fields the plan did not point at our buffers.
    let link_type = match kind {
        ObjectKind::Link => {
            let mut info = [0u8; 4];
            kernel
                .object_info(fd, &mut info)
                .ok()
                .map(|_| u32::from_le_bytes(info))
        }
        _ => None,
    };
    NewObject {
        kind,
        link,
        link_type,
    }
}
