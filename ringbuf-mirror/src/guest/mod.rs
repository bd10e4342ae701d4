//! The guest side of ring mirroring: the proxy's consumers of the guest
//! kernel's rings, and its producer into a user ring buffer.
//!
//! The rest of this crate is the host side, which writes into memory it owns.
//! This module reads memory it does not own: a guest ring mapped by the proxy
//! (running as root), whose header words and record headers are written by
//! the guest kernel, by BPF programs (a record's body) and by anyone else who
//! holds the map — a second consumer, a guest process, or a client that asks
//! the proxy to write into the map. **Nothing read from a ring is trusted.**
//! The geometry (data size, page size) comes from the proxy's own knowledge of
//! the object (the kernel's map info, the size it mapped); every position and
//! length read from the ring is checked against it before it is used:
//!
//! * positions: `cons <= prod`, `prod - cons <= size`, both 8-byte aligned,
//!   and the consumer position is the one this consumer left (no one else
//!   moved it);
//! * records: a ring buffer record's length is at most `size - 8` and the
//!   record ends at or before the producer position; a perf record's size is
//!   at least its header, a multiple of 8 and within `head - tail`.
//!
//! A failed check is a [`Violation`]: the consumer stops, leaves the ring as
//! it is, and its caller ends that stream with the violation as the logged
//! reason. Beneath these checks, every access goes through [`RingMemory`],
//! whose real implementation ([`RawRegion`], [`GuestMapping`]) checks bounds
//! and alignment again, so that a mistake in the checks above is a violation
//! too, never a read outside the mapping.
//!
//! * [`RingbufConsumer`]: `BPF_MAP_TYPE_RINGBUF` (libbpf's
//!   `ringbuf_process_ring`).
//! * [`PerfConsumer`]: a perf event's ring (libbpf's
//!   `perf_event_read_simple`).
//! * [`UserRingProducer`]: `BPF_MAP_TYPE_USER_RINGBUF` (libbpf's
//!   `user_ring_buffer__reserve` and `__submit`; the guest's consumer
//!   position is untrusted too).
//!
//! [`stream`] runs them: the loop that drains a ring into frames for the
//! host ([`pump`]) and the one that produces the host's records into a user
//! ring ([`feed`]), with the framing ([`RecordsFrame`]) and the mapping of a
//! regions a ring needs ([`GuestRing::map`], [`map_user_ring`], each region
//! a [`MapRegion`] the caller maps).
//!
//! The consumers and the loops are generic over [`RingMemory`] so that the
//! fuzz target (`fuzz/`, `ring_consumer`) and the tests drive the same code
//! over fake memory that a hostile writer changes between reads, with the
//! guest kernel's side simulated (`sim`, feature `fuzzing`).

mod memory;
mod perf;
mod ringbuf;
pub mod stream;
mod user;

#[cfg(any(test, feature = "fuzzing"))]
pub mod sim;
#[cfg(test)]
mod tests;

pub use memory::{GuestMapping, RawRegion, RingMemory};
pub use perf::{PerfConsumer, PerfLayout};
pub use ringbuf::RingbufConsumer;
pub use stream::{
    feed, map_user_ring, pump, ring_spin, yield_idle, Contention, FrameSink, FrameSource, Geometry,
    GuestRing, MapRegion, Ready, RecordsFrame, RingError, StreamEnd, Wait, Woken, CONTENDED_PAUSE,
    ENV_RING_SPIN_US, FRAME_BYTES, STREAM_SPIN, USER_ROOM_WAIT,
};
pub use user::{Produced, UserRingProducer};

/// Where a consumer puts the records it takes.
pub trait RecordSink {
    /// Record bytes taken so far (a consumer stops once this reaches its
    /// limit).
    fn taken(&self) -> usize;

    /// Room for one more record of `len` bytes, which the consumer fills.
    fn record(&mut self, len: usize) -> &mut [u8];
}

impl RecordSink for Vec<Vec<u8>> {
    fn taken(&self) -> usize {
        self.iter().map(Vec::len).sum()
    }

    fn record(&mut self, len: usize) -> &mut [u8] {
        self.push(vec![0; len]);
        self.last_mut().expect("just pushed")
    }
}

/// What one call of a consumer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Committed records are left (the caller's limit was reached).
    pub more: bool,
    /// Samples the guest ring reported lost (perf `PERF_RECORD_LOST`).
    pub lost: u64,
}

/// A check on ring memory that failed: the stream of that ring ends.
///
/// Each variant names the check (see [`Violation::check`]) and carries the
/// values read, for the log line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An access outside a mapped region, or misaligned for its width: the
    /// checks above it missed something (defence in depth).
    #[error("access of {len} bytes at offset {off} of the {region} region ({size} bytes) is out of bounds or misaligned")]
    OutOfBounds {
        /// Which region.
        region: &'static str,
        /// Offset asked for.
        off: usize,
        /// Bytes asked for.
        len: usize,
        /// The region's size.
        size: usize,
    },
    /// A write to a region mapped read-only.
    #[error("write to the read-only {region} region")]
    ReadOnly {
        /// Which region.
        region: &'static str,
    },
    /// A region is smaller than the ring's geometry needs.
    #[error("the {region} region has {have} bytes, the ring needs {need}")]
    RegionTooSmall {
        /// Which region.
        region: &'static str,
        /// Its size.
        have: usize,
        /// What the geometry needs.
        need: usize,
    },
    /// The consumer position is past the producer position.
    #[error("consumer position {cons:#x} is ahead of producer position {prod:#x}")]
    ConsumerAhead {
        /// Consumer position read.
        cons: u64,
        /// Producer position read.
        prod: u64,
    },
    /// More than the ring's size lies between the positions.
    #[error("producer position {prod:#x} is more than the ring's {size} bytes ahead of consumer position {cons:#x}")]
    Overfull {
        /// Consumer position read.
        cons: u64,
        /// Producer position read.
        prod: u64,
        /// The ring's data size.
        size: u64,
    },
    /// A position that must be 8-byte aligned is not.
    #[error("{what} position {pos:#x} is not 8-byte aligned")]
    Misaligned {
        /// Which position.
        what: &'static str,
        /// Its value.
        pos: u64,
    },
    /// A position so close to `u64::MAX` that the next step would wrap
    /// (positions of real rings never get there).
    #[error("{what} position {pos:#x} would wrap around")]
    Wraps {
        /// Which position.
        what: &'static str,
        /// Its value.
        pos: u64,
    },
    /// Someone else moved a position only this side writes (a second
    /// consumer or producer on the same ring, or a write into the map).
    #[error("{what} position moved under us: left at {expected:#x}, found {found:#x}")]
    Moved {
        /// Which position.
        what: &'static str,
        /// What this side stored last.
        expected: u64,
        /// What the ring holds now.
        found: u64,
    },
    /// A ring buffer record longer than the ring can hold.
    #[error("record at {pos:#x} says {len} bytes, more than the ring's {max}")]
    RecordTooLong {
        /// Position of its header.
        pos: u64,
        /// Length the header says.
        len: u64,
        /// `size - 8`.
        max: u64,
    },
    /// A ring buffer record that runs past the producer position.
    #[error("record at {pos:#x} of {total} bytes runs past producer position {prod:#x}")]
    RecordPastProducer {
        /// Position of its header.
        pos: u64,
        /// Header, data and padding.
        total: u64,
        /// Producer position.
        prod: u64,
    },
    /// A perf record whose size cannot be right.
    #[error("perf record at {pos:#x} has size {size} (with {avail} bytes committed after it)")]
    PerfRecordSize {
        /// Its position.
        pos: u64,
        /// `header.size`.
        size: u64,
        /// `head - tail`.
        avail: u64,
    },
    /// The perf ring's metadata page does not describe what the proxy mapped.
    #[error(
        "perf ring says data_offset {offset}, data_size {size}; mapped: {want_offset}, {want_size}"
    )]
    PerfGeometry {
        /// `data_offset` read.
        offset: u64,
        /// `data_size` read.
        size: u64,
        /// The data area's offset in the mapping.
        want_offset: u64,
        /// The data area's size.
        want_size: u64,
    },
}

impl Violation {
    /// The name of the check that failed, for log lines.
    pub fn check(&self) -> &'static str {
        match self {
            Violation::OutOfBounds { .. } => "access within the mapping",
            Violation::ReadOnly { .. } => "write to a writable mapping",
            Violation::RegionTooSmall { .. } => "mapping covers the ring",
            Violation::ConsumerAhead { .. } => "cons <= prod",
            Violation::Overfull { .. } => "prod - cons <= size",
            Violation::Misaligned { .. } => "8-byte alignment",
            Violation::Wraps { .. } => "positions do not wrap",
            Violation::Moved { .. } => "single consumer/producer",
            Violation::RecordTooLong { .. } => "record length <= size - 8",
            Violation::RecordPastProducer { .. } => "record ends before prod",
            Violation::PerfRecordSize { .. } => "perf record size within the data area",
            Violation::PerfGeometry { .. } => "perf data area as mapped",
        }
    }
}

/// Checks that the two mappings of a BPF ring (buffer or user ring buffer)
/// cover its geometry: the consumer page's position word, and the producer
/// page followed by the data area twice.
pub(crate) fn check_bpf_regions(
    consumer: &dyn RingMemory,
    producer: &dyn RingMemory,
    layout: &crate::BpfRingLayout,
) -> Result<(), Violation> {
    let need = layout.page_size() + 2 * layout.max_entries();
    if producer.size() < need {
        return Err(Violation::RegionTooSmall {
            region: "producer",
            have: producer.size(),
            need,
        });
    }
    if consumer.size() < 8 {
        return Err(Violation::RegionTooSmall {
            region: "consumer",
            have: consumer.size(),
            need: 8,
        });
    }
    Ok(())
}

/// The position checks every consumer makes before it reads a record:
/// `cons <= prod`, `prod - cons <= size`, both 8-byte aligned.
pub(crate) fn check_positions(cons: u64, prod: u64, size: u64) -> Result<(), Violation> {
    if cons & 7 != 0 {
        return Err(Violation::Misaligned {
            what: "consumer",
            pos: cons,
        });
    }
    if prod & 7 != 0 {
        return Err(Violation::Misaligned {
            what: "producer",
            pos: prod,
        });
    }
    if cons > prod {
        return Err(Violation::ConsumerAhead { cons, prod });
    }
    if prod - cons > size {
        return Err(Violation::Overfull { cons, prod, size });
    }
    Ok(())
}
