//! End-to-end tests of telebpf: Debian's unmodified `bpftool`, run as
//! `nobody` with no capabilities through `telebpf exec` and a root
//! `telebpf-proxy` on a Unix socket, against `bpftool` run as root on the
//! same kernel. See docs/TESTING.md.
//!
//! All tests live in this one binary and each holds the global lock of
//! [`TestLock`](telebpf_tests::TestLock) for its whole run: they change
//! kernel state and compare whole listings, so they never overlap, whatever
//! `--test-threads` says. Without root they print a visible SKIP line and
//! pass.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telebpf_tests::{
    compare_objects, compare_text, forward_test, iter_test, json_ids, json_str, json_u64,
    run_with_timeout, say, wait_until, CmdOutput, Harness, IdSnapshot, ObjKind, PinDir,
    COMMAND_TIMEOUT, LONG_COMMAND_TIMEOUT, SESSION_CLOSE_TIMEOUT,
};

/// Limit for a client whose proxy is unreachable: it must fail, not hang.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks, as root, what `prog loadall` of `forward_test.bpf.o` must have
/// made under `dir`: the pinned tracepoint program using a hash map, a ring
/// buffer and the `.bss` map it writes. Returns the program's JSON.
fn check_forward_test_pinned(h: &Harness, dir: &str) -> Value {
    let pin = format!("{dir}/{}", forward_test::PROG);
    let prog = h.local(&["prog", "show", "pinned", &pin, "--json"]).json();
    assert_eq!(
        json_str(&prog, "name"),
        forward_test::PROG,
        "pinned program: {prog}"
    );
    assert_eq!(
        json_str(&prog, "type"),
        "tracepoint",
        "pinned program: {prog}"
    );
    let map_ids = json_ids(&prog, "map_ids");
    let maps: Vec<Value> = map_ids
        .iter()
        .map(|id| {
            h.local(&["map", "show", "id", &id.to_string(), "--json"])
                .json()
        })
        .collect();
    let find = |pred: &dyn Fn(&str, &str) -> bool, what: &str| -> Value {
        maps.iter()
            .find(|m| pred(json_str(m, "name"), json_str(m, "type")))
            .cloned()
            .unwrap_or_else(|| panic!("{what} is not among the program's maps: {maps:?}"))
    };
    let hash = find(
        &|n, t| n == forward_test::HASH_MAP && t == "hash",
        "the hash map",
    );
    assert_eq!(json_u64(&hash, "bytes_key"), 4, "{hash}");
    assert_eq!(json_u64(&hash, "bytes_value"), 8, "{hash}");
    assert_eq!(json_u64(&hash, "max_entries"), 64, "{hash}");
    let ringbuf = find(
        &|n, t| n == forward_test::RINGBUF_MAP && t == "ringbuf",
        "the ring buffer",
    );
    assert_eq!(json_u64(&ringbuf, "max_entries"), 4096, "{ringbuf}");
    let bss = find(
        &|n, t| n.ends_with(forward_test::BSS_SUFFIX) && t == "array",
        "the .bss map",
    );
    // libbpf makes global-data maps mmapable (BPF_F_MMAPABLE = 0x400).
    assert_ne!(json_u64(&bss, "flags") & 0x400, 0, "{bss}");
    // The program writes the .bss global: its translated code addresses
    // the .bss map directly (`rX = map[id:N][0]+0`).
    let xlated = h
        .local(&["prog", "dump", "xlated", "pinned", &pin])
        .expect_success()
        .stdout_text();
    let bss_ref = format!("map[id:{}][0]", json_u64(&bss, "id"));
    assert!(
        xlated.contains(&bss_ref),
        "program does not address the .bss map ({bss_ref}):\n{xlated}"
    );
    assert!(
        prog.get("btf_id").and_then(Value::as_u64).is_some(),
        "program has no BTF: {prog}"
    );
    prog
}

/// Waits up to [`SESSION_CLOSE_TIMEOUT`] for every object of `victim` (a
/// program only a dead client or a stopped proxy held, with its maps and
/// BTF) to be gone from the kernel.
fn assert_gone(h: &Harness, victim: &IdSnapshot, why: &str) {
    let result = wait_until(SESSION_CLOSE_TIMEOUT, || {
        let now = h.local_ids();
        if now.intersects(victim) {
            Err(format!("still alive: {:?}", now.intersection(victim)))
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        panic!("{why}: objects were not released within {SESSION_CLOSE_TIMEOUT:?}: {e}\nvictim: {victim:?}");
    }
}

/// Sanity of the test environment itself, without the product: the test
/// objects load as root with the expected maps, an iterator link pins,
/// `nobody` really cannot use bpf(), and the blocked-client mechanics used
/// by the leak tests work (a held program outlives its pin and goes away
/// when its holder is killed).
#[test]
fn harness_selfcheck_local_only() {
    let Some(h) = Harness::start_local_only("harness_selfcheck_local_only") else {
        return;
    };
    let pins = PinDir::new("self");
    let progs = pins.subdir("progs");
    h.local(&["prog", "loadall", &h.object("forward_test"), &progs])
        .expect_success();
    check_forward_test_pinned(&h, &progs);
    let link_pin = pins.join("iterlink");
    h.local(&["iter", "pin", &h.object("iter_test"), &link_pin])
        .expect_success();
    let link = h
        .local(&["link", "show", "pinned", &link_pin, "--json"])
        .json();
    assert_eq!(json_str(&link, "type"), "iter", "{link}");

    // Without the preload, nobody gets EPERM: any remote success is the proxy's.
    let plain = h.nobody_plain(&["prog", "list"]);
    assert!(
        !plain.success(),
        "nobody can list programs without telebpf: {}",
        plain.describe()
    );
    assert!(
        plain.stderr_text().contains("Operation not permitted"),
        "{}",
        plain.describe()
    );

    let pin = format!("{progs}/{}", forward_test::PROG);
    let victim = h.prog_closure_of_pin(&pin);
    let mut client = h.spawn_local_blocked(&["prog", "run", "pinned", &pin, "data_in", "-"]);
    fs::remove_file(&pin).expect("unpin");
    assert!(
        h.local_ids().progs.is_superset(&victim.progs),
        "the program vanished with its pin although a client holds it"
    );
    let status = client.kill_client();
    assert!(!status.success(), "killed client exited 0?");
    assert_gone(&h, &victim, "local client killed");
    drop(client);
    h.finish();
}

/// Checklist 1: `prog list`, `map list`, `btf list` and `link list` show
/// the same objects (ids, names, every stable field) remotely and locally,
/// with a known program, its maps and BTF, and an iterator link present.
#[test]
fn lists_show_same_objects_remotely_and_locally() {
    let Some(h) = Harness::start("lists_show_same_objects_remotely_and_locally") else {
        return;
    };
    let pins = PinDir::new("lists");
    let progs = pins.subdir("progs");
    h.local(&["prog", "loadall", &h.object("forward_test"), &progs])
        .expect_success();
    let prog = check_forward_test_pinned(&h, &progs);
    h.local(&[
        "iter",
        "pin",
        &h.object("iter_test"),
        &pins.join("iterlink"),
    ])
    .expect_success();

    // The lists are not trivially empty: the known objects are in them.
    let local_progs = h.local_listing(ObjKind::Prog);
    assert!(local_progs.contains_key(&json_u64(&prog, "id")));
    assert!(
        local_progs.values().any(|p| p["name"] == iter_test::PROG),
        "{local_progs:?}"
    );
    let local_maps = h.local_listing(ObjKind::Map);
    for id in json_ids(&prog, "map_ids") {
        assert!(local_maps.contains_key(&id), "map {id} not listed");
    }
    let local_links = h.local_listing(ObjKind::Link);
    assert!(
        local_links.values().any(|l| l["type"] == "iter"),
        "{local_links:?}"
    );
    let local_btfs = h.local_listing(ObjKind::Btf);
    assert!(local_btfs.contains_key(&json_u64(&prog, "btf_id")));

    for kind in ObjKind::ALL {
        h.assert_same_listing(kind, &|args: &[&str]| h.remote(args));
    }
    h.finish();
}

/// Checklist 2: a hash map created remotely, then updated, looked up,
/// dumped, walked with getnext and deleted from remotely, each step
/// cross-checked with root's view of the same pinned map.
#[test]
fn map_create_update_lookup_dump_getnext_delete() {
    let Some(h) = Harness::start("map_create_update_lookup_dump_getnext_delete") else {
        return;
    };
    let pins = PinDir::new("map");
    let pin = pins.join("m");
    let name = format!("tbm{}", std::process::id() % 1_000_000);
    h.remote(&[
        "map", "create", &pin, "type", "hash", "key", "4", "value", "8", "entries", "16", "name",
        &name,
    ])
    .expect_success();
    let map = h.local(&["map", "show", "pinned", &pin, "--json"]).json();
    assert_eq!(json_str(&map, "name"), name, "{map}");
    assert_eq!(json_str(&map, "type"), "hash", "{map}");
    assert_eq!(json_u64(&map, "bytes_key"), 4, "{map}");
    assert_eq!(json_u64(&map, "bytes_value"), 8, "{map}");
    assert_eq!(json_u64(&map, "max_entries"), 16, "{map}");
    let remote_show = h.remote(&["map", "show", "pinned", &pin, "--json"]).json();
    compare_objects(&map, &remote_show).unwrap_or_else(|e| panic!("map show: {e}"));
    assert_eq!(
        h.local(&["map", "dump", "pinned", &pin, "--json"]).json(),
        serde_json::json!([]),
        "new map not empty"
    );

    let p = pin.as_str();
    h.remote(&[
        "map", "update", "pinned", p, "key", "1", "0", "0", "0", "value", "1", "2", "3", "4", "5",
        "6", "7", "8",
    ])
    .expect_success();
    // Root sees exactly the entry nobody wrote through the proxy.
    let dump = h.local(&["map", "dump", "pinned", p, "--json"]).json();
    assert_eq!(
        dump,
        serde_json::json!([{
            "key": ["0x01", "0x00", "0x00", "0x00"],
            "value": ["0x01", "0x02", "0x03", "0x04", "0x05", "0x06", "0x07", "0x08"]
        }]),
        "root's dump after the remote update"
    );
    let found = h.assert_same_output(&["map", "lookup", "pinned", p, "key", "1", "0", "0", "0"]);
    assert!(found.success(), "{}", found.describe());
    h.assert_same_output(&[
        "map", "lookup", "pinned", p, "key", "1", "0", "0", "0", "--json",
    ]);

    h.remote(&[
        "map", "update", "pinned", p, "key", "2", "0", "0", "0", "value", "9", "9", "9", "9", "9",
        "9", "9", "9",
    ])
    .expect_success();
    let dump = h.assert_same_output(&["map", "dump", "pinned", p]);
    assert!(
        dump.stdout_text().contains("Found 2 elements"),
        "{}",
        dump.describe()
    );
    h.assert_same_output(&["map", "dump", "pinned", p, "--json"]);
    // getnext: the first key, then the key after each key (after the last
    // one there is none: the same error on both sides).
    h.assert_same_output(&["map", "getnext", "pinned", p]);
    h.assert_same_output(&["map", "getnext", "pinned", p, "key", "1", "0", "0", "0"]);
    h.assert_same_output(&["map", "getnext", "pinned", p, "key", "2", "0", "0", "0"]);
    h.assert_same_output(&[
        "map", "getnext", "pinned", p, "key", "1", "0", "0", "0", "--json",
    ]);

    h.remote(&["map", "delete", "pinned", p, "key", "1", "0", "0", "0"])
        .expect_success();
    let missing = h.assert_same_output(&["map", "lookup", "pinned", p, "key", "1", "0", "0", "0"]);
    assert!(
        !missing.success(),
        "deleted key still found: {}",
        missing.describe()
    );
    assert_eq!(
        h.local(&["map", "dump", "pinned", &pin, "--json"]).json(),
        serde_json::json!([{
            "key": ["0x02", "0x00", "0x00", "0x00"],
            "value": ["0x09", "0x09", "0x09", "0x09", "0x09", "0x09", "0x09", "0x09"]
        }]),
        "root's dump after the remote delete"
    );
    drop(pins);
    h.finish();
}

/// Checklist 3: remote `prog loadall` of the test object pins a tracepoint
/// program whose maps include a hash map, a ring buffer and the `.bss` it
/// writes, all in the proxy's kernel (checked as root).
#[test]
fn prog_loadall_pins_program_with_ringbuf_and_bss() {
    let Some(h) = Harness::start("prog_loadall_pins_program_with_ringbuf_and_bss") else {
        return;
    };
    let pins = PinDir::new("loadall");
    let dir = pins.subdir("progs");
    let out = h.remote(&["prog", "loadall", &h.object("forward_test"), &dir]);
    out.expect_success();
    let prog = check_forward_test_pinned(&h, &dir);
    // Loaded by the proxy (root), not by nobody.
    assert_eq!(json_u64(&prog, "uid"), 0, "{prog}");
    drop(pins);
    h.finish();
}

/// Checklist 4: for a remotely loaded program, remote `prog show` equals
/// local (apart from run counters and pids), and `prog dump xlated` and
/// `prog dump jited` print the same as root's.
#[test]
fn prog_show_and_dumps_match_local() {
    let Some(h) = Harness::start("prog_show_and_dumps_match_local") else {
        return;
    };
    let pins = PinDir::new("dumps");
    let dir = pins.subdir("progs");
    h.remote(&["prog", "loadall", &h.object("forward_test"), &dir])
        .expect_success();
    let pin = format!("{dir}/{}", forward_test::PROG);
    let local = check_forward_test_pinned(&h, &dir);

    let remote = h.remote(&["prog", "show", "pinned", &pin, "--json"]).json();
    compare_objects(&local, &remote).unwrap_or_else(|e| panic!("prog show pinned: {e}"));
    for id in json_ids(&local, "map_ids") {
        let id = id.to_string();
        let l = h.local(&["map", "show", "id", &id, "--json"]).json();
        let r = h.remote(&["map", "show", "id", &id, "--json"]).json();
        compare_objects(&l, &r).unwrap_or_else(|e| panic!("map show id {id}: {e}"));
    }

    let xlated = h.assert_same_output(&["prog", "dump", "xlated", "pinned", &pin]);
    xlated.expect_success();
    assert!(
        xlated
            .stdout_text()
            .contains("call bpf_get_current_pid_tgid"),
        "{}",
        xlated.describe()
    );
    h.assert_same_output(&["prog", "dump", "xlated", "pinned", &pin, "opcodes"])
        .expect_success();
    h.assert_same_output(&["prog", "dump", "xlated", "pinned", &pin, "--json"])
        .expect_success();

    // Debian's bpftool is built without libbfd and answers `No libbfd
    // support` to any jited dump; then both sides must fail the same way.
    // With a disassembler, the full listings are compared.
    let args = ["prog", "dump", "jited", "pinned", &pin];
    let jited = h.assert_same_output(&args);
    if !jited.success() {
        let local_err = jited.stderr_text();
        let remote = h.remote(&args);
        assert!(
            remote.stderr_text().contains(local_err.trim()),
            "remote jited dump fails differently from local ({:?}): {}",
            local_err.trim(),
            remote.describe()
        );
        say("prog_show_and_dumps_match_local: this bpftool cannot disassemble JIT code; compared its error only");
    }
    drop(pins);
    h.finish();
}

/// Checklist 5: `btf dump file /sys/kernel/btf/vmlinux format c` prints the
/// same remotely as locally, and the file was read through the proxy (its
/// debug log names it: the host file is readable by nobody too, so equal
/// output alone would prove nothing).
#[test]
fn btf_dump_vmlinux_matches_and_comes_through_proxy() {
    let Some(h) = Harness::start("btf_dump_vmlinux_matches_and_comes_through_proxy") else {
        return;
    };
    let args = [
        "btf",
        "dump",
        "file",
        "/sys/kernel/btf/vmlinux",
        "format",
        "c",
    ];
    let local = h.local_timeout(&args, LONG_COMMAND_TIMEOUT);
    local.expect_success();
    assert!(
        local.stdout_text().contains("struct task_struct {"),
        "local dump looks wrong"
    );
    let remote = h.remote_timeout(&args, LONG_COMMAND_TIMEOUT);
    remote.expect_success();
    if let Err(e) = compare_text("btf dump vmlinux format c", &local.stdout, &remote.stdout) {
        panic!("{e}\nremote stderr: {}", remote.stderr_text());
    }
    assert!(
        h.wait_proxy_log("file /sys/kernel/btf/vmlinux", Duration::from_secs(5)),
        "the proxy log has no `file /sys/kernel/btf/vmlinux` line: the client read the host's file itself"
    );
    h.finish();
}

/// Lines of `bpftool feature probe kernel` that may legitimately differ
/// remotely, as (prefix of root's line, the only other line accepted).
///
/// None at present. The candidates were the lines bpftool derives from
/// files only root can read, `/proc/sys/net/core/bpf_jit_{harden,kallsyms,
/// limit}` (mode 0600): `nobody` reading its own host's files would print
/// "Unable to retrieve JIT hardening status" and the like. But those files
/// describe the guest and telebpf forwards them (`/proc/sys/net/core/bpf_*`
/// and `/proc/sys/kernel/*` are guest files, see protocol/src/paths.rs), and
/// capget is forwarded too, so every line must be root's. Should one ever
/// legitimately differ, add it here with the reason, e.g.
/// `("JIT compiler hardening is ", "Unable to retrieve JIT hardening status")`.
const FEATURE_PROBE_PRIVILEGE_LINES: &[(&str, &str)] = &[];

/// Checklist 6: `bpftool feature probe kernel` through the proxy prints
/// what it prints as root (program/map types, helpers, misc features and
/// the kernel config), apart from the listed root-only sysctl lines.
#[test]
fn feature_probe_matches_local_root() {
    let Some(h) = Harness::start("feature_probe_matches_local_root") else {
        return;
    };
    let args = ["feature", "probe", "kernel"];
    let local = h.local_timeout(&args, LONG_COMMAND_TIMEOUT);
    local.expect_success();
    let remote = h.remote_timeout(&args, LONG_COMMAND_TIMEOUT);
    remote.expect_success();
    let l = local.stdout_text();
    let r = remote.stdout_text();
    assert!(
        l.contains("eBPF map_type ringbuf is available"),
        "local probe looks wrong:\n{l}"
    );
    let (ll, rl): (Vec<&str>, Vec<&str>) = (l.lines().collect(), r.lines().collect());
    assert_eq!(
        ll.len(),
        rl.len(),
        "line count differs (local {}, remote {}): {}",
        ll.len(),
        rl.len(),
        compare_text("feature probe", l.as_bytes(), r.as_bytes())
            .err()
            .unwrap_or_default()
    );
    let mut diffs = Vec::new();
    for (n, (a, b)) in ll.iter().zip(&rl).enumerate() {
        if a == b {
            continue;
        }
        let allowed = FEATURE_PROBE_PRIVILEGE_LINES
            .iter()
            .any(|(prefix, alt)| a.starts_with(prefix) && b == alt);
        if !allowed {
            diffs.push(format!("line {}:\n  local:  {a:?}\n  remote: {b:?}", n + 1));
        }
    }
    assert!(
        diffs.is_empty(),
        "feature probe differs:\n{}",
        diffs.join("\n")
    );
    h.finish();
}

/// Checklist 7: after a series of remote commands — a feature probe
/// (hundreds of short-lived objects), pinned loads, a `prog load` that
/// loads and then fails to pin, read-only listings, and a client SIGKILLed
/// while it holds an (unpinned) program — nothing new is left in the
/// kernel but what is pinned.
#[test]
fn no_objects_leak_after_exit_and_sigkill() {
    let Some(h) = Harness::start("no_objects_leak_after_exit_and_sigkill") else {
        return;
    };
    let pins = PinDir::new("leak");
    let obj = h.object("forward_test");
    let before = h.settled_local_ids();

    h.remote_timeout(&["feature", "probe", "kernel"], LONG_COMMAND_TIMEOUT)
        .expect_success();
    let keep = pins.subdir("keep");
    h.remote(&["prog", "loadall", &obj, &keep]).expect_success();
    let map_pin = pins.join("m");
    h.remote(&[
        "map", "create", &map_pin, "type", "hash", "key", "4", "value", "8", "entries", "16",
        "name", "tbleak",
    ])
    .expect_success();
    h.remote(&[
        "iter",
        "pin",
        &h.object("iter_test"),
        &pins.join("iterlink"),
    ])
    .expect_success();
    // Loads the object, then cannot pin (the path is taken) and exits.
    let failed = h.remote(&["prog", "load", &obj, &map_pin]);
    assert!(
        !failed.success(),
        "pinning over an existing pin succeeded: {}",
        failed.describe()
    );
    for kind in ObjKind::ALL {
        h.remote(&[kind.word(), "list"]).expect_success();
    }

    // A client that holds a program nobody else holds, then is SIGKILLed.
    let victim_dir = pins.subdir("victim");
    h.remote(&["prog", "loadall", &obj, &victim_dir])
        .expect_success();
    let victim_pin = format!("{victim_dir}/{}", forward_test::PROG);
    let victim = h.prog_closure_of_pin(&victim_pin);
    let mut client =
        h.spawn_remote_blocked(&["prog", "run", "pinned", &victim_pin, "data_in", "-"]);
    fs::remove_file(&victim_pin).expect("unpin victim");
    assert!(
        h.local_ids().progs.is_superset(&victim.progs),
        "the program vanished with its pin although the blocked client holds an fd to it"
    );
    let status = client.kill_client();
    assert!(!status.success(), "the SIGKILLed client's command exited 0");
    assert_gone(&h, &victim, "client SIGKILLed");
    drop(client);

    let expected = h.pinned_closure(&pins).minus(&before);
    let result = wait_until(SESSION_CLOSE_TIMEOUT, || {
        let new = h.local_ids().minus(&before);
        if new == expected {
            Ok(())
        } else {
            Err(format!(
                "new objects {new:?}\n  but only these are pinned: {expected:?}"
            ))
        }
    });
    if let Err(e) = result {
        panic!("objects leaked: {e}");
    }
    drop(pins);
    h.finish();
}

/// The proxy, on SIGTERM, closes the objects its sessions hold (here a
/// program only a blocked client holds) and exits 0; the client then fails
/// instead of hanging.
#[test]
fn proxy_sigterm_closes_held_objects() {
    let Some(mut h) = Harness::start("proxy_sigterm_closes_held_objects") else {
        return;
    };
    let pins = PinDir::new("sigterm");
    let dir = pins.subdir("victim");
    h.remote(&["prog", "loadall", &h.object("forward_test"), &dir])
        .expect_success();
    let pin = format!("{dir}/{}", forward_test::PROG);
    let victim = h.prog_closure_of_pin(&pin);
    let client = h.spawn_remote_blocked(&["prog", "run", "pinned", &pin, "data_in", "-"]);
    fs::remove_file(&pin).expect("unpin");
    assert!(
        h.local_ids().progs.is_superset(&victim.progs),
        "program vanished with its pin"
    );
    h.stop_proxy_checked();
    assert_gone(&h, &victim, "proxy stopped");
    // bpftool goes on to BPF_PROG_TEST_RUN, which cannot succeed now.
    let status = client.release(UNREACHABLE_TIMEOUT);
    assert!(
        !status.success(),
        "client succeeded after its proxy was stopped"
    );
    drop(pins);
    h.finish();
}

/// Checklist 8: a client with the wrong key fails with a clear error, the
/// proxy logs `authentication failed`, and a good client still works.
#[test]
fn wrong_key_is_refused_and_proxy_keeps_serving() {
    let Some(h) = Harness::start("wrong_key_is_refused_and_proxy_keeps_serving") else {
        return;
    };
    let wrong = h.new_key("wrong.key");
    let out = h.remote_with(&h.target(), &wrong, &["prog", "list"], UNREACHABLE_TIMEOUT);
    assert!(
        !out.success(),
        "a client with the wrong key succeeded: {}",
        out.describe()
    );
    let err = out.stderr_text().to_lowercase();
    assert!(
        ["auth", "key", "handshake", "rejected", "denied"]
            .iter()
            .any(|w| err.contains(w)),
        "no clear authentication error on stderr: {}",
        out.describe()
    );
    assert!(
        h.wait_proxy_log("authentication failed", Duration::from_secs(5)),
        "proxy log has no `authentication failed` line:\n{}",
        h.proxy_log()
    );
    h.remote(&["prog", "list"]).expect_success();
    h.assert_same_listing(ObjKind::Btf, &|args: &[&str]| h.remote(args));
    h.finish();
}

/// A target with no proxy behind it (a stale socket, a missing path) makes
/// `bpftool prog list` fail within 10 s with an error message, through
/// both the wrapper and the bare `LD_PRELOAD` form.
#[test]
fn unreachable_target_fails_fast() {
    let Some(h) = Harness::start_without_proxy("unreachable_target_fails_fast") else {
        return;
    };
    let baseline = h.nobody_plain(&["prog", "list"]);
    assert!(!baseline.success());

    let stale = h.dir().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind stale socket"));
    fs::set_permissions(&stale, fs::Permissions::from_mode(0o666)).expect("chmod stale socket");
    let missing = h.dir().join("missing.sock");

    for sock in [&stale, &missing] {
        let target = format!("unix:{}", sock.display());
        let outs = [
            h.remote_env_form(&target, h.key(), &["prog", "list"], UNREACHABLE_TIMEOUT),
            h.remote_with(&target, h.key(), &["prog", "list"], UNREACHABLE_TIMEOUT),
        ];
        for out in outs {
            assert!(
                !out.success(),
                "succeeded without a proxy: {}",
                out.describe()
            );
            assert!(
                !out.stderr_text().trim().is_empty(),
                "failed silently: {}",
                out.describe()
            );
            // What plain nobody gets (EPERM from the host kernel) is not an
            // error about the target: the preload must not fall back to it.
            assert_ne!(
                out.stderr_text(),
                baseline.stderr_text(),
                "the error is the host kernel's refusal, not about the unreachable target: {}",
                out.describe()
            );
        }
    }
    h.finish();
}

/// The bare environment form (`LD_PRELOAD` + `TELEBPF_TARGET` +
/// `TELEBPF_KEY_FILE`, no `telebpf exec`) sees the proxy's objects too.
#[test]
fn preload_env_form_matches_local() {
    let Some(h) = Harness::start("preload_env_form_matches_local") else {
        return;
    };
    let pins = PinDir::new("envform");
    let progs = pins.subdir("progs");
    h.local(&["prog", "loadall", &h.object("forward_test"), &progs])
        .expect_success();
    let target = h.target();
    let via_env = |args: &[&str]| h.remote_env_form(&target, h.key(), args, LONG_COMMAND_TIMEOUT);
    h.assert_same_listing(ObjKind::Prog, &via_env);
    h.assert_same_listing(ObjKind::Map, &via_env);
    drop(pins);
    h.finish();
}

/// The edges of `bpf()` as an unmodified libbpf program meets them: bad
/// pointers, oversized attrs, unknown commands, fds that are not BPF
/// objects, errno left alone on success, `dup`/`dup3`/`fcntl` on object fds,
/// `readlink` and fdinfo of them, concurrent threads, `uname`, and `fork`.
/// `preload-probe` runs as root on this kernel and as nobody through the
/// proxy; every line must agree except the fork lines, where a forwarded
/// child deliberately has its own session.
#[test]
fn preload_probe_matches_local_kernel_semantics() {
    let Some(h) = Harness::start("preload_probe_matches_local_kernel_semantics") else {
        return;
    };
    let probe = telebpf_tests::product_file("preload-probe");
    let local = run_with_timeout(
        Command::new(&probe),
        "[root] preload-probe",
        COMMAND_TIMEOUT,
    );
    local.expect_success();
    let remote = h.remote_program(&probe, &[]);
    remote.expect_success();
    let lines = |out: &CmdOutput| -> Vec<(String, String)> {
        out.stdout_text()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (local, remote) = (lines(&local), lines(&remote));
    assert!(local.len() >= 25, "the probe printed too little: {local:?}");
    let keys = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys(&local),
        keys(&remote),
        "the probe ran different checks"
    );
    for ((key, l), (_, r)) in local.iter().zip(&remote) {
        match key.as_str() {
            // The child inherited the parent's memfd, which is no object of
            // the child's own session: "wrong kind of fd", never the parent's
            // object through a shared, corrupted stream.
            "fork.child_inherited_fd" => {
                assert_eq!(l, "ok", "locally the child shares its parent's fds");
                assert!(
                    r.contains("Invalid argument"),
                    "forwarded child used its parent's object: {r}"
                );
            }
            _ => assert_eq!(l, r, "{key}: local root and forwarded differ"),
        }
    }
    h.finish();
}

/// Name of the marked process the `ringwatch` tests exec (a copy of
/// `/bin/true`); `comm` is the file name.
const RINGWATCH_MARK: &str = "tbmark";

/// How many events `ringwatch` must get from each of its buffers.
const RINGWATCH_COUNT: usize = 3;

/// Pause between two marked execs. Longer than the preload's default
/// `.bss` sync period (`TELEBPF_MAP_SYNC_MS`, 20 ms; the harness clears the
/// environment, so the default applies): every exec but the last is older
/// than one period when ringwatch reads its counter.
const RINGWATCH_EXEC_INTERVAL: Duration = Duration::from_millis(50);

/// `(pid, comm)` of every `<kind> pid=… comm=…` line of ringwatch's stdout.
fn ringwatch_events(stdout: &str, kind: &str) -> Vec<(u32, String)> {
    let prefix = format!("{kind} pid=");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (pid, comm) = rest
                .split_once(" comm=")
                .unwrap_or_else(|| panic!("malformed {kind} line: {rest:?}"));
            let pid = pid
                .parse()
                .unwrap_or_else(|e| panic!("bad pid in {kind} line {rest:?}: {e}"));
            (pid, comm.to_string())
        })
        .collect()
}

/// Runs `run` (one `ringwatch --comm tbmark --count 3` to completion) while
/// another thread execs `marker` every [`RINGWATCH_EXEC_INTERVAL`].
fn with_marked_execs(marker: &Path, run: impl FnOnce() -> CmdOutput) -> (CmdOutput, Vec<u32>) {
    telebpf_tests::with_marked_execs(marker, RINGWATCH_EXEC_INTERVAL, run)
}

/// Checks ringwatch's output: exit 0, at least [`RINGWATCH_COUNT`] ring and
/// perf events, all of them execs of the marked binary made by this test,
/// and a `.bss` count of at least `min_bss`. Returns `(ring events, perf
/// events, bss count)`.
fn check_ringwatch(
    side: &str,
    out: &CmdOutput,
    marked_pids: &[u32],
    min_bss: u64,
) -> (usize, usize, u64) {
    assert!(
        out.success(),
        "{side} ringwatch failed (exit 2 = the events did not arrive in time): {}",
        out.describe()
    );
    let stdout = out.stdout_text();
    let ring = ringwatch_events(&stdout, "ring");
    let perf = ringwatch_events(&stdout, "perf");
    for (kind, events) in [("ring", &ring), ("perf", &perf)] {
        assert!(
            events.len() >= RINGWATCH_COUNT,
            "{side}: {} {kind} events, want at least {RINGWATCH_COUNT}: {}",
            events.len(),
            out.describe()
        );
        for (pid, comm) in events.iter() {
            assert_eq!(
                comm,
                RINGWATCH_MARK,
                "{side}: {kind} event of another process: {}",
                out.describe()
            );
            assert!(
                marked_pids.contains(pid),
                "{side}: {kind} event with pid {pid}, not one of the marked execs {marked_pids:?}: {}",
                out.describe()
            );
        }
    }
    let counts: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("bss_count="))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("{side}: bad bss_count {n:?}: {e}"))
        })
        .collect();
    assert_eq!(
        counts.len(),
        1,
        "{side}: want exactly one bss_count line: {}",
        out.describe()
    );
    let bss = counts[0];
    assert!(
        bss >= min_bss,
        "{side}: the .bss counter read through the skeleton's mmap is {bss}, want at least \
         {min_bss} (the program counts every marked exec before emitting it): {}",
        out.describe()
    );
    (ring.len(), perf.len(), bss)
}

/// A copy of `/bin/true` named [`RINGWATCH_MARK`] in the test's temp dir,
/// the built `ringwatch`, and its arguments.
fn ringwatch_setup(h: &Harness) -> (PathBuf, PathBuf, Vec<String>) {
    let ringwatch = telebpf_tests::product_file("ringwatch");
    let marker = h.dir().join(RINGWATCH_MARK);
    fs::copy("/bin/true", &marker).expect("copy /bin/true");
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o755)).expect("chmod marker");
    let args = [
        "--comm",
        RINGWATCH_MARK,
        "--count",
        &RINGWATCH_COUNT.to_string(),
        "--timeout-ms",
        "30000",
    ]
    .map(String::from)
    .to_vec();
    (ringwatch, marker, args)
}

/// `ringwatch ARGS` as nobody through the proxy, with marked execs.
fn ringwatch_remote(
    h: &Harness,
    ringwatch: &Path,
    marker: &Path,
    args: &[String],
) -> (CmdOutput, Vec<u32>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    with_marked_execs(marker, || h.remote_program(ringwatch, &args))
}

/// The libbpf-rs example `examples/ringwatch` (skeleton with `.rodata` set
/// before load, a tracepoint, a `BPF_MAP_TYPE_RINGBUF` read with
/// `RingBuffer`, a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` read with `PerfBuffer`,
/// a `.bss` counter read through the skeleton's mmap), unmodified, as root
/// and as nobody through the proxy: both times it reports the execs of a
/// marked binary made on the proxy's side through both buffers, and its
/// `.bss` counter has counted them.
///
/// Remotely too the counter read right after the last event must already
/// include it, as on a local kernel: the preload refreshes writable map
/// mirrors from the guest before it makes ring records visible.
#[test]
fn libbpf_rs_ringwatch_sees_marked_execs_through_ringbuf_perfbuf_and_bss() {
    let Some(h) =
        Harness::start("libbpf_rs_ringwatch_sees_marked_execs_through_ringbuf_perfbuf_and_bss")
    else {
        return;
    };
    let (ringwatch, marker, args) = ringwatch_setup(&h);

    let (local, local_pids) = with_marked_execs(&marker, || {
        let mut cmd = Command::new(&ringwatch);
        cmd.args(&args).current_dir(h.dir());
        run_with_timeout(cmd, "[root] ringwatch", COMMAND_TIMEOUT)
    });
    let (ring, perf, bss) = check_ringwatch("local", &local, &local_pids, RINGWATCH_COUNT as u64);
    // Locally the counter is exact: it counts each event before emitting it.
    assert!(
        bss >= ring.max(perf) as u64,
        "local: bss_count {bss} < events delivered (ring {ring}, perf {perf}): {}",
        local.describe()
    );

    let (remote, remote_pids) = ringwatch_remote(&h, &ringwatch, &marker, &args);
    let (ring, perf, bss) =
        check_ringwatch("remote", &remote, &remote_pids, RINGWATCH_COUNT as u64);
    say(&format!(
        "libbpf_rs_ringwatch: remote ring {ring}, perf {perf}, bss_count {bss}"
    ));
    assert!(
        bss >= ring.max(perf) as u64,
        "remote: bss_count {bss} < events delivered (ring {ring}, perf {perf}): {}",
        remote.describe()
    );
    h.finish();
}

/// The libbpf-rs example `userring` (`examples/ringwatch/src/bin`): the
/// program produces 10000 u64 records into a `BPF_MAP_TYPE_USER_RINGBUF`
/// with libbpf's `user_ring_buffer__reserve`/`__submit` (no syscall), in
/// batches, and after each batch runs a `SEC("syscall")` program with
/// `BPF_PROG_TEST_RUN` that drains the ring with `bpf_user_ringbuf_drain`
/// and sums the records into an array map. As root on this kernel and as
/// nobody through the proxy (the preload mirrors the host ring into the
/// guest one) it counts every record, with the same sum; the 16 KiB ring
/// wraps many times on both sides. Then it fills the drained ring and
/// reserves one more record with `user_ring_buffer__reserve_blocking`
/// (`EPOLLOUT` on the map fd) while another thread drains: 11025 records.
/// The same under the seccomp supervisor (`telebpf exec --supervise`).
#[test]
fn libbpf_rs_user_ringbuf_records_reach_the_guest_kernel() {
    let Some(h) = Harness::start("libbpf_rs_user_ringbuf_records_reach_the_guest_kernel") else {
        return;
    };
    let userring = telebpf_tests::product_file("userring");
    let want = "count=11025 sum=60780825 bad=0";
    let local = run_with_timeout(Command::new(&userring), "[root] userring", COMMAND_TIMEOUT);
    local.expect_success();
    assert_eq!(local.stdout_text().trim(), want, "{}", local.describe());
    let remote = h.remote_program(&userring, &[]);
    remote.expect_success();
    assert_eq!(remote.stdout_text().trim(), want, "{}", remote.describe());
    // Its stream starts at once: the proxy sends no first frame on a user
    // ring's stream, and the host must not wait for one.
    assert!(
        !remote.stderr_text().contains("did not start streaming"),
        "{}",
        remote.describe()
    );
    // The same program served by the seccomp supervisor (`--supervise`):
    // it maps the user ring's memfd itself and waits for space with epoll.
    let copy = h.copy_in(&userring);
    let key = h.nobody_key(h.key()).display().to_string();
    let target = h.target();
    let args = [
        "exec",
        "--supervise",
        "--target",
        target.as_str(),
        "--key-file",
        key.as_str(),
        "--",
        copy.to_str().expect("a UTF-8 path"),
    ];
    let supervised = run_with_timeout(
        h.nobody_command(h.telebpf(), &args),
        "[nobody] telebpf exec --supervise … userring",
        COMMAND_TIMEOUT,
    );
    supervised.expect_success();
    assert_eq!(
        supervised.stdout_text().trim(),
        want,
        "{}",
        supervised.describe()
    );
    let log = h.proxy_log();
    assert!(
        log.contains("UserRingbuf { max_entries: 16384 }"),
        "the records did not travel through a user ring buffer stream:\n{log}"
    );
    h.finish();
}
