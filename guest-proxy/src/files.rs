//! Operations on the guest files a client may see.
//!
//! The proxy runs as root, so a client that could name any path would read
//! the whole guest: every path is checked against the shared allow-list in
//! `telebpf_protocol::paths` first, and anything else gets `EACCES`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use telebpf_protocol::message::{FileOp, FileReply, StatInfo, StatfsInfo};
use telebpf_protocol::paths;

/// The path an operation names.
pub fn op_path(op: &FileOp) -> Option<&str> {
    match op {
        FileOp::Read { path }
        | FileOp::Stat { path, .. }
        | FileOp::Statfs { path }
        | FileOp::Access { path, .. }
        | FileOp::Readlink { path }
        | FileOp::Mkdir { path, .. }
        | FileOp::Unlink { path }
        | FileOp::Rmdir { path }
        | FileOp::Append { path, .. }
        | FileOp::Digest { path }
        | FileOp::ReadDir { path } => Some(path),
        FileOp::Fdinfo { .. } => None,
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Executes a path operation; `Fdinfo` is the session's business.
pub fn execute(op: &FileOp) -> Result<FileReply, i32> {
    let Some(path) = op_path(op) else {
        return Err(libc::EINVAL);
    };
    let allowed = match op {
        FileOp::Mkdir { .. } | FileOp::Unlink { .. } | FileOp::Rmdir { .. } => {
            paths::is_mutable(path)
        }
        FileOp::Append { .. } => paths::is_appendable(path),
        FileOp::Digest { .. } => paths::is_immutable(path),
        FileOp::ReadDir { .. } => paths::is_listable(path),
        _ => paths::is_guest_file(path),
    };
    if !allowed {
        return Err(libc::EACCES);
    }
    let p = Path::new(path);
    match op {
        FileOp::Read { .. } => std::fs::read(p)
            .map(FileReply::Data)
            .map_err(|e| errno_of(&e)),
        FileOp::ReadDir { .. } => std::fs::read_dir(p)
            .and_then(|dir| {
                let mut names = dir
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()?;
                names.sort();
                Ok(FileReply::Entries(names))
            })
            .map_err(|e| errno_of(&e)),
        FileOp::Stat { follow, .. } => {
            let md = if *follow {
                std::fs::metadata(p)
            } else {
                std::fs::symlink_metadata(p)
            };
            md.map(|m| FileReply::Stat(stat_info(&m)))
                .map_err(|e| errno_of(&e))
        }
        FileOp::Statfs { .. } => statfs(path).map(FileReply::Statfs),
        FileOp::Access { mode, .. } => access(path, *mode).map(|()| FileReply::Done),
        FileOp::Readlink { .. } => std::fs::read_link(p)
            .map(|t| FileReply::Link(t.to_string_lossy().into_owned()))
            .map_err(|e| errno_of(&e)),
        FileOp::Mkdir { mode, .. } => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(*mode & 0o7777)
                .create(p)
                .map(|()| FileReply::Done)
                .map_err(|e| errno_of(&e))
        }
        FileOp::Unlink { .. } => std::fs::remove_file(p)
            .map(|()| FileReply::Done)
            .map_err(|e| errno_of(&e)),
        FileOp::Rmdir { .. } => std::fs::remove_dir(p)
            .map(|()| FileReply::Done)
            .map_err(|e| errno_of(&e)),
        FileOp::Append { data, .. } => {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(data))
                .map(|()| FileReply::Done)
                .map_err(|e| errno_of(&e))
        }
        FileOp::Digest { .. } => digest(p),
        FileOp::Fdinfo { .. } => Err(libc::EINVAL),
    }
}

/// SHA-256 and size of an immutable file, computed once per (path, size,
/// mtime): hashing the 5 MB vmlinux BTF costs more than a round trip, and a
/// module's BTF file changes only when the module is reloaded (new mtime).
fn digest(p: &Path) -> Result<FileReply, i32> {
    use sha2::Digest as _;
    type Key = (std::path::PathBuf, u64, i64, i64);
    static MEMO: std::sync::Mutex<Vec<(Key, [u8; 32], u64)>> = std::sync::Mutex::new(Vec::new());
    let md = std::fs::metadata(p).map_err(|e| errno_of(&e))?;
    let key: Key = (p.to_path_buf(), md.size(), md.mtime(), md.mtime_nsec());
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, sha256, size)) = memo.iter().find(|(k, _, _)| k == &key) {
        return Ok(FileReply::Digest {
            sha256: *sha256,
            size: *size,
        });
    }
    let content = std::fs::read(p).map_err(|e| errno_of(&e))?;
    let sha256: [u8; 32] = sha2::Sha256::digest(&content).into();
    let size = content.len() as u64;
    memo.push((key, sha256, size));
    Ok(FileReply::Digest { sha256, size })
}

fn stat_info(m: &std::fs::Metadata) -> StatInfo {
    StatInfo {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev(),
        size: m.size() as i64,
        blksize: m.blksize() as i64,
        blocks: m.blocks() as i64,
        times: [
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        ],
    }
}

fn c_path(path: &str) -> Result<std::ffi::CString, i32> {
    std::ffi::CString::new(path).map_err(|_| libc::EINVAL)
}

fn statfs(path: &str) -> Result<StatfsInfo, i32> {
    let c = c_path(path)?;
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `s` is a valid statfs to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return Err(errno_of(&std::io::Error::last_os_error()));
    }
    Ok(StatfsInfo {
        fs_type: s.f_type,
        bsize: s.f_bsize,
        counts: [s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree],
        namelen: s.f_namelen,
        frsize: s.f_frsize,
    })
}

fn access(path: &str, mode: i32) -> Result<(), i32> {
    let c = c_path(path)?;
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::access(c.as_ptr(), mode) } != 0 {
        return Err(errno_of(&std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_ops_get_eacces() {
        assert_eq!(
            execute(&FileOp::Read {
                path: "/etc/passwd".into()
            }),
            Err(libc::EACCES)
        );
        assert_eq!(
            execute(&FileOp::Unlink {
                path: "/proc/kallsyms".into()
            }),
            Err(libc::EACCES)
        );
    }
}
