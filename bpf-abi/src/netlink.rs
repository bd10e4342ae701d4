//! Which bytes of an rtnetlink datagram are fds, and which datagrams a
//! relayed `NETLINK_ROUTE` socket may carry at all.
//!
//! A program attaches an XDP or tc program over rtnetlink by naming the
//! program's fd inside an attribute (`IFLA_XDP_FD`, `TCA_BPF_FD`). When the
//! socket is relayed to a guest (telebpf's host side forwards the datagram
//! to a socket the proxy holds there), those fds must be translated to the
//! guest's numbering on the host and checked in the proxy, exactly like the
//! fd fields of a `bpf()` attr. [`fd_offsets`] derives, from the datagram
//! alone, where they are; both sides run it, and the proxy never trusts the
//! host's reading.
//!
//! The datagrams it accepts are the queries (links, addresses, routes,
//! qdiscs, classes, filters, chains) and the changes a BPF attach makes:
//! `RTM_SETLINK`/`RTM_NEWLINK` of an existing link (its `IFLA_XDP` alone),
//! `RTM_NEWQDISC`/`RTM_DELQDISC` naming the `clsact` hook, `RTM_NEWTFILTER` of
//! kind `bpf` and `RTM_DELTFILTER`. Everything else answers `EOPNOTSUPP`:
//! making or deleting links, addresses or routes, namespaces named by fd
//! or pid (`IFLA_NET_NS_FD`, `IFLA_NET_NS_PID`, `IFLA_TARGET_NETNSID`),
//! link creation (`IFLA_LINKINFO`) and tc actions (`RTM_NEWACTION`, a
//! `bpf` filter's `TCA_BPF_ACT`/`TCA_BPF_POLICE`) are all ways to name an
//! fd or a namespace the relay would have to understand, and none is
//! needed to attach a program. A length that does not fit answers
//! `EINVAL`, as the kernel does.

/// Why a datagram cannot be relayed; [`NetlinkError::errno`] is what the
/// program's `send` fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// A message or attribute length does not fit what holds it (`EINVAL`,
    /// as the kernel answers).
    #[error("a netlink length does not fit its datagram (EINVAL)")]
    Malformed,
    /// The datagram asks for something the relay does not carry
    /// (`EOPNOTSUPP`); the text says what.
    #[error("{0} is not relayed (EOPNOTSUPP)")]
    NotRelayed(&'static str),
}

impl NetlinkError {
    /// The positive errno for the program.
    pub fn errno(&self) -> i32 {
        match self {
            NetlinkError::Malformed => crate::error::EINVAL,
            NetlinkError::NotRelayed(_) => EOPNOTSUPP,
        }
    }
}

/// `EOPNOTSUPP` on Linux.
const EOPNOTSUPP: i32 = 95;

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`.
const NLA_HDRLEN: usize = 4;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
/// `NLA_TYPE_MASK`: an attribute's type without `NLA_F_NESTED` and
/// `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 0x8000;

/// Message types below this are netlink's own (`NLMSG_NOOP`, …), which
/// rtnetlink skips.
const NLMSG_MIN_TYPE: u16 = 0x10;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_SETLINK`.
pub const RTM_SETLINK: u16 = 19;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_GETTCLASS: u16 = 42;
/// `RTM_NEWTFILTER`.
pub const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const RTM_GETCHAIN: u16 = 102;

/// `IFLA_LINKINFO`.
pub const IFLA_LINKINFO: u16 = 18;
/// `IFLA_NET_NS_PID`.
pub const IFLA_NET_NS_PID: u16 = 19;
/// `IFLA_NET_NS_FD`.
pub const IFLA_NET_NS_FD: u16 = 28;
/// `IFLA_XDP`.
pub const IFLA_XDP: u16 = 43;
const IFLA_TARGET_NETNSID: u16 = 46;
/// `IFLA_XDP_FD`, nested in `IFLA_XDP`.
pub const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

/// `TCA_KIND`.
pub const TCA_KIND: u16 = 1;
/// `TCA_OPTIONS`.
pub const TCA_OPTIONS: u16 = 2;
/// `TCA_BPF_ACT`, nested in a `bpf` filter's `TCA_OPTIONS`.
pub const TCA_BPF_ACT: u16 = 1;
const TCA_BPF_POLICE: u16 = 2;
/// `TCA_BPF_FD`, nested in a `bpf` filter's `TCA_OPTIONS`.
pub const TCA_BPF_FD: u16 = 6;

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

/// One message or attribute: its type and where its bytes (header
/// included) are in the datagram.
#[derive(Clone, Copy)]
struct Record {
    kind: u16,
    start: usize,
    end: usize,
}

/// Splits `data[from..to]` into records of `header` bytes of header each
/// (a message's length is its first four bytes, an attribute's its first
/// two), each length checked against what is left.
fn records(
    data: &[u8],
    from: usize,
    to: usize,
    header: usize,
) -> Result<Vec<Record>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = from;
    while to - at >= header {
        let (len, kind) = if header == NLMSG_HDRLEN {
            (u32_at(data, at) as usize, u16_at(data, at + 4))
        } else {
            (
                u16_at(data, at) as usize,
                u16_at(data, at + 2) & NLA_TYPE_MASK,
            )
        };
        if len < header || len > to - at {
            return Err(NetlinkError::Malformed);
        }
        out.push(Record {
            kind,
            start: at,
            end: at + len,
        });
        at = at.saturating_add(align(len)).min(to);
    }
    Ok(out)
}

/// The attributes of a message after its fixed header of `fixed` bytes.
fn attributes(data: &[u8], message: Record, fixed: usize) -> Result<Vec<Record>, NetlinkError> {
    let start = message.start + NLMSG_HDRLEN + fixed;
    if start > message.end {
        return Err(NetlinkError::Malformed);
    }
    records(data, start, message.end, NLA_HDRLEN)
}

/// The nested attributes of an attribute.
fn nested(data: &[u8], attr: Record) -> Result<Vec<Record>, NetlinkError> {
    records(data, attr.start + NLA_HDRLEN, attr.end, NLA_HDRLEN)
}

/// Where an fd attribute's 32-bit value is, if it has one.
fn fd_value(attr: Record) -> Result<usize, NetlinkError> {
    if attr.end - attr.start < NLA_HDRLEN + 4 {
        return Err(NetlinkError::Malformed);
    }
    Ok(attr.start + NLA_HDRLEN)
}

/// The offsets of every fd (a native-endian `i32`) in a datagram a relayed
/// socket sends, or the errno the `send` fails with for a datagram the
/// relay does not carry (see the module doc).
pub fn fd_offsets(data: &[u8]) -> Result<Vec<usize>, NetlinkError> {
    let mut fds = Vec::new();
    for message in records(data, 0, data.len(), NLMSG_HDRLEN)? {
        match message.kind {
            k if k < NLMSG_MIN_TYPE => {}
            RTM_GETLINK | RTM_GETADDR | RTM_GETROUTE | RTM_GETQDISC | RTM_GETTCLASS
            | RTM_GETTFILTER | RTM_GETCHAIN => {}
            RTM_NEWQDISC | RTM_DELQDISC => clsact(data, message)?,
            RTM_DELTFILTER => {}
            RTM_SETLINK | RTM_NEWLINK => link_fds(data, message, &mut fds)?,
            RTM_NEWTFILTER => filter_fds(data, message, &mut fds)?,
            _ => return Err(NetlinkError::NotRelayed("this rtnetlink message type")),
        }
    }
    Ok(fds)
}

/// A link change: the XDP fds; namespaces, link creation and every other
/// change of the link refused.
fn link_fds(data: &[u8], message: Record, fds: &mut Vec<usize>) -> Result<(), NetlinkError> {
    let attrs = attributes(data, message, IFINFOMSG_LEN)?;
    // Why: a link change is what `bpf_xdp_attach` sends (family
    // AF_UNSPEC, no flags to change, one IFLA_XDP); anything else in it
    // sets the link down, renames it, changes its MTU or master, or (family
    // AF_BRIDGE) goes to the bridge's handler — none attaches a program.
    let info = message.start + NLMSG_HDRLEN;
    let (family, flags, change) = (data[info], u32_at(data, info + 8), u32_at(data, info + 12));
    if family != 0 || flags != 0 || change != 0 {
        return Err(NetlinkError::NotRelayed(
            "changing a link's flags or family",
        ));
    }
    for attr in attrs {
        match attr.kind {
            IFLA_LINKINFO => return Err(NetlinkError::NotRelayed("making a link")),
            IFLA_NET_NS_PID | IFLA_NET_NS_FD | IFLA_TARGET_NETNSID => {
                return Err(NetlinkError::NotRelayed("naming a network namespace"))
            }
            IFLA_XDP => {
                for inner in nested(data, attr)? {
                    if matches!(inner.kind, IFLA_XDP_FD | IFLA_XDP_EXPECTED_FD) {
                        fds.push(fd_value(inner)?);
                    }
                }
            }
            _ => {
                return Err(NetlinkError::NotRelayed(
                    "changing a link other than its XDP program",
                ))
            }
        }
    }
    Ok(())
}

/// The `TCA_KIND` of a tc message the kernel reads, without its NUL.
fn tc_kind<'a>(data: &'a [u8], attrs: &[Record]) -> Option<&'a [u8]> {
    // Why the last: the kernel's nla_parse keeps the last of repeated
    // attributes, so a `TCA_KIND` of "bpf" followed by one of "u32" makes
    // a u32 filter, whose `TCA_OPTIONS` (read here with bpf's numbering)
    // can carry actions, among them act_bpf naming any fd of the proxy.
    let kind = attrs
        .iter()
        .rev()
        .find(|a| a.kind == TCA_KIND)
        .map(|a| &data[a.start + NLA_HDRLEN..a.end])?;
    Some(kind.strip_suffix(&[0]).unwrap_or(kind))
}

/// A qdisc made or deleted: only `clsact`, the hook libbpf's
/// `bpf_tc_hook_create`/`_destroy` name. Why: any other kind (a `netem`
/// that drops every packet, a replaced root qdisc) changes the guest's
/// traffic and attaches no program; and a delete without a kind deletes
/// whatever qdisc is there (the kernel compares the kind only when named).
fn clsact(data: &[u8], message: Record) -> Result<(), NetlinkError> {
    let attrs = attributes(data, message, TCMSG_LEN)?;
    if tc_kind(data, &attrs) != Some(b"clsact") {
        return Err(NetlinkError::NotRelayed("a qdisc other than clsact"));
    }
    Ok(())
}

/// A new tc filter: only `bpf` (cls_bpf), without actions; its program fd.
fn filter_fds(data: &[u8], message: Record, fds: &mut Vec<usize>) -> Result<(), NetlinkError> {
    let attrs = attributes(data, message, TCMSG_LEN)?;
    if tc_kind(data, &attrs) != Some(b"bpf") {
        return Err(NetlinkError::NotRelayed(
            "a tc filter of another kind than bpf",
        ));
    }
    for options in attrs.iter().filter(|a| a.kind == TCA_OPTIONS) {
        for inner in nested(data, *options)? {
            match inner.kind {
                TCA_BPF_ACT | TCA_BPF_POLICE => {
                    return Err(NetlinkError::NotRelayed("a tc action"))
                }
                TCA_BPF_FD => fds.push(fd_value(inner)?),
                _ => {}
            }
        }
    }
    Ok(())
}

/// For an audit log: the change a datagram asks for (its first message
/// that is not a query), `None` for queries.
pub fn change(data: &[u8]) -> Option<&'static str> {
    records(data, 0, data.len(), NLMSG_HDRLEN)
        .ok()?
        .iter()
        .find_map(|m| match m.kind {
            RTM_NEWLINK => Some("RTM_NEWLINK"),
            RTM_SETLINK => Some("RTM_SETLINK"),
            RTM_NEWQDISC => Some("RTM_NEWQDISC"),
            RTM_DELQDISC => Some("RTM_DELQDISC"),
            RTM_NEWTFILTER => Some("RTM_NEWTFILTER"),
            RTM_DELTFILTER => Some("RTM_DELTFILTER"),
            _ => None,
        })
}

/// Builders of datagrams, for tests here and in the crates that use this
/// one.
pub mod build {
    use super::*;

    /// A message of type `kind` with `fixed` zero bytes of fixed header and
    /// then `attrs`.
    pub fn message(kind: u16, fixed: usize, attrs: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + fixed + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&vec![0; fixed]);
        m.extend_from_slice(attrs);
        m
    }

    /// An attribute, padded to netlink's alignment.
    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align(a.len()), 0);
        a
    }

    /// What `bpf_xdp_attach(ifindex 0, fd)` sends.
    pub fn xdp(fd: i32) -> Vec<u8> {
        message(
            RTM_SETLINK,
            IFINFOMSG_LEN,
            &attr(
                IFLA_XDP | NLA_F_NESTED,
                &attr(IFLA_XDP_FD, &fd.to_ne_bytes()),
            ),
        )
    }

    /// A `RTM_NEWTFILTER` of `kind` with `options`.
    pub fn filter(kind: &[u8], options: &[u8]) -> Vec<u8> {
        let mut attrs = attr(TCA_KIND, kind);
        attrs.extend(attr(TCA_OPTIONS | NLA_F_NESTED, options));
        message(RTM_NEWTFILTER, TCMSG_LEN, &attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    /// The datagram's fd values at the offsets found.
    fn fds(data: &[u8]) -> Result<Vec<i32>, i32> {
        Ok(fd_offsets(data)
            .map_err(|e| e.errno())?
            .into_iter()
            .map(|o| u32_at(data, o) as i32)
            .collect())
    }

    #[test]
    fn queries_pass_and_unknown_changes_do_not() {
        let dump = message(RTM_GETLINK, IFINFOMSG_LEN, &[]);
        assert_eq!(fds(&dump), Ok(vec![]));
        let new_addr = message(20, 8, &[]);
        assert_eq!(fds(&new_addr), Err(EOPNOTSUPP));
        // Two messages in one datagram: the second is read too.
        let mut both = dump.clone();
        both.extend(new_addr);
        assert_eq!(fds(&both), Err(EOPNOTSUPP));
    }

    #[test]
    fn an_xdp_attach_names_its_program() {
        assert_eq!(fds(&xdp(7)), Ok(vec![7]));
        assert_eq!(fds(&xdp(-1)), Ok(vec![-1]), "detach");
        let mut two = xdp(7);
        two.extend(xdp(9));
        assert_eq!(fds(&two), Ok(vec![7, 9]));
    }

    #[test]
    fn namespaces_and_new_links_are_refused() {
        for kind in [IFLA_NET_NS_FD, IFLA_NET_NS_PID, IFLA_LINKINFO] {
            let m = message(RTM_NEWLINK, IFINFOMSG_LEN, &attr(kind, &[0; 4]));
            assert_eq!(fds(&m), Err(EOPNOTSUPP));
        }
    }

    #[test]
    fn a_link_change_is_its_xdp_program_only() {
        const IFLA_IFNAME: u16 = 3;
        const IFLA_MTU: u16 = 4;
        for kind in [IFLA_IFNAME, IFLA_MTU] {
            let mut m = xdp(7);
            let a = attr(kind, b"ab\0");
            m.extend(&a);
            let len = m.len() as u32;
            m[..4].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(fds(&m), Err(EOPNOTSUPP), "attribute {kind}");
        }
        // ifi_flags/ifi_change (set the link down) and ifi_family.
        for at in [0, 8, 12] {
            let mut m = xdp(7);
            m[NLMSG_HDRLEN + at] = 1;
            assert_eq!(fds(&m), Err(EOPNOTSUPP), "ifinfomsg byte {at}");
        }
    }

    #[test]
    fn tc_filters_are_bpf_without_actions() {
        let ok = filter(b"bpf\0", &attr(TCA_BPF_FD, &7u32.to_ne_bytes()));
        assert_eq!(fds(&ok), Ok(vec![7]));
        let act = filter(b"bpf\0", &attr(TCA_BPF_ACT, &[0; 4]));
        assert_eq!(fds(&act), Err(EOPNOTSUPP));
        let u32f = filter(b"u32\0", &[]);
        assert_eq!(fds(&u32f), Err(EOPNOTSUPP));
    }

    #[test]
    fn qdiscs_are_clsact_named() {
        for kind in [RTM_NEWQDISC, RTM_DELQDISC] {
            let ok = message(kind, TCMSG_LEN, &attr(TCA_KIND, b"clsact\0"));
            assert_eq!(fds(&ok), Ok(vec![]));
            let netem = message(kind, TCMSG_LEN, &attr(TCA_KIND, b"netem\0"));
            assert_eq!(fds(&netem), Err(EOPNOTSUPP));
            let unnamed = message(kind, TCMSG_LEN, &[]);
            assert_eq!(fds(&unnamed), Err(EOPNOTSUPP), "deletes any qdisc");
            let mut twice = attr(TCA_KIND, b"clsact\0");
            twice.extend(attr(TCA_KIND, b"netem\0"));
            let twice = message(kind, TCMSG_LEN, &twice);
            assert_eq!(fds(&twice), Err(EOPNOTSUPP));
        }
    }

    #[test]
    fn a_repeated_tc_kind_is_read_as_the_kernel_reads_it() {
        // TCA_KIND "bpf" then "u32": the kernel makes a u32 filter, whose
        // option 7 (TCA_U32_ACT) holds actions that name fds unchecked.
        let mut attrs = attr(TCA_KIND, b"bpf\0");
        attrs.extend(attr(TCA_KIND, b"u32\0"));
        attrs.extend(attr(TCA_OPTIONS | NLA_F_NESTED, &attr(7, &[0; 4])));
        let m = message(RTM_NEWTFILTER, TCMSG_LEN, &attrs);
        assert_eq!(fds(&m), Err(EOPNOTSUPP));
        // The other way round is a bpf filter, checked as one.
        let mut attrs = attr(TCA_KIND, b"u32\0");
        attrs.extend(attr(TCA_KIND, b"bpf\0"));
        attrs.extend(attr(
            TCA_OPTIONS | NLA_F_NESTED,
            &attr(TCA_BPF_FD, &7u32.to_ne_bytes()),
        ));
        let m = message(RTM_NEWTFILTER, TCMSG_LEN, &attrs);
        assert_eq!(fds(&m), Ok(vec![7]));
    }

    #[test]
    fn lengths_are_checked_before_anything_is_read() {
        let mut m = xdp(7);
        m[0] = 200; // longer than the datagram
        assert_eq!(fds(&m), Err(crate::error::EINVAL));
        let mut m = xdp(7);
        m[NLMSG_HDRLEN + IFINFOMSG_LEN] = 60; // attribute past the message
        assert_eq!(fds(&m), Err(crate::error::EINVAL));
        let short = message(RTM_SETLINK, 4, &[]);
        assert_eq!(fds(&short), Err(crate::error::EINVAL));
        let empty_fd = message(
            RTM_SETLINK,
            IFINFOMSG_LEN,
            &attr(IFLA_XDP | NLA_F_NESTED, &attr(IFLA_XDP_FD, &[])),
        );
        assert_eq!(fds(&empty_fd), Err(crate::error::EINVAL));
        assert_eq!(fds(&[1, 2, 3]), Ok(vec![]), "the kernel's to judge");
    }

    #[test]
    fn changes_are_named() {
        assert_eq!(change(&xdp(7)), Some("RTM_SETLINK"));
        assert_eq!(change(&message(RTM_GETLINK, IFINFOMSG_LEN, &[])), None);
    }
}
