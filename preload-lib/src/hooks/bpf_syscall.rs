//! `syscall(SYS_bpf, …)` and `syscall(SYS_perf_event_open, …)`: how libbpf
//! (bundled statically in bpftool and the
//! libbpf-tools) reaches the kernel, since glibc has no `bpf` wrapper.

use libc::c_long;

use super::action;
use crate::{bpf, guard, perf, real, state};

/// Interposed `syscall`. Everything but `SYS_bpf` and `SYS_perf_event_open`
/// goes straight to libc
/// without touching any state (Rust's own futex calls come through here).
///
/// # Safety
///
/// Same contract as libc's `syscall` for the given number.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    nr: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    // SAFETY: forwarded unchanged under the caller's contract.
    let pass = || unsafe { real::syscall(nr, a1, a2, a3, a4, a5, a6) };
    if (nr != libc::SYS_bpf && nr != libc::SYS_perf_event_open) || !state::configured() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let r = if nr == libc::SYS_bpf {
                bpf::forward(a1 as u32, a2 as u64, a3 as u32, a4 as u64, a5 as u32)
            } else {
                perf::open(a1 as u64, a2 as i32, a3 as i32, a4 as i32, a5 as u64)
            };
            action(r, -1)
        },
        -1,
    )
}
