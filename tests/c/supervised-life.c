// SPDX-License-Identifier: Apache-2.0
/*
 * The life of a supervised program's guest objects (tests/tests/exec.rs):
 * run with no argument, it creates a map, forks a child that creates a
 * map of its own and exits, and checks that the child's map is gone once
 * the child is (its session ended with it); then it execs itself with
 * "after-exec ID", and the new image checks that the map the old image
 * held (close-on-exec) is gone too. Prints one line per step; exits 0 only
 * if every step held. Built -static, so the seccomp supervisor serves it.
 */
#include <sys/wait.h>
#include <time.h>

#include "supervised.h"

/* A new array map's fd, and its id in *id. */
static int new_map(unsigned int *id)
{
	int fd = new_map_of(BPF_MAP_TYPE_ARRAY, 0, NULL);

	if (fd < 0)
		return -1;
	*id = map_id(fd);
	return *id ? fd : -1;
}

/* Whether map `id` is gone from the kernel within 3 s. */
static int gone(unsigned int id)
{
	struct timespec pause = { 0, 20 * 1000 * 1000 };

	for (int i = 0; i < 150; i++) {
		if (map_gone(id))
			return 1;
		nanosleep(&pause, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int id, child_id;
	int fd, status, pipefd[2];
	char arg[32];
	pid_t pid;

	if (argc == 3 && strcmp(argv[1], "after-exec") == 0) {
		id = strtoul(argv[2], NULL, 10);
		printf("after exec: map %u %s\n", id, gone(id) ? "gone" : "still there");
		return gone(id) ? 0 : 1;
	}
	fd = new_map(&id);
	if (fd < 0) {
		printf("failed %s\n", strerror(errno));
		return 1;
	}
	printf("parent map %u\n", id);
	fflush(stdout);
	if (pipe(pipefd) != 0)
		return 1;
	pid = fork();
	if (pid == 0) {
		unsigned int cid;

		if (new_map(&cid) < 0)
			_exit(1);
		if (write(pipefd[1], &cid, sizeof(cid)) != sizeof(cid))
			_exit(1);
		_exit(0);
	}
	if (read(pipefd[0], &child_id, sizeof(child_id)) != sizeof(child_id))
		return 1;
	waitpid(pid, &status, 0);
	printf("child map %u %s after the child exited\n", child_id,
	       gone(child_id) ? "gone" : "still there");
	fflush(stdout);
	if (!gone(child_id))
		return 1;
	snprintf(arg, sizeof(arg), "%u", id);
	execl("/proc/self/exe", argv[0], "after-exec", arg, (char *)NULL);
	printf("exec failed %s\n", strerror(errno));
	return 1;
}
