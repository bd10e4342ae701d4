//! End-to-end test harness of telebpf.
//!
//! The tests (in `tests/e2e.rs` of this crate) run Debian's unmodified
//! `bpftool` as `nobody`, with no capabilities, through `telebpf exec`
//! against a `telebpf-proxy` running as root on the same machine, and compare
//! what it sees and does with `bpftool` run directly as root. Since the
//! client has no privileges at all, every success can only have come through
//! the proxy.
//!
//! This crate depends on none of the product crates: it drives the release
//! binaries that `cargo build --release --workspace` made (see [`bin_dir`]).
//! See `docs/TESTING.md` for how to run the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Uid and gid of `nobody` / `nogroup` on Debian.
pub const NOBODY: u32 = 65534;

/// The lock file that keeps e2e tests (of this and of any concurrent
/// `cargo test` process) from running at the same time: they change global
/// kernel state and compare whole listings.
pub const LOCK_PATH: &str = "/tmp/telebpf-tests.lock";

/// How long the proxy may take to print its `listening on` line.
pub const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the proxy may take to exit after SIGTERM.
pub const PROXY_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Default limit of one command (local or remote). Generous: it is a hang
/// detector, not a speed assertion.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Limit for the big commands (`btf dump` of vmlinux, `feature probe`).
pub const LONG_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the proxy may take to close a session's objects once its client
/// is gone (the issue's requirement).
pub const SESSION_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long local listings may take to settle (objects of exited processes
/// whose kernel freeing is deferred by RCU, e.g. maps of a freed program).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Environment variable of `cargo test`: a `--policy` for every proxy the
/// harness starts with [`Harness::start_proxy`].
pub const ENV_E2E_POLICY: &str = "TELEBPF_E2E_POLICY";

/// `PATH` given to every command the tests run.
pub const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fields of `bpftool … --json` objects that legitimately differ between two
/// views of the same kernel object, and are therefore not compared:
/// * `pids`: names the processes holding an fd to the object. Remotely that
///   is `telebpf-proxy` (it holds the guest fds), locally nobody (or the
///   local bpftool itself). Debian's bpftool is built without skeletons and
///   prints no `pids` at all, but other builds do.
/// * `run_time_ns`, `run_cnt`, `recursion_misses`: run counters, which move
///   whenever the program runs between the two listings (and only appear
///   when `kernel.bpf_stats_enabled` is set).
///
/// `loaded_at` is compared with a tolerance, see [`compare_objects`].
/// `bytes_memlock` IS compared exactly: bpftool reads it from
/// `/proc/self/fdinfo/<fd>`, which telebpf forwards for forwarded fds, and
/// the guest kernel reports the same value for the same object in both runs.
pub const VOLATILE_FIELDS: &[&str] = &["pids", "run_time_ns", "run_cnt", "recursion_misses"];

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine for this run: `<tag>_<pid>_<n>`.
pub fn unique_name(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::SeqCst)
    )
}

/// Whether the test process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes a line straight to the process's stderr, bypassing libtest's
/// output capture, so that it is seen even when the test passes.
pub fn say(line: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Prints a visible skip line and returns false when not root.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    say(&format!(
        "SKIP {test}: the telebpf e2e tests need root (they compare with bpftool run as root \
         and drop to nobody for the client); run them with sudo, see docs/TESTING.md"
    ));
    false
}

/// An exclusive `flock` on [`LOCK_PATH`], released on drop.
pub struct TestLock {
    file: File,
}

impl TestLock {
    /// Blocks until the lock is held.
    pub fn acquire() -> TestLock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_PATH}: {e}"));
        loop {
            // SAFETY: flock on a valid, open fd owned by `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                panic!("flock {LOCK_PATH}: {err}");
            }
        }
        TestLock { file }
    }
}

impl Drop for TestLock {
    fn drop(&mut self) {
        // SAFETY: flock on a valid, open fd owned by `self.file`.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Finds an executable by name in `PATH` and the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(PATH_ENV.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn require_program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` not found: install Debian's `{package}` package (scripts/setup.sh)")
    })
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the product's release binaries are: `$TELEBPF_BIN_DIR` if set,
/// else `$CARGO_TARGET_DIR/release`, else `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TELEBPF_BIN_DIR") {
        return PathBuf::from(dir);
    }
    target_dir().join("release")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    }
}

/// A file of the release build (binary or library), checked to exist.
pub fn product_file(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --release --workspace` first \
         (or point TELEBPF_BIN_DIR / CARGO_TARGET_DIR at the build)",
        path.display()
    );
    path
}

/// Path of a test object built by build.rs from `bpf/tests/<stem>.bpf.c`
/// (`ringwatch`: from `examples/ringwatch/src/bpf/ringwatch.bpf.c`).
pub fn built_object(stem: &str) -> PathBuf {
    let error = env!("TELEBPF_TEST_BPF_ERROR");
    assert!(
        error.is_empty(),
        "the eBPF test objects did not build: {error}"
    );
    let path = match stem {
        "forward_test" => env!("TELEBPF_TEST_OBJ_FORWARD_TEST"),
        "iter_test" => env!("TELEBPF_TEST_OBJ_ITER_TEST"),
        "net_test" => env!("TELEBPF_TEST_OBJ_NET_TEST"),
        "cgroup_test" => env!("TELEBPF_TEST_OBJ_CGROUP_TEST"),
        "ringwatch" => env!("TELEBPF_TEST_OBJ_RINGWATCH"),
        other => panic!("unknown test object {other}"),
    };
    let path = PathBuf::from(path);
    assert!(path.is_file(), "test object {} is missing", path.display());
    path
}

pub mod matrix;
pub mod monitor;
pub mod raw_bpf;

/// Names in `bpf/tests/forward_test.bpf.c`.
pub mod forward_test {
    /// The tracepoint program.
    pub const PROG: &str = "tb_getpid";
    /// Its hash map.
    pub const HASH_MAP: &str = "tb_counts";
    /// Its ring buffer map.
    pub const RINGBUF_MAP: &str = "tb_events";
    /// Suffix of the name libbpf gives the `.bss` map (`<objname>.bss`,
    /// the object name being truncated to fit 15 characters).
    pub const BSS_SUFFIX: &str = ".bss";
}

/// Names in `bpf/tests/iter_test.bpf.c`.
pub mod iter_test {
    /// The iterator program.
    pub const PROG: &str = "tb_iter_maps";
}

/// Names in `bpf/tests/net_test.bpf.c`, and what the guest-interface tests
/// read of bpftool's and `tests/c/net-attach.c`'s output.
pub mod net_test {
    use serde_json::Value;

    /// The XDP program.
    pub const XDP_PROG: &str = "tb_xdp_pass";
    /// The tc classifier.
    pub const TC_PROG: &str = "tb_tc_pass";

    /// The entries of one section (`"xdp"`, `"tc"`) of `bpftool net list
    /// --json` output.
    fn section<'a>(v: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(move |entry| entry.get(name).and_then(Value::as_array))
            .flatten()
    }

    fn text(v: &Value, field: &str) -> String {
        v.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    fn id(v: &Value) -> u64 {
        v.get("id").and_then(Value::as_u64).unwrap_or(0)
    }

    /// `(devname, program id)` of every XDP attachment in `bpftool net
    /// list --json` output.
    pub fn xdp_attachments(v: &Value) -> Vec<(String, u64)> {
        section(v, "xdp")
            .map(|x| (text(x, "devname"), id(x)))
            .collect()
    }

    /// `(devname, kind, program id)` of every tc attachment in `bpftool net
    /// list --json` output (kind: `clsact/ingress`, …).
    pub fn tc_attachments(v: &Value) -> Vec<(String, String, u64)> {
        section(v, "tc")
            .map(|x| (text(x, "devname"), text(x, "kind"), id(x)))
            .collect()
    }

    /// Checks that program `id` is attached to `lo` in the listing `there`
    /// (XDP for `mode` "xdp", else tc `clsact/ingress`) and nowhere in the
    /// listing `elsewhere`.
    pub fn check_on_lo(
        mode: &str,
        there: &Value,
        elsewhere: &Value,
        id: u64,
    ) -> Result<(), String> {
        let (found, leaked) = if mode == "xdp" {
            (
                xdp_attachments(there).contains(&("lo".to_string(), id)),
                xdp_attachments(elsewhere).iter().any(|(_, i)| *i == id),
            )
        } else {
            let on_lo = ("lo".to_string(), "clsact/ingress".to_string(), id);
            (
                tc_attachments(there).contains(&on_lo),
                tc_attachments(elsewhere).iter().any(|(_, _, i)| *i == id),
            )
        };
        match (found, leaked) {
            (true, false) => Ok(()),
            (false, _) => Err(format!("{mode} program {id} is not on lo: {there}")),
            (true, true) => Err(format!(
                "{mode} program {id} is listed elsewhere too: {elsewhere}"
            )),
        }
    }

    /// Whether a listing has no XDP and no tc attachment.
    pub fn nothing_attached(v: &Value) -> bool {
        xdp_attachments(v).is_empty() && tc_attachments(v).is_empty()
    }

    /// The program id and the id the kernel reported attached, from
    /// net-attach's `attached ID query QID` line.
    pub fn attached_ids(output: &str) -> (u64, u64) {
        let line = output
            .lines()
            .find(|l| l.starts_with("attached "))
            .unwrap_or_else(|| panic!("no attached line: {output}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> u64 {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("malformed attached line: {line}"))
        };
        (number(1), number(3))
    }
}

/// Builds `tests/c/net-attach.c` (a libbpf program attaching
/// `net_test.bpf.o`'s programs with `bpf_xdp_attach` or the tc hook API)
/// into `dir/cc/` (where nobody can run it, and which `Harness::copy_in`
/// does not copy onto), linked with Debian's libbpf; returns its path.
pub fn build_net_attach(dir: &Path) -> PathBuf {
    build_net_attach_as(dir, false)
}

/// [`build_net_attach`] linked `-static` (`net-attach-static`): a program
/// the preload cannot reach, which `telebpf exec` serves with the seccomp
/// supervisor.
pub fn build_net_attach_static(dir: &Path) -> PathBuf {
    build_net_attach_as(dir, true)
}

fn build_net_attach_as(dir: &Path, static_link: bool) -> PathBuf {
    let src = workspace_root().join("tests/c/net-attach.c");
    let cc_dir = dir.join("cc");
    fs::create_dir_all(&cc_dir).expect("mkdir cc");
    fs::set_permissions(&cc_dir, fs::Permissions::from_mode(0o755)).expect("chmod cc");
    let out = cc_dir.join(if static_link {
        "net-attach-static"
    } else {
        "net-attach"
    });
    let mut cmd = Command::new("cc");
    if static_link {
        cmd.arg("-static");
    }
    cmd.args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lbpf");
    if static_link {
        cmd.args(["-lelf", "-lz"]);
    }
    run_with_timeout(cmd, "cc net-attach.c -lbpf", COMMAND_TIMEOUT).expect_success();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).expect("chmod net-attach");
    out
}

/// Runs `marker` (a marked program: a copy of `/bin/true` under the name a
/// tool watches for) to its end, checks it succeeded, and returns its pid.
pub fn run_marked(marker: &Path) -> u32 {
    let mut child = Command::new(marker)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot exec {}: {e}", marker.display()));
    let status = child.wait().expect("wait for the marked process");
    assert!(status.success(), "{} failed: {status}", marker.display());
    child.id()
}

/// Runs `run` (a tool run to its end) while another thread runs `marker`
/// ([`run_marked`]) every `interval` until `run` returns (at most
/// [`COMMAND_TIMEOUT`]); gives its output and the pids of the marked
/// processes.
pub fn with_marked_execs(
    marker: &Path,
    interval: Duration,
    run: impl FnOnce() -> CmdOutput,
) -> (CmdOutput, Vec<u32>) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let trigger = s.spawn(|| {
            let mut pids = Vec::new();
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                pids.push(run_marked(marker));
                thread::sleep(interval);
            }
            pids
        });
        let out = run();
        stop.store(true, Ordering::SeqCst);
        let pids = trigger.join().expect("the exec thread panicked");
        (out, pids)
    })
}

/// Lossy text of a byte buffer.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n… ({} more bytes)", &s[..cut], s.len() - cut)
}

/// The result of one command.
#[derive(Debug)]
pub struct CmdOutput {
    /// What was run, for messages.
    pub what: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// All of its stdout.
    pub stdout: Vec<u8>,
    /// All of its stderr.
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        text(&self.stdout)
    }

    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        text(&self.stderr)
    }

    /// Command, status and (truncated) output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` -> {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.what,
            self.status,
            truncated(&self.stderr_text(), 6000),
            truncated(&self.stdout_text(), 6000)
        )
    }

    /// Panics unless it exited 0.
    pub fn expect_success(&self) -> &Self {
        assert!(self.success(), "command failed: {}", self.describe());
        self
    }

    /// Panics unless it exited 0, then parses stdout as JSON.
    pub fn json(&self) -> Value {
        self.expect_success();
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

fn shell_words<I, S>(program: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

fn kill_pid(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only
    // yields ESRCH, which is fine here.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn read_all_in_thread<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` in its own process group with stdin from /dev/null, collecting
/// stdout and stderr; panics (after killing the whole group) if it has not
/// finished within `timeout`.
pub fn run_with_timeout(mut cmd: Command, what: &str, timeout: Duration) -> CmdOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let pgid = child.id() as i32;
    let out_rx = read_all_in_thread(child.stdout.take().expect("piped stdout"));
    let err_rx = read_all_in_thread(child.stderr.take().expect("piped stderr"));
    let mut hang: Option<String> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
        if Instant::now() >= deadline {
            hang = Some(format!(
                "did not exit within {timeout:?} (a hang); killed its process group"
            ));
            kill_pid(-pgid, libc::SIGKILL);
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Something else (a grandchild, or a process outside the group it
    // passed its fds to) may still hold the pipes: give it until the
    // deadline, then kill the group.
    let mut collect = |rx: &mpsc::Receiver<Vec<u8>>, name: &str| -> Vec<u8> {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100);
        match rx.recv_timeout(left) {
            Ok(buf) => buf,
            Err(_) => {
                if hang.is_none() {
                    hang = Some(format!(
                        "exited, but its {name} was still held open by another process {timeout:?} after it started"
                    ));
                }
                kill_pid(-pgid, libc::SIGKILL);
                rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
            }
        }
    };
    let stdout = collect(&out_rx, "stdout");
    let stderr = collect(&err_rx, "stderr");
    let out = CmdOutput {
        what: what.to_string(),
        status,
        stdout,
        stderr,
    };
    if let Some(hang) = hang {
        panic!("`{what}` {hang}. {}", out.describe());
    }
    out
}

/// A directory on bpffs for one test's pins, created by root with mode 0777;
/// removed (with everything pinned in it) on drop.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Creates `/sys/fs/bpf/tbe_<tag>_<pid>_<n>`.
    pub fn new(tag: &str) -> PinDir {
        assert_bpffs();
        let path = Path::new("/sys/fs/bpf").join(unique_name(&format!("tbe_{tag}")));
        make_world_writable_dir(&path);
        PinDir { path }
    }

    /// Creates a 0777 subdirectory and returns its path.
    pub fn subdir(&self, name: &str) -> String {
        let path = self.path.join(name);
        make_world_writable_dir(&path);
        path.display().to_string()
    }

    /// `<dir>/<name>` as a string (not created).
    pub fn join(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file pinned below the directory.
    pub fn pinned_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => walk(&path, out),
                    Ok(_) => out.push(path),
                    Err(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path, &mut out);
        out.sort();
        out
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            say(&format!(
                "warning: cannot remove {}: {e}",
                self.path.display()
            ));
        }
    }
}

fn make_world_writable_dir(path: &Path) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn assert_bpffs() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                && l.split_whitespace().nth(2) == Some("bpf")),
        "bpffs is not mounted at /sys/fs/bpf (scripts/setup.sh mounts it)"
    );
}

/// Kinds of BPF objects bpftool lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    /// `bpftool prog`
    Prog,
    /// `bpftool map`
    Map,
    /// `bpftool link`
    Link,
    /// `bpftool btf`
    Btf,
}

impl ObjKind {
    /// All four.
    pub const ALL: [ObjKind; 4] = [ObjKind::Prog, ObjKind::Map, ObjKind::Link, ObjKind::Btf];

    /// bpftool's object word.
    pub fn word(self) -> &'static str {
        match self {
            ObjKind::Prog => "prog",
            ObjKind::Map => "map",
            ObjKind::Link => "link",
            ObjKind::Btf => "btf",
        }
    }
}

/// `id -> object` of a `bpftool <kind> list --json` output, with
/// [`VOLATILE_FIELDS`] removed.
pub type Listing = BTreeMap<u64, Value>;

/// Parses a `bpftool … list --json` output into a [`Listing`].
pub fn parse_listing(out: &CmdOutput) -> Result<Listing, String> {
    if !out.success() {
        return Err(format!("listing failed: {}", out.describe()));
    }
    let value: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("listing is not JSON ({e}): {}", out.describe()))?;
    let items = value
        .as_array()
        .ok_or_else(|| format!("listing is not a JSON array: {}", out.describe()))?;
    let mut listing = Listing::new();
    for item in items {
        let id = item
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("listing entry without id: {item}"))?;
        if listing.insert(id, strip_volatile(item)).is_some() {
            return Err(format!("id {id} listed twice: {}", out.describe()));
        }
    }
    Ok(listing)
}

/// A copy of a bpftool JSON object without [`VOLATILE_FIELDS`].
pub fn strip_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        for field in VOLATILE_FIELDS {
            obj.remove(*field);
        }
    }
    v
}

/// Compares two bpftool JSON views of the same object, after
/// [`strip_volatile`]. `loaded_at` may differ by one second: bpftool turns
/// the kernel's boot-time stamp into wall-clock seconds with
/// `CLOCK_REALTIME - CLOCK_BOOTTIME` read at listing time in the bpftool
/// process, and the truncation to whole seconds can land on either side of a
/// second boundary in two runs.
pub fn compare_objects(local: &Value, remote: &Value) -> Result<(), String> {
    let local = strip_volatile(local);
    let mut remote = strip_volatile(remote);
    if let (Some(l), Some(r)) = (
        local.get("loaded_at").and_then(Value::as_i64),
        remote.get("loaded_at").and_then(Value::as_i64),
    ) {
        if (l - r).abs() <= 1 {
            remote["loaded_at"] = Value::from(l);
        }
    }
    if local == remote {
        Ok(())
    } else {
        Err(format!("local:  {local}\nremote: {remote}"))
    }
}

/// Compares two listings object by object; the message names the ids only
/// one side has and the objects that differ.
pub fn compare_listings(local: &Listing, remote: &Listing) -> Result<(), String> {
    let mut msg = String::new();
    let only_local: Vec<_> = local.keys().filter(|id| !remote.contains_key(id)).collect();
    let only_remote: Vec<_> = remote.keys().filter(|id| !local.contains_key(id)).collect();
    for id in &only_local {
        let _ = writeln!(msg, "only local:  {}", local[id]);
    }
    for id in &only_remote {
        let _ = writeln!(msg, "only remote: {}", remote[id]);
    }
    for (id, l) in local {
        if let Some(r) = remote.get(id) {
            if let Err(e) = compare_objects(l, r) {
                let _ = writeln!(msg, "id {id} differs:\n{e}");
            }
        }
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(msg)
    }
}

/// A short fingerprint of a buffer (for messages about big outputs).
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{} bytes, hash {:016x}", bytes.len(), h.finish())
}

/// Compares two (possibly huge) outputs; on a difference the message gives
/// both fingerprints and the first differing line, not the whole output.
pub fn compare_text(what: &str, local: &[u8], remote: &[u8]) -> Result<(), String> {
    if local == remote {
        return Ok(());
    }
    let l = text(local);
    let r = text(remote);
    let mut lines_l = l.lines();
    let mut lines_r = r.lines();
    let mut n = 0usize;
    let detail = loop {
        n += 1;
        match (lines_l.next(), lines_r.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => break format!("line {n}:\n  local:  {a:?}\n  remote: {b:?}"),
            (Some(a), None) => break format!("remote ends before line {n}; local line {n}: {a:?}"),
            (None, Some(b)) => break format!("local ends before line {n}; remote line {n}: {b:?}"),
            (None, None) => {
                break "same lines, different bytes (line endings or invalid UTF-8)".into()
            }
        }
    };
    Err(format!(
        "{what}: remote output differs from local\n  local:  {}\n  remote: {}\n  first difference at {detail}",
        fingerprint(local),
        fingerprint(remote)
    ))
}

/// The ids of every prog, map, link and BTF object in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSnapshot {
    /// Program ids.
    pub progs: BTreeSet<u64>,
    /// Map ids.
    pub maps: BTreeSet<u64>,
    /// Link ids.
    pub links: BTreeSet<u64>,
    /// BTF object ids.
    pub btfs: BTreeSet<u64>,
}

impl IdSnapshot {
    fn set_mut(&mut self, kind: ObjKind) -> &mut BTreeSet<u64> {
        match kind {
            ObjKind::Prog => &mut self.progs,
            ObjKind::Map => &mut self.maps,
            ObjKind::Link => &mut self.links,
            ObjKind::Btf => &mut self.btfs,
        }
    }

    /// The ids of one kind.
    pub fn set(&self, kind: ObjKind) -> &BTreeSet<u64> {
        match kind {
            ObjKind::Prog => &self.progs,
            ObjKind::Map => &self.maps,
            ObjKind::Link => &self.links,
            ObjKind::Btf => &self.btfs,
        }
    }

    /// Adds an id.
    pub fn insert(&mut self, kind: ObjKind, id: u64) {
        self.set_mut(kind).insert(id);
    }

    /// The ids in `self` and not in `base`.
    pub fn minus(&self, base: &IdSnapshot) -> IdSnapshot {
        let mut out = IdSnapshot::default();
        for kind in ObjKind::ALL {
            for id in self.set(kind).difference(base.set(kind)) {
                out.insert(kind, *id);
            }
        }
        out
    }

    /// The ids in both `self` and `other`.
    pub fn intersection(&self, other: &IdSnapshot) -> IdSnapshot {
        let mut out = IdSnapshot::default();
        for kind in ObjKind::ALL {
            for id in self.set(kind).intersection(other.set(kind)) {
                out.insert(kind, *id);
            }
        }
        out
    }

    /// Whether any id of `other` is in `self`.
    pub fn intersects(&self, other: &IdSnapshot) -> bool {
        ObjKind::ALL
            .iter()
            .any(|k| self.set(*k).intersection(other.set(*k)).next().is_some())
    }
}

/// The product files installed for one test.
struct Product {
    telebpf: PathBuf,
    preload: PathBuf,
    key: PathBuf,
}

/// A running `telebpf-proxy`.
struct Proxy {
    child: Child,
    log: PathBuf,
}

/// How a proxy ended.
#[derive(Debug)]
pub struct ProxyExit {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its whole stderr log.
    pub log: String,
}

/// One test's world: the lock, a temp dir (mode 0755) with copies of the
/// client binaries and objects, keys (root's, and nobody's own copies), and
/// (usually) a proxy started with `TELEBPF_LOG=debug`.
///
/// Dropping it stops the proxy (SIGTERM), removes the temp dir (kept when
/// the test failed, for its logs) and releases the lock.
pub struct Harness {
    name: String,
    dir: PathBuf,
    nobody_dir: PathBuf,
    sock: PathBuf,
    bpftool: PathBuf,
    setpriv: PathBuf,
    product: Option<Product>,
    proxy: Option<Proxy>,
    proxy_checked: bool,
    /// Extra command-line arguments of the proxy ([`Harness::set_proxy_args`]).
    proxy_args: Vec<String>,
    /// A command the proxy is started through ([`Harness::set_proxy_prefix`]).
    proxy_prefix: Vec<String>,
    /// `RLIMIT_NOFILE` (soft = hard) of later proxies
    /// ([`Harness::set_proxy_nofile`]).
    proxy_nofile: Option<u64>,
    _lock: TestLock,
}

impl Harness {
    /// Root check (else a visible skip and `None`), lock, temp dir, product
    /// files and a proxy on `unix:<dir>/proxy.sock`.
    pub fn start(test: &str) -> Option<Harness> {
        let mut h = Harness::start_without_proxy(test)?;
        h.start_proxy();
        Some(h)
    }

    /// Like [`Harness::start`] but without a proxy.
    pub fn start_without_proxy(test: &str) -> Option<Harness> {
        let mut h = Harness::start_local_only(test)?;
        h.install_product();
        Some(h)
    }

    /// Root check, lock and temp dir only: needs none of the product files.
    pub fn start_local_only(test: &str) -> Option<Harness> {
        if !require_root(test) {
            return None;
        }
        let lock = TestLock::acquire();
        let bpftool = require_program("bpftool", "bpftool");
        let setpriv = require_program("setpriv", "util-linux");
        let dir = std::env::temp_dir().join(format!("telebpf-e2e-{}", unique_name(test)));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let nobody_dir = dir.join("nobody");
        fs::create_dir(&nobody_dir).expect("mkdir nobody dir");
        std::os::unix::fs::chown(&nobody_dir, Some(NOBODY), Some(NOBODY))
            .expect("chown nobody dir");
        let h = Harness {
            name: test.to_string(),
            sock: dir.join("proxy.sock"),
            nobody_dir,
            dir,
            bpftool,
            setpriv,
            product: None,
            proxy: None,
            proxy_checked: false,
            proxy_args: Vec::new(),
            proxy_prefix: Vec::new(),
            proxy_nofile: None,
            _lock: lock,
        };
        for stem in ["forward_test", "iter_test", "net_test", "cgroup_test"] {
            let dst = h.dir.join(format!("{stem}.bpf.o"));
            fs::copy(built_object(stem), &dst).expect("copy test object");
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))
                .expect("chmod test object");
        }
        Some(h)
    }

    fn install_product(&mut self) {
        let telebpf = self.dir.join("telebpf");
        let preload = self.dir.join("libtelebpf_preload.so");
        for (name, dst) in [("telebpf", &telebpf), ("libtelebpf_preload.so", &preload)] {
            fs::copy(product_file(name), dst).unwrap_or_else(|e| panic!("copy {name}: {e}"));
            fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
                .expect("chmod product file");
        }
        self.product = Some(Product {
            telebpf,
            preload,
            key: PathBuf::new(),
        });
        let key = self.new_key("client.key");
        self.product.as_mut().expect("just set").key = key;
    }

    fn product(&self) -> &Product {
        self.product
            .as_ref()
            .expect("this harness was started without the product files")
    }

    /// This test's copy of the `telebpf` command line.
    pub fn telebpf(&self) -> &Path {
        &self.product().telebpf
    }

    /// `telebpf ARGS` as nobody (no preload: the CLI talks to the proxy
    /// itself), with `--target` and `--key-file` of this test's proxy
    /// appended.
    pub fn telebpf_nobody(&self, args: &[&str]) -> CmdOutput {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--target".to_string(),
            self.target(),
            "--key-file".to_string(),
            self.nobody_key(self.key()).display().to_string(),
        ]);
        let what = format!("[nobody] {}", shell_words(self.telebpf(), &all));
        run_with_timeout(
            self.nobody_command(self.telebpf(), &all),
            &what,
            COMMAND_TIMEOUT,
        )
    }

    /// The test's temp dir (root-owned, 0755).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A subdirectory of the temp dir owned by nobody.
    pub fn nobody_dir(&self) -> &Path {
        &self.nobody_dir
    }

    /// Path (in the temp dir, readable by nobody) of a test object.
    pub fn object(&self, stem: &str) -> String {
        self.dir.join(format!("{stem}.bpf.o")).display().to_string()
    }

    /// The bpftool binary both sides run.
    pub fn bpftool(&self) -> &Path {
        &self.bpftool
    }

    /// `unix:<socket>` of this test's proxy.
    pub fn target(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// The key file the proxy and the good clients use.
    pub fn key(&self) -> &Path {
        &self.product().key
    }

    /// The copied `libtelebpf_preload.so`.
    pub fn preload(&self) -> &Path {
        &self.product().preload
    }

    /// `telebpf keygen --out <dir>/<name>` (as root), checks mode 0600, and
    /// gives nobody a 0600 copy of its own in [`Harness::nobody_dir`]: both
    /// ends refuse a key file that others may read, or that another user
    /// owns (see `telebpf_protocol::key`). Returns the root-owned file (the
    /// proxy's, and root's); the harness hands nobody's copy to every
    /// command it runs as nobody ([`Harness::nobody_key`]).
    pub fn new_key(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut cmd = Command::new(&self.product().telebpf);
        cmd.arg("keygen").arg("--out").arg(&path);
        self.base_env(&mut cmd);
        let what = format!("telebpf keygen --out {}", path.display());
        run_with_timeout(cmd, &what, COMMAND_TIMEOUT).expect_success();
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("keygen wrote no {}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "key file {} has mode {:o}, want 0600",
            path.display(),
            mode & 0o777
        );
        let copy = self.nobody_dir.join(name);
        fs::copy(&path, &copy).expect("copy key for nobody");
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod key copy");
        std::os::unix::fs::chown(&copy, Some(NOBODY), Some(NOBODY)).expect("chown key to nobody");
        path
    }

    /// The key file a command run as nobody uses for `key`: nobody's own
    /// copy of a key [`Harness::new_key`] made, any other path unchanged.
    pub fn nobody_key(&self, key: &Path) -> PathBuf {
        match (key.parent(), key.file_name()) {
            (Some(dir), Some(name)) if dir == self.dir => {
                let copy = self.nobody_dir.join(name);
                if copy.is_file() {
                    copy
                } else {
                    key.to_path_buf()
                }
            }
            _ => key.to_path_buf(),
        }
    }

    fn base_env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", "/tmp")
            .current_dir(&self.dir);
        // The tests stop tools with SIGINT, as a user's Ctrl-C. A suite
        // started in the background by a non-interactive shell inherits
        // SIGINT ignored, and a program that finds it ignored keeps it so
        // (Python then never raises KeyboardInterrupt: BCC's tools would
        // not print their maps and be killed instead).
        // SAFETY: signal(2) between fork and exec, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
    }

    fn proxy_log_path(&self) -> PathBuf {
        self.dir.join("proxy.stderr")
    }

    /// Starts `telebpf-proxy --listen unix:<sock> --key-file <key>` with
    /// `TELEBPF_LOG=debug`, stderr to `<dir>/proxy.stderr`, and waits for
    /// its `listening on` line. With `TELEBPF_E2E_POLICY=SPEC` in the
    /// environment of `cargo test`, `--policy SPEC` is added (run any test
    /// under a policy profile).
    pub fn start_proxy(&mut self) {
        let extra = match std::env::var(ENV_E2E_POLICY) {
            Ok(spec) => vec!["--policy".to_string(), spec],
            Err(_) => Vec::new(),
        };
        self.start_proxy_with(&extra);
    }

    /// [`Harness::start_proxy`] with more proxy arguments (`--policy`,
    /// `--audit`, more `--key-file`s).
    pub fn start_proxy_with(&mut self, extra: &[String]) {
        assert!(self.proxy.is_none(), "proxy already running");
        let proxy_bin = product_file("telebpf-proxy");
        let log = self.proxy_log_path();
        let stderr = File::create(&log).expect("create proxy log");
        let stdout = File::create(self.dir.join("proxy.stdout")).expect("create proxy stdout");
        let mut cmd = match self.proxy_prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&proxy_bin);
                c
            }
            None => Command::new(&proxy_bin),
        };
        cmd.arg("--listen")
            .arg(self.target())
            .arg("--key-file")
            .arg(self.key())
            .args(&self.proxy_args)
            .args(extra);
        self.base_env(&mut cmd);
        cmd.env("TELEBPF_LOG", "debug")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        if let Some(n) = self.proxy_nofile {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and `lim` is a plain
            // value copied into the child before the closure runs.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", proxy_bin.display()));
        self.proxy = Some(Proxy { child, log });
        self.proxy_checked = false;

        let ready = format!("telebpf-proxy: listening on {}", self.target());
        let deadline = Instant::now() + PROXY_READY_TIMEOUT;
        loop {
            if self.proxy_log().contains(&ready) {
                break;
            }
            let proxy = self.proxy.as_mut().expect("proxy");
            if let Some(status) = proxy.child.try_wait().expect("try_wait proxy") {
                self.proxy = None;
                self.proxy_checked = true;
                panic!(
                    "telebpf-proxy exited ({status}) before listening; log:\n{}",
                    self.proxy_log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "telebpf-proxy did not print {ready:?} within {PROXY_READY_TIMEOUT:?}; log:\n{}",
                    self.proxy_log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mode = fs::metadata(&self.sock)
            .unwrap_or_else(|e| {
                panic!(
                    "proxy said it listens but {} is missing: {e}",
                    self.sock.display()
                )
            })
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o666,
            "proxy socket has mode {:o}, want 0666",
            mode & 0o777
        );
    }

    /// Extra arguments for every later [`Harness::start_proxy`] (limits,
    /// timeouts).
    pub fn set_proxy_args(&mut self, args: &[&str]) {
        self.proxy_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts later proxies through `prefix` (a command that ends by
    /// `exec`ing its arguments, e.g. `unshare -C -m …`), so a test can give
    /// the proxy a view of its own.
    pub fn set_proxy_prefix(&mut self, prefix: &[&str]) {
        self.proxy_prefix = prefix.iter().map(|a| a.to_string()).collect();
    }

    /// Starts later proxies with `RLIMIT_NOFILE` `n:n` (as `prlimit
    /// --nofile=n:n` would), modelling a service's fd limit.
    pub fn set_proxy_nofile(&mut self, n: u64) {
        self.proxy_nofile = Some(n);
    }

    /// The running proxy's pid.
    pub fn proxy_pid(&self) -> u32 {
        self.proxy.as_ref().expect("no proxy running").child.id()
    }

    /// SIGKILLs the proxy and reaps it (no exit check: it was killed). The
    /// log stays; a later [`Harness::start_proxy`] appends to a fresh one.
    pub fn kill_proxy(&mut self) {
        let mut proxy = self.proxy.take().expect("no proxy running");
        kill_pid(proxy.child.id() as i32, libc::SIGKILL);
        let _ = proxy.child.wait();
        self.proxy_checked = true;
    }

    /// The proxy's stderr so far.
    pub fn proxy_log(&self) -> String {
        fs::read(self.proxy_log_path())
            .map(|b| text(&b))
            .unwrap_or_default()
    }

    /// Waits (up to `timeout`) for a line of the proxy log to contain `needle`.
    pub fn wait_proxy_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.proxy_log().lines().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM to the proxy and waits (up to [`PROXY_STOP_TIMEOUT`])
    /// for it to exit; SIGKILLs it after that and panics.
    pub fn stop_proxy(&mut self) -> ProxyExit {
        self.try_stop_proxy().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_stop_proxy(&mut self) -> Result<ProxyExit, String> {
        let mut proxy = self.proxy.take().ok_or("no proxy running")?;
        self.proxy_checked = true;
        let pid = proxy.child.id() as i32;
        kill_pid(pid, libc::SIGTERM);
        let deadline = Instant::now() + PROXY_STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = proxy.child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() >= deadline {
                kill_pid(-pid, libc::SIGKILL);
                let status = proxy.child.wait().map_err(|e| e.to_string())?;
                let log = fs::read(&proxy.log).map(|b| text(&b)).unwrap_or_default();
                return Err(format!(
                    "telebpf-proxy did not exit within {PROXY_STOP_TIMEOUT:?} of SIGTERM \
                     (killed: {status}); log:\n{}",
                    tail(&log, 20000)
                ));
            }
            thread::sleep(Duration::from_millis(10));
        };
        let log = fs::read(&proxy.log).map(|b| text(&b)).unwrap_or_default();
        Ok(ProxyExit { status, log })
    }

    /// Stops the proxy and asserts that it exited 0 and did not panic.
    pub fn stop_proxy_checked(&mut self) {
        let exit = self.stop_proxy();
        assert_eq!(
            exit.status.code(),
            Some(0),
            "telebpf-proxy did not exit 0 after SIGTERM ({}); log:\n{}",
            exit.status,
            truncated(&exit.log, 20000)
        );
        assert!(
            !exit.log.contains("panicked at"),
            "telebpf-proxy panicked; log:\n{}",
            truncated(&exit.log, 20000)
        );
    }

    /// Ends the test: stops the proxy (if running) and checks its exit.
    pub fn finish(mut self) {
        if self.proxy.is_some() {
            self.stop_proxy_checked();
        }
    }

    /// A command that runs `program args…` as nobody with no capabilities
    /// (setpriv), `HOME=/tmp`, a minimal `PATH`, cwd the temp dir.
    pub fn nobody_command<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.setpriv);
        cmd.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_string(),
            "--inh-caps=-all".to_string(),
            "--bounding-set=-all".to_string(),
            "--".to_string(),
        ]);
        cmd.arg(program).args(args);
        self.base_env(&mut cmd);
        cmd
    }

    /// A command that runs `program args…` as root with every capability
    /// dropped (setpriv), otherwise as [`Harness::nobody_command`].
    pub fn root_command<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.setpriv);
        cmd.args(["--inh-caps=-all", "--bounding-set=-all", "--"]);
        cmd.arg(program).args(args);
        self.base_env(&mut cmd);
        cmd
    }

    /// The arguments of `telebpf exec --target T --key-file K -- bpftool ARGS`
    /// as nobody (with nobody's copy of the key).
    fn exec_args(&self, target: &str, key: &Path, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "exec".to_string(),
            "--target".to_string(),
            target.to_string(),
            "--key-file".to_string(),
            self.nobody_key(key).display().to_string(),
            "--".to_string(),
            self.bpftool.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `bpftool ARGS` as nobody through `telebpf exec` and this test's proxy.
    pub fn remote(&self, args: &[&str]) -> CmdOutput {
        self.remote_timeout(args, COMMAND_TIMEOUT)
    }

    /// [`Harness::remote`] with a given time limit.
    pub fn remote_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        self.remote_with(&self.target(), self.key(), args, timeout)
    }

    /// `bpftool ARGS` as nobody through `telebpf exec` with any target/key.
    pub fn remote_with(
        &self,
        target: &str,
        key: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> CmdOutput {
        let exec_args = self.exec_args(target, key, args);
        let telebpf = &self.product().telebpf;
        let what = format!("[nobody] {}", shell_words(telebpf, &exec_args));
        run_with_timeout(self.nobody_command(telebpf, &exec_args), &what, timeout)
    }

    /// `bpftool ARGS` as nobody with the preload set up by environment only
    /// (`LD_PRELOAD`, `TELEBPF_TARGET`, `TELEBPF_KEY_FILE`), no wrapper.
    pub fn remote_env_form(
        &self,
        target: &str,
        key: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> CmdOutput {
        let key = self.nobody_key(key);
        // Set for bpftool only, by `env` after setpriv: setpriv itself
        // runs as root until it drops to nobody, and the preload in it
        // would read nobody's key as root (which the key file rules
        // refuse) to answer its capget.
        let env = find_program("env").expect("coreutils env");
        let mut argv = vec![
            format!("LD_PRELOAD={}", self.preload().display()),
            format!("TELEBPF_TARGET={target}"),
            format!("TELEBPF_KEY_FILE={}", key.display()),
            self.bpftool.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let cmd = self.nobody_command(&env, &argv);
        let what = format!(
            "[nobody] LD_PRELOAD={} TELEBPF_TARGET={target} TELEBPF_KEY_FILE={} {}",
            self.preload().display(),
            key.display(),
            shell_words(&self.bpftool, args)
        );
        run_with_timeout(cmd, &what, timeout)
    }

    /// Copies `program` into the temp dir (mode 0755), where nobody can run
    /// it; returns the copy's path.
    pub fn copy_in(&self, program: &Path) -> PathBuf {
        let local_copy = self.dir.join(program.file_name().expect("a file name"));
        fs::copy(program, &local_copy).expect("copy program");
        fs::set_permissions(&local_copy, fs::Permissions::from_mode(0o755)).expect("chmod program");
        local_copy
    }

    /// Any program (copied into the temp dir) as nobody through
    /// `telebpf exec`.
    pub fn remote_program(&self, program: &Path, args: &[&str]) -> CmdOutput {
        let what = format!("[nobody] telebpf exec … -- {}", shell_words(program, args));
        run_with_timeout(
            self.remote_program_command(program, args),
            &what,
            COMMAND_TIMEOUT,
        )
    }

    /// `attack-client ARGS` (`tests/src/bin/attack-client/`) as nobody,
    /// speaking the protocol itself to this test's proxy with `key`
    /// (nobody's copy of it), for a test that starts it and watches it.
    pub fn attack_command(&self, key: &Path, args: &[&str]) -> Command {
        // Copied once: a copy running meanwhile could not be overwritten.
        let program = self.dir.join("attack-client");
        if !program.exists() {
            self.copy_in(&product_file("attack-client"));
        }
        let mut cmd = self.nobody_command(&program, args);
        cmd.env("TELEBPF_TARGET", self.target())
            .env("TELEBPF_KEY_FILE", self.nobody_key(key));
        cmd
    }

    /// [`Harness::attack_command`] run to its end.
    pub fn attack(&self, key: &Path, args: &[&str]) -> CmdOutput {
        let what = format!("[nobody] attack-client {}", args.join(" "));
        run_with_timeout(self.attack_command(key, args), &what, COMMAND_TIMEOUT)
    }

    /// The command [`Harness::remote_program`] runs (`program` copied into
    /// the temp dir, as nobody through `telebpf exec`), for a test that
    /// needs to start it and watch it while it runs.
    pub fn remote_program_command(&self, program: &Path, args: &[&str]) -> Command {
        let local_copy = self.copy_in(program);
        let mut exec_args = vec![
            "exec".to_string(),
            "--target".to_string(),
            self.target(),
            "--key-file".to_string(),
            self.nobody_key(self.key()).display().to_string(),
            "--".to_string(),
            local_copy.display().to_string(),
        ];
        exec_args.extend(args.iter().map(|a| a.to_string()));
        self.nobody_command(&self.product().telebpf, &exec_args)
    }

    /// `bpftool ARGS` as nobody with no preload at all (the baseline a
    /// non-working preload would give).
    pub fn nobody_plain(&self, args: &[&str]) -> CmdOutput {
        let what = format!("[nobody, no preload] {}", shell_words(&self.bpftool, args));
        run_with_timeout(
            self.nobody_command(&self.bpftool, args),
            &what,
            COMMAND_TIMEOUT,
        )
    }

    /// `bpftool ARGS` as root, directly on this kernel.
    pub fn local(&self, args: &[&str]) -> CmdOutput {
        self.local_timeout(args, COMMAND_TIMEOUT)
    }

    /// [`Harness::local`] with a given time limit.
    pub fn local_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = Command::new(&self.bpftool);
        cmd.args(args);
        self.base_env(&mut cmd);
        let what = format!("[root] {}", shell_words(&self.bpftool, args));
        run_with_timeout(cmd, &what, timeout)
    }

    /// Local root listing of one kind.
    pub fn local_listing(&self, kind: ObjKind) -> Listing {
        let out = self.local(&[kind.word(), "list", "--json"]);
        parse_listing(&out).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until two successive local listings of `kind` are equal
    /// (deferred kernel frees done) and returns it; the last one after
    /// [`SETTLE_TIMEOUT`].
    pub fn settled_local_listing(&self, kind: ObjKind) -> Listing {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = self.local_listing(kind);
        loop {
            thread::sleep(Duration::from_millis(20));
            let next = self.local_listing(kind);
            if next == last || Instant::now() >= deadline {
                return next;
            }
            last = next;
        }
    }

    /// Ids of every object, as root.
    pub fn local_ids(&self) -> IdSnapshot {
        let mut snap = IdSnapshot::default();
        for kind in ObjKind::ALL {
            for id in self.local_listing(kind).keys() {
                snap.insert(kind, *id);
            }
        }
        snap
    }

    /// [`Harness::local_ids`] once two successive snapshots agree.
    pub fn settled_local_ids(&self) -> IdSnapshot {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = self.local_ids();
        loop {
            thread::sleep(Duration::from_millis(20));
            let next = self.local_ids();
            if next == last || Instant::now() >= deadline {
                return next;
            }
            last = next;
        }
    }

    /// Asserts that `list` (one remote `bpftool <kind> list --json`) shows
    /// the same objects as local root. The remote listing is taken between
    /// two settled local ones; if those differ (something was being freed),
    /// or the remote one differs, it tries again, up to 5 times, and fails
    /// with the last difference.
    pub fn assert_same_listing(&self, kind: ObjKind, list: &dyn Fn(&[&str]) -> CmdOutput) {
        let args = [kind.word(), "list", "--json"];
        let mut last_err = String::new();
        for _ in 0..5 {
            let before = self.settled_local_listing(kind);
            let remote = parse_listing(&list(&args)).unwrap_or_else(|e| panic!("remote {e}"));
            let after = self.settled_local_listing(kind);
            if before != after {
                last_err = format!(
                    "local {} listing changed during the remote run:\n{}",
                    kind.word(),
                    compare_listings(&before, &after).err().unwrap_or_default()
                );
                continue;
            }
            match compare_listings(&before, &remote) {
                Ok(()) => return,
                Err(e) => {
                    last_err = format!("`bpftool {} list` remote vs local:\n{e}", kind.word())
                }
            }
        }
        panic!("{last_err}");
    }

    /// Runs `args` remotely and locally and asserts the same exit status and
    /// the same stdout; returns the local output.
    pub fn assert_same_output(&self, args: &[&str]) -> CmdOutput {
        let remote = self.remote(args);
        let local = self.local(args);
        assert_eq!(
            remote.status.code(),
            local.status.code(),
            "exit status differs for bpftool {args:?}\nremote: {}\nlocal: {}",
            remote.describe(),
            local.describe()
        );
        if let Err(e) = compare_text(
            &format!("bpftool {}", args.join(" ")),
            &local.stdout,
            &remote.stdout,
        ) {
            panic!(
                "{e}\nremote: {}\nlocal: {}",
                remote.describe(),
                local.describe()
            );
        }
        local
    }

    /// Ids of everything the pins under `pins` keep alive (as root): pinned
    /// progs with their maps and BTF, pinned maps with their BTF, pinned
    /// links with their program's closure.
    pub fn pinned_closure(&self, pins: &PinDir) -> IdSnapshot {
        let mut snap = IdSnapshot::default();
        for file in pins.pinned_files() {
            let file = file.display().to_string();
            let prog = self.local(&["prog", "show", "pinned", &file, "--json"]);
            if prog.success() {
                self.add_prog_closure(&prog.json(), &mut snap);
                continue;
            }
            let map = self.local(&["map", "show", "pinned", &file, "--json"]);
            if map.success() {
                let map = map.json();
                snap.insert(ObjKind::Map, json_u64(&map, "id"));
                if let Some(btf) = map.get("btf_id").and_then(Value::as_u64) {
                    snap.insert(ObjKind::Btf, btf);
                }
                continue;
            }
            let link = self.local(&["link", "show", "pinned", &file, "--json"]);
            if link.success() {
                let link = link.json();
                snap.insert(ObjKind::Link, json_u64(&link, "id"));
                let prog_id = json_u64(&link, "prog_id").to_string();
                let prog = self
                    .local(&["prog", "show", "id", &prog_id, "--json"])
                    .json();
                self.add_prog_closure(&prog, &mut snap);
                continue;
            }
            panic!("{file} is pinned but is neither a prog, a map nor a link");
        }
        snap
    }

    fn add_prog_closure(&self, prog: &Value, snap: &mut IdSnapshot) {
        snap.insert(ObjKind::Prog, json_u64(prog, "id"));
        if let Some(btf) = prog.get("btf_id").and_then(Value::as_u64) {
            snap.insert(ObjKind::Btf, btf);
        }
        for map_id in json_ids(prog, "map_ids") {
            snap.insert(ObjKind::Map, map_id);
            let map = self
                .local(&["map", "show", "id", &map_id.to_string(), "--json"])
                .json();
            if let Some(btf) = map.get("btf_id").and_then(Value::as_u64) {
                snap.insert(ObjKind::Btf, btf);
            }
        }
    }

    /// Ids of a program (by pin) and of its maps and BTF, as root.
    pub fn prog_closure_of_pin(&self, pin: &str) -> IdSnapshot {
        let prog = self
            .local(&["prog", "show", "pinned", pin, "--json"])
            .json();
        let mut snap = IdSnapshot::default();
        self.add_prog_closure(&prog, &mut snap);
        snap
    }

    /// Spawns `bpftool ARGS` remotely with stdin a pipe this side keeps open,
    /// and waits until the bpftool process is blocked reading stdin (e.g.
    /// `prog run … data_in -`, after it got its prog fd).
    pub fn spawn_remote_blocked(&self, args: &[&str]) -> BlockedClient {
        let exec_args = self.exec_args(&self.target(), self.key(), args);
        let telebpf = &self.product().telebpf;
        let what = format!("[nobody] {}", shell_words(telebpf, &exec_args));
        BlockedClient::spawn(self.nobody_command(telebpf, &exec_args), what, &self.dir)
    }

    /// Spawns `bpftool ARGS` as root the same way (for the self-check).
    pub fn spawn_local_blocked(&self, args: &[&str]) -> BlockedClient {
        let mut cmd = Command::new(&self.bpftool);
        cmd.args(args);
        self.base_env(&mut cmd);
        let what = format!("[root] {}", shell_words(&self.bpftool, args));
        BlockedClient::spawn(cmd, what, &self.dir)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if self.proxy.is_some() {
            let unchecked = !self.proxy_checked;
            let result = self.try_stop_proxy();
            // Forgetting finish() must not skip the exit check; but never
            // panic while already panicking (that would abort).
            if !panicking && unchecked {
                let exit = result.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    exit.status.code(),
                    Some(0),
                    "telebpf-proxy did not exit 0 after SIGTERM ({}); log:\n{}",
                    exit.status,
                    tail(&exit.log, 20000)
                );
            } else if let Err(e) = result {
                say(&e);
            }
        }
        if panicking || std::env::var_os("TELEBPF_E2E_KEEP").is_some() {
            say(&format!(
                "{}: kept {} (proxy log: {})",
                self.name,
                self.dir.display(),
                self.proxy_log_path().display()
            ));
            if panicking {
                say(&format!(
                    "--- {} proxy log (last 8000 bytes) ---\n{}",
                    self.name,
                    tail(&self.proxy_log(), 8000)
                ));
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

/// A numeric field of a bpftool JSON object (panics if absent).
pub fn json_u64(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no numeric `{field}` in {v}"))
}

/// An array-of-ids field of a bpftool JSON object (empty if absent).
pub fn json_ids(v: &Value, field: &str) -> Vec<u64> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// A string field of a bpftool JSON object (panics if absent).
pub fn json_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string `{field}` in {v}"))
}

/// `(pid, ppid, comm)` of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may contain spaces and parens.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        out.push((pid, ppid, comm));
    }
    out
}

/// `root` and all its descendants, with their `comm`.
pub fn process_tree(root: u32) -> Vec<(u32, String)> {
    let procs = processes();
    let mut tree: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![root];
    if let Some((_, _, comm)) = procs.iter().find(|(pid, _, _)| *pid == root) {
        tree.push((root, comm.clone()));
    }
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, comm) in &procs {
            if *ppid == parent && !tree.iter().any(|(p, _)| p == pid) {
                tree.push((*pid, comm.clone()));
                frontier.push(*pid);
            }
        }
    }
    tree
}

/// Whether the main thread of `pid` is blocked in `read(0, …)`.
fn blocked_reading_stdin(pid: u32) -> bool {
    let Ok(syscall) = fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut fields = syscall.split_whitespace();
    let nr = fields.next().and_then(|s| s.parse::<i64>().ok());
    let fd = fields.next();
    nr == Some(libc::SYS_read) && fd == Some("0x0")
}

/// A bpftool client (remote or local) blocked reading its stdin, so that it
/// holds whatever fds it opened before; see [`Harness::spawn_remote_blocked`].
pub struct BlockedClient {
    child: Child,
    stdin: Option<ChildStdin>,
    bpftool_pid: u32,
    what: String,
    out: PathBuf,
    err: PathBuf,
    done: bool,
}

/// How long a client may take to reach its blocking read.
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

impl BlockedClient {
    fn spawn(mut cmd: Command, what: String, dir: &Path) -> BlockedClient {
        let tag = unique_name("client");
        let out = dir.join(format!("{tag}.stdout"));
        let err = dir.join(format!("{tag}.stderr"));
        cmd.stdin(Stdio::piped())
            .stdout(File::create(&out).expect("create client stdout"))
            .stderr(File::create(&err).expect("create client stderr"))
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdin = child.stdin.take();
        let mut client = BlockedClient {
            bpftool_pid: 0,
            child,
            stdin,
            what,
            out,
            err,
            done: false,
        };
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        loop {
            if let Some(status) = client.child.try_wait().expect("try_wait client") {
                client.done = true;
                panic!(
                    "`{}` exited ({status}) before blocking on stdin\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    client.what,
                    client.stderr_text(),
                    client.stdout_text()
                );
            }
            let root = client.child.id();
            let found = process_tree(root)
                .into_iter()
                .find(|(pid, comm)| comm == "bpftool" && blocked_reading_stdin(*pid));
            if let Some((pid, _)) = found {
                client.bpftool_pid = pid;
                return client;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{}` did not block reading stdin within {BLOCK_TIMEOUT:?}; processes: {:?}\n--- stderr ---\n{}",
                    client.what,
                    process_tree(root),
                    client.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pid of the blocked bpftool process.
    pub fn bpftool_pid(&self) -> u32 {
        self.bpftool_pid
    }

    /// Its stdout so far.
    pub fn stdout_text(&self) -> String {
        fs::read(&self.out).map(|b| text(&b)).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read(&self.err).map(|b| text(&b)).unwrap_or_default()
    }

    /// Waits (up to `timeout`) for the spawned process to exit; panics if
    /// it does not (a hang).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait client") {
                self.done = true;
                return status;
            }
            if Instant::now() >= deadline {
                kill_pid(-(self.child.id() as i32), libc::SIGKILL);
                let _ = self.child.wait();
                self.done = true;
                panic!(
                    "`{}` did not exit within {timeout:?}\n--- stderr ---\n{}",
                    self.what,
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the bpftool process (only it: the wrapper must notice by
    /// itself) and waits up to 10 s for the whole command to exit. The
    /// stdin pipe stays open until `self` is dropped, so that nothing but
    /// the kill can end what was reading it.
    pub fn kill_client(&mut self) -> ExitStatus {
        kill_pid(self.bpftool_pid as i32, libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
    }

    /// Closes its stdin (the read returns EOF and bpftool goes on) and waits
    /// up to `timeout` for it to exit.
    pub fn release(mut self, timeout: Duration) -> ExitStatus {
        drop(self.stdin.take());
        self.wait_exit(timeout)
    }
}

impl Drop for BlockedClient {
    fn drop(&mut self) {
        if !self.done {
            kill_pid(-(self.child.id() as i32), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Ok`, or fails with its last error after
/// `timeout`.
pub fn wait_until<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What [`ExecTool::watch`] saw.
enum Watched {
    /// The output has the needle of this index.
    Printed(usize),
    /// The tool exited first (its status, its output).
    Exited(ExitStatus, String),
    /// The time passed (the output).
    Waiting(String),
}

/// How often [`ExecTool::wait_for_event`] makes a new marked event while
/// none has been printed.
pub const EVENT_RETRY: Duration = Duration::from_millis(500);

/// A program running as nobody through `telebpf exec`, line buffered
/// (`stdbuf -oL`), its stdout and stderr in a file; killed on drop if still
/// running (a test that fails half-way must not leave it behind).
pub struct ExecTool {
    child: Child,
    out: PathBuf,
    name: String,
}

/// Sums the counts of a libbpf-tools histogram (`lo -> hi : count |…|`).
pub fn histogram_total(out: &str) -> u64 {
    out.lines()
        .filter(|l| l.contains("->") && l.contains(':'))
        .filter_map(|l| {
            l.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

impl Harness {
    /// A copy of `sleep` under a unique name made from `tag` (at most 15
    /// characters: a comm), running for 600 s; its child and its name.
    pub fn marked_sleeper(&self, tag: &str) -> (std::process::Child, String) {
        let name: String = unique_name(tag)
            .chars()
            .filter(|c| c.is_alphanumeric())
            .take(15)
            .collect();
        let path = self.dir().join(&name);
        fs::copy("/bin/sleep", &path).expect("copy sleep");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        let child = Command::new(&path)
            .arg("600")
            .spawn()
            .expect("start the marked process");
        (child, name)
    }

    /// Starts Debian's libbpf-tool `tool` as nobody through this test's
    /// proxy and key ([`Harness::start_exec_tool`]); `None`, with a SKIP
    /// line, when it is not installed.
    pub fn start_tool(&self, tool: &str, args: &[&str]) -> Option<ExecTool> {
        let Some(program) = find_program(tool) else {
            say(&format!(
                "SKIP: {tool} is not installed (apt-get install libbpf-tools)"
            ));
            return None;
        };
        Some(self.start_exec_tool(&self.target(), self.key(), &program, args))
    }

    /// Starts `program args…` as nobody through this test's copy of
    /// `telebpf exec --target TARGET --key-file KEY`, writing to
    /// `<temp dir>/<name>.out`.
    pub fn start_exec_tool(
        &self,
        target: &str,
        key: &Path,
        program: &Path,
        args: &[&str],
    ) -> ExecTool {
        self.spawn_exec_tool(false, false, target, &self.nobody_key(key), program, args)
    }

    /// [`Harness::start_exec_tool`] with `telebpf exec --supervise`: the
    /// tool is served by the seccomp supervisor instead of the preload,
    /// with this test's proxy.
    pub fn start_supervised_tool(&self, program: &Path, args: &[&str]) -> ExecTool {
        let key = self.nobody_key(self.key());
        self.spawn_exec_tool(false, true, &self.target(), &key, program, args)
    }

    /// [`Harness::start_exec_tool`] as root with every capability dropped
    /// ([`Harness::root_command`]), for a tool that insists on euid 0:
    /// `bpf()` is impossible on the host, so whatever it does came through
    /// the proxy. `key` must be root's own (root without
    /// `CAP_DAC_OVERRIDE` reads only its own files).
    pub fn start_exec_tool_as_root(
        &self,
        target: &str,
        key: &Path,
        program: &Path,
        args: &[&str],
    ) -> ExecTool {
        self.spawn_exec_tool(true, false, target, key, program, args)
    }

    fn spawn_exec_tool(
        &self,
        as_root: bool,
        supervise: bool,
        target: &str,
        key: &Path,
        program: &Path,
        args: &[&str],
    ) -> ExecTool {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        let out = self.dir().join(format!("{name}.out"));
        let file = File::create(&out).expect("tool output file");
        let mut argv: Vec<String> = vec![
            "-oL".into(),
            self.telebpf().display().to_string(),
            "exec".into(),
        ];
        if supervise {
            argv.push("--supervise".into());
        }
        argv.extend([
            "--target".into(),
            target.to_string(),
            "--key-file".into(),
            key.display().to_string(),
            "--".into(),
            program.display().to_string(),
        ]);
        argv.extend(args.iter().map(|a| a.to_string()));
        let stdbuf = find_program("stdbuf").expect("coreutils stdbuf");
        let mut cmd = if as_root {
            self.root_command(&stdbuf, &argv)
        } else {
            self.nobody_command(&stdbuf, &argv)
        };
        // stdbuf's line buffering reaches C stdio only: Python (BCC's
        // tools) buffers a file's output until exit unless told not to.
        let child = cmd
            .env("PYTHONUNBUFFERED", "1")
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ExecTool { child, out, name }
    }
}

impl ExecTool {
    /// The program's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.out) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Makes a marked event with `make` (which returns the text that
    /// shows it in the tool's output) and waits for it; makes a new one
    /// every [`EVENT_RETRY`] until one is printed or `timeout` passes.
    /// Returns the text of the event seen; the error tells why none was,
    /// with the output.
    ///
    /// Once is not enough: the libbpf-tools print their header *before*
    /// they set up their perf buffer (execsnoop, opensnoop, tcplife…), and
    /// an event that comes before the buffer's entry for its CPU exists is
    /// dropped by the kernel, locally as through telebpf. Locally that
    /// window is microseconds; through the proxy it is several round trips,
    /// and on a loaded machine long enough for a test's one event.
    pub fn wait_for_event(
        &mut self,
        timeout: Duration,
        mut make: impl FnMut() -> String,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut made = Vec::new();
        loop {
            made.push(make());
            let next = (Instant::now() + EVENT_RETRY).min(deadline);
            match self.watch(&made, next) {
                Watched::Printed(i) => return Ok(made[i].clone()),
                Watched::Exited(status, out) => {
                    return Err(format!(
                        "{} exited ({status}) before printing any of {made:?}:\n{out}",
                        self.name
                    ))
                }
                Watched::Waiting(out) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} printed none of {made:?} within {timeout:?}:\n{out}",
                        self.name
                    ))
                }
                Watched::Waiting(_) => {}
            }
        }
    }

    /// Waits until the output contains `needle`; the error tells why not,
    /// with the output.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        match self.watch(&[needle.to_string()], Instant::now() + timeout) {
            Watched::Printed(_) => Ok(()),
            Watched::Exited(status, out) => Err(format!(
                "{} exited ({status}) before printing {needle:?}:\n{out}",
                self.name
            )),
            Watched::Waiting(out) => Err(format!(
                "{} did not print {needle:?} within {timeout:?}:\n{out}",
                self.name
            )),
        }
    }

    /// Looks at the output every 50 ms until it contains one of `needles`
    /// (which one), the tool exits or `until` passes (with the output then).
    fn watch(&mut self, needles: &[String], until: Instant) -> Watched {
        loop {
            let out = self.output();
            if let Some(i) = needles.iter().position(|n| out.contains(n.as_str())) {
                return Watched::Printed(i);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Watched::Exited(status, out);
            }
            if Instant::now() >= until {
                return Watched::Waiting(out);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait tool")
    }

    /// Sends `sig`, waits up to `timeout` for the exit (then SIGKILL);
    /// returns the whole output.
    pub fn stop(mut self, sig: i32, timeout: Duration) -> String {
        stop_child(&mut self.child, sig, timeout);
        self.output()
    }
}

impl Drop for ExecTool {
    fn drop(&mut self) {
        reap_child(&mut self.child);
    }
}

/// Sends `sig` to `child` and waits for it to exit, SIGKILLing it after
/// `timeout` (a tool that ignores the signal must not hang the test).
pub fn stop_child(child: &mut Child, sig: i32, timeout: Duration) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, sig) };
    let deadline = Instant::now() + timeout;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

/// Kills and reaps `child` if it still runs: for `Drop` of a test's tool,
/// so a test that fails half-way leaves nothing running.
pub fn reap_child(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn output(stdout: &str, code: i32) -> CmdOutput {
        use std::os::unix::process::ExitStatusExt;
        CmdOutput {
            what: "test".into(),
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn volatile_fields_and_loaded_at_tolerance() {
        let local =
            json!({"id": 3, "name": "p", "loaded_at": 100, "run_cnt": 1, "pids": [{"pid": 1}]});
        let remote = json!({"id": 3, "name": "p", "loaded_at": 101, "run_cnt": 9});
        assert!(compare_objects(&local, &remote).is_ok());
        let late = json!({"id": 3, "name": "p", "loaded_at": 102});
        assert!(compare_objects(&local, &late).is_err());
        let renamed = json!({"id": 3, "name": "q", "loaded_at": 100});
        assert!(compare_objects(&local, &renamed).is_err());
        let memlock = json!({"id": 3, "name": "p", "loaded_at": 100, "bytes_memlock": 4096});
        assert!(
            compare_objects(&local, &memlock).is_err(),
            "bytes_memlock is not ignored"
        );
    }

    #[test]
    fn listings_report_missing_extra_and_changed_objects() {
        let l = parse_listing(&output(r#"[{"id":1,"name":"a"},{"id":2,"name":"b"}]"#, 0)).unwrap();
        let same = parse_listing(&output(
            r#"[{"id":2,"name":"b"},{"id":1,"name":"a","pids":[]}]"#,
            0,
        ))
        .unwrap();
        assert!(compare_listings(&l, &same).is_ok());
        let r = parse_listing(&output(r#"[{"id":1,"name":"x"},{"id":3,"name":"c"}]"#, 0)).unwrap();
        let err = compare_listings(&l, &r).unwrap_err();
        assert!(
            err.contains("only local:") && err.contains("\"b\""),
            "{err}"
        );
        assert!(
            err.contains("only remote:") && err.contains("\"c\""),
            "{err}"
        );
        assert!(err.contains("id 1 differs"), "{err}");
        assert!(parse_listing(&output("[]", 255)).is_err());
        assert!(parse_listing(&output("not json", 0)).is_err());
        assert!(parse_listing(&output(r#"[{"id":1},{"id":1}]"#, 0)).is_err());
    }

    #[test]
    fn text_comparison_names_the_first_differing_line() {
        assert!(compare_text("x", b"a\nb\n", b"a\nb\n").is_ok());
        let err = compare_text("x", b"a\nb\nc\n", b"a\nB\nc\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("\"b\"") && err.contains("\"B\""),
            "{err}"
        );
        let err = compare_text("x", b"a\nb\n", b"a\n").unwrap_err();
        assert!(err.contains("remote ends before line 2"), "{err}");
    }

    #[test]
    fn snapshot_arithmetic() {
        let mut a = IdSnapshot::default();
        a.insert(ObjKind::Prog, 1);
        a.insert(ObjKind::Map, 2);
        let mut b = a.clone();
        b.insert(ObjKind::Map, 3);
        let new = b.minus(&a);
        assert_eq!(new.maps, BTreeSet::from([3]));
        assert!(new.progs.is_empty());
        assert!(b.intersects(&new));
        assert!(!a.intersects(&new));
    }
}
