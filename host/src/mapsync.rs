//! Mmapable maps (`.rodata`, `.bss`, `.data`, `BPF_F_MMAPABLE` arrays):
//! host memory holding the guest map's bytes, kept in step with the guest.
//!
//! `mmap` of such a map gives the program a memfd's pages filled with the
//! guest map's bytes at that moment. `.rodata` is frozen before libbpf maps
//! it (read-only), so that copy is exact. A writable mapping is kept in
//! step both ways every `TELEBPF_MAP_SYNC_MS` by a thread of its own (see
//! `start_sync` and the README's limits); the ring mirrors
//! (`crate::rings`) also bring every writable mapping up to date before
//! they make records visible ([`refresh_maps`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use libc::{c_int, c_void, size_t};
use telebpf_marshal::host::changed_runs;
use telebpf_protocol::message::{Reply, Request};

use crate::error::{Error, Result};
use crate::fdtable::GuestObject;
use crate::state;
use crate::sys::memfd_with;

/// `BPF_F_MMAPABLE`.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// `mmap` of an mmapable map's fd: the guest map's bytes now, kept in step
/// with the guest while the mapping is writable.
pub(crate) fn snapshot_mmap(
    obj: &Arc<GuestObject>,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    offset: i64,
) -> Result<*mut c_void> {
    let bytes = fetch(obj.guest_fd, len, offset as u64)?;
    let fd = memfd_with("bpf-map-mmap", &bytes, false)?;
    // SAFETY: mapping our own memfd with the caller's address, length,
    // protection and flags (MAP_FIXED included, as libbpf asks); the memfd
    // holds exactly `len` bytes. Called from inside the library, the
    // preload's `mmap` hands this straight to libc (see `crate::sys`).
    let p = unsafe { libc::mmap(addr, len, prot, flags, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(Error::last_os("mapping a map's snapshot"));
    }
    if prot & libc::PROT_WRITE != 0 {
        start_sync(Arc::downgrade(obj), fd, len, offset as u64, bytes)?;
    }
    Ok(p)
}

/// For a program that maps the map's file itself (a supervisor's): a memfd
/// holding the guest map's bytes now, kept in step with the guest while the
/// mapping is writable, as [`snapshot_mmap`]'s. Only mappings from offset 0
/// (libbpf's and cilium/ebpf's) are served: the memfd holds the bytes from
/// there.
pub(crate) fn snapshot_file(
    obj: &Arc<GuestObject>,
    len: size_t,
    prot: c_int,
    offset: i64,
) -> Result<OwnedFd> {
    if offset != 0 {
        return Err(Error::kernel(
            libc::EINVAL,
            "a mapping of a map at an offset, under the supervisor",
        ));
    }
    let bytes = fetch(obj.guest_fd, len, 0)?;
    let fd = memfd_with("bpf-map-mmap", &bytes, false)?;
    let theirs = fd
        .try_clone()
        .map_err(|e| Error::os("duplicating a memfd", e, libc::EMFILE))?;
    if prot & libc::PROT_WRITE != 0 {
        start_sync(Arc::downgrade(obj), fd, len, 0, bytes)?;
    }
    Ok(theirs)
}

/// The guest map's bytes as `mmap` would show them now.
fn fetch(guest_fd: i32, len: usize, offset: u64) -> Result<Vec<u8>> {
    let req = Request::MapSnapshot {
        fd: guest_fd,
        len: len as u64,
        offset,
    };
    let bytes = state::get().ask(&req, "a map snapshot", |r| match r {
        Reply::Snapshot(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })?;
    if bytes.len() != len {
        return Err(Error::Protocol("a map snapshot (of another length)"));
    }
    Ok(bytes)
}

/// How often a writable map mapping is synchronised both ways
/// (`TELEBPF_MAP_SYNC_MS`, default 20).
fn sync_period() -> Duration {
    let ms = std::env::var("TELEBPF_MAP_SYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    Duration::from_millis(ms.max(1))
}

/// Keeps a writable mapping of a guest map (`.bss`, `.data`, an mmapable
/// array) and the guest map in step, every [`sync_period`]: bytes the host
/// program changed since the last round are written to the guest; bytes
/// the guest changed are copied into the host mapping where the host did
/// not write. Stops when the map's last host fd is closed.
fn start_sync(
    obj: Weak<GuestObject>,
    memfd: OwnedFd,
    len: usize,
    offset: u64,
    initial: Vec<u8>,
) -> Result<()> {
    // SAFETY: the library's own shared view of the memfd the program also
    // maps; it stays mapped as long as the `MapSync` owning it.
    let view = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if view == libc::MAP_FAILED {
        return Err(Error::last_os("mapping a map for its sync"));
    }
    let sync = Arc::new(MapSync {
        owner: state::get() as *const state::State as usize,
        obj,
        view: view as usize,
        len,
        offset,
        last: Mutex::new(initial),
        _memfd: memfd,
    });
    SYNCS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(&sync));
    state::spawn("telebpf-mapsync", move || {
        let period = sync_period();
        loop {
            std::thread::sleep(period);
            if sync.round().is_err() {
                break;
            }
        }
    })
}

/// One writable mapping of a guest map and what both sides last agreed on.
struct MapSync {
    /// The state of the program the map belongs to (a supervisor serves
    /// several); its syncs are made over that program's session only.
    owner: usize,
    obj: Weak<GuestObject>,
    view: usize,
    len: usize,
    offset: u64,
    last: Mutex<Vec<u8>>,
    _memfd: OwnedFd,
}

impl MapSync {
    /// One two-way round; an error (the map or the session is gone) ends
    /// the sync.
    fn round(&self) -> Result<()> {
        let obj = self
            .obj
            .upgrade()
            .ok_or(Error::kernel(libc::EBADF, "the map's last fd was closed"))?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `view` is our live mapping of `len` bytes.
        let host = unsafe { std::slice::from_raw_parts_mut(self.view as *mut u8, self.len) };
        let seen = host.to_vec();
        sync_round(obj.guest_fd, self.offset, host, &seen, &mut last)
    }
}

impl Drop for MapSync {
    fn drop(&mut self) {
        // SAFETY: unmapping our own view, made in `start_sync`.
        unsafe { libc::munmap(self.view as *mut c_void, self.len) };
    }
}

/// Live writable map mappings of this process.
static SYNCS: Mutex<Vec<Weak<MapSync>>> = Mutex::new(Vec::new());

/// Brings every writable map mapping up to date now. The ring mirrors call
/// it before they make records visible: what the guest program wrote into
/// `.bss` before it submitted a record is then visible to the host program
/// when it reads that record, as with a local kernel (the records were
/// consumed in the guest before this runs, so the maps are at least as new).
pub fn refresh_maps() {
    let syncs: Vec<Arc<MapSync>> = {
        let mut all = SYNCS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    let me = state::get() as *const state::State as usize;
    for s in syncs.iter().filter(|s| s.owner == me) {
        let _ = s.round();
    }
}

/// One round of the two-way sync. `host` is the live mapping, `seen` a copy
/// of it taken at the start of the round, `last` what both sides agreed on
/// after the previous round.
fn sync_round(
    guest_fd: i32,
    offset: u64,
    host: &mut [u8],
    seen: &[u8],
    last: &mut Vec<u8>,
) -> Result<()> {
    for (start, end) in changed_runs(seen, last) {
        let req = Request::MapWrite {
            fd: guest_fd,
            offset: offset + start as u64,
            data: seen[start..end].to_vec(),
        };
        state::get().ask(&req, "a map write", |r| match r {
            Reply::Snapshot(answer) => Ok(answer),
            other => Err(Box::new(other)),
        })?;
    }
    let guest = fetch(guest_fd, host.len(), offset)?;
    let agreed = merge(seen, last, &guest);
    for (start, end) in changed_runs(&agreed, seen) {
        host[start..end].copy_from_slice(&agreed[start..end]);
    }
    *last = agreed;
    Ok(())
}

/// What both sides hold after a round: the host's view, with the guest's
/// changes since `last` applied wherever the host did not itself write
/// (the host's writes of the round win; they were just sent to the guest).
fn merge(seen: &[u8], last: &[u8], guest: &[u8]) -> Vec<u8> {
    seen.iter()
        .zip(last)
        .zip(guest)
        .map(|((&h, &l), &g)| if h == l { g } else { h })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_merge() {
        assert_eq!(changed_runs(&[1, 2, 3, 4], &[1, 9, 9, 4]), vec![(1, 3)]);
        assert_eq!(changed_runs(&[1, 2], &[1, 2]), vec![]);
        // last: 0 0 0 0; host wrote byte 0; guest wrote bytes 0 and 3.
        assert_eq!(
            merge(&[5, 0, 0, 0], &[0, 0, 0, 0], &[7, 0, 0, 8]),
            vec![5, 0, 0, 8]
        );
    }
}
