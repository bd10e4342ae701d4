//! Sockets and interfaces answered for the guest while a target is set: a
//! `NETLINK_ROUTE` socket is relayed to one the proxy holds in the guest,
//! and interface names and indexes are the guest's
//! (`telebpf_host::netlink`). Every other socket, and every call on one,
//! is the host's: the decision is the fd table's bitmap (`maybe_ours`) or,
//! for `socket`, its three arguments, before anything else.

use libc::{c_char, c_int, c_uint, c_void, size_t, socklen_t, ssize_t};
use telebpf_host::netlink::{self, SIOCGIFINDEX, SIOCGIFNAME};
use telebpf_host::{fdtable, state};

use super::action;
use crate::guard::{self, Action};
use crate::real;

/// Runs `relay` with the guest fd when `fd` is a relayed socket, else
/// `pass`: the shape of every call on a socket.
fn on_relayed<R: Copy>(
    fd: c_int,
    err: R,
    pass: impl Fn() -> R,
    relay: impl FnOnce(i32) -> Action<R>,
) -> R {
    if !fdtable::maybe_ours(fd) {
        return pass();
    }
    guard::enter(
        &pass,
        || match netlink::relayed(fd) {
            Some(guest) => relay(guest),
            None => Action::Pass,
        },
        err,
    )
}

/// Interposed `socket`: `AF_NETLINK`/`NETLINK_ROUTE` is relayed to the
/// guest.
///
/// # Safety
///
/// Same contract as libc's `socket`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::socket(domain, ty, protocol) };
    if domain != libc::AF_NETLINK
        || !netlink::is_route_socket(domain, ty, protocol)
        || !state::configured()
    {
        return pass();
    }
    guard::enter(pass, || action(netlink::open(), -1), -1)
}

/// Interposed `bind`.
///
/// # Safety
///
/// Same contract as libc's `bind`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const libc::sockaddr, len: socklen_t) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::bind(fd, addr, len) },
        |guest| action(netlink::bind(guest, addr as u64, len).map(|()| 0), -1),
    )
}

/// Interposed `getsockname`.
///
/// # Safety
///
/// Same contract as libc's `getsockname`.
#[no_mangle]
pub unsafe extern "C" fn getsockname(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::getsockname(fd, addr, len) },
        |guest| {
            action(
                netlink::name(guest, addr as u64, len as u64).map(|()| 0),
                -1,
            )
        },
    )
}

/// Interposed `setsockopt`.
///
/// # Safety
///
/// Same contract as libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::setsockopt(fd, level, name, value, len) },
        |guest| {
            action(
                netlink::set_option(guest, level, name, value as u64, len).map(|()| 0),
                -1,
            )
        },
    )
}

/// Interposed `send`.
///
/// # Safety
///
/// Same contract as libc's `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::send(fd, buf, len, flags) },
        |guest| {
            action(
                netlink::send(guest, buf as u64, len, None).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `sendto`.
///
/// # Safety
///
/// Same contract as libc's `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const libc::sockaddr,
    alen: socklen_t,
) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::sendto(fd, buf, len, flags, addr, alen) },
        |guest| {
            let dest = (!addr.is_null()).then_some((addr as u64, alen));
            action(
                netlink::send(guest, buf as u64, len, dest).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `sendmsg`.
///
/// # Safety
///
/// Same contract as libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::sendmsg(fd, msg, flags) },
        |guest| {
            action(
                netlink::sendmsg(guest, msg as u64).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `recv`.
///
/// # Safety
///
/// Same contract as libc's `recv`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::recv(fd, buf, len, flags) },
        |guest| {
            action(
                netlink::recv(guest, buf as u64, len, flags, None).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `recvfrom`.
///
/// # Safety
///
/// Same contract as libc's `recvfrom`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut libc::sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) },
        |guest| {
            let from = (!addr.is_null() && !alen.is_null()).then_some((addr as u64, alen as u64));
            action(
                netlink::recv(guest, buf as u64, len, flags, from).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `recvmsg`.
///
/// # Safety
///
/// Same contract as libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    // SAFETY: forwarded under the caller's contract.
    on_relayed(
        fd,
        -1,
        || unsafe { real::recvmsg(fd, msg, flags) },
        |guest| {
            action(
                netlink::recvmsg(guest, msg as u64, flags).map(|n| n as ssize_t),
                -1,
            )
        },
    )
}

/// Interposed `if_nametoindex`: the guest's interface (bpftool's `dev lo`).
///
/// # Safety
///
/// Same contract as libc's `if_nametoindex`.
#[no_mangle]
pub unsafe extern "C" fn if_nametoindex(name: *const c_char) -> c_uint {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::if_nametoindex(name) };
    if !state::configured() || name.is_null() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let r = state::get()
                .memory()
                .read_cstr(name as u64, libc::IFNAMSIZ + 1)
                .map_err(telebpf_host::error::Error::Memory)
                .and_then(|s| {
                    let s = s.strip_suffix(&[0]).unwrap_or(&s);
                    netlink::index_of(s)
                });
            action(r, 0)
        },
        0,
    )
}

/// Interposed `if_indextoname`: the guest's interface.
///
/// # Safety
///
/// Same contract as libc's `if_indextoname` (`buf` holds `IF_NAMESIZE`
/// bytes).
#[no_mangle]
pub unsafe extern "C" fn if_indextoname(index: c_uint, buf: *mut c_char) -> *mut c_char {
    // SAFETY: forwarded under the caller's contract.
    let pass = || unsafe { real::if_indextoname(index, buf) };
    if !state::configured() || buf.is_null() {
        return pass();
    }
    guard::enter(
        pass,
        || {
            let r = netlink::name_of(index).and_then(|n| {
                let mut bytes = n.into_bytes();
                bytes.push(0);
                telebpf_host::memory::write(buf as u64, &bytes)
                    .map(|()| buf)
                    .map_err(telebpf_host::error::Error::Memory)
            });
            // glibc answers ENXIO for an index no interface has.
            match r {
                Ok(p) => Action::Done(p),
                Err(telebpf_host::error::Error::Guest(_)) => {
                    Action::Fail(libc::ENXIO, std::ptr::null_mut())
                }
                Err(e) => Action::Fail(e.errno(), std::ptr::null_mut()),
            }
        },
        std::ptr::null_mut(),
    )
}

/// Whether an `ioctl` request is an interface lookup answered for the
/// guest (on any socket).
pub(super) fn is_interface_ioctl(request: libc::c_ulong) -> bool {
    (request == SIOCGIFINDEX || request == SIOCGIFNAME) && state::configured()
}

/// `SIOCGIFINDEX`/`SIOCGIFNAME` on `fd`: answered from the guest when `fd`
/// is a socket (a relayed one or a host one), else the kernel's `ENOTTY`
/// from the real call.
pub(super) fn interface_ioctl(
    fd: c_int,
    request: libc::c_ulong,
    arg: libc::c_ulong,
    pass: impl Fn() -> c_int,
) -> c_int {
    guard::enter(
        &pass,
        || {
            if netlink::relayed(fd).is_none() && !is_socket(fd) {
                return Action::Pass;
            }
            action(netlink::ifreq_ioctl(request, arg), -1)
        },
        -1,
    )
}

/// Whether `fd` is an open socket of the host.
fn is_socket(fd: c_int) -> bool {
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live `stat`; a bad fd only makes fstat fail.
    let r = unsafe { libc::fstat(fd, &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}
