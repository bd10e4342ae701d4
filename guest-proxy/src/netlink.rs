//! The guest's side of a relayed `NETLINK_ROUTE` socket, and guest
//! interface names and indexes.
//!
//! bpftool's `net list`/`net attach`/`net detach`, libbpf's
//! `bpf_xdp_attach`/`bpf_xdp_query` and its tc hook API speak rtnetlink: a
//! request datagram to the kernel, then answers read with `recv` until an
//! ack, an error or the end of a dump. For those to act on the guest, the
//! host program's `NETLINK_ROUTE` socket stands for one this module opens
//! in the guest for the session ([`open`]); it is a guest object of the
//! session like a map (counted in its object limit, closed by `Close` or
//! with the session) and the host forwards every `bind`, `getsockname`,
//! `setsockopt`, `send` and `recv` as one [`NetlinkOp`] ([`execute`]).
//! Datagrams pass unchanged, so sequence numbers, `NLM_F_ACK`, extended
//! acks and multipart dumps reach the program as the guest kernel wrote
//! them.
//!
//! # What the proxy checks
//!
//! The proxy runs as root with every session's objects open, so a datagram
//! is never trusted ([`check_datagram`]):
//!
//! * the datagram's messages and attributes are walked with every length
//!   checked, and only the message types a BPF attach needs pass
//!   (`telebpf_abi::netlink::fd_offsets`: queries, XDP on an existing link,
//!   the `clsact` qdisc, `bpf` tc filters); anything else answers
//!   `EOPNOTSUPP`;
//! * every fd the kernel takes from an attribute (`IFLA_XDP_FD`,
//!   `IFLA_XDP_EXPECTED_FD`, `TCA_BPF_FD`) must be a program of this
//!   session (negative values, "none", go to the kernel as they are), else
//!   `EBADF` (not held) or `EINVAL` (held, no program), as the kernel
//!   answers;
//! * only datagrams to the guest kernel travel (the request carries no
//!   address);
//! * a datagram is at most [`NETLINK_SEND_MAX`] bytes (`EMSGSIZE` beyond,
//!   as the kernel says above its send buffer), a receive reads at most
//!   [`NETLINK_RECV_MAX`] bytes into a buffer charged to the session's
//!   memory, and `MSG_TRUNC` tells the real length as the kernel does;
//! * a receive waits at most [`RECV_WAIT`] (`SO_RCVTIMEO`, then `EAGAIN`):
//!   the session answers requests one at a time, so a receive that waits
//!   for nothing (no request outstanding) would hold the session — and the
//!   client's every later request — forever. rtnetlink answers a request
//!   inside the `send` that carried it, and builds each dump part inside
//!   the `recv` that asks for it, so an answer that is coming is always
//!   already there.
//!
//! Which keys may relay at all is the policy's `netlink` switch
//! ([`crate::policy`]): a key with it may change the guest's interfaces
//! and their programs, so only the full profile has it.
//!
//! Interface lookups ([`interface`]) answer `if_nametoindex`,
//! `if_indextoname` and the `SIOCGIFINDEX`/`SIOCGIFNAME` ioctls from the
//! proxy's network namespace, for every key: a name and its number are
//! what any unprivileged guest user reads in `/sys/class/net`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use telebpf_abi::{netlink, ObjectKind};
use telebpf_protocol::message::{
    InterfaceOp, InterfaceReply, NetlinkOp, NetlinkReply, NewObject, NETLINK_LINK,
    NETLINK_RECV_MAX, NETLINK_SEND_MAX,
};

/// Longest a receive waits for a datagram (see the module doc).
pub const RECV_WAIT: Duration = Duration::from_secs(1);

/// The `SOL_NETLINK` options a request-reply client sets.
const OPTIONS: [i32; 3] = [
    libc::NETLINK_CAP_ACK,
    libc::NETLINK_EXT_ACK,
    libc::NETLINK_GET_STRICT_CHK,
];

/// What the session knows of an fd a request names.
pub trait NetlinkFds {
    /// Whether `fd` is a relayed netlink socket of the session: `None`
    /// when the session does not hold it at all.
    fn netlink(&self, fd: i32) -> Option<bool>;
    /// Whether `fd` is a BPF program the session holds: `EBADF` when it
    /// holds no such fd, `EINVAL` when it is something else (the kernel's
    /// answers for an fd that is not open, and for one that is no
    /// program).
    fn program(&self, fd: i32) -> Result<(), i32>;
    /// Charges `bytes` of the proxy's memory to the session for one
    /// request (`ENOMEM` over its budget).
    fn reserve(&self, bytes: usize) -> Result<(), i32>;
}

/// What a relayed socket is, for the session's table.
pub fn describe() -> NewObject {
    NewObject {
        kind: ObjectKind::Other,
        link: NETLINK_LINK.to_string(),
        link_type: None,
    }
}

/// Opens the guest side of a relayed socket, its receives bounded by
/// [`RECV_WAIT`]. The caller adopts the fd into the session.
pub fn open() -> Result<i32, i32> {
    // SAFETY: plain syscall with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(errno());
    }
    // SAFETY: `raw` was just returned by socket() and is owned by nobody
    // else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let wait = libc::timeval {
        tv_sec: RECV_WAIT.as_secs() as libc::time_t,
        tv_usec: RECV_WAIT.subsec_micros() as libc::suseconds_t,
    };
    set_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &wait)?;
    Ok(fd.into_raw_fd())
}

/// `setsockopt(fd, level, name, value)`.
fn set_option<T>(fd: i32, level: i32, name: i32, value: &T) -> Result<(), i32> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs one operation on a relayed socket of the session (`Open` is the
/// session's business: it adopts the new fd).
pub fn execute(op: &NetlinkOp, fds: &dyn NetlinkFds) -> Result<NetlinkReply, i32> {
    let fd = match op {
        NetlinkOp::Open => return Err(libc::EINVAL),
        NetlinkOp::Bind { fd, .. }
        | NetlinkOp::Name { fd }
        | NetlinkOp::SetOption { fd, .. }
        | NetlinkOp::Send { fd, .. }
        | NetlinkOp::Recv { fd, .. } => *fd,
    };
    match fds.netlink(fd) {
        None => return Err(libc::EBADF),
        Some(false) => return Err(libc::ENOTSOCK),
        Some(true) => {}
    }
    match op {
        NetlinkOp::Open => Err(libc::EINVAL),
        NetlinkOp::Bind { pid, groups, .. } => bind(fd, *pid, *groups),
        NetlinkOp::Name { .. } => name(fd),
        NetlinkOp::SetOption { option, value, .. } => {
            if !OPTIONS.contains(option) {
                return Err(libc::ENOPROTOOPT);
            }
            set_option(fd, libc::SOL_NETLINK, *option, value).map(|()| NetlinkReply::Done)
        }
        NetlinkOp::Send { data, .. } => {
            check_datagram(data, &|f| fds.program(f))?;
            // SAFETY: `data` is a live buffer of the length passed.
            let r = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if r < 0 {
                return Err(errno());
            }
            Ok(NetlinkReply::Sent(r as u32))
        }
        NetlinkOp::Recv {
            len,
            peek,
            dont_wait,
            ..
        } => {
            let want = (*len as usize).min(NETLINK_RECV_MAX);
            fds.reserve(want)?;
            let mut buf = vec![0u8; want];
            let mut flags = libc::MSG_TRUNC;
            if *peek {
                flags |= libc::MSG_PEEK;
            }
            if *dont_wait {
                flags |= libc::MSG_DONTWAIT;
            }
            // SAFETY: `buf` is a live buffer of the length passed.
            let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), want, flags) };
            if r < 0 {
                return Err(errno());
            }
            let real = r as usize;
            buf.truncate(real.min(want));
            Ok(NetlinkReply::Received {
                data: buf,
                len: real as u32,
            })
        }
    }
}

/// Binds the relayed socket, only as libbpf and bpftool do: port id 0 (the
/// kernel picks one) and no multicast groups. The relay is request-reply:
/// a chosen port id could squat one a guest process is about to pick, and
/// group notifications (every guest link, address and route change) would
/// pile up in a socket only the session's own requests read.
fn bind(fd: i32, pid: u32, groups: u32) -> Result<NetlinkReply, i32> {
    if pid != 0 || groups != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    // SAFETY: all-zero bytes are a valid `sockaddr_nl`.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = pid;
    addr.nl_groups = groups;
    // SAFETY: `addr` is a live `sockaddr_nl` of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(NetlinkReply::Done)
}

fn name(fd: i32) -> Result<NetlinkReply, i32> {
    // SAFETY: all-zero bytes are a valid `sockaddr_nl`.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live and `len` is `addr`'s size.
    let r =
        unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    if r < 0 {
        return Err(errno());
    }
    Ok(NetlinkReply::Name(addr.nl_pid, addr.nl_groups))
}

/// Checks a datagram the client wants sent to the guest kernel (see the
/// module doc): `Ok` when it may go, else the errno its `send` fails with.
pub fn check_datagram(data: &[u8], program: &dyn Fn(i32) -> Result<(), i32>) -> Result<(), i32> {
    if data.len() > NETLINK_SEND_MAX {
        return Err(libc::EMSGSIZE);
    }
    for at in netlink::fd_offsets(data).map_err(|e| e.errno())? {
        let fd = i32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        if fd >= 0 {
            program(fd)?;
        }
    }
    Ok(())
}

/// Answers an interface lookup from the proxy's network namespace.
pub fn interface(op: &InterfaceOp) -> Result<InterfaceReply, i32> {
    match op {
        InterfaceOp::Index(name) => {
            // Longer names exist nowhere (`IFNAMSIZ` holds the NUL too);
            // glibc answers `ENODEV` for them without asking the kernel.
            if name.len() >= libc::IFNAMSIZ {
                return Err(libc::ENODEV);
            }
            let name = CString::new(name.as_str()).map_err(|_| libc::ENODEV)?;
            // SAFETY: `name` is a NUL-terminated string.
            match unsafe { libc::if_nametoindex(name.as_ptr()) } {
                0 => Err(errno()),
                i => Ok(InterfaceReply::Index(i)),
            }
        }
        InterfaceOp::Name(index) => {
            let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
            // SAFETY: `buf` holds IFNAMSIZ bytes, as if_indextoname needs.
            let p = unsafe { libc::if_indextoname(*index, buf.as_mut_ptr()) };
            if p.is_null() {
                return Err(errno());
            }
            // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
            Ok(InterfaceReply::Name(name.to_string_lossy().into_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use telebpf_abi::netlink::build::{attr, filter, xdp};
    use telebpf_abi::netlink::TCA_BPF_FD;

    use super::*;

    fn only_7(fd: i32) -> Result<(), i32> {
        match fd {
            7 => Ok(()),
            8 => Err(libc::EINVAL),
            _ => Err(libc::EBADF),
        }
    }

    #[test]
    fn a_bind_names_no_port_and_no_group() {
        // Checked before the socket is touched: no fd needed.
        assert_eq!(bind(-1, 4242, 0), Err(libc::EOPNOTSUPP));
        assert_eq!(bind(-1, 0, 1), Err(libc::EOPNOTSUPP));
        assert_eq!(bind(-1, 0, 0), Err(libc::EBADF));
    }

    #[test]
    fn fds_in_a_datagram_are_programs_of_the_session() {
        assert_eq!(check_datagram(&xdp(7), &only_7), Ok(()));
        assert_eq!(check_datagram(&xdp(-1), &only_7), Ok(()), "detach");
        assert_eq!(check_datagram(&xdp(3), &only_7), Err(libc::EBADF));
        assert_eq!(
            check_datagram(&xdp(8), &only_7),
            Err(libc::EINVAL),
            "no program"
        );
        let tc = filter(b"bpf\0", &attr(TCA_BPF_FD, &4u32.to_ne_bytes()));
        assert_eq!(check_datagram(&tc, &only_7), Err(libc::EBADF));
        let big = vec![0u8; NETLINK_SEND_MAX + 1];
        assert_eq!(check_datagram(&big, &only_7), Err(libc::EMSGSIZE));
        let u32f = filter(b"u32\0", &[]);
        assert_eq!(check_datagram(&u32f, &only_7), Err(libc::EOPNOTSUPP));
    }

    #[test]
    fn interface_names_longer_than_the_kernels_do_not_exist() {
        let long = InterfaceOp::Index("x".repeat(16));
        assert_eq!(interface(&long), Err(libc::ENODEV));
        assert_eq!(
            interface(&InterfaceOp::Index("lo".into())),
            Ok(InterfaceReply::Index(1))
        );
        assert_eq!(
            interface(&InterfaceOp::Name(1)),
            Ok(InterfaceReply::Name("lo".into()))
        );
    }
}
