//! The bulk-read collectors: CO-RE eBPF programs that walk a kernel's
//! structures (processes, modules, TCP sockets) and record what they touched,
//! plus the loader that runs them and reads kernel memory on the proxy's side.

/// The version of the libbpf the collectors are loaded with, e.g. `v1.7`.
pub fn libbpf_version() -> String {
    // SAFETY: libbpf_version_string takes no argument and returns a pointer
    // to a static NUL-terminated string owned by libbpf.
    let version =
        unsafe { std::ffi::CStr::from_ptr(libbpf_rs::libbpf_sys::libbpf_version_string()) };
    version.to_string_lossy().into_owned()
}
