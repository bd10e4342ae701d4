//! Which paths are the guest's: shared by the preload (what to forward) and
//! the proxy (what to serve), so the two lists cannot drift apart.
//!
//! The proxy runs as root, so only the files that describe the kernel to
//! eBPF tooling are served (BTF, kallsyms, CPU lists, BPF sysctls, the kernel
//! config), and only bpffs may be changed. Paths must be absolute and free of
//! `.`/`..` components, so a prefix check cannot be walked around.

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Files and trees answered by the guest. An entry ending in `/`, `-` or
/// `_` is a prefix (a tree, or a family such as `/boot/config-<release>`);
/// any other entry must match exactly.
const GUEST_FILES: &[&str] = &[
    "/sys/kernel/btf",
    "/sys/kernel/btf/",
    "/proc/kallsyms",
    "/sys/devices/system/cpu/possible",
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/present",
    "/proc/sys/kernel/",
    "/proc/sys/net/core/bpf_",
    "/proc/version_signature",
    "/proc/version",
    "/proc/config.gz",
    "/boot/config-",
    "/sys/fs/bpf",
    "/sys/fs/bpf/",
    // Attaching: tracepoint ids and formats, the functions that can be
    // probed, and the PMU types of the kprobe/uprobe event sources. The
    // trace buffers themselves (`trace`, `trace_pipe`) are not served.
    "/sys/kernel/tracing",
    "/sys/kernel/tracing/events/",
    "/sys/kernel/tracing/available_events",
    "/sys/kernel/tracing/available_filter_functions",
    "/sys/kernel/tracing/kprobe_events",
    "/sys/kernel/tracing/uprobe_events",
    "/sys/kernel/debug/tracing",
    "/sys/kernel/debug/tracing/events/",
    "/sys/kernel/debug/tracing/available_events",
    "/sys/kernel/debug/tracing/available_filter_functions",
    "/sys/kernel/debug/tracing/kprobe_events",
    "/sys/kernel/debug/tracing/uprobe_events",
    "/sys/bus/event_source/devices/",
];

/// Files whose content cannot change while the guest runs, so a client may
/// fetch them once per session.
const IMMUTABLE: &[&str] = &[
    "/sys/kernel/btf/",
    "/proc/config.gz",
    "/boot/config-",
    "/proc/version_signature",
    "/proc/version",
];

fn matches(list: &[&str], path: &str) -> bool {
    list.iter().any(|entry| {
        if entry.ends_with('/') || entry.ends_with('-') || entry.ends_with('_') {
            path.starts_with(entry)
        } else {
            path == *entry
        }
    })
}

/// Whether `path` is absolute with no `.`/`..` components and no NUL.
pub fn is_clean(path: &str) -> bool {
    path.starts_with('/') && !path.contains('\0') && !path.split('/').any(|c| c == ".." || c == ".")
}

/// Whether `path` is answered by the guest (read, stat, access).
pub fn is_guest_file(path: &str) -> bool {
    is_clean(path) && matches(GUEST_FILES, path)
}

/// Whether `path` is inside bpffs (where pins live).
pub fn is_bpffs(path: &str) -> bool {
    is_clean(path) && (path == BPFFS || path.starts_with("/sys/fs/bpf/"))
}

/// Whether a client may create or remove `path` (inside bpffs, not its root).
pub fn is_mutable(path: &str) -> bool {
    is_bpffs(path) && path.len() > BPFFS.len() + 1
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
    is_clean(path) && matches(IMMUTABLE, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(is_guest_file("/sys/kernel/btf/vmlinux"));
        assert!(is_guest_file("/proc/sys/net/core/bpf_jit_enable"));
        assert!(is_guest_file("/boot/config-6.1.0-1-cloud-amd64"));
        assert!(is_guest_file("/sys/fs/bpf/x/y"));
        assert!(!is_guest_file("/etc/shadow"));
        assert!(!is_guest_file("/sys/kernel/btf/../../../etc/shadow"));
        assert!(!is_guest_file("/proc/versionX"));
        assert!(!is_guest_file("relative/path"));
        assert!(!is_guest_file("/proc/sys/net/core/somaxconn"));
        assert!(!is_guest_file("/sys/fs/bpfX"));
        assert!(is_guest_file(
            "/sys/kernel/debug/tracing/events/syscalls/sys_enter_execve/id"
        ));
        assert!(is_guest_file(
            "/sys/kernel/tracing/events/sched/sched_switch/format"
        ));
        assert!(is_guest_file("/sys/bus/event_source/devices/kprobe/type"));
        assert!(!is_guest_file("/sys/kernel/tracing/trace_pipe"));
        assert!(!is_guest_file("/sys/kernel/debug/tracing/trace"));
        assert!(!is_guest_file("/sys/kernel/debug/kprobes/list"));
        assert!(is_mutable("/sys/fs/bpf/a"));
        assert!(!is_mutable("/sys/fs/bpf/"));
        assert!(!is_mutable("/sys/fs/bpf/../x"));
        assert!(!is_mutable("/sys/kernel/btf/vmlinux"));
        assert!(is_immutable("/sys/kernel/btf/vmlinux"));
        assert!(!is_immutable("/proc/kallsyms"));
    }
}
