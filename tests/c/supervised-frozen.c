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

#include "supervised.h"

int main(void)
{
	uint64_t value;
	long r;
	int fd;

	fd = new_map_of(BPF_MAP_TYPE_ARRAY, 0, NULL);
	if (fd < 0) {
		printf("map: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	sleep(2);
	r = map_elem(BPF_MAP_LOOKUP_ELEM, fd, &value);
	printf("lookup: %ld %s\n", r, r < 0 ? strerror(errno) : "ok");
	fflush(stdout);
	return r < 0 ? 2 : 0;
}
