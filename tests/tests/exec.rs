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
/// proxy listening, runs under the seccomp supervisor and fails: no
/// `uname` of the host, no program in the host kernel. The same binary run
/// directly loads into the host kernel, so the supervisor is what kept it
/// out; the same source linked dynamically goes through the preload, fails
/// on the unreachable proxy, and loads nothing locally either.
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

    // Through telebpf exec: supervised, and with the proxy down every
    // call it makes to the kernel fails instead of reaching the host's.
    let out = exec(&stat);
    let stdout = out.stdout_text();
    say(&format!(
        "through exec: status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        stdout.trim(),
        out.stderr_text().trim()
    ));
    assert!(!out.success(), "must fail: {}", out.describe());
    assert!(
        !stdout.contains("uname ") && !stdout.contains("loaded"),
        "the supervised loader must see neither the host's uname nor its kernel: {}",
        out.describe()
    );
    assert!(
        stdout.contains("failed "),
        "its bpf() must fail: {}",
        out.describe()
    );
    assert!(
        out.stderr_text().contains("telebpf:"),
        "telebpf says why (the proxy is unreachable): {}",
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

/// The same static loader, run as `nobody` (no BPF privilege) through
/// `telebpf exec` with a proxy listening, is served by the supervisor: it
/// sees the guest's `uname` and its program is loaded by the proxy, which
/// the proxy's audit of the session shows. With `--supervise`, the dynamic
/// build is served the same way instead of by the preload.
#[test]
fn a_static_tool_is_served_by_the_supervisor() {
    let Some(h) = Harness::start("a_static_tool_is_served_by_the_supervisor") else {
        return;
    };
    let stat = build_loader(h.nobody_dir(), "loader-static", &["-static"]);
    let dynamic = build_loader(h.nobody_dir(), "loader-dynamic", &[]);
    let key = h.nobody_key(h.key());
    let release = run_with_timeout(
        {
            let mut c = Command::new("uname");
            c.arg("-r");
            c
        },
        "uname -r",
        COMMAND_TIMEOUT,
    )
    .stdout_text()
    .trim()
    .to_string();
    for (program, extra, name) in [
        (&stat, None, "tbpf_sv_static"),
        (&dynamic, Some("--supervise"), "tbpf_sv_dyn"),
    ] {
        let mut args: Vec<String> = vec!["exec".into()];
        args.extend(extra.map(String::from));
        args.extend([
            "--target".into(),
            h.target(),
            "--key-file".into(),
            key.display().to_string(),
            "--".into(),
            program.display().to_string(),
            name.into(),
        ]);
        let out = run_with_timeout(
            h.nobody_command(h.telebpf(), &args),
            &format!("[nobody] telebpf {}", args.join(" ")),
            COMMAND_TIMEOUT,
        );
        say(&format!(
            "{name}: {}",
            out.stdout_text().trim().replace('\n', " | ")
        ));
        assert!(out.success(), "{}", out.describe());
        assert!(
            out.stdout_text().contains(&format!("uname {release}")),
            "the guest's uname (the proxy's machine is this one): {}",
            out.describe()
        );
        assert!(
            out.stdout_text().contains(&format!("loaded {name} id ")),
            "nobody cannot load a program itself: it came through the proxy: {}",
            out.describe()
        );
    }
}

/// A supervised program's guest objects do not outlive what holds them:
/// `tests/c/supervised-life.c` (static, as nobody) sees its forked child's
/// map gone once the child exited (the child's session ended with it), and
/// after it execs itself, the map its old image held (close-on-exec) is
/// gone too; exit 0 only if both held.
#[test]
fn a_supervised_programs_objects_go_with_its_processes_and_its_exec() {
    let Some(h) = Harness::start("a_supervised_programs_objects_go_with_its_processes") else {
        return;
    };
    let src = telebpf_tests::workspace_root().join("tests/c/supervised-life.c");
    let program = h.nobody_dir().join("supervised-life");
    let mut cc = Command::new("cc");
    cc.args(["-static", "-O2", "-o"]).arg(&program).arg(&src);
    run_with_timeout(cc, "cc -static supervised-life.c", COMMAND_TIMEOUT).expect_success();
    let out = h.remote_program(&program, &[]);
    say(&out.stdout_text().trim().replace('\n', " | "));
    assert!(out.success(), "{}", out.describe());
    let stdout = out.stdout_text();
    assert!(
        stdout.contains("gone after the child exited")
            && stdout.contains("after exec: map ")
            && stdout.contains(" gone"),
        "{}",
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
