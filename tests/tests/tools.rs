//! Debian's unmodified libbpf-tools, run as `nobody` through telebpf, see
//! events provoked on the proxy's side (here: this machine, where the
//! proxy runs as root). Each test marks its event (an exec argument, a file
//! name, a process name, a port, a process id the tool filters on) and fails
//! if the mark is missing from the tool's output. The tools stream through
//! perf buffers, attach tracepoints through `perf_event_open`, and read
//! their `.rodata` through `mmap` — all forwarded and mirrored.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telebpf_tests::{
    find_program, histogram_total, say, unique_name, wait_until, Harness, IdSnapshot,
    SESSION_CLOSE_TIMEOUT,
};

/// How long a tool may take to attach and print its header.
const READY: Duration = Duration::from_secs(60);
/// How long a streamed event may take to appear.
const EVENT: Duration = Duration::from_secs(15);
/// How long a stopped tool may take to exit before it is killed.
const STOP: Duration = Duration::from_secs(20);

/// Runs a command as root on the proxy's side.
fn provoke(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect("provoke");
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

/// A copy of /bin/true (or another binary) under a marked name.
fn marked_binary(dir: &Path, name: &str, from: &str) -> PathBuf {
    let p = dir.join(name);
    fs::copy(from, &p).expect("copy binary");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// A process that keeps sleeping briefly (scheduler wake-ups, syscalls) for
/// `secs` seconds, for the tools that filter by pid; killed and reaped on
/// drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(secs: u32) -> Sleeper {
        Sleeper(
            Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "i=0; while [ $i -lt {} ]; do sleep 0.01; i=$((i+1)); done",
                        secs * 100
                    ),
                ])
                .spawn()
                .expect("sleeper"),
        )
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn execsnoop_sees_a_marked_exec() {
    let Some(h) = Harness::start("execsnoop_sees_a_marked_exec") else {
        return;
    };
    let Some(mut tool) = h.start_tool("execsnoop", &[]) else {
        return;
    };
    tool.wait_for("PCOMM", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        let mark = unique_name("tbexec");
        provoke("/bin/true", &[&mark]);
        mark
    })
    .unwrap();
    tool.stop(libc::SIGINT, STOP);
    h.finish();
}

#[test]
fn opensnoop_sees_a_marked_open() {
    let Some(h) = Harness::start("opensnoop_sees_a_marked_open") else {
        return;
    };
    let Some(mut tool) = h.start_tool("opensnoop", &[]) else {
        return;
    };
    tool.wait_for("PATH", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        let path = h.dir().join(unique_name("tbopen"));
        fs::write(&path, b"x").unwrap();
        path.display().to_string()
    })
    .unwrap();
    tool.stop(libc::SIGINT, STOP);
    h.finish();
}

#[test]
fn exitsnoop_sees_a_marked_exit_code() {
    let Some(h) = Harness::start("exitsnoop_sees_a_marked_exit_code") else {
        return;
    };
    let Some(mut tool) = h.start_tool("exitsnoop", &[]) else {
        return;
    };
    tool.wait_for("PCOMM", READY).unwrap();
    let name = "tbexit77";
    let sh = marked_binary(h.dir(), name, "/bin/sh");
    let mut n = 0;
    let seen = tool
        .wait_for_event(EVENT, || {
            // The line's start (the comm) and its pid mark each exit.
            let mut child = Command::new(&sh).args(["-c", "exit 77"]).spawn().unwrap();
            let pid = child.id();
            assert_eq!(child.wait().unwrap().code(), Some(77));
            n += 1;
            format!("{name:<16} {pid:<7}")
        })
        .unwrap_or_else(|e| panic!("exitsnoop missed {name} exiting with 77 ({n} tries): {e}"));
    let out = tool.output();
    assert!(
        out.lines()
            .any(|l| l.starts_with(&seen) && l.contains("77")),
        "exitsnoop's line for {name} lacks its exit code 77:\n{out}"
    );
    tool.stop(libc::SIGINT, STOP);
    h.finish();
}

#[test]
fn tcplife_sees_a_marked_connection() {
    let Some(h) = Harness::start("tcplife_sees_a_marked_connection") else {
        return;
    };
    let Some(mut tool) = h.start_tool("tcplife", &[]) else {
        return;
    };
    tool.wait_for("PID", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut a, _) = listener.accept().unwrap();
        c.write_all(&[7u8; 3000]).unwrap();
        let mut buf = [0u8; 3000];
        a.read_exact(&mut buf).unwrap();
        format!(" {port} ")
    })
    .unwrap();
    tool.stop(libc::SIGINT, STOP);
    h.finish();
}

/// Runs `tool -p PID` against a process that keeps waking up for a few
/// seconds, and returns the tool's output after SIGINT.
fn run_pid_filtered(h: &Harness, tool: &str) -> Option<(String, String)> {
    let sleeper = Sleeper::start(30);
    let pid = sleeper.pid();
    let mut tool = h.start_tool(tool, &["-p", &pid])?;
    tool.wait_for("Tracing", READY).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = tool.stop(libc::SIGINT, STOP);
    drop(sleeper);
    Some((pid, out))
}

#[test]
fn runqlat_measures_a_marked_process() {
    let Some(h) = Harness::start("runqlat_measures_a_marked_process") else {
        return;
    };
    let Some((pid, out)) = run_pid_filtered(&h, "runqlat") else {
        return;
    };
    assert!(
        histogram_total(&out) > 0,
        "runqlat -p {pid} saw no wake-up of the marked process:\n{out}"
    );
    h.finish();
}

#[test]
fn syscount_counts_a_marked_process() {
    let Some(h) = Harness::start("syscount_counts_a_marked_process") else {
        return;
    };
    let Some((pid, out)) = run_pid_filtered(&h, "syscount") else {
        return;
    };
    // The sleeper forks and waits for `sleep` a hundred times a second.
    assert!(
        out.lines().any(|l| l.starts_with("wait4")
            || l.starts_with("clone")
            || l.starts_with("rt_sigaction")),
        "syscount -p {pid} did not count the marked process's syscalls:\n{out}"
    );
    h.finish();
}

#[test]
fn biolatency_measures_provoked_disk_io() {
    let Some(h) = Harness::start("biolatency_measures_provoked_disk_io") else {
        return;
    };
    let Some(mut tool) = h.start_tool("biolatency", &[]) else {
        return;
    };
    tool.wait_for("Tracing", READY).unwrap();
    // Direct I/O on the disk under the temp dir reaches the block layer.
    let file = h.dir().join("bio.dat");
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", file.display()),
            "bs=1M",
            "count=8",
            "oflag=direct,sync",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let direct_ok = status.success();
    if !direct_ok {
        // tmpfs has no O_DIRECT: write through the page cache and sync.
        provoke(
            "dd",
            &[
                "if=/dev/zero",
                &format!("of={}", file.display()),
                "bs=1M",
                "count=8",
                "conv=fsync",
            ],
        );
    }
    provoke("sync", &[]);
    std::thread::sleep(Duration::from_secs(1));
    let out = tool.stop(libc::SIGINT, STOP);
    assert!(
        histogram_total(&out) > 0,
        "biolatency saw no block I/O after writing 8 MiB with sync:\n{out}"
    );
    h.finish();
}

/// Killing the tool with SIGKILL while events stream leaves nothing behind
/// in the guest: no program, map, link or BTF object, and no perf event
/// held by the proxy.
#[test]
fn sigkill_mid_stream_leaves_nothing_behind() {
    let Some(h) = Harness::start("sigkill_mid_stream_leaves_nothing_behind") else {
        return;
    };
    let before = h.settled_local_ids();
    let Some(mut tool) = h.start_tool("execsnoop", &[]) else {
        return;
    };
    tool.wait_for("PCOMM", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        let mark = unique_name("tbkill");
        provoke("/bin/true", &[&mark]);
        mark
    })
    .unwrap();
    // Still streaming: keep events coming while it dies.
    let mut provoker = Command::new("sh")
        .args(["-c", "while true; do /bin/true; done"])
        .spawn()
        .unwrap();
    let during = h.local_ids().minus(&before);
    assert!(
        !during.set(telebpf_tests::ObjKind::Prog).is_empty(),
        "execsnoop's programs are not loaded in the guest"
    );
    tool.stop(libc::SIGKILL, STOP);
    let proxy_pid = proxy_pid(&h);
    let result = wait_until(SESSION_CLOSE_TIMEOUT, || {
        let left: IdSnapshot = h.local_ids().minus(&before);
        let perf = perf_events_held(proxy_pid);
        if left.intersects(&during) || perf > 0 {
            Err(format!(
                "left behind: {left:?}, {perf} perf events in the proxy"
            ))
        } else {
            Ok(())
        }
    });
    let _ = provoker.kill();
    let _ = provoker.wait();
    result.unwrap();
    h.finish();
}

/// The pid of this test's proxy (the one listening on its socket).
fn proxy_pid(h: &Harness) -> u32 {
    let target = h.target();
    let sock = target.trim_start_matches("unix:");
    let out = Command::new("pgrep").args(["-f", sock]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "telebpf-proxy")
        })
        .expect("the proxy's pid")
}

/// Perf events the proxy holds open.
fn perf_events_held(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[perf_event]")
                })
                .count()
        })
        .unwrap_or(0)
}

/// A tool this kernel cannot support (kprobes, which it lacks) fails
/// through telebpf exactly as it fails locally: libbpf's legacy attach path
/// asks the guest's tracefs and gets the guest's answer.
#[test]
fn kprobe_tool_fails_as_it_does_locally() {
    let Some(h) = Harness::start("kprobe_tool_fails_as_it_does_locally") else {
        return;
    };
    let Some(program) = find_program("capable") else {
        say("SKIP: capable is not installed");
        return;
    };
    let local = Command::new(&program)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let Some(tool) = h.start_tool("capable", &[]) else {
        return;
    };
    let deadline = Instant::now() + READY;
    let mut tool = tool;
    while tool.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "capable did not exit:\n{}",
            tool.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let remote = tool.output();
    let local_err = String::from_utf8_lossy(&local.stderr);
    let first = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("libbpf:"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    };
    if local.status.success() {
        say("SKIP: capable works on this kernel (it has kprobes); nothing to compare");
        return;
    }
    assert!(
        !first(&local_err).is_empty(),
        "capable failed locally without libbpf messages:\n{local_err}"
    );
    assert_eq!(
        first(&remote),
        first(&local_err),
        "remote failure differs from local:\n{remote}"
    );
    h.finish();
}

/// execsnoop and opensnoop (dynamically linked, so the preload would reach
/// them) with `telebpf exec --supervise`: served by the seccomp supervisor
/// instead — through the dynamic loader's calls, libbpf's perf buffer and
/// its epoll — they print a marked exec and a marked open.
#[test]
fn libbpf_tools_under_the_supervisor_see_marked_events() {
    let Some(h) = Harness::start("libbpf_tools_under_the_supervisor_see_marked_events") else {
        return;
    };
    let execsnoop = find_program("execsnoop").expect("execsnoop (scripts/setup.sh: libbpf-tools)");
    let mut tool = h.start_supervised_tool(&execsnoop, &[]);
    tool.wait_for("PCOMM", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        let mark = unique_name("tbsvexec");
        provoke("/bin/true", &[&mark]);
        mark
    })
    .unwrap();
    tool.stop(libc::SIGINT, STOP);

    let opensnoop = find_program("opensnoop").expect("opensnoop (scripts/setup.sh: libbpf-tools)");
    let mut tool = h.start_supervised_tool(&opensnoop, &[]);
    tool.wait_for("PATH", READY).unwrap();
    tool.wait_for_event(EVENT, || {
        let path = h.dir().join(unique_name("tbsvopen"));
        fs::write(&path, b"x").unwrap();
        path.display().to_string()
    })
    .unwrap();
    tool.stop(libc::SIGINT, STOP);
    h.finish();
}
