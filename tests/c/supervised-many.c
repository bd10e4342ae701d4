// SPDX-License-Identifier: Apache-2.0
/*
 * A supervised program with many live processes at once
 * (tests/tests/supervisor.rs): it forks N children (default 400); each
 * opens a guest file (a served call: the supervisor keeps a session, a
 * pidfd and the file's memfd for it), reports on a pipe, and waits to be
 * killed. Prints "N of N children served" and exits 0 only if every child
 * was.
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 400;
	int pipefd[2], i, served = 0;
	pid_t *children = calloc(n, sizeof(pid_t));
	char ok;

	if (!children || pipe(pipefd) != 0)
		return 1;
	for (i = 0; i < n; i++) {
		children[i] = fork();
		if (children[i] == 0) {
			ok = open("/sys/kernel/btf/vmlinux", O_RDONLY) >= 0 ? 1 : 0;
			if (!ok)
				perror("child: open /sys/kernel/btf/vmlinux");
			if (write(pipefd[1], &ok, 1) != 1)
				_exit(1);
			pause();
			_exit(0);
		}
	}
	for (i = 0; i < n; i++)
		if (read(pipefd[0], &ok, 1) == 1 && ok)
			served++;
	for (i = 0; i < n; i++) {
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
	}
	printf("%d of %d children served\n", served, n);
	return served == n ? 0 : 1;
}
