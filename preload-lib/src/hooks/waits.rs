//! The program's waits: `epoll_wait`, `epoll_pwait`, `epoll_pwait2`,
//! `poll`, `ppoll` (and their `_FORTIFY_SOURCE` forms), `select`, `pselect`.
//!
//! They matter only once a ring is mirrored; until then each costs one
//! relaxed load. Then, before the real wait:
//!
//! * **Readiness.** A program waits once it has consumed what it wanted, so
//!   this is where the readiness of fully consumed rings is lowered
//!   (`rings::before_wait`): the next wait sleeps until the mirror pushes.
//! * **A lost proxy** ([`telebpf_host::lost`]). A wait that involves a mirrored
//!   ring's fd fails with the lost errno instead of sleeping on a ring that
//!   will never fill: libbpf's `ring_buffer__poll`/`perf_buffer__poll`
//!   return it and the tool ends with its own error. The ring fds are the
//!   fd table's pollable objects (the table keeps the lost session's
//!   objects until the program closes them). `poll` and `select` name
//!   their fds; an epoll set is read from `/proc/self/fdinfo/EPFD`,
//!   whose `tfd:` lines carry each watched file's inode (and a nested epoll
//!   set is followed) — on this path only, never on the hot one. A program
//!   asleep in the real wait when the loss is declared is woken by the
//!   rings' readiness, which is raised and stays so (`rings::wake_all`).
//!
//!   Waits that involve no ring fd are left alone: the program's own
//!   sockets, timers, signalfds and stdin still work, so it can still shut
//!   down cleanly, serve its other duties, or report; it learns of the loss
//!   where it is blind — its ring waits and its calls — and from the line
//!   on its stderr.

use libc::{c_int, size_t};
use telebpf_host::sys::inode_of;
use telebpf_host::{lost, memory, rings, state};

use crate::guard::{self, Action};
use crate::real;

/// What every wait does first; `Some(errno)` fails the wait with it
/// (`involves_ring` says whether the wait involves a ring's fd, asked only
/// once the proxy is lost). Inline: without a mirrored ring this is the
/// whole cost of the hook, one relaxed load.
#[inline(always)]
fn before(involves_ring: impl FnOnce() -> bool) -> Option<c_int> {
    if !rings::any() {
        return None;
    }
    let mut involves_ring = Some(involves_ring);
    before_mirrored(&mut || involves_ring.take().is_some_and(|f| f()))
}

/// [`before`] once a ring is mirrored.
#[cold]
#[inline(never)]
fn before_mirrored(involves_ring: &mut dyn FnMut() -> bool) -> Option<c_int> {
    if guard::inside() {
        return None;
    }
    let mut fail = None;
    guard::enter(
        || (),
        || {
            if let Some(e) = lost::suspected().then(lost::errno).flatten() {
                if involves_ring() {
                    fail = Some(e);
                }
                // Once lost, readiness stays raised: no lowering.
                return Action::Done(());
            }
            rings::before_wait();
            Action::Done(())
        },
        (),
    );
    fail
}

/// Fails the wait: `-1` with `errno`.
fn failed(errno: c_int) -> c_int {
    crate::errno::set(errno);
    -1
}

/// `(st_dev, st_ino)` of the program's fds that stand for rings (ring
/// buffers, user ring buffers, perf events: the objects a program waits
/// on), from the fd table, which keeps the lost session's objects.
fn ring_inodes() -> Vec<(u64, u64)> {
    let table = state::get().table();
    table
        .in_range(0, u32::MAX)
        .into_iter()
        .filter_map(|fd| {
            table
                .get(fd)
                .filter(|o| o.signal.is_some())
                .map(|o| o.inode)
        })
        .collect()
}

/// Whether the open fd `fd` is one of `rings`.
fn fd_is_ring(fd: c_int, rings: &[(u64, u64)]) -> bool {
    fd >= 0 && inode_of(fd).is_some_and(|i| rings.contains(&i))
}

/// Whether any of the `n` pollfds at `fds` is a ring's fd (an unreadable
/// array is the real call's `EFAULT` to give).
fn pollfds_have_ring(fds: *const libc::pollfd, n: libc::nfds_t) -> bool {
    let size = std::mem::size_of::<libc::pollfd>();
    let Ok(bytes) = memory::read(fds as u64, (n as usize).saturating_mul(size)) else {
        return false;
    };
    let rings = ring_inodes();
    bytes.chunks_exact(size).any(|p| {
        // `fd` is the pollfd's first field.
        fd_is_ring(
            c_int::from_ne_bytes(p[..4].try_into().expect("4 bytes")),
            &rings,
        )
    })
}

/// Whether any fd below `n` set in one of the three sets is a ring's fd.
fn fd_sets_have_ring(n: c_int, sets: [*const libc::fd_set; 3]) -> bool {
    let n = n.clamp(0, libc::FD_SETSIZE as c_int) as usize;
    let len = n.div_ceil(8);
    let rings = ring_inodes();
    sets.iter().filter(|s| !s.is_null()).any(|&set| {
        let Ok(bits) = memory::read(set as u64, len) else {
            return false;
        };
        (0..n).any(|fd| bits[fd / 8] & (1 << (fd % 8)) != 0 && fd_is_ring(fd as c_int, &rings))
    })
}

/// How deep an epoll set may nest others (the kernel's `EP_MAX_NESTS`).
const EPOLL_MAX_NESTS: u32 = 4;

/// Whether the epoll set `epfd` watches a ring's fd, directly or through
/// a nested epoll set, read from `/proc/self/fdinfo/EPFD`.
fn epoll_has_ring(epfd: c_int) -> bool {
    epoll_watches(epfd, &ring_inodes(), 0)
}

fn epoll_watches(epfd: c_int, rings: &[(u64, u64)], depth: u32) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
        return false;
    };
    epoll_targets(&info).into_iter().any(|t| {
        rings.contains(&t.inode)
            || (depth < EPOLL_MAX_NESTS
                && inode_of(t.fd) == Some(t.inode)
                && is_epoll(t.fd)
                && epoll_watches(t.fd, rings, depth + 1))
    })
}

/// Whether `fd` is an epoll set.
fn is_epoll(fd: c_int) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]")
}

/// One file an epoll set watches.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The fd number it was added under (it may have been closed or
    /// reused since).
    fd: c_int,
    /// Its `(st_dev, st_ino)`.
    inode: (u64, u64),
}

/// The `tfd:` lines of an epoll fd's fdinfo, as `fs/eventpoll.c`'s
/// `ep_show_fdinfo` prints them:
/// `tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x`, where
/// `sdev` is the kernel's `dev_t` (major above bit 20), not `st_dev`'s.
fn epoll_targets(info: &str) -> Vec<Target> {
    info.lines()
        .filter_map(|line| {
            let fd = line
                .strip_prefix("tfd:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let hex = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            let (ino, sdev) = (hex("ino:")?, hex("sdev:")?);
            let dev = libc::makedev((sdev >> 20) as u32, (sdev & 0xf_ffff) as u32);
            Some(Target {
                fd,
                inode: (dev, ino),
            })
        })
        .collect()
}

/// Interposed `epoll_wait`.
///
/// # Safety
///
/// Same contract as libc's `epoll_wait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    if let Some(e) = before(|| epoll_has_ring(epfd)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::epoll_wait(epfd, events, max, timeout) }
}

/// Interposed `epoll_pwait`.
///
/// # Safety
///
/// Same contract as libc's `epoll_pwait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if let Some(e) = before(|| epoll_has_ring(epfd)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::epoll_pwait(epfd, events, max, timeout, sigmask) }
}

/// Interposed `epoll_pwait2`.
///
/// # Safety
///
/// Same contract as libc's `epoll_pwait2`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if let Some(e) = before(|| epoll_has_ring(epfd)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::epoll_pwait2(epfd, events, max, timeout, sigmask) }
}

/// Interposed `poll`.
///
/// # Safety
///
/// Same contract as libc's `poll`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    if let Some(e) = before(|| pollfds_have_ring(fds, n)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::poll(fds, n, timeout) }
}

/// Interposed `__poll_chk` (`poll` under `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// Same contract as glibc's `__poll_chk`.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if let Some(e) = before(|| pollfds_have_ring(fds, n)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::__poll_chk(fds, n, timeout, fdslen) }
}

/// Interposed `ppoll`.
///
/// # Safety
///
/// Same contract as libc's `ppoll`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if let Some(e) = before(|| pollfds_have_ring(fds, n)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::ppoll(fds, n, timeout, sigmask) }
}

/// Interposed `__ppoll_chk` (`ppoll` under `_FORTIFY_SOURCE`).
///
/// # Safety
///
/// Same contract as glibc's `__ppoll_chk`.
#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    fdslen: size_t,
) -> c_int {
    if let Some(e) = before(|| pollfds_have_ring(fds, n)) {
        return failed(e);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::__ppoll_chk(fds, n, timeout, sigmask, fdslen) }
}

/// Interposed `select`.
///
/// # Safety
///
/// Same contract as libc's `select`.
#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    if let Some(errno) = before(|| fd_sets_have_ring(n, [r, w, e].map(|s| s as *const _))) {
        return failed(errno);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::select(n, r, w, e, timeout) }
}

/// Interposed `pselect`.
///
/// # Safety
///
/// Same contract as libc's `pselect`.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if let Some(errno) = before(|| fd_sets_have_ring(n, [r, w, e].map(|s| s as *const _))) {
        return failed(errno);
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::pselect(n, r, w, e, timeout, sigmask) }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn fdinfo_tfd_lines_give_fd_and_inode() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\n\
            tfd:        5 events:       19 data:                5  pos:0 ino:2a8e sdev:e\n\
            tfd:       12 events:       19 data:                c  pos:0 ino:ffff sdev:900001\n";
        assert_eq!(
            epoll_targets(info),
            vec![
                Target {
                    fd: 5,
                    inode: (libc::makedev(0, 14), 0x2a8e)
                },
                Target {
                    fd: 12,
                    inode: (libc::makedev(9, 1), 0xffff)
                },
            ]
        );
    }

    /// The kernel's fdinfo of a real epoll set names a pipe by the same
    /// `(st_dev, st_ino)` as `fstat` does.
    #[test]
    fn a_real_epoll_set_names_its_pipe_as_fstat_does() {
        let mut p = [0; 2];
        // SAFETY: room for two fds.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid fds and event.
        let added = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut ev) };
        assert_eq!(added, 0);
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{ep}")).unwrap();
        let targets = epoll_targets(&info);
        assert_eq!(targets.len(), 1, "{info}");
        assert_eq!(targets[0].fd, p[0]);
        assert_eq!(Some(targets[0].inode), inode_of(p[0]), "{info}");
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(is_epoll(ep) && !is_epoll(file.as_raw_fd()));
        for fd in [p[0], p[1], ep] {
            // SAFETY: closing our own fds.
            unsafe { libc::close(fd) };
        }
    }
}
