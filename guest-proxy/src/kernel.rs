//! The guest kernel as the proxy sees it: one interface, chosen at start.
//!
//! Every call a session makes into the guest kernel on a client's behalf —
//! `bpf()`, `perf_event_open`, the perf-event `ioctl`s, `read` of an
//! iterator, `close`, and what `/proc/self/fd` and `/proc/self/fdinfo` say
//! about an fd — and every call a ring stream makes (a duplicate of the
//! ring's fd, its mappings, the [`Stop`] its owner fires and the sleep on
//! both, the perf-ring lock limit) goes through a [`Kernel`] the server is
//! given at construction ([`crate::Config::kernel`]) and hands to every session.
//! [`RealKernel`] makes the syscalls; tests give a fake one
//! (`testing::FakeKernel`, in test builds) that answers per command, so session
//! logic, policy, limits and streams are tested without a kernel and without
//! root.
//! As in aya's `sys/fake.rs`, the swap is at the syscall itself, below every
//! decision the proxy makes: a test exercises the code that runs.
//!
//! The errors are the kernel's errnos, unchanged: they travel back to the
//! client as the errno of its own call (the ABI edge), so there is nothing
//! to add to them on the way.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringbuf_mirror::guest::{GuestMapping, MapRegion, Ready, RingMemory, Violation, Wait, Woken};
use telebpf_abi::cmd;

use crate::sys;

/// The kernel calls a session makes for its client.
pub trait Kernel: Send + Sync + fmt::Debug {
    /// `bpf(cmd, attr, size, common, common_size)`: the raw result, or the
    /// errno.
    ///
    /// # Safety
    ///
    /// `attr` must point to `size` bytes the kernel may read and write, and
    /// every pointer inside it must point to memory of the length the
    /// command gives it, alive until the call returns; `common` likewise
    /// for `common_size` bytes (or be null, or an address that is never
    /// mapped when the caller's own could not be read).
    unsafe fn bpf(
        &self,
        cmd: u32,
        attr: *mut u8,
        size: u32,
        common: *mut u8,
        common_size: u32,
    ) -> Result<i64, i32>;

    /// `perf_event_open(attr, pid, cpu, group_fd, flags)`: a new fd, or the
    /// errno.
    ///
    /// # Safety
    ///
    /// `attr` must hold the `size` bytes its `size` field gives, and a
    /// pointer inside it (`config1` of the kprobe and uprobe PMUs) must
    /// point to a NUL-terminated string alive until the call returns.
    unsafe fn perf_event_open(
        &self,
        attr: &mut [u8],
        pid: i32,
        cpu: i32,
        group_fd: i32,
        flags: u64,
    ) -> Result<i64, i32>;

    /// `ioctl(fd, request, arg)` on a perf event.
    ///
    /// # Safety
    ///
    /// When `request` takes a pointer, `arg` must point to memory of the
    /// size `request` reads or writes, alive until the call returns.
    unsafe fn ioctl(&self, fd: i32, request: u64, arg: u64) -> Result<i64, i32>;

    /// `read(fd)` of at most `len` bytes (an iterator's output).
    fn read(&self, fd: i32, len: usize) -> Result<Vec<u8>, i32>;

    /// Closes an fd the proxy holds for a client (each exactly once).
    fn close(&self, fd: i32);

    /// What `readlink("/proc/self/fd/<fd>")` says (`anon_inode:bpf-map`,
    /// …), if anything.
    fn fd_link(&self, fd: i32) -> Option<String>;

    /// The text of `/proc/self/fdinfo/<fd>`.
    fn fdinfo(&self, fd: i32) -> Result<Vec<u8>, i32>;

    /// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a duplicate of `fd` a stream holds
    /// while it lives (closed with [`Kernel::close`]), or the errno.
    fn dup(&self, fd: i32) -> Result<i32, i32>;

    /// A new [`Stop`] for a stream, or the errno.
    fn stop(&self) -> Result<Arc<dyn Stop>, i32>;

    /// Maps `region` of ring fd `fd` (`mmap`, shared), unmapped when the
    /// result drops; the errno is the kernel's (it checks the region
    /// against the object).
    fn map_ring(&self, fd: i32, region: MapRegion) -> Result<RingRegion, i32>;

    /// `/proc/sys/kernel/perf_event_mlock_kb`: KiB of perf ring an
    /// unprivileged user may lock per CPU, if it can be read.
    fn perf_mlock_kb(&self) -> Option<usize>;

    /// The `[bpf]` lines the kernel's `/proc/kallsyms` lists now (its
    /// programs and trampolines), as [`crate::bpf_symbols::bpf_lines`]
    /// reads them; the errno if it cannot be read.
    fn bpf_kallsyms(&self) -> Result<Vec<u8>, i32>;

    /// `BPF_OBJ_GET_INFO_BY_FD` into `info`: the length the kernel filled.
    fn object_info(&self, fd: i32, info: &mut [u8]) -> Result<usize, i32> {
        let mut attr = sys::info_attr(fd, info);
        // SAFETY: `attr.info` points to `info`, valid for `info_len` bytes
        // and alive for the call; the attr holds no other pointer.
        unsafe {
            self.bpf(
                cmd::BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                attr.len() as u32,
                std::ptr::null_mut(),
                0,
            )
        }?;
        Ok(u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]]) as usize)
    }

    /// The ids of every live object a `BPF_*_GET_NEXT_ID` command lists.
    fn live_ids(&self, command: u32) -> Listing {
        let mut ids = HashSet::new();
        let mut id = 0u32;
        loop {
            let mut attr = [0u8; 12];
            attr[0..4].copy_from_slice(&id.to_le_bytes());
            // SAFETY: the attr of GET_NEXT_ID holds no pointer; the kernel
            // reads and writes its 12 bytes.
            let listed = unsafe {
                self.bpf(
                    command,
                    attr.as_mut_ptr(),
                    attr.len() as u32,
                    std::ptr::null_mut(),
                    0,
                )
            };
            match listed {
                Ok(_) => {
                    let next = u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]]);
                    // The kernel lists ids in increasing order; anything
                    // else would loop for ever.
                    if next <= id {
                        return Listing { ids, failed: None };
                    }
                    ids.insert(next);
                    id = next;
                }
                Err(libc::ENOENT) => return Listing { ids, failed: None },
                Err(e) => {
                    return Listing {
                        ids,
                        failed: Some(e),
                    }
                }
            }
        }
    }

    /// The `memlock:` figure of an fd's fdinfo (maps and programs), in
    /// bytes.
    fn fdinfo_memlock(&self, fd: i32) -> Option<u64> {
        let text = self.fdinfo(fd).ok()?;
        std::str::from_utf8(&text)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))?
            .trim()
            .parse()
            .ok()
    }
}

/// The signal that ends a ring stream: the owning session fires it when it
/// closes the ring's fd or ends, and the stream sleeps on it beside the ring,
/// so that it wakes at once.
pub trait Stop: Send + Sync + fmt::Debug {
    /// Wakes the stream and makes it end (any number of times).
    fn fire(&self);

    /// How a stream sleeps on ring fd `ring` (its own duplicate) and on
    /// this stop.
    fn waiter(&self, ring: i32) -> Box<dyn Wait + '_>;
}

/// One mapped region of a guest ring ([`Kernel::map_ring`]): the real
/// kernel's shared mapping or, in unit tests, a fake kernel's simulated
/// ring. An enum rather than a trait object so that the consumers' accesses
/// (a few per record) stay direct calls in the proxy, whose build has only
/// the first kind.
pub enum RingRegion {
    /// A shared mapping of the ring's fd.
    Mapped(GuestMapping),
    /// A region of a fake kernel (`testing::FakeKernel`).
    #[cfg(test)]
    Fake(Box<dyn RingMemory>),
}

impl fmt::Debug for RingRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingRegion::Mapped(m) => f.debug_tuple("Mapped").field(m).finish(),
            #[cfg(test)]
            RingRegion::Fake(m) => write!(f, "Fake({} bytes)", m.size()),
        }
    }
}

/// `$body` with `$m` bound to the region, whichever kind it is.
macro_rules! on_region {
    ($region:expr, $m:ident => $body:expr) => {
        match $region {
            RingRegion::Mapped($m) => $body,
            #[cfg(test)]
            RingRegion::Fake($m) => $body,
        }
    };
}

impl RingMemory for RingRegion {
    fn size(&self) -> usize {
        on_region!(self, m => m.size())
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        on_region!(self, m => m.load_u64(off, order))
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        on_region!(self, m => m.load_u32(off, order))
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        on_region!(self, m => m.store_u64(off, value, order))
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        on_region!(self, m => m.store_u32(off, value, order))
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        on_region!(self, m => m.read(off, out))
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        on_region!(self, m => m.write(off, data))
    }
}

/// What a `BPF_*_GET_NEXT_ID` walk found ([`Kernel::live_ids`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The ids listed.
    pub ids: HashSet<u32>,
    /// The errno that ended the walk before the end of the list (`ENOENT`
    /// is the end), if any: then `ids` may miss live objects.
    pub failed: Option<i32>,
}

/// The machine's own kernel, through the syscalls of `crate::sys`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealKernel;

impl Kernel for RealKernel {
    unsafe fn bpf(
        &self,
        cmd: u32,
        attr: *mut u8,
        size: u32,
        common: *mut u8,
        common_size: u32,
    ) -> Result<i64, i32> {
        // SAFETY: the caller upholds `sys::bpf`'s contract, which is this
        // method's.
        unsafe { sys::bpf(cmd, attr, size, common, common_size) }
    }

    unsafe fn perf_event_open(
        &self,
        attr: &mut [u8],
        pid: i32,
        cpu: i32,
        group_fd: i32,
        flags: u64,
    ) -> Result<i64, i32> {
        // SAFETY: the caller upholds `sys::perf_event_open`'s contract,
        // which is this method's.
        unsafe { sys::perf_event_open(attr, pid, cpu, group_fd, flags) }
    }

    unsafe fn ioctl(&self, fd: i32, request: u64, arg: u64) -> Result<i64, i32> {
        // SAFETY: the caller upholds `sys::ioctl`'s contract, which is this
        // method's.
        unsafe { sys::ioctl(fd, request, arg) }
    }

    fn read(&self, fd: i32, len: usize) -> Result<Vec<u8>, i32> {
        sys::read(fd, len)
    }

    fn close(&self, fd: i32) {
        sys::close(fd);
    }

    fn fd_link(&self, fd: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn fdinfo(&self, fd: i32) -> Result<Vec<u8>, i32> {
        std::fs::read(format!("/proc/self/fdinfo/{fd}"))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn dup(&self, fd: i32) -> Result<i32, i32> {
        // SAFETY: F_DUPFD_CLOEXEC touches no memory; the caller holds `fd`
        // open (see `streams::Owner::attach`).
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EMFILE));
        }
        Ok(dup)
    }

    fn stop(&self) -> Result<Arc<dyn Stop>, i32> {
        Ok(Arc::new(EventStop::new()?))
    }

    fn map_ring(&self, fd: i32, region: MapRegion) -> Result<RingRegion, i32> {
        let MapRegion {
            len,
            writable,
            offset,
            name,
        } = region;
        let mapping = GuestMapping::map(fd, len, writable, offset, name)?;
        Ok(RingRegion::Mapped(mapping))
    }

    fn perf_mlock_kb(&self) -> Option<usize> {
        std::fs::read_to_string(PERF_MLOCK_KB)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    }

    fn bpf_kallsyms(&self) -> Result<Vec<u8>, i32> {
        let file = std::fs::File::open(crate::bpf_symbols::KALLSYMS)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        crate::bpf_symbols::bpf_lines(std::io::BufReader::with_capacity(64 << 10, file))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// `/proc/sys/kernel/perf_event_mlock_kb` ([`Kernel::perf_mlock_kb`]).
const PERF_MLOCK_KB: &str = "/proc/sys/kernel/perf_event_mlock_kb";

/// A [`Stop`] of the real kernel: an eventfd, which the stream polls beside
/// its ring.
#[derive(Debug)]
struct EventStop {
    event: OwnedFd,
}

impl EventStop {
    fn new() -> Result<EventStop, i32> {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EMFILE));
        }
        // SAFETY: a new fd nobody else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventStop { event })
    }
}

impl Stop for EventStop {
    fn fire(&self) {
        let one = 1u64;
        // SAFETY: writing 8 bytes from a local to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn waiter(&self, ring: i32) -> Box<dyn Wait + '_> {
        Box::new(Poller { ring, stop: self })
    }
}

/// Sleeps in `poll` on a ring fd and on its stream's [`EventStop`].
struct Poller<'a> {
    ring: i32,
    stop: &'a EventStop,
}

impl Wait for Poller<'_> {
    fn wait(&mut self, ready: Ready, timeout: Option<Duration>) -> std::io::Result<Woken> {
        let events = match ready {
            Ready::Data => libc::POLLIN,
            Ready::Room => libc::POLLOUT,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
        let mut pfds = [
            libc::pollfd {
                fd: self.ring,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop.event.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(Woken::Timeout)
            } else {
                Err(e)
            };
        }
        Ok(if pfds[1].revents != 0 {
            Woken::Stop
        } else if pfds[0].revents != 0 {
            Woken::Ring
        } else {
            Woken::Timeout
        })
    }

    fn stopped(&mut self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.stop.event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }
}
