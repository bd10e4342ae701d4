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
//! Layout: [`hooks`] are the exported C functions; [`guard`] is the single
//! way into the library (re-entrancy, panics, errno); [`bpf`] is the one
//! place a `bpf()` call is decoded and answered; [`objects`] maps host fds to
//! guest objects; [`vfs`] turns guest files into real fds; [`state`] holds the
//! connection (lazy, per process, renewed after `fork`); [`memory`] touches
//! the program's memory without ever faulting; [`real`] finds libc's
//! functions; [`perf`] forwards `perf_event_open` and its ioctls; [`mirror`]
//! presents guest rings and mmapable maps to `mmap`; [`lost`] is what a
//! program sees once its proxy is gone, and [`watchdog`] the keep-alive
//! thread that finds that out for a quiet program.

pub mod bpf;
pub mod errno;
pub mod guard;
mod hooks;
pub mod lost;
pub mod memory;
pub mod mirror;
pub mod objects;
pub mod perf;
pub mod real;
pub mod state;
pub mod vfs;
pub mod watchdog;
