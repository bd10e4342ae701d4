//! The guest's cgroup2 tree, as the host program sees it.
//!
//! What bpftool calls (`cgroup.c`, and `strace -f` of `cgroup tree`,
//! `show`, `attach` here): `fopen("/proc/mounts")` + `getmntent` for the
//! cgroup2 mount; `nftw(root, fn, 1024, FTW_MOUNT)` for `cgroup tree`, and
//! in the callback `open(fpath, O_RDONLY)` of each directory, whose fd is
//! `target_fd` of `BPF_PROG_QUERY`; `show`, `attach` and `detach` open one
//! path the same way. glibc's `nftw` calls its own internal `opendir`,
//! `getdents64` and `fstatat`, which no interposed symbol sees, so the
//! walk itself is interposed ([`walk`]) and served from one guest
//! listing per directory ([`CgroupOp::List`]).
//!
//! * **Which paths.** Paths at or under `/sys/fs/cgroup` ([`crate::vfs::CGROUP_TREE`], where
//!   systemd and Debian mount cgroup2, and where the hybrid layout's
//!   `unified` lies) are looked at; of those, the ones at or under the
//!   guest's cgroup2 mount point (from its mount lines, asked once per
//!   process) are the guest's, the others stay the host's. A guest that
//!   mounts cgroup2 anywhere else is not routed.
//! * **Mount tables.** `/proc/mounts`, `/proc/self/mounts` and
//!   `/proc/self/mountinfo` are the host's, with the lines of type
//!   `cgroup2` and `bpf` (and every line mounted at or under the guest's
//!   cgroup2 or bpffs mount point, which the guest's lines now stand for)
//!   replaced by the guest's ([`merge`]).
//! * **Opened cgroups.** `open` of a guest cgroup (read-only; a write
//!   answers `EACCES`) gives a memfd in the fd table standing for the
//!   proxy's `O_RDONLY|O_DIRECTORY` fd, so `telebpf_marshal` translates it
//!   like a map or program fd in `BPF_PROG_ATTACH`/`DETACH`/`QUERY` and
//!   `BPF_LINK_CREATE`; its `close` closes the proxy's.
//! * **Listings**: `opendir`/`readdir`/`dirfd`/`closedir` and `statx` of
//!   guest cgroups are the preload's (`hooks/dirs.rs`), from the same
//!   [`list`] and [`stat`].
//! * **Not served**: reading a cgroup's files (`cgroup.procs`…: the
//!   proxy opens directories only, so they answer `ENOTDIR`) and
//!   `fdopendir` of a guest cgroup's fd.
//! * **Cgroup ids**: `name_to_handle_at` of a guest cgroup is the guest's
//!   handle ([`handle`]; for cgroupfs its bytes are the cgroup id).

use std::sync::{Arc, Mutex};

use telebpf_protocol::message::{CgroupOp, CgroupReply, DirEntry, Reply, Request, StatInfo};

use crate::bpf;
use crate::error::{Error, Result};
use crate::state;
use crate::sys::memfd_with;
use crate::vfs::MountFile;

/// The guest's mount lines (see [`CgroupOp::Mounts`]).
#[derive(Debug)]
struct GuestMounts {
    mounts: Vec<String>,
    mountinfo: Vec<String>,
}

impl GuestMounts {
    /// The guest's cgroup2 mount point.
    fn cgroup2(&self) -> Option<String> {
        self.points()
            .find(|(fs, _)| *fs == "cgroup2")
            .map(|(_, p)| p)
    }

    /// `(type, mount point)` of each guest mountinfo line.
    fn points(&self) -> impl Iterator<Item = (&str, String)> {
        self.mountinfo.iter().filter_map(|l| {
            Some((
                fs_type(l, MountFile::Mountinfo)?,
                point(l, MountFile::Mountinfo)?,
            ))
        })
    }
}

/// Asked once per process: the guest's mounts do not move under a tool.
static GUEST: Mutex<Option<Arc<GuestMounts>>> = Mutex::new(None);

fn guest_mounts() -> Result<Arc<GuestMounts>> {
    if let Some(m) = GUEST.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Ok(m.clone());
    }
    let CgroupReply::Mounts { mounts, mountinfo } = ask(CgroupOp::Mounts)? else {
        return Err(Error::Protocol("a cgroup request"));
    };
    let m = Arc::new(GuestMounts { mounts, mountinfo });
    *GUEST.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
    Ok(m)
}

/// Runs a cgroup request in the guest.
fn ask(op: CgroupOp) -> Result<CgroupReply> {
    state::get().ask(&Request::Cgroup(op), "a cgroup request", |r| match r {
        Reply::Cgroup(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })
}

/// Whether `path` (in [`crate::vfs::CGROUP_TREE`]) is at or under the guest's cgroup2 mount.
pub fn is_guest(path: &str) -> Result<bool> {
    Ok(guest_mounts()?.cgroup2().is_some_and(|m| under(path, &m)))
}

/// Whether `path` is `dir` or lies under it, component-wise.
fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || dir.is_empty())
}

/// `open` of a guest cgroup: a host fd standing for the proxy's.
pub fn open(path: &str, flags: i32) -> Result<i32> {
    if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0 {
        return Err(Error::kernel(libc::EACCES, "writing a guest cgroup"));
    }
    let CgroupReply::Opened { fd, object } = ask(CgroupOp::Open {
        path: path.to_string(),
    })?
    else {
        return Err(Error::Protocol("a cgroup request"));
    };
    let raw = bpf::adopt(fd, object)?;
    if flags & libc::O_CLOEXEC == 0 {
        // SAFETY: fcntl on the fd we just made.
        unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    }
    Ok(raw)
}

/// `stat` of a guest cgroup path.
pub fn stat(path: &str) -> Result<StatInfo> {
    match ask(CgroupOp::Stat {
        path: path.to_string(),
    })? {
        CgroupReply::Stat(s) => Ok(s),
        _ => Err(Error::Protocol("a cgroup request")),
    }
}

/// A guest cgroup's file handle: `(handle_type, bytes, mount_id)`.
pub fn handle(path: &str) -> Result<(i32, Vec<u8>, i32)> {
    match ask(CgroupOp::Handle {
        path: path.to_string(),
    })? {
        CgroupReply::Handle {
            handle_type,
            bytes,
            mount_id,
        } if bytes.len() <= 128 => Ok((handle_type, bytes, mount_id)),
        _ => Err(Error::Protocol("a cgroup request")),
    }
}

/// One guest directory: its metadata and entries.
pub fn list(path: &str) -> Result<(StatInfo, Vec<DirEntry>)> {
    match ask(CgroupOp::List {
        path: path.to_string(),
    })? {
        CgroupReply::Listing { dir, entries } => Ok((dir, entries)),
        _ => Err(Error::Protocol("a cgroup request")),
    }
}

/// `open` of a mount table: the host's, with the guest's cgroup2 and
/// bpffs lines in place of its own (see [`merge`]).
pub fn open_mounts(which: MountFile) -> Result<i32> {
    let guest = guest_mounts()?;
    let file = match which {
        MountFile::Mounts => "/proc/self/mounts",
        MountFile::Mountinfo => "/proc/self/mountinfo",
    };
    let host = std::fs::read_to_string(file)
        .map_err(|e| Error::os("reading the host's mount table", e, libc::EIO))?;
    let lines = match which {
        MountFile::Mounts => &guest.mounts,
        MountFile::Mountinfo => &guest.mountinfo,
    };
    let places: Vec<String> = guest.points().map(|(_, p)| p).collect();
    let merged = merge(&host, lines, &places, which);
    let fd = memfd_with("mounts", merged.as_bytes(), false)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

/// The filesystem type of a mount line.
fn fs_type(line: &str, which: MountFile) -> Option<&str> {
    match which {
        MountFile::Mounts => line.split(' ').nth(2),
        MountFile::Mountinfo => line.split_once(" - ")?.1.split(' ').next(),
    }
}

/// The mount point of a mount line, its octal escapes undone.
fn point(line: &str, which: MountFile) -> Option<String> {
    let field = line.split(' ').nth(match which {
        MountFile::Mounts => 1,
        MountFile::Mountinfo => 4,
    })?;
    telebpf_protocol::paths::unescape_mount_field(field)
}

/// The host's mount table `host` without its `cgroup2` and `bpf` lines and
/// without the lines mounted at or under one of `guest_points` (the
/// guest's cgroup2 and bpffs mount points, whose paths now lead to the
/// guest), followed by the guest's `lines`.
pub fn merge(host: &str, lines: &[String], guest_points: &[String], which: MountFile) -> String {
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let replaced = matches!(fs_type(line, which), Some("cgroup2" | "bpf"))
            || point(line, which).is_some_and(|p| guest_points.iter().any(|g| under(&p, g)));
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `FTW_*` of `<ftw.h>`: the callback's type flags.
pub mod ftw {
    /// A file.
    pub const F: i32 = 0;
    /// A directory (before its entries).
    pub const D: i32 = 1;
    /// A directory that could not be read.
    pub const DNR: i32 = 2;
    /// A file `stat` failed on.
    pub const NS: i32 = 3;
    /// A symbolic link (with `FTW_PHYS`).
    pub const SL: i32 = 4;
    /// A directory after its entries (with `FTW_DEPTH`).
    pub const DP: i32 = 5;
    /// `nftw` flag: do not follow symbolic links.
    pub const PHYS: i32 = 1;
    /// `nftw` flag: stay on one filesystem.
    pub const MOUNT: i32 = 2;
    /// `nftw` flag: `chdir` into each directory (not possible in the guest).
    pub const CHDIR: i32 = 4;
    /// `nftw` flag: directories after their entries.
    pub const DEPTH: i32 = 8;
    /// `nftw` flag: the callback's value steers the walk.
    pub const ACTIONRETVAL: i32 = 16;
    /// Callback value under `ACTIONRETVAL`: stop the walk.
    pub const STOP: i32 = 1;
    /// Callback value under `ACTIONRETVAL`: skip this directory's entries.
    pub const SKIP_SUBTREE: i32 = 2;
    /// Callback value under `ACTIONRETVAL`: skip the rest of this directory.
    pub const SKIP_SIBLINGS: i32 = 3;
}

/// What the walk gives the program's callback for one entry.
#[derive(Debug)]
pub struct Visit<'a> {
    /// The entry's path (the root as given, then `dir/name`).
    pub path: &'a str,
    /// Its metadata (none for `FTW_NS`).
    pub stat: Option<&'a StatInfo>,
    /// `ftw::F`, `D`, `DNR`, `NS`, `SL` or `DP`.
    pub flag: i32,
    /// Offset of the last component in `path`.
    pub base: i32,
    /// Depth below the root (0).
    pub level: i32,
}

/// What the walk needs: the guest's listing of a directory, and the
/// program's callback.
pub trait Walker {
    /// The directory's metadata and entries.
    fn list(&mut self, path: &str) -> Result<(StatInfo, Vec<DirEntry>)>;
    /// The program's callback.
    fn visit(&mut self, visit: &Visit<'_>) -> i32;
}

/// `nftw(root, fn, _, flags)` over the guest's tree: what glibc's
/// `ftw.c` does (pre-order, or post-order with `FTW_DEPTH`; a nonzero
/// callback value ends the walk and is returned; `FTW_ACTIONRETVAL`'s
/// values), with one [`Walker::list`] per directory instead of its
/// `opendir`/`getdents64`/`fstatat`. `FTW_MOUNT`: entries on another
/// filesystem (the proxy cannot stat across a mount: `EXDEV`) are left
/// out. `FTW_CHDIR` cannot move the program into the guest: `EINVAL`. The
/// root failing answers its errno; a path longer than `PATH_MAX`
/// `ENAMETOOLONG`.
pub fn walk(root: &str, flags: i32, walker: &mut dyn Walker) -> Result<i32> {
    if flags & ftw::CHDIR != 0 {
        return Err(Error::kernel(libc::EINVAL, "FTW_CHDIR in the guest's tree"));
    }
    let listed = walker.list(root)?;
    let base = root.trim_end_matches('/').rfind('/').map_or(0, |i| i + 1) as i32;
    Ok(match dir(root, base, 0, Ok(listed), flags, walker)? {
        Flow::Stop(v) => v,
        Flow::Go | Flow::SkipSiblings => 0,
    })
}

/// How the walk goes on after a callback.
enum Flow {
    Go,
    SkipSiblings,
    Stop(i32),
}

fn flow(v: i32, flags: i32) -> Flow {
    if flags & ftw::ACTIONRETVAL == 0 {
        return if v == 0 { Flow::Go } else { Flow::Stop(v) };
    }
    match v {
        ftw::STOP => Flow::Stop(v),
        ftw::SKIP_SIBLINGS => Flow::SkipSiblings,
        // FTW_CONTINUE; SKIP_SUBTREE is the caller's for a directory.
        _ => Flow::Go,
    }
}

/// One directory, listed (or not): its callback and its entries.
fn dir(
    path: &str,
    base: i32,
    level: i32,
    listed: Result<(StatInfo, Vec<DirEntry>)>,
    flags: i32,
    walker: &mut dyn Walker,
) -> Result<Flow> {
    let (stat, entries) = match listed {
        Ok((stat, entries)) => (stat, entries),
        Err(_) => {
            // Unreadable (refused, or gone): FTW_DNR, as glibc when its
            // opendir fails.
            let v = walker.visit(&Visit {
                path,
                stat: None,
                flag: ftw::DNR,
                base,
                level,
            });
            return Ok(flow(v, flags));
        }
    };
    let depth = flags & ftw::DEPTH != 0;
    if !depth {
        let v = walker.visit(&Visit {
            path,
            stat: Some(&stat),
            flag: ftw::D,
            base,
            level,
        });
        if flags & ftw::ACTIONRETVAL != 0 && v == ftw::SKIP_SUBTREE {
            return Ok(Flow::Go);
        }
        match flow(v, flags) {
            Flow::Go => {}
            other => return Ok(other),
        }
    }
    let prefix = path.trim_end_matches('/');
    for entry in entries {
        let child = format!("{prefix}/{}", entry.name);
        if child.len() >= libc::PATH_MAX as usize {
            return Err(Error::kernel(libc::ENAMETOOLONG, "a guest cgroup path"));
        }
        let child_base = (prefix.len() + 1) as i32;
        let v = match &entry.stat {
            Err(libc::EXDEV) if flags & ftw::MOUNT != 0 => continue,
            Err(_) => walker.visit(&Visit {
                path: &child,
                stat: None,
                flag: ftw::NS,
                base: child_base,
                level: level + 1,
            }),
            Ok(s) if s.mode & libc::S_IFMT == libc::S_IFDIR => {
                let listed = walker.list(&child);
                match dir(&child, child_base, level + 1, listed, flags, walker)? {
                    Flow::Go => continue,
                    Flow::SkipSiblings => break,
                    stop => return Ok(stop),
                }
            }
            Ok(s) => walker.visit(&Visit {
                path: &child,
                stat: Some(s),
                flag: if s.mode & libc::S_IFMT == libc::S_IFLNK {
                    ftw::SL
                } else {
                    ftw::F
                },
                base: child_base,
                level: level + 1,
            }),
        };
        match flow(v, flags) {
            Flow::Go => {}
            Flow::SkipSiblings => break,
            stop => return Ok(stop),
        }
    }
    if depth {
        let v = walker.visit(&Visit {
            path,
            stat: Some(&stat),
            flag: ftw::DP,
            base,
            level,
        });
        return Ok(flow(v, flags));
    }
    Ok(Flow::Go)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(dir: bool) -> StatInfo {
        StatInfo {
            dev: 1,
            ino: 1,
            mode: if dir { libc::S_IFDIR } else { libc::S_IFREG } | 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            blksize: 4096,
            blocks: 0,
            times: [(0, 0); 3],
        }
    }

    /// A tree: `/r` holds `f`, `a/` (holding `g`, `b/`) and `m` (another
    /// filesystem).
    /// One callback: path, flag, base, level.
    type Seen = (String, i32, i32, i32);
    /// The callback's answer per path and flag.
    type Answer = Box<dyn Fn(&str, i32) -> i32>;

    struct Fake {
        seen: Vec<Seen>,
        answer: Answer,
    }

    impl Walker for Fake {
        fn list(&mut self, path: &str) -> Result<(StatInfo, Vec<DirEntry>)> {
            let e = |n: &str, s: std::result::Result<StatInfo, i32>| DirEntry {
                name: n.into(),
                stat: s,
            };
            Ok(match path {
                "/r" => (
                    st(true),
                    vec![
                        e("f", Ok(st(false))),
                        e("a", Ok(st(true))),
                        e("m", Err(libc::EXDEV)),
                    ],
                ),
                "/r/a" => (st(true), vec![e("g", Ok(st(false))), e("b", Ok(st(true)))]),
                "/r/a/b" => (st(true), vec![]),
                _ => return Err(Error::Guest(libc::ENOENT)),
            })
        }

        fn visit(&mut self, v: &Visit<'_>) -> i32 {
            self.seen
                .push((v.path.to_string(), v.flag, v.base, v.level));
            (self.answer)(v.path, v.flag)
        }
    }

    fn run(flags: i32, answer: impl Fn(&str, i32) -> i32 + 'static) -> (Result<i32>, Vec<Seen>) {
        let mut f = Fake {
            seen: vec![],
            answer: Box::new(answer),
        };
        let r = walk("/r", flags, &mut f);
        (r, f.seen)
    }

    #[test]
    fn walks_like_nftw() {
        let (r, seen) = run(ftw::MOUNT, |_, _| 0);
        assert_eq!(r.unwrap(), 0);
        let s = |p: &str, f, b, l| (p.to_string(), f, b, l);
        assert_eq!(
            seen,
            vec![
                s("/r", ftw::D, 1, 0),
                s("/r/f", ftw::F, 3, 1),
                s("/r/a", ftw::D, 3, 1),
                s("/r/a/g", ftw::F, 5, 2),
                s("/r/a/b", ftw::D, 5, 2),
            ]
        );
        // Without FTW_MOUNT the entry on another filesystem is FTW_NS.
        let (_, seen) = run(0, |_, _| 0);
        assert_eq!(seen.last().unwrap().1, ftw::NS);
        // FTW_DEPTH: directories after their entries.
        let (_, seen) = run(ftw::MOUNT | ftw::DEPTH, |_, _| 0);
        let order: Vec<_> = seen.iter().map(|v| (v.0.as_str(), v.1)).collect();
        assert_eq!(
            order,
            [
                ("/r/f", ftw::F),
                ("/r/a/g", ftw::F),
                ("/r/a/b", ftw::DP),
                ("/r/a", ftw::DP),
                ("/r", ftw::DP)
            ]
        );
    }

    #[test]
    fn the_callback_steers() {
        // A nonzero value ends the walk and is nftw's.
        let (r, seen) = run(0, |p, _| if p == "/r/a" { 7 } else { 0 });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(seen.len(), 3);
        // FTW_ACTIONRETVAL: skip a subtree, go on with its siblings.
        let (r, seen) = run(ftw::ACTIONRETVAL | ftw::MOUNT, |p, _| {
            if p == "/r/a" {
                ftw::SKIP_SUBTREE
            } else {
                0
            }
        });
        assert_eq!(r.unwrap(), 0);
        assert_eq!(seen.len(), 3);
        // A missing root is its errno; FTW_CHDIR cannot be done.
        let mut f = Fake {
            seen: vec![],
            answer: Box::new(|_, _| 0),
        };
        assert_eq!(walk("/nope", 0, &mut f).unwrap_err().errno(), libc::ENOENT);
        assert_eq!(
            walk("/r", ftw::CHDIR, &mut f).unwrap_err().errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn mount_tables_take_the_guests_lines() {
        let host = "proc /proc proc rw 0 0\n\
                    tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                    cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                    cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                    bpf /sys/fs/bpf bpf rw 0 0\n";
        let guest = vec!["cgroup2 /sys/fs/cgroup cgroup2 rw 0 0".to_string()];
        let merged = merge(host, &guest, &["/sys/fs/cgroup".into()], MountFile::Mounts);
        assert_eq!(
            merged,
            "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
        );
        let info = "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(fs_type(info, MountFile::Mountinfo), Some("cgroup2"));
        assert_eq!(
            point(info, MountFile::Mountinfo).as_deref(),
            Some("/sys/fs/cgroup")
        );
        assert_eq!(
            point("a /x\\040y b", MountFile::Mounts).as_deref(),
            Some("/x y")
        );
        assert!(under("/sys/fs/cgroup/a", "/sys/fs/cgroup"));
        assert!(!under("/sys/fs/cgroupa", "/sys/fs/cgroup"));
    }
}
