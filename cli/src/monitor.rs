//! `telebpf monitor`: one host watches many guests (see the
//! `telebpf-monitor` crate); this is its command line and its signals.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use telebpf_ids::Mode;
use telebpf_monitor::Options;

use crate::error::CliError;

/// Set by SIGTERM/SIGINT: every guest thread ends its round and stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Runs the monitor until SIGTERM/SIGINT (or `rounds` rounds per guest).
pub fn run(
    guests: &Path,
    interval_ms: u64,
    mode: Mode,
    output: Option<&PathBuf>,
    rounds: Option<u64>,
) -> Result<(), CliError> {
    if interval_ms == 0 {
        return Err(CliError::ZeroInterval);
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic; installing it
        // replaces the default action for this process only.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let options = Options {
        interval: Duration::from_millis(interval_ms),
        mode,
        rounds,
    };
    Ok(telebpf_monitor::run(
        guests,
        &options,
        output.map(PathBuf::as_path),
        &STOP,
    )?)
}
