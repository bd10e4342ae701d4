//! `perf_event_open` and perf-event `ioctl`s, forwarded.
//!
//! libbpf attaches tracepoints, kprobes and uprobes through perf events
//! (`PERF_EVENT_IOC_SET_BPF` or a `BPF_LINK_CREATE` naming the perf fd), and
//! streams BPF output through per-CPU `PERF_COUNT_SW_BPF_OUTPUT` events. A
//! guest perf event is represented on the host by a pipe's read end, so it
//! can sit in an `epoll` set and become readable when its mirrored ring has
//! data.

use telebpf_abi::perf::{self, IoctlArg};
use telebpf_abi::{read_u32, read_u64};
use telebpf_protocol::message::{IoctlValue, Reply, Request};

use crate::error::{Error, Result};
use crate::{bpf, state};

/// Translates a host fd argument into the guest's numbering (`-1`, "no
/// fd", is not open and stays `-1`).
fn guest_fd(host_fd: i32) -> i32 {
    bpf::to_guest_fd(&**state::get().table(), host_fd)
}

/// Forwards `perf_event_open(attr, pid, cpu, group_fd, flags)`.
pub fn open(attr_addr: u64, pid: i32, cpu: i32, group_fd: i32, flags: u64) -> Result<i64> {
    let memory = state::get().memory();
    let head = memory.read(attr_addr, 8).map_err(Error::Memory)?;
    let len = perf::attr_len(read_u32(&head, perf::ATTR_SIZE));
    let attr = memory.read(attr_addr, len).map_err(Error::Memory)?;
    // For the kprobe/uprobe PMUs config1 points to a function name or path;
    // which PMUs those are is the guest's business, so a readable string is
    // sent along whenever a dynamic PMU has a non-zero config1.
    let config1 = read_u64(&attr, perf::ATTR_CONFIG1);
    let dynamic_pmu = read_u32(&attr, perf::ATTR_TYPE) > 5;
    let config1_string = (dynamic_pmu && config1 != 0)
        .then(|| memory.read_cstr(config1, perf::CONFIG1_STRING_MAX).ok())
        .flatten()
        .filter(|s| s.last() == Some(&0));
    // With PERF_FLAG_PID_CGROUP, `pid` is a cgroup fd of ours: translated
    // like any fd (a host cgroup names nothing in the guest).
    let pid = if flags & perf::FLAG_PID_CGROUP != 0 {
        guest_fd(pid)
    } else {
        pid
    };
    let req = Request::PerfEventOpen {
        attr,
        pid,
        cpu,
        group_fd: guest_fd(group_fd),
        flags,
        config1_string,
    };
    let (guest, obj) = state::get().ask(&req, "perf_event_open", |r| match r {
        Reply::Opened(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })?;
    bpf::adopt(guest as i32, obj).map(i64::from)
}

/// Forwards a perf-event ioctl on a host fd standing for a guest perf
/// event.
pub fn ioctl(guest: i32, cmd: u64, arg: u64) -> Result<i64> {
    let Some(kind) = perf::ioctl_arg(cmd) else {
        return Err(Error::kernel(
            libc::ENOTTY,
            "an ioctl a perf event does not know",
        ));
    };
    let memory = state::get().memory();
    let value = match kind {
        IoctlArg::Value => IoctlValue::Value(arg),
        IoctlArg::BpfFd | IoctlArg::PerfFd => IoctlValue::Fd(guest_fd(arg as i32)),
        IoctlArg::InU64 => match memory.read(arg, 8) {
            Ok(b) => IoctlValue::Value(read_u64(&b, 0)),
            Err(_) => IoctlValue::Unreadable,
        },
        IoctlArg::OutU64 => IoctlValue::Out,
        IoctlArg::InString => match memory.read_cstr(arg, 4096) {
            Ok(s) if s.last() == Some(&0) => IoctlValue::String(s),
            _ => IoctlValue::Unreadable,
        },
    };
    let req = Request::Ioctl {
        fd: guest,
        cmd,
        arg: value,
    };
    let (ret, out) = state::get().ask(&req, "a perf ioctl", |r| match r {
        Reply::Ioctl(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })?;
    if let Some(v) = out {
        memory.write(arg, &v.to_le_bytes()).map_err(Error::Memory)?;
    }
    Ok(ret)
}
