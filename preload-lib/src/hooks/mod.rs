//! The exported C entry points that shadow libc's.
//!
//! Each one first makes the cheapest possible decision ("not a bpf syscall",
//! "not one of our fds", "not a guest path") and calls the real function;
//! only calls that concern the guest enter the library through
//! [`crate::guard::enter`]. The C signatures are libc's; variadic ones
//! (`open`, `fcntl`, `syscall`) are declared with their maximum fixed
//! arguments, which is ABI-compatible on x86-64 (the callee reads the
//! registers the caller set, and ignores `%al`).

mod bpf_syscall;
pub(crate) mod dirs;
mod fds;
mod files;
mod kernel;
mod net;
mod waits;

use telebpf_host::error::Error;

use crate::guard::Action;

/// Turns a real call's result into an action that keeps its errno.
fn keep_errno<R: PartialOrd + Default>(r: R) -> Action<R> {
    if r < R::default() {
        Action::Fail(crate::errno::get(), r)
    } else {
        Action::Done(r)
    }
}

/// Turns a library result into an action with `err` as the error value:
/// the one place a host-side error becomes the program's errno.
fn action<R>(r: Result<R, Error>, err: R) -> Action<R> {
    match r {
        Ok(v) => Action::Done(v),
        Err(e) => Action::Fail(e.errno(), err),
    }
}
