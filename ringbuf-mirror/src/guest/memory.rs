//! Ring memory seen through bounds-checked accessors.
//!
//! A guest ring is shared memory that other parties write while the proxy
//! reads it. [`RingMemory`] is the only way the consumers touch it: atomic
//! loads and stores of aligned words, and byte copies, each at an offset
//! that is checked against the region before the access. [`RawRegion`] is
//! that check over raw parts (the fuzz target puts one over a heap
//! allocation, where the address sanitizer sees any access beyond it);
//! [`GuestMapping`] owns a shared mapping of a guest fd and is the
//! [`RawRegion`] over it.

use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Violation;

/// One mapped region of a ring. Every access names an offset into the
/// region; one outside it (or misaligned for a word) is a
/// [`Violation::OutOfBounds`], never an access.
pub trait RingMemory {
    /// Bytes in the region.
    fn size(&self) -> usize;

    /// Atomic load of the aligned u64 at `off`.
    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation>;

    /// Atomic load of the aligned u32 at `off`.
    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation>;

    /// Atomic store of the aligned u64 at `off` (a writable region).
    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation>;

    /// Atomic store of the aligned u32 at `off` (a writable region).
    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation>;

    /// Copies `out.len()` bytes from `off`.
    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation>;

    /// Copies `data` to `off` (a writable region).
    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation>;
}

/// A region borrowed by a consumer while its owner keeps writing it (tests,
/// the fuzz target).
impl<T: RingMemory + ?Sized> RingMemory for &T {
    fn size(&self) -> usize {
        (**self).size()
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        (**self).load_u64(off, order)
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        (**self).load_u32(off, order)
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        (**self).store_u64(off, value, order)
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        (**self).store_u32(off, value, order)
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        (**self).read(off, out)
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        (**self).write(off, data)
    }
}

/// A bounds-checked view of `len` bytes at `base`.
#[derive(Debug)]
pub struct RawRegion {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    name: &'static str,
}

// SAFETY: the region is shared memory accessed only atomically or by byte
// copies; the constructor's contract makes it valid for the region's life,
// whichever thread uses it.
unsafe impl Send for RawRegion {}

impl RawRegion {
    /// A view of `len` bytes at `base`, named `name` in violations.
    ///
    /// # Safety
    ///
    /// `base` must be 8-byte aligned and valid for reads (and, if
    /// `writable`, writes) of `len` bytes for as long as the region is used.
    /// Others may change the bytes concurrently (shared memory): the region
    /// only ever accesses them atomically or by copying.
    pub unsafe fn new(base: NonNull<u8>, len: usize, writable: bool, name: &'static str) -> Self {
        debug_assert!((base.as_ptr() as usize).is_multiple_of(8));
        RawRegion {
            base,
            len,
            writable,
            name,
        }
    }

    /// The address of `off` after checking that `n` bytes there lie in the
    /// region and that `off` is a multiple of `align`.
    fn at(&self, off: usize, n: usize, align: usize) -> Result<*mut u8, Violation> {
        let out = || Violation::OutOfBounds {
            region: self.name,
            off,
            len: n,
            size: self.len,
        };
        match off.checked_add(n) {
            Some(end) if end <= self.len && off.is_multiple_of(align) => {
                // SAFETY: `off + n <= len`, so the result stays inside the
                // region the constructor vouched for.
                Ok(unsafe { self.base.as_ptr().add(off) })
            }
            _ => Err(out()),
        }
    }

    fn writable(&self) -> Result<(), Violation> {
        if self.writable {
            Ok(())
        } else {
            Err(Violation::ReadOnly { region: self.name })
        }
    }
}

impl RingMemory for RawRegion {
    fn size(&self) -> usize {
        self.len
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        let p = self.at(off, 8, 8)?;
        // SAFETY: `p` is 8-byte aligned (the base is, and `off` is a multiple
        // of 8) and 8 bytes there lie in the region; every access to shared
        // ring words is atomic.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) }.load(order))
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        let p = self.at(off, 4, 4)?;
        // SAFETY: as in `load_u64`, for 4 aligned bytes.
        Ok(unsafe { AtomicU32::from_ptr(p.cast()) }.load(order))
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        self.writable()?;
        let p = self.at(off, 8, 8)?;
        // SAFETY: as in `load_u64`; the region is writable.
        unsafe { AtomicU64::from_ptr(p.cast()) }.store(value, order);
        Ok(())
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        self.writable()?;
        let p = self.at(off, 4, 4)?;
        // SAFETY: as in `load_u32`; the region is writable.
        unsafe { AtomicU32::from_ptr(p.cast()) }.store(value, order);
        Ok(())
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        let p = self.at(off, out.len(), 1)?;
        // SAFETY: `out.len()` bytes at `p` lie in the region; `out` is a
        // distinct local buffer. The bytes may change while they are copied
        // (another party's memory): the copy is then of mixed bytes, which
        // the consumers treat as record content, never as a length.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        self.writable()?;
        let p = self.at(off, data.len(), 1)?;
        // SAFETY: `data.len()` bytes at `p` lie in the writable region; the
        // source is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }
}

/// A shared mapping of part of a guest object's fd, unmapped on drop, seen
/// as a [`RawRegion`].
#[derive(Debug)]
pub struct GuestMapping {
    region: RawRegion,
}

impl GuestMapping {
    /// `mmap(NULL, len, PROT_READ [| PROT_WRITE], MAP_SHARED, fd, offset)`;
    /// the kernel checks `len` and `offset` against the object (the errno
    /// is its). `name` names the region in violations.
    pub fn map(
        fd: RawFd,
        len: usize,
        writable: bool,
        offset: usize,
        name: &'static str,
    ) -> Result<GuestMapping, i32> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let off = libc::off_t::try_from(offset).map_err(|_| libc::EINVAL)?;
        // SAFETY: a fresh shared mapping at an address the kernel chooses,
        // owned by the returned value.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(libc::EIO)?;
        // SAFETY: the kernel mapped `len` bytes at `base` (page-aligned) with
        // the protection asked for; they stay mapped until `drop`.
        let region = unsafe { RawRegion::new(base, len, writable, name) };
        Ok(GuestMapping { region })
    }
}

impl Drop for GuestMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; the region is not
        // used after this.
        unsafe { libc::munmap(self.region.base.as_ptr().cast(), self.region.len) };
    }
}

impl RingMemory for GuestMapping {
    fn size(&self) -> usize {
        self.region.size()
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        self.region.load_u64(off, order)
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        self.region.load_u32(off, order)
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        self.region.store_u64(off, value, order)
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        self.region.store_u32(off, value, order)
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        self.region.read(off, out)
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        self.region.write(off, data)
    }
}
