//! Keeping the fd table in step with the program's fd operations, and the
//! operations on guest-object fds themselves (`read` of iterators, `mmap`).
//! The waits (`epoll_wait`, `poll`, `select`) are in `waits`.

use libc::{c_int, c_long, c_uint, c_void, off_t, size_t, ssize_t};
use telebpf_host::objects::{alias, forget};
use telebpf_host::{fdtable, memory, state, vfs};

use super::{action, keep_errno};
use crate::guard::{self, Action};
use crate::real;

/// Interposed `close`.
///
/// # Safety
///
/// Same contract as libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if !fdtable::maybe_ours(fd) {
        // SAFETY: forwarded under the caller's contract.
        return unsafe { real::close(fd) };
    }
    close_ours(fd)
}

/// [`close`] of an fd that may stand for a guest object. Out of line, so
/// that closing a host fd is the bitmap look-up and the real call only.
#[cold]
#[inline(never)]
fn close_ours(fd: c_int) -> c_int {
    // SAFETY: forwarded under `close`'s contract.
    let pass = || unsafe { real::close(fd) };
    guard::enter(
        pass,
        || {
            forget(fd);
            vfs::flush_append(fd);
            keep_errno(pass())
        },
        -1,
    )
}

/// Interposed `close_range`.
///
/// # Safety
///
/// Same contract as libc's `close_range`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::close_range(first, last, flags) };
    if !state::configured() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let r = pass();
            if r == 0 && flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
                let ours = state::get().table().in_range(first, last);
                ours.into_iter().for_each(forget);
            }
            keep_errno(r)
        },
        -1,
    )
}

/// Interposed `dup`.
///
/// # Safety
///
/// Same contract as libc's `dup`.
#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    if !fdtable::maybe_ours(old) {
        // SAFETY: forwarded under the caller's contract.
        return unsafe { real::dup(old) };
    }
    dup_ours(old)
}

/// [`dup`] of an fd that may stand for a guest object (out of line, as
/// [`close_ours`]).
#[cold]
#[inline(never)]
fn dup_ours(old: c_int) -> c_int {
    // SAFETY: forwarded under `dup`'s contract.
    let pass = || unsafe { real::dup(old) };
    guard::enter(
        pass,
        || {
            let r = pass();
            if r >= 0 {
                alias(old, r);
            }
            keep_errno(r)
        },
        -1,
    )
}

fn dup_to(old: c_int, new: c_int, call: impl FnOnce() -> c_int) -> c_int {
    if (!fdtable::maybe_ours(old) && !fdtable::maybe_ours(new)) || old == new {
        return call();
    }
    // `call` runs exactly once on every path below; wrap it so both
    // closures can own a path to it.
    let call = std::cell::Cell::new(Some(call));
    let run = || call.take().map_or(-1, |f| f());
    guard::enter(
        run,
        || {
            let r = run();
            if r >= 0 {
                alias(old, new);
            }
            keep_errno(r)
        },
        -1,
    )
}

/// Interposed `dup2`.
///
/// # Safety
///
/// Same contract as libc's `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    dup_to(old, new, || unsafe { real::dup2(old, new) })
}

/// Interposed `dup3` (libbpf uses it to move an fd onto a placeholder).
///
/// # Safety
///
/// Same contract as libc's `dup3`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    dup_to(old, new, || unsafe { real::dup3(old, new, flags) })
}

fn fcntl_common(fd: c_int, cmd: c_int, call: impl Fn() -> c_int) -> c_int {
    if !(cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) || !fdtable::maybe_ours(fd) {
        return call();
    }
    guard::enter(
        &call,
        || {
            let r = call();
            if r >= 0 {
                alias(fd, r);
            }
            keep_errno(r)
        },
        -1,
    )
}

/// Interposed `fcntl` (`F_DUPFD*` create new references).
///
/// # Safety
///
/// Same contract as libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    fcntl_common(fd, cmd, || unsafe { real::fcntl(fd, cmd, arg) })
}

/// Interposed `fcntl64`.
///
/// # Safety
///
/// Same contract as libc's `fcntl64`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    fcntl_common(fd, cmd, || unsafe { real::fcntl64(fd, cmd, arg) })
}

/// Interposed `read`: a BPF iterator fd reads the guest iterator.
///
/// # Safety
///
/// Same contract as libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::read(fd, buf, n) };
    if !fdtable::maybe_ours(fd) {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let Some(obj) = state::get().table().get(fd).cloned() else {
                return Action::Pass;
            };
            let bytes = match telebpf_host::objects::read(&obj, n) {
                Ok(bytes) => bytes,
                Err(e) => return Action::Fail(e.errno(), -1),
            };
            match memory::write(buf as u64, &bytes) {
                Ok(()) => Action::Done(bytes.len() as ssize_t),
                Err(e) => Action::Fail(e, -1),
            }
        },
        -1,
    )
}

fn mmap_common(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
    call: impl Fn() -> *mut c_void,
) -> *mut c_void {
    if !fdtable::maybe_ours(fd) {
        return call();
    }
    guard::enter(
        &call,
        || {
            let Some(obj) = state::get().table().get(fd).cloned() else {
                return Action::Pass;
            };
            action(
                telebpf_host::mmap::mmap(&obj, addr, len, prot, flags, off),
                libc::MAP_FAILED,
            )
        },
        libc::MAP_FAILED,
    )
}

/// Interposed `mmap`.
///
/// # Safety
///
/// Same contract as libc's `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarded under the caller's contract.
    mmap_common(addr, len, prot, flags, fd, off, || unsafe {
        real::mmap(addr, len, prot, flags, fd, off)
    })
}

/// Interposed `mmap64`.
///
/// # Safety
///
/// Same contract as libc's `mmap64`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarded under the caller's contract.
    mmap_common(addr, len, prot, flags, fd, off, || unsafe {
        real::mmap64(addr, len, prot, flags, fd, off)
    })
}

/// Interposed `ioctl`: perf-event ioctls on guest perf events are
/// forwarded, interface lookups on any socket answered for the guest
/// (`super::net`); anything else on a guest object fails as the kernel
/// would for a request the object does not know.
///
/// # Safety
///
/// Same contract as libc's `ioctl`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: libc::c_ulong) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::ioctl(fd, request, arg) };
    if super::net::is_interface_ioctl(request) {
        return super::net::interface_ioctl(fd, request, arg, pass);
    }
    if !fdtable::maybe_ours(fd) {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let Some(guest) = state::get().table().get(fd).map(|o| o.guest_fd) else {
                return Action::Pass;
            };
            action(
                telebpf_host::perf::ioctl(guest, request, arg).map(|r| r as c_int),
                -1,
            )
        },
        -1,
    )
}
