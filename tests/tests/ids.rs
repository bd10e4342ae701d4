//! `telebpf ids` (the bulk-read collectors) run as nobody against the
//! proxy, checked against the proxy machine's own view: /proc/*/stat,
//! /proc/net/tcp{,6}, /proc/modules. Every mode must agree: per-pointer
//! (one forwarded read per pointer), bulk-page and bulk-data (one request).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use telebpf_tests::{say, Harness};

const MODES: [&str; 3] = ["per-pointer", "bulk-page", "bulk-data"];

/// pid → (comm, ppid, uid) of every process in /proc now.
fn proc_snapshot() -> BTreeMap<u32, (String, u32, u32)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        // comm sits between the first '(' and the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // Kernel threads show their full name in /proc; task_struct.comm
        // (what ps prints) holds the first 15 bytes.
        let comm: String = stat[open + 1..close]
            .bytes()
            .take(15)
            .map(char::from)
            .collect();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ppid = rest.get(1).and_then(|p| p.parse().ok()).unwrap_or(u32::MAX);
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        out.insert(pid, (comm, ppid, uid));
    }
    out
}

fn ids_json(h: &Harness, what: &str, mode: &str) -> Value {
    let out = h.telebpf_nobody(&["ids", what, "--mode", mode, "--json"]);
    out.expect_success();
    serde_json::from_str(&out.stdout_text()).unwrap_or_else(|e| {
        panic!(
            "ids {what} --mode {mode}: not JSON ({e}): {}",
            out.describe()
        )
    })
}

/// pid → (comm, ppid, uid) from `telebpf ids ps --json`.
fn ids_processes(h: &Harness, mode: &str) -> BTreeMap<u32, (String, u32, u32)> {
    let v = ids_json(h, "ps", mode);
    v.as_array()
        .expect("an array")
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().expect("pid") as u32,
                (
                    p["comm"].as_str().expect("comm").to_string(),
                    p["ppid"].as_u64().expect("ppid") as u32,
                    p["uid"].as_u64().expect("uid") as u32,
                ),
            )
        })
        .collect()
}

#[test]
fn ids_ps_agrees_with_proc_in_every_mode() {
    let Some(h) = Harness::start("ids_ps_agrees_with_proc_in_every_mode") else {
        return;
    };
    for mode in MODES {
        let before = proc_snapshot();
        let seen = ids_processes(&h, mode);
        let after = proc_snapshot();
        // Processes alive before and after (and the same process: same
        // comm and parent) must be listed exactly as /proc shows them.
        let mut checked = 0;
        for (pid, row) in &before {
            if after.get(pid) != Some(row) {
                continue;
            }
            let got = seen.get(pid).unwrap_or_else(|| {
                panic!("{mode}: pid {pid} {row:?} is in /proc but not in ids ps")
            });
            // Kernel threads (children of kthreadd) get a longer name in
            // /proc (e.g. a workqueue worker's current queue): comm is its start.
            let kthread = row.1 == 2 || *pid == 2;
            let same_comm =
                got.0 == row.0 || (kthread && !got.0.is_empty() && row.0.starts_with(&got.0));
            assert!(
                same_comm && got.1 == row.1 && got.2 == row.2,
                "{mode}: pid {pid}: ids ps {got:?}, /proc {row:?}"
            );
            checked += 1;
        }
        assert!(
            checked >= 20,
            "{mode}: only {checked} stable processes compared"
        );
        // Anything listed that /proc never showed must have lived only
        // during the walk (the ids command itself, setpriv…): a handful.
        let phantoms: Vec<_> = seen
            .iter()
            .filter(|(pid, _)| !before.contains_key(pid) && !after.contains_key(pid))
            .collect();
        assert!(
            phantoms.len() <= 5,
            "{mode}: listed but never in /proc: {phantoms:?}"
        );
        say(&format!(
            "{mode}: {} processes listed, {checked} compared with /proc",
            seen.len()
        ));
    }
    h.finish();
}

#[test]
fn ids_ps_finds_a_marked_process_and_no_longer_after_it_ends() {
    let Some(h) = Harness::start("ids_ps_finds_a_marked_process_and_no_longer_after_it_ends")
    else {
        return;
    };
    let (mut child, name) = h.marked_sleeper("tbm");
    let pid = child.id();
    for mode in MODES {
        let seen = ids_processes(&h, mode);
        let row = seen
            .get(&pid)
            .unwrap_or_else(|| panic!("{mode}: marked process {pid} ({name}) not found"));
        assert_eq!(row.0, name, "{mode}: comm of the marked process");
        assert_eq!(row.1, std::process::id(), "{mode}: its parent is this test");
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    // Same proxy, collectors already loaded: a new walk must not serve
    // anything cached from the previous one.
    for mode in MODES {
        let seen = ids_processes(&h, mode);
        assert!(
            !seen.contains_key(&pid) && !seen.values().any(|r| r.0 == name),
            "{mode}: the ended process {pid} ({name}) is still listed"
        );
    }
    h.finish();
}

/// pid → comm of one `--watch --json` line's rows.
fn watched_pids(line: &Value) -> BTreeMap<u32, String> {
    line["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().expect("pid") as u32,
                p["comm"].as_str().expect("comm").to_string(),
            )
        })
        .collect()
}

#[test]
fn ids_watch_in_page_mode_resends_only_changed_pages_and_nothing_stale() {
    let Some(h) =
        Harness::start("ids_watch_in_page_mode_resends_only_changed_pages_and_nothing_stale")
    else {
        return;
    };
    let (mut marked, name) = h.marked_sleeper("tbm");
    let pid = marked.id();
    let (target, key) = (h.target(), h.nobody_key(h.key()).display().to_string());
    let args = [
        "ids",
        "ps",
        "--mode",
        "bulk-page",
        "--json",
        "--watch",
        "50",
        "--count",
        "400",
        "--target",
        &target,
        "--key-file",
        &key,
    ];
    let mut watcher = h
        .nobody_command(h.telebpf(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start telebpf ids --watch");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut next = move || -> Value {
        let line = lines
            .next()
            .expect("the watch ended early")
            .expect("read a walk");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };

    // The first walk has no base: every page. The next ones send only the
    // pages whose bytes changed (one request each).
    let first = next();
    let second = next();
    for w in [&first, &second] {
        assert_eq!(
            watched_pids(w).get(&pid),
            Some(&name),
            "walk {}: the marked process",
            w["walk"]
        );
    }
    let (b1, b2) = (
        first["bytes"].as_u64().unwrap(),
        second["bytes"].as_u64().unwrap(),
    );
    say(&format!(
        "bulk-page watch: first walk {b1} bytes, second {b2} bytes"
    ));
    assert_eq!(second["requests"].as_u64(), Some(1), "{second}");
    assert!(
        b2 * 4 < b1,
        "the second walk resent most pages: {b2} vs {b1} bytes"
    );

    // Ended: a walk under way at the kill may still list it, none after.
    marked.kill().expect("kill");
    marked.wait().expect("reap");
    let mut gone_at = None;
    for _ in 0..5 {
        let w = next();
        if !watched_pids(&w).contains_key(&pid) {
            gone_at = Some(w["walk"].clone());
            break;
        }
    }
    assert!(
        gone_at.is_some(),
        "the ended process {pid} is still listed 5 walks later"
    );
    for _ in 0..3 {
        let w = next();
        assert!(
            !watched_pids(&w).contains_key(&pid),
            "walk {}: the ended process {pid} is listed again (a stale page)",
            w["walk"]
        );
    }

    // A process started now must show up as soon as its pages change.
    let (mut fresh, fresh_name) = h.marked_sleeper("tbm");
    let fresh_pid = fresh.id();
    let mut found = false;
    for _ in 0..5 {
        if watched_pids(&next()).get(&fresh_pid) == Some(&fresh_name) {
            found = true;
            break;
        }
    }
    fresh.kill().expect("kill");
    fresh.wait().expect("reap");
    watcher.kill().expect("stop the watch");
    watcher.wait().expect("reap the watch");
    assert!(
        found,
        "a process started during the watch ({fresh_pid}) never showed up"
    );
    h.finish();
}

#[test]
fn ids_batch_over_inflight_refused() {
    let Some(mut h) = Harness::start_without_proxy("ids_batch_over_inflight_refused") else {
        return;
    };
    // A task costs its page batch at least one 4 KiB page and its data
    // batch ~170 bytes: with 64 more tasks than the machine had, the first
    // page batch is over 256 kB and the data batch far under 200 kB (as is
    // the collector's object, ~80 kB, sent on the first walk).
    let mut sleepers: Vec<Child> = (0..64)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("start a sleeper")
        })
        .collect();
    h.set_proxy_args(&["--max-inflight-per-session", "200000"]);
    h.start_proxy();
    let out = h.telebpf_nobody(&["ids", "ps", "--mode", "bulk-page"]);
    let data = ids_processes(&h, "bulk-data");
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(
        !out.success(),
        "a page batch over the limit was sent: {}",
        out.describe()
    );
    assert!(
        out.stderr_text().contains("Cannot allocate memory"),
        "not refused with ENOMEM: {}",
        out.describe()
    );
    assert!(data.len() > 64, "the proxy no longer serves: {data:?}");
    h.finish();
}

/// (family, local, remote, state) rows of /proc/net/tcp and tcp6, as the
/// hex text /proc prints.
fn proc_tcp() -> BTreeSet<(u8, String, String, String)> {
    let mut out = BTreeSet::new();
    for (family, file) in [(4u8, "/proc/net/tcp"), (6u8, "/proc/net/tcp6")] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 {
                out.insert((family, f[1].to_string(), f[2].to_string(), f[3].to_string()));
            }
        }
    }
    out
}

fn hex_v4(addr: &str) -> String {
    // An IPv4 socket's address is written in IPv4's own form.
    let v4: std::net::Ipv4Addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("an IPv4 address, not {addr:?}: {e}"));
    format!("{:08X}", u32::from_ne_bytes(v4.octets()))
}

fn hex_v6(addr: &str) -> String {
    let ip: std::net::Ipv6Addr = addr.parse().expect("an address");
    ip.octets()
        .chunks_exact(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect()
}

fn ids_tcp(h: &Harness, mode: &str) -> BTreeSet<(u8, String, String, String)> {
    let v = ids_json(h, "tcp", mode);
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            let family = s["family"].as_u64().expect("family") as u8;
            let hex = if family == 4 { hex_v4 } else { hex_v6 };
            (
                family,
                format!(
                    "{}:{:04X}",
                    hex(s["local"].as_str().expect("local")),
                    s["local_port"].as_u64().expect("port")
                ),
                format!(
                    "{}:{:04X}",
                    hex(s["remote"].as_str().expect("remote")),
                    s["remote_port"].as_u64().expect("port")
                ),
                format!("{:02X}", s["state"].as_u64().expect("state")),
            )
        })
        .collect()
}

#[test]
fn ids_tcp_agrees_with_proc_net_tcp_in_every_mode() {
    let Some(h) = Harness::start("ids_tcp_agrees_with_proc_net_tcp_in_every_mode") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen v4");
    let port = listener.local_addr().unwrap().port();
    let listener6 = TcpListener::bind("[::1]:0").expect("listen v6");
    let port6 = listener6.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let cport = client.local_addr().unwrap().port();
    let ours = [
        (
            4u8,
            format!("0100007F:{port:04X}"),
            "00000000:0000".to_string(),
            "0A".to_string(),
        ),
        (
            4,
            format!("0100007F:{port:04X}"),
            format!("0100007F:{cport:04X}"),
            "01".into(),
        ),
        (
            4,
            format!("0100007F:{cport:04X}"),
            format!("0100007F:{port:04X}"),
            "01".into(),
        ),
        (
            6,
            format!("00000000000000000000000001000000:{port6:04X}"),
            "00000000000000000000000000000000:0000".into(),
            "0A".into(),
        ),
    ];
    for mode in MODES {
        let before = proc_tcp();
        let seen = ids_tcp(&h, mode);
        let after = proc_tcp();
        for row in &ours {
            assert!(
                seen.contains(row),
                "{mode}: our socket {row:?} is missing: {seen:?}"
            );
        }
        for row in before.intersection(&after) {
            assert!(
                seen.contains(row),
                "{mode}: /proc has {row:?} throughout, ids tcp does not"
            );
        }
        let union: BTreeSet<_> = before.union(&after).cloned().collect();
        let extra: Vec<_> = seen.difference(&union).collect();
        // The ids command's own connection to the proxy is a Unix socket;
        // only sockets opening or closing during the walk may differ.
        assert!(
            extra.len() <= 4,
            "{mode}: ids tcp lists sockets /proc never showed: {extra:?}"
        );
        say(&format!(
            "{mode}: {} TCP sockets, ours all found",
            seen.len()
        ));
    }
    drop((client, server, listener, listener6));
    h.finish();
}

#[test]
fn ids_modules_matches_proc_modules_or_says_the_kernel_has_none() {
    let Some(h) = Harness::start("ids_modules_matches_proc_modules_or_says_the_kernel_has_none")
    else {
        return;
    };
    for mode in MODES {
        let out = h.telebpf_nobody(&["ids", "modules", "--mode", mode, "--json"]);
        match std::fs::read_to_string("/proc/modules") {
            Err(_) => {
                assert!(
                    !out.success(),
                    "{mode}: no module support, yet: {}",
                    out.describe()
                );
                assert!(
                    out.stderr_text().contains("no module support"),
                    "{mode}: the error must say why: {}",
                    out.describe()
                );
            }
            Ok(text) => {
                out.expect_success();
                let v: Value = serde_json::from_str(&out.stdout_text()).expect("JSON");
                let seen: BTreeMap<String, u64> = v
                    .as_array()
                    .expect("array")
                    .iter()
                    .map(|m| {
                        (
                            m["name"].as_str().unwrap().to_string(),
                            m["size"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                for line in text.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let size: u64 = f[1].parse().expect("size");
                    assert_eq!(seen.get(f[0]), Some(&size), "{mode}: module {}", f[0]);
                }
                assert_eq!(seen.len(), text.lines().count(), "{mode}: module count");
            }
        }
    }
    h.finish();
}

#[test]
fn bench_ids_uses_one_request_per_bulk_walk() {
    let Some(h) = Harness::start("bench_ids_uses_one_request_per_bulk_walk") else {
        return;
    };
    let csv = h.nobody_dir().join("ids.csv");
    let csv_arg = csv.display().to_string();
    let out = h.telebpf_nobody(&["bench", "ids", "--runs", "2", "--csv", &csv_arg]);
    out.expect_success();
    assert!(csv.exists(), "no CSV: {}", out.describe());
    let text = std::fs::read_to_string(&csv).expect("read CSV");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("collector,mode,requests,responses,bytes,median_us,p95_us")
    );
    let mut bulk = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 7, "{line}");
        let requests: u64 = f[2].parse().expect("requests");
        let responses: u64 = f[3].parse().expect("responses");
        assert_eq!(requests, responses, "{line}");
        match f[1] {
            "bulk-page" | "bulk-data" => {
                assert_eq!(requests, 1, "a bulk walk is one request: {line}");
                bulk += 1;
            }
            "per-pointer" => assert!(requests > 1, "{line}"),
            other => panic!("unexpected mode {other} (nobody has no direct baseline): {line}"),
        }
    }
    assert!(bulk >= 4, "ps and tcp in both bulk modes: {text}");
    h.finish();
}

/// `examples/hiddenproc` as nobody against `target`; its exit code and stdout.
fn hiddenproc(h: &Harness, target: &str) -> (Option<i32>, String) {
    let copy = h.copy_in(&telebpf_tests::product_file("hiddenproc"));
    let mut cmd = h.nobody_command(&copy, &["bulk-data"]);
    cmd.env("TELEBPF_TARGET", target)
        .env("TELEBPF_KEY_FILE", h.nobody_key(h.key()));
    let out =
        telebpf_tests::run_with_timeout(cmd, "[nobody] hiddenproc", telebpf_tests::COMMAND_TIMEOUT);
    (out.status.code(), out.stdout_text())
}

#[test]
fn hiddenproc_finds_nothing_hidden_on_an_untouched_guest() {
    let Some(h) = Harness::start("hiddenproc_finds_nothing_hidden_on_an_untouched_guest") else {
        return;
    };
    // A kernel worker may start and end between the two /proc readings and
    // the walk: allow a retry, not a standing disagreement.
    let mut last = String::new();
    let clean = (0..3).any(|_| {
        let (code, out) = hiddenproc(&h, &h.target());
        last = out;
        code == Some(0)
    });
    assert!(
        clean,
        "hiddenproc flagged processes on a clean guest:\n{last}"
    );
    assert!(last.contains(" 0 hidden, 0 unlisted"), "{last}");
    h.finish();
}

#[test]
fn hiddenproc_flags_a_process_the_guests_proc_does_not_show() {
    let Some(h) =
        Harness::start_without_proxy("hiddenproc_flags_a_process_the_guests_proc_does_not_show")
    else {
        return;
    };
    // The proxy's /proc belongs to a pid namespace of its own, so the
    // processes outside it (our marked one among them) are in the kernel's
    // task list but not in the /proc the guest side reads: hidden, as a
    // rootkit filtering /proc would make them.
    let sock = h.dir().join("pidns.sock");
    let target = format!("unix:{}", sock.display());
    let mut proxy = Command::new("unshare")
        // unshare's parent ignores SIGTERM while it waits: --kill-child
        // ends the proxy when we SIGKILL unshare.
        .args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"])
        .arg(telebpf_tests::product_file("telebpf-proxy"))
        .args(["--listen", &target, "--key-file"])
        .arg(h.key())
        .stderr(std::fs::File::create(h.dir().join("pidns-proxy.log")).expect("log"))
        .spawn()
        .expect("start the proxy in a pid namespace");
    let ready = telebpf_tests::wait_until(std::time::Duration::from_secs(10), || {
        if sock.exists() {
            Ok(())
        } else {
            Err("no socket yet".to_string())
        }
    });
    let (mut marked, name) = h.marked_sleeper("tbm");
    let result = ready.map(|()| hiddenproc(&h, &target));
    marked.kill().ok();
    marked.wait().ok();
    proxy.kill().ok();
    proxy.wait().ok();
    let (code, out) = result.expect("the pid-namespace proxy did not start");
    assert_eq!(code, Some(1), "hiddenproc must report a finding:\n{out}");
    let line = format!("HIDDEN pid={} ", marked.id());
    assert!(
        out.contains(&line) && out.contains(&name),
        "{name} not flagged:\n{out}"
    );
    h.finish();
}
