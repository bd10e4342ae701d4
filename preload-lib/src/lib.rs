//! `libtelebpf_preload.so`: makes an unmodified eBPF program act on a guest
//! kernel.
//!
//! Loaded with `LD_PRELOAD` (see `telebpf exec`), it shadows the libc entry
//! points through which libbpf-based programs reach the kernel (`syscall`
//! for `bpf()`, the fd operations, and the files and calls that describe the
//! kernel) and forwards what concerns eBPF to a `telebpf-proxy` named by
//! `TELEBPF_TARGET`, authenticated with the key in `TELEBPF_KEY_FILE`.
//! Without `TELEBPF_TARGET` it stays out of the way.
//!
//! This crate is only the `extern "C"` layer: `hooks` are the exported C
//! functions; [`guard`] is the single way into the library (re-entrancy,
//! panics, errno); [`real`] finds libc's functions; [`errno`] reads and
//! sets the caller's errno. Everything they forward to — the connection,
//! the fd table, guest files, ring mirrors, map sync, perf events, the
//! lost-proxy handling — is the `telebpf-host` crate, which a front-end
//! that does not live inside the program can use as well.

pub mod errno;
pub mod guard;
mod hooks;
pub mod real;
