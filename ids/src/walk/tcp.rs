//! TCP sockets, as /proc/net/tcp and /proc/net/tcp6 show them: the
//! listening (lhash2) and established (ehash) hash tables of the network
//! namespace of the task the collector started at.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::layout::{Missing, Types};
use crate::view::{span, View};
use crate::Error;

const AF_INET6: u16 = 10;
const TCP_TIME_WAIT: u8 = 6;
const TCP_LISTEN: u8 = 10;
const TCP_NEW_SYN_RECV: u8 = 12;
const QUEUE_LEN: usize = 65536;
const CHUNK: u64 = 4096;

/// One TCP socket. In JSON, `local` and `remote` are written in the
/// socket's family's form (`127.0.0.1` for IPv4, not `::ffff:127.0.0.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    /// 4 or 6.
    pub family: u8,
    /// Local address (IPv4-mapped for IPv4).
    pub local: Ipv6Addr,
    /// Local port.
    pub local_port: u16,
    /// Remote address (IPv4-mapped for IPv4).
    pub remote: Ipv6Addr,
    /// Remote port.
    pub remote_port: u16,
    /// TCP state as /proc/net/tcp numbers it (`0A` listen, `01` established…).
    pub state: u8,
    /// Owner's uid (0 for time-wait and request sockets, as /proc shows).
    pub uid: u32,
    /// Kernel address of the socket.
    pub sock: u64,
}

impl TcpSocket {
    /// The local IPv4 address, for an IPv4 socket.
    pub fn local_v4(&self) -> Option<Ipv4Addr> {
        self.local.to_ipv4_mapped()
    }

    /// The local address as text in the socket's family's form.
    pub fn local_text(&self) -> String {
        address_text(self.family, &self.local)
    }

    /// Whether the socket is listening (`TCP_LISTEN`, `0A` in /proc).
    pub fn is_listening(&self) -> bool {
        self.state == TCP_LISTEN
    }
}

/// `addr` as its family writes it: an IPv4 socket's address is held
/// IPv4-mapped but is `a.b.c.d`; an IPv6 socket's stays IPv6 (even a
/// v4-mapped one: that is how an IPv6 socket sees an IPv4 peer).
pub fn address_text(family: u8, addr: &Ipv6Addr) -> String {
    match (family, addr.to_ipv4_mapped()) {
        (4, Some(v4)) => v4.to_string(),
        _ => addr.to_string(),
    }
}

impl Serialize for TcpSocket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TcpSocket", 8)?;
        st.serialize_field("family", &self.family)?;
        st.serialize_field("local", &address_text(self.family, &self.local))?;
        st.serialize_field("local_port", &self.local_port)?;
        st.serialize_field("remote", &address_text(self.family, &self.remote))?;
        st.serialize_field("remote_port", &self.remote_port)?;
        st.serialize_field("state", &self.state)?;
        st.serialize_field("uid", &self.uid)?;
        st.serialize_field("sock", &self.sock)?;
        st.end()
    }
}

/// Offsets the walk needs.
#[derive(Debug, Clone)]
pub struct Layout {
    task_nsproxy: u64,
    nsproxy_net: u64,
    net_hashinfo: u64,
    lhash2: u64,
    lhash2_mask: u64,
    ehash: u64,
    ehash_mask: u64,
    listen_bucket: u64,
    listen_head: u64,
    established_bucket: u64,
    established_head: u64,
    nulls_node: u64,
    net: u64,
    family: u64,
    state: u64,
    num: u64,
    dport: u64,
    saddr: u64,
    daddr: u64,
    saddr6: u64,
    daddr6: u64,
    uid: u64,
}

impl Layout {
    /// Reads the offsets from the guest's BTF.
    pub fn new(t: &Types) -> Result<Layout, Missing> {
        let sc = |f: &str| t.offset("sock_common", f);
        Ok(Layout {
            task_nsproxy: t.offset("task_struct", "nsproxy")?,
            nsproxy_net: t.offset("nsproxy", "net_ns")?,
            net_hashinfo: t.offset("net", "ipv4.tcp_death_row.hashinfo")?,
            lhash2: t.offset("inet_hashinfo", "lhash2")?,
            lhash2_mask: t.offset("inet_hashinfo", "lhash2_mask")?,
            ehash: t.offset("inet_hashinfo", "ehash")?,
            ehash_mask: t.offset("inet_hashinfo", "ehash_mask")?,
            listen_bucket: t.size_of("inet_listen_hashbucket")?,
            listen_head: t.offset("inet_listen_hashbucket", "nulls_head")?,
            established_bucket: t.size_of("inet_ehash_bucket")?,
            established_head: t.offset("inet_ehash_bucket", "chain")?,
            nulls_node: sc("skc_nulls_node")?,
            net: sc("skc_net")?,
            family: sc("skc_family")?,
            state: sc("skc_state")?,
            num: sc("skc_num")?,
            dport: sc("skc_dport")?,
            saddr: sc("skc_rcv_saddr")?,
            daddr: sc("skc_daddr")?,
            saddr6: sc("skc_v6_rcv_saddr")?,
            daddr6: sc("skc_v6_daddr")?,
            uid: t.offset("sock", "sk_uid")?,
        })
    }
}

/// Queues the first socket of every non-empty chain of a table, reading the
/// bucket array a 4 KiB chunk at a time as the collector does: a per-pointer
/// walk makes one request per chunk (the research's per-pointer reader
/// fetched a page per request; one request for the whole array would be a
/// batch).
fn scan(
    view: &mut View<'_>,
    base: u64,
    buckets: u64,
    stride: u64,
    head_off: u64,
    queue: &mut VecDeque<u64>,
) -> Result<(), Error> {
    if base == 0 || stride < 8 || !CHUNK.is_multiple_of(stride) || head_off + 8 > stride {
        return Err(Error::Layout(
            "a hash bucket size that does not divide 4096".into(),
        ));
    }
    let bytes = buckets * stride;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut start = 0u64;
    while start < bytes {
        let n = (bytes - start).min(CHUNK) as usize;
        view.load(base + start, n as u64)?;
        view.read_into(base + start, &mut buf[..n])?;
        let head = |at: usize| u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        if stride == 8 && head_off == 0 {
            // Bare heads, eight at a time: an empty chain's head has bit 0
            // set, so one AND tells that all eight are empty.
            for group in (0..n / 8 * 8).step_by(64) {
                let end = (group + 64).min(n / 8 * 8);
                if end - group == 64
                    && (group..end).step_by(8).fold(1, |a, at| a & head(at)) & 1 == 1
                {
                    continue;
                }
                for at in (group..end).step_by(8) {
                    enqueue(queue, head(at))?;
                }
            }
        } else {
            let mut at = head_off as usize;
            while at + 8 <= n {
                enqueue(queue, head(at))?;
                at += stride as usize;
            }
        }
        start += CHUNK;
    }
    Ok(())
}

fn enqueue(queue: &mut VecDeque<u64>, node: u64) -> Result<(), Error> {
    if node & 1 == 0 {
        if queue.len() >= QUEUE_LEN {
            return Err(Error::TooLong("TCP hash chains"));
        }
        queue.push_back(node);
    }
    Ok(())
}

/// Which of the namespace's tables a walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// Listening and established: what /proc/net/tcp shows.
    Both,
    /// The listening table only (the `listeners` collector).
    Listening,
}

/// Walks the tables of the namespace of the task at `root`; returns the
/// namespace's sockets (other namespaces' are skipped, as /proc does).
pub fn walk(
    view: &mut View<'_>,
    l: &Layout,
    root: u64,
    tables: Tables,
) -> Result<Vec<TcpSocket>, Error> {
    view.load(root + l.task_nsproxy, 8)?;
    let nsproxy = view.u64(root + l.task_nsproxy)?;
    view.load(nsproxy + l.nsproxy_net, 8)?;
    let netns = view.u64(nsproxy + l.nsproxy_net)?;
    view.load(netns + l.net_hashinfo, 8)?;
    let hashinfo = view.u64(netns + l.net_hashinfo)?;
    let (lo, len) = span(&[
        (l.lhash2, 8),
        (l.lhash2_mask, 4),
        (l.ehash, 8),
        (l.ehash_mask, 4),
    ]);
    view.load(hashinfo + lo, len)?;
    let lhash2 = view.u64(hashinfo + l.lhash2)?;
    let lhash2_mask = view.u32(hashinfo + l.lhash2_mask)? as u64;
    let ehash = view.u64(hashinfo + l.ehash)?;
    let ehash_mask = view.u32(hashinfo + l.ehash_mask)? as u64;

    let mut queue = VecDeque::new();
    scan(
        view,
        lhash2,
        lhash2_mask + 1,
        l.listen_bucket,
        l.listen_head,
        &mut queue,
    )?;
    if tables == Tables::Both {
        scan(
            view,
            ehash,
            ehash_mask + 1,
            l.established_bucket,
            l.established_head,
            &mut queue,
        )?;
    }

    let (lo, len) = span(&[
        (l.nulls_node, 8),
        (l.net, 8),
        (l.family, 2),
        (l.state, 1),
        (l.num, 2),
        (l.dport, 2),
        (l.saddr, 4),
        (l.daddr, 4),
        (l.saddr6, 16),
        (l.daddr6, 16),
    ]);
    let mut out = Vec::new();
    while let Some(node) = queue.pop_front() {
        let sk = node.wrapping_sub(l.nulls_node);
        view.load(sk + lo, len)?;
        let net = view.u64(sk + l.net)?;
        let family = view.u16(sk + l.family)?;
        let state = view.u8(sk + l.state)?;
        let num = view.u16(sk + l.num)?;
        let dport = u16::from_be(view.u16(sk + l.dport)?);
        let (local, remote) = if family == AF_INET6 {
            (
                Ipv6Addr::from(view.bytes::<16>(sk + l.saddr6)?),
                Ipv6Addr::from(view.bytes::<16>(sk + l.daddr6)?),
            )
        } else {
            (
                Ipv4Addr::from(view.bytes::<4>(sk + l.saddr)?).to_ipv6_mapped(),
                Ipv4Addr::from(view.bytes::<4>(sk + l.daddr)?).to_ipv6_mapped(),
            )
        };
        let uid = if state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV {
            view.load(sk + l.uid, 4)?;
            view.u32(sk + l.uid)?
        } else {
            0
        };
        enqueue(&mut queue, view.u64(node)?)?;
        if net == netns {
            out.push(TcpSocket {
                family: if family == AF_INET6 { 6 } else { 4 },
                local,
                local_port: num,
                remote,
                remote_port: dport,
                // /proc shows request sockets as SYN_RECV.
                state: if state == TCP_NEW_SYN_RECV { 3 } else { state },
                uid,
                sock: sk,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn addresses_are_written_in_their_familys_form() {
        let v4 = TcpSocket {
            family: 4,
            local: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
            local_port: 22,
            remote: Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
            remote_port: 0,
            state: TCP_LISTEN,
            uid: 0,
            sock: 1,
        };
        let json = serde_json::to_value(&v4).unwrap();
        assert_eq!(json["local"], "0.0.0.0");
        assert_eq!(json["remote"], "10.0.0.1");
        let v6 = TcpSocket {
            family: 6,
            local: Ipv6Addr::UNSPECIFIED,
            ..v4.clone()
        };
        let json = serde_json::to_value(&v6).unwrap();
        assert_eq!(json["local"], "::");
        // A dual-stack socket's IPv4 peer stays as IPv6 shows it.
        assert_eq!(json["remote"], "::ffff:10.0.0.1");
        assert_eq!(json.as_object().unwrap().len(), 8);
    }
}
