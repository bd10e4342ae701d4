//! One supervised process as the host library sees it: where its new fds
//! go ([`ToolProcess`], a [`Program`]) and which of its fd numbers stand for
//! guest objects ([`ToolTable`]).
//!
//! Guest objects' fds are put into the process with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` at numbers in the filter's range
//! ([`FD_BASE`]..[`FD_END`]), during the call that made them (the kernel
//! allows ADDFD only while a call waits). Every call that can close or
//! overwrite such a number notifies the supervisor (`close`, `dup2`,
//! `dup3`, `close_range`), so the table needs no `fstat` to tell a number
//! closed behind its back, unlike the preload's.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use telebpf_host::error::{Error, Result};
use telebpf_host::fdtable::{FdTable, GuestObject};
use telebpf_host::program::Program;

use crate::filter::{FD_BASE, FD_END};
use crate::notify::{Call, Listener};

thread_local! {
    /// The call this thread is serving, with its listener: what ADDFD
    /// needs.
    static SERVING: Cell<Option<(*const Listener, Call)>> = const { Cell::new(None) };
}

/// Marks `call` as the one this thread serves until the guard drops.
pub fn serving(listener: &Listener, call: Call) -> ServingCall {
    SERVING.with(|c| c.set(Some((listener as *const Listener, call))));
    ServingCall
}

/// While alive, [`ToolProcess::install`] puts fds into the caller of the
/// call given to [`serving`].
#[must_use = "the call is served until this is dropped"]
pub struct ServingCall;

impl Drop for ServingCall {
    fn drop(&mut self) {
        SERVING.with(|c| c.set(None));
    }
}

/// Runs `f` with the call being served and its listener.
fn with_call<T>(f: impl FnOnce(&Listener, &Call) -> io::Result<T>) -> io::Result<T> {
    let Some((listener, call)) = SERVING.with(|c| c.get()) else {
        return Err(io::Error::from_raw_os_error(libc::EBADFD));
    };
    // SAFETY: the pointer was set by `serving` from a reference that
    // outlives the guard, and the guard is dropped before it on this
    // thread (the serving loop holds both).
    f(unsafe { &*listener }, &call)
}

/// The file the supervisor last put at each of a process's fd numbers,
/// by `(st_dev, st_ino)`: a number below the range (where the program
/// moved an object's fd) may be closed without the supervisor seeing it,
/// and reused for a file of the program's own.
pub type Placed = Arc<Mutex<HashMap<i32, (u64, u64)>>>;

/// Whether `fd` lies in the range the filter watches.
fn in_range(fd: i32) -> bool {
    (FD_BASE as i32..FD_END as i32).contains(&fd)
}

/// `(st_dev, st_ino)` of process `pid`'s fd `fd`.
fn inode_in(pid: i32, fd: i32) -> Option<(u64, u64)> {
    let path = format!("/proc/{pid}/fd/{fd}\0");
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: NUL-terminated path; `st` has room for one stat.
    if unsafe { libc::stat(path.as_ptr().cast(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: stat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// Whether two fds of this process are one open file (`kcmp`): epoll
/// instances share one inode, so `fstat` cannot tell them apart. A kernel
/// without `kcmp` (`CONFIG_KCMP` off) cannot tell: they are taken as one,
/// as before this check.
fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    /// `KCMP_FILE` (`linux/kcmp.h`).
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: kcmp compares two fds of this process; it reads nothing of
    // ours.
    let order = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            me,
            me,
            KCMP_FILE,
            a.as_raw_fd(),
            b.as_raw_fd(),
        )
    };
    // 0: the same file; -1: no kcmp.
    order <= 0
}

/// A supervised process: thread group `pid`.
#[derive(Debug)]
pub struct ToolProcess {
    /// Its thread-group id.
    pub pid: i32,
    /// Its pidfd: the handle for `pidfd_getfd`, and readable once it
    /// has exited.
    pidfd: OwnedFd,
    /// What was put at each fd number (shared with its [`ToolTable`]).
    placed: Placed,
    /// Its epoll registrations of guest rings, by (epoll fd, object fd).
    waits: Mutex<HashMap<(i32, i32), Registration>>,
}

/// A guest ring's readiness fd registered in one of the program's epoll
/// instances on its behalf: the program's own fd for the ring is a memfd
/// (it maps it), which epoll refuses, so the ring's readiness pipe stands
/// in for it there, with the program's own events and data.
#[derive(Debug)]
struct Registration {
    /// Our duplicate of the program's epoll instance.
    epoll: OwnedFd,
    /// Our duplicate of the readiness pipe's end, as registered.
    watched: OwnedFd,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Epoll forgets a registration only when its file is released;
        // the pipe lives on with the ring, so take it out explicitly.
        // SAFETY: epoll_ctl on our own two fds; DEL ignores the event.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.watched.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }
}

impl ToolProcess {
    /// The process `pid`, with no registrations; what it places is
    /// recorded in `placed`.
    pub fn new(pid: i32, pidfd: OwnedFd, placed: Placed) -> ToolProcess {
        ToolProcess {
            pid,
            pidfd,
            placed,
            waits: Mutex::new(HashMap::new()),
        }
    }

    /// Its pidfd, readable once it has exited.
    pub fn pidfd(&self) -> i32 {
        self.pidfd.as_raw_fd()
    }

    /// `epoll_ctl(epfd, op, fd, event)` of the program, for an object fd
    /// whose readiness is `ready` (our end of its pipe): done on the
    /// program's epoll instance with `ready` in place of `fd`.
    pub fn epoll_ctl(
        &self,
        epfd: i32,
        op: i32,
        fd: i32,
        ready: &OwnedFd,
        event: Option<libc::epoll_event>,
    ) -> Result<()> {
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let key = (epfd, fd);
        let mut ev = event.unwrap_or(libc::epoll_event { events: 0, u64: 0 });
        // The program's epoll instance now; `EBADF` for a closed number.
        let epoll = self.file_of(epfd)?;
        // A registration made in an epoll instance that the program has
        // closed since (libbpf's `ring_buffer__free` closes its epoll fd
        // without deleting the rings) is not in the one the number names
        // now: it goes.
        if waits
            .get(&key)
            .is_some_and(|r| !same_file(&r.epoll, &epoll))
        {
            waits.remove(&key);
        }
        match op {
            libc::EPOLL_CTL_ADD => {
                if waits.contains_key(&key) {
                    return Err(Error::kernel(
                        libc::EEXIST,
                        "an fd already in the epoll set",
                    ));
                }
                let watched = ready
                    .try_clone()
                    .map_err(|e| Error::os("duplicating a pipe", e, libc::EMFILE))?;
                // SAFETY: epoll_ctl on our own fds with a valid event.
                if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, watched.as_raw_fd(), &mut ev) }
                    != 0
                {
                    return Err(Error::last_os("epoll_ctl"));
                }
                waits.insert(key, Registration { epoll, watched });
                Ok(())
            }
            libc::EPOLL_CTL_MOD => {
                let r = waits
                    .get(&key)
                    .ok_or(Error::kernel(libc::ENOENT, "an fd not in the epoll set"))?;
                // SAFETY: as for ADD.
                if unsafe {
                    libc::epoll_ctl(r.epoll.as_raw_fd(), op, r.watched.as_raw_fd(), &mut ev)
                } != 0
                {
                    return Err(Error::last_os("epoll_ctl"));
                }
                Ok(())
            }
            libc::EPOLL_CTL_DEL => waits
                .remove(&key)
                .map(drop)
                .ok_or(Error::kernel(libc::ENOENT, "an fd not in the epoll set")),
            _ => Err(Error::kernel(libc::EINVAL, "an unknown epoll_ctl op")),
        }
    }

    /// Whether epoll instance `epfd` of the program has a guest ring in it.
    pub fn waits_on_rings(&self, epfd: i32) -> bool {
        self.waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .any(|&(e, _)| e == epfd)
    }

    /// The program closed `fd`: its epoll registrations go with it.
    pub fn closed(&self, fd: i32) {
        self.waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&(_, f), _| f != fd);
    }

    /// Whether `fd` is open in the process (its `/proc/PID/fd` entry).
    pub fn fd_exists(&self, fd: i32) -> bool {
        let path = format!("/proc/{}/fd/{fd}\0", self.pid);
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: NUL-terminated path; `st` has room for one stat.
        unsafe { libc::lstat(path.as_ptr().cast(), st.as_mut_ptr()) == 0 }
    }

    /// Whether `fd` is a socket in the process (its `/proc/PID/fd` link).
    pub fn is_socket(&self, fd: i32) -> bool {
        std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid))
            .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
    }

    /// The process's soft `RLIMIT_NOFILE`.
    pub fn fd_limit(&self) -> Result<u64> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads the process's limit into `r`.
        if unsafe { libc::prlimit(self.pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut r) } != 0 {
            return Err(Error::last_os("prlimit"));
        }
        Ok(r.rlim_cur)
    }

    /// The lowest number of the range that is free in the process.
    pub fn free_number(&self, from: i32) -> Result<i32> {
        (from.max(FD_BASE as i32)..FD_END as i32)
            .find(|&n| !self.fd_exists(n))
            .ok_or(Error::kernel(
                libc::EMFILE,
                "every fd number the supervisor may use is taken",
            ))
    }

    /// A duplicate, in this process, of the process's fd `fd`
    /// (`pidfd_getfd`).
    pub fn file_of(&self, fd: i32) -> Result<OwnedFd> {
        // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        if raw < 0 {
            return Err(Error::last_os("pidfd_getfd"));
        }
        // SAFETY: a new fd nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
    }

    /// Puts `fd` into the process at number `at` (replacing what was
    /// there) during the call being served.
    pub fn place(&self, fd: &OwnedFd, at: i32, cloexec: bool) -> Result<i32> {
        let n = with_call(|l, c| l.add_fd(c, fd, Some(at), cloexec, false))
            .map_err(|e| Error::os("SECCOMP_IOCTL_NOTIF_ADDFD", e, libc::EMFILE))?;
        if let Some(inode) = telebpf_host::sys::inode_of(fd.as_raw_fd()) {
            self.placed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(n, inode);
        }
        Ok(n)
    }
}

impl Program for ToolProcess {
    fn install(&self, fd: OwnedFd) -> Result<i32> {
        let at = self.free_number(FD_BASE as i32)?;
        self.place(&fd, at, true)
    }

    fn is_open(&self, fd: i32) -> bool {
        fd >= 0 && self.fd_exists(fd)
    }
}

/// The guest objects of a supervised process, by its fd numbers.
///
/// A number in the range is the object's until the program closes it,
/// which the supervisor sees. A number below it (the program moved the
/// object there) is the object's only while it still names the file the
/// supervisor put there: its closes are not seen.
#[derive(Debug)]
pub struct ToolTable {
    pid: i32,
    placed: Placed,
    by_fd: HashMap<i32, Arc<GuestObject>>,
    /// Numbers of objects of a lost session (see [`FdTable::clear`]).
    stale: HashMap<i32, Arc<GuestObject>>,
}

impl ToolTable {
    /// The table of process `pid`, whose placed files are in `placed`.
    pub fn new(pid: i32, placed: Placed) -> ToolTable {
        ToolTable {
            pid,
            placed,
            by_fd: HashMap::new(),
            stale: HashMap::new(),
        }
    }

    /// Whether `fd` still names the file placed there (always true in the
    /// range).
    fn still_placed(&self, fd: i32) -> bool {
        if in_range(fd) {
            return true;
        }
        let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        placed
            .get(&fd)
            .is_some_and(|&i| inode_in(self.pid, fd) == Some(i))
    }
}

impl FdTable for ToolTable {
    fn insert(&mut self, fd: i32, obj: Arc<GuestObject>) {
        // `/proc/self/fd/N` and `/proc/self/fdinfo/N` are routed to the
        // object only for numbers marked so (a process-wide sieve, shared
        // by every served process: a number marked for one only costs
        // another a table lookup).
        telebpf_host::fdtable::mark(fd);
        self.stale.remove(&fd);
        self.by_fd.insert(fd, obj);
    }

    fn get(&self, fd: i32) -> Option<&Arc<GuestObject>> {
        self.by_fd.get(&fd).filter(|_| self.still_placed(fd))
    }

    fn remove(&mut self, fd: i32) -> Option<i32> {
        self.stale.remove(&fd);
        let obj = self.by_fd.remove(&fd)?;
        (Arc::strong_count(&obj) == 1).then_some(obj.guest_fd)
    }

    fn in_range(&self, first: u32, last: u32) -> Vec<i32> {
        self.by_fd
            .keys()
            .chain(self.stale.keys())
            .copied()
            .filter(|&fd| fd as u32 >= first && fd as u32 <= last)
            .collect()
    }

    fn clear(&mut self) {
        self.stale.extend(self.by_fd.drain());
    }

    fn is_stale(&self, fd: i32) -> bool {
        self.stale.contains_key(&fd) && self.still_placed(fd)
    }
}
