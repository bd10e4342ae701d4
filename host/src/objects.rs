//! What the program does to an fd that stands for a guest object, besides
//! `bpf()` itself: duplicate it, close it, read it (a BPF iterator).
//!
//! The front-end calls these after (or instead of) the host's own call on
//! the fd, so the fd table follows the program's fd numbers: several
//! numbers share one object after `dup`, and the guest object is closed
//! when the last of them goes.

use std::sync::Arc;

use telebpf_abi::ObjectKind;
use telebpf_protocol::message::{Reply, Request};

use crate::error::{Error, Result};
use crate::fdtable::GuestObject;
use crate::state;

/// Records that `new` now refers to whatever `old` refers to, and drops
/// what `new` referred to before (`dup*`, `fcntl(F_DUPFD*)`, after the
/// host call succeeded).
pub fn alias(old: i32, new: i32) {
    let st = state::get();
    let (obj, last) = {
        let mut table = st.table();
        let obj: Option<Arc<GuestObject>> = table.get(old).cloned();
        let last = table.remove(new);
        if let Some(o) = &obj {
            table.insert(new, o.clone());
        }
        (obj, last)
    };
    drop(obj);
    if let Some(guest_fd) = last {
        st.notify(&Request::Close { fd: guest_fd });
    }
}

/// Forgets host fd `fd` (`close`, `close_range`), closing its guest object
/// if it was the last reference.
pub fn forget(fd: i32) {
    let st = state::get();
    let last = st.table().remove(fd);
    if let Some(guest_fd) = last {
        st.notify(&Request::Close { fd: guest_fd });
    }
}

/// `read(fd, len)` of an fd standing for `obj`: a BPF iterator reads the
/// guest iterator; any other object fails as the kernel's `read` of it
/// would (`EINVAL`). Never more than `len` bytes, whatever the reply says.
pub fn read(obj: &GuestObject, len: usize) -> Result<Vec<u8>> {
    if obj.kind != ObjectKind::Iter {
        return Err(Error::kernel(
            libc::EINVAL,
            "read of a bpf object that is no iterator",
        ));
    }
    let req = Request::Read {
        fd: obj.guest_fd,
        len: len.min(u32::MAX as usize) as u32,
    };
    let bytes = state::get().ask(&req, "an iterator read", |r| match r {
        Reply::Read(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })?;
    if bytes.len() > len {
        return Err(Error::Protocol(
            "an iterator read (more bytes than asked for)",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::test_object;

    #[test]
    fn only_an_iterator_is_read() {
        // Answered before any request: no proxy needed.
        let e = read(&test_object(ObjectKind::Link, "anon_inode:bpf_link"), 16).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Kernel {
                    errno: libc::EINVAL,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
