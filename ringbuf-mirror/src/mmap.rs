//! What `mmap(2)` checks before a file's `->mmap` runs, and the mapping of a
//! user-visible layout out of pieces of a memfd.

use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;

/// One `mmap(addr, len, prot, flags, fd, offset)` call as the program made it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MmapRequest {
    pub(crate) addr: *mut c_void,
    pub(crate) len: usize,
    pub(crate) prot: i32,
    pub(crate) flags: i32,
    pub(crate) offset: i64,
}

impl MmapRequest {
    /// The request of `mmap(addr, len, prot, flags, fd, offset)`.
    pub(crate) fn new(addr: *mut c_void, len: usize, prot: i32, flags: i32, offset: i64) -> Self {
        MmapRequest {
            addr,
            len,
            prot,
            flags,
            offset,
        }
    }
}

/// A request that passed the generic checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked {
    /// The length rounded up to whole pages (the VMA's size).
    pub(crate) len: usize,
    /// The offset in pages (`vma->vm_pgoff`).
    pub(crate) pgoff: u64,
    /// Whether the mapping is writable (`VM_WRITE`).
    pub(crate) write: bool,
    /// Whether the mapping is shared (`VM_SHARED`).
    pub(crate) shared: bool,
}

/// Highest user address a mapping may end at, as `get_unmapped_area` sees it
/// without a high hint (`TASK_SIZE`/`DEFAULT_MAP_WINDOW`); `None` where this
/// crate does not know it and leaves the question to the real `mmap`.
fn task_size(page: usize) -> Option<u64> {
    if cfg!(target_arch = "x86_64") {
        Some((1u64 << 47) - page as u64)
    } else if cfg!(target_arch = "aarch64") {
        Some(1u64 << 48)
    } else {
        None
    }
}

/// The checks `sys_mmap` → `do_mmap` make before the file's `->mmap`, in the
/// kernel's order, for a file on the anonymous-inode mount (BPF map and perf
/// event fds): unaligned offset or zero length → EINVAL; length that cannot
/// be rounded up or larger than the address space → ENOMEM; page offset
/// overflow (`do_mmap`, later `file_mmap_ok`) → EOVERFLOW; `MAP_FIXED` at an
/// unaligned address → EINVAL; mapping type other than shared, shared-validate
/// or private → EINVAL; `PROT_EXEC` → EPERM (the mount is noexec: `path_noexec`).
///
/// `MAP_ANONYMOUS` requests are not file mappings at all and are refused with
/// EINVAL: the caller must not route them here.
pub(crate) fn generic_checks(req: &MmapRequest, page: usize) -> Result<Checked, i32> {
    let page_mask = page as u64 - 1;
    let shift = page.trailing_zeros();
    let offset = req.offset as u64; // `unsigned long off` in sys_mmap
    if offset & page_mask != 0 {
        return Err(libc::EINVAL);
    }
    if req.len == 0 {
        return Err(libc::EINVAL);
    }
    let len = match req.len.checked_add(page - 1) {
        Some(l) => l & !(page - 1),
        None => return Err(libc::ENOMEM),
    };
    if let Some(max) = task_size(page) {
        if len as u64 > max {
            return Err(libc::ENOMEM);
        }
    }
    let pgoff = offset >> shift;
    let len_pages = (len as u64) >> shift;
    if pgoff.checked_add(len_pages).is_none() {
        return Err(libc::EOVERFLOW);
    }
    let fixed = req.flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    if fixed && (req.addr as usize) & (page - 1) != 0 {
        return Err(libc::EINVAL);
    }
    // file_mmap_ok(): maxsize is ULONG_MAX for an anonymous inode.
    if pgoff > (u64::MAX - len as u64) >> shift {
        return Err(libc::EOVERFLOW);
    }
    if req.flags & libc::MAP_ANONYMOUS != 0 {
        return Err(libc::EINVAL);
    }
    let shared = match req.flags & 0x0f {
        libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE => true,
        libc::MAP_PRIVATE => false,
        _ => return Err(libc::EINVAL),
    };
    if req.prot & libc::PROT_EXEC != 0 {
        return Err(libc::EPERM);
    }
    Ok(Checked {
        len,
        pgoff,
        write: req.prot & libc::PROT_WRITE != 0,
        shared,
    })
}

/// A contiguous piece of the user-visible layout backed by one file range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Offset in the memfd.
    pub(crate) file_off: u64,
    /// Length in bytes (whole pages).
    pub(crate) len: usize,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Maps `runs` back to back from `fd` for an already checked request.
///
/// The first `mmap` covers the whole length and carries the caller's address
/// hint and flags (so `MAP_FIXED`, `MAP_FIXED_NOREPLACE`, `MAP_POPULATE`, …
/// behave as the caller asked); every later run is mapped `MAP_FIXED` over the
/// tail of that fresh mapping. On failure nothing created here stays mapped.
pub(crate) fn map_runs(
    req: &MmapRequest,
    checked: &Checked,
    fd: RawFd,
    runs: &[Run],
) -> Result<*mut c_void, i32> {
    let first = runs.first().ok_or(libc::EINVAL)?;
    // SAFETY: a file mapping of a memfd we own. Without MAP_FIXED the kernel
    // picks free address space; with MAP_FIXED the caller asked for exactly
    // this replacement of its own address range, as it would from the kernel.
    let base = unsafe {
        libc::mmap(
            req.addr,
            checked.len,
            req.prot,
            req.flags,
            fd,
            first.file_off as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(errno());
    }
    let mut at = first.len;
    for run in &runs[1..] {
        let flags = (req.flags & !libc::MAP_FIXED_NOREPLACE) | libc::MAP_FIXED;
        // SAFETY: `base..base+checked.len` is the mapping created just above
        // and the runs' lengths add up to `checked.len`, so this MAP_FIXED
        // only replaces pages of our own fresh mapping.
        let p = unsafe {
            libc::mmap(
                base.cast::<u8>().add(at).cast(),
                run.len,
                req.prot,
                flags,
                fd,
                run.file_off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = errno();
            // SAFETY: unmapping the mapping created above, which nobody else
            // has seen yet.
            unsafe { libc::munmap(base, checked.len) };
            return Err(e);
        }
        at += run.len;
    }
    debug_assert_eq!(at, checked.len);
    Ok(base)
}
