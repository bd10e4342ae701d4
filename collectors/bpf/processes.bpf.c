// SPDX-License-Identifier: Apache-2.0
/*
 * The process collector: walks the kernel's task list (the `tasks` links of
 * thread-group leaders, the list /proc shows) from the group leader of the
 * current task, since `init_task` is not in kallsyms without
 * CONFIG_KALLSYMS_ALL. For each task it reads pid, tgid, comm, the real
 * parent's tgid, the credentials' uid and the list link — exactly the reads
 * the host-side walker (ids/src/walk/processes.rs) makes.
 */
#include "collector.h"

#define MAX_TASKS (1 << 20)

struct walk {
	__u64 head;
	__u64 cur;
};

static long visit(__u64 i, struct walk *w)
{
	__u64 task = w->cur;
	int pid, tgid, ppid;
	char comm[16];
	__u64 parent, cred, next;
	unsigned int uid;

	run.visited++;
	READ_OWN(pid, FIELD(task, struct task_struct, pid));
	/* Not unique: a parent's tgid is read again for each of its children. */
	READ(tgid, FIELD(task, struct task_struct, tgid));
	READ_OWN(comm, FIELD(task, struct task_struct, comm));
	if (!READ_OWN(parent, FIELD(task, struct task_struct, real_parent)) && parent)
		READ(ppid, FIELD(parent, struct task_struct, tgid));
	if (!READ_OWN(cred, FIELD(task, struct task_struct, cred)) && cred)
		READ(uid, FIELD(cred, struct cred, uid));
	if (READ_OWN(next, FIELD(task, struct task_struct, tasks.next)))
		return 1;
	next -= bpf_core_field_offset(struct task_struct, tasks);
	if (next == w->head || !next)
		return 1;
	w->cur = next;
	return 0;
}

SEC("syscall")
int collect_processes(struct collect_ctx *ctx)
{
	struct walk w = {};

	begin(ctx);
	w.head = current_leader();
	w.cur = w.head;
	ctx->root = w.head;
	if (!w.head)
		run.status = STATUS_NO_ROOT;
	else if (run.mode != MODE_ROOTS)
		if (bpf_loop(MAX_TASKS, visit, &w, 0) >= MAX_TASKS)
			run.status = STATUS_TOO_MANY;
	end(ctx);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
