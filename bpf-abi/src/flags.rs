//! Flag bits and instruction encodings from `linux/bpf.h` that decide an attr's layout.

/// `BPF_F_ALLOW_OVERRIDE` (cgroup attach flag).
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1 << 0;
/// `BPF_F_ALLOW_MULTI` (cgroup attach flag).
pub const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
/// `BPF_F_REPLACE`: `replace_bpf_fd` (PROG_ATTACH) / `old_prog_fd` (LINK_UPDATE) is used.
pub const BPF_F_REPLACE: u32 = 1 << 2;
/// `BPF_F_BEFORE` (mprog/cgroup relative attach).
pub const BPF_F_BEFORE: u32 = 1 << 3;
/// `BPF_F_AFTER` (mprog/cgroup relative attach).
pub const BPF_F_AFTER: u32 = 1 << 4;
/// `BPF_F_ID`: `relative_id` (an object id) instead of `relative_fd`.
pub const BPF_F_ID: u32 = 1 << 5;
/// `BPF_F_PREORDER` (cgroup attach flag).
pub const BPF_F_PREORDER: u32 = 1 << 6;
/// `BPF_F_LINK`: the relative fd/id names a link rather than a program.
pub const BPF_F_LINK: u32 = 1 << 13;
/// `BPF_F_PATH_FD`: `path_fd` of BPF_OBJ_PIN/BPF_OBJ_GET is used.
pub const BPF_F_PATH_FD: u32 = 1 << 14;
/// `BPF_F_VTYPE_BTF_OBJ_FD`: `value_type_btf_obj_fd` of BPF_MAP_CREATE is used.
pub const BPF_F_VTYPE_BTF_OBJ_FD: u32 = 1 << 15;
/// `BPF_F_TOKEN_FD`: the command's token fd field is used.
pub const BPF_F_TOKEN_FD: u32 = 1 << 16;

/// `BPF_F_LOCK` (map element flags, 64-bit field).
pub const BPF_F_LOCK: u64 = 4;
/// `BPF_F_CPU` (map element flags; cpu number in the upper 32 bits): the value is one CPU's slot.
pub const BPF_F_CPU: u64 = 8;
/// `BPF_F_ALL_CPUS` (map element flags): the value is one slot applied to every CPU.
pub const BPF_F_ALL_CPUS: u64 = 16;

/// `BPF_F_KPROBE_MULTI_RETURN` (`link_create.kprobe_multi.flags`).
pub const BPF_F_KPROBE_MULTI_RETURN: u32 = 1 << 0;
/// `BPF_F_UPROBE_MULTI_RETURN` (`link_create.uprobe_multi.flags`).
pub const BPF_F_UPROBE_MULTI_RETURN: u32 = 1 << 0;
/// `BPF_F_UPROBE_MULTI_PATH_FD` (`link_create.uprobe_multi.flags`): `path_fd` is used.
pub const BPF_F_UPROBE_MULTI_PATH_FD: u32 = 1 << 1;

/// Size of one `struct bpf_insn`.
pub const INSN_SIZE: usize = 8;
/// `BPF_LD | BPF_IMM | BPF_DW`: first half of a 16-byte `ld_imm64`.
pub const BPF_LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
pub const BPF_JMP_CALL: u8 = 0x85;
/// `ld_imm64` src_reg: `imm` is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `ld_imm64` src_reg: `imm` is a map fd, second `imm` an offset into its value.
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `ld_imm64` src_reg: `imm` is a BTF id, second `imm` an optional module BTF fd.
pub const BPF_PSEUDO_BTF_ID: u8 = 3;
/// `ld_imm64` src_reg: `imm` is an instruction offset.
pub const BPF_PSEUDO_FUNC: u8 = 4;
/// `ld_imm64` src_reg: `imm` is an index into `fd_array`.
pub const BPF_PSEUDO_MAP_IDX: u8 = 5;
/// `ld_imm64` src_reg: `imm` is an index into `fd_array`, second `imm` a value offset.
pub const BPF_PSEUDO_MAP_IDX_VALUE: u8 = 6;
/// call src_reg: bpf-to-bpf call.
pub const BPF_PSEUDO_CALL: u8 = 1;
/// call src_reg: kfunc call; a positive `off` is an index into `fd_array` (module BTF fd).
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// Kernel string limits used for [`crate::Length::CString`] buffers.
pub mod strlen {
    /// `PATH_MAX`: BPF_OBJ_PIN/BPF_OBJ_GET `pathname`, uprobe_multi `path`.
    pub const PATH_MAX: usize = 4096;
    /// `char license[128]` of BPF_PROG_LOAD (127 characters are read).
    pub const LICENSE: usize = 128;
    /// `char buf[128]` of BPF_RAW_TRACEPOINT_OPEN `name` (127 characters are read).
    pub const RAW_TP_NAME: usize = 128;
    /// `KSYM_NAME_LEN` (kernel >= 6.1): kprobe_multi `syms[i]`.
    pub const KSYM_NAME_LEN: usize = 512;
}
