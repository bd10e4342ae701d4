// SPDX-License-Identifier: GPL-2.0
/*
 * Test object of the telebpf end-to-end tests (tests/, see docs/TESTING.md).
 *
 * Two do-nothing networking programs: an XDP program and a tc classifier,
 * both passing every packet. The guest-interface tests attach them to the
 * guest's (or the proxy's network namespace's) `lo` over relayed
 * rtnetlink (`bpftool net attach xdpgeneric`, libbpf's `bpf_xdp_attach`
 * and tc hook API) and check where they landed. Only UAPI and libbpf
 * headers are used: no vmlinux.h.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int tb_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int tb_tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
