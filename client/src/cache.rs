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

/// The content of an immutable guest file, from the cache when it holds
/// the guest's current version, else fetched (and stored when a cache
/// directory is usable). Returns the content and, when cached, its path.
pub fn guest_file(
    conn: &mut Connection,
    path: &str,
) -> Result<(Vec<u8>, Option<PathBuf>), ClientError> {
    use sha2::Digest as _;
    let FileReply::Digest { sha256, size } = file_op(conn, FileOp::Digest { path: path.into() })?
    else {
        return Err(ClientError::Remote(libc::EPROTO));
    };
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    let cached = dir().map(|d| d.join(&hex));
    if let Some(file) = &cached {
        if let Ok(content) = std::fs::read(file) {
            if content.len() as u64 == size {
                return Ok((content, Some(file.clone())));
            }
        }
    }
    let FileReply::Data(content) = file_op(conn, FileOp::Read { path: path.into() })? else {
        return Err(ClientError::Remote(libc::EPROTO));
    };
    let fresh: [u8; 32] = sha2::Sha256::digest(&content).into();
    let Some(file) = cached.filter(|_| fresh == sha256) else {
        return Ok((content, None));
    };
    let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
    match std::fs::write(&tmp, &content).and_then(|()| std::fs::rename(&tmp, &file)) {
        Ok(()) => Ok((content, Some(file))),
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok((content, None))
        }
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
