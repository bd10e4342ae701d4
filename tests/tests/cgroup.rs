//! bpftool's cgroup subcommands through telebpf act on the proxy's cgroup
//! tree (`telebpf_host::cgroup`, `telebpf_proxy::cgroup`).
//!
//! On this machine the proxy's kernel is the host's, so a tree that the
//! host's walk would also find proves nothing. The proxy therefore runs in
//! a cgroup namespace and mount namespace of its own (`unshare -C -m`, its
//! cgroup2 remounted at `/sys/fs/cgroup`, rooted at a cgroup made for the
//! test): its marked cgroup is `/sys/fs/cgroup/telebpf-mark-…` there and
//! `/sys/fs/cgroup/unified/telebpf-e2e-…/telebpf-mark-…` (or wherever the
//! host's cgroup2 is) here. Without the relay, bpftool as nobody would walk
//! the host's tree and its queries would fail with `EBADF`; its attach
//! would name a path that does not exist on the host.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use telebpf_tests::{product_file, say, unique_name, workspace_root, Harness};

/// The host's cgroup2 mount point.
fn host_cgroup2() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, t)| t.starts_with("cgroup2 "))
        })
        .expect("cgroup2 is mounted on this machine");
    PathBuf::from(line.split(' ').nth(4).expect("mount point"))
}

/// The test's cgroups on the host: the proxy's namespace root and the
/// marked child; removed on drop (after the proxy left them).
struct Cgroups {
    outer: PathBuf,
    mark: PathBuf,
}

impl Cgroups {
    fn make(tag: &str) -> Cgroups {
        let outer = host_cgroup2().join(format!("telebpf-e2e-{tag}"));
        let mark = outer.join(format!("telebpf-mark-{tag}"));
        fs::create_dir_all(&mark).expect("mkdir test cgroups");
        Cgroups { outer, mark }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.mark);
        let _ = fs::remove_dir(&self.outer);
    }
}

/// Starts the proxy in its own cgroup and mount namespace rooted at
/// `outer`, with only its cgroup2 at `/sys/fs/cgroup`.
fn start_namespaced_proxy(h: &mut Harness, outer: &Path) {
    start_namespaced_proxy_with(h, outer, &[]);
}

/// [`start_namespaced_proxy`] with more proxy arguments.
fn start_namespaced_proxy_with(h: &mut Harness, outer: &Path, extra: &[String]) {
    let script = h.dir().join("proxy-ns.sh");
    fs::write(
        &script,
        "outer=$1; shift\n\
         echo $$ > \"$outer/cgroup.procs\" || exit 1\n\
         exec unshare -C -m sh -c 'for m in /sys/fs/cgroup/*; do umount -l \"$m\" 2>/dev/null; done\n\
         umount -l /sys/fs/cgroup 2>/dev/null\n\
         mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"' sh \"$@\"\n",
    )
    .expect("write namespace script");
    let script = script.display().to_string();
    let outer = outer.display().to_string();
    h.set_proxy_prefix(&["sh", &script, &outer]);
    if extra.is_empty() {
        h.start_proxy();
    } else {
        h.start_proxy_with(extra);
    }
}

/// The id `bpftool prog show pinned PIN` prints first.
fn prog_id(h: &Harness, pin: &str) -> String {
    let out = h.local(&["prog", "show", "pinned", pin]);
    out.expect_success();
    out.stdout_text()
        .split(':')
        .next()
        .expect("an id")
        .trim()
        .to_string()
}

#[test]
fn cgroup_tree_show_attach_detach_act_on_the_proxys_tree() {
    let Some(mut h) = Harness::start_without_proxy("cgroup_tree") else {
        return;
    };
    let tag = unique_name("cg");
    let cg = Cgroups::make(&tag);
    start_namespaced_proxy(&mut h, &cg.outer);
    let pin = format!("/sys/fs/bpf/tb-cg-{tag}");
    h.remote(&["prog", "load", &h.object("cgroup_test"), &pin])
        .expect_success();
    let id = prog_id(&h, &pin);
    let guest_mark = format!("/sys/fs/cgroup/telebpf-mark-{tag}");

    h.remote(&["cgroup", "attach", &guest_mark, "ingress", "id", &id])
        .expect_success();
    let tree = h.remote(&["cgroup", "tree"]);
    tree.expect_success();
    let text = tree.stdout_text();
    say(&format!("bpftool cgroup tree through telebpf:\n{text}"));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&guest_mark) || l.trim_start().starts_with(&id)),
        "the proxy's marked cgroup is missing:\n{}",
        tree.describe()
    );
    assert!(text.contains(&guest_mark), "{}", tree.describe());
    assert!(
        !text.contains("/sys/fs/cgroup/unified") && !text.contains(&format!("telebpf-e2e-{tag}")),
        "the host's tree leaked in:\n{text}"
    );
    let show = h.remote(&["cgroup", "show", &guest_mark]);
    show.expect_success();
    let shown = show.stdout_text();
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with(&id) && l.contains("cgroup_inet_ingress")),
        "cgroup show misses program {id}:\n{shown}"
    );
    // The proxy's side has it, on the cgroup the namespace calls so.
    let local = h.local(&["cgroup", "show", &cg.mark.display().to_string()]);
    local.expect_success();
    assert!(local.stdout_text().contains(&id), "{}", local.describe());
    // The host's own cgroup2 root has nothing of it.
    let root = h.local(&["cgroup", "show", &host_cgroup2().display().to_string()]);
    assert!(!root.stdout_text().contains(&id), "{}", root.describe());

    // coreutils see the same tree: `ls` lists with opendir/readdir and
    // stats its arguments with statx (the mark does not exist on the
    // host under that name).
    let ls = h.remote_program(Path::new("/usr/bin/ls"), &["/sys/fs/cgroup"]);
    ls.expect_success();
    let names = ls.stdout_text();
    assert!(
        names.lines().any(|n| n == format!("telebpf-mark-{tag}")) && !names.contains("unified"),
        "ls shows another tree than the proxy's:\n{names}"
    );
    let ld = h.remote_program(Path::new("/usr/bin/ls"), &["-ld", &guest_mark]);
    ld.expect_success();
    assert!(ld.stdout_text().starts_with('d'), "{}", ld.describe());

    // Its id, as name_to_handle_at gives it, is the guest's: the inode of
    // the cgroup's directory (cgroup2 ids are kernfs inode numbers).
    let cgroup_id = h.remote_program(&product_file("cgroup-id"), &[&guest_mark]);
    cgroup_id.expect_success();
    assert_eq!(
        cgroup_id.stdout_text().trim(),
        fs::metadata(&cg.mark).expect("the mark").ino().to_string(),
        "{}",
        cgroup_id.describe()
    );

    // The other ways a program lists a directory — getdents64 on an open
    // fd (also after lseek back to 0), fdopendir + readdir, telldir and
    // seekdir — give the proxy's root (the host's `outer`), entry for
    // entry.
    let mut truth: Vec<String> = fs::read_dir(&cg.outer)
        .expect("list outer")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .chain([".".to_string(), "..".to_string()])
        .collect();
    truth.sort();
    let truth = truth.join(",");
    let listed = h.remote_program(&product_file("dir-list"), &["/sys/fs/cgroup"]);
    listed.expect_success();
    let text = listed.stdout_text();
    for way in ["getdents64", "again", "fdopendir"] {
        assert!(
            text.lines().any(|l| l == format!("{way} {truth}")),
            "{way} does not list the proxy's root ({truth}):\n{}",
            listed.describe()
        );
    }
    assert!(
        text.lines().any(|l| l == "seekdir ok"),
        "{}",
        listed.describe()
    );

    h.remote(&["cgroup", "detach", &guest_mark, "ingress", "id", &id])
        .expect_success();
    let after = h.remote(&["cgroup", "show", &guest_mark]);
    after.expect_success();
    assert!(!after.stdout_text().contains(&id), "{}", after.describe());
    let _ = fs::remove_file(&pin);
    h.stop_proxy_checked();
    h.finish();
}

#[test]
fn the_policy_refuses_cgroup_attach_and_paths() {
    let Some(mut h) = Harness::start_without_proxy("cgroup_policy") else {
        return;
    };
    let tag = unique_name("cgp");
    let cg = Cgroups::make(&tag);
    let policy = h.dir().join("no-cgroup.toml");
    let root = host_cgroup2().display().to_string();
    fs::write(
        &policy,
        format!(
            "name = \"no-cgroup\"\ncommands = [\"*\"]\nprog_types = [\"*\"]\nmap_types = [\"*\"]\n\
             attach_types = [\"trace_iter\"]\nchange_foreign_objects = true\n\
             [cgroup]\npaths = [\"{}\"]\n",
            cg.outer.display()
        ),
    )
    .expect("write policy");
    h.start_proxy_with(&["--policy".to_string(), policy.display().to_string()]);
    let pin = format!("/sys/fs/bpf/tb-cgp-{tag}");
    h.local(&["prog", "load", &h.object("cgroup_test"), &pin])
        .expect_success();
    let mark = cg.mark.display().to_string();

    // The attach type is not the key's.
    let attach = h.remote(&["cgroup", "attach", &mark, "ingress", "pinned", &pin]);
    assert!(!attach.success(), "{}", attach.describe());
    let err = attach.stderr_text();
    assert!(
        err.contains("telebpf: the proxy's policy refuses BPF_PROG_ATTACH")
            && err.contains("'cgroup_inet_ingress' is not in attach_types"),
        "{}",
        attach.describe()
    );
    // A cgroup outside `[cgroup] paths` is not even opened.
    let show = h.remote(&["cgroup", "show", &root]);
    assert!(!show.success(), "{}", show.describe());
    assert!(
        show.stderr_text().contains(
            "telebpf: the proxy's policy refuses opening a cgroup outside the allowed paths"
        ),
        "{}",
        show.describe()
    );
    // Inside them it is.
    h.remote(&["cgroup", "show", &mark]).expect_success();
    let local = h.local(&["cgroup", "show", &mark]);
    assert!(
        local.stdout_text().trim().is_empty(),
        "{}",
        local.describe()
    );
    let _ = fs::remove_file(&pin);
    h.stop_proxy_checked();
    h.finish();
}

/// Runs `/bin/true MARK` as root inside host cgroup `cg` (`None`: where
/// the test runs).
fn exec_in(cg: Option<&Path>, mark: &str) {
    let script = match cg {
        Some(cg) => format!(
            "echo $$ > '{}/cgroup.procs' && exec /bin/true {mark}",
            cg.display()
        ),
        None => format!("exec /bin/true {mark}"),
    };
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("sh");
    assert!(status.success(), "{script}: {status}");
}

#[test]
fn execsnoop_filters_on_a_cgroup_of_the_proxys_tree() {
    let Some(mut h) = Harness::start_without_proxy("cgroup_execsnoop") else {
        return;
    };
    let tag = unique_name("cgx");
    let cg = Cgroups::make(&tag);
    start_namespaced_proxy(&mut h, &cg.outer);
    // execsnoop opens the cgroup and stores its fd in a cgroup array map
    // (`bpf_current_task_under_cgroup`): the proxy's name of the cgroup,
    // and an fd the guest must take for a cgroup.
    let guest_mark = format!("/sys/fs/cgroup/telebpf-mark-{tag}");
    let Some(mut tool) = h.start_tool("execsnoop", &["-c", &guest_mark]) else {
        return;
    };
    tool.wait_for("PCOMM", Duration::from_secs(60)).unwrap();
    let mut outside = Vec::new();
    let seen = tool
        .wait_for_event(Duration::from_secs(15), || {
            let out = unique_name("tbcgout");
            exec_in(None, &out);
            outside.push(out);
            let inside = unique_name("tbcgin");
            exec_in(Some(&cg.mark), &inside);
            inside
        })
        .unwrap();
    let text = tool.stop(libc::SIGINT, Duration::from_secs(20));
    say(&format!("execsnoop -c saw {seen}"));
    for out in &outside {
        assert!(
            !text.contains(out.as_str()),
            "an exec outside the cgroup passed the filter:\n{text}"
        );
    }
    h.stop_proxy_checked();
    h.finish();
}

#[test]
fn the_read_only_profile_walks_the_tree_and_cannot_attach() {
    let Some(mut h) = Harness::start_without_proxy("cgroup_read_only") else {
        return;
    };
    let tag = unique_name("cgr");
    let cg = Cgroups::make(&tag);
    let read_only = workspace_root().join("policies/read-only.toml");
    start_namespaced_proxy_with(
        &mut h,
        &cg.outer,
        &["--policy".to_string(), read_only.display().to_string()],
    );
    // The walk and every query are allowed: `cgroup tree` lists nothing
    // (nothing is attached) and is refused nothing.
    let tree = h.remote(&["cgroup", "tree"]);
    tree.expect_success();
    assert!(
        !tree.stderr_text().contains("refuses"),
        "{}",
        tree.describe()
    );
    let pin = format!("/sys/fs/bpf/tb-cgr-{tag}");
    h.local(&["prog", "load", &h.object("cgroup_test"), &pin])
        .expect_success();
    let guest_mark = format!("/sys/fs/cgroup/telebpf-mark-{tag}");
    let attach = h.remote(&["cgroup", "attach", &guest_mark, "ingress", "pinned", &pin]);
    let _ = fs::remove_file(&pin);
    assert!(!attach.success(), "{}", attach.describe());
    assert!(
        attach
            .stderr_text()
            .contains("telebpf: the proxy's policy refuses"),
        "{}",
        attach.describe()
    );
    h.stop_proxy_checked();
    h.finish();
}

/// A static program under the seccomp supervisor opens a cgroup of the
/// proxy's tree (a path the host does not have) without `O_CLOEXEC`: it
/// gets an fd that stays open across `exec` (`F_GETFD` 0), as the kernel
/// gives; with `O_CLOEXEC`, one that does not (`FD_CLOEXEC`). Before, the
/// first was close-on-exec too (the flag was cleared on the supervisor's
/// own fd of that number instead).
#[test]
fn a_supervised_programs_guest_cgroup_keeps_its_open_flags() {
    let Some(mut h) = Harness::start_without_proxy("supervised_cgroup_flags") else {
        return;
    };
    let tag = unique_name("cgs");
    let cg = Cgroups::make(&tag);
    start_namespaced_proxy(&mut h, &cg.outer);
    let src = workspace_root().join("tests/c/supervised-cgroup.c");
    let program = h.nobody_dir().join("supervised-cgroup");
    let mut cc = std::process::Command::new("cc");
    cc.args(["-static", "-O2", "-o"]).arg(&program).arg(&src);
    telebpf_tests::run_with_timeout(
        cc,
        "cc -static supervised-cgroup.c",
        telebpf_tests::COMMAND_TIMEOUT,
    )
    .expect_success();
    let guest_path = format!("/sys/fs/cgroup/telebpf-mark-{tag}");
    let out = h.remote_program(&program, &[&guest_path]);
    let stdout = out.stdout_text();
    say(&stdout.trim().replace('\n', " | "));
    assert!(out.success(), "{}", out.describe());
    let flags = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what}: fd ")))
            .and_then(|l| l.split(" flags ").nth(1))
            .map(str::to_string)
    };
    assert_eq!(flags("plain").as_deref(), Some("0"), "{}", out.describe());
    assert_eq!(flags("cloexec").as_deref(), Some("1"), "{}", out.describe());
}
