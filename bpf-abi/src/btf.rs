//! A small reader of BTF (the kernel's BPF Type Format): type ids to kinds
//! and names.
//!
//! A kfunc call (`BPF_JMP | BPF_CALL`, `src_reg` `BPF_PSEUDO_KFUNC_CALL`)
//! names the kernel function it calls by its BTF type id, in the kernel's
//! BTF (`/sys/kernel/btf/vmlinux`) or, when the instruction's `off` indexes
//! `fd_array`, in a module's BTF. A policy names kfuncs by their function
//! names, so the proxy turns the id into a name with this reader. It only
//! walks the type section to find where each type's record starts (every
//! kind's record length is fixed by its `vlen`), then reads names from the
//! string section; nothing else of BTF is interpreted.
//!
//! Module BTF is *split* BTF: its type ids continue after the base's last
//! id and its string offsets after the base's string section, so a name in
//! a module may live in the base ([`Btf::parse_split`]).
//!
//! Pure: no syscall, and no input makes it panic or read out of bounds
//! (every offset is checked; malformed data is a [`BtfError`]).

/// `BTF_KIND_FUNC`: a function (what a kfunc id must name).
pub const KIND_FUNC: u32 = 12;

/// BTF's magic number (`BTF_MAGIC`), little-endian in the file.
const MAGIC: u16 = 0xeb9f;
/// `sizeof(struct btf_type)`.
const TYPE_HEADER: usize = 12;
/// The largest type id the kernel accepts (`BTF_MAX_TYPE`).
const MAX_TYPE: usize = 0x000f_ffff;

/// Why BTF data cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Shorter than its header, or a section lies outside the data.
    #[error("BTF data truncated: {0}")]
    Truncated(&'static str),
    /// Not BTF (or BTF of the other byte order).
    #[error("not BTF data (magic {0:#06x})")]
    BadMagic(u16),
    /// A type record of a kind this reader does not know the length of.
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind {
        /// The type's id.
        id: u32,
        /// Its kind.
        kind: u32,
    },
    /// More types than the kernel allows.
    #[error("BTF has more than {MAX_TYPE} types")]
    TooManyTypes,
}

/// Parsed BTF: the data, where each type record starts, and the numbering
/// (ids and string offsets) it continues from when it is split BTF.
#[derive(Clone, Debug)]
pub struct Btf {
    data: Vec<u8>,
    /// Absolute offset in `data` of type `first_id + i`.
    types: Vec<usize>,
    /// The string section: `data[strings.0..strings.1]`.
    strings: (usize, usize),
    /// Id of the first type of this BTF (1 for base BTF; after the base's
    /// last type for split BTF).
    first_id: u32,
    /// String offset at which this BTF's string section starts (0 for base
    /// BTF; the base's string section length for split BTF).
    first_str: u32,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Bytes a type record of `kind` with `vlen` takes after its 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT: one u32 of encoding; VAR: linkage; DECL_TAG: component index.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // ARRAY: struct btf_array.
        3 => 12,
        // STRUCT, UNION: btf_member; DATASEC: btf_var_secinfo; ENUM64.
        4 | 5 | 15 | 19 => vlen.checked_mul(12)?,
        // ENUM: btf_enum; FUNC_PROTO: btf_param.
        6 | 13 => vlen.checked_mul(8)?,
        _ => return None,
    })
}

impl Btf {
    /// Parses base BTF (`/sys/kernel/btf/vmlinux`, or a program's own).
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        Btf::parse_from(data, 1, 0)
    }

    /// Parses split BTF (a module's `/sys/kernel/btf/<module>`, or the
    /// bytes `BPF_OBJ_GET_INFO_BY_FD` returns for a module's BTF object)
    /// on top of `base`.
    pub fn parse_split(data: Vec<u8>, base: &Btf) -> Result<Btf, BtfError> {
        let first_id = base
            .first_id
            .checked_add(base.types.len() as u32)
            .ok_or(BtfError::TooManyTypes)?;
        let base_strings = (base.strings.1 - base.strings.0) as u32;
        let first_str = base
            .first_str
            .checked_add(base_strings)
            .ok_or(BtfError::Truncated("string offsets overflow"))?;
        Btf::parse_from(data, first_id, first_str)
    }

    fn parse_from(data: Vec<u8>, first_id: u32, first_str: u32) -> Result<Btf, BtfError> {
        let magic = u16_at(&data, 0).ok_or(BtfError::Truncated("header"))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let field = |at: usize| u32_at(&data, at).ok_or(BtfError::Truncated("header"));
        let hdr_len = field(4)? as usize;
        if hdr_len < 24 || hdr_len > data.len() {
            return Err(BtfError::Truncated("header length"));
        }
        let section = |off_at: usize, len_at: usize, what| -> Result<(usize, usize), BtfError> {
            let start = hdr_len
                .checked_add(field(off_at)? as usize)
                .ok_or(BtfError::Truncated(what))?;
            let end = start
                .checked_add(field(len_at)? as usize)
                .ok_or(BtfError::Truncated(what))?;
            if end > data.len() {
                return Err(BtfError::Truncated(what));
            }
            Ok((start, end))
        };
        let (type_start, type_end) = section(8, 12, "type section")?;
        let strings = section(16, 20, "string section")?;
        let mut types = Vec::new();
        let mut at = type_start;
        while at < type_end {
            if types.len() >= MAX_TYPE {
                return Err(BtfError::TooManyTypes);
            }
            let id = first_id.saturating_add(types.len() as u32);
            let info = u32_at(&data, at + 4)
                .filter(|_| at + TYPE_HEADER <= type_end)
                .ok_or(BtfError::Truncated("type record"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = extra_len(kind, vlen).ok_or(BtfError::UnknownKind { id, kind })?;
            let next = at
                .checked_add(TYPE_HEADER + extra)
                .filter(|&n| n <= type_end)
                .ok_or(BtfError::Truncated("type record"))?;
            types.push(at);
            at = next;
        }
        Ok(Btf {
            data,
            types,
            strings,
            first_id,
            first_str,
        })
    }

    /// Number of types of this BTF (not counting `void` or a base's).
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// The record of type `id` if it is one of this BTF's own types.
    fn record(&self, id: u32) -> Option<usize> {
        let i = id.checked_sub(self.first_id)?;
        self.types.get(i as usize).copied()
    }

    /// The string at `off` of this BTF's string section (or, for an offset
    /// before it, of `base`'s).
    fn string<'a>(&'a self, off: u32, base: Option<&'a Btf>) -> Option<&'a str> {
        if off < self.first_str {
            return base?.string(off, None);
        }
        let rel = (off - self.first_str) as usize;
        let bytes = self.data.get(self.strings.0..self.strings.1)?.get(rel..)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&bytes[..end]).ok()
    }

    /// Kind and name of type `id`, looked up in `base` for ids before this
    /// BTF's own. `None` for an id that names no type (or `void`), or a
    /// name that is no UTF-8 string inside the string section.
    pub fn kind_and_name<'a>(&'a self, id: u32, base: Option<&'a Btf>) -> Option<(u32, &'a str)> {
        if id < self.first_id {
            return base?.kind_and_name(id, None);
        }
        let at = self.record(id)?;
        let name_off = u32_at(&self.data, at)?;
        let kind = (u32_at(&self.data, at + 4)? >> 24) & 0x1f;
        Some((kind, self.string(name_off, base)?))
    }

    /// The name of function `id` (a kfunc's BTF id): `None` unless it names
    /// a `BTF_KIND_FUNC` with a name.
    pub fn func_name<'a>(&'a self, id: u32, base: Option<&'a Btf>) -> Option<&'a str> {
        match self.kind_and_name(id, base)? {
            (KIND_FUNC, name) if !name.is_empty() => Some(name),
            _ => None,
        }
    }
}

/// Test data: BTF built by hand.
#[cfg(test)]
pub(crate) mod build {
    /// A BTF blob with `types` (kind, name, vlen, extra bytes) and the
    /// string section `strings` (offset 0 must be the empty string).
    pub fn blob(types: &[(u32, u32, u32, Vec<u8>)], strings: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (kind, name_off, vlen, extra) in types {
            t.extend_from_slice(&name_off.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            t.extend_from_slice(&4u32.to_le_bytes());
            t.extend_from_slice(extra);
        }
        let mut d = Vec::new();
        d.extend_from_slice(&0xeb9fu16.to_le_bytes());
        d.push(1);
        d.push(0);
        d.extend_from_slice(&24u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&(t.len() as u32).to_le_bytes());
        d.extend_from_slice(&(t.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.extend_from_slice(&t);
        d.extend_from_slice(strings);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::build::blob;
    use super::*;

    /// int (id 1), a struct with 2 members (id 2), a FUNC_PROTO with one
    /// param (id 3), FUNC "crash_kexec" (id 4), FUNC "bpf_rcu_read_lock" (5).
    fn base() -> Btf {
        let strings = b"\0int\0s\0crash_kexec\0bpf_rcu_read_lock\0";
        Btf::parse(blob(
            &[
                (1, 1, 0, vec![0; 4]),
                (4, 5, 2, vec![0; 24]),
                (13, 0, 1, vec![0; 8]),
                (12, 7, 0, vec![]),
                (12, 19, 0, vec![]),
            ],
            strings,
        ))
        .unwrap()
    }

    #[test]
    fn names_of_functions_and_types() {
        let b = base();
        assert_eq!(b.type_count(), 5);
        assert_eq!(b.kind_and_name(1, None), Some((1, "int")));
        assert_eq!(b.kind_and_name(2, None), Some((4, "s")));
        assert_eq!(b.func_name(4, None), Some("crash_kexec"));
        assert_eq!(b.func_name(5, None), Some("bpf_rcu_read_lock"));
        // Not functions, void, past the end.
        assert_eq!(b.func_name(1, None), None);
        assert_eq!(b.func_name(3, None), None);
        assert_eq!(b.func_name(0, None), None);
        assert_eq!(b.func_name(6, None), None);
        assert_eq!(b.func_name(u32::MAX, None), None);
    }

    #[test]
    fn split_btf_continues_ids_and_strings() {
        let b = base();
        let base_str_len = b"\0int\0s\0crash_kexec\0bpf_rcu_read_lock\0".len() as u32;
        // A module: FUNC "mod_fn" (its own string) and FUNC named with a
        // base string ("int"), ids 6 and 7.
        let m = Btf::parse_split(
            blob(
                &[(12, base_str_len + 1, 0, vec![]), (12, 1, 0, vec![])],
                b"\0mod_fn\0",
            ),
            &b,
        )
        .unwrap();
        assert_eq!(m.func_name(6, Some(&b)), Some("mod_fn"));
        assert_eq!(m.func_name(7, Some(&b)), Some("int"));
        // Base ids resolve through the base.
        assert_eq!(m.func_name(4, Some(&b)), Some("crash_kexec"));
        assert_eq!(m.func_name(4, None), None);
        assert_eq!(m.func_name(8, Some(&b)), None);
    }

    #[test]
    fn malformed_data_is_an_error() {
        assert!(matches!(Btf::parse(vec![1, 2]), Err(BtfError::BadMagic(_))));
        assert!(matches!(
            Btf::parse(vec![0x9f]),
            Err(BtfError::Truncated(_))
        ));
        let good = blob(&[(1, 1, 0, vec![0; 4])], b"\0int\0");
        // Cut anywhere: an error or a parse, never a panic.
        for n in 0..good.len() {
            let _ = Btf::parse(good[..n].to_vec());
        }
        // An unknown kind.
        let bad = blob(&[(31, 1, 0, vec![])], b"\0x\0");
        assert_eq!(
            Btf::parse(bad).unwrap_err(),
            BtfError::UnknownKind { id: 1, kind: 31 }
        );
        // A struct whose members run past the section.
        let short = blob(&[(4, 1, 5, vec![0; 12])], b"\0x\0");
        assert!(matches!(Btf::parse(short), Err(BtfError::Truncated(_))));
        // A name offset past the strings: no name, no panic.
        let far = Btf::parse(blob(&[(12, 999, 0, vec![])], b"\0x\0")).unwrap();
        assert_eq!(far.func_name(1, None), None);
    }

    proptest::proptest! {
        /// Any bytes behind a valid header (and any header fields): an
        /// error or a parse whose every lookup stays in bounds.
        #[test]
        fn arbitrary_bytes_never_panic(
            fields in proptest::collection::vec(proptest::prelude::any::<u32>(), 5),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            small in proptest::prelude::any::<bool>(),
            ids in proptest::collection::vec(proptest::prelude::any::<u32>(), 8),
        ) {
            let mut d = vec![0x9f, 0xeb, 1, 0];
            for (i, f) in fields.iter().enumerate() {
                // Mostly plausible offsets and lengths, sometimes wild ones.
                let v = if small { f % 600 } else { *f };
                let v = if i == 0 && small { 24 } else { v };
                d.extend_from_slice(&v.to_le_bytes());
            }
            d.extend_from_slice(&body);
            if let Ok(b) = Btf::parse(d) {
                for id in ids.iter().copied().chain(0..b.type_count() as u32 + 2) {
                    let _ = b.kind_and_name(id, None);
                    let _ = b.func_name(id, None);
                }
                let split = blob(&[(12, 1, 0, vec![])], b"\0f\0");
                if let Ok(m) = Btf::parse_split(split, &b) {
                    for id in ids {
                        let _ = m.func_name(id, Some(&b));
                    }
                }
            }
        }
    }

    #[test]
    fn this_kernels_btf_parses() {
        // Where the machine has BTF, every type is walked and at least one
        // well-known function is found by name.
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let btf = Btf::parse(data).expect("vmlinux BTF parses");
        assert!(btf.type_count() > 1000);
        let found = (1..=btf.type_count() as u32)
            .filter_map(|id| btf.func_name(id, None))
            .any(|n| n == "bpf_rcu_read_lock" || n == "schedule");
        assert!(found);
    }
}
