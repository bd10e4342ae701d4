//! `dir-list PATH`: lists directory PATH the ways a program can besides
//! `opendir` — libc's `getdents64` on an `open`ed fd (a 128-byte buffer,
//! so it takes several calls; then again after `lseek(fd, 0, SEEK_SET)`),
//! and, from offset 0 again, `fdopendir` + `readdir` with a
//! `telldir`/`seekdir` back — and prints
//! one line each, the names sorted:
//!
//! ```text
//! getdents64 NAME,NAME,…
//! again NAME,NAME,…
//! fdopendir NAME,NAME,…
//! seekdir ok
//! ```
//!
//! or `errno E` at the first failure. The cgroup tests run it through
//! telebpf against the guest's tree.

use std::ffi::{CStr, CString};

extern "C" {
    /// glibc's wrapper (since 2.30); the `libc` crate does not declare it
    /// for this target.
    fn getdents64(fd: libc::c_int, buf: *mut libc::c_void, len: libc::size_t) -> libc::ssize_t;
}

fn fail() -> ! {
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    println!("errno {e}");
    std::process::exit(1);
}

/// Every name `getdents64` gives from fd's current offset to the end.
fn dents(fd: libc::c_int) -> Vec<String> {
    let mut names = Vec::new();
    let mut buf = [0u64; 16];
    loop {
        // SAFETY: `buf` is a live, 8-aligned buffer of the length passed.
        let n = unsafe { getdents64(fd, buf.as_mut_ptr().cast(), 128) };
        if n < 0 {
            fail();
        }
        if n == 0 {
            return names;
        }
        // SAFETY: u64s viewed as their bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), 128) };
        let mut at = 0;
        while at < n as usize {
            let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            let name = CStr::from_bytes_until_nul(&bytes[at + 19..at + reclen]).expect("a NUL");
            names.push(name.to_string_lossy().into_owned());
            at += reclen;
        }
    }
}

fn line(what: &str, mut names: Vec<String>) {
    names.sort();
    println!("{what} {}", names.join(","));
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: dir-list PATH");
    let c = CString::new(path).expect("a path without NUL");
    // SAFETY: `c` is NUL-terminated.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if fd < 0 {
        fail();
    }
    line("getdents64", dents(fd));
    // SAFETY: lseek on our fd.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
        fail();
    }
    line("again", dents(fd));

    // fdopendir reads on from the fd's offset: from the start again.
    // SAFETY: lseek on our fd.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
        fail();
    }
    // SAFETY: `fd` is ours; the DIR owns it from here on.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        fail();
    }
    let next = || {
        // SAFETY: `dir` is live until closedir below.
        let e = unsafe { libc::readdir(dir) };
        // SAFETY: a non-null entry is valid until the next readdir.
        (!e.is_null()).then(|| unsafe { CStr::from_ptr((*e).d_name.as_ptr()) }.to_owned())
    };
    let mut names = Vec::new();
    let mut mark = None;
    while let Some(name) = next() {
        if names.len() == 1 {
            // SAFETY: `dir` is live.
            mark = Some(unsafe { libc::telldir(dir) });
        }
        names.push(name);
    }
    line(
        "fdopendir",
        names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect(),
    );
    if let Some(at) = mark {
        // SAFETY: `dir` is live; `at` came from telldir on it.
        unsafe { libc::seekdir(dir, at) };
        let again = next();
        let ok = again.as_ref() == names.get(2);
        println!("seekdir {}", if ok { "ok" } else { "wrong" });
    }
    // SAFETY: `dir` is live and closed once.
    unsafe { libc::closedir(dir) };
}
