//! The memory of the program that made a `bpf()` call, as the marshalling
//! sees it.
//!
//! The addresses in a `bpf_attr` are the calling program's and may be
//! wrong. Whoever forwards the call reads and writes them through this
//! trait, so that the same gather/scatter code serves a program from inside
//! its own process (the preload: `process_vm_readv` on its own pid), from
//! outside it (a supervisor: the same calls on the tool's pid), and a unit
//! test (a byte array). A bad address is `Err(EFAULT)`, exactly where the
//! kernel's `copy_from_user` would fail.

/// `EFAULT`, the errno of a bad address (this crate does not depend on libc).
pub const EFAULT: i32 = 14;

/// Read and write access to a calling program's memory.
pub trait Memory {
    /// Reads `len` bytes at `addr`; `Err(errno)` (`EFAULT`) if any byte is
    /// not readable.
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32>;

    /// Writes `data` at `addr`; `Err(errno)` (`EFAULT`) if any byte is not
    /// writable.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32>;

    /// Reads a NUL-terminated string of at most `max` bytes (NUL included)
    /// at `addr`. A longer string comes back as exactly `max` bytes with no
    /// NUL, so the guest kernel meets the same over-long string the local
    /// kernel would have, and answers with the same errno.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, i32> {
        const PAGE: u64 = 4096;
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            // Never read across a page boundary in one call: the string may
            // end just before an unmapped page.
            let room = (PAGE - at % PAGE) as usize;
            let want = room.min(max - out.len());
            let chunk = self.read(at, want)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                out.push(0);
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
            at = at.checked_add(want as u64).ok_or(EFAULT)?;
        }
        Ok(out)
    }

    /// Reads several ranges, each result as [`Memory::read`] would give
    /// it. The default reads them one by one; an implementation whose reads
    /// are system calls may read them all in one (one forwarded call then
    /// costs one `process_vm_readv` for its buffers, not one per buffer).
    fn read_each(&self, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>, i32>> {
        ranges
            .iter()
            .map(|&(addr, len)| self.read(addr, len))
            .collect()
    }
}

/// Read-only memory for tests (here and in the crates that read a
/// program's structures through [`Memory`]): `data` at address `base`;
/// every other address, and every write, is `EFAULT`.
pub struct Bytes {
    /// The address of `data[0]`.
    pub base: u64,
    /// The readable bytes.
    pub data: Vec<u8>,
}

impl Memory for Bytes {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        let start = addr.checked_sub(self.base).ok_or(EFAULT)? as usize;
        let end = start.checked_add(len).ok_or(EFAULT)?;
        self.data.get(start..end).map(<[u8]>::to_vec).ok_or(EFAULT)
    }
    fn write(&self, _addr: u64, _data: &[u8]) -> Result<(), i32> {
        Err(EFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_cstr_stops_at_nul_at_max_and_before_an_unreadable_page() {
        let mut data = vec![b'a'; 8192];
        data[5000] = 0;
        let m = Bytes {
            base: 0x10000,
            data,
        };
        assert_eq!(m.read_cstr(0x10000 + 4990, 64).unwrap().len(), 11);
        assert_eq!(m.read_cstr(0x10000, 16).unwrap(), vec![b'a'; 16]);
        // A string running off the end of readable memory faults, as
        // strncpy_from_user does.
        assert_eq!(m.read_cstr(0x10000 + 6000, 4096), Err(EFAULT));
    }
}
