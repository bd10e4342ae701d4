//! Which paths are the guest's: shared by the preload (what to forward) and
//! the proxy (what to serve, and how to open it), so the two cannot drift
//! apart.
//!
//! The proxy runs as root, so only the files that describe the kernel to
//! eBPF tooling are served (BTF, kallsyms, CPU lists, the BPF-related
//! sysctls the tools read, the kernel config, tracefs event ids and
//! formats, the kprobe blacklist, the event sources' PMU types), and only
//! bpffs may be changed.
//! Paths must be absolute and free of `.`/`..` components.
//!
//! # Patterns
//!
//! Each entry of the list is a pattern matched component by component: a
//! `*` inside a component matches any non-empty text without `/` (so
//! `config-*` matches `config-6.1.0-1-cloud-amd64`, and `*` alone one whole
//! component); a last component `**` matches one or more components. There
//! is no other prefix matching: `/proc/sys/kernel/cad_pid` is not served
//! because no entry names it.
//!
//! # Resolution
//!
//! A string that matches is not yet a file: a symlink on the way could lead
//! anywhere. Each entry therefore also says how the proxy opens it
//! ([`Served`]): its *root* (the file itself, or the directory the entry's
//! pattern lies under, or `/sys` for the event sources) is opened with
//! `RESOLVE_NO_SYMLINKS`, and the rest of the path beneath it with
//! `RESOLVE_BENEATH` and `RESOLVE_NO_MAGICLINKS` — and `RESOLVE_NO_SYMLINKS`
//! too, except under `/sys/bus/event_source/devices/`, whose entries are
//! sysfs symlinks into `/sys/devices/` (libbpf reads `…/kprobe/type` and
//! `…/kprobe/format/retprobe` through them); there only the leaf files
//! `type` and `format/*` are listed, and resolution cannot leave `/sys`.
//! The proxy opens exactly the string it checked, so there is no window
//! between the check and the open.

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// A field of a mount table line (`/proc/self/mounts`, `mountinfo`)
/// with the kernel's octal escapes (`\040` for a space, …) undone; `None`
/// if that is no UTF-8.
pub fn unescape_mount_field(field: &str) -> Option<String> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What a served path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A file (or, in bpffs, anything: pins and directories).
    File,
    /// A directory: opened with `O_DIRECTORY`, so only its metadata is
    /// served (a file at that place answers `ENOTDIR`).
    Dir,
}

/// One entry of the allow-list.
#[derive(Debug)]
struct Entry {
    /// The pattern (see the module doc).
    pattern: &'static str,
    /// The directory opened first with `RESOLVE_NO_SYMLINKS`, the rest of
    /// the path beneath it; `None`: the path itself is opened so.
    root: Option<&'static str>,
    /// Whether symlinks beneath `root` may be followed.
    symlinks: bool,
    kind: Kind,
    /// Length of the pattern's literal head (up to its first `*`).
    head: usize,
}

/// The length of `pattern` up to its first `*` (all of it without one).
const fn literal_head(pattern: &str) -> usize {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] != b'*' {
        i += 1;
    }
    i
}

const fn file(pattern: &'static str) -> Entry {
    Entry {
        pattern,
        root: None,
        symlinks: false,
        kind: Kind::File,
        head: literal_head(pattern),
    }
}

const fn file_in(root: &'static str, pattern: &'static str) -> Entry {
    Entry {
        pattern,
        root: Some(root),
        symlinks: false,
        kind: Kind::File,
        head: literal_head(pattern),
    }
}

const fn dir(pattern: &'static str) -> Entry {
    Entry {
        pattern,
        root: None,
        symlinks: false,
        kind: Kind::Dir,
        head: literal_head(pattern),
    }
}

const fn dir_in(root: &'static str, pattern: &'static str) -> Entry {
    Entry {
        pattern,
        root: Some(root),
        symlinks: false,
        kind: Kind::Dir,
        head: literal_head(pattern),
    }
}

/// The sysfs event sources: symlinks into `/sys/devices/`, resolved
/// beneath `/sys`.
const fn event_source(pattern: &'static str) -> Entry {
    Entry {
        pattern,
        root: Some("/sys"),
        symlinks: true,
        kind: Kind::File,
        head: literal_head(pattern),
    }
}

/// The files and directories answered by the guest (read, stat, access;
/// directories: stat and access only).
const ENTRIES: &[Entry] = &[
    // BTF of the kernel and of its modules.
    dir("/sys/kernel/btf"),
    file_in("/sys/kernel/btf", "/sys/kernel/btf/*"),
    file("/proc/kallsyms"),
    // CPU lists (per-CPU value sizes, perf ring counts).
    file("/sys/devices/system/cpu/possible"),
    file("/sys/devices/system/cpu/online"),
    file("/sys/devices/system/cpu/present"),
    // The BPF-related sysctls the tools read: bpftool feature probe (JIT
    // and unprivileged BPF), cpudist/tcptop/BCC (pid_max), bpftrace
    // (randomize_va_space), stack depths (perf_event_max_stack).
    file("/proc/sys/kernel/unprivileged_bpf_disabled"),
    file("/proc/sys/kernel/pid_max"),
    file("/proc/sys/kernel/perf_event_max_stack"),
    file("/proc/sys/kernel/randomize_va_space"),
    file("/proc/sys/net/core/bpf_jit_enable"),
    file("/proc/sys/net/core/bpf_jit_harden"),
    file("/proc/sys/net/core/bpf_jit_kallsyms"),
    file("/proc/sys/net/core/bpf_jit_limit"),
    // The kernel's version and configuration.
    file("/proc/version_signature"),
    file("/proc/version"),
    file("/proc/config.gz"),
    file_in("/boot", "/boot/config-*"),
    // bpffs: pins and their directories (a key's `[bpffs] paths` narrow
    // this down further).
    dir("/sys/fs/bpf"),
    file_in("/sys/fs/bpf", "/sys/fs/bpf/**"),
    // Attaching: tracepoint ids and formats, the functions that can be
    // probed, the probe definitions (libbpf's legacy attach appends to
    // them). Not the trace buffers (`trace`, `trace_pipe`), nor the
    // events' `enable`/`filter`/`trigger` files.
    dir("/sys/kernel/tracing"),
    file("/sys/kernel/tracing/available_events"),
    file("/sys/kernel/tracing/available_filter_functions"),
    file("/sys/kernel/tracing/kprobe_events"),
    file("/sys/kernel/tracing/uprobe_events"),
    dir_in("/sys/kernel/tracing/events", "/sys/kernel/tracing/events/*"),
    dir_in(
        "/sys/kernel/tracing/events",
        "/sys/kernel/tracing/events/*/*",
    ),
    file_in(
        "/sys/kernel/tracing/events",
        "/sys/kernel/tracing/events/*/*/id",
    ),
    file_in(
        "/sys/kernel/tracing/events",
        "/sys/kernel/tracing/events/*/*/format",
    ),
    dir("/sys/kernel/debug/tracing"),
    file("/sys/kernel/debug/tracing/available_events"),
    file("/sys/kernel/debug/tracing/available_filter_functions"),
    file("/sys/kernel/debug/tracing/kprobe_events"),
    file("/sys/kernel/debug/tracing/uprobe_events"),
    dir_in(
        "/sys/kernel/debug/tracing/events",
        "/sys/kernel/debug/tracing/events/*",
    ),
    dir_in(
        "/sys/kernel/debug/tracing/events",
        "/sys/kernel/debug/tracing/events/*/*",
    ),
    file_in(
        "/sys/kernel/debug/tracing/events",
        "/sys/kernel/debug/tracing/events/*/*/id",
    ),
    file_in(
        "/sys/kernel/debug/tracing/events",
        "/sys/kernel/debug/tracing/events/*/*/format",
    ),
    // The functions kprobes refuse (BCC's `get_kprobe_functions` leaves
    // them out of a pattern's matches): debugfs only, addresses and names
    // as in kallsyms.
    file("/sys/kernel/debug/kprobes/blacklist"),
    // The PMU types of the kprobe/uprobe event sources and their format
    // bits (`retprobe`, `ref_ctr_offset`).
    event_source("/sys/bus/event_source/devices/*/type"),
    event_source("/sys/bus/event_source/devices/*/format/*"),
];

/// Files whose content cannot change while the guest runs (a module's
/// BTF changes only when the module is reloaded, and then its stamp too).
const IMMUTABLE: &[&str] = &[
    "/sys/kernel/btf/*",
    "/proc/config.gz",
    "/boot/config-*",
    "/proc/version_signature",
    "/proc/version",
];

/// Whether one path component matches one pattern component (`*` matches
/// any non-empty run of characters).
fn component_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() > head.len() + tail.len() && text.starts_with(head) && text.ends_with(tail)
        }
    }
}

/// Whether `path` (absolute, clean) matches `pattern`.
fn matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/');
    let mut comp = path.split('/');
    loop {
        match (pat.next(), comp.next()) {
            (None, None) => return true,
            (Some("**"), Some(c)) => return !c.is_empty() && comp.all(|c| !c.is_empty()),
            (Some(p), Some(c)) if component_matches(p, c) => {}
            _ => return false,
        }
    }
}

/// Whether `path` is absolute, with no NUL and no `.`, `..` or empty
/// components (one final `/`, naming a directory, is allowed).
pub fn is_clean(path: &str) -> bool {
    path.starts_with('/') && !path.contains('\0') && {
        let inner = trimmed(path);
        inner == "/"
            || !inner[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
    }
}

/// `path` without its final `/` (but `/` itself).
fn trimmed(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(p) => p,
    }
}

/// `path` without one final `/`.
#[inline(always)]
fn leaf(path: &[u8]) -> &[u8] {
    path.strip_suffix(b"/").unwrap_or(path)
}

/// Whether `path` may be served: true for every path [`is_guest_file`]
/// accepts, false for nearly every other in a few dozen instructions, on
/// raw bytes (no UTF-8 check, no normalisation, no scan of the list).
///
/// The preload asks this for every path a program opens or stats, so it
/// compares only the path's head with the literal heads of the list's
/// patterns: the root (`/proc/`, `/sys/`, `/boot/`), then, by the next
/// byte, the one or two directories the patterns lie under (`kernel/btf`,
/// `fs/bpf`, …), or the whole rest where the list names single files
/// (`/proc/kallsyms`, the CPU lists under `/sys/devices`). A path that
/// gets past it is decided by [`is_guest_file`]. The unit tests keep it a
/// superset of the full check: every pattern of the list, and a large set
/// of tricky paths, must pass whenever the full check accepts them.
#[inline(always)]
pub fn may_be_guest_file(path: &[u8]) -> bool {
    if let Some(rest) = path.strip_prefix(b"/proc/") {
        may_be_guest_file_in_proc(rest)
    } else if let Some(rest) = path.strip_prefix(b"/sys/") {
        match rest.first() {
            Some(b'k') => {
                starts(rest, b"kernel/btf")
                    || starts(rest, b"kernel/tracing")
                    || starts(rest, b"kernel/debug/tracing")
                    || leaf(rest) == b"kernel/debug/kprobes/blacklist"
            }
            Some(b'f') => starts(rest, b"fs/bpf"),
            Some(b'b') => starts(rest, b"bus/event_source/devices/"),
            // Only the CPU lists: the other files under `/sys/devices`
            // (`cpu0/topology/…`, `system/node/…`) are read often.
            Some(b'd') => matches!(
                leaf(rest),
                b"devices/system/cpu/possible"
                    | b"devices/system/cpu/online"
                    | b"devices/system/cpu/present"
            ),
            _ => false,
        }
    } else {
        starts(path, b"/boot/config-")
    }
}

/// [`may_be_guest_file`] of `/proc/` followed by `rest`, for a caller that
/// has already looked at that root (the preload's routing, which first
/// looks for `/proc/self/fd/N`).
#[inline(always)]
pub fn may_be_guest_file_in_proc(rest: &[u8]) -> bool {
    // By the first byte, so that `/proc/self/…` and `/proc/<pid>/…` are
    // turned away by one compare or two.
    match rest.first() {
        Some(b's') => match rest.strip_prefix(b"sys/") {
            Some(sys) => starts(sys, b"kernel/") || starts(sys, b"net/"),
            None => false,
        },
        Some(b'k' | b'v' | b'c') => matches!(
            leaf(rest),
            b"kallsyms" | b"version" | b"version_signature" | b"config.gz"
        ),
        _ => false,
    }
}

/// Whether `s` starts with `prefix`: as `starts_with`, but with the length
/// known at compile time, so that each compare stays a few inline loads
/// (`starts_with` calls of different lengths get merged into one `bcmp`
/// call).
#[inline(always)]
fn starts<const N: usize>(s: &[u8], prefix: &[u8; N]) -> bool {
    s.first_chunk::<N>() == Some(prefix)
}

/// The entry that serves `path`, if any. Cheap for the paths the preload
/// sees all the time (it asks for every path a program opens): only paths
/// that pass [`may_be_guest_file`] are matched against the list.
fn entry(path: &str) -> Option<&'static Entry> {
    if !may_be_guest_file(path.as_bytes()) {
        return None;
    }
    scan(path)
}

/// The entry that serves `path`, by the list alone (what [`entry`] answers
/// for a path that passes [`may_be_guest_file`]).
fn scan(path: &str) -> Option<&'static Entry> {
    let inner = trimmed(path);
    let e = ENTRIES.iter().find(|e| {
        if e.head == e.pattern.len() {
            e.pattern == inner
        } else {
            inner.starts_with(&e.pattern[..e.head]) && matches(e.pattern, inner)
        }
    })?;
    is_clean(path).then_some(e)
}

/// Whether `path` is answered by the guest (read, stat, access).
pub fn is_guest_file(path: &str) -> bool {
    entry(path).is_some()
}

/// How the proxy opens a served path (see the module doc): `root` with
/// `RESOLVE_NO_SYMLINKS`, then `rest` (empty: `root` is the path itself)
/// beneath it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served<'a> {
    /// Opened first, with `RESOLVE_NO_SYMLINKS`.
    pub root: &'a str,
    /// The rest of the path, relative to `root`, resolved with
    /// `RESOLVE_BENEATH` and `RESOLVE_NO_MAGICLINKS`; empty when `root` is
    /// the whole path.
    pub rest: &'a str,
    /// Whether `rest` may pass through symlinks (that stay beneath `root`).
    pub symlinks: bool,
    /// Whether the path must be a directory (`O_DIRECTORY`).
    pub directory: bool,
}

/// How the proxy opens `path`, or `None` if it is not served.
pub fn served(path: &str) -> Option<Served<'_>> {
    let e = entry(path)?;
    let path = trimmed(path);
    let (root, rest) = match e.root {
        Some(root) => (root, path[root.len()..].trim_start_matches('/')),
        None => (path, ""),
    };
    Some(Served {
        root,
        rest,
        symlinks: e.symlinks,
        directory: e.kind == Kind::Dir,
    })
}

/// Whether `path` is inside bpffs (where pins live), the mount point
/// included.
pub fn is_bpffs(path: &str) -> bool {
    is_clean(path)
        && trimmed(path)
            .strip_prefix(BPFFS)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a client may create or remove `path` (inside bpffs, not its root).
pub fn is_mutable(path: &str) -> bool {
    is_bpffs(path) && trimmed(path).len() > BPFFS.len()
}

/// Whether a client may append to `path`: only the tracefs files that
/// define probe events.
pub fn is_appendable(path: &str) -> bool {
    is_guest_file(path) && (path.ends_with("/kprobe_events") || path.ends_with("/uprobe_events"))
}

/// Whether a client may list directory `path`: only `/proc`, whose entries
/// are the guest's process ids as its procfs shows them (the view an
/// intrusion detector compares with the kernel's task list).
pub fn is_listable(path: &str) -> bool {
    path == "/proc"
}

/// Whether the content of guest file `path` is fixed for the guest's
/// lifetime.
pub fn is_immutable(path: &str) -> bool {
    is_guest_file(path) && IMMUTABLE.iter().any(|p| matches(p, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        for served in [
            "/sys/kernel/btf/vmlinux",
            "/sys/kernel/btf/nf_tables",
            "/sys/kernel/btf",
            "/sys/kernel/btf/",
            "/proc/sys/net/core/bpf_jit_enable",
            "/proc/sys/kernel/unprivileged_bpf_disabled",
            "/proc/sys/kernel/pid_max",
            "/boot/config-6.1.0-1-cloud-amd64",
            "/sys/fs/bpf",
            "/sys/fs/bpf/x",
            "/sys/fs/bpf/x/y/z",
            "/sys/kernel/debug/tracing/events/syscalls/sys_enter_execve/id",
            "/sys/kernel/debug/kprobes/blacklist",
            "/sys/kernel/tracing/events/sched/sched_switch/format",
            "/sys/kernel/tracing/events/sched/sched_switch",
            "/sys/kernel/tracing/events/sched",
            "/sys/kernel/tracing",
            "/sys/kernel/tracing/kprobe_events",
            "/sys/bus/event_source/devices/kprobe/type",
            "/sys/bus/event_source/devices/uprobe/format/retprobe",
            "/proc/version",
            "/proc/kallsyms",
        ] {
            assert!(is_guest_file(served), "{served}");
        }
        for refused in [
            "/etc/shadow",
            "/sys/kernel/btf/../../../etc/shadow",
            "/sys/kernel/btf/a/b",
            "/proc/versionX",
            "relative/path",
            "/proc/sys/net/core/somaxconn",
            "/proc/sys/net/core/bpf_",
            "/proc/sys/kernel/cad_pid",
            "/proc/sys/kernel/usermodehelper/bset",
            "/proc/sys/kernel/core_pattern",
            "/boot/config-",
            "/boot/config-x/y",
            "/boot/vmlinuz-6.1",
            "/sys/fs/bpfX",
            "/sys/fs/bpf//x",
            "/sys/fs/bpf/./x",
            "/sys/kernel/tracing/trace_pipe",
            "/sys/kernel/debug/tracing/trace",
            "/sys/kernel/debug/kprobes/list",
            "/sys/kernel/debug/kprobes/enabled",
            "/sys/kernel/debug/kprobes/blacklist/x",
            "/sys/kernel/debug/kprobes",
            "/sys/kernel/tracing/events/sched/sched_switch/trigger",
            "/sys/kernel/tracing/events/sched/sched_switch/hist",
            "/sys/bus/event_source/devices/kprobe/uevent",
            "/sys/bus/event_source/devices/kprobe/subsystem/drivers_autoprobe",
            "/sys/bus/event_source/devices/kprobe/format/a/b",
            "/sys/bus/event_source/uevent",
            "/sys/devices/system/cpu/cpu0/online",
            "/proc/self/root/etc/shadow",
            "/proc/1/environ",
        ] {
            assert!(!is_guest_file(refused), "{refused}");
        }
        assert!(is_mutable("/sys/fs/bpf/a"));
        assert!(!is_mutable("/sys/fs/bpf/"));
        assert!(!is_mutable("/sys/fs/bpf"));
        assert!(is_mutable("/sys/fs/bpf/a/"));
        assert!(!is_mutable("/sys/fs/bpf/../x"));
        assert!(!is_mutable("/sys/kernel/btf/vmlinux"));
        assert!(is_bpffs("/sys/fs/bpf") && is_bpffs("/sys/fs/bpf/a/b"));
        assert!(!is_bpffs("/sys/fs/bpfa") && !is_bpffs("/sys/fs/bpf/a/../b"));
        assert!(is_immutable("/sys/kernel/btf/vmlinux"));
        assert!(is_immutable("/boot/config-6.1"));
        assert!(!is_immutable("/sys/kernel/btf"));
        assert!(!is_immutable("/proc/kallsyms"));
        assert!(is_appendable("/sys/kernel/tracing/kprobe_events"));
        assert!(!is_appendable("/sys/kernel/tracing/available_events"));
    }

    #[test]
    fn resolution() {
        let s = served("/proc/kallsyms").unwrap();
        assert_eq!((s.root, s.rest, s.symlinks), ("/proc/kallsyms", "", false));
        let s = served("/sys/kernel/btf/vmlinux").unwrap();
        assert_eq!(
            (s.root, s.rest, s.directory),
            ("/sys/kernel/btf", "vmlinux", false)
        );
        let s = served("/sys/kernel/btf").unwrap();
        assert_eq!((s.root, s.rest, s.directory), ("/sys/kernel/btf", "", true));
        let s = served("/sys/bus/event_source/devices/kprobe/format/retprobe").unwrap();
        assert_eq!(s.root, "/sys");
        assert_eq!(s.rest, "bus/event_source/devices/kprobe/format/retprobe");
        assert!(s.symlinks);
        let s = served("/sys/fs/bpf/a/b").unwrap();
        assert_eq!((s.root, s.rest, s.symlinks), ("/sys/fs/bpf", "a/b", false));
        let s = served("/sys/kernel/tracing/events/sched/sched_switch").unwrap();
        assert_eq!(s.root, "/sys/kernel/tracing/events");
        assert_eq!(s.rest, "sched/sched_switch");
        assert!(s.directory);
        assert_eq!(served("/etc/passwd"), None);
    }

    #[test]
    fn patterns() {
        assert!(component_matches("*", "a"));
        assert!(!component_matches("*", ""));
        assert!(component_matches("config-*", "config-6.1"));
        assert!(!component_matches("config-*", "config-"));
        assert!(!component_matches("config-*", "xconfig-1"));
        assert!(matches("/a/*/c", "/a/b/c"));
        assert!(!matches("/a/*/c", "/a/b/c/d"));
        assert!(!matches("/a/*/c", "/a/c"));
        assert!(matches("/a/**", "/a/b"));
        assert!(matches("/a/**", "/a/b/c"));
        assert!(!matches("/a/**", "/a"));
    }

    /// The full check as it was before [`may_be_guest_file`]: the three
    /// roots, then the list.
    fn full_check(path: &str) -> bool {
        let b = path.as_bytes();
        (b.starts_with(b"/proc/") || b.starts_with(b"/sys/") || b.starts_with(b"/boot/"))
            && scan(path).is_some()
    }

    /// A pattern with each `*` replaced by `text` (and `**` by two
    /// components).
    fn instance(pattern: &str, text: &str) -> String {
        pattern
            .replace("**", &format!("{text}/{text}"))
            .replace('*', text)
    }

    #[test]
    fn every_pattern_passes_the_pre_check() {
        for e in ENTRIES {
            for text in ["x", "sched", "config-6.1", "a.b-c_d"] {
                let path = instance(e.pattern, text);
                for path in [path.clone(), format!("{path}/")] {
                    assert!(
                        may_be_guest_file(path.as_bytes()),
                        "{path}: served by {} but rejected by the pre-check",
                        e.pattern
                    );
                }
            }
        }
    }

    /// Words that paths are built from: every component of the list's
    /// patterns (`*` as `x`), and tricky ones (empty, `.`, `..`, near
    /// misses, a NUL, bytes that are not UTF-8).
    fn words() -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = ENTRIES
            .iter()
            .flat_map(|e| e.pattern.split('/'))
            .map(|c| c.replace('*', "x").into_bytes())
            .collect();
        for extra in [
            "",
            ".",
            "..",
            "sysx",
            "sys ",
            "SYS",
            "proc",
            "self",
            "fd",
            "fdinfo",
            "3",
            "-1",
            "+4",
            "thread-self",
            "config-",
            "configX",
            "bpf\0",
            "b\u{ff}pf",
            "version_",
            "kallsyms.",
        ] {
            words.push(extra.as_bytes().to_vec());
        }
        words.extend([
            b"\xff\xfe".to_vec(),
            b"btf\x80".to_vec(),
            b"bpf\xc3".to_vec(),
            b"\xff".to_vec(),
        ]);
        words.sort();
        words.dedup();
        words
    }

    /// Joins components into a path with a leading `/`.
    fn join(components: &[&[u8]]) -> Vec<u8> {
        components.iter().fold(Vec::new(), |mut p, c| {
            p.push(b'/');
            p.extend_from_slice(c);
            p
        })
    }

    /// Many paths, served and not: every two-word path; every pattern
    /// instance with one component replaced, inserted or dropped (any
    /// word), or two replaced (a few tricky words); each of them also
    /// relative, with a doubled, a final or a `//` tail, and with `/..`
    /// appended; hand-picked ones; and seeded pseudo-random bytes.
    fn tricky_paths() -> Vec<Vec<u8>> {
        let words = words();
        let mut paths = Vec::new();
        for a in &words {
            paths.push(join(&[a]));
            for b in &words {
                paths.push(join(&[a, b]));
            }
        }
        let few: Vec<&[u8]> = ["", "..", ".", "x", "sysx", "\u{ff}"]
            .iter()
            .map(|w| w.as_bytes())
            .chain([b"\xff".as_slice()])
            .collect();
        for e in ENTRIES {
            let instance = instance(e.pattern, "x");
            let comps: Vec<&[u8]> = instance.as_bytes()[1..].split(|&b| b == b'/').collect();
            for i in 0..=comps.len() {
                paths.push(join(&comps[..i]));
                let mut dropped = comps.clone();
                if i < comps.len() {
                    dropped.remove(i);
                    paths.push(join(&dropped));
                }
                for w in &words {
                    let mut inserted = comps.clone();
                    inserted.insert(i, w);
                    paths.push(join(&inserted));
                    if i < comps.len() {
                        let mut replaced = comps.clone();
                        replaced[i] = w;
                        paths.push(join(&replaced));
                    }
                }
                for j in i + 1..comps.len() {
                    for a in &few {
                        for b in &few {
                            let mut replaced = comps.clone();
                            replaced[i] = a;
                            replaced[j] = b;
                            paths.push(join(&replaced));
                        }
                    }
                }
            }
        }
        let mut all = Vec::with_capacity(paths.len() * 6);
        for p in paths {
            all.push([b"/".as_slice(), &p].concat());
            all.push([&p, b"/".as_slice()].concat());
            all.push([&p, b"//".as_slice()].concat());
            all.push([&p, b"/..".as_slice()].concat());
            all.push(p.strip_prefix(b"/").unwrap_or(&p).to_vec());
            all.push(p);
        }
        for p in [
            "//sys",
            "//sys/kernel/btf/vmlinux",
            "/sys/../sys",
            "/sys/../sys/kernel/btf/vmlinux",
            "/proc/self/fd/3",
            "/proc/self/fdinfo/3",
            "/proc/1/fd/3",
            "sys/kernel/btf/vmlinux",
            "./sys/kernel/btf",
            "/sysx",
            "/sysx/kernel/btf",
            "/sys",
            "/proc",
            "/boot",
            "/boot/config-",
            "/boot/config-6.1/",
            "/boot/config-6.1//",
            "/./sys/fs/bpf",
            "/sys/fs/bpf/a\0b",
            "/sys/fs/bpf/\u{ff}",
            "/proc/kallsyms/",
            "/proc/kallsyms//",
            "/sys/kernel/debug/tracing/events/a/b/id",
            "/sys/bus/event_source/devices/k/format/r",
        ] {
            all.push(p.as_bytes().to_vec());
        }
        all.push(b"/sys/fs/bpf/\xff".to_vec());
        all.push(b"/sys/kernel/btf/vmlinux\xff".to_vec());
        // Pseudo-random bytes over a small alphabet, seeded: the same set
        // on every run.
        let alphabet = b"/sykernlbtfpocdvu.-_*x\xff0";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut p = b"/".to_vec();
            for _ in 0..(seed % 40) {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                p.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            all.push(p);
        }
        all
    }

    #[test]
    fn the_pre_check_never_rejects_what_the_full_check_accepts() {
        let paths = tricky_paths();
        assert!(paths.len() > 100_000, "{} paths", paths.len());
        let (mut accepted, mut passed) = (0, 0);
        for p in &paths {
            let fast = may_be_guest_file(p);
            passed += usize::from(fast);
            let Ok(s) = std::str::from_utf8(p) else {
                continue;
            };
            let full = full_check(s);
            accepted += usize::from(full);
            assert!(
                fast || !full,
                "{s:?} is served but the pre-check rejects it"
            );
            assert_eq!(is_guest_file(s), full, "{s:?}");
        }
        // The set exercises both answers of both checks.
        eprintln!("{} paths, {accepted} served, {passed} passed", paths.len());
        assert!(accepted > 1_000, "{accepted} served paths");
        assert!(passed < paths.len() / 2, "{passed} passed the pre-check");
    }

    #[test]
    fn the_pre_check_rejects_at_the_first_components() {
        for p in [
            "/etc/passwd",
            "/proc/self/stat",
            "/proc/1/maps",
            "/proc/meminfo",
            "/sysx/kernel/btf",
            "/sys/fs/cgroup/cpu.max",
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "//sys/fs/bpf",
            "sys/fs/bpf",
            "/boot/vmlinuz",
            "/sys/devices/system/cpu/cpu0/topology/core_id",
            "/sys/devices/system/cpu/online/x",
            "/sys/devices/system/node/online",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "",
            "/",
        ] {
            assert!(!may_be_guest_file(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn clean_paths() {
        assert!(is_clean("/a/b"));
        assert!(is_clean("/"));
        assert!(is_clean("/a/"));
        for unclean in ["a/b", "/a/../b", "/a/./b", "/a//b", "/a//", "/a\0b", ""] {
            assert!(!is_clean(unclean), "{unclean:?}");
        }
    }
}
