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
}

/// Reads `len` bytes at `addr` of the calling process.
pub fn read(addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    ProcessMemory::current().read(addr, len)
}

/// Reads a NUL-terminated string of at most `max` bytes (NUL included) at
/// `addr` of the calling process (see [`Memory::read_cstr`]).
pub fn read_cstr(addr: u64, max: usize) -> Result<Vec<u8>, i32> {
    ProcessMemory::current().read_cstr(addr, max)
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
        assert_eq!(read_cstr(16, 100), Err(libc::EFAULT));
    }

    #[test]
    fn cstr_bounded() {
        let s = b"hello\0world";
        assert_eq!(read_cstr(s.as_ptr() as u64, 64).unwrap(), b"hello\0");
        assert_eq!(read_cstr(s.as_ptr() as u64, 4).unwrap(), b"hell");
        assert_eq!(read_cstr(s.as_ptr() as u64, 6).unwrap(), b"hello\0");
    }
}
