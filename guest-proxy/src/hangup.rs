//! Interrupting a long call of a client that went away.
//!
//! A session thread learns that its client died only when it next reads the
//! connection. While it is inside one long `bpf()` call — verifying a big
//! program can take seconds — the dead client's objects would stay for that
//! long. So one watcher thread waits (epoll) for the hang-up of every
//! session's connection; when one hangs up while its session is inside a
//! call, it sends that thread `SIGURG`, whose handler does nothing and is
//! installed without `SA_RESTART`: the verifier checks `signal_pending()`
//! and gives up with `EAGAIN`, other interruptible waits return `EINTR`. The
//! session then finds the connection closed and closes every object.
//!
//! A signal that lands after the call returned interrupts at most the next
//! read or write, which retry on `EINTR`. The watcher repeats the signal
//! every [`RESIGNAL`] while the hung-up session is still busy, which covers
//! a signal that arrived just before the call was entered.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::log;

/// How often a hung-up session that is still inside a call is signalled again.
pub const RESIGNAL: Duration = Duration::from_millis(100);

/// The signal that interrupts a session thread.
const SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn ignore(_: libc::c_int) {}

#[derive(Debug)]
struct Watched {
    tid: libc::pid_t,
    busy: Arc<AtomicBool>,
    hung_up: bool,
    /// A duplicate of the session's socket, registered with the epoll set
    /// (closing it unregisters it).
    _fd: OwnedFd,
}

/// The watcher of all sessions' connections.
#[derive(Debug)]
pub struct Watcher {
    epoll: OwnedFd,
    sessions: Mutex<HashMap<u64, Watched>>,
}

/// A session's registration; dropping it stops the watching.
#[derive(Debug)]
pub struct Watch {
    watcher: Arc<Watcher>,
    id: u64,
    busy: Arc<AtomicBool>,
}

/// Marks the session as inside a call while alive.
#[derive(Debug)]
pub struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Watch {
    /// The session is inside a call until the result is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.store(true, Ordering::Release);
        Busy(&self.busy)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watcher.lock().remove(&self.id);
    }
}

impl Watcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The proxy's watcher, started on first use (with the signal handler).
    pub fn get() -> Option<Arc<Watcher>> {
        static W: OnceLock<Option<Arc<Watcher>>> = OnceLock::new();
        W.get_or_init(|| match Watcher::start() {
            Ok(w) => Some(w),
            Err(e) => {
                log::info(format_args!(
                    "cannot watch for hang-ups ({e}): a dead client's long call runs to its end"
                ));
                None
            }
        })
        .clone()
    }

    fn start() -> std::io::Result<Arc<Watcher>> {
        // SAFETY: a zeroed sigaction is valid; we set a handler that does
        // nothing (async-signal-safe) and no SA_RESTART, so that blocking
        // calls of the signalled thread return.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(SIGNAL, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let watcher = Arc::new(Watcher {
            // SAFETY: a new fd nobody else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            sessions: Mutex::new(HashMap::new()),
        });
        let w = watcher.clone();
        std::thread::Builder::new()
            .name("hangup-watcher".into())
            .spawn(move || w.run())?;
        Ok(watcher)
    }

    /// Watches session `id`'s connection `socket`; must be called on the
    /// session's own thread (the one to interrupt).
    pub fn watch(self: &Arc<Self>, id: u64, socket: RawFd) -> std::io::Result<Watch> {
        // SAFETY: F_DUPFD_CLOEXEC on the caller's open socket.
        let dup = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLONESHOT) as u32,
            u64: id,
        };
        // SAFETY: both fds are open; `ev` is valid for the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, dup, &mut ev) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let busy = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            id,
            Watched {
                // SAFETY: gettid has no preconditions.
                tid: unsafe { libc::gettid() },
                busy: busy.clone(),
                hung_up: false,
                _fd: fd,
            },
        );
        Ok(Watch {
            watcher: self.clone(),
            id,
            busy,
        })
    }

    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `events` is valid for 64 entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    RESIGNAL.as_millis() as i32,
                )
            };
            let mut sessions = self.lock();
            for ev in &events[..n.max(0) as usize] {
                let id = ev.u64;
                if let Some(w) = sessions.get_mut(&id) {
                    w.hung_up = true;
                }
            }
            for (id, w) in sessions.iter() {
                if w.hung_up && w.busy.load(Ordering::Acquire) {
                    log::debug(format_args!(
                        "session {id}: client hung up during a call; interrupting it"
                    ));
                    // SAFETY: signals a thread of this process that is
                    // registered (so alive: its Watch is dropped before it
                    // ends); the handler does nothing.
                    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), w.tid, SIGNAL) };
                }
            }
        }
    }
}
