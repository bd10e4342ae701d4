//! The seccomp supervisor attacked by the program it serves: unusual and
//! hostile calls of a static program run as nobody through `telebpf exec`
//! against this machine's proxy get the kernel's answers, and the
//! supervisor neither crashes, hangs nor grows without bound. See
//! docs/TESTING.md.
//!
//! Root-only, like every suite here.

use std::path::PathBuf;
use std::process::Command;

use telebpf_tests::{run_with_timeout, say, Harness, COMMAND_TIMEOUT};

/// Builds `tests/c/NAME.c` with `cc -static` into nobody's directory.
fn build_static(h: &Harness, name: &str) -> PathBuf {
    let src = telebpf_tests::workspace_root().join(format!("tests/c/{name}.c"));
    let program = h.nobody_dir().join(name);
    let mut cc = Command::new("cc");
    cc.args(["-static", "-O2", "-o"]).arg(&program).arg(&src);
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
/// into an unmapped page or longer than `PATH_MAX`, `fstatat` of a NULL
/// path with `AT_EMPTY_PATH` (6.11+), `readlink` of an object's fd into 0
/// or -1 bytes (EINVAL), `F_DUPFD` of an object's fd from a negative
/// number or beyond the fd limit (EINVAL), and a ring added again to a new
/// epoll instance at the number of a closed one (as libbpf's
/// `ring_buffer__free` then `ring_buffer__new` do: 0, not EEXIST). Run
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
