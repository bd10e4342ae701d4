//! Map type numbers (`enum bpf_map_type`) and per-type properties.
//!
//! Values of `enum bpf_map_type` from the UAPI header `linux/bpf.h`.

/// `BPF_MAP_TYPE_UNSPEC` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_UNSPEC: u32 = 0;
/// `BPF_MAP_TYPE_HASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
/// `BPF_MAP_TYPE_PERCPU_HASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_PERCPU_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_STACK_TRACE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_STACK_TRACE: u32 = 7;
/// `BPF_MAP_TYPE_CGROUP_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_CGROUP_ARRAY: u32 = 8;
/// `BPF_MAP_TYPE_LRU_HASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_LRU_PERCPU_HASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
/// `BPF_MAP_TYPE_LPM_TRIE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;
/// `BPF_MAP_TYPE_DEVMAP` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_DEVMAP: u32 = 14;
/// `BPF_MAP_TYPE_SOCKMAP` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
/// `BPF_MAP_TYPE_CPUMAP` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_CPUMAP: u32 = 16;
/// `BPF_MAP_TYPE_XSKMAP` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_MAP_TYPE_SOCKHASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
/// `BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED: u32 = 19;
/// `BPF_MAP_TYPE_CGROUP_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_CGROUP_STORAGE: u32 = 19;
/// `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
/// `BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED: u32 = 21;
/// `BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;
/// `BPF_MAP_TYPE_QUEUE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_QUEUE: u32 = 22;
/// `BPF_MAP_TYPE_STACK` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_STACK: u32 = 23;
/// `BPF_MAP_TYPE_SK_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_SK_STORAGE: u32 = 24;
/// `BPF_MAP_TYPE_DEVMAP_HASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;
/// `BPF_MAP_TYPE_STRUCT_OPS` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_STRUCT_OPS: u32 = 26;
/// `BPF_MAP_TYPE_RINGBUF` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// `BPF_MAP_TYPE_INODE_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_INODE_STORAGE: u32 = 28;
/// `BPF_MAP_TYPE_TASK_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_TASK_STORAGE: u32 = 29;
/// `BPF_MAP_TYPE_BLOOM_FILTER` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_BLOOM_FILTER: u32 = 30;
/// `BPF_MAP_TYPE_USER_RINGBUF` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_USER_RINGBUF: u32 = 31;
/// `BPF_MAP_TYPE_CGRP_STORAGE` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_CGRP_STORAGE: u32 = 32;
/// `BPF_MAP_TYPE_ARENA` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_ARENA: u32 = 33;
/// `BPF_MAP_TYPE_INSN_ARRAY` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_INSN_ARRAY: u32 = 34;
/// `BPF_MAP_TYPE_RHASH` (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_RHASH: u32 = 35;

/// The map types (`enum bpf_map_type`) by name: the constant's name without `BPF_MAP_TYPE_`, in lower
/// case, as bpftool and libbpf spell them (`hash`). Aliases share a
/// number; the first entry of a number is its canonical name.
pub const NAMES: &[(&str, u32)] = &[
    ("unspec", BPF_MAP_TYPE_UNSPEC),
    ("hash", BPF_MAP_TYPE_HASH),
    ("array", BPF_MAP_TYPE_ARRAY),
    ("prog_array", BPF_MAP_TYPE_PROG_ARRAY),
    ("perf_event_array", BPF_MAP_TYPE_PERF_EVENT_ARRAY),
    ("percpu_hash", BPF_MAP_TYPE_PERCPU_HASH),
    ("percpu_array", BPF_MAP_TYPE_PERCPU_ARRAY),
    ("stack_trace", BPF_MAP_TYPE_STACK_TRACE),
    ("cgroup_array", BPF_MAP_TYPE_CGROUP_ARRAY),
    ("lru_hash", BPF_MAP_TYPE_LRU_HASH),
    ("lru_percpu_hash", BPF_MAP_TYPE_LRU_PERCPU_HASH),
    ("lpm_trie", BPF_MAP_TYPE_LPM_TRIE),
    ("array_of_maps", BPF_MAP_TYPE_ARRAY_OF_MAPS),
    ("hash_of_maps", BPF_MAP_TYPE_HASH_OF_MAPS),
    ("devmap", BPF_MAP_TYPE_DEVMAP),
    ("sockmap", BPF_MAP_TYPE_SOCKMAP),
    ("cpumap", BPF_MAP_TYPE_CPUMAP),
    ("xskmap", BPF_MAP_TYPE_XSKMAP),
    ("sockhash", BPF_MAP_TYPE_SOCKHASH),
    ("cgroup_storage", BPF_MAP_TYPE_CGROUP_STORAGE),
    (
        "cgroup_storage_deprecated",
        BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED,
    ),
    ("reuseport_sockarray", BPF_MAP_TYPE_REUSEPORT_SOCKARRAY),
    ("percpu_cgroup_storage", BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE),
    (
        "percpu_cgroup_storage_deprecated",
        BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED,
    ),
    ("queue", BPF_MAP_TYPE_QUEUE),
    ("stack", BPF_MAP_TYPE_STACK),
    ("sk_storage", BPF_MAP_TYPE_SK_STORAGE),
    ("devmap_hash", BPF_MAP_TYPE_DEVMAP_HASH),
    ("struct_ops", BPF_MAP_TYPE_STRUCT_OPS),
    ("ringbuf", BPF_MAP_TYPE_RINGBUF),
    ("inode_storage", BPF_MAP_TYPE_INODE_STORAGE),
    ("task_storage", BPF_MAP_TYPE_TASK_STORAGE),
    ("bloom_filter", BPF_MAP_TYPE_BLOOM_FILTER),
    ("user_ringbuf", BPF_MAP_TYPE_USER_RINGBUF),
    ("cgrp_storage", BPF_MAP_TYPE_CGRP_STORAGE),
    ("arena", BPF_MAP_TYPE_ARENA),
    ("insn_array", BPF_MAP_TYPE_INSN_ARRAY),
    ("rhash", BPF_MAP_TYPE_RHASH),
];

/// The number of a lower-case name from [`NAMES`].
pub fn by_name(name: &str) -> Option<u32> {
    crate::names::by_name(NAMES, name)
}

/// The canonical lower-case name of a number, if this build knows it.
pub fn short_name(value: u32) -> Option<&'static str> {
    crate::names::short_name(NAMES, value)
}

/// Per-CPU map types: lookup/update values carry one `round_up(value_size, 8)` slot per possible
/// CPU of the executing kernel (unless `BPF_F_CPU`/`BPF_F_ALL_CPUS` is given).
pub fn is_percpu(t: u32) -> bool {
    matches!(
        t,
        BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_PERCPU_ARRAY
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
            | BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
    )
}

/// The kernel's `IS_FD_MAP()`: values are written as fds and read back as 4-byte object ids.
pub fn is_fd_map(t: u32) -> bool {
    matches!(
        t,
        BPF_MAP_TYPE_PROG_ARRAY
            | BPF_MAP_TYPE_PERF_EVENT_ARRAY
            | BPF_MAP_TYPE_CGROUP_ARRAY
            | BPF_MAP_TYPE_ARRAY_OF_MAPS
            | BPF_MAP_TYPE_HASH_OF_MAPS
    )
}

/// Local storage maps: the key of an element command is an fd naming the
/// object the storage belongs to (a socket, an inode's file, a pidfd, a
/// cgroup directory), so the key buffer is an fd slot (`int` key).
pub fn key_is_fd(t: u32) -> bool {
    matches!(
        t,
        BPF_MAP_TYPE_SK_STORAGE
            | BPF_MAP_TYPE_INODE_STORAGE
            | BPF_MAP_TYPE_TASK_STORAGE
            | BPF_MAP_TYPE_CGRP_STORAGE
    )
}

/// Map-in-map types: `BPF_MAP_CREATE` reads `inner_map_fd`.
pub fn is_map_in_map(t: u32) -> bool {
    matches!(t, BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS)
}

/// Map types whose `BPF_MAP_UPDATE_ELEM` value (as written by user space) holds file descriptors
/// at fixed offsets (see [`value_fd_offsets`]). `BPF_MAP_TYPE_STRUCT_OPS` values also hold
/// program fds, but at BTF-defined offsets; it is *not* included here.
pub fn value_is_fd(t: u32) -> bool {
    is_fd_map(t)
        || matches!(
            t,
            BPF_MAP_TYPE_SOCKMAP
                | BPF_MAP_TYPE_SOCKHASH
                | BPF_MAP_TYPE_REUSEPORT_SOCKARRAY
                | BPF_MAP_TYPE_XSKMAP
                | BPF_MAP_TYPE_DEVMAP
                | BPF_MAP_TYPE_DEVMAP_HASH
                | BPF_MAP_TYPE_CPUMAP
        )
}

/// Offsets, inside one update value of `value_size` bytes, of the 32-bit fd fields the kernel
/// resolves on `BPF_MAP_UPDATE_ELEM`/`BPF_MAP_UPDATE_BATCH`:
///
/// * fd maps, sockmap/sockhash, reuseport sockarray, xskmap: the value itself (offset 0; sockmap
///   and reuseport accept a 4- or 8-byte value, the fd is the low 32 bits);
/// * devmap/devmap_hash (`struct bpf_devmap_val { u32 ifindex; int bpf_prog.fd; }`) and cpumap
///   (`struct bpf_cpumap_val { u32 qsize; int bpf_prog.fd; }`): offset 4 when `value_size >= 8`
///   (a value `<= 0` there means "no program").
///
/// Empty for every other type.
pub fn value_fd_offsets(t: u32, value_size: u32) -> &'static [usize] {
    match t {
        BPF_MAP_TYPE_DEVMAP | BPF_MAP_TYPE_DEVMAP_HASH | BPF_MAP_TYPE_CPUMAP => {
            if value_size >= 8 {
                &[4]
            } else {
                &[]
            }
        }
        _ if value_is_fd(t) => &[0],
        _ => &[],
    }
}

/// Types whose batch operations use the hash-table implementation (`__htab_map_lookup_and_delete_batch`),
/// whose `in_batch`/`out_batch` token is a 4-byte bucket index. Every other type uses
/// `generic_map_lookup_batch`, whose token is a key (`key_size` bytes).
pub fn has_u32_batch_token(t: u32) -> bool {
    matches!(
        t,
        BPF_MAP_TYPE_HASH
            | BPF_MAP_TYPE_PERCPU_HASH
            | BPF_MAP_TYPE_LRU_HASH
            | BPF_MAP_TYPE_LRU_PERCPU_HASH
            | BPF_MAP_TYPE_HASH_OF_MAPS
    )
}
