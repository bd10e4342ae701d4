// SPDX-License-Identifier: Apache-2.0
/*
 * The kernel module collector: walks the `modules` list (its address comes
 * from the proxy, which finds it in /proc/kallsyms) and reads each module's
 * name, state and size — the columns of /proc/modules. The size is the sum
 * of the module's memory regions: `mem[]` since Linux 6.4, `core_layout`
 * and `init_layout` before; CO-RE picks the one the guest kernel has.
 * The host-side walker (ids/src/walk/modules.rs) makes the same reads.
 */
#include "collector.h"

#define MAX_MODULES 4096
#define MOD_MEM_TYPES 7

struct module_layout___old {
	unsigned int size;
};

struct module___old {
	struct module_layout___old core_layout;
	struct module_layout___old init_layout;
};

struct walk {
	__u64 head;
	__u64 cur;
};

static long visit(__u64 i, struct walk *w)
{
	__u64 mod = w->cur - bpf_core_field_offset(struct module, list);
	char name[56];
	int state;
	unsigned int size;
	__u64 next;

	if (w->cur == w->head && i)
		return 1;
	if (i) {
		run.visited++;
		READ_OWN(state, FIELD(mod, struct module, state));
		READ_OWN(name, FIELD(mod, struct module, name));
		if (bpf_core_field_exists(struct module___old, core_layout)) {
			READ_OWN(size, FIELD(mod, struct module___old, core_layout.size));
			READ_OWN(size, FIELD(mod, struct module___old, init_layout.size));
		} else {
			for (int t = 0; t < MOD_MEM_TYPES; t++)
				READ_OWN(size, FIELD(mod, struct module, mem[t].size));
		}
	}
	if (READ_OWN(next, w->cur))
		return 1;
	w->cur = next;
	return 0;
}

SEC("syscall")
int collect_modules(struct collect_ctx *ctx)
{
	struct walk w = {};

	begin(ctx);
	w.head = ctx->root_in;
	w.cur = w.head;
	ctx->root = w.head;
	if (!bpf_core_type_exists(struct module)) {
		run.status = STATUS_UNSUPPORTED;
	} else if (!w.head) {
		run.status = STATUS_NO_ROOT;
	} else if (run.mode != MODE_ROOTS) {
		if (bpf_loop(MAX_MODULES, visit, &w, 0) >= MAX_MODULES)
			run.status = STATUS_TOO_MANY;
	}
	end(ctx);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
