// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The eBPF side of the matrix tools (tests/c/matrix-tool.c, a static C
 * libbpf program; tests/go/matrix-tool, a cilium/ebpf program): on every
 * exec() of a process whose comm is `matrix_mark` (a .rodata setting the
 * loader writes before load), send a record through a BPF ring buffer AND
 * through a perf event array, and count it in a .bss variable the loader
 * reads (the C tool through its mmap of the map).
 *
 * The names are the tools' contract: keep them in sync with
 * tests/c/matrix-tool.c and tests/go/matrix-tool/main.go.
 * Only UAPI and libbpf headers: no vmlinux.h, no CO-RE.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define COMM_LEN 16

/* A record of either buffer: 20 bytes, no padding. */
struct matrix_event {
	__u32 pid;
	char comm[COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} matrix_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} matrix_perf SEC(".maps");

/* .rodata: the comm to report, set before load. */
const volatile char matrix_mark[COMM_LEN] = {};

/* .bss: every marked exec this program has seen. */
__u64 matrix_hits = 0;

static __always_inline int is_marked(const char *comm)
{
	for (int i = 0; i < COMM_LEN; i++) {
		if (comm[i] != matrix_mark[i])
			return 0;
		if (comm[i] == '\0')
			return 1;
	}
	return 1;
}

/* After exec: `comm` is already the new program's name. */
SEC("tracepoint/sched/sched_process_exec")
int matrix_exec(void *ctx)
{
	struct matrix_event e = {};
	struct matrix_event *slot;

	bpf_get_current_comm(e.comm, sizeof(e.comm));
	if (!is_marked(e.comm))
		return 0;
	e.pid = bpf_get_current_pid_tgid() >> 32;

	/* Counted before it is sent: a reader that got the record sees it. */
	__sync_fetch_and_add(&matrix_hits, 1);

	slot = bpf_ringbuf_reserve(&matrix_ring, sizeof(*slot), 0);
	if (slot) {
		*slot = e;
		bpf_ringbuf_submit(slot, 0);
	}
	bpf_perf_event_output(ctx, &matrix_perf, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
