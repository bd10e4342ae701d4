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
 *
 *   net-attach links            the calls libbpf does not make: a
 *                               RTM_GETLINK dump sent with sendmsg to an
 *                               explicit kernel address and read with
 *                               recvfrom; for each link, one line
 *                               "link INDEX NAME IOCTLNAME IOCTLINDEX"
 *                               (if_indextoname, then SIOCGIFNAME and
 *                               SIOCGIFINDEX on an AF_INET socket), then
 *                               "done".
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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

/* Lists the links over a netlink socket of its own (see the header). */
static int links(void)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK }, from;
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
	} req = {
		.nh = {
			.nlmsg_len = sizeof(req),
			.nlmsg_type = RTM_GETLINK,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			.nlmsg_seq = 42,
		},
		.ifi = { .ifi_family = AF_UNSPEC },
	};
	struct iovec iov = { .iov_base = &req, .iov_len = sizeof(req) };
	struct msghdr msg = {
		.msg_name = &kernel,
		.msg_namelen = sizeof(kernel),
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};
	static char buf[32768];
	socklen_t from_len;
	struct nlmsghdr *nh;
	struct ifreq ifr;
	int nl, inet, len;

	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	inet = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (nl < 0 || inet < 0)
		return fail("socket", errno);
	if (sendmsg(nl, &msg, 0) != sizeof(req))
		return fail("sendmsg", errno);
	for (;;) {
		from_len = sizeof(from);
		len = recvfrom(nl, buf, sizeof(buf), 0, (struct sockaddr *)&from, &from_len);
		if (len < 0)
			return fail("recvfrom", errno);
		if (from_len != sizeof(from) || from.nl_family != AF_NETLINK || from.nl_pid)
			return fail("recvfrom: not the kernel's address", EPROTO);
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
			struct ifinfomsg *ifi = NLMSG_DATA(nh);
			char name[IF_NAMESIZE] = "";

			if (nh->nlmsg_seq != 42)
				return fail("sequence number", EPROTO);
			if (nh->nlmsg_type == NLMSG_DONE) {
				printf("done\n");
				return 0;
			}
			if (nh->nlmsg_type != RTM_NEWLINK)
				return fail("dump", EPROTO);
			if (!if_indextoname(ifi->ifi_index, name))
				return fail("if_indextoname", errno);
			memset(&ifr, 0, sizeof(ifr));
			ifr.ifr_ifindex = ifi->ifi_index;
			if (ioctl(inet, SIOCGIFNAME, &ifr))
				return fail("SIOCGIFNAME", errno);
			ifr.ifr_ifindex = 0;
			if (ioctl(inet, SIOCGIFINDEX, &ifr))
				return fail("SIOCGIFINDEX", errno);
			printf("link %d %s %s %d\n", ifi->ifi_index, name, ifr.ifr_name,
			       ifr.ifr_ifindex);
		}
	}
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

	if (argc == 2 && !strcmp(argv[1], "links"))
		return links();
	if (argc != 4 || (strcmp(argv[1], "xdp") && strcmp(argv[1], "tc"))) {
		fprintf(stderr, "usage: net-attach xdp|tc OBJ IFNAME | net-attach links\n");
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
