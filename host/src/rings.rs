//! Mirrored rings: guest ring buffers and perf buffers as host memory with
//! the kernel's layout, and user ring buffers the other way round.
//!
//! * A **perf event** (per-CPU BPF output ring) or a **ring-buffer map**:
//!   the host program gets memory laid out exactly as the kernel's (see the
//!   `ringbuf-mirror` crate). A stream connection of its own, bound to this
//!   process's session, carries the records the proxy consumes from the
//!   guest ring as they are produced (the proxy waits on the guest ring's
//!   wake-ups: no polling period). A mirror thread writes them into the host
//!   ring and keeps the object's fd readable exactly while records are
//!   unconsumed, so the program's unmodified `epoll_wait` wakes for them.
//!   After a frame, the proxy's loop and the mirror thread both look for
//!   more for a moment before they sleep ([`mirror_spin`]): a record that
//!   follows closely then costs the program one wake-up, as a local one.
//! * A **user ring buffer map**: the other way round. The host program
//!   produces into host memory with the kernel's layout; a mirror thread
//!   looks at it (libbpf's `submit` makes no syscall), takes committed
//!   records and sends them on the stream connection, and the proxy
//!   produces them into the guest ring for `bpf_user_ringbuf_drain`.
//!
//! Before a mirror makes records visible it brings the writable map
//! mappings up to date ([`mapsync::refresh_maps`]).
//!
//! When the proxy is lost ([`crate::lost`]) every mirrored ring's fd is
//! made ready and stays so, and its stream is shut down: a program asleep
//! on a ring wakes, finds nothing, and its next wait fails (see the wait
//! hooks). A stream that ends while the
//! program still holds its ring makes the program blind to that ring: the
//! mirror reports it ([`state::State::stream_ended`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use libc::{c_int, c_void, size_t};
use ringbuf_mirror::guest::Contention;
use ringbuf_mirror::{HostPerfRing, HostRingbuf, HostUserRing, Push, RingFile, UserRingReader};
use telebpf_abi::map_type::BPF_MAP_TYPE_USER_RINGBUF;
use telebpf_abi::ObjectKind;
use telebpf_client::{Connection, Settings};
use telebpf_protocol::message::{Reply, Request, StreamKind, StreamRequest};

use crate::error::{Error, Result};
use crate::fdtable::{GuestObject, MirroredRing, Signal};
use crate::{lost, mapsync, state};

/// How long the mirror keeps looking for the stream's next frame after one
/// came, before it sleeps in `poll`: the host half of the proxy's
/// [`ringbuf_mirror::guest::STREAM_SPIN`] (see there why, and what it
/// costs), set by the same `TELEBPF_RING_SPIN_US`. A record that follows
/// within it crosses the socket without waking this thread; an idle ring's
/// mirror sleeps from then on.
fn mirror_spin() -> Duration {
    ringbuf_mirror::guest::ring_spin()
}

/// How often an idle mirror re-checks whether the program consumed
/// everything (to make the fd unreadable again). Only while data is pending.
const CONSUMED_CHECK: Duration = Duration::from_millis(1);

/// The host side of one mirrored ring, kept with its guest object so that
/// later `mmap`s of the same ring (libbpf maps a ring buffer twice) share it.
#[derive(Clone)]
pub enum Ring {
    /// A BPF ring buffer map.
    Bpf(Arc<HostRingbuf>),
    /// A perf event's ring.
    Perf(Arc<HostPerfRing>),
    /// A user ring buffer map (produced by the host program).
    User(Arc<HostUserRing>),
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ring::Bpf(_) => "Ring::Bpf",
            Ring::Perf(_) => "Ring::Perf",
            Ring::User(_) => "Ring::User",
        })
    }
}

impl MirroredRing for Ring {
    fn map_for(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<*mut c_void, i32> {
        match self {
            Ring::Bpf(r) => r.map_for(addr, len, prot, flags, offset),
            Ring::Perf(r) => r.map_for(addr, len, prot, flags, offset),
            Ring::User(r) => r.map_for(addr, len, prot, flags, offset),
        }
    }

    fn file_for(&self, len: usize, prot: i32, flags: i32, offset: i64) -> Result<OwnedFd, i32> {
        let null = std::ptr::null_mut();
        let memfd = match self {
            Ring::Bpf(r) => r
                .check_mmap(null, len, prot, flags, offset)
                .map(|()| r.memfd()),
            Ring::Perf(r) => r
                .check_mmap(null, len, prot, flags, offset)
                .map(|()| r.memfd()),
            Ring::User(r) => r
                .check_mmap(null, len, prot, flags, offset)
                .map(|()| r.memfd()),
        }?;
        memfd
            .try_clone_to_owned()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE))
    }
}

impl Ring {
    fn pending(&self) -> bool {
        match self {
            Ring::Bpf(r) => r.pending(),
            Ring::Perf(r) => r.pending(),
            // Its readiness is for space (see `run_user_mirror`).
            Ring::User(_) => false,
        }
    }
}

/// `mmap` of a ring's fd (a ring-buffer or user ring buffer map, a perf
/// event): the host ring, made and mirrored on the first `mmap`, kept with
/// the object for the later ones.
pub fn ring_mmap(
    obj: &Arc<GuestObject>,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<*mut c_void> {
    let mut slot = obj.ring.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(Arc::new(start_ring(obj, len, offset)?));
    }
    slot.as_ref()
        .expect("just set")
        .map_for(addr, len, prot, flags, offset)
        .map_err(|e| Error::kernel(e, "a mapping of a ring the kernel would refuse"))
}

/// For a program that maps the ring's file itself (a supervisor's): the
/// ring, made and mirrored on first use like [`ring_mmap`]'s, the kernel's
/// verdict on the mapping, and a duplicate of the ring's memfd to map.
pub fn ring_file(
    obj: &Arc<GuestObject>,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<OwnedFd> {
    let mut slot = obj.ring.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(Arc::new(start_ring(obj, len, offset)?));
    }
    slot.as_ref()
        .expect("just set")
        .file_for(len, prot, flags, offset)
        .map_err(|e| Error::kernel(e, "a mapping of a ring the kernel would refuse"))
}

/// The host ring for `obj` (sized from the map, or for a perf event from the
/// first `mmap`'s length), with its stream connection to the proxy open and
/// its mirror thread running. A program that maps the ring's file itself
/// (not this process) gets a linear ring (see
/// [`ringbuf_mirror::HostRingbuf::new_linear`]).
fn start_ring(obj: &Arc<GuestObject>, len: size_t, offset: i64) -> Result<Ring> {
    let linear = !state::get().program().is_own_process();
    let no_mem = |e: std::io::Error| Error::os("making a host ring", e, libc::ENOMEM);
    let (ring, kind) = match &obj.kind {
        ObjectKind::Map(m) if m.map_type == BPF_MAP_TYPE_USER_RINGBUF => (
            Ring::User(Arc::new(
                if linear {
                    HostUserRing::new_linear(m.max_entries)
                } else {
                    HostUserRing::new(m.max_entries)
                }
                .map_err(no_mem)?,
            )),
            StreamKind::UserRingbuf {
                max_entries: m.max_entries,
            },
        ),
        ObjectKind::Map(m) => (
            Ring::Bpf(Arc::new(
                if linear {
                    HostRingbuf::new_linear(m.max_entries)
                } else {
                    HostRingbuf::new(m.max_entries)
                }
                .map_err(no_mem)?,
            )),
            StreamKind::Ringbuf {
                max_entries: m.max_entries,
            },
        ),
        _ => {
            let page = ringbuf_mirror::page_size();
            if offset != 0
                || len < 2 * page
                || !len.is_multiple_of(page)
                || !(len / page - 1).is_power_of_two()
            {
                return Err(Error::kernel(
                    libc::EINVAL,
                    "a perf ring mapping that is not 1 + 2^n pages at offset 0",
                ));
            }
            let pages = len / page - 1;
            (
                Ring::Perf(Arc::new(HostPerfRing::new(pages, 0).map_err(no_mem)?)),
                StreamKind::Perf {
                    pages: pages as u32,
                },
            )
        }
    };
    let (conn, signal) = open_stream(obj, kind)?;
    ANY_MIRROR.store(true, Ordering::Relaxed);
    lost::on_declare(wake_all);
    let busy = || Error::kernel(libc::EBUSY, "a ring whose mirror is taken");
    let owner = Arc::downgrade(obj);
    match &ring {
        Ring::User(r) => {
            let reader = r.take_reader().ok_or_else(busy)?;
            state::spawn("telebpf-usermirror", move || {
                run_user_mirror(conn, reader, signal, owner)
            })?;
        }
        Ring::Bpf(r) => {
            let writer = Writer::Bpf(r.take_writer().ok_or_else(busy)?);
            let ring = ring.clone();
            state::spawn("telebpf-mirror", move || {
                run_mirror(conn, writer, ring, signal, owner)
            })?;
        }
        Ring::Perf(r) => {
            let writer = Writer::Perf(r.take_writer().ok_or_else(busy)?);
            let ring = ring.clone();
            state::spawn("telebpf-mirror", move || {
                run_mirror(conn, writer, ring, signal, owner)
            })?;
        }
    }
    Ok(ring)
}

/// Whether this process lost its proxy (the cheap test first).
fn is_lost() -> bool {
    lost::suspected() && lost::errno().is_some()
}

/// Run when the proxy is declared lost: makes every mirrored ring's fd
/// ready, so that a program asleep on it wakes (and fails its next wait),
/// and shuts its stream down, so its mirror thread ends. Readiness is not
/// lowered again from then on (see [`Readiness::lower_if_consumed`]).
fn wake_all() {
    let live: Vec<Arc<Readiness>> = MIRRORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .chain(
            ENDED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        )
        .collect();
    for r in live {
        r.raised.store(true, Ordering::Release);
        // SAFETY: writing one byte from a constant to our pipe.
        unsafe { libc::write(r.signal.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if let Some(stream) = &r.stream {
            // SAFETY: shutdown(2) of our own duplicate of the stream
            // socket; its mirror thread's read then ends.
            unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Opens `obj`'s stream connection to the proxy (bound to this process's
/// session) and duplicates the ends of its readiness pipe for the mirror.
fn open_stream(obj: &GuestObject, kind: StreamKind) -> Result<(Connection, Signal)> {
    let st = state::get();
    let session = st.session_token()?;
    let settings = Settings::from_env()?;
    let mut conn = Connection::open(&settings).inspect_err(|e| st.warn(&e.to_string()))?;
    let user = matches!(kind, StreamKind::UserRingbuf { .. });
    conn.notify(&Request::Stream(StreamRequest {
        session,
        fd: obj.guest_fd,
        kind,
    }))?;
    // The proxy's first frame says it mapped the guest ring (or why not):
    // a perf event nobody mapped drops what the program's BPF code outputs,
    // so the program must not go on, enable and trigger events, before it.
    // The frame stays for the mirror thread to read. A user ring buffer's
    // records go the other way, from the program: the proxy sends nothing
    // first, and nothing of the guest's can be lost meanwhile.
    if !user && !readable_within(conn.raw_fd(), settings.connect_timeout) {
        st.warn(&format!(
            "the proxy did not start streaming a ring within {:?}: \
             what the program's BPF code outputs before it does may be lost",
            settings.connect_timeout
        ));
    }
    let signal = obj
        .signal
        .as_ref()
        .ok_or(Error::kernel(
            libc::ENODEV,
            "a ring without a readiness pipe",
        ))?
        .try_clone()?;
    Ok((conn, signal))
}

/// After records were forwarded, the mirror keeps looking without sleeping
/// long for this long (a producer in a burst); then it sleeps
/// [`USER_IDLE_SLEEP`] between looks. There is no syscall in libbpf's
/// `user_ring_buffer__submit` to wake us.
const USER_BUSY_WINDOW: Duration = Duration::from_millis(2);
/// Sleep between looks while the program submits nothing.
const USER_IDLE_SLEEP: Duration = Duration::from_millis(1);
/// Record bytes per [`Request::Records`] frame.
const USER_FRAME_BYTES: usize = 64 << 10;

/// Forwards what the host program submits to a user ring buffer until the
/// map's last host fd is closed or the stream ends. The program's fd (the
/// write end of the object's pipe) reports `EPOLLOUT` exactly while the
/// host ring has space, as `ringbuf_map_poll_user` does: the pipe is filled
/// while the ring is full, emptied again once records were taken.
fn run_user_mirror(
    mut conn: Connection,
    mut reader: UserRingReader,
    signal: Signal,
    obj: Weak<GuestObject>,
) {
    let mut full = false;
    let mut last_activity = std::time::Instant::now();
    loop {
        let records = reader.take();
        if !records.is_empty() {
            let mut frame = Vec::new();
            let mut bytes = 0;
            for r in records {
                bytes += r.len() + 8;
                frame.push(r);
                if bytes >= USER_FRAME_BYTES {
                    if conn
                        .notify(&Request::Records(std::mem::take(&mut frame)))
                        .is_err()
                    {
                        return;
                    }
                    bytes = 0;
                }
            }
            if !frame.is_empty() && conn.notify(&Request::Records(frame)).is_err() {
                return;
            }
            last_activity = std::time::Instant::now();
        }
        let space = reader.ring().has_space();
        if space && full {
            drain_pipe(&signal);
            full = false;
        } else if !space && !full {
            fill_pipe(&signal);
            full = true;
        }
        if obj.strong_count() == 0 {
            return;
        }
        if is_lost() {
            // Nothing will reach the guest any more: let a program waiting
            // for space wake (its next wait fails).
            drain_pipe(&signal);
            return;
        }
        // A record reserved but not yet submitted is about to come: look
        // again soon, as after activity.
        if reader.ring().pending() || last_activity.elapsed() < USER_BUSY_WINDOW {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            std::thread::sleep(USER_IDLE_SLEEP);
        }
    }
}

/// Fills the object's pipe so its write end (the program's fd) stops
/// reporting `EPOLLOUT`.
fn fill_pipe(signal: &Signal) {
    let chunk = [0u8; 4096];
    // SAFETY: non-blocking writes from a local buffer to our pipe end; the
    // pipe's write end is non-blocking (see `bpf::signal_pipe`).
    while unsafe { libc::write(signal.write.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) } > 0 {
    }
}

/// Empties the object's pipe: its read end (the program's fd for a ring it
/// consumes) stops being readable, its write end (the program's fd for a
/// user ring) reports `EPOLLOUT` again.
fn drain_pipe(signal: &Signal) {
    let mut buf = [0u8; 4096];
    // SAFETY: non-blocking reads into a local buffer from our pipe end.
    while unsafe { libc::read(signal.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

enum Writer {
    Bpf(ringbuf_mirror::RingWriter),
    Perf(ringbuf_mirror::PerfWriter),
}

/// The readiness of one mirrored ring's fd, shared by its mirror thread
/// (which raises it when it pushes records) and the program's own waits
/// (which lower it once everything is consumed, see [`before_wait`]).
///
/// Readiness is one byte in the fd's pipe. Lowering drains the pipe, clears
/// `raised`, then looks at the ring again and re-raises if records arrived
/// meanwhile; raising swaps `raised` and writes only if it was clear. So a
/// push can never be lost between the two: either the lowering side sees
/// the new records, or the pushing side sees `raised` cleared.
struct Readiness {
    ring: Ring,
    signal: Signal,
    raised: AtomicBool,
    /// A duplicate of the stream socket, to shut it down when the proxy is
    /// lost (see [`wake_all`]).
    stream: Option<OwnedFd>,
}

impl Readiness {
    fn raise(&self) {
        // The records were pushed (a store of the ring's head) before this
        // looks at `raised`; `lower_if_consumed` stores `raised` before it
        // looks at the head. Store then load on both sides is Dekker's
        // pattern: without a SeqCst fence on each side both loads may see
        // the old values (x86 lets a load pass an earlier store), the push
        // then writes no byte and the lowering drops its readiness: a
        // record would sit unseen until the next one.
        std::sync::atomic::fence(Ordering::SeqCst);
        // AcqRel: pairs with the store in `lower`, so a cleared flag is
        // never overwritten without its byte.
        if !self.raised.swap(true, Ordering::AcqRel) {
            // SAFETY: writing one byte from a constant to our pipe.
            unsafe { libc::write(self.signal.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    /// Lowers readiness if the program consumed everything — never once
    /// the proxy is lost: the fd stays ready so that no wait sleeps on it.
    fn lower_if_consumed(&self) {
        if !self.raised.load(Ordering::Acquire) || self.ring.pending() || is_lost() {
            return;
        }
        drain_pipe(&self.signal);
        self.raised.store(false, Ordering::Release);
        // The other half of the fence in `raise`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.ring.pending() {
            self.raise();
        }
    }
}

/// Live mirrors of this process, for [`before_wait`].
static MIRRORS: Mutex<Vec<Weak<Readiness>>> = Mutex::new(Vec::new());
/// Readiness of rings whose stream ended (the proxy or the session went
/// away). Nothing will arrive any more, but the program may still consume
/// what did and then wait: the wait hooks must still lower readiness, or
/// the program's `epoll_wait` would return at once forever and spin.
static ENDED: Mutex<Vec<Arc<Readiness>>> = Mutex::new(Vec::new());
/// Whether any mirror was ever started (the cheap test in the wait hooks).
static ANY_MIRROR: AtomicBool = AtomicBool::new(false);

/// Called by the interposed `epoll_wait`/`epoll_pwait`/`poll` before they
/// block: a program waits once it has consumed what it wanted, so this is
/// where readiness of fully consumed rings is lowered — the next wait then
/// sleeps until the mirror pushes, instead of returning at once.
pub fn before_wait() {
    if !ANY_MIRROR.load(Ordering::Relaxed) {
        return;
    }
    let mut mirrors = MIRRORS.lock().unwrap_or_else(|p| p.into_inner());
    mirrors.retain(|m| match m.upgrade() {
        Some(r) => {
            r.lower_if_consumed();
            true
        }
        None => false,
    });
}

/// Whether any mirror exists (hooks skip the guard entirely otherwise).
pub fn any() -> bool {
    ANY_MIRROR.load(Ordering::Relaxed)
}

/// How long the mirror waits for the program to make room before it
/// counts a record as lost. The proxy already freed the guest ring, so
/// waiting here delays only this stream, never the guest; the kernel would
/// have woken the consumer between the records of a burst, which a batch
/// arriving at once does not allow.
const ROOM_WAIT: Duration = Duration::from_millis(200);

/// Writes one record, waiting up to [`ROOM_WAIT`] for the consumer when the
/// host ring is full. A record still not fitting is lost and counted
/// (perf: reported as `PERF_RECORD_LOST`, as the kernel does).
fn push_waiting(writer: &mut Writer, ready: &Readiness, record: &[u8]) {
    if !fits(writer, record.len()) {
        let deadline = std::time::Instant::now() + ROOM_WAIT;
        ready.raise();
        while !fits(writer, record.len()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    // Full here is a real loss, counted by the writer.
    let _: Push = match writer {
        Writer::Perf(w) => w.push_sample(record),
        Writer::Bpf(w) => w.push(record),
    };
}

/// Whether a record of `len` bytes fits now, by the writer's own rule,
/// without counting a loss.
fn fits(writer: &Writer, len: usize) -> bool {
    match writer {
        Writer::Perf(w) => w.fits(len),
        Writer::Bpf(w) => w.fits(len),
    }
}

fn run_mirror(
    mut conn: Connection,
    mut writer: Writer,
    ring: Ring,
    signal: Signal,
    owner: Weak<GuestObject>,
) {
    let stream_fd = conn.raw_fd();
    // SAFETY: duplicating our own stream socket, close-on-exec.
    let dup = unsafe { libc::fcntl(stream_fd, libc::F_DUPFD_CLOEXEC, 0) };
    let ready = Arc::new(Readiness {
        ring,
        signal,
        raised: AtomicBool::new(false),
        // SAFETY: a new fd that nothing else owns.
        stream: (dup >= 0)
            .then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) }),
    });
    MIRRORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(&ready));
    if is_lost() {
        // Lost between the stream's start and here: `wake_all` did not
        // see this ring.
        wake_all();
    }
    let why = forward(&mut conn, &mut writer, &ready, stream_fd);
    if owner.strong_count() > 0 && !is_lost() {
        // The program still holds the ring, and nothing more will come.
        state::get().stream_ended(why, &|| owner.strong_count() > 0);
    }
    ready.lower_if_consumed();
    ENDED.lock().unwrap_or_else(|p| p.into_inner()).push(ready);
}

/// Pushes the stream's records into the host ring until the stream ends;
/// returns why it ended.
fn forward(
    conn: &mut Connection,
    writer: &mut Writer,
    ready: &Readiness,
    stream_fd: c_int,
) -> &'static str {
    // When the last frame came (none yet: no spin before the first).
    let mut last_frame = None::<Instant>;
    let mut contention = Contention::default();
    loop {
        // Soon after a frame, look for the next one without sleeping (see
        // [`mirror_spin`]); then sleep in `poll`.
        let spun = contention.calm()
            && last_frame
                .is_some_and(|t| frame_within(stream_fd, t + mirror_spin(), &mut contention));
        // While records wait, also look every millisecond whether they were
        // consumed, for programs that consume without waiting in
        // epoll/poll (busy `ring_buffer__consume` loops).
        let timeout = if ready.raised.load(Ordering::Relaxed) {
            CONSUMED_CHECK.as_millis() as c_int
        } else {
            -1
        };
        if !spun && !readable(stream_fd, timeout) {
            ready.lower_if_consumed();
            continue;
        }
        last_frame = Some(Instant::now());
        let frame = match conn.recv_frame() {
            Ok(b) => b,
            // The session or the proxy is gone: nothing more will come.
            Err(_) => return "its connection closed",
        };
        if let Some(records) = telebpf_protocol::message::records_in(&frame) {
            if !records.is_empty() {
                mapsync::refresh_maps();
            }
            for r in records {
                push_waiting(writer, ready, r);
            }
        } else {
            match telebpf_protocol::message::decode::<Reply>(&frame) {
                Ok(Reply::Lost(n)) => {
                    if let Writer::Perf(w) = writer {
                        let _: Push = w.push_lost(n);
                    }
                }
                // The proxy's policy does not let this key consume rings:
                // say so once; no record will come.
                Ok(Reply::Refused(refusal)) => {
                    let _ = state::get().refused(&refusal);
                    return "the proxy's policy refuses ring streams";
                }
                _ => return "it sent a frame that is no ring data",
            }
        }
        if ready.ring.pending() {
            ready.raise();
        }
    }
}

/// Whether `fd` becomes readable (or hangs up) within `limit`, a signal
/// in between or not.
fn readable_within(fd: c_int, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if readable(fd, left.as_millis().clamp(1, c_int::MAX as u128) as c_int) {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}

/// Whether `fd` is readable (or hung up) within `timeout_ms` (`-1`: no
/// limit); an interrupted or failed `poll` says no (the caller looks again).
fn readable(fd: c_int, timeout_ms: c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

/// Looks at `fd` without sleeping, yielding the CPU between looks, until it
/// is readable (`true`), `until` passed or another thread wants the CPU
/// (`false`: the caller sleeps; see [`Contention`]).
fn frame_within(fd: c_int, until: Instant, contention: &mut Contention) -> bool {
    loop {
        if readable(fd, 0) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        if !contention.yield_now() {
            // One last look: what came while others ran is taken now.
            return readable(fd, 0);
        }
    }
}
