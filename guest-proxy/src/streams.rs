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

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use telebpf_protocol::message::{self, Reply, SessionToken, StreamKind, StreamRequest};

use crate::sys::{page_size, Mapping};

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

/// All live sessions' owners, by token.
#[derive(Debug, Default)]
pub struct Streams {
    owners: Mutex<HashMap<SessionToken, Arc<Owner>>>,
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
}

/// Where pushed frames go.
pub trait Push {
    /// Sends one encoded frame; an error ends the stream.
    fn push(&mut self, frame: &[u8]) -> Result<(), String>;
}

/// Serves a stream connection until the ring's owner lets go of it or the
/// host goes away; returns why it ended.
pub fn serve(req: &StreamRequest, streams: &Streams, out: &mut dyn Push) -> String {
    let Some(owner) = streams.find(&req.session) else {
        return "stream for an unknown session refused".into();
    };
    let (fd, stop) = match owner.attach(req.fd) {
        Ok(x) => x,
        Err(e) => return format!("stream for fd {} refused: errno {e}", req.fd),
    };
    drop(owner);
    let ring = match req.kind {
        StreamKind::Perf { pages } => GuestRing::perf(&fd, pages),
        StreamKind::Ringbuf { max_entries } => GuestRing::bpf(&fd, max_entries),
        StreamKind::UserRingbuf { .. } => {
            return "a user ring buffer stream carries records to the guest".into()
        }
    };
    let mut ring = match ring {
        Ok(r) => r,
        Err(e) => return format!("cannot map guest ring of fd {}: errno {e}", req.fd),
    };
    let mut frame = RecordsFrame::new();
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.event.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return "poll failed".into();
        }
        if pfds[1].revents != 0 {
            return "ring closed by its owner".into();
        }
        // Everything the guest has committed, in frames of at most
        // FRAME_BYTES of records, each sent as soon as it is full so that
        // the host works on one while we fill the next.
        loop {
            let (more, lost) = ring.consume(&mut frame, FRAME_BYTES);
            if frame.count > 0 {
                if let Err(e) = out.push(frame.finish()) {
                    return e;
                }
            }
            if lost > 0 {
                let msg = message::encode(&Reply::Lost(lost)).expect("lost encodes");
                if let Err(e) = out.push(&msg) {
                    return e;
                }
            }
            if !more {
                break;
            }
        }
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
/// `__submit` would, until the host closes the connection or the ring's
/// owner lets go of it; returns why it ended.
pub fn serve_user(req: &StreamRequest, streams: &Streams, input: &mut dyn Pull) -> String {
    let Some(owner) = streams.find(&req.session) else {
        return "stream for an unknown session refused".into();
    };
    let (fd, stop) = match owner.attach(req.fd) {
        Ok(x) => x,
        Err(e) => return format!("stream for fd {} refused: errno {e}", req.fd),
    };
    drop(owner);
    let StreamKind::UserRingbuf { max_entries } = req.kind else {
        return "not a user ring buffer stream".into();
    };
    let mut ring = match UserRing::new(&fd, max_entries) {
        Ok(r) => r,
        Err(e) => return format!("cannot map guest user ring of fd {}: errno {e}", req.fd),
    };
    loop {
        let frame = match input.pull() {
            Ok(Some(f)) => f,
            Ok(None) => return "client closed the connection".into(),
            Err(e) => return e,
        };
        let records = match message::decode::<message::Request>(&frame) {
            Ok(message::Request::Records(r)) => r,
            _ => return "unexpected frame on a user ring buffer stream".into(),
        };
        for r in &records {
            match ring.produce(r, &fd, &stop) {
                Produced::Written => {}
                Produced::Dropped => ring.dropped += 1,
                Produced::Stopped => return "ring closed by its owner".into(),
            }
        }
        if stop_fired(&stop) {
            return "ring closed by its owner".into();
        }
        if ring.dropped > 0 {
            crate::log::debug(format_args!(
                "user ring of fd {}: {} records dropped so far (guest ring full)",
                req.fd, ring.dropped
            ));
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

enum Produced {
    Written,
    Dropped,
    Stopped,
}

/// A guest user ring buffer mapped by the proxy as libbpf's
/// `user_ring_buffer__new` maps it: the consumer page read-only, the
/// producer page and the double-mapped data read-write.
struct UserRing {
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: usize,
    dropped: u64,
}

impl UserRing {
    fn new(fd: &OwnedFd, max_entries: u32) -> Result<UserRing, i32> {
        let page = page_size();
        let max = max_entries as usize;
        if max == 0 || !max.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        let consumer = Mapping::new(fd.as_raw_fd(), page, libc::PROT_READ, 0)?;
        let producer = Mapping::new(
            fd.as_raw_fd(),
            page + 2 * max,
            libc::PROT_READ | libc::PROT_WRITE,
            page,
        )?;
        Ok(UserRing {
            consumer,
            producer,
            page,
            mask: max - 1,
            dropped: 0,
        })
    }

    fn positions(&self) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: consumer_pos is the first word of the consumer page and
        // producer_pos the first word of the producer page, both mapped and
        // 8-byte aligned for the life of `self`.
        unsafe {
            (
                &*(self.consumer.base as *const AtomicU64),
                &*(self.producer.base as *const AtomicU64),
            )
        }
    }

    /// Writes one record, waiting up to [`USER_ROOM_WAIT`] for room.
    fn produce(&mut self, record: &[u8], fd: &OwnedFd, stop: &Stop) -> Produced {
        let max = self.mask + 1;
        let total = (record.len() + HDR + 7) & !7;
        if total > max {
            return Produced::Dropped;
        }
        let deadline = std::time::Instant::now() + USER_ROOM_WAIT;
        loop {
            let (cons_pos, prod_pos) = self.positions();
            // Acquire pairs with smp_store_release(&rb->consumer_pos) in the
            // kernel's __bpf_user_ringbuf_sample_release: the kernel has read
            // the space before we reuse it (libbpf: smp_load_acquire in
            // user_ring_buffer__reserve).
            let cons = cons_pos.load(Ordering::Acquire);
            // Relaxed: we are the ring's only producer.
            let prod = prod_pos.load(Ordering::Relaxed);
            if (max as u64) - prod.wrapping_sub(cons) >= total as u64 {
                self.write(prod, record, total);
                return Produced::Written;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Produced::Dropped;
            }
            // The kernel wakes the map fd (EPOLLOUT) after a drain; it also
            // reports EPOLLOUT while any byte is free, so a record that
            // still does not fit sleeps a little instead of spinning.
            let mut pfds = [
                libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.event.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = (deadline - now).as_millis().clamp(1, 1000) as i32;
            // SAFETY: two valid pollfds.
            unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
            if pfds[1].revents != 0 {
                return Produced::Stopped;
            }
            if pfds[0].revents != 0 {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// `user_ring_buffer__reserve` at `prod` (room checked) then
    /// `user_ring_buffer__submit`.
    fn write(&mut self, prod: u64, record: &[u8], total: usize) {
        let (_, prod_pos) = self.positions();
        let hdr_off = self.page + (prod as usize & self.mask);
        // SAFETY: the header lies in the writable data area, 8-byte aligned.
        let hdr = unsafe { &*(self.producer.base.add(hdr_off) as *const AtomicU32) };
        // SAFETY: the pad word follows the header word.
        let pad = unsafe { &*(self.producer.base.add(hdr_off + 4) as *const AtomicU32) };
        // Relaxed: the kernel reads the header only after it sees the
        // producer position stored with release below (libbpf: plain stores
        // hdr->len, hdr->pad).
        hdr.store(record.len() as u32 | BUSY, Ordering::Relaxed);
        pad.store(0, Ordering::Relaxed);
        // Release pairs with smp_load_acquire(&rb->producer_pos) in the
        // kernel's __bpf_user_ringbuf_peek (libbpf: smp_store_release in
        // user_ring_buffer__reserve).
        prod_pos.store(prod + total as u64, Ordering::Release);
        let data_off = self.page + ((prod as usize + HDR) & self.mask);
        // SAFETY: the sample lies in the double-mapped data area (contiguous
        // even when it wraps), reserved above for us alone.
        unsafe {
            std::ptr::copy_nonoverlapping(
                record.as_ptr(),
                self.producer.base.add(data_off),
                record.len(),
            );
        }
        // Release pairs with smp_load_acquire(hdr) in the kernel's
        // __bpf_user_ringbuf_peek: the sample bytes are visible once BUSY is
        // clear (libbpf: smp_store_release in user_ringbuf_commit).
        hdr.store(record.len() as u32, Ordering::Release);
    }
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

/// A guest ring mapped by the proxy.
enum GuestRing {
    Perf(PerfRing),
    Bpf(BpfRing),
}

/// Offsets in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;

struct PerfRing {
    map: Mapping,
    page: usize,
    size: usize,
}

/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`.
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: usize = 8;

struct BpfRing {
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: usize,
}

impl GuestRing {
    fn perf(fd: &OwnedFd, pages: u32) -> Result<GuestRing, i32> {
        let page = page_size();
        let pages = pages as usize;
        if pages == 0 || !pages.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        let map = Mapping::new(
            fd.as_raw_fd(),
            (1 + pages) * page,
            libc::PROT_READ | libc::PROT_WRITE,
            0,
        )?;
        Ok(GuestRing::Perf(PerfRing {
            map,
            page,
            size: pages * page,
        }))
    }

    fn bpf(fd: &OwnedFd, max_entries: u32) -> Result<GuestRing, i32> {
        let page = page_size();
        let max = max_entries as usize;
        if max == 0 || !max.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        let consumer = Mapping::new(fd.as_raw_fd(), page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd.as_raw_fd(), page + 2 * max, libc::PROT_READ, page)?;
        Ok(GuestRing::Bpf(BpfRing {
            consumer,
            producer,
            page,
            mask: max - 1,
        }))
    }

    /// Moves committed records into `frame` (started afresh) until it holds
    /// `limit` bytes of them or the ring is empty; returns whether records
    /// are left, and (perf) how many samples the guest lost.
    fn consume(&mut self, frame: &mut RecordsFrame, limit: usize) -> (bool, u64) {
        frame.start();
        match self {
            GuestRing::Perf(r) => r.consume(frame, limit),
            GuestRing::Bpf(r) => (r.consume(frame, limit), 0),
        }
    }
}

impl PerfRing {
    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is an 8-byte aligned field inside the mapped first
        // page, which lives as long as `self`.
        unsafe { &*(self.map.base.add(off) as *const AtomicU64) }
    }

    /// The `len` bytes of the data area from ring position `pos`, as one or
    /// two slices (perf rings wrap and are not double-mapped).
    fn slices(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        let start = (pos as usize) % self.size;
        let first = len.min(self.size - start);
        // SAFETY: both ranges lie inside the data area (page..page+size) of
        // the mapping, which lives as long as `self`; the kernel does not
        // write them while they are between data_tail and data_head.
        unsafe {
            let data = self.map.base.add(self.page);
            (
                std::slice::from_raw_parts(data.add(start), first),
                std::slice::from_raw_parts(data, len - first),
            )
        }
    }

    /// Copies `len` bytes from ring position `pos` (a record header).
    fn copy<const N: usize>(&self, pos: u64) -> [u8; N] {
        let (a, b) = self.slices(pos, N);
        let mut out = [0u8; N];
        out[..a.len()].copy_from_slice(a);
        out[a.len()..].copy_from_slice(b);
        out
    }

    fn consume(&mut self, frame: &mut RecordsFrame, limit: usize) -> (bool, u64) {
        // Acquire pairs with the kernel's smp_store_release of data_head in
        // perf_output_put_handle: the records before head are complete.
        let head = self.atomic_u64(DATA_HEAD).load(Ordering::Acquire);
        let mut tail = self.atomic_u64(DATA_TAIL).load(Ordering::Relaxed);
        let mut lost = 0u64;
        let mut corrupt = false;
        while tail < head && frame.payload_len() < limit {
            let hdr: [u8; 8] = self.copy(tail);
            let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let size = u16::from_le_bytes([hdr[6], hdr[7]]) as usize;
            if size < 8 || size as u64 > head - tail {
                corrupt = true; // stop rather than run away
                break;
            }
            match ty {
                PERF_RECORD_SAMPLE if size >= 12 => {
                    let raw_size: [u8; 12] = self.copy(tail);
                    let raw =
                        u32::from_le_bytes([raw_size[8], raw_size[9], raw_size[10], raw_size[11]])
                            as usize;
                    let len = raw.min(size - 12);
                    let (a, b) = self.slices(tail + 12, len);
                    frame.push(a, b);
                }
                PERF_RECORD_LOST if size >= 24 => {
                    let rec: [u8; 24] = self.copy(tail);
                    lost += u64::from_le_bytes(rec[16..24].try_into().expect("8 bytes"));
                }
                _ => {}
            }
            tail += size as u64;
        }
        // Release pairs with the kernel's read of data_tail in
        // perf_output_begin (smp_mb there): our copies are done before the
        // kernel may overwrite the space.
        self.atomic_u64(DATA_TAIL).store(tail, Ordering::Release);
        (!corrupt && tail < head, lost)
    }
}

impl BpfRing {
    fn consume(&mut self, frame: &mut RecordsFrame, limit: usize) -> bool {
        // SAFETY: consumer_pos is the first word of the consumer page and
        // producer_pos the first word of the producer page, both mapped and
        // 8-byte aligned for the life of `self`.
        let (cons_pos, prod_pos) = unsafe {
            (
                &*(self.consumer.base as *const AtomicU64),
                &*(self.producer.base as *const AtomicU64),
            )
        };
        let mut cons = cons_pos.load(Ordering::Relaxed);
        // Acquire pairs with the smp_store_release of producer_pos in
        // __bpf_ringbuf_reserve.
        let prod = prod_pos.load(Ordering::Acquire);
        let mut busy = false;
        while cons < prod && frame.payload_len() < limit {
            let off = self.page + (cons as usize & self.mask);
            // SAFETY: the header is inside the double-mapped data area.
            let hdr = unsafe { &*(self.producer.base.add(off) as *const AtomicU32) };
            // Acquire pairs with the smp_store_release of the header in
            // bpf_ringbuf_commit: a record without BUSY is fully written.
            let len = hdr.load(Ordering::Acquire);
            if len & BUSY != 0 {
                busy = true;
                break;
            }
            let data_len = (len & !DISCARD) as usize;
            if len & DISCARD == 0 {
                // SAFETY: the record's data follows its header contiguously,
                // thanks to the double mapping; data_len <= max_entries.
                let data = unsafe {
                    std::slice::from_raw_parts(self.producer.base.add(off + HDR), data_len)
                };
                frame.push(data, &[]);
            }
            cons += ((data_len + HDR + 7) & !7) as u64;
        }
        // Release pairs with the smp_load_acquire of consumer_pos in
        // __bpf_ringbuf_reserve: the space is free only after our copies.
        cons_pos.store(cons, Ordering::Release);
        // A record still being written is the kernel's to finish: its commit
        // wakes us again.
        !busy && cons < prod
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
