//! Which requests the audit log records, and how it names them.
//!
//! Besides refusals and the start and end of sessions, the log
//! ([`crate::audit`]) records the requests that create or change something
//! ([`mutates`], [`audited`]) and the reads of the guest kernel's memory,
//! each with a detail (a type, a path) that tells what was done.

use telebpf_abi::{attach_type, cmd, map_type, off, prog_type, read_u32};
use telebpf_protocol::message::{BpfCall, FileOp, NetlinkOp, Request};

use super::{command_name, obj_path, type_name};

/// Whether a `bpf()` command creates an object or changes the kernel's
/// state (what the audit log records besides refusals and sessions).
pub fn mutates(command: u32) -> bool {
    use telebpf_abi::cmd::*;
    matches!(
        command & !BPF_COMMON_ATTRS,
        BPF_MAP_CREATE
            | BPF_MAP_UPDATE_ELEM
            | BPF_MAP_DELETE_ELEM
            | BPF_PROG_LOAD
            | BPF_OBJ_PIN
            | BPF_PROG_ATTACH
            | BPF_PROG_DETACH
            | BPF_PROG_TEST_RUN
            | BPF_RAW_TRACEPOINT_OPEN
            | BPF_BTF_LOAD
            | BPF_MAP_LOOKUP_AND_DELETE_ELEM
            | BPF_MAP_FREEZE
            | BPF_MAP_LOOKUP_AND_DELETE_BATCH
            | BPF_MAP_UPDATE_BATCH
            | BPF_MAP_DELETE_BATCH
            | BPF_LINK_CREATE
            | BPF_LINK_UPDATE
            | BPF_ENABLE_STATS
            | BPF_ITER_CREATE
            | BPF_LINK_DETACH
            | BPF_PROG_BIND_MAP
            | BPF_TOKEN_CREATE
            | BPF_PROG_ASSOC_STRUCT_OPS
    ) || cmd::name(command) == "BPF_UNKNOWN"
}

/// The audit name of a request that creates or changes something, with a
/// detail (a type, a path); `None` for requests that only read.
pub fn audited(req: &Request) -> Option<(String, Option<String>)> {
    match req {
        Request::Bpf(call) if mutates(call.cmd) => Some((command_name(call.cmd), bpf_detail(call))),
        Request::PerfEventOpen { attr, .. } => Some((
            "perf_event_open".into(),
            Some(format!(
                "type {} config {:#x}",
                read_u32(attr, 0),
                telebpf_abi::read_u64(attr, 8)
            )),
        )),
        Request::Ioctl { cmd, .. } => Some(("perf_event_ioctl".into(), Some(format!("{cmd:#x}")))),
        Request::MapWrite { offset, data, .. } => Some((
            "map_mmap_write".into(),
            Some(format!("{} bytes at {offset}", data.len())),
        )),
        Request::File(
            op @ (FileOp::Mkdir { .. } | FileOp::Unlink { .. } | FileOp::Rmdir { .. }),
        ) => {
            let what = match op {
                FileOp::Mkdir { .. } => "mkdir",
                FileOp::Unlink { .. } => "unlink",
                _ => "rmdir",
            };
            Some((what.into(), crate::files::op_path(op).map(str::to_string)))
        }
        Request::File(FileOp::Append { path, data }) => Some((
            "append".into(),
            Some(format!("{path}: {}", text_line(data))),
        )),
        Request::Stream(s) => Some(("ring_stream".into(), Some(format!("fd {}", s.fd)))),
        Request::Netlink(NetlinkOp::Send { data, .. }) => {
            telebpf_abi::netlink::change(data).map(|change| ("netlink".into(), Some(change.into())))
        }
        // Reads, but of the guest kernel's memory: worth a line each.
        Request::Collect(c) => Some((
            "collect".into(),
            Some(format!(
                "{} {}",
                collector_name(&c.collector),
                match c.mode {
                    telebpf_protocol::message::CollectMode::Roots => "roots",
                    telebpf_protocol::message::CollectMode::Page => "page",
                    telebpf_protocol::message::CollectMode::Data => "data",
                }
            )),
        )),
        _ => None,
    }
}

/// A probe definition as one printable line.
fn text_line(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end()
        .replace('\n', "\\n")
}

/// The type or path a command names, for messages and the audit log.
fn bpf_detail(call: &BpfCall) -> Option<String> {
    let a = &call.attr;
    match call.cmd & !cmd::BPF_COMMON_ATTRS {
        cmd::BPF_MAP_CREATE => Some(format!(
            "map type {}",
            type_name(map_type::NAMES, read_u32(a, off::map_create::MAP_TYPE))
        )),
        cmd::BPF_PROG_LOAD => Some(format!(
            "prog type {}",
            type_name(prog_type::NAMES, read_u32(a, off::prog_load::PROG_TYPE))
        )),
        cmd::BPF_PROG_ATTACH | cmd::BPF_PROG_DETACH => Some(format!(
            "attach type {}",
            type_name(attach_type::NAMES, read_u32(a, off::attach::ATTACH_TYPE))
        )),
        cmd::BPF_LINK_CREATE => Some(format!(
            "attach type {}",
            type_name(
                attach_type::NAMES,
                read_u32(a, off::link_create::ATTACH_TYPE)
            )
        )),
        cmd::BPF_OBJ_PIN | cmd::BPF_OBJ_GET => obj_path(call).map(|p| p.unwrap_or("?").into()),
        _ => None,
    }
}

/// A collector's name if this proxy was built with it, else the start of
/// its id (hex).
fn collector_name(id: &[u8; 32]) -> String {
    telebpf_collectors::Collector::ALL
        .into_iter()
        .find(|c| c.id() == *id)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| id[..6].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use telebpf_abi::{cmd, map_type, off};
    use telebpf_protocol::message::Request;

    use super::*;
    use crate::policy::testing::*;

    #[test]
    fn audit_classification() {
        assert!(audited(&bpf(cmd::BPF_PROG_LOAD, &[], vec![])).is_some());
        assert!(audited(&bpf(cmd::BPF_MAP_UPDATE_ELEM, &[], vec![])).is_some());
        assert!(audited(&bpf(cmd::BPF_MAP_LOOKUP_ELEM, &[], vec![])).is_none());
        assert!(audited(&bpf(cmd::BPF_PROG_GET_NEXT_ID, &[], vec![])).is_none());
        assert!(audited(&bpf(99, &[], vec![])).is_some());
        let (op, detail) = audited(&bpf(
            cmd::BPF_MAP_CREATE,
            &[(off::map_create::MAP_TYPE, map_type::BPF_MAP_TYPE_RINGBUF)],
            vec![],
        ))
        .unwrap();
        assert_eq!(op, "BPF_MAP_CREATE");
        assert_eq!(detail.as_deref(), Some("map type ringbuf"));
        let attach = telebpf_abi::netlink::build::xdp(3);
        let send = |data| Request::Netlink(NetlinkOp::Send { fd: 5, data });
        assert_eq!(
            audited(&send(attach)),
            Some(("netlink".into(), Some("RTM_SETLINK".into())))
        );
        let dump = telebpf_abi::netlink::build::message(telebpf_abi::netlink::RTM_GETLINK, 16, &[]);
        assert!(audited(&send(dump)).is_none(), "a query is not a change");
        assert!(audited(&Request::Ping(vec![])).is_none());
    }
}
