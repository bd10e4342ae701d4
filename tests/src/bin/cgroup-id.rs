//! `cgroup-id PATH`: prints the cgroup id of PATH as a program learns it
//! (`name_to_handle_at`, whose handle is the 8-byte id on cgroupfs, as
//! libbpf's selftests and bpftrace's `cgroupid()` read it), or
//! `errno E`. The cgroup tests run it through telebpf.

use std::ffi::CString;

fn main() {
    let path = std::env::args().nth(1).expect("usage: cgroup-id PATH");
    let c = CString::new(path).expect("a path without NUL");
    /// `struct file_handle` with room for a cgroup id.
    #[repr(C)]
    struct Handle {
        head: libc::file_handle,
        id: [u8; 8],
    }
    let mut h = Handle {
        head: libc::file_handle {
            handle_bytes: 8,
            handle_type: 0,
            f_handle: [],
        },
        id: [0; 8],
    };
    let mut mount_id = 0;
    // SAFETY: `h` is a file_handle followed by the 8 bytes its
    // handle_bytes names; `c` is NUL-terminated; all live during the call.
    let r = unsafe {
        libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), &mut h.head, &mut mount_id, 0)
    };
    if r != 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("errno {e}");
        std::process::exit(1);
    }
    println!("{}", u64::from_ne_bytes(h.id));
}
