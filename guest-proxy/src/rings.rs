//! What a streamed ring really is, and the geometry the proxy maps it with.
//!
//! A stream request names a ring fd and says what kind and size of ring it
//! is ([`StreamKind`]). The proxy believes none of it: the kind, identity
//! and size come from the kernel (`BPF_OBJ_GET_INFO_BY_FD` of the fd the
//! owning session holds, or the fd being a perf event), and a request that
//! does not describe the real object is refused with the kernel's word for
//! a wrong argument (`EINVAL`). The one size a client legitimately chooses is
//! a perf ring's page count (libbpf's `perf_buffer__new` does): it is a
//! request, checked as `perf_mmap` checks it and capped at what the guest
//! kernel lets an unprivileged user lock for one perf ring
//! (`perf_event_mlock_kb`), since the proxy maps it as root.

pub use ringbuf_mirror::guest::Geometry;
use ringbuf_mirror::guest::PerfLayout;
use ringbuf_mirror::BpfRingLayout;
use telebpf_abi::map_type::{BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_USER_RINGBUF};
use telebpf_abi::{perf, ObjectKind};
use telebpf_protocol::message::{StreamKind, PERF_EVENT_LINK};

use crate::bpf_exec;
use crate::kernel::Kernel;

/// `BPF_F_NUMA_NODE`, the one creation flag a ring buffer of the layout the
/// consumers know may carry. Any other (`BPF_F_RB_OVERWRITE` of 6.19
/// kernels lets the producer overrun the consumer) changes the protocol.
const BPF_F_NUMA_NODE: u32 = 1 << 2;

/// The kernel's default of `perf_event_mlock_kb` (512 KiB and one page),
/// used when it cannot be read ([`Kernel::perf_mlock_kb`]).
const PERF_MLOCK_KB_DEFAULT: usize = 516;

/// A ring as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingObject {
    /// A `BPF_MAP_TYPE_RINGBUF` map.
    Ringbuf {
        /// Its map id.
        id: u32,
        /// Its data size.
        max_entries: u32,
    },
    /// A `BPF_MAP_TYPE_USER_RINGBUF` map.
    UserRingbuf {
        /// Its map id.
        id: u32,
        /// Its data size.
        max_entries: u32,
    },
    /// A perf event.
    Perf {
        /// Its `PERF_EVENT_IOC_ID`.
        id: u64,
    },
}

impl RingObject {
    /// What identifies the ring across sessions and fds: two streams on
    /// the same key would be two consumers racing on one ring.
    pub fn key(&self) -> RingKey {
        match *self {
            RingObject::Ringbuf { id, .. } | RingObject::UserRingbuf { id, .. } => RingKey::Map(id),
            RingObject::Perf { id } => RingKey::Perf(id),
        }
    }
}

/// The identity of a ring (see [`RingObject::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingKey {
    /// A map, by id.
    Map(u32),
    /// A perf event, by its event id.
    Perf(u64),
}

/// Why a stream is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The fd is no ring (nor a map the kernel describes).
    #[error("fd is {0}, not a ring")]
    NotARing(String),
    /// The kernel could not describe the map.
    #[error("the kernel's map info failed: errno {0}")]
    Info(i32),
    /// The request names another kind of ring than the object is.
    #[error("the fd is a {real}, the request says {asked}")]
    Kind {
        /// What the object is.
        real: &'static str,
        /// What the request says.
        asked: &'static str,
    },
    /// The request names another size than the kernel's.
    #[error("the {what} has max_entries {real}, the request says {asked}")]
    Size {
        /// Which kind of ring.
        what: &'static str,
        /// The kernel's `max_entries`.
        real: u32,
        /// The request's.
        asked: u32,
    },
    /// A ring of a size or with flags the consumers do not know.
    #[error("the {what} has max_entries {max_entries} and flags {flags:#x}, which the proxy does not stream")]
    Unsupported {
        /// Which kind of ring.
        what: &'static str,
        /// Its `max_entries`.
        max_entries: u32,
        /// Its `map_flags`.
        flags: u32,
    },
    /// A perf page count `perf_mmap` would refuse.
    #[error("a perf ring of {0} data pages (not a power of two)")]
    PerfPages(u32),
    /// Another stream consumes (or produces into) the same ring.
    #[error("another stream already serves this ring")]
    Busy,
}

impl Refused {
    /// The errno the kernel would give for the same mistake.
    pub fn errno(&self) -> i32 {
        match self {
            Refused::Info(e) => *e,
            Refused::Unsupported { .. } => libc::EOPNOTSUPP,
            Refused::Busy => libc::EBUSY,
            _ => libc::EINVAL,
        }
    }
}

fn kind_name(kind: &StreamKind) -> &'static str {
    match kind {
        StreamKind::Ringbuf { .. } => "ring buffer",
        StreamKind::UserRingbuf { .. } => "user ring buffer",
        StreamKind::Perf { .. } => "perf event",
    }
}

/// Asks `kernel` what its `fd` is.
pub fn inspect(kernel: &dyn Kernel, fd: i32) -> Result<RingObject, Refused> {
    let described = bpf_exec::describe_in(fd, kernel);
    match described.kind {
        ObjectKind::Map(m)
            if m.map_type == BPF_MAP_TYPE_RINGBUF || m.map_type == BPF_MAP_TYPE_USER_RINGBUF =>
        {
            let what = if m.map_type == BPF_MAP_TYPE_RINGBUF {
                "ring buffer"
            } else {
                "user ring buffer"
            };
            if m.map_flags & !BPF_F_NUMA_NODE != 0 {
                return Err(Refused::Unsupported {
                    what,
                    max_entries: m.max_entries,
                    flags: m.map_flags,
                });
            }
            // struct bpf_map_info: type, id.
            let mut info = [0u8; 8];
            kernel.object_info(fd, &mut info).map_err(Refused::Info)?;
            let id = u32::from_le_bytes([info[4], info[5], info[6], info[7]]);
            Ok(if m.map_type == BPF_MAP_TYPE_RINGBUF {
                RingObject::Ringbuf {
                    id,
                    max_entries: m.max_entries,
                }
            } else {
                RingObject::UserRingbuf {
                    id,
                    max_entries: m.max_entries,
                }
            })
        }
        _ if described.link == PERF_EVENT_LINK => {
            let mut id = 0u64;
            // The event's unique id (PERF_EVENT_IOC_ID) is its identity.
            // SAFETY: PERF_EVENT_IOC_ID writes one u64 to a live local.
            unsafe { kernel.ioctl(fd, perf::IOC_ID, &mut id as *mut u64 as u64) }
                .map_err(Refused::Info)?;
            Ok(RingObject::Perf { id })
        }
        ObjectKind::Map(m) => Err(Refused::NotARing(format!("a map of type {}", m.map_type))),
        _ => Err(Refused::NotARing(if described.link.is_empty() {
            "unknown".to_string()
        } else {
            described.link
        })),
    }
}

/// The geometry to map `real` with for a stream that asked for `kind`;
/// `perf_cap` is the most data pages a perf ring may get
/// ([`perf_page_cap`]).
pub fn geometry(
    kind: &StreamKind,
    real: &RingObject,
    perf_cap: usize,
) -> Result<Geometry, Refused> {
    let ring = |what: &'static str, real: u32, asked: u32| {
        if real != asked {
            return Err(Refused::Size { what, real, asked });
        }
        BpfRingLayout::new(real).map_err(|_| Refused::Unsupported {
            what,
            max_entries: real,
            flags: 0,
        })
    };
    match (kind, real) {
        (StreamKind::Ringbuf { max_entries }, RingObject::Ringbuf { max_entries: m, .. }) => {
            ring("ring buffer", *m, *max_entries).map(Geometry::Ringbuf)
        }
        (
            StreamKind::UserRingbuf { max_entries },
            RingObject::UserRingbuf { max_entries: m, .. },
        ) => ring("user ring buffer", *m, *max_entries).map(Geometry::UserRingbuf),
        (StreamKind::Perf { pages }, RingObject::Perf { .. }) => {
            if *pages == 0 || !pages.is_power_of_two() {
                return Err(Refused::PerfPages(*pages));
            }
            let pages = (*pages as usize).min(perf_cap.max(1));
            PerfLayout::new(ringbuf_mirror::page_size(), pages)
                .map(Geometry::Perf)
                .map_err(|_| Refused::PerfPages(pages as u32))
        }
        (asked, real) => Err(Refused::Kind {
            real: match real {
                RingObject::Ringbuf { .. } => "ring buffer",
                RingObject::UserRingbuf { .. } => "user ring buffer",
                RingObject::Perf { .. } => "perf event",
            },
            asked: kind_name(asked),
        }),
    }
}

/// The most data pages the proxy maps for one perf ring: what the guest
/// kernel lets an unprivileged user lock for one (`perf_event_mlock_kb`,
/// which counts the metadata page too), rounded down to a power of two,
/// at least one. With the kernel's default (516 KiB, 4 KiB pages) that is
/// 128 pages (512 KiB); libbpf-tools ask for 16 to 64, bpftrace for 64.
pub fn perf_page_cap(kernel: &dyn Kernel) -> usize {
    let kb = kernel.perf_mlock_kb().unwrap_or(PERF_MLOCK_KB_DEFAULT);
    pages_for_kb(kb, ringbuf_mirror::page_size())
}

fn pages_for_kb(kb: usize, page: usize) -> usize {
    let pages = (kb.saturating_mul(1024) / page).saturating_sub(1).max(1);
    1 << pages.ilog2()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RB: RingObject = RingObject::Ringbuf {
        id: 7,
        max_entries: 1 << 16,
    };

    #[test]
    fn a_ring_buffer_request_must_say_the_kernels_size() {
        let g = geometry(
            &StreamKind::Ringbuf {
                max_entries: 1 << 16,
            },
            &RB,
            128,
        )
        .unwrap();
        assert_eq!(g, Geometry::Ringbuf(BpfRingLayout::new(1 << 16).unwrap()));
        let e = geometry(&StreamKind::Ringbuf { max_entries: 4096 }, &RB, 128).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the ring buffer has max_entries 65536, the request says 4096"
        );
        assert_eq!(e.errno(), libc::EINVAL);
    }

    #[test]
    fn a_request_of_another_kind_is_refused() {
        for kind in [
            StreamKind::UserRingbuf {
                max_entries: 1 << 16,
            },
            StreamKind::Perf { pages: 8 },
        ] {
            let e = geometry(&kind, &RB, 128).unwrap_err();
            assert!(
                matches!(
                    e,
                    Refused::Kind {
                        real: "ring buffer",
                        ..
                    }
                ),
                "{e}"
            );
        }
        let perf = RingObject::Perf { id: 1 };
        let e = geometry(&StreamKind::Ringbuf { max_entries: 4096 }, &perf, 128).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the fd is a perf event, the request says ring buffer"
        );
    }

    #[test]
    fn perf_pages_are_a_request_checked_and_capped() {
        let perf = RingObject::Perf { id: 1 };
        let pages = |asked| match geometry(&StreamKind::Perf { pages: asked }, &perf, 128) {
            Ok(Geometry::Perf(l)) => Ok(l.data_pages()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.errno()),
        };
        assert_eq!(pages(64), Ok(64));
        assert_eq!(pages(1 << 20), Ok(128));
        assert_eq!(pages(0), Err(libc::EINVAL));
        assert_eq!(pages(3), Err(libc::EINVAL));
    }

    #[test]
    fn the_perf_cap_follows_perf_event_mlock_kb() {
        assert_eq!(pages_for_kb(516, 4096), 128);
        assert_eq!(pages_for_kb(2048, 4096), 256);
        assert_eq!(pages_for_kb(0, 4096), 1);
        assert_eq!(pages_for_kb(usize::MAX, 4096).count_ones(), 1);
    }
}
