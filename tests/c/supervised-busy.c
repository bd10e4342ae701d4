// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program whose threads keep the supervisor busy while its
 * child exits (tests/tests/supervisor.rs): 3 threads ask `uname` without
 * pause (each a served call); meanwhile a forked child makes a map and
 * exits, and the program waits up to 5 s for the child's map to be gone
 * from the kernel (the child's session ends with it). Prints
 * "child map ID gone after MS ms" or "child map ID still there", and
 * exits 0 only if it went.
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervised.h"

static void *busy(void *arg)
{
	struct utsname u;

	(void)arg;
	for (;;)
		uname(&u);
	return NULL;
}

int main(void)
{
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	unsigned int id;
	int pipefd[2], i, status;
	pthread_t t;
	pid_t child;

	if (pipe(pipefd) != 0)
		return 1;
	child = fork();
	if (child == 0) {
		int fd;

		fd = new_map_of(BPF_MAP_TYPE_ARRAY, 0, NULL);
		id = fd < 0 ? 0 : map_id(fd);
		if (id == 0)
			_exit(1);
		/* The busy threads start before the child exits. */
		sleep(1);
		if (write(pipefd[1], &id, sizeof(id)) != sizeof(id))
			_exit(1);
		_exit(0);
	}
	for (i = 0; i < 3; i++)
		pthread_create(&t, NULL, busy, NULL);
	if (read(pipefd[0], &id, sizeof(id)) != sizeof(id))
		return 1;
	waitpid(child, &status, 0);
	for (i = 0; i < 250; i++) {
		if (map_gone(id)) {
			printf("child map %u gone after %d ms\n", id, i * 20);
			fflush(stdout);
			_exit(0);
		}
		nanosleep(&pause, NULL);
	}
	printf("child map %u still there\n", id);
	fflush(stdout);
	_exit(1);
}
