/*
 * The program `telebpf bench interpose` runs under callgrind: one libc call
 * (or pair) repeated, with nothing else inside the measured function.
 *
 * usage: interpose OP CALLS [PATH]
 *
 * OP is read, fstat, open (open+close of PATH), mmap (mmap+munmap of one
 * anonymous page), dup (dup+close) or getpid (syscall(SYS_getpid)). Each is
 * called once before the measured loop, so that one-time work (the dynamic
 * linker's binding, the preload's dlsym of the real function, its reading
 * of the environment) stays out of it; callgrind collects only inside
 * `measured` (--toggle-collect=measured).
 *
 * With TELEBPF_BENCH_TIME set in the environment it also times the loop
 * (for the seccomp supervisor's cost, which callgrind cannot see: it is in
 * the kernel): nine batches of CALLS/9, and prints the fastest batch's
 * time per call, `ns_per_call=N`.
 *
 * Built at bench time with `cc -O2`; exits 0 when every call succeeded.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int fd = -1;
static const char *path = "/etc/hostname";
static char buf[64];

/* One call (or pair) of the operation; nonzero when it failed. */
static int once(char op)
{
	struct stat st;
	void *p;
	int f;

	switch (op) {
	case 'r':
		return read(fd, buf, 1) != 1;
	case 'f':
		return fstat(fd, &st) != 0;
	case 'o':
		f = open(path, O_RDONLY | O_CLOEXEC);
		/* A path that does not exist is measured too: the hook runs
		 * before the kernel says ENOENT. */
		return f >= 0 ? close(f) != 0 : 0;
	case 'm':
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED || munmap(p, 4096) != 0;
	case 'd':
		f = dup(fd);
		return f < 0 || close(f) != 0;
	case 'g':
		return syscall(SYS_getpid) <= 0;
	}
	return 1;
}

/* The function callgrind measures: `noipa` keeps it whole and under its own
 * name (no inlining, no `measured.constprop.0` clone). */
__attribute__((noipa)) int measured(char op, long calls)
{
	int failed = 0;

	for (long i = 0; i < calls; i++)
		failed |= once(op);
	return failed;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s OP CALLS [PATH]\n", argv[0]);
		return 2;
	}
	if (argc > 3)
		path = argv[3];
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror("/dev/zero");
		return 2;
	}
	char op = argv[1][0];
	long calls = atol(argv[2]);
	if (getenv("TELEBPF_BENCH_TIME")) {
		double best = 0;
		for (int b = 0; b < 9; b++) {
			struct timespec t0, t1;
			long n = calls / 9 > 0 ? calls / 9 : 1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			if (measured(op, n)) {
				fprintf(stderr, "%s: %s failed\n", argv[0], argv[1]);
				return 1;
			}
			clock_gettime(CLOCK_MONOTONIC, &t1);
			double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
			if (b == 0 || ns < best)
				best = ns;
		}
		printf("ns_per_call=%.1f\n", best);
		return 0;
	}
	if (once(op) || measured(op, calls)) {
		fprintf(stderr, "%s: %s failed\n", argv[0], argv[1]);
		return 1;
	}
	return 0;
}
