// SPDX-License-Identifier: Apache-2.0
/*
 * The proxy's own kernel-memory reader: there is no /proc/kcore and no
 * kernel module to read guest kernel memory with, so the proxy writes a list
 * of (address, length) ranges into the mmapable `ranges` map and runs this
 * program once; it copies each range with bpf_probe_read_kernel into the
 * matching slot of the mmapable `slots` map and marks whether it could.
 * Both bulk-page batches and per-pointer reads go through it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define MAX_RANGES 2048
#define SLOT 4096

struct read_range {
	__u64 addr;
	__u32 len;
	__u32 readable;
};

struct read_slot {
	__u8 bytes[SLOT];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RANGES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct read_range);
} ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RANGES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct read_slot);
} slots SEC(".maps");

struct read_ctx {
	__u32 count;
	__u32 unreadable;
};

static long read_one(__u32 i, struct read_ctx *c)
{
	struct read_range *r = bpf_map_lookup_elem(&ranges, &i);
	struct read_slot *s = bpf_map_lookup_elem(&slots, &i);
	__u32 len;

	if (!r || !s)
		return 1;
	len = r->len;
	if (len > SLOT)
		len = SLOT;
	r->readable = len && !bpf_probe_read_kernel(s->bytes, len, (const void *)r->addr);
	if (!r->readable)
		c->unreadable++;
	return 0;
}

SEC("syscall")
int read_kernel(struct read_ctx *ctx)
{
	struct read_ctx c = { .count = ctx->count };

	if (c.count > MAX_RANGES)
		return -1;
	bpf_loop(c.count, read_one, &c, 0);
	ctx->unreadable = c.unreadable;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
