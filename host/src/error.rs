//! What can go wrong on the host side of a forwarded call, with its cause.
//!
//! The host program only ever sees an errno: the front-end (the preload's
//! `extern "C"` layer, later a supervisor answering a trapped syscall)
//! turns an [`Error`] into one with [`Error::errno`], at its edge and
//! nowhere else. Inside the library an error keeps what caused it — the
//! guest's answer, a refusal of the proxy's policy, a broken connection, a
//! host call that failed — so that a message, a test or a debugger can tell
//! them apart where a bare number could not.

use std::io;

use telebpf_client::ClientError;

/// A failure of the host side; [`errno`](Error::errno) is what the host
/// program sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest (its kernel, or the proxy for it) carried the request out
    /// and it failed with this errno: the program gets exactly that, as it
    /// would from a local kernel.
    #[error("the guest answered: {}", io::Error::from_raw_os_error(*.0))]
    Guest(i32),
    /// The proxy's policy refused the request (a line on stderr says why,
    /// once per kind of request): `EPERM`.
    #[error("the proxy's policy refused the request")]
    Refused,
    /// This process lost its proxy (see [`crate::lost`]): the lost errno.
    #[error("the proxy is lost")]
    Lost,
    /// Reaching the proxy failed (configuration, connection, channel).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The proxy answered something that does not fit the request:
    /// `EPROTO`.
    #[error("unexpected answer to {0}")]
    Protocol(&'static str),
    /// The program's memory at an address it passed is not accessible
    /// (the errno the memory access gave, `EFAULT`), as the kernel's
    /// `copy_from_user`/`copy_to_user` would fail.
    #[error("the program's memory is not accessible: {}", io::Error::from_raw_os_error(*.0))]
    Memory(i32),
    /// The call could not be marshalled (a bad pointer, an attr too large,
    /// a plan the kernel would refuse).
    #[error(transparent)]
    Gather(#[from] telebpf_marshal::GatherError),
    /// What the kernel wrote could not be written back (a bad pointer, or
    /// a reply off its plan).
    #[error(transparent)]
    Scatter(#[from] telebpf_marshal::ScatterError),
    /// The call is answered on the host side the way the kernel would
    /// answer it (`why` says what the kernel would object to).
    #[error("{why}: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// The errno the kernel gives in that case.
        errno: i32,
        /// What the call asked that cannot be done.
        why: &'static str,
    },
    /// A host call the library made for the program failed.
    #[error("{what}: {source}")]
    Os {
        /// What the library was doing.
        what: &'static str,
        /// The host's error (always with an OS error code).
        #[source]
        source: io::Error,
    },
}

/// The largest errno (`MAX_ERRNO`): a syscall's return value from
/// -4095 to -1 is an error.
const MAX_ERRNO: i32 = 4095;

impl Error {
    /// The errno the host program sees for this failure (`EIO` for a
    /// number from the proxy that is no errno).
    pub fn errno(&self) -> i32 {
        match self {
            // The proxy's number is not trusted: 0 or a negative one
            // would make a supervised call "succeed" (a seccomp answer
            // with no error returns its value), one beyond MAX_ERRNO
            // would read as a result.
            Error::Guest(e) | Error::Memory(e) if (1..=MAX_ERRNO).contains(e) => *e,
            Error::Guest(_) | Error::Memory(_) => libc::EIO,
            Error::Refused => libc::EPERM,
            Error::Lost => crate::lost::ERRNO,
            Error::Client(e) => e.errno(),
            Error::Protocol(_) => libc::EPROTO,
            Error::Gather(e) => e.errno(),
            Error::Scatter(e) => e.errno(),
            Error::Kernel { errno, .. } => *errno,
            Error::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// The kernel's answer `errno` to a call that asks what `why` says.
    pub fn kernel(errno: i32, why: &'static str) -> Error {
        Error::Kernel { errno, why }
    }

    /// A host call that failed with `source` while doing `what`; an error
    /// without an OS code (std's own) counts as `fallback`, the errno the
    /// kernel would give for that kind of shortage.
    pub fn os(what: &'static str, source: io::Error, fallback: i32) -> Error {
        let code = source.raw_os_error().unwrap_or(fallback);
        Error::Os {
            what,
            source: io::Error::from_raw_os_error(code),
        }
    }

    /// The last host call failed (errno as it set it) while doing `what`.
    pub fn last_os(what: &'static str) -> Error {
        Error::os(what, io::Error::last_os_error(), libc::EIO)
    }
}

/// The host side's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_gives_its_errno() {
        assert_eq!(Error::Guest(libc::ENOENT).errno(), libc::ENOENT);
        assert_eq!(Error::Refused.errno(), libc::EPERM);
        assert_eq!(Error::Lost.errno(), libc::EIO);
        assert_eq!(Error::Protocol("a file request").errno(), libc::EPROTO);
        assert_eq!(Error::Memory(libc::EFAULT).errno(), libc::EFAULT);
        // A proxy's number that is no errno never reads as a success or
        // a result.
        for bogus in [0, -22, 4096, i32::MAX, i32::MIN] {
            assert_eq!(Error::Guest(bogus).errno(), libc::EIO, "{bogus}");
        }
        assert_eq!(Error::Guest(4095).errno(), 4095);
        // A call no plan can be made for answers the kernel's errno.
        let plan = telebpf_marshal::GatherError::from(telebpf_abi::AbiError::BadFd { fd: 3 });
        assert_eq!(Error::from(plan).errno(), libc::EBADF);
        assert_eq!(Error::kernel(libc::ENODEV, "x").errno(), libc::ENODEV);
        let e = Error::os("dup", io::Error::other("no code"), libc::EMFILE);
        assert_eq!(e.errno(), libc::EMFILE);
        assert_eq!(
            Error::Client(ClientError::Remote(libc::EACCES)).errno(),
            libc::EACCES
        );
    }

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            Error::Guest(libc::ENOENT).to_string(),
            "the guest answered: No such file or directory (os error 2)"
        );
        assert_eq!(
            Error::kernel(libc::ENODEV, "this map cannot be mapped").to_string(),
            "this map cannot be mapped: No such device (os error 19)"
        );
        let e = Error::os(
            "memfd_create",
            io::Error::from_raw_os_error(libc::EMFILE),
            0,
        );
        assert_eq!(
            e.to_string(),
            "memfd_create: Too many open files (os error 24)"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            Error::Protocol("a map snapshot").to_string(),
            "unexpected answer to a map snapshot"
        );
    }
}
