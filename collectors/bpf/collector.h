/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every collector shares: the run context passed by BPF_PROG_TEST_RUN,
 * the record format of the `events` ring buffer, and the reads that record
 * what they touched. collectors/src/record.rs mirrors these layouts.
 *
 * A collector runs in one of three modes:
 *   MODE_ROOTS  only find where the walk starts (ctx->root), record nothing;
 *   MODE_PAGE   record the address of every guest page a read touched;
 *   MODE_DATA   record address, size and bytes of every read.
 * Each page (page mode) or each (address, size) (data mode) is recorded once
 * per run: a direct-mapped table in .bss remembers it with the run's
 * generation number, so it never needs clearing between runs. A collision
 * only costs a duplicate record (harmless: the host keeps one); a hash map
 * would cost a lookup and an update (~0.5 µs) on every read.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MODE_ROOTS 0
#define MODE_PAGE 1
#define MODE_DATA 2

#define STATUS_OK 0
#define STATUS_RING_FULL 1
#define STATUS_TOO_MANY 2
#define STATUS_NO_ROOT 3
#define STATUS_UNSUPPORTED 4

#define GUEST_PAGE 4096ULL
#define CHUNK 4096
#define QUEUE_LEN 65536

/* The BPF_PROG_TEST_RUN context, in and out. */
struct collect_ctx {
	__u64 mode;    /* in */
	__u64 gen;     /* in: non-zero, different for every run */
	__u64 root_in; /* in: a start address the proxy knows (modules) */
	__u64 root;    /* out: where the walk starts */
	__u64 records; /* out: records written */
	__u64 dropped; /* out: records lost to a full ring */
	__u64 visited; /* out: objects visited */
	__u64 status;  /* out: STATUS_* */
};

/* Every ring record starts with this; data mode appends `len` bytes. */
struct record_hdr {
	__u64 addr;
	__u32 len;
	__u32 pad;
};

struct chunk {
	struct record_hdr hdr;
	__u8 data[CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/*
 * Small data records are staged here and written to the ring in batches
 * of up to STAGE bytes: one ring write per ~200 fields instead of one each.
 */
#define STAGE 8192
#define STAGE_MAX_FIELD 64

struct stage {
	__u8 buf[STAGE + sizeof(struct record_hdr) + STAGE_MAX_FIELD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stage);
} staging SEC(".maps");

/* A buffer for array chunks (and their records). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct chunk);
} scratch SEC(".maps");

/* Per-run state, in .bss so that bpf_loop callbacks reach it. */
struct run_state {
	__u64 mode;
	__u64 gen;
	__u64 records;
	__u64 dropped;
	__u64 visited;
	__u64 status;
	__u64 qlen;
	__u64 last_page; /* the page recorded last: most reads share it */
	__u64 prev_page; /* the one before: a task's reads alternate between two */
	__u64 staged;	 /* bytes in `staging` */
};
struct run_state run;

#define SEEN_SLOTS 16384
/* Key and generation side by side: one cache line per lookup. */
struct seen_slot {
	__u64 key;
	__u64 gen;
};
struct seen_slot seen[SEEN_SLOTS];

static __always_inline int first_time(__u64 addr, __u64 len)
{
	__u64 key = addr ^ (len << 52);
	__u32 slot = ((key * 0x9E3779B97F4A7C15ULL) >> 50) & (SEEN_SLOTS - 1);

	if (seen[slot].key == key && seen[slot].gen == run.gen)
		return 0;
	seen[slot].key = key;
	seen[slot].gen = run.gen;
	return 1;
}

static __always_inline void emit(const void *rec, __u64 size)
{
	if (bpf_ringbuf_output(&events, (void *)rec, size, 0)) {
		run.dropped++;
		run.status = STATUS_RING_FULL;
	} else {
		run.records++;
	}
}

/* Writes the staged records to the ring. */
static __always_inline void flush(void)
{
	__u32 zero = 0;
	struct stage *s = bpf_map_lookup_elem(&staging, &zero);
	__u64 n = run.staged;

	run.staged = 0;
	if (!s || n == 0)
		return;
	if (n > STAGE)
		n = STAGE;
	if (bpf_ringbuf_output(&events, s->buf, n, 0)) {
		run.dropped++;
		run.status = STATUS_RING_FULL;
	}
}

/* Appends one data record (header, then `len` bytes from `copy`). */
static __always_inline void stage(__u64 addr, __u32 len, const void *copy)
{
	__u32 zero = 0;
	struct stage *s;
	__u64 at, wide = len; /* length and zero padding */

	if (run.staged + sizeof(struct record_hdr) + len > STAGE)
		flush();
	s = bpf_map_lookup_elem(&staging, &zero);
	if (!s)
		return;
	at = run.staged & (STAGE - 1);
	/* Plain stores, not helper calls: this runs for every field read. */
	*(__u64 *)(s->buf + at) = addr;
	*(__u64 *)(s->buf + at + 8) = wide;
	__builtin_memcpy(s->buf + at + 16, copy, len);
	run.staged += sizeof(struct record_hdr) + len;
	run.records++;
}

static __always_inline void note_page(__u64 page)
{
	struct record_hdr h = { .addr = page, .len = 0 };

	if (page == run.last_page || page == run.prev_page)
		return;
	run.prev_page = run.last_page;
	run.last_page = page;
	if (first_time(page, 0))
		emit(&h, sizeof(h));
}

/* Records the pages of [addr, addr + len) (at most two: len <= CHUNK). */
static __always_inline void note_pages(__u64 addr, __u64 len)
{
	__u64 first = addr & ~(GUEST_PAGE - 1);
	__u64 last = (addr + len - 1) & ~(GUEST_PAGE - 1);

	note_page(first);
	if (last != first)
		note_page(last);
}

/*
 * Records a read of [addr, addr + len) whose bytes now sit at `copy`.
 * `unique` says the walk reads this field once by construction (a field of
 * the object being visited), so data mode skips the `seen` check.
 */
static __always_inline void note(__u64 addr, __u32 len, const void *copy, int unique)
{
	if (run.mode == MODE_PAGE) {
		note_pages(addr, len);
		return;
	}
	if (run.mode != MODE_DATA || len > STAGE_MAX_FIELD || (!unique && !first_time(addr, len)))
		return;
	stage(addr, len, copy);
}

/* Reads a value of the destination's own type and records the read. */
#define READ_AS(dst, src_addr, unique)                                                    \
	({                                                                                \
		__u64 __a = (__u64)(src_addr);                                            \
		long __r = bpf_probe_read_kernel(&(dst), sizeof(dst), (const void *)__a); \
		if (!__r)                                                                 \
			note(__a, sizeof(dst), &(dst), unique);                           \
		__r;                                                                      \
	})
/* A read another step of the walk may repeat (a shared object). */
#define READ(dst, src_addr) READ_AS(dst, src_addr, 0)
/* A field of the object being visited: each object is visited once. */
#define READ_OWN(dst, src_addr) READ_AS(dst, src_addr, 1)

/* The address of a field of the object at `base`, offset relocated by CO-RE. */
#define FIELD(base, type, field) ((__u64)(base) + bpf_core_field_offset(type, field))

/* Reads a chunk of an array (up to CHUNK bytes) into scratch slot 1 and records it. */
static __always_inline struct chunk *read_chunk(__u64 addr, __u64 len)
{
	__u32 one = 1;
	struct chunk *c = bpf_map_lookup_elem(&scratch, &one);

	if (!c)
		return 0;
	if (len > CHUNK)
		len = CHUNK;
	if (len == 0)
		return 0;
	if (bpf_probe_read_kernel(c->data, len, (const void *)addr))
		return 0;
	if (run.mode == MODE_PAGE) {
		note_pages(addr, len);
	} else if (run.mode == MODE_DATA && first_time(addr, len)) {
		c->hdr.addr = addr;
		c->hdr.len = len;
		c->hdr.pad = 0;
		emit(c, sizeof(c->hdr) + len);
	}
	return c;
}

static __always_inline void begin(struct collect_ctx *ctx)
{
	run.mode = ctx->mode;
	run.gen = ctx->gen;
	run.records = 0;
	run.dropped = 0;
	run.visited = 0;
	run.status = STATUS_OK;
	run.qlen = 0;
	run.last_page = -1;
	run.prev_page = -1;
	run.staged = 0;
}

static __always_inline void end(struct collect_ctx *ctx)
{
	flush();
	ctx->records = run.records;
	ctx->dropped = run.dropped;
	ctx->visited = run.visited;
	ctx->status = run.status;
}

/* The group leader of the task running the collector: a live member of the task list. */
static __always_inline __u64 current_leader(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return (__u64)BPF_CORE_READ(task, group_leader);
}
