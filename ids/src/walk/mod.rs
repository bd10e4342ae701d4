//! The host-side walkers: each reads, through a [`crate::view::View`], the
//! same fields its collector (`collectors/bpf/*.bpf.c`) reads, in the same
//! order, so a batch from that collector holds everything the walker needs.

pub mod modules;
pub mod processes;
pub mod tcp;

/// A chain longer than this is treated as corrupt (or being rewritten).
pub const MAX_WALK: usize = 1 << 20;
