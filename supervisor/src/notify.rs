//! The supervisor's end of a seccomp filter: receiving a program's
//! notifications, answering them, and putting fds into the program.
//!
//! Every ioctl here names the notification by its id; the kernel refuses
//! (`ENOENT`) one whose caller is gone (killed, or interrupted by a
//! signal), so an answer can never reach a later, unrelated call.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// One call a supervised program made.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The notification's id.
    pub id: u64,
    /// The calling thread (in our pid namespace).
    pub tid: i32,
    /// The call number.
    pub nr: i64,
    /// Its six argument words.
    pub args: [u64; 6],
}

/// What [`Listener::receive`] waited for.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A call.
    Call(Call),
    /// The process of this tag exited.
    Exited(i32),
    /// No task uses the filter any more.
    Done,
}

/// The listener fd `SECCOMP_FILTER_FLAG_NEW_LISTENER` returned.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

/// What the supervisor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Errno(i32),
    /// The kernel runs the call as if no filter had stopped it.
    Continue,
    /// Already answered (an fd installed with `SECCOMP_ADDFD_FLAG_SEND`).
    Sent,
}

impl Listener {
    /// Takes ownership of a listener fd. Asks the kernel (6.6 and later)
    /// to wake the caller on our CPU when we answer, as the supervisor
    /// sleeps in `RECV` while the program waits for the answer: a
    /// ping-pong between the two that then stays on one CPU instead of a
    /// cross-CPU wake-up each way (slow here: tens of µs). Older kernels
    /// lack the flag and are served as before.
    pub fn new(fd: OwnedFd) -> Listener {
        /// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (`linux/seccomp.h`).
        const SYNC_WAKE_UP: libc::c_ulong = 1;
        // SAFETY: SET_FLAGS takes the flags as the argument itself, not a
        // pointer (`seccomp_notify_set_flags(filter, arg)`), despite the
        // request number's `_IOW` size.
        unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SYNC_WAKE_UP,
            )
        };
        Listener { fd }
    }

    /// Another handle on the same listener, for a thread that answers a
    /// call later (a `poll` that must wait).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            fd: self.fd.try_clone()?,
        })
    }

    /// Waits for the next call, or for one of `exits` (pidfds, with a tag
    /// each) to become readable; [`Event::Done`] when no task uses the
    /// filter any more (the program and all its children exited).
    pub fn receive(&self, exits: &[(i32, i32)]) -> io::Result<Event> {
        loop {
            let mut pfds = vec![libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            pfds.extend(exits.iter().map(|&(_, fd)| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: a valid array of pollfds of its length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            let own = pfds[0].revents;
            // Exits first: a process that exited must not be served again,
            // even by pid (a new process may reuse it once it is reaped).
            if let Some(i) = pfds[1..].iter().position(|p| p.revents != 0) {
                return Ok(Event::Exited(exits[i].0));
            }
            if own & libc::POLLIN == 0 {
                if own & libc::POLLHUP != 0 {
                    return Ok(Event::Done);
                }
                continue;
            }
            // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
            let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: RECV writes one seccomp_notif into `n`.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                    &mut n,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // The caller went away between poll and receive, or a
                    // signal came: wait again.
                    Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            return Ok(Event::Call(Call {
                id: n.id,
                tid: n.pid as i32,
                nr: i64::from(n.data.nr),
                args: n.data.args,
            }));
        }
    }

    /// Answers `call`. A caller that is gone (`ENOENT`) is not an error.
    pub fn answer(&self, call: &Call, answer: Answer) -> io::Result<()> {
        let (val, error, flags) = match answer {
            Answer::Sent => return Ok(()),
            Answer::Value(v) => (v, 0, 0),
            Answer::Errno(e) => (0, -e, 0),
            Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        };
        let mut resp = libc::seccomp_notif_resp {
            id: call.id,
            val,
            error,
            flags,
        };
        // SAFETY: SEND reads one seccomp_notif_resp.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &mut resp,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Puts `fd` into the caller's process while `call` waits: at number
    /// `at` (replacing what was there, as `dup2`) or, with `None`, at its
    /// lowest free number. With `send`, this also answers the call with the
    /// new number, atomically (`SECCOMP_ADDFD_FLAG_SEND`). Returns the
    /// number.
    pub fn add_fd(
        &self,
        call: &Call,
        fd: &OwnedFd,
        at: Option<i32>,
        cloexec: bool,
        send: bool,
    ) -> io::Result<i32> {
        let mut flags = 0u32;
        if at.is_some() {
            flags |= libc::SECCOMP_ADDFD_FLAG_SETFD as u32;
        }
        if send {
            flags |= libc::SECCOMP_ADDFD_FLAG_SEND as u32;
        }
        let mut add = libc::seccomp_notif_addfd {
            id: call.id,
            flags,
            srcfd: fd.as_raw_fd() as u32,
            newfd: at.unwrap_or(0) as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: ADDFD reads one seccomp_notif_addfd.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD as _,
                &mut add,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }
}
