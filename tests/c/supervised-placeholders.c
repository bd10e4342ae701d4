// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program that moves its maps' fds below the supervisor's
 * range, as libbpf 1.4 and later do (each map's fd is `dup3`'d onto a
 * placeholder fd of the program's own, then the original closed), and
 * later closes them there, where the filter does not look, its number then
 * taken by a file of its own (tests/tests/supervisor.rs). It does so 50 times with maps named NAME
 * (a tool reloading its objects), makes one more map, prints
 * "ready", and waits 20 s so that the test can count NAME's maps in the
 * kernel: only the last one is still open.
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "supervised.h"

int main(int argc, char **argv)
{
	int i, fd, placeholder;

	if (argc != 2)
		return 2;
	for (i = 0; i < 50; i++) {
		placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
		fd = new_map_of(BPF_MAP_TYPE_ARRAY, 0, argv[1]);
		if (placeholder < 0 || fd < 0) {
			printf("round %d failed\n", i);
			return 1;
		}
		if (dup3(fd, placeholder, O_CLOEXEC) != placeholder) {
			printf("dup3 failed\n");
			return 1;
		}
		close(fd);
		/* Unseen by the supervisor: below its range. */
		close(placeholder);
		/* The number now names a file of the program's own, so the next
		 * placeholder gets another one (a reused number would be seen:
		 * the next dup3 onto it replaces the old object). */
		if (open("/dev/null", O_RDONLY | O_CLOEXEC) != placeholder) {
			printf("the number was not reused\n");
			return 1;
		}
	}
	if (new_map_of(BPF_MAP_TYPE_ARRAY, 0, argv[1]) < 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	sleep(20);
	return 0;
}
