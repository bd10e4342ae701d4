//! Budgets of the kernel memory that clients' BPF objects take.
//!
//! A map's memory is the kernel's, not the proxy's: three 2 GiB arrays
//! created through a tracing key once took 6.3 GB of the guest, and the
//! proxy's RSS never moved. So every `BPF_MAP_CREATE` (and `BPF_PROG_LOAD`
//! and `BPF_BTF_LOAD`, whose images the kernel allocates the same way) is
//! charged to a per-session and a proxy-wide budget (`--max-map-memory-per-
//! session`, `--max-map-memory`, see [`crate::limits`]):
//!
//! 1. **Before** the call, the size is estimated from the attr alone
//!    ([`estimate`]: type, key and value size, `max_entries`, flags, per-CPU
//!    values × possible CPUs, ring buffers = `max_entries` bytes, hash
//!    buckets, …; instructions for programs, `btf_size` for BTF) and
//!    reserved; a call whose estimate does not fit fails with `ENOMEM`, as
//!    the kernel's own allocation would, and nothing is created.
//! 2. **After** it, the reservation becomes a charge of the larger of the
//!    estimate and the kernel's own figure (`memlock` in the object's
//!    fdinfo); should that not fit, the new object is closed at once and
//!    the call fails with `ENOMEM`. The estimate is the larger for maps that
//!    grow (a hash map without preallocation, an LPM trie: the kernel
//!    reports what they hold now, the estimate what they can come to hold).
//! 3. A charge is **released only when the object is really gone**, which
//!    closing the client's fd does not prove: a program, a link, another
//!    session's fd or a pin may still hold the map. Charges are kept by
//!    object id; when a reservation would not fit (and whenever the list has
//!    doubled since the last look), the ids are checked against the kernel's
//!    list of live objects (`BPF_*_GET_NEXT_ID`, which needs no fd) and the
//!    charges of vanished objects are dropped. A session's charges outlive
//!    it, owned by the proxy, until their objects are gone.
//!
//! The perf ring buffer the proxy maps for a ring stream is held the same
//! way, as a reservation of the stream's session for as long as the stream
//! lives (`limits::HeldKernelMemory`).
//!
//! Not bounded here: memory a map takes for objects it is attached to
//! rather than for its entries (task, socket, inode and cgroup storage),
//! per-entry allocations of networking maps (`cpumap` queues), the
//! verifier's working memory during a load, and objects
//! created before the proxy started (its budgets start at zero).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use telebpf_abi::{cmd, map_type as mt, off, read_u32, read_u64};

use crate::kernel::Kernel;

/// What kind of object a charge is for (its ids are separate spaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A map.
    Map,
    /// A program.
    Prog,
    /// A BTF object.
    Btf,
}

/// Kernel bookkeeping of any object (`struct bpf_map` and friends), a
/// page, so that a client cannot create a million "free" objects.
pub const OBJECT_OVERHEAD: u64 = 4096;

/// `BPF_F_MMAPABLE`: array values are page-aligned for `mmap`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// `sizeof(struct htab_elem)` on 64-bit kernels, before key and value.
const HTAB_ELEM: u128 = 48;
/// `sizeof(struct bucket)` of a hash table.
const HTAB_BUCKET: u128 = 16;
/// A pointer.
const PTR: u128 = 8;
/// The page size the estimates assume.
const PAGE: u128 = 4096;

fn round8(v: u32) -> u128 {
    (u128::from(v) + 7) & !7
}

fn pow2(v: u32) -> u128 {
    u128::from(v.max(1)).next_power_of_two()
}

/// What a `BPF_MAP_CREATE` attr asks the kernel to allocate, at most, with
/// `possible_cpus` copies of per-CPU values. Calibrated against the
/// kernel's `memlock` figures (6.x, 64-bit): exact for preallocated hash
/// maps, arrays, ring buffers, stack traces, queues and bloom filters; the
/// full size for maps that grow.
pub fn map_estimate(attr: &[u8], possible_cpus: u32) -> u64 {
    let map_type = read_u32(attr, off::map_create::MAP_TYPE);
    let key = read_u32(attr, off::map_create::KEY_SIZE);
    let value = read_u32(attr, off::map_create::VALUE_SIZE);
    let max = u128::from(read_u32(attr, off::map_create::MAX_ENTRIES));
    let flags = read_u32(attr, off::map_create::MAP_FLAGS);
    let map_extra = read_u64(attr, 64);
    let cpus = u128::from(possible_cpus.max(1));
    let (k, v) = (round8(key), round8(value));
    let hash = |value_part: u128, percpu_values: u128| {
        // Buckets, then max_entries elements (plus one spare per CPU,
        // which non-LRU tables preallocate), then per-CPU copies.
        pow2(max as u32) * HTAB_BUCKET
            + (max + cpus) * (HTAB_ELEM + k + value_part)
            + max * percpu_values
    };
    let bytes: u128 = match map_type {
        mt::BPF_MAP_TYPE_ARRAY if flags & BPF_F_MMAPABLE != 0 => (max * v).div_ceil(PAGE) * PAGE,
        mt::BPF_MAP_TYPE_ARRAY => max * v,
        mt::BPF_MAP_TYPE_PERCPU_ARRAY => max * (PTR + v * cpus),
        mt::BPF_MAP_TYPE_PROG_ARRAY
        | mt::BPF_MAP_TYPE_PERF_EVENT_ARRAY
        | mt::BPF_MAP_TYPE_CGROUP_ARRAY
        | mt::BPF_MAP_TYPE_ARRAY_OF_MAPS => max * PTR,
        mt::BPF_MAP_TYPE_HASH | mt::BPF_MAP_TYPE_LRU_HASH => hash(v, 0),
        mt::BPF_MAP_TYPE_HASH_OF_MAPS => hash(PTR, 0),
        mt::BPF_MAP_TYPE_PERCPU_HASH | mt::BPF_MAP_TYPE_LRU_PERCPU_HASH => hash(PTR, v * cpus),
        mt::BPF_MAP_TYPE_STACK_TRACE => pow2(max as u32) * PTR + max * (32 + v),
        // A leaf and an intermediate node per entry.
        mt::BPF_MAP_TYPE_LPM_TRIE => max * (2 * (HTAB_ELEM + k) + v),
        mt::BPF_MAP_TYPE_QUEUE | mt::BPF_MAP_TYPE_STACK => (max + 1) * u128::from(value),
        mt::BPF_MAP_TYPE_RINGBUF | mt::BPF_MAP_TYPE_USER_RINGBUF => max + 4 * PAGE,
        mt::BPF_MAP_TYPE_BLOOM_FILTER => {
            let hashes = match map_extra & 0xf {
                0 => 5,
                n => u128::from(n),
            };
            // bits = max × hashes / ln 2, rounded up to a power of two.
            let bits = (max * hashes * 1443).div_ceil(1000).max(64);
            bits.next_power_of_two() / 8
        }
        mt::BPF_MAP_TYPE_ARENA => max * PAGE,
        // Their entries live with the objects they are attached to.
        mt::BPF_MAP_TYPE_CGROUP_STORAGE
        | mt::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
        | mt::BPF_MAP_TYPE_SK_STORAGE
        | mt::BPF_MAP_TYPE_INODE_STORAGE
        | mt::BPF_MAP_TYPE_TASK_STORAGE
        | mt::BPF_MAP_TYPE_CGRP_STORAGE
        | mt::BPF_MAP_TYPE_STRUCT_OPS => 0,
        // Pointer tables, hashed or not, and anything newer: an element
        // header, the key and the value per entry, and buckets.
        _ => pow2(max as u32) * HTAB_BUCKET + max * (HTAB_ELEM + k + v),
    };
    u64::try_from(bytes + u128::from(OBJECT_OVERHEAD)).unwrap_or(u64::MAX)
}

/// What a `BPF_PROG_LOAD` keeps in the kernel, at most: the translated
/// instructions, the JIT image and the per-instruction data (line info,
/// aux data), about three times the instructions' 8 bytes each.
pub fn prog_estimate(attr: &[u8]) -> u64 {
    u64::from(read_u32(attr, off::prog_load::INSN_CNT)) * 24 + OBJECT_OVERHEAD
}

/// What a `BPF_BTF_LOAD` keeps: the data and the kernel's per-type index
/// built from it, about twice `btf_size`.
pub fn btf_estimate(attr: &[u8]) -> u64 {
    u64::from(read_u32(attr, off::btf_load::BTF_SIZE)) * 2 + OBJECT_OVERHEAD
}

/// The class and estimate of a call that creates an object the kernel
/// allocates memory for, or `None` for every other call.
pub fn estimate(command: u32, attr: &[u8], possible_cpus: u32) -> Option<(Class, u64)> {
    match command & !cmd::BPF_COMMON_ATTRS {
        cmd::BPF_MAP_CREATE => Some((Class::Map, map_estimate(attr, possible_cpus))),
        cmd::BPF_PROG_LOAD => Some((Class::Prog, prog_estimate(attr))),
        cmd::BPF_BTF_LOAD => Some((Class::Btf, btf_estimate(attr))),
        _ => None,
    }
}

/// Which objects of a class exist now.
pub trait Census: Send + Sync + std::fmt::Debug {
    /// The ids of every live object of `class`.
    fn live(&self, class: Class) -> HashSet<u32>;
}

/// The kernel's own lists (`BPF_MAP_GET_NEXT_ID` and friends).
#[derive(Debug)]
pub struct KernelCensus(pub Arc<dyn Kernel>);

impl Census for KernelCensus {
    fn live(&self, class: Class) -> HashSet<u32> {
        let command = match class {
            Class::Map => cmd::BPF_MAP_GET_NEXT_ID,
            Class::Prog => cmd::BPF_PROG_GET_NEXT_ID,
            Class::Btf => cmd::BPF_BTF_GET_NEXT_ID,
        };
        self.0.live_ids(command).ids
    }
}

#[derive(Debug)]
struct Charge {
    /// The session's budget token; `None` once the session ended.
    owner: Option<u64>,
    class: Class,
    id: u32,
    bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    charges: Vec<Charge>,
    /// Bytes reserved for calls under way, per owner.
    reserved: HashMap<u64, u64>,
    /// Charges and reservations, in all.
    used: u64,
    /// Charges and reservations, per owner.
    by_owner: HashMap<u64, u64>,
    /// Look for freed objects once the list is this long.
    sweep_at: usize,
}

impl State {
    fn owner_used(&self, owner: u64) -> u64 {
        self.by_owner.get(&owner).copied().unwrap_or(0)
    }

    fn add(&mut self, owner: u64, bytes: u64) {
        self.used += bytes;
        *self.by_owner.entry(owner).or_default() += bytes;
    }

    fn sub(&mut self, owner: u64, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
        if let Some(v) = self.by_owner.get_mut(&owner) {
            *v = v.saturating_sub(bytes);
            if *v == 0 {
                self.by_owner.remove(&owner);
            }
        }
    }
}

/// The proxy's charges against the two budgets.
#[derive(Debug)]
pub struct Ledger {
    per_owner: u64,
    total: u64,
    census: Box<dyn Census>,
    state: Mutex<State>,
}

/// Charge lists shorter than this are never swept just for their length.
const SWEEP_MIN: usize = 1024;

impl Ledger {
    /// Budgets of `per_owner` bytes per session and `total` in all, with
    /// `census` telling which objects still exist.
    pub fn new(per_owner: u64, total: u64, census: Box<dyn Census>) -> Ledger {
        Ledger {
            per_owner,
            total,
            census,
            state: Mutex::new(State {
                sweep_at: SWEEP_MIN,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fits(&self, state: &State, owner: u64, bytes: u64) -> bool {
        state.owner_used(owner).saturating_add(bytes) <= self.per_owner
            && state.used.saturating_add(bytes) <= self.total
    }

    /// Drops the charges of objects that no longer exist.
    fn sweep(&self, state: &mut State) {
        let classes: HashSet<Class> = state.charges.iter().map(|c| c.class).collect();
        let live: HashMap<Class, HashSet<u32>> = classes
            .into_iter()
            .map(|c| (c, self.census.live(c)))
            .collect();
        let mut freed = Vec::new();
        state.charges.retain(|c| {
            let alive = live.get(&c.class).is_some_and(|ids| ids.contains(&c.id));
            if !alive {
                freed.push((c.owner, c.bytes));
            }
            alive
        });
        for (owner, bytes) in freed {
            match owner {
                Some(o) => state.sub(o, bytes),
                None => state.used = state.used.saturating_sub(bytes),
            }
        }
        state.sweep_at = SWEEP_MIN.max(2 * state.charges.len());
    }

    /// Reserves `bytes` for a call of session `owner` that is about to
    /// create an object; `ENOMEM` when they do not fit the session's or the
    /// proxy's budget even once the charges of freed objects are dropped.
    pub fn reserve(&self, owner: u64, bytes: u64) -> Result<(), i32> {
        if bytes > self.per_owner || bytes > self.total {
            return Err(libc::ENOMEM);
        }
        let mut state = self.lock();
        if !self.fits(&state, owner, bytes) || state.charges.len() >= state.sweep_at {
            self.sweep(&mut state);
        }
        if !self.fits(&state, owner, bytes) {
            return Err(libc::ENOMEM);
        }
        state.add(owner, bytes);
        *state.reserved.entry(owner).or_default() += bytes;
        Ok(())
    }

    fn unreserve(state: &mut State, owner: u64, bytes: u64) {
        if let Some(r) = state.reserved.get_mut(&owner) {
            *r = r.saturating_sub(bytes);
            if *r == 0 {
                state.reserved.remove(&owner);
            }
        }
        state.sub(owner, bytes);
    }

    /// The call reserved for failed: its bytes are free again.
    pub fn cancel(&self, owner: u64, reserved: u64) {
        Self::unreserve(&mut self.lock(), owner, reserved);
    }

    /// The call created object `id` of `class`, which the kernel says
    /// takes `actual` bytes: the reservation becomes a charge of the larger
    /// figure, which is returned. `ENOMEM`, with nothing charged, if the
    /// larger figure does not fit: the caller closes the object.
    pub fn settle(
        &self,
        owner: u64,
        reserved: u64,
        class: Class,
        id: u32,
        actual: u64,
    ) -> Result<u64, i32> {
        let mut state = self.lock();
        Self::unreserve(&mut state, owner, reserved);
        let bytes = reserved.max(actual);
        if !self.fits(&state, owner, bytes) {
            return Err(libc::ENOMEM);
        }
        state.add(owner, bytes);
        state.charges.push(Charge {
            owner: Some(owner),
            class,
            id,
            bytes,
        });
        Ok(bytes)
    }

    /// Session `owner` ended: its charges stay, owned by the proxy, until
    /// their objects are gone; its budget is free for nobody else (owners
    /// are never reused).
    pub fn orphan(&self, owner: u64) {
        let mut state = self.lock();
        for c in state.charges.iter_mut().filter(|c| c.owner == Some(owner)) {
            c.owner = None;
        }
        state.by_owner.remove(&owner);
        if let Some(r) = state.reserved.remove(&owner) {
            state.used = state.used.saturating_sub(r);
        }
    }

    /// Bytes charged and reserved in all.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Bytes charged and reserved for session `owner`.
    pub fn used_by(&self, owner: u64) -> u64 {
        self.lock().owner_used(owner)
    }

    /// The budgets: per session, in all.
    pub fn budgets(&self) -> (u64, u64) {
        (self.per_owner, self.total)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A census the test decides.
    #[derive(Debug, Default)]
    struct Fake(Arc<Mutex<HashSet<(Class, u32)>>>);

    impl Census for Fake {
        fn live(&self, class: Class) -> HashSet<u32> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, id)| *id)
                .collect()
        }
    }

    fn attr(map_type: u32, key: u32, value: u32, max: u32, flags: u32) -> Vec<u8> {
        let mut a = vec![0u8; 72];
        for (o, v) in [(0, map_type), (4, key), (8, value), (12, max), (16, flags)] {
            a[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        a
    }

    /// The kernel's `memlock` figures measured on 6.18 (2 possible CPUs),
    /// which the estimates must meet or exceed, by at most a page plus 10%.
    #[test]
    fn estimates_meet_the_kernels_figures() {
        let cases: &[(&str, Vec<u8>, u64)] = &[
            (
                "hash",
                attr(mt::BPF_MAP_TYPE_HASH, 4, 8, 10_000, 0),
                903_184,
            ),
            (
                "hash no prealloc",
                attr(mt::BPF_MAP_TYPE_HASH, 4, 8, 10_000, 1),
                263_040,
            ),
            (
                "array",
                attr(mt::BPF_MAP_TYPE_ARRAY, 4, 8, 10_000, 0),
                80_312,
            ),
            (
                "percpu hash",
                attr(mt::BPF_MAP_TYPE_PERCPU_HASH, 4, 8, 10_000, 0),
                1_063_040,
            ),
            (
                "percpu array",
                attr(mt::BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 10_000, 0),
                240_312,
            ),
            (
                "lru",
                attr(mt::BPF_MAP_TYPE_LRU_HASH, 4, 8, 10_000, 0),
                903_040,
            ),
            (
                "ringbuf",
                attr(mt::BPF_MAP_TYPE_RINGBUF, 0, 0, 1 << 20, 0),
                1_065_288,
            ),
            (
                "stack trace",
                attr(mt::BPF_MAP_TYPE_STACK_TRACE, 4, 1016, 1000, 0),
                1_040_512,
            ),
            (
                "queue",
                attr(mt::BPF_MAP_TYPE_QUEUE, 0, 8, 10_000, 0),
                80_320,
            ),
            (
                "bloom",
                attr(mt::BPF_MAP_TYPE_BLOOM_FILTER, 0, 8, 10_000, 0),
                16_696,
            ),
            (
                "big hash",
                attr(mt::BPF_MAP_TYPE_HASH, 64, 256, 100_000, 0),
                38_898_800,
            ),
        ];
        for (name, a, kernel) in cases {
            let e = map_estimate(a, 2);
            assert!(e >= *kernel, "{name}: estimate {e} < kernel {kernel}");
            assert!(
                e <= kernel + 4096 + kernel / 10 || name.contains("no prealloc"),
                "{name}: estimate {e} far above kernel {kernel}"
            );
        }
        // The arrays: 2 GiB each, whatever the CPU count.
        let big = attr(mt::BPF_MAP_TYPE_ARRAY, 4, 4096, 524_288, 0);
        assert!(map_estimate(&big, 1) >= 2 << 30);
        // No overflow with every field at its maximum.
        let huge = attr(
            mt::BPF_MAP_TYPE_PERCPU_HASH,
            u32::MAX,
            u32::MAX,
            u32::MAX,
            0,
        );
        assert_eq!(map_estimate(&huge, 4096), u64::MAX);
    }

    #[test]
    fn budgets_per_session_and_in_all() {
        let l = Ledger::new(100, 150, Box::new(Fake::default()));
        assert_eq!(l.reserve(1, 101), Err(libc::ENOMEM));
        l.reserve(1, 60).unwrap();
        assert_eq!(l.reserve(1, 60), Err(libc::ENOMEM), "the session's budget");
        l.reserve(2, 80).unwrap();
        assert_eq!(l.reserve(3, 20), Err(libc::ENOMEM), "the proxy's budget");
        l.cancel(2, 80);
        l.reserve(3, 20).unwrap();
        assert_eq!(l.used(), 80);
        assert_eq!(l.used_by(1), 60);
    }

    #[test]
    fn a_charge_lasts_until_the_object_is_gone() {
        let live = Arc::new(Mutex::new(HashSet::new()));
        let l = Ledger::new(100, 150, Box::new(Fake(live.clone())));
        l.reserve(1, 50).unwrap();
        live.lock().unwrap().insert((Class::Map, 7));
        // The kernel's figure is larger than the estimate: it counts.
        assert_eq!(l.settle(1, 50, Class::Map, 7, 90), Ok(90));
        assert_eq!(l.used_by(1), 90);
        // The session ends; a program still holds the map.
        l.orphan(1);
        assert_eq!(l.used(), 90);
        assert_eq!(l.reserve(2, 80), Err(libc::ENOMEM));
        // The map is freed: the next reservation that needs room finds it.
        live.lock().unwrap().clear();
        l.reserve(2, 80).unwrap();
        assert_eq!(l.used(), 80);
    }

    #[test]
    fn a_settled_figure_that_does_not_fit_is_refused() {
        let l = Ledger::new(100, 150, Box::new(Fake::default()));
        l.reserve(1, 40).unwrap();
        assert_eq!(l.settle(1, 40, Class::Btf, 3, 120), Err(libc::ENOMEM));
        assert_eq!(l.used(), 0, "nothing stays charged");
    }

    #[test]
    fn long_lists_are_swept() {
        let l = Ledger::new(u64::MAX, u64::MAX, Box::new(Fake::default()));
        for id in 0..5000 {
            l.reserve(1, 1).unwrap();
            l.settle(1, 1, Class::Prog, id, 0).unwrap();
        }
        // Every object is gone (the census is empty): sweeps keep the list
        // from growing past twice what is live (here: the minimum).
        assert!(l.lock().charges.len() <= SWEEP_MIN);
    }
}
