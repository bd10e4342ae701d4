//! Losing the proxy: the program is blind from then on, and must know it.
//!
//! A tool whose proxy died (killed, guest rebooted) or froze has lost its
//! session and with it every guest object its fds stood for: its programs
//! are detached, its rings will never fill again. Nothing in the host
//! kernel tells the program, and for an intrusion detector blindness that
//! looks like calm is the worst failure. So the library tells it: once, on
//! the program's stderr, a line naming the proxy and the cause; from then
//! on every forwarded call, and every wait that involves a mirrored ring,
//! fails with [`ERRNO`]. libbpf's `ring_buffer__poll`/`perf_buffer__poll`
//! return it, and the tool ends with its own error and a non-zero status,
//! for a supervisor to restart it against a proxy that is back.
//!
//! Only a session that held guest objects is *lost*: one that held nothing
//! leaves no fd naming nothing behind, and the next call simply opens a new
//! session, as after the proxy's idle timeout (see `State::call`). The
//! state belongs to one process (a child after `fork` has a session of its
//! own) and ends once the program has closed every fd of the lost session:
//! a program that let go of everything and starts over gets a new session;
//! one that still holds fds that name nothing never does.
//!
//! This module sits at the bottom of the library's imports: the modules
//! that notice a loss (`state`, `rings`) call [`declare`]; the ring
//! mirrors, which must wake programs already asleep on a ring, register
//! with [`on_declare`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// What forwarded calls and ring waits fail with once the proxy is lost: an
/// I/O error, as from a device that went away; `epoll_wait` and `poll`
/// never give it otherwise, so a program cannot mistake it for a timeout.
pub const ERRNO: i32 = libc::EIO;

/// The pid of the process that lost its proxy (0: none). A pid, not a
/// flag, because a child after `fork` inherits the memory but not the loss.
static LOST_PID: AtomicI32 = AtomicI32::new(0);

/// What runs when a loss is declared (the ring mirrors' wake-up).
static ON_DECLARE: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Cheap test for the hot paths (one relaxed load): whether any process
/// sharing this memory image was ever declared lost. `false` is exact;
/// `true` must be confirmed with [`errno`].
pub fn suspected() -> bool {
    LOST_PID.load(Ordering::Relaxed) != 0
}

/// [`ERRNO`] if this process lost its proxy.
pub fn errno() -> Option<i32> {
    let lost = LOST_PID.load(Ordering::Acquire);
    (lost != 0 && lost == pid()).then_some(ERRNO)
}

/// Declares that this process lost the proxy at `target` because of
/// `cause`: prints the one line, then runs what [`on_declare`] registered.
/// Returns `false` (and does nothing) if it was declared already.
pub fn declare(target: &str, cause: &str) -> bool {
    let me = pid();
    let before = LOST_PID.load(Ordering::Acquire);
    if before == me
        || LOST_PID
            .compare_exchange(before, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return false;
    }
    eprintln!("{}", line(target, cause));
    let hooks = ON_DECLARE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for hook in hooks {
        hook();
    }
    true
}

/// The line a program gets on its stderr.
fn line(target: &str, cause: &str) -> String {
    format!(
        "telebpf: lost the proxy at {target}: {cause}; this program is blind: \
         its waits on rings and its calls now fail with EIO"
    )
}

/// Ends this process's lost state (the program closed every fd of the lost
/// session: the next call may open a new one).
pub fn clear() {
    let _ = LOST_PID.compare_exchange(pid(), 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Registers `hook` to run (once per declaration, in the declaring thread)
/// when a loss is declared.
pub fn on_declare(hook: fn()) {
    let mut hooks = ON_DECLARE.lock().unwrap_or_else(|p| p.into_inner());
    if !hooks.contains(&hook) {
        hooks.push(hook);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    static RAN: AtomicU32 = AtomicU32::new(0);

    fn count() {
        RAN.fetch_add(1, Ordering::SeqCst);
    }

    /// One test for the whole life cycle: the state is process-wide.
    #[test]
    fn declared_once_until_cleared_and_only_for_this_process() {
        assert!(errno().is_none());
        on_declare(count);
        on_declare(count);
        assert!(declare(
            "unix:/run/p.sock",
            "the proxy closed the connection"
        ));
        assert_eq!(errno(), Some(libc::EIO));
        assert!(suspected());
        assert!(!declare("unix:/run/p.sock", "again"), "declared once");
        assert_eq!(RAN.load(Ordering::SeqCst), 1, "the hook ran once");
        clear();
        assert!(errno().is_none());
        // A loss recorded by another process (the parent before a fork) is
        // not this one's.
        LOST_PID.store(pid() + 1, Ordering::SeqCst);
        assert!(suspected() && errno().is_none());
        assert!(declare("unix:/run/p.sock", "child"));
        clear();
    }

    #[test]
    fn the_line_names_the_proxy_and_the_cause() {
        let l = line("vsock:3:5000", "no answer to a keep-alive within 4s");
        assert!(l.starts_with("telebpf: lost the proxy at vsock:3:5000: no answer"));
        assert!(l.contains("fail with EIO") && !l.contains('\n'));
    }
}
