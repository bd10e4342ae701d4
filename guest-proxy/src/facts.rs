//! What the Welcome message tells a client about this kernel.

use std::ffi::CStr;

use telebpf_protocol::message::Facts;

/// Gathers the facts once at start-up; they do not change while the proxy
/// runs.
pub fn gather() -> Facts {
    Facts {
        uname: uname(),
        possible_cpus: possible_cpus(),
        caps: capabilities(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn uname() -> [String; 6] {
    // SAFETY: utsname is plain data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname to fill.
    unsafe { libc::uname(&mut u) };
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within
        // its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    [
        field(&u.sysname),
        field(&u.nodename),
        field(&u.release),
        field(&u.version),
        field(&u.machine),
        field(&u.domainname),
    ]
}

/// Parses a CPU list such as `0-3,5,7-8` into a count of possible CPUs
/// (libbpf counts the highest CPU + 1, so holes count too).
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut max: Option<u32> = None;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = match part.split_once('-') {
            Some((_, hi)) => hi.trim().parse::<u32>().ok()?,
            None => part.trim().parse::<u32>().ok()?,
        };
        max = Some(max.map_or(hi, |m| m.max(hi)));
    }
    max.map(|m| m + 1)
}

fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or(1)
}

fn capabilities() -> [[u32; 2]; 3] {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header reads the header and writes two
    // Data structs, both valid here.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return [[0; 2]; 3];
    }
    [
        [data[0].effective, data[1].effective],
        [data[0].permitted, data[1].permitted],
        [data[0].inheritable, data[1].inheritable],
    ]
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(9));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
