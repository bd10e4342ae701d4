//! Files the guest answers, presented to the host program as real fds.
//!
//! A guest file becomes a memfd holding the guest's bytes, so `read`,
//! `fstat`, `lseek`, `mmap` (libbpf maps the BTF file) and `fdopen` need no
//! interposition at all. The bytes arrive range by range, one reply of at
//! most `FILE_CHUNK` at a time (`telebpf_client::ranges`).
//!
//! Paths in `/sys/fs/cgroup` and the mount tables (`/proc/mounts`,
//! `/proc/self/mountinfo`) are routed to `crate::cgroup`, which says why.
//!
//! What is forwarded: `open`/`fopen` of an allow-listed kernel file
//! (`telebpf_protocol::paths`), `stat`/`lstat`/`fstatat`/`statfs`/
//! `access`/`readlink` of one (bpffs included), and `mkdir`/`unlink`/
//! `rmdir` in bpffs. Not forwarded: `open` of a bpffs path (a pin's file,
//! which `cat` would read) goes to the host's own bpffs, and `statx`
//! (coreutils' `stat` and `ls`) is interposed for guest cgroups only. Immutable files (BTF, kernel config) are fetched
//! once per process and kept as sealed memfds; every later `open` reopens the
//! memfd through `/proc/self/fd`, which gives a new open file with its own
//! offset, as opening the path again would.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use telebpf_client::cache::Cached;
use telebpf_protocol::message::{FileOp, FileReply, Reply, Request, StatInfo, StatfsInfo};
use telebpf_protocol::paths;

use crate::error::{Error, Result};
use crate::sys::{inode_of, memfd_with};
use crate::{fdtable, state};

/// Where host paths may name the guest's cgroups (see `crate::cgroup`).
pub const CGROUP_TREE: &str = "/sys/fs/cgroup";

/// Whether `path` is `TREE` or under it: what the routing looks at (on
/// raw bytes, before any UTF-8 check).
#[inline(always)]
pub fn in_cgroup_tree(path: &[u8]) -> bool {
    path.strip_prefix(CGROUP_TREE.as_bytes())
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

/// A mount table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFile {
    /// `/proc/mounts` (`/proc/self/mounts`).
    Mounts,
    /// `/proc/self/mountinfo`.
    Mountinfo,
}

impl MountFile {
    /// The mount table `path` names, if it is one.
    #[inline(always)]
    pub fn of(path: &[u8]) -> Option<MountFile> {
        match path {
            b"/proc/mounts" | b"/proc/self/mounts" | b"/proc/thread-self/mounts" => {
                Some(MountFile::Mounts)
            }
            b"/proc/self/mountinfo" | b"/proc/thread-self/mountinfo" => Some(MountFile::Mountinfo),
            _ => None,
        }
    }
}

/// Where an intercepted path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A host path: call libc.
    Local,
    /// A guest file or bpffs path.
    Guest(String),
    /// `/proc/self/fdinfo/N` of a host fd that may stand for a guest object.
    Fdinfo(i32),
    /// `/proc/self/fd/N` likewise.
    FdLink(i32),
    /// A path in [`CGROUP_TREE`]: the guest's if under its cgroup2 mount
    /// (`crate::cgroup`).
    Cgroup(String),
    /// A mount table, with the guest's cgroup2 and bpffs lines.
    Mounts(MountFile),
}

/// Parses what follows `/proc/` in `/proc/{self,thread-self,<our
/// pid>}/{fd,fdinfo}/N`, on raw bytes. Only a path of that shape with a
/// number for the process costs a `getpid`.
#[inline(always)]
fn proc_fd(rest: &[u8]) -> Option<(bool, i32)> {
    let (rest, pid) = match rest.first()? {
        b's' => (rest.strip_prefix(b"self/fd")?, None),
        b't' => (rest.strip_prefix(b"thread-self/fd")?, None),
        // What `str::parse::<i32>` takes: digits after an optional sign
        // (a `-` cannot be a pid).
        b'0'..=b'9' | b'+' => {
            let slash = rest.iter().position(|&b| b == b'/')?;
            (rest[slash + 1..].strip_prefix(b"fd")?, Some(&rest[..slash]))
        }
        _ => return None,
    };
    let (info, n) = match rest.strip_prefix(b"/") {
        Some(n) => (false, n),
        None => (true, rest.strip_prefix(b"info/")?),
    };
    proc_fd_numbers(info, n, pid)
}

/// The numbers of a path [`proc_fd`] found the shape of: the fd, and the
/// process when it is not `self`.
#[cold]
#[inline(never)]
fn proc_fd_numbers(info: bool, n: &[u8], pid: Option<&[u8]>) -> Option<(bool, i32)> {
    let number = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<i32>().ok();
    let fd = number(n)?;
    match pid {
        // SAFETY: getpid has no preconditions.
        Some(pid) if number(pid) != Some(unsafe { libc::getpid() }) => None,
        _ => Some((info, fd)),
    }
}

/// Classifies a path given to an interposed function. Cheap for host paths,
/// with no UTF-8 check, no allocation and no lock unless the path is the
/// guest's:
///
/// * every path that is not `Local` starts with `/proc/`, `/sys/` or
///   `/boot/`, so the first two bytes turn nearly all others away, before
///   the path's length is known;
/// * the rest are decided from their first components
///   ([`paths::may_be_guest_file`]), and only those that pass are checked
///   against the list.
///
/// # Safety
///
/// `path` must be null or point to a NUL-terminated string.
#[inline(always)]
pub unsafe fn route(path: *const libc::c_char) -> Route {
    if path.is_null() || !state::configured() {
        return Route::Local;
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { route_configured(path) }
}

/// [`route`] with a target set.
///
/// # Safety
///
/// `path` must point to a NUL-terminated string.
#[inline(always)]
unsafe fn route_configured(path: *const libc::c_char) -> Route {
    // SAFETY: the string is NUL-terminated, so its first byte can be read,
    // and its second too when the first is not the NUL.
    let second = unsafe { (*path == b'/' as libc::c_char).then(|| *path.add(1) as u8) };
    if !matches!(second, Some(b'p' | b's' | b'b')) {
        return Route::Local;
    }
    // `/proc/self/` then anything but `f` (`fd/`, `fdinfo/`) or `mo`
    // (`mounts`, `mountinfo`) is never ours (`maps`, `stat`, `status`…,
    // which programs open often): decided without `strlen`.
    // SAFETY: NUL-terminated per the caller's contract.
    if unsafe { c_starts(path, b"/proc/self/") } {
        // SAFETY: the 11 bytes before it are not NUL, so byte 11 is in the
        // string (its NUL at worst).
        let ours = match (unsafe { *path.add(11) }) as u8 {
            b'f' => true,
            // SAFETY: byte 11 is `m`, not the NUL, so byte 12 is in the
            // string too.
            b'm' => (unsafe { *path.add(12) }) as u8 == b'o',
            _ => false,
        };
        if !ours {
            return Route::Local;
        }
    }
    // Under `/sys/d` only the CPU lists are ours (`devices/system/cpu/`
    // then `possible`, `online` or `present`): the rest (`cpu0/topology/…`,
    // `system/node/…`, read often) is decided byte by byte, without
    // `strlen`.
    // SAFETY: NUL-terminated per the caller's contract.
    if unsafe { c_starts(path, b"/sys/d") } {
        // SAFETY: as above; byte 24 is read only after the 24 before it
        // matched (none is NUL).
        let ours = unsafe { c_starts(path, b"/sys/devices/system/cpu/") }
            && matches!((unsafe { *path.add(24) }) as u8, b'p' | b'o');
        if !ours {
            return Route::Local;
        }
    }
    // SAFETY: NUL-terminated per the caller's contract.
    route_bytes(unsafe { CStr::from_ptr(path) }.to_bytes())
}

/// Whether the C string `s` starts with `prefix` (which has no NUL), read
/// byte by byte: a byte is read only after the ones before it matched, so
/// never past the string's NUL, which matches no byte of `prefix`.
///
/// # Safety
///
/// `s` must point to a NUL-terminated string.
#[inline(always)]
unsafe fn c_starts<const N: usize>(s: *const libc::c_char, prefix: &[u8; N]) -> bool {
    prefix.iter().enumerate().all(|(i, &b)| {
        // SAFETY: bytes 0..i matched `prefix`, none is NUL, so the string
        // goes on at least to byte i.
        (unsafe { *s.add(i) }) as u8 == b
    })
}

/// [`route`] of a path's bytes, with a target set. Inlined into the hooks:
/// a host path costs no call beyond `strlen`.
#[inline(always)]
fn route_bytes(bytes: &[u8]) -> Route {
    let may_be_guest = match bytes.strip_prefix(b"/proc/") {
        Some(rest) => {
            if let Some(which) = MountFile::of(bytes) {
                return Route::Mounts(which);
            }
            if let Some((info, fd)) = proc_fd(rest) {
                return match (fdtable::maybe_ours(fd), info) {
                    (false, _) => Route::Local,
                    (true, true) => Route::Fdinfo(fd),
                    (true, false) => Route::FdLink(fd),
                };
            }
            paths::may_be_guest_file_in_proc(rest)
        }
        None if in_cgroup_tree(bytes) => return cgroup_route(bytes),
        None => paths::may_be_guest_file(bytes),
    };
    if !may_be_guest {
        return Route::Local;
    }
    guest_route(bytes)
}

/// [`route_bytes`] of a path that passed [`paths::may_be_guest_file`]:
/// the full check.
#[cold]
#[inline(never)]
fn guest_route(bytes: &[u8]) -> Route {
    match std::str::from_utf8(bytes) {
        Ok(s) if paths::is_guest_file(s) => Route::Guest(s.to_string()),
        _ => Route::Local,
    }
}

/// [`route_bytes`] of a path in [`CGROUP_TREE`].
#[cold]
#[inline(never)]
fn cgroup_route(bytes: &[u8]) -> Route {
    match std::str::from_utf8(bytes) {
        Ok(s) => Route::Cgroup(s.to_string()),
        Err(_) => Route::Local,
    }
}

/// Runs a file operation in the guest.
pub fn file_op(op: FileOp) -> Result<FileReply> {
    state::get().ask(&Request::File(op), "a file request", |r| match r {
        Reply::File(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })
}

/// Opens a new file description on a cached memfd (own offset).
fn reopen(fd: &OwnedFd) -> Result<i32> {
    let p = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    // SAFETY: `p` is NUL-terminated. Called from inside the library, the
    // preload's `open` hands this straight to libc (see `crate::sys`).
    let raw = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::last_os("reopening a cached guest file"));
    }
    Ok(raw)
}

/// Gives a memfd-backed fd the caller's close-on-exec choice.
fn apply_cloexec(fd: i32, flags: i32) {
    if flags & libc::O_CLOEXEC == 0 {
        // SAFETY: fcntl on an fd we just created.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
}

/// `open` of a guest path: an fd holding the guest file's content.
pub fn open_guest(path: &str, flags: i32) -> Result<i32> {
    if flags & libc::O_ACCMODE != libc::O_RDONLY && paths::is_appendable(path) {
        return open_appendable(path, flags);
    }
    if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0 {
        // Guest files are served read-only: writing sysctls or creating
        // files in the guest is not something a monitoring tool may do.
        return Err(Error::kernel(libc::EACCES, "writing a guest file"));
    }
    if flags & libc::O_DIRECTORY != 0 {
        return Err(Error::kernel(
            libc::ENOTDIR,
            "a guest file opened as a directory",
        ));
    }
    let st = state::get();
    let immutable = paths::is_immutable(path);
    if immutable {
        let cached = st.cache().get(path).cloned();
        if let Some((fd, inode)) = cached {
            if inode_of(fd.as_raw_fd()) == Some(inode) {
                let raw = reopen(&fd)?;
                apply_cloexec(raw, flags);
                return Ok(raw);
            }
            // The program closed our memfd (closefrom, close_range): its
            // number may name a file of the program's now. Forget it
            // without closing that number, and fetch the file again.
            if let Some((other, _)) = st.cache().remove(path) {
                std::mem::forget(other);
            }
            std::mem::forget(fd);
        }
    }
    let fd = match immutable.then(cache_dir).flatten() {
        Some(dir) => cached_file(&dir, path)?,
        None => memfd_with(path, &read_whole(path)?, immutable)?,
    };
    let raw = if immutable {
        let inode = inode_of(fd.as_raw_fd()).unwrap_or_default();
        let fd = Arc::new(fd);
        st.cache().insert(path.to_string(), (fd.clone(), inode));
        reopen(&fd)?
    } else {
        std::os::fd::IntoRawFd::into_raw_fd(fd)
    };
    apply_cloexec(raw, flags);
    Ok(raw)
}

/// The whole content of guest file `path`, range by range (see
/// [`telebpf_client::ranges`]).
fn read_whole(path: &str) -> Result<Vec<u8>> {
    telebpf_client::ranges::read_whole(path, file_op, malformed, stale)
}

fn malformed() -> Error {
    Error::Protocol("a guest file's ranges")
}

/// Whether the guest file changed while it was read (start again).
fn stale(e: &Error) -> bool {
    matches!(e, Error::Guest(libc::ESTALE))
}

/// Where immutable guest files are kept across processes (see
/// [`telebpf_client::cache::dir`]).
fn cache_dir() -> Option<std::path::PathBuf> {
    telebpf_client::cache::dir()
}

/// An immutable guest file from the host cache, keyed by the guest's
/// SHA-256 of it: one small round trip instead of megabytes when another
/// process already fetched it (see [`telebpf_client::cache::fetch`]).
fn cached_file(dir: &std::path::Path, path: &str) -> Result<OwnedFd> {
    match telebpf_client::cache::fetch(dir, path, file_op, malformed, stale)? {
        Cached::File(file) => std::fs::File::open(&file)
            .map(OwnedFd::from)
            .map_err(|e| Error::os("opening a cached guest file", e, libc::EIO)),
        Cached::Fresh(content) => memfd_with(path, &content, true),
    }
}

/// Host fds opened for appending to a guest probe-definition file, with
/// their path: what is written to them is appended in the guest on `close`.
static APPENDS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// `open(kprobe_events or uprobe_events, O_WRONLY|O_APPEND)` — libbpf's
/// legacy probe attach. Whether the file exists (and may be written) is the
/// guest's answer, so a kernel without kprobes fails here exactly as
/// locally. The bytes the program writes (libbpf uses `dprintf`, whose
/// `write` happens inside libc and cannot be intercepted) go to a memfd and
/// are appended in the guest when the fd is closed; an error the guest's
/// write gives then is not reported to the program (libbpf finds the probe
/// missing afterwards instead).
fn open_appendable(path: &str, flags: i32) -> Result<i32> {
    file_op(FileOp::Access {
        path: path.to_string(),
        mode: libc::W_OK,
    })?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(memfd_with("probe-events", &[], false)?);
    apply_cloexec(fd, flags);
    fdtable::mark(fd);
    APPENDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((fd, path.to_string()));
    Ok(fd)
}

/// Called by `close`: appends what was written to `fd` in the guest if it
/// is a probe-definition fd.
pub fn flush_append(fd: i32) {
    let path = {
        let mut appends = APPENDS.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = appends.iter().position(|(f, _)| *f == fd) else {
            return;
        };
        appends.swap_remove(i).1
    };
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut off = 0;
    loop {
        // SAFETY: reading our own memfd into a local buffer.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) };
        if n <= 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
        off += n as i64;
    }
    if !data.is_empty() {
        let _ = file_op(FileOp::Append { path, data });
    }
}

/// `open` of `/proc/self/fdinfo/N` for a host fd standing for a guest
/// object: the guest's fdinfo of that object.
pub fn open_fdinfo(host_fd: i32) -> Result<Option<i32>> {
    let Some(guest_fd) = state::get().table().get(host_fd).map(|o| o.guest_fd) else {
        return Ok(None);
    };
    let FileReply::Data(content) = file_op(FileOp::Fdinfo { fd: guest_fd })? else {
        return Err(Error::Protocol("an fdinfo request"));
    };
    let fd = memfd_with("fdinfo", &content, false)?;
    Ok(Some(std::os::fd::IntoRawFd::into_raw_fd(fd)))
}

/// Fills a `struct stat` from the guest's answer.
pub fn fill_stat(info: &StatInfo, buf: *mut libc::stat) -> Result<()> {
    write_out(buf, stat_of(info))
}

/// The `struct stat` of the guest's answer.
pub fn stat_of(info: &StatInfo) -> libc::stat {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = info.dev;
    st.st_ino = info.ino;
    st.st_mode = info.mode;
    st.st_nlink = info.nlink;
    st.st_uid = info.uid;
    st.st_gid = info.gid;
    st.st_rdev = info.rdev;
    st.st_size = info.size;
    st.st_blksize = info.blksize;
    st.st_blocks = info.blocks;
    st.st_atime = info.times[0].0;
    st.st_atime_nsec = info.times[0].1;
    st.st_mtime = info.times[1].0;
    st.st_mtime_nsec = info.times[1].1;
    st.st_ctime = info.times[2].0;
    st.st_ctime_nsec = info.times[2].1;
    st
}

/// The `struct statx` of the guest's answer (the basic fields, which is
/// all a `stat` carries).
pub fn statx_of(s: &StatInfo) -> libc::statx {
    // SAFETY: statx is plain data; all-zero is valid.
    let mut x: libc::statx = unsafe { std::mem::zeroed() };
    x.stx_mask = libc::STATX_BASIC_STATS;
    x.stx_blksize = s.blksize as u32;
    x.stx_nlink = s.nlink as u32;
    x.stx_uid = s.uid;
    x.stx_gid = s.gid;
    x.stx_mode = s.mode as u16;
    x.stx_ino = s.ino;
    x.stx_size = s.size as u64;
    x.stx_blocks = s.blocks as u64;
    let time = |(sec, nsec): (i64, i64)| {
        // SAFETY: statx_timestamp is plain data; all-zero is valid.
        let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec as u32;
        t
    };
    x.stx_atime = time(s.times[0]);
    x.stx_mtime = time(s.times[1]);
    x.stx_ctime = time(s.times[2]);
    // glibc's makedev(3) split of a dev_t.
    let (major, minor) = (libc::major(s.dev), libc::minor(s.dev));
    x.stx_dev_major = major;
    x.stx_dev_minor = minor;
    x.stx_rdev_major = libc::major(s.rdev);
    x.stx_rdev_minor = libc::minor(s.rdev);
    x
}

/// Fills a `struct statfs` from the guest's answer.
pub fn fill_statfs(info: &StatfsInfo, buf: *mut libc::statfs) -> Result<()> {
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    s.f_type = info.fs_type;
    s.f_bsize = info.bsize;
    [s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree] = info.counts;
    s.f_namelen = info.namelen;
    s.f_frsize = info.frsize;
    write_out(buf, s)
}

/// Copies a struct into caller memory, `EFAULT` on a bad pointer.
fn write_out<T: Copy>(buf: *mut T, value: T) -> Result<()> {
    // SAFETY: `value` is a live local of `size_of::<T>()` bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts((&value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    state::get()
        .memory()
        .write(buf as u64, bytes)
        .map_err(Error::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_paths() {
        let parse = |p: &str| proc_fd(p.strip_prefix("/proc/").expect("in /proc").as_bytes());
        assert_eq!(parse("/proc/self/fdinfo/5"), Some((true, 5)));
        assert_eq!(parse("/proc/thread-self/fd/12"), Some((false, 12)));
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        assert_eq!(parse(&format!("/proc/{me}/fd/3")), Some((false, 3)));
        assert_eq!(
            parse("/proc/1/fd/3"),
            if me == 1 { Some((false, 3)) } else { None }
        );
        assert_eq!(parse("/proc/self/maps"), None);
        assert_eq!(parse("/proc/self/fd/x"), None);
    }

    /// `route` as it was before the byte-level pre-checks, after its
    /// null and target checks: the reference the fast one must equal.
    fn route_reference(bytes: &[u8]) -> Route {
        fn proc_fd_str(path: &str) -> Option<(bool, i32)> {
            let rest = path.strip_prefix("/proc/")?;
            let (who, rest) = rest.split_once('/')?;
            let ours = who == "self" || who == "thread-self" || {
                // SAFETY: getpid has no preconditions.
                who.parse::<i32>().ok() == Some(unsafe { libc::getpid() })
            };
            if !ours {
                return None;
            }
            let (dir, n) = rest.split_once('/')?;
            let fd = n.parse::<i32>().ok()?;
            match dir {
                "fdinfo" => Some((true, fd)),
                "fd" => Some((false, fd)),
                _ => None,
            }
        }
        let Ok(s) = std::str::from_utf8(bytes) else {
            return Route::Local;
        };
        match s {
            "/proc/mounts" | "/proc/self/mounts" | "/proc/thread-self/mounts" => {
                return Route::Mounts(MountFile::Mounts)
            }
            "/proc/self/mountinfo" | "/proc/thread-self/mountinfo" => {
                return Route::Mounts(MountFile::Mountinfo)
            }
            _ => {}
        }
        if s == CGROUP_TREE || s.starts_with("/sys/fs/cgroup/") {
            return Route::Cgroup(s.to_string());
        }
        if s.starts_with("/proc/") {
            if let Some((info, fd)) = proc_fd_str(s) {
                if fdtable::maybe_ours(fd) {
                    return if info {
                        Route::Fdinfo(fd)
                    } else {
                        Route::FdLink(fd)
                    };
                }
                return Route::Local;
            }
        }
        if paths::is_guest_file(s) {
            Route::Guest(s.to_string())
        } else {
            Route::Local
        }
    }

    #[test]
    fn the_fast_route_is_the_old_route() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // Some fds this process may stand for guest objects with, some not.
        fdtable::mark(40_000);
        fdtable::mark(70_000);
        let mut heads: Vec<Vec<u8>> = Vec::new();
        for who in [
            "self".to_string(),
            "thread-self".into(),
            me.to_string(),
            format!("+{me}"),
            format!("0{me}"),
            format!("-{me}"),
            format!("{me}x"),
            (me + 1).to_string(),
            "1".into(),
            "".into(),
            "selfx".into(),
        ] {
            for dir in ["fd", "fdinfo", "fdx", "", "fd/", "maps"] {
                for n in [
                    "0",
                    "3",
                    "-1",
                    "+3",
                    "40000",
                    "70000",
                    "2147483648",
                    "x",
                    "",
                    "3/",
                    "3\u{ff}",
                ] {
                    heads.push(format!("/proc/{who}/{dir}/{n}").into_bytes());
                }
            }
        }
        heads.push(b"/proc/self/fd/3\xff".to_vec());
        heads.push(b"/proc/\xff/fd/3".to_vec());
        for p in [
            "/proc/self/",
            "/proc/self",
            "/proc/self/f",
            "/proc/self/status",
            "/proc/selff/fd/3",
            "/sys/kernel/btf/vmlinux",
            "/sys/kernel/btf/",
            "//sys/kernel/btf/vmlinux",
            "/sys/../sys/kernel/btf/vmlinux",
            "/sysx",
            "/sys/fs/bpf/a",
            "/sys/fs/bpf/a/../b",
            "/proc/kallsyms",
            "/proc/self/stat",
            "/proc/1/maps",
            "relative/path",
            "",
            "/",
            "/boot/config-6.1",
            "/etc/passwd",
            "/sys/kernel/tracing/events/sched/x/id",
            "/s",
            "/p",
            "/b",
            "/bin/sh",
            "/srv",
            "/sys/devices/system/cpu/online",
            "/sys/devices/system/cpu/online/",
            "/sys/devices/system/cpu/cpu0/online",
            "/sys/devices/system/cpu/cpu0/topology/core_id",
            "/sys/devices/system/cpu/",
            "/sys/devices/system/cpu/p",
            "/sys/devices/system/cpu/present",
            "/sys/devices/system/cpu/possible/",
            "/sys/devices/system/node/online",
            "/sys/d",
            "/sys/dev",
            "/proc/mounts",
            "/proc/self/mounts",
            "/proc/self/mountinfo",
            "/proc/self/mountinfox",
            "/proc/self/m",
            "/proc/self/mo",
            "/proc/self/maps",
            "/proc/self/mem",
            "/proc/thread-self/mountinfo",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/",
            "/sys/fs/cgroup/unified/x",
            "/sys/fs/cgroupx",
            "/sys/fs/cgrou",
        ] {
            heads.push(p.as_bytes().to_vec());
        }
        heads.push(b"/sys/kernel/btf/\xff".to_vec());
        heads.push(b"/sys/fs/bpf/\xc3".to_vec());
        heads.push(b"/sys/fs/cgroup/\xc3".to_vec());
        for p in &heads {
            let c = std::ffi::CString::new(p.clone()).expect("no NUL");
            // SAFETY: a NUL-terminated string.
            let fast = unsafe { route_configured(c.as_ptr()) };
            assert_eq!(fast, route_reference(p), "{:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(
            route_bytes(b"/proc/self/fdinfo/40000"),
            Route::Fdinfo(40_000)
        );
        assert_eq!(
            route_bytes(b"/sys/kernel/btf/vmlinux"),
            Route::Guest("/sys/kernel/btf/vmlinux".into())
        );
    }
}
