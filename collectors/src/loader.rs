//! Loads and runs collectors and the kernel-memory reader in this machine's
//! kernel (the proxy's guest, or the benchmark's direct baseline). Needs
//! CAP_BPF and CAP_PERFMON (bpf_probe_read_kernel).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::{MapCore, Object, ObjectBuilder, ProgramInput};
use memmap2::{MmapMut, MmapOptions};

use crate::record::{CollectCtx, Mode};
use crate::ring::RingReader;

/// Ranges one reader run handles (`MAX_RANGES` in reader.bpf.c).
pub const READER_RANGES: usize = 2048;
/// Bytes per reader slot (`SLOT` in reader.bpf.c).
pub const READER_SLOT: usize = 4096;

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// libbpf refused to open or load it.
    #[error("libbpf: {0}")]
    Libbpf(#[from] libbpf_rs::Error),
    /// The object lacks a program or map the loader needs.
    #[error("the object has no {0}")]
    Missing(&'static str),
    /// A map could not be mapped.
    #[error("cannot map {0}: {1}")]
    Map(&'static str, io::Error),
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// BPF_PROG_TEST_RUN failed.
    #[error("test run: {0}")]
    TestRun(#[from] libbpf_rs::Error),
    /// The program returned an error of its own.
    #[error("the program returned {0}")]
    Program(u32),
}

impl RunError {
    /// The errno to report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            RunError::TestRun(e) => e.kind().into_errno(),
            RunError::Program(_) => libc::EINVAL,
        }
    }
}

trait IntoErrno {
    fn into_errno(self) -> i32;
}

impl IntoErrno for libbpf_rs::ErrorKind {
    fn into_errno(self) -> i32 {
        match self {
            libbpf_rs::ErrorKind::PermissionDenied => libc::EPERM,
            libbpf_rs::ErrorKind::NotFound => libc::ENOENT,
            libbpf_rs::ErrorKind::InvalidInput => libc::EINVAL,
            libbpf_rs::ErrorKind::OutOfMemory => libc::ENOMEM,
            _ => libc::EIO,
        }
    }
}

fn open(bytes: &[u8], name: &str) -> Result<Object, LoadError> {
    let mut builder = ObjectBuilder::default();
    builder.name(name)?;
    let object = builder.open_memory(bytes)?.load()?;
    // Runs take its one program without looking again.
    if object.progs().next().is_none() {
        return Err(LoadError::Missing("program"));
    }
    Ok(object)
}

/// A collector loaded into this kernel, with its ring buffer mapped.
pub struct LoadedCollector {
    object: Object,
    ring: RingReader,
    gen: u64,
}

/// What one run produced.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The context the collector wrote back.
    pub ctx: CollectCtx,
    /// The records, concatenated (header, then the bytes in data mode).
    pub records: Vec<u8>,
}

impl LoadedCollector {
    /// Opens, relocates (CO-RE, against this kernel's BTF) and loads a
    /// collector object.
    pub fn load(bytes: &[u8]) -> Result<LoadedCollector, LoadError> {
        let object = open(bytes, "telebpf_collector")?;
        let ring = {
            let map = object
                .maps()
                .find(|m| m.name() == "events")
                .ok_or(LoadError::Missing("`events` ring buffer"))?;
            RingReader::new(&map.as_fd().as_raw_fd(), map.max_entries() as usize)
                .map_err(|e| LoadError::Map("events", e))?
        };
        Ok(LoadedCollector {
            object,
            ring,
            gen: 0,
        })
    }

    /// The ids of its programs (a monitor listing the guest's programs
    /// leaves the proxy's own out).
    pub fn program_ids(&self) -> Vec<u32> {
        program_ids(&self.object)
    }

    /// Runs the collector once (BPF_PROG_TEST_RUN) and drains its records.
    pub fn run(&mut self, mode: Mode, root_in: u64) -> Result<Run, RunError> {
        self.gen += 1;
        let mut ctx_in = CollectCtx {
            mode: mode as u64,
            gen: self.gen,
            root_in,
            ..CollectCtx::default()
        }
        .to_bytes();
        run_syscall_program(&mut self.object, &mut ctx_in)?;
        let mut records = Vec::new();
        self.ring.drain_into(&mut records);
        Ok(Run {
            ctx: CollectCtx::from_bytes(&ctx_in),
            records,
        })
    }
}

/// Runs the object's one `SEC("syscall")` program once with `ctx` as its
/// context; a non-zero return is an error.
fn run_syscall_program(object: &mut Object, ctx: &mut [u8]) -> Result<(), RunError> {
    let prog = object.progs_mut().next().expect("checked at load");
    // Syscall programs take no ctx_out: the kernel copies the context back
    // over ctx_in.
    let input = ProgramInput {
        context_in: Some(ctx),
        ..ProgramInput::default()
    };
    let output = prog.test_run(input)?;
    if output.return_value != 0 {
        return Err(RunError::Program(output.return_value));
    }
    Ok(())
}

fn program_ids(object: &Object) -> Vec<u32> {
    object
        .progs()
        .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
        .collect()
}

/// The kernel-memory reader (`bpf/reader.bpf.c`): reads lists of kernel
/// address ranges with bpf_probe_read_kernel, one program run per list.
pub struct KernelReader {
    object: Object,
    ranges: MmapMut,
    slots: MmapMut,
}

fn map_array(object: &Object, name: &'static str) -> Result<MmapMut, LoadError> {
    let map = object
        .maps()
        .find(|m| m.name() == name)
        .ok_or(LoadError::Missing(name))?;
    let len = map.max_entries() as usize * map.value_size() as usize;
    // SAFETY: the map is an mmapable array of `len` bytes; the mapping
    // keeps the map alive and only this reader writes to it from user space.
    unsafe { MmapOptions::new().len(len).map_mut(map.as_fd().as_raw_fd()) }
        .map_err(|e| LoadError::Map(name, e))
}

impl KernelReader {
    /// Loads the reader into this kernel.
    pub fn load() -> Result<KernelReader, LoadError> {
        let object = open(crate::reader_object(), "telebpf_reader")?;
        let ranges = map_array(&object, "ranges")?;
        let slots = map_array(&object, "slots")?;
        Ok(KernelReader {
            object,
            ranges,
            slots,
        })
    }

    /// The ids of its programs.
    pub fn program_ids(&self) -> Vec<u32> {
        program_ids(&self.object)
    }

    /// Reads each `(addr, len)` range, appending their bytes to `out` in
    /// order (unreadable bytes as zeros) and whether each range was wholly
    /// readable to `readable`.
    pub fn read(
        &mut self,
        ranges: &[(u64, u32)],
        out: &mut Vec<u8>,
        readable: &mut Vec<bool>,
    ) -> Result<(), RunError> {
        // Split into slot-sized pieces, remembering which range each is of.
        let mut pieces: Vec<(u64, u32, usize)> = Vec::new();
        for (i, &(addr, len)) in ranges.iter().enumerate() {
            let mut done = 0u32;
            while done < len {
                let n = (len - done).min(READER_SLOT as u32);
                pieces.push((addr.wrapping_add(done as u64), n, i));
                done += n;
            }
        }
        let first = readable.len();
        readable.extend(ranges.iter().map(|_| true));
        for batch in pieces.chunks(READER_RANGES) {
            let ranges: Vec<(u64, u32)> = batch.iter().map(|&(a, n, _)| (a, n)).collect();
            self.run_batch(&ranges)?;
            for (slot, &(_, len, range)) in batch.iter().enumerate() {
                let ok = self.ranges[slot * 16 + 12] != 0;
                let bytes = &self.slots[slot * READER_SLOT..slot * READER_SLOT + len as usize];
                if ok {
                    out.extend_from_slice(bytes);
                } else {
                    out.extend(std::iter::repeat_n(0u8, len as usize));
                    readable[first + range] = false;
                }
            }
        }
        Ok(())
    }

    /// Reads the pages a page-mode run recorded (`records`: page-mode
    /// records) and returns the readable ones: their addresses, and their
    /// bytes one page after another in the same order.
    pub fn read_pages(&mut self, records: &[u8]) -> Result<(Vec<u64>, Vec<u8>), RunError> {
        let mut addrs = Vec::new();
        let mut bytes = Vec::new();
        self.read_pages_with(records, |addr, page| {
            addrs.push(addr);
            bytes.extend_from_slice(page);
        })?;
        Ok((addrs, bytes))
    }

    /// Reads each page a page-mode run recorded, once (a collision in the
    /// collector's table may record a page twice), and hands every readable
    /// one to `each` straight from the reader's memory: nothing is copied
    /// that `each` does not copy.
    pub fn read_pages_with(
        &mut self,
        records: &[u8],
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), RunError> {
        let mut seen = rustc_hash::FxHashSet::default();
        let pages: Vec<u64> = crate::record::records(records, false)
            .filter_map(Result::ok)
            .map(|r| r.addr)
            .filter(|&a| seen.insert(a))
            .collect();
        for batch in pages.chunks(READER_RANGES) {
            let ranges: Vec<(u64, u32)> = batch.iter().map(|&a| (a, READER_SLOT as u32)).collect();
            self.run_batch(&ranges)?;
            for (slot, &addr) in batch.iter().enumerate() {
                if self.ranges[slot * 16 + 12] != 0 {
                    each(
                        addr,
                        &self.slots[slot * READER_SLOT..(slot + 1) * READER_SLOT],
                    );
                }
            }
        }
        Ok(())
    }

    /// One run of the reader over at most [`READER_RANGES`] ranges of at
    /// most [`READER_SLOT`] bytes: fills `slots` and marks `ranges`.
    fn run_batch(&mut self, batch: &[(u64, u32)]) -> Result<(), RunError> {
        for (slot, &(addr, len)) in batch.iter().enumerate() {
            let at = slot * 16;
            self.ranges[at..at + 8].copy_from_slice(&addr.to_ne_bytes());
            self.ranges[at + 8..at + 12].copy_from_slice(&len.to_ne_bytes());
            self.ranges[at + 12..at + 16].copy_from_slice(&0u32.to_ne_bytes());
        }
        let mut ctx = [0u8; 8];
        ctx[..4].copy_from_slice(&(batch.len() as u32).to_ne_bytes());
        run_syscall_program(&mut self.object, &mut ctx)
    }
}

/// The address of this kernel's module list (`modules`), from
/// /proc/kallsyms; or why there is none.
pub fn module_list() -> Result<u64, String> {
    if !std::path::Path::new("/proc/modules").exists() {
        return Err(
            "this kernel has no module support (CONFIG_MODULES is off: no /proc/modules)".into(),
        );
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms")
        .map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    for line in kallsyms.lines() {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if name == "modules" {
            let addr = u64::from_str_radix(addr, 16).unwrap_or(0);
            if addr == 0 {
                return Err("/proc/kallsyms hides addresses (kptr_restrict)".into());
            }
            return Ok(addr);
        }
    }
    Err("the `modules` list is not in /proc/kallsyms (the kernel lacks CONFIG_KALLSYMS_ALL)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{records, Status};
    use crate::Collector;

    fn privileged() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn the_process_collector_finds_this_process_in_every_mode() {
        if !privileged() {
            eprintln!("SKIP: needs root");
            return;
        }
        let mut c = LoadedCollector::load(Collector::Processes.object()).expect("load");
        let roots = c.run(Mode::Roots, 0).expect("roots");
        assert_eq!(Status::from_raw(roots.ctx.status), Status::Complete);
        assert_ne!(roots.ctx.root, 0);
        assert!(roots.records.is_empty());

        let data = c.run(Mode::Data, 0).expect("data");
        assert_eq!(Status::from_raw(data.ctx.status), Status::Complete);
        assert!(data.ctx.visited > 1, "{:?}", data.ctx);
        let me = std::process::id().to_ne_bytes();
        let found = records(&data.records, true)
            .map(|r| r.expect("well-formed"))
            .any(|r| r.len == 4 && r.bytes == me);
        assert!(found, "our own pid is not among the records");

        let pages = c.run(Mode::Page, 0).expect("pages");
        let n = records(&pages.records, false).count();
        assert!(n > 0 && n as u64 == pages.ctx.records);
        // The same run repeated records the same pages once more: the
        // generation, not a stale `seen` entry, decides.
        let again = c.run(Mode::Page, 0).expect("pages again");
        assert!(again.ctx.records as usize >= n / 2);
    }

    #[test]
    fn the_reader_reads_what_a_collector_recorded_and_flags_bad_addresses() {
        if !privileged() {
            eprintln!("SKIP: needs root");
            return;
        }
        let mut c = LoadedCollector::load(Collector::Processes.object()).expect("load");
        let data = c.run(Mode::Data, 0).expect("data");
        let recs: Vec<_> = records(&data.records, true)
            .map(|r| r.unwrap())
            .take(50)
            .collect();
        let ranges: Vec<(u64, u32)> = recs.iter().map(|r| (r.addr, r.len)).collect();
        let mut reader = KernelReader::load().expect("reader");
        let (mut out, mut ok) = (Vec::new(), Vec::new());
        reader.read(&ranges, &mut out, &mut ok).expect("read");
        assert!(ok.iter().all(|&b| b));
        let mut at = 0;
        for r in &recs {
            // Pids, comms and links of live tasks do not change between the two reads
            // often; compare the pid/tgid fields only (4 bytes), which never do.
            if r.len == 4 {
                assert_eq!(&out[at..at + 4], r.bytes);
            }
            at += r.len as usize;
        }
        let (mut out, mut ok) = (Vec::new(), Vec::new());
        reader
            .read(&[(8, 16), (ranges[0].0, 9000)], &mut out, &mut ok)
            .expect("read");
        assert!(!ok[0]);
        assert_eq!(out.len(), 16 + 9000);
        assert!(out[..16].iter().all(|&b| b == 0));
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use crate::record::{records, Status};
    use crate::Collector;

    #[test]
    fn the_tcp_collector_walks_both_tables_and_modules_says_unsupported_or_walks() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().unwrap().port();
        let mut c = LoadedCollector::load(Collector::Tcp.object()).expect("load tcp");
        for mode in [Mode::Data, Mode::Page] {
            let t = std::time::Instant::now();
            let run = c.run(mode, 0).expect("run");
            let n = records(&run.records, mode == Mode::Data).count();
            eprintln!(
                "tcp {mode:?}: {:?} in {:?}, {} records, {} bytes",
                run.ctx,
                t.elapsed(),
                n,
                run.records.len()
            );
            assert_eq!(Status::from_raw(run.ctx.status), Status::Complete);
            assert!(run.ctx.visited >= 1);
            if mode == Mode::Data {
                // skc_num is in host order: our listener's port is among the 2-byte reads.
                let found = records(&run.records, true)
                    .map(|r| r.unwrap())
                    .any(|r| r.len == 2 && r.bytes == port.to_ne_bytes());
                assert!(found, "port {port} not recorded");
            }
        }
        let mut m = LoadedCollector::load(Collector::Modules.object()).expect("load modules");
        let run = m.run(Mode::Data, 0).expect("run");
        eprintln!("modules: {:?}", run.ctx);
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::Collector;

    #[test]
    #[ignore = "prints timings; run by hand"]
    fn time_runs() {
        let mut c = LoadedCollector::load(Collector::Processes.object()).expect("load");
        for mode in [Mode::Roots, Mode::Data, Mode::Page, Mode::Data] {
            let mut best = std::time::Duration::MAX;
            let mut n = 0;
            for _ in 0..50 {
                let t = std::time::Instant::now();
                let r = c.run(mode, 0).expect("run");
                best = best.min(t.elapsed());
                n = r.records.len();
            }
            eprintln!("{mode:?}: best {best:?}, {n} bytes");
        }
    }
}
