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
//! * the requests that are no `bpf()` call: `perf_events`
//!   (`perf_event_open` and its ioctls), `probe_events` (appends to
//!   `kprobe_events`/`uprobe_events`), `map_mmap_read` and `map_mmap_write`
//!   (a mapped map's memory), `ring_streams` (consuming a ring's records on
//!   the host), `kernel_memory_read` (bulk reads of kernel memory);
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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use telebpf_abi::{attach_type, cmd, helper, map_type, off, prog_type, read_u32};
use telebpf_protocol::message::{BpfCall, FileOp, Request, WireBuffer};
use telebpf_protocol::paths;

/// Name of the built-in profile that allows everything.
pub const FULL: &str = "full";

/// The profiles shipped in `policies/`, compiled in so that a `[[key]]`
/// entry (or `--policy`) can name them without a path.
const BUILT_IN: &[(&str, &str)] = &[
    ("read-only", include_str!("../../policies/read-only.toml")),
    ("tracing", include_str!("../../policies/tracing.toml")),
    ("observe", include_str!("../../policies/observe.toml")),
    ("monitor", include_str!("../../policies/monitor.toml")),
];

/// A policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is no valid policy TOML (unknown keys are errors, so a typo
    /// cannot silently allow or refuse something).
    #[error("policy {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: toml::de::Error,
    },
    /// A list names something this build does not know.
    #[error("policy {path}: {list} names {name:?}, which is no {what} (known: {known})")]
    UnknownName {
        /// The file.
        path: PathBuf,
        /// The list (`commands`, `prog_types`, …).
        list: &'static str,
        /// The name given.
        name: String,
        /// What the list holds.
        what: &'static str,
        /// The names this build knows.
        known: String,
    },
    /// A bpffs path is not absolute and clean.
    #[error("policy {path}: bpffs path {given:?} must be absolute, without '.' or '..'")]
    BadPath {
        /// The file.
        path: PathBuf,
        /// The path given.
        given: String,
    },
    /// A `[kfuncs]` list holds a number or an empty name (kfuncs are named
    /// by their functions' names; BTF ids differ from kernel to kernel).
    #[error("policy {path}: kfuncs.{list} holds {given}, which is no function name")]
    BadKfunc {
        /// The file.
        path: PathBuf,
        /// `allow` or `deny`.
        list: &'static str,
        /// What was given.
        given: String,
    },
    /// A profile named by a `[[key]]` entry has `[[key]]` entries itself.
    #[error("policy {path}: names keys, but is used as the policy of a key in {parent}")]
    NestedKeys {
        /// The profile.
        path: PathBuf,
        /// The file whose `[[key]]` named it.
        parent: PathBuf,
    },
}

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

/// One entry of a list: a name, `"*"`, or a bare number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Item {
    Name(String),
    Number(u32),
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
    perf_events: bool,
    probe_events: bool,
    map_mmap_read: bool,
    map_mmap_write: bool,
    ring_streams: bool,
    kernel_memory_read: bool,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    #[serde(default)]
    commands: Vec<Item>,
    #[serde(default)]
    prog_types: Vec<Item>,
    #[serde(default)]
    map_types: Vec<Item>,
    #[serde(default)]
    attach_types: Vec<Item>,
    #[serde(default)]
    bpffs: RawBpffs,
    #[serde(default)]
    perf_events: bool,
    #[serde(default)]
    probe_events: bool,
    #[serde(default)]
    map_mmap_read: bool,
    #[serde(default)]
    map_mmap_write: bool,
    #[serde(default)]
    ring_streams: bool,
    #[serde(default)]
    kernel_memory_read: bool,
    #[serde(default)]
    helpers: RawCalls,
    #[serde(default)]
    kfuncs: RawCalls,
    #[serde(default)]
    change_foreign_objects: bool,
    #[serde(default, rename = "key")]
    keys: Vec<RawKey>,
}

/// `[helpers]` / `[kfuncs]`: missing lists are empty (nothing allowed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalls {
    #[serde(default)]
    allow: Vec<Item>,
    #[serde(default)]
    deny: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBpffs {
    #[serde(default = "default_bpffs_paths")]
    paths: Vec<String>,
    #[serde(default)]
    mkdir: bool,
    #[serde(default)]
    unpin: bool,
}

impl Default for RawBpffs {
    fn default() -> RawBpffs {
        RawBpffs {
            paths: default_bpffs_paths(),
            mkdir: false,
            unpin: false,
        }
    }
}

fn default_bpffs_paths() -> Vec<String> {
    vec![paths::BPFFS.to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    file: PathBuf,
    name: Option<String>,
    policy: Option<String>,
}

/// One of the kernel's enums, for turning names into numbers.
struct Enum {
    list: &'static str,
    what: &'static str,
    names: &'static [(&'static str, u32)],
}

impl Enum {
    fn set(&self, items: &[Item], path: &Path) -> Result<NumberSet, PolicyError> {
        let mut set = NumberSet::default();
        for item in items {
            match item {
                Item::Name(n) if n == "*" => set.all = true,
                Item::Name(n) => match self.names.iter().find(|(name, _)| name == n) {
                    Some(&(_, v)) => set.values.push(v),
                    None => {
                        return Err(PolicyError::UnknownName {
                            path: path.to_path_buf(),
                            list: self.list,
                            name: n.clone(),
                            what: self.what,
                            known: self
                                .names
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                },
                Item::Number(v) => set.values.push(*v),
            }
        }
        set.values.sort_unstable();
        set.values.dedup();
        Ok(set)
    }
}

const COMMANDS: Enum = Enum {
    list: "commands",
    what: "bpf command",
    names: cmd::NAMES,
};
const PROG_TYPES: Enum = Enum {
    list: "prog_types",
    what: "program type",
    names: prog_type::NAMES,
};
const MAP_TYPES: Enum = Enum {
    list: "map_types",
    what: "map type",
    names: map_type::NAMES,
};
const ATTACH_TYPES: Enum = Enum {
    list: "attach_types",
    what: "attach type",
    names: attach_type::NAMES,
};

/// A `[helpers]` list: helper names (with or without `bpf_`), `"*"`, or
/// numbers.
fn helper_set(items: &[Item], list: &'static str, path: &Path) -> Result<NumberSet, PolicyError> {
    let mut set = NumberSet::default();
    for item in items {
        match item {
            Item::Name(n) if n == "*" => set.all = true,
            Item::Name(n) => match helper::by_name(n) {
                Some(v) => set.values.push(v),
                None => {
                    return Err(PolicyError::UnknownName {
                        path: path.to_path_buf(),
                        list,
                        name: n.clone(),
                        what: "helper",
                        known: helper::NAMES[1..].join(", "),
                    })
                }
            },
            Item::Number(v) => set.values.push(*v),
        }
    }
    set.values.sort_unstable();
    set.values.dedup();
    Ok(set)
}

/// A `[kfuncs]` list: function names, `prefix*` patterns, or `"*"`. Names
/// cannot be checked against the guest's kernel here (they are in its BTF,
/// and differ between kernels); a name no kernel has matches nothing.
fn kfunc_set(items: &[Item], list: &'static str, path: &Path) -> Result<NameSet, PolicyError> {
    let mut set = NameSet::default();
    let bad = |given: String| PolicyError::BadKfunc {
        path: path.to_path_buf(),
        list,
        given,
    };
    for item in items {
        match item {
            Item::Name(n) if n == "*" => set.all = true,
            Item::Name(n) => {
                let (stem, prefix) = match n.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (n.as_str(), false),
                };
                if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad(format!("{n:?}")));
                }
                if prefix {
                    set.prefixes.push(stem.to_string());
                } else {
                    set.exact.push(stem.to_string());
                }
            }
            Item::Number(v) => return Err(bad(v.to_string())),
        }
    }
    Ok(set)
}

/// Whether a `bpf()` command creates an object or changes the kernel's
/// state (what the audit log records besides refusals and sessions).
pub fn mutates(command: u32) -> bool {
    use telebpf_abi::cmd::*;
    matches!(
        command & !BPF_COMMON_ATTRS,
        BPF_MAP_CREATE
            | BPF_MAP_UPDATE_ELEM
            | BPF_MAP_DELETE_ELEM
            | BPF_PROG_LOAD
            | BPF_OBJ_PIN
            | BPF_PROG_ATTACH
            | BPF_PROG_DETACH
            | BPF_PROG_TEST_RUN
            | BPF_RAW_TRACEPOINT_OPEN
            | BPF_BTF_LOAD
            | BPF_MAP_LOOKUP_AND_DELETE_ELEM
            | BPF_MAP_FREEZE
            | BPF_MAP_LOOKUP_AND_DELETE_BATCH
            | BPF_MAP_UPDATE_BATCH
            | BPF_MAP_DELETE_BATCH
            | BPF_LINK_CREATE
            | BPF_LINK_UPDATE
            | BPF_ENABLE_STATS
            | BPF_ITER_CREATE
            | BPF_LINK_DETACH
            | BPF_PROG_BIND_MAP
            | BPF_TOKEN_CREATE
            | BPF_PROG_ASSOC_STRUCT_OPS
    ) || cmd::name(command) == "BPF_UNKNOWN"
}

/// The audit name of a request that creates or changes something, with a
/// detail (a type, a path); `None` for requests that only read.
pub fn audited(req: &Request) -> Option<(String, Option<String>)> {
    match req {
        Request::Bpf(call) if mutates(call.cmd) => Some((command_name(call.cmd), bpf_detail(call))),
        Request::PerfEventOpen { attr, .. } => Some((
            "perf_event_open".into(),
            Some(format!(
                "type {} config {:#x}",
                read_u32(attr, 0),
                telebpf_abi::read_u64(attr, 8)
            )),
        )),
        Request::Ioctl { cmd, .. } => Some(("perf_event_ioctl".into(), Some(format!("{cmd:#x}")))),
        Request::MapWrite { offset, data, .. } => Some((
            "map_mmap_write".into(),
            Some(format!("{} bytes at {offset}", data.len())),
        )),
        Request::File(
            op @ (FileOp::Mkdir { .. } | FileOp::Unlink { .. } | FileOp::Rmdir { .. }),
        ) => {
            let what = match op {
                FileOp::Mkdir { .. } => "mkdir",
                FileOp::Unlink { .. } => "unlink",
                _ => "rmdir",
            };
            Some((what.into(), crate::files::op_path(op).map(str::to_string)))
        }
        Request::File(FileOp::Append { path, data }) => Some((
            "append".into(),
            Some(format!("{path}: {}", text_line(data))),
        )),
        Request::Stream(s) => Some(("ring_stream".into(), Some(format!("fd {}", s.fd)))),
        // Reads, but of the guest kernel's memory: worth a line each.
        Request::Collect(c) => Some((
            "collect".into(),
            Some(format!(
                "{} {}",
                collector_name(&c.collector),
                match c.mode {
                    telebpf_protocol::message::CollectMode::Roots => "roots",
                    telebpf_protocol::message::CollectMode::Page => "page",
                    telebpf_protocol::message::CollectMode::Data => "data",
                }
            )),
        )),
        _ => None,
    }
}

/// Whether a write to `uprobe_events` defines a uprobe with a reference
/// counter: a line `p[:EVENT] PATH:OFFSET(REF_CTR_OFFSET) …` (or `r…`),
/// as the kernel's `trace_uprobe_create` parses each line: `#` starts a
/// comment, words are split at the bytes the kernel's `isspace` knows
/// (its Latin-1 table counts 0xa0 too), the probe's place is the second
/// word and a `(` there opens the counter's offset (fetch arguments, later
/// words, may hold parentheses of their own).
fn defines_ref_ctr(data: &[u8]) -> bool {
    let space = |b: &u8| matches!(b, b'\t'..=b'\r' | b' ' | 0xa0);
    data.split(|&b| b == b'\n').any(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or(&[]);
        let mut words = line.split(space).filter(|w| !w.is_empty());
        matches!(words.next(), Some([b'p' | b'r', ..]))
            && words.next().is_some_and(|w| w.contains(&b'('))
    })
}

/// A probe definition as one printable line.
fn text_line(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end()
        .replace('\n', "\\n")
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

/// The type or path a command names, for messages and the audit log.
fn bpf_detail(call: &BpfCall) -> Option<String> {
    let a = &call.attr;
    match call.cmd & !cmd::BPF_COMMON_ATTRS {
        cmd::BPF_MAP_CREATE => Some(format!(
            "map type {}",
            type_name(map_type::NAMES, read_u32(a, off::map_create::MAP_TYPE))
        )),
        cmd::BPF_PROG_LOAD => Some(format!(
            "prog type {}",
            type_name(prog_type::NAMES, read_u32(a, off::prog_load::PROG_TYPE))
        )),
        cmd::BPF_PROG_ATTACH | cmd::BPF_PROG_DETACH => Some(format!(
            "attach type {}",
            type_name(attach_type::NAMES, read_u32(a, off::attach::ATTACH_TYPE))
        )),
        cmd::BPF_LINK_CREATE => Some(format!(
            "attach type {}",
            type_name(
                attach_type::NAMES,
                read_u32(a, off::link_create::ATTACH_TYPE)
            )
        )),
        cmd::BPF_OBJ_PIN | cmd::BPF_OBJ_GET => obj_path(call).map(|p| p.unwrap_or("?").into()),
        _ => None,
    }
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
            perf_events: true,
            probe_events: true,
            map_mmap_read: true,
            map_mmap_write: true,
            ring_streams: true,
            kernel_memory_read: true,
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

    /// `what` (a request naming a program of type `t`, e.g. one opened by
    /// id being attached) is allowed only for program types in
    /// `prog_types`.
    pub fn check_prog_type(&self, what: &str, t: u32) -> Result<(), Denied> {
        let name = type_name(prog_type::NAMES, t);
        allow(
            self.prog_types.contains(t),
            &format!("{what} of prog type {name}"),
            format!("'{name}' is not in prog_types"),
        )
    }

    /// `what` binding a program to attach type `t` is allowed only for
    /// attach types in `attach_types`.
    pub fn check_attach_type(&self, what: &str, t: u32) -> Result<(), Denied> {
        let name = type_name(attach_type::NAMES, t);
        allow(
            self.attach_types.contains(t),
            &format!("{what} with attach type {name}"),
            format!("'{name}' is not in attach_types"),
        )
    }

    /// Whether a program may call helper `id` (`[helpers]`, deny wins).
    pub fn check_helper(&self, id: u32) -> Result<(), Denied> {
        let what = format!(
            "BPF_PROG_LOAD of a program calling {}",
            helper::display_name(id)
        );
        let key = helper::short_name(id)
            .filter(|_| id != 0)
            .map_or_else(|| id.to_string(), str::to_string);
        if self.helpers.deny.contains(id) {
            return Err(Denied {
                what,
                rule: format!("'{key}' is in helpers.deny"),
            });
        }
        allow(
            self.helpers.allow.contains(id),
            &what,
            format!("'{key}' is not in helpers.allow"),
        )
    }

    /// Whether a program may call the kfunc named `name` (`[kfuncs]`, deny
    /// wins). `None`: its BTF id could not be resolved to a name (`id`
    /// describes it), which only a policy allowing every kfunc accepts.
    pub fn check_kfunc(&self, name: Option<&str>, id: &str) -> Result<(), Denied> {
        let Some(name) = name else {
            return allow(
                self.kfuncs.allow.all && self.kfuncs.deny.is_empty(),
                &format!("BPF_PROG_LOAD of a program calling a kfunc ({id})"),
                "its name cannot be found in the kernel's BTF, and not every kfunc is allowed"
                    .into(),
            );
        };
        let what = format!("BPF_PROG_LOAD of a program calling kfunc {name}");
        if let Some(entry) = self.kfuncs.deny.matching(name) {
            return Err(Denied {
                what,
                rule: format!("'{entry}' is in kfuncs.deny"),
            });
        }
        allow(
            self.kfuncs.allow.matching(name).is_some(),
            &what,
            format!("'{name}' is not in kfuncs.allow"),
        )
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

    /// The check for a request that reads kernel memory in bulk: the one
    /// call such a request's handler makes.
    pub fn check_kernel_memory_read(&self, what: &str) -> Result<(), Denied> {
        allow(
            self.kernel_memory_read,
            what,
            "kernel_memory_read is false".into(),
        )
    }

    /// Whether a request may run. Every request kind is classified here, so
    /// a new kind cannot slip past the policy unnoticed.
    pub fn check(&self, req: &Request) -> Result<(), Denied> {
        match req {
            Request::Bpf(call) => self.check_bpf(call),
            Request::PerfEventOpen { .. } => allow(
                self.perf_events,
                "perf_event_open",
                "perf_events is false".into(),
            ),
            Request::Ioctl { .. } => allow(
                self.perf_events,
                "perf event ioctl",
                "perf_events is false".into(),
            ),
            Request::MapSnapshot { .. } => allow(
                self.map_mmap_read,
                "reading a mapped map",
                "map_mmap_read is false".into(),
            ),
            Request::MapWrite { .. } => allow(
                self.map_mmap_write,
                "writing a mapped map",
                "map_mmap_write is false".into(),
            ),
            // A stream consumes a ring's records (they are gone for the
            // guest's own readers); its user-ring records follow only an
            // allowed stream request.
            Request::Stream(_) => allow(
                self.ring_streams,
                "consuming a ring on the host",
                "ring_streams is false".into(),
            ),
            Request::Records(_) => Ok(()),
            // The listing tells exactly what the three commands it stands
            // for would, one program at a time: the key needs all three.
            Request::Programs => {
                let lists = self.commands.contains(cmd::BPF_PROG_GET_NEXT_ID)
                    && self.commands.contains(cmd::BPF_PROG_GET_FD_BY_ID)
                    && self.commands.contains(cmd::BPF_OBJ_GET_INFO_BY_FD);
                allow(
                    lists,
                    "listing the guest's programs",
                    "it needs prog_get_next_id, prog_get_fd_by_id and obj_get_info_by_fd".into(),
                )
            }
            Request::Peek(_) => self.check_kernel_memory_read("reading kernel memory"),
            Request::Collect(c) => {
                self.check_kernel_memory_read("running a collector")?;
                if shipped_collector(&c.collector) {
                    return Ok(());
                }
                // Any other object is the client's own program, run by the
                // proxy with BPF_PROG_TEST_RUN: as a `syscall` program it
                // could even call bpf() from the kernel. Allowed only to
                // keys that may load and run exactly that.
                let loads = self.commands.contains(cmd::BPF_PROG_LOAD)
                    && self.commands.contains(cmd::BPF_PROG_TEST_RUN)
                    && self.prog_types.contains(prog_type::BPF_PROG_TYPE_SYSCALL);
                allow(
                    loads,
                    "running a collector the proxy does not ship",
                    "it needs prog_load, prog_test_run and prog type 'syscall'".into(),
                )
            }
            Request::File(op) => self.check_file(op),
            // Closing, iterator reads (the iterator was created under the
            // policy), and pings change nothing.
            Request::Close { .. } | Request::Read { .. } | Request::Ping(_) => Ok(()),
        }
    }

    /// The checks of a file request. In bpffs, the path rule comes first
    /// and nothing is looked up before it, so outside a key's allowed
    /// paths every operation answers the same whether or not the path
    /// exists; paths outside bpffs are the file allow-list's business
    /// (`crate::files`), which answers `EACCES` just as uniformly.
    fn check_file(&self, op: &FileOp) -> Result<(), Denied> {
        match op {
            FileOp::Mkdir { path, .. } => {
                if !paths::is_bpffs(path) {
                    return Ok(());
                }
                self.check_bpffs_path("mkdir in bpffs", path)?;
                // libbpf makes the parent directory of every pin and
                // ignores EEXIST: a directory that already exists is
                // created by nobody, so the guest may answer EEXIST as it
                // would (inside the allowed paths, where the key may stat
                // anyway; the race with a concurrent rmdir can only
                // recreate an empty directory there).
                // Looked up as the operation itself would resolve it (no
                // symlink on the way), so a planted link cannot make this
                // tell about a place outside bpffs.
                let exists = || {
                    crate::resolve::open(path, crate::resolve::Access::Path { follow: false })
                        .and_then(|fd| {
                            std::fs::File::from(fd)
                                .metadata()
                                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
                        })
                        .is_ok_and(|m| m.is_dir())
                };
                allow(
                    self.bpffs.mkdir || exists(),
                    "mkdir in bpffs",
                    "bpffs.mkdir is false".into(),
                )
            }
            FileOp::Unlink { path } | FileOp::Rmdir { path } => {
                if !paths::is_bpffs(path) {
                    return Ok(());
                }
                let what = if matches!(op, FileOp::Unlink { .. }) {
                    "unpinning (unlink in bpffs)"
                } else {
                    "rmdir in bpffs"
                };
                self.check_bpffs_path(what, path)?;
                allow(self.bpffs.unpin, what, "bpffs.unpin is false".into())
            }
            FileOp::Append { path, data } => {
                let file = path.rsplit('/').next().unwrap_or(path);
                allow(
                    self.probe_events,
                    &format!("writing {file}"),
                    "probe_events is false".into(),
                )?;
                if file == "uprobe_events" && defines_ref_ctr(data) {
                    // While such a uprobe is enabled the kernel increments
                    // the counter in every process that maps the file.
                    self.check_helper(helper::PROBE_WRITE_USER)
                        .map_err(|d| Denied {
                            what: "writing uprobe_events: a uprobe with a reference counter \
                                   (the kernel writes it into every process that maps the file)"
                                .into(),
                            rule: d.rule,
                        })?;
                }
                Ok(())
            }
            // Outside the allowed paths a bpffs statfs is answered for the
            // mount itself, never for the path (`crate::files`): the same
            // answer for every such path, existing or not, and what bpftool
            // needs to see before it pins (it statfs-es the pin's
            // directory, then its parent).
            FileOp::Statfs { .. } => Ok(()),
            FileOp::Read { path }
            | FileOp::ReadRange { path, .. }
            | FileOp::Stat { path, .. }
            | FileOp::Access { path, .. }
            | FileOp::Readlink { path }
            | FileOp::Digest { path }
            | FileOp::ReadDir { path } => {
                if !paths::is_bpffs(path) {
                    return Ok(());
                }
                let what = match op {
                    FileOp::Read { .. } | FileOp::ReadRange { .. } => "reading a file in bpffs",
                    FileOp::Stat { .. } => "stat in bpffs",
                    FileOp::Access { .. } => "access in bpffs",
                    FileOp::Readlink { .. } => "readlink in bpffs",
                    FileOp::Digest { .. } => "digest in bpffs",
                    _ => "reading a directory in bpffs",
                };
                self.check_bpffs_path(what, path)
            }
            FileOp::Fdinfo { .. } => Ok(()),
        }
    }

    /// Whether the bpffs file of `pin` may be read (its path already
    /// passed [`Policy::check`]): a map's file shows its entries, as
    /// `BPF_MAP_LOOKUP_ELEM` would; an iterator's runs the iterator
    /// program, as `BPF_ITER_CREATE` and a read of its fd would, so it
    /// needs `iter_create` and the iterator's attach type `trace_iter`.
    pub fn check_bpffs_read(&self, pin: crate::files::Pin) -> Result<(), Denied> {
        use crate::files::Pin;
        match pin {
            Pin::Map => allow(
                self.commands.contains(cmd::BPF_MAP_LOOKUP_ELEM),
                "reading a pinned map's file",
                "'map_lookup_elem' is not in commands".into(),
            ),
            Pin::Iterator => {
                allow(
                    self.commands.contains(cmd::BPF_ITER_CREATE),
                    "reading a pinned iterator",
                    "'iter_create' is not in commands".into(),
                )?;
                allow(
                    self.attach_types.contains(attach_type::BPF_TRACE_ITER),
                    "reading a pinned iterator",
                    "'trace_iter' is not in attach_types".into(),
                )
            }
            Pin::Other => Ok(()),
        }
    }

    /// Whether `[bpffs] paths` confines pins and opens of pins (it is not
    /// `["/"]`, which leaves them to the kernel).
    pub fn confines_bpffs(&self) -> bool {
        !self.bpffs.paths.iter().any(|p| p == Path::new("/"))
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

    /// [`Policy::allows_bpffs_path`] as a check: the refusal of `what`.
    fn check_bpffs_path(&self, what: &str, path: &str) -> Result<(), Denied> {
        if self.allows_bpffs_path(path) {
            return Ok(());
        }
        Err(Denied {
            what: format!("{what} outside the allowed paths"),
            rule: format!("{path:?} is not under bpffs.paths {:?}", self.bpffs.paths),
        })
    }

    /// The checks of one `bpf()` call: the command, then the type or path
    /// it names.
    pub fn check_bpf(&self, call: &BpfCall) -> Result<(), Denied> {
        let command = call.cmd & !cmd::BPF_COMMON_ATTRS;
        // Every forwarded call passes here: names are only made for a
        // refusal.
        let name = || command_name(call.cmd);
        if !self.commands.contains(command) {
            let key = cmd::short_name(command).map_or_else(|| command.to_string(), str::to_string);
            return Err(Denied {
                what: name(),
                rule: format!("'{key}' is not in commands"),
            });
        }
        let a = &call.attr;
        let typed = |set: &NumberSet, list: &str, kind: &str, names, v| {
            if set.contains(v) {
                return Ok(());
            }
            let t = type_name(names, v);
            Err(Denied {
                what: format!("{} of {kind} {t}", name()),
                rule: format!("'{t}' is not in {list}"),
            })
        };
        match command {
            cmd::BPF_MAP_CREATE => typed(
                &self.map_types,
                "map_types",
                "map type",
                map_type::NAMES,
                read_u32(a, off::map_create::MAP_TYPE),
            ),
            cmd::BPF_PROG_LOAD => {
                let t = read_u32(a, off::prog_load::PROG_TYPE);
                typed(
                    &self.prog_types,
                    "prog_types",
                    "prog type",
                    prog_type::NAMES,
                    t,
                )?;
                // The attach type the program is bound to from its load on
                // (fmod_ret, LSM, cgroup hooks, ...): what raw tracepoint
                // open and link creation later attach it as.
                let eat = read_u32(a, off::prog_load::EXPECTED_ATTACH_TYPE);
                match attach_type::bound_at_load(t, eat) {
                    Some(at) => self.check_attach_type(&name(), at).map_err(|mut d| {
                        d.what = format!(
                            "{} of prog type {} with expected attach type {}",
                            name(),
                            type_name(prog_type::NAMES, t),
                            type_name(attach_type::NAMES, at)
                        );
                        d
                    }),
                    None => Ok(()),
                }
            }
            cmd::BPF_PROG_ATTACH | cmd::BPF_PROG_DETACH => typed(
                &self.attach_types,
                "attach_types",
                "attach type",
                attach_type::NAMES,
                read_u32(a, off::attach::ATTACH_TYPE),
            ),
            cmd::BPF_LINK_CREATE => typed(
                &self.attach_types,
                "attach_types",
                "attach type",
                attach_type::NAMES,
                read_u32(a, off::link_create::ATTACH_TYPE),
            ),
            cmd::BPF_OBJ_PIN | cmd::BPF_OBJ_GET => {
                if !self.confines_bpffs() {
                    // Unrestricted: the kernel decides, as locally.
                    return Ok(());
                }
                // A path relative to a directory fd cannot be checked here.
                let relative =
                    read_u32(a, off::obj::FILE_FLAGS) & telebpf_abi::flags::BPF_F_PATH_FD != 0;
                match obj_path(call) {
                    Some(Some(path)) if !relative => self.check_bpffs_path(&name(), path),
                    _ => Err(Denied {
                        what: format!("{} outside the allowed paths", name()),
                        rule: "the path cannot be checked against bpffs.paths".into(),
                    }),
                }
            }
            _ => Ok(()),
        }
    }

    /// Parses a policy file's text; `path` names it in errors and is the
    /// base of relative paths.
    pub fn parse_file(text: &str, path: &Path) -> Result<PolicyFile, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let mut bpffs_paths = Vec::new();
        for p in &raw.bpffs.paths {
            if !paths::is_clean(p) {
                return Err(PolicyError::BadPath {
                    path: path.to_path_buf(),
                    given: p.clone(),
                });
            }
            bpffs_paths.push(PathBuf::from(p));
        }
        let name = raw.name.clone().unwrap_or_else(|| {
            path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into(),
            )
        });
        let rules = Arc::new(Policy {
            name,
            commands: COMMANDS.set(&raw.commands, path)?,
            prog_types: PROG_TYPES.set(&raw.prog_types, path)?,
            map_types: MAP_TYPES.set(&raw.map_types, path)?,
            attach_types: ATTACH_TYPES.set(&raw.attach_types, path)?,
            bpffs: Bpffs {
                paths: bpffs_paths,
                mkdir: raw.bpffs.mkdir,
                unpin: raw.bpffs.unpin,
            },
            perf_events: raw.perf_events,
            probe_events: raw.probe_events,
            map_mmap_read: raw.map_mmap_read,
            map_mmap_write: raw.map_mmap_write,
            ring_streams: raw.ring_streams,
            kernel_memory_read: raw.kernel_memory_read,
            helpers: HelperRule {
                allow: helper_set(&raw.helpers.allow, "helpers.allow", path)?,
                deny: helper_set(&raw.helpers.deny, "helpers.deny", path)?,
            },
            kfuncs: KfuncRule {
                allow: kfunc_set(&raw.kfuncs.allow, "allow", path)?,
                deny: kfunc_set(&raw.kfuncs.deny, "deny", path)?,
            },
            change_foreign_objects: raw.change_foreign_objects,
        });
        let base = path.parent().unwrap_or(Path::new("."));
        let mut keys = Vec::new();
        for k in raw.keys {
            let policy = match k.policy.as_deref() {
                None | Some("self") => rules.clone(),
                Some(other) => {
                    let included = resolve(other, base)?;
                    if !included.keys.is_empty() {
                        return Err(PolicyError::NestedKeys {
                            path: PathBuf::from(other),
                            parent: path.to_path_buf(),
                        });
                    }
                    included.rules
                }
            };
            keys.push(KeyEntry {
                file: base.join(&k.file),
                name: k.name,
                policy,
            });
        }
        Ok(PolicyFile { rules, keys })
    }
}

/// Loads the policy `spec` names: `full`, a built-in profile name
/// (`read-only`, `tracing`, `observe`), or — anything with a `/` or ending in
/// `.toml` — a file, relative to `base`.
pub fn resolve(spec: &str, base: &Path) -> Result<PolicyFile, PolicyError> {
    if spec == FULL {
        return Ok(PolicyFile {
            rules: Arc::new(Policy::full()),
            keys: Vec::new(),
        });
    }
    if !spec.contains('/') && !spec.ends_with(".toml") {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == spec) {
            return Policy::parse_file(text, Path::new(&format!("(built-in) {name}")));
        }
    }
    let path = base.join(spec);
    let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
        path: path.clone(),
        source,
    })?;
    Policy::parse_file(&text, &path)
}

/// A collector's name if this proxy was built with it, else the start of
/// its id (hex).
fn collector_name(id: &[u8; 32]) -> String {
    telebpf_collectors::Collector::ALL
        .into_iter()
        .find(|c| c.id() == *id)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| id[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` names one of the collectors this proxy was built with.
fn shipped_collector(id: &[u8; 32]) -> bool {
    static IDS: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        telebpf_collectors::Collector::ALL
            .iter()
            .map(|c| c.id())
            .collect()
    })
    .contains(id)
}

fn allow(allowed: bool, what: &str, rule: String) -> Result<(), Denied> {
    if allowed {
        Ok(())
    } else {
        Err(Denied {
            what: what.to_string(),
            rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use telebpf_protocol::message::{IoctlValue, StreamKind, StreamRequest};

    use super::*;

    fn parse(text: &str) -> Result<PolicyFile, PolicyError> {
        Policy::parse_file(text, Path::new("/etc/telebpf/test.toml"))
    }

    fn bpf(command: u32, fields: &[(usize, u32)], buffers: Vec<WireBuffer>) -> Request {
        let mut attr = vec![0u8; 128];
        for &(off, v) in fields {
            telebpf_abi::write_u32(&mut attr, off, v);
        }
        Request::Bpf(BpfCall {
            cmd: command,
            size: attr.len() as u32,
            attr,
            common: None,
            common_size: 0,
            buffers,
        })
    }

    fn path_buf(p: &str) -> Vec<WireBuffer> {
        let mut v = p.as_bytes().to_vec();
        v.push(0);
        vec![WireBuffer::Data(v)]
    }

    #[test]
    fn uprobe_definitions_with_a_reference_counter() {
        for with in [
            &b"p:g/e /bin/x:0x10(0x20)"[..],
            b"  r /bin/x:0x10(0x20) +0(%di):u32",
            b"p:a /bin/y:0x1\np:g/e /bin/x:0x10(0x20)\n",
            // Words split where the kernel's isspace splits them.
            b"p\xa0/bin/x:0x10(0x20)",
            b"p\x0b/bin/x:0x10(0x20)",
        ] {
            assert!(defines_ref_ctr(with), "{:?}", String::from_utf8_lossy(with));
        }
        for without in [
            &b"p:g/e /bin/x:0x10 +0(%di):u32"[..],
            b"-:g/e",
            b"# p /bin/x:0x10(0x20)",
            b"p /bin/x:0x10 # (0x20)",
            b"",
        ] {
            assert!(
                !defines_ref_ctr(without),
                "{:?}",
                String::from_utf8_lossy(without)
            );
        }
    }

    fn read_only() -> Arc<Policy> {
        resolve("read-only", Path::new("/")).unwrap().rules
    }

    fn tracing() -> Arc<Policy> {
        resolve("tracing", Path::new("/")).unwrap().rules
    }

    #[test]
    fn empty_file_refuses_all_but_kernel_files() {
        let p = parse("").unwrap().rules;
        assert_eq!(p.name(), "test");
        let d = p
            .check(&bpf(cmd::BPF_MAP_LOOKUP_ELEM, &[], vec![]))
            .unwrap_err();
        assert_eq!(d.what, "BPF_MAP_LOOKUP_ELEM");
        assert_eq!(d.rule, "'map_lookup_elem' is not in commands");
        assert!(p
            .check(&Request::File(FileOp::Read {
                path: "/sys/kernel/btf/vmlinux".into()
            }))
            .is_ok());
        assert!(p.check(&Request::Ping(vec![])).is_ok());
        assert!(p.check(&Request::Close { fd: 3 }).is_ok());
        assert!(!p.allows_kernel_memory_read());
        assert!(p.check_kernel_memory_read("Collect").is_err());
    }

    #[test]
    fn full_allows_everything() {
        let p = Policy::full();
        for c in 0..=40 {
            assert!(p.check(&bpf(c, &[], vec![])).is_ok(), "{c}");
        }
        assert!(p
            .check(&bpf(cmd::BPF_OBJ_PIN, &[], path_buf("/anywhere")))
            .is_ok());
        assert!(p.allows_kernel_memory_read());
        assert!(p
            .check(&Request::File(FileOp::Unlink {
                path: "/sys/fs/bpf/x".into()
            }))
            .is_ok());
    }

    #[test]
    fn read_only_lists_and_looks_up_but_changes_nothing() {
        let p = read_only();
        assert_eq!(p.name(), "read-only");
        for ok in [
            cmd::BPF_PROG_GET_NEXT_ID,
            cmd::BPF_MAP_GET_NEXT_ID,
            cmd::BPF_LINK_GET_NEXT_ID,
            cmd::BPF_BTF_GET_NEXT_ID,
            cmd::BPF_PROG_GET_FD_BY_ID,
            cmd::BPF_MAP_GET_FD_BY_ID,
            cmd::BPF_BTF_GET_FD_BY_ID,
            cmd::BPF_LINK_GET_FD_BY_ID,
            cmd::BPF_OBJ_GET_INFO_BY_FD,
            cmd::BPF_MAP_LOOKUP_ELEM,
            cmd::BPF_MAP_GET_NEXT_KEY,
            cmd::BPF_MAP_LOOKUP_BATCH,
        ] {
            assert!(p.check(&bpf(ok, &[], vec![])).is_ok(), "{}", cmd::name(ok));
        }
        for no in [
            cmd::BPF_PROG_LOAD,
            cmd::BPF_MAP_CREATE,
            cmd::BPF_MAP_UPDATE_ELEM,
            cmd::BPF_MAP_DELETE_ELEM,
            cmd::BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            cmd::BPF_OBJ_PIN,
            cmd::BPF_PROG_ATTACH,
            cmd::BPF_LINK_CREATE,
            cmd::BPF_RAW_TRACEPOINT_OPEN,
            cmd::BPF_BTF_LOAD,
            cmd::BPF_PROG_TEST_RUN,
            cmd::BPF_ENABLE_STATS,
            cmd::BPF_TOKEN_CREATE,
            99,
        ] {
            assert!(p.check(&bpf(no, &[], vec![])).is_err(), "{}", cmd::name(no));
        }
        for no in [
            Request::PerfEventOpen {
                attr: vec![0; 128],
                pid: -1,
                cpu: 0,
                group_fd: -1,
                flags: 0,
                config1_string: None,
            },
            Request::Ioctl {
                fd: 3,
                cmd: 0x2400,
                arg: IoctlValue::Value(0),
            },
            Request::MapWrite {
                fd: 3,
                offset: 0,
                data: vec![1],
            },
            Request::Stream(StreamRequest {
                session: [0; 16],
                fd: 3,
                kind: StreamKind::Ringbuf { max_entries: 4096 },
            }),
            Request::File(FileOp::Append {
                path: "/sys/kernel/tracing/kprobe_events".into(),
                data: b"p:x do_sys_open".to_vec(),
            }),
            Request::File(FileOp::Unlink {
                path: "/sys/fs/bpf/x".into(),
            }),
            Request::File(FileOp::Mkdir {
                path: "/sys/fs/bpf/x".into(),
                mode: 0o700,
            }),
        ] {
            assert!(p.check(&no).is_err(), "{no:?}");
        }
        // Pinned objects can be opened, under bpffs only.
        assert!(p
            .check(&bpf(cmd::BPF_OBJ_GET, &[], path_buf("/sys/fs/bpf/x")))
            .is_ok());
        let d = p
            .check(&bpf(cmd::BPF_OBJ_GET, &[], path_buf("/tmp/x")))
            .unwrap_err();
        assert_eq!(d.what, "BPF_OBJ_GET outside the allowed paths");
        assert!(p
            .check(&bpf(cmd::BPF_OBJ_GET, &[], path_buf("/sys/fs/bpf/../x")))
            .is_err());
        assert!(p
            .check(&bpf(cmd::BPF_OBJ_GET, &[], path_buf("/sys/fs/bpfx/y")))
            .is_err());
        // With BPF_F_PATH_FD the path is relative to an fd: not checkable.
        assert!(p
            .check(&bpf(
                cmd::BPF_OBJ_GET,
                &[(off::obj::FILE_FLAGS, telebpf_abi::flags::BPF_F_PATH_FD)],
                path_buf("/sys/fs/bpf/x")
            ))
            .is_err());
        assert!(!p.allows_kernel_memory_read());
    }

    #[test]
    fn tracing_loads_tracing_programs_only() {
        let p = tracing();
        let load = |t| {
            bpf(
                cmd::BPF_PROG_LOAD,
                &[(off::prog_load::PROG_TYPE, t)],
                vec![],
            )
        };
        for t in [
            prog_type::BPF_PROG_TYPE_TRACEPOINT,
            prog_type::BPF_PROG_TYPE_KPROBE,
            prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT,
            prog_type::BPF_PROG_TYPE_PERF_EVENT,
        ] {
            assert!(p.check(&load(t)).is_ok(), "{t}");
        }
        // Tracing programs are bound to their expected attach type at load.
        let tracing = |eat| {
            bpf(
                cmd::BPF_PROG_LOAD,
                &[
                    (off::prog_load::PROG_TYPE, prog_type::BPF_PROG_TYPE_TRACING),
                    (off::prog_load::EXPECTED_ATTACH_TYPE, eat),
                ],
                vec![],
            )
        };
        assert!(p.check(&tracing(attach_type::BPF_TRACE_FENTRY)).is_ok());
        assert!(p.check(&tracing(attach_type::BPF_TRACE_ITER)).is_ok());
        let d = p
            .check(&tracing(attach_type::BPF_MODIFY_RETURN))
            .unwrap_err();
        assert_eq!(
            d.what,
            "BPF_PROG_LOAD of prog type tracing with expected attach type modify_return"
        );
        assert_eq!(d.rule, "'modify_return' is not in attach_types");
        // A tracepoint program's expected attach type means nothing.
        assert!(p
            .check(&bpf(
                cmd::BPF_PROG_LOAD,
                &[
                    (
                        off::prog_load::PROG_TYPE,
                        prog_type::BPF_PROG_TYPE_TRACEPOINT
                    ),
                    (
                        off::prog_load::EXPECTED_ATTACH_TYPE,
                        attach_type::BPF_MODIFY_RETURN
                    ),
                ],
                vec![],
            ))
            .is_ok());
        assert!(!p.changes_foreign_objects());
        let d = p.check(&load(prog_type::BPF_PROG_TYPE_XDP)).unwrap_err();
        assert_eq!(d.what, "BPF_PROG_LOAD of prog type xdp");
        assert_eq!(d.rule, "'xdp' is not in prog_types");
        let link = |t| {
            bpf(
                cmd::BPF_LINK_CREATE,
                &[(off::link_create::ATTACH_TYPE, t)],
                vec![],
            )
        };
        assert!(p.check(&link(attach_type::BPF_PERF_EVENT)).is_ok());
        assert!(p.check(&link(attach_type::BPF_TRACE_FENTRY)).is_ok());
        assert!(p
            .check(&link(attach_type::BPF_CGROUP_INET_INGRESS))
            .is_err());
        let map = |t| {
            bpf(
                cmd::BPF_MAP_CREATE,
                &[(off::map_create::MAP_TYPE, t)],
                vec![],
            )
        };
        assert!(p.check(&map(map_type::BPF_MAP_TYPE_RINGBUF)).is_ok());
        assert!(p.check(&map(map_type::BPF_MAP_TYPE_SOCKMAP)).is_err());
        assert!(p
            .check(&bpf(cmd::BPF_OBJ_PIN, &[], path_buf("/sys/fs/bpf/x")))
            .is_err());
        // Its programs read kernel memory anyway (see the profile).
        assert!(p.allows_kernel_memory_read());
    }

    #[test]
    fn helper_and_kfunc_rules() {
        let p = tracing();
        assert!(!p.allows_every_call());
        assert!(p.check_helper(1).is_ok(), "map_lookup_elem");
        let d = p.check_helper(36).unwrap_err();
        assert_eq!(
            d.what,
            "BPF_PROG_LOAD of a program calling bpf_probe_write_user"
        );
        assert_eq!(d.rule, "'probe_write_user' is in helpers.deny");
        for denied in [
            "send_signal",
            "send_signal_thread",
            "override_return",
            "sys_bpf",
        ] {
            let id = helper::by_name(denied).unwrap();
            assert!(p.check_helper(id).is_err(), "{denied}");
        }
        // Helpers newer than this build: allowed by "*" unless denied.
        assert!(p.check_helper(500).is_ok());
        assert!(p.check_kfunc(Some("bpf_rcu_read_lock"), "").is_ok());
        let d = p.check_kfunc(Some("crash_kexec"), "").unwrap_err();
        assert_eq!(
            d.what,
            "BPF_PROG_LOAD of a program calling kfunc crash_kexec"
        );
        assert_eq!(d.rule, "'crash_kexec' is in kfuncs.deny");
        let d = p.check_kfunc(Some("scx_bpf_kick_cpu"), "").unwrap_err();
        assert_eq!(d.rule, "'scx_bpf_*' is in kfuncs.deny");
        // A kfunc without a name: only "every kfunc" accepts it.
        assert!(p.check_kfunc(None, "BTF id 7 of the kernel").is_err());
        assert!(Policy::full().check_kfunc(None, "x").is_ok());
        assert!(Policy::full().allows_every_call());
        assert!(Policy::full().changes_foreign_objects());

        // observe: tracing's denials and more.
        let o = resolve("observe", Path::new("/")).unwrap().rules;
        assert_eq!(o.name(), "observe");
        for denied in ["trace_printk", "trace_vprintk", "probe_write_user"] {
            assert!(o.check_helper(helper::by_name(denied).unwrap()).is_err());
        }
        assert!(p
            .check_helper(helper::by_name("trace_printk").unwrap())
            .is_ok());
        assert!(o
            .check_kfunc(Some("bpf_task_work_schedule_signal_impl"), "")
            .is_err());
        assert!(!o.changes_foreign_objects());
        assert!(o
            .check(&Request::File(FileOp::Append {
                path: "/sys/kernel/tracing/kprobe_events".into(),
                data: b"p:x do_sys_open".to_vec(),
            }))
            .is_err());

        // A file's own rules: allow lists, deny winning, prefixes, numbers.
        let f = parse(
            "[helpers]\nallow = [\"map_lookup_elem\", \"bpf_ktime_get_ns\", 6]\n\
             deny = [6]\n[kfuncs]\nallow = [\"bpf_iter_*\"]\n",
        )
        .unwrap()
        .rules;
        assert!(f.check_helper(1).is_ok());
        assert!(f.check_helper(5).is_ok());
        assert_eq!(
            f.check_helper(6).unwrap_err().rule,
            "'trace_printk' is in helpers.deny"
        );
        assert_eq!(
            f.check_helper(2).unwrap_err().rule,
            "'map_update_elem' is not in helpers.allow"
        );
        assert!(f.check_kfunc(Some("bpf_iter_num_new"), "").is_ok());
        assert!(f.check_kfunc(Some("bpf_obj_new_impl"), "").is_err());
        // No [helpers]: nothing may be called (a missing list is empty).
        let none = parse("").unwrap().rules;
        assert!(none.check_helper(1).is_err());
        assert!(!none.changes_foreign_objects());
    }

    #[test]
    fn keys_numbers_wildcards_and_paths() {
        let f = parse(
            r#"
            name = "ops"
            commands = ["obj_pin", "prog_load", 36]
            prog_types = ["*"]
            [bpffs]
            paths = ["/sys/fs/bpf/ops"]
            mkdir = true
            [[key]]
            file = "monitor.key"
            name = "monitor"
            policy = "read-only"
            [[key]]
            file = "/k/tool.key"
            policy = "full"
            [[key]]
            file = "ops.key"
            "#,
        )
        .unwrap();
        let p = &f.rules;
        assert_eq!(p.name(), "ops");
        assert!(p.check(&bpf(36, &[], vec![])).is_ok());
        assert!(p
            .check(&bpf(
                cmd::BPF_PROG_LOAD,
                &[(off::prog_load::PROG_TYPE, 200)],
                vec![]
            ))
            .is_ok());
        let pin = |path| bpf(cmd::BPF_OBJ_PIN, &[], path_buf(path));
        assert!(p.check(&pin("/sys/fs/bpf/ops")).is_ok());
        assert!(p.check(&pin("/sys/fs/bpf/ops/a/b")).is_ok());
        assert!(p.check(&pin("/sys/fs/bpf/opsx")).is_err());
        assert!(p.check(&pin("/sys/fs/bpf/other")).is_err());
        let mkdir = |path: &str| {
            Request::File(FileOp::Mkdir {
                path: path.into(),
                mode: 0o700,
            })
        };
        assert!(p.check(&mkdir("/sys/fs/bpf/ops/d")).is_ok());
        assert!(p.check(&mkdir("/sys/fs/bpf/d")).is_err());
        assert_eq!(f.keys.len(), 3);
        assert_eq!(f.keys[0].file, Path::new("/etc/telebpf/monitor.key"));
        assert_eq!(f.keys[0].name.as_deref(), Some("monitor"));
        assert_eq!(f.keys[0].policy.name(), "read-only");
        assert_eq!(f.keys[1].file, Path::new("/k/tool.key"));
        assert_eq!(*f.keys[1].policy, Policy::full());
        assert!(Arc::ptr_eq(&f.keys[2].policy, &f.rules));
    }

    /// Every bpffs file operation obeys `[bpffs] paths`, and outside them
    /// an existing and a missing path get the same refusal; reading a
    /// pinned file needs what reading the object needs.
    #[test]
    fn bpffs_files_follow_the_paths_and_the_commands() {
        use crate::files::Pin;
        let p =
            parse("commands = [\"map_lookup_elem\"]\n[bpffs]\npaths = [\"/sys/fs/bpf/mine\"]\n")
                .unwrap()
                .rules;
        let ops = |path: &str| {
            let path = path.to_string();
            vec![
                FileOp::Read { path: path.clone() },
                FileOp::ReadRange {
                    path: path.clone(),
                    offset: 0,
                    len: 10,
                    snapshot: 0,
                },
                FileOp::Stat {
                    path: path.clone(),
                    follow: false,
                },
                FileOp::Statfs { path: path.clone() },
                FileOp::Access {
                    path: path.clone(),
                    mode: 0,
                },
                FileOp::Readlink { path: path.clone() },
                FileOp::Digest { path: path.clone() },
                FileOp::Mkdir {
                    path: path.clone(),
                    mode: 0o700,
                },
                FileOp::Unlink { path: path.clone() },
                FileOp::Rmdir { path },
            ]
        };
        for op in ops("/sys/fs/bpf/mine/x") {
            let allowed = p.check(&Request::File(op.clone()));
            match op {
                FileOp::Mkdir { .. } => {
                    assert_eq!(allowed.unwrap_err().rule, "bpffs.mkdir is false")
                }
                FileOp::Unlink { .. } | FileOp::Rmdir { .. } => {
                    assert_eq!(allowed.unwrap_err().rule, "bpffs.unpin is false")
                }
                _ => assert!(allowed.is_ok(), "{op:?}"),
            }
        }
        // `/sys/fs/bpf` exists, `/sys/fs/bpf/tbnowhere…` does not: the
        // same answer, the path aside.
        let missing = "/sys/fs/bpf/tbnowhere/x";
        for (a, b) in ops("/sys/fs/bpf").into_iter().zip(ops(missing)) {
            if matches!(a, FileOp::Statfs { .. }) {
                // Answered for the mount, not the path (crate::files).
                assert!(p.check(&Request::File(a)).is_ok());
                assert!(p.check(&Request::File(b)).is_ok());
                assert!(!p.allows_bpffs_path(missing));
                continue;
            }
            let a = p.check(&Request::File(a)).unwrap_err();
            let b = p.check(&Request::File(b)).unwrap_err();
            assert!(a.what.ends_with("outside the allowed paths"), "{a:?}");
            assert_eq!(a.what, b.what);
            assert_eq!(
                a.rule.replace("\"/sys/fs/bpf\"", "P"),
                b.rule.replace(&format!("{missing:?}"), "P")
            );
        }
        // Outside bpffs the allow-list answers (EACCES), whatever exists.
        for op in ops("/etc").into_iter().chain(ops("/tbnowhere")) {
            assert!(p.check(&Request::File(op)).is_ok());
        }
        assert!(p.check_bpffs_read(Pin::Map).is_ok());
        assert!(p.check_bpffs_read(Pin::Other).is_ok());
        let d = p.check_bpffs_read(Pin::Iterator).unwrap_err();
        assert_eq!(d.rule, "'iter_create' is not in commands");
        let iter = parse("commands = [\"iter_create\"]\nattach_types = [\"trace_iter\"]\n")
            .unwrap()
            .rules;
        assert!(iter.check_bpffs_read(Pin::Iterator).is_ok());
        assert_eq!(
            iter.check_bpffs_read(Pin::Map).unwrap_err().rule,
            "'map_lookup_elem' is not in commands"
        );
        let no_attach = parse("commands = [\"iter_create\"]\n").unwrap().rules;
        assert_eq!(
            no_attach.check_bpffs_read(Pin::Iterator).unwrap_err().rule,
            "'trace_iter' is not in attach_types"
        );
        for pin in [Pin::Map, Pin::Iterator, Pin::Other] {
            assert!(Policy::full().check_bpffs_read(pin).is_ok());
        }
    }

    #[test]
    fn mistakes_are_errors() {
        let e = parse("commands = [\"prog_lod\"]").unwrap_err();
        assert!(matches!(e, PolicyError::UnknownName { .. }));
        assert!(e
            .to_string()
            .contains("\"prog_lod\", which is no bpf command"));
        assert!(matches!(
            parse("comands = []").unwrap_err(),
            PolicyError::Parse { .. }
        ));
        assert!(matches!(
            parse("map_types = [\"ring_buffer\"]").unwrap_err(),
            PolicyError::UnknownName { .. }
        ));
        assert!(matches!(
            parse("[bpffs]\npaths = [\"sys/fs/bpf\"]").unwrap_err(),
            PolicyError::BadPath { .. }
        ));
        assert!(matches!(
            parse("[bpffs]\npaths = [\"/sys/fs/bpf/../..\"]").unwrap_err(),
            PolicyError::BadPath { .. }
        ));
        assert!(matches!(
            parse("[[key]]\nfile = \"a\"\npolicy = \"/nonexistent/p.toml\"").unwrap_err(),
            PolicyError::Read { .. }
        ));
        assert!(matches!(
            parse("perf_events = \"yes\"").unwrap_err(),
            PolicyError::Parse { .. }
        ));
        let e = parse("[helpers]\ndeny = [\"probe_write_usr\"]").unwrap_err();
        assert!(e
            .to_string()
            .contains("\"probe_write_usr\", which is no helper"));
        assert!(matches!(
            parse("[kfuncs]\ndeny = [17]").unwrap_err(),
            PolicyError::BadKfunc { .. }
        ));
        assert!(matches!(
            parse("[kfuncs]\ndeny = [\"a b\"]").unwrap_err(),
            PolicyError::BadKfunc { .. }
        ));
        assert!(matches!(
            parse("[helpers]\nallowed = []").unwrap_err(),
            PolicyError::Parse { .. }
        ));
    }

    #[test]
    fn kernel_memory_reads_and_collectors() {
        use telebpf_collectors::Collector;
        use telebpf_protocol::message::{CollectMode, CollectRequest, Start};

        let collect = |id| {
            Request::Collect(CollectRequest {
                collector: id,
                object: None,
                mode: CollectMode::Data,
                start: Start::Current,
                base: None,
            })
        };
        let shipped = collect(Collector::Processes.id());
        let foreign = collect([7; 32]);
        let peek = Request::Peek(Vec::new());
        let ro = read_only();
        for r in [&shipped, &foreign, &peek] {
            let d = ro.check(r).unwrap_err();
            assert_eq!(d.rule, "kernel_memory_read is false");
        }
        let tr = tracing();
        assert!(tr.check(&shipped).is_ok());
        assert!(tr.check(&peek).is_ok());
        let d = tr.check(&foreign).unwrap_err();
        assert_eq!(d.what, "running a collector the proxy does not ship");
        let full = Policy::full();
        for r in [&shipped, &foreign, &peek] {
            assert!(full.check(r).is_ok());
        }
    }

    #[test]
    fn audit_classification() {
        assert!(audited(&bpf(cmd::BPF_PROG_LOAD, &[], vec![])).is_some());
        assert!(audited(&bpf(cmd::BPF_MAP_UPDATE_ELEM, &[], vec![])).is_some());
        assert!(audited(&bpf(cmd::BPF_MAP_LOOKUP_ELEM, &[], vec![])).is_none());
        assert!(audited(&bpf(cmd::BPF_PROG_GET_NEXT_ID, &[], vec![])).is_none());
        assert!(audited(&bpf(99, &[], vec![])).is_some());
        let (op, detail) = audited(&bpf(
            cmd::BPF_MAP_CREATE,
            &[(off::map_create::MAP_TYPE, map_type::BPF_MAP_TYPE_RINGBUF)],
            vec![],
        ))
        .unwrap();
        assert_eq!(op, "BPF_MAP_CREATE");
        assert_eq!(detail.as_deref(), Some("map type ringbuf"));
        assert!(audited(&Request::Ping(vec![])).is_none());
    }
}
