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

/// `mmap` of a host fd standing for `obj`.
pub fn mmap(
    obj: &Arc<GuestObject>,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<*mut c_void> {
    let unmappable = || Error::kernel(libc::ENODEV, "mmap of a bpf object that has no memory");
    match &obj.kind {
        ObjectKind::Map(m)
            if m.map_type == BPF_MAP_TYPE_RINGBUF || m.map_type == BPF_MAP_TYPE_USER_RINGBUF =>
        {
            rings::ring_mmap(obj, addr, len, prot, flags, offset)
        }
        ObjectKind::Map(m) if m.map_flags & BPF_F_MMAPABLE != 0 => {
            mapsync::snapshot_mmap(obj, addr, len, prot, flags, offset)
        }
        ObjectKind::Map(_) => Err(unmappable()),
        _ if obj.link == PERF_EVENT_LINK => rings::ring_mmap(obj, addr, len, prot, flags, offset),
        _ => Err(unmappable()),
    }
}
