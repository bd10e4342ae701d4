//! Per-process state: the connection to the proxy, the program's memory
//! and the fd table.
//!
//! Created on first use. After `fork` the child sees a different pid and
//! starts from a fresh state: its own session (made lazily, like the
//! parent's) and an empty table, because the parent's guest fds belong to
//! the parent's session. The parent's state is left alone in the child (its
//! locks may be held by threads that do not exist there), so nothing it
//! holds is touched, and its socket is never written to by the child.
//!
//! When the connection breaks while the session holds guest objects, the
//! process has lost its proxy ([`crate::lost`]): the table is kept, so that
//! the program's fds still name their (now gone) objects and every call on
//! them, and every new call, fails with the lost errno instead of reaching
//! a new session behind the program's back — until the program has closed
//! them all. A session that held nothing is simply replaced, as before.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use telebpf_client::{ClientError, Connection, Settings};
use telebpf_protocol::message::{ErrorReply, Facts, Refusal, Reply, Request};

use telebpf_abi::memory::Memory;

use crate::error::{Error, Result};
use crate::fdtable::{FdTable, Table};
use crate::lost;
use crate::memory::ProcessMemory;
use crate::program::{OwnProcess, Program};
use crate::sys::inode_of;
use crate::watchdog::{self, Watched, KEEPALIVE, KEEPALIVE_ANSWER};

/// The state of one process.
pub struct State {
    /// The process this state was made in (a child after `fork` makes its
    /// own).
    pid: i32,
    /// The program's memory (this process's for the preload; the served
    /// process's for a supervisor).
    memory: ProcessMemory,
    /// Where new fds go and how fd numbers are checked.
    program: Box<dyn Program>,
    conn: Mutex<Option<Connection>>,
    /// Inode of `conn`'s socket, recorded when it connected: the program
    /// may close every fd it did not open itself (`closefrom`,
    /// `close_range`, a loop of `close`, or `dup2` over it) without the
    /// library seeing it, and the number may then name a file of its own.
    conn_ino: AtomicU64,
    /// `conn`'s fd number (-1 without one), for the keep-alive thread,
    /// which must not wait for `conn`'s lock while a call holds it.
    conn_fd: AtomicI32,
    /// When the call in flight began (ms since `born`, plus one; 0 while
    /// no call is in flight).
    call_since_ms: AtomicU64,
    /// When the proxy last answered (ms since `born`): it was alive then.
    answered_ms: AtomicU64,
    /// When the keep-alive last asked the proxy on a connection of its own
    /// (ms since `born`, plus one; 0 never).
    probed_ms: AtomicU64,
    /// Host fds standing for guest objects.
    table: Mutex<Box<dyn FdTable>>,
    /// Immutable guest files already fetched, as sealed memfds, with the
    /// memfd's `(dev, ino)` to tell whether the program closed it.
    cache: Mutex<HashMap<String, CachedFile>>,
    facts: OnceLock<Facts>,
    warned: AtomicBool,
    /// When the connection last carried a call (ms since the state was
    /// made), to look for a proxy-side close only after a quiet spell.
    last_call_ms: AtomicU64,
    born: Instant,
    /// Whether this process's watchdog was started (the state is per
    /// process: a child after `fork` starts its own).
    watching: AtomicBool,
    /// The kinds of request the proxy's policy refused, each reported once.
    refused: Mutex<HashSet<String>>,
    /// The library's threads running for this state ([`spawn`] on a
    /// serving thread): while any does, [`release`] keeps it.
    threads: AtomicUsize,
}

/// After this long without a call, [`State::call`] checks (one `poll`)
/// whether the proxy closed the session before sending into it.
const QUIET_MS: u64 = 20;

/// After a ring's stream ended, how long to wait for the session's own
/// hang-up before asking the proxy whether it still lives.
const STREAM_END_GRACE: Duration = Duration::from_millis(500);
/// The cause named when the proxy closed the session.
const CLOSED_BY_PROXY: &str =
    "the proxy closed the connection (it exited or was killed, or its guest went away)";

/// The cause named when the proxy answered a keep-alive with something
/// else than its `Pong`.
const OUT_OF_TURN: &str = "the proxy answered a keep-alive out of turn";

/// The proxy address for the lost line when no connection names it.
fn target_from_env() -> String {
    std::env::var(telebpf_client::ENV_TARGET).unwrap_or_else(|_| "?".into())
}

/// A broken connection's cause, without the proxy's address (the lost
/// line names it once).
fn cause_of(e: &ClientError) -> String {
    match e {
        ClientError::Channel(_, c) => format!("the connection failed: {c}"),
        ClientError::Codec(_, c) => format!("an answer did not decode: {c}"),
        ClientError::Timeout(_, d) => format!("no answer within {d:?}"),
        ClientError::Unexpected(_, what) => format!("the proxy answered out of turn: {what}"),
        e => e.to_string(),
    }
}

/// A guest file kept by the library: the memfd and its `(dev, ino)`.
pub type CachedFile = (Arc<OwnedFd>, (u64, u64));

static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());

/// Whether forwarding is configured at all; without `TELEBPF_TARGET` the
/// library stays out of the way.
#[inline]
pub fn configured() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(telebpf_client::ENV_TARGET).is_some())
}

/// Whether some thread of this process serves another program
/// ([`serve`]); the preload never sets it, so its calls skip the
/// thread-local lookup.
static SERVING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The state of the program this thread is serving (a supervisor's
    /// thread, between [`serve`] and the guard's drop).
    static SERVED: std::cell::Cell<Option<&'static State>> = const { std::cell::Cell::new(None) };
}

/// This process's state, or, on a thread that serves another program,
/// that program's.
pub fn get() -> &'static State {
    if SERVING.load(Ordering::Relaxed) {
        if let Some(s) = SERVED.with(|c| c.get()) {
            return s;
        }
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let current = STATE.load(Ordering::Acquire);
    // SAFETY: a non-null STATE always points to a leaked, never-freed State.
    if let Some(s) = unsafe { current.as_ref() } {
        if s.pid == pid {
            return s;
        }
    }
    let fresh = Box::into_raw(Box::new(State::new(
        pid,
        ProcessMemory { pid },
        Box::new(OwnProcess),
        Box::new(Table::default()),
    )));
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

/// The state of another process that a supervisor serves: its memory is
/// `pid`'s, its fds go through `program`, its guest objects are kept in
/// `table`. It lives until the supervisor gives it back with [`release`]
/// (once the process exited), or for the rest of this process.
pub fn for_program(pid: i32, program: Box<dyn Program>, table: Box<dyn FdTable>) -> &'static State {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    Box::leak(Box::new(State::new(
        me,
        ProcessMemory { pid },
        program,
        table,
    )))
}

/// Frees a state made by [`for_program`] whose process has exited and
/// whose session has ended, unless one of the library's threads started
/// for it ([`spawn`]: a ring's mirror, a map's sync) still runs: then it
/// is handed back, to try again later. A supervisor that forks and
/// serves a process per job would otherwise keep every one's state (a few
/// kB, and the guest files it cached as memfds) for good.
///
/// # Safety
///
/// `state` came from [`for_program`], is not released twice, and nothing
/// uses it after this returns `Ok`: no thread [`serve`]s it, and the
/// caller forgets every copy of the reference.
pub unsafe fn release(state: &'static State) -> std::result::Result<(), &'static State> {
    // Held until freed: the keep-alive cannot take it meanwhile.
    let watch = lock(&WATCH);
    let at = state as *const State as usize;
    if state.threads.load(Ordering::Acquire) != 0 || watch.serving == at || watch.watched == at {
        return Err(state);
    }
    // SAFETY: made by `Box::leak` in `for_program`, released once, and
    // unused from now on (the caller's contract; its threads have ended).
    drop(unsafe { Box::from_raw(state as *const State as *mut State) });
    Ok(())
}

/// What a supervisor's keep-alive thread may look at, as state addresses
/// (0: none): the state whose call the supervisor serves now, and the one
/// the keep-alive took last (it uses it for a round). [`release`] frees
/// neither.
struct Watch {
    serving: usize,
    watched: usize,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    serving: 0,
    watched: 0,
});

/// Makes [`get`] return `state` on this thread until the guard is dropped:
/// a supervisor's thread serving one call of another program. The
/// keep-alive then watches that call: a frozen proxy would hold it, and
/// every later call of the supervisor, for ever.
pub fn serve(state: &'static State) -> Serving {
    let previous = serve_here(state);
    let mut watch = lock(&WATCH);
    let watched_before = watch.serving;
    watch.serving = state as *const State as usize;
    Serving {
        previous,
        watched_before: Some(watched_before),
    }
}

/// [`serve`] for a library thread of the served program: not the call
/// the keep-alive watches.
fn serve_quietly(state: &'static State) -> Serving {
    Serving {
        previous: serve_here(state),
        watched_before: None,
    }
}

fn serve_here(state: &'static State) -> Option<&'static State> {
    SERVING.store(true, Ordering::Relaxed);
    SERVED.with(|c| c.replace(Some(state)))
}

/// Starts one of the library's threads (a ring's mirror, a map's sync)
/// for the program this thread serves: on a supervisor's serving thread
/// the new thread serves the same program's state, so its requests go
/// over that program's session.
pub fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
    let served = if SERVING.load(Ordering::Relaxed) {
        SERVED.with(|c| c.get())
    } else {
        None
    };
    // Counted while it runs, so that [`release`] leaves the state alone.
    struct Running(&'static State);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let running = served.map(|s| {
        s.threads.fetch_add(1, Ordering::AcqRel);
        Running(s)
    });
    crate::sys::spawn_library_thread(name, move || {
        // Dropped last: the state is not used after the count goes down.
        let _running = running;
        let _serving = served.map(serve_quietly);
        body()
    })
}

/// While alive, this thread serves another program's state ([`serve`]).
#[must_use = "the served state ends when this is dropped"]
pub struct Serving {
    previous: Option<&'static State>,
    /// What the keep-alive watched before ([`serve`] only).
    watched_before: Option<usize>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVED.with(|c| c.set(self.previous));
        if let Some(before) = self.watched_before {
            lock(&WATCH).serving = before;
        }
    }
}

impl State {
    fn new(
        pid: i32,
        memory: ProcessMemory,
        program: Box<dyn Program>,
        table: Box<dyn FdTable>,
    ) -> State {
        State {
            pid,
            memory,
            program,
            conn: Mutex::new(None),
            conn_ino: AtomicU64::new(0),
            conn_fd: AtomicI32::new(-1),
            call_since_ms: AtomicU64::new(0),
            answered_ms: AtomicU64::new(0),
            probed_ms: AtomicU64::new(0),
            table: Mutex::new(table),
            cache: Mutex::new(HashMap::new()),
            facts: OnceLock::new(),
            warned: AtomicBool::new(false),
            last_call_ms: AtomicU64::new(0),
            born: Instant::now(),
            watching: AtomicBool::new(false),
            refused: Mutex::new(HashSet::new()),
            threads: AtomicUsize::new(0),
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

    fn connection<'a>(&self, guard: &'a mut Option<Connection>) -> Result<&'a mut Connection> {
        if self.lost_errno().is_some() {
            return Err(Error::Lost);
        }
        if guard.as_ref().is_some_and(|c| !self.still_ours(c)) {
            // The program closed our socket: the proxy ended that session
            // and closed its objects. Start a new one.
            self.discard(guard);
            self.warn("the program closed the connection to the proxy; its guest objects are gone");
        }
        if guard.is_none() {
            let conn = Settings::from_env()
                .and_then(|s| Connection::open(&s))
                .map_err(|e| self.fail(e))?;
            let _ = self.facts.set(conn.facts().clone());
            self.warned.store(false, Ordering::Relaxed);
            self.conn_ino.store(
                inode_of(conn.raw_fd()).map_or(0, |i| i.1),
                Ordering::Relaxed,
            );
            self.conn_fd.store(conn.raw_fd(), Ordering::Relaxed);
            self.answered_ms.store(self.now_ms(), Ordering::Relaxed);
            *guard = Some(conn);
        }
        Ok(guard.as_mut().expect("just connected"))
    }

    /// The lost errno while this process has lost its proxy and still
    /// holds fds of the lost session; once it holds none, the lost state
    /// ends (the next call opens a new session).
    fn lost_errno(&self) -> Option<i32> {
        let e = lost::errno()?;
        if self.holds_objects() {
            return Some(e);
        }
        lost::clear();
        None
    }

    /// Whether any host fd still stands for a guest object (its number
    /// still names the memfd or pipe made for it).
    pub fn holds_objects(&self) -> bool {
        let table = self.table();
        table
            .in_range(0, u32::MAX)
            .into_iter()
            .any(|fd| table.get(fd).is_some())
    }

    /// The connection to the proxy broke (`cause`): with guest objects
    /// held, the proxy is lost (one line on stderr, the lost errno from now
    /// on) and that failure is returned; otherwise the connection is
    /// dropped and the next call opens a new session, as before (`None`).
    fn broken(&self, guard: &mut Option<Connection>, cause: &str) -> Option<Error> {
        if !self.holds_objects() {
            self.discard(guard);
            return None;
        }
        let target = guard
            .as_ref()
            .map_or_else(target_from_env, |c| c.target().to_string());
        lost::declare(&target, cause);
        // The table stays: the program's fds name the lost objects until it
        // closes them (see `lost_errno`).
        self.conn_fd.store(-1, Ordering::Relaxed);
        if let Some(conn) = guard.take() {
            if !self.still_ours(&conn) {
                std::mem::forget(conn);
            }
        }
        Some(Error::Lost)
    }

    /// A request the proxy's policy refused: `EPERM`, and one line on
    /// stderr per kind of request, so the user learns why a tool fails
    /// without a line per retried call.
    pub fn refused(&self, refusal: &Refusal) -> Error {
        if lock(&self.refused).insert(refusal.what.clone()) {
            eprintln!("telebpf: {refusal}");
        }
        Error::Refused
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
        self.conn_fd.store(-1, Ordering::Relaxed);
        if let Some(conn) = guard.take() {
            if !self.still_ours(&conn) {
                std::mem::forget(conn);
            }
        }
        lock(&self.table).clear();
    }

    /// Reaching the proxy failed: one line on stderr, and the error.
    fn fail(&self, e: ClientError) -> Error {
        self.warn(&e.to_string());
        Error::Client(e)
    }

    /// This process's session token (connects if needed), which binds
    /// stream connections to the session that owns their rings.
    pub fn session_token(&self) -> Result<telebpf_protocol::message::SessionToken> {
        let mut guard = lock(&self.conn);
        Ok(self.connection(&mut guard)?.session())
    }

    /// The guest's facts (connects if needed).
    pub fn facts(&self) -> Result<&Facts> {
        if let Some(f) = self.facts.get() {
            return Ok(f);
        }
        let mut guard = lock(&self.conn);
        self.connection(&mut guard)?;
        Ok(self.facts.get().expect("set on connect"))
    }

    /// Sends a request and returns its reply. A broken connection is
    /// dropped and, since the proxy closed that session's objects, the
    /// proxy is lost if the session held any (`broken`);
    /// otherwise the next call reconnects.
    ///
    /// After a quiet spell it first checks whether the proxy ended the
    /// session meanwhile (idle timeout, proxy restart): then the request
    /// goes to a new session at once instead of failing — if the session
    /// held nothing.
    pub fn call(&self, req: &Request) -> Result<Reply> {
        // A call a frozen proxy holds must fail, objects held or not.
        self.watch();
        let mut guard = lock(&self.conn);
        let now_ms = self.now_ms();
        let last = self.last_call_ms.swap(now_ms, Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= QUIET_MS
            && lost::errno().is_none()
            && guard.as_ref().is_some_and(|c| c.peer_closed())
        {
            // Not a plain drop: the number may no longer be our socket.
            if let Some(f) = self.broken(&mut guard, CLOSED_BY_PROXY) {
                return Err(f);
            }
        }
        let conn = self.connection(&mut guard)?;
        self.call_since_ms.store(now_ms + 1, Ordering::Relaxed);
        let result = conn.call(req);
        self.call_since_ms.store(0, Ordering::Relaxed);
        if result.is_ok() {
            self.answered_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        match result {
            Ok(Reply::Error(ErrorReply { errno, message })) => {
                self.warn(&format!("proxy refused the request: {message}"));
                Err(Error::Guest(errno))
            }
            Ok(Reply::Refused(refusal)) => Err(self.refused(&refusal)),
            Ok(reply) => Ok(reply),
            // The keep-alive found the proxy frozen and shut the socket
            // down under this call (see `probe_beside_call`).
            Err(_) if lost::errno().is_some() => {
                let _ = self.broken(&mut guard, "");
                Err(Error::Lost)
            }
            Err(e) => match self.broken(&mut guard, &cause_of(&e)) {
                Some(lost) => Err(lost),
                None => Err(self.fail(e)),
            },
        }
    }

    /// Sends `req` and takes the answer out of the one kind of reply it
    /// expects: `take` gives the reply's result when the reply is of that
    /// kind and hands any other back (boxed: it is the rare path), which is
    /// a protocol error (`EPROTO`, with a line on stderr naming what was
    /// asked). A guest errno in the result is [`Error::Guest`].
    ///
    /// ```ignore
    /// let bytes = st.ask(&req, "a map snapshot", |r| match r {
    ///     Reply::Snapshot(answer) => Ok(answer),
    ///     other => Err(Box::new(other)),
    /// })?;
    /// ```
    pub fn ask<T>(
        &self,
        req: &Request,
        what: &'static str,
        take: impl FnOnce(Reply) -> std::result::Result<std::result::Result<T, i32>, Box<Reply>>,
    ) -> Result<T> {
        match take(self.call(req)?) {
            Ok(answer) => answer.map_err(Error::Guest),
            Err(other) => {
                self.warn(&format!("unexpected reply to {what}: {other:?}"));
                Err(Error::Protocol(what))
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
            if let Err(e) = conn.notify(req) {
                let _ = self.broken(&mut guard, &cause_of(&e));
            }
        }
    }

    /// Starts this process's watchdog unless it runs: one relaxed load on
    /// every call after the first (no `getpid`: this state is the
    /// process's own).
    pub fn watch(&self) {
        if !self.watching.load(Ordering::Relaxed)
            && !self.watching.swap(true, Ordering::AcqRel)
            && !watchdog::start(watched)
        {
            // No thread now: the next call tries again.
            self.watching.store(false, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// The session socket as the keep-alive watches it: its fd number, if
    /// connected and the number still names our socket.
    pub fn session_socket(&self) -> Option<i32> {
        let fd = self.conn_fd.load(Ordering::Relaxed);
        let ino = self.conn_ino.load(Ordering::Relaxed);
        (fd >= 0 && inode_of(fd).map(|i| i.1) == Some(ino)).then_some(fd)
    }

    /// How long until the keep-alive has something to do: [`KEEPALIVE`]
    /// after the proxy's last answer, or after the call in flight began
    /// (or was last vouched for by a probe). Zero when due.
    pub fn keepalive_due_in(&self) -> Duration {
        let now = self.now_ms();
        let since = match self.call_since_ms.load(Ordering::Relaxed) {
            0 => self.answered_ms.load(Ordering::Relaxed),
            began => (began - 1).max(self.probed_ms.load(Ordering::Relaxed).saturating_sub(1)),
        };
        let due = since + KEEPALIVE.as_millis() as u64;
        Duration::from_millis(due.saturating_sub(now))
    }

    /// Whether a call waits for its reply now.
    pub fn call_in_flight(&self) -> bool {
        self.call_since_ms.load(Ordering::Relaxed) != 0
    }

    /// The session socket hung up: the proxy closed the session (or the
    /// program closed our socket, which `connection`
    /// notices). Waits for a call in flight, which sees the end itself.
    pub fn hung_up(&self) {
        let mut guard = lock(&self.conn);
        if lost::errno().is_some() || guard.is_none() {
            return;
        }
        if guard
            .as_ref()
            .is_some_and(|c| self.still_ours(c) && c.peer_closed())
        {
            let _ = self.broken(&mut guard, CLOSED_BY_PROXY);
        }
    }

    /// One keep-alive round, when [`keepalive_due_in`](Self::keepalive_due_in)
    /// is zero and the process holds guest objects (or, holding none, has a
    /// call in flight). Without a call in flight, and with objects held:
    /// one `Ping` on the session, its `Pong` due within `limit`.
    /// With a call in flight for that long (its reply cannot be told from
    /// a long verifier run on the same connection, which the proxy answers
    /// in order): a new connection whose handshake and Welcome are due
    /// within `limit`. No answer: the proxy is lost.
    pub fn keep_alive(&self, limit: Duration) {
        match self.call_since_ms.load(Ordering::Relaxed) {
            0 => {}
            began if self.now_ms() + 1 >= began + KEEPALIVE.as_millis() as u64 => {
                self.probe_beside_call(limit);
                return;
            }
            // A call began just now: its reply is the sign of life.
            _ => return,
        }
        if !self.holds_objects() {
            // No session to keep (the call this round was for has ended).
            return;
        }
        // A call that starts now goes first: the keep-alive never delays
        // a program's call by more than one round trip.
        let Ok(mut guard) = self.conn.try_lock() else {
            return;
        };
        if lost::errno().is_some() {
            return;
        }
        let Some(conn) = guard.as_mut().filter(|c| self.still_ours(c)) else {
            return;
        };
        match conn.call_within(&Request::Ping(Vec::new()), limit) {
            Ok(Reply::Pong(_)) => self.answered_ms.store(self.now_ms(), Ordering::Relaxed),
            Ok(_) => {
                let _ = self.broken(&mut guard, OUT_OF_TURN);
            }
            Err(e) if e.is_no_answer() => {
                let cause = format!(
                    "no answer to a keep-alive within {limit:?} (the proxy or its guest is frozen, or the link is down)"
                );
                let _ = self.broken(&mut guard, &cause);
            }
            Err(e) => {
                let _ = self.broken(&mut guard, &cause_of(&e));
            }
        }
    }

    /// Asks the proxy on a connection of its own whether it still runs,
    /// while a call waits for its reply; if not, declares it lost and shuts
    /// the session socket down so the call returns.
    fn probe_beside_call(&self, limit: Duration) {
        self.probed_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        let Ok(settings) = Settings::from_env() else {
            return;
        };
        match Connection::open_within(&settings, limit) {
            Err(e) if e.is_no_answer() => {}
            // Served or refused: either way it answered.
            _ => return,
        }
        if self.call_since_ms.load(Ordering::Relaxed) == 0 {
            // The call ended meanwhile; the next keep-alive round looks
            // again.
            return;
        }
        let waited = KEEPALIVE;
        if !self.holds_objects() {
            // No object is lost with the session: the call fails (its
            // error path drops the connection) and the next one opens a
            // new session, once the proxy answers again.
            self.warn(&format!(
                "proxy at {}: a call has waited {waited:?} for its reply and a new connection \
                 got no answer within {limit:?} (the proxy or its guest is frozen); the call fails",
                settings.target
            ));
            if let Some(fd) = self.session_socket() {
                // SAFETY: shutdown(2) on our own socket (checked just
                // above): the blocked call's read returns end of stream.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            return;
        }
        lost::declare(
            &settings.target.to_string(),
            &format!(
                "a call has waited {waited:?} for its reply and a new connection got no answer within {limit:?} (the proxy or its guest is frozen)"
            ),
        );
        if let Some(fd) = self.session_socket() {
            // SAFETY: shutdown(2) on our own socket (checked just above):
            // the blocked call's read returns end of stream; the fd stays
            // open until the call's own error path drops the connection.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// A ring's stream connection ended while the program still holds the
    /// ring (`why`). If the session ended too (the proxy died: its sockets
    /// close together), the proxy is lost; if the session still answers,
    /// the proxy ended only that stream (its log says why) — the program is
    /// blind to that ring all the same, and is told so the same way.
    /// `held` tells whether the program still holds the ring, asked again
    /// after a grace period: a program that closes a ring ends its stream
    /// too, and a call of another thread may have held the object a moment
    /// longer.
    pub fn stream_ended(&self, why: &str, held: &dyn Fn() -> bool) {
        if lost::errno().is_some() {
            return;
        }
        if let Some(fd) = self.session_socket() {
            // The session's hang-up follows the stream's within the time
            // the dying proxy's kernel takes to close its files.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one valid pollfd on our own socket.
            unsafe { libc::poll(&mut pfd, 1, STREAM_END_GRACE.as_millis() as i32) };
        } else {
            std::thread::sleep(STREAM_END_GRACE);
        }
        let mut guard = lock(&self.conn);
        if lost::errno().is_some() || !held() {
            return;
        }
        let alive = match guard.as_mut().filter(|c| self.still_ours(c)) {
            Some(conn) if !conn.peer_closed() => {
                conn.call_within(&Request::Ping(Vec::new()), KEEPALIVE_ANSWER)
            }
            _ => {
                let _ = self.broken(&mut guard, CLOSED_BY_PROXY);
                return;
            }
        };
        match alive {
            Ok(Reply::Pong(_)) => {
                self.answered_ms.store(self.now_ms(), Ordering::Relaxed);
                let target = guard
                    .as_ref()
                    .map_or_else(target_from_env, |c| c.target().to_string());
                lost::declare(
                    &target,
                    &format!("the stream of a ring ended while the session lives ({why}; the proxy's log says why): no event of that ring will arrive"),
                );
                // The session and its objects live on in the guest until
                // the program exits or closes them.
            }
            Ok(_) => {
                let _ = self.broken(&mut guard, OUT_OF_TURN);
            }
            Err(e) => {
                let _ = self.broken(&mut guard, &cause_of(&e));
            }
        }
    }

    /// The program's memory, where the addresses it passes point.
    pub fn memory(&self) -> &dyn Memory {
        &self.memory
    }

    /// Ends this process's session (a supervisor's served process exited
    /// or replaced its program with `exec`): the proxy closes its guest
    /// objects, the table is emptied, and a later call starts a new
    /// session.
    pub fn end_session(&self) {
        let mut guard = lock(&self.conn);
        // Empties the table too.
        self.discard(&mut guard);
    }

    /// Where new fds go and how fd numbers are checked.
    pub fn program(&self) -> &dyn Program {
        &*self.program
    }

    /// The fd table, locked.
    pub fn table(&self) -> MutexGuard<'_, Box<dyn FdTable>> {
        lock(&self.table)
    }

    /// The file cache, locked.
    pub fn cache(&self) -> MutexGuard<'_, HashMap<String, CachedFile>> {
        lock(&self.cache)
    }
}

/// This process's session, as the keep-alive thread watches it; in a
/// supervisor, the served program's whose call it serves now (it stays
/// allocated while the keep-alive may use it: [`release`]).
fn watched() -> &'static dyn Watched {
    if SERVING.load(Ordering::Relaxed) {
        let mut watch = lock(&WATCH);
        watch.watched = watch.serving;
        // SAFETY: a non-zero `serving` is a state made by `for_program`
        // that `release` does not free while it is `watched`.
        if let Some(st) = unsafe { (watch.serving as *const State).as_ref() } {
            return st;
        }
    }
    get()
}

impl Watched for State {
    fn holds_objects(&self) -> bool {
        State::holds_objects(self)
    }

    fn call_in_flight(&self) -> bool {
        State::call_in_flight(self)
    }

    fn keepalive_due_in(&self) -> Duration {
        State::keepalive_due_in(self)
    }

    fn keep_alive(&self, limit: Duration) {
        State::keep_alive(self, limit)
    }

    fn session_socket(&self) -> Option<i32> {
        State::session_socket(self)
    }

    fn hung_up(&self) {
        State::hung_up(self)
    }
}
