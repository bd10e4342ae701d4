//! The program a front-end serves, as far as the library must reach into
//! it beyond its memory: putting a new fd into it, and asking whether one
//! of its fd numbers is open.
//!
//! The preload serves the process it lives in ([`OwnProcess`]): a new
//! object's fd is simply ours, and `fcntl` tells whether a number is open.
//! A supervisor serves another process from outside: it installs fds with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` and looks at the program's fd table through
//! `/proc`. Both are [`Program`]s, so the code that decodes and answers a
//! call (`crate::bpf`, `crate::perf`, …) is the same for both.

use std::os::fd::{IntoRawFd, OwnedFd};

use crate::error::Result;

/// Where the library puts new fds and looks up fd numbers.
pub trait Program: Send + Sync {
    /// Gives `fd` to the program (close-on-exec, as a kernel bpf fd) and
    /// returns its number there. `fd` is consumed: a library that needs the
    /// file later keeps a duplicate of its own.
    fn install(&self, fd: OwnedFd) -> Result<i32>;

    /// Whether `fd` is open in the program.
    fn is_open(&self, fd: i32) -> bool;

    /// Whether the program's fd numbers are the library's own (the
    /// preload): then an object's host fd can be used by the library
    /// directly, e.g. to `mmap` it in place.
    fn is_own_process(&self) -> bool {
        false
    }
}

/// The calling process itself (the preload's case).
#[derive(Debug, Default, Clone, Copy)]
pub struct OwnProcess;

impl Program for OwnProcess {
    fn install(&self, fd: OwnedFd) -> Result<i32> {
        Ok(fd.into_raw_fd())
    }

    fn is_open(&self, fd: i32) -> bool {
        // SAFETY: F_GETFD on any integer only reads the fd table.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    fn is_own_process(&self) -> bool {
        true
    }
}

/// A program shared with its front-end (a supervisor keeps the same
/// process for its own bookkeeping).
impl<P: Program + ?Sized> Program for std::sync::Arc<P> {
    fn install(&self, fd: OwnedFd) -> Result<i32> {
        (**self).install(fd)
    }

    fn is_open(&self, fd: i32) -> bool {
        (**self).is_open(fd)
    }

    fn is_own_process(&self) -> bool {
        (**self).is_own_process()
    }
}
