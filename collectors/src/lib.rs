//! The bulk-read collectors: CO-RE eBPF programs (`bpf/*.bpf.c`) that walk a
//! kernel's structures — the task list, the module list, the TCP hash tables
//! — and record what they touched, either the pages or the fields; plus the
//! kernel-memory reader the proxy uses to return pages and per-pointer reads.
//!
//! The host only needs [`Collector`] (which object, its id) and [`record`]
//! (the record format); [`loader`] runs the objects and is used where the
//! kernel is: in the proxy, and by the benchmark's direct baseline.

pub mod loader;
pub mod pages;
pub mod programs;
pub mod record;
mod ring;

use sha2::{Digest, Sha256};

/// A collector, by what it walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collector {
    /// The task list: pid, tgid, comm, parent, uid.
    Processes,
    /// The module list: name, state, size.
    Modules,
    /// The TCP listening and established hash tables.
    Tcp,
    /// The TCP listening hash table only.
    Listeners,
}

impl Collector {
    /// Every collector.
    pub const ALL: [Collector; 4] = [
        Collector::Processes,
        Collector::Modules,
        Collector::Tcp,
        Collector::Listeners,
    ];

    /// The collector's name on the command line (`ps`, `modules`, `tcp`).
    pub fn name(self) -> &'static str {
        match self {
            Collector::Processes => "ps",
            Collector::Modules => "modules",
            Collector::Tcp => "tcp",
            Collector::Listeners => "listeners",
        }
    }

    /// The compiled eBPF object (CO-RE, relocated when loaded).
    pub fn object(self) -> &'static [u8] {
        match self {
            Collector::Processes => {
                include_bytes!(concat!(env!("OUT_DIR"), "/processes.bpf.o"))
            }
            Collector::Modules => include_bytes!(concat!(env!("OUT_DIR"), "/modules.bpf.o")),
            Collector::Tcp => include_bytes!(concat!(env!("OUT_DIR"), "/tcp.bpf.o")),
            Collector::Listeners => include_bytes!(concat!(env!("OUT_DIR"), "/listeners.bpf.o")),
        }
    }

    /// The id the proxy knows the object by: the SHA-256 of its bytes
    /// (computed once: every request names its collector by it).
    pub fn id(self) -> [u8; 32] {
        static IDS: std::sync::OnceLock<[[u8; 32]; 4]> = std::sync::OnceLock::new();
        let ids = IDS.get_or_init(|| Collector::ALL.map(|c| object_id(c.object())));
        ids[self as usize]
    }

    /// Whether the walk starts at the kernel's module list rather than at
    /// the current task.
    pub fn starts_at_module_list(self) -> bool {
        self == Collector::Modules
    }
}

/// The SHA-256 of an object's bytes.
pub fn object_id(object: &[u8]) -> [u8; 32] {
    Sha256::digest(object).into()
}

/// The proxy's kernel-memory reader object (`bpf/reader.bpf.c`).
pub fn reader_object() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/reader.bpf.o"))
}

/// Where libbpf's messages go ([`route_libbpf_messages`]).
static LIBBPF_SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

fn libbpf_message(_level: libbpf_rs::PrintLevel, msg: String) {
    if let Some(sink) = LIBBPF_SINK.get() {
        sink(msg.trim_end_matches('\n'));
    }
}

/// Hands each of libbpf's messages (warnings and information) to `sink`,
/// one call per message without its final newline, instead of libbpf-rs's
/// default of writing them to stderr as they are: they quote names from
/// the objects loaded, which a client may have chosen, so the proxy passes
/// them through its own escaping log. The first sink set stays.
pub fn route_libbpf_messages(sink: fn(&str)) {
    let _ = LIBBPF_SINK.set(sink);
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, libbpf_message)));
}

/// The version of the libbpf the collectors are loaded with, e.g. `v1.7`.
pub fn libbpf_version() -> String {
    // SAFETY: libbpf_version_string takes no argument and returns a pointer
    // to a static NUL-terminated string owned by libbpf.
    let version =
        unsafe { std::ffi::CStr::from_ptr(libbpf_rs::libbpf_sys::libbpf_version_string()) };
    version.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn collect(msg: &str) {
        SEEN.lock().unwrap().push(msg.to_string());
    }

    #[test]
    fn libbpf_messages_reach_the_sink_one_line_each() {
        super::route_libbpf_messages(collect);
        // Not an ELF object: libbpf says so (no privilege needed to open).
        let opened = libbpf_rs::ObjectBuilder::default().open_memory(b"not an ELF object");
        assert!(opened.is_err());
        let seen = SEEN.lock().unwrap();
        assert!(
            seen.iter().any(|m| m.starts_with("libbpf: ")),
            "libbpf's message reached the sink: {seen:?}"
        );
        assert!(seen.iter().all(|m| !m.ends_with('\n')), "{seen:?}");
    }
}
