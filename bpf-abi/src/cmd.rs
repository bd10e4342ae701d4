//! `bpf()` command numbers (`enum bpf_cmd`).
//!
//! Values of `enum bpf_cmd` from the UAPI header `linux/bpf.h`.

/// `BPF_MAP_CREATE` (`enum bpf_cmd`).
pub const BPF_MAP_CREATE: u32 = 0;
/// `BPF_MAP_LOOKUP_ELEM` (`enum bpf_cmd`).
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
/// `BPF_MAP_UPDATE_ELEM` (`enum bpf_cmd`).
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
/// `BPF_MAP_DELETE_ELEM` (`enum bpf_cmd`).
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
/// `BPF_MAP_GET_NEXT_KEY` (`enum bpf_cmd`).
pub const BPF_MAP_GET_NEXT_KEY: u32 = 4;
/// `BPF_PROG_LOAD` (`enum bpf_cmd`).
pub const BPF_PROG_LOAD: u32 = 5;
/// `BPF_OBJ_PIN` (`enum bpf_cmd`).
pub const BPF_OBJ_PIN: u32 = 6;
/// `BPF_OBJ_GET` (`enum bpf_cmd`).
pub const BPF_OBJ_GET: u32 = 7;
/// `BPF_PROG_ATTACH` (`enum bpf_cmd`).
pub const BPF_PROG_ATTACH: u32 = 8;
/// `BPF_PROG_DETACH` (`enum bpf_cmd`).
pub const BPF_PROG_DETACH: u32 = 9;
/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd`).
pub const BPF_PROG_TEST_RUN: u32 = 10;
/// `BPF_PROG_RUN` (`enum bpf_cmd`).
pub const BPF_PROG_RUN: u32 = 10;
/// `BPF_PROG_GET_NEXT_ID` (`enum bpf_cmd`).
pub const BPF_PROG_GET_NEXT_ID: u32 = 11;
/// `BPF_MAP_GET_NEXT_ID` (`enum bpf_cmd`).
pub const BPF_MAP_GET_NEXT_ID: u32 = 12;
/// `BPF_PROG_GET_FD_BY_ID` (`enum bpf_cmd`).
pub const BPF_PROG_GET_FD_BY_ID: u32 = 13;
/// `BPF_MAP_GET_FD_BY_ID` (`enum bpf_cmd`).
pub const BPF_MAP_GET_FD_BY_ID: u32 = 14;
/// `BPF_OBJ_GET_INFO_BY_FD` (`enum bpf_cmd`).
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
/// `BPF_PROG_QUERY` (`enum bpf_cmd`).
pub const BPF_PROG_QUERY: u32 = 16;
/// `BPF_RAW_TRACEPOINT_OPEN` (`enum bpf_cmd`).
pub const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
/// `BPF_BTF_LOAD` (`enum bpf_cmd`).
pub const BPF_BTF_LOAD: u32 = 18;
/// `BPF_BTF_GET_FD_BY_ID` (`enum bpf_cmd`).
pub const BPF_BTF_GET_FD_BY_ID: u32 = 19;
/// `BPF_TASK_FD_QUERY` (`enum bpf_cmd`).
pub const BPF_TASK_FD_QUERY: u32 = 20;
/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (`enum bpf_cmd`).
pub const BPF_MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
/// `BPF_MAP_FREEZE` (`enum bpf_cmd`).
pub const BPF_MAP_FREEZE: u32 = 22;
/// `BPF_BTF_GET_NEXT_ID` (`enum bpf_cmd`).
pub const BPF_BTF_GET_NEXT_ID: u32 = 23;
/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd`).
pub const BPF_MAP_LOOKUP_BATCH: u32 = 24;
/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (`enum bpf_cmd`).
pub const BPF_MAP_LOOKUP_AND_DELETE_BATCH: u32 = 25;
/// `BPF_MAP_UPDATE_BATCH` (`enum bpf_cmd`).
pub const BPF_MAP_UPDATE_BATCH: u32 = 26;
/// `BPF_MAP_DELETE_BATCH` (`enum bpf_cmd`).
pub const BPF_MAP_DELETE_BATCH: u32 = 27;
/// `BPF_LINK_CREATE` (`enum bpf_cmd`).
pub const BPF_LINK_CREATE: u32 = 28;
/// `BPF_LINK_UPDATE` (`enum bpf_cmd`).
pub const BPF_LINK_UPDATE: u32 = 29;
/// `BPF_LINK_GET_FD_BY_ID` (`enum bpf_cmd`).
pub const BPF_LINK_GET_FD_BY_ID: u32 = 30;
/// `BPF_LINK_GET_NEXT_ID` (`enum bpf_cmd`).
pub const BPF_LINK_GET_NEXT_ID: u32 = 31;
/// `BPF_ENABLE_STATS` (`enum bpf_cmd`).
pub const BPF_ENABLE_STATS: u32 = 32;
/// `BPF_ITER_CREATE` (`enum bpf_cmd`).
pub const BPF_ITER_CREATE: u32 = 33;
/// `BPF_LINK_DETACH` (`enum bpf_cmd`).
pub const BPF_LINK_DETACH: u32 = 34;
/// `BPF_PROG_BIND_MAP` (`enum bpf_cmd`).
pub const BPF_PROG_BIND_MAP: u32 = 35;
/// `BPF_TOKEN_CREATE` (`enum bpf_cmd`).
pub const BPF_TOKEN_CREATE: u32 = 36;
/// `BPF_PROG_STREAM_READ_BY_FD` (`enum bpf_cmd`).
pub const BPF_PROG_STREAM_READ_BY_FD: u32 = 37;
/// `BPF_PROG_ASSOC_STRUCT_OPS` (`enum bpf_cmd`).
pub const BPF_PROG_ASSOC_STRUCT_OPS: u32 = 38;
/// `BPF_COMMON_ATTRS` (`enum bpf_cmd`).
pub const BPF_COMMON_ATTRS: u32 = 65536;

/// The commands (`enum bpf_cmd`) by name: the constant's name without `BPF_`, in lower
/// case, as bpftool and libbpf spell them (`map_lookup_elem`). Aliases share a
/// number; the first entry of a number is its canonical name.
pub const NAMES: &[(&str, u32)] = &[
    ("map_create", BPF_MAP_CREATE),
    ("map_lookup_elem", BPF_MAP_LOOKUP_ELEM),
    ("map_update_elem", BPF_MAP_UPDATE_ELEM),
    ("map_delete_elem", BPF_MAP_DELETE_ELEM),
    ("map_get_next_key", BPF_MAP_GET_NEXT_KEY),
    ("prog_load", BPF_PROG_LOAD),
    ("obj_pin", BPF_OBJ_PIN),
    ("obj_get", BPF_OBJ_GET),
    ("prog_attach", BPF_PROG_ATTACH),
    ("prog_detach", BPF_PROG_DETACH),
    ("prog_test_run", BPF_PROG_TEST_RUN),
    ("prog_run", BPF_PROG_RUN),
    ("prog_get_next_id", BPF_PROG_GET_NEXT_ID),
    ("map_get_next_id", BPF_MAP_GET_NEXT_ID),
    ("prog_get_fd_by_id", BPF_PROG_GET_FD_BY_ID),
    ("map_get_fd_by_id", BPF_MAP_GET_FD_BY_ID),
    ("obj_get_info_by_fd", BPF_OBJ_GET_INFO_BY_FD),
    ("prog_query", BPF_PROG_QUERY),
    ("raw_tracepoint_open", BPF_RAW_TRACEPOINT_OPEN),
    ("btf_load", BPF_BTF_LOAD),
    ("btf_get_fd_by_id", BPF_BTF_GET_FD_BY_ID),
    ("task_fd_query", BPF_TASK_FD_QUERY),
    ("map_lookup_and_delete_elem", BPF_MAP_LOOKUP_AND_DELETE_ELEM),
    ("map_freeze", BPF_MAP_FREEZE),
    ("btf_get_next_id", BPF_BTF_GET_NEXT_ID),
    ("map_lookup_batch", BPF_MAP_LOOKUP_BATCH),
    (
        "map_lookup_and_delete_batch",
        BPF_MAP_LOOKUP_AND_DELETE_BATCH,
    ),
    ("map_update_batch", BPF_MAP_UPDATE_BATCH),
    ("map_delete_batch", BPF_MAP_DELETE_BATCH),
    ("link_create", BPF_LINK_CREATE),
    ("link_update", BPF_LINK_UPDATE),
    ("link_get_fd_by_id", BPF_LINK_GET_FD_BY_ID),
    ("link_get_next_id", BPF_LINK_GET_NEXT_ID),
    ("enable_stats", BPF_ENABLE_STATS),
    ("iter_create", BPF_ITER_CREATE),
    ("link_detach", BPF_LINK_DETACH),
    ("prog_bind_map", BPF_PROG_BIND_MAP),
    ("token_create", BPF_TOKEN_CREATE),
    ("prog_stream_read_by_fd", BPF_PROG_STREAM_READ_BY_FD),
    ("prog_assoc_struct_ops", BPF_PROG_ASSOC_STRUCT_OPS),
];

/// The number of a lower-case name from [`NAMES`].
pub fn by_name(name: &str) -> Option<u32> {
    crate::names::by_name(NAMES, name)
}

/// The canonical lower-case name of a number, if this build knows it.
pub fn short_name(value: u32) -> Option<&'static str> {
    crate::names::short_name(NAMES, value)
}

/// Symbolic name of a command number (without [`BPF_COMMON_ATTRS`]); `"BPF_UNKNOWN"` for unknown numbers.
pub fn name(cmd: u32) -> &'static str {
    match cmd & !BPF_COMMON_ATTRS {
        BPF_MAP_CREATE => "BPF_MAP_CREATE",
        BPF_MAP_LOOKUP_ELEM => "BPF_MAP_LOOKUP_ELEM",
        BPF_MAP_UPDATE_ELEM => "BPF_MAP_UPDATE_ELEM",
        BPF_MAP_DELETE_ELEM => "BPF_MAP_DELETE_ELEM",
        BPF_MAP_GET_NEXT_KEY => "BPF_MAP_GET_NEXT_KEY",
        BPF_PROG_LOAD => "BPF_PROG_LOAD",
        BPF_OBJ_PIN => "BPF_OBJ_PIN",
        BPF_OBJ_GET => "BPF_OBJ_GET",
        BPF_PROG_ATTACH => "BPF_PROG_ATTACH",
        BPF_PROG_DETACH => "BPF_PROG_DETACH",
        BPF_PROG_TEST_RUN => "BPF_PROG_TEST_RUN",
        BPF_PROG_GET_NEXT_ID => "BPF_PROG_GET_NEXT_ID",
        BPF_MAP_GET_NEXT_ID => "BPF_MAP_GET_NEXT_ID",
        BPF_PROG_GET_FD_BY_ID => "BPF_PROG_GET_FD_BY_ID",
        BPF_MAP_GET_FD_BY_ID => "BPF_MAP_GET_FD_BY_ID",
        BPF_OBJ_GET_INFO_BY_FD => "BPF_OBJ_GET_INFO_BY_FD",
        BPF_PROG_QUERY => "BPF_PROG_QUERY",
        BPF_RAW_TRACEPOINT_OPEN => "BPF_RAW_TRACEPOINT_OPEN",
        BPF_BTF_LOAD => "BPF_BTF_LOAD",
        BPF_BTF_GET_FD_BY_ID => "BPF_BTF_GET_FD_BY_ID",
        BPF_TASK_FD_QUERY => "BPF_TASK_FD_QUERY",
        BPF_MAP_LOOKUP_AND_DELETE_ELEM => "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        BPF_MAP_FREEZE => "BPF_MAP_FREEZE",
        BPF_BTF_GET_NEXT_ID => "BPF_BTF_GET_NEXT_ID",
        BPF_MAP_LOOKUP_BATCH => "BPF_MAP_LOOKUP_BATCH",
        BPF_MAP_LOOKUP_AND_DELETE_BATCH => "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        BPF_MAP_UPDATE_BATCH => "BPF_MAP_UPDATE_BATCH",
        BPF_MAP_DELETE_BATCH => "BPF_MAP_DELETE_BATCH",
        BPF_LINK_CREATE => "BPF_LINK_CREATE",
        BPF_LINK_UPDATE => "BPF_LINK_UPDATE",
        BPF_LINK_GET_FD_BY_ID => "BPF_LINK_GET_FD_BY_ID",
        BPF_LINK_GET_NEXT_ID => "BPF_LINK_GET_NEXT_ID",
        BPF_ENABLE_STATS => "BPF_ENABLE_STATS",
        BPF_ITER_CREATE => "BPF_ITER_CREATE",
        BPF_LINK_DETACH => "BPF_LINK_DETACH",
        BPF_PROG_BIND_MAP => "BPF_PROG_BIND_MAP",
        BPF_TOKEN_CREATE => "BPF_TOKEN_CREATE",
        BPF_PROG_STREAM_READ_BY_FD => "BPF_PROG_STREAM_READ_BY_FD",
        BPF_PROG_ASSOC_STRUCT_OPS => "BPF_PROG_ASSOC_STRUCT_OPS",
        _ => "BPF_UNKNOWN",
    }
}
