// SPDX-License-Identifier: Apache-2.0
/*
 * Opens the guest cgroup PATH under the seccomp supervisor
 * (tests/tests/cgroup.rs) without and with O_CLOEXEC, and prints what
 * F_GETFD says of each:
 *
 *   plain: fd N flags F
 *   cloexec: fd N flags F
 *
 * Built -static, so `telebpf exec` supervises it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int report(const char *what, const char *path, int flags)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | flags);

	if (fd < 0) {
		printf("%s: open %s: %s\n", what, path, strerror(errno));
		return 1;
	}
	printf("%s: fd %d flags %d\n", what, fd, fcntl(fd, F_GETFD));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	return report("plain", argv[1], 0) | report("cloexec", argv[1], O_CLOEXEC);
}
