//! Bulk reads of guest kernel memory: runs the host's collectors and reads
//! kernel memory for per-pointer walks.
//!
//! One lock guards every loaded collector and the kernel-memory reader:
//! each collector is loaded once per proxy (known by the SHA-256 of its
//! object), and runs are serialised, which the collectors need (their ring
//! and `seen` map are shared by all runs). Session threads call in
//! directly: a hand-off to another thread would cost a cross-core wake-up
//! per per-pointer read.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use telebpf_collectors::loader::{KernelReader, LoadedCollector};
use telebpf_collectors::object_id;
use telebpf_collectors::record::Mode;
use telebpf_protocol::message::{
    Batch, CollectError, CollectMode, CollectRequest, Memory, MemoryRange, Start,
};

use crate::log;

/// Collector objects larger than this are refused (ours are ~30 KiB).
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

/// Runs a collector and returns its batch.
pub fn collect(req: CollectRequest) -> Result<Batch, CollectError> {
    worker().collect(req)
}

/// Reads kernel memory, one range after another.
pub fn peek(ranges: Vec<MemoryRange>) -> Result<Memory, i32> {
    let total: u64 = ranges.iter().map(|r| r.len as u64).sum();
    if total > MAX_PEEK {
        return Err(libc::E2BIG);
    }
    worker().peek(&ranges)
}

#[derive(Default)]
struct Worker {
    collectors: HashMap<[u8; 32], LoadedCollector>,
    reader: Option<KernelReader>,
    module_list: Option<Result<u64, String>>,
}

impl Worker {
    fn reader(&mut self) -> Result<&mut KernelReader, i32> {
        if self.reader.is_none() {
            match KernelReader::load() {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    log::info(format_args!("cannot load the kernel-memory reader: {e}"));
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

    fn collect(&mut self, req: CollectRequest) -> Result<Batch, CollectError> {
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
            let loaded =
                LoadedCollector::load(object).map_err(|e| CollectError::Load(e.to_string()))?;
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
                (batch.pages, batch.page_data) = self
                    .reader()
                    .map_err(CollectError::Run)?
                    .read_pages(&run.records)
                    .map_err(|e| CollectError::Run(e.errno()))?;
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
