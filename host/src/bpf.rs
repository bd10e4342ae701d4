//! The host side of a forwarded `bpf()` call: the single decode point.
//!
//! One function, [`forward`], turns the raw `(cmd, attr, size)` of an
//! intercepted call into a [`BpfCall`], sends it, and turns the
//! [`BpfResult`] back into the return value and errno the program sees:
//!
//! 1. read the attr from the program's memory (`EFAULT` as the kernel would);
//! 2. derive the plan with `telebpf-abi` (the proxy derives the same one);
//! 3. copy every `In`/`InOut` buffer out of the program's memory, expanding
//!    nested ones (info structs, instructions) as their content arrives;
//! 4. translate every fd slot: ours → the guest fd, `0` stays `0`, anything
//!    else → `-1` (the guest kernel then answers `EBADF`, which is what a
//!    host fd means to it);
//! 5. after the call, write back only the attr bytes the kernel changed and
//!    every buffer it may have written, then turn a returned guest fd into a
//!    new host fd.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use telebpf_abi::{cmd, write_u32, Content, Direction, Length, ObjectKind, Objects, Parent, Plan};
use telebpf_protocol::message::{
    BpfCall, BpfResult, NewObject, Reply, Request, WireBuffer, FOREIGN_FD, MAX_ATTR, PREFILL_MAX,
};

use crate::error::{Error, Result};
use crate::fdtable::{FdTable, GuestObject, Signal};
use crate::sys::{self, inode_of};
use crate::{memory, state};

/// What the plan needs to know about host fds.
///
/// One call names the same fd several times (planning, the link type,
/// translation); each table look-up checks the fd with an `fstat`, so the
/// answers are kept for the call.
struct HostView<'a> {
    table: &'a dyn FdTable,
    possible_cpus: u32,
    seen: std::cell::RefCell<Vec<(i32, Option<Arc<GuestObject>>)>>,
}

impl HostView<'_> {
    /// The guest object behind host fd `fd`, looked up once per call.
    fn object(&self, fd: i32) -> Option<Arc<GuestObject>> {
        if let Some((_, o)) = self.seen.borrow().iter().find(|(f, _)| *f == fd) {
            return o.clone();
        }
        let o = self.table.get(fd).cloned();
        self.seen.borrow_mut().push((fd, o.clone()));
        o
    }

    /// `fd` in the guest's numbering (see [`to_guest_fd`]).
    fn to_guest(&self, fd: i32) -> i32 {
        guest_number(self.table, self.object(fd).map(|o| o.guest_fd), fd)
    }
}

impl Objects for HostView<'_> {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        match self.object(fd) {
            Some(o) => Some(o.kind.clone()),
            // Open, but not a guest object: the kernel would say "wrong
            // kind of fd" (EINVAL), not "no such fd" (EBADF) — unless it
            // stood for an object of a lost session, which is closed.
            None if fd_is_open(fd) && !self.table.is_stale(fd) => Some(ObjectKind::Other),
            None => None,
        }
    }

    fn possible_cpus(&self) -> u32 {
        self.possible_cpus
    }

    fn link_type(&self, fd: i32) -> Option<u32> {
        self.object(fd).and_then(|o| o.link_type)
    }
}

/// Forwards one `bpf()` call; `Ok` is the syscall's return value.
pub fn forward(
    raw_cmd: u32,
    attr_addr: u64,
    size: u32,
    common_addr: u64,
    common_size: u32,
) -> Result<i64> {
    let st = state::get();
    if size as usize > MAX_ATTR {
        return Err(Error::kernel(
            libc::E2BIG,
            "a bpf_attr larger than any the kernel knows",
        ));
    }
    let has_common = raw_cmd & cmd::BPF_COMMON_ATTRS != 0;
    let mut attr = memory::read(attr_addr, size as usize).map_err(Error::Memory)?;
    // Unreadable common attributes are the guest kernel's to judge (one
    // without them ignores them): they travel as `None`.
    let mut common = if has_common && common_size as usize <= MAX_ATTR {
        memory::read(common_addr, common_size as usize).ok()
    } else {
        None
    };
    let possible_cpus = st.facts()?.possible_cpus;

    let (plan, mut buffers) = {
        let table = st.table();
        let view = HostView {
            table: &**table,
            possible_cpus,
            seen: Default::default(),
        };
        let mut plan = Plan::new(raw_cmd, &attr, common.as_deref(), &view)?;
        let mut buffers: Vec<WireBuffer> = Vec::with_capacity(plan.buffers.len());
        let mut i = 0;
        while i < plan.buffers.len() {
            let spec = &plan.buffers[i];
            let wire = match (&spec.len, &spec.dir) {
                (Length::Bytes(n), Direction::Out)
                    if *n <= PREFILL_MAX && spec.content != Content::Log =>
                {
                    match memory::read(spec.ptr, *n) {
                        Ok(current) => WireBuffer::Data(current),
                        // The kernel may never write there (a failing
                        // lookup): let it decide, and fault on write-back.
                        Err(_) => WireBuffer::Out(*n as u64),
                    }
                }
                (Length::Bytes(n), Direction::Out) => WireBuffer::Out(*n as u64),
                (Length::Bytes(n), _) => {
                    WireBuffer::Data(memory::read(spec.ptr, *n).map_err(Error::Memory)?)
                }
                (Length::CString { max }, _) => {
                    WireBuffer::Data(memory::read_cstr(spec.ptr, *max).map_err(Error::Memory)?)
                }
            };
            // Out buffers may carry the caller's current bytes; they hold
            // nothing to expand.
            if let (WireBuffer::Data(content), false) = (&wire, spec.dir == Direction::Out) {
                plan.expand(i, content, &view)?;
            }
            buffers.push(wire);
            i += 1;
        }
        // Translate fds into the guest's numbering, in the copies we send.
        for slot in &plan.fds {
            let guest = match slot.value {
                0 => 0,
                v => view.to_guest(v),
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
        (plan, buffers)
    };

    let sent_attr = attr.clone();
    let sent_common = common.clone();
    let call = BpfCall {
        cmd: raw_cmd,
        size,
        attr,
        common,
        common_size: if has_common { common_size } else { 0 },
        buffers: std::mem::take(&mut buffers),
    };
    let result = st.ask(&Request::Bpf(call), "bpf()", |r| match r {
        Reply::Bpf(r) => Ok(Ok(r)),
        other => Err(Box::new(other)),
    })?;
    let written = write_back(
        &plan,
        &result,
        attr_addr,
        &sent_attr,
        common_addr,
        sent_common.as_deref(),
    );
    if result.ret < 0 {
        // The kernel failed: its errno is the answer, whatever could or
        // could not be copied back (it may never have written there).
        return Err(Error::Guest(if result.errno > 0 {
            result.errno
        } else {
            libc::EIO
        }));
    }
    if let Err(e) = written {
        // The kernel succeeded into the proxy's buffers but the caller's
        // memory is bad: locally the kernel would have faulted. A new object
        // nobody will ever learn about is closed again.
        if plan.returns_fd {
            st.notify(&Request::Close {
                fd: result.ret as i32,
            });
        }
        return Err(e);
    }
    match (plan.returns_fd, result.object) {
        (true, Some(obj)) => adopt(result.ret as i32, obj).map(i64::from),
        _ => Ok(result.ret),
    }
}

/// Writes back what the kernel wrote: attr bytes that differ from what we
/// sent (pointer and fd fields come back as sent, so they never differ), and
/// every returned buffer, at most as long as the plan says.
fn write_back(
    plan: &Plan,
    result: &BpfResult,
    attr_addr: u64,
    sent_attr: &[u8],
    common_addr: u64,
    sent_common: Option<&[u8]>,
) -> Result<()> {
    write_changed(attr_addr, sent_attr, &result.attr)?;
    if let (Some(sent), Some(got)) = (sent_common, result.common.as_deref()) {
        write_changed(common_addr, sent, got)?;
    }
    for (index, content) in &result.out {
        let Some(spec) = plan.buffers.get(*index as usize) else {
            return Err(Error::Protocol("bpf() (an output buffer the plan lacks)"));
        };
        if content.len() > spec.alloc_len() || matches!(spec.dir, Direction::In) {
            return Err(Error::Protocol("bpf() (an output buffer out of bounds)"));
        }
        memory::write(spec.ptr, content).map_err(Error::Memory)?;
    }
    Ok(())
}

/// Writes the runs of `got` that differ from `sent` to `addr`.
fn write_changed(addr: u64, sent: &[u8], got: &[u8]) -> Result<()> {
    if got.len() != sent.len() {
        return Err(Error::Protocol("bpf() (an attr of another size)"));
    }
    let mut i = 0;
    while i < got.len() {
        if got[i] == sent[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < got.len() && got[i] != sent[i] {
            i += 1;
        }
        memory::write(addr + start as u64, &got[start..i]).map_err(Error::Memory)?;
    }
    Ok(())
}

/// A host fd in the guest's numbering: the guest fd of our object, else
/// [`FOREIGN_FD`] for an fd that is open but no guest object, else `-1`
/// (also for the fd of an object of a lost session: `EBADF`, as closed).
pub fn to_guest_fd(table: &dyn FdTable, host_fd: i32) -> i32 {
    guest_number(table, table.get(host_fd).map(|o| o.guest_fd), host_fd)
}

/// The translation rule: `guest` when `host_fd` is ours, else
/// [`FOREIGN_FD`] when it is open (and no object of a lost session), else `-1`.
fn guest_number(table: &dyn FdTable, guest: Option<i32>, host_fd: i32) -> i32 {
    match guest {
        Some(g) => g,
        None if fd_is_open(host_fd) && !table.is_stale(host_fd) => FOREIGN_FD,
        None => -1,
    }
}

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD on any integer only reads the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Whether the object is a user ring buffer, which a program waits on for
/// space rather than for data.
fn is_user_ring(obj: &NewObject) -> bool {
    matches!(&obj.kind, ObjectKind::Map(m)
        if m.map_type == telebpf_abi::map_type::BPF_MAP_TYPE_USER_RINGBUF)
}

/// A pipe: (read end for the program, write end for the mirror). Both
/// close-on-exec like a kernel bpf/perf fd; the read end non-blocking so a
/// program that reads it (none should) never hangs.
fn signal_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(Error::last_os("pipe2"));
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Gives a new guest fd a host fd of its own: a memfd (a real fd with its
/// own inode), or a pipe for objects a program polls.
pub fn adopt(guest_fd: i32, obj: NewObject) -> Result<i32> {
    let st = state::get();
    let name = obj
        .link
        .strip_prefix("anon_inode:")
        .unwrap_or("bpf-object")
        .to_string();
    let made = if is_user_ring(&obj) {
        // The program waits for space (EPOLLOUT): it gets the write end,
        // which the mirror fills while the host ring is full.
        signal_pipe().and_then(|(r, w)| {
            let write = w
                .try_clone()
                .map_err(|e| Error::os("duplicating a pipe", e, libc::EMFILE))?;
            Ok((w, Some(Signal { write, read: r })))
        })
    } else if obj.is_ring() {
        signal_pipe().and_then(|(r, w)| {
            let read = r
                .try_clone()
                .map_err(|e| Error::os("duplicating a pipe", e, libc::EMFILE))?;
            Ok((r, Some(Signal { write: w, read })))
        })
    } else {
        sys::memfd_with(&name, &[], false).map(|fd| (fd, None))
    };
    let (fd, signal) = match made {
        Ok(x) => x,
        Err(e) => {
            st.notify(&Request::Close { fd: guest_fd });
            return Err(e);
        }
    };
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    let inode = inode_of(raw).unwrap_or_default();
    let object = Arc::new(GuestObject {
        guest_fd,
        kind: obj.kind,
        link: obj.link,
        link_type: obj.link_type,
        inode,
        signal,
        ring: Default::default(),
    });
    st.table().insert(raw, object);
    // The process holds a guest object now: watch its proxy.
    st.watch();
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_runs_are_written() {
        let mut target = [0u8, 1, 2, 3, 4, 5];
        let sent = target;
        let got = [0u8, 9, 9, 3, 4, 7];
        write_changed(target.as_mut_ptr() as u64, &sent, &got).unwrap();
        assert_eq!(target, got);
        assert!(write_changed(target.as_mut_ptr() as u64, &sent, &got[..3]).is_err());
    }
}
