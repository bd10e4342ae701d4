//! The guest side of telebpf.
//!
//! `telebpf-proxy` runs inside the monitored machine, as root. It accepts
//! authenticated clients (the host's preload library and CLI), executes
//! their `bpf()` calls with the real syscall in its own kernel, answers the
//! files that describe that kernel, and holds the guest fds each client
//! created. A client's fds live in its [`session::Session`]: when the session
//! ends for any reason (the program exited, was killed, the connection
//! broke) every one of them is closed, so a vanished client leaks nothing.
//! Objects pinned in bpffs stay, as they would locally.
//!
//! Layout: [`server`] accepts connections and handles shutdown; [`session`]
//! runs one client's conversation (handshake on the async runtime, then a
//! blocking loop on a thread of its own); [`registry`] lets shutdown reach
//! the live sessions; [`bpf_exec`] turns a forwarded call into a
//! checked syscall; [`files`] decides which files a client may see,
//! [`resolve`] opens them without leaving the allow-list and
//! [`shared_files`] keeps one copy of each immutable one, [`bpf_symbols`]
//! the `[bpf]` kallsyms lines a session's programs had; [`facts`]
//! gathers what the Welcome message tells about the kernel; [`perf`] runs
//! `perf_event_open` and its ioctls; [`netlink`] relays a client's
//! `NETLINK_ROUTE` socket and answers interface lookups; [`limits`] bounds what clients can make
//! the proxy hold (fds derived from `RLIMIT_NOFILE`) and ends sessions
//! nobody drives; [`kmem`] budgets the kernel memory of the maps, programs
//! and BTF clients create; [`handshakes`] bounds the connections that have
//! not authenticated yet; [`throttle`] aggregates repeated log lines and
//! audit records; [`hangup`] interrupts the
//! long call of a client that went away; [`streams`] pushes the records of
//! guest rings to the host; [`bulk`] runs collectors and reads kernel
//! memory; [`policy`] decides what each key may ask (parsed, checked and
//! audited in one file each), [`guard`] checks what
//! a request names against the guest's objects (real program and attach
//! types, [`progcheck`]: a program's calls, [`ownership`]: which objects a
//! key created); [`audit`] writes the audit log; [`log`] prints.
//!
//! A session's calls into the guest kernel (`bpf()`, `perf_event_open`,
//! its ioctls, `read`, `close`, what `/proc/self/fd*` says of an fd) go
//! through the [`kernel::Kernel`] the server was given ([`Config::kernel`]:
//! the machine's own unless a test gives another), so its logic, the
//! policy and the limits are unit-tested over a fake kernel (`testing`,
//! test builds only), as are the guard's ownership and program checks.
//! Stream consumers, mapped maps and bpffs pins still make their syscalls
//! directly.

pub mod audit;
pub mod bpf_exec;
pub mod bpf_symbols;
pub mod bulk;
pub mod caps;
pub mod cgroup;
pub mod echo;
pub mod facts;
pub mod files;
pub mod guard;
pub mod handshakes;
pub mod hangup;
pub mod kernel;
pub mod kmem;
pub mod limits;
pub mod log;
pub mod netlink;
pub mod ownership;
pub mod perf;
pub mod policy;
pub mod progcheck;
pub mod registry;
pub mod resolve;
pub mod rings;
pub mod server;
pub mod session;
pub mod shared_files;
pub mod streams;
mod sys;
#[cfg(test)]
pub mod testing;
pub mod throttle;

pub use server::{run, Config, ConfigError};
