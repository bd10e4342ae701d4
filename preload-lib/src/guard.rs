//! The re-entrancy guard and the one way into the library from C.
//!
//! Every interposed function that does more than a cheap check enters
//! through [`enter`]. While a thread is inside, every interposed function it
//! calls again (our own `open` of the key file, `close` of a socket, the
//! allocator's `mmap`) falls straight through to libc, so the library can use
//! std freely and never deadlocks on its own locks. A panic inside is caught
//! here: the host program gets `-1`/`EIO`, never an unwind across C frames.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::errno;

thread_local! {
    // `const` initialisation: no lazy registration and no destructor, so the
    // flag is usable at any point of a thread's life, including from hooks
    // called during thread start-up and exit.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// What a hook decided.
#[derive(Debug)]
pub enum Action<R> {
    /// Not ours: call the real function.
    Pass,
    /// Handled; return this and leave errno as the caller had it.
    Done(R),
    /// Failed; set errno and return this.
    Fail(i32, R),
}

/// Runs `handle` under the guard. `pass` calls the real function;
/// `on_panic` is returned (with errno `EIO`) if `handle` panics.
pub fn enter<R>(pass: impl FnOnce() -> R, handle: impl FnOnce() -> Action<R>, on_panic: R) -> R {
    if INSIDE.with(|f| f.replace(true)) {
        return pass();
    }
    let saved = errno::get();
    let outcome = catch_unwind(AssertUnwindSafe(handle));
    INSIDE.with(|f| f.set(false));
    match outcome {
        Ok(Action::Pass) => {
            errno::set(saved);
            pass()
        }
        Ok(Action::Done(r)) => {
            errno::set(saved);
            r
        }
        Ok(Action::Fail(e, r)) => {
            errno::set(e);
            r
        }
        Err(_) => {
            errno::set(libc::EIO);
            on_panic
        }
    }
}

/// Whether the current thread is inside the library.
pub fn inside() -> bool {
    INSIDE.with(|f| f.get())
}

/// Marks the current thread as the library's own for the rest of its life
/// (mirror threads): every interposed call it makes goes to libc.
pub fn hold_for_thread() {
    INSIDE.with(|f| f.set(true));
}

/// Makes every thread the host side starts (mirrors, map sync, keep-alive)
/// the library's own from its first instruction on ([`hold_for_thread`]).
/// Run by the dynamic loader when the library is loaded, before any
/// interposed call can start such a thread; it only stores a function
/// pointer.
extern "C" fn mark_library_threads() {
    telebpf_host::sys::set_thread_start(hold_for_thread);
}

#[used]
#[link_section = ".init_array"]
static MARK_LIBRARY_THREADS: extern "C" fn() = mark_library_threads;
