//! The product's own setting, for real: the host's unmodified tools, run as
//! `nobody` through `telebpf exec`, reach `telebpf-proxy` inside a QEMU
//! guest over virtio-vsock (vhost-device-vsock's hybrid-vsock Unix socket),
//! and act on the **guest's** kernel — Debian 12's cloud kernel, not this
//! machine's.
//!
//! The other e2e tests run proxy and tools on one kernel, so they cannot
//! tell whether a file such as `/sys/kernel/btf/vmlinux` was really
//! answered by the proxy's side. Here every assertion compares with what
//! the guest itself reported at boot (`guest-facts`, written by its init
//! before the proxy starts) and checks that the host's own answer differs.
//!
//! The guest runs Debian's 6.1 cloud kernel, or 6.12 from bookworm-backports
//! with `TELEBPF_VM_KERNEL=6.12`. One guest serves the whole test binary: the first test that needs it
//! boots it with `tests/vm/guest.sh up` (about 20-40 s under emulation),
//! and a watcher process stops it with `guest.sh down` when this process
//! ends, however it ends (libtest has no hook after the last test, and a
//! name filter may run only some of them).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use telebpf_tests::monitor::{guests_file, is, Monitor};
use telebpf_tests::{
    bin_dir, compare_text, find_program, fingerprint, run_with_timeout, say, unique_name,
    workspace_root, CmdOutput, ExecTool, Harness, COMMAND_TIMEOUT, NOBODY,
};

/// How long `guest.sh up` may take: a cold cache builds the static proxy
/// and downloads the kernel; a warm one boots in 20-40 s.
const GUEST_UP_TIMEOUT: Duration = Duration::from_secs(1200);
/// How long a tool may take to attach and print its header (it loads and
/// verifies its programs in an emulated guest).
const READY: Duration = Duration::from_secs(180);
/// How long the guest's once-a-second marker may take to show.
const EVENT: Duration = Duration::from_secs(30);
/// The proxy's vsock port in the guest (tests/vm/init.sh).
const GUEST_PORT: u32 = 5000;
/// What the guest's marker process execs and opens (tests/vm/mark.sh).
const GUEST_MARK: &str = "telebpf-guest-mark";

// ------------------------------------------------------------------ guest

/// The running guest of this test binary.
struct Guest {
    /// guest.sh's directory: vm.vsock, key, guest-facts, console.log.
    dir: PathBuf,
    /// `guest-facts`: release, cpus, btf_md5, modules.
    facts: BTreeMap<String, String>,
}

impl Guest {
    /// The hybrid-vsock address of the guest's proxy.
    fn target(&self) -> String {
        format!(
            "vsock-uds:{}:{GUEST_PORT}",
            self.dir.join("vm.vsock").display()
        )
    }

    /// One line of `guest-facts`.
    fn fact(&self, name: &str) -> &str {
        self.facts
            .get(name)
            .unwrap_or_else(|| panic!("guest-facts has no {name}= line: {:?}", self.facts))
    }

    /// The tail of the guest's console, for failure messages.
    fn console_tail(&self) -> String {
        let console = fs::read(self.dir.join("console.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&console);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();

/// The guest, booted on first use; every test fails with the same message
/// if it could not be booted.
fn guest() -> &'static Guest {
    match GUEST.get_or_init(boot_guest) {
        Ok(g) => g,
        Err(e) => panic!("the test guest did not start: {e}"),
    }
}

fn guest_script() -> PathBuf {
    workspace_root().join("tests/vm/guest.sh")
}

fn boot_guest() -> Result<Guest, String> {
    let kernel = std::env::var("TELEBPF_VM_KERNEL").ok();
    boot_guest_with(kernel.as_deref())
}

/// Boots a guest of its own with `kernel` (`6.1`, `6.12`; `None`: the
/// default), stopped when this test process ends.
fn boot_guest_with(kernel: Option<&str>) -> Result<Guest, String> {
    let dir = std::env::temp_dir().join(unique_name("telebpf-vm"));
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    // 0755: nobody's client must reach vm.vsock inside it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    start_watcher(&dir)?;
    say(&format!(
        "vm: booting the test guest in {} (tests/vm/guest.sh up)",
        dir.display()
    ));
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(guest_script())
        .arg("up")
        .arg(&dir)
        .env("TELEBPF_BIN_DIR", bin_dir());
    if let Some(series) = kernel {
        cmd.arg("--kernel").arg(series);
    }
    let out = run_with_timeout(cmd, "tests/vm/guest.sh up", GUEST_UP_TIMEOUT);
    if !out.success() {
        return Err(out.describe());
    }
    say(&format!(
        "vm: guest up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        out.stderr_text().lines().last().unwrap_or_default()
    ));
    let sock = dir.join("vm.vsock");
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", sock.display()))?;
    let facts_text =
        fs::read_to_string(dir.join("guest-facts")).map_err(|e| format!("guest-facts: {e}"))?;
    let facts: BTreeMap<String, String> = facts_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for name in ["release", "cpus", "btf_md5", "modules"] {
        if !facts.contains_key(name) {
            return Err(format!("guest-facts lacks {name}=:\n{facts_text}"));
        }
    }
    Ok(Guest { dir, facts })
}

/// A detached process that waits for this test process to end, then runs
/// `guest.sh down` and removes the directory (kept with
/// `TELEBPF_E2E_KEEP`).
fn start_watcher(dir: &Path) -> Result<(), String> {
    let keep = if std::env::var_os("TELEBPF_E2E_KEEP").is_some() {
        "1"
    } else {
        ""
    };
    Command::new("setsid")
        .args([
            "sh",
            "-c",
            "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; \
             bash \"$2\" down \"$3\"; [ -n \"$4\" ] || rm -rf \"$3\"",
            "telebpf-vm-watcher",
        ])
        .arg(std::process::id().to_string())
        .arg(guest_script())
        .arg(dir)
        .arg(keep)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the guest's watcher: {e}"))
}

// ----------------------------------------------------------------- client

/// The host side of one test: programs run as `nobody` with no
/// capabilities through `telebpf exec` and the guest's proxy.
struct Client<'a> {
    h: &'a Harness,
    target: String,
    key: PathBuf,
    telebpf: PathBuf,
}

impl<'a> Client<'a> {
    /// A client of the guest with a copy of its key that nobody can read.
    fn new(h: &'a Harness, g: &Guest) -> Client<'a> {
        Client::named(h, g, "guest")
    }

    /// [`Client::new`] for one of several guests: its key copy is
    /// `NAME.key`.
    fn named(h: &'a Harness, g: &Guest, name: &str) -> Client<'a> {
        let key = h.dir().join(format!("{name}.key"));
        fs::copy(g.dir.join("key"), &key).expect("copy the guest's key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).expect("chown key");
        Client {
            h,
            target: g.target(),
            key,
            telebpf: h.dir().join("telebpf"),
        }
    }

    /// `telebpf exec --target … --key-file … -- PROGRAM ARGS`.
    fn exec_argv(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "exec".to_string(),
            "--target".to_string(),
            self.target.clone(),
            "--key-file".to_string(),
            self.key.display().to_string(),
            "--".to_string(),
            program.to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs PROGRAM ARGS as nobody through the guest's proxy.
    fn run(&self, program: &str, args: &[&str]) -> CmdOutput {
        let argv = self.exec_argv(program, args);
        let what = format!("[nobody] telebpf {}", argv.join(" "));
        run_with_timeout(
            self.h.nobody_command(&self.telebpf, &argv),
            &what,
            COMMAND_TIMEOUT,
        )
    }

    /// Debian's bpftool as nobody through the guest's proxy.
    fn bpftool(&self, args: &[&str]) -> CmdOutput {
        self.run(&self.h.bpftool().display().to_string(), args)
    }

    /// `telebpf SUBCOMMAND… --target … --key-file …` as nobody: the form of
    /// the bulk-read commands (`telebpf ids …`).
    fn telebpf(&self, subcommand: &[&str]) -> CmdOutput {
        let mut argv: Vec<String> = subcommand.iter().map(|a| a.to_string()).collect();
        argv.extend([
            "--target".to_string(),
            self.target.clone(),
            "--key-file".to_string(),
            self.key.display().to_string(),
        ]);
        let what = format!("[nobody] telebpf {}", argv.join(" "));
        run_with_timeout(
            self.h.nobody_command(&self.telebpf, &argv),
            &what,
            COMMAND_TIMEOUT,
        )
    }

    /// Starts a libbpf-tool as nobody through the guest's proxy, line
    /// buffered (`stdbuf -oL`), stdout and stderr into a file.
    fn start_tool(&self, tool: &str, args: &[&str]) -> ExecTool {
        let program = find_program(tool)
            .unwrap_or_else(|| panic!("{tool} is not installed (scripts/setup.sh: libbpf-tools)"));
        self.h
            .start_exec_tool(&self.target, &self.key, &program, args)
    }
}

/// Waits until `tool` prints `needle`; a failure message includes the
/// output and the guest's console.
fn wait_for(tool: &mut ExecTool, needle: &str, timeout: Duration) {
    if let Err(e) = tool.wait_for(needle, timeout) {
        panic!("{e}\n--- guest console ---\n{}", guest().console_tail());
    }
}

/// SIGINT, wait for the exit (SIGKILL after 30 s); the whole output.
fn stop(tool: ExecTool) -> String {
    tool.stop(libc::SIGINT, Duration::from_secs(30))
}

// ---------------------------------------------------------------- helpers

/// The number of possible CPUs as libbpf counts them from a list such as
/// `0-3` or `0,2-3`: the highest CPU + 1.
fn possible_cpus(list: &str) -> usize {
    list.trim()
        .split([',', '-'])
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .max()
        .map_or(0, |n| n + 1)
}

/// md5 of a file, by coreutils' md5sum.
fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .expect("run md5sum");
    assert!(out.status.success(), "md5sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The host's own `uname -r`.
fn host_release() -> String {
    let out = Command::new("uname").arg("-r").output().expect("uname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a host program as root (the host activity the tools must not see).
fn host_run(program: &Path, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(status.success(), "{} {args:?}: {status}", program.display());
}

/// `bpftool … --json` of a remote run, parsed (panics with the output).
fn json(out: &CmdOutput) -> Value {
    out.json()
}

// ------------------------------------------------------------------ tests

/// `uname -r` under `telebpf exec` is the guest's release, and libbpf's
/// possible-CPU count is the guest's: the file libbpf reads, and the number
/// of per-CPU values bpftool (libbpf inside) allocates for, and the guest
/// kernel fills in, a `percpu_array` map it created in the guest.
#[test]
fn guest_release_and_possible_cpus() {
    let Some(h) = Harness::start_without_proxy("vm_guest_release_and_possible_cpus") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);

    let release = c.run("uname", &["-r"]);
    release.expect_success();
    let release = release.stdout_text().trim().to_string();
    assert_eq!(release, g.fact("release"), "uname -r through telebpf");
    assert_ne!(
        release,
        host_release(),
        "the guest runs the host's kernel release: this test cannot tell them apart"
    );

    let guest_cpus: usize = g.fact("cpus").parse().expect("cpus= is a number");
    let host_cpus = possible_cpus(
        &fs::read_to_string("/sys/devices/system/cpu/possible").expect("host possible CPUs"),
    );
    assert_ne!(
        guest_cpus, host_cpus,
        "guest and host have the same possible-CPU count: this test cannot tell them apart"
    );
    let possible = c.run("cat", &["/sys/devices/system/cpu/possible"]);
    possible.expect_success();
    assert_eq!(
        possible_cpus(&possible.stdout_text()),
        guest_cpus,
        "/sys/devices/system/cpu/possible through telebpf: {}",
        possible.stdout_text()
    );

    let pin = format!("/sys/fs/bpf/{}", unique_name("tbvm_pcpu"));
    c.bpftool(&[
        "map",
        "create",
        &pin,
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "1",
        "name",
        "tbvm_pcpu",
    ])
    .expect_success();
    let dump = json(&c.bpftool(&["map", "dump", "pinned", &pin, "--json"]));
    let values = dump[0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no per-CPU values in {dump}"));
    assert_eq!(
        values.len(),
        guest_cpus,
        "per-CPU values of a guest map as bpftool (libbpf) sees them: {dump}"
    );
    c.run("unlink", &[&pin]).expect_success();
    assert!(
        !Path::new(&pin).exists(),
        "{pin} exists on the host: the pin did not go to the guest"
    );
    h.finish();
}

/// `bpftool btf dump file /sys/kernel/btf/vmlinux` through telebpf dumps
/// the guest's BTF: the raw file read through telebpf has the md5 the guest
/// computed at boot (not the host's), and the remote dump is byte for byte
/// what bpftool prints locally for that copy — and not what it prints for
/// the host's own vmlinux BTF.
#[test]
fn btf_dump_is_the_guest_kernel() {
    let Some(h) = Harness::start_without_proxy("vm_btf_dump_is_the_guest_kernel") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let vmlinux = Path::new("/sys/kernel/btf/vmlinux");
    let host_md5 = md5_of(vmlinux);
    assert_ne!(
        g.fact("btf_md5"),
        host_md5,
        "guest and host BTF are the same"
    );

    let raw = c.run("cat", &["/sys/kernel/btf/vmlinux"]);
    raw.expect_success();
    let copy = h.dir().join("guest-vmlinux.btf");
    fs::write(&copy, &raw.stdout).expect("write the guest BTF copy");
    assert_eq!(
        md5_of(&copy),
        g.fact("btf_md5"),
        "/sys/kernel/btf/vmlinux read through telebpf is not the guest's ({})",
        fingerprint(&raw.stdout)
    );

    let remote = c.bpftool(&["btf", "dump", "file", "/sys/kernel/btf/vmlinux"]);
    remote.expect_success();
    let copy_arg = copy.display().to_string();
    let of_copy = h.local(&["btf", "dump", "file", &copy_arg]);
    of_copy.expect_success();
    if let Err(e) = compare_text(
        "bpftool btf dump (guest BTF)",
        &of_copy.stdout,
        &remote.stdout,
    ) {
        panic!("{e}");
    }
    let of_host = h.local(&["btf", "dump", "file", "/sys/kernel/btf/vmlinux"]);
    of_host.expect_success();
    assert_ne!(
        of_host.stdout, remote.stdout,
        "the remote dump equals the host's own"
    );
    say(&format!(
        "vm: guest BTF md5 {} (host {host_md5}); remote dump {}",
        g.fact("btf_md5"),
        fingerprint(&remote.stdout)
    ));
    h.finish();
}

/// `bpftool prog loadall` through telebpf loads and pins the program in the
/// guest: bpftool through telebpf lists it and shows the pin; the host's
/// kernel has no such program and the host's bpffs no such pin.
#[test]
fn prog_loadall_lands_in_the_guest() {
    let Some(h) = Harness::start_without_proxy("vm_prog_loadall_lands_in_the_guest") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let dir = format!("/sys/fs/bpf/{}", unique_name("tbvm_load"));
    let prog = telebpf_tests::forward_test::PROG;
    c.bpftool(&["prog", "loadall", &h.object("forward_test"), &dir])
        .expect_success();
    let pinned = format!("{dir}/{prog}");
    let shown = json(&c.bpftool(&["prog", "show", "pinned", &pinned, "--json"]));
    let id = shown["id"].as_u64().expect("prog id");
    assert_eq!(shown["name"], prog, "{shown}");

    let remote = json(&c.bpftool(&["prog", "list", "--json"]));
    assert!(
        remote
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["id"] == id && p["name"] == prog)),
        "the guest's program list lacks {prog} (id {id}): {remote}"
    );
    let local = h.local(&["prog", "list", "--json"]).json();
    assert!(
        !local
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == prog)),
        "the host's kernel has a program {prog}: {local}"
    );
    assert!(
        !Path::new(&dir).exists(),
        "{dir} exists on the host's bpffs"
    );
    // coreutils' `rm` removes with unlinkat(AT_FDCWD, …): through the
    // proxy too (the host's bpffs has no such path).
    c.run("rm", &[&pinned]).expect_success();
    c.run("rmdir", &[&dir]).expect_success();
    h.finish();
}

/// Waits for a started tool's `header`, then for `guest_mark` twice while
/// `host_activity` runs for at least 3 s; stops it and returns its output
/// (the tool's name, for messages, is its program's).
fn watch_marks(
    mut t: ExecTool,
    header: &str,
    guest_mark: &str,
    host_activity: &dyn Fn(),
) -> String {
    let g = guest();
    let tool = t.name().to_string();
    wait_for(&mut t, header, READY);
    let attached = Instant::now();
    let deadline = attached + EVENT;
    loop {
        host_activity();
        let seen = t.output().matches(guest_mark).count();
        if seen >= 2 && attached.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tool} saw the guest's {guest_mark:?} {seen} times in {EVENT:?}:\n{}\n--- guest console ---\n{}",
            t.output(),
            g.console_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Events the host's activity would have caused are delivered by now
    // too: later guest events arrived after them.
    stop(t)
}

/// execsnoop through telebpf sees the guest's marker exec, and none of the
/// host's own execs made meanwhile.
#[test]
fn execsnoop_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_execsnoop_sees_the_guest_not_the_host") else {
        return;
    };
    execs_of_the_guest_not_the_host("execsnoop", &|| {
        Client::new(&h, guest()).start_tool("execsnoop", &[])
    });
    h.finish();
}

/// Runs an exec-watching `tool` (started by `start`, printing `PCOMM` in
/// its header) while the host execs a marked command: it must show the
/// guest's `/bin/true telebpf-guest-mark` and never the host's mark.
fn execs_of_the_guest_not_the_host(tool: &str, start: &dyn Fn() -> ExecTool) {
    let host_mark = unique_name("tbvm_hostexec");
    let truth = find_program("true").expect("true");
    let out = watch_marks(start(), "PCOMM", GUEST_MARK, &|| {
        host_run(&truth, &[&host_mark])
    });
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("/bin/true {GUEST_MARK}"))),
        "{tool} missed the guest's `/bin/true {GUEST_MARK}`:\n{out}"
    );
    assert!(
        !out.contains(&host_mark),
        "{tool} through telebpf saw the host's exec of {host_mark}:\n{out}"
    );
}

/// opensnoop through telebpf sees the guest's marker process open its file,
/// and none of the host's own opens made meanwhile.
#[test]
fn opensnoop_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_opensnoop_sees_the_guest_not_the_host") else {
        return;
    };
    opens_of_the_guest_not_the_host(&h, "opensnoop", "PATH", "", &|| {
        Client::new(&h, guest()).start_tool("opensnoop", &[])
    });
    h.finish();
}

/// Runs an open-watching `tool` (started by `start`, printing `header`)
/// while the host opens a marked file of its own: a line of the guest's
/// marker shell (comm `telebpf-guest-m`) that has `also` and ends with
/// `/etc/telebpf-guest-mark` must show, the host's file never.
fn opens_of_the_guest_not_the_host(
    h: &Harness,
    tool: &str,
    header: &str,
    also: &str,
    start: &dyn Fn() -> ExecTool,
) {
    let host_file = h.dir().join(unique_name("tbvm_hostopen"));
    fs::write(&host_file, b"host").expect("host file");
    let cat = find_program("cat").expect("cat");
    let host_arg = host_file.display().to_string();
    let guest_path = format!("/etc/{GUEST_MARK}");
    let out = watch_marks(start(), header, &guest_path, &|| {
        host_run(&cat, &[&host_arg])
    });
    assert!(
        out.lines()
            .any(|l| l.contains("telebpf-guest-m") && l.contains(also) && l.ends_with(&guest_path)),
        "{tool} missed the guest's marker process opening {guest_path}:\n{out}"
    );
    let host_name = host_file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        !out.contains(&host_name),
        "{tool} through telebpf saw the host's open of {host_arg}:\n{out}"
    );
}

/// A libbpf-tool built on kprobes (`capable`: kprobe and kretprobe on
/// `cap_capable`) works against the guest, whose kernel has kprobes: it
/// attaches through the guest's kprobe PMU and reports the guest proxy's
/// own capability checks (its session threads, `session-N`, check
/// CAP_SYS_ADMIN when a forwarded `bpftool prog list` enumerates
/// programs). Locally the same tool fails on a host without kprobes.
#[test]
fn kprobe_tool_works_against_the_guest() {
    let Some(h) = Harness::start_without_proxy("vm_kprobe_tool_works_against_the_guest") else {
        return;
    };
    let program = find_program("capable").expect("capable (libbpf-tools)");
    let local = Command::new(&program)
        .stdin(Stdio::null())
        .output()
        .expect("run capable locally");
    if local.status.success() {
        say("vm: note: capable works on this host too (it has kprobes)");
    } else {
        say(&format!(
            "vm: capable fails on this host as expected: {}",
            String::from_utf8_lossy(&local.stderr)
                .lines()
                .find(|l| l.contains("kprobe"))
                .unwrap_or("(no kprobe line)")
        ));
    }
    let g = guest();
    let c = Client::new(&h, g);
    let mut t = c.start_tool("capable", &[]);
    wait_for(&mut t, "VERDICT", READY);
    let deadline = Instant::now() + EVENT;
    loop {
        c.bpftool(&["prog", "list"]).expect_success();
        let out = t.output();
        if out
            .lines()
            .any(|l| l.contains("session-") && l.contains("CAP_SYS_ADMIN"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capable did not report the guest proxy's CAP_SYS_ADMIN checks:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop(t);
    h.finish();
}

/// The guest runs a plain echo beside its proxy (`telebpf-proxy --echo`,
/// its port in `guest-facts`): `telebpf bench rtt` against the guest finds
/// it one port above the proxy's and prints the raw vsock round trips and
/// the forwarded lookup's ratio to them — the base a forwarded call over
/// vsock is judged against.
#[test]
fn bench_rtt_measures_the_guests_raw_vsock_echo() {
    let Some(h) = Harness::start_without_proxy("vm_bench_rtt_measures_the_guests_raw_vsock_echo")
    else {
        return;
    };
    let g = guest();
    assert_eq!(
        g.fact("echo_port"),
        (GUEST_PORT + 1).to_string(),
        "the guest's echo is not where bench rtt looks for it"
    );
    let c = Client::new(&h, g);
    let out = c.telebpf(&["bench", "rtt", "--runs", "200"]);
    out.expect_success();
    let text = out.stdout_text();
    for want in [
        "raw vsock echo, 64 B",
        "raw vsock echo, spin-then-block, 64 B",
        "sealed channel ping, 64 B",
        "forwarded BPF_MAP_LOOKUP_ELEM",
        "forwarded lookup / spinning raw echo:",
    ] {
        assert!(
            text.contains(want),
            "bench rtt printed no {want:?}:\n{text}"
        );
    }
    say(&format!("vm: bench rtt against the guest:\n{text}"));
    h.finish();
}

// ------------------------------------------------------------ bulk reads

/// The modes of `telebpf ids`.
const IDS_MODES: [&str; 3] = ["per-pointer", "bulk-page", "bulk-data"];

/// `telebpf ids WHAT --mode MODE --json` through the guest's proxy, parsed.
fn ids_json(c: &Client, what: &str, mode: &str) -> Vec<Value> {
    let out = c.telebpf(&["ids", what, "--mode", mode, "--json"]);
    out.expect_success();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ids {what} --mode {mode}: not JSON ({e}): {}",
            out.describe()
        )
    });
    v.as_array()
        .unwrap_or_else(|| panic!("ids {what} --mode {mode}: not an array: {v}"))
        .clone()
}

/// A host process with a marked name (a copy of `sleep`), killed on drop.
struct HostMark {
    child: Child,
    name: String,
}

impl HostMark {
    fn start(h: &Harness) -> HostMark {
        // comm holds 15 bytes: keep the name short and unique.
        let name = format!("tbvmh{}", std::process::id() % 1_000_000);
        let copy = h.dir().join(&name);
        fs::copy(find_program("sleep").expect("sleep"), &copy).expect("copy sleep");
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
        let child = Command::new(&copy)
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the host's marked process");
        HostMark { child, name }
    }
}

impl Drop for HostMark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `telebpf ids ps` lists the guest's processes, in every mode: its init,
/// the marker, the proxy and the TCP listener, and not a marked process
/// running on the host.
#[test]
fn ids_ps_lists_the_guest_processes() {
    let Some(h) = Harness::start_without_proxy("vm_ids_ps_lists_the_guest_processes") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let host = HostMark::start(&h);
    for mode in IDS_MODES {
        let rows = ids_json(&c, "ps", mode);
        let comms: Vec<&str> = rows.iter().filter_map(|p| p["comm"].as_str()).collect();
        for want in ["init", "telebpf-guest-m", "telebpf-proxy", "httpd"] {
            assert!(
                comms.contains(&want),
                "ids ps --mode {mode}: no {want} among the guest's processes: {comms:?}"
            );
        }
        assert!(
            rows.iter().any(|p| p["pid"] == 1 && p["comm"] == "init"),
            "ids ps --mode {mode}: pid 1 is not the guest's init: {comms:?}"
        );
        assert!(
            !comms.contains(&host.name.as_str()),
            "ids ps --mode {mode}: lists the host's {}: {comms:?}",
            host.name
        );
    }
    drop(host);
    h.finish();
}

/// `telebpf ids tcp` shows the guest's listener on port 7777, in every
/// mode, and not a listener of the host's.
#[test]
fn ids_tcp_shows_the_guest_listener() {
    let Some(h) = Harness::start_without_proxy("vm_ids_tcp_shows_the_guest_listener") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let host_port = u64::from(host.local_addr().expect("port").port());
    const TCP_LISTEN: u64 = 10;
    for mode in IDS_MODES {
        let rows = ids_json(&c, "tcp", mode);
        assert!(
            rows.iter()
                .any(|s| s["local_port"] == 7777 && s["state"] == TCP_LISTEN),
            "ids tcp --mode {mode}: no listener on the guest's port 7777: {rows:?}"
        );
        assert!(
            !rows.iter().any(|s| s["local_port"] == host_port),
            "ids tcp --mode {mode}: shows the host's listener on {host_port}: {rows:?}"
        );
    }
    drop(host);
    h.finish();
}

/// `telebpf ids modules` lists the vsock and virtio modules the guest
/// loaded at boot (`modules=` of guest-facts), in every mode, with their
/// sizes; this host's kernel has no loadable modules at all.
#[test]
fn ids_modules_lists_the_guest_modules() {
    let Some(h) = Harness::start_without_proxy("vm_ids_modules_lists_the_guest_modules") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let booted: Vec<&str> = g.fact("modules").split_whitespace().collect();
    assert!(
        booted.contains(&"vmw_vsock_virtio_transport"),
        "the guest booted without its vsock transport module: {booted:?}"
    );
    for mode in IDS_MODES {
        let rows = ids_json(&c, "modules", mode);
        let names: Vec<&str> = rows.iter().filter_map(|m| m["name"].as_str()).collect();
        for want in &booted {
            assert!(
                names.contains(want),
                "ids modules --mode {mode}: no {want}: {names:?}"
            );
        }
        assert!(
            rows.iter()
                .all(|m| m["size"].as_u64().is_some_and(|n| n > 0)),
            "ids modules --mode {mode}: a module without a size: {rows:?}"
        );
    }
    h.finish();
}

// ---------------------------------------------------------------- monitor

/// How long a monitor event may take from three emulated guests.
const MONITOR_EVENT: Duration = Duration::from_secs(180);

/// `telebpf monitor` as nobody over three guests at once (kernels 6.1,
/// 6.12 and 6.1): a process started in guest 2 is reported for guest 2
/// only, a listener opened in guest 3 likewise, a BPF program loaded in
/// guest 1 through its proxy for guest 1 only; when guest 3's proxy is
/// killed, `guest_lost` comes within 5 s while guest 1 keeps reporting (a
/// listener opened there meanwhile), and when it is back, `guest_up`.
/// Every line fits the schema.
#[test]
fn monitor_watches_three_guests() {
    let Some(h) = Harness::start_without_proxy("vm_monitor_watches_three_guests") else {
        return;
    };
    let g1 = guest();
    let (g2, g3) = std::thread::scope(|s| {
        let a = s.spawn(|| boot_guest_with(Some("6.12")));
        let b = s.spawn(|| boot_guest_with(Some("6.1")));
        (a.join().expect("boot"), b.join().expect("boot"))
    });
    // Stopped as soon as this test ends (not only when the binary does):
    // three emulated guests on this machine's cores would slow the suite's
    // other tests past their time limits.
    let g2 = Stopped(g2.unwrap_or_else(|e| panic!("guest 2 did not start: {e}")));
    let g3 = Stopped(g3.unwrap_or_else(|e| panic!("guest 3 did not start: {e}")));
    let (g2, g3) = (&g2.0, &g3.0);
    say(&format!(
        "vm: three guests: {}, {}, {}",
        g1.fact("release"),
        g2.fact("release"),
        g3.fact("release")
    ));
    let clients = [
        Client::named(&h, g1, "g1"),
        Client::named(&h, g2, "g2"),
        Client::named(&h, g3, "g3"),
    ];
    let names = ["g1", "g2", "g3"];
    let triples: Vec<(&str, String, &Path)> = names
        .iter()
        .zip(&clients)
        .map(|(n, c)| (*n, c.target.clone(), c.key.as_path()))
        .collect();
    let file = guests_file(&h, &triples);
    let m = Monitor::start(&h, &file, &["--interval", "1000"], MONITOR_EVENT);
    let wait = |from: usize, what: &str, pred: &dyn Fn(&Value) -> bool| m.wait(from, what, pred);
    let all = || m.lines();

    for g in ["g1", "g2", "g3"] {
        wait(0, &format!("snapshot of {g}"), &|v| is(v, g, "snapshot"));
    }
    let start = all().len();

    // A process in guest 2.
    clients[1]
        .run("mkdir", &["/sys/fs/bpf/telebpf-start-process"])
        .expect_success();
    wait(start, "process_started in g2", &|v| {
        is(v, "g2", "process_started") && v["comm"] == "telebpf-guest-p"
    });
    // A listener in guest 3.
    clients[2]
        .run("mkdir", &["/sys/fs/bpf/telebpf-open-listener"])
        .expect_success();
    let (_, _, opened) = wait(start, "listener_opened in g3", &|v| {
        is(v, "g3", "listener_opened") && v["port"] == 7778
    });
    say(&format!("vm: {opened}"));
    // A program in guest 1, loaded through its proxy.
    let dir = format!("/sys/fs/bpf/{}", unique_name("tbmon"));
    clients[0]
        .bpftool(&["prog", "loadall", &h.object("forward_test"), &dir])
        .expect_success();
    let (_, _, loaded) = wait(start, "bpf_program_loaded in g1", &|v| {
        is(v, "g1", "bpf_program_loaded") && v["name"] == telebpf_tests::forward_test::PROG
    });
    say(&format!("vm: {loaded}"));

    // Guest 3's proxy dies and comes back.
    let before = all().len();
    clients[2]
        .run("mkdir", &["/sys/fs/bpf/telebpf-restart-proxy"])
        .expect_success();
    let asked = Instant::now();
    let (_, at, lost) = wait(before, "guest_lost of g3", &|v| is(v, "g3", "guest_lost"));
    let took = at.duration_since(asked);
    say(&format!(
        "vm: guest_lost {took:?} after the proxy restart was asked: {lost}"
    ));
    // The proxy is killed within half a second of the request (the
    // trigger polls twice a second).
    assert!(
        took < Duration::from_secs(5) + Duration::from_millis(500),
        "guest_lost took {took:?}"
    );
    // Meanwhile guest 1 still reports: a listener opens there.
    clients[0]
        .run("mkdir", &["/sys/fs/bpf/telebpf-open-listener"])
        .expect_success();
    wait(before, "listener_opened in g1 while g3 is down", &|v| {
        is(v, "g1", "listener_opened") && v["port"] == 7778
    });
    wait(before, "guest_up of g3 again", &|v| is(v, "g3", "guest_up"));

    // Stopped, every line checked against the schema.
    let events = m.stop();
    // Each event in its own guest only.
    for l in &events {
        let v: Value = serde_json::from_str(l).expect("JSON");
        if v["event"] == "process_started" && v["comm"] == "telebpf-guest-p" {
            assert_eq!(v["guest"], "g2", "{l}");
        }
        if v["event"] == "listener_opened" && v["port"] == 7778 {
            assert_ne!(v["guest"], "g2", "{l}");
        }
        if v["event"] == "bpf_program_loaded" && v["name"] == telebpf_tests::forward_test::PROG {
            assert_eq!(v["guest"], "g1", "{l}");
        }
    }
    say(&format!(
        "vm: monitor wrote {} events over three guests",
        events.len()
    ));
    h.finish();
}

/// A guest of one test, stopped (`guest.sh down`) when dropped, also when
/// the test panics.
struct Stopped(Guest);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(guest_script())
            .arg("down")
            .arg(&self.0.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `bpftool net attach xdpgeneric id N dev lo` as nobody lands on the
/// guest's `lo`: `bpftool net list` through telebpf shows it, the host's
/// own does not; `net detach` removes it and nothing is left on the guest.
/// The program is loaded in the guest first (its id is a guest id, `dev
/// lo` is resolved by the guest, the rtnetlink request goes to the
/// guest's kernel with the program's guest fd).
#[test]
fn bpftool_net_attach_xdp_lands_on_the_guests_lo() {
    use telebpf_tests::net_test::xdp_attachments;

    let Some(h) = Harness::start_without_proxy("vm_bpftool_net_attach_xdp") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let dir = format!("/sys/fs/bpf/{}", unique_name("tbvm_net"));
    c.bpftool(&["prog", "loadall", &h.object("net_test"), &dir])
        .expect_success();
    let xdp = format!("{dir}/{}", telebpf_tests::net_test::XDP_PROG);
    let id = json(&c.bpftool(&["prog", "show", "pinned", &xdp, "--json"]))["id"]
        .as_u64()
        .expect("prog id");
    let id_text = id.to_string();

    c.bpftool(&["net", "attach", "xdpgeneric", "id", &id_text, "dev", "lo"])
        .expect_success();
    let guest_list = xdp_attachments(&json(&c.bpftool(&["net", "list", "--json"])));
    assert!(
        guest_list.contains(&("lo".to_string(), id)),
        "the guest's net list shows program {id} on lo: {guest_list:?}"
    );
    let host_list = xdp_attachments(&h.local(&["net", "list", "--json"]).json());
    assert!(
        host_list.iter().all(|(dev, i)| *i != id && dev != "lo"),
        "the host's net list shows nothing of it: {host_list:?}"
    );

    c.bpftool(&["net", "detach", "xdpgeneric", "dev", "lo"])
        .expect_success();
    let left = xdp_attachments(&json(&c.bpftool(&["net", "list", "--json"])));
    assert!(left.is_empty(), "nothing left on the guest: {left:?}");
    for prog in [
        telebpf_tests::net_test::XDP_PROG,
        telebpf_tests::net_test::TC_PROG,
    ] {
        c.run("rm", &[&format!("{dir}/{prog}")]).expect_success();
    }
    c.run("rmdir", &[&dir]).expect_success();
    h.finish();
}

/// A libbpf program using `bpf_xdp_attach`, and one using the tc hook API
/// (`bpf_tc_hook_create`, `bpf_tc_attach`), run as nobody through telebpf,
/// attach to the guest's `lo` (`bpftool net list` through telebpf shows
/// them, the host's does not); their detach on exit (`bpf_xdp_detach`,
/// `bpf_tc_detach`, `bpf_tc_hook_destroy`) leaves nothing on the guest.
#[test]
fn libbpf_xdp_and_tc_attach_land_on_the_guests_lo() {
    use telebpf_tests::net_test::{attached_ids, check_on_lo, nothing_attached};

    let Some(h) = Harness::start_without_proxy("vm_libbpf_xdp_and_tc_attach") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let program = telebpf_tests::build_net_attach(h.dir());
    let obj = h.object("net_test");
    for mode in ["xdp", "tc"] {
        let mut tool = h.start_exec_tool(&c.target, &c.key, &program, &[mode, &obj, "lo"]);
        wait_for(&mut tool, "attached ", READY);
        let (id, queried) = attached_ids(&tool.output());
        assert_eq!(id, queried, "{mode}: libbpf's query names the program");
        let guest_list = json(&c.bpftool(&["net", "list", "--json"]));
        let host_list = h.local(&["net", "list", "--json"]).json();
        if let Err(e) = check_on_lo(mode, &guest_list, &host_list, id) {
            panic!("{e}");
        }
        let out = stop(tool);
        assert!(out.contains("detached"), "{mode}: {out}");
        let after = json(&c.bpftool(&["net", "list", "--json"]));
        assert!(
            nothing_attached(&after),
            "{mode}: nothing left on the guest: {after}"
        );
    }
    h.finish();
}

#[test]
fn bpftool_cgroup_tree_attach_show_act_on_the_guest() {
    let Some(h) = Harness::start_without_proxy("vm_bpftool_cgroup") else {
        return;
    };
    let g = guest();
    let c = Client::new(&h, g);
    let mark = "/sys/fs/cgroup/telebpf-mark";
    let pin = format!("/sys/fs/bpf/{}", unique_name("tbvm_cg"));
    c.bpftool(&["prog", "load", &h.object("cgroup_test"), &pin])
        .expect_success();
    let shown = json(&c.bpftool(&["prog", "show", "pinned", &pin, "--json"]));
    let id = shown["id"].as_u64().expect("prog id").to_string();
    c.bpftool(&["cgroup", "attach", mark, "ingress", "id", &id])
        .expect_success();

    // The tree is the guest's: its marked cgroup with the program, none
    // of the host's cgroups (the host's cgroup2 is not at /sys/fs/cgroup
    // alone, and its tree has no telebpf-mark).
    let tree = c.bpftool(&["cgroup", "tree"]);
    tree.expect_success();
    let text = tree.stdout_text();
    say(&format!("bpftool cgroup tree of the guest:\n{text}"));
    let mut paths = text.lines().filter(|l| l.starts_with('/'));
    assert!(
        paths.all(|p| p == mark),
        "cgroups other than the guest's mark listed:\n{text}"
    );
    assert!(
        text.contains(mark) && text.contains(&id),
        "{}",
        tree.describe()
    );
    // coreutils' ls reads the same tree (opendir/readdir, statx).
    let ls = c.run("ls", &["/sys/fs/cgroup"]);
    ls.expect_success();
    assert!(
        ls.stdout_text().lines().any(|n| n == "telebpf-mark"),
        "{}",
        ls.describe()
    );
    let show = c.bpftool(&["cgroup", "show", mark, "--json"]);
    let attached = json(&show);
    assert!(
        attached.as_array().is_some_and(|a| a.iter().any(|p| p["id"]
            .as_u64()
            .map(|i| i.to_string())
            == Some(id.clone())
            && p["attach_type"] == "cgroup_inet_ingress")),
        "the guest's cgroup lacks program {id}: {attached}"
    );
    // The host's cgroups have nothing of it (no program of that name).
    let local = h.local(&["cgroup", "tree"]);
    assert!(
        !local.stdout_text().contains("telebpf_cg_in"),
        "{}",
        local.describe()
    );

    c.bpftool(&["cgroup", "detach", mark, "ingress", "id", &id])
        .expect_success();
    // (bpftool prints nothing, not even `[]`, for a cgroup without
    // programs.)
    let after = c.bpftool(&["cgroup", "show", mark]);
    after.expect_success();
    assert!(
        !after.stdout_text().contains("telebpf_cg_in"),
        "still attached after detach: {}",
        after.describe()
    );
    c.run("rm", &[&pin]).expect_success();
    h.finish();
}

// -------------------------------------------------------------------- BCC

/// Debian's BCC tool `NAME-bpfcc` (a Python script on libbcc, which the
/// preload reaches through the dynamically linked interpreter).
fn bcc_program(name: &str) -> PathBuf {
    find_program(&format!("{name}-bpfcc"))
        .unwrap_or_else(|| panic!("{name}-bpfcc is not installed (scripts/setup.sh: bpfcc-tools)"))
}

/// BCC compiles on the host against `/lib/modules/<release>/build`, the
/// release being the guest's under the preload: its headers must be here.
fn bcc_needs_headers(g: &Guest) {
    let build = format!("/lib/modules/{}/build", g.fact("release"));
    assert!(
        Path::new(&build)
            .join("include/generated/autoconf.h")
            .exists(),
        "{build} is missing: the guest kernel's headers are not installed on this host \
         (scripts/setup.sh, tests/vm/guest.sh headers)"
    );
}

/// Starts BCC's `NAME-bpfcc ARGS` as nobody through the guest's proxy.
fn bcc_start(c: &Client, g: &Guest, name: &str, args: &[&str]) -> ExecTool {
    bcc_needs_headers(g);
    c.h.start_exec_tool(&c.target, &c.key, &bcc_program(name), args)
}

/// Starts BCC's `NAME-bpfcc ARGS` as root with every capability dropped
/// (so that `bpf()` is impossible on the host): BCC's kernel symbol
/// lookups (libbcc's `bcc_procutils_each_ksym`, behind `ksymname`, which
/// finds the syscall prefix `__x64_sys_` that execsnoop and opensnoop
/// attach to, and `support_raw_tracepoint`, which runqlat asks) read
/// nothing unless euid is 0.
fn bcc_start_as_root(h: &Harness, g: &Guest, name: &str, args: &[&str]) -> ExecTool {
    bcc_needs_headers(g);
    let key = h.dir().join("root.key");
    if !key.exists() {
        fs::copy(g.dir.join("key"), &key).expect("copy the guest's key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    }
    h.start_exec_tool_as_root(&g.target(), &key, &bcc_program(name), args)
}

/// The pid of the guest's marker shell (tests/vm/mark.sh, comm
/// `telebpf-guest-m`), from the guest's own process list.
fn guest_mark_pid(c: &Client) -> u64 {
    let rows = ids_json(c, "ps", "bulk-page");
    let pids: Vec<u64> = rows
        .iter()
        .filter(|p| p["comm"] == "telebpf-guest-m")
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "one marker shell in the guest's process list: {rows:?}"
    );
    pids[0]
}

/// A host process that wakes up and makes system calls all the time (a
/// shell opening a file and sleeping 50 ms in a loop), killed on drop: what
/// a per-process BCC tool would show if it ran on the host.
struct HostBusy {
    child: Child,
}

impl HostBusy {
    fn start() -> HostBusy {
        let child = Command::new("sh")
            .args(["-c", "while :; do : </etc/hostname; sleep 0.05; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the host's busy loop");
        HostBusy { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostBusy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a per-process BCC tool (started by `start`) for a few seconds
/// while the host's busy loop runs, stops it with SIGINT (the tools print
/// their tables then) and returns its output, the guest marker's pid and
/// the host loop's pid (which is no guest pid).
fn bcc_per_process(
    h: &Harness,
    header: &str,
    start: &dyn Fn(&Client, &Guest, u64) -> ExecTool,
) -> (String, u64, u64) {
    let g = guest();
    let c = Client::new(h, g);
    let mark = guest_mark_pid(&c);
    let busy = HostBusy::start();
    let host = u64::from(busy.pid());
    let guest_pids: Vec<u64> = ids_json(&c, "ps", "bulk-page")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert!(
        !guest_pids.contains(&host),
        "the host's busy loop {host} has a pid the guest uses too: run again"
    );
    let mut t = start(&c, g, mark);
    wait_for(&mut t, header, READY);
    // The marker shell wakes and opens its file once a second.
    std::thread::sleep(Duration::from_secs(5));
    let out = stop(t);
    drop(busy);
    (out, mark, host)
}

/// execsnoop-bpfcc (root without capabilities, see [`bcc_start_as_root`])
/// through telebpf sees the guest's marker exec, and none of the host's
/// own execs made meanwhile.
#[test]
fn bcc_execsnoop_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_execsnoop_sees_the_guest_not_the_host")
    else {
        return;
    };
    execs_of_the_guest_not_the_host("execsnoop-bpfcc", &|| {
        bcc_start_as_root(&h, guest(), "execsnoop", &[])
    });
    h.finish();
}

/// opensnoop-bpfcc (root without capabilities) through telebpf sees the
/// guest's marker shell open its file, and none of the host's opens.
#[test]
fn bcc_opensnoop_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_opensnoop_sees_the_guest_not_the_host")
    else {
        return;
    };
    opens_of_the_guest_not_the_host(&h, "opensnoop-bpfcc", "PATH", "", &|| {
        bcc_start_as_root(&h, guest(), "opensnoop", &[])
    });
    h.finish();
}

/// trace-bpfcc, as nobody, on the `syscalls:sys_enter_openat` tracepoint
/// printing the file name: the guest's marker shell opening its file
/// shows, the host's opens do not.
#[test]
fn bcc_trace_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_trace_sees_the_guest_not_the_host") else {
        return;
    };
    opens_of_the_guest_not_the_host(&h, "trace-bpfcc", "COMM", "sys_enter_openat", &|| {
        let g = guest();
        bcc_start(
            &Client::new(&h, g),
            g,
            "trace",
            &["t:syscalls:sys_enter_openat \"%s\", args->filename"],
        )
    });
    h.finish();
}

/// runqlat-bpfcc -P, as root without capabilities (as nobody BCC's
/// `support_raw_tracepoint` finds no kernel symbol and falls back to
/// kprobes on `ttwu_do_wakeup`, which 6.12 no longer has): a run-queue
/// latency histogram for the
/// guest's marker shell (its pid from the guest's process list; it wakes
/// once a second), and none for the host's busy loop, which wakes twenty
/// times a second.
#[test]
fn bcc_runqlat_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_runqlat_sees_the_guest_not_the_host") else {
        return;
    };
    let (out, mark, host) = bcc_per_process(&h, "Tracing run queue latency", &|_, g, _| {
        bcc_start_as_root(&h, g, "runqlat", &["-P"])
    });
    let histograms: Vec<&str> = out.lines().filter(|l| l.starts_with("pid = ")).collect();
    assert!(
        histograms.contains(&format!("pid = {mark}").as_str()),
        "runqlat-bpfcc -P has no histogram of the guest's marker shell {mark}:\n{out}"
    );
    assert!(
        !histograms.contains(&format!("pid = {host}").as_str()),
        "runqlat-bpfcc -P through telebpf has one of the host's busy loop {host}:\n{out}"
    );
    h.finish();
}

/// syscount-bpfcc -P, as nobody: the guest's marker shell is among the
/// processes it counts, the host's busy loop is not. (Its COMM column
/// reads `/proc/<pid>/comm` on the host, so a guest pid shows as
/// `[unknown]` or as a host process's name.)
#[test]
fn bcc_syscount_sees_the_guest_not_the_host() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_syscount_sees_the_guest_not_the_host")
    else {
        return;
    };
    let (out, mark, host) = bcc_per_process(&h, "Tracing syscalls", &|c, g, _| {
        bcc_start(c, g, "syscount", &["-P", "-T", "1000"])
    });
    let pids: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        pids.contains(&mark),
        "syscount-bpfcc -P did not count the guest's marker shell {mark}:\n{out}"
    );
    assert!(
        !pids.contains(&host),
        "syscount-bpfcc -P through telebpf counted the host's busy loop {host}:\n{out}"
    );
    h.finish();
}

/// funccount-bpfcc, as nobody, counting `do_sys_openat2` of the guest's
/// marker shell (`-p`, its pid from the guest's process list; it opens
/// its file once a second): BCC matches the name against the guest's
/// kallsyms minus its `kprobes/blacklist` (the file that stopped it before
/// it was served) and attaches a kprobe, which this host does not even
/// have. The host's busy loop opens twenty times a second under another
/// pid; no count of it can show.
#[test]
fn bcc_funccount_counts_the_guests_calls() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_funccount_counts_the_guests_calls") else {
        return;
    };
    let (out, mark, _) = bcc_per_process(&h, "Tracing 1 functions", &|c, g, mark| {
        bcc_start(
            c,
            g,
            "funccount",
            &["-p", &mark.to_string(), "do_sys_openat2"],
        )
    });
    let count: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("do_sys_openat2")?.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        count >= 2,
        "funccount-bpfcc -p {mark} counted {count} do_sys_openat2 calls of the guest's marker shell in 5 s:\n{out}"
    );
    h.finish();
}

/// biolatency-bpfcc, as nobody, gets past the guest's `kprobes/blacklist`
/// (it stopped there before it was served) and then stops where it would
/// inside the guest: BCC 0.26 attaches a kprobe to
/// `blk_account_io_done`, which the 6.1 kernel lists in kallsyms but not
/// among the ftrace-able functions, and kprobe events refuse such
/// functions without `CONFIG_KPROBE_EVENTS_ON_NOTRACE` (unset in both test
/// kernels). The guest's own files, read through telebpf, say so. (The
/// test guest has no block device either, so there is no marked I/O to
/// see.)
#[test]
fn bcc_biolatency_stops_as_in_the_guest() {
    let Some(h) = Harness::start_without_proxy("vm_bcc_biolatency_stops_as_in_the_guest") else {
        return;
    };
    let g = guest();
    bcc_needs_headers(g);
    let c = Client::new(&h, g);
    let out = c.run(
        &bcc_program("biolatency").display().to_string(),
        &["1", "1"],
    );
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(
        !text.contains("kprobes/blacklist"),
        "biolatency-bpfcc still stops on the blacklist: {}",
        out.describe()
    );
    assert!(
        !out.success() && text.contains("kprobe b'blk_account_io_done'"),
        "biolatency-bpfcc did not stop on blk_account_io_done: {}",
        out.describe()
    );
    let traceable = c.run(
        "grep",
        &[
            "-c",
            "^blk_account_io_done$",
            "/sys/kernel/debug/tracing/available_filter_functions",
        ],
    );
    assert_eq!(
        traceable.stdout_text().trim(),
        "0",
        "the guest's available_filter_functions: {}",
        traceable.describe()
    );
    h.finish();
}

// --------------------------------------------------------------- bpftrace

/// Debian's bpftrace refuses to run unless its euid is 0. It runs here as
/// root with every capability dropped (`setpriv`), so that `bpf()` is
/// impossible on the host and any success came through the guest's proxy
/// (`bpftrace_refuses_without_capabilities_locally` checks that), with a
/// root-owned copy of the guest's key (root without `CAP_DAC_OVERRIDE`
/// reads only its own files).
struct Bpftrace {
    child: Child,
    out: PathBuf,
}

/// setpriv's arguments that drop every capability and keep uid 0.
const NO_CAPS: [&str; 3] = ["--inh-caps=-all", "--bounding-set=-all", "--"];

impl Bpftrace {
    /// The path of Debian's bpftrace (a failure, not a skip: the matrix
    /// needs it; `scripts/setup.sh` installs it).
    fn program() -> PathBuf {
        find_program("bpftrace").expect("bpftrace is not installed (scripts/setup.sh)")
    }

    /// A root-owned copy of the guest's key.
    fn key(h: &Harness, g: &Guest) -> PathBuf {
        let key = h.dir().join("root.key");
        if !key.exists() {
            fs::copy(g.dir.join("key"), &key).expect("copy the guest's key");
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        }
        key
    }

    /// `setpriv (no capabilities) telebpf exec … -- bpftrace ARGS` against
    /// the guest, as a command (line-buffered with `stdbuf -oL`).
    fn command(h: &Harness, g: &Guest, args: &[&str]) -> Command {
        let mut cmd = Command::new(find_program("stdbuf").expect("stdbuf"));
        cmd.arg("-oL")
            .arg(find_program("setpriv").expect("setpriv"))
            .args(NO_CAPS)
            .arg(h.telebpf())
            .args(["exec", "--target", &g.target(), "--key-file"])
            .arg(Bpftrace::key(h, g))
            .arg("--")
            .arg(Bpftrace::program())
            .args(args)
            .env_clear()
            .env("PATH", telebpf_tests::PATH_ENV)
            .env("HOME", "/tmp")
            .current_dir(h.dir())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `bpftrace ARGS` against the guest to its end.
    fn run(h: &Harness, g: &Guest, args: &[&str]) -> CmdOutput {
        run_with_timeout(
            Bpftrace::command(h, g, args),
            &format!("[root, no capabilities] telebpf exec -- bpftrace {args:?}"),
            COMMAND_TIMEOUT,
        )
    }

    /// Starts `bpftrace -e SCRIPT` against the guest, its output into a
    /// file.
    fn start(h: &Harness, g: &Guest, script: &str) -> Bpftrace {
        let out = h.dir().join(unique_name("bpftrace.out"));
        let file = fs::File::create(&out).expect("bpftrace output file");
        let child = Bpftrace::command(h, g, &["-e", script])
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start bpftrace");
        Bpftrace { child, out }
    }

    /// What it printed so far.
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until it prints `needle`, calling `activity` between looks.
    fn wait_for(&mut self, needle: &str, timeout: Duration, activity: &dyn Fn()) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "bpftrace did not print {needle:?} (exit: {exited:?}):\n{}\n--- guest console ---\n{}",
                self.output(),
                guest().console_tail()
            );
            activity();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGINT, wait for its exit (its END block and maps); the output.
    fn stop(mut self) -> String {
        telebpf_tests::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(60));
        self.output()
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One symbol of a kallsyms text as bcc's symbol cache (bpftrace's
/// `kstack`) keeps it: data symbols (`b B d D r R`) and addresses 0 or
/// below the kernel's half are dropped (`bcc_procutils_each_ksym`).
fn bcc_ksyms(kallsyms: &str) -> Vec<(u64, String)> {
    let mut syms: Vec<(u64, String)> = kallsyms
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            if addr == 0 || addr < 0x00ff_ffff_ffff_ffff || "bBdDrR".contains(kind) {
                return None;
            }
            Some((addr, name.to_string()))
        })
        .collect();
    syms.sort();
    syms
}

/// Whether `frame` (`NAME+OFFSET`, as bpftrace prints a `kstack` frame)
/// is how a symboliser that knows `syms` names some address: a symbol
/// NAME at A such that the nearest symbol at or below A + OFFSET is at A.
fn frame_resolves(frame: &str, syms: &[(u64, String)]) -> bool {
    let Some((name, offset)) = frame.rsplit_once('+') else {
        return false;
    };
    let Ok(offset) = offset.parse::<u64>() else {
        return false;
    };
    syms.iter().filter(|(_, n)| n == name).any(|&(a, _)| {
        let x = a.saturating_add(offset);
        let below = syms.partition_point(|(s, _)| *s <= x);
        below > 0 && syms[below - 1].0 == a
    })
}

/// The frames of every `@NAME[kstack]` key bpftrace printed for map
/// `map`: one list per stack.
fn kstacks(out: &str, map: &str) -> Vec<Vec<String>> {
    let mut stacks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in out.lines() {
        if line.starts_with(&format!("@{map}[")) {
            current = Some(Vec::new());
        } else if line.starts_with("]:") {
            stacks.extend(current.take());
        } else if let Some(frames) = current.as_mut() {
            frames.push(line.trim().to_string());
        }
    }
    stacks
}

/// Without capabilities, root's bpftrace can do nothing on this host: the
/// other `bpftrace_` tests run it so, and whatever they see came through
/// the guest's proxy.
#[test]
fn bpftrace_refuses_without_capabilities_locally() {
    let Some(_h) = Harness::start_without_proxy("vm_bpftrace_no_caps") else {
        return;
    };
    let mut cmd = Command::new(find_program("setpriv").expect("setpriv"));
    cmd.args(NO_CAPS)
        .arg(Bpftrace::program())
        .args(["-e", "BEGIN { printf(\"LOCAL\\n\"); exit(); }"]);
    let local = run_with_timeout(cmd, "[root, no capabilities] bpftrace", COMMAND_TIMEOUT);
    assert!(
        !local.success() && !local.stdout_text().contains("LOCAL"),
        "bpftrace without capabilities worked on the host: the bpftrace_ tests prove nothing\n{}",
        local.describe()
    );
}

/// bpftrace against the guest: a tracepoint with `printf`, a kprobe (this
/// host has none; the guest's kernel has), a `kfunc` (fentry through a BPF
/// trampoline), `count()`, `hist()` and an `END` block, each on the
/// guest's marker process (`telebpf-guest-m` opening
/// `/etc/telebpf-guest-mark`, tests/vm/mark.sh), while the host runs a
/// marked program of its own that opens files: the host's program shows
/// nowhere. And `kstack`: every frame is named as the guest's own
/// /proc/kallsyms names that address — taken while the probes were
/// attached, with its `[bpf]` symbols — and the stack of the `kfunc`
/// program runs through its program (`bpf_prog_<tag>_<name>`) and its
/// trampoline (`bpf_trampoline_<key>`), although bpftrace names frames
/// only after it closed them (see guest-proxy/src/bpf_symbols.rs).
#[test]
fn bpftrace_probes_and_kstack_on_the_guests_marks() {
    let Some(h) = Harness::start_without_proxy("vm_bpftrace_probes_and_kstack") else {
        return;
    };
    let g = guest();
    // The host's marked program: a copy of cat whose name (its comm) the
    // script counts as it counts the guest's marker.
    let host_comm = unique_name("tbh");
    let host_comm = &host_comm[..host_comm.len().min(15)];
    let host_prog = h.dir().join(host_comm);
    fs::copy(find_program("cat").expect("cat"), &host_prog).expect("copy cat");
    let host_file = h.dir().join("host-mark");
    fs::write(&host_file, b"host").expect("host file");
    let host_activity = || host_run(&host_prog, &[&host_file.display().to_string()]);
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    say(&format!("vm: this host has a kprobe PMU: {kprobes}"));

    let filter = format!("/comm == \"telebpf-guest-m\" || comm == \"{host_comm}\"/");
    let script = format!(
        "tracepoint:syscalls:sys_enter_openat {filter} \
           {{ printf(\"TBOPEN %s %s\\n\", comm, str(args->filename)); }}\n\
         kprobe:do_sys_openat2 {filter} {{ @kprobe[comm] = count(); }}\n\
         kfunc:do_sys_openat2 {filter} \
           {{ @kfunc[comm] = count(); @stack[kstack(12)] = count(); }}\n\
         tracepoint:syscalls:sys_exit_openat {filter} {{ @ret[comm] = hist(args->ret); }}\n\
         END {{ printf(\"TBEND\\n\"); }}\n"
    );
    let mut bt = Bpftrace::start(&h, g, &script);
    bt.wait_for("Attaching 5 probes", READY, &|| {});
    let seen = format!("TBOPEN telebpf-guest-m /etc/{GUEST_MARK}");
    bt.wait_for(&seen, READY, &host_activity);
    // The guest's kallsyms while the probes are attached, read through
    // the proxy by a session of its own (nothing kept: the live file).
    let live = Client::new(&h, g).run("cat", &["/proc/kallsyms"]);
    live.expect_success();
    let live = live.stdout_text();
    assert!(
        live.lines()
            .any(|l| l.contains(" bpf_trampoline_") && l.ends_with("\t[bpf]")),
        "the guest lists no trampoline while a kfunc probe is attached"
    );
    // A few more marks (the marker opens once a second), with the host's.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        host_activity();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = bt.stop();
    say(&format!("vm: bpftrace printed:\n{out}"));

    assert!(
        !out.contains(host_comm),
        "bpftrace through telebpf saw the host's {host_comm}:\n{out}"
    );
    for needle in [
        "@kprobe[telebpf-guest-m]: ",
        "@kfunc[telebpf-guest-m]: ",
        "@ret[telebpf-guest-m]:",
    ] {
        assert!(out.contains(needle), "no {needle:?} at exit:\n{out}");
    }
    let end = out
        .find("TBEND")
        .unwrap_or_else(|| panic!("no END block:\n{out}"));
    assert!(
        out.find("@kprobe[").is_some_and(|m| m > end),
        "END ran after the maps were printed:\n{out}"
    );
    let hist = out
        .split("@ret[telebpf-guest-m]:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        hist.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with('[') && l.contains("|@")),
        "hist() printed no bucket:\n{out}"
    );

    let syms = bcc_ksyms(&live);
    let stacks = kstacks(&out, "stack");
    assert!(!stacks.is_empty(), "no kstack printed:\n{out}");
    for stack in &stacks {
        for frame in stack {
            assert!(
                frame_resolves(frame, &syms),
                "kstack frame {frame:?} is not how the guest's kallsyms names any address\n{out}"
            );
        }
        let at = |prefix: &str| stack.iter().position(|f| f.starts_with(prefix));
        let (prog, tramp, func) = (
            at("bpf_prog_"),
            at("bpf_trampoline_"),
            at("do_sys_openat2+"),
        );
        assert!(
            matches!((prog, tramp, func), (Some(p), Some(t), Some(f)) if p < t && t < f),
            "the kfunc program's stack does not run program, trampoline, do_sys_openat2: {stack:?}"
        );
    }
    h.finish();
}

/// `bpftrace -l` lists the guest's probes: a kprobe of a module the guest
/// has loaded (vmw_vsock_virtio_transport_common, in `guest-facts`, a
/// module on 6.1 and 6.12), which bpftrace on this host cannot list (its
/// tracefs function list is not readable here), a kfunc from that
/// module's BTF (the host has no such module BTF), and the guest's
/// syscall tracepoints.
#[test]
fn bpftrace_lists_the_guests_probes() {
    let Some(h) = Harness::start_without_proxy("vm_bpftrace_lists") else {
        return;
    };
    let g = guest();
    assert!(
        g.fact("modules")
            .split(' ')
            .any(|m| m == "vmw_vsock_virtio_transport_common"),
        "the guest lacks vmw_vsock_virtio_transport_common: {}",
        g.fact("modules")
    );
    assert!(
        !Path::new("/sys/kernel/btf/vmw_vsock_virtio_transport_common").exists(),
        "the host has vmw_vsock_virtio_transport_common's BTF too: the listing cannot tell them apart"
    );
    let mut local = Command::new(Bpftrace::program());
    local.args(["-l", "kprobe:virtio_transport_recv_pkt*"]);
    let local = run_with_timeout(local, "[root] bpftrace -l locally", COMMAND_TIMEOUT);
    assert!(
        !local
            .stdout_text()
            .contains("kprobe:virtio_transport_recv_pkt"),
        "bpftrace on the host lists the kprobe too: the listing cannot tell them apart\n{}",
        local.describe()
    );
    // Each pattern lists, among others, a line starting with its prefix.
    let lists = |pattern: &str, prefix: &str| {
        let out = Bpftrace::run(&h, g, &["-l", pattern]);
        out.expect_success();
        assert!(
            out.stdout_text().lines().any(|l| l.starts_with(prefix)),
            "bpftrace -l {pattern} lists no {prefix}…\n{}",
            out.describe()
        );
    };
    lists(
        "kprobe:virtio_transport_recv_pkt*",
        "kprobe:virtio_transport_recv_pkt",
    );
    lists(
        "kfunc:vmw_vsock_virtio_transport_common:virtio_transport_*",
        "kfunc:vmw_vsock_virtio_transport_common:virtio_transport_",
    );
    lists(
        "tracepoint:syscalls:sys_enter_openat*",
        "tracepoint:syscalls:sys_enter_openat",
    );
    h.finish();
}

/// The matrix's static and Go tools (issue 15: static C libbpf, static
/// libbpf-rs ringwatch, Go cilium/ebpf), as nobody through `telebpf exec`
/// against the guest, served by the seccomp supervisor: each counts the
/// guest marker's execs of `/bin/true` (comm `true`) through its ring
/// buffer, its perf buffer and its `.bss` counter, and none of the execs of
/// `/bin/true` the host makes meanwhile.
#[test]
fn matrix_tools_see_the_guests_marks_through_the_supervisor() {
    use telebpf_tests::matrix::{Records, Tool};
    let Some(h) = Harness::start_without_proxy("vm_matrix_tools_through_the_supervisor") else {
        return;
    };
    let c = Client::new(&h, guest());
    let truth = find_program("true").expect("true");
    for tool in Tool::ALL {
        let program = h.copy_in(&tool.build().unwrap_or_else(|e| panic!("{e}")));
        let args = tool.args("true", 3, 60_000);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut t = h.start_exec_tool(&c.target, &c.key, &program, &args);
        wait_for(&mut t, &tool.ready_line("true"), READY);
        let deadline = Instant::now() + EVENT;
        let mut host_pids = Vec::new();
        let status = loop {
            if let Some(status) = t.exited() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no 3 records of the guest's marks within {EVENT:?}:\n{}\n--- guest console ---\n{}",
                tool.name(),
                t.output(),
                guest().console_tail()
            );
            host_pids.push(telebpf_tests::run_marked(&truth));
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = t.output();
        assert!(
            status.success(),
            "{} failed ({status}):\n{out}",
            tool.name()
        );
        let records = Records::parse(tool, &out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
        for (pid, comm) in records.ringbuf.iter().chain(&records.perfbuf) {
            assert_eq!(comm, "true", "{}:\n{out}", tool.name());
            assert!(
                !host_pids.contains(pid),
                "{}: a record of the host's exec (pid {pid}):\n{out}",
                tool.name()
            );
        }
        assert!(
            records.ringbuf.len() >= 3 && records.perfbuf.len() >= 3,
            "{}: {out}",
            tool.name()
        );
        assert!(
            records.hits.last().is_some_and(|&n| n >= 3),
            "{}: the .bss counter: {out}",
            tool.name()
        );
        say(&format!(
            "{}: {} ring buffer and {} perf buffer records of the guest's marks, .bss {:?}; {} host execs unseen",
            tool.name(),
            records.ringbuf.len(),
            records.perfbuf.len(),
            records.hits.last(),
            host_pids.len()
        ));
    }
    h.finish();
}
