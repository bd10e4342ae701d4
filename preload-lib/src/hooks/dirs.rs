//! The guest's cgroup tree: `open`, `stat` and `access` of its paths, and
//! `nftw` walks of it (see `telebpf_host::cgroup` for what bpftool calls
//! and why `nftw` itself is interposed).
//!
//! A path in `/sys/fs/cgroup` reaches these only after the routing
//! (`telebpf_host::vfs::route`); here it is the guest's if it lies under
//! the guest's cgroup2 mount, else the host's (`Action::Pass`).

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{c_char, c_int};
use telebpf_host::cgroup::{self, Visit, Walker};
use telebpf_host::error::{Error, Result};
use telebpf_host::vfs::{self, Route};
use telebpf_protocol::message::{DirEntry, StatInfo};

use super::action;
use crate::guard::{self, Action};
use crate::{errno, real};

/// `struct FTW` of `<ftw.h>`.
#[repr(C)]
#[derive(Debug)]
pub struct Ftw {
    /// Offset of the last component in the path.
    pub base: c_int,
    /// Depth below the walk's root.
    pub level: c_int,
}

/// The callback of `nftw`.
pub type NftwFn = unsafe extern "C" fn(*const c_char, *const libc::stat, c_int, *mut Ftw) -> c_int;

/// Runs `then` for a guest cgroup path; a host one passes.
fn guest<R>(path: &str, err: R, then: impl FnOnce() -> Action<R>) -> Action<R> {
    match cgroup::is_guest(path) {
        Ok(true) => then(),
        Ok(false) => Action::Pass,
        Err(e) => Action::Fail(e.errno(), err),
    }
}

/// `open` of a cgroup path.
pub fn open(path: &str, flags: c_int) -> Action<c_int> {
    guest(path, -1, || action(cgroup::open(path, flags), -1))
}

/// `stat`/`lstat`/`fstatat` of a cgroup path.
pub fn stat(path: &str, buf: *mut libc::stat) -> Action<c_int> {
    guest(path, -1, || {
        action(
            cgroup::stat(path)
                .and_then(|s| vfs::fill_stat(&s, buf))
                .map(|()| 0),
            -1,
        )
    })
}

/// `access` of a cgroup path: it exists; writing is not served.
pub fn access(path: &str, mode: c_int) -> Action<c_int> {
    guest(path, -1, || {
        if mode & libc::W_OK != 0 {
            return Action::Fail(libc::EACCES, -1);
        }
        action(cgroup::stat(path).map(|_| 0), -1)
    })
}

/// `mkdir`, `unlink`, `rmdir`, `statfs` of a guest cgroup path: not
/// served (`EACCES`), never the host's by mistake.
pub fn unserved(path: &str) -> Action<c_int> {
    guest(path, -1, || Action::Fail(libc::EACCES, -1))
}

/// Runs `f` under the guard, as a hook's body: the library's own calls
/// in it go straight to libc.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    guard::enter(
        || Err(Error::kernel(libc::EDEADLK, "a walk inside the library")),
        || Action::Done(f()),
        Err(Error::kernel(libc::EIO, "a panic in the library")),
    )
}

/// The walk's two sides: listings under the guard, the program's callback
/// outside it (its `open` of each cgroup must reach the hooks).
struct Program {
    f: NftwFn,
}

impl Walker for Program {
    fn list(&mut self, path: &str) -> Result<(StatInfo, Vec<DirEntry>)> {
        guarded(|| cgroup::list(path))
    }

    fn visit(&mut self, v: &Visit<'_>) -> i32 {
        // The guest's names hold no NUL (they are path components).
        let Ok(path) = CString::new(v.path) else {
            return 0;
        };
        let st = v.stat.map(vfs::stat_of);
        let mut ftw = Ftw {
            base: v.base,
            level: v.level,
        };
        // SAFETY: the program's own callback, called as nftw would: a
        // NUL-terminated path, a stat (or null for FTW_NS/FTW_DNR) and an
        // FTW, all alive during the call.
        unsafe {
            (self.f)(
                path.as_ptr(),
                st.as_ref().map_or(std::ptr::null(), |s| s as *const _),
                v.flag,
                &mut ftw,
            )
        }
    }
}

/// `nftw` of `dir`: the guest's walk for a guest cgroup, else libc's.
///
/// # Safety
///
/// As `nftw`: `dir` a NUL-terminated path (or null), `f` a callback.
unsafe fn walk(
    dir: *const c_char,
    f: Option<NftwFn>,
    nopenfd: c_int,
    flags: c_int,
    real: unsafe fn(*const c_char, Option<NftwFn>, c_int, c_int) -> c_int,
) -> c_int {
    // SAFETY: the caller passes a NUL-terminated path (or null).
    let guest_root = match unsafe { vfs::route(dir) } {
        Route::Cgroup(p) if !guard::inside() => {
            guarded(|| cgroup::is_guest(&p)).map(|g| g.then_some(p))
        }
        _ => Ok(None),
    };
    let (root, f) = match (guest_root, f) {
        (Ok(Some(root)), Some(f)) => (root, f),
        (Err(e), _) => {
            errno::set(e.errno());
            return -1;
        }
        // SAFETY: forwarded under the caller's contract.
        _ => return unsafe { real(dir, f, nopenfd, flags) },
    };
    let walked = catch_unwind(AssertUnwindSafe(|| {
        cgroup::walk(&root, flags, &mut Program { f })
    }));
    match walked {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            errno::set(e.errno());
            -1
        }
        Err(_) => {
            errno::set(libc::EIO);
            -1
        }
    }
}

/// Interposed `nftw` (bpftool's `cgroup tree`).
///
/// # Safety
///
/// Same contract as libc's `nftw`.
#[no_mangle]
pub unsafe extern "C" fn nftw(
    dir: *const c_char,
    f: Option<NftwFn>,
    nopenfd: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    unsafe { walk(dir, f, nopenfd, flags, real::nftw) }
}

/// Interposed `nftw64`.
///
/// # Safety
///
/// Same contract as libc's `nftw64`.
#[no_mangle]
pub unsafe extern "C" fn nftw64(
    dir: *const c_char,
    f: Option<NftwFn>,
    nopenfd: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    unsafe { walk(dir, f, nopenfd, flags, real::nftw64) }
}
