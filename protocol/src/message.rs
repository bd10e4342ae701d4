//! Request and reply messages carried inside sealed frames.
//!
//! # Conversation
//!
//! After the handshake the proxy speaks first: one [`Reply::Welcome`] with
//! the [`Facts`] of its kernel (uname, possible CPUs, capabilities), so the
//! client never spends a round trip on them. Then the client sends
//! [`Request`]s; every request except [`Request::Close`] gets exactly one
//! [`Reply`], in order. `Close` is fire-and-forget so that closing an fd on the
//! host costs no round trip; ordering on the stream guarantees the proxy sees
//! it before any later request.
//!
//! Messages are encoded with bincode 1.3 (fixed-width little-endian
//! integers, length-prefixed sequences) via [`encode`] and [`decode`]. A
//! frame that does not decode is a protocol error: the proxy answers
//! [`Reply::Error`] with `EPROTO` and keeps the session, because the frame was
//! authentic (the channel already checked it) and only its content is wrong.
//!
//! # The bpf call
//!
//! [`BpfCall`] carries the attr bytes as the host program wrote them, with
//! every fd already translated to the guest's numbering, plus one
//! [`WireBuffer`] per pointer buffer of the plan that `telebpf-abi` derives
//! from the attr. The proxy derives the same plan itself, checks the buffers
//! against it, points the attr at its own copies, runs `bpf()`, and answers
//! [`BpfResult`]: the return value, errno, the attr as the kernel left it
//! (pointer fields restored to the caller's values) and the content of every
//! buffer the kernel writes. Both ends of this marshalling live in
//! `telebpf-marshal` (`gather`/`scatter` on the host, `patch`/`collect` in
//! the proxy).
//!
//! # Files
//!
//! A guest file travels in replies of at most [`FILE_CHUNK`] bytes, one at
//! a time: the client sends [`FileOp::ReadRange`] from offset 0 with
//! `snapshot` 0, and the reply ([`FileReply::Range`]) gives the content's
//! `size`, the first range, and — when more follows — a `snapshot` id that
//! each following range names. The proxy answers a range only after the
//! previous reply left, so a client that does not read holds at most one
//! range in the proxy's memory, and every range is charged to the
//! session's bytes in flight. The ranges of one read all come from the
//! same content: for an immutable file (BTF, kernel config) the proxy's
//! one shared copy of that version; for any other (kallsyms, a pinned
//! map's bpffs file) a copy the first range took for this session, held
//! until the last range is served or the session ends. A snapshot the
//! proxy no longer has (the file changed, the copy was let go) answers
//! `ESTALE`, and the client starts again from offset 0.
//!
//! # Netlink
//!
//! A `NETLINK_ROUTE` socket a host program opens is relayed: the proxy
//! opens one in the guest for the session ([`NetlinkOp::Open`], a guest
//! object like any other, closed by [`Request::Close`] or the session's
//! end) and each `bind`, `getsockname`, `setsockopt`, `send` and `recv` of
//! the program is one [`NetlinkOp`] on it, answered before the next, so
//! sequence numbers, acks, errors and multipart dumps arrive exactly as
//! the guest kernel wrote them. Only datagrams to the guest kernel travel
//! (no address is carried); fds inside a message (an XDP or tc program)
//! travel in the guest's numbering and the proxy checks each one.

use serde::{Deserialize, Serialize};
use telebpf_abi::ObjectKind;

/// Largest attr the proxy accepts: the kernel refuses sizes above a page
/// with `E2BIG` before reading anything.
pub const MAX_ATTR: usize = 4096;

/// An fd value standing for "an fd that is open in the host program but is
/// not a guest object" (stdout, a socket, a cgroup). The proxy replaces it
/// with an open fd of its own that is not a BPF object, so the guest kernel
/// answers `EINVAL` ("not a map") where the local kernel would, rather than
/// `EBADF`. Fds that are not open at all travel as `-1` (`EBADF`).
pub const FOREIGN_FD: i32 = -2;

/// `Out` buffers up to this size travel with the caller's current content,
/// so bytes the kernel does not write (a lookup that fails, a short string)
/// come back unchanged instead of zeroed.
pub const PREFILL_MAX: usize = 64 << 10;

/// Most bytes of a guest file one reply carries ([`FileOp::ReadRange`];
/// [`FileOp::Read`] of a larger file answers `EFBIG`).
pub const FILE_CHUNK: usize = 128 << 10;

/// A request from the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Execute one `bpf()` call.
    Bpf(BpfCall),
    /// The host closed its last reference to a guest object. No reply.
    Close {
        /// The guest fd.
        fd: i32,
    },
    /// `read()` on a guest fd that supports it (a BPF iterator).
    Read {
        /// The guest fd.
        fd: i32,
        /// Bytes wanted at most.
        len: u32,
    },
    /// An operation on a file that describes the guest kernel.
    File(FileOp),
    /// Echo the payload: measures the channel round trip.
    Ping(Vec<u8>),
    /// `perf_event_open(attr, pid, cpu, group_fd, flags)`.
    PerfEventOpen {
        /// `attr.size` bytes of the attr (`config1` as the caller set it).
        attr: Vec<u8>,
        /// Guest pid, or -1.
        pid: i32,
        /// CPU, or -1.
        cpu: i32,
        /// Guest fd of the group leader, or -1.
        group_fd: i32,
        /// `PERF_FLAG_*`.
        flags: u64,
        /// For PMUs whose `config1` points to a string (kprobe function,
        /// uprobe path): that string, NUL included, if the host could read it.
        config1_string: Option<Vec<u8>>,
    },
    /// A perf-event ioctl on a guest perf event.
    Ioctl {
        /// The guest fd.
        fd: i32,
        /// The request number.
        cmd: u64,
        /// The argument, by kind.
        arg: IoctlValue,
    },
    /// What `mmap(fd, len, PROT_READ, MAP_SHARED, offset)` of a guest map
    /// shows now.
    MapSnapshot {
        /// The guest fd.
        fd: i32,
        /// Bytes.
        len: u64,
        /// Offset into the map.
        offset: u64,
    },
    /// Writes bytes into a guest map's mmapable memory (host-side writes to
    /// a mirrored `.bss`/`.data`). Reply: [`Reply::Snapshot`] with an empty
    /// vector, or the errno.
    MapWrite {
        /// The guest fd.
        fd: i32,
        /// Offset into the map's mapping.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// First and only request of a stream connection: turn it into a push
    /// stream of the records of a ring owned by another session of this
    /// client. Replies are [`Reply::Records`] and [`Reply::Lost`], pushed as
    /// the guest produces them, until the ring's owner closes it. The first
    /// is an empty [`Reply::Records`] as soon as the proxy has mapped the
    /// ring (a refusal instead, if it will not): the host waits for it
    /// before its `mmap` returns, because a perf event that nobody mapped
    /// yet drops what a program outputs.
    Stream(StreamRequest),
    /// On a [`StreamKind::UserRingbuf`] stream connection (after its
    /// [`Request::Stream`]): records the host program submitted to the user
    /// ring buffer, in order, for the proxy to produce into the guest ring.
    /// No reply.
    Records(#[serde(with = "bytes_vec")] Vec<Vec<u8>>),
    /// Run a bulk-read collector in the guest and answer with everything it
    /// touched, in one [`Reply::Collected`].
    Collect(CollectRequest),
    /// Read guest kernel memory: one forwarded read per range, as a
    /// per-pointer walk does. Reply: [`Reply::Memory`].
    Peek(Vec<MemoryRange>),
    /// List the guest's BPF programs in one request (what
    /// `BPF_PROG_GET_NEXT_ID`, `BPF_PROG_GET_FD_BY_ID` and
    /// `BPF_OBJ_GET_INFO_BY_FD` tell, one call each per program), leaving
    /// out the proxy's own collectors. Reply: [`Reply::Programs`].
    Programs,
    /// An operation on a `NETLINK_ROUTE` socket the proxy holds in the
    /// guest for this session (see "Netlink" above). Reply:
    /// [`Reply::Netlink`].
    Netlink(NetlinkOp),
    /// A guest interface's index by name or name by index. Reply:
    /// [`Reply::Interface`].
    Interface(InterfaceOp),
    /// A path under the guest's cgroup2 mount, or the mount lines
    /// themselves (see [`CgroupOp`]). Reply: [`Reply::Cgroup`].
    Cgroup(CgroupOp),
}

/// What `readlink("/proc/self/fd/N")` of a relayed netlink socket says on
/// the host; the proxy marks its sockets with it too (its [`NewObject::link`]).
pub const NETLINK_LINK: &str = "socket:[netlink_route]";

/// Largest netlink message batch one [`NetlinkOp::Send`] carries: far above
/// any rtnetlink request (libbpf's are under 1 KiB), below the kernel's
/// default send buffer (`net.core.wmem_default`, 208 KiB), beyond which the
/// kernel answers `EMSGSIZE` too.
pub const NETLINK_SEND_MAX: usize = 64 << 10;

/// Most bytes one [`NetlinkOp::Recv`] returns: twice the largest datagram
/// the kernel builds for a dump (`netlink_recvmsg` caps it at 32 KiB), so
/// only a datagram no rtnetlink answer reaches is cut (`MSG_TRUNC` then
/// tells its real length, as the kernel does).
pub const NETLINK_RECV_MAX: usize = 64 << 10;

/// An operation on a relayed `NETLINK_ROUTE` socket. `fd` is the guest fd
/// [`NetlinkReply::Opened`] gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetlinkOp {
    /// `socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)` in the guest.
    Open,
    /// `bind` with a `sockaddr_nl`'s port id and groups.
    Bind {
        /// The guest fd.
        fd: i32,
        /// `nl_pid` (0: the kernel picks one).
        pid: u32,
        /// `nl_groups`.
        groups: u32,
    },
    /// `getsockname`: the port id the guest kernel gave the socket, which
    /// every reply's `nlmsg_pid` carries (libbpf checks it).
    Name {
        /// The guest fd.
        fd: i32,
    },
    /// `setsockopt(SOL_NETLINK, option, value)` for the integer options a
    /// request-reply client uses (`NETLINK_EXT_ACK`,
    /// `NETLINK_GET_STRICT_CHK`, `NETLINK_CAP_ACK`).
    SetOption {
        /// The guest fd.
        fd: i32,
        /// `NETLINK_*`.
        option: i32,
        /// The int value.
        value: i32,
    },
    /// `send` of one datagram to the guest kernel, fds in its attributes
    /// already in the guest's numbering.
    Send {
        /// The guest fd.
        fd: i32,
        /// The datagram (at most [`NETLINK_SEND_MAX`] bytes).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// `recv` of one datagram.
    Recv {
        /// The guest fd.
        fd: i32,
        /// Bytes wanted at most (the proxy reads at most
        /// [`NETLINK_RECV_MAX`]).
        len: u32,
        /// `MSG_PEEK`: leave the datagram queued.
        peek: bool,
        /// `MSG_DONTWAIT`: fail with `EAGAIN` instead of waiting.
        dont_wait: bool,
    },
}

/// A successful [`NetlinkOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetlinkReply {
    /// [`NetlinkOp::Open`]: the guest fd and what it is.
    Opened(i32, NewObject),
    /// [`NetlinkOp::Bind`], [`NetlinkOp::SetOption`].
    Done,
    /// [`NetlinkOp::Name`]: `nl_pid` and `nl_groups`.
    Name(u32, u32),
    /// [`NetlinkOp::Send`]: bytes sent.
    Sent(u32),
    /// [`NetlinkOp::Recv`].
    Received {
        /// The datagram's bytes, at most the length asked.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Its real length (what `MSG_TRUNC` makes `recv` return).
        len: u32,
    },
}

/// A lookup of a guest network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterfaceOp {
    /// `if_nametoindex` / `SIOCGIFINDEX`: the name, without its NUL.
    Index(String),
    /// `if_indextoname` / `SIOCGIFNAME`.
    Name(u32),
}

/// A successful [`InterfaceOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterfaceReply {
    /// The interface's index.
    Index(u32),
    /// The interface's name.
    Name(String),
}

/// What a host program asks of the guest's cgroup2 tree: bpftool's
/// `cgroup tree`/`show`/`attach` find the mount in `/proc/mounts`, walk it
/// with `nftw` and open each cgroup to name it in `BPF_PROG_QUERY`/
/// `BPF_PROG_ATTACH`. Paths are absolute and clean; the proxy checks them
/// against its own cgroup2 mount and the key's `[cgroup] paths`, and opens
/// them beneath the mount without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupOp {
    /// The guest's cgroup2 and bpffs lines of `/proc/self/mounts` and
    /// `/proc/self/mountinfo`. Reply: [`CgroupReply::Mounts`].
    Mounts,
    /// Open a cgroup directory (`O_RDONLY|O_DIRECTORY`) as a session
    /// object, closed by [`Request::Close`]. Reply:
    /// [`CgroupReply::Opened`].
    Open {
        /// The cgroup's path.
        path: String,
    },
    /// A directory's metadata and entries, each with its metadata: one
    /// request per directory of a walk. Reply: [`CgroupReply::Listing`].
    List {
        /// The directory's path.
        path: String,
    },
    /// `stat` (never following a symlink: cgroupfs has none). Reply:
    /// [`CgroupReply::Stat`].
    Stat {
        /// The path.
        path: String,
    },
    /// `name_to_handle_at` of a cgroup: its file handle, whose bytes are
    /// the cgroup id (what bpftrace's `cgroupid()` and
    /// `bpf_get_current_cgroup_id()` compare with). Reply:
    /// [`CgroupReply::Handle`].
    Handle {
        /// The cgroup's path.
        path: String,
    },
}

/// Most entries a [`CgroupOp::List`] answers for one directory; a larger
/// directory answers `EOVERFLOW`. A cgroup directory holds its ~30-60
/// control files and its children; 4096 is far above any real cgroup and
/// keeps one reply near 600 KiB (about 150 bytes an entry; 1.5 MiB if
/// every name had the longest length, 255), charged to the session's
/// reply budget.
pub const MAX_CGROUP_ENTRIES: usize = 4096;

/// One entry of a [`CgroupReply::Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Its name (one component).
    pub name: String,
    /// Its metadata, or the errno of its `fstatat` (it may vanish meanwhile).
    pub stat: Result<StatInfo, i32>,
}

/// The answer to a [`Request::Cgroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupReply {
    /// The guest's mount lines of type `cgroup2` and `bpf`, each without
    /// its newline: from `/proc/self/mounts`, then `/proc/self/mountinfo`.
    Mounts {
        /// `/proc/self/mounts` lines.
        mounts: Vec<String>,
        /// `/proc/self/mountinfo` lines.
        mountinfo: Vec<String>,
    },
    /// The session's fd of the opened cgroup, and what it is.
    Opened {
        /// The fd in the proxy (the guest's numbering).
        fd: i32,
        /// The object, for the host's fd table.
        object: NewObject,
    },
    /// A directory's metadata and its entries in the kernel's order
    /// (without `.` and `..`).
    Listing {
        /// The directory itself.
        dir: StatInfo,
        /// Its entries.
        entries: Vec<DirEntry>,
    },
    /// A path's metadata.
    Stat(StatInfo),
    /// A cgroup's file handle.
    Handle {
        /// `handle_type` (`FILEID_KERNFS` for cgroupfs).
        handle_type: i32,
        /// The handle's bytes (at most `MAX_HANDLE_SZ`, 128).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// The guest's mount id of the cgroup2 mount.
        mount_id: i32,
    },
}

/// Which collector to run, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectRequest {
    /// SHA-256 of the collector's eBPF object: the proxy loads each object
    /// once and knows it by this.
    pub collector: [u8; 32],
    /// The object itself, sent when the proxy answered
    /// [`CollectError::UnknownCollector`]; `None` otherwise.
    pub object: Option<serde_bytes::ByteBuf>,
    /// What the collector records.
    pub mode: CollectMode,
    /// Where the walk starts.
    pub start: Start,
    /// Page mode: the [`Batch::page_base`] of this collector's last page
    /// batch, when the client still holds those pages. The proxy then
    /// sends again only the pages whose bytes changed since and lists the
    /// others in [`Batch::kept`].
    pub base: Option<u64>,
}

/// What a collector run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectMode {
    /// Nothing: only find the start of the walk (the per-pointer mode's
    /// anchor).
    Roots,
    /// The guest pages that hold what was read; the proxy returns the pages.
    Page,
    /// Address, size and bytes of each field read.
    Data,
}

/// Where a collector's walk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// The collector finds its own start (from the current task).
    Current,
    /// The kernel's module list (`modules` in kallsyms), resolved by the proxy.
    ModuleList,
}

/// A range of guest kernel memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRange {
    /// Kernel virtual address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
}

/// The answer to a [`Request::Collect`]: one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Where the walk starts (a kernel address).
    pub root: u64,
    /// The collector's status (0: complete).
    pub status: u64,
    /// Objects the collector visited.
    pub visited: u64,
    /// Records lost to a full ring buffer.
    pub dropped: u64,
    /// Data mode: the collector's records, each a 16-byte header (address,
    /// length) followed by that many bytes.
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
    /// Page mode: the addresses of the pages in `page_data`, in order.
    pub pages: Vec<u64>,
    /// Page mode: the pages' bytes, one guest page each.
    #[serde(with = "serde_bytes")]
    pub page_data: Vec<u8>,
    /// Page mode: pages the walk touched whose bytes, read by this run,
    /// equal those sent in the batch the request named as its base: the
    /// client takes them from its copy. Empty without a base.
    pub kept: Vec<u64>,
    /// Page mode: the id under which the proxy keeps this batch's pages
    /// (`pages` and `kept`) as the next request's base; 0 when it keeps
    /// none.
    pub page_base: u64,
}

/// Why a [`Request::Collect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectError {
    /// The proxy has not loaded this collector: send the object.
    UnknownCollector,
    /// The object did not load (the loader's message).
    Load(String),
    /// Running it failed with this errno.
    Run(i32),
    /// The guest kernel cannot do this (e.g. it has no module support).
    Unsupported(String),
}

/// The answer to a [`Request::Peek`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Whether each range could be read (unreadable ranges read as zeros).
    pub readable: Vec<bool>,
    /// The ranges' bytes, concatenated.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Which ring a stream connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest {
    /// The owning session's token (from its Welcome).
    pub session: SessionToken,
    /// The ring's guest fd in that session.
    pub fd: i32,
    /// What kind of ring it is.
    pub kind: StreamKind,
}

/// The kind and size of a mirrored ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// A perf event's ring of `pages` data pages (BPF output).
    Perf {
        /// Data pages (a power of two).
        pages: u32,
    },
    /// A `BPF_MAP_TYPE_RINGBUF` map of `max_entries` bytes.
    Ringbuf {
        /// The map's size.
        max_entries: u32,
    },
    /// A `BPF_MAP_TYPE_USER_RINGBUF` map of `max_entries` bytes: records
    /// flow from the host ([`Request::Records`]) into the guest ring.
    UserRingbuf {
        /// The map's size.
        max_entries: u32,
    },
}

/// A perf-event ioctl argument, by kind (see `telebpf_abi::perf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoctlValue {
    /// A plain integer, or the u64 an `_IOW` pointer pointed to.
    Value(u64),
    /// An fd, translated to the guest's numbering.
    Fd(i32),
    /// A pointer to a u64 the kernel writes: the value comes back.
    Out,
    /// A string, NUL included.
    String(Vec<u8>),
    /// The caller's pointer was unreadable (the kernel would fault).
    Unreadable,
}

/// A secret naming one session, so that its stream connections can be
/// bound to it. Only the client that completed that session's handshake
/// learns it.
pub type SessionToken = [u8; 16];

/// The first message of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The guest kernel.
    pub facts: Facts,
    /// This session's token.
    pub session: SessionToken,
}

/// One forwarded `bpf(cmd, attr, size[, common, common_size])`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfCall {
    /// The command as passed, including `BPF_COMMON_ATTRS` when set.
    pub cmd: u32,
    /// The `size` argument the program passed.
    pub size: u32,
    /// `min(size, MAX_ATTR)` bytes of the attr, fds translated.
    pub attr: Vec<u8>,
    /// The common attributes when `cmd & BPF_COMMON_ATTRS`. `None` with the
    /// flag set means the host could not read them (bad pointer, or a size
    /// over a page): the proxy then passes an unreadable pointer with
    /// `common_size`, so the guest kernel answers as it would for the
    /// caller (kernels without common attributes ignore them).
    pub common: Option<Vec<u8>>,
    /// The 5th argument when `cmd & BPF_COMMON_ATTRS`.
    pub common_size: u32,
    /// One entry per buffer of the plan, in plan order. Decoded under
    /// [`decode_charged`], the memory these take is charged as they are
    /// made: many tiny buffers take several times their bytes on the wire.
    #[serde(deserialize_with = "charged::buffers")]
    pub buffers: Vec<WireBuffer>,
}

/// The client's copy of one pointer buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireBuffer {
    /// Content of an `In`/`InOut` buffer (or a C string, NUL included), or
    /// the caller's current content of a small `Out` buffer (see
    /// [`PREFILL_MAX`]).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An `Out` buffer: only its length travels.
    Out(u64),
}

/// The outcome of a [`BpfCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfResult {
    /// The syscall's return value (a guest fd for fd-returning commands).
    pub ret: i64,
    /// errno when `ret < 0`, else 0.
    pub errno: i32,
    /// The attr after the call; pointer fields hold the caller's values.
    pub attr: Vec<u8>,
    /// The common attributes after the call.
    pub common: Option<Vec<u8>>,
    /// `(buffer index, content)` for every buffer the kernel may have written.
    pub out: Vec<(u32, Vec<u8>)>,
    /// What a returned fd stands for.
    pub object: Option<NewObject>,
}

/// Describes a guest object the call created or opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    /// Type and sizes, for planning later calls that use it.
    pub kind: ObjectKind,
    /// What `readlink("/proc/self/fd/N")` says for it in the guest, e.g.
    /// `anon_inode:bpf-map`.
    pub link: String,
    /// For a BPF link, its `enum bpf_link_type`, as the kernel reports it.
    pub link_type: Option<u32>,
}

/// What `readlink("/proc/self/fd/N")` says for a perf event.
pub const PERF_EVENT_LINK: &str = "anon_inode:[perf_event]";

impl NewObject {
    /// Whether this is a ring the host mirrors (a ring-buffer or user
    /// ring-buffer map, or a perf event's ring): a program polls it, and a
    /// stream connection may attach to it.
    pub fn is_ring(&self) -> bool {
        use telebpf_abi::map_type::{BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_USER_RINGBUF};
        match &self.kind {
            ObjectKind::Map(m) => {
                m.map_type == BPF_MAP_TYPE_RINGBUF || m.map_type == BPF_MAP_TYPE_USER_RINGBUF
            }
            _ => self.link == PERF_EVENT_LINK,
        }
    }
}

/// File operations answered from the guest's side. Paths are absolute; the
/// proxy serves only its allow-list (`crate::paths`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// Whole content of a file of at most [`FILE_CHUNK`] bytes (a larger
    /// one answers `EFBIG`: read it with [`FileOp::ReadRange`]).
    Read {
        /// The path.
        path: String,
    },
    /// `stat` (`follow`) or `lstat`.
    Stat {
        /// The path.
        path: String,
        /// Follow a final symlink.
        follow: bool,
    },
    /// `statfs`.
    Statfs {
        /// The path.
        path: String,
    },
    /// `faccessat(AT_FDCWD, path, mode, 0)`.
    Access {
        /// The path.
        path: String,
        /// `R_OK`/`W_OK`/`X_OK`/`F_OK` bits.
        mode: i32,
    },
    /// `readlink`.
    Readlink {
        /// The path.
        path: String,
    },
    /// `mkdir` (bpffs only).
    Mkdir {
        /// The path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// `unlink` (bpffs only).
    Unlink {
        /// The path.
        path: String,
    },
    /// `rmdir` (bpffs only).
    Rmdir {
        /// The path.
        path: String,
    },
    /// Appends to a tracefs probe-definition file (`kprobe_events`,
    /// `uprobe_events`): libbpf's legacy attach path for kernels without
    /// the kprobe/uprobe PMU.
    Append {
        /// The path.
        path: String,
        /// The bytes to append.
        data: Vec<u8>,
    },
    /// SHA-256 and size of an immutable guest file (BTF, kernel config), so
    /// a client that already holds those bytes need not fetch them again.
    Digest {
        /// The path.
        path: String,
    },
    /// The names in a directory whose listing describes the guest (only
    /// `/proc`: the process ids its procfs shows). Reply: `Entries`.
    ReadDir {
        /// The path.
        path: String,
    },
    /// `/proc/self/fdinfo/<fd>` of a guest fd of this session.
    Fdinfo {
        /// The guest fd.
        fd: i32,
    },
    /// Up to `len` bytes (at most [`FILE_CHUNK`]) of a guest file from
    /// `offset`: how a file larger than one reply is read, range after
    /// range (see the module doc, "Files"). Reply: [`FileReply::Range`].
    ReadRange {
        /// The path.
        path: String,
        /// Where the range starts.
        offset: u64,
        /// Bytes wanted; the proxy answers at most [`FILE_CHUNK`].
        len: u32,
        /// 0 to start a read; then the [`FileReply::Range::snapshot`] the
        /// first range's reply named, so every range comes from the same
        /// content.
        snapshot: u64,
    },
}

/// A reply from the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// First message of every session.
    Welcome(Welcome),
    /// Answer to [`Request::Bpf`].
    Bpf(BpfResult),
    /// Answer to [`Request::Read`]: bytes or an errno.
    Read(Result<Vec<u8>, i32>),
    /// Answer to [`Request::File`]: a result or an errno.
    File(Result<FileReply, i32>),
    /// Answer to [`Request::Ping`].
    Pong(Vec<u8>),
    /// The request could not be handled at all.
    Error(ErrorReply),
    /// Answer to [`Request::PerfEventOpen`]: the guest fd and what it is.
    Opened(Result<(i64, NewObject), i32>),
    /// Answer to [`Request::Ioctl`]: the result and, for an `Out`
    /// argument, the value the kernel wrote.
    Ioctl(Result<(i64, Option<u64>), i32>),
    /// Answer to [`Request::MapSnapshot`].
    Snapshot(Result<Vec<u8>, i32>),
    /// Pushed on a stream: records in the order the guest produced them
    /// (perf: the raw payload of each `PERF_RECORD_SAMPLE`; ring buffer:
    /// each committed record's data).
    Records(#[serde(with = "bytes_vec")] Vec<Vec<u8>>),
    /// Pushed on a perf stream: samples the guest ring lost.
    Lost(u64),
    /// The batch of a [`Request::Collect`].
    Collected(Result<Batch, CollectError>),
    /// The bytes of a [`Request::Peek`], or the errno.
    Memory(Result<Memory, i32>),
    /// The proxy's policy for this session's key does not allow the
    /// request; nothing was executed. Distinct from a kernel `EPERM`
    /// (which arrives inside the request's own reply): the host program
    /// gets `EPERM`, and the preload prints the refusal once per
    /// [`Refusal::what`].
    Refused(Refusal),
    /// The programs of a [`Request::Programs`], by id, or the errno.
    Programs(Result<Vec<ProgramInfo>, i32>),
    /// Answer to [`Request::Netlink`]: a result or an errno.
    Netlink(Result<NetlinkReply, i32>),
    /// Answer to [`Request::Interface`]: a result or an errno.
    Interface(Result<InterfaceReply, i32>),
    /// The answer to a [`Request::Cgroup`], or the errno.
    Cgroup(Result<CgroupReply, i32>),
}

/// One BPF program of the guest, as [`Request::Programs`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    /// Its id.
    pub id: u32,
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// Its name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// Its tag (a hash of its instructions).
    pub tag: [u8; 8],
    /// The uid that loaded it.
    pub uid: u32,
}

/// Why the proxy's policy refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What was refused, in the kernel's words: `BPF_PROG_LOAD`,
    /// `BPF_MAP_CREATE`, `perf_event_open`, `write to kprobe_events`, …
    /// One kind of refusal is printed once per process.
    pub what: String,
    /// The policy rule that refused it, e.g. `'prog_load' is not in
    /// commands` or `prog type xdp is not in prog_types`.
    pub rule: String,
    /// The name of the key the session authenticated with.
    pub key: String,
    /// The name of the key's policy.
    pub policy: String,
}

impl std::fmt::Display for Refusal {
    /// The line the preload prints on the host program's stderr (after
    /// `telebpf: `).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the proxy's policy refuses {} (key '{}', policy '{}': {})",
            self.what, self.key, self.policy, self.rule
        )
    }
}

/// A successful file operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileReply {
    /// File content.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `stat` result.
    Stat(StatInfo),
    /// `statfs` result.
    Statfs(StatfsInfo),
    /// Link target.
    Link(String),
    /// The operation succeeded and returns nothing.
    Done,
    /// Answer to [`FileOp::Digest`].
    Digest {
        /// SHA-256 of the content.
        sha256: [u8; 32],
        /// Length of the content.
        size: u64,
    },
    /// Names in a directory, sorted.
    Entries(Vec<String>),
    /// Answer to [`FileOp::ReadRange`].
    Range {
        /// Length of the whole content being read.
        size: u64,
        /// The content this range was taken from, for the following
        /// ranges to name; 0 when this range holds the whole content.
        snapshot: u64,
        /// The bytes at the requested offset (fewer than asked only at the
        /// end of the content).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// The parts of `struct stat` that describe a guest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatInfo {
    /// `st_dev`
    pub dev: u64,
    /// `st_ino`
    pub ino: u64,
    /// `st_mode`
    pub mode: u32,
    /// `st_nlink`
    pub nlink: u64,
    /// `st_uid`
    pub uid: u32,
    /// `st_gid`
    pub gid: u32,
    /// `st_rdev`
    pub rdev: u64,
    /// `st_size`; for files whose size the kernel reports as 0 or a page
    /// (procfs, sysfs) the proxy reports the real content length.
    pub size: i64,
    /// `st_blksize`
    pub blksize: i64,
    /// `st_blocks`
    pub blocks: i64,
    /// `st_atime`, `st_mtime`, `st_ctime` seconds and nanoseconds.
    pub times: [(i64, i64); 3],
}

/// The parts of `struct statfs` callers look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatfsInfo {
    /// `f_type` (e.g. `BPF_FS_MAGIC`).
    pub fs_type: i64,
    /// `f_bsize`
    pub bsize: i64,
    /// `f_blocks`, `f_bfree`, `f_bavail`, `f_files`, `f_ffree`
    pub counts: [u64; 5],
    /// `f_namelen`
    pub namelen: i64,
    /// `f_frsize`
    pub frsize: i64,
}

/// Facts about the proxy's kernel, sent once per session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// `uname()` fields: sysname, nodename, release, version, machine,
    /// domainname.
    pub uname: [String; 6],
    /// Number of possible CPUs (`/sys/devices/system/cpu/possible`).
    pub possible_cpus: u32,
    /// Effective, permitted and inheritable capability sets of the proxy
    /// (two 32-bit words each, `_LINUX_CAPABILITY_VERSION_3` layout).
    pub caps: [[u32; 2]; 3],
    /// The proxy's version string.
    pub proxy_version: String,
}

/// A request the proxy could not handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// errno for the host program.
    pub errno: i32,
    /// Human-readable reason, printed by the preload on the host's stderr.
    pub message: String,
}

/// `Vec<Vec<u8>>` as a sequence of byte strings: the same bincode bytes as
/// serde's default, but each one copied whole instead of byte by byte.
mod bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| serde_bytes::Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v: Vec<serde_bytes::ByteBuf> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
    }
}

/// Encoding failed or the bytes are not a message.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct CodecError(#[from] bincode::Error);

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serialize(msg)?)
}

/// Decodes a message, refusing trailing bytes and sequences longer than
/// the frame could hold (bincode's limit stops a length prefix from
/// allocating more than the frame size).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    use bincode::Options;
    Ok(bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .reject_trailing_bytes()
        .deserialize(bytes)?)
}

/// Why [`decode_charged`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ChargedDecodeError {
    /// The bytes are no valid message.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The decoded message would take more memory than the charge allowed.
    #[error("the request takes more memory once decoded than its share of the proxy allows")]
    OverBudget,
}

/// [`decode`], charging the memory a [`BpfCall`]'s buffers take once
/// decoded to `charge` while they are made (it answers whether the bytes
/// fit). On the wire an empty buffer is 12 bytes, decoded it is a
/// `WireBuffer` and, for data, an allocation: a call of many tiny buffers
/// takes five to six times its frame, which the frame's own charge does not
/// cover. `charge` is asked in steps of at least 64 KiB (and for the rest at
/// the end), so a request is refused before it holds more than 64 KiB
/// beyond what was granted.
pub fn decode_charged<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    charge: Option<charged::Charge>,
) -> Result<T, ChargedDecodeError> {
    let Some(charge) = charge else {
        return Ok(decode(bytes)?);
    };
    charged::CHARGE.with(|c| *c.borrow_mut() = Some(charged::Meter::new(charge)));
    let decoded = decode(bytes);
    // The rest below one step is asked for too.
    let fits = charged::CHARGE
        .with(|c| c.borrow_mut().take())
        .is_some_and(|mut m| m.settle());
    match decoded {
        Ok(msg) if fits => Ok(msg),
        Err(e) if fits => Err(e.into()),
        _ => Err(ChargedDecodeError::OverBudget),
    }
}

/// The charging of decoded buffers ([`decode_charged`]).
pub mod charged {
    use std::cell::RefCell;

    use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};

    use super::WireBuffer;

    /// Asked whether `n` more bytes of decoded memory may be held.
    pub type Charge = Box<dyn FnMut(usize) -> bool + Send>;

    /// Bytes of decoded memory gathered before `charge` is asked.
    const STEP: usize = 64 << 10;

    /// The charge of the decode running on this thread, if any.
    pub(super) struct Meter {
        charge: Charge,
        /// Made but not yet asked for.
        pending: usize,
        /// The charge said no.
        pub(super) refused: bool,
    }

    impl Meter {
        pub(super) fn new(charge: Charge) -> Meter {
            Meter {
                charge,
                pending: 0,
                refused: false,
            }
        }

        fn add(&mut self, n: usize) -> bool {
            self.pending += n;
            self.pending < STEP || self.settle()
        }

        /// Asks for what was made since the last time.
        pub(super) fn settle(&mut self) -> bool {
            let n = std::mem::take(&mut self.pending);
            if self.refused || (n > 0 && !(self.charge)(n)) {
                self.refused = true;
            }
            !self.refused
        }
    }

    thread_local! {
        pub(super) static CHARGE: RefCell<Option<Meter>> = const { RefCell::new(None) };
    }

    /// What an allocation of `len` bytes takes from the heap: glibc's
    /// chunks hold 8 bytes of header, are 16-byte aligned and at least 32
    /// bytes (a 1-byte buffer takes 32).
    fn heap(len: usize) -> usize {
        if len == 0 {
            0
        } else {
            (len + 8).next_multiple_of(16).max(32)
        }
    }

    /// Counts `n` bytes of decoded memory; `false` once the charge refused.
    fn made(n: usize) -> bool {
        CHARGE.with(|c| c.borrow_mut().as_mut().is_none_or(|m| m.add(n)))
    }

    /// Deserializes a call's buffers as serde's `Vec` would, counting the
    /// memory each buffer and the vector's growth take.
    pub(super) fn buffers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WireBuffer>, D::Error> {
        struct Buffers;
        impl<'de> Visitor<'de> for Buffers {
            type Value = Vec<WireBuffer>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of buffers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let each = std::mem::size_of::<WireBuffer>();
                // As serde does: never trust a length prefix for more than
                // a small first allocation.
                let mut out: Vec<WireBuffer> =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                let mut counted = 0;
                while let Some(b) = seq.next_element::<WireBuffer>()? {
                    let data = match &b {
                        WireBuffer::Data(d) => heap(d.capacity()),
                        WireBuffer::Out(_) => 0,
                    };
                    out.push(b);
                    let grown = out.capacity() * each - counted;
                    counted += grown;
                    if !made(grown + data) {
                        return Err(A::Error::custom("over the decode budget"));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Buffers)
    }
}

/// The records of an encoded [`Reply::Records`], borrowed from the frame:
/// the same result as [`decode`] without a `Vec` per record and without
/// serde's byte-at-a-time decoding of each one. `None` when the bytes are
/// another message or malformed (decode those with [`decode`]).
pub fn records_in(bytes: &[u8]) -> Option<RecordsIn<'_>> {
    static TAG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let empty = TAG.get_or_init(|| encode(&Reply::Records(Vec::new())).expect("encodes"));
    records_after(empty, bytes)
}

/// The encoding of `Request::Records(vec![])`: its tag and a count of 0.
fn empty_records_request() -> &'static [u8] {
    static TAG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TAG.get_or_init(|| encode(&Request::Records(Vec::new())).expect("encodes"))
}

/// Whether `bytes` are (or begin like) an encoded [`Request::Records`]:
/// its variant tag, looked at without decoding anything. Records are
/// decoded in place ([`request_records_in`]): decoded whole, a frame of
/// empty records (8 bytes each) would take three times its size in `Vec`s.
pub fn is_records_request(bytes: &[u8]) -> bool {
    let empty = empty_records_request();
    bytes.starts_with(&empty[..empty.len() - 8])
}

/// The records of an encoded [`Request::Records`] (a user ring buffer's
/// stream), borrowed from the frame, as [`records_in`] does for replies.
pub fn request_records_in(bytes: &[u8]) -> Option<RecordsIn<'_>> {
    records_after(empty_records_request(), bytes)
}

/// The records of `bytes`, which must begin with the tag of `empty` (an
/// encoded `Records(vec![])`) and then hold exactly the records.
fn records_after<'a>(empty: &[u8], bytes: &'a [u8]) -> Option<RecordsIn<'a>> {
    // The encoding of Records(vec![]) is the variant tag and a u64 count 0.
    let head = empty.len();
    let tag = &empty[..head - 8];
    if bytes.len() < head || &bytes[..head - 8] != tag {
        return None;
    }
    let count = u64::from_le_bytes(bytes[head - 8..head].try_into().ok()?);
    // Validate every length before handing out the first record.
    let mut rest = &bytes[head..];
    for _ in 0..count {
        let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        rest = rest.get(8..)?.get(len..)?;
    }
    rest.is_empty().then_some(RecordsIn {
        rest: &bytes[head..],
    })
}

/// Iterator over the records of a [`Reply::Records`] frame (see
/// [`records_in`]).
#[derive(Debug)]
pub struct RecordsIn<'a> {
    rest: &'a [u8],
}

impl RecordsIn<'_> {
    /// Whether no records are left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

impl<'a> Iterator for RecordsIn<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = u64::from_le_bytes(self.rest.get(..8)?.try_into().ok()?) as usize;
        let record = &self.rest[8..8 + len];
        self.rest = &self.rest[8 + len..];
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A call of `n` one-byte buffers, encoded (13 bytes each on the wire).
    fn tiny_buffers_call(n: usize) -> Vec<u8> {
        encode(&Request::Bpf(BpfCall {
            cmd: 1,
            size: 32,
            attr: vec![0; 32],
            common: None,
            common_size: 0,
            buffers: vec![WireBuffer::Data(vec![7]); n],
        }))
        .unwrap()
    }

    /// A charge that grants up to `limit` bytes and counts what it granted.
    fn charge(limit: usize) -> (charged::Charge, Arc<AtomicUsize>) {
        let granted = Arc::new(AtomicUsize::new(0));
        let g = granted.clone();
        let charge: charged::Charge = Box::new(move |n| {
            let now = g.load(Ordering::Relaxed) + n;
            let fits = now <= limit;
            if fits {
                g.store(now, Ordering::Relaxed);
            }
            fits
        });
        (charge, granted)
    }

    #[test]
    fn decoded_buffers_are_charged_as_they_are_made() {
        let n = 100_000;
        let bytes = tiny_buffers_call(n);
        // Each: a `WireBuffer` in the vector and a 32-byte heap chunk.
        let decoded = n * (std::mem::size_of::<WireBuffer>() + 32);
        assert!(decoded > 4 * bytes.len(), "the case this guards against");
        // Enough room: the message decodes whole, and what it takes was
        // charged (the vector's final capacity at least).
        let (c, granted) = charge(usize::MAX);
        let req: Request = decode_charged(&bytes, Some(c)).unwrap();
        assert!(matches!(req, Request::Bpf(ref call) if call.buffers.len() == n));
        assert!(granted.load(Ordering::Relaxed) >= decoded);
        // Too little: refused, and no more than one step past the grant
        // was made before the refusal.
        let (c, granted) = charge(decoded / 4);
        assert!(matches!(
            decode_charged::<Request>(&bytes, Some(c)),
            Err(ChargedDecodeError::OverBudget)
        ));
        assert!(granted.load(Ordering::Relaxed) <= decoded / 4);
        // Without a charge, and for malformed bytes, as `decode`.
        assert!(decode_charged::<Request>(&bytes, None).is_ok());
        let (c, _) = charge(usize::MAX);
        assert!(matches!(
            decode_charged::<Request>(&bytes[..bytes.len() - 1], Some(c)),
            Err(ChargedDecodeError::Codec(_))
        ));
    }

    #[test]
    fn records_in_matches_decode() {
        let records: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize]).collect();
        let bytes = encode(&Reply::Records(records.clone())).unwrap();
        let got: Vec<Vec<u8>> = records_in(&bytes).unwrap().map(<[u8]>::to_vec).collect();
        assert_eq!(got, records);
        assert!(records_in(&encode(&Reply::Lost(3)).unwrap()).is_none());
        assert!(records_in(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(records_in(&longer).is_none());
    }

    #[test]
    fn request_records_in_matches_decode() {
        let records: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize]).collect();
        let bytes = encode(&Request::Records(records.clone())).unwrap();
        assert!(is_records_request(&bytes));
        let got: Vec<Vec<u8>> = request_records_in(&bytes)
            .unwrap()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, records);
        // A reply's records are not a request's, nor is another request.
        assert!(request_records_in(&encode(&Reply::Records(records)).unwrap()).is_none());
        let ping = encode(&Request::Ping(vec![1, 2])).unwrap();
        assert!(!is_records_request(&ping));
        assert!(request_records_in(&ping).is_none());
        assert!(request_records_in(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn round_trip() {
        let req = Request::Bpf(BpfCall {
            cmd: 1,
            size: 32,
            attr: vec![1, 2, 3],
            common: None,
            common_size: 0,
            buffers: vec![WireBuffer::Data(vec![9; 4]), WireBuffer::Out(8)],
        });
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        for req in [
            Request::Records(vec![vec![], vec![7; 300], b"abc".to_vec()]),
            Request::Stream(StreamRequest {
                session: [3; 16],
                fd: 5,
                kind: StreamKind::UserRingbuf { max_entries: 4096 },
            }),
        ] {
            let bytes = encode(&req).unwrap();
            assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        }
    }

    /// New variants come last: the encodings of the old ones (their
    /// variant indices) do not change.
    #[test]
    fn file_variants_keep_their_encodings() {
        let tag = |bytes: Vec<u8>| u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        let read = encode(&Request::File(FileOp::Read { path: "/p".into() })).unwrap();
        assert_eq!(tag(read), 0);
        let fdinfo = encode(&Request::File(FileOp::Fdinfo { fd: 1 })).unwrap();
        assert_eq!(tag(fdinfo), 11);
        let range = Request::File(FileOp::ReadRange {
            path: "/p".into(),
            offset: 1,
            len: 2,
            snapshot: 3,
        });
        assert_eq!(tag(encode(&range).unwrap()), 12);
        assert_eq!(decode::<Request>(&encode(&range).unwrap()).unwrap(), range);
        let reply = Reply::File(Ok(FileReply::Range {
            size: 9,
            snapshot: 1,
            data: vec![1, 2, 3],
        }));
        let bytes = encode(&reply).unwrap();
        // Reply::File (3), Ok (0), FileReply::Range (7).
        assert_eq!(&bytes[..12], &[3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(decode::<Reply>(&bytes).unwrap(), reply);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Request>(&[0xff; 3]).is_err());
        // A sequence length far larger than the frame must not allocate.
        let mut bytes = encode(&Request::Ping(vec![])).unwrap();
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Request>(&bytes).is_err());
    }

    #[test]
    fn refusal_round_trips_and_reads_well() {
        let r = Refusal {
            what: "BPF_PROG_LOAD".into(),
            rule: "'prog_load' is not in commands".into(),
            key: "monitor".into(),
            policy: "read-only".into(),
        };
        let bytes = encode(&Reply::Refused(r.clone())).unwrap();
        assert_eq!(decode::<Reply>(&bytes).unwrap(), Reply::Refused(r.clone()));
        assert_eq!(
            r.to_string(),
            "the proxy's policy refuses BPF_PROG_LOAD (key 'monitor', policy 'read-only': \
             'prog_load' is not in commands)"
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&Request::Ping(vec![1])).unwrap();
        bytes.push(0);
        assert!(decode::<Request>(&bytes).is_err());
    }
}
