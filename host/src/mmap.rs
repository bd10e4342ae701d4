//! `mmap` of an fd standing for a guest object: which kind of host memory
//! the object becomes.
//!
//! Rings (ring-buffer and user ring buffer maps, perf events) are mirrored
//! ([`crate::rings`]); mmapable maps become a synchronised copy
//! ([`crate::mapsync`]); anything else cannot be mapped, as with the
//! kernel (`ENODEV`).

use std::sync::Arc;

use libc::{c_int, c_void, size_t};
use telebpf_abi::map_type::{BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_USER_RINGBUF};
use telebpf_abi::ObjectKind;
use telebpf_protocol::message::PERF_EVENT_LINK;

use crate::error::{Error, Result};
use crate::fdtable::GuestObject;
use crate::mapsync::{self, BPF_F_MMAPABLE};
use crate::rings;

/// What memory an object's `mmap` maps.
enum Backing {
    /// A mirrored ring (ring buffer, user ring buffer, perf event).
    Ring,
    /// A snapshot of a mapped map, kept in step.
    Snapshot,
}

/// The object's memory, or the kernel's refusal for an object without any.
fn backing(obj: &GuestObject) -> Result<Backing> {
    let unmappable = || Error::kernel(libc::ENODEV, "mmap of a bpf object that has no memory");
    match &obj.kind {
        ObjectKind::Map(m)
            if m.map_type == BPF_MAP_TYPE_RINGBUF || m.map_type == BPF_MAP_TYPE_USER_RINGBUF =>
        {
            Ok(Backing::Ring)
        }
        ObjectKind::Map(m) if m.map_flags & BPF_F_MMAPABLE != 0 => Ok(Backing::Snapshot),
        ObjectKind::Map(_) => Err(unmappable()),
        _ if obj.link == PERF_EVENT_LINK => Ok(Backing::Ring),
        _ => Err(unmappable()),
    }
}

/// `mmap` of an object's fd in this process.
pub fn mmap(
    obj: &Arc<GuestObject>,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<*mut c_void> {
    match backing(obj)? {
        Backing::Ring => rings::ring_mmap(obj, addr, len, prot, flags, offset),
        Backing::Snapshot => mapsync::snapshot_mmap(obj, addr, len, prot, flags, offset),
    }
}

/// For a program that maps the object's file itself (a supervisor's): the
/// file its `mmap(_, len, prot, flags, fd, offset)` must map instead of
/// the object's placeholder fd — a ring's memfd, or a mapped map's
/// snapshot — after the kernel's checks; the same refusals as [`mmap`].
pub fn file_for(
    obj: &Arc<GuestObject>,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<std::os::fd::OwnedFd> {
    match backing(obj)? {
        Backing::Ring => rings::ring_file(obj, len, prot, flags, offset),
        Backing::Snapshot => mapsync::snapshot_file(obj, len, prot, offset),
    }
}

#[cfg(test)]
mod tests {
    use telebpf_abi::MapMeta;

    use super::*;
    use crate::fdtable::test_object;

    fn map(map_type: u32, map_flags: u32) -> ObjectKind {
        ObjectKind::Map(MapMeta {
            map_type,
            key_size: 4,
            value_size: 8,
            max_entries: 4096,
            map_flags,
        })
    }

    /// `mmap` of it, at no fixed address; only the refusals are tried here
    /// (they come before any request or mapping).
    fn mmap_of(kind: ObjectKind, link: &str, len: usize) -> Result<*mut c_void> {
        let obj = test_object(kind, link);
        mmap(
            &obj,
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            0,
        )
    }

    fn errno_of(r: Result<*mut c_void>) -> i32 {
        r.expect_err("refused").errno()
    }

    #[test]
    fn objects_without_memory_are_enodev() {
        const HASH: u32 = 1;
        assert_eq!(
            errno_of(mmap_of(map(HASH, 0), "anon_inode:bpf-map", 4096)),
            libc::ENODEV
        );
        let prog = ObjectKind::Prog { prog_type: 1 };
        assert_eq!(
            errno_of(mmap_of(prog, "anon_inode:bpf-prog", 4096)),
            libc::ENODEV
        );
    }

    #[test]
    fn a_perf_ring_must_be_one_plus_a_power_of_two_pages() {
        let page = ringbuf_mirror::page_size();
        let e = errno_of(mmap_of(ObjectKind::Other, PERF_EVENT_LINK, 4 * page));
        assert_eq!(e, libc::EINVAL);
        assert_eq!(
            errno_of(mmap_of(ObjectKind::Other, PERF_EVENT_LINK, page)),
            libc::EINVAL
        );
    }
}
