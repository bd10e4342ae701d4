//! Attach type numbers (`enum bpf_attach_type`).
//!
//! Values of `enum bpf_attach_type` from the UAPI header `linux/bpf.h`.

/// `BPF_CGROUP_INET_INGRESS` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
/// `BPF_CGROUP_INET_EGRESS` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// `BPF_CGROUP_INET_SOCK_CREATE` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
/// `BPF_CGROUP_SOCK_OPS` (`enum bpf_attach_type`).
pub const BPF_CGROUP_SOCK_OPS: u32 = 3;
/// `BPF_SK_SKB_STREAM_PARSER` (`enum bpf_attach_type`).
pub const BPF_SK_SKB_STREAM_PARSER: u32 = 4;
/// `BPF_SK_SKB_STREAM_VERDICT` (`enum bpf_attach_type`).
pub const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
/// `BPF_CGROUP_DEVICE` (`enum bpf_attach_type`).
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// `BPF_SK_MSG_VERDICT` (`enum bpf_attach_type`).
pub const BPF_SK_MSG_VERDICT: u32 = 7;
/// `BPF_CGROUP_INET4_BIND` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET4_BIND: u32 = 8;
/// `BPF_CGROUP_INET6_BIND` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET6_BIND: u32 = 9;
/// `BPF_CGROUP_INET4_CONNECT` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
/// `BPF_CGROUP_INET6_CONNECT` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// `BPF_CGROUP_INET4_POST_BIND` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET4_POST_BIND: u32 = 12;
/// `BPF_CGROUP_INET6_POST_BIND` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET6_POST_BIND: u32 = 13;
/// `BPF_CGROUP_UDP4_SENDMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
/// `BPF_CGROUP_UDP6_SENDMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
/// `BPF_LIRC_MODE2` (`enum bpf_attach_type`).
pub const BPF_LIRC_MODE2: u32 = 16;
/// `BPF_FLOW_DISSECTOR` (`enum bpf_attach_type`).
pub const BPF_FLOW_DISSECTOR: u32 = 17;
/// `BPF_CGROUP_SYSCTL` (`enum bpf_attach_type`).
pub const BPF_CGROUP_SYSCTL: u32 = 18;
/// `BPF_CGROUP_UDP4_RECVMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
/// `BPF_CGROUP_UDP6_RECVMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;
/// `BPF_CGROUP_GETSOCKOPT` (`enum bpf_attach_type`).
pub const BPF_CGROUP_GETSOCKOPT: u32 = 21;
/// `BPF_CGROUP_SETSOCKOPT` (`enum bpf_attach_type`).
pub const BPF_CGROUP_SETSOCKOPT: u32 = 22;
/// `BPF_TRACE_RAW_TP` (`enum bpf_attach_type`).
pub const BPF_TRACE_RAW_TP: u32 = 23;
/// `BPF_TRACE_FENTRY` (`enum bpf_attach_type`).
pub const BPF_TRACE_FENTRY: u32 = 24;
/// `BPF_TRACE_FEXIT` (`enum bpf_attach_type`).
pub const BPF_TRACE_FEXIT: u32 = 25;
/// `BPF_MODIFY_RETURN` (`enum bpf_attach_type`).
pub const BPF_MODIFY_RETURN: u32 = 26;
/// `BPF_LSM_MAC` (`enum bpf_attach_type`).
pub const BPF_LSM_MAC: u32 = 27;
/// `BPF_TRACE_ITER` (`enum bpf_attach_type`).
pub const BPF_TRACE_ITER: u32 = 28;
/// `BPF_CGROUP_INET4_GETPEERNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
/// `BPF_CGROUP_INET6_GETPEERNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;
/// `BPF_CGROUP_INET4_GETSOCKNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET4_GETSOCKNAME: u32 = 31;
/// `BPF_CGROUP_INET6_GETSOCKNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET6_GETSOCKNAME: u32 = 32;
/// `BPF_XDP_DEVMAP` (`enum bpf_attach_type`).
pub const BPF_XDP_DEVMAP: u32 = 33;
/// `BPF_CGROUP_INET_SOCK_RELEASE` (`enum bpf_attach_type`).
pub const BPF_CGROUP_INET_SOCK_RELEASE: u32 = 34;
/// `BPF_XDP_CPUMAP` (`enum bpf_attach_type`).
pub const BPF_XDP_CPUMAP: u32 = 35;
/// `BPF_SK_LOOKUP` (`enum bpf_attach_type`).
pub const BPF_SK_LOOKUP: u32 = 36;
/// `BPF_XDP` (`enum bpf_attach_type`).
pub const BPF_XDP: u32 = 37;
/// `BPF_SK_SKB_VERDICT` (`enum bpf_attach_type`).
pub const BPF_SK_SKB_VERDICT: u32 = 38;
/// `BPF_SK_REUSEPORT_SELECT` (`enum bpf_attach_type`).
pub const BPF_SK_REUSEPORT_SELECT: u32 = 39;
/// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (`enum bpf_attach_type`).
pub const BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
/// `BPF_PERF_EVENT` (`enum bpf_attach_type`).
pub const BPF_PERF_EVENT: u32 = 41;
/// `BPF_TRACE_KPROBE_MULTI` (`enum bpf_attach_type`).
pub const BPF_TRACE_KPROBE_MULTI: u32 = 42;
/// `BPF_LSM_CGROUP` (`enum bpf_attach_type`).
pub const BPF_LSM_CGROUP: u32 = 43;
/// `BPF_STRUCT_OPS` (`enum bpf_attach_type`).
pub const BPF_STRUCT_OPS: u32 = 44;
/// `BPF_NETFILTER` (`enum bpf_attach_type`).
pub const BPF_NETFILTER: u32 = 45;
/// `BPF_TCX_INGRESS` (`enum bpf_attach_type`).
pub const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` (`enum bpf_attach_type`).
pub const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_TRACE_UPROBE_MULTI` (`enum bpf_attach_type`).
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_CGROUP_UNIX_CONNECT` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UNIX_SENDMSG: u32 = 50;
/// `BPF_CGROUP_UNIX_RECVMSG` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UNIX_RECVMSG: u32 = 51;
/// `BPF_CGROUP_UNIX_GETPEERNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UNIX_GETPEERNAME: u32 = 52;
/// `BPF_CGROUP_UNIX_GETSOCKNAME` (`enum bpf_attach_type`).
pub const BPF_CGROUP_UNIX_GETSOCKNAME: u32 = 53;
/// `BPF_NETKIT_PRIMARY` (`enum bpf_attach_type`).
pub const BPF_NETKIT_PRIMARY: u32 = 54;
/// `BPF_NETKIT_PEER` (`enum bpf_attach_type`).
pub const BPF_NETKIT_PEER: u32 = 55;
/// `BPF_TRACE_KPROBE_SESSION` (`enum bpf_attach_type`).
pub const BPF_TRACE_KPROBE_SESSION: u32 = 56;
/// `BPF_TRACE_UPROBE_SESSION` (`enum bpf_attach_type`).
pub const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `BPF_TRACE_FSESSION` (`enum bpf_attach_type`).
pub const BPF_TRACE_FSESSION: u32 = 58;
/// `BPF_TRACE_FENTRY_MULTI` (`enum bpf_attach_type`).
pub const BPF_TRACE_FENTRY_MULTI: u32 = 59;
/// `BPF_TRACE_FEXIT_MULTI` (`enum bpf_attach_type`).
pub const BPF_TRACE_FEXIT_MULTI: u32 = 60;
/// `BPF_TRACE_FSESSION_MULTI` (`enum bpf_attach_type`).
pub const BPF_TRACE_FSESSION_MULTI: u32 = 61;

/// The attach types (`enum bpf_attach_type`) by name: the constant's name without `BPF_`, in lower
/// case, as bpftool and libbpf spell them (`cgroup_inet_egress`). Aliases share a
/// number; the first entry of a number is its canonical name.
pub const NAMES: &[(&str, u32)] = &[
    ("cgroup_inet_ingress", BPF_CGROUP_INET_INGRESS),
    ("cgroup_inet_egress", BPF_CGROUP_INET_EGRESS),
    ("cgroup_inet_sock_create", BPF_CGROUP_INET_SOCK_CREATE),
    ("cgroup_sock_ops", BPF_CGROUP_SOCK_OPS),
    ("sk_skb_stream_parser", BPF_SK_SKB_STREAM_PARSER),
    ("sk_skb_stream_verdict", BPF_SK_SKB_STREAM_VERDICT),
    ("cgroup_device", BPF_CGROUP_DEVICE),
    ("sk_msg_verdict", BPF_SK_MSG_VERDICT),
    ("cgroup_inet4_bind", BPF_CGROUP_INET4_BIND),
    ("cgroup_inet6_bind", BPF_CGROUP_INET6_BIND),
    ("cgroup_inet4_connect", BPF_CGROUP_INET4_CONNECT),
    ("cgroup_inet6_connect", BPF_CGROUP_INET6_CONNECT),
    ("cgroup_inet4_post_bind", BPF_CGROUP_INET4_POST_BIND),
    ("cgroup_inet6_post_bind", BPF_CGROUP_INET6_POST_BIND),
    ("cgroup_udp4_sendmsg", BPF_CGROUP_UDP4_SENDMSG),
    ("cgroup_udp6_sendmsg", BPF_CGROUP_UDP6_SENDMSG),
    ("lirc_mode2", BPF_LIRC_MODE2),
    ("flow_dissector", BPF_FLOW_DISSECTOR),
    ("cgroup_sysctl", BPF_CGROUP_SYSCTL),
    ("cgroup_udp4_recvmsg", BPF_CGROUP_UDP4_RECVMSG),
    ("cgroup_udp6_recvmsg", BPF_CGROUP_UDP6_RECVMSG),
    ("cgroup_getsockopt", BPF_CGROUP_GETSOCKOPT),
    ("cgroup_setsockopt", BPF_CGROUP_SETSOCKOPT),
    ("trace_raw_tp", BPF_TRACE_RAW_TP),
    ("trace_fentry", BPF_TRACE_FENTRY),
    ("trace_fexit", BPF_TRACE_FEXIT),
    ("modify_return", BPF_MODIFY_RETURN),
    ("lsm_mac", BPF_LSM_MAC),
    ("trace_iter", BPF_TRACE_ITER),
    ("cgroup_inet4_getpeername", BPF_CGROUP_INET4_GETPEERNAME),
    ("cgroup_inet6_getpeername", BPF_CGROUP_INET6_GETPEERNAME),
    ("cgroup_inet4_getsockname", BPF_CGROUP_INET4_GETSOCKNAME),
    ("cgroup_inet6_getsockname", BPF_CGROUP_INET6_GETSOCKNAME),
    ("xdp_devmap", BPF_XDP_DEVMAP),
    ("cgroup_inet_sock_release", BPF_CGROUP_INET_SOCK_RELEASE),
    ("xdp_cpumap", BPF_XDP_CPUMAP),
    ("sk_lookup", BPF_SK_LOOKUP),
    ("xdp", BPF_XDP),
    ("sk_skb_verdict", BPF_SK_SKB_VERDICT),
    ("sk_reuseport_select", BPF_SK_REUSEPORT_SELECT),
    (
        "sk_reuseport_select_or_migrate",
        BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    ),
    ("perf_event", BPF_PERF_EVENT),
    ("trace_kprobe_multi", BPF_TRACE_KPROBE_MULTI),
    ("lsm_cgroup", BPF_LSM_CGROUP),
    ("struct_ops", BPF_STRUCT_OPS),
    ("netfilter", BPF_NETFILTER),
    ("tcx_ingress", BPF_TCX_INGRESS),
    ("tcx_egress", BPF_TCX_EGRESS),
    ("trace_uprobe_multi", BPF_TRACE_UPROBE_MULTI),
    ("cgroup_unix_connect", BPF_CGROUP_UNIX_CONNECT),
    ("cgroup_unix_sendmsg", BPF_CGROUP_UNIX_SENDMSG),
    ("cgroup_unix_recvmsg", BPF_CGROUP_UNIX_RECVMSG),
    ("cgroup_unix_getpeername", BPF_CGROUP_UNIX_GETPEERNAME),
    ("cgroup_unix_getsockname", BPF_CGROUP_UNIX_GETSOCKNAME),
    ("netkit_primary", BPF_NETKIT_PRIMARY),
    ("netkit_peer", BPF_NETKIT_PEER),
    ("trace_kprobe_session", BPF_TRACE_KPROBE_SESSION),
    ("trace_uprobe_session", BPF_TRACE_UPROBE_SESSION),
    ("trace_fsession", BPF_TRACE_FSESSION),
    ("trace_fentry_multi", BPF_TRACE_FENTRY_MULTI),
    ("trace_fexit_multi", BPF_TRACE_FEXIT_MULTI),
    ("trace_fsession_multi", BPF_TRACE_FSESSION_MULTI),
];

/// The attach type a program of `prog_type` loaded with
/// `expected_attach_type` is bound to, for the program types whose
/// `expected_attach_type` the kernel uses; `None` where it ignores the
/// field (tracepoint, perf_event, raw tracepoint, socket filter, tc, …),
/// requires it to be 0 (ext, syscall) or gives it another meaning
/// (struct_ops: the index of the member the program implements).
///
/// From the kernel's `bpf_prog_load_fixup_attach_type()` (cgroup sock and
/// sk_reuseport programs loaded with 0 get a default),
/// `bpf_prog_load_check_attach()` (cgroup, sk_lookup, sk_reuseport,
/// netfilter), the verifier (tracing and LSM programs must name their
/// attach type; XDP programs for devmap/cpumap entries) and link creation
/// (a kprobe program's multi/session/uprobe-multi type; 0 means a plain
/// kprobe through a perf event).
pub fn bound_at_load(prog_type: u32, expected_attach_type: u32) -> Option<u32> {
    use crate::prog_type::*;
    let eat = expected_attach_type;
    match prog_type {
        BPF_PROG_TYPE_TRACING
        | BPF_PROG_TYPE_LSM
        | BPF_PROG_TYPE_CGROUP_SOCK_ADDR
        | BPF_PROG_TYPE_CGROUP_SKB
        | BPF_PROG_TYPE_CGROUP_SOCKOPT
        | BPF_PROG_TYPE_SK_LOOKUP
        | BPF_PROG_TYPE_NETFILTER => Some(eat),
        BPF_PROG_TYPE_CGROUP_SOCK if eat == 0 => Some(BPF_CGROUP_INET_SOCK_CREATE),
        BPF_PROG_TYPE_CGROUP_SOCK => Some(eat),
        BPF_PROG_TYPE_SK_REUSEPORT if eat == 0 => Some(BPF_SK_REUSEPORT_SELECT),
        BPF_PROG_TYPE_SK_REUSEPORT => Some(eat),
        BPF_PROG_TYPE_KPROBE | BPF_PROG_TYPE_XDP if eat != 0 => Some(eat),
        _ => None,
    }
}

/// The number of a lower-case name from [`NAMES`].
pub fn by_name(name: &str) -> Option<u32> {
    crate::names::by_name(NAMES, name)
}

/// The canonical lower-case name of a number, if this build knows it.
pub fn short_name(value: u32) -> Option<&'static str> {
    crate::names::short_name(NAMES, value)
}
