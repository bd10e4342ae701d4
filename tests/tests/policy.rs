//! The proxy's policies and audit log, end to end: unmodified bpftool and
//! execsnoop as `nobody` through `telebpf exec`, against a proxy started
//! with `--policy` and `--audit`.
//!
//! * One proxy serves two keys at once: a monitor under the shipped
//!   `policies/read-only.toml` lists programs but cannot load one (EPERM,
//!   one stderr line from the preload), while a tool key with the full
//!   profile loads the same object.
//! * The shipped `policies/tracing.toml` is enough for execsnoop: it sees
//!   a marked exec and the proxy refuses nothing on the way.
//! * `[bpffs] paths` confines pins to a prefix.
//! * The audit log's JSON lines record sessions (key, policy, peer),
//!   mutating requests with their outcome, and refusals.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use telebpf_tests::{
    find_program, forward_test, json_ids, say, unique_name, workspace_root, CmdOutput, Harness,
    PinDir,
};

/// The start of the line the preload prints for a refused request.
const REFUSAL: &str = "telebpf: the proxy's policy refuses";

/// A shipped policy profile.
/// Starts the proxy under `policy` (a file) with an audit log in the test's
/// directory; returns the log's path.
fn start_audited(h: &mut Harness, policy: String) -> PathBuf {
    let audit = h.dir().join("audit.jsonl");
    h.start_proxy_with(&[
        "--policy".into(),
        policy,
        "--audit".into(),
        audit.display().to_string(),
    ]);
    audit
}

fn profile(name: &str) -> String {
    let p = workspace_root()
        .join("policies")
        .join(format!("{name}.toml"));
    assert!(p.is_file(), "{} is missing", p.display());
    p.display().to_string()
}

/// Writes a file in the test's directory and returns its path.
fn write(h: &Harness, name: &str, text: &str) -> PathBuf {
    let p = h.dir().join(name);
    fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// The audit log's records, each line parsed as JSON (a line that is not
/// JSON fails the test).
fn audit_records(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read audit log {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?} is no JSON: {e}"))
        })
        .collect()
}

/// Records with `event` and every `(field, value)` given.
fn find<'a>(records: &'a [Value], event: &str, fields: &[(&str, Value)]) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event"] == event && fields.iter().all(|(k, v)| &r[*k] == v))
        .collect()
}

/// How often `needle` occurs in a command's stderr.
fn count(out: &CmdOutput, needle: &str) -> usize {
    out.stderr_text().matches(needle).count()
}

/// Waits until the proxy wrote `session_closed` for every opened session
/// (clients have exited; the proxy closes asynchronously).
fn settled_audit(path: &Path) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = audit_records(path);
        let opened = find(&records, "session_opened", &[]).len();
        let closed = find(&records, "session_closed", &[]).len();
        if opened == closed || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_proxy_serves_a_read_only_monitor_and_a_full_tool() {
    let Some(mut h) = Harness::start_without_proxy("policy_two_keys") else {
        return;
    };
    let monitor = h.new_key("monitor.key");
    let tool = h.new_key("tool.key");
    let policy = write(
        &h,
        "keys.toml",
        &format!(
            "# The harness's own --key-file key gets this file's rules: none.\n\
             name = \"nothing\"\n\n\
             [[key]]\nfile = \"monitor.key\"\nname = \"monitor\"\npolicy = \"{}\"\n\n\
             [[key]]\nfile = \"tool.key\"\nname = \"tool\"\npolicy = \"full\"\n",
            profile("read-only")
        ),
    );
    let audit = start_audited(&mut h, policy.display().to_string());
    let target = h.target();
    let limit = telebpf_tests::COMMAND_TIMEOUT;
    let pins = PinDir::new("policy");

    // The tool (full) loads and pins a program.
    let tool_dir = pins.subdir("tool");
    let loaded = h.remote_with(
        &target,
        &tool,
        &["prog", "loadall", &h.object("forward_test"), &tool_dir],
        limit,
    );
    loaded.expect_success();
    assert_eq!(count(&loaded, REFUSAL), 0, "{}", loaded.describe());
    let pin = format!("{tool_dir}/{}", forward_test::PROG);
    let id = h.local(&["prog", "show", "pinned", &pin, "--json"]).json()["id"]
        .as_u64()
        .expect("id of the pinned program");

    // The monitor lists programs (the tool's among them) and shows the pin.
    let listed = h.remote_with(&target, &monitor, &["prog", "list", "--json"], limit);
    listed.expect_success();
    assert_eq!(count(&listed, REFUSAL), 0, "{}", listed.describe());
    let ids: BTreeSet<u64> = listed
        .json()
        .as_array()
        .expect("a JSON list")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert!(ids.contains(&id), "prog {id} not in {ids:?}");
    let shown = h.remote_with(
        &target,
        &monitor,
        &["prog", "show", "pinned", &pin, "--json"],
        limit,
    );
    shown.expect_success();
    assert_eq!(shown.json()["id"].as_u64(), Some(id));
    let maps = json_ids(&shown.json(), "map_ids");
    assert!(!maps.is_empty());
    let dumped = h.remote_with(
        &target,
        &monitor,
        &["map", "dump", "id", &maps[0].to_string(), "--json"],
        limit,
    );
    dumped.expect_success();

    // The monitor cannot load: EPERM, and the preload says why, once.
    let monitor_dir = pins.subdir("monitor");
    let refused = h.remote_with(
        &target,
        &monitor,
        &["prog", "loadall", &h.object("forward_test"), &monitor_dir],
        limit,
    );
    assert!(!refused.success(), "{}", refused.describe());
    let line = "telebpf: the proxy's policy refuses BPF_PROG_LOAD (key 'monitor', \
                policy 'read-only': 'prog_load' is not in commands)";
    assert_eq!(count(&refused, line), 1, "{}", refused.describe());
    assert!(
        refused.stderr_text().contains("Operation not permitted"),
        "libbpf reports EPERM: {}",
        refused.describe()
    );
    assert_eq!(
        fs::read_dir(&monitor_dir).expect("monitor dir").count(),
        0,
        "nothing pinned by the monitor"
    );
    // Nor create a map (another kind: its own line).
    let map_pin = pins.join("monitor_map");
    let created = h.remote_with(
        &target,
        &monitor,
        &[
            "map", "create", &map_pin, "type", "hash", "key", "4", "value", "4", "entries", "4",
            "name", "tbmon",
        ],
        limit,
    );
    assert!(!created.success(), "{}", created.describe());
    assert_eq!(
        count(&created, "refuses BPF_MAP_CREATE (key 'monitor'"),
        1,
        "{}",
        created.describe()
    );

    // The same load with the tool's key, after the refusal, still works.
    let again_dir = pins.subdir("again");
    h.remote_with(
        &target,
        &tool,
        &["prog", "loadall", &h.object("forward_test"), &again_dir],
        limit,
    )
    .expect_success();
    assert!(Path::new(&format!("{again_dir}/{}", forward_test::PROG)).exists());

    // The harness's own key got the file's top-level rules: nothing.
    let nothing = h.remote(&["prog", "list"]);
    assert!(!nothing.success(), "{}", nothing.describe());
    assert!(
        count(
            &nothing,
            "policy 'nothing': 'prog_get_next_id' is not in commands)"
        ) == 1,
        "{}",
        nothing.describe()
    );

    // The audit log tells the story.
    let records = settled_audit(&audit);
    say(&format!("{} audit records", records.len()));
    let opened_monitor = find(
        &records,
        "session_opened",
        &[("key", "monitor".into()), ("policy", "read-only".into())],
    );
    let opened_tool = find(
        &records,
        "session_opened",
        &[("key", "tool".into()), ("policy", "full".into())],
    );
    assert!(opened_monitor.len() >= 3, "{records:#?}");
    assert!(opened_tool.len() >= 2, "{records:#?}");
    for r in opened_monitor.iter().chain(&opened_tool) {
        assert!(r["peer"].is_string() && r["key_id"].as_str().unwrap().len() == 16);
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
        let closed = find(
            &records,
            "session_closed",
            &[("session", r["session"].clone())],
        );
        assert_eq!(closed.len(), 1, "no session_closed for {r}");
    }
    let loads = find(
        &records,
        "request",
        &[
            ("key", "tool".into()),
            ("op", "BPF_PROG_LOAD".into()),
            ("detail", "prog type tracepoint".into()),
            ("errno", 0.into()),
        ],
    );
    assert!(loads.len() >= 2, "{records:#?}");
    assert!(loads.iter().all(|r| r["ret"].as_i64().unwrap() >= 0));
    let pinned = find(
        &records,
        "request",
        &[
            ("op", "BPF_OBJ_PIN".into()),
            ("detail", pin.as_str().into()),
            ("errno", 0.into()),
        ],
    );
    assert_eq!(pinned.len(), 1, "{records:#?}");
    let refusals = find(
        &records,
        "refused",
        &[
            ("key", "monitor".into()),
            ("policy", "read-only".into()),
            ("op", "BPF_PROG_LOAD".into()),
        ],
    );
    assert!(!refusals.is_empty(), "{records:#?}");
    assert_eq!(refusals[0]["rule"], "'prog_load' is not in commands");
    // Reads are not audited, refusals of the monitor are; the monitor made
    // no request that was executed and changes anything.
    assert!(find(
        &records,
        "request",
        &[("op", "BPF_PROG_GET_NEXT_ID".into())]
    )
    .is_empty());
    assert!(
        find(&records, "request", &[("key", "monitor".into())]).is_empty(),
        "{records:#?}"
    );
    assert!(h
        .proxy_log()
        .contains("policy 'read-only' of key 'monitor' refuses"));
    drop(pins);
    h.finish();
}

#[test]
fn tracing_profile_is_enough_for_execsnoop() {
    let Some(mut h) = Harness::start_without_proxy("policy_tracing_execsnoop") else {
        return;
    };
    let Some(execsnoop) = find_program("execsnoop") else {
        say("SKIP: execsnoop is not installed (apt-get install libbpf-tools)");
        return;
    };
    let audit = start_audited(&mut h, profile("tracing"));
    let mut tool = h.start_exec_tool(&h.target(), h.key(), &execsnoop, &[]);
    tool.wait_for("PCOMM", Duration::from_secs(60)).unwrap();
    tool.wait_for_event(Duration::from_secs(15), || {
        let mark = unique_name("tbpolicy");
        let status = Command::new("/bin/true").arg(&mark).status().expect("exec");
        assert!(status.success());
        mark
    })
    .unwrap();
    let text = tool.stop(libc::SIGINT, Duration::from_secs(20));
    assert!(!text.contains(REFUSAL), "{text}");
    assert!(
        !h.proxy_log().contains("refuses"),
        "the tracing profile refused something execsnoop asked:\n{}",
        h.proxy_log()
    );
    let records = settled_audit(&audit);
    assert!(find(&records, "refused", &[]).is_empty(), "{records:#?}");
    let tracing = [("policy", Value::from("tracing"))];
    assert!(!find(&records, "session_opened", &tracing).is_empty());
    for (op, detail) in [
        ("BPF_PROG_LOAD", "prog type tracepoint"),
        ("BPF_MAP_CREATE", "map type perf_event_array"),
    ] {
        let ok = find(
            &records,
            "request",
            &[
                ("op", op.into()),
                ("detail", detail.into()),
                ("errno", 0.into()),
            ],
        );
        assert!(
            !ok.is_empty(),
            "no successful {op} ({detail}): {records:#?}"
        );
    }
    assert!(
        !find(
            &records,
            "request",
            &[("op", "perf_event_open".into()), ("errno", 0.into())]
        )
        .is_empty(),
        "{records:#?}"
    );
    h.finish();
}

#[test]
fn pins_stay_under_the_policy_paths() {
    let Some(mut h) = Harness::start_without_proxy("policy_pin_paths") else {
        return;
    };
    let pins = PinDir::new("policy_paths");
    let allowed = pins.subdir("allowed");
    let other = pins.subdir("other");
    let policy = write(
        &h,
        "pinner.toml",
        &format!(
            "name = \"pinner\"\n\
             commands = [\"*\"]\nprog_types = [\"*\"]\nmap_types = [\"*\"]\n\
             attach_types = [\"*\"]\nmap_mmap_read = true\n\n\
             [helpers]\nallow = [\"*\"]\n\n\
             [bpffs]\npaths = [\"{allowed}\"]\n"
        ),
    );
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);
    let object = h.object("forward_test");
    h.remote(&["prog", "loadall", &object, &allowed])
        .expect_success();
    assert!(Path::new(&format!("{allowed}/{}", forward_test::PROG)).exists());
    // libbpf makes the pin's directory first: refused outside the prefix.
    let outside = h.remote(&["prog", "loadall", &object, &other]);
    assert!(!outside.success(), "{}", outside.describe());
    assert_eq!(
        count(&outside, "refuses mkdir in bpffs outside the allowed paths"),
        1,
        "{}",
        outside.describe()
    );
    assert_eq!(fs::read_dir(&other).expect("dir").count(), 0);
    // bpftool pins a new map straight into an existing directory.
    let map = |pin: &str| {
        h.remote(&[
            "map", "create", pin, "type", "array", "key", "4", "value", "8", "entries", "2",
            "name", "tbpin",
        ])
    };
    map(&format!("{allowed}/m")).expect_success();
    assert!(Path::new(&format!("{allowed}/m")).exists());
    let outside = map(&format!("{other}/m"));
    assert!(!outside.success(), "{}", outside.describe());
    assert_eq!(
        count(
            &outside,
            "refuses BPF_OBJ_PIN outside the allowed paths (key '"
        ),
        1,
        "{}",
        outside.describe()
    );
    assert_eq!(fs::read_dir(&other).expect("dir").count(), 0);
    drop(pins);
    h.finish();
}

/// `[bpffs] paths` holds against symlinks: nobody plants, in the allowed
/// (world-writable) directory, a link to a directory outside it. A key
/// allowed to pin there cannot pin through the link into the other
/// directory, nor open a pin there through it: both answer `ELOOP` (the
/// kernel follows symlinks of the pathnames it is given; before, the pin
/// landed outside and the open succeeded). Pins and opens by their plain
/// path still work.
#[test]
fn pins_cannot_follow_a_symlink_out_of_the_policy_paths() {
    let Some(mut h) = Harness::start_without_proxy("policy_pin_symlinks") else {
        return;
    };
    let pins = PinDir::new("pin_symlinks");
    let allowed = pins.subdir("allowed");
    let other = pins.subdir("other");
    let link = format!("{allowed}/lnk");
    let ln = h.nobody_command(
        Path::new("/bin/ln"),
        &["-s".to_string(), other.clone(), link.clone()],
    );
    let ln = telebpf_tests::run_with_timeout(ln, "[nobody] ln -s", telebpf_tests::COMMAND_TIMEOUT);
    ln.expect_success();
    // Root's pin in the other directory.
    let guest = Command::new(telebpf_tests::product_file("object-probe"))
        .args(["pin-new-map", &format!("{other}/root")])
        .output()
        .expect("object-probe");
    assert!(
        String::from_utf8_lossy(&guest.stdout).contains("pin: ok"),
        "{guest:?}"
    );
    let tracing = fs::read_to_string(profile("tracing")).expect("tracing profile");
    let policy = write(
        &h,
        "pinner.toml",
        &tracing
            .replace("name = \"tracing\"", "name = \"pinner\"")
            .replace(
                "    \"iter_create\",\n",
                "    \"iter_create\",\n    \"obj_pin\",\n",
            )
            .replace(
                "paths = [\"/sys/fs/bpf\"]",
                &format!("paths = [\"{allowed}\"]"),
            ),
    );
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);
    let eloop = format!("errno {}", libc::ELOOP);

    let out = probe_as(&h, h.key(), &["pin-new-map", &format!("{link}/pinned")]);
    say(&out.describe());
    assert_eq!(
        result_of(&out.stdout_text(), "pin"),
        eloop,
        "{}",
        out.describe()
    );
    assert!(
        !Path::new(&format!("{other}/pinned")).exists(),
        "the key pinned outside its bpffs paths through {link}"
    );
    let out = probe_as(&h, h.key(), &["obj-get", &format!("{link}/root")]);
    say(&out.describe());
    assert_eq!(
        result_of(&out.stdout_text(), "get"),
        eloop,
        "{}",
        out.describe()
    );

    // The plain paths work as before.
    let out = probe_as(&h, h.key(), &["pin-new-map", &format!("{allowed}/mine")]);
    assert!(
        result_of(&out.stdout_text(), "pin").starts_with("ok"),
        "{}",
        out.describe()
    );
    assert!(Path::new(&format!("{allowed}/mine")).exists());
    let out = probe_as(&h, h.key(), &["obj-get", &format!("{allowed}/mine")]);
    assert!(
        result_of(&out.stdout_text(), "get").starts_with("ok"),
        "{}",
        out.describe()
    );
    drop(pins);
    h.finish();
}

#[test]
fn kernel_memory_reads_follow_the_policy() {
    let Some(mut h) = Harness::start_without_proxy("policy_kernel_memory") else {
        return;
    };
    // The built-in name works as well as the shipped file.
    h.start_proxy_with(&["--policy".into(), "read-only".into()]);
    for mode in ["per-pointer", "bulk-page", "bulk-data"] {
        let out = h.telebpf_nobody(&["ids", "ps", "--mode", mode, "--json"]);
        assert!(!out.success(), "{mode}: {}", out.describe());
        assert!(
            out.stderr_text()
                .contains("policy 'read-only': kernel_memory_read is false)"),
            "{mode}: {}",
            out.describe()
        );
    }
    assert!(h.proxy_log().contains("kernel_memory_read is false"));
    h.stop_proxy_checked();
    let audit = start_audited(&mut h, profile("tracing"));
    let out = h.telebpf_nobody(&["ids", "ps", "--mode", "bulk-data", "--json"]);
    out.expect_success();
    let v: Value = serde_json::from_str(&out.stdout_text())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.describe()));
    assert!(v.to_string().contains("telebpf-proxy"), "{v}");
    h.telebpf_nobody(&["ids", "ps", "--mode", "per-pointer"])
        .expect_success();
    assert!(!h.proxy_log().contains("refuses"), "{}", h.proxy_log());

    // Reading the guest kernel's memory leaves a trace: a record per
    // collector run, and the per-pointer reads' totals at the session's end.
    let records = settled_audit(&audit);
    let runs = find(
        &records,
        "request",
        &[
            ("op", "collect".into()),
            ("detail", "ps data".into()),
            ("errno", 0.into()),
        ],
    );
    assert_eq!(runs.len(), 1, "{records:#?}");
    assert!(
        runs[0]["ret"].as_u64().unwrap_or(0) > 10,
        "objects visited: {}",
        runs[0]
    );
    let reads: Vec<u64> = find(&records, "session_closed", &[])
        .iter()
        .map(|r| r["kernel_reads"].as_u64().expect("kernel_reads"))
        .collect();
    assert!(
        reads.iter().any(|&n| n > 100) && reads.contains(&0),
        "the per-pointer walk's reads: {reads:?}"
    );
    h.finish();
}

// ---------------------------------------------------------------------
// Attach types, untranslated fds, helpers and ownership (issue 12, §3-4).
// The host side is `object-probe` (tests/src/bin/object-probe.rs): raw
// bpf() and perf_event_open calls through the preload, as nobody.
// ---------------------------------------------------------------------

/// `object-probe`, copied into the test's directory once (a running copy
/// cannot be overwritten).
fn probe_program(h: &Harness) -> PathBuf {
    let copy = h.dir().join("object-probe");
    if copy.exists() {
        return copy;
    }
    h.copy_in(&telebpf_tests::product_file("object-probe"))
}

/// `object-probe ARGS` as nobody through `telebpf exec` with `key`.
fn probe_as(h: &Harness, key: &Path, args: &[&str]) -> CmdOutput {
    let program = probe_program(h);
    let mut exec: Vec<String> = vec![
        "exec".into(),
        "--target".into(),
        h.target(),
        "--key-file".into(),
        h.nobody_key(key).display().to_string(),
        "--".into(),
        program.display().to_string(),
    ];
    exec.extend(args.iter().map(|a| a.to_string()));
    telebpf_tests::run_with_timeout(
        h.nobody_command(h.telebpf(), &exec),
        &format!("[nobody] object-probe {}", args.join(" ")),
        telebpf_tests::COMMAND_TIMEOUT,
    )
}

/// `object-probe ARGS` started as nobody with `key`, left running (its
/// `hold-*` modes); waits for `holding: ok`.
fn hold_as(h: &Harness, key: &Path, args: &[&str]) -> telebpf_tests::ExecTool {
    let program = probe_program(h);
    let mut tool = h.start_exec_tool(&h.target(), key, &program, args);
    tool.wait_for("holding: ok", Duration::from_secs(60))
        .unwrap();
    tool
}

/// The value of `name: ok V` in a probe's output (`None` for an errno or
/// a missing line).
fn ok_value(out: &str, name: &str) -> Option<u32> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ok ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The result word of `name: …` (`ok …` or `errno E`).
fn result_of(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("(missing)")
        .to_string()
}

/// BTF id of function `name` in this kernel's BTF.
fn kernel_func_id(name: &str) -> Option<u32> {
    let btf = telebpf_abi::btf::Btf::parse(fs::read("/sys/kernel/btf/vmlinux").ok()?).ok()?;
    (1..=btf.type_count() as u32).find(|&id| btf.func_name(id, None) == Some(name))
}

/// A policy file with two keys, `tool` (full) and `tracer` (`tracer_policy`).
fn tool_and_tracer(h: &Harness, tracer_policy: &str) -> (PathBuf, PathBuf, PathBuf) {
    let tool = h.new_key("tool.key");
    let tracer = h.new_key("tracer.key");
    let policy = write(
        h,
        "keys.toml",
        &format!(
            "name = \"nothing\"\n\n\
             [[key]]\nfile = \"tool.key\"\nname = \"tool\"\npolicy = \"full\"\n\n\
             [[key]]\nfile = \"tracer.key\"\nname = \"tracer\"\npolicy = \"{tracer_policy}\"\n"
        ),
    );
    (tool, tracer, policy)
}

/// The tracing profile, but allowed to act on other keys' objects, so
/// that the type checks (not ownership) decide.
fn tracing_with_foreign_objects(h: &Harness) -> String {
    let text = fs::read_to_string(profile("tracing"))
        .expect("tracing profile")
        .replace("name = \"tracing\"", "name = \"tracing-foreign\"")
        .replace(
            "change_foreign_objects = false",
            "change_foreign_objects = true",
        );
    write(h, "tracing-foreign.toml", &text)
        .display()
        .to_string()
}

#[test]
fn attach_types_are_checked_at_load_and_rechecked_at_every_attach() {
    let Some(mut h) = Harness::start_without_proxy("policy_attach_types") else {
        return;
    };
    // Step 1: the shipped tracing profile refuses an fmod_ret program at
    // load, before the kernel sees it.
    let (_tool, tracer, policy) = tool_and_tracer(&h, &profile("tracing"));
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);
    let target_fn = kernel_func_id("bpf_modify_return_test").expect("bpf_modify_return_test");
    let out = probe_as(&h, &tracer, &["load-fmod-ret", &target_fn.to_string()]);
    say(&out.describe());
    assert_eq!(result_of(&out.stdout_text(), "fmod_ret.load"), "errno 1");
    assert_eq!(
        count(
            &out,
            "refuses BPF_PROG_LOAD of prog type tracing with expected attach type modify_return \
             (key 'tracer', policy 'tracing': 'modify_return' is not in attach_types)"
        ),
        1,
        "{}",
        out.describe()
    );
    h.stop_proxy_checked();

    // Step 2: programs loaded by another key and opened by id are checked
    // as what the kernel says they are (the tracer may touch others'
    // objects here, so that only the type checks decide).
    let (tool, tracer, policy) = tool_and_tracer(&h, &tracing_with_foreign_objects(&h));
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);

    // A raw tracepoint *writable* program (not in tracing's prog_types),
    // opened by id and attached by name.
    let writable = hold_as(&h, &tool, &["hold-writable", "120"]);
    let id = ok_value(&writable.output(), "writable.prog_id").expect("writable prog id");
    let out = probe_as(
        &h,
        &tracer,
        &["raw-tp-open-id", &id.to_string(), "bpf_test_finish"],
    );
    say(&out.describe());
    assert!(ok_value(&out.stdout_text(), "open_by_id").is_some());
    assert_eq!(result_of(&out.stdout_text(), "raw_tp_open"), "errno 1");
    assert_eq!(
        count(
            &out,
            "refuses BPF_RAW_TRACEPOINT_OPEN of prog type raw_tracepoint_writable (key 'tracer', \
             policy 'tracing-foreign': 'raw_tracepoint_writable' is not in prog_types)"
        ),
        1,
        "{}",
        out.describe()
    );
    let links = h.local(&["link", "list", "--json"]).json();
    assert!(
        !links
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["prog_id"].as_u64() == Some(u64::from(id))),
        "the writable program was attached: {links}"
    );
    drop(writable);

    // An XDP link of the tool's, updated by the tracer to another XDP
    // program (a banned type, on a link of a banned attach type).
    let xdp = hold_as(&h, &tool, &["hold-xdp-link", "120"]);
    let text = xdp.output();
    let (Some(link), Some(prog2)) = (
        ok_value(&text, "xdp.link_id"),
        ok_value(&text, "xdp.prog2_id"),
    ) else {
        panic!("no XDP link on lo:\n{text}");
    };
    let out = probe_as(
        &h,
        &tracer,
        &["link-update-id", &link.to_string(), &prog2.to_string()],
    );
    say(&out.describe());
    assert_eq!(result_of(&out.stdout_text(), "link_update"), "errno 1");
    assert_eq!(
        count(
            &out,
            "refuses BPF_LINK_UPDATE with attach type xdp (key 'tracer'"
        ),
        1,
        "{}",
        out.describe()
    );
    let shown = h
        .local(&["link", "show", "id", &link.to_string(), "--json"])
        .json();
    assert_ne!(
        shown["prog_id"].as_u64(),
        Some(u64::from(prog2)),
        "the link now runs the tracer's choice: {shown}"
    );
    drop(xdp);

    // An LSM program of the tool's, opened by id and attached without a
    // name, where this kernel loads LSM programs at all.
    let lsm_hook = kernel_func_id("bpf_lsm_file_open").unwrap_or(0);
    let lsm = hold_as(&h, &tool, &["hold-lsm", &lsm_hook.to_string(), "120"]);
    match ok_value(&lsm.output(), "lsm.prog_id") {
        Some(id) => {
            let out = probe_as(&h, &tracer, &["raw-tp-open-id", &id.to_string()]);
            assert_eq!(result_of(&out.stdout_text(), "raw_tp_open"), "errno 1");
            assert_eq!(
                count(&out, "'lsm' is not in prog_types"),
                1,
                "{}",
                out.describe()
            );
        }
        None => say(&format!(
            "SKIP LSM part: this kernel refuses to load an LSM program ({}); \
             the writable raw tracepoint above takes the same path",
            result_of(&lsm.output(), "lsm.load")
        )),
    }
    drop(lsm);
    h.finish();
}

/// The proxy's fd numbers that are sockets (its listening socket, the
/// sessions' connections).
fn proxy_socket_fds(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proxy fds")
        .filter_map(Result::ok)
        .filter(|e| {
            fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

#[test]
fn storage_keys_and_cgroup_pids_never_reach_the_proxys_own_fds() {
    let Some(mut h) = Harness::start_without_proxy("policy_untranslated_fds") else {
        return;
    };
    // The proxy inherits a cgroup directory at fd 77, as a service may
    // inherit fds from whatever started it.
    const CGROUP_FD: i32 = 77;
    let cgroup = c"/sys/fs/cgroup/unified";
    // SAFETY: open/dup2/close of our own fds; no memory involved.
    let inherited = unsafe {
        let fd = libc::open(cgroup.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        let ok = fd >= 0 && libc::dup2(fd, CGROUP_FD) == CGROUP_FD;
        if fd >= 0 {
            libc::close(fd);
        }
        ok
    };
    h.start_proxy();
    if inherited {
        // SAFETY: closing our copy; the proxy keeps its own.
        unsafe { libc::close(CGROUP_FD) };
    }
    let sockets = proxy_socket_fds(h.proxy_pid());
    assert!(!sockets.is_empty(), "the proxy has no socket fd?");
    say(&format!("proxy socket fds: {sockets:?}"));

    // A socket storage map whose key names one of the proxy's sockets.
    for fd in &sockets {
        let out = probe_as(&h, h.key(), &["sk-storage-key", &fd.to_string()]);
        say(&out.describe());
        assert!(
            ok_value(&out.stdout_text(), "sk_storage").is_some(),
            "{}",
            out.describe()
        );
        let r = result_of(&out.stdout_text(), "sk_storage.update");
        assert!(
            r.starts_with("errno"),
            "storage attached to the proxy's socket fd {fd}: {}",
            out.describe()
        );
    }

    // A cgroup perf event whose cgroup fd is the proxy's inherited one.
    if inherited {
        let out = probe_as(&h, h.key(), &["perf-cgroup", &CGROUP_FD.to_string()]);
        say(&out.describe());
        let r = result_of(&out.stdout_text(), "perf_cgroup");
        assert!(
            r.starts_with("errno"),
            "perf_event_open used the proxy's fd {CGROUP_FD}: {}",
            out.describe()
        );
    } else {
        say("SKIP cgroup part: /sys/fs/cgroup/unified cannot be opened here");
    }
    h.finish();
}

/// The quoted entries of `[section] deny = [...]` in a policy file.
fn deny_list(policy: &str, section: &str) -> Vec<String> {
    let text = fs::read_to_string(policy).expect("policy file");
    let start = text
        .find(&format!("\n[{section}]\n"))
        .unwrap_or_else(|| panic!("no [{section}] in {policy}"));
    let rest = &text[start..];
    let deny = &rest[rest.find("deny = [").expect("deny list")..];
    let deny = &deny[..deny.find("\n]").expect("end of the deny list")];
    deny.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix('"')?;
            Some(l[..l.find('"')?].to_string())
        })
        .collect()
}

#[test]
fn every_denied_helper_and_kfunc_is_refused_by_name() {
    let Some(mut h) = Harness::start_without_proxy("policy_denied_helpers") else {
        return;
    };
    let btf = telebpf_abi::btf::Btf::parse(fs::read("/sys/kernel/btf/vmlinux").expect("BTF"))
        .expect("kernel BTF");
    let funcs: Vec<(u32, String)> = (1..=btf.type_count() as u32)
        .filter_map(|id| Some((id, btf.func_name(id, None)?.to_string())))
        .collect();
    let attach = kernel_func_id("bpf_fentry_test1").unwrap_or(1);
    for name in ["tracing", "observe"] {
        let file = profile(name);
        h.start_proxy_with(&["--policy".into(), file.clone()]);
        let helpers = deny_list(&file, "helpers");
        let ids: Vec<u32> = helpers
            .iter()
            .map(|n| {
                telebpf_abi::helper::by_name(n).unwrap_or_else(|| panic!("unknown helper {n}"))
            })
            .collect();
        // A control: bpf_ktime_get_ns (5) is allowed.
        let mut args: Vec<String> = vec!["call-helpers".into(), "5".into()];
        args.extend(ids.iter().map(u32::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = probe_as(&h, h.key(), &args);
        let text = out.stdout_text();
        assert!(
            ok_value(&text, "helper 5").is_some(),
            "{name}: a program calling bpf_ktime_get_ns was refused: {}",
            out.describe()
        );
        for (n, id) in helpers.iter().zip(&ids) {
            assert_eq!(result_of(&text, &format!("helper {id}")), "errno 1", "{n}");
            let line = format!(
                "refuses BPF_PROG_LOAD of a program calling bpf_{n} (key '{}', policy '{name}': \
                 '{n}' is in helpers.deny)",
                h.key().display()
            );
            assert_eq!(count(&out, &line), 1, "{name}: {line}\n{}", out.describe());
        }
        say(&format!(
            "{name}: {} denied helpers refused by name",
            ids.len()
        ));

        // Every denied kfunc this kernel has (exact names and families).
        let denied: Vec<&(u32, String)> = deny_list(&file, "kfuncs")
            .iter()
            .flat_map(|entry| {
                let entry = entry.clone();
                funcs
                    .iter()
                    .filter(move |(_, f)| match entry.strip_suffix('*') {
                        Some(prefix) => f.starts_with(prefix),
                        None => *f == entry,
                    })
            })
            .collect();
        assert!(!denied.is_empty(), "no denied kfunc in this kernel's BTF");
        let mut args: Vec<String> = vec!["call-kfuncs".into(), attach.to_string()];
        args.extend(denied.iter().map(|(id, _)| id.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = probe_as(&h, h.key(), &args);
        for (id, f) in &denied {
            assert_eq!(
                result_of(&out.stdout_text(), &format!("kfunc {id}")),
                "errno 1",
                "{f}"
            );
            assert_eq!(
                count(&out, &format!("a program calling kfunc {f} (key '")),
                1,
                "{name}: kfunc {f}\n{}",
                out.describe()
            );
        }
        say(&format!(
            "{name}: {} denied kfuncs of this kernel refused by name",
            denied.len()
        ));
        h.stop_proxy_checked();
    }
    h.finish();
}

#[test]
fn a_key_changes_only_its_own_objects() {
    let Some(mut h) = Harness::start_without_proxy("policy_own_objects") else {
        return;
    };
    let a = h.new_key("a.key");
    let b = h.new_key("b.key");
    let policy = write(
        &h,
        "keys.toml",
        &format!(
            "name = \"nothing\"\n\n\
             [[key]]\nfile = \"a.key\"\nname = \"a\"\npolicy = \"{0}\"\n\n\
             [[key]]\nfile = \"b.key\"\nname = \"b\"\npolicy = \"{0}\"\n",
            profile("tracing")
        ),
    );
    let audit = start_audited(&mut h, policy.display().to_string());

    // Key a's map and link, and the guest's own (root, no telebpf).
    let held = hold_as(&h, &a, &["hold-map-and-link", "120"]);
    let text = held.output();
    let (Some(map), Some(link)) = (ok_value(&text, "map_id"), ok_value(&text, "link_id")) else {
        panic!("key a made no map and link:\n{text}");
    };
    let mut guest = Command::new(telebpf_tests::product_file("object-probe"))
        .args(["hold-map-and-link", "120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("guest probe");
    let guest_text = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(guest.stdout.take().expect("stdout")).lines();
        let mut text = String::new();
        for l in lines.by_ref().map_while(Result::ok) {
            text.push_str(&l);
            text.push('\n');
            if l.starts_with("holding") {
                break;
            }
        }
        text
    };
    let guest_map = ok_value(&guest_text, "map_id").expect("the guest's map");

    // Key a, in another session: its own map, as any of its tools.
    let own = probe_as(&h, &a, &["touch-map-id", &map.to_string()]);
    say(&own.describe());
    assert!(
        ok_value(&own.stdout_text(), "update").is_some(),
        "{}",
        own.describe()
    );
    assert!(
        ok_value(&own.stdout_text(), "delete").is_some(),
        "{}",
        own.describe()
    );

    // Key b: a's map, a's link, the guest's map. Each opens (listings are
    // for reading) and is refused when it would change something.
    let other = probe_as(&h, &b, &["touch-map-id", &map.to_string()]);
    say(&other.describe());
    assert!(ok_value(&other.stdout_text(), "open_map").is_some());
    assert_eq!(result_of(&other.stdout_text(), "update"), "errno 1");
    assert_eq!(result_of(&other.stdout_text(), "delete"), "errno 1");
    assert_eq!(
        count(
            &other,
            &format!(
                "refuses BPF_MAP_UPDATE_ELEM on map {map}, which key 'b' did not create \
                 (key 'b', policy 'tracing': change_foreign_objects is false)"
            )
        ),
        1,
        "{}",
        other.describe()
    );
    let detach = probe_as(&h, &b, &["detach-link-id", &link.to_string()]);
    say(&detach.describe());
    assert_eq!(result_of(&detach.stdout_text(), "link_detach"), "errno 1");
    let shown = h.local(&["link", "show", "id", &link.to_string(), "--json"]);
    shown.expect_success();
    assert!(
        !shown.stdout_text().contains("\"detached\""),
        "a's link was detached by b: {}",
        shown.stdout_text()
    );
    for key in [&a, &b] {
        let out = probe_as(&h, key, &["touch-map-id", &guest_map.to_string()]);
        assert_eq!(
            result_of(&out.stdout_text(), "update"),
            "errno 1",
            "{}",
            out.describe()
        );
        assert_eq!(
            result_of(&out.stdout_text(), "delete"),
            "errno 1",
            "{}",
            out.describe()
        );
    }
    // The guest's value is untouched.
    let dumped = h.local(&["map", "dump", "id", &guest_map.to_string(), "--json"]);
    assert!(
        dumped.stdout_text().contains("\"0xba\""),
        "the guest's value 0x0ddba11 changed: {}",
        dumped.describe()
    );
    let _ = guest.kill();
    let _ = guest.wait();
    drop(held);
    let records = settled_audit(&audit);
    assert!(
        !find(&records, "refused", &[("key", "b".into())]).is_empty(),
        "{records:#?}"
    );
    h.finish();
}

#[test]
fn observe_is_enough_for_the_libbpf_tools_and_bpftrace() {
    let Some(mut h) = Harness::start_without_proxy("policy_observe_tools") else {
        return;
    };
    let audit = start_audited(&mut h, profile("observe"));
    let ready = Duration::from_secs(60);
    let event = Duration::from_secs(15);
    let stop = Duration::from_secs(20);

    if let Some(mut tool) = h.start_tool("execsnoop", &[]) {
        tool.wait_for("PCOMM", ready).unwrap();
        tool.wait_for_event(event, || {
            let mark = unique_name("tbobserve");
            assert!(Command::new("/bin/true")
                .arg(&mark)
                .status()
                .unwrap()
                .success());
            mark
        })
        .unwrap();
        let out = tool.stop(libc::SIGINT, stop);
        assert!(!out.contains(REFUSAL), "{out}");
    }
    if let Some(mut tool) = h.start_tool("opensnoop", &[]) {
        tool.wait_for("PATH", ready).unwrap();
        tool.wait_for_event(event, || {
            let path = h.dir().join(unique_name("tbobserve"));
            fs::write(&path, b"x").unwrap();
            path.display().to_string()
        })
        .unwrap();
        let out = tool.stop(libc::SIGINT, stop);
        assert!(!out.contains(REFUSAL), "{out}");
    }
    {
        let mut sleeper = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done",
            ])
            .spawn()
            .unwrap();
        let pid = sleeper.id().to_string();
        if let Some(mut tool) = h.start_tool("runqlat", &["-p", &pid]) {
            tool.wait_for("Tracing", ready).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            let out = tool.stop(libc::SIGINT, stop);
            assert!(
                telebpf_tests::histogram_total(&out) > 0,
                "runqlat saw nothing:\n{out}"
            );
            assert!(!out.contains(REFUSAL), "{out}");
        }
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    if let Some(mut tool) = h.start_tool("biolatency", &[]) {
        tool.wait_for("Tracing", ready).unwrap();
        let file = h.dir().join("bio.dat");
        let of = format!("of={}", file.display());
        let direct = Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=1M", "count=8", "oflag=direct,sync"])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        if !direct.success() {
            Command::new("dd")
                .args(["if=/dev/zero", &of, "bs=1M", "count=8", "conv=fsync"])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
        }
        Command::new("sync").status().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let out = tool.stop(libc::SIGINT, stop);
        assert!(
            telebpf_tests::histogram_total(&out) > 0,
            "biolatency saw no I/O:\n{out}"
        );
        assert!(!out.contains(REFUSAL), "{out}");
    }

    // bpftrace refuses to run unless its euid is 0: run it as root with
    // every capability dropped, so that bpf() is impossible locally (the
    // self-check below) and any success comes through the proxy. Root
    // without CAP_DAC_OVERRIDE reads only its own files: a key copy of its
    // own.
    if let Some(bpftrace) = find_program("bpftrace") {
        let key = h.dir().join("root.key");
        fs::copy(h.key(), &key).unwrap();
        std::os::unix::fs::chown(&key, Some(0), Some(0)).unwrap();
        let setpriv = find_program("setpriv").expect("setpriv");
        // bpftrace's strings hold 63 bytes: the marked program's path is
        // short (the test's own directory can be longer than that). Its
        // name (under 16 bytes, a comm's size) keys the map: counting every
        // comm of a busy machine made a map whose dump at exit outlasted
        // the stop timeout under load.
        let mark = PathBuf::from("/tmp").join(unique_name("tbbt"));
        let comm = mark.file_name().unwrap().to_string_lossy().into_owned();
        assert!(comm.len() < 16, "{comm} is longer than a comm");
        let script = format!(
            "tracepoint:sched:sched_process_exec {{ printf(\"EXEC %s\\n\", \
             str(args->filename)); }} tracepoint:raw_syscalls:sys_enter \
             /comm == \"{comm}\"/ {{ @calls[comm] = count(); }}"
        );
        let no_caps = ["--inh-caps=-all", "--bounding-set=-all", "--"];
        let local = telebpf_tests::run_with_timeout(
            {
                let mut c = Command::new(&setpriv);
                c.args(no_caps)
                    .arg(&bpftrace)
                    .args(["-e", "BEGIN { exit(); }"]);
                c
            },
            "[root, no capabilities] bpftrace locally",
            Duration::from_secs(60),
        );
        assert!(
            !local.success(),
            "bpftrace without capabilities worked locally: the check proves nothing\n{}",
            local.describe()
        );
        let out_path = h.dir().join("bpftrace.out");
        let out_file = fs::File::create(&out_path).unwrap();
        let mut child = Command::new(find_program("stdbuf").expect("stdbuf"))
            .arg("-oL")
            .arg(&setpriv)
            .args(no_caps)
            .arg(h.telebpf())
            .args(["exec", "--target", &h.target(), "--key-file"])
            .arg(&key)
            .arg("--")
            .arg(&bpftrace)
            .args(["-e", &script])
            .env_clear()
            .env("PATH", telebpf_tests::PATH_ENV)
            .env("HOME", "/tmp")
            .current_dir(h.dir())
            .stdout(out_file.try_clone().unwrap())
            .stderr(out_file)
            .spawn()
            .expect("bpftrace");
        let read = || fs::read_to_string(&out_path).unwrap_or_default();
        let deadline = Instant::now() + ready;
        while !read().contains("Attaching") {
            assert!(
                Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "bpftrace did not attach:\n{}",
                read()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fs::copy("/bin/true", &mark).unwrap();
        struct Remove<'a>(&'a Path);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = fs::remove_file(self.0);
            }
        }
        let _remove = Remove(&mark);
        let deadline = Instant::now() + event;
        while !read().contains(&mark.display().to_string()) {
            Command::new(&mark).status().unwrap();
            assert!(
                Instant::now() < deadline,
                "bpftrace missed {}:\n{}",
                mark.display(),
                read()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        telebpf_tests::stop_child(&mut child, libc::SIGINT, stop);
        let out = read();
        assert!(
            out.contains(&format!("@calls[{comm}]")),
            "no map printed at exit:\n{out}"
        );
        assert!(!out.contains(REFUSAL), "{out}");
    } else {
        say("SKIP bpftrace: not installed (apt-get install bpftrace)");
    }

    assert!(
        !h.proxy_log().contains("refuses"),
        "the observe profile refused something a tool asked:\n{}",
        h.proxy_log()
    );
    let records = settled_audit(&audit);
    assert!(find(&records, "refused", &[]).is_empty(), "{records:#?}");
    h.finish();
}

/// The `answer:` line of an `attack-client file-op` run.
fn answer(out: &CmdOutput) -> String {
    out.expect_success();
    out.stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix("answer: "))
        .unwrap_or_else(|| panic!("no answer: {}", out.describe()))
        .to_string()
}

/// The `text:` line (a read's content) of an `attack-client file-op` run.
fn answer_text(out: &CmdOutput) -> String {
    out.stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix("text: "))
        .unwrap_or_default()
        .to_string()
}

/// A policy file of one rule set, with further keys under their own
/// policy files: `(key file name, key name, policy file name)`.
fn keys_file(h: &Harness, keys: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = "name = \"nothing\"\n".to_string();
    for (file, name, policy) in keys {
        text.push_str(&format!(
            "\n[[key]]\nfile = \"{file}\"\nname = \"{name}\"\npolicy = \"{policy}\"\n"
        ));
    }
    write(h, "keys.toml", &text)
}

/// Every file operation in bpffs obeys the key's `[bpffs] paths`: a key
/// confined elsewhere cannot read a pinned map's file (its entries), run a
/// pinned iterator by reading its file (as root in the guest), or stat,
/// access or readlink there — neither at the protocol level nor through a
/// tool under the preload (`find` makes a forwarded `lstat`; an `open` of
/// a bpffs path is not forwarded, the preload leaves it to the host's own
/// bpffs); a statfs there answers for the bpffs mount, not for the path.
/// A key allowed there still needs `map_lookup_elem` to read a map's file
/// and `iter_create` (with attach type `trace_iter`) to read an
/// iterator's.
#[test]
fn bpffs_files_follow_the_policy_paths_and_commands() {
    let Some(mut h) = Harness::start_without_proxy("policy_bpffs_files") else {
        return;
    };
    let pins = PinDir::new("bpffs_files");
    let secret = pins.subdir("secret");
    let mine = pins.subdir("mine");
    // Root pins a program with its maps, and an iterator, in `secret`.
    h.local(&[
        "prog",
        "loadall",
        &h.object("forward_test"),
        &format!("{secret}/prog"),
        "pinmaps",
        &format!("{secret}/maps"),
    ])
    .expect_success();
    let map = format!("{secret}/maps/{}", forward_test::HASH_MAP);
    h.local(&[
        "map", "update", "pinned", &map, "key", "7", "0", "0", "0", "value", "42", "0", "0", "0",
        "0", "0", "0", "0",
    ])
    .expect_success();
    let iter = format!("{secret}/iter");
    h.local(&["iter", "pin", &h.object("iter_test"), &iter])
        .expect_success();

    let rules = |paths: &str, commands: &str| {
        format!(
            "commands = [{commands}]\nattach_types = [\"trace_iter\"]\n\n\
             [bpffs]\npaths = [\"{paths}\"]\n"
        )
    };
    let readers = "\"map_lookup_elem\", \"iter_create\", \"obj_get\"";
    write(&h, "confined.toml", &rules(&mine, readers));
    write(&h, "nolookup.toml", &rules(&secret, "\"obj_get\""));
    write(&h, "reader.toml", &rules(&secret, readers));
    // Root's iterator is another's link: running it (as BPF_ITER_CREATE on
    // it would) needs change_foreign_objects.
    write(
        &h,
        "runner.toml",
        &format!("change_foreign_objects = true\n{}", rules(&secret, readers)),
    );
    let confined = h.new_key("confined.key");
    let nolookup = h.new_key("nolookup.key");
    let reader = h.new_key("reader.key");
    let runner = h.new_key("runner.key");
    let policy = keys_file(
        &h,
        &[
            ("confined.key", "confined", "confined.toml"),
            ("nolookup.key", "nolookup", "nolookup.toml"),
            ("reader.key", "reader", "reader.toml"),
            ("runner.key", "runner", "runner.toml"),
        ],
    );
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);

    // A key confined to `mine`: nothing in `secret` answers.
    for (op, path) in [
        ("read", &map),
        ("read", &iter),
        ("stat", &map),
        ("lstat", &iter),
        ("access", &map),
        ("readlink", &iter),
        ("stat", &secret),
    ] {
        let got = answer(&h.attack(&confined, &["file-op", op, path]));
        say(&format!("confined key: {op} {path}: {got}"));
        assert!(
            got.starts_with("refused ") && got.contains("outside the allowed paths"),
            "{op} {path}: {got}"
        );
    }
    // A statfs there answers for the bpffs mount, not for the path.
    let got = answer(&h.attack(&confined, &["file-op", "statfs", &map]));
    assert_eq!(got, "ok statfs");
    // … and a tool under the preload gets EPERM with the refusal's line
    // (find's fstatat is forwarded; coreutils' stat uses statx, which the
    // preload does not interpose).
    let find = find_program("find").expect("findutils");
    let confined_tool = |program: &Path, args: &[&str]| {
        let mut argv = vec![
            "exec".to_string(),
            "--target".to_string(),
            h.target(),
            "--key-file".to_string(),
            h.nobody_key(&confined).display().to_string(),
            "--".to_string(),
            program.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let what = format!(
            "[nobody, confined] {} {}",
            program.display(),
            args.join(" ")
        );
        telebpf_tests::run_with_timeout(
            h.nobody_command(h.telebpf(), &argv),
            &what,
            telebpf_tests::COMMAND_TIMEOUT,
        )
    };
    let out = confined_tool(&find, &[&map, "-maxdepth", "0", "-printf", "%s %m\n"]);
    say(&out.describe());
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr_text().contains(REFUSAL)
            && out
                .stderr_text()
                .contains("stat in bpffs outside the allowed paths"),
        "{}",
        out.describe()
    );

    // Allowed there, but without map_lookup_elem and iter_create.
    let got = answer(&h.attack(&nolookup, &["file-op", "stat", &map]));
    assert_eq!(got, "ok stat", "the place itself is allowed");
    let got = answer(&h.attack(&nolookup, &["file-op", "read", &map]));
    say(&format!("nolookup key: read map: {got}"));
    assert!(
        got.starts_with("refused ") && got.contains("'map_lookup_elem' is not in commands"),
        "{got}"
    );
    let got = answer(&h.attack(&nolookup, &["file-op", "read", &iter]));
    say(&format!("nolookup key: read iterator: {got}"));
    assert!(
        got.starts_with("refused ") && got.contains("'iter_create' is not in commands"),
        "{got}"
    );

    // With both, the files answer as they would to root.
    let out = h.attack(&reader, &["file-op", "read", &map]);
    let got = answer(&out);
    assert!(got.starts_with("ok "), "{got}");
    let text = answer_text(&out);
    assert!(text.contains("42"), "the map's entry: {text}");
    // The iterator is root's link: reading its file would create an
    // iterator on it and run it, which a key that may not change others'
    // objects may not do (before: it ran).
    let got = answer(&h.attack(&reader, &["file-op", "read", &iter]));
    say(&format!("reader key: read root's iterator: {got}"));
    assert!(
        got.starts_with("refused reading the pinned iterator of link ")
            && got.contains("which key 'reader' did not create :: change_foreign_objects is false"),
        "{got}"
    );
    let got = answer(&h.attack(&runner, &["file-op", "read", &iter]));
    assert!(got.starts_with("ok "), "{got}");
    drop(pins);
    h.finish();
}

/// Outside a key's allowed paths every file operation answers the same
/// whether or not the path exists: `mkdir` no longer looks first (a key
/// learned that way whether any path on the guest exists). Through the
/// preload (`mkdir`, as a tool makes it) and at the protocol level, in
/// bpffs and elsewhere.
#[test]
fn outside_the_allowed_paths_existing_and_missing_paths_answer_alike() {
    let Some(mut h) = Harness::start_without_proxy("policy_existence_oracle") else {
        return;
    };
    let pins = PinDir::new("oracle");
    let allowed = pins.subdir("allowed");
    let existing = pins.subdir("existing");
    let missing = pins.join("missing");
    let policy = write(
        &h,
        "oracle.toml",
        &format!("name = \"oracle\"\ncommands = []\n\n[bpffs]\npaths = [\"{allowed}\"]\n"),
    );
    h.start_proxy_with(&["--policy".into(), policy.display().to_string()]);

    // The tool: coreutils' mkdir, whose mkdir() the preload forwards.
    let mkdir = find_program("mkdir").expect("coreutils");
    let tool = |path: &str| {
        let out = h.remote_program(&mkdir, &[path]);
        assert!(!out.success(), "{}", out.describe());
        out.stderr_text().replace(path, "<path>")
    };
    let (a, b) = (tool(&existing), tool(&missing));
    say(&format!("mkdir existing: {a:?}\nmkdir missing: {b:?}"));
    assert_eq!(a, b, "mkdir tells an existing directory from a missing one");
    assert!(a.contains("outside the allowed paths"), "{a}");

    // The protocol, every operation, in bpffs and outside it.
    let nowhere = format!("/{}", unique_name("tbnowhere"));
    let pairs = [
        (existing.as_str(), missing.as_str()),
        ("/etc", nowhere.as_str()),
        ("/proc/sys/kernel/cad_pid", "/proc/sys/kernel/tbnowhere"),
    ];
    for (there, absent) in pairs {
        for op in [
            "mkdir", "stat", "lstat", "statfs", "access", "readlink", "read", "digest",
        ] {
            let a = answer(&h.attack(h.key(), &["file-op", op, there]));
            let b = answer(&h.attack(h.key(), &["file-op", op, absent]));
            say(&format!("{op}: {there}: {a} / {absent}: {b}"));
            assert_eq!(a, b, "{op} tells {there} (exists) from {absent} (missing)");
        }
    }
    assert!(fs::read_dir(pins.path()).expect("dir").count() == 2);
    drop(pins);
    h.finish();
}

/// The BPF-related sysctls the tools read.
const BPF_SYSCTLS: &[&str] = &[
    "/proc/sys/kernel/unprivileged_bpf_disabled",
    "/proc/sys/kernel/pid_max",
    "/proc/sys/kernel/perf_event_max_stack",
    "/proc/sys/kernel/randomize_va_space",
    "/proc/sys/net/core/bpf_jit_enable",
    "/proc/sys/net/core/bpf_jit_harden",
    "/proc/sys/net/core/bpf_jit_kallsyms",
    "/proc/sys/net/core/bpf_jit_limit",
];

/// The proxy serves exactly the kernel-describing files of its allow-list:
/// root-only sysctls are refused while the BPF ones the tools read are
/// served; the event sources' `type` and `format/*` files are served
/// through their sysfs symlinks but nothing else there; and a symlink in
/// bpffs (world-writable here: any guest user can plant one) does not lead
/// the proxy, root, to a file it points to.
#[test]
fn kernel_files_are_exactly_the_allow_list() {
    let Some(h) = Harness::start("policy_allow_list") else {
        return;
    };
    let cat = find_program("cat").expect("coreutils");
    for path in [
        "/proc/sys/kernel/cad_pid",
        "/proc/sys/kernel/usermodehelper/bset",
    ] {
        let got = answer(&h.attack(h.key(), &["file-op", "read", path]));
        say(&format!("read {path}: {got}"));
        assert_eq!(got, format!("errno {}", libc::EACCES), "{path}");
        let out = h.remote_program(&cat, &[path]);
        assert!(!out.success(), "{}", out.describe());
    }
    for path in BPF_SYSCTLS {
        let local = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let out = h.remote_program(&cat, &[path]);
        out.expect_success();
        assert_eq!(out.stdout_text(), local, "{path}");
        assert!(
            h.proxy_log().contains(&format!("file {path} -> ok")),
            "{path} was not served by the proxy"
        );
    }
    // Event sources: libbpf's files, through /sys/bus/…/devices/<pmu> -> /sys/devices/<pmu>.
    for path in [
        "/sys/bus/event_source/devices/uprobe/type",
        "/sys/bus/event_source/devices/uprobe/format/retprobe",
    ] {
        let out = h.attack(h.key(), &["file-op", "read", path]);
        assert!(answer(&out).starts_with("ok "), "{}", out.describe());
        let local = fs::read_to_string(path)
            .expect("local")
            .replace('\n', "\\n");
        assert_eq!(answer_text(&out), local, "{path}");
    }
    for path in [
        "/sys/bus/event_source/devices/uprobe/uevent",
        "/sys/bus/event_source/devices/uprobe/subsystem/drivers_autoprobe",
        "/sys/bus/event_source/uevent",
    ] {
        let got = answer(&h.attack(h.key(), &["file-op", "read", path]));
        say(&format!("read {path}: {got}"));
        assert_eq!(got, format!("errno {}", libc::EACCES), "{path}");
    }

    // A guest user (nobody here) points a symlink in bpffs at a root-only file.
    let secret = h.dir().join("secret");
    let mark = unique_name("tbsecret");
    fs::write(&secret, &mark).expect("write secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let pins = PinDir::new("escape");
    let link = pins.join("escape");
    let ln = find_program("ln").expect("coreutils");
    let out = telebpf_tests::run_with_timeout(
        h.nobody_command(&ln, &["-s", &secret.display().to_string(), &link]),
        "[nobody] ln -s",
        telebpf_tests::COMMAND_TIMEOUT,
    );
    out.expect_success();
    for op in ["read", "stat", "access", "digest"] {
        let out = h.attack(h.key(), &["file-op", op, &link]);
        let got = answer(&out);
        say(&format!("{op} through the symlink: {got}"));
        assert!(!out.stdout_text().contains(&mark), "{}", out.describe());
        assert!(got.starts_with("errno "), "{op}: {got}");
    }
    assert_eq!(
        answer(&h.attack(h.key(), &["file-op", "lstat", &link])),
        "ok stat",
        "the link itself is a bpffs entry"
    );
    drop(pins);
    h.finish();
}

/// Key files that others may read (or that another user owns) are refused
/// at both ends with a one-line message naming the file and its mode, as
/// ssh refuses such private keys: the proxy does not start, and the host
/// side (`telebpf exec`, and the preload set up by environment only)
/// fails before it connects.
#[test]
fn key_files_others_may_read_are_refused_at_both_ends() {
    let Some(mut h) = Harness::start_without_proxy("policy_key_file_modes") else {
        return;
    };
    let proxy = |key: &Path| {
        let mut cmd = Command::new(telebpf_tests::product_file("telebpf-proxy"));
        cmd.arg("--listen")
            .arg(format!("unix:{}", h.dir().join("refused.sock").display()))
            .arg("--key-file")
            .arg(key);
        telebpf_tests::run_with_timeout(cmd, "telebpf-proxy", Duration::from_secs(10))
    };
    let key = h.key().to_path_buf();
    for mode in [0o640, 0o604, 0o644] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).expect("chmod");
        let out = proxy(&key);
        let err = out.stderr_text();
        say(&format!("proxy, key mode {mode:o}: {}", err.trim()));
        assert!(!out.success(), "{}", out.describe());
        assert!(
            err.contains(&key.display().to_string())
                && err.contains(&format!("mode 0{mode:o}"))
                && err.contains("others than its owner"),
            "{}",
            out.describe()
        );
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    // Owned by another user (who could rewrite it), even at 0600.
    let theirs = h.dir().join("theirs.key");
    fs::copy(&key, &theirs).expect("copy");
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let out = proxy(&theirs);
    say(&format!(
        "proxy, key of uid 65534: {}",
        out.stderr_text().trim()
    ));
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr_text().contains("owned by uid 65534"),
        "{}",
        out.describe()
    );

    // The host side: nobody's own copy, readable by its group.
    h.start_proxy();
    let mine = h.nobody_key(&key);
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o640)).expect("chmod");
    for out in [
        h.remote(&["prog", "list"]),
        h.remote_env_form(
            &h.target(),
            &key,
            &["prog", "list"],
            telebpf_tests::COMMAND_TIMEOUT,
        ),
    ] {
        say(&format!(
            "host side, key mode 640: {}",
            out.stderr_text().trim()
        ));
        assert!(!out.success(), "{}", out.describe());
        let err = out.stderr_text();
        assert!(
            err.contains(&mine.display().to_string())
                && err.contains("mode 0640")
                && err.contains("others than its owner"),
            "{}",
            out.describe()
        );
    }
    assert!(
        !h.proxy_log().contains("opened (key"),
        "no session was opened with it"
    );
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o600)).expect("chmod");
    h.remote(&["prog", "list"]).expect_success();
    h.finish();
}

/// A local process (root, not through the proxy) writing its output to a
/// file of the test's directory; killed when dropped.
struct Local {
    child: std::process::Child,
    out: PathBuf,
}

impl Local {
    fn start(h: &Harness, name: &str, program: &Path, args: &[&str]) -> Local {
        let out = h.dir().join(format!("{name}.out"));
        let file = fs::File::create(&out).expect("output file");
        let child = Command::new(program)
            .args(args)
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Local { child, out }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Every distinct `V` of the `prefix: V` lines it printed so far.
    fn values(&self, prefix: &str) -> BTreeSet<String> {
        self.output()
            .lines()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    /// The hex value of `name: V` in its output, waiting up to 5 s for it.
    fn hex(&self, name: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.output().lines().find_map(|l| {
                let v = l.strip_prefix(&format!("{name}: "))?;
                u64::from_str_radix(v.trim(), 16).ok()
            });
            match found {
                Some(v) => return v,
                None if Instant::now() > deadline => panic!("no {name} in {}", self.output()),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Whether it is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The offset in its file of address `addr` of process `pid`, from the
/// process's mappings.
fn file_offset(pid: u32, addr: u64) -> u64 {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (start, end) = f.next()?.split_once('-')?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            (start <= addr && addr < end).then(|| addr - start + offset)
        })
        .unwrap_or_else(|| panic!("{addr:#x} is in no mapping of {pid}:\n{maps}"))
}

/// A perf event is no way around the helper rules. Under `observe`, whose
/// programs may neither signal nor write processes, a counter with
/// `sigtrap` on a guest process and a uprobe (perf's uprobe PMU, no
/// tracefs, or a uprobe_multi link) with a reference counter in a guest
/// binary are refused, and the processes are untouched; a `uprobe_events` definition with a
/// reference counter is refused under `tracing`. Before, the first killed
/// a root process with SIGTRAP, the second made the kernel increment a
/// variable in a root process's memory.
#[test]
fn perf_events_cannot_signal_or_write_a_process() {
    let Some(mut h) = Harness::start_without_proxy("policy_perf_events_change_nothing") else {
        return;
    };
    h.start_proxy_with(&["--policy".into(), profile("observe")]);
    let probe = probe_program(&h);
    // What went wrong, all of it (each part is an attack of its own).
    let mut wrong: Vec<String> = Vec::new();

    // A busy loop of root's, and a perf event on it that samples every
    // millisecond of its CPU time with sigtrap.
    let mut busy = Local::start(
        &h,
        "busy",
        Path::new("/bin/sh"),
        &["-c", "while :; do :; done"],
    );
    let out = probe_as(&h, h.key(), &["perf-sigtrap", &busy.child.id().to_string()]);
    say(&out.describe());
    if !busy.alive() {
        wrong.push(format!(
            "the observe key's perf event ended a root process ({:?})",
            busy.child.wait()
        ));
    }
    if result_of(&out.stdout_text(), "perf_sigtrap") != "errno 1"
        || count(
            &out,
            "refuses perf_event_open with sigtrap (a SIGTRAP to the counted task on every \
             overflow) (key",
        ) != 1
    {
        wrong.push(format!("sigtrap was not refused: {}", out.describe()));
    }
    drop(busy);

    // A root process with a counter of 5 in its data, and a uprobe on one
    // of its functions whose reference counter is that counter.
    let victim = Local::start(&h, "counter", &probe, &["count-forever", "60"]);
    let pid = victim.child.id();
    let counter = file_offset(pid, victim.hex("counter_at"));
    let tick = file_offset(pid, victim.hex("tick_at"));
    let path = probe.display().to_string();
    let out = probe_as(
        &h,
        h.key(),
        &[
            "uprobe-ref-ctr",
            &path,
            &format!("{tick:x}"),
            &format!("{counter:x}"),
            "1",
        ],
    );
    say(&out.describe());
    if result_of(&out.stdout_text(), "uprobe_ref_ctr") == format!("errno {}", libc::ENOENT) {
        say("SKIP uprobe part: this kernel has no uprobe PMU");
    } else {
        std::thread::sleep(Duration::from_millis(200));
        let seen = victim.values("counter: ");
        say(&format!("counter values seen: {seen:?}"));
        if seen != BTreeSet::from(["5".to_string()]) {
            wrong.push(format!(
                "the observe key's uprobe wrote into a root process: its counter, 5, was {seen:?}"
            ));
        }
        if result_of(&out.stdout_text(), "uprobe_ref_ctr") != "errno 1"
            || count(
                &out,
                "refuses perf_event_open of a uprobe with a reference counter",
            ) != 1
        {
            wrong.push(format!(
                "the reference counter was not refused: {}",
                out.describe()
            ));
        }
    }
    // The same counter through a uprobe_multi link (a kprobe program,
    // BPF_LINK_CREATE with ref_ctr_offsets).
    let out = probe_as(
        &h,
        h.key(),
        &[
            "uprobe-multi-ref-ctr",
            &path,
            &format!("{tick:x}"),
            &format!("{counter:x}"),
            "1",
        ],
    );
    say(&out.describe());
    std::thread::sleep(Duration::from_millis(200));
    let seen = victim.values("counter: ");
    if seen != BTreeSet::from(["5".to_string()]) {
        wrong.push(format!(
            "the observe key's uprobe_multi link wrote into a root process: its counter, 5, \
             was {seen:?}"
        ));
    }
    if result_of(&out.stdout_text(), "uprobe_multi_ref_ctr") != "errno 1"
        || count(
            &out,
            "refuses BPF_LINK_CREATE of a uprobe_multi link with reference counters",
        ) != 1
    {
        wrong.push(format!(
            "the uprobe_multi reference counter was not refused: {}",
            out.describe()
        ));
    }
    // Without a counter the link is a plain uprobe, as before.
    let out = probe_as(
        &h,
        h.key(),
        &[
            "uprobe-multi-ref-ctr",
            &path,
            &format!("{tick:x}"),
            "0",
            "0",
        ],
    );
    if !result_of(&out.stdout_text(), "uprobe_multi_ref_ctr").starts_with("ok") {
        wrong.push(format!(
            "a plain uprobe_multi link failed: {}",
            out.describe()
        ));
    }
    drop(victim);
    h.stop_proxy_checked();

    // The same through tracefs, where tracing may define probes.
    h.start_proxy_with(&["--policy".into(), profile("tracing")]);
    let out = probe_as(
        &h,
        h.key(),
        &[
            "append-uprobe-events",
            &format!("p:red/refctr {path}:0x10(0x20)"),
        ],
    );
    say(&out.describe());
    // (The preload appends at close and cannot report the guest's answer
    // to the write: the refusal line and tracefs tell.)
    let defined = || fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    if defined().contains("red/refctr")
        || count(
            &out,
            "refuses writing uprobe_events: a uprobe with a reference counter",
        ) != 1
    {
        wrong.push(format!(
            "a uprobe_events definition with a reference counter was not refused: {}\n{}",
            out.describe(),
            defined()
        ));
    }
    let _ = probe_as(&h, h.key(), &["append-uprobe-events", "-:red/refctr"]);
    // Without a counter (and with parentheses in a fetch argument) it is
    // a plain definition, as before.
    let plain = format!("p:red/plain {path}:0x10 +0(%di):u32");
    let out = probe_as(&h, h.key(), &["append-uprobe-events", &plain]);
    say(&out.describe());
    if !defined().contains("red/plain") {
        wrong.push(format!(
            "a plain uprobe definition failed: {}\n{}",
            out.describe(),
            defined()
        ));
    }
    let _ = probe_as(&h, h.key(), &["append-uprobe-events", "-:red/plain"]);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    h.finish();
}

/// An iterator over a map hands its program every value as writable
/// memory: under `tracing` a key may iterate only over its own maps. The
/// guest's map (root, no telebpf) cannot be iterated by the key (`EPERM`,
/// one refusal line) and keeps its value. Where this kernel refuses
/// iterator programs altogether (lockdown), the test says SKIP.
#[test]
fn iterators_cannot_write_another_keys_map() {
    let Some(mut h) = Harness::start_without_proxy("policy_iterators_own_maps") else {
        return;
    };
    h.start_proxy_with(&["--policy".into(), profile("tracing")]);
    let iter_fn = kernel_func_id("bpf_iter_bpf_map_elem").expect("bpf_iter_bpf_map_elem");
    let guest = Local::start(
        &h,
        "guest",
        &telebpf_tests::product_file("object-probe"),
        &["hold-map-and-link", "120"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let guest_map = loop {
        if let Some(id) = ok_value(&guest.output(), "map_id") {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no guest map: {}",
            guest.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = probe_as(
        &h,
        h.key(),
        &[
            "iter-write-map-id",
            &guest_map.to_string(),
            &iter_fn.to_string(),
        ],
    );
    say(&out.describe());
    let text = out.stdout_text();
    if result_of(&text, "iter_prog").starts_with("errno") {
        assert_eq!(count(&out, REFUSAL), 0, "{}", out.describe());
        say(&format!(
            "SKIP: this kernel refuses the iterator program ({})",
            result_of(&text, "iter_prog")
        ));
    } else {
        assert_eq!(
            result_of(&text, "iter_link"),
            "errno 1",
            "{}",
            out.describe()
        );
        assert_eq!(
            count(
                &out,
                &format!("refuses BPF_LINK_CREATE of an iterator over map {guest_map}, which key")
            ),
            1,
            "{}",
            out.describe()
        );
    }
    let dumped = h.local(&["map", "dump", "id", &guest_map.to_string(), "--json"]);
    assert!(
        dumped.stdout_text().contains("\"0xba\""),
        "the guest's value 0x0ddba11 changed: {}",
        dumped.describe()
    );
    drop(guest);
    h.finish();
}
