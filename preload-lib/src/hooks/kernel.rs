//! Calls that describe the running kernel and the caller's standing in it:
//! answered for the guest, where the forwarded calls run.

use libc::{c_int, c_void};
use telebpf_host::error::Error;
use telebpf_host::{facts, memory, state};

use super::action;
use crate::guard::{self, Action};
use crate::real;

/// Interposed `uname`: the guest's release, version and machine (bpftool
/// builds `/boot/config-<release>` from it; libbpf derives the kernel
/// version).
///
/// # Safety
///
/// Same contract as libc's `uname`.
#[no_mangle]
pub unsafe extern "C" fn uname(buf: *mut libc::utsname) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::uname(buf) };
    if !state::configured() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let r = state::get().facts().and_then(|facts| {
                let u = facts::utsname(facts);
                // SAFETY: `u` is a live local of its size.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        (&u as *const libc::utsname).cast::<u8>(),
                        std::mem::size_of::<libc::utsname>(),
                    )
                };
                memory::write(buf as u64, bytes)
                    .map(|()| 0)
                    .map_err(Error::Memory)
            });
            action(r, -1)
        },
        -1,
    )
}

/// Interposed `capget`: the capabilities the forwarded calls run with (the
/// proxy's), so tools that check for CAP_BPF/CAP_SYS_ADMIN before working
/// (bpftool does) see the privileges they will actually have.
///
/// # Safety
///
/// Same contract as libc's `capget`.
#[no_mangle]
pub unsafe extern "C" fn capget(hdr: *mut c_void, data: *mut c_void) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::capget(hdr, data) };
    if !state::configured() || data.is_null() || hdr.is_null() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let Ok(h) = memory::read(hdr as u64, 8) else {
                return Action::Fail(libc::EFAULT, -1);
            };
            let version = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let pid = i32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            // SAFETY: getpid has no preconditions.
            if pid != 0 && pid != unsafe { libc::getpid() } {
                return Action::Pass;
            }
            if ![facts::CAP_V1, facts::CAP_V2, facts::CAP_V3].contains(&version) {
                // Unknown version: libc reports the preferred one.
                return Action::Pass;
            }
            let guest = match state::get().facts() {
                Ok(f) => f,
                Err(e) => return Action::Fail(e.errno(), -1),
            };
            let Some(out) = facts::cap_data(guest, version) else {
                return Action::Pass;
            };
            match memory::write(data as u64, &out) {
                Ok(()) => Action::Done(0),
                Err(e) => Action::Fail(e, -1),
            }
        },
        -1,
    )
}

/// Whether a limit change is the memlock bump that BPF tools do for old
/// kernels: it concerns the guest (where the proxy lifted it at start-up),
/// and failing it locally as an unprivileged user must not stop the tool.
fn is_memlock(resource: c_int) -> bool {
    state::configured() && resource == libc::RLIMIT_MEMLOCK as c_int
}

/// Interposed `setrlimit`.
///
/// # Safety
///
/// Same contract as libc's `setrlimit`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit(resource: c_int, lim: *const libc::rlimit) -> c_int {
    if is_memlock(resource) {
        return 0;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::setrlimit(resource, lim) }
}

/// Interposed `setrlimit64`.
///
/// # Safety
///
/// Same contract as libc's `setrlimit64`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit64(resource: c_int, lim: *const libc::rlimit) -> c_int {
    if is_memlock(resource) {
        return 0;
    }
    // SAFETY: forwarded under the caller's contract.
    unsafe { real::setrlimit64(resource, lim) }
}

/// Interposed `prlimit` (own process, memlock: report, do not change).
///
/// # Safety
///
/// Same contract as libc's `prlimit`.
#[no_mangle]
pub unsafe extern "C" fn prlimit(
    pid: libc::pid_t,
    resource: c_int,
    new: *const libc::rlimit,
    old: *mut libc::rlimit,
) -> c_int {
    let new = if pid == 0 && is_memlock(resource) {
        std::ptr::null()
    } else {
        new
    };
    // SAFETY: forwarded under the caller's contract (minus the change).
    unsafe { real::prlimit(pid, resource, new, old) }
}

/// Interposed `prlimit64`.
///
/// # Safety
///
/// Same contract as libc's `prlimit64`.
#[no_mangle]
pub unsafe extern "C" fn prlimit64(
    pid: libc::pid_t,
    resource: c_int,
    new: *const libc::rlimit,
    old: *mut libc::rlimit,
) -> c_int {
    let new = if pid == 0 && is_memlock(resource) {
        std::ptr::null()
    } else {
        new
    };
    // SAFETY: forwarded under the caller's contract (minus the change).
    unsafe { real::prlimit64(pid, resource, new, old) }
}
