//! Answering a supervised program's calls with the host library.
//!
//! Each notification is decoded from its call number and argument words
//! and handed to the same functions the preload's hooks call
//! (`telebpf_host::bpf::forward`, `perf::open`, `vfs`, `objects`, …),
//! with the host library's state switched to the calling process's
//! ([`telebpf_host::state::serve`]): its memory is read and written with
//! `process_vm_readv`/`writev` on its pid, its new fds are installed with
//! ADDFD ([`crate::tool`]). Whatever is not ours — a host path, an fd of
//! the program's own that happened to lie in the range — continues to the
//! kernel unchanged (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). That is safe
//! here despite the documented check-then-use race because continuing
//! gives the program nothing it could not get by itself: the kernel then
//! decides on its own, with the program's own privileges.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use telebpf_host::error::{Error, Result};
use telebpf_host::fdtable::GuestObject;
use telebpf_host::vfs::{self, Route};
use telebpf_host::{bpf, cgroup, facts, lost, netlink, objects, perf, rings, state};
use telebpf_protocol::message::{FileOp, FileReply, StatInfo, PERF_EVENT_LINK};
use telebpf_protocol::paths;

use crate::filter::FD_BASE;
use crate::notify::{Answer, Call, Listener};
use crate::tool::{self, ToolProcess, ToolTable};

/// The longest path read from a program (`PATH_MAX`).
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// The supervised processes that made a call, by thread-group id.
///
/// Each has its own state and session, like a process under the preload
/// (a child after `fork` too). Its session ends when it exits (its pidfd
/// becomes readable: [`Processes::exited`]) or when an `exec` replaced its
/// program and closed its objects' fds (seen at its next call after
/// `execve`), so its
/// guest objects do not outlive it.
#[derive(Default)]
pub struct Processes {
    states: HashMap<i32, Served>,
    /// Thread → thread group, for the threads seen (checked on each use:
    /// a thread id may be reused).
    groups: HashMap<i32, i32>,
    /// When `groups` has this many entries, those of ended threads go
    /// (a program may start and end threads for ever).
    prune_at: usize,
    /// States of exited processes that a library thread still used when
    /// they exited ([`state::release`]), freed on a later exit.
    retired: Vec<&'static state::State>,
}

/// One served process.
struct Served {
    state: &'static state::State,
    /// Dropped when the process exits, with its epoll registrations
    /// (its pidfd, readable then, tells).
    process: Arc<ToolProcess>,
    /// It called `execve`; the next call tells whether the exec happened.
    exec_pending: bool,
}

/// How many threads [`Processes`] remembers before it first forgets
/// the ended ones.
const PRUNE_FIRST: usize = 1024;

/// The thread group of thread `tid` (`Tgid:` of `/proc/TID/status`).
fn thread_group(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `tid` is a thread of `pid` now (`/proc/PID/task/TID` exists).
fn is_thread_of(tid: i32, pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

impl Processes {
    /// The thread group of `tid`: the cached one if `tid` still is its
    /// thread, else read from `/proc`.
    fn group_of(&mut self, tid: i32) -> Option<i32> {
        if let Some(&pid) = self.groups.get(&tid) {
            if is_thread_of(tid, pid) {
                return Some(pid);
            }
        }
        let pid = thread_group(tid)?;
        if self.groups.len() >= self.prune_at.max(PRUNE_FIRST) {
            // One look per remembered thread, at most once per doubling:
            // a constant cost per thread seen.
            self.groups.retain(|&t, &mut p| is_thread_of(t, p));
            self.prune_at = 2 * self.groups.len();
        }
        self.groups.insert(tid, pid);
        Some(pid)
    }

    /// The state of the process `tid` belongs to, made on its first call.
    fn of(&mut self, tid: i32) -> Option<(&'static state::State, Arc<ToolProcess>)> {
        let pid = self.group_of(tid)?;
        if let Some(s) = self.states.get_mut(&pid) {
            if s.exec_pending {
                s.exec_pending = false;
                if !still_holds_objects(s.state) {
                    // The exec happened and closed every object's fd: the
                    // new program starts from a new session.
                    s.state.end_session();
                }
            }
            return Some((s.state, s.process.clone()));
        }
        // SAFETY: pidfd_open takes a pid and flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return None;
        }
        // SAFETY: a new fd nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let placed = tool::Placed::default();
        let process = Arc::new(ToolProcess::new(pid, pidfd, placed.clone()));
        // The state's `Program` is the same process (one registry of its
        // placed fds and epoll registrations).
        let st = state::for_program(
            pid,
            Box::new(process.clone()),
            Box::new(ToolTable::new(pid, placed)),
        );
        self.states.insert(
            pid,
            Served {
                state: st,
                process: process.clone(),
                exec_pending: false,
            },
        );
        Some((st, process))
    }

    /// The pidfds of the served processes, to wait on with the listener.
    pub fn pidfds(&self) -> Vec<(i32, i32)> {
        self.states
            .iter()
            .map(|(&pid, s)| (pid, s.process.pidfd()))
            .collect()
    }

    /// Process `pid` exited: its session ends, so the proxy closes its
    /// guest objects now rather than when the supervisor exits.
    pub fn exited(&mut self, pid: i32) {
        if let Some(s) = self.states.remove(&pid) {
            s.state.end_session();
            self.retired.push(s.state);
        }
        self.groups.retain(|_, &mut p| p != pid);
        // SAFETY: each retired state came from `for_program`, is no longer
        // in `states` (so no call will serve it) and is kept only here,
        // which forgets it once released.
        self.retired
            .retain(|&st| unsafe { state::release(st) }.is_err());
    }

    /// Process `pid` called `execve`.
    fn exec_called(&mut self, pid: i32) {
        if let Some(s) = self.states.get_mut(&pid) {
            s.exec_pending = true;
        }
    }
}

/// Whether any of the state's objects still has an fd in its process
/// (`exec` closes the close-on-exec ones, i.e. all unless the program
/// cleared the flag); the numbers that vanished are forgotten.
fn still_holds_objects(st: &'static state::State) -> bool {
    let _serving = state::serve(st);
    let fds = st.table().in_range(0, u32::MAX);
    let mut held = false;
    for fd in fds {
        if st.program().is_open(fd) && st.table().get(fd).is_some() {
            held = true;
        } else {
            objects::forget(fd);
        }
    }
    held
}

/// Answers one call.
pub fn serve(listener: &Listener, processes: &mut Processes, call: Call) -> Answer {
    let Some((st, process)) = processes.of(call.tid) else {
        // The caller is gone.
        return Answer::Errno(libc::ESRCH);
    };
    if call.nr == libc::SYS_execve || call.nr == libc::SYS_execveat {
        processes.exec_called(process.pid);
        return Answer::Continue;
    }
    let _state = state::serve(st);
    let _call = tool::serving(listener, call);
    match dispatch(listener, &process, &call) {
        Ok(a) => a,
        Err(e) => Answer::Errno(e.errno()),
    }
}

/// Decodes and answers one call.
fn dispatch(listener: &Listener, process: &ToolProcess, call: &Call) -> Result<Answer> {
    let a = call.args;
    let fd = |i: usize| a[i] as i32;
    let value = |r: Result<i64>| r.map(Answer::Value);
    match call.nr {
        libc::SYS_bpf => {
            if makes_an_fd(a[0] as u32) {
                sweep_moved(process);
            }
            value(bpf::forward(
                a[0] as u32,
                a[1],
                a[2] as u32,
                a[3],
                a[4] as u32,
            ))
        }
        libc::SYS_perf_event_open => value(perf::open(
            a[0],
            a[1] as i32,
            a[2] as i32,
            a[3] as i32,
            a[4],
        )),
        libc::SYS_uname => uname(a[0]),
        libc::SYS_capget => capget(process, a[0], a[1]),
        libc::SYS_setrlimit => {
            read_new_limit(a[1])?;
            Ok(Answer::Value(0))
        }
        libc::SYS_prlimit64 => prlimit_memlock(process, a[0] as i32, a[2], a[3]),
        libc::SYS_open => open(listener, process, call, a[0], a[1] as i32),
        libc::SYS_openat => open(listener, process, call, a[1], a[2] as i32),
        libc::SYS_openat2 => match open_how_flags(a[2], a[3])? {
            Some(flags) => open(listener, process, call, a[1], flags),
            None => Ok(Answer::Continue),
        },
        libc::SYS_stat => stat(a[0], true, a[1]),
        libc::SYS_lstat => stat(a[0], false, a[1]),
        libc::SYS_newfstatat => stat(a[1], a[3] as i32 & libc::AT_SYMLINK_NOFOLLOW == 0, a[2]),
        libc::SYS_statx => statx(a[1], a[2] as i32 & libc::AT_SYMLINK_NOFOLLOW == 0, a[4]),
        libc::SYS_access => access(a[0], a[1] as i32),
        libc::SYS_faccessat | libc::SYS_faccessat2 => access(a[1], a[2] as i32),
        libc::SYS_readlink => readlink(a[0], a[1], a[2] as i32),
        libc::SYS_readlinkat => readlink(a[1], a[2], a[3] as i32),
        libc::SYS_statfs => statfs(a[0], a[1]),
        libc::SYS_close => {
            forget(process, fd(0));
            Ok(Answer::Continue)
        }
        libc::SYS_close_range => {
            if a[2] as u32 & libc::CLOSE_RANGE_CLOEXEC == 0 {
                let fds = state::get().table().in_range(a[0] as u32, a[1] as u32);
                for fd in fds {
                    forget(process, fd);
                }
            }
            Ok(Answer::Continue)
        }
        libc::SYS_dup => dup(process, fd(0), None, true),
        libc::SYS_dup2 => dup_to(process, fd(0), fd(1), false),
        libc::SYS_dup3 => {
            if fd(0) == fd(1) {
                return Ok(Answer::Continue);
            }
            dup_to(process, fd(0), fd(1), a[2] as i32 & libc::O_CLOEXEC != 0)
        }
        libc::SYS_fcntl => match a[1] as i32 {
            libc::F_DUPFD => dup(process, fd(0), Some(a[2]), false),
            libc::F_DUPFD_CLOEXEC => dup(process, fd(0), Some(a[2]), true),
            _ => Ok(Answer::Continue),
        },
        libc::SYS_ioctl if a[1] == netlink::SIOCGIFINDEX || a[1] == netlink::SIOCGIFNAME => {
            if netlink::relayed(fd(0)).is_some() || process.is_socket(fd(0)) {
                value(netlink::ifreq_ioctl(a[1], a[2]).map(i64::from))
            } else {
                Ok(Answer::Continue)
            }
        }
        libc::SYS_ioctl => match object(fd(0)) {
            Some(obj) if obj.link == PERF_EVENT_LINK => {
                value(perf::ioctl(obj.guest_fd, a[1], a[2]))
            }
            Some(_) => Ok(Answer::Errno(libc::ENOTTY)),
            None => Ok(Answer::Continue),
        },
        libc::SYS_read => match object(fd(0)) {
            Some(obj) => {
                let bytes = objects::read(&obj, a[2] as usize)?;
                state::get()
                    .memory()
                    .write(a[1], &bytes)
                    .map_err(Error::Memory)?;
                Ok(Answer::Value(bytes.len() as i64))
            }
            None => Ok(Answer::Continue),
        },
        // An anonymous mapping ignores its fd argument, whatever it is.
        libc::SYS_mmap if a[3] as i32 & libc::MAP_ANONYMOUS != 0 => Ok(Answer::Continue),
        libc::SYS_mmap => match object(fd(4)) {
            Some(obj) => {
                // The program's fd becomes the file to map (a ring's memfd,
                // a map's snapshot), and the kernel maps it.
                let file = telebpf_host::mmap::file_for(
                    &obj,
                    a[1] as usize,
                    a[2] as i32,
                    a[3] as i32,
                    a[5] as i64,
                )?;
                process.place(&file, fd(4), true)?;
                Ok(Answer::Continue)
            }
            None => Ok(Answer::Continue),
        },
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
            if !process.waits_on_rings(fd(0)) {
                return Ok(Answer::Continue);
            }
            Ok(before_ring_wait().unwrap_or(Answer::Continue))
        }
        libc::SYS_poll => {
            let timeout = a[2] as i32;
            poll(listener, process, call, a[0], a[1], timeout)
        }
        libc::SYS_ppoll => {
            let timeout = if a[2] == 0 {
                -1
            } else {
                let t = state::get()
                    .memory()
                    .read(a[2], 16)
                    .map_err(Error::Memory)?;
                let sec = i64::from_ne_bytes(t[0..8].try_into().expect("8 bytes"));
                let nsec = i64::from_ne_bytes(t[8..16].try_into().expect("8 bytes"));
                if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
                    return Ok(Answer::Continue);
                }
                // Rounded up to whole ms, as a wait never ends early.
                sec.saturating_mul(1000)
                    .saturating_add((nsec + 999_999) / 1_000_000)
                    .min(i64::from(i32::MAX)) as i32
            };
            poll(listener, process, call, a[0], a[1], timeout)
        }
        libc::SYS_epoll_ctl => match object(fd(2)) {
            Some(obj) => epoll_ctl(process, &obj, fd(0), a[1] as i32, fd(2), a[3]),
            None => Ok(Answer::Continue),
        },
        libc::SYS_socket if netlink::is_route_socket(a[0] as i32, a[1] as i32, a[2] as i32) => {
            value(netlink::open().map(i64::from))
        }
        libc::SYS_bind
        | libc::SYS_getsockname
        | libc::SYS_setsockopt
        | libc::SYS_sendto
        | libc::SYS_recvfrom
        | libc::SYS_sendmsg
        | libc::SYS_recvmsg => match netlink::relayed(fd(0)) {
            Some(guest) => relay(call.nr, guest, a),
            None => Ok(Answer::Continue),
        },
        _ => Ok(Answer::Continue),
    }
}

/// A call on a relayed rtnetlink socket (guest fd `guest`).
fn relay(nr: i64, guest: i32, a: [u64; 6]) -> Result<Answer> {
    let n = match nr {
        libc::SYS_bind => netlink::bind(guest, a[1], a[2] as u32).map(|()| 0)?,
        libc::SYS_getsockname => netlink::name(guest, a[1], a[2]).map(|()| 0)?,
        libc::SYS_setsockopt => {
            netlink::set_option(guest, a[1] as i32, a[2] as i32, a[3], a[4] as u32).map(|()| 0)?
        }
        libc::SYS_sendto => {
            let dest = (a[4] != 0).then_some((a[4], a[5] as u32));
            netlink::send(guest, a[1], a[2] as usize, dest)?
        }
        libc::SYS_recvfrom => {
            let from = (a[4] != 0 && a[5] != 0).then_some((a[4], a[5]));
            netlink::recv(guest, a[1], a[2] as usize, a[3] as i32, from)?
        }
        libc::SYS_sendmsg => netlink::sendmsg(guest, a[1])?,
        _ => netlink::recvmsg(guest, a[1], a[2] as i32)?,
    };
    Ok(Answer::Value(n as i64))
}

/// Whether `bpf(cmd)` returns a new fd (a new object's, or another fd of
/// one): the commands after which [`sweep_moved`] runs.
fn makes_an_fd(cmd: u32) -> bool {
    use telebpf_abi::cmd as abi;
    matches!(
        cmd,
        abi::BPF_MAP_CREATE
            | abi::BPF_PROG_LOAD
            | abi::BPF_OBJ_GET
            | abi::BPF_PROG_GET_FD_BY_ID
            | abi::BPF_MAP_GET_FD_BY_ID
            | abi::BPF_RAW_TRACEPOINT_OPEN
            | abi::BPF_BTF_LOAD
            | abi::BPF_BTF_GET_FD_BY_ID
            | abi::BPF_LINK_CREATE
            | abi::BPF_LINK_GET_FD_BY_ID
            | abi::BPF_ITER_CREATE
    )
}

/// Forgets the objects whose fd the program moved below the range (libbpf
/// 1.4 and later `dup3` map fds onto placeholder fds of their own) and
/// has since closed there, unseen by the filter (its number gone or now
/// another file): the proxy closes them unless another fd still stands
/// for them. Run before each new object is made, so a program that
/// reloads its objects keeps no more of them in the guest than it holds,
/// at the cost of a `stat` per moved fd per new object, never on the
/// calls that use objects.
fn sweep_moved(process: &ToolProcess) {
    let moved = state::get().table().in_range(0, FD_BASE - 1);
    for fd in moved {
        // Still placed: an object's (live, or of a lost session, whose
        // calls fail with the loss's errno) — kept.
        let gone = {
            let table = state::get().table();
            table.get(fd).is_none() && !table.is_stale(fd)
        };
        if gone {
            forget(process, fd);
        }
    }
}

/// The most `pollfd`s a served `poll` reads (the range's end: the
/// program's fd limit is raised to it, and the kernel refuses more fds
/// than that limit with `EINVAL`).
const POLL_MAX: u64 = crate::filter::FD_END as u64;

/// `poll(fds, nfds, timeout)` / `ppoll`: when no fd is a guest ring's the
/// kernel runs it; otherwise it fails once the proxy is lost (as under the
/// preload), and else a thread of ours waits on the same fds — each ring's
/// readiness pipe for the ring's memfd, a duplicate of each other fd — and
/// answers the call with the kernel's result when that wait ends. The
/// program's signal mask (ppoll) is not applied: a received call waits
/// only for fatal signals anyway.
fn poll(
    listener: &Listener,
    process: &ToolProcess,
    call: &Call,
    fds: u64,
    nfds: u64,
    timeout: i32,
) -> Result<Answer> {
    if nfds == 0 || nfds > POLL_MAX {
        return Ok(Answer::Continue);
    }
    let mem = state::get().memory();
    let raw = mem.read(fds, nfds as usize * 8).map_err(Error::Memory)?;
    let entries: Vec<(i32, i16)> = raw
        .chunks(8)
        .map(|c| {
            (
                i32::from_ne_bytes(c[0..4].try_into().expect("4 bytes")),
                i16::from_ne_bytes(c[4..6].try_into().expect("2 bytes")),
            )
        })
        .collect();
    let rings: Vec<Option<std::sync::Arc<GuestObject>>> = entries
        .iter()
        .map(|&(fd, _)| object(fd).filter(|o| o.signal.is_some()))
        .collect();
    if rings.iter().all(Option::is_none) {
        return Ok(Answer::Continue);
    }
    if let Some(lost) = before_ring_wait() {
        return Ok(lost);
    }
    // Our own fds to wait on, in the program's order (-1: ignored, as the
    // kernel ignores a negative fd; an fd we cannot duplicate is closed:
    // POLLNVAL).
    let mut held = Vec::with_capacity(entries.len());
    let mut ours = Vec::with_capacity(entries.len());
    let mut invalid = vec![false; entries.len()];
    for (i, (&(fd, events), ring)) in entries.iter().zip(&rings).enumerate() {
        let dup = match ring {
            Some(obj) => readiness(obj).and_then(|end| end.try_clone().ok()),
            None if fd < 0 => None,
            None => process.file_of(fd).ok(),
        };
        if dup.is_none() && fd >= 0 {
            invalid[i] = true;
        }
        ours.push(libc::pollfd {
            fd: dup.as_ref().map_or(-1, |d| d.as_raw_fd()),
            events,
            revents: 0,
        });
        held.push(dup);
    }
    let answerer = listener
        .try_clone()
        .map_err(|e| Error::os("duplicating the listener", e, libc::ENOMEM))?;
    let call = *call;
    let memory = telebpf_host::memory::ProcessMemory { pid: process.pid };
    let wait = move || {
        let _held = held;
        let mut ours = ours;
        // SAFETY: a valid array of pollfds of its length, our own fds.
        let n = unsafe { libc::poll(ours.as_mut_ptr(), ours.len() as libc::nfds_t, timeout) };
        let answer = if n < 0 {
            Answer::Errno(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINTR),
            )
        } else {
            let mut ready = 0;
            let mut out = Vec::with_capacity(ours.len() * 8);
            for (i, p) in ours.iter().enumerate() {
                let revents = if invalid[i] {
                    libc::POLLNVAL
                } else {
                    p.revents
                };
                if revents != 0 {
                    ready += 1;
                }
                out.extend_from_slice(&entries[i].0.to_ne_bytes());
                out.extend_from_slice(&entries[i].1.to_ne_bytes());
                out.extend_from_slice(&revents.to_ne_bytes());
            }
            use telebpf_abi::memory::Memory as _;
            match memory.write(fds, &out) {
                Ok(()) => Answer::Value(ready),
                Err(e) => Answer::Errno(e),
            }
        };
        let _ = answerer.answer(&call, answer);
    };
    if timeout == 0 {
        wait();
    } else {
        std::thread::Builder::new()
            .name("telebpf-poll".into())
            .spawn(wait)
            .map_err(|e| Error::os("starting a poll thread", e, libc::ENOMEM))?;
    }
    Ok(Answer::Sent)
}

/// `epoll_ctl(epoll_fd, op, fd, event)` of an object's fd: its readiness pipe
/// stands in for it in the program's epoll instance.
fn epoll_ctl(
    process: &ToolProcess,
    obj: &GuestObject,
    epfd: i32,
    op: i32,
    fd: i32,
    event: u64,
) -> Result<Answer> {
    let Some(ready) = readiness(obj) else {
        // A bpf object with no readiness: the kernel refuses it.
        return Err(Error::kernel(
            libc::EPERM,
            "epoll of a bpf object that cannot be polled",
        ));
    };
    let ev = if op == libc::EPOLL_CTL_DEL {
        None
    } else {
        // struct epoll_event is packed on x86-64: u32 events, u64 data.
        let b = state::get()
            .memory()
            .read(event, 12)
            .map_err(Error::Memory)?;
        Some(libc::epoll_event {
            events: u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")),
            u64: u64::from_ne_bytes(b[4..12].try_into().expect("8 bytes")),
        })
    };
    process.epoll_ctl(epfd, op, fd, ready, ev)?;
    Ok(Answer::Value(0))
}

/// The end of a ring's readiness pipe that stands for the ring's fd in a
/// wait: the read end (readable while records wait), or for a user ring
/// buffer, which is waited on for space, the write end. `None` for an
/// object nobody can wait on.
fn readiness(obj: &GuestObject) -> Option<&OwnedFd> {
    let signal = obj.signal.as_ref()?;
    Some(if bpf::is_user_ring_kind(&obj.kind) {
        &signal.write
    } else {
        &signal.read
    })
}

/// Before a wait on a guest ring: the lost errno once the proxy is lost
/// (as under the preload), else `None`, with what the program consumed
/// since the last record no longer making the ring ready.
fn before_ring_wait() -> Option<Answer> {
    if let Some(e) = lost::suspected().then(lost::errno).flatten() {
        return Some(Answer::Errno(e));
    }
    rings::before_wait();
    None
}

/// The program closed `fd` (or another file replaced it): the object
/// loses the number, with its epoll registrations, and is closed in the
/// guest if it was its last.
fn forget(process: &ToolProcess, fd: i32) {
    process.closed(fd);
    objects::forget(fd);
}

/// The guest object behind the program's fd `fd`.
fn object(fd: i32) -> Option<std::sync::Arc<GuestObject>> {
    state::get().table().get(fd).cloned()
}

/// `dup`/`fcntl(F_DUPFD*)` of an object's fd: the copy goes at a number
/// of the range (at or above `from`), so the filter still sees it.
fn dup(process: &ToolProcess, old: i32, from: Option<u64>, cloexec: bool) -> Result<Answer> {
    if object(old).is_none() {
        return Ok(Answer::Continue);
    }
    // The kernel reads F_DUPFD's argument as an unsigned long and refuses
    // one at or beyond the fd limit (a negative int is such a one).
    let from = from.unwrap_or(0);
    if from >= process.fd_limit()? {
        return Err(Error::kernel(
            libc::EINVAL,
            "F_DUPFD from beyond the fd limit",
        ));
    }
    let file = process.file_of(old)?;
    let new = process.free_number(from.min(i32::MAX as u64) as i32)?;
    let new = process.place(&file, new, cloexec)?;
    objects::alias(old, new);
    Ok(Answer::Value(i64::from(new)))
}

/// `dup2`/`dup3` to a number the program chose.
fn dup_to(process: &ToolProcess, old: i32, new: i32, cloexec: bool) -> Result<Answer> {
    if object(old).is_none() {
        // Another file over an object's number: the object loses it, and
        // its epoll registrations go (the kernel drops them with the file).
        if object(new).is_some() && process.fd_exists(old) {
            forget(process, new);
        }
        return Ok(Answer::Continue);
    }
    if old == new {
        return Ok(Answer::Value(i64::from(new)));
    }
    let file = process.file_of(old)?;
    let new = process.place(&file, new, cloexec)?;
    // What was at `new` is replaced, with its registrations.
    process.closed(new);
    objects::alias(old, new);
    Ok(Answer::Value(i64::from(new)))
}

/// How the host library routes the path at `addr`. A null path is not
/// ours: the kernel decides (since 6.11 it is the fd itself when the call
/// has `AT_EMPTY_PATH`, else `EFAULT`).
fn route_at(addr: u64) -> Result<Route> {
    if addr == 0 {
        return Ok(Route::Local);
    }
    // With its NUL, or PATH_MAX bytes without one: too long, as the
    // kernel says.
    let path = state::get()
        .memory()
        .read_cstr(addr, PATH_MAX)
        .map_err(Error::Memory)?;
    if path.last() != Some(&0) {
        return Err(Error::kernel(
            libc::ENAMETOOLONG,
            "a path longer than PATH_MAX",
        ));
    }
    // SAFETY: `path` is NUL-terminated and outlives the call.
    Ok(unsafe { vfs::route(path.as_ptr().cast()) })
}

/// Puts `fd`, a file of ours, into the caller as the call's result.
fn give(listener: &Listener, call: &Call, raw: i32, cloexec: bool) -> Result<Answer> {
    // SAFETY: `raw` is a new fd of this process that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    listener
        .add_fd(call, &fd, None, cloexec, true)
        .map_err(|e| Error::os("SECCOMP_IOCTL_NOTIF_ADDFD", e, libc::EMFILE))?;
    Ok(Answer::Sent)
}

/// The open flags of `openat2`'s `struct open_how` at `addr` of `size`
/// bytes, or `None` when the kernel refuses the `how` itself (`EINVAL`,
/// `E2BIG`) before looking at the path: then it gives its own answer.
fn open_how_flags(addr: u64, size: u64) -> Result<Option<i32>> {
    /// `OPEN_HOW_SIZE_VER0`: flags, mode, resolve.
    const VER0: u64 = 24;
    /// The `RESOLVE_*` bits (`linux/openat2.h`) 5.6 to 6.18 know.
    const RESOLVE_KNOWN: u64 = 0x3f;
    if !(VER0..=4096).contains(&size) {
        return Ok(None);
    }
    // An extension the kernel does not know must be zero (else `E2BIG`).
    let how = state::get()
        .memory()
        .read(addr, size as usize)
        .map_err(Error::Memory)?;
    let word = |i: usize| u64::from_le_bytes(how[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let (flags, mode, resolve) = (word(0), word(1), word(2));
    let creates = flags & (libc::O_CREAT | libc::O_TMPFILE) as u64 != 0;
    if how[VER0 as usize..].iter().any(|&b| b != 0)
        || flags > u64::from(u32::MAX)
        || (mode != 0 && !creates)
        || resolve & !RESOLVE_KNOWN != 0
    {
        return Ok(None);
    }
    Ok(Some(flags as i32))
}

fn open(
    listener: &Listener,
    process: &ToolProcess,
    call: &Call,
    addr: u64,
    flags: i32,
) -> Result<Answer> {
    let cloexec = flags & libc::O_CLOEXEC != 0;
    match route_at(addr)? {
        Route::Local => Ok(Answer::Continue),
        Route::Guest(p) if paths::is_bpffs(&p) => Ok(Answer::Continue),
        Route::Guest(_) if flags & libc::O_ACCMODE != libc::O_RDONLY => Err(Error::kernel(
            libc::EACCES,
            "writing a guest file under the supervisor",
        )),
        Route::Guest(p) => give(listener, call, vfs::open_guest(&p, flags)?, cloexec),
        Route::Mounts(which) => give(listener, call, cgroup::open_mounts(which)?, cloexec),
        Route::Cgroup(p) => match cgroup::is_guest(&p)? {
            true => {
                // Opened close-on-exec (the library would clear the flag
                // with `fcntl` on its own fd table, not the program's),
                // then put back without it where the program asked so.
                let fd = cgroup::open(&p, flags | libc::O_CLOEXEC)?;
                if !cloexec {
                    process.place(&process.file_of(fd)?, fd, false)?;
                }
                Ok(Answer::Value(i64::from(fd)))
            }
            false => Ok(Answer::Continue),
        },
        Route::Fdinfo(fd) => match vfs::open_fdinfo(fd)? {
            Some(raw) => give(listener, call, raw, cloexec),
            None => Ok(Answer::Continue),
        },
        Route::FdLink(_) => Ok(Answer::Continue),
    }
}

/// Writes `value`'s bytes at `addr` of the program.
fn write_struct<T>(addr: u64, value: &T) -> Result<()> {
    // SAFETY: any initialised T is readable as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    state::get()
        .memory()
        .write(addr, bytes)
        .map_err(Error::Memory)
}

/// A file operation on a guest path; `None` when the path is not ours.
fn guest_op(route: Route, op: impl FnOnce(String) -> FileOp) -> Result<Option<FileReply>> {
    match route {
        Route::Guest(p) => vfs::file_op(op(p)).map(Some),
        _ => Ok(None),
    }
}

/// The guest's `stat` of the path at `addr`; `None` when it is not ours.
fn stat_info(addr: u64, follow: bool) -> Result<Option<StatInfo>> {
    match route_at(addr)? {
        Route::Cgroup(p) if cgroup::is_guest(&p)? => cgroup::stat(&p).map(Some),
        route => match guest_op(route, |path| FileOp::Stat { path, follow })? {
            Some(FileReply::Stat(info)) => Ok(Some(info)),
            Some(_) => Err(Error::Protocol("a stat request")),
            None => Ok(None),
        },
    }
}

fn stat(addr: u64, follow: bool, buf: u64) -> Result<Answer> {
    match stat_info(addr, follow)? {
        Some(info) => write_struct(buf, &vfs::stat_of(&info)).map(|()| Answer::Value(0)),
        None => Ok(Answer::Continue),
    }
}

fn statx(addr: u64, follow: bool, buf: u64) -> Result<Answer> {
    match stat_info(addr, follow)? {
        Some(info) => write_struct(buf, &vfs::statx_of(&info)).map(|()| Answer::Value(0)),
        None => Ok(Answer::Continue),
    }
}

fn access(addr: u64, mode: i32) -> Result<Answer> {
    match route_at(addr)? {
        Route::Cgroup(p) if cgroup::is_guest(&p)? => {
            cgroup::stat(&p)?;
            Ok(Answer::Value(0))
        }
        route => match guest_op(route, |path| FileOp::Access { path, mode })? {
            Some(_) => Ok(Answer::Value(0)),
            None => Ok(Answer::Continue),
        },
    }
}

/// `readlink(path, buf, size)`; the kernel reads `size` as an int and
/// refuses one below 1 before it looks at the path.
fn readlink(addr: u64, buf: u64, size: i32) -> Result<Answer> {
    if size <= 0 {
        return Ok(Answer::Continue);
    }
    let size = size as usize;
    let target = match route_at(addr)? {
        Route::FdLink(fd) => match object(fd) {
            Some(obj) => obj.link.clone(),
            None => return Ok(Answer::Continue),
        },
        route => match guest_op(route, |path| FileOp::Readlink { path })? {
            Some(FileReply::Link(t)) => t,
            Some(_) => return Err(Error::Protocol("a readlink request")),
            None => return Ok(Answer::Continue),
        },
    };
    let bytes = &target.as_bytes()[..target.len().min(size)];
    state::get()
        .memory()
        .write(buf, bytes)
        .map_err(Error::Memory)?;
    Ok(Answer::Value(bytes.len() as i64))
}

fn statfs(addr: u64, buf: u64) -> Result<Answer> {
    match guest_op(route_at(addr)?, |path| FileOp::Statfs { path })? {
        Some(FileReply::Statfs(info)) => {
            // SAFETY: statfs is plain data; all-zero is valid.
            let mut out: libc::statfs = unsafe { std::mem::zeroed() };
            vfs::fill_statfs(&info, &mut out)?;
            write_struct(buf, &out)?;
            Ok(Answer::Value(0))
        }
        Some(_) => Err(Error::Protocol("a statfs request")),
        None => Ok(Answer::Continue),
    }
}

fn uname(buf: u64) -> Result<Answer> {
    let u = facts::utsname(state::get().facts()?);
    write_struct(buf, &u)?;
    Ok(Answer::Value(0))
}

fn capget(process: &ToolProcess, hdr: u64, data: u64) -> Result<Answer> {
    if hdr == 0 || data == 0 {
        return Ok(Answer::Continue);
    }
    let mem = state::get().memory();
    let h = mem.read(hdr, 8).map_err(Error::Memory)?;
    let version = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let pid = i32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if pid != 0 && pid != process.pid {
        return Ok(Answer::Continue);
    }
    let Some(out) = facts::cap_data(state::get().facts()?, version) else {
        return Ok(Answer::Continue);
    };
    mem.write(data, &out).map_err(Error::Memory)?;
    Ok(Answer::Value(0))
}

/// `prlimit64(pid, RLIMIT_MEMLOCK, new, old)`: raising the memlock limit
/// is what BPF tools do for the host kernel's sake; the guest's proxy
/// needs none of it, so a new limit is ignored as by the preload (this
/// machine refuses it even to root). The old limit is the real one.
fn prlimit_memlock(process: &ToolProcess, pid: i32, new: u64, old: u64) -> Result<Answer> {
    if (pid != 0 && pid != process.pid) || new == 0 {
        return Ok(Answer::Continue);
    }
    read_new_limit(new)?;
    if old != 0 {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads the program's limit into `r`.
        if unsafe { libc::prlimit(process.pid, libc::RLIMIT_MEMLOCK, std::ptr::null(), &mut r) }
            != 0
        {
            return Err(Error::last_os("prlimit"));
        }
        write_struct(old, &r)?;
    }
    Ok(Answer::Value(0))
}

/// Reads the new `struct rlimit` at `addr` as the kernel does before it
/// sets one: `EFAULT` for a bad pointer, `EINVAL` for a soft limit above
/// the hard one.
fn read_new_limit(addr: u64) -> Result<()> {
    let b = state::get()
        .memory()
        .read(addr, 16)
        .map_err(Error::Memory)?;
    let cur = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
    let max = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    if cur > max {
        return Err(Error::kernel(
            libc::EINVAL,
            "a soft limit above the hard one",
        ));
    }
    Ok(())
}
