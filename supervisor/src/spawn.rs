//! Starting the program under the filter, and getting its listener.
//!
//! The child installs the filter itself, between `fork` and `exec`
//! (`no_new_privs` first, which an unprivileged process needs and which a
//! supervised program keeps: set-user-ID programs are refused before we
//! get here anyway), and sends the listener fd back over a socket pair.
//! `exec` is not filtered, so the parent is serving before the program's
//! first notified call (its dynamic loader's `openat`, if it has one).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::filter::{self, FD_END};

/// The signals the supervisor passes on to the program (the program is
/// the one the user means when they press Ctrl-C or `kill` the pid).
pub const FORWARDED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Starts `program` with `args` and `env` (added to ours) under the
/// filter; returns the child's pid and the listener.
///
/// The fork and exec are ours, not `std::process::Command`'s: its parent
/// waits for the child's `exec` to succeed before returning, but the
/// child's `execve` is itself a notified call (an exec starts a new
/// program, which gets a new session), which only this parent, serving,
/// can let through. A failed exec is reported by the child on stderr
/// (status 127, as a shell's).
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    env: &[(String, OsString)],
) -> io::Result<(i32, OwnedFd)> {
    let cstr = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let file = cstr(program)?;
    let argv: Vec<CString> = std::iter::once(program.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(cstr)
        .collect::<io::Result<_>>()?;
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !env.iter().any(|(e, _)| k.as_os_str() == e.as_str()))
        .collect();
    vars.extend(env.iter().map(|(k, v)| (OsString::from(k), v.clone())));
    let envp: Vec<CString> = vars
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstr(&kv)
        })
        .collect::<io::Result<_>>()?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let failed = format!(
        "telebpf: exec: cannot run {} under the seccomp supervisor\n",
        program.to_string_lossy()
    );

    let mut pair = [0; 2];
    // SAFETY: `pair` has room for the two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new fds nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let prog = filter::program();
    // SAFETY: fork has no preconditions; the child below only makes
    // async-signal-safe calls on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = match install_filter(&prog, theirs.as_raw_fd()) {
            Ok(()) => {
                // SAFETY: NUL-terminated strings and NULL-terminated arrays
                // built before the fork, alive until exec.
                unsafe { libc::execvpe(file.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
                127
            }
            Err(_) => 126,
        };
        // SAFETY: writing a prepared message, then leaving without running
        // any of the parent's exit handlers.
        unsafe {
            libc::write(2, failed.as_ptr().cast(), failed.len());
            libc::_exit(code)
        }
    }
    drop(theirs);
    match receive_fd(&ours) {
        Ok(listener) => Ok((pid, listener)),
        Err(e) => {
            // The child could not install the filter; it has told stderr
            // and exits.
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            Err(e)
        }
    }
}

/// In the child: the signal mask cleared, the fd limit raised to cover
/// the range, `no_new_privs`, the filter, and its listener sent to the
/// parent.
fn install_filter(prog: &[libc::sock_filter], sock: i32) -> io::Result<()> {
    let last = || io::Error::last_os_error();
    // SAFETY: an empty set, then installed as the mask; plain syscalls.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    // ADDFD at a number needs it below the program's RLIMIT_NOFILE.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(last());
    }
    if lim.rlim_cur < FD_END as u64 {
        if lim.rlim_max < FD_END as u64 {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        lim.rlim_cur = FD_END as u64;
        // SAFETY: sets a limit from a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(last());
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // Once we have received a call, only a fatal signal may interrupt its
    // wait: a call interrupted by any other (the Go runtime preempts its
    // threads with SIGURG) would be restarted by the program and made
    // twice in the guest, the first object of it leaked. Kernels before
    // 5.19 lack the flag; there the program is still served, with that
    // risk.
    let install = |flags: libc::c_ulong| {
        // SAFETY: `fprog` points to `prog`, alive for the call.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut listener = install(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    );
    if listener < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        listener = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
    }
    if listener < 0 {
        return Err(last());
    }
    let listener = listener as i32;
    let sent = send_fd(sock, listener);
    // SAFETY: our copy of the listener; the parent has its own.
    unsafe { libc::close(listener) };
    sent
}

/// A one-byte message with room for one control message carrying one fd
/// (`control`, u64-aligned), `controllen` bytes of which are used.
fn message(iov: &mut libc::iovec, control: &mut [u64; 4], controllen: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = controllen;
    msg
}

/// Sends `fd` over `sock` (SCM_RIGHTS); async-signal-safe.
fn send_fd(sock: i32, fd: i32) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is arithmetic.
    let msg = message(&mut iov, &mut control, unsafe { libc::CMSG_SPACE(4) }
        as usize);
    // SAFETY: the control buffer is large enough for one cmsg of an int
    // (CMSG_SPACE(4) <= 32 bytes), so the header and data lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // SAFETY: `msg` describes live buffers.
    if unsafe { libc::sendmsg(sock, &msg, 0) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    let size = std::mem::size_of_val(&control);
    let mut msg = message(&mut iov, &mut control, size);
    // SAFETY: `msg` describes live buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `control` with msg_controllen bytes; we
    // read one header and, if it carries rights, its first int.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            // The child failed before sending (its error went to `spawn`).
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
    };
    // SAFETY: a new fd the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
