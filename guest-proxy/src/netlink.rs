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
//! * every message in it is walked with its length checked against what
//!   is left, and its type must be one of the queries (links, addresses,
//!   routes, qdiscs, classes, filters, chains), or one of the changes a
//!   BPF attach makes: `RTM_SETLINK`/`RTM_NEWLINK` of an existing link
//!   (XDP), `RTM_NEWQDISC`/`RTM_DELQDISC` (the `clsact` hook),
//!   `RTM_NEWTFILTER` of kind `bpf` and `RTM_DELTFILTER` (tc programs).
//!   Anything else (making or deleting links, addresses, routes, tc
//!   actions) answers `EOPNOTSUPP`: the relay exists to attach programs,
//!   and every other change is one more way to name an fd the proxy would
//!   have to check;
//! * an fd the kernel takes from an attribute — `IFLA_XDP_FD`,
//!   `IFLA_XDP_EXPECTED_FD`, `TCA_BPF_FD` — must be a program of this
//!   session (negative values, "none", go to the kernel as they are), else
//!   `EBADF` as the kernel answers for an fd that is not open; attributes
//!   that name a namespace by fd or pid (`IFLA_NET_NS_FD`,
//!   `IFLA_NET_NS_PID`, `IFLA_TARGET_NETNSID`), link creation
//!   (`IFLA_LINKINFO`) and a `bpf` filter's actions (`TCA_BPF_ACT`,
//!   `TCA_BPF_POLICE`) answer `EOPNOTSUPP`;
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

use telebpf_abi::ObjectKind;
use telebpf_protocol::message::{
    InterfaceOp, InterfaceReply, NetlinkOp, NetlinkReply, NewObject, NETLINK_LINK,
    NETLINK_RECV_MAX, NETLINK_SEND_MAX,
};

/// Longest a receive waits for a datagram (see the module doc).
pub const RECV_WAIT: Duration = Duration::from_secs(1);

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
/// `NLA_TYPE_MASK`: an attribute's type without `NLA_F_NESTED` and
/// `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Message types below this are netlink's own (`NLMSG_NOOP`, …), which
/// rtnetlink skips.
const NLMSG_MIN_TYPE: u16 = 0x10;

// rtnetlink message types (`linux/rtnetlink.h`).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_GETTCLASS: u16 = 42;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const RTM_GETCHAIN: u16 = 102;

// `IFLA_*` attributes of a link message.
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_XDP: u16 = 43;
const IFLA_TARGET_NETNSID: u16 = 46;
// `IFLA_XDP_*` attributes nested in `IFLA_XDP`.
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

// `TCA_*` attributes of a tc message, and `TCA_BPF_*` nested in a `bpf`
// filter's `TCA_OPTIONS`.
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_ACT: u16 = 1;
const TCA_BPF_POLICE: u16 = 2;
const TCA_BPF_FD: u16 = 6;

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
    /// Whether `fd` is a BPF program the session holds.
    fn program(&self, fd: i32) -> bool;
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

fn bind(fd: i32, pid: u32, groups: u32) -> Result<NetlinkReply, i32> {
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
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(NetlinkReply::Name(addr.nl_pid, addr.nl_groups))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Netlink's 4-byte alignment.
fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits `data` into `(type, payload)` records of `header` bytes each
/// (16 for messages, 4 for attributes), the length in the first two
/// (attributes) or four (messages) bytes, each checked against what is
/// left; `EINVAL` for a length that does not fit, as the kernel answers.
fn records(data: &[u8], header: usize) -> Result<Vec<(u16, &[u8])>, i32> {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= header {
        let (len, kind) = if header == NLMSG_HDRLEN {
            (u32_at(data, at) as usize, u16_at(data, at + 4))
        } else {
            (u16_at(data, at) as usize, u16_at(data, at + 2))
        };
        if len < header || len > data.len() - at {
            return Err(libc::EINVAL);
        }
        out.push((kind, &data[at..at + len]));
        at = at.saturating_add(align(len)).min(data.len());
    }
    Ok(out)
}

/// The attributes after a message's fixed header of `fixed` bytes.
fn attributes(message: &[u8], fixed: usize) -> Result<Vec<(u16, &[u8])>, i32> {
    let start = NLMSG_HDRLEN + fixed;
    if message.len() < start {
        return Err(libc::EINVAL);
    }
    Ok(records(&message[start..], 4)?
        .into_iter()
        .map(|(t, a)| (t & NLA_TYPE_MASK, &a[4..]))
        .collect())
}

/// Checks a fd attribute's value: a negative one ("none") goes to the
/// kernel, a non-negative one must be a program of the session.
fn check_fd(value: &[u8], program: &dyn Fn(i32) -> bool) -> Result<(), i32> {
    if value.len() < 4 {
        return Err(libc::EINVAL);
    }
    let fd = u32_at(value, 0) as i32;
    if fd >= 0 && !program(fd) {
        return Err(libc::EBADF);
    }
    Ok(())
}

/// Checks every message of a datagram the client wants sent to the guest
/// kernel (see the module doc): `Ok` when it may go, else the errno the
/// client's `send` fails with.
pub fn check_datagram(data: &[u8], program: &dyn Fn(i32) -> bool) -> Result<(), i32> {
    if data.len() > NETLINK_SEND_MAX {
        return Err(libc::EMSGSIZE);
    }
    for (kind, message) in records(data, NLMSG_HDRLEN)? {
        match kind {
            k if k < NLMSG_MIN_TYPE => {}
            RTM_GETLINK | RTM_GETADDR | RTM_GETROUTE | RTM_GETQDISC | RTM_GETTCLASS
            | RTM_GETTFILTER | RTM_GETCHAIN => {}
            RTM_NEWQDISC | RTM_DELQDISC | RTM_DELTFILTER => {}
            RTM_SETLINK | RTM_NEWLINK => check_link(message, program)?,
            RTM_NEWTFILTER => check_filter(message, program)?,
            _ => return Err(libc::EOPNOTSUPP),
        }
    }
    Ok(())
}

/// A link change: XDP fds checked, namespaces and link creation refused.
fn check_link(message: &[u8], program: &dyn Fn(i32) -> bool) -> Result<(), i32> {
    for (kind, value) in attributes(message, IFINFOMSG_LEN)? {
        match kind {
            IFLA_LINKINFO | IFLA_NET_NS_PID | IFLA_NET_NS_FD | IFLA_TARGET_NETNSID => {
                return Err(libc::EOPNOTSUPP)
            }
            IFLA_XDP => {
                for (inner, v) in records(value, 4)? {
                    if matches!(inner & NLA_TYPE_MASK, IFLA_XDP_FD | IFLA_XDP_EXPECTED_FD) {
                        check_fd(&v[4..], program)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A new tc filter: only `bpf` (cls_bpf), its program checked, without
/// actions.
fn check_filter(message: &[u8], program: &dyn Fn(i32) -> bool) -> Result<(), i32> {
    let attrs = attributes(message, TCMSG_LEN)?;
    let kind = attrs.iter().find(|(t, _)| *t == TCA_KIND).map(|(_, v)| *v);
    if kind.map(|k| k.strip_suffix(&[0]).unwrap_or(k)) != Some(b"bpf") {
        return Err(libc::EOPNOTSUPP);
    }
    for (_, options) in attrs.iter().filter(|(t, _)| *t == TCA_OPTIONS) {
        for (inner, v) in records(options, 4)? {
            match inner & NLA_TYPE_MASK {
                TCA_BPF_ACT | TCA_BPF_POLICE => return Err(libc::EOPNOTSUPP),
                TCA_BPF_FD => check_fd(&v[4..], program)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// For the audit log: the change a datagram asks for (its first message
/// that is not a query), `None` for queries.
pub fn change(data: &[u8]) -> Option<String> {
    let records = records(data, NLMSG_HDRLEN).ok()?;
    let name = records.iter().find_map(|(kind, _)| match *kind {
        RTM_NEWLINK => Some("RTM_NEWLINK"),
        RTM_SETLINK => Some("RTM_SETLINK"),
        RTM_NEWQDISC => Some("RTM_NEWQDISC"),
        RTM_DELQDISC => Some("RTM_DELQDISC"),
        RTM_NEWTFILTER => Some("RTM_NEWTFILTER"),
        RTM_DELTFILTER => Some("RTM_DELTFILTER"),
        _ => None,
    })?;
    Some(name.to_string())
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
    use super::*;

    fn message(kind: u16, fixed: usize, attrs: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + fixed + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&vec![0; fixed]);
        m.extend_from_slice(attrs);
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align(a.len()), 0);
        a
    }

    fn xdp(fd: i32) -> Vec<u8> {
        message(
            RTM_SETLINK,
            IFINFOMSG_LEN,
            &attr(IFLA_XDP | 0x8000, &attr(IFLA_XDP_FD, &fd.to_ne_bytes())),
        )
    }

    fn filter(kind: &[u8], options: &[u8]) -> Vec<u8> {
        let mut attrs = attr(TCA_KIND, kind);
        attrs.extend(attr(TCA_OPTIONS | 0x8000, options));
        message(RTM_NEWTFILTER, TCMSG_LEN, &attrs)
    }

    fn only_7(fd: i32) -> bool {
        fd == 7
    }

    #[test]
    fn queries_pass_and_unknown_changes_do_not() {
        let dump = message(RTM_GETLINK, IFINFOMSG_LEN, &[]);
        assert_eq!(check_datagram(&dump, &only_7), Ok(()));
        let new_addr = message(20, 8, &[]);
        assert_eq!(check_datagram(&new_addr, &only_7), Err(libc::EOPNOTSUPP));
        // Two messages in one datagram: the second is checked too.
        let mut both = dump.clone();
        both.extend(new_addr);
        assert_eq!(check_datagram(&both, &only_7), Err(libc::EOPNOTSUPP));
    }

    #[test]
    fn an_xdp_attach_names_a_program_of_the_session() {
        assert_eq!(check_datagram(&xdp(7), &only_7), Ok(()));
        assert_eq!(check_datagram(&xdp(-1), &only_7), Ok(()), "detach");
        assert_eq!(check_datagram(&xdp(3), &only_7), Err(libc::EBADF));
    }

    #[test]
    fn namespaces_and_new_links_are_refused() {
        for kind in [IFLA_NET_NS_FD, IFLA_NET_NS_PID, IFLA_LINKINFO] {
            let m = message(RTM_NEWLINK, IFINFOMSG_LEN, &attr(kind, &[0; 4]));
            assert_eq!(check_datagram(&m, &only_7), Err(libc::EOPNOTSUPP));
        }
    }

    #[test]
    fn tc_filters_are_bpf_without_actions() {
        let ok = filter(b"bpf\0", &attr(TCA_BPF_FD, &7u32.to_ne_bytes()));
        assert_eq!(check_datagram(&ok, &only_7), Ok(()));
        let other = filter(b"bpf\0", &attr(TCA_BPF_FD, &4u32.to_ne_bytes()));
        assert_eq!(check_datagram(&other, &only_7), Err(libc::EBADF));
        let act = filter(b"bpf\0", &attr(TCA_BPF_ACT, &[0; 4]));
        assert_eq!(check_datagram(&act, &only_7), Err(libc::EOPNOTSUPP));
        let u32f = filter(b"u32\0", &[]);
        assert_eq!(check_datagram(&u32f, &only_7), Err(libc::EOPNOTSUPP));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_read() {
        let mut m = xdp(7);
        m[0] = 200; // longer than the datagram
        assert_eq!(check_datagram(&m, &only_7), Err(libc::EINVAL));
        let mut m = xdp(7);
        m[NLMSG_HDRLEN + IFINFOMSG_LEN] = 60; // attribute past the message
        assert_eq!(check_datagram(&m, &only_7), Err(libc::EINVAL));
        let short = message(RTM_SETLINK, 4, &[]);
        assert_eq!(check_datagram(&short, &only_7), Err(libc::EINVAL));
        let big = vec![0u8; NETLINK_SEND_MAX + 1];
        assert_eq!(check_datagram(&big, &only_7), Err(libc::EMSGSIZE));
        assert_eq!(check_datagram(&[1, 2, 3], &only_7), Ok(()), "kernel's to judge");
    }

    #[test]
    fn changes_are_named_for_the_audit_log() {
        assert_eq!(change(&xdp(7)).as_deref(), Some("RTM_SETLINK"));
        assert_eq!(change(&message(RTM_GETLINK, IFINFOMSG_LEN, &[])), None);
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
