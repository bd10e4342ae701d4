//! Byte offsets of the fields this crate reads, computed from `linux/bpf.h` (x86-64, LE).
//!
//! Every offset was checked with `offsetof()` against the kernel ~6.19 UAPI header. The ABI is
//! append-only, so the offsets of older fields are the same on every kernel from 6.1 on; fields
//! newer than the running kernel are simply zero there.

/// Size of `union bpf_attr` in the ~6.19 header (`sizeof` = 168, the BPF_PROG_LOAD arm).
pub const ATTR_SIZE: usize = 168;

/// `BPF_MAP_CREATE` arm.
pub mod map_create {
    /// `__u32 map_type`.
    pub const MAP_TYPE: usize = 0;
    /// `__u32 key_size`.
    pub const KEY_SIZE: usize = 4;
    /// `__u32 value_size`.
    pub const VALUE_SIZE: usize = 8;
    /// `__u32 max_entries`.
    pub const MAX_ENTRIES: usize = 12;
    /// `__u32 map_flags`.
    pub const MAP_FLAGS: usize = 16;
    /// `__u32 inner_map_fd` (fd, map-in-map types).
    pub const INNER_MAP_FD: usize = 20;
    /// `__u32 btf_fd` (fd).
    pub const BTF_FD: usize = 48;
    /// `__u32 btf_key_type_id`.
    pub const BTF_KEY_TYPE_ID: usize = 52;
    /// `__u32 btf_value_type_id`.
    pub const BTF_VALUE_TYPE_ID: usize = 56;
    /// `__u32 btf_vmlinux_value_type_id`.
    pub const BTF_VMLINUX_VALUE_TYPE_ID: usize = 60;
    /// `__s32 value_type_btf_obj_fd` (fd with `BPF_F_VTYPE_BTF_OBJ_FD`).
    pub const VALUE_TYPE_BTF_OBJ_FD: usize = 72;
    /// `__s32 map_token_fd` (fd with `BPF_F_TOKEN_FD`).
    pub const MAP_TOKEN_FD: usize = 76;
    /// `__aligned_u64 excl_prog_hash` (pointer, In).
    pub const EXCL_PROG_HASH: usize = 80;
    /// `__u32 excl_prog_hash_size`.
    pub const EXCL_PROG_HASH_SIZE: usize = 88;
}

/// `BPF_MAP_*_ELEM` / `BPF_MAP_GET_NEXT_KEY` / `BPF_MAP_FREEZE` arm.
pub mod map_elem {
    /// `__u32 map_fd` (fd).
    pub const MAP_FD: usize = 0;
    /// `__aligned_u64 key` (pointer).
    pub const KEY: usize = 8;
    /// `__aligned_u64 value` / `next_key` (pointer).
    pub const VALUE: usize = 16;
    /// `__u64 flags`.
    pub const FLAGS: usize = 24;
}

/// `batch` arm (`BPF_MAP_*_BATCH`).
pub mod batch {
    /// `__aligned_u64 in_batch` (pointer, In).
    pub const IN_BATCH: usize = 0;
    /// `__aligned_u64 out_batch` (pointer, Out).
    pub const OUT_BATCH: usize = 8;
    /// `__aligned_u64 keys` (pointer).
    pub const KEYS: usize = 16;
    /// `__aligned_u64 values` (pointer).
    pub const VALUES: usize = 24;
    /// `__u32 count` (in/out).
    pub const COUNT: usize = 32;
    /// `__u32 map_fd` (fd).
    pub const MAP_FD: usize = 36;
    /// `__u64 elem_flags`.
    pub const ELEM_FLAGS: usize = 40;
    /// `__u64 flags`.
    pub const FLAGS: usize = 48;
}

/// `BPF_PROG_LOAD` arm.
pub mod prog_load {
    /// `__u32 prog_type`.
    pub const PROG_TYPE: usize = 0;
    /// `__u32 insn_cnt`.
    pub const INSN_CNT: usize = 4;
    /// `__aligned_u64 insns` (pointer, In).
    pub const INSNS: usize = 8;
    /// `__aligned_u64 license` (pointer to a string, In).
    pub const LICENSE: usize = 16;
    /// `__u32 log_level`.
    pub const LOG_LEVEL: usize = 24;
    /// `__u32 log_size`.
    pub const LOG_SIZE: usize = 28;
    /// `__aligned_u64 log_buf` (pointer, Out).
    pub const LOG_BUF: usize = 32;
    /// `__u32 prog_flags`.
    pub const PROG_FLAGS: usize = 44;
    /// `__u32 expected_attach_type`.
    pub const EXPECTED_ATTACH_TYPE: usize = 68;
    /// `__u32 prog_btf_fd` (fd).
    pub const PROG_BTF_FD: usize = 72;
    /// `__u32 func_info_rec_size`.
    pub const FUNC_INFO_REC_SIZE: usize = 76;
    /// `__aligned_u64 func_info` (pointer, In).
    pub const FUNC_INFO: usize = 80;
    /// `__u32 func_info_cnt`.
    pub const FUNC_INFO_CNT: usize = 88;
    /// `__u32 line_info_rec_size`.
    pub const LINE_INFO_REC_SIZE: usize = 92;
    /// `__aligned_u64 line_info` (pointer, In).
    pub const LINE_INFO: usize = 96;
    /// `__u32 line_info_cnt`.
    pub const LINE_INFO_CNT: usize = 104;
    /// `__u32 attach_btf_id`.
    pub const ATTACH_BTF_ID: usize = 108;
    /// `__u32 attach_prog_fd` / `attach_btf_obj_fd` (fd either way).
    pub const ATTACH_PROG_FD: usize = 112;
    /// `__u32 core_relo_cnt`.
    pub const CORE_RELO_CNT: usize = 116;
    /// `__aligned_u64 fd_array` (pointer, In).
    pub const FD_ARRAY: usize = 120;
    /// `__aligned_u64 core_relos` (pointer, In).
    pub const CORE_RELOS: usize = 128;
    /// `__u32 core_relo_rec_size`.
    pub const CORE_RELO_REC_SIZE: usize = 136;
    /// `__u32 log_true_size` (output).
    pub const LOG_TRUE_SIZE: usize = 140;
    /// `__s32 prog_token_fd` (fd with `BPF_F_TOKEN_FD`).
    pub const PROG_TOKEN_FD: usize = 144;
    /// `__u32 fd_array_cnt`.
    pub const FD_ARRAY_CNT: usize = 148;
    /// `__aligned_u64 signature` (pointer, In).
    pub const SIGNATURE: usize = 152;
    /// `__u32 signature_size`.
    pub const SIGNATURE_SIZE: usize = 160;
    /// `__s32 keyring_id` (a key serial, not an fd).
    pub const KEYRING_ID: usize = 164;
}

/// `BPF_OBJ_PIN` / `BPF_OBJ_GET` arm.
pub mod obj {
    /// `__aligned_u64 pathname` (pointer to a string, In).
    pub const PATHNAME: usize = 0;
    /// `__u32 bpf_fd` (fd, PIN only).
    pub const BPF_FD: usize = 8;
    /// `__u32 file_flags`.
    pub const FILE_FLAGS: usize = 12;
    /// `__s32 path_fd` (fd with `BPF_F_PATH_FD`).
    pub const PATH_FD: usize = 16;
}

/// `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` arm.
pub mod attach {
    /// `__u32 target_fd` / `target_ifindex`.
    pub const TARGET_FD: usize = 0;
    /// `__u32 attach_bpf_fd` (fd).
    pub const ATTACH_BPF_FD: usize = 4;
    /// `__u32 attach_type`.
    pub const ATTACH_TYPE: usize = 8;
    /// `__u32 attach_flags`.
    pub const ATTACH_FLAGS: usize = 12;
    /// `__u32 replace_bpf_fd` (fd with `BPF_F_REPLACE`, cgroup).
    pub const REPLACE_BPF_FD: usize = 16;
    /// `__u32 relative_fd` / `relative_id`.
    pub const RELATIVE_FD: usize = 20;
    /// `__u64 expected_revision`.
    pub const EXPECTED_REVISION: usize = 24;
}

/// `test` arm (`BPF_PROG_TEST_RUN`).
pub mod test_run {
    /// `__u32 prog_fd` (fd).
    pub const PROG_FD: usize = 0;
    /// `__u32 retval` (output).
    pub const RETVAL: usize = 4;
    /// `__u32 data_size_in`.
    pub const DATA_SIZE_IN: usize = 8;
    /// `__u32 data_size_out` (in/out).
    pub const DATA_SIZE_OUT: usize = 12;
    /// `__aligned_u64 data_in` (pointer, In).
    pub const DATA_IN: usize = 16;
    /// `__aligned_u64 data_out` (pointer, Out).
    pub const DATA_OUT: usize = 24;
    /// `__u32 ctx_size_in`.
    pub const CTX_SIZE_IN: usize = 40;
    /// `__u32 ctx_size_out` (in/out).
    pub const CTX_SIZE_OUT: usize = 44;
    /// `__aligned_u64 ctx_in` (pointer, In; written back for `BPF_PROG_TYPE_SYSCALL`).
    pub const CTX_IN: usize = 48;
    /// `__aligned_u64 ctx_out` (pointer, Out).
    pub const CTX_OUT: usize = 56;
    /// `__u32 flags`.
    pub const FLAGS: usize = 64;
}

/// `BPF_*_GET_NEXT_ID` / `BPF_*_GET_FD_BY_ID` arm.
pub mod get_id {
    /// `__u32 start_id` / `prog_id` / `map_id` / `btf_id` / `link_id`.
    pub const ID: usize = 0;
    /// `__u32 next_id` (output).
    pub const NEXT_ID: usize = 4;
    /// `__u32 open_flags`.
    pub const OPEN_FLAGS: usize = 8;
    /// `__s32 fd_by_id_token_fd` (fd with `BPF_F_TOKEN_FD`).
    pub const TOKEN_FD: usize = 12;
}

/// `info` arm (`BPF_OBJ_GET_INFO_BY_FD`).
pub mod info {
    /// `__u32 bpf_fd` (fd).
    pub const BPF_FD: usize = 0;
    /// `__u32 info_len` (in/out).
    pub const INFO_LEN: usize = 4;
    /// `__aligned_u64 info` (pointer, InOut).
    pub const INFO: usize = 8;
}

/// `query` arm (`BPF_PROG_QUERY`).
pub mod query {
    /// `__u32 target_fd` / `target_ifindex`.
    pub const TARGET_FD: usize = 0;
    /// `__u32 attach_type`.
    pub const ATTACH_TYPE: usize = 4;
    /// `__u32 query_flags`.
    pub const QUERY_FLAGS: usize = 8;
    /// `__u32 attach_flags` (output).
    pub const ATTACH_FLAGS: usize = 12;
    /// `__aligned_u64 prog_ids` (pointer, Out).
    pub const PROG_IDS: usize = 16;
    /// `__u32 prog_cnt` / `count` (in/out).
    pub const PROG_CNT: usize = 24;
    /// `__aligned_u64 prog_attach_flags` (pointer, Out).
    pub const PROG_ATTACH_FLAGS: usize = 32;
    /// `__aligned_u64 link_ids` (pointer, Out).
    pub const LINK_IDS: usize = 40;
    /// `__aligned_u64 link_attach_flags` (pointer, Out).
    pub const LINK_ATTACH_FLAGS: usize = 48;
}

/// `raw_tracepoint` arm (`BPF_RAW_TRACEPOINT_OPEN`).
pub mod raw_tp {
    /// `__u64 name` (pointer to a string, In).
    pub const NAME: usize = 0;
    /// `__u32 prog_fd` (fd).
    pub const PROG_FD: usize = 8;
    /// `__aligned_u64 cookie`.
    pub const COOKIE: usize = 16;
}

/// `BPF_BTF_LOAD` arm.
pub mod btf_load {
    /// `__aligned_u64 btf` (pointer, In).
    pub const BTF: usize = 0;
    /// `__aligned_u64 btf_log_buf` (pointer, Out).
    pub const BTF_LOG_BUF: usize = 8;
    /// `__u32 btf_size`.
    pub const BTF_SIZE: usize = 16;
    /// `__u32 btf_log_size`.
    pub const BTF_LOG_SIZE: usize = 20;
    /// `__u32 btf_log_level`.
    pub const BTF_LOG_LEVEL: usize = 24;
    /// `__u32 btf_log_true_size` (output).
    pub const BTF_LOG_TRUE_SIZE: usize = 28;
    /// `__u32 btf_flags`.
    pub const BTF_FLAGS: usize = 32;
    /// `__s32 btf_token_fd` (fd with `BPF_F_TOKEN_FD`).
    pub const BTF_TOKEN_FD: usize = 36;
}

/// `task_fd_query` arm (`BPF_TASK_FD_QUERY`).
pub mod task_fd_query {
    /// `__u32 pid`.
    pub const PID: usize = 0;
    /// `__u32 fd` (an fd of task `pid`, not of the caller: not translated).
    pub const FD: usize = 4;
    /// `__u32 buf_len` (in/out).
    pub const BUF_LEN: usize = 12;
    /// `__aligned_u64 buf` (pointer, Out).
    pub const BUF: usize = 16;
}

/// `link_create` arm (`BPF_LINK_CREATE`).
pub mod link_create {
    /// `__u32 prog_fd` / `map_fd` (fd).
    pub const PROG_FD: usize = 0;
    /// `__u32 target_fd` / `target_ifindex`.
    pub const TARGET_FD: usize = 4;
    /// `__u32 attach_type`.
    pub const ATTACH_TYPE: usize = 8;
    /// `__u32 flags`.
    pub const FLAGS: usize = 12;
    /// `__aligned_u64 iter_info` (pointer, In).
    pub const ITER_INFO: usize = 16;
    /// `__u32 iter_info_len`.
    pub const ITER_INFO_LEN: usize = 24;
    /// `kprobe_multi.flags`.
    pub const KPROBE_MULTI_FLAGS: usize = 16;
    /// `kprobe_multi.cnt`.
    pub const KPROBE_MULTI_CNT: usize = 20;
    /// `kprobe_multi.syms` (pointer to `cnt` string pointers, In).
    pub const KPROBE_MULTI_SYMS: usize = 24;
    /// `kprobe_multi.addrs` (pointer, In).
    pub const KPROBE_MULTI_ADDRS: usize = 32;
    /// `kprobe_multi.cookies` (pointer, In).
    pub const KPROBE_MULTI_COOKIES: usize = 40;
    /// `tcx` / `netkit` / `cgroup` `.relative_fd` / `.relative_id`.
    pub const RELATIVE_FD: usize = 16;
    /// `uprobe_multi.path` (pointer to a string, In).
    pub const UPROBE_MULTI_PATH: usize = 16;
    /// `uprobe_multi.offsets` (pointer, In).
    pub const UPROBE_MULTI_OFFSETS: usize = 24;
    /// `uprobe_multi.ref_ctr_offsets` (pointer, In).
    pub const UPROBE_MULTI_REF_CTR_OFFSETS: usize = 32;
    /// `uprobe_multi.cookies` (pointer, In).
    pub const UPROBE_MULTI_COOKIES: usize = 40;
    /// `uprobe_multi.cnt`.
    pub const UPROBE_MULTI_CNT: usize = 48;
    /// `uprobe_multi.flags`.
    pub const UPROBE_MULTI_FLAGS: usize = 52;
    /// `uprobe_multi.pid`.
    pub const UPROBE_MULTI_PID: usize = 56;
    /// `uprobe_multi.path_fd` (fd).
    pub const UPROBE_MULTI_PATH_FD: usize = 60;
    /// `tracing_multi.ids` (pointer to `cnt` u32 BTF ids, In).
    pub const TRACING_MULTI_IDS: usize = 16;
    /// `tracing_multi.cookies` (pointer to `cnt` u64, In).
    pub const TRACING_MULTI_COOKIES: usize = 24;
    /// `tracing_multi.cnt`.
    pub const TRACING_MULTI_CNT: usize = 32;
}

/// `link_update` arm (`BPF_LINK_UPDATE`).
pub mod link_update {
    /// `__u32 link_fd` (fd).
    pub const LINK_FD: usize = 0;
    /// `__u32 new_prog_fd` / `new_map_fd` (fd).
    pub const NEW_PROG_FD: usize = 4;
    /// `__u32 flags`.
    pub const FLAGS: usize = 8;
    /// `__u32 old_prog_fd` / `old_map_fd` (fd with `BPF_F_REPLACE`).
    pub const OLD_PROG_FD: usize = 12;
}

/// `link_detach` / `iter_create` arms: `__u32 link_fd` (fd) at offset 0.
pub const LINK_FD: usize = 0;

/// `prog_bind_map` arm (`BPF_PROG_BIND_MAP`).
pub mod prog_bind_map {
    /// `__u32 prog_fd` (fd).
    pub const PROG_FD: usize = 0;
    /// `__u32 map_fd` (fd).
    pub const MAP_FD: usize = 4;
}

/// `token_create` arm (`BPF_TOKEN_CREATE`).
pub mod token_create {
    /// `__u32 flags`.
    pub const FLAGS: usize = 0;
    /// `__u32 bpffs_fd` (fd).
    pub const BPFFS_FD: usize = 4;
}

/// `prog_stream_read` arm (`BPF_PROG_STREAM_READ_BY_FD`).
pub mod prog_stream_read {
    /// `__aligned_u64 stream_buf` (pointer, Out).
    pub const STREAM_BUF: usize = 0;
    /// `__u32 stream_buf_len`.
    pub const STREAM_BUF_LEN: usize = 8;
    /// `__u32 stream_id`.
    pub const STREAM_ID: usize = 12;
    /// `__u32 prog_fd` (fd).
    pub const PROG_FD: usize = 16;
}

/// `prog_assoc_struct_ops` arm (`BPF_PROG_ASSOC_STRUCT_OPS`).
pub mod prog_assoc_struct_ops {
    /// `__u32 map_fd` (fd).
    pub const MAP_FD: usize = 0;
    /// `__u32 prog_fd` (fd).
    pub const PROG_FD: usize = 4;
}

/// `struct bpf_common_attr` (4th syscall argument with `BPF_COMMON_ATTRS`).
pub mod common {
    /// `__u64 log_buf` (pointer, Out).
    pub const LOG_BUF: usize = 0;
    /// `__u32 log_size`.
    pub const LOG_SIZE: usize = 8;
    /// `__u32 log_level`.
    pub const LOG_LEVEL: usize = 12;
    /// `__u32 log_true_size` (output).
    pub const LOG_TRUE_SIZE: usize = 16;
    /// `sizeof(struct bpf_common_attr)`.
    pub const SIZE: usize = 24;
}

/// `struct bpf_prog_info` (232 bytes).
pub mod prog_info {
    /// `__u32 jited_prog_len`.
    pub const JITED_PROG_LEN: usize = 16;
    /// `__u32 xlated_prog_len`.
    pub const XLATED_PROG_LEN: usize = 20;
    /// `__aligned_u64 jited_prog_insns` (pointer, `jited_prog_len` bytes).
    pub const JITED_PROG_INSNS: usize = 24;
    /// `__aligned_u64 xlated_prog_insns` (pointer, `xlated_prog_len` bytes).
    pub const XLATED_PROG_INSNS: usize = 32;
    /// `__u32 nr_map_ids`.
    pub const NR_MAP_IDS: usize = 52;
    /// `__aligned_u64 map_ids` (pointer, `nr_map_ids` u32).
    pub const MAP_IDS: usize = 56;
    /// `__u32 nr_jited_ksyms`.
    pub const NR_JITED_KSYMS: usize = 104;
    /// `__u32 nr_jited_func_lens`.
    pub const NR_JITED_FUNC_LENS: usize = 108;
    /// `__aligned_u64 jited_ksyms` (pointer, `nr_jited_ksyms` u64).
    pub const JITED_KSYMS: usize = 112;
    /// `__aligned_u64 jited_func_lens` (pointer, `nr_jited_func_lens` u32).
    pub const JITED_FUNC_LENS: usize = 120;
    /// `__u32 func_info_rec_size`.
    pub const FUNC_INFO_REC_SIZE: usize = 132;
    /// `__aligned_u64 func_info` (pointer, `nr_func_info * func_info_rec_size`).
    pub const FUNC_INFO: usize = 136;
    /// `__u32 nr_func_info`.
    pub const NR_FUNC_INFO: usize = 144;
    /// `__u32 nr_line_info`.
    pub const NR_LINE_INFO: usize = 148;
    /// `__aligned_u64 line_info` (pointer, `nr_line_info * line_info_rec_size`).
    pub const LINE_INFO: usize = 152;
    /// `__aligned_u64 jited_line_info` (pointer, `nr_jited_line_info` u64).
    pub const JITED_LINE_INFO: usize = 160;
    /// `__u32 nr_jited_line_info`.
    pub const NR_JITED_LINE_INFO: usize = 168;
    /// `__u32 line_info_rec_size`.
    pub const LINE_INFO_REC_SIZE: usize = 172;
    /// `__u32 jited_line_info_rec_size`.
    pub const JITED_LINE_INFO_REC_SIZE: usize = 176;
    /// `__u32 nr_prog_tags`.
    pub const NR_PROG_TAGS: usize = 180;
    /// `__aligned_u64 prog_tags` (pointer, `nr_prog_tags * 8` bytes).
    pub const PROG_TAGS: usize = 184;
    /// `sizeof(struct bpf_prog_info)`.
    pub const SIZE: usize = 232;
}

/// `struct bpf_map_info` (104 bytes).
pub mod map_info {
    /// `__aligned_u64 hash` (pointer, `hash_size` bytes; kernel >= 6.18).
    pub const HASH: usize = 88;
    /// `__u32 hash_size`.
    pub const HASH_SIZE: usize = 96;
    /// `sizeof(struct bpf_map_info)`.
    pub const SIZE: usize = 104;
}

/// `struct bpf_btf_info` (32 bytes).
pub mod btf_info {
    /// `__aligned_u64 btf` (pointer, `btf_size` bytes).
    pub const BTF: usize = 0;
    /// `__u32 btf_size`.
    pub const BTF_SIZE: usize = 8;
    /// `__aligned_u64 name` (pointer, `name_len` bytes).
    pub const NAME: usize = 16;
    /// `__u32 name_len`.
    pub const NAME_LEN: usize = 24;
    /// `sizeof(struct bpf_btf_info)`.
    pub const SIZE: usize = 32;
}

/// `struct bpf_link_info` (64 bytes); the union starts at 16.
pub mod link_info {
    /// `__u32 type` (`enum bpf_link_type`).
    pub const TYPE: usize = 0;
    /// Start of the per-type union.
    pub const UNION: usize = 16;
    /// `raw_tracepoint.tp_name` / `iter.target_name` (pointer).
    pub const NAME: usize = 16;
    /// `raw_tracepoint.tp_name_len` / `iter.target_name_len`.
    pub const NAME_LEN: usize = 24;
    /// `perf_event.{uprobe.file_name, kprobe.func_name, tracepoint.tp_name}` (pointer).
    pub const PERF_EVENT_NAME: usize = 24;
    /// `perf_event.*.name_len`.
    pub const PERF_EVENT_NAME_LEN: usize = 32;
    /// `kprobe_multi.addrs` (pointer, `count` u64).
    pub const KPROBE_MULTI_ADDRS: usize = 16;
    /// `kprobe_multi.count`.
    pub const KPROBE_MULTI_COUNT: usize = 24;
    /// `kprobe_multi.cookies` (pointer, `count` u64).
    pub const KPROBE_MULTI_COOKIES: usize = 40;
    /// `uprobe_multi.path` (pointer, `path_size` bytes).
    pub const UPROBE_MULTI_PATH: usize = 16;
    /// `uprobe_multi.offsets` (pointer, `count` u64).
    pub const UPROBE_MULTI_OFFSETS: usize = 24;
    /// `uprobe_multi.ref_ctr_offsets` (pointer, `count` u64).
    pub const UPROBE_MULTI_REF_CTR_OFFSETS: usize = 32;
    /// `uprobe_multi.cookies` (pointer, `count` u64).
    pub const UPROBE_MULTI_COOKIES: usize = 40;
    /// `uprobe_multi.path_size`.
    pub const UPROBE_MULTI_PATH_SIZE: usize = 48;
    /// `uprobe_multi.count`.
    pub const UPROBE_MULTI_COUNT: usize = 52;
    /// `tracing_multi.count`.
    pub const TRACING_MULTI_COUNT: usize = 20;
    /// `tracing_multi.ids` (pointer, `count` u32).
    pub const TRACING_MULTI_IDS: usize = 32;
    /// `tracing_multi.addrs` (pointer, `count` u64).
    pub const TRACING_MULTI_ADDRS: usize = 40;
    /// `tracing_multi.cookies` (pointer, `count` u64).
    pub const TRACING_MULTI_COOKIES: usize = 48;
    /// `sizeof(struct bpf_link_info)`.
    pub const SIZE: usize = 64;
}

/// `union bpf_iter_link_info` (16 bytes).
pub mod iter_link_info {
    /// `map.map_fd` (fd).
    pub const MAP_FD: usize = 0;
    /// `cgroup.cgroup_fd` (fd).
    pub const CGROUP_FD: usize = 4;
    /// `task.pid_fd` (fd).
    pub const PID_FD: usize = 8;
}
