//! `Plan::expand`: pointers and fds found inside buffer contents.

use crate::cmd::BPF_PROG_LOAD;
use crate::flags::{self, INSN_SIZE};
use crate::link_type::*;
use crate::off;
use crate::plan::{iter_fd_offsets, mul};
use crate::{
    read_u32, AbiError, Aux, Content, Direction, Length, Objects, Parent, Plan, MAX_FD_SLOTS,
};

type Result<T> = core::result::Result<T, AbiError>;

/// A nested pointer field of an info struct: (pointer offset, length in bytes).
type Nested = (usize, Option<u64>);

impl Plan {
    /// Called by both sides, in index order, once the content of buffer `index` is known.
    /// Appends nested buffers (info-struct pointers, kprobe_multi symbol strings) and fd slots
    /// found inside the content (ld_imm64 map fds and module BTF fds in instructions,
    /// `fd_array` entries, fd values of fd-map updates, fds inside `bpf_iter_link_info`), and
    /// sizes `fd_array` from the instructions. Nested buffers get larger indices, so a simple
    /// `while i < plan.buffers.len()` loop visits all.
    ///
    /// * In / InOut buffers: pass the bytes (the host: as read from the caller, *before* fd
    ///   translation; the proxy: as received). Only the first [`crate::BufferSpec::alloc_len`]
    ///   bytes are looked at.
    /// * Out buffers: nothing can be inside them; calling `expand` for them is allowed and does
    ///   nothing (pass an empty slice), skipping the call is fine too.
    ///
    /// Call it once per buffer: a second call would add the same slots again.
    ///
    /// Errors: [`AbiError::BadIndex`] for an index not in the plan; [`AbiError::TooBig`] when
    /// limits are exceeded; [`AbiError::Truncated`] for a non-zero pointer or fd field cut by
    /// the struct length; [`AbiError::Unsupported`] for a link info with pointers whose link type
    /// is unknown (see [`Objects::link_type`]).
    pub fn expand(&mut self, index: usize, content: &[u8], objects: &dyn Objects) -> Result<()> {
        let _ = objects; // Every object-dependent fact was captured by `Plan::new`.
        let Some(b) = self.buffers.get(index) else {
            return Err(AbiError::BadIndex { index });
        };
        if !b.dir.copies_in() {
            return Ok(());
        }
        let kind = b.content;
        let c = content.get(..b.alloc_len()).unwrap_or(content);
        let parent = Parent::Buffer(index);
        match kind {
            Content::Plain | Content::Log => Ok(()),
            Content::KeyFd => self.fd(parent, c, 0),
            Content::Insns => self.expand_insns(index, c),
            Content::FdArray => {
                let n = c.len() / 4;
                self.check_fd_room(n)?;
                for k in 0..n {
                    self.fd(parent, c, k * 4)?;
                }
                Ok(())
            }
            Content::MapValueFds => {
                let Aux::ValueFds { stride, offsets } = self.aux_of(index) else {
                    return Ok(());
                };
                if stride == 0 {
                    return Ok(());
                }
                let elems = c.len() / stride;
                self.check_fd_room(elems.saturating_mul(offsets.len()))?;
                for e in 0..elems {
                    let base = e * stride;
                    for &o in &offsets {
                        if o.checked_add(4).is_some_and(|end| end <= stride) {
                            self.fd(parent, c, base + o)?;
                        }
                    }
                }
                Ok(())
            }
            Content::PtrArray => {
                let max = match self.aux_of(index) {
                    Aux::StrMax(m) => m,
                    _ => flags::strlen::PATH_MAX,
                };
                for k in 0..c.len() / 8 {
                    self.buf(
                        parent,
                        c,
                        k * 8,
                        Length::CString { max },
                        Direction::In,
                        Content::Plain,
                        Aux::None,
                    )?;
                }
                Ok(())
            }
            Content::IterLinkInfo => {
                let target = match self.aux_of(index) {
                    Aux::Iter(t) => t,
                    _ => None,
                };
                for at in iter_fd_offsets(target, c) {
                    self.fd(parent, c, at)?;
                }
                Ok(())
            }
            Content::ProgInfo => {
                use off::prog_info as o;
                let c = c.get(..o::SIZE).unwrap_or(c);
                let n = |at: usize| Some(u64::from(read_u32(c, at)));
                let list: [Nested; 9] = [
                    (o::JITED_PROG_INSNS, n(o::JITED_PROG_LEN)),
                    (o::XLATED_PROG_INSNS, n(o::XLATED_PROG_LEN)),
                    (o::MAP_IDS, mul(n(o::NR_MAP_IDS), Some(4))),
                    (o::JITED_KSYMS, mul(n(o::NR_JITED_KSYMS), Some(8))),
                    (o::JITED_FUNC_LENS, mul(n(o::NR_JITED_FUNC_LENS), Some(4))),
                    (
                        o::FUNC_INFO,
                        mul(n(o::NR_FUNC_INFO), n(o::FUNC_INFO_REC_SIZE)),
                    ),
                    (
                        o::LINE_INFO,
                        mul(n(o::NR_LINE_INFO), n(o::LINE_INFO_REC_SIZE)),
                    ),
                    // The kernel writes one u64 per entry (and insists on rec_size == 8).
                    (o::JITED_LINE_INFO, mul(n(o::NR_JITED_LINE_INFO), Some(8))),
                    (o::PROG_TAGS, mul(n(o::NR_PROG_TAGS), Some(8))),
                ];
                self.nested(index, c, &list)
            }
            Content::MapInfo => {
                use off::map_info as o;
                let c = c.get(..o::SIZE).unwrap_or(c);
                let list: [Nested; 1] = [(o::HASH, Some(u64::from(read_u32(c, o::HASH_SIZE))))];
                self.nested(index, c, &list)
            }
            Content::BtfInfo => {
                use off::btf_info as o;
                let c = c.get(..o::SIZE).unwrap_or(c);
                let n = |at: usize| Some(u64::from(read_u32(c, at)));
                let list: [Nested; 2] = [(o::BTF, n(o::BTF_SIZE)), (o::NAME, n(o::NAME_LEN))];
                self.nested(index, c, &list)
            }
            Content::LinkInfo => self.expand_link_info(index, c),
        }
    }

    fn check_fd_room(&self, more: usize) -> Result<()> {
        match self.fds.len().checked_add(more) {
            Some(n) if n <= MAX_FD_SLOTS => Ok(()),
            _ => Err(AbiError::TooBig {
                what: "fd slot count",
            }),
        }
    }

    /// Out buffers for the pointer fields of an info struct.
    fn nested(&mut self, index: usize, c: &[u8], list: &[Nested]) -> Result<()> {
        for &(at, len) in list {
            self.sized(
                Parent::Buffer(index),
                c,
                at,
                len,
                "info nested buffer",
                Direction::Out,
                Content::Plain,
                Aux::None,
            )?;
        }
        Ok(())
    }

    fn expand_link_info(&mut self, index: usize, c: &[u8]) -> Result<()> {
        use off::link_info as o;
        let c = c.get(..o::SIZE).unwrap_or(c);
        let hint = match self.aux_of(index) {
            Aux::Link(t) => t,
            _ => None,
        };
        let link_type = match hint {
            Some(t) => t,
            None => {
                if c.get(o::UNION..).unwrap_or(&[]).iter().all(|&b| b == 0) {
                    return Ok(()); // no pointer can be set
                }
                match read_u32(c, o::TYPE) {
                    0 => {
                        return Err(AbiError::Unsupported {
                            what: "bpf_link_info of a link of unknown type",
                        })
                    }
                    t => t,
                }
            }
        };
        let n = |at: usize| Some(u64::from(read_u32(c, at)));
        let list: Vec<Nested> = match link_type {
            BPF_LINK_TYPE_RAW_TRACEPOINT | BPF_LINK_TYPE_ITER => vec![(o::NAME, n(o::NAME_LEN))],
            BPF_LINK_TYPE_PERF_EVENT => vec![(o::PERF_EVENT_NAME, n(o::PERF_EVENT_NAME_LEN))],
            BPF_LINK_TYPE_KPROBE_MULTI => {
                let cnt = mul(n(o::KPROBE_MULTI_COUNT), Some(8));
                vec![(o::KPROBE_MULTI_ADDRS, cnt), (o::KPROBE_MULTI_COOKIES, cnt)]
            }
            BPF_LINK_TYPE_UPROBE_MULTI => {
                let cnt = mul(n(o::UPROBE_MULTI_COUNT), Some(8));
                vec![
                    (o::UPROBE_MULTI_PATH, n(o::UPROBE_MULTI_PATH_SIZE)),
                    (o::UPROBE_MULTI_OFFSETS, cnt),
                    (o::UPROBE_MULTI_REF_CTR_OFFSETS, cnt),
                    (o::UPROBE_MULTI_COOKIES, cnt),
                ]
            }
            BPF_LINK_TYPE_TRACING_MULTI => {
                let cnt = n(o::TRACING_MULTI_COUNT);
                vec![
                    (o::TRACING_MULTI_IDS, mul(cnt, Some(4))),
                    (o::TRACING_MULTI_ADDRS, mul(cnt, Some(8))),
                    (o::TRACING_MULTI_COOKIES, mul(cnt, Some(8))),
                ]
            }
            _ => Vec::new(),
        };
        self.nested(index, c, &list)
    }

    /// Fd slots of `ld_imm64` instructions, and the `fd_array` length they (and kfunc calls)
    /// need.
    fn expand_insns(&mut self, index: usize, c: &[u8]) -> Result<()> {
        let parent = Parent::Buffer(index);
        let n = c.len() / INSN_SIZE;
        let insn = |i: usize| {
            let b = c.get(i * INSN_SIZE..(i + 1) * INSN_SIZE).unwrap_or(&[]);
            let code = b.first().copied().unwrap_or(0);
            let src = b.get(1).copied().unwrap_or(0) >> 4;
            let off = i16::from_le_bytes([
                b.get(2).copied().unwrap_or(0),
                b.get(3).copied().unwrap_or(0),
            ]);
            let imm = read_u32(b, 4);
            (code, src, off, imm)
        };
        // Highest fd_array index referenced, plus one.
        let mut need: u64 = 0;
        // kfunc calls: every instruction is looked at (the kernel scans them all for calls).
        for i in 0..n {
            let (code, src, off, _) = insn(i);
            if code == flags::BPF_JMP_CALL && src == flags::BPF_PSEUDO_KFUNC_CALL && off > 0 {
                need = need.max(off as u64 + 1);
            }
        }
        let mut i = 0;
        while i < n {
            let (code, src, _, imm) = insn(i);
            if code != flags::BPF_LD_IMM64 {
                i += 1;
                continue;
            }
            if i + 1 >= n {
                break; // truncated ld_imm64: the kernel rejects the program
            }
            match src {
                flags::BPF_PSEUDO_MAP_FD | flags::BPF_PSEUDO_MAP_VALUE => {
                    self.fd(parent, c, i * INSN_SIZE + 4)?;
                }
                flags::BPF_PSEUDO_BTF_ID => {
                    let at = (i + 1) * INSN_SIZE + 4;
                    if read_u32(c, at) != 0 {
                        self.fd(parent, c, at)?;
                    }
                }
                flags::BPF_PSEUDO_MAP_IDX | flags::BPF_PSEUDO_MAP_IDX_VALUE => {
                    need = need.max(u64::from(imm) + 1);
                }
                _ => {}
            }
            i += 2;
        }
        if need == 0 || self.cmd != BPF_PROG_LOAD {
            return Ok(());
        }
        let fd_array = self.buffers.iter().position(|b| {
            b.parent == Parent::Attr
                && b.ptr_offset == off::prog_load::FD_ARRAY
                && b.content == Content::FdArray
        });
        if let Some(j) = fd_array {
            let bytes = need
                .checked_mul(4)
                .ok_or(AbiError::TooBig { what: "fd_array" })?;
            let bytes = crate::plan::to_len(bytes, "fd_array")?;
            if bytes > self.buffers[j].alloc_len() {
                self.resize(j, bytes)?;
            }
        }
        Ok(())
    }
}
