//! Per-process state: the connection to the proxy and the fd table.
//!
//! Created on first use. After `fork` the child sees a different pid and
//! starts from a fresh state: its own session (made lazily, like the
//! parent's) and an empty table, because the parent's guest fds belong to
//! the parent's session. The parent's state is left alone in the child (its
//! locks may be held by threads that do not exist there), so nothing it
//! holds is touched, and its socket is never written to by the child.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use telebpf_client::{ClientError, Connection, Settings};
use telebpf_protocol::message::{ErrorReply, Facts, Refusal, Reply, Request};

use crate::objects::{inode_of, Table};

/// A failure the host program sees as an errno, with a line on stderr.
#[derive(Debug)]
pub struct Failure(pub i32);

/// The state of one process.
pub struct State {
    pid: i32,
    conn: Mutex<Option<Connection>>,
    /// Inode of `conn`'s socket, recorded when it connected: the program
    /// may close every fd it did not open itself (`closefrom`,
    /// `close_range`, a loop of `close`, or `dup2` over it) without the
    /// library seeing it, and the number may then name a file of its own.
    conn_ino: AtomicU64,
    /// Host fds standing for guest objects.
    pub table: Mutex<Table>,
    /// Immutable guest files already fetched, as sealed memfds, with the
    /// memfd's `(dev, ino)` to tell whether the program closed it.
    pub cache: Mutex<HashMap<String, CachedFile>>,
    facts: OnceLock<Facts>,
    warned: AtomicBool,
    /// When the connection last carried a call (ms since the state was
    /// made), to look for a proxy-side close only after a quiet spell.
    last_call_ms: AtomicU64,
    born: Instant,
    /// The kinds of request the proxy's policy refused, each reported once.
    refused: Mutex<HashSet<String>>,
}

/// After this long without a call, [`State::call`] checks (one `poll`)
/// whether the proxy closed the session before sending into it.
const QUIET_MS: u64 = 20;

/// A guest file kept by the library: the memfd and its `(dev, ino)`.
pub type CachedFile = (Arc<OwnedFd>, (u64, u64));

static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());

/// Whether forwarding is configured at all; without `TELEBPF_TARGET` the
/// library stays out of the way.
pub fn configured() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(telebpf_client::ENV_TARGET).is_some())
}

/// This process's state.
pub fn get() -> &'static State {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let current = STATE.load(Ordering::Acquire);
    // SAFETY: a non-null STATE always points to a leaked, never-freed State.
    if let Some(s) = unsafe { current.as_ref() } {
        if s.pid == pid {
            return s;
        }
    }
    let fresh = Box::into_raw(Box::new(State {
        pid,
        conn: Mutex::new(None),
        conn_ino: AtomicU64::new(0),
        table: Mutex::new(Table::default()),
        cache: Mutex::new(HashMap::new()),
        facts: OnceLock::new(),
        warned: AtomicBool::new(false),
        last_call_ms: AtomicU64::new(0),
        born: Instant::now(),
        refused: Mutex::new(HashSet::new()),
    }));
    match STATE.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: we just leaked `fresh`; it lives for the rest of the process.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never shared; reclaim it.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above for a non-null STATE.
            unsafe { &*winner }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Prints a line on the program's stderr (once per kind of trouble is
    /// enough for a program that retries thousands of calls).
    pub fn warn(&self, msg: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!("telebpf: {msg}");
        }
    }

    fn connection<'a>(
        &self,
        guard: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, Failure> {
        if guard.as_ref().is_some_and(|c| !self.still_ours(c)) {
            // The program closed our socket: the proxy ended that session
            // and closed its objects. Start a new one.
            self.discard(guard);
            self.warn("the program closed the connection to the proxy; its guest objects are gone");
        }
        if guard.is_none() {
            let conn = Settings::from_env()
                .and_then(|s| Connection::open(&s))
                .map_err(|e| self.fail(&e))?;
            let _ = self.facts.set(conn.facts().clone());
            self.warned.store(false, Ordering::Relaxed);
            self.conn_ino.store(
                inode_of(conn.raw_fd()).map_or(0, |i| i.1),
                Ordering::Relaxed,
            );
            *guard = Some(conn);
        }
        Ok(guard.as_mut().expect("just connected"))
    }

    /// A request the proxy's policy refused: `EPERM`, and one line on
    /// stderr per kind of request, so the user learns why a tool fails
    /// without a line per retried call.
    pub fn refused(&self, refusal: &Refusal) -> Failure {
        if lock(&self.refused).insert(refusal.what.clone()) {
            eprintln!("telebpf: {refusal}");
        }
        Failure(libc::EPERM)
    }

    /// Whether `conn`'s fd number still names the socket it connected
    /// (one `fstat`, as the fd table's own check).
    fn still_ours(&self, conn: &Connection) -> bool {
        inode_of(conn.raw_fd()).map(|i| i.1) == Some(self.conn_ino.load(Ordering::Relaxed))
    }

    /// Drops the connection and the fd table of its session. If the fd
    /// number no longer names our socket, the connection is leaked instead
    /// of dropped: dropping it would close that number, which may now be
    /// one of the program's own fds.
    fn discard(&self, guard: &mut Option<Connection>) {
        if let Some(conn) = guard.take() {
            if !self.still_ours(&conn) {
                std::mem::forget(conn);
            }
        }
        lock(&self.table).clear();
    }

    fn fail(&self, e: &ClientError) -> Failure {
        self.warn(&e.to_string());
        Failure(e.errno())
    }

    /// This process's session token (connects if needed), which binds
    /// stream connections to the session that owns their rings.
    pub fn session_token(&self) -> Result<telebpf_protocol::message::SessionToken, Failure> {
        let mut guard = lock(&self.conn);
        Ok(self.connection(&mut guard)?.session())
    }

    /// The guest's facts (connects if needed).
    pub fn facts(&self) -> Result<&Facts, Failure> {
        if let Some(f) = self.facts.get() {
            return Ok(f);
        }
        let mut guard = lock(&self.conn);
        self.connection(&mut guard)?;
        Ok(self.facts.get().expect("set on connect"))
    }

    /// Sends a request and returns its reply. A broken connection is
    /// dropped (the next call reconnects) and, since the proxy closed that
    /// session's objects, the fd table is cleared.
    ///
    /// After a quiet spell it first checks whether the proxy ended the
    /// session meanwhile (idle timeout, proxy restart): then the request
    /// goes to a new session at once instead of failing.
    pub fn call(&self, req: &Request) -> Result<Reply, Failure> {
        let mut guard = lock(&self.conn);
        let now_ms = self.born.elapsed().as_millis() as u64;
        let last = self.last_call_ms.swap(now_ms, Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= QUIET_MS
            && guard.as_ref().is_some_and(|c| c.peer_closed())
        {
            // Not a plain drop: the number may no longer be our socket.
            self.discard(&mut guard);
        }
        let conn = self.connection(&mut guard)?;
        match conn.call(req) {
            Ok(Reply::Error(ErrorReply { errno, message })) => {
                self.warn(&format!("proxy refused the request: {message}"));
                Err(Failure(errno))
            }
            Ok(Reply::Refused(refusal)) => Err(self.refused(&refusal)),
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.discard(&mut guard);
                Err(self.fail(&e))
            }
        }
    }

    /// Sends a request that has no reply; failures only drop the connection.
    pub fn notify(&self, req: &Request) {
        let mut guard = lock(&self.conn);
        if guard.as_ref().is_some_and(|c| !self.still_ours(c)) {
            // Nothing to tell a session that is gone (see `connection`).
            self.discard(&mut guard);
            return;
        }
        if let Some(conn) = guard.as_mut() {
            if conn.notify(req).is_err() {
                self.discard(&mut guard);
            }
        }
    }

    /// The fd table, locked.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// The file cache, locked.
    pub fn cache(&self) -> MutexGuard<'_, HashMap<String, CachedFile>> {
        lock(&self.cache)
    }
}
