//! Limits on what clients can make the proxy hold, and the timeouts that end
//! sessions nobody is driving.
//!
//! The proxy runs as root and serves anyone who holds a key, so nothing a
//! client sends may decide how much the proxy allocates or how long it
//! waits. Every limit below is a command-line flag ([`LimitArgs`]); the
//! defaults leave the test suite and the libbpf-tools far inside them.
//!
//! | limit | scope | reaching it |
//! |---|---|---|
//! | sessions (incl. handshakes in progress and stream connections) | proxy | the connection is closed at `accept`, before a byte is read: the client sees `ECONNREFUSED` |
//! | open guest objects | session | the creating call fails with `EMFILE`, like a full fd table; nothing is created |
//! | open guest objects | proxy | `ENFILE`, like a full system file table |
//! | frame size | session | a request frame whose length prefix is larger ends the session (a sealed stream cannot skip a frame it cannot authenticate); nothing is allocated for it |
//! | bytes in flight (request frames over 64 KiB and the buffers a call's reply needs) | session | `ENOMEM` (the kernel's answer to an allocation it will not make) |
//! | bytes in flight | proxy | a request frame waits for room up to the stall timeout, then ends its session; reply buffers fail with `EAGAIN` |
//! | requests per second | session and proxy | `EAGAIN`; `Close` is never refused |
//!
//! Timeouts:
//!
//! * handshake: a connection must finish the handshake within it;
//! * stall: a frame that has started must complete within it, and a reply
//!   or a pushed frame must make progress within it (`SO_SNDTIMEO`); a peer
//!   that stops reading, or sends half a frame, loses its session;
//! * idle: a session that holds **no guest object** and sends no request
//!   for this long is ended. A session holding objects is never ended for
//!   being quiet: a tool such as `execsnoop` waits for events for hours
//!   with no request on its main connection (its records arrive on a stream
//!   connection, which is not a request loop at all), and its objects are
//!   exactly what must not vanish under it. Such a session still ends when
//!   the connection breaks (the client exited or was killed: the kernel
//!   closes its socket). The preload reconnects on its next call when it
//!   finds its connection closed, so ending an idle object-less session
//!   costs the client nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use telebpf_protocol::channel::{FrameGate, ReceiveLimits};

/// The limits, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most connections at once (sessions, stream connections and
    /// handshakes in progress); more are closed at accept.
    #[arg(long, default_value_t = 1024)]
    pub max_sessions: usize,
    /// Most guest objects (fds) one session may hold (EMFILE beyond).
    #[arg(long, default_value_t = 4096)]
    pub max_objects_per_session: usize,
    /// Most guest objects all sessions together may hold (ENFILE beyond).
    #[arg(long, default_value_t = 65536)]
    pub max_objects: usize,
    /// Largest request frame, in bytes; a larger one ends the session.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_frame: usize,
    /// Most bytes one session's request may occupy (its frame and its reply
    /// buffers); ENOMEM beyond.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_inflight_per_session: usize,
    /// Most bytes all sessions' requests together may occupy.
    #[arg(long, default_value_t = 512 << 20)]
    pub max_inflight: usize,
    /// Most requests per second of one session (EAGAIN beyond; a burst of
    /// one second's worth is allowed).
    #[arg(long, default_value_t = 200_000)]
    pub max_rate_per_session: u32,
    /// Most requests per second of all sessions together.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rate: u32,
    /// Time limit of the handshake, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// A session holding no guest object ends after this long without a
    /// request, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// A started frame must complete, and a send must make progress,
    /// within this, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub stall_timeout_ms: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            limits: LimitArgs,
        }
        Only::parse_from(["telebpf-proxy"]).limits
    }
}

impl LimitArgs {
    /// The handshake time limit.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// How often a quiet session thread wakes to look at its idle time
    /// and at a stalled frame: half the shorter timeout, between 50 ms and 1 s.
    pub fn tick(&self) -> Duration {
        (self.idle_timeout().min(self.stall_timeout()) / 2)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// A token bucket: `rate` per second, bursts of up to one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The proxy-wide counters every limit is checked against.
#[derive(Debug)]
pub struct Governor {
    /// The configured limits.
    pub args: LimitArgs,
    connections: AtomicUsize,
    objects: AtomicUsize,
    inflight: AtomicUsize,
    rate: Mutex<Bucket>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<Governor>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds `n` to `counter` unless that would pass `max`.
fn try_add(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            v.checked_add(n).filter(|&t| t <= max)
        })
        .is_ok()
}

impl Governor {
    /// Counters at zero for `args`.
    pub fn new(args: LimitArgs) -> Arc<Governor> {
        Arc::new(Governor {
            rate: Mutex::new(Bucket::new(args.max_rate)),
            args,
            connections: AtomicUsize::new(0),
            objects: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
        })
    }

    /// A place for a new connection, or `None` at `--max-sessions`.
    pub fn admit_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        try_add(&self.connections, 1, self.args.max_sessions).then(|| ConnectionSlot(self.clone()))
    }

    /// Connections holding a place now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// The accounting of one new session.
    pub fn session(self: &Arc<Self>) -> SessionBudget {
        SessionBudget {
            gov: Some(self.clone()),
            rate: Bucket::new(self.args.max_rate_per_session),
            objects: 0,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// What a session's receiver enforces.
    pub fn receive_limits(&self) -> ReceiveLimits {
        ReceiveLimits {
            max_frame: self.args.max_frame,
            stall: Some(self.args.stall_timeout()),
        }
    }
}

/// One session's share: its request rate, its objects and the bytes its
/// current request holds. A budget without a governor (tests, the fuzz
/// harness) limits nothing.
#[derive(Debug)]
pub struct SessionBudget {
    gov: Option<Arc<Governor>>,
    rate: Bucket,
    objects: usize,
    /// Bytes charged for the request being served (its frame, its reply
    /// buffers); released once the reply is sent.
    held: Arc<AtomicUsize>,
}

impl Default for SessionBudget {
    fn default() -> Self {
        SessionBudget {
            gov: None,
            rate: Bucket::new(u32::MAX),
            objects: 0,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl SessionBudget {
    /// One more request: `Err(EAGAIN)` past the session's or the proxy's rate.
    pub fn admit_request(&mut self) -> Result<(), i32> {
        let Some(gov) = &self.gov else { return Ok(()) };
        if !self.rate.take() {
            return Err(libc::EAGAIN);
        }
        if !gov
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(libc::EAGAIN);
        }
        Ok(())
    }

    /// Whether one more guest object may be created: `EMFILE` at the
    /// session's limit, `ENFILE` at the proxy's.
    pub fn may_create(&self) -> Result<(), i32> {
        let Some(gov) = &self.gov else { return Ok(()) };
        if self.objects >= gov.args.max_objects_per_session {
            return Err(libc::EMFILE);
        }
        if gov.objects.load(Ordering::Acquire) >= gov.args.max_objects {
            return Err(libc::ENFILE);
        }
        Ok(())
    }

    /// The session now holds one more guest object.
    pub fn object_added(&mut self) {
        self.objects += 1;
        if let Some(gov) = &self.gov {
            gov.objects.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The session let go of `n` guest objects.
    pub fn objects_removed(&mut self, n: usize) {
        let n = n.min(self.objects);
        self.objects -= n;
        if let Some(gov) = &self.gov {
            gov.objects.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Charges `bytes` of reply buffers to the current request: `ENOMEM`
    /// past the session's share, `EAGAIN` past the proxy's.
    pub fn reserve(&self, bytes: usize) -> Result<(), i32> {
        let Some(gov) = &self.gov else { return Ok(()) };
        if !try_add(&self.held, bytes, gov.args.max_inflight_per_session) {
            return Err(libc::ENOMEM);
        }
        if !try_add(&gov.inflight, bytes, gov.args.max_inflight) {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return Err(libc::EAGAIN);
        }
        Ok(())
    }

    /// The current request's reply was sent: its bytes are free.
    pub fn release(&self) {
        let n = self.held.swap(0, Ordering::AcqRel);
        if let Some(gov) = &self.gov {
            gov.inflight.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// The gate of the session's receiver: a request frame over 64 KiB is
    /// charged before it is buffered. Past the session's share it is
    /// refused; past the proxy's it waits for room (others' replies going
    /// out) up to the stall timeout.
    pub fn frame_gate(&self) -> Option<FrameGate> {
        let gov = self.gov.clone()?;
        let held = self.held.clone();
        Some(Box::new(move |len| {
            if !try_add(&held, len, gov.args.max_inflight_per_session) {
                return false;
            }
            let deadline = Instant::now() + gov.args.stall_timeout();
            while !try_add(&gov.inflight, len, gov.args.max_inflight) {
                if Instant::now() >= deadline {
                    held.fetch_sub(len, Ordering::AcqRel);
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            true
        }))
    }
}

/// Bytes a session holds beyond its current request, charged to the
/// proxy's bytes in flight until dropped (see [`SessionBudget::hold`]).
#[derive(Debug)]
pub struct Held {
    gov: Option<Arc<Governor>>,
    bytes: usize,
}

impl Held {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(gov) = &self.gov {
            gov.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

impl SessionBudget {
    /// [`SessionBudget::reserve`] with back-pressure: past the proxy's
    /// share it waits for room (others' replies going out) up to the stall
    /// timeout before it answers `EAGAIN`. For replies a client asks for
    /// one after another (a file's ranges), where waiting is better than
    /// failing.
    pub fn reserve_or_wait(&self, bytes: usize) -> Result<(), i32> {
        let Some(gov) = &self.gov else { return Ok(()) };
        let deadline = Instant::now() + gov.args.stall_timeout();
        loop {
            match self.reserve(bytes) {
                Err(libc::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// The most bytes one session may have in flight
    /// (`--max-inflight-per-session`; unlimited without a governor).
    pub fn share(&self) -> usize {
        self.gov
            .as_ref()
            .map_or(usize::MAX, |g| g.args.max_inflight_per_session)
    }

    /// Charges `bytes` that outlive the current request (a snapshot of a
    /// file the client reads range by range) to the proxy's bytes in
    /// flight, until the returned [`Held`] is dropped: `EAGAIN` past the
    /// proxy's limit. The caller keeps such bytes of a session within
    /// [`SessionBudget::share`].
    pub fn hold(&self, bytes: usize) -> Result<Held, i32> {
        let Some(gov) = &self.gov else {
            return Ok(Held { gov: None, bytes });
        };
        if !try_add(&gov.inflight, bytes, gov.args.max_inflight) {
            return Err(libc::EAGAIN);
        }
        Ok(Held {
            gov: Some(gov.clone()),
            bytes,
        })
    }

    /// [`SessionBudget::hold`] with back-pressure: past the proxy's limit
    /// it waits for room up to the stall timeout before it answers
    /// `EAGAIN`.
    pub fn hold_or_wait(&self, bytes: usize) -> Result<Held, i32> {
        let Some(gov) = &self.gov else {
            return self.hold(bytes);
        };
        let deadline = Instant::now() + gov.args.stall_timeout();
        loop {
            match self.hold(bytes) {
                Err(libc::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }
}

impl Drop for SessionBudget {
    fn drop(&mut self) {
        self.release();
        self.objects_removed(self.objects);
    }
}

/// Sets the receive and send timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) of a
/// session's socket: a blocked read returns every `recv` (so the session
/// can look at its idle time and at a stalled frame), a write to a peer
/// that stopped reading fails after `send`.
pub fn set_socket_timeouts(
    fd: std::os::fd::RawFd,
    recv: Duration,
    send: Duration,
) -> std::io::Result<()> {
    for (opt, d) in [(libc::SO_RCVTIMEO, recv), (libc::SO_SNDTIMEO, send)] {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a valid timeval for the duration of the call and
        // the length passed is its size; a bad fd only makes the call fail.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits until the socket `fd` can take more bytes (`POLLOUT`), at most
/// `timeout`; whether it can. A reply that may be large (a file's range)
/// is made only then: a peer that stopped reading leaves its replies in
/// its socket's buffer (the kernel's, bounded by the send buffer), not in
/// the proxy's memory, and its session ends after the stall timeout.
pub fn wait_writable(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            // Writable, or hung up / in error: the send says which.
            return true;
        }
        let interrupted =
            r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        if !interrupted || Instant::now() >= deadline {
            return r < 0 && !interrupted;
        }
    }
}

/// Gives the memory a finished session freed back to the system.
///
/// Each session thread allocates from a glibc arena of its own; what it
/// frees stays in that arena, so after a burst of sessions the proxy's RSS
/// would stay at the burst's size. `malloc_trim` returns the free pages of
/// every arena. It runs once per session end, never per request.
pub fn return_freed_memory() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LimitArgs {
        LimitArgs {
            max_sessions: 2,
            max_objects_per_session: 2,
            max_objects: 3,
            max_inflight_per_session: 100,
            max_inflight: 150,
            max_rate_per_session: 5,
            max_rate: 8,
            stall_timeout_ms: 50,
            ..LimitArgs::default()
        }
    }

    #[test]
    fn defaults_parse() {
        let d = LimitArgs::default();
        assert_eq!(d.max_sessions, 1024);
        assert_eq!(d.max_frame, 16 << 20);
        assert_eq!(d.tick(), Duration::from_secs(1));
    }

    #[test]
    fn connections_are_counted_and_freed() {
        let gov = Governor::new(args());
        let a = gov.admit_connection().unwrap();
        let _b = gov.admit_connection().unwrap();
        assert!(gov.admit_connection().is_none());
        drop(a);
        assert!(gov.admit_connection().is_some());
    }

    #[test]
    fn objects_per_session_and_in_total() {
        let gov = Governor::new(args());
        let mut s1 = gov.session();
        let mut s2 = gov.session();
        s1.object_added();
        s1.object_added();
        assert_eq!(s1.may_create(), Err(libc::EMFILE));
        s2.object_added();
        assert_eq!(s2.may_create(), Err(libc::ENFILE));
        s1.objects_removed(1);
        assert_eq!(s2.may_create(), Ok(()));
        drop(s1);
        assert_eq!(gov.objects.load(Ordering::Acquire), 1);
    }

    #[test]
    fn bytes_in_flight() {
        let gov = Governor::new(args());
        let s1 = gov.session();
        let s2 = gov.session();
        assert_eq!(s1.reserve(101), Err(libc::ENOMEM));
        assert_eq!(s1.reserve(100), Ok(()));
        assert_eq!(s2.reserve(60), Err(libc::EAGAIN));
        let mut gate = s2.frame_gate().unwrap();
        let t0 = Instant::now();
        assert!(!gate(60), "no room within the stall timeout");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        s1.release();
        assert!(gate(60));
        s2.release();
        assert_eq!(gov.inflight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn held_bytes_and_waiting_for_room() {
        let gov = Governor::new(args());
        let s1 = gov.session();
        let s2 = gov.session();
        assert_eq!(s1.share(), 100);
        let held = s1.hold(120).unwrap();
        assert_eq!(held.bytes(), 120);
        assert_eq!(s2.hold(40).unwrap_err(), libc::EAGAIN);
        let t0 = Instant::now();
        assert_eq!(s2.hold_or_wait(40).unwrap_err(), libc::EAGAIN);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // The request's own bytes come and go beside what is held.
        assert_eq!(s1.reserve(20), Ok(()));
        s1.release();
        assert_eq!(gov.inflight.load(Ordering::Acquire), 120);
        // Waiting: no room within the stall timeout, then room.
        let t0 = Instant::now();
        assert_eq!(s2.reserve_or_wait(40), Err(libc::EAGAIN));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        assert_eq!(s2.reserve_or_wait(40), Ok(()));
        freer.join().unwrap();
        assert_eq!(s2.reserve_or_wait(101), Err(libc::ENOMEM));
        s2.release();
        assert_eq!(gov.inflight.load(Ordering::Acquire), 0);
        assert_eq!(SessionBudget::default().share(), usize::MAX);
    }

    #[test]
    fn writable_until_the_peer_stops_reading() {
        use std::os::fd::AsRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(wait_writable(a.as_raw_fd(), Duration::from_millis(10)));
        a.set_nonblocking(true).unwrap();
        let chunk = [0u8; 4096];
        while std::io::Write::write(&mut &a, &chunk).is_ok() {}
        let t0 = Instant::now();
        assert!(!wait_writable(a.as_raw_fd(), Duration::from_millis(50)));
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn request_rate() {
        let gov = Governor::new(args());
        let mut s1 = gov.session();
        let ok = (0..10).filter(|_| s1.admit_request().is_ok()).count();
        assert_eq!(ok, 5, "the session's burst");
        let mut s2 = gov.session();
        let ok = (0..10).filter(|_| s2.admit_request().is_ok()).count();
        assert_eq!(ok, 3, "what is left of the proxy's burst");
    }

    #[test]
    fn no_governor_limits_nothing() {
        let mut b = SessionBudget::default();
        for _ in 0..1000 {
            assert_eq!(b.admit_request(), Ok(()));
            b.object_added();
        }
        assert_eq!(b.may_create(), Ok(()));
        assert_eq!(b.reserve(usize::MAX), Ok(()));
        assert!(b.frame_gate().is_none());
    }
}
