//! Turns a forwarded [`BpfCall`] into a checked `bpf()` syscall.
//!
//! The marshalling is `telebpf-marshal`'s: [`patch`] checks the call
//! against the proxy's own plan and points it at the proxy's copies (fds
//! the session does not own become `-1`), [`collect`] puts the client's
//! pointer values and fds back and takes the buffers the kernel wrote.
//! Between the two sits the one system call.

use telebpf_marshal::{collect, patch, PatchError};
use telebpf_protocol::message::{BpfCall, BpfResult, ErrorReply, NewObject};

pub use telebpf_marshal::SessionFds;

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

/// Executes `call` for a session, in `kernel`.
pub fn execute(
    call: &BpfCall,
    fds: &dyn SessionFds,
    kernel: &dyn Kernel,
) -> Result<Outcome, ErrorReply> {
    let mut patched = match patch(call, fds, &sys::not_bpf_fd) {
        Ok(p) => p,
        Err(e) => return refused(call, &e),
    };
    let (common_ptr, common_len) = patched.common_arg();
    let attr = patched.attr_mut();
    // SAFETY: `attr` is `attr.len()` bytes; `patch` set every pointer field
    // the plan knows to one of `patched`'s buffers, each allocated with
    // exactly the length the plan gives for it (the same length the kernel
    // derives from the attr), and `patched` neither moves nor frees them
    // before `collect`; `common_ptr` is its common attributes (or NULL, or
    // an unmapped address the kernel reports as EFAULT).
    let outcome = unsafe {
        kernel.bpf(
            call.cmd,
            attr.as_mut_ptr(),
            attr.len() as u32,
            common_ptr,
            common_len,
        )
    };
    let collected = collect(patched, outcome);
    let mut result = collected.result;
    result.object = collected.new_fd.map(|fd| describe_in(fd, kernel));
    Ok(Outcome {
        result,
        new_fd: collected.new_fd,
    })
}

/// A call `patch` refused: the kernel's answer (a failed call), or a
/// protocol error for a client that broke the protocol.
fn refused(call: &BpfCall, e: &PatchError) -> Result<Outcome, ErrorReply> {
    match e.refusal() {
        Some(errno) => Ok(Outcome {
            result: failed_call(call, errno),
            new_fd: None,
        }),
        None => Err(ErrorReply {
            errno: e.errno(),
            message: e.to_string(),
        }),
    }
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
