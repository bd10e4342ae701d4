//! The host side of telebpf's intrusion-detection extension: inspect a guest
//! kernel's processes, modules and TCP sockets from outside the guest.
//!
//! Three ways to get the memory a walk needs ([`Mode`]):
//! * **per-pointer** — the host walks the structures itself, one forwarded
//!   memory read per pointer it follows (the baseline of the research);
//! * **bulk-page** — one request runs a collector in the guest; the proxy
//!   returns every guest page the collector touched;
//! * **bulk-data** — the same, returning address, size and bytes of each
//!   field read.
//!
//! In every mode the same walker reads typed structures through a
//! [`view::View`] over a [`memory::GuestMemory`] cache, with field offsets
//! from the **guest's** BTF ([`layout::Types`]): a bulk batch simply
//! pre-fills the cache. [`Inspector`] is the client API; [`direct`] runs the
//! same collectors in the local kernel (the benchmark's baseline).

pub mod detect;
pub mod direct;
pub mod layout;
pub mod memory;
pub mod render;
pub mod view;
pub mod walk;

use std::time::{Duration, Instant};

use telebpf_client::cache::Cached;
use telebpf_client::{ClientError, Connection, Settings};
use telebpf_collectors::record::{self, Status};
use telebpf_collectors::Collector;
use telebpf_protocol::message::{
    Batch, CollectError, CollectMode, CollectRequest, FileOp, FileReply, Memory, MemoryRange,
    Reply, Request, Start,
};

use layout::Types;
use memory::GuestMemory;
use telebpf_collectors::pages::PageSet;
use view::{Source, View};

pub use walk::modules::Module;
pub use walk::processes::Process;
pub use walk::tcp::TcpSocket;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The channel to the proxy failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The proxy answered something unexpected.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The proxy's policy does not let this key read kernel memory.
    #[error("{0}")]
    Refused(telebpf_protocol::message::Refusal),
    /// Guest memory the walk needed could not be read.
    #[error("guest memory at {0:#x} is unreadable")]
    Unreadable(u64),
    /// A list or chain did not end.
    #[error("the {0} does not end")]
    TooLong(&'static str),
    /// The guest's BTF lacks something the walk needs.
    #[error(transparent)]
    Missing(#[from] layout::Missing),
    /// The guest's layout is not one the walker knows.
    #[error("unsupported layout: {0}")]
    Layout(String),
    /// The guest kernel cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// The collector could not be loaded or run.
    #[error("collector: {0}")]
    Collector(String),
    /// The guest's BTF could not be fetched or parsed.
    #[error("guest BTF: {0}")]
    Btf(String),
}

/// The error of a reply that does not answer the request. Its text is at
/// most [`UNEXPECTED_TEXT`] bytes of the reply's debug form: the reply
/// comes from the guest's side, which may send a frame of 64 MiB, and the
/// text ends up in logs and in a monitor's events.
fn unexpected(reply: &Reply) -> Error {
    /// A `fmt::Write` that stops, with an error, once it holds `limit` bytes.
    struct Bounded {
        text: String,
        limit: usize,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = self.limit - self.text.len();
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
            self.text.push('…');
            Err(std::fmt::Error)
        }
    }
    let mut out = Bounded {
        text: String::new(),
        limit: UNEXPECTED_TEXT,
    };
    // An error here only means the text was cut.
    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{reply:?}"));
    Error::Protocol(out.text)
}

/// How much of an unexpected reply an error quotes.
pub const UNEXPECTED_TEXT: usize = 256;

/// How the memory of a walk is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One forwarded read per pointer followed.
    PerPointer,
    /// One request; the pages the collector touched.
    BulkPage,
    /// One request; the fields the collector read.
    BulkData,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::PerPointer, Mode::BulkPage, Mode::BulkData];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::PerPointer => "per-pointer",
            Mode::BulkPage => "bulk-page",
            Mode::BulkData => "bulk-data",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s:?} (per-pointer, bulk-page, bulk-data)"))
    }
}

/// The cost of one walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Requests sent.
    pub requests: u64,
    /// Responses received.
    pub responses: u64,
    /// Bytes on the wire, both ways.
    pub bytes: u64,
    /// Reads a batch did not hold (fetched one by one).
    pub misses: u64,
    /// Wall-clock time.
    pub time: Duration,
}

/// The result of one walk.
#[derive(Debug, Clone)]
pub struct Walk<T> {
    /// The rows found.
    pub rows: T,
    /// What it cost.
    pub cost: Cost,
}

/// Typed offsets for every walker, from one kernel's BTF. A walker whose
/// fields the BTF lacks keeps the reason, given when that walk is asked for.
#[derive(Debug)]
pub struct Layouts {
    processes: Result<walk::processes::Layout, layout::Missing>,
    tcp: Result<walk::tcp::Layout, layout::Missing>,
    modules: Result<walk::modules::Layout, layout::Missing>,
}

impl Layouts {
    /// Offsets from a BTF file.
    pub fn from_btf(path: &std::path::Path) -> Result<Layouts, Error> {
        let types = Types::from_path(path).map_err(Error::Btf)?;
        Ok(Layouts {
            processes: walk::processes::Layout::new(&types),
            tcp: walk::tcp::Layout::new(&types),
            modules: walk::modules::Layout::new(&types),
        })
    }

    /// Runs the walker of `collector` over `view` from `root`.
    pub fn walk(
        &self,
        collector: Collector,
        view: &mut View<'_>,
        root: u64,
    ) -> Result<Rows, Error> {
        Ok(match collector {
            Collector::Processes => {
                let l = self.processes.as_ref().map_err(Clone::clone)?;
                Rows::Processes(walk::processes::walk(view, l, root)?)
            }
            Collector::Tcp => {
                let l = self.tcp.as_ref().map_err(Clone::clone)?;
                Rows::Tcp(walk::tcp::walk(view, l, root, walk::tcp::Tables::Both)?)
            }
            Collector::Listeners => {
                let l = self.tcp.as_ref().map_err(Clone::clone)?;
                Rows::Tcp(walk::tcp::walk(
                    view,
                    l,
                    root,
                    walk::tcp::Tables::Listening,
                )?)
            }
            Collector::Modules => {
                let l = self.modules.as_ref().map_err(Clone::clone)?;
                Rows::Modules(walk::modules::walk(view, l, root)?)
            }
        })
    }
}

/// Rows of any collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// `ps`.
    Processes(Vec<Process>),
    /// `lsmod`.
    Modules(Vec<Module>),
    /// `/proc/net/tcp{,6}`.
    Tcp(Vec<TcpSocket>),
}

impl Rows {
    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Processes(r) => r.len(),
            Rows::Modules(r) => r.len(),
            Rows::Tcp(r) => r.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fills a cache from a batch (its records are kept, not copied).
pub fn memory_from_batch(batch: Batch) -> Result<GuestMemory, Error> {
    memory_from_delta(batch, None)
}

/// Fills a cache from a batch whose kept pages come from `base`, the pages
/// of the batch the request named (changed pages overwrite their old
/// copies there: nothing unchanged is copied).
fn memory_from_delta(batch: Batch, base: Option<PageSet>) -> Result<GuestMemory, Error> {
    let page = record::GUEST_PAGE as usize;
    if batch.page_data.len() != batch.pages.len() * page {
        return Err(Error::Protocol("page batch of the wrong size".into()));
    }
    let mut memory =
        GuestMemory::from_records(batch.records).map_err(|e| Error::Protocol(e.to_string()))?;
    let pages = match base {
        Some(base) if !batch.kept.is_empty() => base
            .update(&batch.kept, &batch.pages, &batch.page_data)
            .map_err(|e| Error::Protocol(e.to_string()))?,
        _ if !batch.kept.is_empty() => {
            return Err(Error::Protocol(
                "the proxy kept pages of a batch this client does not hold".into(),
            ))
        }
        _ => PageSet::new(&batch.pages, batch.page_data),
    };
    memory.set_pages(pages);
    Ok(memory)
}

/// Checks a collector's status: an incomplete walk is an error, not rows.
pub fn check_status(status: u64) -> Result<(), Error> {
    match Status::from_raw(status) {
        Status::Complete => Ok(()),
        Status::Unsupported => Err(Error::Unsupported(
            "the guest kernel's layout is not one the collector knows".into(),
        )),
        other => Err(Error::Collector(format!(
            "the walk did not complete: {other:?}"
        ))),
    }
}

/// How long an [`Inspector`] busy-waits for a reply before blocking.
pub const INSPECTOR_SPIN: Duration = Duration::from_millis(1);

/// A connection to a proxy, for inspecting its kernel.
pub struct Inspector {
    conn: Connection,
    layouts: Layouts,
    /// Per collector, the pages of its last page batch and the id the
    /// proxy keeps them under: the next page batch sends only the pages
    /// that changed since.
    page_bases: std::collections::HashMap<Collector, (u64, PageSet)>,
    /// How long each request may wait for its reply (none: forever).
    limit: Option<Duration>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").finish_non_exhaustive()
    }
}

struct Remote<'c> {
    conn: &'c mut Connection,
    limit: Option<Duration>,
}

/// One request and its reply, within `limit` if there is one (the
/// connection is then out of step on a timeout and must be dropped).
fn call(
    conn: &mut Connection,
    limit: Option<Duration>,
    req: &Request,
) -> Result<Reply, ClientError> {
    match limit {
        Some(limit) => conn.call_within(req, limit),
        None => conn.call(req),
    }
}

impl Source for Remote<'_> {
    fn peek(&mut self, ranges: &[MemoryRange]) -> Result<Memory, Error> {
        match call(self.conn, self.limit, &Request::Peek(ranges.to_vec()))? {
            Reply::Memory(Ok(m)) => Ok(m),
            Reply::Memory(Err(errno)) => Err(Error::Client(ClientError::Remote(errno))),
            Reply::Refused(r) => Err(Error::Refused(r)),
            other => Err(unexpected(&other)),
        }
    }
}

impl Inspector {
    /// Connects and fetches the guest's BTF (from the host cache when the
    /// guest's digest matches one already fetched).
    pub fn connect(settings: &Settings) -> Result<Inspector, Error> {
        // A collector run takes a hundred µs or more on the proxy's side:
        // wait for its batch busily that long rather than pay a cross-core
        // wake-up (the default spin suits the forwarding of single calls).
        let mut settings = settings.clone();
        settings.spin = settings.spin.max(INSPECTOR_SPIN);
        let mut conn = Connection::open(&settings)?;
        let layouts = match telebpf_client::cache::guest_file(&mut conn, "/sys/kernel/btf/vmlinux")?
        {
            Cached::File(path) => Layouts::from_btf(&path)?,
            Cached::Fresh(content) => {
                let tmp = std::env::temp_dir().join(format!("telebpf-btf-{}", std::process::id()));
                std::fs::write(&tmp, &content).map_err(|e| Error::Btf(e.to_string()))?;
                let layouts = Layouts::from_btf(&tmp);
                let _ = std::fs::remove_file(&tmp);
                layouts?
            }
        };
        Ok(Inspector {
            conn,
            layouts,
            page_bases: std::collections::HashMap::new(),
            limit: None,
        })
    }

    /// From now on, every request waits at most `limit` for its reply and
    /// fails with [`ClientError::Timeout`] after that (a monitor tells a
    /// guest that stopped answering from one that is slow). After a
    /// timeout the inspector is out of step: drop it and connect again.
    pub fn set_call_limit(&mut self, limit: Option<Duration>) {
        self.limit = limit;
    }

    /// What the proxy said of its guest when the session began.
    pub fn facts(&self) -> &telebpf_protocol::message::Facts {
        self.conn.facts()
    }

    /// The guest's BPF programs, the proxy's own collectors left out (one
    /// request).
    pub fn programs(&mut self) -> Result<Vec<telebpf_protocol::message::ProgramInfo>, Error> {
        match call(&mut self.conn, self.limit, &Request::Programs)? {
            Reply::Programs(Ok(p)) => Ok(p),
            Reply::Programs(Err(errno)) => Err(Error::Client(ClientError::Remote(errno))),
            Reply::Refused(r) => Err(Error::Refused(r)),
            other => Err(unexpected(&other)),
        }
    }

    /// A keep-alive: `Ok` if the proxy answers within `limit`.
    pub fn ping(&mut self, limit: Duration) -> Result<(), Error> {
        match self.conn.call_within(&Request::Ping(Vec::new()), limit)? {
            Reply::Pong(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether the proxy closed the connection (see
    /// [`Connection::peer_closed`]).
    pub fn peer_closed(&self) -> bool {
        self.conn.peer_closed()
    }

    /// Runs `collector` in the guest: one request (two the first time a
    /// proxy meets the collector, which then needs the object).
    fn batch(
        &mut self,
        collector: Collector,
        mode: CollectMode,
        base: Option<u64>,
    ) -> Result<Batch, Error> {
        let mut req = CollectRequest {
            base,
            collector: collector.id(),
            object: None,
            mode,
            start: if collector.starts_at_module_list() {
                Start::ModuleList
            } else {
                Start::Current
            },
        };
        loop {
            match call(&mut self.conn, self.limit, &Request::Collect(req.clone()))? {
                Reply::Collected(Ok(batch)) => {
                    check_status(batch.status)?;
                    return Ok(batch);
                }
                Reply::Collected(Err(CollectError::UnknownCollector)) if req.object.is_none() => {
                    req.object = Some(serde_bytes::ByteBuf::from(collector.object()));
                }
                Reply::Collected(Err(CollectError::Unsupported(why))) => {
                    return Err(Error::Unsupported(why))
                }
                Reply::Collected(Err(CollectError::Run(errno))) => {
                    return Err(Error::Client(ClientError::Remote(errno)))
                }
                Reply::Collected(Err(e)) => return Err(Error::Collector(format!("{e:?}"))),
                Reply::Refused(r) => return Err(Error::Refused(r)),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Walks `collector`'s structures in `mode`.
    pub fn walk(&mut self, collector: Collector, mode: Mode) -> Result<Walk<Rows>, Error> {
        let before = self.conn.traffic();
        let start = Instant::now();
        let mut page_base = 0;
        let (memory, root) = match mode {
            Mode::PerPointer => {
                let batch = self.batch(collector, CollectMode::Roots, None)?;
                (GuestMemory::new(), batch.root)
            }
            Mode::BulkPage => {
                let held = self.page_bases.remove(&collector);
                let batch = self.batch(collector, CollectMode::Page, held.as_ref().map(|h| h.0))?;
                let root = batch.root;
                page_base = batch.page_base;
                (memory_from_delta(batch, held.map(|h| h.1))?, root)
            }
            Mode::BulkData => {
                let batch = self.batch(collector, CollectMode::Data, None)?;
                let root = batch.root;
                (memory_from_batch(batch)?, root)
            }
        };
        let mut remote = Remote {
            conn: &mut self.conn,
            limit: self.limit,
        };
        let mut view = View::new(memory, &mut remote, mode == Mode::PerPointer);
        let rows = self.layouts.walk(collector, &mut view, root)?;
        let misses = view.misses();
        if page_base != 0 {
            self.page_bases
                .insert(collector, (page_base, view.into_memory().into_pages()));
        }
        let after = self.conn.traffic();
        Ok(Walk {
            rows,
            cost: Cost {
                requests: after.sent - before.sent,
                responses: after.received - before.received,
                bytes: after.bytes - before.bytes,
                misses,
                time: start.elapsed(),
            },
        })
    }

    /// The guest's processes.
    pub fn processes(&mut self, mode: Mode) -> Result<Walk<Rows>, Error> {
        self.walk(Collector::Processes, mode)
    }

    /// The process ids the guest's /proc lists (one request).
    pub fn proc_pids(&mut self) -> Result<std::collections::BTreeSet<u32>, Error> {
        let op = FileOp::ReadDir {
            path: "/proc".into(),
        };
        match call(&mut self.conn, self.limit, &Request::File(op))? {
            Reply::File(Ok(FileReply::Entries(names))) => {
                Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
            }
            Reply::File(Err(errno)) => Err(Error::Client(ClientError::Remote(errno))),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_reply_is_quoted_in_a_bounded_text() {
        let huge = Reply::Pong(vec![7; 1 << 20]);
        let Error::Protocol(text) = unexpected(&huge) else {
            panic!("not a protocol error");
        };
        assert!(text.starts_with("Pong("), "{text}");
        assert!(
            text.len() <= UNEXPECTED_TEXT + '…'.len_utf8(),
            "{}",
            text.len()
        );
        let Error::Protocol(small) = unexpected(&Reply::Pong(vec![1])) else {
            panic!("not a protocol error");
        };
        assert_eq!(small, "Pong([1])");
    }
}
