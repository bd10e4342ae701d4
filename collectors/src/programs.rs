//! The BPF programs loaded in this machine's kernel (the proxy's guest),
//! as `bpftool prog list` finds them: `BPF_PROG_GET_NEXT_ID`, then an fd by
//! id and `BPF_OBJ_GET_INFO_BY_FD` for each. A monitor asks for this once
//! per round, in one request, instead of three forwarded calls per program.
//! Needs CAP_SYS_ADMIN (`BPF_PROG_GET_FD_BY_ID`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;

/// One program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its id.
    pub id: u32,
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// Its name.
    pub name: String,
    /// Its tag.
    pub tag: [u8; 8],
    /// The uid that loaded it.
    pub uid: u32,
}

/// At most this many programs are listed (a kernel holds thousands at
/// most; a bound keeps a hostile guest from making the reply unbounded).
pub const MAX_PROGRAMS: usize = 65536;

/// The errno of the last libbpf call (libbpf returns `-errno`).
fn errno_of(ret: i32) -> i32 {
    if ret < 0 {
        -ret
    } else {
        libc::EIO
    }
}

/// Every program but those whose id is in `except`. `Err(errno)` if the
/// kernel refuses the listing itself; a program that goes away while it is
/// listed is left out, as bpftool does.
pub fn list(except: &[u32]) -> Result<Vec<Listed>, i32> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid u32 the call writes the next id into.
        let ret = unsafe { libbpf_sys::bpf_prog_get_next_id(id, &mut next) };
        if ret != 0 {
            let errno = errno_of(ret);
            return if errno == libc::ENOENT {
                Ok(out)
            } else {
                Err(errno)
            };
        }
        id = next;
        if except.contains(&id) {
            continue;
        }
        if out.len() >= MAX_PROGRAMS {
            return Err(libc::E2BIG);
        }
        match describe(id) {
            Ok(p) => out.push(p),
            // Unloaded between the two calls.
            Err(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
}

fn describe(id: u32) -> Result<Listed, i32> {
    // SAFETY: a plain syscall wrapper; it returns a new fd or -errno.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(errno_of(fd));
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let info = info(fd.as_raw_fd())?;
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(Listed {
        id: info.id,
        prog_type: info.type_,
        name: String::from_utf8_lossy(&name).into_owned(),
        tag: info.tag,
        uid: info.created_by_uid,
    })
}

fn info(fd: i32) -> Result<libbpf_sys::bpf_prog_info, i32> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `info` is a zeroed bpf_prog_info of `len` bytes (no pointers
    // set, so the kernel writes nothing else); `len` is valid for writes.
    let ret = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            fd,
            (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(errno_of(ret));
    }
    Ok(info)
}
