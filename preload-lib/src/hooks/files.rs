//! Paths that describe the guest kernel: `open`/`fopen`/`stat`/`access`/
//! `statfs`/`readlink`, and `mkdir`/`unlink`/`rmdir` in bpffs.

use libc::{c_char, c_int, mode_t, size_t, ssize_t};
use telebpf_protocol::message::{FileOp, FileReply};
use telebpf_protocol::paths;

use super::action;
use crate::guard::{self, Action};
use crate::state::Failure;
use crate::vfs::{self, Route};
use crate::{real, state};

/// The route of a path, or `Local` when the library itself is the caller.
///
/// # Safety
///
/// `path` must be null or NUL-terminated.
unsafe fn route_of(path: *const c_char) -> Route {
    if guard::inside() {
        return Route::Local;
    }
    // SAFETY: per this function's contract.
    unsafe { vfs::route(path) }
}

fn open_routed(route: Route, flags: c_int) -> Action<c_int> {
    match route {
        // Opening a bpffs entry or an object's /proc/self/fd link has no
        // guest meaning beyond what the kernel does locally with the memfd.
        Route::Local | Route::FdLink(_) => Action::Pass,
        Route::Guest(p) if paths::is_bpffs(&p) => Action::Pass,
        Route::Guest(p) => action(vfs::open_guest(&p, flags), -1),
        Route::Fdinfo(fd) => match vfs::open_fdinfo(fd) {
            Ok(Some(fd)) => Action::Done(fd),
            Ok(None) => Action::Pass,
            Err(Failure(e)) => Action::Fail(e, -1),
        },
    }
}

macro_rules! open_hooks {
    ($( $name:ident ( $($dir:ident: $dty:ty)? ) ; )*) => {$(
        /// Interposed libc function of the same name.
        ///
        /// # Safety
        ///
        /// Same contract as the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($dir: $dty,)? path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
            // SAFETY: forwarded under the caller's contract.
            let pass = || unsafe { real::$name($($dir,)? path, flags, mode) };
            // SAFETY: the caller passes a NUL-terminated path.
            let route = unsafe { route_of(path) };
            if route == Route::Local {
                return pass();
            }
            guard::enter(pass, || open_routed(route, flags), -1)
        }
    )*};
}

open_hooks! {
    open();
    open64();
    openat(dirfd: c_int);
    openat64(dirfd: c_int);
}

macro_rules! open_2_hooks {
    ($($name:ident;)*) => {$(
        /// Interposed fortified `open` of the same name.
        ///
        /// # Safety
        ///
        /// Same contract as the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            // SAFETY: forwarded under the caller's contract.
            let pass = || unsafe { real::$name(path, flags) };
            // SAFETY: the caller passes a NUL-terminated path.
            let route = unsafe { route_of(path) };
            if route == Route::Local {
                return pass();
            }
            guard::enter(pass, || open_routed(route, flags), -1)
        }
    )*};
}

open_2_hooks! {
    __open_2;
    __open64_2;
}

/// `fopen` of a guest file: the guest's bytes behind a real `FILE`.
fn fopen_routed(route: Route, mode: *const c_char) -> Action<*mut libc::FILE> {
    let null = std::ptr::null_mut();
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

/// Interposed `fopen`.
///
/// # Safety
///
/// Same contract as libc's `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::fopen(path, mode) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local || mode.is_null() {
        return pass();
    }
    guard::enter(pass, || fopen_routed(route, mode), std::ptr::null_mut())
}

/// Interposed `fopen64`.
///
/// # Safety
///
/// Same contract as libc's `fopen64`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::fopen64(path, mode) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local || mode.is_null() {
        return pass();
    }
    guard::enter(pass, || fopen_routed(route, mode), std::ptr::null_mut())
}

/// Runs `op` in the guest for a guest path; other routes pass.
fn guest_op(
    route: Route,
    op: impl FnOnce(String) -> FileOp,
    done: impl FnOnce(FileReply) -> Result<c_int, Failure>,
) -> Action<c_int> {
    match route {
        Route::Guest(p) => action(vfs::file_op(op(p)).and_then(done), -1),
        _ => Action::Pass,
    }
}

fn access_routed(route: Route, mode: c_int) -> Action<c_int> {
    guest_op(route, |path| FileOp::Access { path, mode }, |_| Ok(0))
}

/// Interposed `access`.
///
/// # Safety
///
/// Same contract as libc's `access`.
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::access(path, mode) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || access_routed(route, mode), -1)
}

/// Interposed `faccessat` (libbpf checks `/sys/kernel/btf/vmlinux` with it).
///
/// # Safety
///
/// Same contract as libc's `faccessat`.
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::faccessat(dirfd, path, mode, flags) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || access_routed(route, mode), -1)
}

fn stat_routed(route: Route, follow: bool, buf: *mut libc::stat) -> Action<c_int> {
    guest_op(
        route,
        |path| FileOp::Stat { path, follow },
        |r| match r {
            FileReply::Stat(info) => vfs::fill_stat(&info, buf).map(|()| 0),
            _ => Err(Failure(libc::EPROTO)),
        },
    )
}

macro_rules! stat_hooks {
    ($( $name:ident ( $($dir:ident: $dty:ty)? ; $($flags:ident)? ) follow = $follow:expr ; )*) => {$(
        /// Interposed libc function of the same name.
        ///
        /// # Safety
        ///
        /// Same contract as the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($dir: $dty,)? path: *const c_char, buf: *mut libc::stat $(, $flags: c_int)?) -> c_int {
            // SAFETY: forwarded under the caller's contract.
            let pass = || unsafe { real::$name($($dir,)? path, buf $(, $flags)?) };
            // SAFETY: the caller passes a NUL-terminated path.
            let route = unsafe { route_of(path) };
            if route == Route::Local {
                return pass();
            }
            guard::enter(pass, || stat_routed(route, $follow, buf), -1)
        }
    )*};
}

stat_hooks! {
    stat(;) follow = true;
    stat64(;) follow = true;
    lstat(;) follow = false;
    lstat64(;) follow = false;
    fstatat(dirfd: c_int; flags) follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    fstatat64(dirfd: c_int; flags) follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
}

fn statfs_routed(route: Route, buf: *mut libc::statfs) -> Action<c_int> {
    guest_op(
        route,
        |path| FileOp::Statfs { path },
        |r| match r {
            FileReply::Statfs(info) => vfs::fill_statfs(&info, buf).map(|()| 0),
            _ => Err(Failure(libc::EPROTO)),
        },
    )
}

/// Interposed `statfs` (bpftool and libbpf check for bpffs with it).
///
/// # Safety
///
/// Same contract as libc's `statfs`.
#[no_mangle]
pub unsafe extern "C" fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::statfs(path, buf) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || statfs_routed(route, buf), -1)
}

/// Interposed `statfs64`.
///
/// # Safety
///
/// Same contract as libc's `statfs64`.
#[no_mangle]
pub unsafe extern "C" fn statfs64(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::statfs64(path, buf) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || statfs_routed(route, buf), -1)
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
            Err(Failure(e)) => return Action::Fail(e, -1),
        },
        _ => return Action::Pass,
    };
    // readlink truncates silently and does not terminate.
    let bytes = &target.as_bytes()[..target.len().min(size)];
    match crate::memory::write(buf as u64, bytes) {
        Ok(()) => Action::Done(bytes.len() as ssize_t),
        Err(e) => Action::Fail(e, -1),
    }
}

/// Interposed `readlink` (bpftool learns an fd's type from
/// `/proc/self/fd/N`).
///
/// # Safety
///
/// Same contract as libc's `readlink`.
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::readlink(path, buf, size) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || readlink_routed(route, buf, size), -1)
}

/// Interposed `readlinkat`.
///
/// # Safety
///
/// Same contract as libc's `readlinkat`.
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: size_t,
) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::readlinkat(dirfd, path, buf, size) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(pass, || readlink_routed(route, buf, size), -1)
}

/// Interposed `mkdir` (libbpf creates pin directories).
///
/// # Safety
///
/// Same contract as libc's `mkdir`.
#[no_mangle]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::mkdir(path, mode) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(
        pass,
        || guest_op(route, |path| FileOp::Mkdir { path, mode }, |_| Ok(0)),
        -1,
    )
}

/// Interposed `unlink` (removing a pin).
///
/// # Safety
///
/// Same contract as libc's `unlink`.
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::unlink(path) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(
        pass,
        || guest_op(route, |path| FileOp::Unlink { path }, |_| Ok(0)),
        -1,
    )
}

/// Interposed `rmdir`.
///
/// # Safety
///
/// Same contract as libc's `rmdir`.
#[no_mangle]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::rmdir(path) };
    // SAFETY: the caller passes a NUL-terminated path.
    let route = unsafe { route_of(path) };
    if route == Route::Local {
        return pass();
    }
    guard::enter(
        pass,
        || guest_op(route, |path| FileOp::Rmdir { path }, |_| Ok(0)),
        -1,
    )
}
