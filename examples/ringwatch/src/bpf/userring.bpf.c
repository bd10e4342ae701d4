// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * userring: a BPF_MAP_TYPE_USER_RINGBUF the loader produces into, and a
 * SEC("syscall") program (run with BPF_PROG_TEST_RUN) that drains it with
 * bpf_user_ringbuf_drain, adding up the u64 records into an array map.
 *
 * Only UAPI and libbpf headers: no vmlinux.h, no CO-RE.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 16 * 1024);
} user_ring SEC(".maps");

/* Layout shared with src/bin/userring.rs. */
struct totals {
	__u64 count;
	__u64 sum;
	__u64 bad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct totals);
} totals SEC(".maps");

static long on_sample(struct bpf_dynptr *dynptr, void *ctx)
{
	struct totals *t = ctx;
	__u64 v;

	if (bpf_dynptr_read(&v, sizeof(v), dynptr, 0, 0)) {
		t->bad++;
		return 0;
	}
	t->count++;
	t->sum += v;
	return 0;
}

SEC("syscall")
int drain(void *ctx)
{
	struct totals t = {};
	__u32 key = 0;
	struct totals *out;
	long n;

	n = bpf_user_ringbuf_drain(&user_ring, on_sample, &t, 0);
	out = bpf_map_lookup_elem(&totals, &key);
	if (!out)
		return -1;
	out->count += t.count;
	out->sum += t.sum;
	out->bad += t.bad;
	return n < 0 ? n : 0;
}
