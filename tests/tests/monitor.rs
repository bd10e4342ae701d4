//! `telebpf monitor` against real proxies on Unix sockets, run as `nobody`
//! with a key under the `monitor` policy; and the proxy's capabilities.
//! See docs/TESTING.md. Root-only, like every suite here.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use telebpf_tests::monitor::{guests_file, is, Monitor};
use telebpf_tests::{forward_test, say, wait_until, Harness, PinDir, COMMAND_TIMEOUT};

/// How long an event may take to show up (rounds every 300 ms).
const EVENT: Duration = Duration::from_secs(15);

/// A key under the `monitor` policy, and a policy file giving the
/// harness's own key nothing.
fn monitor_key(h: &Harness) -> (PathBuf, PathBuf) {
    let key = h.new_key("monitor.key");
    let policy = h.dir().join("keys.toml");
    std::fs::write(
        &policy,
        "name = \"nothing\"\n\n[[key]]\nfile = \"monitor.key\"\nname = \"monitor\"\npolicy = \"monitor\"\n",
    )
    .expect("write keys.toml");
    (key, policy)
}

#[test]
fn monitor_reports_processes_listeners_programs_and_a_lost_guest() {
    let Some(mut h) = Harness::start_without_proxy("monitor_reports") else {
        return;
    };
    let (key, policy) = monitor_key(&h);
    let proxy_args = ["--policy".to_string(), policy.display().to_string()];
    h.start_proxy_with(&proxy_args);
    let nobody_key = h.nobody_key(&key);
    let dead = format!("unix:{}", h.dir().join("no-proxy.sock").display());
    let guests = guests_file(
        &h,
        &[
            ("main", h.target(), &nobody_key),
            ("dead", dead, &nobody_key),
        ],
    );
    let m = Monitor::start(&h, &guests, &["--interval", "300"], EVENT);

    m.wait(0, "guest_up of main", |v| is(v, "main", "guest_up"));
    m.wait(0, "guest_lost of dead", |v| is(v, "dead", "guest_lost"));
    let (snap_at, _, snap) = m.wait(0, "snapshot", |v| is(v, "main", "snapshot"));
    say(&format!("snapshot: {snap}"));
    assert!(snap["processes"].as_u64().unwrap_or(0) > 10, "{snap}");
    assert!(snap["bpf_programs"].is_u64(), "programs are listed: {snap}");
    assert!(snap["listeners"].is_u64(), "{snap}");

    // A process starts and ends.
    let (mut child, name) = h.marked_sleeper("tbmon");
    let pid = child.id() as u64;
    let (_, _, started) = m.wait(snap_at, "process_started", |v| {
        is(v, "main", "process_started") && v["pid"] == pid
    });
    assert_eq!(started["comm"], name.as_str(), "{started}");
    child.kill().ok();
    child.wait().ok();
    m.wait(snap_at, "process_exited", |v| {
        is(v, "main", "process_exited") && v["pid"] == pid
    });

    // Listeners, each address in its family's form.
    let v4 = TcpListener::bind("127.0.0.1:0").expect("listen v4");
    let v6 = TcpListener::bind("[::1]:0").expect("listen v6");
    let (p4, p6) = (
        v4.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    );
    let (_, _, opened) = m.wait(snap_at, "listener_opened v4", |v| {
        is(v, "main", "listener_opened") && v["port"] == p4
    });
    assert_eq!(
        (opened["family"].as_u64(), opened["address"].as_str()),
        (Some(4), Some("127.0.0.1")),
        "{opened}"
    );
    let (_, _, opened6) = m.wait(snap_at, "listener_opened v6", |v| {
        is(v, "main", "listener_opened") && v["port"] == p6
    });
    assert_eq!(
        (opened6["family"].as_u64(), opened6["address"].as_str()),
        (Some(6), Some("::1")),
        "{opened6}"
    );
    drop(v4);
    m.wait(snap_at, "listener_closed", |v| {
        is(v, "main", "listener_closed") && v["port"] == p4
    });

    // A BPF program loaded in the "guest" (here: by root, locally).
    let pins = PinDir::new("monitor");
    let dir = pins.subdir("prog");
    h.local(&["prog", "loadall", &h.object("forward_test"), &dir])
        .expect_success();
    let id = h
        .local(&[
            "prog",
            "show",
            "pinned",
            &format!("{dir}/{}", forward_test::PROG),
            "--json",
        ])
        .json()["id"]
        .as_u64()
        .expect("id");
    let (_, _, loaded) = m.wait(snap_at, "bpf_program_loaded", |v| {
        is(v, "main", "bpf_program_loaded") && v["id"] == id
    });
    assert_eq!(loaded["name"], forward_test::PROG, "{loaded}");
    assert_eq!(loaded["type"], "tracepoint", "{loaded}");
    assert_eq!(loaded["uid"], 0, "{loaded}");
    assert_eq!(loaded["tag"].as_str().map(str::len), Some(16), "{loaded}");
    drop(pins);
    m.wait(snap_at, "bpf_program_unloaded", |v| {
        is(v, "main", "bpf_program_unloaded") && v["id"] == id
    });

    // The proxy dies: guest_lost within 5 s; back: guest_up again.
    let before = m.lines().len();
    let killed = Instant::now();
    h.kill_proxy();
    let (_, at, lost) = m.wait(before, "guest_lost of main", |v| {
        is(v, "main", "guest_lost")
    });
    let took = at.duration_since(killed);
    say(&format!(
        "guest_lost {:?} after SIGKILL of the proxy: {lost}",
        took
    ));
    assert!(took < Duration::from_secs(5), "guest_lost took {took:?}");
    h.start_proxy_with(&proxy_args);
    let up_from = m.lines().len();
    m.wait(up_from, "guest_up again", |v| is(v, "main", "guest_up"));
    m.wait(up_from, "a fresh snapshot", |v| is(v, "main", "snapshot"));

    let lines = m.stop();
    // The proxy's own collectors are never reported.
    let programs: BTreeSet<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "bpf_program_loaded")
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(
        programs,
        BTreeSet::from([id]),
        "only the test's program was loaded:\n{}",
        lines.join("\n")
    );
    h.finish();
}

#[test]
fn a_monitor_key_cannot_load_a_program_or_create_a_map() {
    let Some(mut h) = Harness::start_without_proxy("a_monitor_key_cannot_load") else {
        return;
    };
    let (key, policy) = monitor_key(&h);
    h.start_proxy_with(&["--policy".to_string(), policy.display().to_string()]);
    let pins = PinDir::new("monitor-key");
    let load = h.remote_with(
        &h.target(),
        &key,
        &["prog", "load", &h.object("forward_test"), &pins.join("p")],
        COMMAND_TIMEOUT,
    );
    assert!(
        !load.success(),
        "a monitor key loaded a program: {}",
        load.describe()
    );
    assert!(
        load.stderr_text()
            .contains("the proxy's policy refuses BPF_PROG_LOAD (key 'monitor', policy 'monitor'")
            || load.stderr_text().contains(
                "the proxy's policy refuses BPF_MAP_CREATE (key 'monitor', policy 'monitor'"
            ),
        "the refusal line: {}",
        load.describe()
    );
    assert!(pins.pinned_files().is_empty(), "nothing pinned");
    // Listing is what it is for.
    let list = h.remote_with(&h.target(), &key, &["prog", "list"], COMMAND_TIMEOUT);
    list.expect_success();
    h.finish();
}

#[test]
fn monitor_reports_a_hidden_process() {
    let Some(h) = Harness::start_without_proxy("monitor_reports_a_hidden_process") else {
        return;
    };
    // As in tests/ids.rs: the proxy's /proc is that of a pid namespace of
    // its own, so our marked process is in the kernel's task list but not
    // in the guest's /proc, as if a rootkit filtered it.
    let (key, policy) = monitor_key(&h);
    let sock = h.dir().join("pidns.sock");
    let target = format!("unix:{}", sock.display());
    let mut proxy = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"])
        .arg(telebpf_tests::product_file("telebpf-proxy"))
        .args(["--listen", &target, "--policy"])
        .arg(&policy)
        .stderr(std::fs::File::create(h.dir().join("pidns-proxy.log")).expect("log"))
        .spawn()
        .expect("start the proxy in a pid namespace");
    wait_until(Duration::from_secs(10), || {
        if sock.exists() {
            Ok(())
        } else {
            Err("no socket yet".to_string())
        }
    })
    .expect("the pid-namespace proxy did not start");
    let (mut marked, name) = h.marked_sleeper("tbmon");
    let nobody_key = h.nobody_key(&key);
    let guests = guests_file(&h, &[("hidden", target, &nobody_key)]);
    let m = Monitor::start(&h, &guests, &["--interval", "300"], EVENT);
    let pid = marked.id() as u64;
    let (_, _, found) = m.wait(0, "hidden_process", |v| {
        is(v, "hidden", "hidden_process") && v["pid"] == pid
    });
    say(&format!("found: {found}"));
    assert_eq!(found["comm"], name.as_str());
    m.stop();
    marked.kill().ok();
    marked.wait().ok();
    proxy.kill().ok();
    proxy.wait().ok();
    h.finish();
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn monitor_memory_stays_flat_over_1000_rounds() {
    let Some(mut h) = Harness::start_without_proxy("monitor_memory_stays_flat") else {
        return;
    };
    let (key, policy) = monitor_key(&h);
    h.start_proxy_with(&["--policy".to_string(), policy.display().to_string()]);
    let nobody_key = h.nobody_key(&key);
    let guests = guests_file(&h, &[("main", h.target(), &nobody_key)]);
    const ROUNDS: &str = "1000";
    let mut m = Monitor::start(&h, &guests, &["--interval", "1", "--rounds", ROUNDS], EVENT);
    let pid = m.child.id();
    let start = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    while m.child.try_wait().expect("wait").is_none() {
        if let Some(kib) = rss_kib(pid) {
            samples.push((start.elapsed(), kib));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "1000 rounds took over 300 s"
        );
    }
    let took = start.elapsed();
    let status = m.child.wait().expect("wait");
    assert!(status.success(), "monitor exit: {status}");
    assert!(samples.len() >= 6, "too short a run to judge: {samples:?}");
    // The first tenth grows (BTF layouts, first batches); after it the
    // monitor must not grow.
    let settled: Vec<u64> = samples
        .iter()
        .skip(samples.len() / 10)
        .map(|s| s.1)
        .collect();
    let third = settled.len() / 3;
    let early = *settled[..third.max(1)].iter().max().unwrap();
    let late = *settled[settled.len() - third.max(1)..]
        .iter()
        .max()
        .unwrap();
    say(&format!(
        "1000 rounds in {took:?}: RSS {early} KiB in the first third after settling, {late} KiB in the last ({} samples)",
        samples.len()
    ));
    const BOUND_KIB: u64 = 2048;
    assert!(
        late <= early + BOUND_KIB,
        "RSS grew from {early} KiB to {late} KiB (bound +{BOUND_KIB} KiB)"
    );
    let lines = m.stop();
    assert!(lines.iter().any(|l| l.contains("\"snapshot\"")));
    h.finish();
}

#[test]
fn the_proxy_keeps_only_the_capabilities_it_needs() {
    let Some(h) = Harness::start("the_proxy_keeps_only_the_capabilities_it_needs") else {
        return;
    };
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", h.proxy_pid())).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    // CAP_NET_ADMIN 12, CAP_SYS_ADMIN 21, CAP_SYSLOG 34, CAP_PERFMON 38,
    // CAP_BPF 39.
    let kept: u64 = [12u32, 21, 34, 38, 39].iter().map(|b| 1u64 << b).sum();
    let expected = format!("{kept:016x}");
    say(&format!(
        "proxy CapEff {} CapBnd {} NoNewPrivs {}",
        field("CapEff:"),
        field("CapBnd:"),
        field("NoNewPrivs:")
    ));
    assert_eq!(field("CapEff:"), expected);
    assert_eq!(field("CapPrm:"), expected);
    assert_eq!(field("CapBnd:"), expected);
    assert_eq!(field("CapInh:"), "0000000000000000");
    assert_eq!(field("CapAmb:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert!(h.proxy_log().contains(
        "capabilities kept: CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYSLOG, CAP_PERFMON, CAP_BPF"
    ));
    // And it serves: the bpftool and libbpf-tools suites (tests/e2e.rs,
    // tests/tools.rs) run against this same proxy.
    let out = h.remote(&["prog", "list"]);
    out.expect_success();
    h.finish();
}
