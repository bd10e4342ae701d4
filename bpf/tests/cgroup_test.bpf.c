// SPDX-License-Identifier: GPL-2.0
// The smallest cgroup program: the cgroup tests attach it to a marked
// cgroup (bpftool cgroup attach … ingress) and look for it there.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup_skb/ingress")
int telebpf_cg_in(struct __sk_buff *skb)
{
	return 1; /* let every packet through */
}

char LICENSE[] SEC("license") = "GPL";
