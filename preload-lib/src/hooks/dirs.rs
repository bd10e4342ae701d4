//! The guest's cgroup tree: `open`, `stat` and `access` of its paths, and
//! `nftw` walks of it (see `telebpf_host::cgroup` for what bpftool calls
//! and why `nftw` itself is interposed).
//!
//! `opendir` of a guest cgroup, and `fdopendir` of an fd that stands for
//! one, give a `DIR *` of our own (a [`GuestDir`]: the directory's listing,
//! taken in one request, and an fd standing for the guest's opened cgroup,
//! which `dirfd` returns), known to `readdir`, `readdir64`, `dirfd`,
//! `rewinddir`, `telldir`, `seekdir` and `closedir` by its address; every
//! other `DIR *` goes to libc. `getdents64` of such an fd writes the
//! guest's entries as the kernel's `linux_dirent64` records, the fd's own
//! file offset (a memfd's) keeping the place, so `lseek(fd, 0, SEEK_SET)`
//! starts again as on a directory. Not interposed: `readdir_r`, and `*at`
//! calls relative to a guest cgroup fd (`openat(fd, "child")`), which
//! answer `ENOTDIR`: GNU `find` walks that way and does not see the
//! guest's tree.
//!
//! `name_to_handle_at` of a guest cgroup gives the guest's handle (its
//! bytes are the cgroup id).
//!
//! A path in `/sys/fs/cgroup` reaches these only after the routing
//! (`telebpf_host::vfs::route`); here it is the guest's if it lies under
//! the guest's cgroup2 mount, else the host's (`Action::Pass`).

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use libc::{c_char, c_int};
use telebpf_host::cgroup::{self, Visit, Walker};
use telebpf_host::error::{Error, Result};
use telebpf_host::memory;
use telebpf_host::vfs::{self, Route};
use telebpf_host::{fdtable, state};
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

/// Interposed `statx` (coreutils' `ls` and `stat`): a guest cgroup path is
/// the guest's; every other path, guest files included, stays libc's as
/// before.
///
/// # Safety
///
/// Same contract as libc's `statx`.
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: libc::c_uint,
    buf: *mut libc::statx,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::statx(dirfd, path, flags, mask, buf) };
    let handle = |p: &str| {
        let x = match cgroup::stat(p) {
            Ok(s) => telebpf_host::vfs::statx_of(&s),
            Err(e) => return Action::Fail(e.errno(), -1),
        };
        // SAFETY: `x` is a live local of its size.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&x as *const libc::statx).cast::<u8>(),
                std::mem::size_of::<libc::statx>(),
            )
        };
        match memory::write(buf as u64, bytes) {
            Ok(()) => Action::Done(0),
            Err(e) => Action::Fail(e, -1),
        }
    };
    // SAFETY: the caller passes a NUL-terminated path (or null).
    unsafe { cgroup_call(path, pass, -1, handle) }
}

/// `name_to_handle_at` of a guest cgroup: the guest's handle, written as
/// the kernel writes it — `EOVERFLOW` with the needed `handle_bytes` when
/// the caller's room is too small.
fn write_handle(path: &str, handle: *mut libc::file_handle, mount_id: *mut c_int) -> Result<c_int> {
    let (handle_type, bytes, mount) = cgroup::handle(path)?;
    let room = memory::read(handle as u64, 4).map_err(Error::Memory)?;
    let room = u32::from_ne_bytes(room.try_into().map_err(|_| Error::Memory(libc::EFAULT))?);
    let needed = (bytes.len() as u32).to_ne_bytes();
    memory::write(handle as u64, &needed).map_err(Error::Memory)?;
    if (room as usize) < bytes.len() {
        return Err(Error::kernel(libc::EOVERFLOW, "a file handle's room"));
    }
    let mut head = Vec::with_capacity(8 + bytes.len());
    head.extend_from_slice(&needed);
    head.extend_from_slice(&handle_type.to_ne_bytes());
    head.extend_from_slice(&bytes);
    memory::write(handle as u64, &head).map_err(Error::Memory)?;
    memory::write(mount_id as u64, &mount.to_ne_bytes()).map_err(Error::Memory)?;
    Ok(0)
}

/// Interposed `name_to_handle_at` (bpftrace's `cgroupid()`, tools that
/// turn a cgroup path into its id): a guest cgroup's is the guest's.
///
/// # Safety
///
/// Same contract as libc's `name_to_handle_at`.
#[no_mangle]
pub unsafe extern "C" fn name_to_handle_at(
    dirfd: c_int,
    path: *const c_char,
    handle: *mut libc::file_handle,
    mount_id: *mut c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::name_to_handle_at(dirfd, path, handle, mount_id, flags) };
    // SAFETY: the caller passes a NUL-terminated path (or null).
    unsafe {
        cgroup_call(path, pass, -1, |p| {
            action(write_handle(p, handle, mount_id), -1)
        })
    }
}

/// A hook taking a path: a guest cgroup's call is `handle`d under the
/// guard (`err` if that fails with a panic), any other path's is `pass`ed
/// to libc straight away.
///
/// # Safety
///
/// `path` must be null or NUL-terminated.
unsafe fn cgroup_call<R>(
    path: *const c_char,
    pass: impl FnOnce() -> R,
    err: R,
    handle: impl FnOnce(&str) -> Action<R>,
) -> R
where
    R: Copy,
{
    // SAFETY: per this function's contract.
    let Route::Cgroup(p) = (unsafe { vfs::route(path) }) else {
        return pass();
    };
    guard::enter(pass, || guest(&p, err, || handle(&p)), err)
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

/// A guest cgroup directory opened with `opendir`: its listing (taken
/// once, as glibc's first `getdents64` of a small directory would), the
/// place of the next entry, the host fd `dirfd` gives (standing for the
/// guest's opened cgroup, so it is a valid `target_fd` too), and the
/// entry `readdir` last returned.
#[derive(Debug)]
struct GuestDir {
    /// `(name, inode, d_type)`, `.` and `..` first.
    entries: Vec<(CString, u64, u8)>,
    next: usize,
    fd: c_int,
    current: libc::dirent64,
}

/// The `DIR *`s that are [`GuestDir`]s (their addresses), and whether
/// there is any (changed under the lock): `readdir` of a host directory
/// costs one relaxed load while no guest directory is open.
static GUEST_DIRS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static ANY_GUEST_DIR: AtomicBool = AtomicBool::new(false);

/// Whether `dir` is one of ours.
fn is_guest_dir(dir: *mut libc::DIR) -> bool {
    ANY_GUEST_DIR.load(Ordering::Relaxed)
        && GUEST_DIRS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(dir as usize))
}

/// `d_type` of a guest entry.
fn d_type(stat: &std::result::Result<StatInfo, i32>) -> u8 {
    match stat.as_ref().map(|s| s.mode & libc::S_IFMT) {
        Ok(libc::S_IFDIR) => libc::DT_DIR,
        Ok(libc::S_IFREG) => libc::DT_REG,
        Ok(libc::S_IFLNK) => libc::DT_LNK,
        _ => libc::DT_UNKNOWN,
    }
}

/// Guest directory `path`'s entries, `.` and `..` first, as `readdir`
/// and `getdents64` give them.
fn entries_of(path: &str) -> Result<Vec<(CString, u64, u8)>> {
    let (dir, listed) = cgroup::list(path)?;
    let mut entries = vec![
        (c".".to_owned(), dir.ino, libc::DT_DIR),
        (c"..".to_owned(), dir.ino, libc::DT_DIR),
    ];
    entries.extend(listed.into_iter().filter_map(|e| {
        let ino = e.stat.as_ref().map_or(0, |s| s.ino);
        Some((CString::new(e.name).ok()?, ino, d_type(&e.stat)))
    }));
    Ok(entries)
}

/// The guest cgroup path host fd `fd` stands for, if it stands for one (an
/// fd of ours whose guest object is a directory under the guest's cgroup2
/// mount). Cheap for the program's own fds: one look at the fd bitmap.
fn guest_cgroup_of(fd: c_int) -> Option<String> {
    if !fdtable::maybe_ours(fd) {
        return None;
    }
    let obj = state::get().table().get(fd).cloned()?;
    (obj.link.starts_with('/') && cgroup::is_guest(&obj.link).ok()?).then(|| obj.link.clone())
}

/// Opens guest directory `path` as a [`GuestDir`].
fn open_guest_dir(path: &str) -> Result<*mut libc::DIR> {
    let entries = entries_of(path)?;
    let fd = cgroup::open(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
    Ok(guest_dir(entries, fd))
}

/// A registered [`GuestDir`] of `entries` owning host fd `fd`.
fn guest_dir(entries: Vec<(CString, u64, u8)>, fd: c_int) -> *mut libc::DIR {
    let guest = Box::new(GuestDir {
        entries,
        next: 0,
        fd,
        // SAFETY: dirent64 is plain data; all-zero is valid.
        current: unsafe { std::mem::zeroed() },
    });
    let ptr = Box::into_raw(guest).cast::<libc::DIR>();
    let mut dirs = GUEST_DIRS.lock().unwrap_or_else(|p| p.into_inner());
    dirs.push(ptr as usize);
    // Under the lock, so that it never says "none" while one is open.
    ANY_GUEST_DIR.store(true, Ordering::Relaxed);
    ptr
}

/// Interposed `opendir`: a guest cgroup directory lists the guest's
/// entries.
///
/// # Safety
///
/// Same contract as libc's `opendir`.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::opendir(path) };
    // SAFETY: the caller passes a NUL-terminated path (or null).
    unsafe {
        cgroup_call(path, pass, std::ptr::null_mut(), |p| {
            match open_guest_dir(p) {
                Ok(dir) => Action::Done(dir),
                Err(e) => Action::Fail(e.errno(), std::ptr::null_mut()),
            }
        })
    }
}

/// The next entry of guest directory `dir`, or null at its end.
///
/// # Safety
///
/// `dir` must be a live [`GuestDir`] (checked by [`is_guest_dir`]).
unsafe fn next_entry(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    // SAFETY: per this function's contract; the program uses one DIR from
    // one thread at a time (as POSIX requires of readdir's callers).
    let g = unsafe { &mut *dir.cast::<GuestDir>() };
    let Some((name, ino, kind)) = g.entries.get(g.next) else {
        return std::ptr::null_mut();
    };
    g.next += 1;
    let bytes = name.as_bytes_with_nul();
    let room = g.current.d_name.len();
    // SAFETY: dirent64 is plain data; all-zero is valid.
    g.current = unsafe { std::mem::zeroed() };
    g.current.d_ino = *ino;
    g.current.d_off = g.next as i64;
    g.current.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
    g.current.d_type = *kind;
    for (d, s) in g
        .current
        .d_name
        .iter_mut()
        .zip(&bytes[..bytes.len().min(room - 1)])
    {
        *d = *s as c_char;
    }
    &mut g.current
}

/// Interposed `readdir64`.
///
/// # Safety
///
/// Same contract as libc's `readdir64`.
#[no_mangle]
pub unsafe extern "C" fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    if is_guest_dir(dir) {
        // SAFETY: one of ours, alive until closedir.
        return unsafe { next_entry(dir) };
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::readdir64(dir) }
}

/// Interposed `readdir` (`struct dirent` is `struct dirent64` on x86-64).
///
/// # Safety
///
/// Same contract as libc's `readdir`.
#[no_mangle]
pub unsafe extern "C" fn readdir(dir: *mut libc::DIR) -> *mut libc::dirent {
    if is_guest_dir(dir) {
        // SAFETY: one of ours; the two structs have one layout here.
        return unsafe { next_entry(dir) }.cast();
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::readdir(dir) }
}

/// Interposed `dirfd`: for a guest directory, the host fd standing for
/// the guest's opened cgroup.
///
/// # Safety
///
/// Same contract as libc's `dirfd`.
#[no_mangle]
pub unsafe extern "C" fn dirfd(dir: *mut libc::DIR) -> c_int {
    if is_guest_dir(dir) {
        // SAFETY: one of ours, alive until closedir.
        return unsafe { &*dir.cast::<GuestDir>() }.fd;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::dirfd(dir) }
}

/// Interposed `rewinddir`.
///
/// # Safety
///
/// Same contract as libc's `rewinddir`.
#[no_mangle]
pub unsafe extern "C" fn rewinddir(dir: *mut libc::DIR) {
    if is_guest_dir(dir) {
        // SAFETY: one of ours, alive until closedir.
        unsafe { &mut *dir.cast::<GuestDir>() }.next = 0;
        return;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::rewinddir(dir) }
}

/// Interposed `fdopendir`: an fd standing for a guest cgroup gives a guest
/// directory, which owns the fd from then on and reads on from its offset
/// (as libc's `DIR` does).
///
/// # Safety
///
/// Same contract as libc's `fdopendir`.
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut libc::DIR {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::fdopendir(fd) };
    on_guest_cgroup_fd(fd, pass, std::ptr::null_mut(), |entries| {
        let dir = guest_dir(entries, fd);
        // As libc's: reading goes on from the fd's offset (where an
        // earlier getdents64 left it).
        // SAFETY: lseek on an fd of ours (a memfd); `dir` is the GuestDir
        // just made.
        unsafe {
            (*dir.cast::<GuestDir>()).next = libc::lseek(fd, 0, libc::SEEK_CUR).max(0) as usize;
        }
        Action::Done(dir)
    })
}

/// Runs `then` with the guest's entries when host fd `fd` stands for a
/// guest cgroup; any other fd passes (`pass`), after one look at the fd
/// bitmap for the program's own.
fn on_guest_cgroup_fd<R: Copy>(
    fd: c_int,
    pass: impl FnOnce() -> R,
    err: R,
    then: impl FnOnce(Vec<(CString, u64, u8)>) -> Action<R>,
) -> R {
    if !fdtable::maybe_ours(fd) {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let Some(path) = guest_cgroup_of(fd) else {
                return Action::Pass;
            };
            match entries_of(&path) {
                Ok(entries) => then(entries),
                Err(e) => Action::Fail(e.errno(), err),
            }
        },
        err,
    )
}

/// Interposed `getdents64`: an fd standing for a guest cgroup gets the
/// guest's entries as `linux_dirent64` records (`d_ino`, `d_off` — the
/// index of the next entry —, `d_reclen`, `d_type`, the name and its NUL,
/// padded to 8 bytes), from the fd's file offset on, as many as fit;
/// `EINVAL` when not even the next one fits, 0 at the end.
///
/// # Safety
///
/// Same contract as libc's `getdents64`.
#[no_mangle]
pub unsafe extern "C" fn getdents64(
    fd: c_int,
    buf: *mut libc::c_void,
    len: libc::size_t,
) -> libc::ssize_t {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::getdents64(fd, buf, len) };
    on_guest_cgroup_fd(fd, pass, -1, |entries| {
        // SAFETY: lseek on an fd of ours (a memfd).
        let at = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }.max(0) as usize;
        let (out, next) = dirents(&entries, at, len);
        if out.is_empty() && next < entries.len() {
            return Action::Fail(libc::EINVAL, -1);
        }
        if let Err(e) = memory::write(buf as u64, &out) {
            return Action::Fail(e, -1);
        }
        // SAFETY: as above; the offset is the next entry's index.
        unsafe { libc::lseek(fd, next as libc::off_t, libc::SEEK_SET) };
        Action::Done(out.len() as libc::ssize_t)
    })
}

/// `entries[at..]` as `linux_dirent64` records, as many as fit in `len`
/// bytes, and the index after the last one written.
fn dirents(entries: &[(CString, u64, u8)], at: usize, len: usize) -> (Vec<u8>, usize) {
    const HEADER: usize = 19; // d_ino 8, d_off 8, d_reclen 2, d_type 1
    let mut out = Vec::new();
    let mut next = at.min(entries.len());
    for (name, ino, kind) in &entries[next..] {
        let name = name.as_bytes_with_nul();
        let reclen = (HEADER + name.len()).next_multiple_of(8);
        if out.len() + reclen > len || reclen > u16::MAX as usize {
            break;
        }
        next += 1;
        out.extend_from_slice(&ino.to_ne_bytes());
        out.extend_from_slice(&(next as i64).to_ne_bytes());
        out.extend_from_slice(&(reclen as u16).to_ne_bytes());
        out.push(*kind);
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    (out, next)
}

/// Interposed `telldir`: a guest directory's place is its next entry's
/// index.
///
/// # Safety
///
/// Same contract as libc's `telldir`.
#[no_mangle]
pub unsafe extern "C" fn telldir(dir: *mut libc::DIR) -> libc::c_long {
    if is_guest_dir(dir) {
        // SAFETY: one of ours, alive until closedir.
        return unsafe { &*dir.cast::<GuestDir>() }.next as libc::c_long;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::telldir(dir) }
}

/// Interposed `seekdir`: back to a place `telldir` gave.
///
/// # Safety
///
/// Same contract as libc's `seekdir`.
#[no_mangle]
pub unsafe extern "C" fn seekdir(dir: *mut libc::DIR, at: libc::c_long) {
    if is_guest_dir(dir) {
        // SAFETY: one of ours, alive until closedir.
        unsafe { &mut *dir.cast::<GuestDir>() }.next = at.max(0) as usize;
        return;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::seekdir(dir, at) }
}

/// Interposed `closedir`: a guest directory is freed and its fd closed
/// (closing the guest's cgroup fd with it).
///
/// # Safety
///
/// Same contract as libc's `closedir`.
#[no_mangle]
pub unsafe extern "C" fn closedir(dir: *mut libc::DIR) -> c_int {
    let ours = ANY_GUEST_DIR.load(Ordering::Relaxed) && {
        let mut dirs = GUEST_DIRS.lock().unwrap_or_else(|p| p.into_inner());
        match dirs.iter().position(|&d| d == dir as usize) {
            Some(i) => {
                dirs.swap_remove(i);
                ANY_GUEST_DIR.store(!dirs.is_empty(), Ordering::Relaxed);
                true
            }
            None => false,
        }
    };
    if !ours {
        // SAFETY: forwarded under the caller's contract.
        return unsafe { real::closedir(dir) };
    }
    // SAFETY: `dir` came from Box::into_raw in open_guest_dir and was just
    // taken out of the registry, so it is freed exactly once.
    let g = unsafe { Box::from_raw(dir.cast::<GuestDir>()) };
    // The interposed close releases the guest's fd as well.
    // SAFETY: the fd open_guest_dir made, closed once.
    unsafe { super::fds::close(g.fd) }
}
