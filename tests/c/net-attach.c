// SPDX-License-Identifier: Apache-2.0
/*
 * A libbpf program for the guest-interface tests: loads one program of
 * net_test.bpf.o and attaches it to an interface with libbpf's own API,
 * which speaks rtnetlink:
 *
 *   net-attach xdp OBJ IFNAME   bpf_xdp_attach (generic mode), bpf_xdp_query_id
 *   net-attach tc OBJ IFNAME    bpf_tc_hook_create (clsact), bpf_tc_attach
 *                               (ingress), bpf_tc_query
 *
 * It prints "attached ID query QID" (the program's id, and the id the
 * kernel reports attached), waits for SIGINT or SIGTERM, then detaches
 * (bpf_xdp_detach; bpf_tc_detach and bpf_tc_hook_destroy) and prints
 * "detached". Any failure prints libbpf's error and exits 1.
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stopping;

static void stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "net-attach: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

int main(int argc, char **argv)
{
	struct bpf_prog_info info = {};
	__u32 info_len = sizeof(info);
	struct bpf_program *prog, *other;
	struct bpf_object *obj;
	sigset_t block, old;
	int xdp, ifindex, fd, err;
	__u32 attached = 0;

	if (argc != 4 || (strcmp(argv[1], "xdp") && strcmp(argv[1], "tc"))) {
		fprintf(stderr, "usage: net-attach xdp|tc OBJ IFNAME\n");
		return 2;
	}
	xdp = !strcmp(argv[1], "xdp");
	/* Blocked until sigsuspend, so a signal that comes early is not lost. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	obj = bpf_object__open_file(argv[2], NULL);
	if (!obj)
		return fail("open", errno);
	prog = bpf_object__find_program_by_name(obj, xdp ? "tb_xdp_pass" : "tb_tc_pass");
	other = bpf_object__find_program_by_name(obj, xdp ? "tb_tc_pass" : "tb_xdp_pass");
	if (!prog || !other)
		return fail("find program", ENOENT);
	bpf_program__set_autoload(other, false);
	err = bpf_object__load(obj);
	if (err)
		return fail("load", err);
	fd = bpf_program__fd(prog);
	err = bpf_obj_get_info_by_fd(fd, &info, &info_len);
	if (err)
		return fail("prog info", errno);
	ifindex = if_nametoindex(argv[3]);
	if (!ifindex)
		return fail("if_nametoindex", errno);

	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = fd);
	if (xdp) {
		err = bpf_xdp_attach(ifindex, fd, XDP_FLAGS_SKB_MODE, NULL);
		if (err)
			return fail("bpf_xdp_attach", err);
		err = bpf_xdp_query_id(ifindex, XDP_FLAGS_SKB_MODE, &attached);
		if (err)
			return fail("bpf_xdp_query_id", err);
	} else {
		err = bpf_tc_hook_create(&hook);
		if (err && err != -EEXIST)
			return fail("bpf_tc_hook_create", err);
		err = bpf_tc_attach(&hook, &opts);
		if (err)
			return fail("bpf_tc_attach", err);
		LIBBPF_OPTS(bpf_tc_opts, query, .handle = opts.handle, .priority = opts.priority);
		err = bpf_tc_query(&hook, &query);
		if (err)
			return fail("bpf_tc_query", err);
		attached = query.prog_id;
	}
	printf("attached %u query %u\n", info.id, attached);
	fflush(stdout);

	while (!stopping)
		sigsuspend(&old);

	if (xdp) {
		err = bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, NULL);
		if (err)
			return fail("bpf_xdp_detach", err);
	} else {
		opts.prog_fd = 0;
		opts.prog_id = 0;
		opts.flags = 0;
		err = bpf_tc_detach(&hook, &opts);
		if (err)
			return fail("bpf_tc_detach", err);
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		err = bpf_tc_hook_destroy(&hook);
		if (err)
			return fail("bpf_tc_hook_destroy", err);
	}
	printf("detached\n");
	bpf_object__close(obj);
	return 0;
}
