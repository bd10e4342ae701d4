//! The host's cache of immutable guest files (the guest's BTF above all),
//! shared by every process of the same user: keyed by the guest's SHA-256
//! of the content, so one small round trip replaces megabytes when any
//! process already fetched the same file.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;

use telebpf_protocol::message::{FileOp, FileReply, Reply, Request};

use crate::{ClientError, Connection};

/// `$TELEBPF_CACHE_DIR` (`off` disables it), else `$XDG_CACHE_HOME/telebpf`,
/// else `$HOME/.cache/telebpf`. Used only if it is a directory owned by us
/// that nobody else may write (anyone who can write it could feed the host
/// program a forged BTF file).
pub fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TELEBPF_CACHE_DIR") {
        Some(d) if d == "off" => return None,
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("XDG_CACHE_HOME") {
            Some(x) => PathBuf::from(x).join("telebpf"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/telebpf"),
        },
    };
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let md = std::fs::symlink_metadata(&dir).ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    (md.is_dir() && md.uid() == me && md.mode() & 0o022 == 0).then_some(dir)
}

/// Where an immutable guest file's bytes are.
#[derive(Debug)]
pub enum Cached {
    /// In the cache, at this path (the guest's current version).
    File(PathBuf),
    /// Fetched, but not stored: the file changed while it was fetched (a
    /// module reloaded), or the cache could not be written.
    Fresh(Vec<u8>),
}

/// An immutable guest file through the cache in `dir`: the guest's digest
/// first (one small request), the cached copy if it has that version, else
/// the file itself (range by range, [`crate::ranges::read_whole`]),
/// checked against the digest and stored atomically. `op` carries a file
/// request to the proxy (each caller has its own way to reach it);
/// `malformed` is the error for a reply of the wrong kind, `stale` says
/// whether an error is `ESTALE`.
pub fn fetch<E>(
    dir: &std::path::Path,
    path: &str,
    mut op: impl FnMut(FileOp) -> Result<FileReply, E>,
    malformed: impl Fn() -> E,
    stale: impl Fn(&E) -> bool,
) -> Result<Cached, E> {
    use sha2::Digest as _;
    let FileReply::Digest { sha256, size } = op(FileOp::Digest { path: path.into() })? else {
        return Err(malformed());
    };
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    let file = dir.join(&hex);
    if std::fs::metadata(&file).is_ok_and(|m| m.len() == size) {
        return Ok(Cached::File(file));
    }
    let content = crate::ranges::read_whole(path, op, malformed, stale)?;
    let fresh: [u8; 32] = sha2::Sha256::digest(&content).into();
    if fresh != sha256 {
        return Ok(Cached::Fresh(content));
    }
    let tmp = dir.join(format!(".{hex}.{}", std::process::id()));
    match std::fs::write(&tmp, &content).and_then(|()| std::fs::rename(&tmp, &file)) {
        Ok(()) => Ok(Cached::File(file)),
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(Cached::Fresh(content))
        }
    }
}

/// An immutable guest file over `conn`, through the cache when [`dir`]
/// gives one.
pub fn guest_file(conn: &mut Connection, path: &str) -> Result<Cached, ClientError> {
    let malformed = || ClientError::Remote(libc::EPROTO);
    let stale = |e: &ClientError| matches!(e, ClientError::Remote(libc::ESTALE));
    match dir() {
        Some(d) => fetch(&d, path, |op| file_op(conn, op), malformed, stale),
        None => crate::ranges::read_whole(path, |op| file_op(conn, op), malformed, stale)
            .map(Cached::Fresh),
    }
}

fn file_op(conn: &mut Connection, op: FileOp) -> Result<FileReply, ClientError> {
    match conn.call(&Request::File(op))? {
        Reply::File(Ok(r)) => Ok(r),
        Reply::File(Err(errno)) => Err(ClientError::Remote(errno)),
        other => Err(ClientError::Unexpected(
            conn.target().clone(),
            format!("{other:?}"),
        )),
    }
}
