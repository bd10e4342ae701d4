//! The "direct" baseline: the same collectors and walkers, run in this
//! machine's own kernel with no channel in between (needs root). The
//! benchmark compares the forwarded modes against it.

use std::collections::HashMap;
use std::time::Instant;

use telebpf_collectors::loader::{self, KernelReader, LoadedCollector};
use telebpf_collectors::record::Mode as RunMode;
use telebpf_collectors::Collector;
use telebpf_protocol::message::{Batch, Memory, MemoryRange};

use crate::view::{Source, View};
use crate::{check_status, memory_from_batch, Cost, Error, Layouts, Mode, Rows, Walk};

/// Collectors loaded in the local kernel.
pub struct Direct {
    layouts: Layouts,
    collectors: HashMap<Collector, LoadedCollector>,
    reader: KernelReader,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

struct Local<'r>(&'r mut KernelReader);

impl Source for Local<'_> {
    fn peek(&mut self, ranges: &[MemoryRange]) -> Result<Memory, Error> {
        let list: Vec<(u64, u32)> = ranges.iter().map(|r| (r.addr, r.len)).collect();
        let mut m = Memory::default();
        self.0
            .read(&list, &mut m.bytes, &mut m.readable)
            .map_err(|e| Error::Collector(e.to_string()))?;
        Ok(m)
    }
}

impl Direct {
    /// Loads the reader; collectors load on first use.
    pub fn new() -> Result<Direct, Error> {
        Ok(Direct {
            layouts: Layouts::from_btf(std::path::Path::new("/sys/kernel/btf/vmlinux"))?,
            collectors: HashMap::new(),
            reader: KernelReader::load().map_err(|e| Error::Collector(e.to_string()))?,
        })
    }

    /// Runs `collector` locally in a bulk mode and walks its records, as the
    /// proxy and the host would, minus the channel.
    pub fn walk(&mut self, collector: Collector, mode: Mode) -> Result<Walk<Rows>, Error> {
        let start = Instant::now();
        let root_in = if collector.starts_at_module_list() {
            loader::module_list().map_err(Error::Unsupported)?
        } else {
            0
        };
        let c = match self.collectors.entry(collector) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                LoadedCollector::load(collector.object())
                    .map_err(|e| Error::Collector(e.to_string()))?,
            ),
        };
        let run_mode = if mode == Mode::BulkPage {
            RunMode::Page
        } else {
            RunMode::Data
        };
        let run = c
            .run(run_mode, root_in)
            .map_err(|e| Error::Collector(e.to_string()))?;
        check_status(run.ctx.status)?;
        let mut batch = Batch {
            root: run.ctx.root,
            ..Batch::default()
        };
        if run_mode == RunMode::Page {
            (batch.pages, batch.page_data) = self
                .reader
                .read_pages(&run.records)
                .map_err(|e| Error::Collector(e.to_string()))?;
        } else {
            batch.records = run.records;
        }
        let root = batch.root;
        let memory = memory_from_batch(batch)?;
        let mut local = Local(&mut self.reader);
        let mut view = View::new(memory, &mut local, false);
        let rows = self.layouts.walk(collector, &mut view, root)?;
        Ok(Walk {
            rows,
            cost: Cost {
                misses: view.misses(),
                time: start.elapsed(),
                ..Cost::default()
            },
        })
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "prints timings; run by hand as root"]
    fn time_phases() {
        let mut d = Direct::new().expect("direct");
        let c = Collector::Processes;
        d.walk(c, Mode::BulkData).expect("warm");
        let lc = d.collectors.get_mut(&c).unwrap();
        let t = Instant::now();
        let run = lc.run(RunMode::Data, 0).unwrap();
        let t_run = t.elapsed();
        let batch = Batch {
            root: run.ctx.root,
            records: run.records,
            ..Batch::default()
        };
        let root = batch.root;
        let t = Instant::now();
        let memory = memory_from_batch(batch).unwrap();
        let t_fill = t.elapsed();
        let mut local = Local(&mut d.reader);
        let mut view = View::new(memory, &mut local, false);
        let t = Instant::now();
        let rows = d.layouts.walk(c, &mut view, root).unwrap();
        let t_walk = t.elapsed();
        eprintln!(
            "run {t_run:?} fill {t_fill:?} walk {t_walk:?} rows {} misses {}",
            rows.len(),
            view.misses()
        );
    }
}
