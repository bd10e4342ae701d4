//! The few raw syscalls the proxy makes, each behind a safe wrapper.

use std::io;

/// `bpf(cmd, attr, size, common, common_size)` returning the raw result or
/// the errno.
///
/// # Safety
///
/// `attr` must point to `size` bytes the kernel may read and write, and
/// every pointer inside it must point to memory of the length the plan
/// gave; `common` likewise for `common_size` bytes (or be null).
pub unsafe fn bpf(
    cmd: u32,
    attr: *mut u8,
    size: u32,
    common: *mut u8,
    common_size: u32,
) -> Result<i64, i32> {
    // SAFETY: the caller guarantees the pointed-to memory is valid for the
    // kernel to access as the command requires.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr,
            size as libc::c_long,
            common,
            common_size as libc::c_long,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(ret)
    }
}

/// The attr of `BPF_OBJ_GET_INFO_BY_FD` of `fd` into `info`; after the
/// call, bytes 4..8 hold the length the kernel filled.
pub fn info_attr(fd: i32, info: &mut [u8]) -> [u8; 16] {
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_le_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
    attr
}

/// `BPF_OBJ_GET` of `path` (read-write, as root): the object pinned there.
pub fn obj_get(path: &std::ffi::CStr) -> Result<std::os::fd::OwnedFd, i32> {
    use std::os::fd::FromRawFd;
    let mut attr = [0u8; 24];
    let p = path.as_ptr() as u64;
    attr[telebpf_abi::off::obj::PATHNAME..][..8].copy_from_slice(&p.to_le_bytes());
    // SAFETY: `attr.pathname` points to `path`, NUL-terminated and alive
    // for the call; the kernel writes nothing through the attr.
    let fd = unsafe {
        bpf(
            telebpf_abi::cmd::BPF_OBJ_GET,
            attr.as_mut_ptr(),
            attr.len() as u32,
            std::ptr::null_mut(),
            0,
        )
    }?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Closes an fd the proxy owns.
pub fn close(fd: i32) {
    // SAFETY: closing an integer fd has no memory-safety effect; the
    // session table guarantees it is one of ours and is closed only once.
    unsafe {
        libc::close(fd);
    }
}

/// `perf_event_open(attr, pid, cpu, group_fd, flags)` returning the new fd
/// or the errno.
///
/// # Safety
///
/// `attr` must hold the bytes its `size` field gives, and a pointer inside
/// it (`config1` of a string PMU) must point to a NUL-terminated string
/// alive for the call.
pub unsafe fn perf_event_open(
    attr: &mut [u8],
    pid: i32,
    cpu: i32,
    group_fd: i32,
    flags: u64,
) -> Result<i64, i32> {
    // SAFETY: the caller guarantees `attr` and what it points to are valid
    // for the kernel to read.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            pid as libc::c_long,
            cpu as libc::c_long,
            group_fd as libc::c_long,
            flags as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(ret)
}

/// `ioctl(fd, request, arg)` returning the result or the errno.
///
/// # Safety
///
/// When `request` takes a pointer, `arg` must point to memory of the size
/// it reads or writes, alive for the call.
pub unsafe fn ioctl(fd: i32, request: u64, arg: u64) -> Result<i64, i32> {
    // SAFETY: the caller guarantees a pointer argument is valid for what
    // the request accesses.
    let ret = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg as libc::c_ulong) };
    if ret < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(ret as i64)
}

/// `read(fd)` of at most `len` bytes.
pub fn read(fd: i32, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is valid for writes of `len` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// An open fd that is no BPF object, standing in for host fds that are
/// not guest objects (see `FOREIGN_FD`). Opened once, never closed.
pub fn not_bpf_fd() -> i32 {
    static FD: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *FD.get_or_init(|| {
        // SAFETY: opening /dev/null with a static NUL-terminated path.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
    })
}

/// Makes sure fds 0, 1 and 2 are open, so that no guest object ever gets
/// one of those numbers (a client passing `0` for "no fd" must never reach
/// a real object).
pub fn occupy_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any integer is harmless.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: opening /dev/null with a static NUL-terminated path.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Raises RLIMIT_MEMLOCK to infinity (kernels before 5.11 charge BPF
/// memory to it). Best effort.
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// The file-descriptor limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit the proxy was started with.
    pub was: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit now: the hard one if raising it worked.
    pub now: u64,
}

/// Raises `RLIMIT_NOFILE`'s soft limit to the hard one (a service's usual
/// soft limit is 1024, its hard limit far higher); an infinite hard limit
/// means the kernel's `fs.nr_open`.
pub fn raise_nofile() -> Nofile {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit struct to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Nofile {
            was: 1024,
            hard: 1024,
            now: 1024,
        };
    }
    let was = lim.rlim_cur;
    let mut hard = lim.rlim_max;
    if hard == libc::RLIM_INFINITY {
        hard = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit struct.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    Nofile {
        was,
        hard,
        now: if ok { hard } else { was },
    }
}

/// The memory the proxy's objects may take: `MemTotal`, or less when the
/// proxy's cgroup (or one above it) sets `memory.max` (BPF memory is
/// charged to the creating process's cgroup).
pub fn memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    let mut limit = total;
    if let Some(path) = cgroup {
        let mut dir = std::path::PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        loop {
            if let Some(max) = std::fs::read_to_string(dir.join("memory.max"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                limit = limit.min(max);
            }
            if !dir.pop() || !dir.starts_with("/sys/fs/cgroup") {
                break;
            }
        }
    }
    limit
}

/// A shared mapping of an fd the proxy holds, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    /// Start of the mapping.
    pub base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only
// accessed through this value by the thread that owns it.
unsafe impl Send for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`; the kernel checks
    /// `len` and `offset` against the object behind `fd`.
    pub fn new(fd: i32, len: usize, prot: i32, offset: usize) -> Result<Mapping, i32> {
        // SAFETY: a fresh shared mapping at an address the kernel chooses,
        // owned by the returned value.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(Mapping {
            base: p.cast(),
            len,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `base` is valid for reads of `len` bytes while `self` lives.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    /// The mapped bytes, for writing (the mapping must be writable).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `base` is valid for `len` bytes while `self` lives, and
        // the exclusive borrow of `self` is the only access from here.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Writes `data` at `offset` of what `mmap(fd, …, MAP_SHARED)` shows.
pub fn write_mapping(fd: i32, offset: u64, data: &[u8]) -> Result<(), i32> {
    let page = ringbuf_mirror::page_size() as u64;
    let start = offset - offset % page;
    let skip = (offset - start) as usize;
    let mut m = Mapping::new(
        fd,
        skip + data.len(),
        libc::PROT_READ | libc::PROT_WRITE,
        start as usize,
    )?;
    m.bytes_mut()[skip..].copy_from_slice(data);
    Ok(())
}

/// A copy of what `mmap(fd, len, PROT_READ, MAP_SHARED, offset)` shows now.
pub fn read_mapping(fd: i32, len: usize, offset: i64) -> Result<Vec<u8>, i32> {
    // Read-only: a snapshot of the map, never a way to write it.
    let m = Mapping::new(fd, len, libc::PROT_READ, offset as usize)?;
    Ok(m.bytes().to_vec())
}
