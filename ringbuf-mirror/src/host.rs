//! What every host ring is made of: a sealed memfd of the ring's size, the
//! kernel's rules for `mmap` of the ring's fd, and the one end (writer or
//! reader) the mirror may take.
//!
//! [`HostRingbuf`](crate::HostRingbuf), [`HostPerfRing`](crate::HostPerfRing)
//! and [`HostUserRing`](crate::HostUserRing) differ only in their [`Shape`]
//! (how large the memfd is, which mappings the kernel grants and which file
//! ranges make them) and in what their single writer or reader does. The
//! rest lives here once: creating the memory, answering `map_for` with the
//! kernel's verdict, handing out the one end, and the position words of the
//! two BPF ring kinds, which share a layout.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::mmap::{generic_checks, map_runs, Checked, MmapRequest, Run};
use crate::ringbuf::RINGBUF_POS_PAGES;
use crate::shm::SharedMem;
use crate::BpfRingLayout;

/// What one kind of host ring looks like to `mmap`.
pub(crate) trait Shape {
    /// The memfd's name (it shows in `/proc/PID/maps`).
    fn memfd(&self) -> &'static str;

    /// Bytes of backing memory.
    fn file_len(&self) -> usize;

    /// The kernel's verdict on one `mmap` of the ring's fd.
    fn check(&self, req: &MmapRequest) -> Result<Checked, i32>;

    /// The file ranges, back to back, behind a mapping the kernel granted.
    fn runs(&self, checked: &Checked) -> Vec<Run>;
}

/// A BPF ring buffer or user ring buffer map: the layout
/// `[consumer page][producer page][data][data]` both share, and who
/// produces (which decides which pages may be mapped writable).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BpfShape {
    pub(crate) layout: BpfRingLayout,
    /// A user ring buffer (`ringbuf_map_mmap_user`: the program produces),
    /// else a ring buffer (`ringbuf_map_mmap_kern`: the kernel produces).
    pub(crate) user: bool,
    /// The memfd holds the data area twice, `[consumer][producer][data]
    /// [data]`, for a program that maps the file itself (under a
    /// supervisor) rather than through [`HostRing::map_for`]: the program's
    /// mapping is then file-linear, so records are written and read
    /// contiguously across the end of the first copy, never split, and the
    /// bytes past it are the second copy's — just what the kernel's double
    /// mapping shows.
    pub(crate) linear: bool,
}

/// A perf event's ring: the metadata page, then `page_cnt` data pages,
/// mapped once (`perf_mmap`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PerfShape {
    pub(crate) page_size: usize,
    pub(crate) page_cnt: usize,
}

impl Shape for BpfShape {
    fn memfd(&self) -> &'static str {
        if self.user {
            "telebpf-user-ringbuf"
        } else {
            "telebpf-ringbuf"
        }
    }

    fn file_len(&self) -> usize {
        self.layout.file_len()
            + if self.linear {
                self.layout.max_entries()
            } else {
                0
            }
    }

    fn check(&self, req: &MmapRequest) -> Result<Checked, i32> {
        if self.user {
            self.layout.check_user(req)
        } else {
            self.layout.check(req)
        }
    }

    /// The part of `[consumer][producer][data][data]` the request names,
    /// the data pages twice, back to back.
    fn runs(&self, checked: &Checked) -> Vec<Run> {
        let page = self.layout.page_size();
        if self.linear {
            return vec![Run {
                file_off: checked.pgoff * page as u64,
                len: checked.len,
            }];
        }
        self.layout.runs(checked.pgoff as usize * page, checked.len)
    }
}

impl PerfShape {
    /// Length of the one mapping libbpf makes: `(1 + page_cnt) * page_size`.
    pub(crate) fn mmap_len(&self) -> usize {
        (1 + self.page_cnt) * self.page_size
    }
}

impl Shape for PerfShape {
    fn memfd(&self) -> &'static str {
        "telebpf-perf"
    }

    fn file_len(&self) -> usize {
        self.mmap_len()
    }

    /// `perf_mmap`: not shared → EINVAL, non-zero offset (the AUX area,
    /// which this event does not have) → EINVAL, any size but
    /// `(1 + page_cnt)` pages → EINVAL.
    fn check(&self, req: &MmapRequest) -> Result<Checked, i32> {
        let c = generic_checks(req, self.page_size)?;
        if !c.shared || c.pgoff != 0 || c.len != self.mmap_len() {
            return Err(libc::EINVAL);
        }
        Ok(c)
    }

    fn runs(&self, checked: &Checked) -> Vec<Run> {
        vec![Run {
            file_off: 0,
            len: checked.len,
        }]
    }
}

/// The memory of one host ring and its single end.
#[derive(Debug)]
pub(crate) struct HostRing<S> {
    shape: S,
    mem: SharedMem,
    end_taken: AtomicBool,
}

impl<S: Shape> HostRing<S> {
    /// Zero-filled memory for a ring of `shape`.
    pub(crate) fn new(shape: S) -> io::Result<Self> {
        let mem = SharedMem::new(shape.memfd(), shape.file_len())?;
        Ok(HostRing {
            shape,
            mem,
            end_taken: AtomicBool::new(false),
        })
    }

    /// The ring's shape.
    pub(crate) fn shape(&self) -> &S {
        &self.shape
    }

    /// The kernel's verdict on `mmap(addr, len, prot, flags, fd, offset)`.
    pub(crate) fn check_mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<(), i32> {
        let req = MmapRequest::new(addr, len, prot, flags, offset);
        self.shape.check(&req).map(|_| ())
    }

    /// Performs `mmap(addr, len, prot, flags, fd, offset)` as the kernel
    /// would for the ring's fd: its errno for what it refuses, else a
    /// mapping of the requested part, owned by the caller, honouring the
    /// address hint and flags; read-only mappings are made from a
    /// read-only fd, so `mprotect` cannot make them writable.
    pub(crate) fn map_for(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<*mut c_void, i32> {
        let req = MmapRequest::new(addr, len, prot, flags, offset);
        let checked = self.shape.check(&req)?;
        map_runs(
            &req,
            &checked,
            self.mem.fd_for(prot),
            &self.shape.runs(&checked),
        )
    }

    /// Claims the ring's one writer or reader: `true` the first time only.
    pub(crate) fn take_end(&self) -> bool {
        !self.end_taken.swap(true, Ordering::AcqRel)
    }

    /// The memfd (read-write), for a program that maps it itself.
    pub(crate) fn memfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.mem.memfd()
    }

    /// Base of the mirror's own read-write mapping of the whole memfd.
    pub(crate) fn base(&self) -> *mut u8 {
        self.mem.base()
    }

    /// The u64 at `off` of the first page (a perf ring's metadata page).
    pub(crate) fn page_u64(&self, off: usize, page_size: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= page_size.min(self.mem.len()));
        // SAFETY: `off` is an 8-aligned offset inside the page-aligned
        // mapping, which lives as long as `self`; the words accessed this
        // way (data_head, data_tail, the fields written before the ring is
        // shared) are only ever accessed atomically, by us and the consumer.
        unsafe { &*self.mem.base().add(off).cast::<AtomicU64>() }
    }
}

impl HostRing<BpfShape> {
    /// `consumer_pos`, at the start of the consumer page.
    pub(crate) fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the mapping is page-aligned, at least `file_len` bytes long
        // and lives as long as `self`; `unsigned long consumer_pos` sits at
        // offset 0 and every access to it, here and by the other side, is
        // atomic.
        unsafe { &*self.mem.base().cast::<AtomicUsize>() }
    }

    /// `producer_pos`, at the start of the producer page.
    pub(crate) fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as for consumer_pos; `producer_pos` sits at the start of
        // the second page, inside the mapping.
        unsafe {
            &*self
                .mem
                .base()
                .add(self.shape.layout.page_size())
                .cast::<AtomicUsize>()
        }
    }

    /// The data area (mapped once here; records wrap at its end, unless
    /// the ring is linear: see [`BpfShape::linear`]).
    pub(crate) fn data(&self) -> *mut u8 {
        let layout = self.shape.layout;
        debug_assert!(self.mem.len() == self.shape.file_len());
        // SAFETY: the data area starts after the two position pages, inside
        // the mapping.
        unsafe { self.mem.base().add(RINGBUF_POS_PAGES * layout.page_size()) }
    }

    /// The `len` word of the record header at data offset `off` (8-byte
    /// aligned, below `max_entries`).
    pub(crate) fn hdr_len(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off & 7 == 0 && off < self.shape.layout.max_entries());
        // SAFETY: `off` is inside the data area and 8-byte aligned; both
        // sides access the header words only atomically (acquire/release).
        unsafe { &*self.data().add(off).cast::<AtomicU32>() }
    }

    /// The `pg_off` word of the record header at data offset `off`.
    pub(crate) fn hdr_pg_off(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off & 7 == 0 && off < self.shape.layout.max_entries());
        // SAFETY: as for hdr_len, four bytes further, still inside the area.
        unsafe { &*self.data().add(off + 4).cast::<AtomicU32>() }
    }
}

/// A host ring that a program maps through the ring's own file (under a
/// supervisor, which cannot map memory into the program itself): the
/// memfd to give it, and the kernel's verdict on each of its mappings, to
/// make before letting the kernel map the file. A BPF ring buffer's file
/// must then be linear (see [`BpfShape::linear`]).
pub trait RingFile {
    /// The ring's memfd (read-write).
    fn memfd(&self) -> std::os::fd::BorrowedFd<'_>;

    /// The kernel's verdict on `mmap(addr, len, prot, flags, fd, offset)`
    /// of the ring's fd: its errno for what it refuses.
    fn check_mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<(), i32>;
}

/// [`RingFile`] for a type whose `ring` field is its [`HostRing`]. A perf
/// ring's verdict is `perf_mmap`'s (see [`PerfShape`]'s check): not shared,
/// an offset (the AUX area, which this event lacks) or any size but
/// `(1 + page_cnt)` pages → `EINVAL`; read-only mappings are allowed, as
/// the kernel allows them for a ring that exists.
macro_rules! ring_file {
    ($($t:ty),*) => {$(
        impl RingFile for $t {
            fn memfd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.ring.memfd()
            }

            fn check_mmap(
                &self,
                addr: *mut c_void,
                len: usize,
                prot: i32,
                flags: i32,
                offset: i64,
            ) -> Result<(), i32> {
                self.ring.check_mmap(addr, len, prot, flags, offset)
            }
        }
    )*};
}

ring_file!(crate::HostRingbuf, crate::HostUserRing, crate::HostPerfRing);
