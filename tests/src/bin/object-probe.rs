//! `object-probe MODE [ARGS]`: a host program that acts on guest objects
//! it did not create, or names fds and helpers a policy forbids, the way a
//! hostile key holder would with plain `bpf()` and `perf_event_open`
//! calls (through libc's `syscall`, as libbpf makes them). It prints
//! `key: value` lines (`ok`, `ok N` or `errno E`) for the policy tests
//! (`tests/tests/policy.rs`); the `hold-*` modes create objects, print
//! their ids and stay alive (killed by the test).

use std::io::Write;
use std::time::Duration;

use telebpf_abi::attach_type::*;
use telebpf_abi::cmd::*;
use telebpf_abi::map_type::*;
use telebpf_abi::prog_type::*;
use telebpf_tests::raw_bpf::{
    bpf, delete, errno, fd_by_id, insn, link_create, link_detach, link_update, map_create,
    object_id, prog_load, raw_tp_open, return_zero, update, Load,
};

/// Prints `key: ok [value]` or `key: errno E`, flushed at once.
fn say<T: std::fmt::Display>(key: &str, r: &Result<T, i32>) {
    let mut out = std::io::stdout().lock();
    let _ = match r {
        Ok(v) => writeln!(out, "{key}: ok {v}"),
        Err(e) => writeln!(out, "{key}: errno {e}"),
    };
    let _ = out.flush();
}

fn arg_u32(args: &[String], i: usize) -> u32 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn usage() -> ! {
    eprintln!("usage: object-probe MODE [ARGS] (see tests/src/bin/object-probe.rs)");
    std::process::exit(2)
}

/// Sleeps until killed (at most `secs`), keeping every object alive.
fn hold(secs: u32) {
    println!("holding: ok");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(u64::from(secs)));
}

/// Loads a program and prints its id (`prog_id`), or the errno (`load`).
fn load_and_show(name: &str, load: Load) -> Option<i32> {
    let fd = prog_load(load, &return_zero());
    say(&format!("{name}.load"), &fd);
    let fd = fd.ok()?;
    say(&format!("{name}.prog_id"), &object_id(fd));
    Some(fd)
}

/// An fmod_ret (`BPF_MODIFY_RETURN`) program on `bpf_modify_return_test`.
fn fmod_ret(btf_id: u32) -> Load {
    Load {
        prog_type: BPF_PROG_TYPE_TRACING,
        expected_attach_type: BPF_MODIFY_RETURN,
        attach_btf_id: btf_id,
    }
}

/// Opens program `id` and raw-tracepoint-opens it at tracepoint `name`,
/// or with no name: then the kernel attaches it as whatever it was loaded
/// for.
fn raw_tp_open_id(id: u32, name: Option<&String>) {
    let prog = fd_by_id(BPF_PROG_GET_FD_BY_ID, id);
    say("open_by_id", &prog);
    let name = name.map(|n| std::ffi::CString::new(n.as_str()).unwrap_or_default());
    if let Ok(prog) = prog {
        say("raw_tp_open", &raw_tp_open(name.as_deref(), prog));
    }
}

/// Two XDP programs, the first linked to `lo` (generic XDP: it passes
/// every packet); prints the link's and the second program's ids.
fn hold_xdp_link(secs: u32) {
    let xdp = Load {
        prog_type: BPF_PROG_TYPE_XDP,
        ..Load::default()
    };
    // r0 = XDP_PASS; exit
    let pass = [insn(0xb7, 0, 0, 0, 2), insn(0x95, 0, 0, 0, 0)];
    let first = prog_load(xdp, &pass);
    let second = prog_load(xdp, &pass);
    say("xdp.load", &first.and(second));
    let (Ok(first), Ok(second)) = (first, second) else {
        return;
    };
    say("xdp.prog2_id", &object_id(second));
    let link = link_create(first, 1, BPF_XDP);
    say("xdp.link", &link);
    if let Ok(link) = link {
        say("xdp.link_id", &object_id(link));
    }
    hold(secs);
}

/// `BPF_LINK_UPDATE` of link `link_id` to program `prog_id`, both opened
/// by id.
fn link_update_id(link_id: u32, prog_id: u32) {
    let link = fd_by_id(BPF_LINK_GET_FD_BY_ID, link_id);
    let prog = fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id);
    say("open_link", &link);
    say("open_prog", &prog);
    if let (Ok(link), Ok(prog)) = (link, prog) {
        say("link_update", &link_update(link, prog));
    }
}

/// A hash map with key 1 set, and a raw tracepoint program attached to
/// `sched_switch` (a link); prints their ids.
fn hold_map_and_link(secs: u32) {
    let map = map_create(BPF_MAP_TYPE_HASH, 4, 8, 16);
    say("map", &map);
    if let Ok(map) = map {
        say("map.update", &update(map, 1, 0x0ddba11));
        say("map_id", &object_id(map));
    }
    let raw = Load {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        ..Load::default()
    };
    if let Ok(prog) = prog_load(raw, &return_zero()) {
        let link = raw_tp_open(Some(c"sched_switch"), prog);
        say("link", &link);
        if let Ok(link) = link {
            say("link_id", &object_id(link));
        }
    }
    hold(secs);
}

/// Opens map `id`, updates key 1 and deletes it.
fn touch_map_id(id: u32) {
    let map = fd_by_id(BPF_MAP_GET_FD_BY_ID, id);
    say("open_map", &map);
    if let Ok(map) = map {
        say("update", &update(map, 1, 0xbad));
        say("delete", &delete(map, 1));
    }
}

/// Opens link `id` and detaches it.
fn detach_link_id(id: u32) {
    let link = fd_by_id(BPF_LINK_GET_FD_BY_ID, id);
    say("open_link", &link);
    if let Ok(link) = link {
        say("link_detach", &link_detach(link));
    }
}

/// BTF with one type, `int` (id 1), for local storage maps.
fn int_btf() -> Vec<u8> {
    let strings = b"\0int\0";
    let mut types = Vec::new();
    types.extend_from_slice(&1u32.to_le_bytes()); // name "int"
    types.extend_from_slice(&(1u32 << 24).to_le_bytes()); // BTF_KIND_INT
    types.extend_from_slice(&4u32.to_le_bytes()); // size
    types.extend_from_slice(&((1u32 << 24) | 32).to_le_bytes()); // signed, 32 bits
    let mut d = Vec::new();
    d.extend_from_slice(&0xeb9fu16.to_le_bytes());
    d.extend_from_slice(&[1, 0]);
    for v in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d.extend_from_slice(&types);
    d.extend_from_slice(strings);
    d
}

/// A socket storage map, updated with key `fd`: the key of a storage map
/// is an fd (here one the program does not own: a number that is one of
/// the proxy's sockets on its side).
fn sk_storage_key(fd: u32) {
    let btf = int_btf();
    let mut a = [0u8; 40];
    a[0..8].copy_from_slice(&(btf.as_ptr() as u64).to_le_bytes());
    a[16..20].copy_from_slice(&(btf.len() as u32).to_le_bytes());
    let btf_fd = bpf(BPF_BTF_LOAD, &mut a);
    say("btf", &btf_fd);
    let Ok(btf_fd) = btf_fd else { return };
    let mut m = [0u8; 72];
    m[0..4].copy_from_slice(&BPF_MAP_TYPE_SK_STORAGE.to_le_bytes());
    m[4..8].copy_from_slice(&4u32.to_le_bytes());
    m[8..12].copy_from_slice(&4u32.to_le_bytes());
    m[16..20].copy_from_slice(&1u32.to_le_bytes()); // BPF_F_NO_PREALLOC
    m[48..52].copy_from_slice(&(btf_fd as u32).to_le_bytes());
    m[52..56].copy_from_slice(&1u32.to_le_bytes());
    m[56..60].copy_from_slice(&1u32.to_le_bytes());
    let map = bpf(BPF_MAP_CREATE, &mut m);
    say("sk_storage", &map);
    if let Ok(map) = map {
        say("sk_storage.update", &update32(map as i32, fd, 0x5eed));
    }
}

/// Sets an int-keyed map's int value.
fn update32(map: i32, key: u32, value: u32) -> Result<i64, i32> {
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &mut telebpf_tests::raw_bpf::elem(
            map,
            &key as *const u32 as u64,
            &value as *const u32 as u64,
        ),
    )
}

/// `perf_event_open` of a CPU clock counting in the cgroup whose fd is
/// `fd` (`PERF_FLAG_PID_CGROUP`), on CPU 0.
fn perf_cgroup(fd: u32) {
    let mut attr = [0u8; 112];
    attr[0..4].copy_from_slice(&1u32.to_le_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&112u32.to_le_bytes());
    // config 0: PERF_COUNT_SW_CPU_CLOCK
    let flags = telebpf_abi::perf::FLAG_PID_CGROUP | 8; // | PERF_FLAG_FD_CLOEXEC
                                                        // SAFETY: a perf_event_attr of the size it declares; no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            fd as libc::c_long,
            0 as libc::c_long,
            -1 as libc::c_long,
            flags as libc::c_long,
        )
    };
    say("perf_cgroup", &if r < 0 { Err(errno()) } else { Ok(r) });
}

/// For each helper id: a tracepoint program that calls it (arguments
/// zero). Whether the verifier would accept it does not matter: a policy
/// refuses the call before the kernel sees it.
fn call_helpers(ids: &[u32]) {
    for &id in ids {
        let mut insns: Vec<[u8; 8]> = (1..=5).map(|r| insn(0xb7, r, 0, 0, 0)).collect();
        insns.push(insn(0x85, 0, 0, 0, id as i32));
        insns.extend(return_zero());
        let load = Load {
            prog_type: BPF_PROG_TYPE_TRACEPOINT,
            ..Load::default()
        };
        say(&format!("helper {id}"), &prog_load(load, &insns));
    }
}

/// For each BTF id: a tracing (fentry on `bpf_modify_return_test`)
/// program that calls that kfunc of the kernel's BTF.
fn call_kfuncs(attach: u32, ids: &[u32]) {
    for &id in ids {
        let mut insns = vec![insn(0x85, 0, 2, 0, id as i32)];
        insns.extend(return_zero());
        let load = Load {
            prog_type: BPF_PROG_TYPE_TRACING,
            expected_attach_type: BPF_TRACE_FENTRY,
            attach_btf_id: attach,
        };
        say(&format!("kfunc {id}"), &prog_load(load, &insns));
    }
}

/// Opens map `id` (u32 keys, u64 values) and runs over it an iterator
/// (`iter/bpf_map_elem`, its program `attach_btf_id` names) that writes
/// 0x41414141 into every value it visits: the iterator's value pointer is
/// writable memory of the map. Prints each step and key 1's value after.
fn iter_write_map_id(id: u32, iter_btf_id: u32) {
    let map = fd_by_id(BPF_MAP_GET_FD_BY_ID, id);
    say("open_map", &map);
    let Ok(map) = map else { return };
    // r2 = ctx->value; if r2 == 0 goto out; *(u32 *)r2 = 0x41414141;
    // out: r0 = 0; exit
    let mut insns = vec![
        insn(0x79, 2, 1, 24, 0),
        insn(0x15, 2, 0, 2, 0),
        insn(0xb7, 3, 0, 0, 0x4141_4141),
        insn(0x63, 2, 3, 0, 0),
    ];
    insns.extend(return_zero());
    let load = Load {
        prog_type: BPF_PROG_TYPE_TRACING,
        expected_attach_type: BPF_TRACE_ITER,
        attach_btf_id: iter_btf_id,
    };
    let prog = prog_load(load, &insns);
    say("iter_prog", &prog);
    let Ok(prog) = prog else { return };
    let info = [map as u32, 0, 0, 0];
    let mut a = [0u8; 64];
    a[0..4].copy_from_slice(&(prog as u32).to_le_bytes());
    a[8..12].copy_from_slice(&BPF_TRACE_ITER.to_le_bytes());
    a[16..24].copy_from_slice(&(info.as_ptr() as u64).to_le_bytes());
    a[24..28].copy_from_slice(&16u32.to_le_bytes());
    let link = bpf(BPF_LINK_CREATE, &mut a).map(|fd| fd as i32);
    say("iter_link", &link);
    let Ok(link) = link else { return };
    let mut a = [0u8; 8];
    a[0..4].copy_from_slice(&(link as u32).to_le_bytes());
    let iter = bpf(BPF_ITER_CREATE, &mut a).map(|fd| fd as i32);
    say("iter_create", &iter);
    let Ok(iter) = iter else { return };
    let mut buf = [0u8; 4096];
    // SAFETY: reads into a live buffer of its length.
    let n = unsafe { libc::read(iter, buf.as_mut_ptr().cast(), buf.len()) };
    say("iter_read", &if n < 0 { Err(errno()) } else { Ok(n) });
    say(
        "value_after",
        &telebpf_tests::raw_bpf::lookup(map, 1).map(|v| format!("{v:#x}")),
    );
}

/// A new hash map, pinned at `path` (`BPF_OBJ_PIN`).
fn pin_new_map(path: &str) {
    let map = map_create(BPF_MAP_TYPE_HASH, 4, 8, 4);
    say("map", &map);
    let Ok(map) = map else { return };
    let path = std::ffi::CString::new(path).unwrap_or_default();
    let mut a = [0u8; 24];
    a[0..8].copy_from_slice(&(path.as_ptr() as u64).to_le_bytes());
    a[8..12].copy_from_slice(&(map as u32).to_le_bytes());
    say("pin", &bpf(BPF_OBJ_PIN, &mut a));
}

/// `perf_event_open` of a task-clock counter on process `pid` that
/// samples every millisecond with `sigtrap` (and `remove_on_exec`, which
/// `sigtrap` requires): each sample sends `pid` a SIGTRAP, whose default
/// action ends it.
fn perf_sigtrap(pid: u32) {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_le_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_le_bytes()); // PERF_ATTR_SIZE_VER7
    attr[8..16].copy_from_slice(&1u64.to_le_bytes()); // PERF_COUNT_SW_TASK_CLOCK
    attr[16..24].copy_from_slice(&1_000_000u64.to_le_bytes()); // sample_period
    let bits: u64 = (1 << 36) | (1 << 37); // remove_on_exec | sigtrap
    attr[40..48].copy_from_slice(&bits.to_le_bytes());
    // SAFETY: a perf_event_attr of the size it declares; no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            pid as libc::c_long,
            -1 as libc::c_long,
            -1 as libc::c_long,
            8 as libc::c_long, // PERF_FLAG_FD_CLOEXEC
        )
    };
    say("perf_sigtrap", &if r < 0 { Err(errno()) } else { Ok(r) });
    std::thread::sleep(Duration::from_secs(2));
}

/// `perf_event_open` of a uprobe (perf's uprobe PMU) at file offset
/// `offset` of `path`, for every process on CPU 0, with reference counter
/// `ref_ctr` (a file offset too): the kernel increments the 16-bit
/// counter there in the memory of every process that maps `path` while
/// the probe is installed. Holds it for `secs`.
fn uprobe_ref_ctr(path: &str, offset: u64, ref_ctr: u64, secs: u32) {
    let pmu = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    let Some(pmu) = pmu else {
        say("uprobe_ref_ctr", &Err::<i64, i32>(libc::ENOENT));
        return;
    };
    let path = std::ffi::CString::new(path).unwrap_or_default();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&pmu.to_le_bytes());
    attr[4..8].copy_from_slice(&128u32.to_le_bytes());
    attr[8..16].copy_from_slice(&(ref_ctr << 32).to_le_bytes()); // config
    attr[56..64].copy_from_slice(&(path.as_ptr() as u64).to_le_bytes()); // config1
    attr[64..72].copy_from_slice(&offset.to_le_bytes()); // config2
                                                         // SAFETY: a perf_event_attr of the size it declares; config1 points
                                                         // at `path`, alive until after the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            -1 as libc::c_long,
            0 as libc::c_long,
            -1 as libc::c_long,
            8 as libc::c_long, // PERF_FLAG_FD_CLOEXEC
        )
    };
    say("uprobe_ref_ctr", &if r < 0 { Err(errno()) } else { Ok(r) });
    std::thread::sleep(Duration::from_secs(u64::from(secs)));
}

/// A counter in the program's data (initialised, so in `.data`: a
/// private writable mapping of the binary), 5 until someone writes it.
static COUNTER: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5);

/// The function a uprobe in `count_forever` can probe.
#[inline(never)]
fn tick() -> u16 {
    COUNTER.load(std::sync::atomic::Ordering::Relaxed)
}

/// The victim of `uprobe-ref-ctr` (run locally, not through the proxy):
/// prints the addresses of `COUNTER` and `tick` (`counter_at`,
/// `tick_at`, hex), then `counter: N` every 50 ms for `secs`.
fn count_forever(secs: u32) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "counter_at: {:x}", &COUNTER as *const _ as usize);
    let _ = writeln!(out, "tick_at: {:x}", tick as *const () as usize);
    let _ = out.flush();
    for _ in 0..secs * 20 {
        let _ = writeln!(out, "counter: {}", std::hint::black_box(tick()));
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Appends `line` (and a newline) to tracefs's `uprobe_events`, as a
/// tool defining a uprobe does.
fn append_uprobe_events(line: &str) {
    use std::io::Write as _;
    let r = std::fs::OpenOptions::new()
        .append(true)
        .open("/sys/kernel/tracing/uprobe_events")
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map(|()| 0)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
    say("append", &r);
}

/// `BPF_OBJ_GET` of `path`: prints the object's id (`get`).
fn obj_get(path: &str) {
    let path = std::ffi::CString::new(path).unwrap_or_default();
    let mut a = [0u8; 24];
    a[0..8].copy_from_slice(&(path.as_ptr() as u64).to_le_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut a).map(|fd| fd as i32);
    say("get", &fd.and_then(object_id));
}

/// A kprobe program linked as a uprobe_multi (`BPF_LINK_CREATE`) at file
/// offset `offset` of `path` with reference counter `ref_ctr` (a file
/// offset): the kernel increments the counter in every process that maps
/// `path` while the link lives. Holds it for `secs`.
fn uprobe_multi_ref_ctr(path: &str, offset: u64, ref_ctr: u64, secs: u32) {
    let load = Load {
        prog_type: BPF_PROG_TYPE_KPROBE,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Load::default()
    };
    let prog = prog_load(load, &return_zero());
    say("uprobe_multi_prog", &prog);
    let Ok(prog) = prog else { return };
    let path = std::ffi::CString::new(path).unwrap_or_default();
    let offsets = [offset];
    let ref_ctrs = [ref_ctr];
    let mut a = [0u8; 64];
    a[0..4].copy_from_slice(&(prog as u32).to_le_bytes());
    a[8..12].copy_from_slice(&BPF_TRACE_UPROBE_MULTI.to_le_bytes());
    a[16..24].copy_from_slice(&(path.as_ptr() as u64).to_le_bytes());
    a[24..32].copy_from_slice(&(offsets.as_ptr() as u64).to_le_bytes());
    a[32..40].copy_from_slice(&(ref_ctrs.as_ptr() as u64).to_le_bytes());
    a[48..52].copy_from_slice(&1u32.to_le_bytes()); // cnt
    say(
        "uprobe_multi_ref_ctr",
        &bpf(BPF_LINK_CREATE, &mut a).map(|fd| fd as i32),
    );
    std::thread::sleep(Duration::from_secs(u64::from(secs)));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else { usage() };
    let nums = || -> Vec<u32> { args[1..].iter().filter_map(|a| a.parse().ok()).collect() };
    match mode.as_str() {
        "load-fmod-ret" => {
            load_and_show("fmod_ret", fmod_ret(arg_u32(&args, 1)));
        }
        "hold-fmod-ret" => {
            let _prog = load_and_show("fmod_ret", fmod_ret(arg_u32(&args, 1)));
            hold(arg_u32(&args, 2));
        }
        "hold-lsm" => {
            let lsm = Load {
                prog_type: BPF_PROG_TYPE_LSM,
                expected_attach_type: BPF_LSM_MAC,
                attach_btf_id: arg_u32(&args, 1),
            };
            let _prog = load_and_show("lsm", lsm);
            hold(arg_u32(&args, 2));
        }
        "raw-tp-open-id" => raw_tp_open_id(arg_u32(&args, 1), args.get(2)),
        "hold-writable" => {
            let writable = Load {
                prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE,
                ..Load::default()
            };
            let _prog = load_and_show("writable", writable);
            hold(arg_u32(&args, 1));
        }
        "hold-xdp-link" => hold_xdp_link(arg_u32(&args, 1)),
        "link-update-id" => link_update_id(arg_u32(&args, 1), arg_u32(&args, 2)),
        "hold-map-and-link" => hold_map_and_link(arg_u32(&args, 1)),
        "touch-map-id" => touch_map_id(arg_u32(&args, 1)),
        "detach-link-id" => detach_link_id(arg_u32(&args, 1)),
        "sk-storage-key" => sk_storage_key(arg_u32(&args, 1)),
        "perf-cgroup" => perf_cgroup(arg_u32(&args, 1)),
        "obj-get" => obj_get(args.get(1).map_or("", String::as_str)),
        "pin-new-map" => pin_new_map(args.get(1).map_or("", String::as_str)),
        "perf-sigtrap" => perf_sigtrap(arg_u32(&args, 1)),
        "uprobe-multi-ref-ctr" => {
            let num = |i: usize| {
                args.get(i)
                    .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                    .unwrap_or_else(|| usage())
            };
            uprobe_multi_ref_ctr(
                args.get(1).map_or("", String::as_str),
                num(2),
                num(3),
                arg_u32(&args, 4),
            );
        }
        "uprobe-ref-ctr" => {
            let num = |i: usize| {
                args.get(i)
                    .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                    .unwrap_or_else(|| usage())
            };
            uprobe_ref_ctr(
                args.get(1).map_or("", String::as_str),
                num(2),
                num(3),
                arg_u32(&args, 4),
            );
        }
        "count-forever" => count_forever(arg_u32(&args, 1)),
        "append-uprobe-events" => append_uprobe_events(args.get(1).map_or("", String::as_str)),
        "iter-write-map-id" => iter_write_map_id(arg_u32(&args, 1), arg_u32(&args, 2)),
        "call-helpers" => call_helpers(&nums()),
        "call-kfuncs" => {
            let ids = nums();
            call_kfuncs(ids[0], &ids[1..]);
        }
        _ => usage(),
    }
}
