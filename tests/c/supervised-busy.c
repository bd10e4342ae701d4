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

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static void *busy(void *arg)
{
	struct utsname u;

	(void)arg;
	for (;;)
		uname(&u);
	return NULL;
}

static int gone(unsigned int id)
{
	union bpf_attr attr;
	int fd;

	memset(&attr, 0, sizeof(attr));
	attr.map_id = id;
	fd = sys_bpf(BPF_MAP_GET_FD_BY_ID, &attr);
	if (fd < 0 && errno == ENOENT)
		return 1;
	if (fd >= 0)
		close(fd);
	return 0;
}

int main(void)
{
	union bpf_attr attr;
	struct bpf_map_info info;
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

		memset(&attr, 0, sizeof(attr));
		attr.map_type = BPF_MAP_TYPE_ARRAY;
		attr.key_size = 4;
		attr.value_size = 8;
		attr.max_entries = 1;
		fd = sys_bpf(BPF_MAP_CREATE, &attr);
		memset(&info, 0, sizeof(info));
		memset(&attr, 0, sizeof(attr));
		attr.info.bpf_fd = fd;
		attr.info.info_len = sizeof(info);
		attr.info.info = (uint64_t)(uintptr_t)&info;
		if (fd < 0 || sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0)
			_exit(1);
		/* The busy threads start before the child exits. */
		sleep(1);
		if (write(pipefd[1], &info.id, sizeof(info.id)) != sizeof(info.id))
			_exit(1);
		_exit(0);
	}
	for (i = 0; i < 3; i++)
		pthread_create(&t, NULL, busy, NULL);
	if (read(pipefd[0], &id, sizeof(id)) != sizeof(id))
		return 1;
	waitpid(child, &status, 0);
	for (i = 0; i < 250; i++) {
		if (gone(id)) {
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
