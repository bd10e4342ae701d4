//! The supervisor: serves the eBPF calls of a program that `LD_PRELOAD`
//! cannot reach — a statically linked one, a Go one — from outside it.
//!
//! `telebpf exec` starts such a program under a seccomp filter
//! ([`filter`]) that hands the calls the preload would catch to this
//! process as user notifications ([`notify`]); [`serve`] answers them with
//! the same host-side library the preload uses (`telebpf-host`), reading
//! and writing the program's memory with `process_vm_readv`/`writev` and
//! putting guest objects' fds into it with `SECCOMP_IOCTL_NOTIF_ADDFD`
//! ([`tool`]). Everything else the program does runs in the kernel
//! untouched, and the calls on its own fds never leave the kernel: the
//! filter tests fd numbers, and the guest objects live in a range of their
//! own.
//!
//! The modules, top first (each uses only those after it): [`spawn`],
//! [`serve`], [`tool`], [`notify`], [`filter`].

pub mod filter;
pub mod notify;
pub mod serve;
pub mod spawn;
pub mod tool;

use std::ffi::OsString;
use std::io;

/// Why supervising failed before the program ran.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The program could not be started under the filter.
    #[error("cannot start {program} under the seccomp supervisor: {source}")]
    Start {
        /// The program.
        program: String,
        /// The cause.
        source: io::Error,
    },
    /// Receiving a notification failed.
    #[error("the seccomp supervisor lost its listener: {0}")]
    Listener(io::Error),
}

/// Runs `program` with `args` (and `env` added to ours) under the
/// supervisor until it and every process it started have exited; returns
/// its exit status as a shell reports it (128 + the signal that killed
/// it).
pub fn run(
    program: &OsString,
    args: &[OsString],
    env: &[(String, OsString)],
) -> Result<i32, SupervisorError> {
    let set = forwarded_set();
    // Blocked here (and so in the signal thread made below); the child
    // clears its mask before exec.
    // SAFETY: installs a mask from a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let (pid, listener) =
        spawn::spawn(program, args, env).map_err(|source| SupervisorError::Start {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    // After the fork, so the program keeps the limit it was given.
    raise_fd_limit();
    std::thread::Builder::new()
        .name("telebpf-signals".into())
        .spawn(move || forward_signals(set, pid))
        .map_err(|source| SupervisorError::Start {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    let listener = notify::Listener::new(listener);
    let mut processes = serve::Processes::default();
    let served = loop {
        match listener.receive(&processes.pidfds()) {
            Ok(notify::Event::Call(call)) => {
                let answer = serve::serve(&listener, &mut processes, call);
                if let Err(e) = listener.answer(&call, answer) {
                    break Err(SupervisorError::Listener(e));
                }
            }
            Ok(notify::Event::Exited(pid)) => processes.exited(pid),
            Ok(notify::Event::Done) => break Ok(()),
            Err(e) => break Err(SupervisorError::Listener(e)),
        }
    };
    if served.is_err() {
        // Without its supervisor the program would hang in its next call.
        // SAFETY: kill takes a pid and a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: reaping our own child into `status`.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(SupervisorError::Listener(e));
        }
    }
    served?;
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard one: the
/// supervisor holds, for every served process at once, a pidfd, a session
/// socket, and the memfds of its rings, maps and guest files; at the usual
/// soft limit of 1,024, a program with a few hundred live processes would
/// have their calls fail. Where it cannot, the supervisor serves as many
/// as fit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads into `lim`, then sets a limit from it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The set of [`spawn::FORWARDED`] signals.
fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
    // SAFETY: valid set and signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in spawn::FORWARDED {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Passes every signal of `set` on to `pid`.
fn forward_signals(set: libc::sigset_t, pid: i32) {
    loop {
        let mut sig = 0;
        // SAFETY: waits for one signal of a valid set.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
