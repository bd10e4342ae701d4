//! `hostile-probe MODE [ARGS]`: a host program that does what real programs
//! do to a preload library's assumptions — many threads at once, `fork` +
//! `exec`, `vfork`, `posix_spawn`, closing every fd it did not open, signals
//! during calls — and prints `key: value` lines the e2e tests
//! (`tests/tests/hostile.rs`) check. It runs as root on this kernel and as
//! nobody through telebpf; every `bpf()` call goes through libc's `syscall`,
//! as libbpf makes it.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use telebpf_abi::cmd::*;
use telebpf_abi::map_type::*;
use telebpf_abi::prog_type::BPF_PROG_TYPE_XDP;
use telebpf_tests::raw_bpf::{bpf, lookup, map_create, update};

fn show<T>(r: &Result<T, i32>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("errno {e}"),
    }
}

/// A map of our own works: create, update, look up.
fn own_map_works() -> bool {
    match map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 4) {
        Ok(fd) => update(fd, 2, 0x5eed).is_ok() && lookup(fd, 2) == Ok(0x5eed),
        Err(_) => false,
    }
}

/// 16 threads released together, each with a map of its own, each writing
/// and reading back values no other thread writes.
fn threads() {
    const THREADS: u32 = 16;
    const ROUNDS: u64 = 300;
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let fd = match map_create(BPF_MAP_TYPE_HASH, 4, 8, 64) {
                    Ok(fd) => fd,
                    Err(e) => return (-1, ROUNDS, e),
                };
                let mut wrong = 0;
                for i in 0..ROUNDS {
                    let v = (u64::from(t) << 40) | (i << 8) | 0x5a;
                    let k = (i % 32) as u32;
                    if update(fd, k, v).is_err() || lookup(fd, k) != Ok(v) {
                        wrong += 1;
                    }
                }
                (fd, wrong, 0)
            })
        })
        .collect();
    let results: Vec<(i32, u64, i32)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut fds: Vec<i32> = results.iter().map(|r| r.0).filter(|fd| *fd >= 0).collect();
    println!("threads.maps: {}", fds.len());
    println!(
        "threads.create_errors: {:?}",
        results
            .iter()
            .map(|r| r.2)
            .filter(|e| *e != 0)
            .collect::<Vec<_>>()
    );
    println!(
        "threads.wrong_answers: {}",
        results.iter().map(|r| r.1).sum::<u64>()
    );
    // Each thread's map holds exactly its own last values.
    let mut foreign = 0;
    for (t, r) in results.iter().enumerate() {
        for k in 0..32u32 {
            let last = (0..ROUNDS)
                .filter(|i| i % 32 == u64::from(k))
                .max()
                .unwrap();
            if r.0 >= 0 && lookup(r.0, k) != Ok(((t as u64) << 40) | (last << 8) | 0x5a) {
                foreign += 1;
            }
        }
    }
    println!("threads.values_not_own: {foreign}");
    fds.sort();
    fds.dedup();
    println!("threads.distinct_fds: {}", fds.len());
}

/// The exec'd child: a session of its own works; the parent's fd number,
/// closed on exec like a kernel bpf fd, is `EBADF`.
fn child(parent_fd: &str) {
    let fd: i32 = parent_fd.parse().unwrap_or(-1);
    // Before any fd of our own could take the parent's number.
    println!("child.parent_fd: {}", show(&lookup(fd, 0)));
    println!("child.own_map: {}", own_map_works());
}

fn self_exe() -> CString {
    CString::new(
        std::fs::read_link("/proc/self/exe")
            .unwrap()
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap()
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// `fork` + `exec`, `vfork` + `exec` or `posix_spawn` of `hostile-probe
/// child FD` after the parent made a map; the parent's map still works
/// after the child ran.
fn spawn(how: &str) {
    let fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 4).expect("parent map");
    update(fd, 0, 77).expect("parent update");
    // Everything the child needs is prepared before fork/vfork: after
    // vfork only execve and _exit are allowed.
    let exe = self_exe();
    let args = [
        exe.clone(),
        CString::new("child").unwrap(),
        CString::new(fd.to_string()).unwrap(),
    ];
    let argv: Vec<*mut libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    extern "C" {
        static environ: *const *mut libc::c_char;
    }
    // SAFETY: reading the process's environment pointer.
    let envp = unsafe { environ };
    let pid = match how {
        "fork" => {
            // SAFETY: single-threaded here; the child only execs or exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: argv and envp are NULL-terminated arrays of C strings.
                unsafe {
                    libc::execve(exe.as_ptr(), argv.as_ptr() as _, envp as _);
                    libc::_exit(127);
                }
            }
            pid
        }
        "vfork" => {
            #[expect(
                deprecated,
                reason = "vfork is what this mode tests; the child only calls execve/_exit with values computed before it"
            )]
            // SAFETY: the child calls only execve and _exit, on memory
            // prepared before vfork.
            let pid = unsafe { libc::vfork() };
            if pid == 0 {
                // SAFETY: as above.
                unsafe {
                    libc::execve(exe.as_ptr(), argv.as_ptr() as _, envp as _);
                    libc::_exit(127);
                }
            }
            pid
        }
        _ => {
            let mut pid = 0;
            // SAFETY: all pointers are valid C strings / arrays; no file
            // actions or attributes.
            let r = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    exe.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr() as _,
                    envp as _,
                )
            };
            assert_eq!(r, 0, "posix_spawn");
            pid
        }
    };
    assert!(pid > 0, "{how} failed");
    println!("{how}.child_exit: {}", wait(pid));
    println!("{how}.parent_after_child: {:?}", lookup(fd, 0));
    println!("{how}.parent_new_map: {}", own_map_works());
}

/// Closes every fd from 3 up — the library's connection to the proxy among
/// them — the way `how` says, then opens files until the freed numbers are
/// taken again. The next calls must work (a new session) or fail cleanly;
/// none of the program's files may receive a byte.
fn close_all(how: &str, dir: &str) {
    let fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 4).expect("map before");
    update(fd, 1, 42).expect("update before");
    // The kernel's BTF, as libbpf reads it (through the preload: from the
    // guest, kept in a memfd of the library's for the next open).
    let btf_magic = || {
        use std::io::Read;
        let mut head = [0u8; 2];
        std::fs::File::open("/sys/kernel/btf/vmlinux")
            .and_then(|mut f| f.read_exact(&mut head))
            .map(|_| head == [0x9f, 0xeb])
            .unwrap_or(false)
    };
    println!("{how}.btf_before: {}", btf_magic());
    match how {
        "close_range" => {
            // SAFETY: closing fds; the program owns all of them.
            let r = unsafe { libc::close_range(3, u32::MAX, 0) };
            assert_eq!(r, 0, "close_range");
        }
        "sys_close_range" => {
            // SAFETY: as above; through syscall(), as some programs do.
            let r = unsafe { libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) };
            assert_eq!(r, 0, "syscall(close_range)");
        }
        "closefrom" => {
            extern "C" {
                fn closefrom(lowfd: libc::c_int);
            }
            // SAFETY: glibc's closefrom (2.34+): close_range(2) inside libc.
            unsafe { closefrom(3) };
        }
        _ => {
            for fd in 3..4096 {
                // SAFETY: as above, one by one as daemons do.
                unsafe { libc::close(fd) };
            }
        }
    }
    // Take the freed numbers with files of our own.
    let files: Vec<(std::fs::File, String)> = (0..16)
        .map(|i| {
            let path = format!("{dir}/victim-{how}-{i}");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .expect("open victim file");
            (f, path)
        })
        .collect();
    println!("{how}.btf_after: {}", btf_magic());
    let old = lookup(fd, 1);
    println!("{how}.old_fd: {}", show(&old));
    let new_map = own_map_works();
    println!("{how}.new_map: {new_map}");
    let again = own_map_works();
    println!("{how}.new_map_again: {again}");
    let written: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!("{how}.bytes_in_program_files: {written}");
    // Every file must still be open under its number: the library must not
    // close a number it no longer owns either.
    let lost = files
        .iter()
        .filter(|(f, p)| {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::MetadataExt;
            // SAFETY: stat is plain data; fstat on any fd number is harmless.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let ok = unsafe { libc::fstat(f.as_raw_fd(), &mut st) } == 0;
            let ino = std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
            !ok || st.st_ino != ino
        })
        .count();
    println!("{how}.program_files_closed_by_library: {lost}");
}

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

fn install_alarm(restart: bool, every: Duration) {
    // SAFETY: a plain handler that only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let t = libc::timeval {
            tv_sec: 0,
            tv_usec: every.as_micros() as libc::suseconds_t,
        };
        let it = libc::itimerval {
            it_interval: t,
            it_value: t,
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

fn stop_alarm() {
    // SAFETY: disarming the timer.
    unsafe {
        let it: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

/// Map calls under a storm of SIGALRM (every 200 µs), with and without
/// `SA_RESTART`: the kernel never fails map element calls with `EINTR`, so
/// every call must succeed with the right value.
fn signals_during_map_calls() {
    let fd = map_create(BPF_MAP_TYPE_HASH, 4, 8, 64).expect("map");
    for restart in [true, false] {
        let name = if restart { "sa_restart" } else { "no_restart" };
        SIGNALS.store(0, Ordering::Relaxed);
        install_alarm(restart, Duration::from_micros(200));
        let (mut errors, mut wrong) = (Vec::new(), 0);
        let t0 = Instant::now();
        let mut i = 0u64;
        while t0.elapsed() < Duration::from_millis(1500) || i < 2000 {
            let v = i.wrapping_mul(0x9e37_79b9) | 1;
            let k = (i % 64) as u32;
            match update(fd, k, v).and_then(|_| lookup(fd, k).map(|x| x as i64)) {
                Ok(x) if x as u64 == v => {}
                Ok(_) => wrong += 1,
                Err(e) => errors.push(e),
            }
            i += 1;
        }
        stop_alarm();
        errors.sort();
        errors.dedup();
        println!("signals.{name}.calls: {}", i * 2);
        println!(
            "signals.{name}.delivered: {}",
            SIGNALS.load(Ordering::Relaxed)
        );
        println!("signals.{name}.errnos: {errors:?}");
        println!("signals.{name}.wrong_values: {wrong}");
    }
}

/// A long `BPF_PROG_TEST_RUN` (an XDP program repeated many times), which
/// the kernel abandons with `EINTR` when a signal is pending
/// (`bpf_test_timer_continue`). A signal (no `SA_RESTART`) arrives after
/// 100 ms. Prints the result and how long the call took, then whether the
/// next call works.
fn signal_during_test_run(repeat: u32) {
    // r0 = XDP_PASS; exit
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = c"GPL";
    let mut a = [0u8; 148];
    a[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_le_bytes());
    a[4..8].copy_from_slice(&2u32.to_le_bytes());
    a[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_le_bytes());
    a[16..24].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
    let prog = bpf(BPF_PROG_LOAD, &mut a).expect("load XDP program") as u32;
    let data = [0u8; 64];
    let mut t = [0u8; 80];
    t[0..4].copy_from_slice(&prog.to_le_bytes());
    t[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    t[16..24].copy_from_slice(&(data.as_ptr() as u64).to_le_bytes());
    t[32..36].copy_from_slice(&repeat.to_le_bytes());
    SIGNALS.store(0, Ordering::Relaxed);
    // SAFETY: one-shot timer with the counting handler, no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let it = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
    let t0 = Instant::now();
    let r = bpf(BPF_PROG_TEST_RUN, &mut t);
    let ms = t0.elapsed().as_millis();
    stop_alarm();
    println!("test_run.result: {}", show(&r));
    println!("test_run.ms: {ms}");
    println!("test_run.signals: {}", SIGNALS.load(Ordering::Relaxed));
    println!("test_run.next_call: {}", own_map_works());
}

/// Stays alive `secs` seconds with a session open and a child (also under
/// the preload, with a session of its own) alive, so the test can read
/// every process's `/proc/PID/environ` and `cmdline`.
fn hold(secs: &str) {
    println!("hold.own_map: {}", own_map_works());
    let secs: u64 = secs.parse().unwrap_or(3);
    // SAFETY: single-threaded; the child makes one call and sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let exe = self_exe();
        let args = [
            exe.clone(),
            CString::new("hold-child").unwrap(),
            CString::new(secs.to_string()).unwrap(),
        ];
        let argv: Vec<*const libc::c_char> = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // SAFETY: NULL-terminated argv of C strings; the environment is inherited.
        unsafe {
            libc::execv(exe.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    std::thread::sleep(Duration::from_secs(secs));
    println!("hold.child_exit: {}", wait(pid));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "threads" => threads(),
        "child" => child(arg(2)),
        "fork" | "vfork" | "posix_spawn" => spawn(arg(1)),
        "close" => close_all(arg(2), arg(3)),
        "signals" => signals_during_map_calls(),
        "test-run" => signal_during_test_run(arg(2).parse().unwrap_or(1 << 30)),
        "hold" => hold(arg(2)),
        "hold-child" => {
            println!("hold-child.own_map: {}", own_map_works());
            std::thread::sleep(Duration::from_secs(arg(2).parse().unwrap_or(3)));
        }
        other => {
            eprintln!("hostile-probe: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
