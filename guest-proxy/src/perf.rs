//! `perf_event_open`, the perf-event `ioctl`s and map snapshots, executed
//! for a session.
//!
//! As for `bpf()`, the proxy trusts nothing the client implies: fds must be
//! the session's own (an fd the session does not own becomes one that is
//! no perf event, so the kernel answers as it would for a stray fd),
//! `config1` is pointed at a proxy-side copy of the string only for the
//! PMUs whose `config1` is a string pointer (kprobe, uprobe), and only known
//! ioctls on the session's own perf events run.

use std::sync::OnceLock;

use telebpf_abi::map_type::BPF_MAP_TYPE_ARRAY;
use telebpf_abi::perf::{self, IoctlArg};
use telebpf_abi::{read_u32, write_u64, ObjectKind};
use telebpf_protocol::message::{IoctlValue, NewObject, FOREIGN_FD};

use crate::kernel::Kernel;
use crate::sys;

pub use telebpf_protocol::message::PERF_EVENT_LINK;

/// The session's view needed here.
pub trait PerfFds {
    /// The object behind a session fd.
    fn object(&self, fd: i32) -> Option<&NewObject>;

    /// The kernel the session's perf events live in.
    fn kernel(&self) -> &dyn Kernel;
}

fn is_perf_event(fds: &dyn PerfFds, fd: i32) -> bool {
    fds.object(fd).is_some_and(|o| o.link == PERF_EVENT_LINK)
}

/// The type number of the PMU `name` (`kprobe`, `uprobe`), if the guest
/// has it.
fn pmu_type(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/bus/event_source/devices/{name}/type"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// PMU type numbers whose `config1` is a pointer to a string.
fn string_config1_pmus() -> &'static [u32] {
    static TYPES: OnceLock<Vec<u32>> = OnceLock::new();
    TYPES.get_or_init(|| {
        ["kprobe", "uprobe"]
            .into_iter()
            .filter_map(pmu_type)
            .collect()
    })
}

/// The type number of perf's uprobe PMU, if the guest has one.
pub fn uprobe_pmu() -> Option<u32> {
    static TYPE: OnceLock<Option<u32>> = OnceLock::new();
    *TYPE.get_or_init(|| pmu_type("uprobe"))
}

/// A fd from the client that must be a session perf event (or -1).
fn session_fd(fds: &dyn PerfFds, fd: i32, perf_only: bool) -> i32 {
    match fd {
        -1 => -1,
        FOREIGN_FD => sys::not_bpf_fd(),
        v if fds.object(v).is_some() && (!perf_only || is_perf_event(fds, v)) => v,
        _ => -1,
    }
}

/// `perf_event_open(attr, pid, cpu, group_fd, flags)`.
pub fn open(
    attr: &[u8],
    pid: i32,
    cpu: i32,
    group_fd: i32,
    flags: u64,
    config1_string: Option<&[u8]>,
    fds: &dyn PerfFds,
) -> Result<i64, i32> {
    if attr.len() < perf::ATTR_SIZE_VER0 || attr.len() > perf::ATTR_SIZE_MAX {
        return Err(libc::E2BIG);
    }
    let mut attr = attr.to_vec();
    // The kernel reads `size` bytes; never let it read past our copy.
    let size = read_u32(&attr, perf::ATTR_SIZE) as usize;
    if size > attr.len() {
        return Err(libc::E2BIG);
    }
    let mut string: Option<Vec<u8>> = None;
    if string_config1_pmus().contains(&read_u32(&attr, perf::ATTR_TYPE)) {
        match config1_string {
            Some(s) if s.last() == Some(&0) && s.len() <= perf::CONFIG1_STRING_MAX => {
                let s = string.insert(s.to_vec());
                write_u64(&mut attr, perf::ATTR_CONFIG1, s.as_ptr() as u64);
            }
            // The host could not read the string: the kernel would fault.
            _ => return Err(libc::EFAULT),
        }
    }
    let group = session_fd(fds, group_fd, true);
    // With PERF_FLAG_PID_CGROUP, `pid` is a cgroup fd: like every fd, only
    // the session's own may reach the kernel (none is a cgroup, so the
    // kernel answers EBADF), never one of the proxy's own fds.
    let pid = if flags & perf::FLAG_PID_CGROUP != 0 {
        session_fd(fds, pid, false)
    } else {
        pid
    };
    // SAFETY: `attr` holds `size` readable bytes; the only pointer inside
    // (config1, for string PMUs) points at `string`, alive until after the
    // call.
    let ret = unsafe {
        fds.kernel()
            .perf_event_open(&mut attr, pid, cpu, group, flags)
    };
    drop(string);
    ret
}

/// The object a successful `open` created.
pub fn describe_perf_event() -> NewObject {
    NewObject {
        kind: ObjectKind::Other,
        link: PERF_EVENT_LINK.to_string(),
        link_type: None,
    }
}

/// A perf-event ioctl on a session perf event; returns the syscall result
/// and, for `PERF_EVENT_IOC_ID`, the value the kernel wrote.
pub fn ioctl(
    fd: i32,
    cmd: u64,
    arg: &IoctlValue,
    fds: &dyn PerfFds,
) -> Result<(i64, Option<u64>), i32> {
    if !is_perf_event(fds, fd) {
        // The session's own non-perf objects, and anything else.
        return Err(if fds.object(fd).is_some() {
            libc::ENOTTY
        } else {
            libc::EBADF
        });
    }
    let kind = perf::ioctl_arg(cmd).ok_or(libc::ENOTTY)?;
    let mut word = 0u64;
    let mut text: Vec<u8> = Vec::new();
    let raw_arg: libc::c_ulong = match (kind, arg) {
        (IoctlArg::Value, IoctlValue::Value(v)) => *v as libc::c_ulong,
        (IoctlArg::BpfFd, IoctlValue::Fd(f)) => session_fd(fds, *f, false) as libc::c_ulong,
        (IoctlArg::PerfFd, IoctlValue::Fd(f)) => session_fd(fds, *f, true) as libc::c_ulong,
        (IoctlArg::InU64, IoctlValue::Value(v)) => {
            word = *v;
            &mut word as *mut u64 as libc::c_ulong
        }
        (IoctlArg::OutU64, IoctlValue::Out) => &mut word as *mut u64 as libc::c_ulong,
        (IoctlArg::InString, IoctlValue::String(s)) if s.last() == Some(&0) => {
            text = s.clone();
            text.as_ptr() as libc::c_ulong
        }
        (_, IoctlValue::Unreadable) => return Err(libc::EFAULT),
        _ => return Err(libc::EINVAL),
    };
    // SAFETY: `fd` is a perf event of this session; pointer arguments point
    // to `word` or `text`, live locals of the sizes the command uses.
    let ret = unsafe { fds.kernel().ioctl(fd, cmd, raw_arg as u64) }?;
    drop(text);
    Ok((ret, (kind == IoctlArg::OutU64).then_some(word)))
}

/// Largest map snapshot served.
const MAX_SNAPSHOT: u64 = 256 << 20;

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The bytes of map `fd` that `mmap` may cover, from the kernel's map info:
/// only a `BPF_F_MMAPABLE` array (`.bss`, `.data`, `.rodata`, arrays a
/// program declares mmapable) is served, and only its values, as the
/// kernel's `array_map_mmap` allows: `PAGE_ALIGN(max_entries *
/// round_up(value_size, 8))` bytes from offset 0.
///
/// Errors: `EBADF` for an fd the session does not hold; `ENODEV` for one
/// that is no map, and for every other map type — ring buffers and user
/// ring buffers included, whose control pages belong to the proxy's own
/// consumer and producer (streams): the preload mirrors rings by stream and
/// answers `ENODEV` itself to a host program's `mmap` of any other map, so
/// no honest client sends these; `EINVAL` for an array without
/// `BPF_F_MMAPABLE`, as the kernel's `mmap` answers.
fn mmapable_len(fd: i32, fds: &dyn PerfFds) -> Result<u64, i32> {
    session_map(fd, fds)?;
    // struct bpf_map_info: type, id, key_size, value_size, max_entries,
    // map_flags.
    let mut info = [0u8; 24];
    fds.kernel().object_info(fd, &mut info)?;
    let u = |o: usize| u32::from_le_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    let (map_type, value_size, max_entries, flags) = (u(0), u(12), u(16), u(20));
    if map_type != BPF_MAP_TYPE_ARRAY {
        return Err(libc::ENODEV);
    }
    if flags & BPF_F_MMAPABLE == 0 {
        return Err(libc::EINVAL);
    }
    let elem = u64::from(value_size).next_multiple_of(8);
    let page = ringbuf_mirror::page_size() as u64;
    Ok((u64::from(max_entries) * elem).next_multiple_of(page))
}

/// Checks `len` bytes at `offset` of map `fd` against [`mmapable_len`]
/// (`EINVAL` past it, as `array_map_mmap` answers).
fn mmapable_range(fd: i32, offset: u64, len: u64, fds: &dyn PerfFds) -> Result<(), i32> {
    let size = mmapable_len(fd, fds)?;
    match offset.checked_add(len) {
        Some(end) if len > 0 && len <= MAX_SNAPSHOT && end <= size => Ok(()),
        _ => Err(libc::EINVAL),
    }
}

/// Checks that `fd` is a map of the session: other objects cannot be
/// mapped (`ENODEV`, as `mmap` of them answers), unknown fds are `EBADF`.
fn session_map(fd: i32, fds: &dyn PerfFds) -> Result<(), i32> {
    match fds.object(fd).map(|o| &o.kind) {
        Some(ObjectKind::Map(_)) => Ok(()),
        Some(_) => Err(libc::ENODEV),
        None => Err(libc::EBADF),
    }
}

/// Writes into an mmapable map's memory, as a host program's store into its
/// `mmap` of the map would: only within the values of a `BPF_F_MMAPABLE`
/// array (see [`mmapable_len`]); the kernel's `mmap` still decides on
/// frozen (`EPERM`) and program-read-only (`EACCES`) maps.
pub fn write_map(fd: i32, offset: u64, data: &[u8], fds: &dyn PerfFds) -> Result<(), i32> {
    mmapable_range(fd, offset, data.len() as u64, fds)?;
    sys::write_mapping(fd, offset, data)
}

/// The content of an mmapable map, as `mmap(fd, len, offset)` would show
/// it now: only within the values of a `BPF_F_MMAPABLE` array (see
/// [`mmapable_len`]).
pub fn snapshot(fd: i32, len: u64, offset: u64, fds: &dyn PerfFds) -> Result<Vec<u8>, i32> {
    mmapable_range(fd, offset, len, fds)?;
    sys::read_mapping(fd, len as usize, offset as i64)
}
