//! Whether a request may run under a [`Policy`].
//!
//! [`Policy::check`] classifies every request kind, so a new kind cannot
//! slip past the policy unnoticed; the finer checks (a program's helper
//! and kfunc calls, an attach type, a bpffs path) are methods the guard
//! ([`crate::guard`], [`crate::progcheck`]) calls once it knows what a
//! request names. A refusal is a [`Denied`]: what was refused and which
//! rule says no.

use telebpf_abi::{attach_type, cmd, helper, map_type, off, prog_type, read_u32};
use telebpf_protocol::message::{BpfCall, CgroupOp, FileOp, Request};
use telebpf_protocol::paths;

use super::{command_name, obj_path, type_name, Denied, NumberSet, Policy};

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

impl Policy {
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
            // An interface's attachments are nobody's own: a relayed
            // socket can detach or replace the guest's XDP and tc
            // programs, so it needs change_foreign_objects too.
            Request::Netlink(_) => {
                allow(
                    self.netlink,
                    "a NETLINK_ROUTE socket",
                    "netlink is false".into(),
                )?;
                allow(
                    self.change_foreign_objects,
                    "a NETLINK_ROUTE socket",
                    "netlink needs change_foreign_objects: an interface's programs are not the \
                     key's own"
                        .into(),
                )
            }
            // A name and its index are what any guest user reads in
            // /sys/class/net: answered for every key.
            Request::Interface(_) => Ok(()),
            Request::Cgroup(op) => self.check_cgroup(op),
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

    /// The checks of a cgroup request: its path against `[cgroup] paths`
    /// (the mount lines are always answered: they describe the guest as
    /// `/proc/mounts` does, and name no cgroup).
    fn check_cgroup(&self, op: &CgroupOp) -> Result<(), Denied> {
        let (what, path) = match op {
            CgroupOp::Mounts => return Ok(()),
            CgroupOp::Open { path } => ("opening a cgroup", path),
            CgroupOp::List { path } => ("listing a cgroup", path),
            CgroupOp::Stat { path } => ("stat of a cgroup", path),
            CgroupOp::Handle { path } => ("the file handle of a cgroup", path),
        };
        if self.allows_cgroup_path(path) {
            return Ok(());
        }
        Err(Denied {
            what: format!("{what} outside the allowed paths"),
            rule: format!("{path:?} is not under cgroup.paths {:?}", self.cgroup_paths),
        })
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
    use std::path::Path;

    use telebpf_protocol::message::{IoctlValue, StreamKind, StreamRequest};

    use super::*;
    use crate::policy::resolve;
    use crate::policy::testing::*;

    #[test]
    fn the_monitor_profile_lists_programs_and_reads_kernel_memory_and_nothing_else() {
        let m = resolve("monitor", Path::new("/")).unwrap().rules;
        assert_eq!(m.name(), "monitor");
        assert!(m.check(&Request::Programs).is_ok());
        assert!(m.check(&Request::Peek(vec![])).is_ok());
        for refused in [
            cmd::BPF_PROG_LOAD,
            cmd::BPF_MAP_CREATE,
            cmd::BPF_LINK_CREATE,
            cmd::BPF_OBJ_PIN,
            cmd::BPF_OBJ_GET,
            cmd::BPF_MAP_UPDATE_ELEM,
            cmd::BPF_MAP_LOOKUP_ELEM,
        ] {
            assert!(
                !m.commands.contains(refused),
                "monitor allows command {refused}"
            );
        }
        assert!(m
            .check(&Request::MapSnapshot {
                fd: 3,
                len: 8,
                offset: 0
            })
            .is_err());
        // Listing programs needs all three commands it stands for.
        let nothing = resolve("read-only", Path::new("/")).unwrap().rules;
        assert!(nothing.check(&Request::Programs).is_ok());
        let mut partial = (*nothing).clone();
        partial.commands = Default::default();
        let denied = partial.check(&Request::Programs).unwrap_err();
        assert!(denied.rule.contains("prog_get_next_id"), "{denied:?}");
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

    /// Cgroup requests obey `[cgroup] paths` on the string, component by
    /// component and clean; the mount lines are always answered; the
    /// default is `/sys/fs/cgroup`, the full profile everything.
    #[test]
    fn cgroup_requests_follow_the_paths() {
        let p = parse("[cgroup]\npaths = [\"/sys/fs/cgroup/a\"]\n")
            .unwrap()
            .rules;
        let open = |path: &str| Request::Cgroup(CgroupOp::Open { path: path.into() });
        assert!(p.check(&open("/sys/fs/cgroup/a")).is_ok());
        assert!(p.check(&open("/sys/fs/cgroup/a/b")).is_ok());
        for bad in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/ab",
            "/sys/fs/cgroup/a/../b",
            "sys/fs/cgroup/a",
        ] {
            let d = p.check(&open(bad)).unwrap_err();
            assert_eq!(d.what, "opening a cgroup outside the allowed paths");
            assert!(d.rule.contains("is not under cgroup.paths"), "{}", d.rule);
        }
        let list = Request::Cgroup(CgroupOp::List {
            path: "/sys/fs/cgroup".into(),
        });
        assert_eq!(
            p.check(&list).unwrap_err().what,
            "listing a cgroup outside the allowed paths"
        );
        assert!(p.check(&Request::Cgroup(CgroupOp::Mounts)).is_ok());
        let none = parse("[cgroup]\npaths = []\n").unwrap().rules;
        assert!(none.check(&open("/sys/fs/cgroup")).is_err());
        let default = parse("").unwrap().rules;
        assert!(default.check(&open("/sys/fs/cgroup/x")).is_ok());
        assert!(default.check(&open("/cgroup2/x")).is_err());
        assert!(Policy::full().check(&open("/cgroup2/x")).is_ok());
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
    fn netlink_is_for_the_full_profile_only() {
        use std::path::Path;

        use telebpf_protocol::message::{InterfaceOp, NetlinkOp};

        let open = Request::Netlink(NetlinkOp::Open);
        let send = Request::Netlink(NetlinkOp::Send {
            fd: 3,
            data: Vec::new(),
        });
        let lookup = Request::Interface(InterfaceOp::Index("lo".into()));
        for name in ["read-only", "tracing", "observe", "monitor"] {
            let p = super::super::resolve(name, Path::new("/")).unwrap().rules;
            for r in [&open, &send] {
                let d = p.check(r).unwrap_err();
                assert_eq!(d.what, "a NETLINK_ROUTE socket", "{name}");
                assert_eq!(d.rule, "netlink is false", "{name}");
            }
            assert!(p.check(&lookup).is_ok(), "{name}");
        }
        assert!(
            parse("").unwrap().rules.check(&open).is_err(),
            "off by default"
        );
        let alone = parse("netlink = true\n").unwrap().rules;
        let d = alone.check(&open).unwrap_err();
        assert!(d.rule.contains("change_foreign_objects"), "{}", d.rule);
        let both = parse("netlink = true\nchange_foreign_objects = true\n").unwrap();
        assert!(both.rules.check(&open).is_ok());
        for r in [&open, &send, &lookup] {
            assert!(Policy::full().check(r).is_ok());
        }
    }
}
