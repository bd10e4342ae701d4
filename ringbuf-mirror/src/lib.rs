//! Both ends of ring mirroring: the guest proxy's side, which consumes the
//! guest kernel's BPF ring buffers and perf buffers (and produces into its
//! user ring buffers) and streams the records ([`guest`]), and the host
//! side, which writes them into memory an unmodified libbpf consumer has
//! `mmap`ed, with the kernel's layout and header semantics (the rest of
//! this crate). Neither end opens a socket or starts a thread: the proxy
//! and the preload bring those, so the tests here drive one whole stream,
//! guest ring to libbpf, over simulated guest memory.
//!
//! The host rings share one core (a sealed memfd, the kernel's `mmap` rules
//! for the ring's fd, the single writer or reader; `host.rs`) and differ in
//! their shape and their end:
//!
//! * [`HostRingbuf`] mirrors `BPF_MAP_TYPE_RINGBUF` (`kernel/bpf/ringbuf.c`).
//!   Memfd: `[consumer page][producer page][data: max_entries]`. The
//!   user-visible map layout is the kernel's `[consumer][producer][data][data]`
//!   (data mapped twice back to back); [`HostRingbuf::map_for`] builds it for
//!   libbpf's `ring_buffer__add` mmaps and refuses what
//!   `bpf_map_mmap` + `ringbuf_map_mmap_kern` refuse. [`RingWriter`] is
//!   `__bpf_ringbuf_reserve` + `bpf_ringbuf_commit`; its consumer is libbpf's
//!   `ringbuf_process_ring`.
//! * [`HostPerfRing`] mirrors a `PERF_COUNT_SW_BPF_OUTPUT` perf event ring
//!   (`kernel/events/ring_buffer.c`). Memfd: `[perf_event_mmap_page][data:
//!   page_cnt pages]`, not double mapped; [`HostPerfRing::map_for`] answers
//!   libbpf's one mmap as `perf_mmap` does. [`PerfWriter`] is
//!   `perf_output_begin`/`perf_output_sample`/`perf_output_put_handle` for
//!   `PERF_SAMPLE_RAW`; its consumer is libbpf's `perf_event_read_simple`.
//! * [`HostUserRing`] stands for a `BPF_MAP_TYPE_USER_RINGBUF`, the other
//!   way round: libbpf's `user_ring_buffer__reserve`/`__submit` produce into
//!   it (same layout, producer page and data mapped writable as
//!   `ringbuf_map_mmap_user` allows) and [`UserRingReader`] consumes as the
//!   kernel's `bpf_user_ringbuf_drain` does.
//!
//! The [`guest`] module is the other end: the guest proxy's consumers of the
//! guest kernel's rings (and its producer into a user ring), which trust
//! nothing they read from the ring, and the stream loops that carry their
//! records in frames ([`guest::stream`]).
//!
//! Each ring has one writer (the mirror thread) and is read concurrently by
//! libbpf in another thread of the same process; the two sides synchronise
//! only through acquire/release atomics on the shared pages, as with the
//! kernel. The tests read through ports of those libbpf consumers and, where
//! the process may use `bpf()`, compare bytes and mmap verdicts with the
//! running kernel's.

pub mod guest;
mod host;
mod mmap;
mod perf;
mod ringbuf;
mod shm;
mod userring;

#[cfg(test)]
mod kernel;
#[cfg(test)]
mod libbpf_port;

pub use host::RingFile;
pub use perf::{
    HostPerfRing, PerfWriter, PERF_RECORD_LOST, PERF_RECORD_MISC_KERNEL, PERF_RECORD_SAMPLE,
};
pub use ringbuf::{
    BpfRingLayout, HostRingbuf, RingWriter, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ, KERNEL_RINGBUF_PGOFF,
};
pub use userring::{HostUserRing, UserRingReader};

/// Outcome of writing one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// The record is in the ring and visible to the consumer.
    Written,
    /// Not enough free space now: nothing was written and the drop was
    /// counted (ring buffer: overflow counter; perf: lost samples, reported
    /// later in a `PERF_RECORD_LOST`).
    Full,
    /// The record can never be written in this format (the kernel would
    /// refuse it too); nothing was written or counted.
    TooLarge,
}

/// The system page size (`sysconf(_SC_PAGESIZE)`).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(ps).ok().filter(|&p| p > 0).unwrap_or(4096)
}
