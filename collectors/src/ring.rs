//! Drains a BPF ring buffer map through its mmap, on the machine whose
//! kernel fills it. The collector has finished writing when its test run
//! returns, so draining is a plain walk from the consumer to the producer
//! position.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut, MmapOptions};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

/// A ring buffer map, mapped for consuming.
pub(crate) struct RingReader {
    consumer: MmapMut,
    /// The producer page, then the data area mapped twice in a row, so a
    /// record that wraps reads as one slice.
    producer: Mmap,
    page: usize,
    mask: usize,
}

impl RingReader {
    /// Maps the ring buffer map `fd` of `size` data bytes (a power of two).
    pub(crate) fn new(fd: &impl AsRawFd, size: usize) -> io::Result<RingReader> {
        let page = page_size();
        let fd = fd.as_raw_fd();
        // SAFETY: `fd` is a ring buffer map: its first page is the consumer
        // position, writable by user space; the kernel keeps the mapping
        // valid for as long as it exists, whatever happens to the fd.
        let consumer = unsafe { MmapOptions::new().len(page).map_mut(fd)? };
        // SAFETY: the producer page and the double-mapped data area start
        // one page in and are read-only for user space, as the kernel maps
        // them.
        let producer = unsafe {
            MmapOptions::new()
                .offset(page as u64)
                .len(page + 2 * size)
                .map(fd)?
        };
        Ok(RingReader {
            consumer,
            producer,
            page,
            mask: size - 1,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is page-aligned, at least 8 bytes, and
        // shared with the kernel, which reads it atomically.
        unsafe { &*(self.consumer.as_ptr() as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as consumer_pos, for the producer page.
        unsafe { &*(self.producer.as_ptr() as *const AtomicU64) }
    }

    /// Appends every committed sample to `out` (samples are self-delimiting
    /// for the collectors) and returns how many there were.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<u8>) -> usize {
        let data = &self.producer[self.page..];
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        let prod = self.producer_pos().load(Ordering::Acquire);
        let mut samples = 0;
        while cons < prod {
            let at = cons as usize & self.mask;
            // SAFETY: `at` is within the first copy of the data area and
            // 8-aligned; the header's length word is written atomically by
            // the kernel.
            let word = unsafe { &*(data.as_ptr().add(at) as *const AtomicU32) };
            let header = word.load(Ordering::Acquire);
            if header & BUSY != 0 {
                break;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if header & DISCARD == 0 {
                out.extend_from_slice(&data[at + HEADER..at + HEADER + len]);
                samples += 1;
            }
            cons += ((len + HEADER + 7) & !7) as u64;
        }
        self.consumer_pos().store(cons, Ordering::Release);
        samples
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}
