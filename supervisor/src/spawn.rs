//! Starting the program under the filter, and getting its listener.
//!
//! The child installs the filter itself, between `fork` and `exec`
//! (`no_new_privs` first, which an unprivileged process needs and which a
//! supervised program keeps: set-user-ID programs are refused before we
//! get here anyway), and sends the listener fd back over a socket pair.
//! `exec` is not filtered, so the parent is serving before the program's
//! first notified call (its dynamic loader's `openat`, if it has one).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crate::filter::{self, FD_END};

/// The signals the supervisor passes on to the program (the program is
/// the one the user means when they press Ctrl-C or `kill` the pid).
pub const FORWARDED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Starts `program` with `args` and `env` under the filter; returns the
/// child and the listener.
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    env: &[(String, OsString)],
) -> io::Result<(Child, OwnedFd)> {
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
    let child_end = theirs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls on memory prepared before the
    // fork (`prog`, stack variables).
    unsafe {
        cmd.pre_exec(move || install_filter(&prog, child_end));
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let listener = receive_fd(&ours)?;
    Ok((child, listener))
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

/// Sends `fd` over `sock` (SCM_RIGHTS); async-signal-safe.
fn send_fd(sock: i32, fd: i32) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsg with one int, u64-aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
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
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
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
