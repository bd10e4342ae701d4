//! `preload-probe`: exercises the edges of `bpf()` that a preload library
//! could get wrong, and prints one line per check.
//!
//! The e2e test runs it twice — as root on this kernel, and as `nobody`
//! through telebpf — and the lines must agree, except those starting with
//! `fork.`, where a forwarded child deliberately differs (it gets its own
//! session, so its parent's fds are not its own) and which the test checks
//! one by one.

use std::ffi::CStr;
use std::thread;

use telebpf_abi::cmd::*;
use telebpf_abi::map_type::*;
use telebpf_tests::raw_bpf::{bpf, bpf_raw, elem, errno, lookup, map_create, set_errno, update};

fn show(r: Result<i64, i32>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("errno {}", std::io::Error::from_raw_os_error(e)),
    }
}

fn readlink_fd(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("error {e}"))
}

fn main() {
    let out = |name: &str, v: String| println!("{name}: {v}");

    // Malformed calls: the errno the kernel gives, never a crash.
    out("attr.null", show(bpf_raw(BPF_MAP_CREATE, 0, 72)));
    out("attr.bad_pointer", show(bpf_raw(BPF_MAP_CREATE, 16, 72)));
    let mut big = vec![0u8; 8192];
    out("attr.size_over_page", show(bpf(BPF_MAP_CREATE, &mut big)));
    let mut tail = vec![0u8; 4096];
    tail[0] = BPF_MAP_TYPE_ARRAY as u8;
    tail[4095] = 1;
    out("attr.nonzero_tail", show(bpf(BPF_MAP_CREATE, &mut tail)));
    out("cmd.unknown", show(bpf(999, &mut [0u8; 64])));
    out(
        "cmd.unknown_with_common_attrs_flag",
        show(bpf((1 << 16) | 999, &mut [0u8; 64])),
    );

    let hash = map_create(BPF_MAP_TYPE_HASH, 4, 8, 16).expect("map create");
    out("map.readlink", readlink_fd(hash));
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{hash}")).unwrap_or_default();
    out(
        "map.fdinfo",
        fdinfo
            .lines()
            .filter(|l| {
                l.starts_with("map_type")
                    || l.starts_with("key_size")
                    || l.starts_with("value_size")
                    || l.starts_with("max_entries")
            })
            .collect::<Vec<_>>()
            .join(","),
    );
    out("lookup.missing", show(lookup(hash, 7).map(|v| v as i64)));
    out(
        "lookup.bad_key_pointer",
        show(bpf(BPF_MAP_LOOKUP_ELEM, &mut elem(hash, 24, 0))),
    );
    let key = 1u32;
    out(
        "lookup.bad_value_pointer_missing_key",
        show(bpf(
            BPF_MAP_LOOKUP_ELEM,
            &mut elem(hash, &key as *const u32 as u64, 24),
        )),
    );
    out("update", show(update(hash, 1, 0xabcdef)));
    out(
        "lookup.bad_value_pointer",
        show(bpf(
            BPF_MAP_LOOKUP_ELEM,
            &mut elem(hash, &key as *const u32 as u64, 24),
        )),
    );
    out("lookup.found", format!("{:?}", lookup(hash, 1)));
    out(
        "lookup.fd_not_a_bpf_object",
        show(lookup(1, 1).map(|v| v as i64)),
    );
    out(
        "lookup.fd_never_opened",
        show(lookup(9999, 1).map(|v| v as i64)),
    );
    let mut next = 0u32;
    out(
        "getnext.null_key_gives_first",
        format!(
            "{} {next}",
            show(bpf(
                BPF_MAP_GET_NEXT_KEY,
                &mut elem(hash, 0, &mut next as *mut u32 as u64)
            ))
        ),
    );

    // errno is left alone by a successful call.
    set_errno(1234);
    let _ = lookup(hash, 1);
    out("errno.preserved_on_success", errno().to_string());

    // fd operations keep referring to the same object.
    // SAFETY: plain fd operations on our own fds.
    let d = unsafe { libc::dup(hash) };
    // SAFETY: as above.
    unsafe { libc::close(hash) };
    out("dup.after_closing_original", format!("{:?}", lookup(d, 1)));
    // SAFETY: as above.
    let d2 = unsafe { libc::fcntl(d, libc::F_DUPFD_CLOEXEC, 100) };
    out("fcntl_dupfd.at_least_100", (d2 >= 100).to_string());
    // SAFETY: as above; libbpf's placeholder pattern.
    let placeholder = unsafe { libc::memfd_create(c"placeholder".as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: as above.
    let moved = unsafe { libc::dup3(d2, placeholder, libc::O_CLOEXEC) };
    // SAFETY: as above.
    unsafe { libc::close(d2) };
    out(
        "dup3.onto_placeholder",
        format!("{} {:?}", moved == placeholder, lookup(placeholder, 1)),
    );
    out("dup3.readlink", readlink_fd(placeholder));
    // SAFETY: as above.
    unsafe { libc::close(placeholder) };
    out(
        "close.then_lookup",
        show(lookup(placeholder, 1).map(|v| v as i64)),
    );
    // libbpf 1.4 and later move a map's fd onto its placeholder with
    // syscall(SYS_dup3), not dup3(), then close the original: the object
    // must live on under the new number.
    // SAFETY: as above.
    let placeholder = unsafe { libc::memfd_create(c"placeholder".as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: as above, through libc's syscall as libbpf does.
    let moved = unsafe { libc::syscall(libc::SYS_dup3, d, placeholder, libc::O_CLOEXEC) };
    // SAFETY: as above.
    unsafe { libc::close(d) };
    out(
        "sys_dup3.onto_placeholder",
        format!(
            "{} {:?}",
            moved == i64::from(placeholder),
            lookup(placeholder, 1)
        ),
    );
    // SAFETY: as above.
    unsafe { libc::close(placeholder) };

    // Threads: concurrent calls get their own answers.
    let array = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 8).expect("map create");
    let workers: Vec<_> = (0..8u32)
        .map(|t| {
            thread::spawn(move || {
                let mut bad = 0;
                for i in 0..200u64 {
                    let v = (u64::from(t) << 32) | i;
                    if update(array, t, v).is_err() || lookup(array, t) != Ok(v) {
                        bad += 1;
                    }
                }
                bad
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    out(
        "threads.wrong_answers",
        workers.iter().sum::<i32>().to_string(),
    );

    // uname answers for the kernel that executes the calls.
    // SAFETY: utsname is plain data.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid buffer.
    unsafe { libc::uname(&mut u) };
    // SAFETY: NUL-terminated by the kernel (or the preload).
    out(
        "uname.release",
        unsafe { CStr::from_ptr(u.release.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    );

    // fork: the child makes calls of its own; the parent's session survives.
    // SAFETY: the process is single-threaded again (workers joined); the
    // child only makes syscalls and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let own = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1).expect("map create");
        let ok = update(own, 0, 42).is_ok() && lookup(own, 0) == Ok(42);
        let inherited = lookup(array, 0);
        println!("fork.child_own_map: {ok}");
        println!(
            "fork.child_inherited_fd: {}",
            show(inherited.map(|v| v as i64))
        );
        // SAFETY: leaving the child without running the parent's atexit work.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    out("fork.child_exit", libc::WEXITSTATUS(status).to_string());
    out(
        "fork.parent_after_child",
        format!("{:?}", lookup(array, 3).map(|v| v >> 32)),
    );
}
