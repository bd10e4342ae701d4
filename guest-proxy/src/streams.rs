//! Push streams: the records of a guest ring, sent to the host as the guest
//! produces them.
//!
//! A client mirrors a ring (a perf event's BPF-output ring, or a
//! `BPF_MAP_TYPE_RINGBUF` map) over a connection of its own whose first
//! request is [`Request::Stream`](telebpf_protocol::message::Request)
//! naming the owning session by its secret token. The stream's thread maps
//! the guest ring, sleeps in `poll` until the kernel signals new data (event
//! notification: no polling period), consumes everything that is there —
//! advancing the guest ring's consumer position as soon as a frame's worth
//! is copied, so the guest never waits for the network — and sends it in
//! frames of at most [`FRAME_BYTES`] of records. Flow control towards
//! the host program is the host mirror's business (a full host ring counts
//! the records as lost, as the kernel does).
//!
//! A user ring buffer's stream runs the other way ([`serve_user`]): the
//! host sends the records its program submitted and we produce them into
//! the guest ring as libbpf's producer does.
//!
//! A stream holds a duplicate of the ring's fd, so it must never outlive its
//! owner's interest: every stream registers a [`Stop`] with the owning
//! session's [`Owner`], which fires when that session closes the fd or
//! ends, and wakes the stream's `poll` at once.
//!
//! **What a stream trusts: nothing of the request, nothing of the ring.**
//! The ring's kind, identity and size come from the kernel
//! ([`crate::rings`]); a request that misdescribes the ring is refused. One
//! ring has at most one stream at a time, whichever session asks (two
//! consumers would race on its positions): a second one is refused with
//! `EBUSY`. The consumers themselves (`ringbuf_mirror::guest`) check every
//! position and record header they read from the shared pages before they
//! copy; a failed check ends that stream with the check named in the log,
//! never the process. Every way a stream ends is logged by the session
//! that carried it (`session N: ended (stream of fd F …)`).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ringbuf_mirror::guest::{
    Consumed, GuestMapping, PerfConsumer, Produced, RecordSink, RingbufConsumer, UserRingProducer,
    Violation,
};
use telebpf_protocol::message::{self, Reply, SessionToken, StreamRequest};

use crate::limits::SessionBudget;
use crate::rings::{self, Geometry, Refused, RingKey};

/// Wakes and ends a stream.
#[derive(Debug)]
pub struct Stop {
    event: OwnedFd,
}

impl Stop {
    fn new() -> Result<Arc<Stop>, i32> {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EMFILE));
        }
        // SAFETY: a new fd nobody else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Stop { event }))
    }

    fn fire(&self) {
        let one = 1u64;
        // SAFETY: writing 8 bytes from a local to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// One session's streamable fds and the streams attached to them.
#[derive(Debug, Default)]
pub struct Owner {
    fds: Mutex<Option<HashMap<i32, Vec<Arc<Stop>>>>>,
}

impl Owner {
    fn fds(&self) -> std::sync::MutexGuard<'_, Option<HashMap<i32, Vec<Arc<Stop>>>>> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session now owns a ring fd that may be streamed.
    pub fn add(&self, fd: i32) {
        if let Some(fds) = self.fds().as_mut() {
            fds.insert(fd, Vec::new());
        }
    }

    /// The session closed `fd`: its streams end.
    pub fn remove(&self, fd: i32) {
        if let Some(stops) = self.fds().as_mut().and_then(|f| f.remove(&fd)) {
            stops.iter().for_each(|s| s.fire());
        }
    }

    /// The session ended: every stream ends, and no new one can attach.
    pub fn end(&self) {
        if let Some(fds) = self.fds().take() {
            fds.values().flatten().for_each(|s| s.fire());
        }
    }

    /// A stream of `fd` ended: forget its stop.
    fn detach(&self, fd: i32, stop: &Arc<Stop>) {
        if let Some(stops) = self.fds().as_mut().and_then(|f| f.get_mut(&fd)) {
            stops.retain(|s| !Arc::ptr_eq(s, stop));
        }
    }

    /// A duplicate of `fd` for a new stream, with its stop, if the session
    /// still owns it.
    fn attach(&self, fd: i32) -> Result<(OwnedFd, Arc<Stop>), i32> {
        let mut guard = self.fds();
        let stops = guard
            .as_mut()
            .and_then(|f| f.get_mut(&fd))
            .ok_or(libc::EBADF)?;
        let stop = Stop::new()?;
        // SAFETY: `fd` is open: the owning session holds it and cannot close
        // it while we hold its lock (`remove` takes the same lock first).
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EMFILE));
        }
        stops.push(stop.clone());
        // SAFETY: a new fd nobody else owns.
        Ok((unsafe { OwnedFd::from_raw_fd(dup) }, stop))
    }
}

/// All live sessions' owners, by token, and the rings being streamed.
#[derive(Debug, Default)]
pub struct Streams {
    owners: Mutex<HashMap<SessionToken, Arc<Owner>>>,
    /// Rings with a live stream: one stream per ring, whichever session
    /// holds an fd of it.
    busy: Mutex<HashSet<RingKey>>,
}

impl Streams {
    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<SessionToken, Arc<Owner>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session: its token (secret, random) and owner.
    pub fn open(&self) -> Result<(SessionToken, Arc<Owner>), i32> {
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|_| libc::EIO)?;
        let owner = Arc::new(Owner {
            fds: Mutex::new(Some(HashMap::new())),
        });
        self.owners().insert(token, owner.clone());
        Ok((token, owner))
    }

    /// The session ended.
    pub fn close(&self, token: &SessionToken) {
        if let Some(owner) = self.owners().remove(token) {
            owner.end();
        }
    }

    fn find(&self, token: &SessionToken) -> Option<Arc<Owner>> {
        self.owners().get(token).cloned()
    }

    /// Marks `key` streamed until the claim drops; `EBUSY` if it is.
    fn claim(&self, key: RingKey) -> Result<Claim<'_>, Refused> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(key) {
            return Err(Refused::Busy);
        }
        Ok(Claim { streams: self, key })
    }
}

/// A ring's one stream (see [`Streams::claim`]).
struct Claim<'a> {
    streams: &'a Streams,
    key: RingKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.streams.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
    }
}

/// A stream's hold on a ring fd of its owning session: a duplicate of the
/// fd and the stop the owner fires; dropping it forgets the stop.
struct Hold {
    fd: OwnedFd,
    stop: Arc<Stop>,
    owner: Arc<Owner>,
    owner_fd: i32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.owner.detach(self.owner_fd, &self.stop);
    }
}

/// A stream attached to its ring: its hold on the fd, its claim on the ring
/// and the geometry the kernel gave. Dropping it lets go of all.
struct Attached<'a> {
    hold: Hold,
    geometry: Geometry,
    _claim: Claim<'a>,
}

impl<'a> Attached<'a> {
    /// Attaches to the ring `req` names, if its session owns it, it is
    /// what the request says (per the kernel) and `may` lets the stream
    /// consume it; otherwise why not.
    fn new(
        req: &StreamRequest,
        streams: &'a Streams,
        may: &Consume<'_>,
    ) -> Result<Attached<'a>, String> {
        let refused = |e: &dyn std::fmt::Display, errno: i32| {
            format!("stream of fd {} refused: {e} (errno {errno})", req.fd)
        };
        let Some(owner) = streams.find(&req.session) else {
            return Err("stream for an unknown session refused".into());
        };
        let (fd, stop) = owner
            .attach(req.fd)
            .map_err(|e| refused(&"cannot hold the session's fd", e))?;
        let hold = Hold {
            fd,
            stop,
            owner,
            owner_fd: req.fd,
        };
        let real = rings::inspect(hold.fd.as_raw_fd()).map_err(|e| refused(&e, e.errno()))?;
        // Decided on the ring held, not on the fd number the request
        // named: the owning session may have closed that number and
        // opened another ring under it since the request was checked.
        may(real.key()).map_err(|why| refused(&why, libc::EPERM))?;
        let geometry = rings::geometry(&req.kind, &real, rings::perf_page_cap())
            .map_err(|e| refused(&e, e.errno()))?;
        let claim = streams
            .claim(real.key())
            .map_err(|e| refused(&e, e.errno()))?;
        if let (message::StreamKind::Perf { pages }, Geometry::Perf(l)) = (&req.kind, &geometry) {
            if *pages as usize != l.data_pages() {
                crate::log::info(format_args!(
                    "stream of fd {}: {pages} perf pages asked, {} mapped (perf_event_mlock_kb)",
                    req.fd,
                    l.data_pages()
                ));
            }
        }
        Ok(Attached {
            hold,
            geometry,
            _claim: claim,
        })
    }

    fn fd(&self) -> &OwnedFd {
        &self.hold.fd
    }

    fn stop(&self) -> &Stop {
        &self.hold.stop
    }
}

/// Whether the stream's key may consume the ring of this identity (a
/// ring of another key's: `Err` with why not).
pub type Consume<'a> = dyn Fn(RingKey) -> Result<(), String> + 'a;

/// Where pushed frames go.
pub trait Push {
    /// Sends one encoded frame; an error ends the stream.
    fn push(&mut self, frame: &[u8]) -> Result<(), String>;
}

/// Serves a stream connection until the ring's owner lets go of it, the
/// host goes away or the ring fails a check; returns why it ended (the
/// session logs it). A perf event's ring buffer, which the kernel allocates
/// when the proxy first maps it, is held in `budget`'s kernel memory while
/// the stream lives (a ring buffer map's memory was charged when the map
/// was made).
pub fn serve(
    req: &StreamRequest,
    streams: &Streams,
    out: &mut dyn Push,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> String {
    let attached = match Attached::new(req, streams, may) {
        Ok(a) => a,
        Err(why) => return why,
    };
    let ended = |why: &dyn std::fmt::Display| format!("stream of fd {}: {why}", req.fd);
    let _held = match attached.geometry {
        Geometry::Perf(l) => match budget.hold_kernel_memory(l.mapping_len() as u64) {
            Ok(held) => held,
            Err(errno) => {
                return ended(&format!(
                    "its perf ring of {} bytes does not fit the kernel-memory budget \
                     (errno {errno})",
                    l.mapping_len()
                ))
            }
        },
        _ => None,
    };
    let mut ring = match GuestRing::map(&attached) {
        Ok(r) => r,
        Err(why) => return ended(&why),
    };
    let mut frame = RecordsFrame::new();
    loop {
        match wait(attached.fd(), libc::POLLIN, attached.stop(), -1) {
            Woken::Stop => return ended(&"ring closed by its owner"),
            Woken::Failed => return ended(&"poll failed"),
            Woken::Ring | Woken::Timeout => {}
        }
        // Everything the guest has committed, in frames of at most
        // FRAME_BYTES of records, each sent as soon as it is full so that
        // the host works on one while we fill the next.
        loop {
            let consumed = ring.consume(&mut frame, FRAME_BYTES);
            // Records taken before a failed check passed every check: they
            // go out, then the stream ends.
            if frame.count > 0 {
                if let Err(e) = out.push(frame.finish()) {
                    return ended(&e);
                }
            }
            let Consumed { more, lost } = match consumed {
                Ok(c) => c,
                Err(v) => return ended(&broken(&v)),
            };
            if lost > 0 {
                let msg = message::encode(&Reply::Lost(lost)).expect("lost encodes");
                if let Err(e) = out.push(&msg) {
                    return ended(&e);
                }
            }
            if !more {
                break;
            }
        }
    }
}

/// The log text of a failed ring check.
fn broken(v: &Violation) -> String {
    format!("ring check '{}' failed: {v}; stream ended", v.check())
}

/// What ended a wait on a ring.
enum Woken {
    /// The ring is ready.
    Ring,
    /// The owner let go of the ring.
    Stop,
    /// The timeout passed.
    Timeout,
    /// `poll` failed (not `EINTR`).
    Failed,
}

/// Sleeps until `fd` reports `events`, `stop` fires or `ms` pass (-1: no
/// limit).
fn wait(fd: &OwnedFd, events: i16, stop: &Stop, ms: i32) -> Woken {
    let mut pfds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        return if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            Woken::Timeout
        } else {
            Woken::Failed
        };
    }
    if pfds[1].revents != 0 {
        Woken::Stop
    } else if pfds[0].revents != 0 {
        Woken::Ring
    } else {
        Woken::Timeout
    }
}

/// Where a user ring buffer stream's frames come from.
pub trait Pull {
    /// The next frame; `None` when the host closed the connection.
    fn pull(&mut self) -> Result<Option<Vec<u8>>, String>;
}

/// How long one record waits for the guest's consumer (a BPF program
/// calling `bpf_user_ringbuf_drain`) to make room before it is dropped.
pub const USER_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves a user ring buffer stream: the host sends the records its
/// program submitted ([`message::Request::Records`]) and we produce them
/// into the guest ring as libbpf's `user_ring_buffer__reserve` and
/// `__submit` would, until the host closes the connection, the ring's
/// owner lets go of it or the ring fails a check; returns why it ended.
pub fn serve_user(
    req: &StreamRequest,
    streams: &Streams,
    input: &mut dyn Pull,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> String {
    let attached = match Attached::new(req, streams, may) {
        Ok(a) => a,
        Err(why) => return why,
    };
    let ended = |why: &dyn std::fmt::Display| format!("stream of fd {}: {why}", req.fd);
    let Geometry::UserRingbuf(layout) = attached.geometry else {
        return ended(&"not a user ring buffer: its records flow to the host");
    };
    let (page, size) = (layout.page_size(), layout.max_entries());
    let raw = attached.fd().as_raw_fd();
    let ring = GuestMapping::map(raw, page, false, 0, "consumer").and_then(|consumer| {
        GuestMapping::map(raw, page + 2 * size, true, page, "producer").map(|p| (consumer, p))
    });
    let mut ring = match ring {
        Ok((consumer, producer)) => match UserRingProducer::new(consumer, producer, layout) {
            Ok(r) => r,
            Err(v) => return ended(&broken(&v)),
        },
        Err(e) => return ended(&format!("cannot map the guest user ring: errno {e}")),
    };
    let mut dropped = 0u64;
    loop {
        let frame = match input.pull() {
            Ok(Some(f)) => f,
            Ok(None) => return ended(&"client closed the connection"),
            Err(e) => return ended(&e),
        };
        // Read in place: decoded into a `Vec` each, a frame of empty
        // records would take three times its size.
        let Some(records) = message::request_records_in(&frame) else {
            return ended(&"unexpected frame on a user ring buffer stream");
        };
        for r in records {
            match produce(&mut ring, r, &attached) {
                Ok(true) => {}
                Ok(false) => dropped += 1,
                Err(why) => return ended(&why),
            }
        }
        // The frame is done with: what its receiver charged is free again
        // (a request session frees it with each reply; kept, it added up
        // to the session's share after 64 MiB of frames over 64 KiB, and
        // the next such frame ended the stream).
        drop(frame);
        budget.release();
        if stop_fired(attached.stop()) {
            return ended(&"ring closed by its owner");
        }
        if dropped > 0 {
            crate::log::debug(format_args!(
                "user ring of fd {}: {dropped} records dropped so far (guest ring full)",
                req.fd
            ));
        }
    }
}

/// Writes one record, waiting up to [`USER_ROOM_WAIT`] for room: whether it
/// was written (`false`: dropped), or why the stream ends.
fn produce(
    ring: &mut UserRingProducer<GuestMapping>,
    record: &[u8],
    attached: &Attached<'_>,
) -> Result<bool, String> {
    let deadline = std::time::Instant::now() + USER_ROOM_WAIT;
    loop {
        match ring.try_produce(record) {
            Ok(Produced::Written) => return Ok(true),
            Ok(Produced::TooLarge) => return Ok(false),
            Ok(Produced::NoRoom) => {}
            Err(v) => return Err(broken(&v)),
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // The kernel wakes the map fd (EPOLLOUT) after a drain; it also
        // reports EPOLLOUT while any byte is free, so a record that still
        // does not fit sleeps a little instead of spinning.
        let ms = (deadline - now).as_millis().clamp(1, 1000) as i32;
        match wait(attached.fd(), libc::POLLOUT, attached.stop(), ms) {
            Woken::Stop => return Err("ring closed by its owner".into()),
            Woken::Ring => std::thread::sleep(std::time::Duration::from_micros(100)),
            Woken::Timeout | Woken::Failed => {}
        }
    }
}

fn stop_fired(stop: &Stop) -> bool {
    let mut pfd = libc::pollfd {
        fd: stop.event.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Record bytes per pushed frame. Large enough that the per-frame costs
/// (a sealed write, a wake-up and a read on the host) are spread over
/// hundreds of records; small enough that the host starts mirroring the
/// first records of a burst while the later ones are still being framed,
/// and that a frame stays far below `MAX_PLAINTEXT`.
pub const FRAME_BYTES: usize = 64 << 10;

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
    pub count: u64,
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
    fn start(&mut self) {
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

/// A guest ring mapped by the proxy, with its checked consumer.
enum GuestRing {
    Perf(PerfConsumer<GuestMapping>),
    Bpf(RingbufConsumer<GuestMapping>),
}

impl GuestRing {
    /// Maps the attached ring as libbpf would, with the kernel's geometry:
    /// a perf event in one read-write mapping; a ring buffer as its
    /// read-write consumer page and its read-only producer page and data
    /// (mapped twice by the kernel).
    fn map(attached: &Attached<'_>) -> Result<GuestRing, String> {
        let fd = attached.fd().as_raw_fd();
        let cannot = |e: i32| format!("cannot map the guest ring: errno {e}");
        match attached.geometry {
            Geometry::Perf(l) => {
                let mem =
                    GuestMapping::map(fd, l.mapping_len(), true, 0, "perf").map_err(cannot)?;
                PerfConsumer::new(mem, l)
                    .map(GuestRing::Perf)
                    .map_err(|v| broken(&v))
            }
            Geometry::Ringbuf(l) => {
                let page = l.page_size();
                let consumer = GuestMapping::map(fd, page, true, 0, "consumer").map_err(cannot)?;
                let producer =
                    GuestMapping::map(fd, page + 2 * l.max_entries(), false, page, "producer")
                        .map_err(cannot)?;
                RingbufConsumer::new(consumer, producer, l)
                    .map(GuestRing::Bpf)
                    .map_err(|v| broken(&v))
            }
            Geometry::UserRingbuf(_) => {
                Err("a user ring buffer stream carries records to the guest".into())
            }
        }
    }

    /// Moves committed records into `frame` (started afresh) until it holds
    /// `limit` bytes of them or the ring is empty.
    fn consume(&mut self, frame: &mut RecordsFrame, limit: usize) -> Result<Consumed, Violation> {
        frame.start();
        match self {
            GuestRing::Perf(r) => r.consume(frame, limit),
            GuestRing::Bpf(r) => r.consume(frame, limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pusher that must never be used.
    struct Nowhere;

    impl Push for Nowhere {
        fn push(&mut self, _: &[u8]) -> Result<(), String> {
            panic!("a refused stream pushed a frame");
        }
    }

    /// The stream's own check of the ring it holds: a ring the key may
    /// not consume is let go before it is mapped, whatever the request's
    /// check said of the fd number before.
    #[test]
    fn the_ring_held_is_checked_before_it_is_consumed() {
        // A 4 KiB ring buffer map (needs CAP_BPF; skipped without).
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&telebpf_abi::map_type::BPF_MAP_TYPE_RINGBUF.to_le_bytes());
        attr[12..16].copy_from_slice(&4096u32.to_le_bytes());
        // SAFETY: a map_create attr without pointers.
        let fd = match unsafe {
            crate::sys::bpf(
                telebpf_abi::cmd::BPF_MAP_CREATE,
                attr.as_mut_ptr(),
                attr.len() as u32,
                std::ptr::null_mut(),
                0,
            )
        } {
            Ok(fd) => fd as i32,
            Err(_) => return,
        };
        let streams = Streams::default();
        let (token, owner) = streams.open().unwrap();
        owner.add(fd);
        let req = StreamRequest {
            session: token,
            fd,
            kind: message::StreamKind::Ringbuf { max_entries: 4096 },
        };
        let seen = std::cell::Cell::new(None);
        let why = serve(
            &req,
            &streams,
            &mut Nowhere,
            &SessionBudget::default(),
            &|key| {
                seen.set(Some(key));
                Err("not its own".to_string())
            },
        );
        assert!(
            matches!(seen.get(), Some(RingKey::Map(_))),
            "{:?}",
            seen.get()
        );
        assert!(why.contains("refused: not its own (errno 1)"), "{why}");
        // The refused stream holds nothing: the ring is free for another.
        assert!(streams.busy.lock().unwrap().is_empty());
        crate::sys::close(fd);
    }

    #[test]
    fn records_frame_is_the_encoding_of_reply_records() {
        let mut frame = RecordsFrame::new();
        for records in [
            vec![],
            vec![vec![]],
            vec![vec![1u8; 64]],
            (0..300u32)
                .map(|i| (0..i % 97).map(|b| (b ^ i) as u8).collect())
                .collect::<Vec<Vec<u8>>>(),
        ] {
            frame.start();
            for r in &records {
                let (a, b) = r.split_at(r.len() / 3);
                frame.push(a, b);
            }
            let want = message::encode(&Reply::Records(records.clone())).unwrap();
            assert_eq!(frame.finish(), &want[..]);
            let back: Reply = message::decode(&want).unwrap();
            assert_eq!(back, Reply::Records(records));
        }
    }

    /// What a consumer fills through `RecordSink` encodes as the same
    /// `Reply::Records` as the records themselves.
    #[test]
    fn records_taken_as_a_sink_encode_as_reply_records() {
        let mut frame = RecordsFrame::new();
        let records = vec![b"abc".to_vec(), vec![], vec![7u8; 300]];
        for r in &records {
            frame.record(r.len()).copy_from_slice(r);
        }
        assert_eq!(frame.taken(), 3 * 8 + 3 + 300);
        let want = message::encode(&Reply::Records(records)).unwrap();
        assert_eq!(frame.finish(), &want[..]);
    }

    #[test]
    fn finished_frames_start_afresh() {
        let mut frame = RecordsFrame::new();
        frame.push(b"abc", b"");
        let _ = frame.finish();
        frame.start();
        frame.push(b"de", b"f");
        assert_eq!(
            frame.finish(),
            &message::encode(&Reply::Records(vec![b"def".to_vec()])).unwrap()[..]
        );
    }
}
