//! Reading a program's instructions before the kernel loads it.
//!
//! The verifier decides whether a program is *safe*; a policy decides
//! whether it may *change* anything. Most of what a tracing program could
//! change outside its own maps goes through a few helpers and kfuncs
//! (`bpf_probe_write_user`, `bpf_send_signal`, `bpf_override_return`,
//! `crash_kexec`, …), so the proxy reads the `insns` buffer of every
//! `BPF_PROG_LOAD` (as received: the same bytes the kernel gets) and checks
//! every call against the key's `[helpers]` and `[kfuncs]` rules, naming the
//! function in the refusal. Kfunc calls name their function by BTF id: the
//! name comes from the kernel's BTF (`/sys/kernel/btf/vmlinux`, read once)
//! or from the module BTF object `fd_array[off]` names.
//!
//! Under `change_foreign_objects = false` the program may also only name
//! maps its key created (`ld_imm64` map fds and `fd_array` maps): a program
//! holding another's map could write it from the kernel.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use telebpf_abi::btf::Btf;
use telebpf_abi::insn::{self, Call, MapRef};
use telebpf_abi::{read_u32, ObjectKind};

use crate::bpf_exec::SessionFds;
use crate::kernel::Kernel;
use crate::policy::{Denied, Policy};

/// The kernel's own BTF.
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The parts of a `BPF_PROG_LOAD` the checks read.
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    /// The instructions.
    pub insns: &'a [u8],
    /// `fd_array` (u32 guest fds), if given.
    pub fd_array: Option<&'a [u8]>,
}

impl Program<'_> {
    /// Entry `index` of `fd_array`, if there is one.
    fn fd_at(&self, index: u32) -> Option<i32> {
        let at = usize::try_from(index).ok()?.checked_mul(4)?;
        let a = self.fd_array?;
        (at + 4 <= a.len()).then(|| read_u32(a, at) as i32)
    }
}

/// The kernel's BTF, parsed on first use (`None` if unreadable).
fn vmlinux() -> Option<&'static Btf> {
    static BTF: OnceLock<Option<Btf>> = OnceLock::new();
    BTF.get_or_init(|| std::fs::read(VMLINUX).ok().and_then(|d| Btf::parse(d).ok()))
        .as_ref()
}

/// The bytes of the BTF object behind guest fd `fd`.
fn btf_bytes(fd: i32, kernel: &dyn Kernel) -> Option<Vec<u8>> {
    // struct bpf_btf_info: btf (u64 pointer) @0, btf_size @8, id @12.
    let mut info = [0u8; 32];
    kernel.object_info(fd, &mut info).ok()?;
    let size = u32::from_le_bytes(info[8..12].try_into().ok()?) as usize;
    if size == 0 || size > telebpf_abi::MAX_BUFFER_LEN {
        return None;
    }
    let mut data = vec![0u8; size];
    let mut info = [0u8; 32];
    info[0..8].copy_from_slice(&(data.as_mut_ptr() as u64).to_le_bytes());
    info[8..12].copy_from_slice(&(size as u32).to_le_bytes());
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_le_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
    // SAFETY: `attr.info` points to `info` (32 bytes, its length given),
    // whose `btf` pointer points to `data`, `size` bytes as `btf_size`
    // says; both outlive the call.
    unsafe {
        kernel.bpf(
            telebpf_abi::cmd::BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as u32,
            std::ptr::null_mut(),
            0,
        )
    }
    .ok()?;
    Some(data)
}

/// Module BTFs already parsed, by BTF object id, oldest first.
type ModuleCache = Mutex<Vec<(u32, Arc<Btf>)>>;

/// A module's BTF (split on the kernel's), by BTF object id, kept for the
/// next program that calls into the same module.
fn module_btf(fd: i32, kernel: &dyn Kernel) -> Option<Arc<Btf>> {
    static CACHE: OnceLock<ModuleCache> = OnceLock::new();
    const KEEP: usize = 32;
    let id = crate::ownership::object_id(fd, crate::ownership::Kind::Btf, kernel)?;
    let cache = CACHE.get_or_init(Mutex::default);
    let hit = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, b)| b.clone());
    if hit.is_some() {
        return hit;
    }
    let btf = Arc::new(Btf::parse_split(btf_bytes(fd, kernel)?, vmlinux()?).ok()?);
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= KEEP {
        c.remove(0);
    }
    c.push((id, btf.clone()));
    Some(btf)
}

/// The name of the kfunc a call names, resolved in the kernel's BTF or
/// in the module BTF of `fd_array[module]` (which must be a BTF object of
/// the session).
fn kfunc_name(
    prog: &Program,
    btf_id: u32,
    module: i16,
    fds: &dyn SessionFds,
    kernel: &dyn Kernel,
) -> Option<String> {
    let base = vmlinux()?;
    if module == 0 {
        return base.func_name(btf_id, None).map(str::to_string);
    }
    let fd = prog.fd_at(u32::try_from(module).ok()?)?;
    if !fds.owns(fd) || fds.kind(fd) != Some(ObjectKind::Btf) {
        return None;
    }
    module_btf(fd, kernel)?
        .func_name(btf_id, Some(base))
        .map(str::to_string)
}

/// Checks every helper and kfunc call of `prog` against `policy`; the
/// first call it refuses is the answer.
pub fn check_calls(
    prog: &Program,
    policy: &Policy,
    fds: &dyn SessionFds,
    kernel: &dyn Kernel,
) -> Result<(), Denied> {
    if policy.allows_every_call() {
        return Ok(());
    }
    let calls = insn::calls(prog.insns);
    let helpers: BTreeSet<u32> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Helper(id) => Some(*id),
            Call::Kfunc { .. } => None,
        })
        .collect();
    for id in helpers {
        policy.check_helper(id)?;
    }
    let kfuncs: BTreeSet<(u32, i16)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Kfunc { btf_id, module } => Some((*btf_id, *module)),
            Call::Helper(_) => None,
        })
        .collect();
    for (btf_id, module) in kfuncs {
        let name = kfunc_name(prog, btf_id, module, fds, kernel);
        let described = if module == 0 {
            format!("BTF id {btf_id} of the kernel")
        } else {
            format!("BTF id {btf_id} of the module BTF fd_array[{module}]")
        };
        policy.check_kfunc(name.as_deref(), &described)?;
    }
    Ok(())
}

/// Every session map fd the program names: its `ld_imm64` map fds, the
/// `fd_array` entries they index, and every map of `fd_array` (the kernel
/// binds all of them to the program).
pub fn map_fds(prog: &Program, fds: &dyn SessionFds) -> Vec<i32> {
    let mut out = BTreeSet::new();
    let is_map = |fd: i32| fds.owns(fd) && matches!(fds.kind(fd), Some(ObjectKind::Map(_)));
    for r in insn::map_refs(prog.insns) {
        let fd = match r {
            MapRef::Fd(fd) => Some(fd),
            MapRef::Index(i) => prog.fd_at(i),
        };
        if let Some(fd) = fd.filter(|&fd| is_map(fd)) {
            out.insert(fd);
        }
    }
    if let Some(a) = prog.fd_array {
        for k in 0..a.len() / 4 {
            let fd = read_u32(a, k * 4) as i32;
            if is_map(fd) {
                out.insert(fd);
            }
        }
    }
    out.into_iter().collect()
}
