// SPDX-License-Identifier: Apache-2.0
/*
 * The static C libbpf tool of the matrix (issue 15): what a vendor's
 * statically linked build of a libbpf tool does, built by the tests with
 * `cc -static … -lbpf -lelf -lz` against Debian's libbpf-dev and a
 * `bpftool gen skeleton` header of the program of examples/ringwatch
 * (src/bpf/ringwatch.bpf.c; the object is embedded, the binary needs no file
 * of its own at run time).
 *
 *     matrix-tool MARK COUNT [TIMEOUT_MS]
 *
 * It writes MARK into the program's .rodata through the skeleton, loads,
 * opens a ring buffer (ring_buffer__new) and a perf buffer
 * (perf_buffer__new), attaches the tracepoint sched/sched_process_exec and
 * prints "ready". Then, for every exec of a process whose comm is MARK, one
 * line per record received and the program's .bss counter read through the
 * skeleton's mmap of the .bss map:
 *
 *     ringbuf MARK pid N
 *     perfbuf MARK pid N
 *     bss MARK hits N
 *
 * It exits 0 once each buffer has delivered COUNT records (COUNT 0: never),
 * or on SIGINT/SIGTERM, destroying everything (buffers, links, maps, the
 * program) first; 2 if TIMEOUT_MS (default 30000, 0: none) passes first;
 * 1 on any error, with one line on stderr.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/libbpf.h>

#include "ringwatch.skel.h"

#define COMM_LEN 16

/* struct event of examples/ringwatch/src/bpf/ringwatch.bpf.c. */
struct event {
	uint32_t pid;
	char comm[COMM_LEN];
};

struct state {
	struct ringwatch *skel;
	unsigned long ring_seen;
	unsigned long perf_seen;
	unsigned long malformed;
	unsigned long lost;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* libbpf's warnings only: its info lines would mix with the records. */
static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level != LIBBPF_WARN)
		return 0;
	return vfprintf(stderr, fmt, args);
}

/* The .bss counter, read through the skeleton's mmap of the .bss map. */
static unsigned long long hits(const struct state *st)
{
	return *(volatile __u64 *)&st->skel->bss->event_count;
}

static void record(struct state *st, const char *kind, const void *data, size_t size,
		   unsigned long *seen)
{
	struct event e;

	if (size < sizeof(e)) {
		fprintf(stderr, "matrix-tool: malformed %s record of %zu bytes\n", kind, size);
		st->malformed++;
		return;
	}
	memcpy(&e, data, sizeof(e));
	e.comm[COMM_LEN - 1] = '\0';
	printf("%s %s pid %u\n", kind, e.comm, e.pid);
	printf("bss %s hits %llu\n", e.comm, hits(st));
	fflush(stdout);
	(*seen)++;
}

static int on_ring(void *ctx, void *data, size_t size)
{
	struct state *st = ctx;

	record(st, "ringbuf", data, size, &st->ring_seen);
	return 0;
}

static void on_perf(void *ctx, int cpu, void *data, __u32 size)
{
	struct state *st = ctx;

	(void)cpu;
	record(st, "perfbuf", data, size, &st->perf_seen);
}

static void on_lost(void *ctx, int cpu, __u64 n)
{
	struct state *st = ctx;

	fprintf(stderr, "matrix-tool: %llu perf records lost on cpu %d\n", (unsigned long long)n,
		cpu);
	st->lost += n;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_ulong(const char *s, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno || *s == '\0' || *end != '\0' ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	struct state st = { 0 };
	unsigned long count, timeout_ms = 30000;
	struct sigaction sa;
	long long deadline;
	int err, status = 1;
	/* MATRIX_TOOL_POLL set: wait on the ring buffer with poll(2). */
	int use_poll = getenv("MATRIX_TOOL_POLL") != NULL;

	if (argc < 3 || argc > 4 || parse_ulong(argv[2], &count) ||
	    (argc == 4 && parse_ulong(argv[3], &timeout_ms))) {
		fprintf(stderr, "usage: %s MARK COUNT [TIMEOUT_MS]\n", argv[0]);
		return 1;
	}
	if (argv[1][0] == '\0' || strlen(argv[1]) >= COMM_LEN) {
		fprintf(stderr, "matrix-tool: MARK must be 1 to %d bytes\n", COMM_LEN - 1);
		return 1;
	}

	/* No SA_RESTART: a signal ends the poll below with EINTR. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	libbpf_set_print(print_libbpf);

	st.skel = ringwatch__open();
	if (!st.skel) {
		fprintf(stderr, "matrix-tool: open: %s\n", strerror(errno));
		return 1;
	}
	strncpy(st.skel->rodata->target_comm, argv[1], COMM_LEN - 1);
	err = ringwatch__load(st.skel);
	if (err) {
		fprintf(stderr, "matrix-tool: load: %s\n", strerror(-err));
		goto out;
	}
	rb = ring_buffer__new(bpf_map__fd(st.skel->maps.ring_events), on_ring, &st, NULL);
	if (!rb) {
		fprintf(stderr, "matrix-tool: ring_buffer__new: %s\n", strerror(errno));
		goto out;
	}
	pb = perf_buffer__new(bpf_map__fd(st.skel->maps.perf_events), 8, on_perf, on_lost, &st,
			      NULL);
	if (!pb) {
		fprintf(stderr, "matrix-tool: perf_buffer__new: %s\n", strerror(errno));
		goto out;
	}
	err = ringwatch__attach(st.skel);
	if (err) {
		fprintf(stderr, "matrix-tool: attach: %s\n", strerror(-err));
		goto out;
	}
	if (use_poll)
		printf("polling %s\n", argv[1]);
	printf("ready %s\n", argv[1]);
	fflush(stdout);

	deadline = timeout_ms ? now_ms() + (long long)timeout_ms : 0;
	status = 0;
	while (!stop && (count == 0 || st.ring_seen < count || st.perf_seen < count)) {
		if (deadline && now_ms() >= deadline) {
			fprintf(stderr,
				"matrix-tool: timed out after %lu ms: %lu of %lu ring, %lu of %lu perf records (malformed %lu, lost %lu)\n",
				timeout_ms, st.ring_seen, count, st.perf_seen, count, st.malformed,
				st.lost);
			status = 2;
			break;
		}
		if (use_poll) {
			/* poll(2) on the ring buffer map's fd, then consume: what a
			 * program that does not use libbpf's epoll does. */
			struct pollfd p = { .fd = bpf_map__fd(st.skel->maps.ring_events),
					    .events = POLLIN };

			err = poll(&p, 1, 50);
			if (err < 0)
				err = -errno;
			else if (p.revents & ~POLLIN)
				err = -EIO;
			else
				err = ring_buffer__consume(rb);
		} else {
			err = ring_buffer__poll(rb, 50);
		}
		if (err >= 0 || err == -EINTR)
			err = perf_buffer__poll(pb, 50);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "matrix-tool: poll: %s\n", strerror(-err));
			status = 1;
			break;
		}
	}
	if (status == 0)
		printf("done %s ringbuf %lu perfbuf %lu hits %llu\n", argv[1], st.ring_seen,
		       st.perf_seen, hits(&st));
out:
	perf_buffer__free(pb);
	ring_buffer__free(rb);
	ringwatch__destroy(st.skel);
	fflush(stdout);
	return status;
}
