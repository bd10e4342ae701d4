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

/// One `struct bpf_insn`: opcode, registers, offset, immediate.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// `r0 = 0; exit`: the smallest valid program.
pub fn return_zero() -> Vec<[u8; 8]> {
    vec![insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)]
}

/// What a `BPF_PROG_LOAD` names besides its instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// `prog_type`.
    pub prog_type: u32,
    /// `expected_attach_type`.
    pub expected_attach_type: u32,
    /// `attach_btf_id` (0: none).
    pub attach_btf_id: u32,
}

/// `BPF_PROG_LOAD` of `insns` (license GPL), with a verifier log on
/// failure (the log's first line goes to the error's text).
pub fn prog_load(load: Load, insns: &[[u8; 8]]) -> Result<i32, i32> {
    use telebpf_abi::off::prog_load as o;
    let code: Vec<u8> = insns.concat();
    let license = c"GPL";
    let mut a = [0u8; 152];
    a[o::PROG_TYPE..o::PROG_TYPE + 4].copy_from_slice(&load.prog_type.to_le_bytes());
    a[o::INSN_CNT..o::INSN_CNT + 4].copy_from_slice(&(insns.len() as u32).to_le_bytes());
    a[o::INSNS..o::INSNS + 8].copy_from_slice(&(code.as_ptr() as u64).to_le_bytes());
    a[o::LICENSE..o::LICENSE + 8].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
    let eat = o::EXPECTED_ATTACH_TYPE;
    a[eat..eat + 4].copy_from_slice(&load.expected_attach_type.to_le_bytes());
    let btf = o::ATTACH_BTF_ID;
    a[btf..btf + 4].copy_from_slice(&load.attach_btf_id.to_le_bytes());
    let r = bpf(telebpf_abi::cmd::BPF_PROG_LOAD, &mut a).map(|fd| fd as i32);
    if r.is_err() && std::env::var_os("PROBE_VERIFIER_LOG").is_some() {
        // Again with the verifier's log, for whoever debugs a probe.
        let mut log = vec![0u8; 1 << 16];
        a[o::LOG_LEVEL..o::LOG_LEVEL + 4].copy_from_slice(&1u32.to_le_bytes());
        a[o::LOG_SIZE..o::LOG_SIZE + 4].copy_from_slice(&(log.len() as u32).to_le_bytes());
        a[o::LOG_BUF..o::LOG_BUF + 8].copy_from_slice(&(log.as_mut_ptr() as u64).to_le_bytes());
        let again = bpf(telebpf_abi::cmd::BPF_PROG_LOAD, &mut a);
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        eprintln!(
            "verifier ({again:?}): {}",
            String::from_utf8_lossy(&log[..end])
        );
    }
    r
}

/// `BPF_{PROG,MAP,LINK,BTF}_GET_FD_BY_ID`.
pub fn fd_by_id(cmd: u32, id: u32) -> Result<i32, i32> {
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&id.to_le_bytes());
    bpf(cmd, &mut a).map(|fd| fd as i32)
}

/// The id of a program, map or link (`id` is at offset 4 of their info).
pub fn object_id(fd: i32) -> Result<u32, i32> {
    let mut info = [0u8; 16];
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
    a[4..8].copy_from_slice(&(info.len() as u32).to_le_bytes());
    a[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
    bpf(telebpf_abi::cmd::BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(u32::from_le_bytes([info[4], info[5], info[6], info[7]]))
}

/// `BPF_RAW_TRACEPOINT_OPEN` of `prog` at tracepoint `name` (`None`: the
/// program's own attach point).
pub fn raw_tp_open(name: Option<&std::ffi::CStr>, prog: i32) -> Result<i32, i32> {
    let mut a = [0u8; 16];
    let ptr = name.map_or(0, |n| n.as_ptr() as u64);
    a[0..8].copy_from_slice(&ptr.to_le_bytes());
    a[8..12].copy_from_slice(&(prog as u32).to_le_bytes());
    bpf(telebpf_abi::cmd::BPF_RAW_TRACEPOINT_OPEN, &mut a).map(|fd| fd as i32)
}

/// `BPF_LINK_CREATE` of `prog` at `target` (fd or ifindex) as
/// `attach_type`.
pub fn link_create(prog: i32, target: u32, attach_type: u32) -> Result<i32, i32> {
    let mut a = [0u8; 64];
    a[0..4].copy_from_slice(&(prog as u32).to_le_bytes());
    a[4..8].copy_from_slice(&target.to_le_bytes());
    a[8..12].copy_from_slice(&attach_type.to_le_bytes());
    bpf(telebpf_abi::cmd::BPF_LINK_CREATE, &mut a).map(|fd| fd as i32)
}

/// `BPF_LINK_UPDATE` of `link` to `new_prog`.
pub fn link_update(link: i32, new_prog: i32) -> Result<i64, i32> {
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&(link as u32).to_le_bytes());
    a[4..8].copy_from_slice(&(new_prog as u32).to_le_bytes());
    bpf(telebpf_abi::cmd::BPF_LINK_UPDATE, &mut a)
}

/// `BPF_LINK_DETACH`.
pub fn link_detach(link: i32) -> Result<i64, i32> {
    let mut a = [0u8; 8];
    a[0..4].copy_from_slice(&(link as u32).to_le_bytes());
    bpf(telebpf_abi::cmd::BPF_LINK_DETACH, &mut a)
}

/// Deletes a u32 key.
pub fn delete(fd: i32, key: u32) -> Result<i64, i32> {
    bpf(
        telebpf_abi::cmd::BPF_MAP_DELETE_ELEM,
        &mut elem(fd, &key as *const u32 as u64, 0),
    )
}
