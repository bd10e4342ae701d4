//! The seccomp supervisor attacked by the program it serves: unusual and
//! hostile calls of a static program run as nobody through `telebpf exec`
//! against this machine's proxy get the kernel's answers, and the
//! supervisor neither crashes, hangs nor grows without bound. See
//! docs/TESTING.md.
//!
//! Root-only, like every suite here.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use telebpf_tests::{run_with_timeout, say, Harness, COMMAND_TIMEOUT};

/// Builds `tests/c/NAME.c` with `cc -static` into nobody's directory.
fn build_static(h: &Harness, name: &str) -> PathBuf {
    let src = telebpf_tests::workspace_root().join(format!("tests/c/{name}.c"));
    let program = h.nobody_dir().join(name);
    let mut cc = Command::new("cc");
    cc.args(["-static", "-O2", "-pthread", "-o"])
        .arg(&program)
        .arg(&src);
    run_with_timeout(cc, &format!("cc -static {name}.c"), COMMAND_TIMEOUT).expect_success();
    program
}

/// The lines of `out` that report a failed check.
fn failed_checks(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("FAIL")).collect()
}

/// `tests/c/supervised-hostile.c` answers every odd call through the
/// supervisor exactly as the kernel answers the same call on the program's
/// own fd, path or resource: a NULL/bad/inverted `RLIMIT_MEMLOCK` limit
/// (EFAULT/EINVAL, not 0), `openat2` of a guest path with a short `how`,
/// unknown resolve bits, a mode without `O_CREAT` or flags beyond 32 bits
/// (EINVAL, not the guest file), paths ending at a page's end, running
/// into an unmapped page or longer than `PATH_MAX`, `readlink` of an
/// object's `/proc/self/fd/N` (`anon_inode:bpf-map`, not the supervisor's
/// memfd) and its `/proc/self/fdinfo/N` (its `map_type`), `fstatat` of a NULL
/// path with `AT_EMPTY_PATH` (6.11+), `readlink` of an object's fd into 0
/// or -1 bytes (EINVAL), `F_DUPFD` of an object's fd from a negative
/// number or beyond the fd limit (EINVAL), and a ring added again to a new
/// epoll instance at the number of a closed one (as libbpf's
/// `ring_buffer__free` then `ring_buffer__new` do: 0, not EEXIST), or at
/// its number after `dup2` of another ring over it (0, not EEXIST), an
/// anonymous `mmap` whose fd argument is an object's (mapped, not ENODEV),
/// `bpf()` with an attr of two pages or 2 GiB (E2BIG, nothing read); and
/// `bpf()` under its x32 number or i386's (`int 0x80`) is refused with
/// ENOSYS by the filter, never the host kernel's EPERM or a map. Run
/// directly (not supervised) its object-free checks pass too, so the
/// expectations are the kernel's.
#[test]
fn odd_calls_get_the_kernels_answers_through_the_supervisor() {
    let Some(h) = Harness::start("odd_calls_get_the_kernels_answers_through_the_supervisor") else {
        return;
    };
    let program = build_static(&h, "supervised-hostile");
    let direct = run_with_timeout(
        h.nobody_command(&program, &["direct"]),
        "[nobody] supervised-hostile direct",
        COMMAND_TIMEOUT,
    );
    assert!(
        direct.success() && failed_checks(&direct.stdout_text()).is_empty(),
        "the kernel alone must give the expected answers: {}",
        direct.describe()
    );
    let out = h.remote_program(&program, &[]);
    let stdout = out.stdout_text();
    say(&stdout.trim().replace('\n', " | "));
    assert!(
        failed_checks(&stdout).is_empty() && out.success(),
        "{}",
        out.describe()
    );
    assert!(
        stdout.contains("ok epoll_ctl DEL again"),
        "every check ran: {}",
        out.describe()
    );
}

/// One line of `supervised-forks`: `round R: rss KB threads T fds F`.
fn round_line(stdout: &str, round: u32) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("round {round}:")))
        .unwrap_or_else(|| panic!("no line for round {round}: {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |name: &str| -> u64 {
        let at = words.iter().position(|w| *w == name).expect(name);
        words[at + 1].parse().expect(name)
    };
    (number("rss"), number("threads"), number("fds"))
}

/// A supervised program that forks 1,500 short-lived children, each
/// making served calls (`uname`, an open of a guest file, which the host
/// library caches as a memfd; one child in 500 a mapped ring buffer, whose
/// mirror is a library thread), does not make its supervisor grow with the
/// number of children: between the first 500 and the last, the
/// supervisor's fds grow by fewer than 100 and its resident memory by less
/// than 1 MiB, and it keeps no thread per child. Each exited process's
/// state is freed once no library thread of it runs; before, each kept a
/// few kB and its cached memfds for good (1,000 more fds and 3 MiB here).
#[test]
fn a_forking_program_does_not_grow_the_supervisor() {
    let Some(h) = Harness::start("a_forking_program_does_not_grow_the_supervisor") else {
        return;
    };
    let program = build_static(&h, "supervised-forks");
    let out = h.remote_program(&program, &["500"]);
    let stdout = out.stdout_text();
    say(&stdout.trim().replace('\n', " | "));
    assert!(out.success(), "{}", out.describe());
    let (rss1, threads1, fds1) = round_line(&stdout, 1);
    let (rss3, threads3, fds3) = round_line(&stdout, 3);
    assert!(
        fds3 < fds1 + 100,
        "the supervisor's fds grew from {fds1} to {fds3}: {}",
        out.describe()
    );
    assert!(
        rss3 < rss1 + 1024,
        "the supervisor's memory grew from {rss1} kB to {rss3} kB: {}",
        out.describe()
    );
    assert!(
        threads3 <= threads1 + 2,
        "the supervisor's threads grew from {threads1} to {threads3}: {}",
        out.describe()
    );
}

/// Resumes a SIGSTOPped proxy on drop (also when an assertion fails), so
/// the harness can stop it.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the proxy's pid.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A supervised program's call made while its proxy is frozen (SIGSTOP:
/// a paused guest keeps the connection open and never answers) fails
/// within 10 s, as under the preload, instead of holding the program —
/// and the supervisor, which serves one call at a time — for ever: the
/// keep-alive watches the call the supervisor is serving.
#[test]
fn a_call_held_by_a_frozen_proxy_fails_through_the_supervisor() {
    let Some(h) = Harness::start("a_call_held_by_a_frozen_proxy_fails_through_the_supervisor")
    else {
        return;
    };
    let program = build_static(&h, "supervised-frozen");
    let mut tool = h.start_exec_tool(&h.target(), h.key(), &program, &[]);
    tool.wait_for("ready", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = h.proxy_pid() as i32;
    // SAFETY: kill(2) on the proxy's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen = Frozen(pid);
    let seen = tool.wait_for("lookup: ", Duration::from_secs(15));
    drop(frozen);
    let out = tool.stop(libc::SIGKILL, Duration::from_secs(5));
    say(&out.trim().replace('\n', " | "));
    seen.unwrap_or_else(|e| panic!("the call was held for ever: {e}"));
    assert!(out.contains("lookup: -1 "), "{out}");
}

/// The maps named `name` in this machine's kernel (the guest here).
fn maps_named(h: &Harness, name: &str) -> usize {
    let all = h.local(&["map", "show", "--json"]).json();
    all.as_array()
        .map(|maps| maps.iter().filter(|m| m["name"] == name).count())
        .unwrap_or(0)
}

/// 8 threads of a supervised program and 8 of its forked child make, write,
/// read back, dup and close maps at once (1,600 rounds each side, served
/// one call at a time): every value read is the thread's own, through
/// the map's fd and its copy (no call served with another thread's
/// memory or another process's objects), and no map is left after.
#[test]
fn concurrent_threads_and_processes_are_served_each_with_its_own() {
    let Some(h) = Harness::start("concurrent_threads_and_processes_are_served") else {
        return;
    };
    let program = build_static(&h, "supervised-threads");
    let name = format!("tbw{}", std::process::id() % 100_000);
    let out = h.remote_program(&program, &["work", &name]);
    say(&out.stdout_text().trim().replace('\n', " | "));
    assert!(
        out.success() && out.stdout_text().contains("threads ok"),
        "{}",
        out.describe()
    );
    assert_no_maps_left(&h, &name);
}

/// Waits up to 3 s for the maps named `name` to be gone from the kernel.
fn assert_no_maps_left(h: &Harness, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = maps_named(h, name);
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} maps named {name} outlived the program"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A supervised program exits (exit_group) while 4 of its threads' map
/// creations wait in the supervisor or in the guest: the supervisor goes
/// on, `telebpf exec` returns, and no map of it is left in the kernel (an
/// object made for a caller that died before it got its fd is closed).
#[test]
fn a_program_exiting_mid_call_leaves_no_object() {
    let Some(h) = Harness::start("a_program_exiting_mid_call_leaves_no_object") else {
        return;
    };
    let program = build_static(&h, "supervised-threads");
    let name = format!("tbd{}", std::process::id() % 100_000);
    let out = h.remote_program(&program, &["die", &name]);
    say(&out.stdout_text().trim().replace('\n', " | "));
    assert!(
        out.success() && out.stdout_text().contains("exiting after "),
        "{}",
        out.describe()
    );
    assert!(
        !out.stdout_text().contains("exiting after 0 maps"),
        "the threads made no map: {}",
        out.describe()
    );
    assert_no_maps_left(&h, &name);
}

/// A supervised program that moves each map's fd onto a placeholder fd
/// below the supervisor's range (libbpf 1.4 and later do) and closes it
/// there, unseen by the filter, 50 times, keeps no more than the last map
/// open in the kernel: objects whose number below the range now names
/// another file are closed when the program makes its next object,
/// instead of living in the guest until the program exits.
#[test]
fn objects_closed_below_the_range_are_closed_in_the_guest() {
    let Some(h) = Harness::start("objects_closed_below_the_range_are_closed_in_the_guest") else {
        return;
    };
    let program = build_static(&h, "supervised-placeholders");
    let name = format!("tbp{}", std::process::id() % 100_000);
    let mut tool = h.start_exec_tool(&h.target(), h.key(), &program, &[&name]);
    tool.wait_for("ready", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let open = maps_named(&h, &name);
    let out = tool.stop(libc::SIGTERM, Duration::from_secs(5));
    say(&format!("{open} maps named {name} open: {}", out.trim()));
    assert!(
        open <= 1,
        "{open} maps named {name} are open in the kernel, the program holds one"
    );
    assert_no_maps_left(&h, &name);
}

/// A supervised program whose threads keep the supervisor busy with calls
/// (`uname` without pause) still sees its exited child's map gone within
/// 5 s: the child's exit is handled between calls, not only once no call
/// waits.
#[test]
fn a_busy_program_does_not_hold_its_exited_childs_objects() {
    let Some(h) = Harness::start("a_busy_program_does_not_hold_its_exited_childs_objects") else {
        return;
    };
    let program = build_static(&h, "supervised-busy");
    let out = h.remote_program(&program, &[]);
    say(&out.stdout_text().trim().replace('\n', " | "));
    assert!(
        out.success() && out.stdout_text().contains(" gone after "),
        "{}",
        out.describe()
    );
}

/// A supervised program with 400 live children, each with a served call
/// (a session, a pidfd and a cached guest file in the supervisor: about
/// 1,200 fds), run by a user whose soft fd limit is the usual 1,024: every
/// child is served. The supervisor raises its own soft limit to the hard
/// one, as it serves many processes' fds in one.
#[test]
fn many_live_processes_are_served_under_the_usual_fd_limit() {
    let Some(h) = Harness::start("many_live_processes_are_served_under_the_usual_fd_limit") else {
        return;
    };
    let program = build_static(&h, "supervised-many");
    let exec = h.remote_program_command(&program, &["400"]);
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=1024:20000")
        .arg("--")
        .arg(exec.get_program())
        .args(exec.get_args());
    for (k, v) in exec.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = run_with_timeout(
        cmd,
        "[nobody] prlimit --nofile=1024 telebpf exec supervised-many",
        COMMAND_TIMEOUT,
    );
    say(&out.stdout_text().trim().replace('\n', " | "));
    assert!(
        out.success() && out.stdout_text().contains("400 of 400 children served"),
        "{}",
        out.describe()
    );
}

/// A supervised program that starts and ends 30,000 threads, each making
/// one served call, does not make its supervisor grow with the number of
/// threads: between the first 10,000 and the last, its resident memory
/// grows by less than 128 kB (it forgets ended threads' processes; before,
/// it remembered every thread it ever saw: +432 kB here).
#[test]
fn a_program_churning_threads_does_not_grow_the_supervisor() {
    let Some(h) = Harness::start("a_program_churning_threads_does_not_grow_the_supervisor") else {
        return;
    };
    let program = build_static(&h, "supervised-threadchurn");
    let out = h.remote_program(&program, &["10000"]);
    let stdout = out.stdout_text();
    say(&stdout.trim().replace('\n', " | "));
    assert!(out.success(), "{}", out.describe());
    let rss = |round: u32| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("round {round}: rss ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rss for round {round}: {stdout}"))
    };
    assert!(
        rss(3) < rss(1) + 128,
        "the supervisor's memory grew from {} kB to {} kB",
        rss(1),
        rss(3)
    );
}
