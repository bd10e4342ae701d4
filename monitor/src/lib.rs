//! `telebpf monitor`: one host watches many guests.
//!
//! A provider runs one monitor per host. For every guest of its guests file
//! ([`config`]) a thread of its own connects to that guest's proxy, reads
//! the guest kernel's task list, `/proc` listing, modules, TCP listeners
//! and BPF programs once per round, and turns what changed into events
//! ([`observe`]); one writer prints them as JSON lines ([`event`], whose
//! stable shape is [`schema`]). A slow or dead guest holds only its own
//! thread: the others keep their rounds.

pub mod config;
pub mod event;
pub mod guest;
pub mod observe;
pub mod schema;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

pub use guest::Options;

/// What stops a monitor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guests file is wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The output file cannot be opened.
    #[error("output {0}: {1}")]
    Open(PathBuf, std::io::Error),
    /// Writing an event failed (the reader went away, the disk is full).
    #[error("output: {0}")]
    Write(std::io::Error),
    /// A guest thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Events in flight between the guest threads and the writer: a writer
/// that cannot keep up (a blocked pipe) holds the guests back at this
/// many, instead of letting memory grow.
pub const QUEUE: usize = 4096;

/// Runs a monitor over the guests of `guests_file`, writing events to
/// `output` (stdout if `None`) until `stop` is set or, with
/// `options.rounds`, every guest has done its rounds.
pub fn run(
    guests_file: &Path,
    options: &Options,
    output: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let guests = config::read(guests_file)?;
    let mut out: Box<dyn Write + Send> = match output {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::Open(path.into(), e))?,
        ),
    };
    let (tx, rx) = mpsc::sync_channel::<event::Event>(QUEUE);
    std::thread::scope(|scope| {
        for g in &guests {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("guest {}", g.name))
                .spawn_scoped(scope, move || guest::watch(g, options, &tx, stop))
                .map_err(|e| {
                    // The guests already started must end, or the scope
                    // would wait for them for ever.
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    Error::Thread(e)
                })?;
        }
        drop(tx);
        // Every event is its own line, flushed at once: a log shipper
        // reading the pipe sees it now, not when a buffer fills. After a
        // failed write the guests are stopped and the queue drained, so
        // that none stays blocked on a full queue.
        let mut failed = None;
        for e in rx {
            if failed.is_none() {
                if let Err(err) = writeln!(out, "{}", e.to_line()).and_then(|()| out.flush()) {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    failed = Some(err);
                }
            }
        }
        failed.map_or(Ok(()), |e| Err(Error::Write(e)))
    })
}
