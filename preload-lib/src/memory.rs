//! Reading and writing the host program's memory at the addresses it put
//! into a `bpf_attr`.
//!
//! The addresses come from the program and may be wrong. Dereferencing them
//! would crash the program where the kernel would have answered `EFAULT`,
//! so every access goes through `process_vm_readv`/`process_vm_writev` on
//! our own pid, which fail with `EFAULT` exactly where the kernel's
//! `copy_from_user` would. [`SelfMemory`] offers the same as a
//! [`Memory`], for the marshalling in `telebpf-marshal`.

use telebpf_abi::memory::Memory;

/// This process's memory, as the marshalling reads and writes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelfMemory;

impl Memory for SelfMemory {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        read(addr, len)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32> {
        write(addr, data)
    }
}

/// Reads `len` bytes at `addr`.
pub fn read(addr: u64, len: usize) -> Result<Vec<u8>, i32> {
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
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n != len as isize {
        return Err(libc::EFAULT);
    }
    Ok(buf)
}

/// Reads a NUL-terminated string of at most `max` bytes (NUL included) at
/// `addr` (see [`Memory::read_cstr`]).
pub fn read_cstr(addr: u64, max: usize) -> Result<Vec<u8>, i32> {
    SelfMemory.read_cstr(addr, max)
}

/// Writes `data` at `addr`.
pub fn write(addr: u64, data: &[u8]) -> Result<(), i32> {
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
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
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
