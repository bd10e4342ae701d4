//! Perf event ring mirror (`PERF_COUNT_SW_BPF_OUTPUT` with `PERF_SAMPLE_RAW`):
//! metadata page, user mapping and the producer.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::host::{HostRing, PerfShape};
use crate::{page_size, Push};

/// `PERF_RECORD_LOST`: `{header, u64 id, u64 lost}`.
pub const PERF_RECORD_LOST: u32 = 2;
/// `PERF_RECORD_SAMPLE`; with `PERF_SAMPLE_RAW` only: `{header, u32 size,
/// u8 data[size]}`.
pub const PERF_RECORD_SAMPLE: u32 = 9;
/// `PERF_RECORD_MISC_KERNEL`: the `misc` of a sample output from kernel
/// context, as BPF programs other than uprobes produce.
pub const PERF_RECORD_MISC_KERNEL: u16 = 1;

/// Offsets in `struct perf_event_mmap_page` (`linux/perf_event.h`).
const CAPABILITIES: usize = 40;
const USERPAGE_SIZE_FIELD: usize = 72;
pub(crate) const DATA_HEAD: usize = 1024;
pub(crate) const DATA_TAIL: usize = 1032;
pub(crate) const DATA_OFFSET: usize = 1040;
pub(crate) const DATA_SIZE: usize = 1048;
/// `offsetof(struct perf_event_mmap_page, __reserved)`, which
/// `perf_event_init_userpage` stores in `size`.
const USERPAGE_SIZE: u32 = 96;
/// `cap_bit0_is_deprecated`, set by `perf_event_init_userpage`.
const CAP_BIT0_IS_DEPRECATED: u64 = 1 << 1;
/// `sizeof(struct perf_event_header)`.
pub(crate) const HEADER_SIZE: usize = 8;
/// A `PERF_RECORD_LOST` without `sample_id_all` (libbpf does not set it).
pub(crate) const LOST_SIZE: usize = 24;

/// Host memory standing in for one perf event's ring buffer: the metadata
/// page (`struct perf_event_mmap_page`) then `page_cnt` data pages.
///
/// Shared (`Arc`) between the preload's hooks ([`HostPerfRing::map_for`],
/// [`HostPerfRing::pending`]) and the single [`PerfWriter`].
#[derive(Debug)]
pub struct HostPerfRing {
    pub(crate) ring: HostRing<PerfShape>,
    event_id: u64,
    lost_total: AtomicU64,
}

impl HostPerfRing {
    /// Memory for a ring of `page_cnt` data pages (a power of two, as libbpf
    /// and `perf_mmap` require; EINVAL otherwise) of the event whose id
    /// (`PERF_EVENT_IOC_ID`) goes in `PERF_RECORD_LOST` records. The metadata
    /// page is filled as `perf_event_init_userpage` does: `data_offset =
    /// page_size`, `data_size = page_cnt * page_size`, `size`,
    /// `cap_bit0_is_deprecated`; head and tail 0.
    pub fn new(page_cnt: usize, event_id: u64) -> io::Result<Self> {
        let page_size = page_size();
        if !page_cnt.is_power_of_two() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        page_cnt
            .checked_add(1)
            .and_then(|n| n.checked_mul(page_size))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::E2BIG))?;
        let ring = HostPerfRing {
            ring: HostRing::new(PerfShape {
                page_size,
                page_cnt,
            })?,
            event_id,
            lost_total: AtomicU64::new(0),
        };
        ring.put_u64(CAPABILITIES, CAP_BIT0_IS_DEPRECATED);
        ring.put_u32(USERPAGE_SIZE_FIELD, USERPAGE_SIZE);
        ring.put_u64(DATA_OFFSET, page_size as u64);
        ring.put_u64(DATA_SIZE, ring.data_size() as u64);
        Ok(ring)
    }

    fn page_size(&self) -> usize {
        self.ring.shape().page_size
    }

    /// Number of data pages.
    pub fn page_cnt(&self) -> usize {
        self.ring.shape().page_cnt
    }

    /// Size of the data area in bytes (`data_size`).
    pub fn data_size(&self) -> usize {
        self.page_cnt() * self.page_size()
    }

    /// Length of the one mapping libbpf makes: `(1 + page_cnt) * page_size`.
    pub fn mmap_len(&self) -> usize {
        self.ring.shape().mmap_len()
    }

    /// Performs libbpf's `mmap(NULL, (1 + page_cnt) * page, PROT_READ |
    /// PROT_WRITE, MAP_SHARED, fd, 0)` (or any request the kernel would grant,
    /// see [`crate::RingFile::check_mmap`]), honouring the address hint and
    /// flags. The data area is mapped once: records wrap inside it. The
    /// mapping belongs to the caller and outlives `self`.
    pub fn map_for(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<*mut c_void, i32> {
        self.ring.map_for(addr, len, prot, flags, offset)
    }

    /// Whether the consumer has not consumed everything: `data_head !=
    /// data_tail`.
    pub fn pending(&self) -> bool {
        self.data_head() != self.data_tail()
    }

    /// `data_head` (load-acquire; the writer stores it with release).
    pub fn data_head(&self) -> u64 {
        self.atomic(DATA_HEAD).load(Ordering::Acquire)
    }

    /// `data_tail` (load-acquire; pairs with libbpf's
    /// `ring_buffer_write_tail`).
    pub fn data_tail(&self) -> u64 {
        self.atomic(DATA_TAIL).load(Ordering::Acquire)
    }

    /// Samples dropped on the host because the ring was full (the kernel's
    /// `event->lost_samples`).
    pub fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }

    /// The ring's only producer; `None` once it has been taken.
    pub fn take_writer(self: &Arc<Self>) -> Option<PerfWriter> {
        if !self.ring.take_end() {
            return None;
        }
        let head = self.data_head();
        Some(PerfWriter {
            ring: Arc::clone(self),
            head,
            lost: 0,
        })
    }

    fn atomic(&self, off: usize) -> &AtomicU64 {
        self.ring.page_u64(off, self.page_size())
    }

    fn put_u64(&self, off: usize, v: u64) {
        self.atomic(off).store(v, Ordering::Relaxed);
    }

    fn put_u32(&self, off: usize, v: u32) {
        debug_assert!(off & 3 == 0 && off + 4 <= self.page_size());
        // SAFETY: an aligned u32 field of the metadata page, written before
        // the ring is shared with anyone.
        unsafe { self.ring.base().add(off).cast::<u32>().write(v) }
    }

    /// Copies `bytes` into the data area at position `pos`, wrapping at its
    /// end (perf rings are not double mapped).
    fn write_wrapped(&self, pos: u64, bytes: &[u8]) {
        let size = self.data_size();
        debug_assert!(bytes.len() <= size);
        let off = (pos as usize) & (size - 1);
        let first = bytes.len().min(size - off);
        // SAFETY: the data area is `[page, page + size)` of the mapping; both
        // pieces are inside it. They lie between data_head and the free-space
        // limit checked against data_tail, so the consumer does not read them
        // until the release store of data_head.
        unsafe {
            let data = self.ring.base().add(self.page_size());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(off), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
        }
    }
}

/// `(u32 size field, whole record size)` of a sample of `raw_len` bytes as
/// the kernel lays it out (the size field includes the padding to 8), or
/// `None` when it does not fit the 16-bit header size.
fn sample_sizes(raw_len: usize) -> Option<(usize, usize)> {
    let raw_size = (raw_len.checked_add(4 + 7)? & !7) - 4;
    let size = HEADER_SIZE + 4 + raw_size;
    u16::try_from(size).ok()?;
    Some((raw_size, size))
}

/// The producer of one [`HostPerfRing`]: what the kernel's
/// `bpf_perf_event_output` → `perf_event_output` does for a
/// `PERF_SAMPLE_RAW` event, in non-overwrite mode.
#[derive(Debug)]
pub struct PerfWriter {
    ring: Arc<HostPerfRing>,
    /// Our copy of `data_head` (the kernel's `rb->head`).
    head: u64,
    /// Lost samples not yet reported (the kernel's `rb->lost`).
    lost: u64,
}

impl PerfWriter {
    /// Writes one `PERF_RECORD_SAMPLE` with `misc = PERF_RECORD_MISC_KERNEL`
    /// (see [`PerfWriter::push_sample_misc`]).
    pub fn push_sample(&mut self, raw: &[u8]) -> Push {
        self.push_sample_misc(PERF_RECORD_MISC_KERNEL, raw)
    }

    /// Writes one `PERF_RECORD_SAMPLE` as `perf_prepare_sample` +
    /// `perf_output_sample` lay it out: header `{9, misc, size}`, `u32 size`
    /// = `raw.len() + 4` rounded up to 8, minus 4 (the size *includes* the
    /// padding, as the kernel reports it), the bytes, then the padding
    /// skipped, not zeroed (the consumer sees stale bytes there, as with the
    /// kernel).
    /// If samples were lost since the last report, a `PERF_RECORD_LOST` with
    /// their count is written first, in the same reservation (as
    /// `__perf_output_begin`). When both do not fit in the free space
    /// (`CIRC_SPACE(head, tail, data_size)`), nothing is written, the sample
    /// is counted lost and [`Push::Full`] returned. A record too large for
    /// the 16-bit header size gives [`Push::TooLarge`], uncounted.
    pub fn push_sample_misc(&mut self, misc: u16, raw: &[u8]) -> Push {
        let Some((raw_size, size)) = sample_sizes(raw.len()) else {
            return Push::TooLarge;
        };
        let size16 = size as u16;
        if !self.has_space(self.reservation(size)) {
            self.lose();
            return Push::Full;
        }
        let mut pos = self.head;
        if self.lost > 0 {
            pos = self.write_lost(pos, self.lost);
            self.lost = 0;
        }
        let mut hdr = [0u8; HEADER_SIZE + 4];
        hdr[0..4].copy_from_slice(&PERF_RECORD_SAMPLE.to_ne_bytes());
        hdr[4..6].copy_from_slice(&misc.to_ne_bytes());
        hdr[6..8].copy_from_slice(&size16.to_ne_bytes());
        hdr[8..12].copy_from_slice(&(raw_size as u32).to_ne_bytes());
        self.ring.write_wrapped(pos, &hdr);
        pos += hdr.len() as u64;
        self.ring.write_wrapped(pos, raw);
        // The padding is skipped, not written (`__output_skip`): it keeps
        // whatever an earlier lap of the ring left there, as in the kernel.
        pos += raw_size as u64;
        self.publish(pos);
        Push::Written
    }

    /// Reports `count` samples lost elsewhere (a `PERF_RECORD_LOST` read from
    /// the guest's ring) together with any lost here: writes one
    /// `PERF_RECORD_LOST {misc 0, id, lost}` when 24 bytes are free, else
    /// keeps the sum to report before the next sample that fits and returns
    /// [`Push::Full`] (the count is kept, not dropped). `count == 0` only
    /// flushes a pending report, if any.
    pub fn push_lost(&mut self, count: u64) -> Push {
        let lost = self.lost.saturating_add(count);
        if lost == 0 {
            return Push::Written;
        }
        if !self.has_space(LOST_SIZE) {
            self.lost = lost;
            return Push::Full;
        }
        let pos = self.write_lost(self.head, lost);
        self.lost = 0;
        self.publish(pos);
        Push::Written
    }

    /// Whether a sample of `raw_len` bytes would be written now, by the same
    /// rule as [`PerfWriter::push_sample`], without counting a loss when it
    /// would not (for a caller that prefers to wait for the consumer).
    pub fn fits(&self, raw_len: usize) -> bool {
        sample_sizes(raw_len).is_some_and(|(_, size)| self.has_space(self.reservation(size)))
    }

    /// Bytes a sample of `size` takes now: with the `PERF_RECORD_LOST` that
    /// goes first in the same reservation when losses are pending.
    fn reservation(&self, size: usize) -> usize {
        size + if self.lost > 0 { LOST_SIZE } else { 0 }
    }

    /// Lost samples not yet reported in a `PERF_RECORD_LOST`.
    pub fn lost_pending(&self) -> u64 {
        self.lost
    }

    /// Samples dropped on the host because the ring was full.
    pub fn lost_total(&self) -> u64 {
        self.ring.lost_total()
    }

    /// The ring this writer produces into.
    pub fn ring(&self) -> &Arc<HostPerfRing> {
        &self.ring
    }

    /// `ring_buffer_has_space`: `CIRC_SPACE(head, tail, data_size) >= size`,
    /// i.e. at most `data_size - 1` bytes are ever unconsumed.
    fn has_space(&self, size: usize) -> bool {
        // Acquire pairs with ring_buffer_write_tail()'s smp_store_release in
        // libbpf's perf_event_read_simple, issued after the consumer read
        // the records: the bytes below the tail are no longer read when we
        // overwrite them. (The kernel gets this ordering from a READ_ONCE plus
        // the control dependency of this very check, its barrier "A".)
        let tail = self.ring.atomic(DATA_TAIL).load(Ordering::Acquire);
        let mask = self.ring.data_size() as u64 - 1;
        let space = tail.wrapping_sub(self.head.wrapping_add(1)) & mask;
        space >= size as u64
    }

    fn lose(&mut self) {
        self.lost = self.lost.saturating_add(1);
        self.ring.lost_total.fetch_add(1, Ordering::Relaxed);
    }

    fn write_lost(&self, pos: u64, lost: u64) -> u64 {
        let mut rec = [0u8; LOST_SIZE];
        rec[0..4].copy_from_slice(&PERF_RECORD_LOST.to_ne_bytes());
        rec[4..6].copy_from_slice(&0u16.to_ne_bytes());
        rec[6..8].copy_from_slice(&(LOST_SIZE as u16).to_ne_bytes());
        rec[8..16].copy_from_slice(&self.ring.event_id.to_ne_bytes());
        rec[16..24].copy_from_slice(&lost.to_ne_bytes());
        self.ring.write_wrapped(pos, &rec);
        pos + LOST_SIZE as u64
    }

    /// `perf_output_put_handle`: makes everything up to `head` visible.
    fn publish(&mut self, head: u64) {
        // Release pairs with ring_buffer_read_head()'s smp_load_acquire in
        // perf_event_read_simple: a consumer that sees the new head sees the
        // records written before it (kernel: smp_wmb, barrier "B", then
        // WRITE_ONCE(data_head)).
        self.ring.atomic(DATA_HEAD).store(head, Ordering::Release);
        self.head = head;
    }
}

#[cfg(test)]
mod tests;
