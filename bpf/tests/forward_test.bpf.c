// SPDX-License-Identifier: GPL-2.0
/*
 * Test object of the telebpf end-to-end tests (tests/, see docs/TESTING.md).
 *
 * `bpftool prog loadall` of this object, run as `nobody` through telebpf,
 * must create in the proxy's kernel:
 *   - the tracepoint program `tb_getpid`,
 *   - the hash map `tb_counts`,
 *   - the ring buffer `tb_events` (BPF_MAP_TYPE_RINGBUF),
 *   - the `.bss` array map of the global `tb_hits`, which the program writes.
 * The tests look these names up, so keep them in sync with tests/src/lib.rs.
 * Only UAPI and libbpf headers are used: no vmlinux.h, no CO-RE.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} tb_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} tb_events SEC(".maps");

/* Lives in the object's .bss map; written by the program below. */
__u64 tb_hits = 0;

struct tb_event {
	__u32 pid;
	__u32 hits;
};

SEC("tracepoint/syscalls/sys_enter_getpid")
int tb_getpid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *count;
	struct tb_event *event;

	tb_hits++;

	count = bpf_map_lookup_elem(&tb_counts, &pid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&tb_counts, &pid, &one, BPF_ANY);

	event = bpf_ringbuf_reserve(&tb_events, sizeof(*event), 0);
	if (event) {
		event->pid = pid;
		event->hits = (__u32)tb_hits;
		bpf_ringbuf_submit(event, 0);
	}
	return 0;
}
