//! `NETLINK_ROUTE` sockets relayed to the guest, and guest interface names
//! and indexes.
//!
//! bpftool's `net` commands and libbpf's XDP and tc APIs speak rtnetlink.
//! While a target is set, a `NETLINK_ROUTE` socket the program opens
//! stands for one the proxy opens in the guest ([`open`]): the program
//! gets a memfd kept in the fd table as a guest object (so `close`, `dup`
//! and the end of the session treat it as any other), and its `bind`,
//! `getsockname`, `setsockopt`, `send`/`sendto`/`sendmsg` and
//! `recv`/`recvfrom`/`recvmsg` become one request each. Datagrams travel
//! unchanged except for the program fds inside them (`IFLA_XDP_FD`,
//! `TCA_BPF_FD`), which are rewritten to the guest's numbering where
//! `telebpf_abi::netlink::fd_offsets` finds them, as the fd fields of a
//! `bpf()` attr are; the proxy checks them again.
//!
//! What stays the host's: every other netlink family (`NETLINK_GENERIC`,
//! `NETLINK_SOCK_DIAG`, …) and every socket that carries traffic. A
//! relayed socket talks to the guest kernel only (a datagram to another
//! port or a group fails with `EPERM`), and is always blocking as far as
//! the proxy bounds it: a receive with nothing to read fails with `EAGAIN`
//! after the proxy's wait (`MSG_DONTWAIT` at once), since rtnetlink
//! answers every request before its `send` returns.
//!
//! Interface lookups ([`index_of`], [`name_of`], [`ifreq_ioctl`]) answer
//! `if_nametoindex`, `if_indextoname` and `SIOCGIFINDEX`/`SIOCGIFNAME` on
//! any socket from the guest while a target is set, so the index a tool
//! puts in a netlink request names the guest's interface.

use telebpf_abi::memory::Memory;
use telebpf_abi::netlink;
use telebpf_protocol::message::{
    InterfaceOp, InterfaceReply, NetlinkOp, NetlinkReply, Reply, Request, NETLINK_LINK,
    NETLINK_RECV_MAX, NETLINK_SEND_MAX,
};

use crate::error::{Error, Result};
use crate::{bpf, state};

/// `sizeof(struct sockaddr_nl)`.
const SOCKADDR_NL: usize = 12;
/// `sizeof(struct msghdr)` on x86-64.
const MSGHDR: usize = 56;
/// `sizeof(struct iovec)` on x86-64.
const IOVEC: usize = 16;
/// `UIO_MAXIOV`: the kernel refuses more iovecs with `EMSGSIZE`.
const MAX_IOV: usize = 1024;
/// `sizeof(struct ifreq)`: the name, then the union.
const IFREQ: usize = 40;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;
/// `SIOCGIFNAME`.
pub const SIOCGIFNAME: u64 = 0x8910;
/// `SIOCGIFINDEX`.
pub const SIOCGIFINDEX: u64 = 0x8933;
/// The `recv` flags a relayed socket honours; others (`MSG_OOB`,
/// `MSG_ERRQUEUE`) fail as on a netlink socket.
const RECV_FLAGS: i32 = libc::MSG_PEEK
    | libc::MSG_TRUNC
    | libc::MSG_DONTWAIT
    | libc::MSG_WAITALL
    | libc::MSG_CMSG_CLOEXEC;

/// Whether `socket(domain, ty, protocol)` makes a socket the relay serves:
/// rtnetlink, raw or datagram as the kernel accepts both.
pub fn is_route_socket(domain: i32, ty: i32, protocol: i32) -> bool {
    let base = ty & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK);
    domain == libc::AF_NETLINK
        && protocol == libc::NETLINK_ROUTE
        && (base == libc::SOCK_RAW || base == libc::SOCK_DGRAM)
}

/// The guest fd of `fd` when it is a relayed socket.
pub fn relayed(fd: i32) -> Option<i32> {
    state::get()
        .table()
        .get(fd)
        .filter(|o| o.link == NETLINK_LINK)
        .map(|o| o.guest_fd)
}

/// Sends one netlink operation and takes its result.
fn ask(op: NetlinkOp) -> Result<NetlinkReply> {
    state::get().ask(&Request::Netlink(op), "a netlink operation", |r| match r {
        Reply::Netlink(answer) => Ok(answer),
        other => Err(Box::new(other)),
    })
}

fn unexpected(reply: NetlinkReply) -> Error {
    state::get().warn(&format!("unexpected netlink reply: {reply:?}"));
    Error::Protocol("a netlink operation")
}

/// Opens a relayed socket: the program's fd for it.
pub fn open() -> Result<i32> {
    match ask(NetlinkOp::Open)? {
        NetlinkReply::Opened(guest, obj) => bpf::adopt(guest, obj),
        other => Err(unexpected(other)),
    }
}

fn done(reply: NetlinkReply) -> Result<()> {
    match reply {
        NetlinkReply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Reads a `sockaddr_nl` the program passed: `(nl_pid, nl_groups)`.
fn read_address(memory: &dyn Memory, addr: u64, len: u32) -> Result<(u32, u32)> {
    if (len as usize) < SOCKADDR_NL {
        return Err(Error::kernel(libc::EINVAL, "a sockaddr_nl too short"));
    }
    let a = memory.read(addr, SOCKADDR_NL).map_err(Error::Memory)?;
    if u16::from_ne_bytes([a[0], a[1]]) != libc::AF_NETLINK as u16 {
        return Err(Error::kernel(libc::EINVAL, "an address not of AF_NETLINK"));
    }
    Ok((u32_at(&a, 4), u32_at(&a, 8)))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(v)
}

/// Writes a `sockaddr_nl` to `addr` whose capacity is at `len_addr`, as
/// the kernel's `move_addr_to_user` does: cut to the capacity, the full
/// length written back.
fn write_address(
    memory: &dyn Memory,
    addr: u64,
    len_addr: u64,
    pid: u32,
    groups: u32,
) -> Result<()> {
    let cap = memory.read(len_addr, 4).map_err(Error::Memory)?;
    let cap = u32_at(&cap, 0) as i32;
    if cap < 0 {
        return Err(Error::kernel(libc::EINVAL, "a negative address length"));
    }
    let mut a = [0u8; SOCKADDR_NL];
    a[..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&pid.to_ne_bytes());
    a[8..].copy_from_slice(&groups.to_ne_bytes());
    let n = (cap as usize).min(SOCKADDR_NL);
    if n > 0 {
        memory.write(addr, &a[..n]).map_err(Error::Memory)?;
    }
    memory
        .write(len_addr, &(SOCKADDR_NL as u32).to_ne_bytes())
        .map_err(Error::Memory)
}

/// `bind(fd, addr, len)` of a relayed socket.
pub fn bind(guest: i32, addr: u64, len: u32) -> Result<()> {
    let (pid, groups) = read_address(state::get().memory(), addr, len)?;
    done(ask(NetlinkOp::Bind {
        fd: guest,
        pid,
        groups,
    })?)
}

/// `getsockname(fd, addr, len)` of a relayed socket: the guest's port id.
pub fn name(guest: i32, addr: u64, len_addr: u64) -> Result<()> {
    match ask(NetlinkOp::Name { fd: guest })? {
        NetlinkReply::Name(pid, groups) => {
            write_address(state::get().memory(), addr, len_addr, pid, groups)
        }
        other => Err(unexpected(other)),
    }
}

/// `setsockopt(fd, level, option, value, len)` of a relayed socket: the
/// `SOL_NETLINK` int options; anything else is `ENOPROTOOPT`.
pub fn set_option(guest: i32, level: i32, option: i32, value: u64, len: u32) -> Result<()> {
    if level != libc::SOL_NETLINK {
        return Err(Error::kernel(
            libc::ENOPROTOOPT,
            "a socket option the relay does not carry",
        ));
    }
    if len < 4 {
        return Err(Error::kernel(libc::EINVAL, "an option value too short"));
    }
    let v = state::get()
        .memory()
        .read(value, 4)
        .map_err(Error::Memory)?;
    done(ask(NetlinkOp::SetOption {
        fd: guest,
        option,
        value: u32_at(&v, 0) as i32,
    })?)
}

/// Sends one datagram of the program's (its fds rewritten to the guest's
/// numbering) to the guest kernel: `sendto` with `dest` as `(addr, len)`
/// when an address was given.
pub fn send(guest: i32, buf: u64, len: usize, dest: Option<(u64, u32)>) -> Result<usize> {
    if len > NETLINK_SEND_MAX {
        return Err(Error::kernel(
            libc::EMSGSIZE,
            "a netlink datagram too large",
        ));
    }
    let data = state::get()
        .memory()
        .read(buf, len)
        .map_err(Error::Memory)?;
    send_bytes(guest, data, dest)
}

fn send_bytes(guest: i32, mut data: Vec<u8>, dest: Option<(u64, u32)>) -> Result<usize> {
    if let Some((addr, alen)) = dest {
        if read_address(state::get().memory(), addr, alen)? != (0, 0) {
            return Err(Error::kernel(
                libc::EPERM,
                "a relayed netlink socket talks to the guest kernel only",
            ));
        }
    }
    let offsets = netlink::fd_offsets(&data)
        .map_err(|e| Error::kernel(e.errno(), "a netlink datagram the relay does not carry"))?;
    for at in offsets {
        let host = i32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        // Negative values ("no program") go as they are.
        if host >= 0 {
            let g = bpf::to_guest_fd(&**state::get().table(), host);
            data[at..at + 4].copy_from_slice(&g.to_ne_bytes());
        }
    }
    match ask(NetlinkOp::Send { fd: guest, data })? {
        NetlinkReply::Sent(n) => Ok(n as usize),
        other => Err(unexpected(other)),
    }
}

/// Receives one datagram of at most `want` bytes: its bytes and real
/// length.
fn receive(guest: i32, want: usize, flags: i32) -> Result<(Vec<u8>, usize)> {
    if flags & !RECV_FLAGS != 0 {
        return Err(Error::kernel(
            libc::EOPNOTSUPP,
            "a recv flag of no netlink socket",
        ));
    }
    let op = NetlinkOp::Recv {
        fd: guest,
        len: want.min(NETLINK_RECV_MAX) as u32,
        peek: flags & libc::MSG_PEEK != 0,
        dont_wait: flags & libc::MSG_DONTWAIT != 0,
    };
    match ask(op)? {
        NetlinkReply::Received { data, len } if data.len() <= want => Ok((data, len as usize)),
        other => Err(unexpected(other)),
    }
}

/// What `recv` returns: the real length with `MSG_TRUNC`, else what was
/// copied.
fn received(copied: usize, real: usize, flags: i32) -> usize {
    if flags & libc::MSG_TRUNC != 0 {
        real
    } else {
        copied
    }
}

/// `recvfrom(fd, buf, len, flags, from, from_len)` of a relayed socket
/// (`recv` without `from`).
pub fn recv(
    guest: i32,
    buf: u64,
    len: usize,
    flags: i32,
    from: Option<(u64, u64)>,
) -> Result<usize> {
    let (data, real) = receive(guest, len, flags)?;
    let memory = state::get().memory();
    memory.write(buf, &data).map_err(Error::Memory)?;
    if let Some((addr, len_addr)) = from {
        write_address(memory, addr, len_addr, 0, 0)?;
    }
    Ok(received(data.len(), real, flags))
}

/// A `struct msghdr` as the program laid it out.
struct MsgHdr {
    /// `msg_name`.
    name: u64,
    /// `msg_namelen`.
    name_len: u32,
    /// `msg_iov`: base and length of each.
    iov: Vec<(u64, usize)>,
}

fn read_msghdr(memory: &dyn Memory, msg: u64) -> Result<MsgHdr> {
    let h = memory.read(msg, MSGHDR).map_err(Error::Memory)?;
    let (iov_addr, iov_len) = (u64_at(&h, 16), u64_at(&h, 24) as usize);
    let (name, name_len) = (u64_at(&h, 0), u32_at(&h, 8));
    // Why here, before anything is received: the kernel's __copy_msghdr
    // refuses a negative msg_namelen first, so a recvmsg that fails with
    // EINVAL has consumed nothing; failing only when the address is
    // written would lose the datagram (the ack the program waits for).
    if name != 0 && (name_len as i32) < 0 {
        return Err(Error::kernel(libc::EINVAL, "a negative msg_namelen"));
    }
    if iov_len > MAX_IOV {
        return Err(Error::kernel(libc::EMSGSIZE, "more iovecs than UIO_MAXIOV"));
    }
    let raw = memory
        .read(iov_addr, iov_len * IOVEC)
        .map_err(Error::Memory)?;
    let iov = raw
        .chunks_exact(IOVEC)
        .map(|v| (u64_at(v, 0), u64_at(v, 8) as usize))
        .collect();
    Ok(MsgHdr {
        name,
        name_len,
        iov,
    })
}

/// `sendmsg(fd, msg, flags)` of a relayed socket: its iovecs as one
/// datagram.
pub fn sendmsg(guest: i32, msg: u64) -> Result<usize> {
    let memory = state::get().memory();
    let hdr = read_msghdr(memory, msg)?;
    let total = hdr.iov.iter().fold(0usize, |t, v| t.saturating_add(v.1));
    if total > NETLINK_SEND_MAX {
        return Err(Error::kernel(
            libc::EMSGSIZE,
            "a netlink datagram too large",
        ));
    }
    let mut data = Vec::with_capacity(total);
    for &(base, len) in &hdr.iov {
        data.extend(memory.read(base, len).map_err(Error::Memory)?);
    }
    let dest = (hdr.name != 0).then_some((hdr.name, hdr.name_len));
    send_bytes(guest, data, dest)
}

/// `recvmsg(fd, msg, flags)` of a relayed socket: the datagram scattered
/// over the iovecs, the kernel's address, `MSG_TRUNC` in `msg_flags` when
/// it did not fit.
pub fn recvmsg(guest: i32, msg: u64, flags: i32) -> Result<usize> {
    let memory = state::get().memory();
    let hdr = read_msghdr(memory, msg)?;
    let room = hdr.iov.iter().fold(0usize, |t, v| t.saturating_add(v.1));
    let (data, real) = receive(guest, room, flags)?;
    let mut rest = &data[..];
    for &(base, len) in &hdr.iov {
        if rest.is_empty() {
            break;
        }
        let n = len.min(rest.len());
        memory.write(base, &rest[..n]).map_err(Error::Memory)?;
        rest = &rest[n..];
    }
    if hdr.name != 0 {
        write_address(memory, hdr.name, msg + 8, 0, 0)?;
    }
    // msg_controllen: no ancillary data; msg_flags: MSG_TRUNC if cut.
    memory
        .write(msg + 40, &0u64.to_ne_bytes())
        .map_err(Error::Memory)?;
    let out_flags = if real > data.len() {
        libc::MSG_TRUNC
    } else {
        0
    };
    memory
        .write(msg + 48, &out_flags.to_ne_bytes())
        .map_err(Error::Memory)?;
    Ok(received(data.len(), real, flags))
}

fn lookup(op: InterfaceOp) -> Result<InterfaceReply> {
    state::get().ask(
        &Request::Interface(op),
        "an interface lookup",
        |r| match r {
            Reply::Interface(answer) => Ok(answer),
            other => Err(Box::new(other)),
        },
    )
}

/// `if_nametoindex(name)` in the guest (`name` without its NUL).
pub fn index_of(name: &[u8]) -> Result<u32> {
    let name = String::from_utf8(name.to_vec())
        .map_err(|_| Error::kernel(libc::ENODEV, "an interface name that is not UTF-8"))?;
    match lookup(InterfaceOp::Index(name))? {
        InterfaceReply::Index(i) => Ok(i),
        InterfaceReply::Name(_) => Err(Error::Protocol("an interface lookup")),
    }
}

/// `if_indextoname(index)` in the guest.
pub fn name_of(index: u32) -> Result<String> {
    match lookup(InterfaceOp::Name(index))? {
        InterfaceReply::Name(n) if n.len() < IFNAMSIZ => Ok(n),
        _ => Err(Error::Protocol("an interface lookup")),
    }
}

/// `ioctl(fd, SIOCGIFINDEX or SIOCGIFNAME, ifreq)` answered from the
/// guest, with the kernel's errors (`ENODEV` for an unknown name or
/// index).
pub fn ifreq_ioctl(request: u64, arg: u64) -> Result<i32> {
    let memory = state::get().memory();
    let ifr = memory.read(arg, IFREQ).map_err(Error::Memory)?;
    let no_device = |e: Error| match e {
        Error::Guest(_) => Error::kernel(libc::ENODEV, "no such guest interface"),
        other => other,
    };
    if request == SIOCGIFINDEX {
        // The kernel ends the name at IFNAMSIZ - 1 bytes whatever follows.
        let name = &ifr[..IFNAMSIZ - 1];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let index = index_of(name).map_err(no_device)?;
        memory
            .write(arg + IFNAMSIZ as u64, &index.to_ne_bytes())
            .map_err(Error::Memory)?;
    } else {
        let index = u32_at(&ifr, IFNAMSIZ);
        let mut name = name_of(index).map_err(no_device)?.into_bytes();
        name.push(0);
        memory.write(arg, &name).map_err(Error::Memory)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use telebpf_abi::memory::Bytes;

    use super::*;

    /// A msghdr at 0x1000 with `name`, `name_len` and no iovecs (its
    /// empty iovec array at the msghdr itself).
    fn msghdr(name: u64, name_len: i32) -> Bytes {
        let mut data = vec![0u8; MSGHDR];
        data[..8].copy_from_slice(&name.to_ne_bytes());
        data[8..12].copy_from_slice(&name_len.to_ne_bytes());
        data[16..24].copy_from_slice(&0x1000u64.to_ne_bytes());
        Bytes { base: 0x1000, data }
    }

    #[test]
    fn a_negative_name_length_fails_before_anything_is_received() {
        let errno = |m: &Bytes| read_msghdr(m, 0x1000).err().map(|e| e.errno());
        assert_eq!(errno(&msghdr(0x2000, -1)), Some(libc::EINVAL));
        assert_eq!(errno(&msghdr(0x2000, 12)), None);
        // Without a name the length is not read, as in the kernel.
        assert_eq!(errno(&msghdr(0, -1)), None);
        assert_eq!(errno(&msghdr(0, 0)), None);
        assert_eq!(
            read_msghdr(&msghdr(0, 0), 0x10).err().map(|e| e.errno()),
            Some(libc::EFAULT)
        );
    }
}
