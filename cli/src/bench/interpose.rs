//! `telebpf bench interpose`: what the preload adds to a program's calls
//! that do not concern the guest.
//!
//! Every call a tool makes to an interposed libc function goes through the
//! preload's hook first, BPF or not; the hook must let a host path or a
//! host fd through in a few instructions. The figure is therefore a count
//! of instructions, not a time: a small C program (`interpose.c`, built
//! here with `cc -O2`) repeats one call (or pair) in a loop, and
//! `valgrind --tool=callgrind --toggle-collect=measured` counts the
//! instructions executed inside that loop, without the preload and with
//! it (and, with `--baseline`, with another build of it, e.g. `main`'s),
//! in the same run. Instruction counts do not depend on the machine's
//! load, so one run of each is enough.
//!
//! With the preload the program runs with `TELEBPF_TARGET` set (an address
//! nobody listens on): the hooks are armed exactly as under `telebpf exec`,
//! but none of these calls concerns the guest, so the preload never
//! connects (a connection attempt would fail the call, which the program
//! reports).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::CliError;
use crate::exec::preload_path;

/// The measured program's source.
const SOURCE: &str = include_str!("interpose.c");

/// Where the armed preload is told the proxy is (never connected to).
const TARGET: &str = "unix:/nonexistent/telebpf-bench-interpose.sock";

/// One measured case: what the table calls it, and the program's arguments.
struct Case {
    /// The table's row name.
    name: &'static str,
    /// The program's OP argument.
    op: &'static str,
    /// The program's PATH argument (for `open`).
    path: Option<&'static str>,
}

/// The cases, in the table's order.
const CASES: &[Case] = &[
    Case {
        name: "read (1 B of /dev/zero)",
        op: "read",
        path: None,
    },
    Case {
        name: "fstat",
        op: "fstat",
        path: None,
    },
    Case {
        name: "open+close /etc/hostname",
        op: "open",
        path: Some("/etc/hostname"),
    },
    Case {
        name: "open+close /proc/self/stat",
        op: "open",
        path: Some("/proc/self/stat"),
    },
    // A host path under /sys that programs read often. Not one under
    // /sys/fs/cgroup: with a target set that tree is the guest's (issue
    // #17), so its paths are no longer host paths.
    Case {
        name: "open+close /sys/devices/…/core_id",
        op: "open",
        path: Some("/sys/devices/system/cpu/cpu0/topology/core_id"),
    },
    Case {
        name: "mmap+munmap (anonymous)",
        op: "mmap",
        path: None,
    },
    Case {
        name: "dup+close",
        op: "dup",
        path: None,
    },
    Case {
        name: "syscall(SYS_getpid)",
        op: "getpid",
        path: None,
    },
];

/// Runs `cmd`, which must exit 0, and returns its stderr (where callgrind
/// writes its summary); `what` names it in errors.
fn run_tool(cmd: &mut Command, what: &str) -> Result<String, CliError> {
    let out = cmd.output().map_err(|source| CliError::Run {
        program: what.to_string(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(CliError::Bench(format!(
            "{what} failed ({}): {}",
            out.status,
            text.trim()
        )));
    }
    Ok(text)
}

/// Builds the measured program in `dir`.
fn build(dir: &Path) -> Result<PathBuf, CliError> {
    let src = dir.join("interpose.c");
    let exe = dir.join("interpose");
    std::fs::write(&src, SOURCE)
        .map_err(|e| CliError::Bench(format!("writing {}: {e}", src.display())))?;
    run_tool(
        Command::new("cc").arg("-O2").arg("-o").arg(&exe).arg(&src),
        "cc -O2 interpose.c",
    )?;
    Ok(exe)
}

/// Instructions per call of `case`, with `preload` (armed) or without.
fn measure(exe: &Path, case: &Case, calls: u64, preload: Option<&Path>) -> Result<f64, CliError> {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--toggle-collect=measured",
    ])
    .arg(exe)
    .arg(case.op)
    .arg(calls.to_string())
    .args(case.path)
    .env_remove("LD_PRELOAD")
    .env_remove(telebpf_client::ENV_TARGET)
    .env_remove(telebpf_client::ENV_KEY_FILE);
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib)
            .env(telebpf_client::ENV_TARGET, TARGET);
    }
    let log = run_tool(&mut cmd, &format!("valgrind … {} {}", case.op, calls))?;
    let collected = collected(&log)
        .ok_or_else(|| CliError::Bench(format!("no callgrind summary in: {log}")))?;
    Ok(collected as f64 / calls as f64)
}

/// The seccomp supervisor's cost, which callgrind cannot count (the
/// filter runs in the kernel): each case timed natively and under
/// `telebpf exec --supervise` in the same run, fastest of nine batches.
/// Calls on the program's own fds pass the filter and stay in the kernel;
/// every `open` is handed to the supervisor, which must read the path to
/// know it is the host's.
fn supervised_costs(dir: &Path, exe: &Path, calls: u64) -> Result<(), CliError> {
    let key = dir.join("key");
    telebpf_protocol::key::Psk::write_new(&key).map_err(CliError::WriteKey)?;
    let telebpf = std::env::current_exe()?;
    // Fewer calls: a notified call costs microseconds.
    let calls = calls.clamp(9, 90_000);
    println!();
    println!(
        "ns per call, natively and under the seccomp supervisor (`telebpf exec --supervise`; fastest of 9 batches, {calls} calls each)"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>8}  notified",
        "call", "native", "supervised", "extra"
    );
    for case in CASES {
        let time = |supervised: bool| -> Result<f64, CliError> {
            let mut cmd = if supervised {
                let mut c = Command::new(&telebpf);
                c.args(["exec", "--supervise", "--target", TARGET, "--key-file"])
                    .arg(&key)
                    .arg("--")
                    .arg(exe);
                c
            } else {
                Command::new(exe)
            };
            cmd.arg(case.op)
                .arg(calls.to_string())
                .args(case.path)
                .env("TELEBPF_BENCH_TIME", "1")
                .env_remove("LD_PRELOAD");
            let out = cmd.output().map_err(|source| CliError::Run {
                program: "interpose".into(),
                source,
            })?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .strip_prefix("ns_per_call=")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    CliError::Bench(format!(
                        "interpose {}: {}{}",
                        case.op,
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                })
        };
        let native = time(false)?;
        let supervised = time(true)?;
        println!(
            "{:<36} {:>10.1} {:>10.1} {:>8.1}  {}",
            case.name,
            native,
            supervised,
            supervised - native,
            if case.op == "open" { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// The instruction count of callgrind's summary line on stderr,
/// `==PID== Collected : N`.
fn collected(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
}

/// Runs the benchmark: `calls` per case, the preload beside this executable
/// (or `$TELEBPF_PRELOAD`), and `baseline`, another preload, if given.
pub fn run(calls: u64, baseline: Option<&Path>) -> Result<(), CliError> {
    let preload = preload_path()?;
    run_tool(
        Command::new("valgrind").arg("--version"),
        "valgrind --version",
    )?;
    let dir = std::env::temp_dir().join(format!("telebpf-bench-interpose-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Bench(format!("creating {}: {e}", dir.display())))?;
    let result = (|| {
        let exe = build(&dir)?;
        println!("instructions per call (callgrind, {calls} calls each, {TARGET} as the target)");
        println!("preload: {}", preload.display());
        if let Some(b) = baseline {
            println!("baseline: {}", b.display());
        }
        print!(
            "{:<36} {:>10} {:>10} {:>8}",
            "call", "no preload", "preload", "extra"
        );
        if baseline.is_some() {
            print!(" {:>10} {:>8}", "baseline", "extra");
        }
        println!();
        for case in CASES {
            let bare = measure(&exe, case, calls, None)?;
            let with = measure(&exe, case, calls, Some(&preload))?;
            print!(
                "{:<36} {:>10.1} {:>10.1} {:>8.1}",
                case.name,
                bare,
                with,
                with - bare
            );
            if let Some(b) = baseline {
                let base = measure(&exe, case, calls, Some(b))?;
                print!(" {:>10.1} {:>8.1}", base, base - bare);
            }
            println!();
        }
        supervised_costs(&dir, &exe, calls)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_summary() {
        let log = "==16713== Callgrind, a call-graph generating cache profiler\n\
                   ==16713== Events    : Ir\n\
                   ==16713== Collected : 3980019\n\
                   ==16713== I   refs:      3,980,019\n";
        assert_eq!(collected(log), Some(3_980_019));
        assert_eq!(collected("==1== Events : Ir\n"), None);
    }
}
