//! The host side of a forwarded `bpf()` call: the single decode point.
//!
//! One function, [`forward`], turns the raw `(cmd, attr, size)` of an
//! intercepted call into a [`BpfCall`](telebpf_protocol::message::BpfCall),
//! sends it, and turns the [`BpfResult`](telebpf_protocol::message::BpfResult)
//! back into the return value and errno the program sees. The marshalling
//! is `telebpf-marshal`'s: [`read_attrs`] and [`gather`] read the attr and
//! the buffers its plan names from the program's memory, with every fd
//! slot in the guest's numbering (ours → the guest fd, `0` stays `0`,
//! anything else → [`FOREIGN_FD`] or `-1`); [`scatter`] writes back what
//! the kernel wrote. What is left here is the program's side of it: its fd
//! table, and a returned guest fd turned into a new host fd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use telebpf_abi::{ObjectKind, Objects};
use telebpf_marshal::{gather, read_attrs, scatter, Gathered, HostFds};
use telebpf_protocol::message::{NewObject, Reply, Request, FOREIGN_FD};

use crate::error::{Error, Result};
use crate::fdtable::{FdTable, GuestObject, Signal};
use crate::state;
use crate::sys::{self, inode_of};

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
}

impl HostFds for HostView<'_> {
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
            None if is_foreign(self.table, fd) => Some(ObjectKind::Other),
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
    let mem = st.memory();
    let attrs = read_attrs(mem, raw_cmd, attr_addr, size, common_addr, common_size)?;
    let possible_cpus = st.facts()?.possible_cpus;
    let Gathered { call, sent } = {
        let table = st.table();
        let view = HostView {
            table: &**table,
            possible_cpus,
            seen: Default::default(),
        };
        gather(mem, &view, attrs)?
    };
    let result = st.ask(&Request::Bpf(call), "bpf()", |r| match r {
        Reply::Bpf(r) => Ok(Ok(r)),
        other => Err(Box::new(other)),
    })?;
    let written = scatter(mem, &sent, &result);
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
        if sent.returns_fd() {
            st.notify(&Request::Close {
                fd: result.ret as i32,
            });
        }
        return Err(e.into());
    }
    match (sent.returns_fd(), result.object) {
        (true, Some(obj)) => adopt(result.ret as i32, obj).map(i64::from),
        _ => Ok(result.ret),
    }
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
        None if is_foreign(table, host_fd) => FOREIGN_FD,
        None => -1,
    }
}

/// Whether `fd`, no guest object of ours, is open in the program as
/// something else (and is not the number of an object of a lost session).
fn is_foreign(table: &dyn FdTable, fd: i32) -> bool {
    state::get().program().is_open(fd) && !table.is_stale(fd)
}

/// Whether the object is a user ring buffer, which a program waits on for
/// space rather than for data.
fn is_user_ring(obj: &NewObject) -> bool {
    is_user_ring_kind(&obj.kind)
}

/// Whether an object of `kind` is a user ring buffer.
pub fn is_user_ring_kind(kind: &ObjectKind) -> bool {
    matches!(kind, ObjectKind::Map(m)
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
    let inode = inode_of(fd.as_raw_fd()).unwrap_or_default();
    let raw = match st.program().install(fd) {
        Ok(raw) => raw,
        Err(e) => {
            st.notify(&Request::Close { fd: guest_fd });
            return Err(e);
        }
    };
    let object = Arc::new(GuestObject {
        guest_fd,
        kind: obj.kind,
        link: obj.link,
        link_type: obj.link_type,
        inode,
        signal,
        ring: Default::default(),
    });
    // (The call that returned it started the watchdog: `State::call`.)
    st.table().insert(raw, object);
    Ok(raw)
}
