//! The memfd behind a mirrored ring, and the writer's own mapping of it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use memmap2::{MmapOptions, MmapRaw};

/// A sealed, fixed-size memfd plus a read-write shared mapping of all of it.
#[derive(Debug)]
pub(crate) struct SharedMem {
    /// Opened read-write: used for the writer's mapping and for writable
    /// user mappings.
    rw: File,
    /// The same file opened read-only: read-only user mappings are made from
    /// it so that, as with the kernel's `vm_flags_clear(vma, VM_MAYWRITE)`,
    /// `mprotect(PROT_WRITE)` on them fails with EACCES.
    ro: File,
    map: MmapRaw,
    len: usize,
}

impl SharedMem {
    /// A zero-filled memfd of `len` bytes, sealed against resizing.
    pub(crate) fn new(name: &str, len: usize) -> io::Result<Self> {
        let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create just returned this fd and nothing else owns it.
        let rw = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let file_len = u64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        rw.set_len(file_len)?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a memfd we own takes an int argument.
        if unsafe { libc::fcntl(rw.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let ro = reopen_read_only(&rw)?;
        let map = MmapOptions::new().len(len).map_raw(&rw)?;
        Ok(SharedMem { rw, ro, map, len })
    }

    /// Base of the writer's read-write mapping of the whole file.
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Size of the file (and of the writer's mapping) in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The fd to map from: read-write only when the mapping is writable.
    pub(crate) fn memfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.rw.as_fd()
    }

    pub(crate) fn fd_for(&self, prot: i32) -> RawFd {
        if prot & libc::PROT_WRITE != 0 {
            self.rw.as_raw_fd()
        } else {
            self.ro.as_raw_fd()
        }
    }
}

/// Opens the memfd again read-only through procfs; falls back to the
/// read-write file when procfs is unavailable (then a read-only mapping can
/// be upgraded with `mprotect`, which the kernel would refuse).
fn reopen_read_only(rw: &File) -> io::Result<File> {
    let path = format!("/proc/self/fd/{}", rw.as_raw_fd());
    match File::options().read(true).open(path) {
        Ok(f) => Ok(f),
        Err(_) => rw.try_clone(),
    }
}
