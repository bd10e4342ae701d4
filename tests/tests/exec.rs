//! What `telebpf exec` runs, and how: a program the preload library cannot
//! reach is never run silently against the host kernel. See
//! docs/TESTING.md.
//!
//! Root-only, like every suite here (the tools run as root on purpose: a
//! root tool that slipped past the preload would load into the host).

use std::path::{Path, PathBuf};
use std::process::Command;

use telebpf_tests::{run_with_timeout, say, Harness, COMMAND_TIMEOUT};

/// Builds `tests/c/static-loader.c` into `dir` with `cc` and `flags`.
fn build_loader(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let src = telebpf_tests::workspace_root().join("tests/c/static-loader.c");
    let out = dir.join(name);
    let mut cmd = Command::new("cc");
    cmd.args(flags).arg("-O2").arg("-o").arg(&out).arg(&src);
    run_with_timeout(
        cmd,
        &format!("cc {flags:?} static-loader.c"),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    out
}

/// A statically linked loader, run as root through `telebpf exec` with no
/// proxy listening, is refused with one line and never runs: no `uname` of
/// the host, no program in the host kernel. The same binary run directly
/// loads into the host kernel, so the refusal is what kept it out; the same
/// source linked dynamically goes through the preload, fails on the
/// unreachable proxy, and loads nothing locally either.
#[test]
fn a_static_tool_never_reaches_the_host_kernel_through_exec() {
    let Some(h) = Harness::start_without_proxy("a_static_tool_never_reaches_the_host_kernel")
    else {
        return;
    };
    let stat = build_loader(h.dir(), "loader-static", &["-static"]);
    let dynamic = build_loader(h.dir(), "loader-dynamic", &[]);
    let name = "tbpf_static";
    let down = format!("unix:{}", h.dir().join("no-proxy.sock").display());
    let exec = |program: &Path| {
        let mut cmd = Command::new(h.telebpf());
        cmd.arg("exec")
            .arg("--target")
            .arg(&down)
            .arg("--key-file")
            .arg(h.key())
            .arg("--")
            .arg(program)
            .arg(name)
            .current_dir(h.dir());
        run_with_timeout(
            cmd,
            &format!("[root] telebpf exec {}", program.display()),
            COMMAND_TIMEOUT,
        )
    };

    // Directly, as root: the loader reaches the host kernel.
    let direct = run_with_timeout(
        {
            let mut c = Command::new(&stat);
            c.arg(name);
            c
        },
        "[root] loader-static",
        COMMAND_TIMEOUT,
    );
    say(&format!(
        "directly: {}",
        direct.stdout_text().trim().replace('\n', " | ")
    ));
    assert!(
        direct.stdout_text().contains(&format!("loaded {name} id ")),
        "the static loader must load on the host when run directly: {}",
        direct.describe()
    );

    // Through telebpf exec: refused, not run.
    let out = exec(&stat);
    let stderr = out.stderr_text();
    say(&format!(
        "through exec: status {:?}, stderr {:?}",
        out.status,
        stderr.trim()
    ));
    assert!(!out.success(), "must fail: {}", out.describe());
    assert!(
        out.stdout_text().is_empty(),
        "the static loader must not have run at all: {}",
        out.describe()
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {}", out.describe());
    assert!(
        stderr.contains("statically linked") && stderr.contains(&stat.display().to_string()),
        "the line names the program and why: {}",
        out.describe()
    );

    // The dynamic build goes through the preload: the proxy is down, so
    // the load fails; it never falls back to the host kernel.
    let out = exec(&dynamic);
    say(&format!(
        "dynamic through exec: status {:?}, stdout {:?}",
        out.status,
        out.stdout_text().trim()
    ));
    assert!(
        !out.stdout_text().contains("loaded"),
        "a dynamic loader with the proxy down must not load locally: {}",
        out.describe()
    );
}

/// A BCC tool (Debian's `execsnoop-bpfcc`) run through `telebpf exec`
/// against a proxy whose kernel's headers this host lacks (the proxy here
/// runs on this machine's kernel, and nothing installs its headers) gets
/// one line naming the missing `/lib/modules/<release>/build` and the
/// package to install, and still runs (`-h` prints its usage without
/// compiling). A Python script that does not import `bcc` and bpftool get
/// no such line. The line needs the guest's release, which only the
/// proxy's Welcome gives `telebpf exec` (it runs without the preload).
#[test]
fn bcc_tool_without_the_guests_headers_gets_a_one_line_hint() {
    let Some(h) = Harness::start("bcc_tool_without_the_guests_headers_gets_a_one_line_hint") else {
        return;
    };
    let release = String::from_utf8(
        Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname -r")
            .stdout,
    )
    .expect("utf-8 release")
    .trim()
    .to_string();
    let build = format!("/lib/modules/{release}/build");
    if Path::new(&build).exists() {
        say(&format!(
            "{build} exists on this host: no hint to show (remove the headers of {release} to run this test)"
        ));
        return;
    }
    let tool = telebpf_tests::find_program("execsnoop-bpfcc").unwrap_or_else(|| {
        panic!("execsnoop-bpfcc is not installed (scripts/setup.sh: bpfcc-tools)")
    });
    let out = h.remote_program(&tool, &["-h"]);
    let stderr = out.stderr_text();
    say(&format!(
        "execsnoop-bpfcc -h through exec: {}",
        stderr.trim()
    ));
    out.expect_success();
    assert!(
        out.stdout_text().contains("usage: execsnoop"),
        "the tool still runs after the hint: {}",
        out.describe()
    );
    let hints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("telebpf: BCC"))
        .collect();
    assert_eq!(
        hints,
        [format!(
            "telebpf: BCC compiles against the guest kernel's headers and {build} is missing: \
             install linux-headers-{release} (Debian's package) on this host"
        )],
        "one hint line naming the build directory and the package: {}",
        out.describe()
    );

    // Python without `bcc`, and bpftool: no hint.
    let plain = h.dir().join("plain.py");
    std::fs::write(&plain, "#!/usr/bin/python3\nimport os\nprint('plain')\n").expect("plain.py");
    let out = h.remote_program(&plain, &[]);
    out.expect_success();
    assert!(
        !out.stderr_text().contains("telebpf: BCC"),
        "a Python script without bcc got the hint: {}",
        out.describe()
    );
    let out = h.remote(&["version"]);
    out.expect_success();
    assert!(
        !out.stderr_text().contains("telebpf: BCC"),
        "bpftool got the hint: {}",
        out.describe()
    );
    h.finish();
}
