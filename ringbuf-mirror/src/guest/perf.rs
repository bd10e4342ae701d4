//! The proxy's consumer of a guest perf event's ring.

use std::sync::atomic::Ordering;

use super::{check_positions, Consumed, RecordSink, RingMemory, Violation};
use crate::perf::{DATA_HEAD, DATA_OFFSET, DATA_SIZE, DATA_TAIL, HEADER_SIZE, LOST_SIZE};
use crate::{PERF_RECORD_LOST, PERF_RECORD_SAMPLE};

/// The geometry of a perf ring as the proxy mapped it: the metadata page,
/// then `data_pages` pages of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerfLayout {
    page_size: usize,
    data_pages: usize,
}

impl PerfLayout {
    /// `data_pages` (a power of two, as `perf_mmap` requires) pages of
    /// `page_size` (a power of two that holds the metadata page's fields);
    /// `EINVAL` otherwise, `E2BIG` when the size does not fit a `usize`.
    pub fn new(page_size: usize, data_pages: usize) -> Result<PerfLayout, i32> {
        if !page_size.is_power_of_two() || page_size < DATA_SIZE + 8 {
            return Err(libc::EINVAL);
        }
        if !data_pages.is_power_of_two() {
            return Err(libc::EINVAL);
        }
        data_pages
            .checked_add(1)
            .and_then(|n| n.checked_mul(page_size))
            .ok_or(libc::E2BIG)?;
        Ok(PerfLayout {
            page_size,
            data_pages,
        })
    }

    /// Bytes of the whole mapping: metadata page and data.
    pub fn mapping_len(&self) -> usize {
        (self.data_pages + 1) * self.page_size
    }

    /// Bytes of data.
    pub fn data_size(&self) -> usize {
        self.data_pages * self.page_size
    }

    /// Pages of data.
    pub fn data_pages(&self) -> usize {
        self.data_pages
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }
}

/// Consumes a guest perf ring as libbpf's `perf_event_read_simple` does,
/// checking every position and record size it reads: the raw payload of
/// each `PERF_RECORD_SAMPLE` goes to the sink, `PERF_RECORD_LOST` counts are
/// summed, other records are skipped.
///
/// `mem` is the proxy's read-write mapping of the event (metadata page then
/// the data), `layout` what the proxy mapped.
#[derive(Debug)]
pub struct PerfConsumer<M> {
    mem: M,
    layout: PerfLayout,
    /// The tail we stored last: only we write it.
    tail: u64,
}

impl<M: RingMemory> PerfConsumer<M> {
    /// A consumer of the ring in `mem`. The kernel fills `data_offset` and
    /// `data_size` of the metadata page when the ring is mapped; when they
    /// are set they must describe `layout`.
    pub fn new(mem: M, layout: PerfLayout) -> Result<Self, Violation> {
        if mem.size() < layout.mapping_len() {
            return Err(Violation::RegionTooSmall {
                region: "perf",
                have: mem.size(),
                need: layout.mapping_len(),
            });
        }
        // Relaxed: written once by perf_event_init_userpage at mmap time.
        let offset = mem.load_u64(DATA_OFFSET, Ordering::Relaxed)?;
        let size = mem.load_u64(DATA_SIZE, Ordering::Relaxed)?;
        let (want_offset, want_size) = (layout.page_size as u64, layout.data_size() as u64);
        if (offset, size) != (0, 0) && (offset, size) != (want_offset, want_size) {
            return Err(Violation::PerfGeometry {
                offset,
                size,
                want_offset,
                want_size,
            });
        }
        // Relaxed: checked against data_head before it is used.
        let tail = mem.load_u64(DATA_TAIL, Ordering::Relaxed)?;
        Ok(PerfConsumer { mem, layout, tail })
    }

    /// Copies `out.len()` (at most the data size) bytes of the data area
    /// from ring position `pos`: the area wraps and is not double mapped.
    fn read_at(&self, pos: u64, out: &mut [u8]) -> Result<(), Violation> {
        let size = self.layout.data_size();
        let start = (pos & (size as u64 - 1)) as usize;
        let first = out.len().min(size - start);
        let (a, b) = out.split_at_mut(first);
        let data = self.layout.page_size;
        self.mem.read(data + start, a)?;
        self.mem.read(data, b)
    }

    /// Moves sample payloads into `sink` until it holds `limit` bytes or the
    /// ring is empty; also returns the samples the ring reported lost.
    /// Stops (leaving the ring as it is) at the first failed check.
    pub fn consume(
        &mut self,
        sink: &mut dyn RecordSink,
        limit: usize,
    ) -> Result<Consumed, Violation> {
        let size = self.layout.data_size() as u64;
        // Acquire pairs with the smp_store_release of data_head in the
        // kernel's perf_output_put_handle: the records before head are
        // complete.
        let head = self.mem.load_u64(DATA_HEAD, Ordering::Acquire)?;
        // Relaxed: we are the only writer of data_tail.
        let found = self.mem.load_u64(DATA_TAIL, Ordering::Relaxed)?;
        if found != self.tail {
            return Err(Violation::Moved {
                what: "perf tail",
                expected: self.tail,
                found,
            });
        }
        let mut tail = self.tail;
        check_positions(tail, head, size)?;
        let mut lost = 0u64;
        while tail < head && sink.taken() < limit {
            let avail = head - tail;
            let mut hdr = [0u8; HEADER_SIZE];
            self.read_at(tail, &mut hdr)?;
            let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let rec = u64::from(u16::from_le_bytes([hdr[6], hdr[7]]));
            if rec < HEADER_SIZE as u64 || rec & 7 != 0 || rec > avail {
                return Err(Violation::PerfRecordSize {
                    pos: tail,
                    size: rec,
                    avail,
                });
            }
            let rec = rec as usize;
            match ty {
                // {header, u32 size, u8 data[size]} with PERF_SAMPLE_RAW only
                // (libbpf's attr); other sample layouts would put other
                // fields here, so the payload is bounded by the record.
                PERF_RECORD_SAMPLE if rec >= HEADER_SIZE + 4 => {
                    let mut raw = [0u8; 4];
                    self.read_at(tail + HEADER_SIZE as u64, &mut raw)?;
                    let len = (u32::from_le_bytes(raw) as usize).min(rec - HEADER_SIZE - 4);
                    let out = sink.record(len);
                    self.read_at(tail + HEADER_SIZE as u64 + 4, out)?;
                }
                // {header, u64 id, u64 lost}
                PERF_RECORD_LOST if rec >= LOST_SIZE => {
                    let mut n = [0u8; 8];
                    self.read_at(tail + 16, &mut n)?;
                    lost = lost.saturating_add(u64::from_le_bytes(n));
                }
                _ => {}
            }
            tail += rec as u64;
        }
        // Release pairs with the kernel's read of data_tail in
        // perf_output_begin (after an smp_mb there): our copies are done
        // before the kernel may overwrite the space.
        self.mem.store_u64(DATA_TAIL, tail, Ordering::Release)?;
        self.tail = tail;
        Ok(Consumed {
            more: tail < head,
            lost,
        })
    }
}
