//! The seccomp filter a supervised program runs under.
//!
//! A classic BPF program over `struct seccomp_data` decides, per call,
//! whether the kernel runs it (`SECCOMP_RET_ALLOW`) or hands it to the
//! supervisor (`SECCOMP_RET_USER_NOTIF`). It cannot read strings or
//! memory, only the call's number and its six argument words, so:
//!
//! * calls that may concern the guest whatever their arguments (`bpf`,
//!   `perf_event_open`, `uname`, the path calls, …) always notify, and the
//!   supervisor lets those that are not ours continue;
//! * calls on an fd notify only when the fd lies in [`FD_BASE`]..[`FD_END`],
//!   where the supervisor puts every guest object's fd: a program's calls
//!   on its own fds never leave the kernel — except `mmap` of a file and
//!   `epoll_ctl`, which always notify, because a program may move an
//!   object's fd below the range (libbpf 1.4 and later do) and then map it
//!   or wait on it;
//! * the `RLIMIT_MEMLOCK` calls notify only for that resource.
//!
//! Anything but the x86-64 ABI (the x32 numbers, a 32-bit `int 0x80`) is
//! refused with `ENOSYS`: it could reach `bpf()` under another number.

/// The first fd number the supervisor gives a guest object.
pub const FD_BASE: u32 = 4096;
/// One past the last.
pub const FD_END: u32 = 8192;

/// `SIOCGIFNAME`, `SIOCGIFINDEX` (`linux/sockios.h`).
const SIOCGIFNAME: u32 = 0x8910;
const SIOCGIFINDEX: u32 = 0x8933;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The x32 ABI's bit in the call number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low half of argument `i` (little-endian), which is all the kernel
/// reads of an `int fd` or `int resource`.
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// What the filter does with one call number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Always hand it to the supervisor.
    Notify,
    /// Hand it over when any of these arguments is an fd in the range.
    FdArgs(&'static [u32]),
    /// Hand it over when argument `.0` equals `.1`.
    ArgIs(u32, u32),
    /// Hand it over unless argument `.0` is -1 (an `mmap` of no file).
    ArgNotMinusOne(u32),
    /// Hand it over when argument `.0` is one of `.1`, or as
    /// [`Rule::FdArgs`] with `.2`.
    ArgInOrFdArgs(u32, &'static [u32], &'static [u32]),
    /// Refuse it with this errno.
    Refuse(i32),
    /// A path call with a directory fd (argument `.0`) and flags (argument
    /// `.1`): hand it over unless it is an `fstat` of one of the program's
    /// own fds (`AT_EMPTY_PATH`, a real fd below or above the range), which
    /// is how libc's `fstat` is made.
    PathUnlessEmptyOfOwnFd(u32, u32),
}

/// The calls handed to the supervisor, and when.
pub const RULES: &[(i64, Rule)] = &[
    (libc::SYS_bpf, Rule::Notify),
    // io_uring opens, reads and closes files without a system call the
    // filter sees (a guest path would be the host's file): refused, as by
    // kernels built without it; programs fall back to the calls.
    (libc::SYS_io_uring_setup, Rule::Refuse(libc::ENOSYS)),
    (libc::SYS_perf_event_open, Rule::Notify),
    (libc::SYS_uname, Rule::Notify),
    (libc::SYS_capget, Rule::Notify),
    (libc::SYS_setrlimit, Rule::ArgIs(0, libc::RLIMIT_MEMLOCK)),
    (libc::SYS_prlimit64, Rule::ArgIs(1, libc::RLIMIT_MEMLOCK)),
    // Paths that may be the guest's: decided by the supervisor.
    (libc::SYS_open, Rule::Notify),
    (libc::SYS_openat, Rule::Notify),
    (libc::SYS_openat2, Rule::Notify),
    (libc::SYS_stat, Rule::Notify),
    (libc::SYS_lstat, Rule::Notify),
    (libc::SYS_newfstatat, Rule::PathUnlessEmptyOfOwnFd(0, 3)),
    (libc::SYS_statx, Rule::PathUnlessEmptyOfOwnFd(0, 2)),
    (libc::SYS_access, Rule::Notify),
    (libc::SYS_faccessat, Rule::Notify),
    (libc::SYS_faccessat2, Rule::Notify),
    (libc::SYS_readlink, Rule::Notify),
    (libc::SYS_readlinkat, Rule::Notify),
    (libc::SYS_statfs, Rule::Notify),
    // Closing many fds at once may close guest objects' fds.
    (libc::SYS_close_range, Rule::Notify),
    // An exec closes them (close-on-exec) and starts a new program, which
    // gets a new session.
    (libc::SYS_execve, Rule::Notify),
    (libc::SYS_execveat, Rule::Notify),
    // Calls on a guest object's fd.
    (libc::SYS_close, Rule::FdArgs(&[0])),
    (libc::SYS_dup, Rule::FdArgs(&[0])),
    (libc::SYS_dup2, Rule::FdArgs(&[0, 1])),
    (libc::SYS_dup3, Rule::FdArgs(&[0, 1])),
    (libc::SYS_fcntl, Rule::FdArgs(&[0])),
    // SIOCGIFINDEX/SIOCGIFNAME on any socket: the guest's interfaces.
    (
        libc::SYS_ioctl,
        Rule::ArgInOrFdArgs(1, &[SIOCGIFNAME, SIOCGIFINDEX], &[0]),
    ),
    (libc::SYS_read, Rule::FdArgs(&[0])),
    // An object's fd may also sit below the range, where the program
    // moved it (libbpf 1.4 and later `dup3` map fds onto placeholder fds
    // of their own): every mapping of a file and every epoll change is
    // looked at — a handful per program, at start — never an anonymous
    // mapping (`malloc`'s).
    (libc::SYS_mmap, Rule::ArgNotMinusOne(4)),
    (libc::SYS_epoll_ctl, Rule::Notify),
    // A wait on an epoll instance holding a guest ring: it fails once the
    // proxy is lost (as under the preload), instead of spinning on a ring
    // that stays ready; otherwise it continues, readiness lowered first.
    (libc::SYS_epoll_wait, Rule::Notify),
    (libc::SYS_epoll_pwait, Rule::Notify),
    (libc::SYS_epoll_pwait2, Rule::Notify),
    // `poll` names its fds in memory the filter cannot read.
    (libc::SYS_poll, Rule::Notify),
    (libc::SYS_ppoll, Rule::Notify),
    // rtnetlink sockets are relayed to the guest (as by the preload): the
    // socket is made by the supervisor, in the range, and its calls are
    // the relay's.
    (libc::SYS_socket, Rule::ArgIs(0, libc::AF_NETLINK as u32)),
    (libc::SYS_bind, Rule::FdArgs(&[0])),
    (libc::SYS_getsockname, Rule::FdArgs(&[0])),
    (libc::SYS_setsockopt, Rule::FdArgs(&[0])),
    (libc::SYS_sendto, Rule::FdArgs(&[0])),
    (libc::SYS_recvfrom, Rule::FdArgs(&[0])),
    (libc::SYS_sendmsg, Rule::FdArgs(&[0])),
    (libc::SYS_recvmsg, Rule::FdArgs(&[0])),
];

/// One classic BPF instruction (`struct sock_filter`).
fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn load(off: u32) -> libc::sock_filter {
    insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, off)
}

fn ret(action: u32) -> libc::sock_filter {
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, action)
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, jt, jf, k)
}

/// `BPF_JSET`: jumps `jt` when `A & k` is not zero.
fn jset(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    insn(libc::BPF_JMP | BPF_JSET | libc::BPF_K, jt, jf, k)
}

/// `BPF_JSET` (`linux/bpf_common.h`).
const BPF_JSET: u32 = 0x40;

fn jge(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    insn(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, jt, jf, k)
}

const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// The instructions deciding one rule, entered with the call number in A;
/// every path ends in a return.
fn block(rule: Rule) -> Vec<libc::sock_filter> {
    match rule {
        Rule::Notify => vec![ret(NOTIFY)],
        Rule::Refuse(errno) => vec![ret(libc::SECCOMP_RET_ERRNO | errno as u32)],
        Rule::ArgIs(arg, value) => vec![
            load(off_arg(arg)),
            jeq(value, 0, 1),
            ret(NOTIFY),
            ret(ALLOW),
        ],
        Rule::ArgNotMinusOne(arg) => vec![
            load(off_arg(arg)),
            jeq(u32::MAX, 0, 1),
            ret(ALLOW),
            ret(NOTIFY),
        ],
        Rule::PathUnlessEmptyOfOwnFd(dirfd, flags) => vec![
            load(off_arg(flags)),
            jset(libc::AT_EMPTY_PATH as u32, 1, 0),
            ret(NOTIFY),
            load(off_arg(dirfd)),
            jeq(libc::AT_FDCWD as u32, 0, 1),
            ret(NOTIFY),
            jge(FD_BASE, 0, 2),
            jge(FD_END, 1, 0),
            ret(NOTIFY),
            ret(ALLOW),
        ],
        Rule::ArgInOrFdArgs(arg, values, fds) => {
            let mut out = vec![load(off_arg(arg))];
            for &v in values {
                out.push(jeq(v, 0, 1));
                out.push(ret(NOTIFY));
            }
            out.extend(block(Rule::FdArgs(fds)));
            out
        }
        Rule::FdArgs(args) => {
            let mut out = Vec::new();
            for &arg in args {
                // fd < FD_BASE: next argument; fd >= FD_END: next argument;
                // else notify.
                out.push(load(off_arg(arg)));
                out.push(jge(FD_BASE, 0, 2));
                out.push(jge(FD_END, 1, 0));
                out.push(ret(NOTIFY));
            }
            out.push(ret(ALLOW));
            out
        }
    }
}

/// The whole program.
pub fn program() -> Vec<libc::sock_filter> {
    let mut p = vec![
        load(OFF_ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(ENOSYS),
        load(OFF_NR),
        jge(X32_SYSCALL_BIT, 0, 1),
        ret(ENOSYS),
    ];
    for &(nr, rule) in RULES {
        let b = block(rule);
        // Each block is a handful of instructions: its length fits the
        // 8-bit jump offset.
        p.push(jeq(nr as u32, 0, b.len() as u8));
        p.extend(b);
    }
    p.push(ret(ALLOW));
    p
}

/// Runs `prog` on one `seccomp_data` as the kernel would (for the tests:
/// only the instructions [`program`] uses).
#[cfg(test)]
fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let code = u32::from(i.code);
        pc += 1;
        if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
            let k = i.k as usize;
            a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
        } else if code == libc::BPF_RET | libc::BPF_K {
            return i.k;
        } else {
            let taken = if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                a == i.k
            } else if code == libc::BPF_JMP | BPF_JSET | libc::BPF_K {
                a & i.k != 0
            } else {
                assert_eq!(code, libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K);
                a >= i.k
            };
            pc += usize::from(if taken { i.jt } else { i.jf });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        run(&program(), nr as u32, AUDIT_ARCH_X86_64, args)
    }

    #[test]
    fn bpf_and_paths_always_notify() {
        for nr in [libc::SYS_bpf, libc::SYS_openat, libc::SYS_uname] {
            assert_eq!(verdict(nr, [0; 6]), NOTIFY, "{nr}");
        }
    }

    #[test]
    fn fd_calls_notify_only_in_the_range() {
        let at = |fd: u64| [fd, 0, 0, 0, 0, 0];
        assert_eq!(verdict(libc::SYS_close, at(3)), ALLOW);
        assert_eq!(verdict(libc::SYS_close, at(FD_BASE as u64 - 1)), ALLOW);
        assert_eq!(verdict(libc::SYS_close, at(FD_BASE as u64)), NOTIFY);
        assert_eq!(verdict(libc::SYS_close, at(FD_END as u64 - 1)), NOTIFY);
        assert_eq!(verdict(libc::SYS_close, at(FD_END as u64)), ALLOW);
        // Only the low 32 bits are the fd, as the kernel reads an int.
        assert_eq!(
            verdict(libc::SYS_read, at((1 << 32) | FD_BASE as u64)),
            NOTIFY
        );
        // dup2 notifies for either fd.
        assert_eq!(verdict(libc::SYS_dup2, [3, 5000, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_dup2, [5000, 3, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_dup2, [3, 4, 0, 0, 0, 0]), ALLOW);
        // mmap of any file (its fd is the fifth argument), never of none.
        assert_eq!(verdict(libc::SYS_mmap, [0, 4096, 1, 1, 5000, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_mmap, [5000, 4096, 1, 1, 3, 0]), NOTIFY);
        let anonymous = [0, 4096, 3, 0x22, u32::MAX as u64, 0];
        assert_eq!(verdict(libc::SYS_mmap, anonymous), ALLOW);
        let anonymous_64 = [0, 4096, 3, 0x22, u64::MAX, 0];
        assert_eq!(verdict(libc::SYS_mmap, anonymous_64), ALLOW);
        assert_eq!(verdict(libc::SYS_epoll_ctl, [5, 1, 7, 0, 0, 0]), NOTIFY);
    }

    #[test]
    fn interface_ioctls_of_any_fd_and_netlink_sockets() {
        assert_eq!(verdict(libc::SYS_ioctl, [3, 0x8933, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_ioctl, [3, 0x8910, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_ioctl, [3, 0x5401, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_ioctl, [5000, 0x5401, 0, 0, 0, 0]), NOTIFY);
        let netlink = libc::AF_NETLINK as u64;
        assert_eq!(verdict(libc::SYS_socket, [netlink, 3, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(verdict(libc::SYS_socket, [2, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_sendto, [3, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_sendto, [5000, 0, 0, 0, 0, 0]), NOTIFY);
    }

    #[test]
    fn fstat_of_own_fds_stays_in_the_kernel() {
        let empty = libc::AT_EMPTY_PATH as u64;
        let cwd = libc::AT_FDCWD as u32 as u64;
        // glibc's fstat(3, …): fstatat(3, "", buf, AT_EMPTY_PATH).
        assert_eq!(verdict(libc::SYS_newfstatat, [3, 0, 0, empty, 0, 0]), ALLOW);
        assert_eq!(verdict(libc::SYS_statx, [3, 0, empty, 0, 0, 0]), ALLOW);
        // A path (no AT_EMPTY_PATH), relative to the cwd, or a guest fd.
        assert_eq!(verdict(libc::SYS_newfstatat, [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(
            verdict(libc::SYS_newfstatat, [cwd, 0, 0, empty, 0, 0]),
            NOTIFY
        );
        assert_eq!(
            verdict(libc::SYS_newfstatat, [5000, 0, 0, empty, 0, 0]),
            NOTIFY
        );
        assert_eq!(verdict(libc::SYS_statx, [cwd, 0, 0, 0, 0, 0]), NOTIFY);
    }

    #[test]
    fn io_uring_is_refused() {
        assert_eq!(
            verdict(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
            ENOSYS
        );
    }

    #[test]
    fn memlock_only() {
        let memlock = libc::RLIMIT_MEMLOCK as u64;
        assert_eq!(
            verdict(libc::SYS_prlimit64, [0, memlock, 0, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(verdict(libc::SYS_prlimit64, [0, 7, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict(libc::SYS_setrlimit, [memlock, 0, 0, 0, 0, 0]),
            NOTIFY
        );
    }

    #[test]
    fn everything_else_runs_and_other_abis_are_refused() {
        assert_eq!(verdict(libc::SYS_getpid, [0; 6]), ALLOW);
        assert_eq!(verdict(libc::SYS_write, [5000, 0, 0, 0, 0, 0]), ALLOW);
        let x32_bpf = (libc::SYS_bpf as u32) | X32_SYSCALL_BIT;
        assert_eq!(run(&program(), x32_bpf, AUDIT_ARCH_X86_64, [0; 6]), ENOSYS);
        // i386's bpf is 357.
        assert_eq!(run(&program(), 357, 0x4000_0003, [0; 6]), ENOSYS);
    }
}
