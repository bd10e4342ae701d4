//! One ring stream, without the kernel: the loop that drains a guest ring
//! into [`Reply::Records`] frames for the host ([`pump`]), and the loop that
//! produces the host's [`Request::Records`](message::Request) into a guest
//! user ring ([`feed`]).
//!
//! The proxy runs these loops on a thread per stream; what they need from
//! the world is behind three small traits, so that the crate's tests drive
//! the very same loops over a simulated guest ring (`guest::sim`) and a
//! real host mirror:
//!
//! * [`Wait`]: sleep until the ring has data (or room) or the stream must
//!   stop. The proxy's is `poll` on the ring's fd and on the eventfd the
//!   ring's owning session fires; a test's is the fake kernel producing the
//!   next records.
//! * [`FrameSink`] / [`FrameSource`]: the stream's connection.
//!
//! The ring memory is [`RingMemory`], mapped region by region
//! ([`MapRegion`]) through a function the caller gives
//! ([`GuestRing::map`], [`map_user_ring`]): in the proxy its kernel's
//! (a [`GuestMapping`](super::GuestMapping) of the ring's fd, or a simulated
//! ring in its tests), heap memory in this crate's tests.
//!
//! Records are framed in place ([`RecordsFrame`]), at most [`FRAME_BYTES`] of
//! them per frame, and the guest ring's consumer position moves on as soon as
//! a frame's worth is copied, so the guest never waits for the network. Flow
//! control towards the host program is the host mirror's business (a full
//! host ring counts the records as lost, as the kernel does).

use std::time::{Duration, Instant};

use telebpf_protocol::message::{self, Reply};

use super::{
    Consumed, PerfConsumer, PerfLayout, Produced, RecordSink, RingMemory, RingbufConsumer,
    UserRingProducer, Violation,
};
use crate::BpfRingLayout;

/// Record bytes per pushed frame. Large enough that the per-frame costs
/// (a sealed write, a wake-up and a read on the host) are spread over
/// hundreds of records; small enough that the host starts mirroring the
/// first records of a burst while the later ones are still being framed,
/// and that a frame stays far below `MAX_PLAINTEXT`.
pub const FRAME_BYTES: usize = 64 << 10;

/// How long a consuming stream keeps looking at a quiet ring after its last
/// record before it sleeps in [`Wait::wait`], unless [`ENV_RING_SPIN_US`]
/// says otherwise (see [`ring_spin`], the default of [`Wait::spin`]).
///
/// A sleeping stream costs a forwarded record a wake-up on each side of the
/// connection (the guest ring's `poll` here, the socket's in the host's
/// mirror), and on an idle CPU each costs several times the work done for
/// the record on that hop (10-30 µs measured here, against 2-4 µs for the
/// host's mirror to read, open and push a record). A record that comes
/// within this time of the previous one is taken without either. The price
/// is up to this much CPU after each burst; the spin yields the CPU between
/// looks, so a thread the scheduler put on the same core (the guest's
/// producer, the host's consumer) runs at once, it ends as soon as another
/// thread wants the CPU and pauses for a while then ([`Contention`]), and a
/// stream with nothing to carry sleeps from then on: an idle ring costs no
/// CPU. Records that keep coming a little apart (a system-wide
/// tracer on a busy machine) keep both ends spinning much of the time:
/// that is where [`ENV_RING_SPIN_US`] trades latency back for CPU.
pub const STREAM_SPIN: Duration = Duration::from_micros(500);

/// Environment variable: the ring streams' spin in µs, for the proxy's
/// stream loops and the host's mirror threads alike (default
/// [`STREAM_SPIN`]; `0` turns it off: every record then wakes both).
pub const ENV_RING_SPIN_US: &str = "TELEBPF_RING_SPIN_US";

/// The ring streams' spin: [`ENV_RING_SPIN_US`] when it is a number of
/// µs, else [`STREAM_SPIN`]; read once per process.
pub fn ring_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var(ENV_RING_SPIN_US)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(STREAM_SPIN, Duration::from_micros)
    })
}

/// A yield that took longer than this gave the CPU to another thread for
/// more than a record's short work (the host consumer's callback, the
/// guest's producer): the CPU is wanted, see [`yield_idle`].
const YIELD_GAVE_WAY: Duration = Duration::from_micros(50);

/// Yields the CPU once, as a spinning stream does between looks; whether it
/// came back at once, i.e. whether spinning on costs nobody anything.
///
/// A spinning thread is not asleep on its fd, so a record that comes while
/// the scheduler runs another thread in its place waits for that thread's
/// whole time slice (milliseconds behind a compiler), where a sleeping
/// stream would have been woken at once. So a spin ends, and the stream
/// sleeps, as soon as a yield shows that the CPU is wanted: a spin uses
/// only time that no other thread wanted.
pub fn yield_idle() -> bool {
    let t = Instant::now();
    std::thread::yield_now();
    t.elapsed() < YIELD_GAVE_WAY
}

/// How long streams stop spinning once a yield showed the CPU wanted (see
/// [`Contention`]).
pub const CONTENDED_PAUSE: Duration = Duration::from_millis(100);

/// Whether a spinning thread's CPU was lately wanted by others: then it
/// sleeps at once for [`CONTENDED_PAUSE`] rather than spin and give way
/// again. Each yield that gives way is a chance for a record to come while
/// another process holds the CPU for its whole time slice (milliseconds);
/// a thread asleep on its fd instead is woken for the record at once. So
/// on a busy machine the streams take the wake-ups, and spin again only
/// once the CPU has been free for a while.
#[derive(Clone, Copy, Debug, Default)]
pub struct Contention {
    /// When a yield last gave way.
    gave_way: Option<Instant>,
}

impl Contention {
    /// Whether spinning is worth it now: no yield gave way for
    /// [`CONTENDED_PAUSE`].
    pub fn calm(&self) -> bool {
        self.gave_way.is_none_or(|t| t.elapsed() >= CONTENDED_PAUSE)
    }

    /// Yields once ([`yield_idle`]); a yield that gave way starts a pause.
    /// Whether the CPU came back at once.
    pub fn yield_now(&mut self) -> bool {
        let idle = yield_idle();
        if !idle {
            self.gave_way = Some(Instant::now());
        }
        idle
    }
}

/// How long one record waits for the guest's consumer (a BPF program
/// calling `bpf_user_ringbuf_drain`) to make room before it is dropped.
pub const USER_ROOM_WAIT: Duration = Duration::from_secs(1);

/// How the proxy maps a ring: the geometry the guest kernel gave for it
/// (never the client's word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Geometry {
    /// A ring buffer map.
    Ringbuf(BpfRingLayout),
    /// A user ring buffer map.
    UserRingbuf(BpfRingLayout),
    /// A perf event's ring.
    Perf(PerfLayout),
}

/// What a stream waits for on its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Committed records to consume (`POLLIN`).
    Data,
    /// Free space to produce into (`POLLOUT`).
    Room,
}

/// What ended a [`Wait::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The ring reports what was waited for.
    Ring,
    /// The ring's owner let go of it: the stream ends.
    Stop,
    /// The timeout passed (or the wait was interrupted).
    Timeout,
}

/// How a stream sleeps: on its ring and on the signal that ends it.
pub trait Wait {
    /// Sleeps until the ring is [`Ready`], the stream must stop or
    /// `timeout` passes (`None`: no limit). An error ends a consuming
    /// stream; a producing one only waits again.
    fn wait(&mut self, ready: Ready, timeout: Option<Duration>) -> std::io::Result<Woken>;

    /// Whether the stream must stop, without sleeping.
    fn stopped(&mut self) -> bool;

    /// How long a consuming stream looks again and again at its quiet ring
    /// before it sleeps in [`Wait::wait`] (see [`STREAM_SPIN`];
    /// [`ring_spin`] by default); zero: it sleeps at once.
    fn spin(&self) -> Duration {
        ring_spin()
    }
}

/// Where a consuming stream's frames go (its connection to the host).
pub trait FrameSink {
    /// Why a send failed.
    type Error: std::error::Error + 'static;

    /// Sends one encoded frame; an error ends the stream.
    fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error>;
}

/// Where a producing stream's frames come from (its connection from the
/// host).
pub trait FrameSource {
    /// Why a receive failed.
    type Error: std::error::Error + 'static;

    /// The next frame; `None` when the host closed the connection.
    fn recv(&mut self) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The last frame received has been produced into the ring and dropped:
    /// whatever its receipt charged is free again. `dropped` counts the
    /// records dropped so far (the guest ring stayed full, or a record can
    /// never fit it).
    fn done(&mut self, dropped: u64) {
        let _ = dropped;
    }
}

/// Why a ring cannot be streamed any more: the ring's side of a
/// [`StreamEnd`].
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// `mmap` of the guest ring's fd failed.
    #[error("cannot map the guest {what}: errno {errno}")]
    Map {
        /// Which ring (`ring`, `user ring`).
        what: &'static str,
        /// The kernel's errno.
        errno: i32,
    },
    /// A check on the ring's memory failed (see [`Violation::check`]).
    #[error("ring check '{}' failed: {}; stream ended", .0.check(), .0)]
    Check(#[from] Violation),
    /// A consuming stream asked of a user ring buffer.
    #[error("a user ring buffer stream carries records to the guest")]
    ToGuest,
    /// A producing stream asked of a ring whose records flow to the host.
    #[error("not a user ring buffer: its records flow to the host")]
    ToHost,
}

/// Why a stream ended. Every stream ends with one of these (a stream has no
/// successful end: it runs until something stops it); the proxy logs it.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd<E: std::error::Error + 'static> {
    /// The ring's owner let go of it.
    #[error("ring closed by its owner")]
    Stopped,
    /// The host closed the stream's connection.
    #[error("client closed the connection")]
    Closed,
    /// Waiting on the ring failed.
    #[error("poll failed")]
    Wait(#[source] std::io::Error),
    /// The connection failed.
    #[error(transparent)]
    Transport(E),
    /// A frame other than records came on a user ring buffer's stream.
    #[error("unexpected frame on a user ring buffer stream")]
    UnexpectedFrame,
    /// The ring cannot be streamed.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// A [`Reply::Records`] frame built in place: its bytes are exactly
/// `message::encode(&Reply::Records(records))`, without a `Vec` per record
/// or serde's byte-at-a-time encoding of each `Vec<u8>` (which cost more
/// than everything else the stream does per record). The buffer is reused
/// from frame to frame.
#[derive(Debug)]
pub struct RecordsFrame {
    buf: Vec<u8>,
    /// Length of the encoding of `Reply::Records(vec![])`: the variant tag,
    /// then the record count (u64, bincode's fixed-width little endian).
    head: usize,
    /// Records in the frame.
    count: u64,
}

impl Default for RecordsFrame {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordsFrame {
    /// An empty frame.
    pub fn new() -> RecordsFrame {
        let buf = message::encode(&Reply::Records(Vec::new())).expect("records encode");
        let head = buf.len();
        assert!(
            head >= 8 && buf[head - 8..] == [0; 8],
            "Reply::Records must encode as a tag and a u64 count"
        );
        RecordsFrame {
            buf,
            head,
            count: 0,
        }
    }

    /// Records in the frame.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Record bytes (with their length prefixes) in the frame.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Appends one record given in two parts (a wrapped ring's tail and
    /// head; `b` is empty otherwise).
    pub fn push(&mut self, a: &[u8], b: &[u8]) {
        self.buf
            .extend_from_slice(&((a.len() + b.len()) as u64).to_le_bytes());
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b);
        self.count += 1;
    }

    /// The encoded frame; the next `push` starts a new one.
    pub fn finish(&mut self) -> &[u8] {
        let head = self.head;
        self.buf[head - 8..head].copy_from_slice(&self.count.to_le_bytes());
        self.count = 0;
        &self.buf
    }

    /// Empties the frame.
    pub fn start(&mut self) {
        self.buf.truncate(self.head);
        self.count = 0;
    }
}

impl RecordSink for RecordsFrame {
    fn taken(&self) -> usize {
        self.payload_len()
    }

    fn record(&mut self, len: usize) -> &mut [u8] {
        self.buf.extend_from_slice(&(len as u64).to_le_bytes());
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.count += 1;
        &mut self.buf[start..]
    }
}

/// A guest ring whose records flow to the host, with its checked consumer.
#[derive(Debug)]
pub enum GuestRing<M> {
    /// A perf event's ring.
    Perf(PerfConsumer<M>),
    /// A `BPF_MAP_TYPE_RINGBUF` map.
    Bpf(RingbufConsumer<M>),
}

/// One region a ring maps of its fd: `mmap(NULL, len, PROT_READ [|
/// PROT_WRITE], MAP_SHARED, fd, offset)`, named `name` in violations. The
/// proxy maps it through its kernel ([`GuestMapping::map`] in production, a
/// simulated ring in its tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRegion {
    /// Bytes to map.
    pub len: usize,
    /// Read-write (else read-only).
    pub writable: bool,
    /// Offset in the fd's mapping space.
    pub offset: usize,
    /// The region's name in violations (`consumer`, `producer`, `perf`).
    pub name: &'static str,
}

impl MapRegion {
    fn new(len: usize, writable: bool, offset: usize, name: &'static str) -> MapRegion {
        MapRegion {
            len,
            writable,
            offset,
            name,
        }
    }
}

impl<M: RingMemory> GuestRing<M> {
    /// Maps the ring as libbpf would, with the kernel's `geometry`, each
    /// region through `map` (the kernel's errno on failure): a perf event in
    /// one read-write mapping; a ring buffer as its read-write consumer page
    /// and its read-only producer page and data (mapped twice by the
    /// kernel).
    pub fn map(
        geometry: &Geometry,
        mut map: impl FnMut(MapRegion) -> Result<M, i32>,
    ) -> Result<Self, RingError> {
        let cannot = |errno| RingError::Map {
            what: "ring",
            errno,
        };
        match *geometry {
            Geometry::Perf(l) => {
                let mem = map(MapRegion::new(l.mapping_len(), true, 0, "perf")).map_err(cannot)?;
                Ok(GuestRing::Perf(PerfConsumer::new(mem, l)?))
            }
            Geometry::Ringbuf(l) => {
                let page = l.page_size();
                let consumer = map(MapRegion::new(page, true, 0, "consumer")).map_err(cannot)?;
                let producer = map(MapRegion::new(
                    page + 2 * l.max_entries(),
                    false,
                    page,
                    "producer",
                ))
                .map_err(cannot)?;
                Ok(GuestRing::Bpf(RingbufConsumer::new(consumer, producer, l)?))
            }
            Geometry::UserRingbuf(_) => Err(RingError::ToGuest),
        }
    }

    /// Moves committed records into `frame` (started afresh) until it holds
    /// `limit` bytes of them or the ring is empty.
    pub fn consume(
        &mut self,
        frame: &mut RecordsFrame,
        limit: usize,
    ) -> Result<Consumed, Violation> {
        frame.start();
        match self {
            GuestRing::Perf(r) => r.consume(frame, limit),
            GuestRing::Bpf(r) => r.consume(frame, limit),
        }
    }
}

/// Maps a user ring buffer as libbpf's `user_ring_buffer__new` does, each
/// region through `map`: its consumer page read-only, its producer page and
/// data (mapped twice by the kernel) read-write.
pub fn map_user_ring<M: RingMemory>(
    geometry: &Geometry,
    mut map: impl FnMut(MapRegion) -> Result<M, i32>,
) -> Result<UserRingProducer<M>, RingError> {
    let Geometry::UserRingbuf(layout) = *geometry else {
        return Err(RingError::ToHost);
    };
    let (page, size) = (layout.page_size(), layout.max_entries());
    let cannot = |errno| RingError::Map {
        what: "user ring",
        errno,
    };
    let consumer = map(MapRegion::new(page, false, 0, "consumer")).map_err(cannot)?;
    let producer = map(MapRegion::new(page + 2 * size, true, page, "producer")).map_err(cannot)?;
    Ok(UserRingProducer::new(consumer, producer, layout)?)
}

/// Drains `ring` into frames sent to `out`, as the guest commits records,
/// until the stream stops, the connection fails or the ring fails a check;
/// returns why it ended.
///
/// Each wake-up takes everything committed, in frames of at most
/// [`FRAME_BYTES`] of records, each sent as soon as it is full so that the
/// host works on one while the next is filled; samples the guest ring
/// reported lost follow as a [`Reply::Lost`]. A frame leaves as soon as the
/// ring has nothing more, so a quiet ring's record is never held back for
/// company. Once the ring is empty the loop keeps looking for
/// [`Wait::spin`] (yielding the CPU between looks) before it sleeps again:
/// records that follow closely are sent without a wake-up.
pub fn pump<M, W, S>(ring: &mut GuestRing<M>, wait: &mut W, out: &mut S) -> StreamEnd<S::Error>
where
    M: RingMemory,
    W: Wait + ?Sized,
    S: FrameSink + ?Sized,
{
    let mut frame = RecordsFrame::new();
    // The first frame, empty, says the ring is mapped. Until a perf event
    // is mapped it has no ring buffer and the kernel drops what a program
    // outputs to it, so the host's `mmap` returns to the program only once
    // this frame is there: whatever the program triggers after it is kept.
    if let Err(e) = out.send(frame.finish()) {
        return StreamEnd::Transport(e);
    }
    let spin = wait.spin();
    let mut contention = Contention::default();
    loop {
        match wait.wait(Ready::Data, None) {
            Ok(Woken::Stop) => return StreamEnd::Stopped,
            Err(e) => return StreamEnd::Wait(e),
            Ok(Woken::Ring | Woken::Timeout) => {}
        }
        // Since when the ring has had nothing for us.
        let mut quiet = None::<Instant>;
        loop {
            let consumed = ring.consume(&mut frame, FRAME_BYTES);
            let took = frame.count() > 0;
            // Records taken before a failed check passed every check: they
            // go out, then the stream ends.
            if took {
                if let Err(e) = out.send(frame.finish()) {
                    return StreamEnd::Transport(e);
                }
            }
            let Consumed { more, lost } = match consumed {
                Ok(c) => c,
                Err(v) => return RingError::Check(v).into(),
            };
            if lost > 0 {
                let msg = message::encode(&Reply::Lost(lost)).expect("lost encodes");
                if let Err(e) = out.send(&msg) {
                    return StreamEnd::Transport(e);
                }
            }
            if more {
                continue;
            }
            // The ring is empty: look again until it has been quiet for
            // `spin` or the CPU is wanted ([`Contention`]), then sleep.
            // Every yield is followed by a look, so nothing committed
            // before the stream sleeps waits for a wake-up. A stopped
            // stream notices at its next wait, at most `spin` later.
            let since = match quiet {
                Some(t) if !took => t,
                _ => *quiet.insert(Instant::now()),
            };
            if since.elapsed() >= spin || !contention.calm() {
                break;
            }
            contention.yield_now();
        }
    }
}

/// Produces the records of the frames `input` carries into `ring`, as
/// libbpf's `user_ring_buffer__reserve` and `__submit` would, until the
/// host closes the connection, the stream stops or the ring fails a check;
/// returns why it ended. A record waits up to `room_wait` (the proxy:
/// [`USER_ROOM_WAIT`]) for the guest to make room, and is dropped (counted,
/// see [`FrameSource::done`]) if none comes.
pub fn feed<M, W, S>(
    ring: &mut UserRingProducer<M>,
    wait: &mut W,
    input: &mut S,
    room_wait: Duration,
) -> StreamEnd<S::Error>
where
    M: RingMemory,
    W: Wait + ?Sized,
    S: FrameSource + ?Sized,
{
    let mut dropped = 0u64;
    loop {
        let frame = match input.recv() {
            Ok(Some(f)) => f,
            Ok(None) => return StreamEnd::Closed,
            Err(e) => return StreamEnd::Transport(e),
        };
        // Read in place: decoded into a `Vec` each, a frame of empty
        // records would take three times its size.
        let Some(records) = message::request_records_in(&frame) else {
            return StreamEnd::UnexpectedFrame;
        };
        for r in records {
            match produce(ring, r, wait, room_wait) {
                Ok(true) => {}
                Ok(false) => dropped += 1,
                Err(end) => return end,
            }
        }
        // The frame is done with: what its receiver charged is free again
        // (kept, frames would add up to the session's share and end the
        // stream).
        drop(frame);
        input.done(dropped);
        if wait.stopped() {
            return StreamEnd::Stopped;
        }
    }
}

/// Writes one record, waiting up to `room_wait` for room: whether it was
/// written (`false`: dropped), or why the stream ends.
fn produce<M, W, E>(
    ring: &mut UserRingProducer<M>,
    record: &[u8],
    wait: &mut W,
    room_wait: Duration,
) -> Result<bool, StreamEnd<E>>
where
    M: RingMemory,
    W: Wait + ?Sized,
    E: std::error::Error + 'static,
{
    let deadline = Instant::now() + room_wait;
    loop {
        match ring.try_produce(record).map_err(RingError::Check)? {
            Produced::Written => return Ok(true),
            Produced::TooLarge => return Ok(false),
            Produced::NoRoom => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // The kernel wakes the map fd (EPOLLOUT) after a drain; it also
        // reports EPOLLOUT while any byte is free, so a record that still
        // does not fit sleeps a little instead of spinning. A failed wait
        // only waits again, until the deadline.
        let left = (deadline - now).clamp(Duration::from_millis(1), Duration::from_secs(1));
        match wait.wait(Ready::Room, Some(left)) {
            Ok(Woken::Stop) => return Err(StreamEnd::Stopped),
            Ok(Woken::Ring) => std::thread::sleep(Duration::from_micros(100)),
            Ok(Woken::Timeout) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
