// SPDX-License-Identifier: Apache-2.0
/*
 * Threads and processes of a supervised program calling at once
 * (tests/tests/supervisor.rs). The supervisor serves one call at a time,
 * each with its caller's state and memory:
 *
 *   supervised-threads work NAME
 *     8 threads in the program and 8 in a forked child each create maps
 *     named NAME, write a value of their own into one, read it back,
 *     dup it, read through the copy, close both; 200 rounds each. Prints
 *     "threads ok" (or the first mismatch) and exits 0 only if every
 *     value read back was the thread's own.
 *
 *   supervised-threads die NAME
 *     4 threads create maps named NAME as fast as they can; once they
 *     made 10 (or after 2 s) the main thread prints "exiting after N maps"
 *     and exits the whole process (exit_group) while their calls wait in
 *     the supervisor. The test then looks for maps named
 *     NAME in the kernel (the guest here): none may be left.
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervised.h"

static const char *name;
static volatile int failed;

static void *work(void *arg)
{
	uint64_t me = (uint64_t)(uintptr_t)arg, got;
	int i, fd, copy;

	for (i = 0; i < 200 && !failed; i++) {
		uint64_t value = (me << 32) | i;

		fd = new_map_of(BPF_MAP_TYPE_ARRAY, 0, name);
		if (fd < 0 || map_elem(BPF_MAP_UPDATE_ELEM, fd, &value) != 0) {
			printf("thread %lu round %d: create/update: %s\n", me, i, strerror(errno));
			failed = 1;
			break;
		}
		copy = dup(fd);
		got = 0;
		if (copy < 0 || map_elem(BPF_MAP_LOOKUP_ELEM, copy, &got) != 0 || got != value) {
			printf("thread %lu round %d: read %#lx through fd %d (copy of %d), wrote %#lx: %s\n",
			       me, i, got, copy, fd, value, strerror(errno));
			failed = 1;
		}
		close(copy);
		close(fd);
	}
	return NULL;
}

static int run_threads(int base, int n, void *(*body)(void *))
{
	pthread_t t[16];
	int i;

	for (i = 0; i < n; i++)
		pthread_create(&t[i], NULL, body, (void *)(uintptr_t)(base + i));
	for (i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	return failed;
}

static volatile int made;

static void *spin(void *arg)
{
	(void)arg;
	for (;;)
		if (new_map_of(BPF_MAP_TYPE_ARRAY, 0, name) >= 0)
			__sync_fetch_and_add(&made, 1);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	name = argv[2];
	if (strcmp(argv[1], "work") == 0) {
		int status;
		pid_t child = fork();

		if (child == 0)
			_exit(run_threads(100, 8, work));
		run_threads(0, 8, work);
		waitpid(child, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			printf("the child failed: %#x\n", status);
			failed = 1;
		}
		printf(failed ? "threads failed\n" : "threads ok\n");
		return failed;
	}
	if (strcmp(argv[1], "die") == 0) {
		pthread_t t;
		struct timespec pause = { 0, 50 * 1000 * 1000 };
		int i;

		for (i = 0; i < 4; i++)
			pthread_create(&t, NULL, spin, NULL);
		for (i = 0; i < 40 && made < 10; i++)
			nanosleep(&pause, NULL);
		printf("exiting after %d maps\n", made);
		fflush(stdout);
		_exit(0);
	}
	return 2;
}
