//! `BPF_MAP_TYPE_USER_RINGBUF` mirror: the host program is the producer
//! (libbpf's `user_ring_buffer__reserve`/`__submit`), the mirror reads the
//! committed records as the kernel's `__bpf_user_ringbuf_peek` does.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::host::{BpfShape, HostRing};
use crate::mmap::{generic_checks, MmapRequest};
use crate::ringbuf::BpfRingLayout;
use crate::{BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ};

impl BpfRingLayout {
    /// The kernel's verdict on `mmap(addr, len, prot, flags, map_fd, offset)`
    /// for a user ring buffer map: the generic `do_mmap` checks, then
    /// `bpf_map_mmap` (not shared → EINVAL), `ringbuf_map_mmap_user`
    /// (writable at page offset 0, the consumer page → EPERM; the producer
    /// page and data may be writable) and `remap_vmalloc_range` (beyond
    /// [`BpfRingLayout::mappable_len`] → EINVAL).
    pub fn check_user_mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<(), i32> {
        let req = MmapRequest::new(addr, len, prot, flags, offset);
        self.check_user(&req).map(|_| ())
    }

    pub(crate) fn check_user(&self, req: &MmapRequest) -> Result<crate::mmap::Checked, i32> {
        let c = generic_checks(req, self.page_size())?;
        if !c.shared {
            return Err(libc::EINVAL);
        }
        if c.write && c.pgoff == 0 {
            return Err(libc::EPERM);
        }
        let start = c
            .pgoff
            .checked_mul(self.page_size() as u64)
            .ok_or(libc::EINVAL)?;
        match start.checked_add(c.len as u64) {
            Some(end) if end <= self.mappable_len() as u64 => Ok(c),
            _ => Err(libc::EINVAL),
        }
    }
}

/// Host memory standing in for one user ring buffer map. libbpf's
/// `user_ring_buffer__new` maps the consumer page read-only and the producer
/// page with the double-mapped data read-write; the single
/// [`UserRingReader`] consumes what the program submits.
#[derive(Debug)]
pub struct HostUserRing {
    pub(crate) ring: HostRing<BpfShape>,
}

impl HostUserRing {
    /// Zero-filled memory for a ring of `max_entries` data bytes. Fails with
    /// EINVAL/E2BIG for sizes the kernel refuses.
    pub fn new(max_entries: u32) -> io::Result<Self> {
        Self::with_linear(max_entries, false)
    }

    /// The same, for a program that maps the memfd itself (see
    /// [`crate::HostRingbuf::new_linear`]): records are read contiguously
    /// across the end of the first copy of the data area.
    pub fn new_linear(max_entries: u32) -> io::Result<Self> {
        Self::with_linear(max_entries, true)
    }

    fn with_linear(max_entries: u32, linear: bool) -> io::Result<Self> {
        let layout = BpfRingLayout::new(max_entries).map_err(io::Error::from_raw_os_error)?;
        Ok(HostUserRing {
            ring: HostRing::new(BpfShape {
                layout,
                user: true,
                linear,
            })?,
        })
    }

    /// The ring's geometry.
    pub fn layout(&self) -> BpfRingLayout {
        self.ring.shape().layout
    }

    /// Performs `mmap` as the kernel would for the user ring buffer map (see
    /// [`BpfRingLayout::check_user_mmap`]); otherwise as
    /// [`crate::HostRingbuf::map_for`]: `[consumer][producer][data][data]`,
    /// the mapping owned by the caller.
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

    /// Whether the producer has free space: the condition of the kernel's
    /// `ringbuf_map_poll_user` for `EPOLLOUT` (data size below the ring size).
    pub fn has_space(&self) -> bool {
        self.producer_pos().wrapping_sub(self.consumer_pos()) < self.layout().max_entries()
    }

    /// Whether submitted or reserved records are waiting to be read.
    pub fn pending(&self) -> bool {
        self.producer_pos() != self.consumer_pos()
    }

    /// The consumer position.
    pub fn consumer_pos(&self) -> usize {
        // Pairs with our own store-release in UserRingReader::take (the
        // kernel's __bpf_user_ringbuf_sample_release); only the value is used.
        self.ring.consumer_pos().load(Ordering::Acquire)
    }

    /// The producer position.
    pub fn producer_pos(&self) -> usize {
        // Pairs with smp_store_release(rb->producer_pos) in libbpf's
        // user_ring_buffer__reserve; only the value is used.
        self.ring.producer_pos().load(Ordering::Acquire)
    }

    /// The ring's only consumer; `None` once it has been taken.
    pub fn take_reader(self: &Arc<Self>) -> Option<UserRingReader> {
        if !self.ring.take_end() {
            return None;
        }
        Some(UserRingReader {
            ring: Arc::clone(self),
        })
    }
}

/// The consumer of one [`HostUserRing`]: `__bpf_user_ringbuf_peek` and
/// `__bpf_user_ringbuf_sample_release`, record after record.
#[derive(Debug)]
pub struct UserRingReader {
    ring: Arc<HostUserRing>,
}

impl UserRingReader {
    /// The ring this reader consumes.
    pub fn ring(&self) -> &Arc<HostUserRing> {
        &self.ring
    }

    /// Takes every committed record in order: skips discarded ones, stops
    /// at a record still BUSY (or a header the kernel would refuse), and
    /// publishes the new consumer position so the producer sees the space.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        let r = &self.ring.ring;
        let layout = r.shape().layout;
        let mask = layout.mask();
        let max = layout.max_entries();
        let mut out = Vec::new();
        // Relaxed: we are the only writer of consumer_pos.
        let mut cons = r.consumer_pos().load(Ordering::Relaxed);
        // Acquire pairs with smp_store_release(rb->producer_pos) in libbpf's
        // user_ring_buffer__reserve: the BUSY headers below it are visible
        // (kernel: smp_load_acquire in __bpf_user_ringbuf_peek).
        let prod = r.producer_pos().load(Ordering::Acquire);
        while cons != prod {
            if prod.wrapping_sub(cons) > max || !prod.is_multiple_of(8) {
                break; // corrupt positions: the kernel answers EINVAL
            }
            let off = cons & mask;
            // Acquire pairs with smp_store_release(&hdr->len) in libbpf's
            // user_ring_buffer__submit/__discard: a header without BUSY
            // comes with the sample bytes written before it (kernel:
            // smp_load_acquire(hdr) in __bpf_user_ringbuf_peek).
            let len = r.hdr_len(off).load(Ordering::Acquire);
            if len & BPF_RINGBUF_BUSY_BIT != 0 {
                break;
            }
            let sample = (len & !(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)) as usize;
            let total = (sample + BPF_RINGBUF_HDR_SZ + 7) & !7;
            if total > prod.wrapping_sub(cons) {
                break; // the kernel answers EINVAL and consumes nothing
            }
            if len & BPF_RINGBUF_DISCARD_BIT == 0 {
                let (start, first) = if r.shape().linear {
                    (off + BPF_RINGBUF_HDR_SZ, sample)
                } else {
                    let start = (off + BPF_RINGBUF_HDR_SZ) & mask;
                    (start, sample.min(max - start))
                };
                let mut rec = Vec::with_capacity(sample);
                // SAFETY: `[start, start + first)` and `[0, sample - first)`
                // lie in the data area; the producer does not touch a
                // committed record before we release it below.
                unsafe {
                    rec.extend_from_slice(std::slice::from_raw_parts(r.data().add(start), first));
                    rec.extend_from_slice(std::slice::from_raw_parts(r.data(), sample - first));
                }
                out.push(rec);
            }
            cons = cons.wrapping_add(total);
        }
        // Release pairs with smp_load_acquire(rb->consumer_pos) in libbpf's
        // user_ring_buffer__reserve: the space is reused only after our
        // copies (kernel: smp_store_release in
        // __bpf_user_ringbuf_sample_release).
        r.consumer_pos().store(cons, Ordering::Release);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libbpf_port::LibbpfProducer;

    fn record(i: u32) -> Vec<u8> {
        (0..(i % 61)).map(|b| (b ^ i) as u8).collect()
    }

    #[test]
    fn kernel_mmap_rules() {
        let r = HostUserRing::new(4 * crate::page_size() as u32).unwrap();
        let l = r.layout();
        let p = l.page_size();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let null = std::ptr::null_mut();
        assert_eq!(
            l.check_user_mmap(null, p, rw, libc::MAP_SHARED, 0),
            Err(libc::EPERM)
        );
        assert_eq!(
            l.check_user_mmap(null, p, libc::PROT_READ, libc::MAP_SHARED, 0),
            Ok(())
        );
        let prod_len = p + 2 * l.max_entries();
        assert_eq!(
            l.check_user_mmap(null, prod_len, rw, libc::MAP_SHARED, p as i64),
            Ok(())
        );
        assert_eq!(
            l.check_user_mmap(null, prod_len + p, rw, libc::MAP_SHARED, p as i64),
            Err(libc::EINVAL)
        );
        assert_eq!(
            l.check_user_mmap(null, p, rw, libc::MAP_PRIVATE, p as i64),
            Err(libc::EINVAL)
        );
        assert_eq!(
            r.map_for(null, p, rw, libc::MAP_SHARED, 0),
            Err(libc::EPERM)
        );
    }

    /// The real kernel, where this process may create BPF maps: `map_for`
    /// must agree with `mmap` on a real user ring buffer map fd.
    #[test]
    fn map_for_agrees_with_the_kernel_when_bpf_is_available() {
        let p = crate::page_size() as i64;
        let m = 4 * p;
        let Some(kfd) = crate::kernel::user_ringbuf_map(m as u32) else {
            eprintln!("skipped: cannot create a BPF user ring buffer map here");
            return;
        };
        let r = HostUserRing::new(m as u32).unwrap();
        let offs = [
            0,
            p,
            2 * p,
            3 * p,
            2 * p + m,
            2 * p + 2 * m - p,
            2 * p + 2 * m,
            8,
        ];
        let lens = [
            1,
            p as usize,
            2 * p as usize,
            (p + 2 * m) as usize,
            (2 * p + 2 * m) as usize,
            (2 * p + 2 * m) as usize + 1,
            0,
        ];
        let prots = [
            libc::PROT_READ,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_WRITE,
            libc::PROT_NONE,
        ];
        let flagss = [
            libc::MAP_SHARED,
            libc::MAP_PRIVATE,
            libc::MAP_SHARED_VALIDATE,
            0,
        ];
        for &off in &offs {
            for &len in &lens {
                for &prot in &prots {
                    for &flags in &flagss {
                        let k = crate::kernel::try_mmap(kfd.0, len, prot, flags, off);
                        let ours = match r.map_for(std::ptr::null_mut(), len, prot, flags, off) {
                            Ok(q) => {
                                // SAFETY: unmapping what map_for just mapped.
                                unsafe { libc::munmap(q, len) };
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        assert_eq!(
                            ours, k,
                            "len {len:#x} prot {prot} flags {flags:#x} off {off:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reader_takes_committed_skips_discarded_stops_at_busy() {
        let r = Arc::new(HostUserRing::new(crate::page_size() as u32).unwrap());
        let mut reader = r.take_reader().unwrap();
        assert!(r.take_reader().is_none());
        let p = LibbpfProducer::new(&r);
        let (h1, s1) = p.reserve(3).unwrap();
        // SAFETY: 3 reserved bytes.
        unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), s1, 3) };
        p.commit(h1, false);
        let (h2, _) = p.reserve(5).unwrap();
        p.commit(h2, true);
        let (h3, s3) = p.reserve(2).unwrap();
        let (h4, s4) = p.reserve(1).unwrap();
        // SAFETY: reserved bytes.
        unsafe {
            s4.write(9);
            s3.write(1);
            s3.add(1).write(2);
        }
        p.commit(h4, false);
        assert_eq!(reader.take(), vec![b"abc".to_vec()]);
        assert!(r.pending());
        p.commit(h3, false);
        assert_eq!(reader.take(), vec![vec![1, 2], vec![9]]);
        assert!(!r.pending());
        assert!(r.has_space());
    }

    #[test]
    fn concurrent_libbpf_producer() {
        const N: u32 = 200_000;
        let r = Arc::new(HostUserRing::new(crate::page_size() as u32).unwrap());
        let mut reader = r.take_reader().unwrap();
        let p = LibbpfProducer::new(&r);
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                let rec = record(i);
                let Some((h, s)) = p.reserve(rec.len()) else {
                    std::thread::yield_now();
                    continue;
                };
                // SAFETY: `rec.len()` reserved bytes.
                unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), s, rec.len()) };
                p.commit(h, i % 7 == 3);
                i += 1;
            }
        });
        let mut want = (0..N).filter(|i| i % 7 != 3).map(record);
        let mut got = 0usize;
        while !producer.is_finished() || r.pending() {
            for rec in reader.take() {
                assert_eq!(Some(rec), want.next(), "record {got}");
                got += 1;
            }
        }
        producer.join().unwrap();
        assert!(reader.take().is_empty());
        assert_eq!(want.next(), None, "after {got} records");
    }
}
