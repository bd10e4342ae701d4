//! What each key may ask of the proxy (`telebpf-proxy --policy FILE`).
//!
//! Without a policy every key may do everything the proxy implements (the
//! *full* profile): it runs `bpf()` as root in the guest, so a key holder
//! is root-equivalent there. A policy file narrows that down, per key:
//!
//! * `commands`: the `bpf()` commands allowed, by the kernel's name in
//!   lower case without `BPF_` (`"map_lookup_elem"`, `"prog_load"`), as in
//!   `telebpf_abi::cmd::NAMES`;
//! * `prog_types`, `map_types`, `attach_types`: the types `BPF_PROG_LOAD`,
//!   `BPF_MAP_CREATE`, and `BPF_PROG_ATTACH`/`BPF_PROG_DETACH`/
//!   `BPF_LINK_CREATE` may name (lower case without `BPF_PROG_TYPE_`,
//!   `BPF_MAP_TYPE_`, `BPF_`). Any list may hold `"*"` (everything, also
//!   numbers this build has no name for) or bare numbers;
//! * `[bpffs]`: the path prefixes `BPF_OBJ_PIN`/`BPF_OBJ_GET` and every
//!   bpffs file operation (read, stat, statfs, access, readlink, `mkdir`,
//!   `unlink`, `rmdir`) may name, and whether directories may be made
//!   (`mkdir`) and pins removed (`unpin`); reading a pinned map's file
//!   also needs `map_lookup_elem`, a pinned iterator's `iter_create` and
//!   attach type `trace_iter`;
//! * `[cgroup] paths`: the path prefixes of the guest's cgroups (under its
//!   cgroup2 mount) a key may open, list and `stat` — and so name as the
//!   target of `BPF_PROG_ATTACH`/`DETACH`/`QUERY` and `BPF_LINK_CREATE`,
//!   whose attach types `attach_types` decides (default
//!   `["/sys/fs/cgroup"]`);
//! * the requests that are no `bpf()` call: `perf_events`
//!   (`perf_event_open` and its ioctls), `probe_events` (appends to
//!   `kprobe_events`/`uprobe_events`), `map_mmap_read` and `map_mmap_write`
//!   (a mapped map's memory), `ring_streams` (consuming a ring's records on
//!   the host), `kernel_memory_read` (bulk reads of kernel memory),
//!   `netlink` (a relayed `NETLINK_ROUTE` socket: listing and changing
//!   the guest's interfaces, attaching XDP and tc programs;
//!   [`crate::netlink`]; it needs `change_foreign_objects` too, since an
//!   interface's programs are nobody's own);
//! * `[helpers]` and `[kfuncs]` (`allow`, `deny`; deny wins): the
//!   functions outside a program its instructions may call, checked in
//!   every program a key loads ([`crate::progcheck`]);
//! * `change_foreign_objects`: whether a key may change, detach or consume
//!   objects it did not create itself (the guest's, other keys'); without
//!   it, map writes, link detach/update, program attach/detach and ring
//!   streams act only on the key's own objects ([`crate::ownership`]);
//! * `[[key]]` entries: further keys, each with its own policy.
//!
//! Everything a policy file does not grant is refused: a missing list is
//! empty, a missing switch is `false`. Reading the files that describe the
//! kernel (BTF, kallsyms, …; see `telebpf_protocol::paths`; bpffs aside)
//! is always allowed, because no tool starts without them and they hold no
//! secret a listing would not show. The README documents every key.
//!
//! A refused request is not executed: the session answers
//! [`telebpf_protocol::message::Reply::Refused`] (the host program gets
//! `EPERM` and one line on stderr per kind of request) and writes an audit
//! record.
//!
//! One job per file: [`parse`] turns a policy file (TOML) or a built-in
//! profile into a [`Policy`]; [`check`] decides whether a request may run
//! under it; [`audit`] decides which requests the audit log records and
//! how it names them (the log itself is [`crate::audit`]). This file holds
//! the policy itself and what all three share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use telebpf_abi::cmd;
use telebpf_protocol::message::{BpfCall, WireBuffer};
use telebpf_protocol::paths;

pub mod audit;
pub mod check;
pub mod parse;

pub use audit::{audited, mutates};
pub use parse::{resolve, PolicyError};

/// Name of the built-in profile that allows everything.
pub const FULL: &str = "full";

/// A set of numbers from one of the kernel's enums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NumberSet {
    /// `"*"`: every number.
    all: bool,
    /// The numbers given, sorted.
    values: Vec<u32>,
}

impl NumberSet {
    fn everything() -> NumberSet {
        NumberSet {
            all: true,
            values: Vec::new(),
        }
    }

    fn contains(&self, v: u32) -> bool {
        self.all || self.values.binary_search(&v).is_ok()
    }

    fn is_empty(&self) -> bool {
        !self.all && self.values.is_empty()
    }
}

/// What calls to helpers (by number) a program may make: `allow` minus
/// `deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HelperRule {
    allow: NumberSet,
    deny: NumberSet,
}

/// A list of kfunc names: exact names, `prefix*` patterns, or `"*"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NameSet {
    all: bool,
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl NameSet {
    fn everything() -> NameSet {
        NameSet {
            all: true,
            ..NameSet::default()
        }
    }

    /// The entry that matches `name`, if any (for the refusal's rule).
    fn matching(&self, name: &str) -> Option<String> {
        if self.all {
            return Some("*".into());
        }
        if let Some(e) = self.exact.iter().find(|e| *e == name) {
            return Some(e.clone());
        }
        self.prefixes
            .iter()
            .find(|p| name.starts_with(p.as_str()))
            .map(|p| format!("{p}*"))
    }

    fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// What calls to kfuncs (by function name) a program may make: `allow`
/// minus `deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KfuncRule {
    allow: NameSet,
    deny: NameSet,
}

/// The bpffs rules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bpffs {
    /// Component-wise path prefixes that pins, `BPF_OBJ_GET` and directory
    /// operations may name.
    paths: Vec<PathBuf>,
    /// `mkdir` in bpffs.
    mkdir: bool,
    /// `unlink`/`rmdir` in bpffs (unpinning).
    unpin: bool,
}

/// What one key may ask of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: String,
    commands: NumberSet,
    prog_types: NumberSet,
    map_types: NumberSet,
    attach_types: NumberSet,
    bpffs: Bpffs,
    /// `[cgroup] paths`: component-wise prefixes of the guest cgroups a key
    /// may open, list and stat (and so name in `BPF_PROG_ATTACH`/`QUERY`).
    cgroup_paths: Vec<PathBuf>,
    perf_events: bool,
    probe_events: bool,
    map_mmap_read: bool,
    map_mmap_write: bool,
    ring_streams: bool,
    kernel_memory_read: bool,
    netlink: bool,
    helpers: HelperRule,
    kfuncs: KfuncRule,
    change_foreign_objects: bool,
}

/// A request the policy does not allow: what it was and which rule says no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// What was refused, in the kernel's words (see
    /// `telebpf_protocol::message::Refusal::what`).
    pub what: String,
    /// The rule, naming the policy key.
    pub rule: String,
}

/// A key the proxy accepts and the policy that governs it.
#[derive(Debug)]
pub struct KeyGrant {
    /// How audit records and refusals name the key: the `name` of its
    /// `[[key]]` entry, else its file's path.
    pub name: String,
    /// The key file.
    pub file: PathBuf,
    /// Its policy.
    pub policy: Arc<Policy>,
}

/// A `[[key]]` entry of a policy file, resolved.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key file (relative paths are relative to the policy file).
    pub file: PathBuf,
    /// Its name, if given.
    pub name: Option<String>,
    /// Its policy.
    pub policy: Arc<Policy>,
}

/// A loaded policy file: its own rules (for the `--key-file` keys) and the
/// keys it names.
#[derive(Debug)]
pub struct PolicyFile {
    /// The file's own rules.
    pub rules: Arc<Policy>,
    /// Its `[[key]]` entries.
    pub keys: Vec<KeyEntry>,
}

/// `BPF_PROG_LOAD`, or `bpf command 99` for numbers this build does not know.
fn command_name(command: u32) -> String {
    match cmd::name(command) {
        "BPF_UNKNOWN" => format!("bpf command {}", command & !cmd::BPF_COMMON_ATTRS),
        n => n.to_string(),
    }
}

fn type_name(names: &'static [(&'static str, u32)], v: u32) -> String {
    names
        .iter()
        .find(|&&(_, n)| n == v)
        .map_or_else(|| v.to_string(), |&(n, _)| n.to_string())
}

/// The pathname of `BPF_OBJ_PIN`/`BPF_OBJ_GET`: the plan's first buffer
/// (`None` if the call has none; `Some(None)` if it is no UTF-8 string).
fn obj_path(call: &BpfCall) -> Option<Option<&str>> {
    match call.buffers.first()? {
        WireBuffer::Data(d) => {
            let s = d.strip_suffix(&[0]).unwrap_or(d);
            Some(std::str::from_utf8(s).ok())
        }
        WireBuffer::Out(_) => Some(None),
    }
}

impl Policy {
    /// The profile that allows everything (what the proxy does without
    /// `--policy`).
    pub fn full() -> Policy {
        Policy {
            name: FULL.into(),
            commands: NumberSet::everything(),
            prog_types: NumberSet::everything(),
            map_types: NumberSet::everything(),
            attach_types: NumberSet::everything(),
            bpffs: Bpffs {
                paths: vec![PathBuf::from("/")],
                mkdir: true,
                unpin: true,
            },
            cgroup_paths: vec![PathBuf::from("/")],
            perf_events: true,
            probe_events: true,
            map_mmap_read: true,
            map_mmap_write: true,
            ring_streams: true,
            kernel_memory_read: true,
            netlink: true,
            helpers: HelperRule {
                allow: NumberSet::everything(),
                deny: NumberSet::default(),
            },
            kfuncs: KfuncRule {
                allow: NameSet::everything(),
                deny: NameSet::default(),
            },
            change_foreign_objects: true,
        }
    }

    /// Whether a key may change, detach or consume objects it did not
    /// create (`change_foreign_objects`).
    pub fn changes_foreign_objects(&self) -> bool {
        self.change_foreign_objects
    }

    /// Whether the helper and kfunc rules allow every call, so a program's
    /// instructions need not be read for them.
    pub fn allows_every_call(&self) -> bool {
        self.helpers.allow.all
            && self.helpers.deny.is_empty()
            && self.kfuncs.allow.all
            && self.kfuncs.deny.is_empty()
    }

    /// Whether every attach type is allowed (`attach_types = ["*"]`).
    pub fn allows_every_attach_type(&self) -> bool {
        self.attach_types.all
    }

    /// Whether every program type is allowed (`prog_types = ["*"]`).
    pub fn allows_every_prog_type(&self) -> bool {
        self.prog_types.all
    }

    /// The policy's name: its `name` key, else its file's stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether bulk reads of kernel memory (the collectors' requests) are
    /// allowed.
    pub fn allows_kernel_memory_read(&self) -> bool {
        self.kernel_memory_read
    }

    /// Whether `[bpffs] paths` confines pins and opens of pins (it is not
    /// `["/"]`, which leaves them to the kernel).
    pub fn confines_bpffs(&self) -> bool {
        !self.bpffs.paths.iter().any(|p| p == Path::new("/"))
    }

    /// Whether `path` lies under one of the `[cgroup] paths` prefixes
    /// (component-wise, and clean).
    pub fn allows_cgroup_path(&self, path: &str) -> bool {
        paths::is_clean(path)
            && self
                .cgroup_paths
                .iter()
                .any(|p| Path::new(path).starts_with(p))
    }

    /// Whether `path` lies under one of the bpffs prefixes (component-wise,
    /// after the same cleanliness check the file allow-list makes).
    pub fn allows_bpffs_path(&self, path: &str) -> bool {
        paths::is_clean(path)
            && self
                .bpffs
                .paths
                .iter()
                .any(|p| Path::new(path).starts_with(p))
    }
}

#[cfg(test)]
mod testing {
    //! What the tests of every part build requests and policies with.

    use std::path::Path;
    use std::sync::Arc;

    use telebpf_protocol::message::{Request, WireBuffer};

    use super::{resolve, Policy, PolicyError, PolicyFile};

    pub(super) fn parse(text: &str) -> Result<PolicyFile, PolicyError> {
        Policy::parse_file(text, Path::new("/etc/telebpf/test.toml"))
    }

    pub(super) fn bpf(command: u32, fields: &[(usize, u32)], buffers: Vec<WireBuffer>) -> Request {
        let mut attr = vec![0u8; 128];
        for &(off, v) in fields {
            telebpf_abi::write_u32(&mut attr, off, v);
        }
        crate::testing::bpf_request(command, attr, buffers)
    }

    pub(super) fn path_buf(p: &str) -> Vec<WireBuffer> {
        let mut v = p.as_bytes().to_vec();
        v.push(0);
        vec![WireBuffer::Data(v)]
    }

    pub(super) fn read_only() -> Arc<Policy> {
        resolve("read-only", Path::new("/")).unwrap().rules
    }

    pub(super) fn tracing() -> Arc<Policy> {
        resolve("tracing", Path::new("/")).unwrap().rules
    }
}
