//! The few host calls every other module needs: an fd's identity, a memfd
//! holding given bytes, and the library's own threads.
//!
//! It sits at the bottom of the crate (only [`crate::error`] below it), so
//! that the fd table, the guest files and the ring mirrors can all use
//! these without importing each other.
//!
//! Every host call here and elsewhere in the crate goes to libc by its
//! plain name. In the preload those names are the preload's own hooks,
//! which hand a call made from inside the library straight to libc (its
//! re-entrancy guard); a front-end that interposes nothing calls libc
//! directly. Threads the library starts are marked by the front-end's
//! [`set_thread_start`] hook before they run, for the same reason.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// `(st_dev, st_ino)` of an open host fd.
pub fn inode_of(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid buffer; fstat on any integer is harmless.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// A memfd holding `content`, positioned at 0; sealed against any change
/// if `seal`.
pub fn memfd_with(name: &str, content: &[u8], seal: bool) -> Result<OwnedFd> {
    let cname = CString::new(format!("telebpf:{name}"))
        .map_err(|_| Error::kernel(libc::EINVAL, "a file name with a NUL byte"))?;
    let flags = libc::MFD_CLOEXEC | if seal { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: `cname` is NUL-terminated.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if raw < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut off = 0;
    while off < content.len() {
        // SAFETY: the slice is valid for reads of its length.
        let n = unsafe { libc::write(raw, content[off..].as_ptr().cast(), content.len() - off) };
        if n <= 0 {
            return Err(Error::os(
                "writing a memfd",
                std::io::Error::from_raw_os_error(libc::EIO),
                libc::EIO,
            ));
        }
        off += n as usize;
    }
    // SAFETY: lseek/fcntl on our own fd.
    unsafe {
        libc::lseek(raw, 0, libc::SEEK_SET);
        if seal {
            libc::fcntl(
                raw,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL,
            );
        }
    }
    Ok(fd)
}

/// What a thread of the library runs first (the front-end's mark).
static THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Sets what every thread the library starts runs first. The preload marks
/// such a thread as inside the library for its whole life, so that every
/// interposed call it makes goes straight to libc. Set once, before the
/// first forwarded call; later calls are ignored.
pub fn set_thread_start(hook: fn()) {
    let _ = THREAD_START.set(hook);
}

/// Starts a thread of the library's own (a mirror, the map sync, the
/// keep-alive), marked by the front-end's [`set_thread_start`] hook.
pub fn spawn_library_thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(start) = THREAD_START.get() {
                start();
            }
            body();
        })
        .map(drop)
        .map_err(|e| Error::os("starting a library thread", e, libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn memfd_holds_content() {
        let fd = memfd_with("t", b"abc", true).unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: reading into a local buffer from our own fd.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        assert_eq!(&buf[..n as usize], b"abc");
        assert!(inode_of(fd.as_raw_fd()).is_some());
        assert_eq!(inode_of(-1), None);
    }
}
