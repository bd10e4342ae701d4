//! Program type numbers (`enum bpf_prog_type`).
//!
//! Values of `enum bpf_prog_type` from the UAPI header `linux/bpf.h`.

/// `BPF_PROG_TYPE_UNSPEC` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_UNSPEC: u32 = 0;
/// `BPF_PROG_TYPE_SOCKET_FILTER` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_KPROBE` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_SCHED_CLS` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_PROG_TYPE_SCHED_ACT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SCHED_ACT: u32 = 4;
/// `BPF_PROG_TYPE_TRACEPOINT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
/// `BPF_PROG_TYPE_XDP` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_PROG_TYPE_PERF_EVENT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
/// `BPF_PROG_TYPE_CGROUP_SKB` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `BPF_PROG_TYPE_CGROUP_SOCK` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
/// `BPF_PROG_TYPE_LWT_IN` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LWT_IN: u32 = 10;
/// `BPF_PROG_TYPE_LWT_OUT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LWT_OUT: u32 = 11;
/// `BPF_PROG_TYPE_LWT_XMIT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LWT_XMIT: u32 = 12;
/// `BPF_PROG_TYPE_SOCK_OPS` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
/// `BPF_PROG_TYPE_SK_SKB` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SK_SKB: u32 = 14;
/// `BPF_PROG_TYPE_CGROUP_DEVICE` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_PROG_TYPE_SK_MSG` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SK_MSG: u32 = 16;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_PROG_TYPE_LWT_SEG6LOCAL` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LWT_SEG6LOCAL: u32 = 19;
/// `BPF_PROG_TYPE_LIRC_MODE2` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LIRC_MODE2: u32 = 20;
/// `BPF_PROG_TYPE_SK_REUSEPORT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
/// `BPF_PROG_TYPE_FLOW_DISSECTOR` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_FLOW_DISSECTOR: u32 = 22;
/// `BPF_PROG_TYPE_CGROUP_SYSCTL` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_SYSCTL: u32 = 23;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE: u32 = 24;
/// `BPF_PROG_TYPE_CGROUP_SOCKOPT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_CGROUP_SOCKOPT: u32 = 25;
/// `BPF_PROG_TYPE_TRACING` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_TRACING: u32 = 26;
/// `BPF_PROG_TYPE_STRUCT_OPS` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_STRUCT_OPS: u32 = 27;
/// `BPF_PROG_TYPE_EXT` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_EXT: u32 = 28;
/// `BPF_PROG_TYPE_LSM` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_LSM: u32 = 29;
/// `BPF_PROG_TYPE_SK_LOOKUP` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
/// `BPF_PROG_TYPE_SYSCALL` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_SYSCALL: u32 = 31;
/// `BPF_PROG_TYPE_NETFILTER` (`enum bpf_prog_type`).
pub const BPF_PROG_TYPE_NETFILTER: u32 = 32;

/// The program types (`enum bpf_prog_type`) by name: the constant's name without `BPF_PROG_TYPE_`, in lower
/// case, as bpftool and libbpf spell them (`socket_filter`). Aliases share a
/// number; the first entry of a number is its canonical name.
pub const NAMES: &[(&str, u32)] = &[
    ("unspec", BPF_PROG_TYPE_UNSPEC),
    ("socket_filter", BPF_PROG_TYPE_SOCKET_FILTER),
    ("kprobe", BPF_PROG_TYPE_KPROBE),
    ("sched_cls", BPF_PROG_TYPE_SCHED_CLS),
    ("sched_act", BPF_PROG_TYPE_SCHED_ACT),
    ("tracepoint", BPF_PROG_TYPE_TRACEPOINT),
    ("xdp", BPF_PROG_TYPE_XDP),
    ("perf_event", BPF_PROG_TYPE_PERF_EVENT),
    ("cgroup_skb", BPF_PROG_TYPE_CGROUP_SKB),
    ("cgroup_sock", BPF_PROG_TYPE_CGROUP_SOCK),
    ("lwt_in", BPF_PROG_TYPE_LWT_IN),
    ("lwt_out", BPF_PROG_TYPE_LWT_OUT),
    ("lwt_xmit", BPF_PROG_TYPE_LWT_XMIT),
    ("sock_ops", BPF_PROG_TYPE_SOCK_OPS),
    ("sk_skb", BPF_PROG_TYPE_SK_SKB),
    ("cgroup_device", BPF_PROG_TYPE_CGROUP_DEVICE),
    ("sk_msg", BPF_PROG_TYPE_SK_MSG),
    ("raw_tracepoint", BPF_PROG_TYPE_RAW_TRACEPOINT),
    ("cgroup_sock_addr", BPF_PROG_TYPE_CGROUP_SOCK_ADDR),
    ("lwt_seg6local", BPF_PROG_TYPE_LWT_SEG6LOCAL),
    ("lirc_mode2", BPF_PROG_TYPE_LIRC_MODE2),
    ("sk_reuseport", BPF_PROG_TYPE_SK_REUSEPORT),
    ("flow_dissector", BPF_PROG_TYPE_FLOW_DISSECTOR),
    ("cgroup_sysctl", BPF_PROG_TYPE_CGROUP_SYSCTL),
    (
        "raw_tracepoint_writable",
        BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE,
    ),
    ("cgroup_sockopt", BPF_PROG_TYPE_CGROUP_SOCKOPT),
    ("tracing", BPF_PROG_TYPE_TRACING),
    ("struct_ops", BPF_PROG_TYPE_STRUCT_OPS),
    ("ext", BPF_PROG_TYPE_EXT),
    ("lsm", BPF_PROG_TYPE_LSM),
    ("sk_lookup", BPF_PROG_TYPE_SK_LOOKUP),
    ("syscall", BPF_PROG_TYPE_SYSCALL),
    ("netfilter", BPF_PROG_TYPE_NETFILTER),
];

/// The number of a lower-case name from [`NAMES`].
pub fn by_name(name: &str) -> Option<u32> {
    crate::names::by_name(NAMES, name)
}

/// The canonical lower-case name of a number, if this build knows it.
pub fn short_name(value: u32) -> Option<&'static str> {
    crate::names::short_name(NAMES, value)
}
