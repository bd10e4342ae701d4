//! Host fds that stand for guest objects.
//!
//! A guest object is represented in the host program by a real fd (a
//! memfd), so the fd number space, `close`-on-exec, `dup*` and `fcntl`
//! behave as with a real bpf fd. The table maps host fd numbers to the
//! object; several numbers share one object after `dup`, and the guest fd is
//! closed when the last of them goes.
//!
//! [`FdTable`] is how a front-end keeps that table for the program it
//! serves: the preload for its own process ([`Table`]), a supervisor for
//! another process. [`Table`] remembers each entry's memfd inode, so a
//! number that was closed behind our back (a raw `syscall(SYS_close)`) and
//! reused for another file is recognised as stale instead of misrouted.
//!
//! An object's mirrored ring is kept here as a [`MirroredRing`] trait
//! object: the table does not know the ring types (`crate::rings` does),
//! so it stays below them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libc::c_void;
use telebpf_abi::ObjectKind;

use crate::error::{Error, Result};
use crate::sys::inode_of;

/// The host side of a mirrored ring, as the fd table keeps it: what a
/// later `mmap` of the same object needs (libbpf maps a ring buffer twice).
pub trait MirroredRing: Send + Sync + std::fmt::Debug {
    /// Maps the ring for the program, as `mmap(addr, len, prot, flags, fd,
    /// offset)` of the object's fd would; `Err` is the kernel's errno.
    fn map_for(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<*mut c_void, i32>;

    /// For a program that maps the ring's file itself (a supervisor's):
    /// the kernel's verdict on `mmap(_, len, prot, flags, fd, offset)`, and
    /// a duplicate of the ring's memfd for the program to map.
    fn file_for(
        &self,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<std::os::fd::OwnedFd, i32>;
}

/// One guest object.
#[derive(Debug)]
pub struct GuestObject {
    /// Its fd in the proxy's process.
    pub guest_fd: i32,
    /// Type and sizes.
    pub kind: ObjectKind,
    /// Its `/proc/self/fd` link text in the guest.
    pub link: String,
    /// For a BPF link, its type as the guest kernel reports it.
    pub link_type: Option<u32>,
    /// `(st_dev, st_ino)` of the host fd.
    pub inode: (u64, u64),
    /// For objects a program waits on with `epoll`/`poll` (perf events,
    /// ring-buffer maps) the host fd is a pipe's read end and this is its
    /// write end: the mirror makes the fd readable exactly while mirrored
    /// data is unconsumed. For a user ring buffer the host fd is the pipe's
    /// write end instead, which the mirror keeps writable (`EPOLLOUT`)
    /// exactly while the host ring has space.
    pub signal: Option<Signal>,
    /// The host ring of a mirrored perf event or ring-buffer map, made on
    /// its first `mmap`.
    pub ring: Mutex<Option<Arc<dyn MirroredRing>>>,
}

/// The two library-held ends of a pollable object's pipe.
#[derive(Debug)]
pub struct Signal {
    /// Writing a byte makes the program's fd readable.
    pub write: std::os::fd::OwnedFd,
    /// A duplicate of the program's read end, to empty the pipe again.
    pub read: std::os::fd::OwnedFd,
}

impl Signal {
    /// Duplicates both ends (for the mirror thread).
    pub fn try_clone(&self) -> Result<Signal> {
        let dup = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::os("duplicating a readiness pipe", e, libc::EMFILE))
        };
        Ok(Signal {
            write: dup(&self.write)?,
            read: dup(&self.read)?,
        })
    }
}

const BITMAP_FDS: usize = 1 << 16;
/// Fds below 65536 that may be ours: a fast negative answer for the hot
/// `close`/`read`/`mmap` paths of programs that never touch bpf. Bits are
/// set on insert and never cleared (a stale bit only costs a table look-up).
static MAYBE: [AtomicU64; BITMAP_FDS / 64] = [const { AtomicU64::new(0) }; BITMAP_FDS / 64];
/// Whether any fd at or above 65536 was ever ours.
static HIGH: AtomicBool = AtomicBool::new(false);

/// Cheap check, callable from any hook before taking the guard: a few
/// instructions, no lock (inlined into the hooks).
#[inline]
pub fn maybe_ours(fd: i32) -> bool {
    if fd < 0 {
        return false;
    }
    let fd = fd as usize;
    if fd >= BITMAP_FDS {
        return HIGH.load(Ordering::Relaxed);
    }
    MAYBE[fd / 64].load(Ordering::Relaxed) & (1 << (fd % 64)) != 0
}

/// Marks `fd` as possibly the library's (see [`maybe_ours`]).
pub fn mark(fd: i32) {
    let fd = fd as usize;
    if fd >= BITMAP_FDS {
        HIGH.store(true, Ordering::Relaxed);
    } else {
        MAYBE[fd / 64].fetch_or(1 << (fd % 64), Ordering::Relaxed);
    }
}

/// Which of a program's fds stand for guest objects, as the front-end
/// serving that program keeps it.
///
/// Numbers are the program's. An implementation must tell a number that
/// still names the host file it registered from one closed behind its back
/// and reused ([`get`](Self::get) answers `None` for the latter).
pub trait FdTable: Send + std::fmt::Debug {
    /// Registers `host_fd` as standing for `obj`.
    fn insert(&mut self, host_fd: i32, obj: Arc<GuestObject>);
    /// The object behind `host_fd`, if the number still names the file
    /// registered for it.
    fn get(&self, host_fd: i32) -> Option<&Arc<GuestObject>>;
    /// Forgets `host_fd`; returns the guest fd to close when it was the
    /// last host reference to its object.
    fn remove(&mut self, host_fd: i32) -> Option<i32>;
    /// Host fds in `first..=last` that are registered.
    fn in_range(&self, first: u32, last: u32) -> Vec<i32>;
    /// Forgets everything (the session that owned the objects is gone);
    /// the host fds are remembered as stale ([`is_stale`](Self::is_stale)).
    fn clear(&mut self);
    /// Whether `host_fd` still names a file of an object of a lost session.
    fn is_stale(&self, host_fd: i32) -> bool;
}

/// The table of the calling process (the preload's): fds checked with
/// `fstat` against the inode recorded at insertion.
#[derive(Debug, Default)]
pub struct Table {
    by_host: HashMap<i32, Arc<GuestObject>>,
    /// Host fds whose objects went with a lost session (the proxy closed
    /// them), by the memfd's `(st_dev, st_ino)`: naming one gives `EBADF`,
    /// as a closed fd would, never another object of a later session.
    stale: HashMap<i32, (u64, u64)>,
}

impl FdTable for Table {
    fn insert(&mut self, host_fd: i32, obj: Arc<GuestObject>) {
        mark(host_fd);
        self.stale.remove(&host_fd);
        self.by_host.insert(host_fd, obj);
    }

    /// The object behind `host_fd`, if the fd still is the memfd we made.
    /// A number closed behind our back and reused for another file is not
    /// ours; its entry goes when that number is closed.
    fn get(&self, host_fd: i32) -> Option<&Arc<GuestObject>> {
        let obj = self.by_host.get(&host_fd)?;
        (inode_of(host_fd) == Some(obj.inode)).then_some(obj)
    }

    /// Forgets `host_fd`; returns the guest fd to close when it was the
    /// last host reference to its object.
    fn remove(&mut self, host_fd: i32) -> Option<i32> {
        self.stale.remove(&host_fd);
        let obj = self.by_host.remove(&host_fd)?;
        (Arc::strong_count(&obj) == 1).then_some(obj.guest_fd)
    }

    /// Host fds in `first..=last` that are ours.
    fn in_range(&self, first: u32, last: u32) -> Vec<i32> {
        self.by_host
            .keys()
            .copied()
            .filter(|&fd| fd as u32 >= first && fd as u32 <= last)
            .collect()
    }

    /// Forgets everything (the session that owned the objects is gone);
    /// the host fds are remembered as stale ([`is_stale`](Self::is_stale)).
    fn clear(&mut self) {
        for (fd, obj) in self.by_host.drain() {
            self.stale.insert(fd, obj.inode);
        }
    }

    /// Whether `host_fd` still is a memfd of an object of a lost session.
    fn is_stale(&self, host_fd: i32) -> bool {
        self.stale
            .get(&host_fd)
            .is_some_and(|inode| inode_of(host_fd) == Some(*inode))
    }
}

/// A guest object of `kind` with `link` text and no host fd of its own,
/// for unit tests above the table.
#[cfg(test)]
pub(crate) fn test_object(kind: ObjectKind, link: &str) -> Arc<GuestObject> {
    Arc::new(GuestObject {
        guest_fd: 7,
        kind,
        link: link.into(),
        link_type: None,
        inode: (0, 0),
        signal: None,
        ring: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(guest_fd: i32, inode: (u64, u64)) -> Arc<GuestObject> {
        Arc::new(GuestObject {
            guest_fd,
            inode,
            ..Arc::into_inner(test_object(ObjectKind::Link, "")).expect("sole owner")
        })
    }

    #[test]
    fn last_reference_closes() {
        let mut t = Table::default();
        let o = obj(7, (0, 0));
        t.insert(100, o.clone());
        t.insert(101, o);
        assert_eq!(t.remove(100), None, "another host fd still refers to it");
        assert_eq!(t.remove(101), Some(7));
        assert_eq!(t.remove(101), None);
        assert!(maybe_ours(100));
    }

    #[test]
    fn stale_numbers_are_not_ours() {
        let mut t = Table::default();
        // fd 0 is open in the test process but is not a memfd with inode (1, 1).
        t.insert(0, obj(3, (1, 1)));
        assert!(t.get(0).is_none());
    }

    #[test]
    fn a_cleared_table_keeps_its_numbers_as_stale_through_the_trait() {
        let fd = crate::sys::memfd_with("t", b"", false).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let inode = inode_of(raw).unwrap();
        let mut t: Box<dyn FdTable> = Box::new(Table::default());
        t.insert(raw, obj(5, inode));
        assert_eq!(t.get(raw).map(|o| o.guest_fd), Some(5));
        assert_eq!(t.in_range(0, u32::MAX), vec![raw]);
        t.clear();
        assert!(t.get(raw).is_none() && t.is_stale(raw));
        drop(fd);
        assert!(
            !t.is_stale(raw),
            "a closed number is no longer the lost object's"
        );
    }
}
