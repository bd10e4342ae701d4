// SPDX-License-Identifier: Apache-2.0
/*
 * The TCP listener collector: tcp.bpf.c limited to the listening (lhash2)
 * table, for a monitor that reports listening sockets every round and must
 * not read the established table's buckets (2 MiB on an idle machine) to
 * find them.
 */
#define TCP_LISTENERS_ONLY 1
#include "tcp.bpf.c"
