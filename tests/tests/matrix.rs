//! The tools of issue 15's matrix that `LD_PRELOAD` cannot reach
//! (`telebpf_tests::matrix`: a static C libbpf tool, the libbpf-rs example
//! linked statically, a Go cilium/ebpf tool), built in the repository,
//! offline. See docs/TESTING.md.
//!
//! First each is shown to work on its own: run as root directly on this
//! machine's kernel, it reports marked execs through its ring buffer, its
//! perf buffer and its `.bss` counter. So when one fails under telebpf, the
//! failure is telebpf's. Then `telebpf exec` is shown to refuse each with
//! one line: it cannot serve them yet, and must not let them act on the
//! host kernel.
//!
//! Root-only, like every suite here.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use telebpf_tests::matrix::{is_static_elf, Records, Tool};
use telebpf_tests::{run_with_timeout, say, stop_child, Harness};

/// Records each buffer must deliver.
const COUNT: usize = 3;

/// How long a native run may take, building excluded.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the tool itself is told: give up (exit 2) after this long.
const TOOL_TIMEOUT_MS: u32 = 45_000;

/// Pause between two marked execs.
const EXEC_INTERVAL: Duration = Duration::from_millis(50);

/// The comm of `tool`'s marked process (at most 15 bytes).
fn mark(tool: Tool) -> &'static str {
    match tool {
        Tool::StaticC => "tbmx-c",
        Tool::StaticRust => "tbmx-rs",
        Tool::Go => "tbmx-go",
    }
}

/// Builds `tool`, checking it is what the matrix needs: an ELF the preload
/// cannot reach (no program interpreter).
fn build(tool: Tool) -> PathBuf {
    let path = tool.build().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        is_static_elf(&path),
        Ok(true),
        "the {} at {} must be statically linked",
        tool.name(),
        path.display()
    );
    path
}

/// A copy of `/bin/true` named `mark` in the test's directory.
fn marker(h: &Harness, mark: &str) -> PathBuf {
    let path = h.dir().join(mark);
    fs::copy("/bin/true", &path).expect("copy /bin/true");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod marker");
    path
}

/// A running tool (as root directly, or as nobody through `telebpf
/// exec`), its stdout and stderr in one file.
struct Running {
    child: std::process::Child,
    out: PathBuf,
}

impl Running {
    /// `program args` as root, directly.
    fn start(h: &Harness, program: &Path, args: &[String]) -> Running {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(h.dir());
        Running::start_command(h, program, cmd)
    }

    /// `program args` as nobody through `telebpf exec` and the test's proxy.
    fn start_remote(h: &Harness, program: &Path, args: &[String]) -> Running {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = h.remote_program_command(program, &args);
        Running::start_command(h, program, cmd)
    }

    fn start_command(h: &Harness, program: &Path, mut cmd: Command) -> Running {
        let name = program.file_name().expect("a file name").to_string_lossy();
        let out = h.dir().join(format!("{name}.out"));
        let file = File::create(&out).expect("output file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Running { child, out }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output contains `needle` (`Ok`) or the tool exits
    /// or `timeout` passes (`Err` with the output).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}) before {needle:?}:\n{out}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no {needle:?} within {timeout:?}:\n{out}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Execs `marker` every [`EXEC_INTERVAL`] until the tool exits (its
    /// status) or `until` returns true for its output (`None`), at most
    /// [`RUN_TIMEOUT`]; the marked pids are pushed onto `pids`.
    fn mark_until(
        &mut self,
        marker: &Path,
        pids: &mut Vec<u32>,
        until: impl Fn(&str) -> bool,
    ) -> Option<ExitStatus> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if until(&self.output()) {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the tool neither exited nor got its records within {RUN_TIMEOUT:?}:\n{}",
                self.output()
            );
            pids.push(telebpf_tests::run_marked(marker));
            thread::sleep(EXEC_INTERVAL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        telebpf_tests::reap_child(&mut self.child);
    }
}

/// Runs `tool` as root on this machine until each buffer delivered
/// [`COUNT`] records of marked execs, and checks them; then, for the tools
/// that wait for a signal, that SIGTERM after one record ends the tool
/// cleanly (exit 0).
fn reports_marked_execs_natively(tool: Tool, test: &str) {
    reports_marked_execs(tool, test, false);
}

/// The same checks, natively as root (`remote` false) or as nobody
/// through `telebpf exec` and a Unix-socket proxy (`remote` true: the
/// seccomp supervisor serves the tool; nobody could not load anything
/// itself, so every record came through the proxy). The SIGTERM of the
/// second run goes to `telebpf exec`, which passes it on.
fn reports_marked_execs(tool: Tool, test: &str, remote: bool) {
    // Checked before the build, which the lock need not wait for.
    if !telebpf_tests::require_root(test) {
        return;
    }
    let program = build(tool);
    let h = if remote {
        Harness::start(test)
    } else {
        Harness::start_local_only(test)
    };
    let Some(h) = h else {
        return;
    };
    let start = |args: &[String]| {
        if remote {
            Running::start_remote(&h, &program, args)
        } else {
            Running::start(&h, &program, args)
        }
    };
    let how = if remote {
        "through the supervisor"
    } else {
        "natively"
    };
    let mark = mark(tool);
    let marker = marker(&h, mark);
    let ready = tool.ready_line(mark);

    let mut run = start(&tool.args(mark, COUNT as u32, TOOL_TIMEOUT_MS));
    run.wait_for(&ready, RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
    let mut pids = Vec::new();
    let status = run
        .mark_until(&marker, &mut pids, |_| false)
        .expect("runs until the tool exits");
    let out = run.output();
    assert!(
        status.success(),
        "{} failed ({status}):\n{out}",
        tool.name()
    );
    let records = Records::parse(tool, &out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    records
        .check(mark, &pids, COUNT)
        .unwrap_or_else(|e| panic!("{}: {e}:\n{out}", tool.name()));
    say(&format!(
        "{}: {how} {} ring buffer, {} perf buffer records, .bss counter {:?}",
        tool.name(),
        records.ringbuf.len(),
        records.perfbuf.len(),
        records.hits.last()
    ));
    if tool == Tool::StaticRust {
        // ringwatch has no "until a signal" mode; its own tests cover it.
        h.finish();
        return;
    }

    let mut run = start(&tool.args(mark, 0, TOOL_TIMEOUT_MS));
    run.wait_for(&ready, RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
    let mut pids = Vec::new();
    let got_one = |out: &str| out.contains(&format!("ringbuf {mark} pid "));
    let exited = run.mark_until(&marker, &mut pids, got_one);
    assert!(
        exited.is_none(),
        "{} exited with a count of 0 ({exited:?}):\n{}",
        tool.name(),
        run.output()
    );
    let started = Instant::now();
    stop_child(&mut run.child, libc::SIGTERM, Duration::from_secs(10));
    let status = run.child.wait().expect("wait for the tool");
    let out = run.output();
    say(&format!(
        "{}: SIGTERM ended it in {:?} ({status})",
        tool.name(),
        started.elapsed()
    ));
    assert!(
        status.success(),
        "{} must exit 0 on SIGTERM, got {status}:\n{out}",
        tool.name()
    );
    Records::parse(tool, &out)
        .and_then(|r| r.check(mark, &pids, 1))
        .unwrap_or_else(|e| panic!("{} until SIGTERM: {e}:\n{out}", tool.name()));
    h.finish();
}

/// `tests/c/matrix-tool.c` linked `-static` against Debian's libbpf
/// (skeleton, `.rodata` set before load, `ring_buffer__new`,
/// `perf_buffer__new`, a `.bss` counter read through the skeleton's mmap):
/// as root on this kernel, "ready" comes before any record, each buffer
/// delivers the marked execs and the counter counts them; with a count of
/// 0 it runs until SIGTERM and then exits 0.
#[test]
fn static_c_libbpf_tool_reports_marked_execs_natively() {
    reports_marked_execs_natively(
        Tool::StaticC,
        "static_c_libbpf_tool_reports_marked_execs_natively",
    );
}

/// `examples/ringwatch` (libbpf-rs 0.27) linked with glibc `crt-static`:
/// as root on this kernel, it reports the marked execs through its ring
/// buffer and perf buffer and its `.bss` counter counts them.
#[test]
fn static_libbpf_rs_ringwatch_reports_marked_execs_natively() {
    reports_marked_execs_natively(
        Tool::StaticRust,
        "static_libbpf_rs_ringwatch_reports_marked_execs_natively",
    );
}

/// `tests/go/matrix-tool` (cilium/ebpf 0.9.1 from Debian, Go 1.19,
/// `CGO_ENABLED=0`: a static Go binary): `LoadCollectionSpecFromReader`,
/// `RewriteConstants`, `ringbuf.NewReader`, `perf.NewReader`,
/// `link.Tracepoint`, the `.bss` counter read with a map lookup; as root on
/// this kernel it reports the marked execs through both buffers; with a
/// count of 0 it runs until SIGTERM and then exits 0.
#[test]
fn go_cilium_ebpf_tool_reports_marked_execs_natively() {
    reports_marked_execs_natively(
        Tool::Go,
        "go_cilium_ebpf_tool_reports_marked_execs_natively",
    );
}

/// The static C libbpf tool as nobody through `telebpf exec` and a
/// Unix-socket proxy: served by the seccomp supervisor (ring buffer, perf
/// buffer and the `.bss` counter through its mmap), the same checks as
/// natively, SIGTERM included.
#[test]
fn static_c_libbpf_tool_reports_marked_execs_through_the_supervisor() {
    reports_marked_execs(
        Tool::StaticC,
        "static_c_libbpf_tool_reports_marked_execs_through_the_supervisor",
        true,
    );
}

/// The C tool waiting on its ring buffer with `poll(2)` instead of
/// libbpf's epoll (`MATRIX_TOOL_POLL`), through the supervisor: the poll
/// sleeps on the ring's readiness and wakes for each record; the marked
/// execs arrive as with epoll.
#[test]
fn static_c_libbpf_tool_polling_its_ring_through_the_supervisor() {
    let test = "static_c_libbpf_tool_polling_its_ring_through_the_supervisor";
    if !telebpf_tests::require_root(test) {
        return;
    }
    let tool = Tool::StaticC;
    let program = build(tool);
    let Some(h) = Harness::start(test) else {
        return;
    };
    let mark = mark(tool);
    let marker = marker(&h, mark);
    let args = tool.args(mark, COUNT as u32, TOOL_TIMEOUT_MS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = h.remote_program_command(&program, &args);
    cmd.env("MATRIX_TOOL_POLL", "1");
    let mut run = Running::start_command(&h, &program, cmd);
    run.wait_for(&tool.ready_line(mark), RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut pids = Vec::new();
    let status = run
        .mark_until(&marker, &mut pids, |_| false)
        .expect("runs until the tool exits");
    let out = run.output();
    assert!(status.success(), "({status}):\n{out}");
    assert!(out.contains(&format!("polling {mark}\n")), "{out}");
    Records::parse(tool, &out)
        .and_then(|r| r.check(mark, &pids, COUNT))
        .unwrap_or_else(|e| panic!("{e}:\n{out}"));
    h.finish();
}

/// Static ringwatch (libbpf-rs, libbpf 1.7, which moves map fds onto
/// placeholder fds of its own with `dup3`) through the supervisor.
#[test]
fn static_libbpf_rs_ringwatch_reports_marked_execs_through_the_supervisor() {
    reports_marked_execs(
        Tool::StaticRust,
        "static_libbpf_rs_ringwatch_reports_marked_execs_through_the_supervisor",
        true,
    );
}

/// The Go cilium/ebpf tool (calls from any of the runtime's threads,
/// preempted by SIGURG) through the supervisor.
#[test]
fn go_cilium_ebpf_tool_reports_marked_execs_through_the_supervisor() {
    reports_marked_execs(
        Tool::Go,
        "go_cilium_ebpf_tool_reports_marked_execs_through_the_supervisor",
        true,
    );
}

/// Each matrix tool under the supervisor, waiting for records with a
/// count of 0, when its proxy is killed: telebpf says once that the program
/// is blind, and its next wait on its rings fails (`EIO`), so the tool
/// stops with its own error instead of waiting for records that cannot
/// come.
#[test]
fn matrix_tools_under_the_supervisor_learn_their_proxy_is_lost() {
    if !telebpf_tests::require_root("matrix_tools_under_the_supervisor_learn_their_proxy_is_lost") {
        return;
    }
    let programs: Vec<(Tool, PathBuf)> = Tool::ALL.iter().map(|&t| (t, build(t))).collect();
    for (tool, program) in programs {
        let Some(mut h) =
            Harness::start("matrix_tools_under_the_supervisor_learn_their_proxy_is_lost")
        else {
            return;
        };
        let mark = mark(tool);
        let marker = marker(&h, mark);
        let mut run = Running::start_remote(&h, &program, &tool.args(mark, 0, TOOL_TIMEOUT_MS));
        run.wait_for(&tool.ready_line(mark), RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
        let mut pids = Vec::new();
        let exited = run.mark_until(&marker, &mut pids, |out| {
            out.lines().any(|l| l.contains(mark) && l.contains("pid"))
        });
        assert!(
            exited.is_none(),
            "{} exited early:\n{}",
            tool.name(),
            run.output()
        );
        h.kill_proxy();
        let started = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = run.child.try_wait() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{} still waits 15 s after its proxy was killed:\n{}",
                tool.name(),
                run.output()
            );
            thread::sleep(Duration::from_millis(50));
        };
        let out = run.output();
        say(&format!(
            "{}: ended {:?} after the proxy was killed ({status})",
            tool.name(),
            started.elapsed()
        ));
        assert!(!status.success(), "{}: {out}", tool.name());
        assert_eq!(
            out.lines().filter(|l| l.contains("lost the proxy")).count(),
            1,
            "{}: one line says the program is blind:\n{out}",
            tool.name()
        );
        assert!(
            out.to_lowercase().contains("input/output error"),
            "{}: its wait failed with EIO:\n{out}",
            tool.name()
        );
    }
}

/// Each matrix tool, run **as root** through `telebpf exec` with no proxy
/// listening and a count of 0 (run until a signal: on a kernel it reached,
/// it would stay up with its program attached), fails by itself within the
/// time limit without printing "ready" or a record: it never loaded and
/// attached anything on the host kernel, which as root it could (the native
/// tests show it does when run directly). True of the refusal today and of
/// the supervisor that will replace it.
#[test]
fn matrix_tools_as_root_with_the_proxy_down_fail_instead_of_running_on_the_host() {
    if !telebpf_tests::require_root(
        "matrix_tools_as_root_with_the_proxy_down_fail_instead_of_running_on_the_host",
    ) {
        return;
    }
    let programs: Vec<(Tool, PathBuf)> = Tool::ALL.iter().map(|&t| (t, build(t))).collect();
    let Some(h) = Harness::start_without_proxy(
        "matrix_tools_as_root_with_the_proxy_down_fail_instead_of_running_on_the_host",
    ) else {
        return;
    };
    let down = format!("unix:{}", h.dir().join("no-proxy.sock").display());
    for (tool, program) in programs {
        let mark = mark(tool);
        let mut cmd = Command::new(h.telebpf());
        cmd.args(["exec", "--target", &down, "--key-file"])
            .arg(h.key())
            .arg("--")
            .arg(&program)
            .args(tool.args(mark, 0, TOOL_TIMEOUT_MS))
            .current_dir(h.dir());
        let out = run_with_timeout(
            cmd,
            &format!("[root] telebpf exec (proxy down) {}", program.display()),
            RUN_TIMEOUT,
        );
        say(&format!(
            "{}: {:?}, {:?}",
            tool.name(),
            out.status,
            out.stderr_text().trim()
        ));
        assert!(
            !out.success(),
            "{} must fail: {}",
            tool.name(),
            out.describe()
        );
        let all = format!("{}{}", out.stdout_text(), out.stderr_text());
        assert!(
            !all.contains(&tool.ready_line(mark)),
            "{} got ready: it ran against the host kernel: {}",
            tool.name(),
            out.describe()
        );
        let records = Records::parse(tool, &all).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            records,
            Records::default(),
            "{} reported records: {}",
            tool.name(),
            out.describe()
        );
    }
}
