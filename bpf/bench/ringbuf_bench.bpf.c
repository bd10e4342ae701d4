// SPDX-License-Identifier: GPL-2.0
/*
 * Producer of `telebpf bench ringbuf` (cli/src/bench/ringbuf.rs).
 *
 * `rb_bench_produce` is a BPF_PROG_TYPE_SYSCALL program, run with
 * BPF_PROG_TEST_RUN: its context (struct rb_bench_ctx, passed in by the
 * bench) says how many records to submit and the sequence number of the
 * first. It reserves and submits that many 64-byte records into `rb_events`
 * with bpf_loop, each carrying bpf_ktime_get_ns() taken just before the
 * submit and its sequence number. Submits use flags 0 (the kernel's
 * adaptive wake-up), as ordinary tools do. The return value is the number
 * of records that could not be reserved (ring full).
 *
 * Only UAPI and libbpf headers: no vmlinux.h, no CO-RE, no global data (so
 * the object has no .bss/.data maps).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} rb_events SEC(".maps");

/* Must stay 64 bytes: the bench's record size. */
struct rb_bench_record {
	__u64 ts_ns;
	__u64 seq;
	__u8 pad[48];
};

/* The BPF_PROG_TEST_RUN context. */
struct rb_bench_ctx {
	__u64 count;
	__u64 first_seq;
};

struct loop_state {
	__u64 first_seq;
	__u64 dropped;
};

static long submit_one(__u64 i, void *data)
{
	struct loop_state *st = data;
	struct rb_bench_record *r;

	r = bpf_ringbuf_reserve(&rb_events, sizeof(*r), 0);
	if (!r) {
		st->dropped++;
		return 0;
	}
	r->seq = st->first_seq + i;
	__builtin_memset(r->pad, 0, sizeof(r->pad));
	r->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(r, 0);
	return 0;
}

SEC("syscall")
int rb_bench_produce(struct rb_bench_ctx *ctx)
{
	struct loop_state st = { .first_seq = ctx->first_seq, .dropped = 0 };
	__u64 count = ctx->count;

	if (count > (1 << 23))
		count = 1 << 23;
	bpf_loop(count, submit_one, &st, 0);
	return st.dropped;
}
