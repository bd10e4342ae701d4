//! Reading and writing the host program's memory at the addresses it put
//! into a `bpf_attr`.
//!
//! The addresses come from the program and may be wrong. Dereferencing them
//! would crash the program where the kernel would have answered `EFAULT`,
//! so every access goes through `process_vm_readv`/`process_vm_writev` on
//! the program's pid, which fail with `EFAULT` exactly where the kernel's
//! `copy_from_user` would. [`ProcessMemory`] is that access for any pid
//! (the preload's own; a supervisor's tool) behind
//! [`telebpf_abi::memory::Memory`]; the free functions are the calling
//! process's own memory.

use telebpf_abi::memory::Memory;

/// The memory of process `pid`, through `process_vm_readv`/`writev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessMemory {
    /// The process whose memory this is.
    pub pid: i32,
}

impl ProcessMemory {
    /// The calling process's own memory.
    pub fn current() -> ProcessMemory {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        ProcessMemory { pid }
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        read_in(self.pid, addr, len)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32> {
        write_in(self.pid, addr, data)
    }

    fn read_each(&self, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>, i32>> {
        read_each_in(self.pid, ranges)
    }
}

/// The most ranges [`read_each_in`] reads in one `process_vm_readv`
/// (the kernel's `UIO_MAXIOV` is 1024; a call has a handful).
const MAX_RANGES: usize = 64;

/// Reads `ranges` of process `pid` in one `process_vm_readv`. The kernel
/// stops at the first range it cannot read whole, so a short count means
/// "some range is bad": then each is read alone, which tells which, and
/// the results are exactly those of one read per range.
fn read_each_in(pid: i32, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>, i32>> {
    let one_by_one = || ranges.iter().map(|&(a, n)| read_in(pid, a, n)).collect();
    if ranges.len() < 2 || ranges.len() > MAX_RANGES {
        return one_by_one();
    }
    let mut bufs: Vec<Vec<u8>> = ranges.iter().map(|&(_, n)| vec![0u8; n]).collect();
    let local: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let remote: Vec<libc::iovec> = ranges
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let total: usize = ranges.iter().map(|&(_, n)| n).sum();
    // SAFETY: each `local` iovec describes one of `bufs`, which we own and
    // which outlive the call; the kernel validates `remote` and reports a
    // bad address as a short count (or -1) instead of faulting.
    let n = unsafe {
        libc::process_vm_readv(
            pid,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n != total as isize {
        return one_by_one();
    }
    bufs.into_iter().map(Ok).collect()
}

/// Reads `len` bytes at `addr` of the calling process.
pub fn read(addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    ProcessMemory::current().read(addr, len)
}

/// Writes `data` at `addr` of the calling process.
pub fn write(addr: u64, data: &[u8]) -> Result<(), i32> {
    ProcessMemory::current().write(addr, data)
}

/// Reads `len` bytes at `addr` of process `pid`.
fn read_in(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, which we own; the kernel validates
    // `remote` and reports a bad address as EFAULT instead of faulting.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n != len as isize {
        return Err(libc::EFAULT);
    }
    Ok(buf)
}

/// Writes `data` at `addr` of process `pid`.
fn write_in(pid: i32, addr: u64, data: &[u8]) -> Result<(), i32> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data` (only read by the kernel); the kernel
    // validates `remote`.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n != data.len() as isize {
        return Err(libc::EFAULT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_ranges_at_once_as_one_by_one() {
        let a = [1u8, 2, 3, 4];
        let b = [5u8; 9];
        let ranges = [
            (a.as_ptr() as u64, 4),
            (b.as_ptr() as u64, 9),
            (b.as_ptr() as u64, 0),
        ];
        let got = ProcessMemory::current().read_each(&ranges);
        assert_eq!(got, vec![Ok(a.to_vec()), Ok(b.to_vec()), Ok(vec![])]);
        // A bad range fails alone, as its own read would.
        let ranges = [(a.as_ptr() as u64, 4), (8, 4), (b.as_ptr() as u64, 2)];
        let got = ProcessMemory::current().read_each(&ranges);
        assert_eq!(got, vec![Ok(a.to_vec()), Err(libc::EFAULT), Ok(vec![5, 5])]);
    }

    #[test]
    fn reads_and_writes_own_memory() {
        let mut v = [1u8, 2, 3, 4];
        assert_eq!(read(v.as_ptr() as u64, 4).unwrap(), vec![1, 2, 3, 4]);
        write(v.as_mut_ptr() as u64, &[9, 9]).unwrap();
        assert_eq!(v, [9, 9, 3, 4]);
    }

    #[test]
    fn bad_addresses_are_efault() {
        assert_eq!(read(8, 4), Err(libc::EFAULT));
        assert_eq!(write(8, &[1]), Err(libc::EFAULT));
        assert_eq!(
            ProcessMemory::current().read_cstr(16, 100),
            Err(libc::EFAULT)
        );
    }

    #[test]
    fn cstr_bounded() {
        let s = b"hello\0world";
        assert_eq!(
            ProcessMemory::current()
                .read_cstr(s.as_ptr() as u64, 64)
                .unwrap(),
            b"hello\0"
        );
        assert_eq!(
            ProcessMemory::current()
                .read_cstr(s.as_ptr() as u64, 4)
                .unwrap(),
            b"hell"
        );
        assert_eq!(
            ProcessMemory::current()
                .read_cstr(s.as_ptr() as u64, 6)
                .unwrap(),
            b"hello\0"
        );
    }
}
