//! Heap memory standing in for a guest ring's mappings, and the guest
//! kernel's side of each ring, for the unit tests and the `ring_consumer`
//! fuzz target (feature `fuzzing`).
//!
//! A [`SimRegion`] **panics** when a consumer asks it for an access outside
//! it or misaligned for its width: the consumers must have checked every
//! position and length before they access, so such a request is a bug even
//! though the real [`RawRegion`] would refuse it. Underneath it is a real
//! [`RawRegion`] over a heap allocation of exactly the region's size, so that
//! under the address sanitizer an access beyond it is caught too. Writes
//! scheduled with [`SimRegion::tamper`] land between the consumer's
//! accesses, as a hostile concurrent writer's would.
//!
//! [`SimRingbuf`], [`SimPerf`] and [`SimUserRing`] are the kernel's side:
//! `__bpf_ringbuf_reserve`/`bpf_ringbuf_commit`, `perf_output_begin`/`_end`
//! for `PERF_SAMPLE_RAW` samples and `PERF_RECORD_LOST`, and
//! `bpf_user_ringbuf_drain`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::{PerfLayout, RawRegion, RingMemory, Violation};
use crate::perf::{DATA_HEAD, DATA_OFFSET, DATA_SIZE, DATA_TAIL, LOST_SIZE};
use crate::{
    BpfRingLayout, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ,
    PERF_RECORD_LOST, PERF_RECORD_SAMPLE,
};

/// A write that lands just before a region's `at`-th access from now on.
#[derive(Clone, Debug)]
pub struct Tamper {
    /// Accesses to let through first.
    pub after: u64,
    /// Offset in the region (taken modulo its size).
    pub off: usize,
    /// The bytes (cut at the region's end).
    pub bytes: Vec<u8>,
}

/// Heap memory standing in for one mapped region of a guest ring.
#[derive(Debug)]
pub struct SimRegion {
    heap: NonNull<[u64]>,
    raw: RawRegion,
    len: usize,
    /// `(start, size)`: the data area is mapped twice, so bytes at
    /// `start + i` and `start + size + i` are the same memory.
    double: Option<(usize, usize)>,
    name: &'static str,
    tampers: RefCell<VecDeque<(u64, usize, Vec<u8>)>>,
    accesses: Cell<u64>,
}

// SAFETY: the region owns its heap allocation alone (as a `Box` would);
// `raw` points into it and moves with it. Its cells are `Send`. A ring moved
// to the thread that consumes it (the proxy's tests hand one out behind a
// mutex) is still used by one thread at a time.
unsafe impl Send for SimRegion {}

impl Drop for SimRegion {
    fn drop(&mut self) {
        // SAFETY: `heap` came from `Box::into_raw` in `new` and is freed
        // only here.
        drop(unsafe { Box::from_raw(self.heap.as_ptr()) });
    }
}

impl SimRegion {
    /// `len` zero bytes (a multiple of 8), writable by the consumer or not,
    /// with the data area `double` mapped twice.
    pub fn new(
        len: usize,
        writable: bool,
        double: Option<(usize, usize)>,
        name: &'static str,
    ) -> SimRegion {
        assert!(len.is_multiple_of(8), "{name}: region of {len} bytes");
        if let Some((start, size)) = double {
            assert!(
                start + 2 * size <= len,
                "{name}: double mapping beyond the region"
            );
        }
        let heap = NonNull::from(Box::leak(vec![0u64; len / 8].into_boxed_slice()));
        let base = heap.cast::<u8>();
        // SAFETY: the allocation holds `len` bytes, 8-byte aligned, freed
        // only when this region drops (after `raw`, which it owns).
        let raw = unsafe { RawRegion::new(base, len, writable, name) };
        SimRegion {
            heap,
            raw,
            len,
            double,
            name,
            tampers: RefCell::new(VecDeque::new()),
            accesses: Cell::new(0),
        }
    }

    /// Bytes in the region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accesses made through [`RingMemory`] so far.
    pub fn accesses(&self) -> u64 {
        self.accesses.get()
    }

    /// Schedules a write between the consumer's accesses.
    pub fn tamper(&self, t: Tamper) {
        let at = self.accesses.get() + t.after;
        let mut q = self.tampers.borrow_mut();
        let i = q.iter().position(|(a, _, _)| *a > at).unwrap_or(q.len());
        q.insert(i, (at, t.off, t.bytes));
    }

    fn base(&self) -> *mut u8 {
        self.heap.cast::<u8>().as_ptr()
    }

    /// The other side's write of `bytes` at `off` (mirrored in the double
    /// mapping). Panics outside the region (a bug of the simulation).
    pub fn poke(&self, off: usize, bytes: &[u8]) {
        assert!(
            off.checked_add(bytes.len()).is_some_and(|e| e <= self.len),
            "{}: poke of {} bytes at {off}",
            self.name,
            bytes.len()
        );
        // SAFETY: checked to lie in the allocation; the simulation is
        // single-threaded and no reference to these bytes is live.
        unsafe { std::ptr::copy(bytes.as_ptr(), self.base().add(off), bytes.len()) };
        self.mirror(off, bytes.len());
    }

    /// The other side's read of `out.len()` bytes at `off`.
    pub fn peek(&self, off: usize, out: &mut [u8]) {
        assert!(
            off.checked_add(out.len()).is_some_and(|e| e <= self.len),
            "{}: peek of {} bytes at {off}",
            self.name,
            out.len()
        );
        // SAFETY: as in `poke`, reading.
        unsafe { std::ptr::copy(self.base().add(off), out.as_mut_ptr(), out.len()) };
    }

    /// The little-endian u64 at `off`.
    pub fn peek_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        self.peek(off, &mut b);
        u64::from_le_bytes(b)
    }

    /// The little-endian u32 at `off`.
    pub fn peek_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.peek(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes a little-endian u64 at `off`.
    pub fn poke_u64(&self, off: usize, v: u64) {
        self.poke(off, &v.to_le_bytes());
    }

    /// Writes a little-endian u32 at `off`.
    pub fn poke_u32(&self, off: usize, v: u32) {
        self.poke(off, &v.to_le_bytes());
    }

    /// Makes both views of the double-mapped data agree on `[off, off + n)`
    /// (the copy just written wins).
    fn mirror(&self, off: usize, n: usize) {
        let Some((start, size)) = self.double else {
            return;
        };
        for i in off.max(start)..(off + n).min(start + 2 * size) {
            let d = (i - start) % size;
            let other = if i - start < size {
                start + size + d
            } else {
                start + d
            };
            // SAFETY: both offsets lie in the allocation (checked at `new`).
            unsafe { *self.base().add(other) = *self.base().add(i) };
        }
    }

    /// One access of the consumer: in bounds and aligned (else a panic),
    /// after the tampering due now.
    fn access(&self, off: usize, n: usize, align: usize) {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len) && off.is_multiple_of(align),
            "{}: the consumer asked for {n} bytes at offset {off} (align {align}) of a {}-byte region",
            self.name,
            self.len
        );
        let now = self.accesses.get();
        self.accesses.set(now + 1);
        loop {
            let due = self.tampers.borrow_mut().pop_front();
            match due {
                Some((at, off, bytes)) if at <= now => {
                    if self.len > 0 {
                        let off = off % self.len;
                        let n = bytes.len().min(self.len - off);
                        self.poke(off, &bytes[..n]);
                    }
                }
                Some(later) => {
                    self.tampers.borrow_mut().push_front(later);
                    return;
                }
                None => return,
            }
        }
    }
}

impl RingMemory for SimRegion {
    fn size(&self) -> usize {
        self.len
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        self.access(off, 8, 8);
        self.raw.load_u64(off, order)
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        self.access(off, 4, 4);
        self.raw.load_u32(off, order)
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        self.access(off, 8, 8);
        self.raw.store_u64(off, value, order)?;
        self.mirror(off, 8);
        Ok(())
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        self.access(off, 4, 4);
        self.raw.store_u32(off, value, order)?;
        self.mirror(off, 4);
        Ok(())
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        self.access(off, out.len(), 1);
        self.raw.read(off, out)
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        self.access(off, data.len(), 1);
        self.raw.write(off, data)?;
        self.mirror(off, data.len());
        Ok(())
    }
}

fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// A guest BPF ring buffer and its kernel producer.
#[derive(Debug)]
pub struct SimRingbuf {
    /// The consumer page (`consumer_pos`), writable by the consumer.
    pub consumer: SimRegion,
    /// The producer page and the data mapped twice, read-only to it.
    pub producer: SimRegion,
    layout: BpfRingLayout,
    prod: Cell<u64>,
}

impl SimRingbuf {
    /// An empty ring of `layout`.
    pub fn new(layout: BpfRingLayout) -> SimRingbuf {
        let (page, size) = (layout.page_size(), layout.max_entries());
        SimRingbuf {
            consumer: SimRegion::new(page, true, None, "consumer"),
            producer: SimRegion::new(page + 2 * size, false, Some((page, size)), "producer"),
            layout,
            prod: Cell::new(0),
        }
    }

    /// The ring's geometry.
    pub fn layout(&self) -> BpfRingLayout {
        self.layout
    }

    /// Starts both positions at `pos` (8-byte aligned), as a ring that has
    /// carried `pos` bytes.
    pub fn start_at(&self, pos: u64) {
        self.prod.set(pos);
        self.consumer.poke_u64(0, pos);
        self.producer.poke_u64(0, pos);
    }

    /// `__bpf_ringbuf_reserve`: a record of `len` bytes, BUSY, at the
    /// returned position; `None` when it does not fit now or ever.
    pub fn reserve(&self, len: usize) -> Option<u64> {
        let size = self.layout.max_entries() as u64;
        let len = len as u64;
        if len > size - BPF_RINGBUF_HDR_SZ as u64 {
            return None;
        }
        let prod = self.prod.get();
        let cons = self.consumer.peek_u64(0);
        let new_prod = prod + round8(len + BPF_RINGBUF_HDR_SZ as u64);
        if new_prod.wrapping_sub(cons) > size - 1 {
            return None;
        }
        let at = self.layout.page_size() + (prod & (size - 1)) as usize;
        self.producer
            .poke_u32(at, len as u32 | BPF_RINGBUF_BUSY_BIT);
        self.producer
            .poke_u32(at + 4, self.layout.record_pg_off(prod as usize));
        self.prod.set(new_prod);
        self.producer.poke_u64(0, new_prod);
        Some(prod)
    }

    /// `bpf_ringbuf_commit` of the record reserved at `pos` with `data`
    /// (its reserved length), discarded or not.
    pub fn commit(&self, pos: u64, data: &[u8], discard: bool) {
        let size = self.layout.max_entries() as u64;
        let at = self.layout.page_size() + (pos & (size - 1)) as usize;
        self.producer.poke(at + BPF_RINGBUF_HDR_SZ, data);
        let mut len = data.len() as u32;
        if discard {
            len |= BPF_RINGBUF_DISCARD_BIT;
        }
        self.producer.poke_u32(at, len);
    }

    /// `bpf_ringbuf_output`: reserve and commit; whether it fit.
    pub fn output(&self, data: &[u8], discard: bool) -> bool {
        match self.reserve(data.len()) {
            Some(pos) => {
                self.commit(pos, data, discard);
                true
            }
            None => false,
        }
    }
}

/// A guest perf event's ring and its kernel producer of `PERF_SAMPLE_RAW`
/// samples.
#[derive(Debug)]
pub struct SimPerf {
    /// The metadata page and the data, read-write to the consumer.
    pub mem: SimRegion,
    layout: PerfLayout,
    head: Cell<u64>,
    /// Samples dropped and not yet reported in a `PERF_RECORD_LOST`.
    unreported: Cell<u64>,
}

impl SimPerf {
    /// An empty ring of `layout`, its metadata page filled as
    /// `perf_event_init_userpage` does.
    pub fn new(layout: PerfLayout) -> SimPerf {
        let mem = SimRegion::new(layout.mapping_len(), true, None, "perf");
        mem.poke_u64(DATA_OFFSET, layout.page_size() as u64);
        mem.poke_u64(DATA_SIZE, layout.data_size() as u64);
        SimPerf {
            mem,
            layout,
            head: Cell::new(0),
            unreported: Cell::new(0),
        }
    }

    /// Starts head and tail at `pos` (8-byte aligned).
    pub fn start_at(&self, pos: u64) {
        self.head.set(pos);
        self.mem.poke_u64(DATA_HEAD, pos);
        self.mem.poke_u64(DATA_TAIL, pos);
    }

    /// The payload a consumer delivers for a sample of `data`: the kernel
    /// pads the raw data so that the record is a multiple of 8.
    pub fn delivered(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize((round8(data.len() as u64 + 4) - 4) as usize, 0);
        v
    }

    fn put(&self, pos: u64, bytes: &[u8]) {
        let size = self.layout.data_size();
        let start = (pos & (size as u64 - 1)) as usize;
        let first = bytes.len().min(size - start);
        let page = self.layout.page_size();
        self.mem.poke(page + start, &bytes[..first]);
        self.mem.poke(page, &bytes[first..]);
    }

    /// Writes one record if it fits; whether it did.
    fn record(&self, ty: u32, body: &[u8]) -> bool {
        let size = self.layout.data_size() as u64;
        let rec = 8 + body.len() as u64;
        let head = self.head.get();
        let tail = self.mem.peek_u64(DATA_TAIL);
        if rec > u64::from(u16::MAX) || head.saturating_sub(tail) + rec > size {
            return false;
        }
        let mut bytes = Vec::with_capacity(rec as usize);
        bytes.extend_from_slice(&ty.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&(rec as u16).to_le_bytes());
        bytes.extend_from_slice(body);
        self.put(head, &bytes);
        self.head.set(head + rec);
        self.mem.poke_u64(DATA_HEAD, head + rec);
        true
    }

    /// `bpf_perf_event_output` of `data`: first the `PERF_RECORD_LOST` of
    /// earlier drops if it fits, then the sample, or one more drop.
    pub fn output(&self, data: &[u8]) -> bool {
        let lost = self.unreported.get();
        if lost > 0 {
            let mut body = [0u8; LOST_SIZE - 8];
            body[8..].copy_from_slice(&lost.to_le_bytes());
            if self.record(PERF_RECORD_LOST, &body) {
                self.unreported.set(0);
            }
        }
        let mut body = Vec::new();
        let raw = SimPerf::delivered(data);
        body.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        body.extend_from_slice(&raw);
        let ok = self.unreported.get() == 0 && self.record(PERF_RECORD_SAMPLE, &body);
        if !ok {
            self.unreported.set(self.unreported.get() + 1);
        }
        ok
    }
}

/// A guest user ring buffer and its kernel consumer.
#[derive(Debug)]
pub struct SimUserRing {
    /// The consumer page (`consumer_pos`), read-only to the producer.
    pub consumer: SimRegion,
    /// The producer page and the data mapped twice, writable by it.
    pub producer: SimRegion,
    layout: BpfRingLayout,
    cons: Cell<u64>,
}

impl SimUserRing {
    /// An empty ring of `layout`.
    pub fn new(layout: BpfRingLayout) -> SimUserRing {
        let (page, size) = (layout.page_size(), layout.max_entries());
        SimUserRing {
            consumer: SimRegion::new(page, false, None, "consumer"),
            producer: SimRegion::new(page + 2 * size, true, Some((page, size)), "producer"),
            layout,
            cons: Cell::new(0),
        }
    }

    /// Starts both positions at `pos` (8-byte aligned).
    pub fn start_at(&self, pos: u64) {
        self.cons.set(pos);
        self.consumer.poke_u64(0, pos);
        self.producer.poke_u64(0, pos);
    }

    /// `bpf_user_ringbuf_drain`: the committed samples, in order, as the
    /// kernel's `__bpf_user_ringbuf_peek` accepts them; `Err` where it would
    /// refuse the ring.
    pub fn drain(&self) -> Result<Vec<Vec<u8>>, &'static str> {
        let size = self.layout.max_entries() as u64;
        let page = self.layout.page_size();
        let mut cons = self.cons.get();
        let prod = self.producer.peek_u64(0);
        let mut out = Vec::new();
        if prod < cons || prod - cons > size || prod & 7 != 0 {
            return Err("producer position");
        }
        while cons < prod {
            let at = page + (cons & (size - 1)) as usize;
            let hdr = self.producer.peek_u32(at);
            if hdr & BPF_RINGBUF_BUSY_BIT != 0 {
                break;
            }
            let len = u64::from(hdr & !BPF_RINGBUF_DISCARD_BIT);
            let total = round8(len + BPF_RINGBUF_HDR_SZ as u64);
            if total > prod - cons {
                return Err("sample length");
            }
            if hdr & BPF_RINGBUF_DISCARD_BIT == 0 {
                let mut v = vec![0u8; len as usize];
                self.producer.peek(at + BPF_RINGBUF_HDR_SZ, &mut v);
                out.push(v);
            }
            cons += total;
        }
        self.cons.set(cons);
        self.consumer.poke_u64(0, cons);
        Ok(out)
    }
}
