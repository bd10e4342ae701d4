//! `BPF_MAP_TYPE_RINGBUF` mirror: layout, user mappings and the producer.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::host::{BpfShape, HostRing};
use crate::mmap::{generic_checks, Checked, MmapRequest, Run};
use crate::{page_size, Push};

/// Record header flag: the record is reserved but not yet committed
/// (`BPF_RINGBUF_BUSY_BIT` in `linux/bpf.h`).
pub const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
/// Record header flag: the record was discarded; consumers skip it
/// (`BPF_RINGBUF_DISCARD_BIT`).
pub const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
/// Size of the record header `{u32 len; u32 pg_off}` (`BPF_RINGBUF_HDR_SZ`).
pub const BPF_RINGBUF_HDR_SZ: usize = 8;
/// `RINGBUF_PGOFF`: pages of `struct bpf_ringbuf` in front of the consumer
/// page (its wait queue, irq_work and locks; never mappable). It is 1 on every
/// configuration where those fields fit in one page, and it only matters for
/// the `pg_off` header field, which consumers do not read.
pub const KERNEL_RINGBUF_PGOFF: u32 = 1;

/// Consumer and producer position pages (`RINGBUF_POS_PAGES`).
pub(crate) const RINGBUF_POS_PAGES: usize = 2;
/// `RINGBUF_MAX_RECORD_SZ`.
const RINGBUF_MAX_RECORD_SZ: usize = u32::MAX as usize / 4;

/// Geometry of a BPF ring buffer of `max_entries` data bytes, as user space
/// sees it through the map fd: `[consumer page][producer page][data][data]`,
/// `2 * page + 2 * max_entries` bytes mappable from offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfRingLayout {
    page_size: usize,
    max_entries: usize,
}

impl BpfRingLayout {
    /// The layout for `max_entries` with the system page size; EINVAL unless
    /// `max_entries` is a power of two and a multiple of the page size, E2BIG
    /// above `RINGBUF_MAX_DATA_SZ` (as `ringbuf_map_alloc`).
    pub fn new(max_entries: u32) -> Result<Self, i32> {
        Self::with_page_size(max_entries, page_size())
    }

    /// As [`BpfRingLayout::new`] for an explicit page size (a power of two).
    pub fn with_page_size(max_entries: u32, page_size: usize) -> Result<Self, i32> {
        if !page_size.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        let max = max_entries as usize;
        if !max.is_power_of_two() || max & (page_size - 1) != 0 {
            return Err(libc::EINVAL);
        }
        let max_data = ((1u64 << 24) - RINGBUF_POS_PAGES as u64 - u64::from(KERNEL_RINGBUF_PGOFF))
            * page_size as u64;
        if max as u64 > max_data {
            return Err(libc::E2BIG);
        }
        Ok(BpfRingLayout {
            page_size,
            max_entries: max,
        })
    }

    /// Size of the data area in bytes (the map's `max_entries`).
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The page size the layout is built on.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// `max_entries - 1`: positions are taken modulo the data size with it.
    pub fn mask(&self) -> usize {
        self.max_entries - 1
    }

    /// Bytes of backing memory: consumer page, producer page, data once.
    pub fn file_len(&self) -> usize {
        RINGBUF_POS_PAGES * self.page_size + self.max_entries
    }

    /// Bytes mappable through the map fd from offset 0: both position pages
    /// and the data area twice (the size of the kernel's `vmap`).
    pub fn mappable_len(&self) -> usize {
        RINGBUF_POS_PAGES * self.page_size + 2 * self.max_entries
    }

    /// `(offset, length)` of libbpf's read-write consumer-page mapping.
    pub fn consumer_mapping(&self) -> (i64, usize) {
        (0, self.page_size)
    }

    /// `(offset, length)` of libbpf's read-only mapping of the producer page
    /// followed by the double-mapped data area.
    pub fn producer_mapping(&self) -> (i64, usize) {
        (self.page_size as i64, self.page_size + 2 * self.max_entries)
    }

    /// The `pg_off` the kernel stores in the header of a record at producer
    /// position `pos`: pages from the start of `struct bpf_ringbuf` to the
    /// header (`bpf_ringbuf_rec_pg_off`).
    pub fn record_pg_off(&self, pos: usize) -> u32 {
        let from_consumer_page = RINGBUF_POS_PAGES * self.page_size + (pos & self.mask());
        KERNEL_RINGBUF_PGOFF + (from_consumer_page / self.page_size) as u32
    }

    /// The kernel's verdict on `mmap(addr, len, prot, flags, map_fd, offset)`
    /// for a kernel-producer ring buffer map: the generic `do_mmap` checks,
    /// then `bpf_map_mmap` (not shared → EINVAL), `ringbuf_map_mmap_kern`
    /// (writable other than exactly the consumer page → EPERM) and
    /// `remap_vmalloc_range` (beyond [`BpfRingLayout::mappable_len`] → EINVAL).
    pub fn check_mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<(), i32> {
        let req = MmapRequest::new(addr, len, prot, flags, offset);
        self.check(&req).map(|_| ())
    }

    pub(crate) fn check(&self, req: &MmapRequest) -> Result<Checked, i32> {
        let c = generic_checks(req, self.page_size)?;
        if !c.shared {
            return Err(libc::EINVAL);
        }
        if c.write && (c.pgoff != 0 || c.len != self.page_size) {
            return Err(libc::EPERM);
        }
        let start = c
            .pgoff
            .checked_mul(self.page_size as u64)
            .ok_or(libc::EINVAL)?;
        match start.checked_add(c.len as u64) {
            Some(end) if end <= self.mappable_len() as u64 => Ok(c),
            _ => Err(libc::EINVAL),
        }
    }

    /// The file ranges behind user-visible bytes `[start, start + len)`:
    /// the data pages twice, back to back.
    pub(crate) fn runs(&self, start: usize, len: usize) -> Vec<Run> {
        let end = start + len;
        // End of the first copy of the data area; beyond it the same file
        // pages appear again.
        let wrap = RINGBUF_POS_PAGES * self.page_size + self.max_entries;
        let mut runs = Vec::with_capacity(2);
        if start < wrap {
            runs.push(Run {
                file_off: start as u64,
                len: end.min(wrap) - start,
            });
        }
        if end > wrap {
            let from = start.max(wrap);
            runs.push(Run {
                file_off: (from - self.max_entries) as u64,
                len: end - from,
            });
        }
        runs
    }
}

/// Host memory standing in for one BPF ring buffer map.
///
/// Shared (`Arc`) between the preload's hooks, which call
/// [`HostRingbuf::map_for`] and [`HostRingbuf::pending`], and the single
/// [`RingWriter`] the mirror thread drives.
#[derive(Debug)]
pub struct HostRingbuf {
    pub(crate) ring: HostRing<BpfShape>,
    overflow: AtomicU64,
}

impl HostRingbuf {
    /// Zero-filled memory for a ring of `max_entries` data bytes (both
    /// positions 0). Fails with EINVAL/E2BIG for sizes the kernel refuses.
    pub fn new(max_entries: u32) -> io::Result<Self> {
        Self::with_linear(max_entries, false)
    }

    /// The same, for a program that maps the memfd itself
    /// ([`crate::RingFile`]): the file holds the data area twice and
    /// records are written contiguously across the end of the first copy.
    pub fn new_linear(max_entries: u32) -> io::Result<Self> {
        Self::with_linear(max_entries, true)
    }

    fn with_linear(max_entries: u32, linear: bool) -> io::Result<Self> {
        let layout = BpfRingLayout::new(max_entries).map_err(io::Error::from_raw_os_error)?;
        Ok(HostRingbuf {
            ring: HostRing::new(BpfShape {
                layout,
                user: false,
                linear,
            })?,
            overflow: AtomicU64::new(0),
        })
    }

    /// The ring's geometry.
    pub fn layout(&self) -> BpfRingLayout {
        self.ring.shape().layout
    }

    /// Performs `mmap(addr, len, prot, flags, map_fd, offset)` as the kernel
    /// would for the ring buffer map: refuses with the kernel's errno what it
    /// refuses (see [`BpfRingLayout::check_mmap`]), otherwise returns a mapping
    /// of the requested part of `[consumer][producer][data][data]`, the data
    /// pages mapped twice back to back. The address hint and flags
    /// (`MAP_FIXED`, `MAP_FIXED_NOREPLACE`, `MAP_POPULATE`, …) are honoured as
    /// by `mmap`. The mapping belongs to the caller (`munmap` it as usual) and
    /// stays valid after `self` is dropped. Read-only mappings cannot be made
    /// writable with `mprotect`, as with the kernel.
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

    /// Whether the consumer has not consumed everything yet: producer and
    /// consumer positions differ. This is when the kernel's
    /// `ringbuf_map_poll_kern` reports `EPOLLIN`.
    pub fn pending(&self) -> bool {
        self.producer_pos() != self.consumer_pos()
    }

    /// The consumer position (load-acquire, as `ringbuf_avail_data_sz`).
    pub fn consumer_pos(&self) -> usize {
        // Pairs with the smp_store_release(r->consumer_pos) in libbpf's
        // ringbuf_process_ring; only the value is used.
        self.ring.consumer_pos().load(Ordering::Acquire)
    }

    /// The producer position (load-acquire, as `ringbuf_avail_data_sz`).
    pub fn producer_pos(&self) -> usize {
        // Pairs with the writer's store-release in RingWriter::reserve; only
        // the value is used.
        self.ring.producer_pos().load(Ordering::Acquire)
    }

    /// Records dropped because the ring was full (see [`Push::Full`]).
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// The ring's only producer; `None` once it has been taken.
    pub fn take_writer(self: &Arc<Self>) -> Option<RingWriter> {
        if !self.ring.take_end() {
            return None;
        }
        let prod = self.producer_pos();
        Some(RingWriter {
            rb: Arc::clone(self),
            prod,
        })
    }
}

/// A reserved, not yet committed record (the kernel's sample pointer).
#[derive(Debug)]
pub(crate) struct Reservation {
    /// Producer position of the header.
    pos: usize,
    /// Sample size as reserved.
    size: u32,
}

/// The producer of one [`HostRingbuf`]: `bpf_ringbuf_output`, i.e.
/// `__bpf_ringbuf_reserve` then `bpf_ringbuf_commit`, one record at a time.
#[derive(Debug)]
pub struct RingWriter {
    rb: Arc<HostRingbuf>,
    /// Our copy of `producer_pos`: we are its only writer, as the kernel is
    /// under `rb->spinlock`.
    prod: usize,
}

/// Bytes a record of `size` takes (header, padded to 8), or
/// [`Push::TooLarge`] above `RINGBUF_MAX_RECORD_SZ` or the ring's size.
fn record_len(size: usize, layout: &BpfRingLayout) -> Result<usize, Push> {
    if size > RINGBUF_MAX_RECORD_SZ {
        return Err(Push::TooLarge);
    }
    let len = (size + BPF_RINGBUF_HDR_SZ + 7) & !7;
    if len > layout.max_entries {
        return Err(Push::TooLarge);
    }
    Ok(len)
}

impl RingWriter {
    /// Appends `record` as one committed sample, like `bpf_ringbuf_output`
    /// that succeeds; [`Push::Full`] (counted in the overflow counter) when
    /// `producer_pos + total - consumer_pos > max_entries - 1` (the kernel's
    /// `new_prod_pos - cons_pos > rb->mask`); [`Push::TooLarge`] above
    /// `RINGBUF_MAX_RECORD_SZ` or when `8 + len` rounded up to 8 exceeds
    /// `max_entries`. Never touches unconsumed bytes.
    pub fn push(&mut self, record: &[u8]) -> Push {
        self.push_inner(record, false)
    }

    /// Appends `record` as a discarded sample (`bpf_ringbuf_discard`): it
    /// takes space until consumed but the consumer skips it.
    pub fn push_discarded(&mut self, record: &[u8]) -> Push {
        self.push_inner(record, true)
    }

    /// Records dropped because the ring was full.
    pub fn overflow(&self) -> u64 {
        self.rb.overflow()
    }

    /// Whether a record of `size` bytes would be written now, by the same
    /// rule as [`RingWriter::push`], without counting an overflow when it
    /// would not (for a caller that prefers to wait for the consumer).
    pub fn fits(&self, size: usize) -> bool {
        record_len(size, &self.rb.layout()).is_ok_and(|len| self.has_room(len))
    }

    /// `__bpf_ringbuf_reserve`'s test: full when `new_prod - cons > mask`.
    fn has_room(&self, len: usize) -> bool {
        // Acquire pairs with smp_store_release(r->consumer_pos, ..) in
        // libbpf's ringbuf_process_ring, which comes after the sample callback
        // has read the record: every byte below this position has been read
        // before we overwrite it. (Kernel: smp_load_acquire in
        // __bpf_ringbuf_reserve.)
        let cons = self.rb.ring.consumer_pos().load(Ordering::Acquire);
        self.prod.wrapping_add(len).wrapping_sub(cons) <= self.rb.layout().mask()
    }

    /// The ring this writer produces into.
    pub fn ring(&self) -> &Arc<HostRingbuf> {
        &self.rb
    }

    fn push_inner(&mut self, record: &[u8], discard: bool) -> Push {
        match self.reserve(record.len()) {
            Ok(r) => {
                self.commit(r, record, discard);
                Push::Written
            }
            Err(p) => p,
        }
    }

    /// `__bpf_ringbuf_reserve`: claims `8 + size` bytes rounded up to 8,
    /// writes the header `size | BUSY` and `pg_off`, publishes the new
    /// producer position.
    pub(crate) fn reserve(&mut self, size: usize) -> Result<Reservation, Push> {
        let layout = self.rb.layout();
        let len = record_len(size, &layout)?;
        if !self.has_room(len) {
            self.rb.overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Push::Full);
        }
        let prod = self.prod;
        let new_prod = prod.wrapping_add(len);
        let off = prod & layout.mask();
        // Relaxed: no consumer reads this header before it observes the
        // producer position stored below, whose release orders these stores
        // before it (kernel: plain stores hdr->len, hdr->pg_off).
        self.rb
            .ring
            .hdr_len(off)
            .store(size as u32 | BPF_RINGBUF_BUSY_BIT, Ordering::Relaxed);
        self.rb
            .ring
            .hdr_pg_off(off)
            .store(layout.record_pg_off(prod), Ordering::Relaxed);
        // Release pairs with smp_load_acquire(r->producer_pos) in
        // ringbuf_process_ring: a consumer that sees the new position also
        // sees the BUSY header, so it stops there instead of reading stale
        // bytes (kernel: smp_store_release in __bpf_ringbuf_reserve).
        self.rb
            .ring
            .producer_pos()
            .store(new_prod, Ordering::Release);
        self.prod = new_prod;
        Ok(Reservation {
            pos: prod,
            size: size as u32,
        })
    }

    /// Writes the sample bytes, then `bpf_ringbuf_commit`: the final length
    /// (BUSY cleared, DISCARD set if asked) stored with release.
    pub(crate) fn commit(&mut self, r: Reservation, data: &[u8], discard: bool) {
        debug_assert_eq!(data.len(), r.size as usize);
        let layout = self.rb.layout();
        let data_ptr = self.rb.ring.data();
        let max = layout.max_entries;
        let (start, first) = if self.rb.ring.shape().linear {
            // Contiguous past the first copy's end (see BpfShape::linear).
            ((r.pos & layout.mask()) + BPF_RINGBUF_HDR_SZ, data.len())
        } else {
            let start = (r.pos + BPF_RINGBUF_HDR_SZ) & layout.mask();
            (start, data.len().min(max - start))
        };
        // SAFETY: `[start, start + first)` and `[0, data.len() - first)` lie in
        // the data area (the record is at most `max_entries` bytes; a linear
        // ring's area is twice that and `first` is the whole), belong to
        // the record reserved above, and no consumer reads them until the
        // release store of the header below; the source is a distinct slice.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), data_ptr.add(start), first);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(first), data_ptr, data.len() - first);
        }
        let mut new_len = r.size;
        if discard {
            new_len |= BPF_RINGBUF_DISCARD_BIT;
        }
        // Release pairs with smp_load_acquire(len_ptr) in ringbuf_process_ring:
        // a consumer that sees BUSY cleared also sees the sample bytes written
        // above (kernel: xchg(&hdr->len, new_len) in bpf_ringbuf_commit, a
        // full barrier of which the consumer relies on the release half only).
        self.rb
            .ring
            .hdr_len(r.pos & layout.mask())
            .store(new_len, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
