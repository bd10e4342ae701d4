//! The keep-alive: how a quiet program learns that its proxy is gone.
//!
//! A tool such as execsnoop makes no call for hours while it waits for
//! events; its records come on stream connections. If the proxy dies or
//! freezes meanwhile, no call of the program fails, and without this thread
//! nothing would ever tell it (see [`crate::lost`]). One library thread per
//! process, started when the process first holds a guest object, does:
//!
//! * **Hang-up**: it sleeps in `poll` on the session socket for `POLLRDHUP`
//!   only (replies to the program's calls do not wake it). A proxy that
//!   exits or is killed, or a guest that goes away, closes the connection:
//!   the loss is declared at once.
//! * **Keep-alive**: after [`KEEPALIVE`] (3 s) without an answer from the
//!   proxy, and with no call in flight, one `Ping` on the session, whose
//!   `Pong` is due within [`KEEPALIVE_ANSWER`] (4 s): a frozen proxy (a
//!   stopped process, a paused guest) keeps the connection open and never
//!   answers. An idle tool costs one 32-byte frame each way per 3 s; a busy
//!   one none (its calls' replies are the sign of life). A `Ping` never
//!   waits behind a program's call: it is sent only if the session's lock is
//!   free, and a call that comes meanwhile waits one round trip.
//! * **A call in flight** for [`KEEPALIVE`] cannot be told from a long
//!   verifier run by its own connection, which the proxy answers in order.
//!   The thread then asks the proxy on a connection of its own (connect,
//!   handshake and Welcome within [`KEEPALIVE_ANSWER`], once per
//!   [`KEEPALIVE`]): a proxy that answers, even with a refusal, runs; one
//!   that does not is frozen — the loss is declared and the session socket
//!   shut down, so the stuck call returns with the lost errno.
//!
//! A frozen proxy is so found within `KEEPALIVE + KEEPALIVE_ANSWER` (7 s),
//! whether the program was idle or waiting for a reply; a dead one at once.
//! A process that holds no guest object has no session to keep (it may end
//! at the proxy's idle timeout, and the next call reconnects): only its
//! calls are watched, from its first one, the same way; a call a frozen
//! proxy holds fails, and the next call opens a new session.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use crate::lost;

/// How long a quiet session goes without a sign of life from the proxy
/// before the keep-alive asks for one: one small frame each way per this
/// period, and only while the process holds guest objects.
pub const KEEPALIVE: Duration = Duration::from_secs(3);
/// How long the keep-alive waits for the proxy's answer. A live proxy
/// answers a `Ping` in well under a millisecond; with [`KEEPALIVE`], a
/// frozen one is found within 7 s.
pub const KEEPALIVE_ANSWER: Duration = Duration::from_secs(4);

/// The session the keep-alive watches (the process's `State`): the thread
/// only asks it what is due and tells it what it found, so this module
/// stays below the session's own.
pub trait Watched: Sync {
    /// Whether any host fd still stands for a guest object.
    fn holds_objects(&self) -> bool;
    /// Whether a call waits for its reply now.
    fn call_in_flight(&self) -> bool;
    /// How long until the keep-alive has something to do (zero when due).
    fn keepalive_due_in(&self) -> Duration;
    /// One keep-alive round, the proxy's answer due within `limit`.
    fn keep_alive(&self, limit: Duration);
    /// The session socket's fd, if connected and still ours.
    fn session_socket(&self) -> Option<i32>;
    /// The session socket hung up.
    fn hung_up(&self);
}

/// The pid whose watchdog runs (a child after `fork` has none yet).
static RUNNING_FOR: AtomicI32 = AtomicI32::new(0);

/// Starts this process's watchdog thread unless it runs; called (through
/// `State::watch`) on the process's first forwarded call, with the way to
/// this process's session. Without a thread (none can be started: `false`)
/// a loss is still found by the program's own calls and rings.
pub fn start(session: fn() -> &'static dyn Watched) -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let was = RUNNING_FOR.load(Ordering::Relaxed);
    if was == pid
        || RUNNING_FOR
            .compare_exchange(was, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return true;
    }
    let spawned = crate::sys::spawn_library_thread("telebpf-keepalive", move || run(session));
    if spawned.is_err() {
        RUNNING_FOR.store(0, Ordering::Relaxed);
        return false;
    }
    true
}

/// How often a process that holds no guest object looks whether a call
/// of it waits for a reply.
const CALL_LOOK: Duration = Duration::from_secs(1);

fn run(session: fn() -> &'static dyn Watched) {
    loop {
        let st = session();
        if lost::errno().is_some() {
            // Nothing to guard now; look again later (the program may
            // close the lost session's last fd).
            std::thread::sleep(KEEPALIVE);
            continue;
        }
        if !st.holds_objects() {
            // Nothing held, so no session to keep (it may end at the
            // proxy's idle timeout; the next call opens another): only a
            // call waiting for its reply is at stake, which a frozen proxy
            // would hold for ever. Due KEEPALIVE after the call began.
            if st.call_in_flight() {
                match st.keepalive_due_in() {
                    wait if wait.is_zero() => st.keep_alive(KEEPALIVE_ANSWER),
                    wait => std::thread::sleep(wait.min(CALL_LOOK)),
                }
            } else {
                std::thread::sleep(CALL_LOOK);
            }
            continue;
        }
        let wait = st.keepalive_due_in();
        match st.session_socket() {
            Some(fd) => {
                if hung_up_within(fd, wait) {
                    st.hung_up();
                    // Not ours any more, or handled: the next round
                    // re-reads the state either way.
                    if st.session_socket() == Some(fd) && lost::errno().is_none() {
                        // Still ours and not lost (a call took the end
                        // first): do not spin on a hung-up socket.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            }
            // Not connected (the next call connects), or the program
            // closed our socket (the next call notices).
            None => {
                std::thread::sleep(KEEPALIVE);
                continue;
            }
        }
        if st.keepalive_due_in().is_zero() {
            st.keep_alive(KEEPALIVE_ANSWER);
        }
    }
}

/// Whether `fd` hangs up (or fails) within `wait`; signals and spurious
/// wake-ups end the wait early (`false`), which only makes the caller look
/// again.
fn hung_up_within(fd: i32, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd; `fd` was checked to be our socket, and at
    // worst names another file by now, which `hung_up` checks again.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    r > 0 && pfd.revents != 0
}
