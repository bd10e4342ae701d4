// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ringwatch: on every exec() of a process whose comm is `target_comm`
 * (a .rodata setting the loader writes before load), send an event through
 * a BPF ring buffer AND through a perf event array, and count it in a .bss
 * variable the loader reads through its mmap of the map.
 *
 * The static C and Go tools of the tests' matrix (tests/c/matrix-tool.c,
 * tests/go/matrix-tool) load this same program: keep its names in sync.
 *
 * Only UAPI and libbpf headers: no vmlinux.h, no CO-RE.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define COMM_LEN 16

/* Layout shared with src/main.rs (`Event::parse`). */
struct event {
	__u32 pid;
	char comm[COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ring_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

/* .rodata: set through the skeleton before load. */
const volatile char target_comm[COMM_LEN] = {};

/* .bss: every matching exec this program has seen. */
__u64 event_count = 0;

static __always_inline int comm_matches(const char *comm)
{
	for (int i = 0; i < COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return 0;
		if (comm[i] == '\0')
			return 1;
	}
	return 1;
}

/* After exec: `comm` is already the new program's name. */
SEC("tp/sched/sched_process_exec")
int handle_exec(void *ctx)
{
	struct event e = {};
	struct event *slot;

	bpf_get_current_comm(e.comm, sizeof(e.comm));
	if (!comm_matches(e.comm))
		return 0;
	e.pid = bpf_get_current_pid_tgid() >> 32;

	__sync_fetch_and_add(&event_count, 1);

	slot = bpf_ringbuf_reserve(&ring_events, sizeof(*slot), 0);
	if (slot) {
		*slot = e;
		bpf_ringbuf_submit(slot, 0);
	}
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
