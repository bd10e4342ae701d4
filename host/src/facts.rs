//! The calls that describe the running kernel and the caller's standing in
//! it (`uname`, `capget`), answered from the guest's facts, where the
//! forwarded calls run.
//!
//! Pure: the front-end reads the caller's arguments and writes these bytes
//! back into its memory, so a unit test checks the layouts without a
//! proxy.

use telebpf_protocol::message::Facts;

/// `_LINUX_CAPABILITY_VERSION_1`: one 32-bit word per set.
pub const CAP_V1: u32 = 0x1998_0330;
/// `_LINUX_CAPABILITY_VERSION_2`: two words per set.
pub const CAP_V2: u32 = 0x2007_1026;
/// `_LINUX_CAPABILITY_VERSION_3`: two words per set.
pub const CAP_V3: u32 = 0x2008_0522;

/// The guest's `struct utsname`, as `uname` fills it: each field cut to
/// its 64 bytes and NUL-terminated (bpftool builds `/boot/config-<release>`
/// from it; libbpf derives the kernel version).
pub fn utsname(facts: &Facts) -> libc::utsname {
    // SAFETY: utsname is plain data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    let fields = [
        &mut u.sysname,
        &mut u.nodename,
        &mut u.release,
        &mut u.version,
        &mut u.machine,
        &mut u.domainname,
    ];
    for (dst, src) in fields.into_iter().zip(&facts.uname) {
        let n = src.len().min(dst.len() - 1);
        for (d, s) in dst.iter_mut().zip(&src.as_bytes()[..n]) {
            *d = *s as libc::c_char;
        }
    }
    u
}

/// The `cap_user_data_t` array `capget` writes for header `version`: the
/// proxy's effective, permitted and inheritable sets (the privileges the
/// forwarded calls run with, which tools such as bpftool check first), one
/// `{effective, permitted, inheritable}` triple per 32-bit word. `None`
/// for a version this does not know (libc then reports the preferred one).
pub fn cap_data(facts: &Facts, version: u32) -> Option<Vec<u8>> {
    let words = match version {
        CAP_V1 => 1,
        CAP_V2 | CAP_V3 => 2,
        _ => return None,
    };
    let mut out = Vec::with_capacity(words * 12);
    for w in 0..words {
        for set in &facts.caps {
            out.extend_from_slice(&set[w].to_le_bytes());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn facts() -> Facts {
        Facts {
            uname: [
                "Linux".into(),
                "guest".into(),
                "6.1.0-28-cloud-amd64".into(),
                "x".repeat(100),
                "x86_64".into(),
                "(none)".into(),
            ],
            possible_cpus: 2,
            caps: [[0xffff_ffff, 0x1ff], [0xffff_ffff, 0x1ff], [0, 0]],
            proxy_version: "0.1.0".into(),
        }
    }

    #[test]
    fn utsname_fields_are_cut_and_terminated() {
        let u = utsname(&facts());
        // SAFETY: every field is NUL-terminated by construction.
        let release = unsafe { CStr::from_ptr(u.release.as_ptr()) };
        assert_eq!(release.to_str().unwrap(), "6.1.0-28-cloud-amd64");
        // SAFETY: as above.
        let version = unsafe { CStr::from_ptr(u.version.as_ptr()) };
        assert_eq!(version.to_bytes().len(), u.version.len() - 1);
    }

    #[test]
    fn cap_data_has_one_triple_per_word() {
        let v3 = cap_data(&facts(), CAP_V3).unwrap();
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[..4], &0xffff_ffffu32.to_le_bytes());
        assert_eq!(&v3[8..12], &[0; 4], "inheritable of word 0");
        assert_eq!(&v3[12..16], &0x1ffu32.to_le_bytes(), "effective of word 1");
        assert_eq!(cap_data(&facts(), CAP_V1).unwrap().len(), 12);
        assert_eq!(cap_data(&facts(), 0x1234), None);
    }
}
