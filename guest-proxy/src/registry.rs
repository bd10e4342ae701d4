//! The live sessions, so that shutdown can reach them.
//!
//! Each session thread blocks in `read(2)` on its connection while the
//! client is idle. At shutdown the proxy `shutdown(2)`s every registered
//! connection (through a handle of its own, so the session's fds are never
//! touched from another thread): the blocked read returns end of stream, the
//! session ends and its `Drop` closes its guest objects. The registry then
//! lets the proxy wait, with a deadline, until every session has ended.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use telebpf_protocol::transport::SyncServerStream;

use crate::log;

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    /// A handle to each live session's connection, by session id.
    live: HashMap<u64, SyncServerStream>,
}

/// The live sessions of the proxy.
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
    ended: Condvar,
}

/// A session's place in the [`Registry`]; dropping it (when the session
/// thread ends, also by unwinding) removes the session.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The state, also after a panic elsewhere (it stays consistent: every
    /// change is a single insert or remove).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers session `id` with a handle to its connection; `None` when
    /// the proxy is stopping (the session must not start).
    pub fn register(self: &Arc<Self>, id: u64, handle: SyncServerStream) -> Option<Registration> {
        let mut state = self.lock();
        if state.stopping {
            return None;
        }
        state.live.insert(id, handle);
        Some(Registration {
            registry: self.clone(),
            id,
        })
    }

    /// Number of live sessions.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Refuses new sessions and shuts every live connection down, which
    /// wakes session threads blocked reading it.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopping = true;
        for (id, handle) in &state.live {
            if let Err(e) = handle.shutdown() {
                log::debug(format_args!("session {id}: shutdown: {e}"));
            }
        }
    }

    /// Waits until no session is live, at most `timeout`; returns how many
    /// still are.
    pub fn wait_empty(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .ended
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.live.len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        state.live.remove(&self.id);
        drop(state);
        self.registry.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A blocking server stream (and its peer) without a runtime.
    fn stream() -> (SyncServerStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(async {
            a.set_nonblocking(true).unwrap();
            let s = tokio::net::UnixStream::from_std(a).unwrap();
            telebpf_protocol::ServerStream::Unix(s)
                .into_blocking()
                .unwrap()
        });
        (s, b)
    }

    #[test]
    fn stop_wakes_blocked_readers_and_wait_sees_them_end() {
        let reg = Arc::new(Registry::new());
        let mut threads = Vec::new();
        let mut peers = Vec::new();
        for id in 0..3 {
            let (mut s, peer) = stream();
            peers.push(peer);
            let r = reg
                .register(id, telebpf_protocol::TryCloneStream::try_clone(&s).unwrap())
                .unwrap();
            threads.push(std::thread::spawn(move || {
                let _r = r;
                let mut b = [0u8; 1];
                s.read(&mut b).unwrap()
            }));
        }
        assert_eq!(reg.live(), 3);
        assert_eq!(reg.wait_empty(Duration::from_millis(50)), 3);
        assert!(!reg.is_stopping());
        reg.stop();
        assert!(reg.is_stopping());
        assert_eq!(reg.wait_empty(Duration::from_secs(5)), 0);
        for t in threads {
            assert_eq!(t.join().unwrap(), 0, "end of stream");
        }
        let (s, _peer) = stream();
        assert!(reg.register(9, s).is_none(), "no new session after stop");
    }

    #[test]
    fn registration_dropped_by_unwinding() {
        let reg = Arc::new(Registry::new());
        let (s, _peer) = stream();
        let r = reg.register(1, s).unwrap();
        let t = std::thread::spawn(move || {
            let _r = r;
            panic!("session bug");
        });
        assert!(t.join().is_err());
        assert_eq!(reg.live(), 0);
    }
}
