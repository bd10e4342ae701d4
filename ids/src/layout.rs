//! Field offsets of the guest kernel's structures, from the guest's own BTF
//! (fetched over the channel), so one host binary reads any guest kernel.

use std::ffi::OsStr;
use std::path::Path;

use libbpf_rs::btf::types::{Array, Composite, MemberAttr};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize};

/// A structure or member the guest's BTF does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the guest's BTF has no {0}")]
pub struct Missing(pub String);

/// A kernel's type information.
pub struct Types {
    btf: Btf<'static>,
}

impl std::fmt::Debug for Types {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Types").finish_non_exhaustive()
    }
}

impl Types {
    /// Parses a raw BTF file (`/sys/kernel/btf/vmlinux` of some kernel).
    pub fn from_path(path: &Path) -> Result<Types, String> {
        Btf::from_path(path)
            .map(|btf| Types { btf })
            .map_err(|e| format!("cannot parse BTF {}: {e}", path.display()))
    }

    fn composite(&self, name: &str) -> Result<Composite<'_>, Missing> {
        self.btf
            .type_by_name::<libbpf_rs::btf::types::Struct<'_>>(name)
            .map(Composite::from)
            .or_else(|| {
                self.btf
                    .type_by_name::<libbpf_rs::btf::types::Union<'_>>(name)
                    .map(Composite::from)
            })
            .ok_or_else(|| Missing(format!("struct {name}")))
    }

    /// Whether `struct NAME` exists.
    pub fn has_struct(&self, name: &str) -> bool {
        self.composite(name).is_ok()
    }

    /// `sizeof(struct NAME)`.
    pub fn size_of(&self, name: &str) -> Result<u64, Missing> {
        self.btf
            .type_by_name::<libbpf_rs::btf::types::Struct<'_>>(name)
            .map(|s| s.size() as u64)
            .ok_or_else(|| Missing(format!("struct {name}")))
    }

    /// Whether `struct NAME` has the member path `PATH`.
    pub fn has(&self, name: &str, path: &str) -> bool {
        self.offset(name, path).is_ok()
    }

    /// The byte offset of `PATH` (`a.b.c`, `mem[3].size`) in `struct NAME`,
    /// looking through anonymous structs and unions as C does.
    pub fn offset(&self, name: &str, path: &str) -> Result<u64, Missing> {
        let missing = || Missing(format!("struct {name} member {path}"));
        let mut ty: BtfType<'_> = *self.composite(name)?;
        let mut offset = 0u64;
        for segment in path.split('.') {
            let (field, index) = match segment.split_once('[') {
                Some((f, rest)) => (
                    f,
                    Some(
                        rest.trim_end_matches(']')
                            .parse::<u64>()
                            .map_err(|_| missing())?,
                    ),
                ),
                None => (segment, None),
            };
            let composite =
                Composite::try_from(ty.skip_mods_and_typedefs()).map_err(|_| missing())?;
            let (at, member_ty) = find_member(&self.btf, &composite, field).ok_or_else(missing)?;
            offset += at;
            ty = self.btf.type_by_id(member_ty).ok_or_else(missing)?;
            if let Some(i) = index {
                let array = Array::try_from(ty.skip_mods_and_typedefs()).map_err(|_| missing())?;
                let elem = array.contained_type();
                offset += i * type_size(elem).ok_or_else(missing)?;
                ty = elem;
            }
        }
        Ok(offset)
    }
}

/// Finds `field` in a struct or union, descending into anonymous members;
/// returns its byte offset and type.
fn find_member(
    btf: &Btf<'_>,
    c: &Composite<'_>,
    field: &str,
) -> Option<(u64, libbpf_rs::btf::TypeId)> {
    for i in 0..c.len() {
        let m = c.get(i)?;
        let bits = match m.attr {
            MemberAttr::Normal { offset } => offset,
            MemberAttr::BitField { offset, .. } => offset,
        } as u64;
        match m.name {
            Some(n) if n == OsStr::new(field) => return Some((bits / 8, m.ty)),
            Some(n) if !n.is_empty() => continue,
            _ => {
                // An anonymous struct or union: C lets its members be named directly.
                let inner = btf.type_by_id::<BtfType<'_>>(m.ty)?;
                if let Ok(inner) = Composite::try_from(inner.skip_mods_and_typedefs()) {
                    if let Some((at, ty)) = find_member(btf, &inner, field) {
                        return Some((bits / 8 + at, ty));
                    }
                }
            }
        }
    }
    None
}

fn type_size(ty: BtfType<'_>) -> Option<u64> {
    let ty = ty.skip_mods_and_typedefs();
    match ty.kind() {
        BtfKind::Ptr => Some(8),
        BtfKind::Int => libbpf_rs::btf::types::Int::try_from(ty)
            .ok()
            .map(|t| t.size() as u64),
        BtfKind::Struct => libbpf_rs::btf::types::Struct::try_from(ty)
            .ok()
            .map(|t| t.size() as u64),
        BtfKind::Union => libbpf_rs::btf::types::Union::try_from(ty)
            .ok()
            .map(|t| t.size() as u64),
        BtfKind::Enum => libbpf_rs::btf::types::Enum::try_from(ty)
            .ok()
            .map(|t| t.size() as u64),
        BtfKind::Array => {
            let a = Array::try_from(ty).ok()?;
            Some(a.capacity() as u64 * type_size(a.contained_type())?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_agree_with_the_running_kernel_layout() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("SKIP: no BTF");
            return;
        }
        let t = Types::from_path(path).expect("parse");
        // list_head.next is first, .prev second.
        assert_eq!(t.offset("list_head", "next").unwrap(), 0);
        assert_eq!(t.offset("list_head", "prev").unwrap(), 8);
        // skc_daddr sits in an anonymous struct inside an anonymous union.
        assert_eq!(t.offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(t.offset("sock_common", "skc_rcv_saddr").unwrap(), 4);
        assert!(t.offset("task_struct", "comm").unwrap() > t.offset("task_struct", "pid").unwrap());
        let hashinfo = t.offset("net", "ipv4.tcp_death_row.hashinfo").unwrap();
        assert!(hashinfo > t.offset("net", "ipv4").unwrap());
        assert!(t.offset("task_struct", "no_such_field").is_err());
        assert_eq!(t.size_of("inet_ehash_bucket").unwrap(), 8);
    }
}
