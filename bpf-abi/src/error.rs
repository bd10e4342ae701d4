//! Errors of plan construction, each mapped to the errno the caller of `bpf()` should see.

/// `EBADF` on Linux x86-64.
pub const EBADF: i32 = 9;
/// `E2BIG` on Linux x86-64.
pub const E2BIG: i32 = 7;
/// `EFAULT` on Linux x86-64.
pub const EFAULT: i32 = 14;
/// `EINVAL` on Linux x86-64.
pub const EINVAL: i32 = 22;
/// `EOPNOTSUPP` on Linux x86-64.
pub const EOPNOTSUPP: i32 = 95;

/// Why no plan could be built for a call. [`AbiError::errno`] gives the (positive) errno to report
/// to the program that issued `bpf()`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// An fd whose object decides the layout (map fd of an element/batch op, prog fd of
    /// `BPF_LINK_CREATE`/`BPF_PROG_TEST_RUN`, `bpf_fd` of `BPF_OBJ_GET_INFO_BY_FD`) is unknown to
    /// [`crate::Objects::kind`]. The kernel would fail `fdget()` with `EBADF`.
    #[error("fd {fd} is not a known object (EBADF)")]
    BadFd {
        /// The fd as found in the attr.
        fd: i32,
    },
    /// The fd is known but of the wrong kind (e.g. a prog fd given as map fd); the kernel
    /// answers `EINVAL` for that.
    #[error("fd {fd} is not a {expected} (EINVAL)")]
    WrongKind {
        /// The fd as found in the attr.
        fd: i32,
        /// What the command needs there.
        expected: &'static str,
    },
    /// A buffer longer than [`crate::MAX_BUFFER_LEN`], buffers adding up to more than
    /// [`crate::MAX_TOTAL_LEN`], more than [`crate::MAX_BUFFERS`] buffers or
    /// [`crate::MAX_FD_SLOTS`] fd slots, or a length computation that overflows.
    /// Deliberate deviation from the kernel (which might accept some of these): reported as `E2BIG`.
    #[error("{what} too large (E2BIG)")]
    TooBig {
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// A non-zero pointer or fd field only partly covered by the bytes given (attr size,
    /// `info_len`, `iter_info_len`): the kernel would use a truncated value (for a pointer, most
    /// likely faulting). Refused, since such a value could neither be patched nor translated;
    /// reported as `EFAULT`.
    #[error("field at offset {offset} is cut by the struct length (EFAULT)")]
    Truncated {
        /// Offset of the field inside its parent.
        offset: usize,
    },
    /// The layout depends on information [`crate::Objects`] did not provide (struct_ops value
    /// layout, type of a link whose info has pointers). Reported as `EOPNOTSUPP`.
    #[error("layout of {what} unknown (EOPNOTSUPP)")]
    Unsupported {
        /// What could not be resolved.
        what: &'static str,
    },
    /// [`crate::Plan::expand`] was called with an index that is not in the plan (`EINVAL`).
    #[error("buffer index {index} out of range (EINVAL)")]
    BadIndex {
        /// The index given.
        index: usize,
    },
}

impl AbiError {
    /// The positive errno value to report (`-1` return and `errno` set, as the kernel would).
    pub fn errno(&self) -> i32 {
        match self {
            AbiError::BadFd { .. } => EBADF,
            AbiError::WrongKind { .. } | AbiError::BadIndex { .. } => EINVAL,
            AbiError::TooBig { .. } => E2BIG,
            AbiError::Truncated { .. } => EFAULT,
            AbiError::Unsupported { .. } => EOPNOTSUPP,
        }
    }
}
