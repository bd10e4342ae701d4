/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The raw bpf() calls the supervisor's test programs (tests/c/supervised-*.c,
 * tests/tests/supervisor.rs) share: static programs without libbpf, so
 * each call is exactly the one the test means.
 */
#ifndef TELEBPF_TESTS_SUPERVISED_H
#define TELEBPF_TESTS_SUPERVISED_H

#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* A new map's fd: an array of one 8-byte value, or (type
 * BPF_MAP_TYPE_RINGBUF) a ring of `ring_size` bytes; named `name` unless
 * NULL. */
static inline int new_map_of(int type, unsigned int ring_size, const char *name)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_type = type;
	if (type == BPF_MAP_TYPE_RINGBUF) {
		attr.max_entries = ring_size;
	} else {
		attr.key_size = 4;
		attr.value_size = 8;
		attr.max_entries = 1;
	}
	if (name)
		strncpy(attr.map_name, name, sizeof(attr.map_name) - 1);
	return sys_bpf(BPF_MAP_CREATE, &attr);
}

/* The id of the map behind `fd`, 0 on failure. */
static inline unsigned int map_id(int fd)
{
	union bpf_attr attr;
	struct bpf_map_info info;

	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = (uint64_t)(uintptr_t)&info;
	return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0 ? info.id : 0;
}

/* Whether map `id` is gone from the kernel now. */
static inline int map_gone(unsigned int id)
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

/* `cmd` (lookup or update) of key 0 of array map `fd`, value at `value`. */
static inline int map_elem(int cmd, int fd, uint64_t *value)
{
	union bpf_attr attr;
	uint32_t key = 0;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uint64_t)(uintptr_t)&key;
	attr.value = (uint64_t)(uintptr_t)value;
	return sys_bpf(cmd, &attr);
}

/* The number on the supervisor's (the parent's) /proc/PID/status line
 * that starts with `name` ("VmRSS:", "Threads:"), -1 if none. */
static inline long supervisor_status(const char *name)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", getppid());
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, name, strlen(name)) == 0)
			v = atol(line + strlen(name));
	fclose(f);
	return v;
}

#endif
