//! `syscall(SYS_bpf, …)`: how libbpf (bundled statically in bpftool and the
//! libbpf-tools) reaches the kernel, since glibc has no `bpf` wrapper.

use libc::c_long;

use super::action;
use crate::{bpf, guard, real, state};

/// Interposed `syscall`. Everything but `SYS_bpf` goes straight to libc
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
    if nr != libc::SYS_bpf || !state::configured() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            action(
                bpf::forward(a1 as u32, a2 as u64, a3 as u32, a4 as u64, a5 as u32),
                -1,
            )
        },
        -1,
    )
}
