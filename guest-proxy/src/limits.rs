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
//! | sessions (each ring stream connection is one too) | proxy | the connection is closed at `accept`, before a byte is read: the client sees `ECONNREFUSED` (or right after the handshake, if the last place was taken meanwhile) |
//! | handshakes in progress | proxy | the oldest pending handshake whose peer has not yet named a key the proxy holds is closed to admit the new connection (else the oldest of all), see [`crate::handshakes`]; a flood of silent or garbage connections therefore cannot keep a client with a key out |
//! | open guest objects | session | the creating call fails with `EMFILE`, like a full fd table; nothing is created |
//! | open guest objects | proxy | `ENFILE`, like a full system file table |
//! | kernel memory of maps, programs and BTF | session and proxy | `ENOMEM`, before the object exists (estimated from the attr; see [`crate::kmem`]) |
//! | frame size | session | a request frame whose length prefix is larger ends the session (a sealed stream cannot skip a frame it cannot authenticate); nothing is allocated for it |
//! | bytes in flight (request frames over 64 KiB and the buffers a call's reply needs) | session | `ENOMEM` (the kernel's answer to an allocation it will not make) |
//! | bytes in flight | proxy | a request frame waits for room up to the stall timeout, then ends its session; reply buffers fail with `EAGAIN` |
//! | requests per second | session and proxy | `EAGAIN`; `Close` is never refused |
//!
//! **File descriptors.** Every session, handshake and guest object is an fd
//! of the proxy, and `RLIMIT_NOFILE` bounds them all: at 1024, a client
//! holding 1000 BTF fds used to leave the proxy unable to `accept`. So at
//! start the proxy raises its soft limit to the hard one and fits the caps
//! to it ([`LimitArgs::fit_to_fds`]): it keeps [`RESERVED_FDS`] for itself
//! (standard fds, the listener, the audit log, the runtime's and the
//! hang-up watcher's epoll and eventfds, the fd standing for host objects,
//! up to 16 loaded collectors with their maps and programs, and files opened
//! briefly to answer requests); of the rest, handshakes may take a
//! sixteenth (one fd each), sessions with handshakes half (each session or
//! stream connection [`FDS_PER_CONNECTION`]: its socket, the registry's
//! handle, the hang-up watch's duplicate, a stream's duplicate of its ring
//! and its stop eventfd, or a file being answered), and guest objects what
//! is left, one session at most half of that. A flag may ask for less,
//! never for more: a larger value is lowered, with one line at start naming
//! what was lowered. (Refusing to start would make a configuration that
//! works on one machine fail on a smaller one; the lowered proxy serves
//! safely and says so.) An `accept` that fails all the same (`EMFILE`,
//! `ENFILE`) closes the oldest unanswered handshake and waits before the
//! next try, from 10 ms doubling to 1 s, instead of failing again at once;
//! repeated log lines are throttled ([`crate::throttle`]).
//!
//! Timeouts:
//!
//! * handshake: a connection must finish the handshake within it (never
//!   longer than the idle timeout: a peer without a key may not hold a
//!   place longer than an idle client with one);
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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use telebpf_protocol::channel::{FrameGate, ReceiveLimits};
use telebpf_protocol::message::BpfCall;

use crate::bpf_exec::Outcome;
use crate::kernel::Kernel;
use crate::kmem::{self, Class, KernelCensus, Ledger};

/// The limits, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most sessions at once (each ring stream connection is one too);
    /// more are closed at accept. Lowered to what the fd limit allows.
    #[arg(long, default_value_t = 1024)]
    pub max_sessions: usize,
    /// Most connections at once that have not finished the handshake; a
    /// new one past it closes the oldest that has not named a key of this
    /// proxy. Lowered to what the fd limit allows.
    #[arg(long, default_value_t = 64)]
    pub max_handshakes: usize,
    /// Most guest objects (fds) one session may hold (EMFILE beyond).
    /// Lowered to what the fd limit allows.
    #[arg(long, default_value_t = 4096)]
    pub max_objects_per_session: usize,
    /// Most guest objects all sessions together may hold (ENFILE beyond).
    /// Lowered to what the fd limit allows.
    #[arg(long, default_value_t = 65536)]
    pub max_objects: usize,
    /// Kernel memory, in bytes, of the maps, programs and BTF objects one
    /// session creates (ENOMEM beyond, before the object exists). Default:
    /// an eighth of the machine's memory (or of the proxy's cgroup limit):
    /// in a 1 GiB guest 128 MiB, which execsnoop's 80 MB of maps fit.
    #[arg(long, value_name = "BYTES")]
    pub max_map_memory_per_session: Option<u64>,
    /// The same for all sessions together, counting objects that outlived
    /// their session. Default: a quarter of the machine's memory.
    #[arg(long, value_name = "BYTES")]
    pub max_map_memory: Option<u64>,
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
    /// Time limit of the handshake, in milliseconds (at most the idle
    /// timeout).
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

/// fds the proxy keeps for its own use whatever clients do: the standard
/// fds, listener, audit log, runtime, hang-up watcher, the fd standing for
/// host objects and files opened briefly (64), and up to 16 loaded
/// collectors with their programs, maps and BTF (128; ours hold 4 to 6).
pub const RESERVED_FDS: u64 = 192;

/// fds one session or ring stream connection holds beyond its guest
/// objects: the socket, the registry's handle, the hang-up watch's
/// duplicate, and a stream's duplicate of its ring and its stop eventfd
/// (a request session instead briefly opens a file it answers).
pub const FDS_PER_CONNECTION: u64 = 5;

/// The caps that follow from the fd limit ([`LimitArgs::fit_to_fds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPlan {
    /// The soft `RLIMIT_NOFILE` they were fitted to.
    pub nofile: u64,
    /// What was lowered, as `--flag ASKED → ALLOWED`.
    pub lowered: Vec<String>,
}

/// The kernel-memory budgets: `(per session, in all)`, in bytes.
pub type MapMemory = (u64, u64);

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
    /// Lowers the caps to what an fd limit of `nofile` allows (see the
    /// module doc) and the handshake timeout to the idle timeout; says what
    /// was lowered.
    pub fn fit_to_fds(&mut self, nofile: u64) -> FdPlan {
        let avail = nofile.saturating_sub(RESERVED_FDS);
        let mut lowered = Vec::new();
        let mut cap = |flag: &str, value: &mut usize, allowed: u64| {
            let allowed = usize::try_from(allowed.max(1)).unwrap_or(usize::MAX);
            if *value > allowed {
                lowered.push(format!("{flag} {value} → {allowed}"));
                *value = allowed;
            }
        };
        cap("--max-handshakes", &mut self.max_handshakes, avail / 16);
        let handshakes = self.max_handshakes as u64;
        cap(
            "--max-sessions",
            &mut self.max_sessions,
            (avail / 2).saturating_sub(handshakes) / FDS_PER_CONNECTION,
        );
        let objects = avail
            .saturating_sub(handshakes)
            .saturating_sub(self.max_sessions as u64 * FDS_PER_CONNECTION)
            .max(1);
        cap("--max-objects", &mut self.max_objects, objects);
        cap(
            "--max-objects-per-session",
            &mut self.max_objects_per_session,
            objects / 2,
        );
        if self.handshake_timeout_ms > self.idle_timeout_ms {
            lowered.push(format!(
                "--handshake-timeout-ms {} → {} (the idle timeout)",
                self.handshake_timeout_ms, self.idle_timeout_ms
            ));
            self.handshake_timeout_ms = self.idle_timeout_ms;
        }
        FdPlan { nofile, lowered }
    }

    /// The kernel-memory budgets for a machine with `memory` bytes: the
    /// flags, or an eighth per session and a quarter in all.
    pub fn map_memory(&self, memory: u64) -> MapMemory {
        (
            self.max_map_memory_per_session.unwrap_or(memory / 8),
            self.max_map_memory.unwrap_or(memory / 4),
        )
    }

    /// The handshake time limit (never longer than the idle timeout).
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.min(self.idle_timeout_ms))
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
    /// The kernel-memory charges of every session.
    kernel_memory: Arc<Ledger>,
    /// The kernel the sessions' objects live in.
    kernel: Arc<dyn Kernel>,
    /// The last session budget's token (its owner id in the ledger).
    budgets: AtomicU64,
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
    /// Counters at zero for `args`, for objects in `kernel`; unset
    /// kernel-memory budgets derive from the machine's memory
    /// ([`LimitArgs::map_memory`]).
    pub fn new(args: LimitArgs, kernel: Arc<dyn Kernel>) -> Arc<Governor> {
        let (per_session, total) =
            if args.max_map_memory_per_session.is_some() && args.max_map_memory.is_some() {
                args.map_memory(0)
            } else {
                args.map_memory(crate::sys::memory_limit())
            };
        Arc::new(Governor {
            rate: Mutex::new(Bucket::new(args.max_rate)),
            args,
            connections: AtomicUsize::new(0),
            objects: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            kernel_memory: Arc::new(Ledger::new(
                per_session,
                total,
                Box::new(KernelCensus(kernel.clone())),
            )),
            kernel,
            budgets: AtomicU64::new(0),
        })
    }

    /// A place for a new session, or `None` at `--max-sessions`.
    pub fn admit_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        try_add(&self.connections, 1, self.args.max_sessions).then(|| ConnectionSlot(self.clone()))
    }

    /// Sessions holding a place now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Whether every session place is taken.
    pub fn sessions_full(&self) -> bool {
        self.connections() >= self.args.max_sessions
    }

    /// The kernel-memory budgets in force: `(per session, in all)`.
    pub fn map_memory(&self) -> MapMemory {
        self.kernel_memory.budgets()
    }

    /// The accounting of one new session.
    pub fn session(self: &Arc<Self>) -> SessionBudget {
        SessionBudget {
            gov: Some(self.clone()),
            rate: Bucket::new(self.args.max_rate_per_session),
            objects: 0,
            held: Arc::new(AtomicUsize::new(0)),
            owner: self.budgets.fetch_add(1, Ordering::AcqRel) + 1,
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
    /// This budget's owner id in the kernel-memory ledger.
    owner: u64,
}

impl Default for SessionBudget {
    fn default() -> Self {
        SessionBudget {
            gov: None,
            rate: Bucket::new(u32::MAX),
            objects: 0,
            held: Arc::new(AtomicUsize::new(0)),
            owner: 0,
        }
    }
}

/// Kernel memory reserved for a call that creates an object
/// ([`SessionBudget::reserve_kernel_memory`]); returned to the budget when
/// dropped unless [`KernelCharge::settle`] turned it into a charge.
#[derive(Debug)]
pub struct KernelCharge {
    ledger: Arc<Ledger>,
    kernel: Arc<dyn Kernel>,
    owner: u64,
    class: Class,
    bytes: u64,
    settled: bool,
}

impl KernelCharge {
    /// Settles the reservation with the call's outcome: a new object
    /// becomes a charge of the larger of the estimate and the kernel's own
    /// figure; if that does not fit the budget, the object is closed and
    /// the outcome turned into `ENOMEM`. A failed call frees the bytes.
    pub fn settle(mut self, call: &BpfCall, outcome: &mut Outcome) {
        let Some(fd) = outcome.new_fd else { return };
        self.settled = true;
        let id = object_id(&*self.kernel, self.class, fd);
        let actual = self.kernel.fdinfo_memlock(fd).unwrap_or(0);
        if let Err(errno) = self
            .ledger
            .settle(self.owner, self.bytes, self.class, id, actual)
        {
            self.kernel.close(fd);
            outcome.new_fd = None;
            outcome.result = crate::bpf_exec::failed_call(call, errno);
        }
    }
}

impl Drop for KernelCharge {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.cancel(self.owner, self.bytes);
        }
    }
}

/// Kernel memory the proxy itself makes the kernel allocate while
/// something it holds lives — the ring buffer of a perf event it maps for a
/// stream ([`SessionBudget::hold_kernel_memory`]): reserved in the
/// session's and the proxy's kernel-memory budgets, and free again when
/// this is dropped (the mapping with it).
#[derive(Debug)]
pub struct HeldKernelMemory {
    ledger: Arc<Ledger>,
    owner: u64,
    bytes: u64,
}

impl Drop for HeldKernelMemory {
    fn drop(&mut self) {
        self.ledger.cancel(self.owner, self.bytes);
    }
}

/// The id of a new map, program or BTF object (0 if the kernel will not
/// say: such a charge is released at the first sweep).
fn object_id(kernel: &dyn Kernel, class: Class, fd: i32) -> u32 {
    // Only the leading fields: no pointer field of the info struct is
    // inside these lengths.
    let (len, at) = match class {
        Class::Map | Class::Prog => (8, 4),
        Class::Btf => (16, 12),
    };
    let mut info = [0u8; 16];
    match kernel.object_info(fd, &mut info[..len]) {
        Ok(_) => u32::from_le_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]),
        Err(_) => 0,
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

    /// Reserves the kernel memory `call` will make the kernel allocate, if
    /// it creates a map, a program or a BTF object: `ENOMEM` past the
    /// session's or the proxy's budget (see [`crate::kmem`]); the charge is
    /// settled with the call's outcome.
    pub fn reserve_kernel_memory(
        &self,
        call: &BpfCall,
        possible_cpus: u32,
    ) -> Result<Option<KernelCharge>, i32> {
        let Some(gov) = &self.gov else {
            return Ok(None);
        };
        let Some((class, bytes)) = kmem::estimate(call.cmd, &call.attr, possible_cpus) else {
            return Ok(None);
        };
        gov.kernel_memory.reserve(self.owner, bytes)?;
        Ok(Some(KernelCharge {
            ledger: gov.kernel_memory.clone(),
            kernel: gov.kernel.clone(),
            owner: self.owner,
            class,
            bytes,
            settled: false,
        }))
    }

    /// Reserves `bytes` of kernel memory for as long as the returned value
    /// lives (a perf ring buffer the proxy maps for a stream: the kernel
    /// allocates it at the first `mmap`, charging no one, since the proxy
    /// is root): `ENOMEM` past the session's or the proxy's budget.
    pub fn hold_kernel_memory(&self, bytes: u64) -> Result<Option<HeldKernelMemory>, i32> {
        let Some(gov) = &self.gov else {
            return Ok(None);
        };
        gov.kernel_memory.reserve(self.owner, bytes)?;
        Ok(Some(HeldKernelMemory {
            ledger: gov.kernel_memory.clone(),
            owner: self.owner,
            bytes,
        }))
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
        if let Some(gov) = &self.gov {
            // Its objects may outlive it (pins, other holders): their
            // charges stay until the kernel frees them.
            gov.kernel_memory.orphan(self.owner);
        }
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
    use crate::testing::FakeKernel;

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
            max_map_memory_per_session: Some(1 << 20),
            max_map_memory: Some(2 << 20),
            ..LimitArgs::default()
        }
    }

    #[test]
    fn caps_fit_the_fd_limit() {
        // A service's 1024: the defaults are lowered, with room to spare.
        let mut a = LimitArgs::default();
        let plan = a.fit_to_fds(1024);
        assert_eq!(
            (
                a.max_handshakes,
                a.max_sessions,
                a.max_objects,
                a.max_objects_per_session
            ),
            (52, 72, 420, 210)
        );
        assert_eq!(plan.lowered.len(), 4, "{:?}", plan.lowered);
        assert!(plan.lowered[0].starts_with("--max-handshakes 64 → 52"));
        let used = RESERVED_FDS
            + a.max_handshakes as u64
            + a.max_sessions as u64 * FDS_PER_CONNECTION
            + a.max_objects as u64;
        assert!(used <= 1024, "{used}");
        // A large limit leaves the defaults alone but for the objects.
        let mut a = LimitArgs::default();
        let plan = a.fit_to_fds(20_000);
        assert_eq!((a.max_sessions, a.max_handshakes), (1024, 64));
        assert_eq!(a.max_objects_per_session, 4096);
        assert_eq!(a.max_objects, 20_000 - 192 - 64 - 5 * 1024);
        assert_eq!(plan.lowered.len(), 1);
        let mut a = LimitArgs::default();
        assert!(a.fit_to_fds(1 << 20).lowered.is_empty());
        // Smaller flags stay; a tiny limit still leaves one of each.
        let mut a = LimitArgs {
            max_objects_per_session: 8,
            ..LimitArgs::default()
        };
        a.fit_to_fds(1024);
        assert_eq!(a.max_objects_per_session, 8);
        let mut a = LimitArgs::default();
        a.fit_to_fds(10);
        assert_eq!((a.max_sessions, a.max_objects, a.max_handshakes), (1, 1, 1));
    }

    #[test]
    fn the_handshake_never_outlasts_the_idle_timeout() {
        let mut a = LimitArgs {
            idle_timeout_ms: 1000,
            ..LimitArgs::default()
        };
        assert_eq!(a.handshake_timeout(), Duration::from_secs(1));
        let plan = a.fit_to_fds(1 << 20);
        assert_eq!(plan.lowered.len(), 1, "{:?}", plan.lowered);
        assert_eq!(a.handshake_timeout_ms, 1000);
    }

    #[test]
    fn map_memory_defaults_derive_from_the_machine() {
        let a = LimitArgs::default();
        assert_eq!(a.map_memory(16 << 30), (2 << 30, 4 << 30));
        let a = LimitArgs {
            max_map_memory: Some(100),
            ..LimitArgs::default()
        };
        assert_eq!(a.map_memory(1 << 30), ((1 << 30) / 8, 100));
    }

    #[test]
    fn kernel_memory_is_reserved_per_session_and_in_all() {
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
        let s1 = gov.session();
        let s2 = gov.session();
        let create = |entries: u32| {
            let mut attr = vec![0u8; 72];
            attr[0..4].copy_from_slice(&telebpf_abi::map_type::BPF_MAP_TYPE_ARRAY.to_le_bytes());
            attr[8..12].copy_from_slice(&1024u32.to_le_bytes());
            attr[12..16].copy_from_slice(&entries.to_le_bytes());
            BpfCall {
                cmd: telebpf_abi::cmd::BPF_MAP_CREATE,
                size: 72,
                attr,
                common: None,
                common_size: 0,
                buffers: Vec::new(),
            }
        };
        // 600 KiB each: one fits a session's MiB, two do not; the third
        // session-worth passes the proxy's 2 MiB.
        let c1 = s1.reserve_kernel_memory(&create(600), 2).unwrap();
        assert!(c1.is_some());
        assert_eq!(
            s1.reserve_kernel_memory(&create(600), 2).err(),
            Some(libc::ENOMEM)
        );
        let c2 = s2.reserve_kernel_memory(&create(600), 2).unwrap();
        let s3 = gov.session();
        let c3 = s3.reserve_kernel_memory(&create(600), 2).unwrap();
        assert_eq!(
            gov.session().reserve_kernel_memory(&create(600), 2).err(),
            Some(libc::ENOMEM)
        );
        // Calls that failed (dropped reservations) give their bytes back.
        drop((c1, c2, c3));
        assert_eq!(gov.kernel_memory.used(), 0);
        // Calls that create nothing are not charged.
        let mut lookup = create(1);
        lookup.cmd = telebpf_abi::cmd::BPF_MAP_LOOKUP_ELEM;
        assert!(s1.reserve_kernel_memory(&lookup, 2).unwrap().is_none());
        assert!(SessionBudget::default()
            .reserve_kernel_memory(&create(u32::MAX), 2)
            .unwrap()
            .is_none());
    }

    #[test]
    fn defaults_parse() {
        let d = LimitArgs::default();
        assert_eq!(d.max_sessions, 1024);
        assert_eq!(d.max_handshakes, 64);
        assert_eq!(d.max_map_memory, None);
        assert_eq!(d.max_frame, 16 << 20);
        assert_eq!(d.tick(), Duration::from_secs(1));
    }

    #[test]
    fn connections_are_counted_and_freed() {
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
        let a = gov.admit_connection().unwrap();
        let _b = gov.admit_connection().unwrap();
        assert!(gov.admit_connection().is_none());
        drop(a);
        assert!(gov.admit_connection().is_some());
    }

    #[test]
    fn objects_per_session_and_in_total() {
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
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
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
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
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
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
        let gov = Governor::new(args(), Arc::new(FakeKernel::default()));
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
