//! Typed reads of guest kernel memory through the cache, fetching what is
//! missing from a [`Source`]: the walkers read through this, whatever the
//! mode.

use telebpf_protocol::message::{Memory, MemoryRange};

use crate::memory::GuestMemory;
use crate::Error;

/// Where missing guest memory comes from: one forwarded read per call.
pub trait Source {
    /// Reads the ranges (one request).
    fn peek(&mut self, ranges: &[MemoryRange]) -> Result<Memory, Error>;
}

/// A walk's window on guest memory.
pub struct View<'a> {
    memory: GuestMemory,
    source: &'a mut dyn Source,
    per_pointer: bool,
    misses: u64,
}

impl<'a> View<'a> {
    /// A view over `memory` (what a batch brought). With `per_pointer`, each
    /// object the walk follows a pointer to is fetched by [`View::load`];
    /// otherwise `load` is free and the batch must hold everything.
    pub fn new(memory: GuestMemory, source: &'a mut dyn Source, per_pointer: bool) -> View<'a> {
        View {
            memory,
            source,
            per_pointer,
            misses: 0,
        }
    }

    /// The memory, once the walk is done.
    pub fn into_memory(self) -> GuestMemory {
        self.memory
    }

    /// Reads the batch did not hold and that had to be fetched.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    fn fetch(&mut self, addr: u64, len: u32) -> Result<(), Error> {
        let got = self.source.peek(&[MemoryRange { addr, len }])?;
        if got.readable.first() != Some(&true) || got.bytes.len() != len as usize {
            return Err(Error::Unreadable(addr));
        }
        self.memory.insert(addr, &got.bytes);
        Ok(())
    }

    /// The walk follows a pointer to `[addr, addr + len)`: in per-pointer
    /// mode this is the one forwarded read for that object.
    pub fn load(&mut self, addr: u64, len: u64) -> Result<(), Error> {
        if !self.per_pointer || len == 0 {
            return Ok(());
        }
        if self.memory.holds(addr, len as usize) {
            return Ok(());
        }
        self.fetch(addr, len as u32)
    }

    /// `N` bytes at `addr`.
    pub fn bytes<const N: usize>(&mut self, addr: u64) -> Result<[u8; N], Error> {
        let mut buf = [0u8; N];
        if !self.memory.read(addr, &mut buf) {
            self.misses += 1;
            self.fetch(addr, N as u32)?;
            if !self.memory.read(addr, &mut buf) {
                return Err(Error::Unreadable(addr));
            }
        }
        Ok(buf)
    }

    /// Fills `buf` with the bytes at `addr`.
    pub fn read_into(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        if !self.memory.read(addr, buf) {
            self.misses += 1;
            self.fetch(addr, buf.len() as u32)?;
            if !self.memory.read(addr, buf) {
                return Err(Error::Unreadable(addr));
            }
        }
        Ok(())
    }

    /// A native-endian u64 at `addr`.
    pub fn u64(&mut self, addr: u64) -> Result<u64, Error> {
        self.bytes::<8>(addr).map(u64::from_ne_bytes)
    }

    /// A native-endian u32 at `addr`.
    pub fn u32(&mut self, addr: u64) -> Result<u32, Error> {
        self.bytes::<4>(addr).map(u32::from_ne_bytes)
    }

    /// A native-endian u16 at `addr`.
    pub fn u16(&mut self, addr: u64) -> Result<u16, Error> {
        self.bytes::<2>(addr).map(u16::from_ne_bytes)
    }

    /// A byte at `addr`.
    pub fn u8(&mut self, addr: u64) -> Result<u8, Error> {
        self.bytes::<1>(addr).map(|b| b[0])
    }
}

/// The smallest range holding every `(offset, size)` field: what one
/// forwarded read must cover to get them all.
pub fn span(fields: &[(u64, u64)]) -> (u64, u64) {
    let lo = fields.iter().map(|f| f.0).min().unwrap_or(0);
    let hi = fields.iter().map(|f| f.0 + f.1).max().unwrap_or(0);
    (lo, hi - lo)
}
