//! Paths that describe the guest kernel: `open`/`fopen`/`stat`/`access`/
//! `statfs`/`readlink`, and `mkdir`/`unlink`/`unlinkat`/`rmdir` in bpffs;
//! paths of the guest's cgroups and the mount tables go on to
//! [`super::dirs`].

use libc::{c_char, c_int, mode_t, size_t, ssize_t};
use telebpf_host::cgroup;
use telebpf_host::error::{Error, Result};
use telebpf_host::vfs::{self, Route};
use telebpf_host::{memory, state};
use telebpf_protocol::message::{FileOp, FileReply};
use telebpf_protocol::paths;

use super::{action, dirs};
use crate::guard::{self, Action};
use crate::real;

/// The route of a path, or `Local` when the library itself is the caller.
/// The path is looked at first: a host path (nearly every call) is decided
/// from its first bytes, without the thread-local look-up of the guard
/// (`__tls_get_addr` in a shared library); routing takes no lock, so
/// asking it from inside the library is harmless.
///
/// # Safety
///
/// `path` must be null or NUL-terminated.
#[inline(always)]
unsafe fn route_of(path: *const c_char) -> Route {
    // SAFETY: per this function's contract.
    match unsafe { vfs::route(path) } {
        Route::Local => Route::Local,
        _ if guard::inside() => Route::Local,
        route => route,
    }
}

fn open_routed(route: Route, flags: c_int) -> Action<c_int> {
    match route {
        // Opening a bpffs entry or an object's /proc/self/fd link has no
        // guest meaning beyond what the kernel does locally with the memfd.
        Route::Local | Route::FdLink(_) => Action::Pass,
        Route::Guest(p) if paths::is_bpffs(&p) => Action::Pass,
        Route::Guest(p) => action(vfs::open_guest(&p, flags), -1),
        Route::Cgroup(p) => dirs::open(&p, flags),
        Route::Mounts(which) => action(cgroup::open_mounts(which), -1),
        Route::Fdinfo(fd) => match vfs::open_fdinfo(fd) {
            Ok(Some(fd)) => Action::Done(fd),
            Ok(None) => Action::Pass,
            Err(e) => Action::Fail(e.errno(), -1),
        },
    }
}

/// Defines an interposed libc function taking a path: host paths go
/// straight to libc; guest ones to `$handle`, under the guard, with `$route`
/// bound to where the path leads.
macro_rules! path_hook {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty,
     path = $path:ident, on_panic = $err:expr, |$route:ident| $handle:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// Same contract as the libc function of that name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            /// The path is the guest's: handled under the guard. Out of
            /// line, so that a host path's call is the route and the real
            /// function only.
            #[cold]
            #[inline(never)]
            unsafe fn routed($route: Route, $($arg: $ty),*) -> $ret {
                // SAFETY: forwarded under the caller's contract.
                let pass = || unsafe { real::$name($($arg),*) };
                guard::enter(pass, || $handle, $err)
            }
            // SAFETY: the caller passes a NUL-terminated path (or null).
            match unsafe { route_of($path) } {
                // SAFETY: forwarded under the caller's contract.
                Route::Local => unsafe { real::$name($($arg),*) },
                // SAFETY: as this function's.
                route => unsafe { routed(route, $($arg),*) },
            }
        }
    };
}

/// `fopen` of a guest file: the guest's bytes behind a real `FILE`.
fn fopen_routed(route: Route, mode: *const c_char) -> Action<*mut libc::FILE> {
    let null = std::ptr::null_mut();
    if mode.is_null() {
        return Action::Pass;
    }
    // SAFETY: fopen's mode is a NUL-terminated string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let flags = if m.contains(&b'e') {
        libc::O_CLOEXEC
    } else {
        0
    };
    let writes = m.iter().any(|c| matches!(c, b'w' | b'a' | b'+'));
    let fd = match open_routed(
        route,
        if writes { libc::O_RDWR } else { libc::O_RDONLY } | flags,
    ) {
        Action::Pass => return Action::Pass,
        Action::Fail(e, _) => return Action::Fail(e, null),
        Action::Done(fd) => fd,
    };
    // SAFETY: `fd` is a fresh fd we own; fdopen takes ownership on success.
    let f = unsafe { libc::fdopen(fd, mode) };
    if f.is_null() {
        let e = crate::errno::get();
        // SAFETY: closing the fd we just opened.
        unsafe { real::close(fd) };
        return Action::Fail(e, null);
    }
    Action::Done(f)
}

/// Runs `op` in the guest for a guest path; other routes pass.
fn guest_op(
    route: Route,
    op: impl FnOnce(String) -> FileOp,
    done: impl FnOnce(FileReply) -> Result<c_int>,
) -> Action<c_int> {
    match route {
        Route::Guest(p) => action(vfs::file_op(op(p)).and_then(done), -1),
        Route::Cgroup(p) => dirs::unserved(&p),
        _ => Action::Pass,
    }
}

fn access_routed(route: Route, mode: c_int) -> Action<c_int> {
    if let Route::Cgroup(p) = route {
        return dirs::access(&p, mode);
    }
    guest_op(route, |path| FileOp::Access { path, mode }, |_| Ok(0))
}

fn stat_routed(route: Route, follow: bool, buf: *mut libc::stat) -> Action<c_int> {
    if let Route::Cgroup(p) = route {
        return dirs::stat(&p, buf);
    }
    guest_op(
        route,
        |path| FileOp::Stat { path, follow },
        |r| match r {
            FileReply::Stat(info) => vfs::fill_stat(&info, buf).map(|()| 0),
            _ => Err(Error::Protocol("a stat request")),
        },
    )
}

fn statfs_routed(route: Route, buf: *mut libc::statfs) -> Action<c_int> {
    guest_op(
        route,
        |path| FileOp::Statfs { path },
        |r| match r {
            FileReply::Statfs(info) => vfs::fill_statfs(&info, buf).map(|()| 0),
            _ => Err(Error::Protocol("a statfs request")),
        },
    )
}

fn readlink_routed(route: Route, buf: *mut c_char, size: size_t) -> Action<ssize_t> {
    let target = match route {
        Route::FdLink(fd) => match state::get().table().get(fd) {
            Some(obj) => obj.link.clone(),
            None => return Action::Pass,
        },
        Route::Guest(path) => match vfs::file_op(FileOp::Readlink { path }) {
            Ok(FileReply::Link(t)) => t,
            Ok(_) => return Action::Fail(libc::EPROTO, -1),
            Err(e) => return Action::Fail(e.errno(), -1),
        },
        _ => return Action::Pass,
    };
    // readlink truncates silently and does not terminate.
    let bytes = &target.as_bytes()[..target.len().min(size)];
    match memory::write(buf as u64, bytes) {
        Ok(()) => Action::Done(bytes.len() as ssize_t),
        Err(e) => Action::Fail(e, -1),
    }
}

path_hook!(
    /// Interposed `open`.
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed `open64`.
    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed `openat` (absolute paths only reach the guest).
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed `openat64`.
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed fortified `open`.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed fortified `open64`.
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int,
    path = path, on_panic = -1, |route| open_routed(route, flags)
);
path_hook!(
    /// Interposed `fopen` (libbpf reads BTF, kallsyms and fdinfo with it).
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE,
    path = path, on_panic = std::ptr::null_mut(), |route| fopen_routed(route, mode)
);
path_hook!(
    /// Interposed `fopen64`.
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE,
    path = path, on_panic = std::ptr::null_mut(), |route| fopen_routed(route, mode)
);
path_hook!(
    /// Interposed `access`.
    fn access(path: *const c_char, mode: c_int) -> c_int,
    path = path, on_panic = -1, |route| access_routed(route, mode)
);
path_hook!(
    /// Interposed `faccessat` (libbpf checks `/sys/kernel/btf/vmlinux` with it).
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int,
    path = path, on_panic = -1, |route| access_routed(route, mode)
);
path_hook!(
    /// Interposed `stat`.
    fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int,
    path = path, on_panic = -1, |route| stat_routed(route, true, buf)
);
path_hook!(
    /// Interposed `stat64`.
    fn stat64(path: *const c_char, buf: *mut libc::stat) -> c_int,
    path = path, on_panic = -1, |route| stat_routed(route, true, buf)
);
path_hook!(
    /// Interposed `lstat`.
    fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int,
    path = path, on_panic = -1, |route| stat_routed(route, false, buf)
);
path_hook!(
    /// Interposed `lstat64`.
    fn lstat64(path: *const c_char, buf: *mut libc::stat) -> c_int,
    path = path, on_panic = -1, |route| stat_routed(route, false, buf)
);
path_hook!(
    /// Interposed `fstatat`.
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int,
    path = path, on_panic = -1,
    |route| stat_routed(route, flags & libc::AT_SYMLINK_NOFOLLOW == 0, buf)
);
path_hook!(
    /// Interposed `fstatat64`.
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int,
    path = path, on_panic = -1,
    |route| stat_routed(route, flags & libc::AT_SYMLINK_NOFOLLOW == 0, buf)
);
path_hook!(
    /// Interposed `statfs` (bpftool and libbpf check for bpffs with it).
    fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int,
    path = path, on_panic = -1, |route| statfs_routed(route, buf)
);
path_hook!(
    /// Interposed `statfs64`.
    fn statfs64(path: *const c_char, buf: *mut libc::statfs) -> c_int,
    path = path, on_panic = -1, |route| statfs_routed(route, buf)
);
path_hook!(
    /// Interposed `readlink` (bpftool learns an fd's type from
    /// `/proc/self/fd/N`).
    fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t,
    path = path, on_panic = -1, |route| readlink_routed(route, buf, size)
);
path_hook!(
    /// Interposed `readlinkat`.
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t,
    path = path, on_panic = -1, |route| readlink_routed(route, buf, size)
);
path_hook!(
    /// Interposed `mkdir` (libbpf creates pin directories).
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int,
    path = path, on_panic = -1,
    |route| guest_op(route, |path| FileOp::Mkdir { path, mode }, |_| Ok(0))
);
path_hook!(
    /// Interposed `unlink` (removing a pin).
    fn unlink(path: *const c_char) -> c_int,
    path = path, on_panic = -1, |route| guest_op(route, |path| FileOp::Unlink { path }, |_| Ok(0))
);
path_hook!(
    /// Interposed `unlinkat` (coreutils' `rm` and `rm -r` remove with it):
    /// `AT_REMOVEDIR` is `rmdir`, anything else `unlink`. Only an absolute
    /// path can name the guest's bpffs, so `dirfd` plays no part.
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int,
    path = path, on_panic = -1,
    |route| guest_op(
        route,
        |path| if flags & libc::AT_REMOVEDIR != 0 {
            FileOp::Rmdir { path }
        } else {
            FileOp::Unlink { path }
        },
        |_| Ok(0)
    )
);
path_hook!(
    /// Interposed `rmdir`.
    fn rmdir(path: *const c_char) -> c_int,
    path = path, on_panic = -1, |route| guest_op(route, |path| FileOp::Rmdir { path }, |_| Ok(0))
);
