//! The marshalling of a forwarded `bpf()` call, written once for both ends.
//!
//! A `bpf()` attr holds pointers into the caller's memory and fds of the
//! caller's process; neither means anything in the guest. Both ends derive
//! the same [`Plan`](telebpf_abi::Plan) from the attr alone (the proxy
//! never trusts the client's layout), and this crate moves the call along
//! it:
//!
//! ```text
//!  host (preload, supervisor)              proxy (guest)
//!  ─────────────────────────              ─────────────
//!  host::read_attrs ─ attr from Memory
//!  host::gather ──── buffers from Memory,
//!                    fds → guest numbering ──BpfCall──▶ proxy::patch ── own copies,
//!                                                         │            pointers → them,
//!                                                         │            foreign fds → -1
//!                                                       bpf(2)  (the caller's)
//!                                                         │
//!  host::scatter ─── changed attr bytes,  ◀─BpfResult── proxy::collect ─ pointers and fds
//!                    buffers → Memory                                    restored, buffers
//!                                                                        cut to what was written
//! ```
//!
//! Every function is pure: the caller's memory is a
//! [`Memory`](telebpf_abi::memory::Memory), the fd tables are traits
//! ([`host::HostFds`], [`proxy::SessionFds`]), and the syscall is made by
//! the proxy between [`proxy::patch`] and [`proxy::collect`]. So the same
//! code runs in the preload, in the proxy and, with fakes, in the
//! round-trip property test and the `bpf_attr` fuzz target
//! (`roundtrip`, feature `fuzzing`).
//!
//! The crate sits above `telebpf-protocol` (it builds and reads its wire
//! types) and below the preload and the proxy; errors are typed, with the
//! errno the calling program sees at the edge.

pub mod host;
pub mod proxy;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
#[cfg(test)]
mod props;
#[cfg(any(test, feature = "fuzzing"))]
pub mod roundtrip;
#[cfg(test)]
mod tests;

pub use host::{
    gather, read_attrs, scatter, Attrs, GatherError, Gathered, HostFds, ScatterError, Sent,
};
pub use proxy::{collect, patch, Collected, PatchError, Patched, SessionFds};
