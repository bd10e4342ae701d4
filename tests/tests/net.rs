//! Guest interfaces: a tool's `NETLINK_ROUTE` socket is relayed to the
//! proxy's side, and interface names are the proxy's.
//!
//! On this machine the "guest" is the proxy's own kernel, so each test
//! starts the proxy in a network namespace of its own (`unshare -n`): its
//! `lo` is not the host's `lo`, and what `bpftool net attach` does through
//! telebpf can only land there if the relay carried it. Without the relay
//! the attach would reach the host's netlink with a memfd for a program
//! (`EINVAL`), and the host's `lo` would be the one listed. Root-only, as
//! every suite here; bpftool runs as nobody through `telebpf exec`.

use std::process::Command;
use std::time::Duration;

use telebpf_tests::net_test::{self, attached_ids, nothing_attached, xdp_attachments};
use telebpf_tests::{
    find_program, json_u64, run_with_timeout, CmdOutput, Harness, PinDir, COMMAND_TIMEOUT,
};

/// The start of the line the preload prints for a refused request.
const REFUSAL: &str = "telebpf: the proxy's policy refuses";

/// `bpftool ARGS` as root inside the proxy's network namespace (what the
/// "guest" itself sees).
fn in_proxy_netns(h: &Harness, args: &[&str]) -> CmdOutput {
    let nsenter = find_program("nsenter").expect("nsenter (util-linux)");
    let mut cmd = Command::new(nsenter);
    cmd.arg("-t")
        .arg(h.proxy_pid().to_string())
        .arg("-n")
        .arg(h.bpftool())
        .args(args);
    run_with_timeout(
        cmd,
        &format!("[proxy netns] bpftool {args:?}"),
        COMMAND_TIMEOUT,
    )
}

/// A harness whose proxy runs in a network namespace of its own.
fn netns_harness(test: &str) -> Option<Harness> {
    let mut h = Harness::start_without_proxy(test)?;
    h.set_proxy_prefix(&["unshare", "--net"]);
    h.start_proxy();
    Some(h)
}

/// Loads `net_test.bpf.o` through telebpf into `pins` and returns the id
/// of its XDP program.
fn load_xdp(h: &Harness, pins: &PinDir) -> u64 {
    let dir = pins.subdir("progs");
    h.remote(&["prog", "loadall", &h.object("net_test"), &dir])
        .expect_success();
    let prog = format!("{dir}/{}", net_test::XDP_PROG);
    json_u64(
        &h.remote(&["prog", "show", "pinned", &prog, "--json"])
            .json(),
        "id",
    )
}

/// `bpftool net attach xdpgeneric id N dev lo` as nobody lands on the
/// proxy's `lo`: `net list` through telebpf and inside the proxy's
/// namespace show it, the host's own `net list` does not; `net detach`
/// removes it and leaves nothing.
#[test]
fn bpftool_net_attach_lands_on_the_proxys_lo() {
    let Some(h) = netns_harness("bpftool_net_attach_lands_on_the_proxys_lo") else {
        return;
    };
    let pins = PinDir::new("net");
    let id = load_xdp(&h, &pins);
    let id_text = id.to_string();

    h.remote(&["net", "attach", "xdpgeneric", "id", &id_text, "dev", "lo"])
        .expect_success();

    let through = xdp_attachments(&h.remote(&["net", "list", "--json"]).json());
    assert!(
        through.contains(&("lo".to_string(), id)),
        "net list through telebpf shows program {id} on lo: {through:?}"
    );
    let guest = xdp_attachments(&in_proxy_netns(&h, &["net", "list", "--json"]).json());
    assert!(
        guest.contains(&("lo".to_string(), id)),
        "the proxy's namespace has program {id} on lo: {guest:?}"
    );
    let host = xdp_attachments(&h.local(&["net", "list", "--json"]).json());
    assert!(
        host.iter().all(|(_, i)| *i != id),
        "the host's net list does not show program {id}: {host:?}"
    );

    h.remote(&["net", "detach", "xdpgeneric", "dev", "lo"])
        .expect_success();
    let after = xdp_attachments(&in_proxy_netns(&h, &["net", "list", "--json"]).json());
    assert!(after.is_empty(), "nothing left attached: {after:?}");
    let listed = xdp_attachments(&h.remote(&["net", "list", "--json"]).json());
    assert!(
        listed.is_empty(),
        "nothing listed through telebpf: {listed:?}"
    );

    // By pin (BPF_OBJ_GET, then the relay), as the report tried.
    let pinned = pins.join(&format!("progs/{}", net_test::XDP_PROG));
    h.remote(&[
        "net",
        "attach",
        "xdpgeneric",
        "pinned",
        &pinned,
        "dev",
        "lo",
    ])
    .expect_success();
    let guest = xdp_attachments(&in_proxy_netns(&h, &["net", "list", "--json"]).json());
    assert!(guest.contains(&("lo".to_string(), id)), "{guest:?}");
    h.remote(&["net", "detach", "xdpgeneric", "dev", "lo"])
        .expect_success();

    // The kernel's error and its extended ack come back as they are: lo
    // has no native XDP.
    let native = h.remote(&["net", "attach", "xdpdrv", "id", &id_text, "dev", "lo"]);
    let stderr = native.stderr_text();
    assert!(
        !native.success()
            && stderr.contains("Kernel error message: Underlying driver does not support XDP")
            && stderr.contains("Operation not supported"),
        "{}",
        native.describe()
    );
    let after = xdp_attachments(&in_proxy_netns(&h, &["net", "list", "--json"]).json());
    assert!(after.is_empty(), "nothing left attached: {after:?}");
}

/// libbpf's own API, unmodified, as nobody: `bpf_xdp_attach` and the tc
/// hook API (`bpf_tc_hook_create`, `bpf_tc_attach`, `bpf_tc_query`) land on
/// the proxy's `lo` and report the program they attached; detaching on
/// exit (`bpf_xdp_detach`, `bpf_tc_detach`, `bpf_tc_hook_destroy`) leaves
/// nothing, and the host's `lo` never had anything.
#[test]
fn libbpf_xdp_and_tc_attach_land_on_the_proxys_lo() {
    let Some(h) = netns_harness("libbpf_xdp_and_tc_attach_land_on_the_proxys_lo") else {
        return;
    };
    let dynamic = telebpf_tests::build_net_attach(h.dir());
    let stat = telebpf_tests::build_net_attach_static(h.dir());
    // The static build is served by the seccomp supervisor.
    for (program, mode) in [
        (&dynamic, "xdp"),
        (&dynamic, "tc"),
        (&stat, "xdp"),
        (&stat, "tc"),
    ] {
        let obj = h.object("net_test");
        let mut tool = h.start_exec_tool(&h.target(), h.key(), program, &[mode, &obj, "lo"]);
        let mode = format!("{mode} ({})", program.display());
        if let Err(e) = tool.wait_for("attached ", Duration::from_secs(60)) {
            panic!("{mode}: {e}");
        }
        let (id, queried) = attached_ids(&tool.output());
        assert_eq!(id, queried, "{mode}: libbpf's query names the program");
        let guest = in_proxy_netns(&h, &["net", "list", "--json"]).json();
        let host = h.local(&["net", "list", "--json"]).json();
        if let Err(e) =
            net_test::check_on_lo(mode.split(' ').next().unwrap_or(""), &guest, &host, id)
        {
            panic!("{e}");
        }
        let out = tool.stop(libc::SIGINT, Duration::from_secs(30));
        assert!(out.contains("detached"), "{mode}: {out}");
        let after = in_proxy_netns(&h, &["net", "list", "--json"]).json();
        assert!(nothing_attached(&after), "{mode}: nothing left: {after}");
    }
}

/// The calls libbpf does not make, from a program of its own: a dump sent
/// with `sendmsg` to an explicit kernel address and read with `recvfrom`
/// (sequence number and sender checked by the program), and for each link
/// `if_indextoname`, `SIOCGIFNAME` and `SIOCGIFINDEX` on an `AF_INET`
/// socket. Through telebpf the links are the proxy's namespace's — `lo`
/// only — and every name and index agrees; the host has more.
#[test]
fn a_link_dump_and_interface_ioctls_are_the_proxys() {
    let Some(h) = netns_harness("a_link_dump_and_interface_ioctls_are_the_proxys") else {
        return;
    };
    let program = telebpf_tests::build_net_attach(h.dir());
    // The static build, served by the seccomp supervisor, sees the same.
    let stat = telebpf_tests::build_net_attach_static(h.dir());
    let served = h.remote_program(&stat, &["links"]);
    served.expect_success();
    let served_links: Vec<String> = served
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("link "))
        .map(str::to_string)
        .collect();
    assert_eq!(served_links, ["link 1 lo lo 1"], "{}", served.describe());
    let out = h.remote_program(&program, &["links"]);
    out.expect_success();
    let links: Vec<String> = out
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("link "))
        .map(str::to_string)
        .collect();
    assert_eq!(links, ["link 1 lo lo 1"], "{}", out.describe());
    assert!(out.stdout_text().ends_with("done\n"), "{}", out.describe());
    if host_only_interface().is_some() {
        let mut cmd = Command::new(&program);
        cmd.arg("links");
        let local = run_with_timeout(cmd, "[root] net-attach links", COMMAND_TIMEOUT);
        assert!(
            local
                .stdout_text()
                .lines()
                .filter(|l| l.starts_with("link "))
                .count()
                > 1,
            "the host has more links: {}",
            local.describe()
        );
    }
}

/// A key whose policy has no `netlink` (the shipped `tracing` profile) gets
/// `EPERM` for the socket and the usual one line; nothing reaches the
/// proxy's interfaces.
#[test]
fn a_key_without_netlink_is_refused_with_one_line() {
    let Some(mut h) = Harness::start_without_proxy("a_key_without_netlink_is_refused") else {
        return;
    };
    h.set_proxy_prefix(&["unshare", "--net"]);
    let policy = telebpf_tests::workspace_root().join("policies/tracing.toml");
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);

    let out = h.remote(&["net", "list"]);
    assert!(!out.success(), "{}", out.describe());
    let stderr = out.stderr_text();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(REFUSAL)).collect();
    assert_eq!(lines.len(), 1, "{}", out.describe());
    assert!(
        lines[0].starts_with(&format!("{REFUSAL} a NETLINK_ROUTE socket (key '"))
            && lines[0].ends_with("policy 'tracing': netlink is false)"),
        "{}",
        out.describe()
    );
}

/// Interface names and indexes are the proxy's: a name only the proxy's
/// namespace lacks (the host's `eth0`-like devices) is unknown to bpftool
/// through telebpf, while `lo` resolves.
#[test]
fn interface_names_are_the_proxys() {
    let Some(h) = netns_harness("interface_names_are_the_proxys") else {
        return;
    };
    let host_only = host_only_interface();
    let Some(name) = host_only else {
        telebpf_tests::say("interface_names_are_the_proxys: the host has only lo; skipped");
        return;
    };
    // `net detach ... dev NAME` resolves NAME with if_nametoindex first.
    let out = h.remote(&["net", "detach", "xdpgeneric", "dev", &name]);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr_text()
            .contains(&format!("invalid devname {name}")),
        "{name} is unknown in the proxy's namespace: {}",
        out.describe()
    );
    h.remote(&["net", "detach", "xdpgeneric", "dev", "lo"])
        .expect_success();
}

/// A host interface other than `lo`, if any.
fn host_only_interface() -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != "lo")
}
