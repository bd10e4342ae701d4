//! Raw `bpf()` for the probe programs of `src/bin` (`preload-probe`,
//! `hostile-probe`, `fault-client`): every call goes through libc's
//! `syscall`, as libbpf makes it, so that the preload under test sees it
//! exactly as it sees a real tool's. Command and type numbers come from
//! `telebpf_abi`.

use telebpf_abi::cmd::{BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM};

/// This thread's errno.
pub fn errno() -> i32 {
    // SAFETY: errno of this thread.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's errno.
pub fn set_errno(v: i32) {
    // SAFETY: errno of this thread.
    unsafe { *libc::__errno_location() = v };
}

/// `bpf(cmd, attr, size)` with any address and size, valid or not: the
/// attr is an address the kernel checks, not memory this function reads.
pub fn bpf_raw(cmd: u32, attr: usize, size: i64) -> Result<i64, i32> {
    // SAFETY: deliberately passes arbitrary addresses: the kernel (or the
    // preload, which must behave like it) validates them.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd as i64, attr, size) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `bpf(cmd, attr, attr.len())`: the pointers inside `attr` must point at
/// live buffers of the caller.
pub fn bpf(cmd: u32, attr: &mut [u8]) -> Result<i64, i32> {
    bpf_raw(cmd, attr.as_mut_ptr() as usize, attr.len() as i64)
}

/// A map (`BPF_MAP_CREATE` with type, key and value sizes, entries).
pub fn map_create(map_type: u32, key: u32, value: u32, entries: u32) -> Result<i32, i32> {
    let mut a = [0u8; 72];
    a[0..4].copy_from_slice(&map_type.to_le_bytes());
    a[4..8].copy_from_slice(&key.to_le_bytes());
    a[8..12].copy_from_slice(&value.to_le_bytes());
    a[12..16].copy_from_slice(&entries.to_le_bytes());
    bpf(BPF_MAP_CREATE, &mut a).map(|fd| fd as i32)
}

/// The attr of an element command: map fd, key and value (or next-key)
/// pointers as integers.
pub fn elem(fd: i32, key: u64, value: u64) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
    a[8..16].copy_from_slice(&key.to_le_bytes());
    a[16..24].copy_from_slice(&value.to_le_bytes());
    a
}

/// Sets a u32-keyed map's u64 value.
pub fn update(fd: i32, key: u32, value: u64) -> Result<i64, i32> {
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &mut elem(fd, &key as *const u32 as u64, &value as *const u64 as u64),
    )
}

/// A u32-keyed map's u64 value.
pub fn lookup(fd: i32, key: u32) -> Result<u64, i32> {
    let mut value = 0u64;
    bpf(
        BPF_MAP_LOOKUP_ELEM,
        &mut elem(fd, &key as *const u32 as u64, &mut value as *mut u64 as u64),
    )?;
    Ok(value)
}
