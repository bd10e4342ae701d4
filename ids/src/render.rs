//! Prints rows as `ps`, `lsmod` and /proc/net/tcp{,6} would, or as JSON.

use std::fmt::Write as _;

use crate::{Module, Process, Rows, TcpSocket};

/// `ps -e -o pid,ppid,uid,comm`.
pub fn processes(rows: &[Process]) -> String {
    let mut out = format!("{:>7} {:>7} {:>5} {}\n", "PID", "PPID", "UID", "COMMAND");
    let mut sorted: Vec<&Process> = rows.iter().collect();
    sorted.sort_by_key(|p| p.pid);
    for p in sorted {
        let _ = writeln!(out, "{:>7} {:>7} {:>5} {}", p.pid, p.ppid, p.uid, p.comm);
    }
    out
}

/// `lsmod` (name, size) with the module's state in place of its users.
pub fn modules(rows: &[Module]) -> String {
    let mut out = format!("{:<19} {:>8}  {}\n", "Module", "Size", "State");
    for m in rows {
        let _ = writeln!(out, "{:<19} {:>8}  {}", m.name, m.size, m.state);
    }
    out
}

fn addr_v4(a: &std::net::Ipv6Addr) -> String {
    // /proc prints the __be32 as the u32 it reads: byte order of memory.
    let v4 = a
        .to_ipv4_mapped()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    format!("{:08X}", u32::from_ne_bytes(v4.octets()))
}

fn addr_v6(a: &std::net::Ipv6Addr) -> String {
    a.octets()
        .chunks_exact(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect()
}

/// /proc/net/tcp, then /proc/net/tcp6: the columns we read (`sl`,
/// addresses, `st`, `uid`).
pub fn tcp(rows: &[TcpSocket]) -> String {
    let mut out = String::new();
    for (family, title) in [(4u8, "tcp"), (6u8, "tcp6")] {
        let _ = writeln!(out, "{title}:");
        let width = if family == 4 { 13 } else { 37 };
        let _ = writeln!(
            out,
            "  sl  {:<width$} {:<width$} st   uid",
            "local_address", "rem_address"
        );
        for (i, s) in rows.iter().filter(|s| s.family == family).enumerate() {
            let (l, r) = if family == 4 {
                (addr_v4(&s.local), addr_v4(&s.remote))
            } else {
                (addr_v6(&s.local), addr_v6(&s.remote))
            };
            let _ = writeln!(
                out,
                "{i:4}: {l}:{:04X} {r}:{:04X} {:02X} {:5}",
                s.local_port, s.remote_port, s.state, s.uid
            );
        }
    }
    out
}

/// Text for any rows.
pub fn text(rows: &Rows) -> String {
    match rows {
        Rows::Processes(r) => processes(r),
        Rows::Modules(r) => modules(r),
        Rows::Tcp(r) => tcp(r),
    }
}

/// JSON for any rows (an array of objects).
pub fn json(rows: &Rows) -> String {
    encode(rows, true)
}

/// The rows as JSON on one line.
pub fn json_line(rows: &Rows) -> String {
    encode(rows, false)
}

fn encode(rows: &Rows, pretty: bool) -> String {
    fn enc<T: serde::Serialize>(v: &T, pretty: bool) -> serde_json::Result<String> {
        if pretty {
            serde_json::to_string_pretty(v)
        } else {
            serde_json::to_string(v)
        }
    }
    match rows {
        Rows::Processes(r) => enc(r, pretty),
        Rows::Modules(r) => enc(r, pretty),
        Rows::Tcp(r) => enc(r, pretty),
    }
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
