//! Link type numbers (`enum bpf_link_type`), as reported in `bpf_link_info.type`.
//!
//! Values of `enum bpf_link_type` from the UAPI header `linux/bpf.h`.

/// `BPF_LINK_TYPE_UNSPEC` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_UNSPEC: u32 = 0;
/// `BPF_LINK_TYPE_RAW_TRACEPOINT` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_RAW_TRACEPOINT: u32 = 1;
/// `BPF_LINK_TYPE_TRACING` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_TRACING: u32 = 2;
/// `BPF_LINK_TYPE_CGROUP` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_CGROUP: u32 = 3;
/// `BPF_LINK_TYPE_ITER` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_ITER: u32 = 4;
/// `BPF_LINK_TYPE_NETNS` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_NETNS: u32 = 5;
/// `BPF_LINK_TYPE_XDP` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_PERF_EVENT` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
/// `BPF_LINK_TYPE_KPROBE_MULTI` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_KPROBE_MULTI: u32 = 8;
/// `BPF_LINK_TYPE_STRUCT_OPS` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_STRUCT_OPS: u32 = 9;
/// `BPF_LINK_TYPE_NETFILTER` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_NETFILTER: u32 = 10;
/// `BPF_LINK_TYPE_TCX` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_TCX: u32 = 11;
/// `BPF_LINK_TYPE_UPROBE_MULTI` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_UPROBE_MULTI: u32 = 12;
/// `BPF_LINK_TYPE_NETKIT` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_NETKIT: u32 = 13;
/// `BPF_LINK_TYPE_SOCKMAP` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_SOCKMAP: u32 = 14;
/// `BPF_LINK_TYPE_TRACING_MULTI` (`enum bpf_link_type`).
pub const BPF_LINK_TYPE_TRACING_MULTI: u32 = 15;
