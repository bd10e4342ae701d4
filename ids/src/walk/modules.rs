//! The module list, as `lsmod` and /proc/modules show it.

use serde::Serialize;

use crate::layout::{Missing, Types};
use crate::view::{span, View};
use crate::Error;

/// One loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    /// Its name.
    pub name: String,
    /// Bytes of memory it holds (the /proc/modules size).
    pub size: u64,
    /// `Live`, `Loading`, `Unloading` or `Unformed`.
    pub state: &'static str,
    /// Kernel address of its `struct module`.
    pub addr: u64,
}

/// Offsets the walk needs.
#[derive(Debug, Clone)]
pub struct Layout {
    list: u64,
    state: u64,
    name: u64,
    /// Offsets of the size fields whose sum is the module's size.
    sizes: Vec<u64>,
}

/// Memory region types of `struct module.mem[]` (Linux 6.4+).
const MOD_MEM_TYPES: u64 = 7;

impl Layout {
    /// Reads the offsets from the guest's BTF: `core_layout`/`init_layout`
    /// before Linux 6.4, `mem[]` since.
    pub fn new(t: &Types) -> Result<Layout, Missing> {
        let sizes = if t.has("module", "core_layout") {
            vec![
                t.offset("module", "core_layout.size")?,
                t.offset("module", "init_layout.size")?,
            ]
        } else {
            (0..MOD_MEM_TYPES)
                .map(|i| t.offset("module", &format!("mem[{i}].size")))
                .collect::<Result<_, _>>()?
        };
        Ok(Layout {
            list: t.offset("module", "list")?,
            state: t.offset("module", "state")?,
            name: t.offset("module", "name")?,
            sizes,
        })
    }
}

fn state_name(state: u32) -> &'static str {
    match state {
        0 => "Live",
        1 => "Loading",
        2 => "Unloading",
        _ => "Unformed",
    }
}

/// Walks the list whose head is at `head` (the kernel's `modules`).
pub fn walk(view: &mut View<'_>, l: &Layout, head: u64) -> Result<Vec<Module>, Error> {
    let mut fields = vec![(l.list, 8), (l.state, 4), (l.name, 56)];
    fields.extend(l.sizes.iter().map(|&o| (o, 4)));
    let (lo, len) = span(&fields);
    let mut out = Vec::new();
    view.load(head, 8)?;
    let mut cur = view.u64(head)?;
    for _ in 0..crate::walk::MAX_WALK {
        if cur == head || cur == 0 {
            return Ok(out);
        }
        let module = cur.wrapping_sub(l.list);
        view.load(module + lo, len)?;
        let state = view.u32(module + l.state)?;
        let name = view.bytes::<56>(module + l.name)?;
        let mut size = 0u64;
        for &o in &l.sizes {
            size += view.u32(module + o)? as u64;
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(Module {
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            size,
            state: state_name(state),
            addr: module,
        });
        cur = view.u64(cur)?;
    }
    Err(Error::TooLong("module list"))
}
