// SPDX-License-Identifier: Apache-2.0
/*
 * Unusual and hostile calls of a supervised program (tests/tests/supervisor.rs).
 *
 * Each check makes the same call twice: once where the seccomp supervisor
 * serves it (a guest object's fd, a guest path, RLIMIT_MEMLOCK) and once
 * where the kernel answers alone (an fd, path or resource of the program's
 * own), and wants the same answer: the supervisor must be exact like the
 * kernel. Prints "ok NAME" or "FAIL NAME: ..." per check; exits 0 only if
 * every check held. Built -static, so `telebpf exec` supervises it.
 *
 * Run with "direct" (not supervised, as nobody) only the checks that need
 * no guest object are made, to show that the kernel's own answers are the
 * ones expected here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "supervised.h"

static int failures;

/* "-ERRNO" or the value: what a raw call answered. */
static long answer(long r)
{
	return r < 0 ? -errno : r;
}

static void check(const char *name, long got, long want)
{
	if (got == want) {
		printf("ok %s\n", name);
	} else {
		printf("FAIL %s: got %ld, the kernel gives %ld\n", name, got, want);
		failures++;
	}
	fflush(stdout);
}

static const char guest_file[] = "/sys/kernel/btf/vmlinux";
static const char own_file[] = "/etc/hostname";

/* Limits: a NULL or bad pointer, or cur > max, for RLIMIT_MEMLOCK (the
 * supervisor's) as for RLIMIT_NOFILE (the kernel's). */
static void limits(void)
{
	struct rlimit bad = { 10, 5 };

	check("setrlimit of memlock from NULL",
	      answer(syscall(SYS_setrlimit, RLIMIT_MEMLOCK, NULL)),
	      answer(syscall(SYS_setrlimit, RLIMIT_NOFILE, NULL)));
	check("setrlimit of memlock with cur > max",
	      answer(syscall(SYS_setrlimit, RLIMIT_MEMLOCK, &bad)),
	      answer(syscall(SYS_setrlimit, RLIMIT_NOFILE, &bad)));
	check("prlimit of memlock from a bad pointer",
	      answer(syscall(SYS_prlimit64, 0, RLIMIT_MEMLOCK, (void *)8, NULL)),
	      answer(syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, (void *)8, NULL)));
	check("prlimit of memlock with cur > max",
	      answer(syscall(SYS_prlimit64, 0, RLIMIT_MEMLOCK, &bad, NULL)),
	      answer(syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &bad, NULL)));
}

/* bpf() with an attr larger than a page: the kernel refuses it (E2BIG)
 * before anything else, to root and nobody alike, whether the tail is
 * zero or not, mapped or not. */
static void big_attr(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	union bpf_attr *attr = (union bpf_attr *)p;

	if (p == MAP_FAILED) {
		check("mapping two pages", -errno, 0);
		return;
	}
	attr->map_type = BPF_MAP_TYPE_ARRAY;
	attr->key_size = 4;
	attr->value_size = 8;
	attr->max_entries = 1;
	check("bpf with a two-page attr, zero tail",
	      answer(syscall(SYS_bpf, BPF_MAP_CREATE, attr, 2 * page)), -E2BIG);
	check("bpf with a 2 GiB attr", answer(syscall(SYS_bpf, BPF_MAP_CREATE, attr, 1UL << 31)),
	      -E2BIG);
}

/* openat2 with a `how` the kernel refuses: too short, unknown resolve
 * bits, a mode without O_CREAT. A guest path must be refused as a host
 * one is. */
static void openat2_how(void)
{
	struct open_how how;
	long g, o;

	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY;
	g = answer(syscall(SYS_openat2, AT_FDCWD, guest_file, &how, 8));
	o = answer(syscall(SYS_openat2, AT_FDCWD, own_file, &how, 8));
	check("openat2 with a short how", g, o);
	how.resolve = 1ULL << 40;
	g = answer(syscall(SYS_openat2, AT_FDCWD, guest_file, &how, sizeof(how)));
	o = answer(syscall(SYS_openat2, AT_FDCWD, own_file, &how, sizeof(how)));
	check("openat2 with unknown resolve bits", g, o);
	how.resolve = 0;
	how.mode = 0644;
	g = answer(syscall(SYS_openat2, AT_FDCWD, guest_file, &how, sizeof(how)));
	o = answer(syscall(SYS_openat2, AT_FDCWD, own_file, &how, sizeof(how)));
	check("openat2 with a mode but no O_CREAT", g, o);
	how.mode = 0;
	how.flags = 1ULL << 40;
	g = answer(syscall(SYS_openat2, AT_FDCWD, guest_file, &how, sizeof(how)));
	o = answer(syscall(SYS_openat2, AT_FDCWD, own_file, &how, sizeof(how)));
	check("openat2 with flags beyond 32 bits", g, o);
}

/* The path ends at a page's last byte, before an unmapped page: read as
 * the kernel reads it. One byte more (no NUL in the page): EFAULT. Longer
 * than PATH_MAX: ENAMETOOLONG. */
static void paths(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char *two =
		mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *at, *long_path;
	struct stat st;
	long g, o;

	if (two == MAP_FAILED || mprotect(two + page, page, PROT_NONE) != 0) {
		check("mapping two pages", -errno, 0);
		return;
	}
	at = two + page - sizeof(guest_file);
	memcpy(at, guest_file, sizeof(guest_file));
	g = answer(syscall(SYS_newfstatat, AT_FDCWD, at, &st, 0));
	check("stat of a path ending at a page's end", g > 0 ? 0 : g, 0);
	memset(two, '/', page);
	memcpy(two + page - sizeof(guest_file) + 1, guest_file, sizeof(guest_file) - 1);
	g = answer(syscall(SYS_newfstatat, AT_FDCWD, two + page - sizeof(guest_file) + 1, &st, 0));
	check("stat of a path running into an unmapped page", g, -EFAULT);
	long_path = malloc(2 * PATH_MAX);
	memset(long_path, '/', 2 * PATH_MAX);
	strcpy(long_path + 2 * PATH_MAX - sizeof(guest_file), guest_file);
	g = answer(syscall(SYS_newfstatat, AT_FDCWD, long_path, &st, 0));
	check("stat of a guest path longer than PATH_MAX", g, -ENAMETOOLONG);
	/* Exactly PATH_MAX - 1 bytes: still a path. */
	g = answer(syscall(SYS_newfstatat, AT_FDCWD, long_path + PATH_MAX, &st, 0));
	o = answer(syscall(SYS_newfstatat, AT_FDCWD, long_path + PATH_MAX - 1, &st, 0));
	check("stat of a guest path of PATH_MAX - 1 bytes", g, 0);
	check("stat of a guest path of PATH_MAX bytes", o, -ENAMETOOLONG);
	free(long_path);
	/* Since 6.11 a NULL path with AT_EMPTY_PATH is the fd itself, as "". */
	g = answer(syscall(SYS_newfstatat, 0, NULL, &st, AT_EMPTY_PATH));
	o = answer(syscall(SYS_newfstatat, 0, "", &st, AT_EMPTY_PATH));
	{
		struct utsname u;
		unsigned int major = 0, minor = 0;

		uname(&u);
		sscanf(u.release, "%u.%u", &major, &minor);
		if (major > 6 || (major == 6 && minor >= 11))
			check("fstatat of a NULL path with AT_EMPTY_PATH", g, o);
		else
			check("fstatat of a NULL path with AT_EMPTY_PATH", g, -EFAULT);
	}
}

/* Calls on guest objects' fds with odd arguments, beside the same calls on
 * an fd of the program's own. */
static void objects(void)
{
	int map = new_map_of(BPF_MAP_TYPE_ARRAY, 0, NULL);
	int ring = new_map_of(BPF_MAP_TYPE_RINGBUF, 4096 * 4, NULL);
	char link[64], buf[64];
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
	int ep, ep2;

	if (map < 0 || ring < 0) {
		check("creating a map and a ring buffer", -errno, 0);
		return;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", map);
	check("readlink of an object's fd into 0 bytes",
	      answer(syscall(SYS_readlink, link, buf, 0)),
	      answer(syscall(SYS_readlink, "/proc/self/fd/0", buf, 0)));
	check("readlink of an object's fd into -1 bytes",
	      answer(syscall(SYS_readlink, link, buf, (size_t)-1)),
	      answer(syscall(SYS_readlink, "/proc/self/fd/0", buf, (size_t)-1)));
	check("F_DUPFD of an object's fd from a negative number",
	      answer(syscall(SYS_fcntl, map, F_DUPFD, -5)),
	      answer(syscall(SYS_fcntl, 0, F_DUPFD, -5)));
	check("F_DUPFD of an object's fd from beyond the fd limit",
	      answer(syscall(SYS_fcntl, map, F_DUPFD_CLOEXEC, 1 << 30)),
	      answer(syscall(SYS_fcntl, 0, F_DUPFD_CLOEXEC, 1 << 30)));

	/* What /proc says of an object's fd: the kernel's words for a map. */
	{
		char target[64] = "", info[512] = "";
		long n = readlink(link, target, sizeof(target) - 1);
		int fd;

		check("readlink of an object's fd names a bpf map",
		      n > 0 && strcmp(target, "anon_inode:bpf-map") == 0 ? 0 : -1, 0);
		if (strcmp(target, "anon_inode:bpf-map") != 0)
			printf("note: readlink gave %s\n", target);
		snprintf(link, sizeof(link), "/proc/self/fdinfo/%d", map);
		fd = open(link, O_RDONLY);
		n = fd < 0 ? -1 : read(fd, info, sizeof(info) - 1);
		check("the fdinfo of an object's fd has its map_type",
		      n > 0 && strstr(info, "map_type:\t2\n") ? 0 : -1, 0);
		if (fd >= 0)
			close(fd);
	}

	/* An anonymous mapping ignores its fd, even an object's. */
	{
		void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, map,
			       0);

		check("an anonymous mmap naming an object's fd", m == MAP_FAILED ? -errno : 0, 0);
	}

	/* libbpf's ring_buffer__free closes its epoll fd without deleting
	 * the rings from it; ring_buffer__new then makes another, usually
	 * at the same number, and adds the same ring. */
	ep = epoll_create1(EPOLL_CLOEXEC);
	check("epoll_ctl ADD of a ring", answer(epoll_ctl(ep, EPOLL_CTL_ADD, ring, &ev)), 0);
	close(ep);
	ep2 = epoll_create1(EPOLL_CLOEXEC);
	if (ep2 != ep)
		printf("note: the second epoll fd is %d, not %d\n", ep2, ep);
	check("epoll_ctl ADD of a ring to a new epoll at a reused number",
	      answer(epoll_ctl(ep2, EPOLL_CTL_ADD, ring, &ev)), 0);
	check("epoll_ctl MOD of it", answer(epoll_ctl(ep2, EPOLL_CTL_MOD, ring, &ev)), 0);
	check("epoll_ctl DEL of it", answer(epoll_ctl(ep2, EPOLL_CTL_DEL, ring, NULL)), 0);
	check("epoll_ctl DEL again", answer(epoll_ctl(ep2, EPOLL_CTL_DEL, ring, NULL)), -ENOENT);
	/* dup2 of another ring over a registered ring's fd: the replaced
	 * file goes, and its registration with it. */
	{
		int other = new_map_of(BPF_MAP_TYPE_RINGBUF, 4096 * 4, NULL);

		check("epoll_ctl ADD of a ring again",
		      answer(epoll_ctl(ep2, EPOLL_CTL_ADD, ring, &ev)), 0);
		check("dup2 of a ring over it", answer(dup2(other, ring)), ring);
		check("epoll_ctl ADD of the ring now at its number",
		      answer(epoll_ctl(ep2, EPOLL_CTL_ADD, ring, &ev)), 0);
		close(other);
	}
	close(ep2);
	/* A closed epoll instance: the number names nothing now. */
	check("epoll_ctl MOD on a closed epoll fd",
	      answer(epoll_ctl(ep2, EPOLL_CTL_MOD, ring, &ev)),
	      answer(epoll_ctl(ep2, EPOLL_CTL_MOD, 0, &ev)));
}

/* bpf() under the other ABIs' numbers: x32 (the bit 0x40000000) and a
 * 32-bit `int 0x80` (i386's 357). The filter refuses both (ENOSYS), where
 * the host kernel would answer (EPERM to nobody, or create the map). */
static void other_abis(void)
{
	union bpf_attr attr;
	long r;

	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 8;
	attr.max_entries = 1;
	r = answer(syscall(0x40000000 | SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
	check("bpf under its x32 number", r, -ENOSYS);
	/* int 0x80 reads 32-bit registers: the attr must lie below 4 GiB. */
	{
		union bpf_attr *low = mmap((void *)0x10000000, 4096, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
					   0);
		long ret;

		if (low == MAP_FAILED) {
			check("a mapping below 4 GiB", -errno, 0);
			return;
		}
		memcpy(low, &attr, sizeof(attr));
		__asm__ volatile("int $0x80"
				 : "=a"(ret)
				 : "a"(357), "b"(BPF_MAP_CREATE), "c"(low), "d"(sizeof(attr))
				 : "memory");
		check("bpf under i386's number (int 0x80)", ret, -ENOSYS);
	}
}

int main(int argc, char **argv)
{
	int direct = argc > 1 && strcmp(argv[1], "direct") == 0;

	limits();
	big_attr();
	openat2_how();
	paths();
	if (!direct) {
		objects();
		other_abis();
	}
	printf("%d failed\n", failures);
	return failures ? 1 : 0;
}
