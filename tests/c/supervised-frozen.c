// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program whose proxy freezes (tests/tests/supervisor.rs):
 * it makes a map, prints "ready", waits 2 s (the test freezes the proxy
 * meanwhile), then looks up the map and prints
 *
 *   lookup: RESULT ERRNO-NAME
 *
 * and exits. Built -static, so `telebpf exec` supervises it.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	union bpf_attr attr;
	uint32_t key = 0;
	uint64_t value;
	long r;
	int fd;

	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 8;
	attr.max_entries = 1;
	fd = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	if (fd < 0) {
		printf("map: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	sleep(2);
	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uint64_t)(uintptr_t)&key;
	attr.value = (uint64_t)(uintptr_t)&value;
	r = syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr));
	printf("lookup: %ld %s\n", r, r < 0 ? strerror(errno) : "ok");
	fflush(stdout);
	return r < 0 ? 2 : 0;
}
