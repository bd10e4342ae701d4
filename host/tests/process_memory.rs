//! [`ProcessMemory`] reaches another process by its pid, as a supervisor
//! serving a tool from outside it does.

use telebpf_abi::memory::Memory;
use telebpf_host::memory::ProcessMemory;

#[test]
fn another_pid_is_reached_by_pid() {
    // A child made by fork shares no memory with us afterwards: what
    // we write into it through its pid is not in ours.
    let mut v = [1u8, 2, 3, 4];
    let addr = v.as_mut_ptr() as u64;
    let (mut ask, mut tell) = ([0; 2], [0; 2]);
    // SAFETY: two pipes into local arrays.
    unsafe {
        assert_eq!(libc::pipe(ask.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(tell.as_mut_ptr()), 0);
    }
    // SAFETY: the child only reads a pipe, reads its own copy of `v`,
    // writes a pipe and exits, all async-signal-safe.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let mut b = [0u8; 1];
        // SAFETY: as above.
        unsafe {
            libc::read(ask[0], b.as_mut_ptr().cast(), 1);
            let seen = std::ptr::read_volatile(addr as *const u8);
            libc::write(tell[1], [seen].as_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    let theirs = ProcessMemory { pid: child };
    assert_eq!(theirs.read(addr, 4).unwrap(), vec![1, 2, 3, 4]);
    theirs.write(addr, &[7]).unwrap();
    let mut b = [0u8; 1];
    // SAFETY: pipe I/O on our own fds and a wait for our own child.
    unsafe {
        libc::write(ask[1], [1u8].as_ptr().cast(), 1);
        libc::read(tell[0], b.as_mut_ptr().cast(), 1);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    assert_eq!(b[0], 7, "the child saw the write");
    assert_eq!(v[0], 1, "our own memory is untouched");
}
