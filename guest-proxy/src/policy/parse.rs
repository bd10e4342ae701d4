//! Policy files: TOML (or a built-in profile's name) into a [`Policy`].
//!
//! Unknown keys, names this build does not know and unclean bpffs paths are
//! errors ([`PolicyError`]), so a typo can neither allow nor refuse
//! something silently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use telebpf_abi::{attach_type, cmd, helper, map_type, prog_type};
use telebpf_protocol::paths;

use super::{Bpffs, HelperRule, KeyEntry, KfuncRule, NameSet, NumberSet, Policy, PolicyFile, FULL};

/// The profiles shipped in `policies/`, compiled in so that a `[[key]]`
/// entry (or `--policy`) can name them without a path.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "read-only",
        include_str!("../../../policies/read-only.toml"),
    ),
    ("tracing", include_str!("../../../policies/tracing.toml")),
    ("observe", include_str!("../../../policies/observe.toml")),
    ("monitor", include_str!("../../../policies/monitor.toml")),
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
    /// A bpffs or cgroup path is not absolute and clean.
    #[error("policy {path}: path {given:?} must be absolute, without '.' or '..'")]
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

/// One entry of a list: a name, `"*"`, or a bare number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Item {
    Name(String),
    Number(u32),
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
    cgroup: RawCgroup,
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
    netlink: bool,
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

/// `[cgroup]`: without it, every cgroup under `/sys/fs/cgroup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCgroup {
    #[serde(default = "default_cgroup_paths")]
    paths: Vec<String>,
}

impl Default for RawCgroup {
    fn default() -> RawCgroup {
        RawCgroup {
            paths: default_cgroup_paths(),
        }
    }
}

fn default_cgroup_paths() -> Vec<String> {
    vec!["/sys/fs/cgroup".to_string()]
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

impl Policy {
    /// Parses a policy file's text; `path` names it in errors and is the
    /// base of relative paths.
    pub fn parse_file(text: &str, path: &Path) -> Result<PolicyFile, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let clean = |list: &[String]| {
            list.iter()
                .map(|p| {
                    if paths::is_clean(p) {
                        Ok(PathBuf::from(p))
                    } else {
                        Err(PolicyError::BadPath {
                            path: path.to_path_buf(),
                            given: p.clone(),
                        })
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let bpffs_paths = clean(&raw.bpffs.paths)?;
        let cgroup_paths = clean(&raw.cgroup.paths)?;
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
            cgroup_paths,
            perf_events: raw.perf_events,
            probe_events: raw.probe_events,
            map_mmap_read: raw.map_mmap_read,
            map_mmap_write: raw.map_mmap_write,
            ring_streams: raw.ring_streams,
            kernel_memory_read: raw.kernel_memory_read,
            netlink: raw.netlink,
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

#[cfg(test)]
mod tests {
    use telebpf_abi::{cmd, off};
    use telebpf_protocol::message::{FileOp, Request};

    use super::*;
    use crate::policy::testing::*;

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
            parse("[cgroup]\npaths = [\"/sys/fs/cgroup/..\"]").unwrap_err(),
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
}
