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
    let mark = unique_name("tbpolicy");
    let status = Command::new("/bin/true").arg(&mark).status().expect("exec");
    assert!(status.success());
    tool.wait_for(&mark, Duration::from_secs(15)).unwrap();
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
