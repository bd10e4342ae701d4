//! telebpf-abi: a pure description of the Linux `bpf()` syscall ABI.
//!
//! telebpf runs the `bpf()` calls of an unmodified host program inside a guest VM. The call's
//! `union bpf_attr` is full of *user pointers* (memory of the calling process) and *file
//! descriptors* (of the calling process), and neither means anything on the other side. This
//! crate answers, for one call, "which bytes are pointers to what, and which are fds", as a
//! [`Plan`]. It does no syscalls and holds no state; both sides run the same functions.
//!
//! # The plan model
//!
//! * [`Plan::new`] looks at the command, the attr bytes (and the `struct bpf_common_attr` bytes
//!   with `BPF_COMMON_ATTRS`) and at what [`Objects`] knows about fds in the attr (a map fd's key
//!   and value sizes, a prog fd's type, ...). It returns the top-level [`BufferSpec`]s (pointer
//!   fields of the attr / common attr) and [`FdSlot`]s (fd fields of the attr).
//! * Some buffers contain more pointers or fds (instructions with map fds, `fd_array`, fd-valued
//!   map updates, info structs with nested output buffers, kprobe_multi symbol strings, iterator
//!   parameters). Once a buffer's content is known, [`Plan::expand`] appends what is inside it.
//!   Nested buffers always get larger indices than their parent, and `fd_array` comes after
//!   `insns`, so a caller visits everything with:
//!
//! ```
//! # use telebpf_abi::*;
//! # fn content_of(_: &BufferSpec) -> Vec<u8> { Vec::new() }
//! # fn run(mut plan: Plan, objects: &dyn Objects) -> Result<(), AbiError> {
//! let mut i = 0;
//! while i < plan.buffers.len() {
//!     // Host: read the caller's memory (In/InOut); proxy: the bytes it received.
//!     // Out buffers: pass an empty slice (expand is a no-op for them).
//!     let bytes = content_of(&plan.buffers[i]);
//!     plan.expand(i, &bytes, objects)?;
//!     i += 1;
//! }
//! # Ok(()) }
//! ```
//!
//! # The two sides
//!
//! Both are written once, in `telebpf-marshal` (`host::gather`/`scatter`,
//! `proxy::patch`/`collect`), which the preload, the proxy and the tests call:
//!
//! * **Host (preload)**: builds the plan from the caller's attr with [`Objects`] describing
//!   *host* fds; copies every In/InOut buffer from its memory (for a [`Length::CString`]: up to
//!   and including the NUL, at most `max` bytes — if no NUL is found within `max` bytes, exactly
//!   `max` bytes without NUL, so the kernel fails the same way it would locally; see
//!   [`Length::accepts`]); translates each [`FdSlot`] value from host fd to guest fd, writing the
//!   translated number into the attr / buffer bytes it sends. Translation keeps values `<= 0`
//!   unchanged (0 is "none" in optional fields; negative values are never valid fds and the
//!   guest kernel rejects them exactly as the host kernel would).
//! * **Proxy (guest)**: never trusts a client-declared layout. It recomputes the plan from the
//!   attr it received (now holding guest fd numbers) with [`Objects`] describing *guest* fds,
//!   checks that every buffer it received matches the plan ([`Length::accepts`]), allocates
//!   each buffer (Out buffers zero-filled, of [`BufferSpec::alloc_len`]), writes the address of
//!   each allocation into its pointer field (`parent` + `ptr_offset`: the attr, the common attr
//!   or the proxy's copy of a parent buffer) with [`write_u64`], validates every fd slot (values
//!   `> 0` must be fds of the session; keep fd 0 of the proxy pointing at `/dev/null`), calls
//!   `bpf()`, and returns the attr, the common attr and every Out/InOut buffer
//!   ([`Plan::reply_len`] bytes of it).
//! * Pointer fields the kernel does not dereference for the command are left alone: the kernel
//!   ignores them. Pointer fields it does dereference are *all* in the plan, so no raw address of
//!   the client reaches the guest kernel.
//! * Before handing memory back to the caller, pointer fields that were patched inside InOut
//!   buffers (nested `bpf_prog_info.xlated_prog_insns`, ...) and in the attr must be restored to
//!   the caller's value [`BufferSpec::ptr`] (the kernel writes the info struct back, including
//!   the pointers it was given). A pointer the kernel zeroed should stay zero.
//!
//! # Hints
//!
//! A few layouts depend on facts not visible in the attr: the type of a link
//! ([`Objects::link_type`], for `bpf_link_info`), the target of an iterator program
//! ([`Objects::iter_target`], for `bpf_iter_link_info`), the program fd offsets inside a
//! struct_ops map value ([`Objects::struct_ops_fd_offsets`]). They have conservative defaults,
//! documented on each method; a proxy should implement `link_type` (see there).
//!
//! # Limits
//!
//! The proxy allocates what the plan says, so the plan refuses absurd sizes with
//! [`AbiError::TooBig`] (`E2BIG`): one buffer above [`MAX_BUFFER_LEN`], all buffers together above
//! [`MAX_TOTAL_LEN`] (CString buffers count with their `max`), more than [`MAX_BUFFERS`] buffers
//! or [`MAX_FD_SLOTS`] fd slots. All arithmetic is checked; no input makes this crate panic.
//!
//! # Deliberate deviations from the kernel
//!
//! * Sizes beyond the limits above fail with `E2BIG` (e.g. a 1 GiB verifier log buffer, a
//!   `BPF_PSEUDO_MAP_IDX` index near `u32::MAX`, kprobe_multi with ~1M symbols), where the kernel
//!   might accept the call or fail differently.
//! * A non-zero pointer or fd field cut in the middle by the bytes given (attr size, `info_len`,
//!   `iter_info_len`) fails with `EFAULT` ([`AbiError::Truncated`]) instead of being used
//!   truncated.
//! * An fd whose object decides the layout but is unknown fails with `EBADF` before the kernel
//!   could check other fields first (the kernel might have said `EINVAL`).
//! * `test.data_out` with `data_size_out == 0` (kernel: "unbounded") gets
//!   `data_size_in + 128 KiB` of room.
//! * struct_ops map updates need [`Objects::struct_ops_fd_offsets`] (`EOPNOTSUPP` otherwise).

mod error;
mod expand;
mod names;
mod plan;
#[cfg(test)]
mod tests;

pub mod attach_type;
pub mod btf;
pub mod cmd;
pub mod flags;
pub mod helper;
pub mod insn;
pub mod link_type;
pub mod map_type;
pub mod memory;
pub mod netlink;
pub mod off;
pub mod perf;
pub mod prog_type;

pub use error::AbiError;

use serde::{Deserialize, Serialize};

/// Largest single buffer a plan accepts (256 MiB).
pub const MAX_BUFFER_LEN: usize = 256 << 20;
/// Largest sum of buffer lengths a plan accepts (512 MiB; CStrings counted with their `max`).
pub const MAX_TOTAL_LEN: usize = 512 << 20;
/// Largest number of buffers in a plan.
pub const MAX_BUFFERS: usize = 1 << 21;
/// Largest number of fd slots in a plan.
pub const MAX_FD_SLOTS: usize = 1 << 21;

/// Which way a buffer travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Read by the kernel only: host → guest.
    In,
    /// Written by the kernel only: guest → host (the proxy allocates it zero-filled).
    Out,
    /// Read and written: both ways.
    InOut,
}

impl Direction {
    /// True for In and InOut: the bytes travel host → guest.
    pub fn copies_in(self) -> bool {
        matches!(self, Direction::In | Direction::InOut)
    }

    /// True for Out and InOut: the bytes travel guest → host after the call.
    pub fn copies_out(self) -> bool {
        matches!(self, Direction::Out | Direction::InOut)
    }
}

/// Where a pointer field (or fd field) lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Parent {
    /// The `union bpf_attr` (3rd syscall argument).
    Attr,
    /// The `struct bpf_common_attr` (4th syscall argument with `BPF_COMMON_ATTRS`).
    Common,
    /// The content of another buffer: index into [`Plan::buffers`].
    Buffer(usize),
}

/// How to know a buffer's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Length {
    /// Exactly this many bytes.
    Bytes(usize),
    /// NUL-terminated string read from the caller's memory; length (incl. NUL) found by the host
    /// side, at most `max`. If the caller's string has no NUL within `max` bytes, the host sends
    /// exactly `max` bytes without NUL (the kernel reads at most `max` bytes of such a string, so
    /// it reports the same error it would locally).
    CString {
        /// Largest length, terminating NUL included.
        max: usize,
    },
}

impl Length {
    /// Upper bound of the buffer's length.
    pub fn max_len(&self) -> usize {
        match *self {
            Length::Bytes(n) => n,
            Length::CString { max } => max,
        }
    }

    /// Whether `content` is a valid transfer of a buffer of this length: exactly `n` bytes for
    /// `Bytes(n)`; for `CString { max }`, 1 to `max` bytes that end with NUL, or exactly `max`
    /// bytes (an over-long string). The proxy must reject anything else.
    pub fn accepts(&self, content: &[u8]) -> bool {
        match *self {
            Length::Bytes(n) => content.len() == n,
            Length::CString { max } => {
                !content.is_empty()
                    && content.len() <= max
                    && (content.last() == Some(&0) || content.len() == max)
            }
        }
    }
}

/// What's inside a buffer, when it matters for nested pointers / fds / trimming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Content {
    /// Opaque bytes.
    Plain,
    /// `struct bpf_insn` array of BPF_PROG_LOAD: fd slots in `ld_imm64`, and it sizes `fd_array`.
    Insns,
    /// `fd_array` of BPF_PROG_LOAD: one u32 fd per entry.
    FdArray,
    /// Update value(s) of a map whose values hold fds, one element after another.
    MapValueFds,
    /// Array of u64 user pointers to CStrings (kprobe_multi `syms`).
    PtrArray,
    /// `struct bpf_prog_info` (nested output buffers).
    ProgInfo,
    /// `struct bpf_map_info` (nested `hash` buffer).
    MapInfo,
    /// `struct bpf_btf_info` (nested `btf` and `name` buffers).
    BtfInfo,
    /// `struct bpf_link_info` (nested buffers depending on the link type).
    LinkInfo,
    /// `union bpf_iter_link_info` of BPF_LINK_CREATE (map/cgroup/pid fds).
    IterLinkInfo,
    /// The key of an element command on a local storage map (task, socket,
    /// inode, cgroup storage): an `int` fd naming the object the storage
    /// belongs to ([`map_type::key_is_fd`]).
    KeyFd,
    /// Verifier/BTF log: the reply may be trimmed after the first NUL.
    Log,
}

/// One user-memory buffer the call needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BufferSpec {
    /// The struct holding the pointer field.
    pub parent: Parent,
    /// Byte offset of the u64 pointer field in the parent.
    pub ptr_offset: usize,
    /// The pointer value as found (caller's address on the host; whatever the client sent, on
    /// the proxy). Never 0: a NULL pointer produces no buffer.
    pub ptr: u64,
    /// How long the buffer is.
    pub len: Length,
    /// Which way it travels.
    pub dir: Direction,
    /// What is inside.
    pub content: Content,
}

impl BufferSpec {
    /// Bytes the proxy allocates for an Out buffer (and the upper bound for In/InOut ones).
    pub fn alloc_len(&self) -> usize {
        self.len.max_len()
    }
}

/// An fd-valued u32/s32 field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FdSlot {
    /// The struct holding the fd field.
    pub parent: Parent,
    /// Byte offset of the 32-bit fd field in the parent (for 8-byte fd values, the low half).
    pub offset: usize,
    /// The fd as found. `0` in an optional field means "none"; translate only values `> 0`.
    pub value: i32,
}

/// Where the pointers and fds of one `bpf()` call are. See the crate docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The command, without `BPF_COMMON_ATTRS`.
    pub cmd: u32,
    /// Whether `BPF_COMMON_ATTRS` was set (the call has a 4th/5th argument).
    pub common: bool,
    /// Every user buffer, parents before children.
    pub buffers: Vec<BufferSpec>,
    /// Every fd field, in the attr and inside buffers.
    pub fds: Vec<FdSlot>,
    /// Whether a non-negative return value is a new fd (of the executing side).
    pub returns_fd: bool,
    /// Per-buffer facts `expand` needs (parallel to `buffers`).
    aux: Vec<Aux>,
    /// Sum of `alloc_len()` over `buffers`.
    total: usize,
}

/// Private per-buffer data for [`Plan::expand`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Aux {
    #[default]
    None,
    /// MapValueFds: element stride and fd offsets inside each element.
    ValueFds { stride: usize, offsets: Vec<usize> },
    /// IterLinkInfo: the iterator target, if known.
    Iter(Option<IterTarget>),
    /// LinkInfo: the link type, if known.
    Link(Option<u32>),
    /// PtrArray: `max` of the CString children.
    StrMax(usize),
}

/// What one side knows about an fd that appears in an attr (host fd on the client, guest fd on the proxy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A BPF map.
    Map(MapMeta),
    /// A BPF program.
    Prog {
        /// `enum bpf_prog_type` of the program.
        prog_type: u32,
    },
    /// A BPF link.
    Link,
    /// A BTF object.
    Btf,
    /// A BPF iterator (`BPF_ITER_CREATE` result).
    Iter,
    /// Anything else (token, perf event, cgroup, netns, socket, ...).
    Other,
}

/// The properties of a map that decide buffer sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMeta {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags` at creation.
    pub map_flags: u32,
}

/// Which `union bpf_iter_link_info` arm an iterator program's target uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IterTarget {
    /// `bpf_map_elem`, `bpf_sk_storage_map`, `sockmap`: `map.map_fd` (offset 0) is an fd.
    Map,
    /// `cgroup`: `cgroup.cgroup_fd` (offset 4) is an fd; `order` and `cgroup_id` are not.
    Cgroup,
    /// `task`, `task_file`, `task_vma`: `task.pid_fd` (offset 8) is an fd; `tid`/`pid` are not.
    Task,
    /// Every other target (no fd parameters).
    NoFds,
}

impl IterTarget {
    /// Classify an iterator target name (the `bpf_iter_<name>` suffix, as in
    /// `bpf_link_info.iter.target_name`).
    pub fn from_target_name(name: &str) -> IterTarget {
        match name {
            "bpf_map_elem" | "bpf_sk_storage_map" | "sockmap" => IterTarget::Map,
            "cgroup" => IterTarget::Cgroup,
            "task" | "task_file" | "task_vma" => IterTarget::Task,
            _ => IterTarget::NoFds,
        }
    }
}

/// What a side knows about the fds of its session.
pub trait Objects {
    /// The object behind `fd`, or `None` if the fd is not known.
    fn kind(&self, fd: i32) -> Option<ObjectKind>;

    /// Possible CPUs of the kernel that executes the call (the guest), for per-CPU value sizes.
    /// A value of 0 is treated as 1.
    fn possible_cpus(&self) -> u32;

    /// `enum bpf_link_type` of a link fd, if known. Needed to find the nested pointers of
    /// `bpf_link_info` in BPF_OBJ_GET_INFO_BY_FD. Default `None`: then, if the info's union part
    /// is all zero there is nothing to find; otherwise the `type` field of the caller's info is
    /// used if non-zero (bpftool's second call sets it), else the call fails with
    /// [`AbiError::Unsupported`]. **A proxy must implement this** (e.g. with its own
    /// BPF_OBJ_GET_INFO_BY_FD of 12 bytes), because the caller's `type` field is client data.
    fn link_type(&self, fd: i32) -> Option<u32> {
        let _ = fd;
        None
    }

    /// The iterator target of an iterator program (prog fd of a BPF_LINK_CREATE with
    /// `BPF_TRACE_ITER`), if known. Default `None`: every non-zero word at the three possible fd
    /// offsets (0, 4, 8) of `bpf_iter_link_info` is treated as an fd — right for map iterators
    /// and fd-based cgroup/task parameters, wrong (fails with EBADF) for `order`, `tid`, `pid`
    /// and `cgroup_id` parameters.
    fn iter_target(&self, prog_fd: i32) -> Option<IterTarget> {
        let _ = prog_fd;
        None
    }

    /// Offsets of the program fds (func-pointer members, as `unsigned long`) inside the value of
    /// a `BPF_MAP_TYPE_STRUCT_OPS` map, i.e. `offsetof(value, data) + member offset` for every
    /// function-pointer member of the struct_ops type, found through the kernel BTF
    /// (`btf_vmlinux_value_type_id`). Default `None`: BPF_MAP_UPDATE_ELEM on a struct_ops map
    /// fails with [`AbiError::Unsupported`] rather than letting unchecked fd numbers through.
    fn struct_ops_fd_offsets(&self, map_fd: i32) -> Option<Vec<usize>> {
        let _ = map_fd;
        None
    }
}

/// Little-endian u32 at `off`; bytes past the end of `buf` read as zero.
pub fn read_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    copy_clamped(buf, off, &mut b);
    u32::from_le_bytes(b)
}

/// Little-endian u64 at `off`; bytes past the end of `buf` read as zero.
pub fn read_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    copy_clamped(buf, off, &mut b);
    u64::from_le_bytes(b)
}

/// Little-endian i32 at `off`; bytes past the end of `buf` read as zero.
pub fn read_i32(buf: &[u8], off: usize) -> i32 {
    read_u32(buf, off) as i32
}

/// Write a little-endian u32 at `off`; ignored unless all 4 bytes are inside `buf`.
pub fn write_u32(buf: &mut [u8], off: usize, v: u32) {
    write_exact(buf, off, &v.to_le_bytes());
}

/// Write a little-endian u64 at `off`; ignored unless all 8 bytes are inside `buf`.
pub fn write_u64(buf: &mut [u8], off: usize, v: u64) {
    write_exact(buf, off, &v.to_le_bytes());
}

fn copy_clamped(buf: &[u8], off: usize, out: &mut [u8]) {
    if let Some(src) = buf.get(off..) {
        let n = src.len().min(out.len());
        out[..n].copy_from_slice(&src[..n]);
    }
}

fn write_exact(buf: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(end) = off.checked_add(bytes.len()) {
        if let Some(dst) = buf.get_mut(off..end) {
            dst.copy_from_slice(bytes);
        }
    }
}
