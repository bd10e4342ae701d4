//! Red-team probes of the relayed `NETLINK_ROUTE` socket (issue #17's
//! review): datagrams that read one way to a parser that keeps the first
//! of repeated attributes and another way to the kernel, which keeps the
//! last, and link and qdisc changes that attach no program.
//!
//! Mode `netlink-smuggle`: opens a relayed socket and sends each datagram
//! of [`smuggled`]; prints `NAME: sent N` (the proxy relayed it) or
//! `NAME: errno N`. None carries `NLM_F_REQUEST`, so a guest kernel that
//! gets one skips it unread: the probe changes nothing even where the
//! proxy lets it through.

use std::process::ExitCode;

use telebpf_abi::netlink::build::{attr, message};
use telebpf_abi::netlink::{NLA_F_NESTED, TCA_KIND, TCA_OPTIONS};
use telebpf_protocol::message::{NetlinkOp, NetlinkReply, Reply, Request};

use crate::peer::{connect, say};

/// `RTM_NEWQDISC`, `RTM_DELQDISC`, `RTM_SETLINK`.
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_SETLINK: u16 = 19;
/// `sizeof(struct tcmsg)`, `sizeof(struct ifinfomsg)`.
const TCMSG: usize = 20;
const IFINFOMSG: usize = 16;
/// `TCA_U32_ACT`: a u32 filter's actions (act_bpf among them names an fd).
const TCA_U32_ACT: u16 = 7;
/// `IFLA_MTU`.
const IFLA_MTU: u16 = 4;

/// The probes: a name and a datagram each.
fn smuggled() -> Vec<(&'static str, Vec<u8>)> {
    let mut u32_after_bpf = attr(TCA_KIND, b"bpf\0");
    u32_after_bpf.extend(attr(TCA_KIND, b"u32\0"));
    u32_after_bpf.extend(attr(
        TCA_OPTIONS | NLA_F_NESTED,
        &attr(TCA_U32_ACT | NLA_F_NESTED, &[0; 4]),
    ));
    vec![
        (
            "u32-after-bpf",
            message(telebpf_abi::netlink::RTM_NEWTFILTER, TCMSG, &u32_after_bpf),
        ),
        (
            "netem-qdisc",
            message(RTM_NEWQDISC, TCMSG, &attr(TCA_KIND, b"netem\0")),
        ),
        ("unnamed-qdisc-delete", message(RTM_DELQDISC, TCMSG, &[])),
        (
            "link-mtu",
            message(
                RTM_SETLINK,
                IFINFOMSG,
                &attr(IFLA_MTU, &1280u32.to_ne_bytes()),
            ),
        ),
        (
            "clsact-qdisc",
            message(RTM_NEWQDISC, TCMSG, &attr(TCA_KIND, b"clsact\0")),
        ),
    ]
}

/// Runs `mode` if it is this module's.
pub fn run(mode: &str, args: &[String]) -> Option<ExitCode> {
    match (mode, args) {
        ("netlink-smuggle", []) => {
            let mut conn = connect();
            let fd = match conn.call(&Request::Netlink(NetlinkOp::Open)) {
                Ok(Reply::Netlink(Ok(NetlinkReply::Opened(fd, _)))) => fd,
                other => {
                    say("open", format!("{other:?}"));
                    return Some(ExitCode::SUCCESS);
                }
            };
            for (name, data) in smuggled() {
                let answer = match conn.call(&Request::Netlink(NetlinkOp::Send { fd, data })) {
                    Ok(Reply::Netlink(Ok(NetlinkReply::Sent(n)))) => format!("sent {n}"),
                    Ok(Reply::Netlink(Err(e))) => format!("errno {e}"),
                    other => format!("{other:?}"),
                };
                say(name, answer);
            }
            Some(ExitCode::SUCCESS)
        }
        ("netlink-smuggle", _) => {
            eprintln!("usage: attack-client netlink-smuggle");
            Some(ExitCode::from(2))
        }
        _ => None,
    }
}
