// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program that forks many short-lived children, each making
 * served calls (tests/tests/supervisor.rs): every child asks `uname` and
 * opens a guest file (which the supervisor's host library caches as a
 * memfd); the first child of each round also makes a ring buffer and maps
 * it, which starts a library thread (the ring's mirror) in the supervisor.
 * After each round it prints its supervisor's (its parent's) resident
 * memory, threads and fds:
 *
 *   round R: rss KB threads T fds F
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supervised.h"

/* The supervisor's open fds. */
static int fds(void)
{
	char path[64];
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", getppid());
	d = opendir(path);
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2;
}

/* A ring buffer map, mapped as libbpf maps one. */
static int mapped_ring(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd;

	fd = new_map_of(BPF_MAP_TYPE_RINGBUF, 4 * page, NULL);
	if (fd < 0)
		return -1;
	if (mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
		return -1;
	if (mmap(NULL, page + 8 * page, PROT_READ, MAP_SHARED, fd, page) == MAP_FAILED)
		return -1;
	return 0;
}

static void child(int ring)
{
	struct utsname u;

	if (uname(&u) != 0)
		_exit(1);
	if (open("/sys/kernel/btf/vmlinux", O_RDONLY) < 0)
		_exit(2);
	if (ring && mapped_ring() != 0)
		_exit(3);
	_exit(0);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 500;
	int round, i, status;

	for (round = 1; round <= 3; round++) {
		for (i = 0; i < n; i++) {
			pid_t p = fork();

			if (p == 0)
				child(i == 0);
			if (waitpid(p, &status, 0) != p || !WIFEXITED(status) ||
			    WEXITSTATUS(status) != 0) {
				printf("child %d of round %d failed: status %#x\n", i, round,
				       status);
				return 1;
			}
		}
		printf("round %d: rss %ld threads %ld fds %d\n", round, supervisor_status("VmRSS:"),
		       supervisor_status("Threads:"), fds());
		fflush(stdout);
	}
	return 0;
}
