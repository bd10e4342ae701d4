//! `syscall(SYS_bpf, …)` and `syscall(SYS_perf_event_open, …)`: how libbpf
//! (bundled statically in bpftool and the
//! libbpf-tools) reaches the kernel, since glibc has no `bpf` wrapper.
//!
//! libbpf 1.4 and later also move fds with `syscall(SYS_dup3, …)` (its
//! `reuse_fd`, which puts every map's fd onto the placeholder memfd made at
//! open): those go to the `dup*` hooks, so the table learns the new number
//! before libbpf closes the old one.

use libc::{c_int, c_long};
use telebpf_host::{bpf, perf, state};

use super::action;
use crate::{guard, real};

/// Interposed `syscall`. `SYS_dup*` go to the `dup*` hooks; everything but
/// them, `SYS_bpf` and `SYS_perf_event_open` goes straight to libc
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
    // The fd-moving calls: their hooks decide cheaply whether the fds are
    // ours and otherwise make the raw call.
    match nr {
        libc::SYS_dup3 => {
            // SAFETY: the caller's contract for SYS_dup3 is dup3's.
            return unsafe { super::fds::dup3(a1 as c_int, a2 as c_int, a3 as c_int) }.into();
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2 => {
            // SAFETY: the caller's contract for SYS_dup2 is dup2's.
            return unsafe { super::fds::dup2(a1 as c_int, a2 as c_int) }.into();
        }
        libc::SYS_dup => {
            // SAFETY: the caller's contract for SYS_dup is dup's.
            return unsafe { super::fds::dup(a1 as c_int) }.into();
        }
        _ => {}
    }
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
