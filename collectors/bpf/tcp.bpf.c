// SPDX-License-Identifier: Apache-2.0
/*
 * The TCP socket collector: the listening (lhash2) and established (ehash)
 * hash tables of the current network namespace's inet_hashinfo, reached
 * without kallsyms through current->nsproxy->net_ns->ipv4.tcp_death_row
 * .hashinfo. /proc/net/tcp{,6} walk the same two tables.
 *
 * Phase 1 scans a table's buckets a chunk at a time (one 4 KiB read covers
 * 512 established buckets) and queues the first socket of every non-empty
 * chain (a head with bit 0 set is a nulls marker: an empty chain); phase 2 visits the queued sockets and queues each one's successor.
 * The host-side walker (ids/src/walk/tcp.rs) makes the same reads.
 *
 * Built a second time as listeners.bpf.c with TCP_LISTENERS_ONLY: the
 * listening table only. A monitor that reports listeners needs no more, and
 * the established table of an idle machine is 2 MiB of empty buckets
 * (256k of them) read every round.
 */
#include "collector.h"

#define AF_INET 2
#define AF_INET6 10
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

struct table {
	__u64 base;	/* address of bucket 0 */
	__u64 bytes;	/* size of the table */
	__u64 stride;	/* size of a bucket */
	__u64 head_off; /* offset of the chain's first pointer in a bucket */
};

struct table tbl;
__u64 netns;
__u64 queue[QUEUE_LEN];

static __always_inline void enqueue(__u64 node)
{
	if (node & 1) /* a nulls marker ends the chain */
		return;
	if (run.qlen >= QUEUE_LEN) {
		run.status = STATUS_TOO_MANY;
		return;
	}
	queue[run.qlen & (QUEUE_LEN - 1)] = node;
	run.qlen++;
}

/* One bucket of the chunk in scratch slot 1. */
static long scan_bucket(__u64 j, __u64 *start)
{
	__u32 one = 1;
	struct chunk *c = bpf_map_lookup_elem(&scratch, &one);
	__u64 at = j * tbl.stride + tbl.head_off;

	if (!c || *start + at + 8 > tbl.bytes)
		return 1;
	if (at > CHUNK - 8)
		return 1;
	enqueue(*(__u64 *)(c->data + at));
	return 0;
}

/* The group of eight 8-byte buckets being looked at, of scratch slot 1. */
struct group {
	__u64 start; /* the chunk's offset in the table */
	__u64 first; /* the group's first bucket in the chunk */
};
struct group grp;

static long scan_in_group(__u64 j, void *unused)
{
	__u32 one = 1;
	struct chunk *c = bpf_map_lookup_elem(&scratch, &one);
	__u64 at = (grp.first + j) * 8;

	if (!c || grp.start + at + 8 > tbl.bytes || at > CHUNK - 8)
		return 1;
	enqueue(*(__u64 *)(c->data + at));
	return 0;
}

/*
 * One chunk of a table: read it (recorded), then queue its non-empty chains.
 * A table of bare heads (ehash: 8-byte buckets) is scanned with a plain
 * bounded loop: a bpf_loop callback per bucket costs ~20 ns, and an empty
 * 256k-bucket table made that 5 ms a walk.
 */
static long scan_chunk(__u64 k, void *unused)
{
	__u64 start = k * CHUNK;
	struct chunk *c;

	if (start >= tbl.bytes)
		return 1;
	c = read_chunk(tbl.base + start, tbl.bytes - start);
	if (!c)
		return 1;
	if (tbl.stride == 8 && tbl.head_off == 0 && tbl.bytes - start >= CHUNK) {
		__u64 i;

		/*
		 * A whole chunk, eight heads per step: an empty chain's head
		 * has bit 0 set, so one AND of eight tells that all eight are
		 * empty (the common case); only other groups are looked at
		 * head by head. Nothing in the loop depends on the table's
		 * size, which keeps older verifiers (6.1) from exploring a
		 * state per iteration and bound.
		 */
		for (i = 0; i < CHUNK / 64; i++) {
			__u64 *h = (__u64 *)(c->data + i * 64);

			if (h[0] & h[1] & h[2] & h[3] & h[4] & h[5] & h[6] & h[7] & 1)
				continue;
			grp.start = start;
			grp.first = i * 8;
			bpf_loop(8, scan_in_group, 0, 0);
		}
	} else {
		bpf_loop(CHUNK / tbl.stride, scan_bucket, &start, 0);
	}
	return 0;
}

static __always_inline void scan(__u64 base, __u64 buckets, __u64 stride, __u64 head_off)
{
	tbl.base = base;
	tbl.bytes = buckets * stride;
	tbl.stride = stride;
	tbl.head_off = head_off;
	if (!base || stride < 8 || CHUNK % stride || head_off + 8 > stride)
		run.status = STATUS_UNSUPPORTED;
	else
		bpf_loop((tbl.bytes + CHUNK - 1) / CHUNK, scan_chunk, 0, 0);
}

static long visit(__u64 i, void *unused)
{
	__u64 node, sk, net, next;
	unsigned short family, num;
	__be16 dport;
	unsigned char state;
	__be32 saddr, daddr;
	struct in6_addr saddr6, daddr6;
	unsigned int uid;

	if (i >= run.qlen)
		return 1;
	node = queue[i & (QUEUE_LEN - 1)];
	sk = node - bpf_core_field_offset(struct sock_common, skc_nulls_node);
	run.visited++;
	READ_OWN(net, FIELD(sk, struct sock_common, skc_net));
	READ_OWN(family, FIELD(sk, struct sock_common, skc_family));
	READ_OWN(state, FIELD(sk, struct sock_common, skc_state));
	READ_OWN(num, FIELD(sk, struct sock_common, skc_num));
	READ_OWN(dport, FIELD(sk, struct sock_common, skc_dport));
	if (family == AF_INET6) {
		READ_OWN(saddr6, FIELD(sk, struct sock_common, skc_v6_rcv_saddr));
		READ_OWN(daddr6, FIELD(sk, struct sock_common, skc_v6_daddr));
	} else {
		READ_OWN(saddr, FIELD(sk, struct sock_common, skc_rcv_saddr));
		READ_OWN(daddr, FIELD(sk, struct sock_common, skc_daddr));
	}
	if (state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV)
		READ_OWN(uid, FIELD(sk, struct sock, sk_uid));
	if (!READ_OWN(next, FIELD(node, struct hlist_nulls_node, next)))
		enqueue(next);
	return 0;
}

SEC("syscall")
int collect_tcp(struct collect_ctx *ctx)
{
	__u64 task, nsproxy = 0, hashinfo = 0, ehash = 0, lhash2 = 0;
	unsigned int ehash_mask = 0, lhash2_mask = 0;

	begin(ctx);
	task = current_leader();
	ctx->root = task;
	if (!task) {
		run.status = STATUS_NO_ROOT;
		goto out;
	}
	if (run.mode == MODE_ROOTS)
		goto out;
	READ(nsproxy, FIELD(task, struct task_struct, nsproxy));
	READ(netns, FIELD(nsproxy, struct nsproxy, net_ns));
	READ(hashinfo, FIELD(netns, struct net, ipv4.tcp_death_row.hashinfo));
	READ(lhash2, FIELD(hashinfo, struct inet_hashinfo, lhash2));
	READ(lhash2_mask, FIELD(hashinfo, struct inet_hashinfo, lhash2_mask));
	READ(ehash, FIELD(hashinfo, struct inet_hashinfo, ehash));
	READ(ehash_mask, FIELD(hashinfo, struct inet_hashinfo, ehash_mask));
	if (!hashinfo) {
		run.status = STATUS_NO_ROOT;
		goto out;
	}
	scan(lhash2, (__u64)lhash2_mask + 1, bpf_core_type_size(struct inet_listen_hashbucket),
	     bpf_core_field_offset(struct inet_listen_hashbucket, nulls_head));
#ifndef TCP_LISTENERS_ONLY
	scan(ehash, (__u64)ehash_mask + 1, bpf_core_type_size(struct inet_ehash_bucket),
	     bpf_core_field_offset(struct inet_ehash_bucket, chain));
#endif
	bpf_loop(1 << 23, visit, 0, 0);
out:
	end(ctx);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
