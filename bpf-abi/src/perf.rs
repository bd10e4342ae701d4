//! `perf_event_open(2)` and the perf-event `ioctl`s, as far as forwarding
//! them needs: libbpf attaches tracepoints, kprobes and uprobes through perf
//! events and streams BPF output through per-CPU perf rings.
//!
//! Values checked against `linux/perf_event.h` with a C compiler.

/// `struct perf_event_attr.type` offset.
pub const ATTR_TYPE: usize = 0;
/// `struct perf_event_attr.size` offset.
pub const ATTR_SIZE: usize = 4;
/// `struct perf_event_attr.config` offset: for the uprobe PMU, bits 32-63
/// are `ref_ctr_offset` (`format/ref_ctr_offset` says `config:32-63`).
pub const ATTR_CONFIG: usize = 8;
/// Offset of the bit fields of `struct perf_event_attr` (`disabled`,
/// `inherit`, … as one u64).
pub const ATTR_FLAGS: usize = 40;
/// `perf_event_attr.remove_on_exec` in the bit fields.
pub const ATTR_FLAG_REMOVE_ON_EXEC: u64 = 1 << 36;
/// `perf_event_attr.sigtrap` in the bit fields: every overflow sends the
/// task being counted a `SIGTRAP` (Linux 5.13).
pub const ATTR_FLAG_SIGTRAP: u64 = 1 << 37;
/// Shift of the uprobe PMU's `ref_ctr_offset` in `config`.
pub const UPROBE_REF_CTR_SHIFT: u32 = 32;
/// `struct perf_event_attr.config1` offset: for the kprobe and uprobe PMUs a
/// pointer to the function name or binary path.
pub const ATTR_CONFIG1: usize = 56;
/// `PERF_ATTR_SIZE_VER0`: the smallest attr the kernel accepts (`size == 0`
/// means this size).
pub const ATTR_SIZE_VER0: usize = 64;
/// Largest attr forwarded: the kernel refuses sizes above a page with
/// `E2BIG` (after checking the tail is zero).
pub const ATTR_SIZE_MAX: usize = 4096;
/// Longest kprobe function name or uprobe path read for `config1`.
pub const CONFIG1_STRING_MAX: usize = 4096;

/// `PERF_TYPE_SOFTWARE`.
pub const TYPE_SOFTWARE: u32 = 1;
/// `PERF_TYPE_TRACEPOINT`.
pub const TYPE_TRACEPOINT: u32 = 2;
/// `PERF_COUNT_SW_BPF_OUTPUT`: the event behind a perf buffer's rings.
pub const COUNT_SW_BPF_OUTPUT: u64 = 10;

/// `PERF_EVENT_IOC_ENABLE`.
pub const IOC_ENABLE: u64 = 0x2400;
/// `PERF_EVENT_IOC_DISABLE`.
pub const IOC_DISABLE: u64 = 0x2401;
/// `PERF_EVENT_IOC_REFRESH` (int argument).
pub const IOC_REFRESH: u64 = 0x2402;
/// `PERF_EVENT_IOC_RESET`.
pub const IOC_RESET: u64 = 0x2403;
/// `PERF_EVENT_IOC_PERIOD` (pointer to u64, read).
pub const IOC_PERIOD: u64 = 0x4008_2404;
/// `PERF_EVENT_IOC_SET_OUTPUT` (fd argument).
pub const IOC_SET_OUTPUT: u64 = 0x2405;
/// `PERF_EVENT_IOC_SET_FILTER` (pointer to a string).
pub const IOC_SET_FILTER: u64 = 0x4008_2406;
/// `PERF_EVENT_IOC_ID` (pointer to u64, written).
pub const IOC_ID: u64 = 0x8008_2407;
/// `PERF_EVENT_IOC_SET_BPF` (BPF program fd argument).
pub const IOC_SET_BPF: u64 = 0x4004_2408;
/// `PERF_EVENT_IOC_PAUSE_OUTPUT` (int argument).
pub const IOC_PAUSE_OUTPUT: u64 = 0x4004_2409;

/// `PERF_FLAG_PID_CGROUP` (`perf_event_open` flags): `pid` is the fd of a
/// cgroup directory, not a process id.
pub const FLAG_PID_CGROUP: u64 = 1 << 2;

/// How an ioctl's argument travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlArg {
    /// A plain integer.
    Value,
    /// A BPF program fd (translated like any fd slot).
    BpfFd,
    /// A perf event fd, or -1.
    PerfFd,
    /// A pointer to a u64 the kernel reads.
    InU64,
    /// A pointer to a u64 the kernel writes.
    OutU64,
    /// A pointer to a NUL-terminated string the kernel reads.
    InString,
}

/// The argument kind of a perf-event ioctl this forwarding supports, or
/// `None` for one it does not (the caller answers `ENOTTY`, as the kernel
/// does for commands it does not know).
pub fn ioctl_arg(cmd: u64) -> Option<IoctlArg> {
    Some(match cmd {
        IOC_ENABLE | IOC_DISABLE | IOC_REFRESH | IOC_RESET | IOC_PAUSE_OUTPUT => IoctlArg::Value,
        IOC_SET_BPF => IoctlArg::BpfFd,
        IOC_SET_OUTPUT => IoctlArg::PerfFd,
        IOC_PERIOD => IoctlArg::InU64,
        IOC_ID => IoctlArg::OutU64,
        IOC_SET_FILTER => IoctlArg::InString,
        _ => return None,
    })
}

/// Bytes of the attr to forward: `size` (0 meaning `PERF_ATTR_SIZE_VER0`),
/// capped at a page (the kernel's own bound).
pub fn attr_len(size_field: u32) -> usize {
    match size_field as usize {
        0 => ATTR_SIZE_VER0,
        n => n.min(ATTR_SIZE_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_kinds() {
        assert_eq!(ioctl_arg(IOC_SET_BPF), Some(IoctlArg::BpfFd));
        assert_eq!(ioctl_arg(IOC_ID), Some(IoctlArg::OutU64));
        assert_eq!(ioctl_arg(0x5401), None); // TCGETS
    }

    #[test]
    fn attr_lengths() {
        assert_eq!(attr_len(0), 64);
        assert_eq!(attr_len(136), 136);
        assert_eq!(attr_len(1 << 20), 4096);
    }
}
