//! Operations on the guest files a client may see.
//!
//! The proxy runs as root, so a client that could name any path would read
//! the whole guest. Every path is checked against the shared allow-list in
//! `telebpf_protocol::paths`, and opened so that it cannot lead anywhere
//! else ([`crate::resolve`]); anything else answers `EACCES`, whether or
//! not it exists. The key's policy has already checked bpffs paths against
//! its `[bpffs] paths` ([`crate::policy`]) — but for `statfs`, which
//! outside them is answered for the bpffs mount itself, never for the path
//! named. Reading a pinned object's bpffs file is checked here against
//! what it is, once the file is open: a map's file shows its entries
//! (`map_lookup_elem`), an iterator's runs the iterator program
//! (`iter_create`).
//!
//! # Replies and memory
//!
//! A file's content travels in ranges of at most [`FILE_CHUNK`] bytes, one
//! reply at a time (see "Files" in `telebpf_protocol::message`), and every
//! range's reply is charged to the session's bytes in flight before it is
//! made ([`SessionBudget::reserve_or_wait`]: a full proxy makes the range
//! wait for room, not fail). What the ranges are taken from:
//!
//! * an immutable file (BTF, kernel config): the proxy's one shared copy
//!   of its current version ([`crate::shared_files`]);
//! * any other file (kallsyms, tracefs lists, a pinned map's entries): a
//!   snapshot the first range reads whole, so that every range comes from
//!   the same content. It belongs to the session ([`Snapshots`]), is
//!   charged to the bytes in flight while it lives
//!   ([`SessionBudget::hold_or_wait`], within the session's share), and is
//!   let go when its last range is
//!   served, when the session starts a fifth one (the oldest goes), or
//!   when the session ends. A file that fits one reply needs no snapshot.
//!   A snapshot of `/proc/kallsyms` ends with the `[bpf]` lines the
//!   session's programs had and the guest no longer lists
//!   ([`crate::bpf_symbols`]).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use telebpf_protocol::message::{FileOp, FileReply, StatInfo, StatfsInfo, FILE_CHUNK};
use telebpf_protocol::paths;

use crate::bpf_symbols::{self, BpfSymbols};
use crate::limits::{Held, SessionBudget};
use crate::policy::{Denied, Policy};
use crate::resolve::{self, Access};
use crate::shared_files::{NotShared, SharedFiles};
use crate::{bpf_exec, sys};

/// Snapshots one session may hold at once (a tool reading a few files
/// from several threads).
const MAX_SNAPSHOTS: usize = 4;

/// Set in the ids of session snapshots, so that they never name a shared
/// copy's generation.
const SESSION_SNAPSHOT: u64 = 1 << 63;

/// What a reply of `len` bytes of content costs while it is made and sent:
/// the encoded reply and its sealed frame, each the content plus a little
/// framing.
fn reply_cost(len: usize) -> usize {
    2 * (len + 64)
}

/// Why a file operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The errno the client gets.
    Errno(i32),
    /// The key's policy does not allow it (answered `Reply::Refused`).
    Refused(Denied),
}

impl From<i32> for Failure {
    fn from(errno: i32) -> Failure {
        Failure::Errno(errno)
    }
}

/// What a pinned bpffs file stands for, as far as reading it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// A map: its file shows its entries.
    Map,
    /// An iterator link: reading its file runs the iterator program.
    Iterator,
    /// Anything else (a program, another link, a directory): the kernel
    /// answers reads itself (`EIO`, `EISDIR`).
    Other,
}

/// The content of a mutable file a session reads range by range.
#[derive(Debug)]
struct Snapshot {
    id: u64,
    path: String,
    /// The content, in pieces (no reallocation copies while reading).
    pieces: Vec<Vec<u8>>,
    size: usize,
    /// Its charge to the bytes in flight.
    held: Vec<Held>,
}

impl Snapshot {
    /// Bytes `offset..offset + len` (clipped to the content).
    fn range(&self, offset: usize, len: usize) -> Vec<u8> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset));
        let mut at = 0;
        for piece in &self.pieces {
            let (start, stop) = (at, at + piece.len());
            at = stop;
            if stop <= offset || start >= end {
                continue;
            }
            out.extend_from_slice(&piece[offset.max(start) - start..end.min(stop) - start]);
        }
        out
    }

    fn held_bytes(&self) -> usize {
        self.held.iter().map(Held::bytes).sum()
    }
}

/// The snapshots of one session (see the module doc).
#[derive(Debug, Default)]
pub struct Snapshots {
    list: Vec<Snapshot>,
    last_id: u64,
}

impl Snapshots {
    /// Bytes the snapshots hold.
    pub fn bytes(&self) -> usize {
        self.list.iter().map(Snapshot::held_bytes).sum()
    }
}

/// Whether the key may run the iterator of link `id` (`None`: its id is
/// unknown), as `BPF_ITER_CREATE` on it would: under
/// `change_foreign_objects = false` only its own links.
pub type RunsIterator<'a> = dyn Fn(Option<u32>) -> Result<(), Denied> + 'a;

/// What a file operation needs from its session.
pub struct Context<'a> {
    /// Charges replies and snapshots.
    pub budget: &'a SessionBudget,
    /// Decides what a pinned file may be read as.
    pub policy: &'a Policy,
    /// Decides whose pinned iterators reading may run.
    pub runs_iterator: &'a RunsIterator<'a>,
    /// The session's snapshots.
    pub snapshots: &'a mut Snapshots,
    /// The `[bpf]` kallsyms lines its programs had before it detached,
    /// added to its reads of `/proc/kallsyms` ([`crate::bpf_symbols`]).
    pub bpf_symbols: &'a BpfSymbols,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("budget", &self.budget)
            .field("policy", &self.policy)
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

/// The path an operation names.
pub fn op_path(op: &FileOp) -> Option<&str> {
    match op {
        FileOp::Read { path }
        | FileOp::ReadRange { path, .. }
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

fn last_errno() -> i32 {
    errno_of(&std::io::Error::last_os_error())
}

/// Executes a path operation; `Fdinfo` is the session's business.
pub fn execute(op: &FileOp, cx: &mut Context<'_>) -> Result<FileReply, Failure> {
    match op {
        FileOp::Read { path } => read(path, 0, FILE_CHUNK, 0, true, cx),
        FileOp::ReadRange {
            path,
            offset,
            len,
            snapshot,
        } => {
            let offset = usize::try_from(*offset).map_err(|_| libc::EINVAL)?;
            read(path, offset, *len as usize, *snapshot, false, cx)
        }
        FileOp::ReadDir { path } => read_dir(path, cx.budget),
        FileOp::Stat { path, follow } => {
            let fd = resolve::open(path, Access::Path { follow: *follow })?;
            let m = File::from(fd).metadata().map_err(|e| errno_of(&e))?;
            Ok(FileReply::Stat(stat_info(&m)))
        }
        FileOp::Statfs { path } => {
            // Outside the key's bpffs paths: the mount's statfs, the same
            // for every path there, existing or not (see
            // `Policy::check_file`).
            let path = if paths::is_bpffs(path) && !cx.policy.allows_bpffs_path(path) {
                paths::BPFFS
            } else {
                path
            };
            let fd = resolve::open(path, Access::Path { follow: true })?;
            Ok(FileReply::Statfs(statfs(&fd)?))
        }
        FileOp::Access { path, mode } => {
            let fd = resolve::open(path, Access::Path { follow: true })?;
            access(&fd, *mode)?;
            Ok(FileReply::Done)
        }
        FileOp::Readlink { path } => {
            let fd = resolve::open(path, Access::Path { follow: false })?;
            Ok(FileReply::Link(readlink(&fd)?))
        }
        FileOp::Mkdir { path, mode } => {
            let (dir, name) = mutable_parent(path)?;
            // SAFETY: `name` is NUL-terminated; `dir` is an open directory.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), *mode & 0o7777) };
            done(r)
        }
        FileOp::Unlink { path } | FileOp::Rmdir { path } => {
            let (dir, name) = mutable_parent(path)?;
            let flags = if matches!(op, FileOp::Rmdir { .. }) {
                libc::AT_REMOVEDIR
            } else {
                0
            };
            // SAFETY: `name` is NUL-terminated; `dir` is an open directory.
            let r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
            done(r)
        }
        FileOp::Append { path, data } => {
            if !paths::is_appendable(path) {
                return Err(libc::EACCES.into());
            }
            let fd = resolve::open(path, Access::Append)?;
            std::io::Write::write_all(&mut File::from(fd), data).map_err(|e| errno_of(&e))?;
            Ok(FileReply::Done)
        }
        FileOp::Digest { path } => digest(path),
        FileOp::Fdinfo { .. } => Err(libc::EINVAL.into()),
    }
}

fn done(r: libc::c_int) -> Result<FileReply, Failure> {
    if r == 0 {
        Ok(FileReply::Done)
    } else {
        Err(last_errno().into())
    }
}

/// The directory of a bpffs path a client may create or remove, and its
/// last component.
fn mutable_parent(path: &str) -> Result<(OwnedFd, CString), i32> {
    if !paths::is_mutable(path) {
        return Err(libc::EACCES);
    }
    resolve::parent(path)
}

/// Opens served `path` for reading; a pinned object's bpffs file only if
/// the policy allows reading what it is. Classified through an `O_PATH`
/// handle before it is opened for reading (opening an iterator's file
/// already prepares a run), and reopened through that same handle, so the
/// file checked is the file read.
fn open_for_read(
    path: &str,
    policy: &Policy,
    runs_iterator: &RunsIterator<'_>,
) -> Result<File, Failure> {
    if !paths::is_bpffs(path) {
        return Ok(File::from(resolve::open(path, Access::Read)?));
    }
    let handle = resolve::open(path, Access::Path { follow: true })?;
    let own = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).expect("no NUL");
    let (pin, link) = pin_of(&own)?;
    policy.check_bpffs_read(pin).map_err(Failure::Refused)?;
    if pin == Pin::Iterator {
        // Reading it creates an iterator on the link and runs it.
        runs_iterator(link).map_err(Failure::Refused)?;
    }
    // SAFETY: `own` is NUL-terminated; it names our own O_PATH fd, which
    // open(2) reopens (the same inode, whatever the path's name now is).
    let fd = unsafe { libc::open(own.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_errno().into());
    }
    // SAFETY: open returned a new fd that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What the bpffs file at `own` (our `/proc/self/fd/N` of it) stands for,
/// and for a link its id: `BPF_OBJ_GET` of it gives the object itself.
/// Anything that cannot be told fails closed: a link whose type is unknown
/// counts as an iterator, an object of no known kind (or a failing
/// `BPF_OBJ_GET`, but for the `EACCES` of a directory) is not read at all.
fn pin_of(own: &CString) -> Result<(Pin, Option<u32>), i32> {
    let obj = match sys::obj_get(own) {
        Ok(obj) => obj,
        // Not a pin (a directory): the kernel answers the read itself.
        Err(libc::EACCES) => return Ok((Pin::Other, None)),
        Err(e) => return Err(e),
    };
    let described = bpf_exec::describe(obj.as_raw_fd());
    match described.link.as_str() {
        "anon_inode:bpf-map" => Ok((Pin::Map, None)),
        "anon_inode:bpf-prog" => Ok((Pin::Other, None)),
        "anon_inode:bpf-link" | "anon_inode:bpf_link" => Ok(match described.link_type {
            Some(t) if t != telebpf_abi::link_type::BPF_LINK_TYPE_ITER => (Pin::Other, None),
            _ => (
                Pin::Iterator,
                crate::ownership::object_id(
                    obj.as_raw_fd(),
                    crate::ownership::Kind::Link,
                    &crate::kernel::RealKernel,
                ),
            ),
        }),
        _ => Err(libc::EACCES),
    }
}

/// `len` bytes (at most [`FILE_CHUNK`]) of `path` from `offset`, from the
/// content `snapshot` names (0: a new read). `whole`: the legacy
/// `FileOp::Read`, which answers the whole file or `EFBIG`.
fn read(
    path: &str,
    offset: usize,
    len: usize,
    snapshot: u64,
    whole: bool,
    cx: &mut Context<'_>,
) -> Result<FileReply, Failure> {
    if !paths::is_guest_file(path) {
        return Err(libc::EACCES.into());
    }
    let len = len.min(FILE_CHUNK);
    cx.budget.reserve_or_wait(reply_cost(len))?;
    if snapshot & SESSION_SNAPSHOT != 0 {
        return next_range(path, offset, len, snapshot, cx.snapshots);
    }
    let mut file = open_for_read(path, cx.policy, cx.runs_iterator)?;
    if paths::is_immutable(path) {
        match SharedFiles::global().get(path, &mut file) {
            Ok(copy) => {
                if snapshot != 0 && snapshot != copy.generation {
                    return Err(libc::ESTALE.into());
                }
                let size = copy.bytes.len();
                if whole {
                    return if size <= len {
                        Ok(FileReply::Data(copy.bytes.clone()))
                    } else {
                        Err(libc::EFBIG.into())
                    };
                }
                let (start, end) = (offset.min(size), offset.saturating_add(len).min(size));
                return Ok(FileReply::Range {
                    size: size as u64,
                    snapshot: if size <= len { 0 } else { copy.generation },
                    data: copy.bytes[start..end].to_vec(),
                });
            }
            // Read as any other file, from the start.
            Err(NotShared::TooLarge) if snapshot == 0 => {
                file = open_for_read(path, cx.policy, cx.runs_iterator)?;
            }
            Err(NotShared::TooLarge) => return Err(libc::ESTALE.into()),
            Err(NotShared::Errno(e)) => return Err(e.into()),
        }
    } else if snapshot != 0 {
        return Err(libc::ESTALE.into());
    }
    if offset != 0 {
        // A read starts at 0; later ranges name its snapshot.
        return Err(libc::EINVAL.into());
    }
    let mut snap = take_snapshot(path, &mut file, cx.budget, cx.snapshots)?;
    if path == bpf_symbols::KALLSYMS {
        add_kept_bpf_symbols(&mut snap, cx)?;
    }
    if snap.size <= len {
        let data = snap.range(0, len);
        return Ok(if whole {
            FileReply::Data(data)
        } else {
            FileReply::Range {
                size: snap.size as u64,
                snapshot: 0,
                data,
            }
        });
    }
    if whole {
        return Err(libc::EFBIG.into());
    }
    let snaps = &mut *cx.snapshots;
    snaps.last_id += 1;
    let snap = Snapshot {
        id: SESSION_SNAPSHOT | snaps.last_id,
        ..snap
    };
    let reply = FileReply::Range {
        size: snap.size as u64,
        snapshot: snap.id,
        data: snap.range(0, len),
    };
    if snaps.list.len() >= MAX_SNAPSHOTS {
        snaps.list.remove(0);
    }
    snaps.list.push(snap);
    Ok(reply)
}

/// A later range of the snapshot `id`, which must be of `path`: `ESTALE`
/// if the session no longer holds it. The range that reaches the end lets
/// the snapshot go.
fn next_range(
    path: &str,
    offset: usize,
    len: usize,
    id: u64,
    snaps: &mut Snapshots,
) -> Result<FileReply, Failure> {
    let i = snaps
        .list
        .iter()
        .position(|s| s.id == id && s.path == path)
        .ok_or(libc::ESTALE)?;
    let snap = &snaps.list[i];
    let data = snap.range(offset, len);
    let reply = FileReply::Range {
        size: snap.size as u64,
        snapshot: id,
        data,
    };
    if offset.saturating_add(len) >= snap.size {
        snaps.list.remove(i);
    }
    Ok(reply)
}

/// Reads all of `file` into a snapshot charged to the bytes in flight:
/// `ENOMEM` past the session's share (with the snapshots it holds); past
/// the proxy's it waits for room, up to the stall timeout (`EAGAIN`).
fn take_snapshot(
    path: &str,
    file: &mut File,
    budget: &SessionBudget,
    snaps: &Snapshots,
) -> Result<Snapshot, i32> {
    // Small first: most files (sysctls, event ids) are a few bytes.
    const FIRST: usize = 64 << 10;
    const PIECE: usize = 1 << 20;
    let mut snap = Snapshot {
        id: 0,
        path: path.to_string(),
        pieces: Vec::new(),
        size: 0,
        held: Vec::new(),
    };
    loop {
        let want = if snap.pieces.is_empty() { FIRST } else { PIECE };
        if snaps.bytes() + snap.held_bytes() + want > budget.share() {
            return Err(libc::ENOMEM);
        }
        snap.held.push(budget.hold_or_wait(want)?);
        let mut piece = Vec::with_capacity(want);
        let got = file
            .by_ref()
            .take(want as u64)
            .read_to_end(&mut piece)
            .map_err(|e| errno_of(&e))?;
        snap.size += got;
        snap.pieces.push(piece);
        if got < want {
            return Ok(snap);
        }
    }
}

/// Appends to a snapshot of `/proc/kallsyms` the `[bpf]` lines the
/// session kept that the guest no longer lists (see
/// [`crate::bpf_symbols`]), charged like the rest of the snapshot.
fn add_kept_bpf_symbols(snap: &mut Snapshot, cx: &Context<'_>) -> Result<(), i32> {
    let extra = cx.bpf_symbols.missing_from(&snap.pieces);
    if extra.is_empty() {
        return Ok(());
    }
    if cx.snapshots.bytes() + snap.held_bytes() + extra.len() > cx.budget.share() {
        return Err(libc::ENOMEM);
    }
    snap.held.push(cx.budget.hold_or_wait(extra.len())?);
    snap.size += extra.len();
    snap.pieces.push(extra);
    Ok(())
}

/// The names in listable directory `path` (only `/proc`), charged to the
/// bytes in flight before they are sent.
fn read_dir(path: &str, budget: &SessionBudget) -> Result<FileReply, Failure> {
    if !paths::is_listable(path) {
        return Err(libc::EACCES.into());
    }
    let mut names = std::fs::read_dir(path)
        .and_then(|dir| {
            dir.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|e| errno_of(&e))?;
    budget.reserve_or_wait(reply_cost(names.iter().map(|n| n.len() + 8).sum()))?;
    names.sort();
    Ok(FileReply::Entries(names))
}

/// SHA-256 and size of an immutable file, from the shared copy (hashed
/// once per version, not per request: hashing the 5 MB vmlinux BTF costs
/// more than a round trip).
fn digest(path: &str) -> Result<FileReply, Failure> {
    use sha2::Digest as _;
    if !paths::is_immutable(path) {
        return Err(libc::EACCES.into());
    }
    let mut file = File::from(resolve::open(path, Access::Read)?);
    match SharedFiles::global().get(path, &mut file) {
        Ok(copy) => Ok(FileReply::Digest {
            sha256: copy.sha256,
            size: copy.bytes.len() as u64,
        }),
        Err(NotShared::TooLarge) => {
            // Hashed as it streams by; too large to keep.
            let mut file = File::from(resolve::open(path, Access::Read)?);
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(|e| errno_of(&e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok(FileReply::Digest {
                sha256: hasher.finalize().into(),
                size,
            })
        }
        Err(NotShared::Errno(e)) => Err(e.into()),
    }
}

/// The wire form of a file's metadata.
pub(crate) fn stat_info(m: &std::fs::Metadata) -> StatInfo {
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

fn statfs(fd: &OwnedFd) -> Result<StatfsInfo, i32> {
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `s` is a valid statfs to fill.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut s) } != 0 {
        return Err(last_errno());
    }
    Ok(StatfsInfo {
        fs_type: s.f_type,
        bsize: s.f_bsize,
        counts: [s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree],
        namelen: s.f_namelen,
        frsize: s.f_frsize,
    })
}

/// `faccessat2(fd, "", mode, AT_EMPTY_PATH)`: access(2) of the file `fd`
/// names (Linux 5.8).
fn access(fd: &OwnedFd, mode: i32) -> Result<(), i32> {
    // SAFETY: the empty path is a static NUL-terminated string; with
    // AT_EMPTY_PATH the call acts on `fd` itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `readlinkat(fd, "")`: the target of the symlink `fd` (an `O_PATH`
/// handle of the link itself) names.
fn readlink(fd: &OwnedFd) -> Result<String, i32> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is valid for writes of its length; the empty path
    // makes the call act on `fd` itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: FileOp) -> Result<FileReply, Failure> {
        let budget = SessionBudget::default();
        let policy = Policy::full();
        let mut snapshots = Snapshots::default();
        execute(
            &op,
            &mut Context {
                budget: &budget,
                policy: &policy,
                runs_iterator: &|_| Ok(()),
                snapshots: &mut snapshots,
                bpf_symbols: &BpfSymbols::default(),
            },
        )
    }

    #[test]
    fn refused_ops_get_eacces() {
        let eacces = Err(Failure::Errno(libc::EACCES));
        for op in [
            FileOp::Read {
                path: "/etc/passwd".into(),
            },
            FileOp::Stat {
                path: "/etc/passwd".into(),
                follow: true,
            },
            FileOp::Stat {
                path: "/nonexistent".into(),
                follow: true,
            },
            FileOp::Unlink {
                path: "/proc/kallsyms".into(),
            },
            FileOp::Mkdir {
                path: "/etc".into(),
                mode: 0o755,
            },
            FileOp::Mkdir {
                path: "/nonexistent".into(),
                mode: 0o755,
            },
            FileOp::Digest {
                path: "/proc/kallsyms".into(),
            },
            FileOp::Read {
                path: "/proc/sys/kernel/cad_pid".into(),
            },
        ] {
            assert_eq!(run(op.clone()), eacces, "{op:?}");
        }
    }

    #[test]
    fn snapshot_ranges() {
        let snap = Snapshot {
            id: 1,
            path: "/p".into(),
            pieces: vec![b"abc".to_vec(), b"defg".to_vec(), b"h".to_vec()],
            size: 8,
            held: Vec::new(),
        };
        assert_eq!(snap.range(0, 8), b"abcdefgh");
        assert_eq!(snap.range(2, 3), b"cde");
        assert_eq!(snap.range(3, 4), b"defg");
        assert_eq!(snap.range(6, 100), b"gh");
        assert_eq!(snap.range(8, 1), b"");
        assert_eq!(snap.range(100, 1), b"");
    }

    /// A mutable file larger than a reply is read range by range from one
    /// snapshot, which the last range lets go; a snapshot id the session
    /// does not hold answers ESTALE.
    #[test]
    fn kallsyms_in_ranges() {
        let Ok(local) = std::fs::read("/proc/kallsyms") else {
            return;
        };
        if local.len() <= FILE_CHUNK {
            return;
        }
        let budget = SessionBudget::default();
        let policy = Policy::full();
        let mut snapshots = Snapshots::default();
        let mut cx = Context {
            budget: &budget,
            policy: &policy,
            runs_iterator: &|_| Ok(()),
            snapshots: &mut snapshots,
            bpf_symbols: &BpfSymbols::default(),
        };
        let path = "/proc/kallsyms".to_string();
        let range = |offset, snapshot, cx: &mut Context<'_>| {
            execute(
                &FileOp::ReadRange {
                    path: path.clone(),
                    offset,
                    len: u32::MAX,
                    snapshot,
                },
                cx,
            )
        };
        let Ok(FileReply::Range {
            size,
            snapshot,
            data,
        }) = range(0, 0, &mut cx)
        else {
            panic!("no first range");
        };
        assert_ne!(snapshot, 0);
        assert_eq!(data.len(), FILE_CHUNK);
        let mut all = data;
        while (all.len() as u64) < size {
            let Ok(FileReply::Range { data, .. }) = range(all.len() as u64, snapshot, &mut cx)
            else {
                panic!("no range at {}", all.len());
            };
            assert!(!data.is_empty());
            all.extend(data);
        }
        assert_eq!(all.len() as u64, size);
        assert!(cx.snapshots.list.is_empty(), "the last range lets it go");
        assert_eq!(
            range(0, snapshot, &mut cx),
            Err(Failure::Errno(libc::ESTALE))
        );
        // The legacy whole-file read of it is too large.
        assert_eq!(
            execute(&FileOp::Read { path: path.clone() }, &mut cx),
            Err(Failure::Errno(libc::EFBIG))
        );
        // Small files come whole.
        let Ok(FileReply::Range { size, snapshot, .. }) = execute(
            &FileOp::ReadRange {
                path: "/proc/sys/kernel/pid_max".into(),
                offset: 0,
                len: 4096,
                snapshot: 0,
            },
            &mut cx,
        ) else {
            panic!("pid_max");
        };
        assert!(size > 0);
        assert_eq!(snapshot, 0);
    }

    /// The shared copy answers every range of an immutable file and its
    /// digest.
    #[test]
    fn btf_from_the_shared_copy() {
        let Ok(local) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let path = "/sys/kernel/btf/vmlinux".to_string();
        let Ok(FileReply::Digest { sha256, size }) = run(FileOp::Digest { path: path.clone() })
        else {
            panic!("digest");
        };
        use sha2::Digest as _;
        assert_eq!(sha256, <[u8; 32]>::from(sha2::Sha256::digest(&local)));
        assert_eq!(size, local.len() as u64);
        let Ok(FileReply::Range { data, snapshot, .. }) = run(FileOp::ReadRange {
            path: path.clone(),
            offset: 1000,
            len: 100,
            snapshot: 0,
        }) else {
            panic!("range");
        };
        assert_eq!(data, &local[1000..1100]);
        assert_ne!(snapshot, 0);
        assert_eq!(
            run(FileOp::ReadRange {
                path,
                offset: 0,
                len: 100,
                snapshot: snapshot + 1000,
            }),
            Err(Failure::Errno(libc::ESTALE))
        );
    }
}
