//! Which guest objects each key created: the ledger behind
//! `change_foreign_objects = false`.
//!
//! With ids from listings (`BPF_*_GET_FD_BY_ID`) a key can open any object
//! of the guest: the guest's own monitoring, other keys' tools. Opening to
//! read is what listings are for; changing is not. So under a policy
//! without `change_foreign_objects` the proxy lets a key change (update or
//! delete map entries, freeze, write a mapped map, consume a ring, detach
//! or update a link, attach, detach or run a program, bind a map to it, or
//! name a map in a program it loads) only objects **the same key**
//! created, in any of its sessions, past or present: their ids are recorded
//! here when `BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_LINK_CREATE`,
//! `BPF_RAW_TRACEPOINT_OPEN` or `BPF_BTF_LOAD` returns ([`record`]).
//!
//! The kernel allocates object ids cyclically (`idr_alloc_cyclic`), so an
//! id is not reused until the id space wraps; still, a ledger that only
//! grew would be a leak. It is bounded by pruning: when it has doubled
//! since the last prune, the ids the kernel no longer knows (walked with
//! `BPF_*_GET_NEXT_ID`) are dropped. What stays are live objects, which the
//! proxy's object limits bound.
//!
//! The same file keeps the expected attach type of every program the proxy
//! loaded (for any key): `bpf_prog_info` does not report it, and raw
//! tracepoint open attaches tracing and LSM programs by it
//! ([`loaded_attach_type`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use telebpf_abi::cmd;

use crate::kernel::Kernel;
use crate::policy::KeyGrant;

/// Smallest size at which a ledger is pruned.
const MIN_PRUNE: usize = 1024;

/// The kinds of objects with ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A map.
    Map,
    /// A program.
    Prog,
    /// A link.
    Link,
    /// A BTF object.
    Btf,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Map, Kind::Prog, Kind::Link, Kind::Btf];

    /// The word refusals use.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::Prog => "program",
            Kind::Link => "link",
            Kind::Btf => "BTF object",
        }
    }

    fn next_id_cmd(self) -> u32 {
        match self {
            Kind::Map => cmd::BPF_MAP_GET_NEXT_ID,
            Kind::Prog => cmd::BPF_PROG_GET_NEXT_ID,
            Kind::Link => cmd::BPF_LINK_GET_NEXT_ID,
            Kind::Btf => cmd::BPF_BTF_GET_NEXT_ID,
        }
    }

    /// Offset of `id` in the object's info struct (`bpf_btf_info` starts
    /// with the `btf` pointer and its size).
    fn info_id_offset(self) -> usize {
        match self {
            Kind::Btf => 12,
            _ => 4,
        }
    }
}

/// A set of object ids per kind, pruned of dead ids as it grows.
#[derive(Debug, Default)]
struct IdSet {
    ids: HashMap<Kind, HashSet<u32>>,
    prune_at: usize,
}

impl IdSet {
    fn len(&self) -> usize {
        self.ids.values().map(HashSet::len).sum()
    }

    fn insert(&mut self, kind: Kind, id: u32, kernel: &dyn Kernel) {
        if self.len() >= self.prune_at.max(MIN_PRUNE) {
            self.prune(|k| live_ids(kernel, k));
        }
        self.ids.entry(kind).or_default().insert(id);
    }

    fn contains(&self, kind: Kind, id: u32) -> bool {
        self.ids.get(&kind).is_some_and(|s| s.contains(&id))
    }

    /// Drops every id `live` does not list; the next prune comes when the
    /// set has doubled.
    fn prune(&mut self, live: impl Fn(Kind) -> Option<HashSet<u32>>) {
        for kind in Kind::ALL {
            // A walk that failed keeps what we have: a kept dead id only
            // costs memory, a dropped live one would refuse its owner.
            if let (Some(set), Some(live)) = (self.ids.get_mut(&kind), live(kind)) {
                set.retain(|id| live.contains(id));
            }
        }
        self.prune_at = (2 * self.len()).max(MIN_PRUNE);
    }
}

/// The ids of every object `kernel` holds of `kind` now; `None` if the
/// walk failed before the end of the list.
fn live_ids(kernel: &dyn Kernel, kind: Kind) -> Option<HashSet<u32>> {
    let listing = kernel.live_ids(kind.next_id_cmd());
    listing.failed.is_none().then_some(listing.ids)
}

/// The kernel's id of the object behind guest fd `fd`.
pub fn object_id(fd: i32, kind: Kind, kernel: &dyn Kernel) -> Option<u32> {
    let mut info = [0u8; 16];
    kernel.object_info(fd, &mut info).ok()?;
    let at = kind.info_id_offset();
    Some(u32::from_le_bytes(info[at..at + 4].try_into().ok()?))
}

/// The objects one key created.
#[derive(Debug, Default)]
pub struct Ledger {
    ids: Mutex<IdSet>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, IdSet> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key created object `id` of `kind` (in `kernel`, which lists
    /// the live ids when the ledger is pruned).
    pub fn record(&self, kind: Kind, id: u32, kernel: &dyn Kernel) {
        self.lock().insert(kind, id, kernel);
    }

    /// Whether the key created object `id` of `kind`.
    pub fn owns(&self, kind: Kind, id: u32) -> bool {
        self.lock().contains(kind, id)
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every key's ledger, by key file and key name.
type Ledgers = Mutex<HashMap<(PathBuf, String), Arc<Ledger>>>;

/// The ledger of the key `grant` names (by key file and name: the same
/// key file cannot be given twice, so this is one key).
pub fn ledger(grant: &KeyGrant) -> Arc<Ledger> {
    static LEDGERS: OnceLock<Ledgers> = OnceLock::new();
    LEDGERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((grant.file.clone(), grant.name.clone()))
        .or_default()
        .clone()
}

/// Records that the key of `grant` created the object behind guest fd
/// `fd` (of `kind`) of `kernel`.
pub fn record(grant: &KeyGrant, fd: i32, kind: Kind, kernel: &dyn Kernel) {
    if let Some(id) = object_id(fd, kind, kernel) {
        ledger(grant).record(kind, id, kernel);
    }
}

/// Expected attach types of the programs this proxy loaded, by program id.
#[derive(Debug, Default)]
struct Loaded {
    attach: HashMap<u32, u32>,
    prune_at: usize,
}

fn loaded() -> MutexGuard<'static, Loaded> {
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    LOADED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Remembers the expected attach type of a program the proxy just loaded
/// (guest fd `fd` of `kernel`).
pub fn record_loaded(fd: i32, expected_attach_type: u32, kernel: &dyn Kernel) {
    let Some(id) = object_id(fd, Kind::Prog, kernel) else {
        return;
    };
    let mut l = loaded();
    if l.attach.len() >= l.prune_at.max(MIN_PRUNE) {
        if let Some(live) = live_ids(kernel, Kind::Prog) {
            l.attach.retain(|id, _| live.contains(id));
        }
        l.prune_at = (2 * l.attach.len()).max(MIN_PRUNE);
    }
    l.attach.insert(id, expected_attach_type);
}

/// The expected attach type of program `id`, if this proxy loaded it.
pub fn loaded_attach_type(id: u32) -> Option<u32> {
    loaded().attach.get(&id).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeKernel;

    #[test]
    fn ledger_records_and_prunes_dead_ids() {
        let mut set = IdSet::default();
        for id in 0..MIN_PRUNE as u32 {
            set.ids.entry(Kind::Map).or_default().insert(id);
        }
        set.ids.entry(Kind::Link).or_default().insert(7);
        // Only even map ids and link 7 are alive.
        set.prune(|k| {
            Some(match k {
                Kind::Map => (0..MIN_PRUNE as u32).filter(|i| i % 2 == 0).collect(),
                Kind::Link => [7].into(),
                _ => HashSet::new(),
            })
        });
        assert!(set.contains(Kind::Map, 2));
        assert!(!set.contains(Kind::Map, 3));
        assert!(set.contains(Kind::Link, 7));
        assert!(!set.contains(Kind::Prog, 2), "kinds are apart");
        assert_eq!(set.len(), MIN_PRUNE / 2 + 1);
        assert_eq!(set.prune_at, MIN_PRUNE.max(2 * (MIN_PRUNE / 2 + 1)));
        // A failed walk keeps everything.
        set.prune(|_| None);
        assert_eq!(set.len(), MIN_PRUNE / 2 + 1);
    }

    #[test]
    fn ledgers_are_per_key() {
        let grant = |name: &str| KeyGrant {
            name: name.into(),
            file: PathBuf::from("/k"),
            policy: Arc::new(crate::policy::Policy::full()),
        };
        ledger(&grant("a")).record(Kind::Map, 41, &FakeKernel::default());
        assert!(ledger(&grant("a")).owns(Kind::Map, 41));
        assert!(!ledger(&grant("b")).owns(Kind::Map, 41));
        assert!(!ledger(&grant("a")).owns(Kind::Prog, 41));
    }
}
