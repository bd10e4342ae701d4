//! The host side of telebpf as a library: everything a front-end does for
//! an unmodified eBPF program except catching its calls.
//!
//! A front-end catches a program's `bpf()`, `perf_event_open`, fd and file
//! calls (the preload, `libtelebpf_preload.so`, by shadowing libc; a
//! supervisor later, from outside the program) and hands them to this
//! crate, which forwards them to the proxy and answers with an
//! [`Error`](error::Error) whose [`errno`](error::Error::errno) the
//! front-end gives the program. The program's memory is reached through
//! [`telebpf_abi::memory::Memory`] ([`memory::ProcessMemory`]), its guest
//! objects' fds are kept in an [`fdtable::FdTable`].
//!
//! The modules form a stack; each uses only modules listed after it
//! (checked by `tests/layers.rs`):
//!
//! * [`mmap`]: which kind of host memory an object's `mmap` becomes;
//! * [`rings`]: mirrored ring buffers, perf buffers, user ring buffers;
//! * [`mapsync`]: mmapable maps kept in step with the guest;
//! * [`perf`]: `perf_event_open` and perf ioctls;
//! * [`netlink`]: `NETLINK_ROUTE` sockets relayed to the guest, and guest
//!   interface names and indexes;
//! * [`cgroup`]: the guest's cgroup2 tree (opened cgroups, walks, mount
//!   tables);
//! * [`bpf`]: the one place a `bpf()` call is decoded and answered;
//! * [`vfs`]: guest files as real fds;
//! * [`objects`]: `dup`, `close` and `read` of an object's fd;
//! * [`state`]: the connection (lazy, per process, renewed after `fork`),
//!   the program's memory, the fd table and the file cache, and
//!   [`state::State::ask`], the one way to send a request and take its
//!   expected answer;
//! * [`program`]: the program served, as far as fds go (this process for
//!   the preload, another one for a supervisor);
//! * [`watchdog`]: the keep-alive thread that finds a lost proxy for a
//!   quiet program;
//! * [`fdtable`]: host fds that stand for guest objects;
//! * [`memory`]: the program's memory, never faulting;
//! * [`sys`]: fd identity, memfds, the library's threads;
//! * [`error`]: typed errors, errno at the edge;
//! * [`lost`]: what a program sees once its proxy is gone;
//! * [`facts`]: `uname` and `capget` answered from the guest's facts.

pub mod bpf;
pub mod cgroup;
pub mod error;
pub mod facts;
pub mod fdtable;
pub mod lost;
pub mod mapsync;
pub mod memory;
pub mod mmap;
pub mod netlink;
pub mod objects;
pub mod perf;
pub mod program;
pub mod rings;
pub mod state;
pub mod sys;
pub mod vfs;
pub mod watchdog;
