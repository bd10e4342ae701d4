// SPDX-License-Identifier: GPL-2.0
/*
 * Test object of the telebpf end-to-end tests (tests/, see docs/TESTING.md).
 *
 * A do-nothing BPF iterator over maps. `bpftool iter pin` of this object
 * creates a BPF link (BPF_LINK_CREATE) and pins it, which gives the tests a
 * known entry in `bpftool link list` without attaching anything that runs
 * on its own. Only UAPI and libbpf headers are used: no vmlinux.h.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/bpf_map")
int tb_iter_maps(void *ctx)
{
	return 0;
}
