//! The guest's cgroup2 tree, as host tools see it through the preload.
//!
//! bpftool's `cgroup tree` reads `/proc/mounts` for the cgroup2 mount,
//! walks it with `nftw(…, FTW_MOUNT)` and opens every directory with
//! `open(path, O_RDONLY)` to name it as `target_fd` of `BPF_PROG_QUERY`;
//! `cgroup show`, `attach` and `detach` open one path the same way. The
//! host side (`telebpf_host::cgroup`) turns each of those into a
//! [`CgroupOp`], answered here:
//!
//! * [`CgroupOp::Mounts`]: the lines of type `cgroup2` and `bpf` of this
//!   process's `/proc/self/mounts` and `/proc/self/mountinfo` (the host
//!   puts them in place of its own), at most [`MAX_MOUNT_LINES`] of each;
//! * [`CgroupOp::Open`]: an `O_RDONLY|O_DIRECTORY` fd the session holds
//!   like any object (counted in its object limit, closed by
//!   `Request::Close` or with the session), so the host's fd for it is a
//!   valid `target_fd` wherever `telebpf_marshal` translates fds;
//! * [`CgroupOp::List`]: one directory's entries, each with its metadata,
//!   at most [`MAX_CGROUP_ENTRIES`] (one reply per directory of a walk);
//! * [`CgroupOp::Stat`]: one path's metadata;
//! * [`CgroupOp::Handle`]: one cgroup's file handle (its cgroup id).
//!
//! Which paths: the proxy finds its own cgroup2 mount (the first `cgroup2`
//! line of `/proc/self/mountinfo`, read at each request: mounts change),
//! not the host's word for it. A path must be absolute, clean and at or
//! under that mount; the policy (`[cgroup] paths`,
//! [`crate::policy::Policy::allows_cgroup_path`]) checked the same string
//! before. It is opened as that string: the mount point with
//! `RESOLVE_NO_SYMLINKS`, the rest beneath it with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` (cgroupfs
//! has no symlinks, and nothing mounted inside the tree is the tree), and
//! the result must be cgroup2 (`fstatfs`), so an open never reaches a file
//! outside the guest's cgroups.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use telebpf_abi::ObjectKind;
use telebpf_protocol::message::{
    CgroupOp, CgroupReply, DirEntry, NewObject, StatInfo, MAX_CGROUP_ENTRIES,
};
use telebpf_protocol::paths;

use crate::files::stat_info;
use crate::resolve::openat2;

/// Most mount lines of each file [`CgroupOp::Mounts`] answers: a guest has
/// one cgroup2 and one bpffs mount, a few more in containers; 64 bounds
/// the reply whatever the guest's mount table holds.
pub const MAX_MOUNT_LINES: usize = 64;

/// Longest mount line kept (longer ones are left out): a mount point is
/// at most `PATH_MAX` bytes, its options a few hundred.
const MAX_LINE: usize = 8192;

/// `CGROUP2_SUPER_MAGIC` of `<linux/magic.h>`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The path of a [`CgroupOp`] (for logs and the policy).
pub fn op_path(op: &CgroupOp) -> Option<&str> {
    match op {
        CgroupOp::Mounts => None,
        CgroupOp::Open { path }
        | CgroupOp::List { path }
        | CgroupOp::Stat { path }
        | CgroupOp::Handle { path } => Some(path),
    }
}

/// Answers `op`. `Open`'s fd is the caller's to hold (see
/// [`Opened::into_parts`]).
pub fn execute(op: &CgroupOp) -> Result<Answer, i32> {
    match op {
        CgroupOp::Mounts => Ok(Answer::Reply(CgroupReply::Mounts {
            mounts: mount_lines("/proc/self/mounts", 2)?,
            mountinfo: mount_lines("/proc/self/mountinfo", usize::MAX)?,
        })),
        CgroupOp::Open { path } => {
            let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
            Ok(Answer::Opened(Opened {
                fd,
                object: NewObject {
                    kind: ObjectKind::Other,
                    link: path.clone(),
                    link_type: None,
                },
            }))
        }
        CgroupOp::List { path } => {
            let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
            list(fd).map(Answer::Reply)
        }
        CgroupOp::Stat { path } => {
            let fd = open(path, libc::O_PATH)?;
            metadata(fd).map(|s| Answer::Reply(CgroupReply::Stat(s)))
        }
        CgroupOp::Handle { path } => {
            let fd = open(path, libc::O_PATH)?;
            handle(&fd).map(Answer::Reply)
        }
    }
}

/// The file handle of the open cgroup `fd` (`name_to_handle_at` with
/// `AT_EMPTY_PATH`).
fn handle(fd: &OwnedFd) -> Result<CgroupReply, i32> {
    const MAX: usize = libc::MAX_HANDLE_SZ as usize;
    /// `struct file_handle` with room for the largest handle.
    #[repr(C)]
    struct Handle {
        head: libc::file_handle,
        bytes: [u8; MAX],
    }
    let mut h = Handle {
        head: libc::file_handle {
            handle_bytes: MAX as u32,
            handle_type: 0,
            f_handle: [],
        },
        bytes: [0; MAX],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a file_handle followed by MAX_HANDLE_SZ bytes, as
    // its handle_bytes says; the path is the empty C string with
    // AT_EMPTY_PATH on an open fd; all live during the call.
    let r = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut h.head,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    let len = (h.head.handle_bytes as usize).min(MAX);
    Ok(CgroupReply::Handle {
        handle_type: h.head.handle_type,
        bytes: h.bytes[..len].to_vec(),
        mount_id,
    })
}

/// What [`execute`] gives.
#[derive(Debug)]
pub enum Answer {
    /// A reply to send as is.
    Reply(CgroupReply),
    /// An opened cgroup, for the session to hold.
    Opened(Opened),
}

/// A cgroup directory opened for a session.
#[derive(Debug)]
pub struct Opened {
    fd: OwnedFd,
    object: NewObject,
}

impl Opened {
    /// The fd, now the session's to close, and what it is.
    pub fn into_parts(self) -> (i32, NewObject) {
        (std::os::fd::IntoRawFd::into_raw_fd(self.fd), self.object)
    }
}

/// The lines of mount table `file` whose filesystem type is `cgroup2` or
/// `bpf`. In `/proc/self/mounts` the type is field `type_field` (0-based);
/// in `mountinfo` (`usize::MAX`) it is the first field after ` - `.
fn mount_lines(file: &str, type_field: usize) -> Result<Vec<String>, i32> {
    let text = std::fs::read_to_string(file).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok(text
        .lines()
        .filter(|l| l.len() <= MAX_LINE)
        .filter(|l| matches!(fs_type(l, type_field), Some("cgroup2" | "bpf")))
        .take(MAX_MOUNT_LINES)
        .map(str::to_string)
        .collect())
}

/// The filesystem type of a mount line (see [`mount_lines`]).
fn fs_type(line: &str, type_field: usize) -> Option<&str> {
    if type_field == usize::MAX {
        line.split_once(" - ")?.1.split(' ').next()
    } else {
        line.split(' ').nth(type_field)
    }
}

/// The mount point of a mountinfo line (field 4).
fn mount_point(line: &str) -> Option<String> {
    paths::unescape_mount_field(line.split(' ').nth(4)?)
}

/// This process's cgroup2 mount point: `ENOENT` without one.
pub fn mount() -> Result<String, i32> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    text.lines()
        .find(|l| fs_type(l, usize::MAX) == Some("cgroup2"))
        .and_then(mount_point)
        .ok_or(libc::ENOENT)
}

/// What of `path` lies beneath the cgroup2 mount `mount`: `""` for the
/// mount itself. `None` when `path` is not clean or not under it.
pub fn beneath<'a>(path: &'a str, mount: &str) -> Option<&'a str> {
    if !paths::is_clean(path) {
        return None;
    }
    let mount = mount.trim_end_matches('/');
    let rest = path.strip_prefix(mount)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
        .or((mount.is_empty()).then_some(rest))
        .map(|r| r.trim_end_matches('/'))
}

/// Opens `path` of the guest's cgroup tree with `flags` (see the module
/// doc): `EACCES` for a path outside the cgroup2 mount, `ENOENT` without
/// one.
pub fn open(path: &str, flags: i32) -> Result<OwnedFd, i32> {
    let mount = mount()?;
    let rest = beneath(path, &mount).ok_or(libc::EACCES)?;
    let fd = if rest.is_empty() {
        openat2(libc::AT_FDCWD, &mount, flags, libc::RESOLVE_NO_SYMLINKS)?
    } else {
        let root = openat2(
            libc::AT_FDCWD,
            &mount,
            libc::O_PATH | libc::O_DIRECTORY,
            libc::RESOLVE_NO_SYMLINKS,
        )?;
        openat2(
            root.as_raw_fd(),
            rest,
            flags,
            libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS
                | libc::RESOLVE_NO_XDEV,
        )?
    };
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `s` is a valid statfs to fill.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut s) } != 0 {
        return Err(errno());
    }
    if s.f_type != CGROUP2_SUPER_MAGIC {
        return Err(libc::EACCES);
    }
    Ok(fd)
}

/// The metadata of an open fd.
fn metadata(fd: OwnedFd) -> Result<StatInfo, i32> {
    File::from(fd)
        .metadata()
        .map(|m| stat_info(&m))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The entries of the open directory `fd` (see [`CgroupOp::List`]).
fn list(fd: OwnedFd) -> Result<CgroupReply, i32> {
    let dir = File::from(fd.try_clone().map_err(|_| libc::EMFILE)?)
        .metadata()
        .map(|m| stat_info(&m))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` is an open directory fd we own; fdopendir takes it
    // over (closedir closes it), or leaves it to us on failure.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = errno();
        // SAFETY: fdopendir failed, so `raw` is still ours.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        return Err(e);
    }
    let mut entries = Vec::new();
    let result = loop {
        // SAFETY: `stream` is a live DIR*.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            break Ok(());
        }
        // SAFETY: readdir64 returned a valid dirent64 whose d_name is
        // NUL-terminated; it stays valid until the next readdir.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let Ok(name) = name.to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        if entries.len() == MAX_CGROUP_ENTRIES {
            break Err(libc::EOVERFLOW);
        }
        let stat = openat2(
            raw,
            name,
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV,
        )
        .and_then(metadata);
        entries.push(DirEntry {
            name: name.to_string(),
            stat,
        });
    };
    // SAFETY: `stream` is a live DIR*, closed once here.
    unsafe { libc::closedir(stream) };
    result.map(|()| CgroupReply::Listing { dir, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_beneath_the_mount() {
        let m = "/sys/fs/cgroup";
        assert_eq!(beneath("/sys/fs/cgroup", m), Some(""));
        assert_eq!(beneath("/sys/fs/cgroup/", m), Some(""));
        assert_eq!(beneath("/sys/fs/cgroup/a/b", m), Some("a/b"));
        assert_eq!(beneath("/sys/fs/cgroupx", m), None);
        assert_eq!(beneath("/sys/fs/cgroup/../x", m), None);
        assert_eq!(beneath("/sys/fs/cgroup/./x", m), None);
        assert_eq!(beneath("sys/fs/cgroup/x", m), None);
        assert_eq!(beneath("/sys/fs", m), None);
        assert_eq!(beneath("/a/b", "/"), Some("a/b"));
    }

    #[test]
    fn mount_lines_are_parsed() {
        let info = "35 24 0:30 / /sys/fs/cgroup/my\\040cg rw,nosuid shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(fs_type(info, usize::MAX), Some("cgroup2"));
        assert_eq!(mount_point(info).as_deref(), Some("/sys/fs/cgroup/my cg"));
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0";
        assert_eq!(fs_type(mounts, 2), Some("cgroup2"));
    }
}
