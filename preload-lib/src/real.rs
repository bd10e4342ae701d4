//! The libc functions we interpose, resolved with `dlsym(RTLD_NEXT)`.
//!
//! Each is looked up once, on first use, and cached in an atomic; a symbol
//! libc does not have makes the wrapper fail with `ENOSYS` instead of
//! crashing.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int, c_long, c_void, mode_t, off_t, size_t, ssize_t};

/// Resolves `name` (NUL-terminated) in the objects after this library.
fn lookup(cache: &AtomicUsize, name: &'static [u8]) -> usize {
    let p = cache.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    // SAFETY: `name` is a NUL-terminated static string; dlsym is thread-safe.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    cache.store(p, Ordering::Release);
    p
}

macro_rules! real {
    ($( $(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, fail $fail:expr; )*) => {
        $(
            $(#[$m])*
            /// Calls the next definition of this libc function.
            ///
            /// # Safety
            ///
            /// Same contract as the libc function of that name.
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static CACHE: AtomicUsize = AtomicUsize::new(0);
                let p = lookup(&CACHE, concat!(stringify!($name), "\0").as_bytes());
                if p == 0 {
                    crate::errno::set(libc::ENOSYS);
                    return $fail;
                }
                // SAFETY: `p` is the address dlsym returned for this exact
                // symbol, whose C signature is the one declared here.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: forwarded under the caller's contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real! {
    fn syscall(nr: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long, fail -1;
    fn close(fd: c_int) -> c_int, fail -1;
    fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int, fail -1;
    fn dup(fd: c_int) -> c_int, fail -1;
    fn dup2(old: c_int, new: c_int) -> c_int, fail -1;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int, fail -1;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int, fail -1;
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int, fail -1;
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int, fail -1;
    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int, fail -1;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int, fail -1;
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int, fail -1;
    fn __open_2(path: *const c_char, flags: c_int) -> c_int, fail -1;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int, fail -1;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE, fail std::ptr::null_mut();
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE, fail std::ptr::null_mut();
    fn access(path: *const c_char, mode: c_int) -> c_int, fail -1;
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int, fail -1;
    fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int, fail -1;
    fn stat64(path: *const c_char, buf: *mut libc::stat) -> c_int, fail -1;
    fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int, fail -1;
    fn lstat64(path: *const c_char, buf: *mut libc::stat) -> c_int, fail -1;
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int, fail -1;
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int, fail -1;
    fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int, fail -1;
    fn statfs64(path: *const c_char, buf: *mut libc::statfs) -> c_int, fail -1;
    fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t, fail -1;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t, fail -1;
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int, fail -1;
    fn unlink(path: *const c_char) -> c_int, fail -1;
    fn rmdir(path: *const c_char) -> c_int, fail -1;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int, fail -1;
    fn nftw(dir: *const c_char, f: Option<crate::hooks::dirs::NftwFn>, nopenfd: c_int, flags: c_int) -> c_int, fail -1;
    fn nftw64(dir: *const c_char, f: Option<crate::hooks::dirs::NftwFn>, nopenfd: c_int, flags: c_int) -> c_int, fail -1;
    fn opendir(path: *const c_char) -> *mut libc::DIR, fail std::ptr::null_mut();
    fn readdir(dir: *mut libc::DIR) -> *mut libc::dirent, fail std::ptr::null_mut();
    fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64, fail std::ptr::null_mut();
    fn closedir(dir: *mut libc::DIR) -> c_int, fail -1;
    fn dirfd(dir: *mut libc::DIR) -> c_int, fail -1;
    #[expect(clippy::unused_unit, reason = "every entry of this macro names its return type")]
    fn rewinddir(dir: *mut libc::DIR) -> (), fail ();
    fn fdopendir(fd: c_int) -> *mut libc::DIR, fail std::ptr::null_mut();
    fn getdents64(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t, fail -1;
    fn telldir(dir: *mut libc::DIR) -> libc::c_long, fail -1;
    #[expect(clippy::unused_unit, reason = "every entry of this macro names its return type")]
    fn seekdir(dir: *mut libc::DIR, at: libc::c_long) -> (), fail ();
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: libc::c_uint, buf: *mut libc::statx) -> c_int, fail -1;
    fn name_to_handle_at(dirfd: c_int, path: *const c_char, handle: *mut libc::file_handle, mount_id: *mut c_int, flags: c_int) -> c_int, fail -1;
    fn uname(buf: *mut libc::utsname) -> c_int, fail -1;
    fn capget(hdr: *mut c_void, data: *mut c_void) -> c_int, fail -1;
    fn setrlimit(res: c_int, lim: *const libc::rlimit) -> c_int, fail -1;
    fn setrlimit64(res: c_int, lim: *const libc::rlimit) -> c_int, fail -1;
    fn prlimit(pid: libc::pid_t, res: c_int, new: *const libc::rlimit, old: *mut libc::rlimit) -> c_int, fail -1;
    fn prlimit64(pid: libc::pid_t, res: c_int, new: *const libc::rlimit, old: *mut libc::rlimit) -> c_int, fail -1;
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t, fail -1;
    fn ioctl(fd: c_int, request: libc::c_ulong, arg: libc::c_ulong) -> c_int, fail -1;
    fn epoll_wait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int, fail -1;
    fn epoll_pwait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int, sigmask: *const libc::sigset_t) -> c_int, fail -1;
    fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int, fail -1;
    fn __poll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int, fail -1;
    fn ppoll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int, fail -1;
    fn __ppoll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, sigmask: *const libc::sigset_t, fdslen: size_t) -> c_int, fail -1;
    fn epoll_pwait2(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int, fail -1;
    fn select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> c_int, fail -1;
    fn pselect(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int, fail -1;
    fn mmap(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void, fail libc::MAP_FAILED;
    fn mmap64(addr: *mut c_void, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void, fail libc::MAP_FAILED;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, fail -1;
    fn bind(fd: c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int, fail -1;
    fn getsockname(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int, fail -1;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: libc::socklen_t) -> c_int, fail -1;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t, fail -1;
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const libc::sockaddr, alen: libc::socklen_t) -> ssize_t, fail -1;
    fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t, fail -1;
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t, fail -1;
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut libc::sockaddr, alen: *mut libc::socklen_t) -> ssize_t, fail -1;
    fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t, fail -1;
    fn if_nametoindex(name: *const c_char) -> libc::c_uint, fail 0;
    fn if_indextoname(index: libc::c_uint, buf: *mut c_char) -> *mut c_char, fail std::ptr::null_mut();
}
