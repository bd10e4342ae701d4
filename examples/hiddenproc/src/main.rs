//! `hiddenproc`: an intrusion detector built on telebpf's client API. It
//! walks the guest kernel's task list from the host (the collector runs in
//! the guest, the walk is checked against the guest's BTF) and compares it
//! with the process ids the guest's own /proc lists. A process in one view
//! and not the other is flagged: hidden from /proc (a rootkit filtering the
//! guest's VFS) or unlinked from the task list.
//!
//! Usage: `TELEBPF_TARGET=ADDR TELEBPF_KEY_FILE=FILE hiddenproc [MODE]`
//! (MODE: bulk-data, the default; bulk-page; per-pointer). Exit status: 0
//! clean, 1 something flagged, 2 error.

use std::process::ExitCode;

use telebpf_client::Settings;
use telebpf_ids::detect::hidden_processes;
use telebpf_ids::{Inspector, Mode};

fn main() -> ExitCode {
    let mode = match std::env::args().nth(1).map(|m| m.parse::<Mode>()) {
        None => Mode::BulkData,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("hiddenproc: {e}");
            return ExitCode::from(2);
        }
    };
    let report = Settings::from_env()
        .map_err(|e| e.to_string())
        .and_then(|s| Inspector::connect(&s).map_err(|e| e.to_string()))
        .and_then(|mut i| hidden_processes(&mut i, mode).map_err(|e| e.to_string()));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hiddenproc: {e}");
            return ExitCode::from(2);
        }
    };
    for p in &report.hidden {
        println!(
            "HIDDEN pid={} ppid={} uid={} comm={:?}: in the task list, not in /proc",
            p.pid, p.ppid, p.uid, p.comm
        );
    }
    for pid in &report.unlisted {
        println!("UNLISTED pid={pid}: in /proc, not in the task list");
    }
    println!(
        "{} tasks in the kernel's list, {} pids in /proc, {} hidden, {} unlisted ({})",
        report.tasks,
        report.proc_pids,
        report.hidden.len(),
        report.unlisted.len(),
        mode.name()
    );
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
