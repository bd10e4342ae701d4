//! Test-only ports of libbpf's consumers (`src/ringbuf.c`
//! `ring_buffer__add`/`ringbuf_process_ring`, `src/libbpf.c`
//! `perf_buffer__open_cpu_buf`/`perf_event_read_simple`/
//! `perf_buffer__process_record`) and of its user ring buffer producer
//! (`user_ring_buffer__reserve`/`__submit`), using only the mappings
//! `map_for` returns, with libbpf's atomics. Plus record payload helpers.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::{
    HostPerfRing, HostRingbuf, HostUserRing, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
};

/// libbpf's `struct ring` for one ring buffer map.
pub(crate) struct LibbpfRing {
    consumer_pos: *mut c_void,
    producer_pos: *mut c_void,
    data: *const u8,
    mask: usize,
    page_size: usize,
}

impl LibbpfRing {
    /// `ring_buffer__add`'s two mmaps.
    pub(crate) fn open(rb: &HostRingbuf) -> Self {
        let layout = rb.layout();
        let page_size = layout.page_size();
        let max_entries = layout.max_entries();
        let consumer_pos = rb
            .map_for(
                ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                0,
            )
            .expect("consumer page");
        let producer_pos = rb
            .map_for(
                ptr::null_mut(),
                page_size + 2 * max_entries,
                libc::PROT_READ,
                libc::MAP_SHARED,
                page_size as i64,
            )
            .expect("producer page and data");
        Self::from_mappings(consumer_pos, producer_pos, max_entries)
    }

    /// The same over `ring_buffer__add`'s two mmaps of a real map fd.
    pub(crate) fn open_fd(fd: i32, max_entries: usize) -> Self {
        let page_size = crate::page_size();
        // SAFETY: fresh shared mappings of a ring buffer map fd.
        let (consumer_pos, producer_pos) = unsafe {
            (
                libc::mmap(
                    ptr::null_mut(),
                    page_size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                ),
                libc::mmap(
                    ptr::null_mut(),
                    page_size + 2 * max_entries,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    page_size as i64,
                ),
            )
        };
        assert_ne!(consumer_pos, libc::MAP_FAILED);
        assert_ne!(producer_pos, libc::MAP_FAILED);
        Self::from_mappings(consumer_pos, producer_pos, max_entries)
    }

    fn from_mappings(consumer_pos: *mut c_void, producer_pos: *mut c_void, max: usize) -> Self {
        let page_size = crate::page_size();
        LibbpfRing {
            consumer_pos,
            producer_pos,
            // SAFETY: the mapping is page + 2 * max_entries long.
            data: unsafe { producer_pos.cast::<u8>().add(page_size) },
            mask: max - 1,
            page_size,
        }
    }

    /// The producer position as libbpf's `ring__producer_pos` reads it.
    pub(crate) fn producer_pos(&self) -> usize {
        self.producer().load(Ordering::Acquire)
    }

    pub(crate) fn data_ptr(&self) -> *const u8 {
        self.data
    }

    fn consumer(&self) -> &AtomicUsize {
        // SAFETY: start of the live read-write consumer mapping.
        unsafe { &*self.consumer_pos.cast::<AtomicUsize>() }
    }

    fn producer(&self) -> &AtomicUsize {
        // SAFETY: start of the live read-only producer mapping.
        unsafe { &*self.producer_pos.cast::<AtomicUsize>() }
    }

    /// `ringbuf_process_ring(r, n)`: calls `cb(sample)` for each committed,
    /// non-discarded record; a negative return stops, as in libbpf.
    pub(crate) fn process(&mut self, n: i64, mut cb: impl FnMut(&[u8]) -> i32) -> i64 {
        let mut cnt: i64 = 0;
        let mut cons_pos = self.consumer().load(Ordering::Acquire);
        loop {
            let mut got_new_data = false;
            let prod_pos = self.producer().load(Ordering::Acquire);
            while cons_pos < prod_pos {
                // SAFETY: `cons_pos & mask` is inside the first data copy and
                // 8-aligned; the header word is read atomically (acquire).
                let len_ptr = unsafe { self.data.add(cons_pos & self.mask) };
                // SAFETY: as above.
                let len = unsafe { &*len_ptr.cast::<AtomicU32>() }.load(Ordering::Acquire);
                if len & BPF_RINGBUF_BUSY_BIT != 0 {
                    return cnt;
                }
                got_new_data = true;
                cons_pos += roundup_len(len);
                if len & BPF_RINGBUF_DISCARD_BIT == 0 {
                    // SAFETY: a committed record of `len` bytes, contiguous
                    // thanks to the double mapping, not rewritten until we
                    // advance consumer_pos past it.
                    let sample =
                        unsafe { std::slice::from_raw_parts(len_ptr.add(8), len as usize) };
                    let err = cb(sample);
                    if err < 0 {
                        self.consumer().store(cons_pos, Ordering::Release);
                        return i64::from(err);
                    }
                    cnt += 1;
                }
                self.consumer().store(cons_pos, Ordering::Release);
                if cnt >= n {
                    return cnt;
                }
            }
            if !got_new_data {
                return cnt;
            }
        }
    }
}

impl Drop for LibbpfRing {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in open(), with their lengths
        // (ringbuf_free_ring).
        unsafe {
            libc::munmap(self.consumer_pos, self.page_size);
            libc::munmap(self.producer_pos, self.page_size + 2 * (self.mask + 1));
        }
    }
}

/// libbpf's `roundup_len`.
pub(crate) fn roundup_len(len: u32) -> usize {
    let len = (len << 2) >> 2;
    let len = len as usize + 8;
    len.div_ceil(8) * 8
}

/// What `perf_buffer__process_record` hands to the callbacks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PerfEvent<'a> {
    /// `sample_cb(ctx, cpu, s->data, s->size)`, plus the header's misc.
    Sample { misc: u16, data: &'a [u8] },
    /// `lost_cb(ctx, cpu, s->lost)`, plus the id.
    Lost { id: u64, lost: u64 },
}

/// libbpf's `user_ring_buffer__reserve` + `__submit`/`__discard` on a
/// mapping made by `map_for` exactly as `user_ring_buffer__new` makes it.
pub(crate) struct LibbpfProducer {
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    mask: usize,
}

// SAFETY: plain shared memory used by one thread at a time.
unsafe impl Send for LibbpfProducer {}

impl LibbpfProducer {
    pub(crate) fn new(r: &HostUserRing) -> LibbpfProducer {
        let l = r.layout();
        let page = l.page_size();
        let consumer = r
            .map_for(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                0,
            )
            .unwrap();
        let producer = r
            .map_for(
                std::ptr::null_mut(),
                page + 2 * l.max_entries(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                page as i64,
            )
            .unwrap();
        LibbpfProducer {
            consumer: consumer.cast(),
            producer: producer.cast(),
            page,
            mask: l.mask(),
        }
    }

    /// `(header offset in the producer mapping, sample pointer)`.
    pub(crate) fn reserve(&self, size: usize) -> Option<(usize, *mut u8)> {
        // SAFETY: both position words are mapped and aligned.
        let (cons_pos, prod_pos) = unsafe {
            (
                &*self.consumer.cast::<AtomicUsize>(),
                &*self.producer.cast::<AtomicUsize>(),
            )
        };
        // Acquire pairs with the reader's store-release of consumer_pos
        // (libbpf: smp_load_acquire in user_ring_buffer__reserve).
        let cons = cons_pos.load(Ordering::Acquire);
        // Acquire: libbpf's smp_load_acquire(rb->producer_pos).
        let prod = prod_pos.load(Ordering::Acquire);
        let max = self.mask + 1;
        let avail = max - (prod - cons);
        let total = (size + BPF_RINGBUF_HDR_SZ + 7) & !7;
        if total > max || avail < total {
            return None;
        }
        let hdr = self.page + (prod & self.mask);
        // SAFETY: the header lies inside the writable data area.
        unsafe {
            self.producer
                .add(hdr)
                .cast::<u32>()
                .write(size as u32 | BPF_RINGBUF_BUSY_BIT);
            self.producer.add(hdr + 4).cast::<u32>().write(0);
        }
        // Release pairs with the reader's acquire of producer_pos
        // (libbpf: smp_store_release in user_ring_buffer__reserve).
        prod_pos.store(prod + total, Ordering::Release);
        let sample = self.page + ((prod + BPF_RINGBUF_HDR_SZ) & self.mask);
        // SAFETY: inside the double-mapped data area.
        Some((hdr, unsafe { self.producer.add(sample) }))
    }

    pub(crate) fn commit(&self, hdr: usize, discard: bool) {
        // SAFETY: the header reserved above, aligned.
        let len = unsafe { &*self.producer.add(hdr).cast::<AtomicU32>() };
        // Relaxed: we wrote it ourselves.
        let mut v = len.load(Ordering::Relaxed) & !BPF_RINGBUF_BUSY_BIT;
        if discard {
            v |= BPF_RINGBUF_DISCARD_BIT;
        }
        // Release pairs with the reader's acquire of the header (libbpf:
        // smp_store_release in user_ringbuf_commit).
        len.store(v, Ordering::Release);
    }

    /// `user_ring_buffer__reserve` then `__submit` of `data`; whether it fit.
    pub(crate) fn submit(&self, data: &[u8]) -> bool {
        let Some((hdr, sample)) = self.reserve(data.len()) else {
            return false;
        };
        // SAFETY: the sample reserved above has `data.len()` bytes, inside
        // the double-mapped data area; the source is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), sample, data.len()) };
        self.commit(hdr, false);
        true
    }
}

/// libbpf's `struct perf_cpu_buf` for one perf ring.
pub(crate) struct LibbpfPerf {
    base: *mut c_void,
    mmap_size: usize,
    page_size: usize,
    copy: Vec<u8>,
}

impl LibbpfPerf {
    /// `perf_buffer__open_cpu_buf`'s mmap.
    pub(crate) fn open(ring: &HostPerfRing) -> Self {
        let page_size = crate::page_size();
        let mmap_size = ring.page_cnt() * page_size;
        let base = ring
            .map_for(
                ptr::null_mut(),
                mmap_size + page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                0,
            )
            .expect("perf mmap");
        Self::from_mapping(base, ring.page_cnt())
    }

    /// The same over a real perf event fd.
    pub(crate) fn open_fd(fd: i32, page_cnt: usize) -> Self {
        let page_size = crate::page_size();
        // SAFETY: a fresh shared mapping of a perf event fd.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                (page_cnt + 1) * page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Self::from_mapping(base, page_cnt)
    }

    fn from_mapping(base: *mut c_void, page_cnt: usize) -> Self {
        let page_size = crate::page_size();
        LibbpfPerf {
            base,
            mmap_size: page_cnt * page_size,
            page_size,
            copy: Vec::new(),
        }
    }

    /// `data_head` as `ring_buffer_read_head` reads it.
    pub(crate) fn data_head(&self) -> u64 {
        self.field(1024).load(Ordering::Acquire)
    }

    /// A copy of the data area.
    pub(crate) fn data(&self) -> Vec<u8> {
        // SAFETY: the data area of the live mapping.
        unsafe { std::slice::from_raw_parts(self.base().add(self.page_size), self.mmap_size) }
            .to_vec()
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.cast()
    }

    fn field(&self, off: usize) -> &AtomicU64 {
        // SAFETY: an 8-aligned field of the live metadata page.
        unsafe { &*self.base.cast::<u8>().add(off).cast::<AtomicU64>() }
    }

    /// `perf_event_read_simple` with `perf_buffer__process_record` as the
    /// callback; `cb` returning false stops (LIBBPF_PERF_EVENT_DONE). Also
    /// reports for each record the offset it started at in the data area.
    pub(crate) fn read(&mut self, mut cb: impl FnMut(PerfEvent<'_>, usize) -> bool) {
        let data_head = self.field(1024).load(Ordering::Acquire);
        // libbpf: `__u64 data_tail = header->data_tail;` (we are its writer).
        let mut data_tail = self.field(1032).load(Ordering::Relaxed);
        // SAFETY: the data area follows the metadata page in the mapping.
        let base = unsafe { self.base.cast::<u8>().add(self.page_size) };
        while data_head != data_tail {
            let off = (data_tail as usize) & (self.mmap_size - 1);
            // SAFETY: `off` is inside the data area; headers are 8 bytes at
            // 8-aligned offsets so they never wrap.
            let ehdr = unsafe { base.add(off) };
            // SAFETY: as above.
            let ehdr_size = unsafe { ehdr.add(6).cast::<u16>().read() } as usize;
            let rec: &[u8] = if off + ehdr_size > self.mmap_size {
                let len_first = self.mmap_size - off;
                let len_secnd = ehdr_size - len_first;
                if self.copy.len() < ehdr_size {
                    self.copy = vec![0; ehdr_size];
                }
                // SAFETY: both pieces are inside the data area and published.
                unsafe {
                    ptr::copy_nonoverlapping(ehdr, self.copy.as_mut_ptr(), len_first);
                    ptr::copy_nonoverlapping(
                        base,
                        self.copy.as_mut_ptr().add(len_first),
                        len_secnd,
                    );
                }
                &self.copy[..ehdr_size]
            } else {
                // SAFETY: a published record inside the data area.
                unsafe { std::slice::from_raw_parts(ehdr, ehdr_size) }
            };
            let cont = cb(parse_perf(rec), off);
            data_tail += ehdr_size as u64;
            if !cont {
                break;
            }
        }
        self.field(1032).store(data_tail, Ordering::Release);
    }
}

impl Drop for LibbpfPerf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open() (perf_buffer__free_cpu_buf).
        unsafe { libc::munmap(self.base, self.mmap_size + self.page_size) };
    }
}

/// `perf_buffer__process_record`'s view of one record.
pub(crate) fn parse_perf(rec: &[u8]) -> PerfEvent<'_> {
    let ty = u32::from_ne_bytes(rec[0..4].try_into().unwrap());
    let misc = u16::from_ne_bytes(rec[4..6].try_into().unwrap());
    let size = u16::from_ne_bytes(rec[6..8].try_into().unwrap()) as usize;
    assert_eq!(size, rec.len());
    match ty {
        crate::PERF_RECORD_SAMPLE => {
            let n = u32::from_ne_bytes(rec[8..12].try_into().unwrap()) as usize;
            PerfEvent::Sample {
                misc,
                data: &rec[12..12 + n],
            }
        }
        crate::PERF_RECORD_LOST => PerfEvent::Lost {
            id: u64::from_ne_bytes(rec[8..16].try_into().unwrap()),
            lost: u64::from_ne_bytes(rec[16..24].try_into().unwrap()),
        },
        other => panic!("unknown perf sample type {other}"),
    }
}

/// Length of test record `seq`: between 8 and `max` bytes.
pub(crate) fn len_of(seq: u64, max: usize) -> usize {
    8 + (seq.wrapping_mul(2_654_435_761) % (max as u64 - 7)) as usize
}

/// Contents of test record `seq`: `seq` little-endian, then a pattern.
pub(crate) fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|j| {
            (seq as u8)
                .wrapping_mul(7)
                .wrapping_add((j as u8).wrapping_mul(13))
                ^ (j >> 8) as u8
        })
        .collect();
    let head = seq.to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&head[..n]);
    v
}

/// Checks a record made by `payload(seq, len_of(seq, max))`; returns `seq`.
pub(crate) fn decode(rec: &[u8], max: usize) -> u64 {
    assert!(rec.len() >= 8, "record of {} bytes", rec.len());
    let seq = u64::from_le_bytes(rec[..8].try_into().unwrap());
    assert_eq!(rec.len(), len_of(seq, max), "length of record {seq}");
    assert!(
        rec == payload(seq, rec.len()).as_slice(),
        "contents of record {seq}"
    );
    seq
}
