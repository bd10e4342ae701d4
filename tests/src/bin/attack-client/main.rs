//! `attack-client`: the host side of the attack tests — a client that
//! speaks the protocol itself (with `telebpf-client`), holding whatever key
//! `TELEBPF_KEY_FILE` names (or none), and sends what a hostile key holder
//! or an unauthenticated peer would: requests whose sizes, offsets and fds
//! lie, floods of connections, slow readers. The tests run it as `nobody`
//! against a real proxy and then check that the proxy still serves.
//!
//! `attack-client MODE [ARGS…]`; each area of attack is a module of its
//! own with its modes (see each module's doc). Output: `key: value` lines,
//! flushed at once; exit 0 when the attack ran (whatever the proxy
//! answered), 2 for a usage error.

use std::process::ExitCode;

mod files;
mod flood;
mod netlink;
mod peer;
mod red;
mod rings;

/// An area of attack: runs `mode` if it is one of its own.
type Area = fn(mode: &str, args: &[String]) -> Option<ExitCode>;

/// Every area; a mode belongs to exactly one.
const AREAS: &[Area] = &[
    rings::run,   // ring streams: lying geometry, moved consumer position
    files::run,   // file requests: kernel files, bpffs, slow readers
    flood::run,   // connections, refusals and forged log lines
    red::run,     // the red team's probes of file ranges
    netlink::run, // the relayed NETLINK_ROUTE socket's datagrams
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("usage: attack-client MODE [ARGS...]");
        return ExitCode::from(2);
    };
    for area in AREAS {
        if let Some(code) = area(mode, rest) {
            return code;
        }
    }
    eprintln!("attack-client: unknown mode {mode:?}");
    ExitCode::from(2)
}
