//! Bulk reads of guest kernel memory: runs the host's collectors and reads
//! kernel memory for per-pointer walks.
//!
//! A page batch is kept per session and collector ([`PageBases`]) as the
//! base of the next one: a client that still holds it gets again only the
//! pages whose bytes changed (a monitor walking every few seconds re-reads
//! mostly idle tasks), and the addresses of the rest. Every page is read
//! afresh and compared on every run, so nothing stale is ever vouched for.
//!
//! One lock guards every loaded collector and the kernel-memory reader:
//! each collector is loaded once per proxy (known by the SHA-256 of its
//! object), and runs are serialised, which the collectors need (their ring
//! and `seen` map are shared by all runs). Session threads call in
//! directly: a hand-off to another thread would cost a cross-core wake-up
//! per per-pointer read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use telebpf_collectors::loader::{KernelReader, LoadedCollector};
use telebpf_collectors::object_id;
use telebpf_collectors::pages::PageSet;
use telebpf_collectors::record::Mode;
use telebpf_protocol::message::{
    Batch, CollectError, CollectMode, CollectRequest, Memory, MemoryRange, ProgramInfo, Start,
};

use crate::log;

/// Collector objects larger than this are refused (ours are 5–190 KiB).
pub const MAX_OBJECT: usize = 4 << 20;
/// Distinct collectors held at once; a client cannot make the proxy hold more.
pub const MAX_COLLECTORS: usize = 16;
/// Bytes one peek may ask for.
pub const MAX_PEEK: u64 = 16 << 20;

static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();

fn worker() -> std::sync::MutexGuard<'static, Worker> {
    let lock = WORKER.get_or_init(|| Mutex::new(Worker::default()));
    // A panic while holding the lock leaves nothing half-done that matters
    // here (a collector run is retried by the next request).
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Page bytes one session keeps as bases (the process walk of a few
/// hundred tasks keeps ~1 MiB, the TCP walk of an empty 256k-bucket table
/// ~2.3 MiB).
pub const MAX_BASE_BYTES: usize = 32 << 20;
/// Page bytes all sessions together keep as bases.
pub const MAX_BASE_BYTES_TOTAL: usize = 512 << 20;

/// Bytes kept by every session's bases.
static BASE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// One session's page bases: per collector, the pages of its last page
/// batch as the guest held them then, and the id the client knows them by.
#[derive(Debug, Default)]
pub struct PageBases {
    by_collector: HashMap<[u8; 32], (u64, PageSet)>,
    last_id: u64,
}

impl PageBases {
    fn held_bytes(&self) -> usize {
        self.by_collector
            .values()
            .map(|(_, s)| s.held_bytes())
            .sum()
    }

    /// Takes out the base of `collector`: the client's `held` one, or none.
    fn take(&mut self, collector: &[u8; 32], held: Option<u64>) -> Option<PageSet> {
        let (id, set) = self.by_collector.remove(collector)?;
        BASE_BYTES.fetch_sub(set.held_bytes(), Ordering::Relaxed);
        (Some(id) == held).then_some(set)
    }

    /// Keeps `set` as the base of `collector` if the limits allow; its id,
    /// or 0.
    fn keep(&mut self, collector: [u8; 32], set: PageSet) -> u64 {
        let n = set.held_bytes();
        if self.held_bytes() + n > MAX_BASE_BYTES {
            return 0;
        }
        if BASE_BYTES.fetch_add(n, Ordering::Relaxed) + n > MAX_BASE_BYTES_TOTAL {
            BASE_BYTES.fetch_sub(n, Ordering::Relaxed);
            return 0;
        }
        self.last_id += 1;
        self.by_collector.insert(collector, (self.last_id, set));
        self.last_id
    }
}

impl Drop for PageBases {
    fn drop(&mut self) {
        BASE_BYTES.fetch_sub(self.held_bytes(), Ordering::Relaxed);
    }
}

/// Runs a collector and returns its batch; a page batch is answered
/// against the session's `bases`.
pub fn collect(req: CollectRequest, bases: &mut PageBases) -> Result<Batch, CollectError> {
    worker().collect(req, bases)
}

/// The guest's BPF programs, without the proxy's own (its collectors and
/// kernel-memory reader). The worker's lock is held meanwhile, so that no
/// collector is loaded between learning the proxy's ids and listing.
pub fn programs() -> Result<Vec<ProgramInfo>, i32> {
    let worker = worker();
    let own: Vec<u32> = worker
        .collectors
        .values()
        .flat_map(LoadedCollector::program_ids)
        .chain(worker.reader.iter().flat_map(KernelReader::program_ids))
        .collect();
    let listed = telebpf_collectors::programs::list(&own)?;
    drop(worker);
    Ok(listed
        .into_iter()
        .map(|p| ProgramInfo {
            id: p.id,
            prog_type: p.prog_type,
            name: p.name,
            tag: p.tag,
            uid: p.uid,
        })
        .collect())
}

/// Reads kernel memory, one range after another.
pub fn peek(ranges: Vec<MemoryRange>) -> Result<Memory, i32> {
    let total: u64 = ranges.iter().map(|r| r.len as u64).sum();
    if total > MAX_PEEK {
        return Err(libc::E2BIG);
    }
    worker().peek(&ranges)
}

/// How long a failed load (of the reader or of a collector) is answered
/// from memory before it is tried again. A load that fails once (lockdown,
/// a verifier that refuses the program) fails the same way next time, and
/// each attempt logs libbpf's messages: retried on every request, a key
/// holder's loop of requests would be a loop of log lines.
const RETRY_FAILED_LOAD: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct Worker {
    collectors: HashMap<[u8; 32], LoadedCollector>,
    reader: Option<KernelReader>,
    module_list: Option<Result<u64, String>>,
    /// The reader's last failed load: when, and the errno answered.
    reader_failed: Option<(std::time::Instant, i32)>,
    /// Collectors whose load failed lately (at most [`MAX_COLLECTORS`]).
    failed: HashMap<[u8; 32], (std::time::Instant, String)>,
}

impl Worker {
    fn reader(&mut self) -> Result<&mut KernelReader, i32> {
        if self.reader.is_none() {
            if let Some((at, errno)) = self.reader_failed {
                if at.elapsed() < RETRY_FAILED_LOAD {
                    return Err(errno);
                }
            }
            match KernelReader::load() {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    log::info(format_args!(
                        "cannot load the kernel-memory reader: {e} (not tried again for {RETRY_FAILED_LOAD:?})"
                    ));
                    self.reader_failed = Some((std::time::Instant::now(), libc::EPERM));
                    return Err(libc::EPERM);
                }
            }
        }
        Ok(self.reader.as_mut().expect("just set"))
    }

    fn peek(&mut self, ranges: &[MemoryRange]) -> Result<Memory, i32> {
        let list: Vec<(u64, u32)> = ranges.iter().map(|r| (r.addr, r.len)).collect();
        let mut memory = Memory::default();
        self.reader()?
            .read(&list, &mut memory.bytes, &mut memory.readable)
            .map_err(|e| e.errno())?;
        Ok(memory)
    }

    fn collect(
        &mut self,
        req: CollectRequest,
        bases: &mut PageBases,
    ) -> Result<Batch, CollectError> {
        let root_in = match req.start {
            Start::Current => 0,
            Start::ModuleList => self.module_list()?,
        };
        if !self.collectors.contains_key(&req.collector) {
            let Some(object) = req.object.as_ref() else {
                return Err(CollectError::UnknownCollector);
            };
            if object.len() > MAX_OBJECT {
                return Err(CollectError::Load(format!(
                    "object of {} bytes exceeds {MAX_OBJECT}",
                    object.len()
                )));
            }
            if object_id(object) != req.collector {
                return Err(CollectError::Load(
                    "the object does not match its id".into(),
                ));
            }
            if let Some((at, why)) = self.failed.get(&req.collector) {
                if at.elapsed() < RETRY_FAILED_LOAD {
                    return Err(CollectError::Load(why.clone()));
                }
            }
            let loaded = LoadedCollector::load(object).map_err(|e| {
                if self.failed.len() >= MAX_COLLECTORS {
                    self.failed.clear();
                }
                let why = e.to_string();
                self.failed
                    .insert(req.collector, (std::time::Instant::now(), why.clone()));
                CollectError::Load(why)
            })?;
            self.failed.remove(&req.collector);
            if self.collectors.len() >= MAX_COLLECTORS {
                self.collectors.clear();
            }
            log::info(format_args!(
                "loaded collector {}",
                hex(&req.collector[..6])
            ));
            self.collectors.insert(req.collector, loaded);
        }
        let mode = match req.mode {
            CollectMode::Roots => Mode::Roots,
            CollectMode::Page => Mode::Page,
            CollectMode::Data => Mode::Data,
        };
        let collector = self
            .collectors
            .get_mut(&req.collector)
            .expect("loaded above");
        let run = collector
            .run(mode, root_in)
            .map_err(|e| CollectError::Run(e.errno()))?;
        let mut batch = Batch {
            root: run.ctx.root,
            status: run.ctx.status,
            visited: run.ctx.visited,
            dropped: run.ctx.dropped,
            ..Batch::default()
        };
        match mode {
            Mode::Roots => {}
            Mode::Data => batch.records = run.records,
            Mode::Page => {
                let reader = self.reader().map_err(CollectError::Run)?;
                // Every page is read afresh and compared with the base's
                // copy: a page is only ever "kept" if its bytes are the
                // guest's now.
                let mut next = bases
                    .take(&req.collector, req.base)
                    .unwrap_or_default()
                    .next();
                reader
                    .read_pages_with(&run.records, |addr, bytes| {
                        if next.unchanged(addr, bytes) {
                            batch.kept.push(addr);
                            next.keep(addr).expect("unchanged implies held");
                        } else {
                            batch.pages.push(addr);
                            batch.page_data.extend_from_slice(bytes);
                            next.put(addr, bytes);
                        }
                    })
                    .map_err(|e| CollectError::Run(e.errno()))?;
                batch.page_base = bases.keep(req.collector, next.finish());
            }
        }
        Ok(batch)
    }

    /// The address of the kernel's `modules` list, from /proc/kallsyms.
    fn module_list(&mut self) -> Result<u64, CollectError> {
        let found = self
            .module_list
            .get_or_insert_with(telebpf_collectors::loader::module_list)
            .clone();
        found.map_err(CollectError::Unsupported)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use telebpf_protocol::message::{CollectMode, CollectRequest, Start};

    use super::*;

    /// A collector object that is no ELF fails to load; the failure is
    /// answered from memory afterwards, not loaded (and logged) again.
    #[test]
    fn a_failed_collector_load_is_not_retried_at_once() {
        let object = b"not an ELF object".to_vec();
        let req = || CollectRequest {
            collector: object_id(&object),
            object: Some(object.clone().into()),
            mode: CollectMode::Data,
            start: Start::Current,
            base: None,
        };
        let mut w = Worker::default();
        let mut bases = PageBases::default();
        let first = w.collect(req(), &mut bases).unwrap_err();
        assert!(matches!(first, CollectError::Load(_)), "{first:?}");
        let (at, _) = w.failed[&object_id(&object)];
        let again = w.collect(req(), &mut bases).unwrap_err();
        assert_eq!(format!("{again:?}"), format!("{first:?}"));
        assert_eq!(w.failed[&object_id(&object)].0, at, "not tried again");
    }
}
