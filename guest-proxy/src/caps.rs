//! The proxy keeps only the capabilities it uses.
//!
//! The proxy runs `bpf()` for its clients, so it must be root-equivalent
//! for BPF; it need not be root-equivalent for anything else. At start,
//! once its limits are raised, it drops every capability not in [`KEEP`]
//! from its effective, permitted, inheritable, ambient and bounding sets,
//! and sets `no_new_privs`, so that nothing it does later — a bug, a
//! hostile client finding one — can use more. The `Welcome` it sends
//! reports the sets it kept (what a tool's `capget` then sees).

use caps::{CapSet, Capability, CapsHashSet};

/// What the proxy keeps, and why.
pub const KEEP: &[(Capability, &str)] = &[
    (Capability::CAP_BPF, "bpf(): maps, programs, BTF, links"),
    (
        Capability::CAP_PERFMON,
        "tracing programs, bpf_probe_read_kernel (the collectors), perf_event_open of tracepoints and probes",
    ),
    (
        Capability::CAP_SYS_ADMIN,
        "BPF_*_GET_FD_BY_ID, BPF_TASK_FD_QUERY, iterators and program types the kernel still reserves to it",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "networking program types (XDP, tc, socket and cgroup-skb programs) for keys whose policy allows them",
    ),
    (
        Capability::CAP_SYSLOG,
        "kernel addresses in /proc/kallsyms (served to tools for symbols; the module list's address for the collectors)",
    ),
];

/// What [`drop_unneeded`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Kept and held (effective and permitted).
    pub kept: Vec<Capability>,
    /// In [`KEEP`] but not held when the proxy started.
    pub missing: Vec<Capability>,
    /// How many capabilities left the bounding set.
    pub bounding_dropped: usize,
}

/// Why capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// A capability set could not be read or changed.
    #[error("cannot drop capabilities ({0}): {1}")]
    Set(&'static str, #[source] caps::errors::CapsError),
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
}

fn err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> CapsError {
    move |source| CapsError::Set(what, source)
}

/// Drops every capability not in [`KEEP`] (see the module doc).
pub fn drop_unneeded() -> Result<Dropped, CapsError> {
    drop_all_but(KEEP.iter().map(|(c, _)| *c).collect())
}

/// Drops every capability, for a mode of the binary that needs none (the
/// `--echo` base of `telebpf bench rtt`, which anyone may connect to).
pub fn drop_all() -> Result<Dropped, CapsError> {
    drop_all_but(CapsHashSet::new())
}

/// Drops every capability not in `keep` from every set and sets
/// `no_new_privs`.
fn drop_all_but(keep: CapsHashSet) -> Result<Dropped, CapsError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted"))?;
    let held: CapsHashSet = keep.intersection(&permitted).copied().collect();
    let mut missing: Vec<Capability> = keep.difference(&permitted).copied().collect();
    missing.sort_by_key(|c| c.index());
    caps::clear(None, CapSet::Ambient).map_err(err("clear ambient"))?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the effective set loses next.
    let mut bounding_dropped = 0;
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding set"))?;
                bounding_dropped += 1;
            }
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable set"))?;
    caps::set(None, CapSet::Effective, &held).map_err(err("effective set"))?;
    caps::set(None, CapSet::Permitted, &held).map_err(err("permitted set"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(CapsError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let mut kept: Vec<Capability> = held.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped {
        kept,
        missing,
        bounding_dropped,
    })
}
