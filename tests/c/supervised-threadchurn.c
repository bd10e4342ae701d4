// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program that starts and ends many threads, each making one
 * served call (`uname`), one after another (tests/tests/supervisor.rs):
 * 3 rounds of N threads (default 10000); after each it prints its
 * supervisor's (its parent's) resident memory:
 *
 *   round R: rss KB
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "supervised.h"

static void *call(void *arg)
{
	struct utsname u;

	(void)arg;
	uname(&u);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10000;
	int round, i;
	pthread_t t;

	for (round = 1; round <= 3; round++) {
		for (i = 0; i < n; i++) {
			if (pthread_create(&t, NULL, call, NULL) != 0)
				return 1;
			pthread_join(t, NULL);
		}
		printf("round %d: rss %ld\n", round, supervisor_status("VmRSS:"));
		fflush(stdout);
	}
	return 0;
}
