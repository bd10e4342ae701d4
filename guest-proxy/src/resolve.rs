//! Opening a served path so that it stays inside the allow-list.
//!
//! `telebpf_protocol::paths` decides which path strings are served; this
//! module opens exactly such a string with `openat2(2)` so that no symlink
//! on the way can lead the proxy, which runs as root, elsewhere: the
//! entry's root with `RESOLVE_NO_SYMLINKS`, the rest of the path beneath
//! it with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (and
//! `RESOLVE_NO_SYMLINKS` unless the entry allows symlinks that stay
//! beneath its root, as the sysfs event sources need). A path that would
//! leave answers `ELOOP` (a symlink) or `EXDEV` (out from under the root);
//! a path that is not served answers `EACCES` before anything is opened.
//! The check and the open use the same string, so nothing can change in
//! between.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use telebpf_protocol::paths;

/// How to open a served path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To read its content.
    Read,
    /// To append to it (the probe-definition files).
    Append,
    /// Only to name it (`O_PATH`): for `fstat`, `fstatfs`, `faccessat`,
    /// `readlinkat`, and as the directory of `mkdirat`/`unlinkat`.
    /// `follow`: a final symlink is followed (then refused); without it
    /// the link itself is opened.
    Path {
        /// Follow a final symlink.
        follow: bool,
    },
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `openat2(dir, path, flags, resolve)`.
pub(crate) fn openat2(dir: RawFd, path: &str, flags: i32, resolve: u64) -> Result<OwnedFd, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: open_how is plain data; all-zero is valid (mode 0).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `c` is NUL-terminated and `how` is a valid open_how whose
    // size is passed; the kernel reads both during the call only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &mut how as *mut libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: openat2 returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens served `path` for `access` (see the module doc): `EACCES` if it is
/// not served.
pub fn open(path: &str, access: Access) -> Result<OwnedFd, i32> {
    let served = paths::served(path).ok_or(libc::EACCES)?;
    let mut flags = match access {
        Access::Read => libc::O_RDONLY,
        Access::Append => libc::O_WRONLY | libc::O_APPEND,
        Access::Path { follow: true } => libc::O_PATH,
        Access::Path { follow: false } => libc::O_PATH | libc::O_NOFOLLOW,
    };
    if served.directory {
        flags |= libc::O_DIRECTORY;
    }
    // Reading or writing never follows a final symlink either: with
    // RESOLVE_NO_SYMLINKS below that answers ELOOP.
    if served.rest.is_empty() {
        return openat2(
            libc::AT_FDCWD,
            served.root,
            flags,
            libc::RESOLVE_NO_SYMLINKS,
        );
    }
    let root = openat2(
        libc::AT_FDCWD,
        served.root,
        libc::O_PATH | libc::O_DIRECTORY,
        libc::RESOLVE_NO_SYMLINKS,
    )?;
    let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    if !served.symlinks {
        resolve |= libc::RESOLVE_NO_SYMLINKS;
    }
    openat2(root.as_raw_fd(), served.rest, flags, resolve)
}

/// Opens the directory that holds served `path` (itself served) as
/// `O_PATH`, and returns it with `path`'s last component: what
/// `mkdirat`/`unlinkat` act on, so that they too act beneath the
/// allow-list. `EACCES` if `path` has no served parent.
pub fn parent(path: &str) -> Result<(OwnedFd, CString), i32> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let (dir, name) = trimmed.rsplit_once('/').ok_or(libc::EACCES)?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(libc::EACCES);
    }
    let fd = open(dir, Access::Path { follow: false })?;
    let name = CString::new(name).map_err(|_| libc::EINVAL)?;
    Ok((fd, name))
}

/// A `BPF_OBJ_PIN` (`creates`) or `BPF_OBJ_GET` path whose policy
/// checked its string, made to mean that string: the kernel follows every
/// symlink of a pathname it is given, so a link planted under an allowed
/// prefix (bpffs is often world-writable) would take a pin, or an open,
/// anywhere else. The path (for a pin, its directory) is opened here with
/// `RESOLVE_NO_SYMLINKS` (a symlink on the way answers `ELOOP`), and the
/// kernel is given `/proc/self/fd/N` (`/N/NAME` for a pin) instead: the
/// inode checked is the inode used, whatever the path's names become
/// meanwhile. Returns the handle, which must stay open until the call
/// returns, and the pathname to give the kernel.
pub fn anchor_pin(path: &str, creates: bool) -> Result<(OwnedFd, CString), i32> {
    let (fd, name) = if creates {
        let (dir, name) = path.rsplit_once('/').ok_or(libc::EINVAL)?;
        let dir = if dir.is_empty() { "/" } else { dir };
        let fd = openat2(
            libc::AT_FDCWD,
            dir,
            libc::O_PATH | libc::O_DIRECTORY,
            libc::RESOLVE_NO_SYMLINKS,
        )?;
        (fd, Some(name))
    } else {
        let fd = openat2(
            libc::AT_FDCWD,
            path,
            libc::O_PATH,
            libc::RESOLVE_NO_SYMLINKS,
        )?;
        (fd, None)
    };
    let anchored = match name {
        Some(name) => format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()),
        None => format!("/proc/self/fd/{}", fd.as_raw_fd()),
    };
    let anchored = CString::new(anchored).map_err(|_| libc::EINVAL)?;
    Ok((fd, anchored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unserved_paths_are_not_opened() {
        for path in [
            "/etc/passwd",
            "/proc/sys/kernel/cad_pid",
            "relative",
            "/sys/fs/bpf/../x",
        ] {
            assert_eq!(
                open(path, Access::Read).unwrap_err(),
                libc::EACCES,
                "{path}"
            );
        }
        assert_eq!(parent("/etc/x").unwrap_err(), libc::EACCES);
    }

    /// The mechanism against symlinks: beneath a directory (a temp dir
    /// standing for an allow-listed tree), a symlink that leaves it is
    /// refused with or without `RESOLVE_NO_SYMLINKS`, one that stays is
    /// followed only without it, and a magic link is refused.
    #[test]
    fn symlinks_do_not_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::write(dir.path().join("inside"), "i").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../etc/passwd", dir.path().join("up"))
            .unwrap();
        std::os::unix::fs::symlink("inside", dir.path().join("near")).unwrap();
        let root = openat2(
            libc::AT_FDCWD,
            dir.path().to_str().unwrap(),
            libc::O_PATH | libc::O_DIRECTORY,
            libc::RESOLVE_NO_SYMLINKS,
        )
        .unwrap();
        let beneath = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        let strict = beneath | libc::RESOLVE_NO_SYMLINKS;
        let r = root.as_raw_fd();
        assert_eq!(
            openat2(r, "abs", libc::O_RDONLY, beneath).unwrap_err(),
            libc::EXDEV
        );
        assert_eq!(
            openat2(r, "up", libc::O_RDONLY, beneath).unwrap_err(),
            libc::EXDEV
        );
        assert!(openat2(r, "near", libc::O_RDONLY, beneath).is_ok());
        for link in ["abs", "up", "near"] {
            assert_eq!(
                openat2(r, link, libc::O_RDONLY, strict).unwrap_err(),
                libc::ELOOP
            );
        }
        assert!(openat2(r, "inside", libc::O_RDONLY, strict).is_ok());
        // The link itself can be named (lstat, readlink).
        assert!(openat2(r, "abs", libc::O_PATH | libc::O_NOFOLLOW, strict).is_ok());
        // A symlinked root is refused.
        let link_root = outside.path().join("root");
        std::os::unix::fs::symlink(dir.path(), &link_root).unwrap();
        assert_eq!(
            openat2(
                libc::AT_FDCWD,
                link_root.to_str().unwrap(),
                libc::O_PATH,
                libc::RESOLVE_NO_SYMLINKS
            )
            .unwrap_err(),
            libc::ELOOP
        );
        // Magic links (/proc/self/fd/N, /proc/self/root) are refused.
        assert_eq!(
            openat2(
                libc::AT_FDCWD,
                &format!("/proc/self/fd/{r}/inside"),
                libc::O_RDONLY,
                libc::RESOLVE_NO_MAGICLINKS
            )
            .unwrap_err(),
            libc::ELOOP
        );
    }

    /// A pin's directory and an object's path are anchored without
    /// following symlinks.
    #[test]
    fn pins_are_anchored_without_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("obj"), "o").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("lnk")).unwrap();
        let d = dir.path().display();
        assert_eq!(
            anchor_pin(&format!("{d}/lnk/new"), true).unwrap_err(),
            libc::ELOOP
        );
        assert_eq!(
            anchor_pin(&format!("{d}/lnk/obj"), false).unwrap_err(),
            libc::ELOOP
        );
        let (fd, path) = anchor_pin(&format!("{d}/new"), true).unwrap();
        assert_eq!(
            path.to_str().unwrap(),
            format!("/proc/self/fd/{}/new", fd.as_raw_fd())
        );
        std::fs::write(dir.path().join("obj"), "o").unwrap();
        let (fd, path) = anchor_pin(&format!("{d}/obj"), false).unwrap();
        assert_eq!(
            path.to_str().unwrap(),
            format!("/proc/self/fd/{}", fd.as_raw_fd())
        );
        assert_eq!(
            std::fs::read_to_string(path.to_str().unwrap()).unwrap(),
            "o"
        );
    }

    /// The event sources resolve through their sysfs symlinks, and only
    /// beneath /sys.
    #[test]
    fn event_sources_resolve_beneath_sys() {
        let Ok(entries) = std::fs::read_dir("/sys/bus/event_source/devices") else {
            return;
        };
        let mut seen = 0;
        for e in entries.flatten() {
            let path = format!("{}/type", e.path().display());
            let fd = open(&path, Access::Read).unwrap_or_else(|e| panic!("{path}: errno {e}"));
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
            assert!(text.trim().parse::<u32>().is_ok(), "{path}: {text:?}");
            seen += 1;
        }
        assert!(seen > 0);
    }
}
