//! `Plan::new`: the top-level layout of every command.

use crate::attach_type::*;
use crate::cmd::*;
use crate::flags::{self, strlen};
use crate::map_type;
use crate::off;
use crate::prog_type::*;
use crate::{
    read_u32, read_u64, AbiError, Aux, BufferSpec, Content, Direction, FdSlot, IterTarget, Length,
    MapMeta, ObjectKind, Objects, Parent, Plan, MAX_BUFFERS, MAX_BUFFER_LEN, MAX_FD_SLOTS,
    MAX_TOTAL_LEN,
};

/// Extra room given to `test.data_out` when `data_size_out` is 0: the kernel then writes the
/// whole output packet, which can outgrow the input (skb up to ~64 KiB, XDP by one page).
pub(crate) const TEST_RUN_OUT_SLACK: u64 = 128 << 10;

type Result<T> = core::result::Result<T, AbiError>;

/// Which program family an attach type belongs to, for PROG_ATTACH/DETACH/QUERY.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttachClass {
    /// cgroup programs: `target_fd` is a cgroup fd; replace / relative fds.
    Cgroup,
    /// tcx / netkit: `target_ifindex`; relative fd/id.
    Mprog,
    /// sockmap/sockhash programs: `target_fd` is a map fd.
    SockMap,
    /// lirc_mode2: `target_fd` is a lirc device fd.
    Lirc,
    /// flow dissector / sk_lookup: `target_fd` is a netns fd.
    Netns,
    /// Other attach types (tracing, xdp, ...): not supported by PROG_ATTACH.
    Other,
}

fn attach_class(attach_type: u32) -> AttachClass {
    match attach_type {
        BPF_CGROUP_INET_INGRESS
        | BPF_CGROUP_INET_EGRESS
        | BPF_CGROUP_INET_SOCK_CREATE
        | BPF_CGROUP_SOCK_OPS
        | BPF_CGROUP_DEVICE
        | BPF_CGROUP_INET4_BIND
        | BPF_CGROUP_INET6_BIND
        | BPF_CGROUP_INET4_CONNECT
        | BPF_CGROUP_INET6_CONNECT
        | BPF_CGROUP_INET4_POST_BIND
        | BPF_CGROUP_INET6_POST_BIND
        | BPF_CGROUP_UDP4_SENDMSG
        | BPF_CGROUP_UDP6_SENDMSG
        | BPF_CGROUP_SYSCTL
        | BPF_CGROUP_UDP4_RECVMSG
        | BPF_CGROUP_UDP6_RECVMSG
        | BPF_CGROUP_GETSOCKOPT
        | BPF_CGROUP_SETSOCKOPT
        | BPF_CGROUP_INET4_GETPEERNAME
        | BPF_CGROUP_INET6_GETPEERNAME
        | BPF_CGROUP_INET4_GETSOCKNAME
        | BPF_CGROUP_INET6_GETSOCKNAME
        | BPF_CGROUP_INET_SOCK_RELEASE
        | BPF_LSM_CGROUP
        | BPF_CGROUP_UNIX_CONNECT
        | BPF_CGROUP_UNIX_SENDMSG
        | BPF_CGROUP_UNIX_RECVMSG
        | BPF_CGROUP_UNIX_GETPEERNAME
        | BPF_CGROUP_UNIX_GETSOCKNAME => AttachClass::Cgroup,
        BPF_TCX_INGRESS | BPF_TCX_EGRESS | BPF_NETKIT_PRIMARY | BPF_NETKIT_PEER => {
            AttachClass::Mprog
        }
        BPF_SK_SKB_STREAM_PARSER
        | BPF_SK_SKB_STREAM_VERDICT
        | BPF_SK_MSG_VERDICT
        | BPF_SK_SKB_VERDICT => AttachClass::SockMap,
        BPF_LIRC_MODE2 => AttachClass::Lirc,
        BPF_FLOW_DISSECTOR | BPF_SK_LOOKUP => AttachClass::Netns,
        _ => AttachClass::Other,
    }
}

/// `n` as a buffer length, at most [`MAX_BUFFER_LEN`].
pub(crate) fn to_len(n: u64, what: &'static str) -> Result<usize> {
    if n > MAX_BUFFER_LEN as u64 {
        return Err(AbiError::TooBig { what });
    }
    usize::try_from(n).map_err(|_| AbiError::TooBig { what })
}

/// Size of one map value as the kernel copies it for element/batch ops (`bpf_map_value_size`).
/// `None` when it overflows a u64.
pub(crate) fn value_size(meta: &MapMeta, elem_flags: u64, cpus: u32) -> Option<u64> {
    let vs = u64::from(meta.value_size);
    if elem_flags & (flags::BPF_F_CPU | flags::BPF_F_ALL_CPUS) != 0 {
        Some(vs)
    } else if map_type::is_percpu(meta.map_type) {
        let slot = vs.checked_add(7)? & !7;
        slot.checked_mul(u64::from(cpus.max(1)))
    } else if map_type::is_fd_map(meta.map_type) {
        Some(4)
    } else {
        Some(vs)
    }
}

/// Checked product of two optional lengths.
pub(crate) fn mul(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a?.checked_mul(b?)
}

/// Whether `bytes` holds all `n` bytes at `at`.
fn covers(bytes: &[u8], at: usize, n: usize) -> bool {
    at.checked_add(n).is_some_and(|end| end <= bytes.len())
}

fn map_meta(objects: &dyn Objects, fd: i32) -> Result<MapMeta> {
    match objects.kind(fd) {
        Some(ObjectKind::Map(m)) => Ok(m),
        Some(_) => Err(AbiError::WrongKind {
            fd,
            expected: "map",
        }),
        None => Err(AbiError::BadFd { fd }),
    }
}

fn prog_type_of(objects: &dyn Objects, fd: i32) -> Result<u32> {
    match objects.kind(fd) {
        Some(ObjectKind::Prog { prog_type }) => Ok(prog_type),
        Some(_) => Err(AbiError::WrongKind {
            fd,
            expected: "program",
        }),
        None => Err(AbiError::BadFd { fd }),
    }
}

impl Plan {
    fn empty(cmd: u32, common: bool) -> Plan {
        Plan {
            cmd,
            common,
            buffers: Vec::new(),
            fds: Vec::new(),
            returns_fd: false,
            aux: Vec::new(),
            total: 0,
        }
    }

    /// Add an fd slot reading its value from `parent_bytes`.
    pub(crate) fn fd(&mut self, parent: Parent, bytes: &[u8], offset: usize) -> Result<()> {
        if self.fds.len() >= MAX_FD_SLOTS {
            return Err(AbiError::TooBig {
                what: "fd slot count",
            });
        }
        let value = read_u32(bytes, offset) as i32;
        if value != 0 && !covers(bytes, offset, 4) {
            return Err(AbiError::Truncated { offset });
        }
        self.fds.push(FdSlot {
            parent,
            offset,
            value,
        });
        Ok(())
    }

    /// Add a buffer for the pointer at `ptr_offset` of `bytes` (the parent's content), unless it
    /// is NULL. Returns the new index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn buf(
        &mut self,
        parent: Parent,
        bytes: &[u8],
        ptr_offset: usize,
        len: Length,
        dir: Direction,
        content: Content,
        aux: Aux,
    ) -> Result<Option<usize>> {
        let ptr = read_u64(bytes, ptr_offset);
        if ptr == 0 {
            return Ok(None);
        }
        if !covers(bytes, ptr_offset, 8) {
            return Err(AbiError::Truncated { offset: ptr_offset });
        }
        let n = len.max_len();
        if n > MAX_BUFFER_LEN {
            return Err(AbiError::TooBig { what: "buffer" });
        }
        if self.buffers.len() >= MAX_BUFFERS {
            return Err(AbiError::TooBig {
                what: "buffer count",
            });
        }
        let total = self
            .total
            .checked_add(n)
            .filter(|t| *t <= MAX_TOTAL_LEN)
            .ok_or(AbiError::TooBig {
                what: "total buffer size",
            })?;
        self.total = total;
        self.buffers.push(BufferSpec {
            parent,
            ptr_offset,
            ptr,
            len,
            dir,
            content,
        });
        self.aux.push(aux);
        Ok(Some(self.buffers.len() - 1))
    }

    /// Change the byte length of buffer `index` (fd_array sizing), keeping the totals checked.
    pub(crate) fn resize(&mut self, index: usize, new_len: usize) -> Result<()> {
        if new_len > MAX_BUFFER_LEN {
            return Err(AbiError::TooBig { what: "buffer" });
        }
        let Some(b) = self.buffers.get_mut(index) else {
            return Err(AbiError::BadIndex { index });
        };
        let old = b.len.max_len();
        let total = self
            .total
            .checked_sub(old)
            .and_then(|t| t.checked_add(new_len))
            .filter(|t| *t <= MAX_TOTAL_LEN)
            .ok_or(AbiError::TooBig {
                what: "total buffer size",
            })?;
        b.len = Length::Bytes(new_len);
        self.total = total;
        Ok(())
    }

    pub(crate) fn aux_of(&self, index: usize) -> Aux {
        self.aux.get(index).cloned().unwrap_or_default()
    }

    /// Top-level plan from the attr bytes (`attr` may be shorter than the kernel's union:
    /// missing bytes read as zero) and, when `raw_cmd & BPF_COMMON_ATTRS`, the common attr bytes
    /// (`None` reads as all zero).
    ///
    /// Errors: [`AbiError::BadFd`] (`EBADF`) when an fd whose object decides the layout is
    /// unknown to `objects` (map fd of element/batch ops and FREEZE, prog fd of LINK_CREATE and
    /// PROG_TEST_RUN, `bpf_fd` of OBJ_GET_INFO_BY_FD) — what the kernel would answer for a fd
    /// that isn't open; [`AbiError::WrongKind`] (`EINVAL`) when it is the wrong kind of object;
    /// [`AbiError::TooBig`] (`E2BIG`) for sizes beyond the crate limits;
    /// [`AbiError::Unsupported`] for a struct_ops update without
    /// [`Objects::struct_ops_fd_offsets`]. Unknown commands give an empty plan (the kernel
    /// answers `EINVAL` itself).
    pub fn new(
        raw_cmd: u32,
        attr: &[u8],
        common: Option<&[u8]>,
        objects: &dyn Objects,
    ) -> Result<Plan> {
        let has_common = raw_cmd & BPF_COMMON_ATTRS != 0;
        let cmd = raw_cmd & !BPF_COMMON_ATTRS;
        let mut p = Plan::empty(cmd, has_common);
        if cmd > BPF_PROG_ASSOC_STRUCT_OPS {
            return Ok(p);
        }
        let a = attr;
        match cmd {
            BPF_MAP_CREATE => p.map_create(a)?,
            BPF_MAP_LOOKUP_ELEM
            | BPF_MAP_UPDATE_ELEM
            | BPF_MAP_DELETE_ELEM
            | BPF_MAP_GET_NEXT_KEY
            | BPF_MAP_LOOKUP_AND_DELETE_ELEM
            | BPF_MAP_FREEZE => p.map_elem(a, objects)?,
            BPF_PROG_LOAD => p.prog_load(a)?,
            BPF_OBJ_PIN | BPF_OBJ_GET => p.obj(a)?,
            BPF_PROG_ATTACH | BPF_PROG_DETACH => p.attach(a)?,
            BPF_PROG_TEST_RUN => p.test_run(a, objects)?,
            BPF_PROG_GET_NEXT_ID | BPF_MAP_GET_NEXT_ID | BPF_BTF_GET_NEXT_ID
            | BPF_LINK_GET_NEXT_ID => {}
            BPF_PROG_GET_FD_BY_ID
            | BPF_MAP_GET_FD_BY_ID
            | BPF_BTF_GET_FD_BY_ID
            | BPF_LINK_GET_FD_BY_ID => {
                p.returns_fd = true;
                if read_u32(a, off::get_id::OPEN_FLAGS) & flags::BPF_F_TOKEN_FD != 0 {
                    p.fd(Parent::Attr, a, off::get_id::TOKEN_FD)?;
                }
            }
            BPF_OBJ_GET_INFO_BY_FD => p.get_info(a, objects)?,
            BPF_PROG_QUERY => p.query(a)?,
            BPF_RAW_TRACEPOINT_OPEN => {
                p.returns_fd = true;
                p.cstring(a, off::raw_tp::NAME, strlen::RAW_TP_NAME)?;
                p.fd(Parent::Attr, a, off::raw_tp::PROG_FD)?;
            }
            BPF_BTF_LOAD => p.btf_load(a)?,
            BPF_TASK_FD_QUERY => {
                let len = Some(u64::from(read_u32(a, off::task_fd_query::BUF_LEN)));
                p.out(a, off::task_fd_query::BUF, len, "buf", Content::Plain)?;
            }
            BPF_MAP_LOOKUP_BATCH
            | BPF_MAP_LOOKUP_AND_DELETE_BATCH
            | BPF_MAP_UPDATE_BATCH
            | BPF_MAP_DELETE_BATCH => p.batch(a, objects)?,
            BPF_LINK_CREATE => p.link_create(a, objects)?,
            BPF_LINK_UPDATE => {
                p.fd(Parent::Attr, a, off::link_update::LINK_FD)?;
                p.fd(Parent::Attr, a, off::link_update::NEW_PROG_FD)?;
                if read_u32(a, off::link_update::FLAGS) & flags::BPF_F_REPLACE != 0 {
                    p.fd(Parent::Attr, a, off::link_update::OLD_PROG_FD)?;
                }
            }
            BPF_ENABLE_STATS => p.returns_fd = true,
            BPF_ITER_CREATE => {
                p.returns_fd = true;
                p.fd(Parent::Attr, a, off::LINK_FD)?;
            }
            BPF_LINK_DETACH => p.fd(Parent::Attr, a, off::LINK_FD)?,
            BPF_PROG_BIND_MAP => {
                p.fd(Parent::Attr, a, off::prog_bind_map::PROG_FD)?;
                p.fd(Parent::Attr, a, off::prog_bind_map::MAP_FD)?;
            }
            BPF_TOKEN_CREATE => {
                p.returns_fd = true;
                p.fd(Parent::Attr, a, off::token_create::BPFFS_FD)?;
            }
            BPF_PROG_STREAM_READ_BY_FD => {
                let len = Some(u64::from(read_u32(
                    a,
                    off::prog_stream_read::STREAM_BUF_LEN,
                )));
                p.out(
                    a,
                    off::prog_stream_read::STREAM_BUF,
                    len,
                    "stream_buf",
                    Content::Plain,
                )?;
                p.fd(Parent::Attr, a, off::prog_stream_read::PROG_FD)?;
            }
            BPF_PROG_ASSOC_STRUCT_OPS => {
                p.fd(Parent::Attr, a, off::prog_assoc_struct_ops::MAP_FD)?;
                p.fd(Parent::Attr, a, off::prog_assoc_struct_ops::PROG_FD)?;
            }
            _ => {}
        }
        if has_common {
            let c = common.unwrap_or(&[]);
            let len = Some(u64::from(read_u32(c, off::common::LOG_SIZE)));
            p.sized(
                Parent::Common,
                c,
                off::common::LOG_BUF,
                len,
                "common log_buf",
                Direction::Out,
                Content::Log,
                Aux::None,
            )?;
        }
        Ok(p)
    }

    /// Buffer of `len` bytes (`None`: the length computation overflowed) for the pointer at
    /// `at` of `bytes`, unless the pointer is NULL — a NULL pointer never makes an error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sized(
        &mut self,
        parent: Parent,
        bytes: &[u8],
        at: usize,
        len: Option<u64>,
        what: &'static str,
        dir: Direction,
        content: Content,
        aux: Aux,
    ) -> Result<Option<usize>> {
        if read_u64(bytes, at) == 0 {
            return Ok(None);
        }
        let len = to_len(len.ok_or(AbiError::TooBig { what })?, what)?;
        self.buf(parent, bytes, at, Length::Bytes(len), dir, content, aux)
    }

    /// Attr-level In buffer.
    fn input(&mut self, a: &[u8], at: usize, len: Option<u64>, what: &'static str) -> Result<()> {
        self.sized(
            Parent::Attr,
            a,
            at,
            len,
            what,
            Direction::In,
            Content::Plain,
            Aux::None,
        )?;
        Ok(())
    }

    /// Attr-level Out buffer.
    fn out(
        &mut self,
        a: &[u8],
        at: usize,
        len: Option<u64>,
        what: &'static str,
        content: Content,
    ) -> Result<()> {
        self.sized(
            Parent::Attr,
            a,
            at,
            len,
            what,
            Direction::Out,
            content,
            Aux::None,
        )?;
        Ok(())
    }

    /// Attr-level CString In buffer.
    fn cstring(&mut self, a: &[u8], at: usize, max: usize) -> Result<()> {
        self.buf(
            Parent::Attr,
            a,
            at,
            Length::CString { max },
            Direction::In,
            Content::Plain,
            Aux::None,
        )?;
        Ok(())
    }

    fn map_create(&mut self, a: &[u8]) -> Result<()> {
        use off::map_create as o;
        self.returns_fd = true;
        let map_type = read_u32(a, o::MAP_TYPE);
        let map_flags = read_u32(a, o::MAP_FLAGS);
        if map_type::is_map_in_map(map_type) {
            self.fd(Parent::Attr, a, o::INNER_MAP_FD)?;
        }
        // map_create() resolves btf_fd only when a BTF type id is given.
        if read_u32(a, o::BTF_KEY_TYPE_ID) != 0
            || read_u32(a, o::BTF_VALUE_TYPE_ID) != 0
            || read_u32(a, o::BTF_VMLINUX_VALUE_TYPE_ID) != 0
        {
            self.fd(Parent::Attr, a, o::BTF_FD)?;
        }
        if map_flags & flags::BPF_F_VTYPE_BTF_OBJ_FD != 0 {
            self.fd(Parent::Attr, a, o::VALUE_TYPE_BTF_OBJ_FD)?;
        }
        if map_flags & flags::BPF_F_TOKEN_FD != 0 {
            self.fd(Parent::Attr, a, o::MAP_TOKEN_FD)?;
        }
        let hash_len = u64::from(read_u32(a, o::EXCL_PROG_HASH_SIZE));
        self.input(a, o::EXCL_PROG_HASH, Some(hash_len), "excl_prog_hash")
    }

    fn map_elem(&mut self, a: &[u8], objects: &dyn Objects) -> Result<()> {
        use off::map_elem as o;
        self.fd(Parent::Attr, a, o::MAP_FD)?;
        let fd = read_u32(a, o::MAP_FD) as i32;
        let meta = map_meta(objects, fd)?;
        let elem_flags = read_u64(a, o::FLAGS);
        let key_len = Some(u64::from(meta.key_size));
        let val_len = value_size(&meta, elem_flags, objects.possible_cpus());
        if map_type::key_is_fd(meta.map_type) && self.cmd != BPF_MAP_FREEZE {
            // The key is an fd (kernel: `int *fd = key`), translated like
            // every other fd; next-key is not supported on these maps.
            self.sized(
                Parent::Attr,
                a,
                o::KEY,
                key_len,
                "key",
                Direction::In,
                Content::KeyFd,
                Aux::None,
            )?;
            match self.cmd {
                BPF_MAP_LOOKUP_ELEM | BPF_MAP_LOOKUP_AND_DELETE_ELEM => {
                    self.out(a, o::VALUE, val_len, "value", Content::Plain)?
                }
                BPF_MAP_UPDATE_ELEM => self.input(a, o::VALUE, val_len, "value")?,
                BPF_MAP_GET_NEXT_KEY => {
                    self.out(a, o::VALUE, key_len, "next_key", Content::Plain)?
                }
                _ => {}
            }
            return Ok(());
        }
        match self.cmd {
            BPF_MAP_LOOKUP_ELEM => {
                self.input(a, o::KEY, key_len, "key")?;
                if meta.map_type == map_type::BPF_MAP_TYPE_BLOOM_FILTER {
                    // map_lookup_elem() copies the value *in* for bloom filters.
                    self.input(a, o::VALUE, val_len, "value")?;
                } else {
                    self.out(a, o::VALUE, val_len, "value", Content::Plain)?;
                }
            }
            BPF_MAP_UPDATE_ELEM => {
                self.input(a, o::KEY, key_len, "key")?;
                self.value_in(a, o::VALUE, val_len, 1, &meta, fd, objects)?;
            }
            BPF_MAP_DELETE_ELEM => self.input(a, o::KEY, key_len, "key")?,
            BPF_MAP_GET_NEXT_KEY => {
                self.input(a, o::KEY, key_len, "key")?;
                self.out(a, o::VALUE, key_len, "next_key", Content::Plain)?;
            }
            BPF_MAP_LOOKUP_AND_DELETE_ELEM => {
                self.input(a, o::KEY, key_len, "key")?;
                self.out(a, o::VALUE, val_len, "value", Content::Plain)?;
            }
            _ => {} // BPF_MAP_FREEZE: only the map fd.
        }
        Ok(())
    }

    /// In buffer of `count` update values of `stride` bytes, with fd slots when the map's values
    /// hold fds.
    #[allow(clippy::too_many_arguments)]
    fn value_in(
        &mut self,
        a: &[u8],
        at: usize,
        stride: Option<u64>,
        count: u64,
        meta: &MapMeta,
        map_fd: i32,
        objects: &dyn Objects,
    ) -> Result<()> {
        if read_u64(a, at) == 0 {
            return Ok(());
        }
        let len = mul(stride, Some(count));
        let offsets: Vec<usize> = if meta.map_type == map_type::BPF_MAP_TYPE_STRUCT_OPS {
            objects
                .struct_ops_fd_offsets(map_fd)
                .ok_or(AbiError::Unsupported {
                    what: "struct_ops map value",
                })?
        } else {
            map_type::value_fd_offsets(meta.map_type, meta.value_size).to_vec()
        };
        let (content, aux) = match (offsets.is_empty(), stride) {
            (false, Some(s)) => (
                Content::MapValueFds,
                Aux::ValueFds {
                    stride: to_len(s, "map value")?,
                    offsets,
                },
            ),
            _ => (Content::Plain, Aux::None),
        };
        self.sized(
            Parent::Attr,
            a,
            at,
            len,
            "map values",
            Direction::In,
            content,
            aux,
        )?;
        Ok(())
    }

    fn batch(&mut self, a: &[u8], objects: &dyn Objects) -> Result<()> {
        use off::batch as o;
        self.fd(Parent::Attr, a, o::MAP_FD)?;
        let fd = read_u32(a, o::MAP_FD) as i32;
        let meta = map_meta(objects, fd)?;
        let count = u64::from(read_u32(a, o::COUNT));
        let elem_flags = read_u64(a, o::ELEM_FLAGS);
        let key_len = Some(u64::from(meta.key_size));
        let val_len = value_size(&meta, elem_flags, objects.possible_cpus());
        let keys_len = mul(key_len, Some(count));
        let vals_len = mul(val_len, Some(count));
        // __htab_map_lookup_and_delete_batch() uses a u32 bucket index as the batch token,
        // generic_map_lookup_batch() a key.
        let token = if map_type::has_u32_batch_token(meta.map_type) {
            Some(4)
        } else {
            key_len
        };
        match self.cmd {
            BPF_MAP_LOOKUP_BATCH | BPF_MAP_LOOKUP_AND_DELETE_BATCH => {
                self.input(a, o::IN_BATCH, token, "in_batch")?;
                self.out(a, o::OUT_BATCH, token, "out_batch", Content::Plain)?;
                self.out(a, o::KEYS, keys_len, "batch keys", Content::Plain)?;
                self.out(a, o::VALUES, vals_len, "batch values", Content::Plain)?;
            }
            BPF_MAP_UPDATE_BATCH => {
                self.input(a, o::KEYS, keys_len, "batch keys")?;
                self.value_in(a, o::VALUES, val_len, count, &meta, fd, objects)?;
            }
            _ => self.input(a, o::KEYS, keys_len, "batch keys")?, // BPF_MAP_DELETE_BATCH
        }
        Ok(())
    }

    fn prog_load(&mut self, a: &[u8]) -> Result<()> {
        use off::prog_load as o;
        self.returns_fd = true;
        let cnt = |at: usize| Some(u64::from(read_u32(a, at)));
        // Order matters: insns first (its expand sizes fd_array), fd_array after it.
        self.sized(
            Parent::Attr,
            a,
            o::INSNS,
            mul(cnt(o::INSN_CNT), Some(flags::INSN_SIZE as u64)),
            "insns",
            Direction::In,
            Content::Insns,
            Aux::None,
        )?;
        self.cstring(a, o::LICENSE, strlen::LICENSE)?;
        self.out(a, o::LOG_BUF, cnt(o::LOG_SIZE), "log_buf", Content::Log)?;
        let fi = mul(cnt(o::FUNC_INFO_CNT), cnt(o::FUNC_INFO_REC_SIZE));
        self.input(a, o::FUNC_INFO, fi, "func_info")?;
        let li = mul(cnt(o::LINE_INFO_CNT), cnt(o::LINE_INFO_REC_SIZE));
        self.input(a, o::LINE_INFO, li, "line_info")?;
        // Provisional length; `expand` of the insns buffer raises it to cover every index the
        // instructions reference.
        self.sized(
            Parent::Attr,
            a,
            o::FD_ARRAY,
            mul(cnt(o::FD_ARRAY_CNT), Some(4)),
            "fd_array",
            Direction::In,
            Content::FdArray,
            Aux::None,
        )?;
        let cr = mul(cnt(o::CORE_RELO_CNT), cnt(o::CORE_RELO_REC_SIZE));
        self.input(a, o::CORE_RELOS, cr, "core_relos")?;
        self.input(a, o::SIGNATURE, cnt(o::SIGNATURE_SIZE), "signature")?;
        self.fd(Parent::Attr, a, o::PROG_BTF_FD)?;
        // attach_prog_fd / attach_btf_obj_fd: an fd either way (0 = none).
        self.fd(Parent::Attr, a, o::ATTACH_PROG_FD)?;
        if read_u32(a, o::PROG_FLAGS) & flags::BPF_F_TOKEN_FD != 0 {
            self.fd(Parent::Attr, a, o::PROG_TOKEN_FD)?;
        }
        Ok(())
    }

    fn obj(&mut self, a: &[u8]) -> Result<()> {
        use off::obj as o;
        self.returns_fd = self.cmd == BPF_OBJ_GET;
        self.cstring(a, o::PATHNAME, strlen::PATH_MAX)?;
        if self.cmd == BPF_OBJ_PIN {
            self.fd(Parent::Attr, a, o::BPF_FD)?;
        }
        if read_u32(a, o::FILE_FLAGS) & flags::BPF_F_PATH_FD != 0 {
            self.fd(Parent::Attr, a, o::PATH_FD)?;
        }
        Ok(())
    }

    fn attach(&mut self, a: &[u8]) -> Result<()> {
        use off::attach as o;
        let class = attach_class(read_u32(a, o::ATTACH_TYPE));
        let attach_flags = read_u32(a, o::ATTACH_FLAGS);
        match class {
            AttachClass::Cgroup | AttachClass::SockMap | AttachClass::Lirc | AttachClass::Netns => {
                self.fd(Parent::Attr, a, o::TARGET_FD)?
            }
            AttachClass::Mprog | AttachClass::Other => {} // ifindex / rejected by the kernel
        }
        self.fd(Parent::Attr, a, o::ATTACH_BPF_FD)?;
        if class == AttachClass::Cgroup
            && self.cmd == BPF_PROG_ATTACH
            && attach_flags & flags::BPF_F_REPLACE != 0
        {
            self.fd(Parent::Attr, a, o::REPLACE_BPF_FD)?;
        }
        if matches!(class, AttachClass::Cgroup | AttachClass::Mprog)
            && attach_flags & flags::BPF_F_ID == 0
        {
            self.fd(Parent::Attr, a, o::RELATIVE_FD)?;
        }
        Ok(())
    }

    fn test_run(&mut self, a: &[u8], objects: &dyn Objects) -> Result<()> {
        use off::test_run as o;
        self.fd(Parent::Attr, a, o::PROG_FD)?;
        let prog_type = prog_type_of(objects, read_u32(a, o::PROG_FD) as i32)?;
        let size = |at: usize| u64::from(read_u32(a, at));
        self.input(a, o::DATA_IN, Some(size(o::DATA_SIZE_IN)), "data_in")?;
        // data_size_out == 0: "the user does not know the size of the buffer and assumes it was
        // big enough" — the kernel writes the whole output. Reserve room for any output size;
        // `reply_len` trims the reply to the data_size_out the kernel returns.
        let out_len = match size(o::DATA_SIZE_OUT) {
            0 => size(o::DATA_SIZE_IN) + TEST_RUN_OUT_SLACK,
            n => n,
        };
        self.out(a, o::DATA_OUT, Some(out_len), "data_out", Content::Plain)?;
        // BPF_PROG_TYPE_SYSCALL programs get their context written back into ctx_in.
        let dir = if prog_type == BPF_PROG_TYPE_SYSCALL {
            Direction::InOut
        } else {
            Direction::In
        };
        self.sized(
            Parent::Attr,
            a,
            o::CTX_IN,
            Some(size(o::CTX_SIZE_IN)),
            "ctx_in",
            dir,
            Content::Plain,
            Aux::None,
        )?;
        self.out(
            a,
            o::CTX_OUT,
            Some(size(o::CTX_SIZE_OUT)),
            "ctx_out",
            Content::Plain,
        )
    }

    fn get_info(&mut self, a: &[u8], objects: &dyn Objects) -> Result<()> {
        use off::info as o;
        self.fd(Parent::Attr, a, o::BPF_FD)?;
        let fd = read_u32(a, o::BPF_FD) as i32;
        let kind = objects.kind(fd).ok_or(AbiError::BadFd { fd })?;
        let (content, aux) = match kind {
            ObjectKind::Prog { .. } => (Content::ProgInfo, Aux::None),
            ObjectKind::Map(_) => (Content::MapInfo, Aux::None),
            ObjectKind::Btf => (Content::BtfInfo, Aux::None),
            ObjectKind::Link => (Content::LinkInfo, Aux::Link(objects.link_type(fd))),
            ObjectKind::Iter | ObjectKind::Other => (Content::Plain, Aux::None),
        };
        let len = Some(u64::from(read_u32(a, o::INFO_LEN)));
        self.sized(
            Parent::Attr,
            a,
            o::INFO,
            len,
            "info",
            Direction::InOut,
            content,
            aux,
        )?;
        Ok(())
    }

    fn query(&mut self, a: &[u8]) -> Result<()> {
        use off::query as o;
        match attach_class(read_u32(a, o::ATTACH_TYPE)) {
            AttachClass::Cgroup | AttachClass::SockMap | AttachClass::Lirc | AttachClass::Netns => {
                self.fd(Parent::Attr, a, o::TARGET_FD)?
            }
            AttachClass::Mprog | AttachClass::Other => {} // ifindex / rejected by the kernel
        }
        let n = mul(Some(u64::from(read_u32(a, o::PROG_CNT))), Some(4));
        self.out(a, o::PROG_IDS, n, "prog_ids", Content::Plain)?;
        self.out(
            a,
            o::PROG_ATTACH_FLAGS,
            n,
            "prog_attach_flags",
            Content::Plain,
        )?;
        self.out(a, o::LINK_IDS, n, "link_ids", Content::Plain)?;
        self.out(
            a,
            o::LINK_ATTACH_FLAGS,
            n,
            "link_attach_flags",
            Content::Plain,
        )
    }

    fn btf_load(&mut self, a: &[u8]) -> Result<()> {
        use off::btf_load as o;
        self.returns_fd = true;
        let size = |at: usize| Some(u64::from(read_u32(a, at)));
        self.input(a, o::BTF, size(o::BTF_SIZE), "btf")?;
        self.out(
            a,
            o::BTF_LOG_BUF,
            size(o::BTF_LOG_SIZE),
            "btf_log_buf",
            Content::Log,
        )?;
        if read_u32(a, o::BTF_FLAGS) & flags::BPF_F_TOKEN_FD != 0 {
            self.fd(Parent::Attr, a, o::BTF_TOKEN_FD)?;
        }
        Ok(())
    }

    fn link_create(&mut self, a: &[u8], objects: &dyn Objects) -> Result<()> {
        use off::link_create as o;
        self.returns_fd = true;
        self.fd(Parent::Attr, a, o::PROG_FD)?;
        let attach_type = read_u32(a, o::ATTACH_TYPE);
        if attach_type == BPF_STRUCT_OPS {
            // bpf_struct_ops_link_create(): link_create.map_fd only.
            return Ok(());
        }
        let prog_fd = read_u32(a, o::PROG_FD) as i32;
        let prog_type = prog_type_of(objects, prog_fd)?;
        let link_flags = read_u32(a, o::FLAGS);
        let target = |p: &mut Plan| p.fd(Parent::Attr, a, o::TARGET_FD);
        // tcx / netkit / cgroup: relative_fd unless BPF_F_ID says it is an id.
        let relative = |p: &mut Plan| {
            if link_flags & flags::BPF_F_ID == 0 {
                p.fd(Parent::Attr, a, o::RELATIVE_FD)
            } else {
                Ok(())
            }
        };
        let cnt = |at: usize| Some(u64::from(read_u32(a, at)));
        match prog_type {
            BPF_PROG_TYPE_CGROUP_SKB
            | BPF_PROG_TYPE_CGROUP_SOCK
            | BPF_PROG_TYPE_CGROUP_SOCK_ADDR
            | BPF_PROG_TYPE_SOCK_OPS
            | BPF_PROG_TYPE_CGROUP_DEVICE
            | BPF_PROG_TYPE_CGROUP_SYSCTL
            | BPF_PROG_TYPE_CGROUP_SOCKOPT => {
                target(self)?; // cgroup fd
                relative(self)?;
            }
            BPF_PROG_TYPE_EXT => target(self)?, // target prog fd (0 = from load time)
            BPF_PROG_TYPE_LSM | BPF_PROG_TYPE_TRACING => match attach_type {
                BPF_TRACE_RAW_TP => {}
                BPF_TRACE_ITER => {
                    self.sized(
                        Parent::Attr,
                        a,
                        o::ITER_INFO,
                        cnt(o::ITER_INFO_LEN),
                        "iter_info",
                        Direction::In,
                        Content::IterLinkInfo,
                        Aux::Iter(objects.iter_target(prog_fd)),
                    )?;
                }
                BPF_LSM_CGROUP => {
                    target(self)?;
                    relative(self)?;
                }
                BPF_TRACE_FENTRY_MULTI | BPF_TRACE_FEXIT_MULTI | BPF_TRACE_FSESSION_MULTI => {
                    target(self)?;
                    let n = cnt(o::TRACING_MULTI_CNT);
                    self.input(
                        a,
                        o::TRACING_MULTI_IDS,
                        mul(n, Some(4)),
                        "tracing_multi ids",
                    )?;
                    let cookies = mul(n, Some(8));
                    self.input(
                        a,
                        o::TRACING_MULTI_COOKIES,
                        cookies,
                        "tracing_multi cookies",
                    )?;
                }
                // fentry/fexit/fmod_ret/fsession/lsm: optional target prog fd.
                _ => target(self)?,
            },
            // netns fd / sockmap fd
            BPF_PROG_TYPE_FLOW_DISSECTOR
            | BPF_PROG_TYPE_SK_LOOKUP
            | BPF_PROG_TYPE_SK_MSG
            | BPF_PROG_TYPE_SK_SKB => target(self)?,
            BPF_PROG_TYPE_XDP | BPF_PROG_TYPE_NETFILTER => {} // ifindex / no fds
            BPF_PROG_TYPE_SCHED_CLS => relative(self)?,       // tcx / netkit: ifindex
            BPF_PROG_TYPE_PERF_EVENT | BPF_PROG_TYPE_TRACEPOINT => target(self)?, // perf event fd
            BPF_PROG_TYPE_KPROBE => match attach_type {
                BPF_PERF_EVENT => target(self)?,
                BPF_TRACE_KPROBE_MULTI | BPF_TRACE_KPROBE_SESSION => {
                    let n = mul(cnt(o::KPROBE_MULTI_CNT), Some(8));
                    self.sized(
                        Parent::Attr,
                        a,
                        o::KPROBE_MULTI_SYMS,
                        n,
                        "kprobe_multi syms",
                        Direction::In,
                        Content::PtrArray,
                        Aux::StrMax(strlen::KSYM_NAME_LEN),
                    )?;
                    self.input(a, o::KPROBE_MULTI_ADDRS, n, "kprobe_multi addrs")?;
                    self.input(a, o::KPROBE_MULTI_COOKIES, n, "kprobe_multi cookies")?;
                }
                BPF_TRACE_UPROBE_MULTI | BPF_TRACE_UPROBE_SESSION => {
                    self.cstring(a, o::UPROBE_MULTI_PATH, strlen::PATH_MAX)?;
                    let n = mul(cnt(o::UPROBE_MULTI_CNT), Some(8));
                    self.input(a, o::UPROBE_MULTI_OFFSETS, n, "uprobe_multi offsets")?;
                    let rc = o::UPROBE_MULTI_REF_CTR_OFFSETS;
                    self.input(a, rc, n, "uprobe_multi ref_ctr_offsets")?;
                    self.input(a, o::UPROBE_MULTI_COOKIES, n, "uprobe_multi cookies")?;
                    self.fd(Parent::Attr, a, o::UPROBE_MULTI_PATH_FD)?;
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// How many bytes of buffer `index` the kernel may have written, given the attr as it is
    /// after the call: the length to copy back to the caller. 0 for In buffers; for
    /// `test.data_out` / `test.ctx_out` at most the returned `data_size_out` / `ctx_size_out`
    /// (the kernel never writes more; with `data_size_out == 0` the plan reserves more than
    /// the caller may own); [`BufferSpec::alloc_len`] otherwise. Log buffers may further be
    /// trimmed after their first NUL.
    pub fn reply_len(&self, index: usize, attr_after: &[u8]) -> usize {
        let Some(b) = self.buffers.get(index) else {
            return 0;
        };
        if !b.dir.copies_out() {
            return 0;
        }
        let len = b.alloc_len();
        if self.cmd == BPF_PROG_TEST_RUN && b.parent == Parent::Attr {
            let size_at = match b.ptr_offset {
                off::test_run::DATA_OUT => Some(off::test_run::DATA_SIZE_OUT),
                off::test_run::CTX_OUT => Some(off::test_run::CTX_SIZE_OUT),
                _ => None,
            };
            if let Some(at) = size_at {
                let written = usize::try_from(read_u32(attr_after, at)).unwrap_or(usize::MAX);
                return len.min(written);
            }
        }
        len
    }
}

/// The iterator target to assume for an `Aux::Iter` buffer.
pub(crate) fn iter_fd_offsets(target: Option<IterTarget>, content: &[u8]) -> Vec<usize> {
    use off::iter_link_info as o;
    match target {
        Some(IterTarget::Map) => vec![o::MAP_FD],
        Some(IterTarget::Cgroup) => vec![o::CGROUP_FD],
        Some(IterTarget::Task) => vec![o::PID_FD],
        Some(IterTarget::NoFds) => Vec::new(),
        None => [o::MAP_FD, o::CGROUP_FD, o::PID_FD]
            .into_iter()
            .filter(|&at| read_u32(content, at) != 0)
            .collect(),
    }
}
