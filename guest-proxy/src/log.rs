//! Minimal stderr logging: `info` always, `debug` when `TELEBPF_LOG=debug`.
//!
//! The proxy's log is a contract for the tests (they look for
//! `listening on`, `authentication failed` and `file <path>` lines), so it is
//! kept plain and line-oriented rather than routed through a framework.

use std::sync::OnceLock;

fn debug_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("TELEBPF_LOG").is_ok_and(|v| v == "debug"))
}

/// Prints one line prefixed with the program name.
pub fn info(msg: std::fmt::Arguments<'_>) {
    eprintln!("telebpf-proxy: {msg}");
}

/// Prints one line when debug logging is on.
pub fn debug(msg: std::fmt::Arguments<'_>) {
    if debug_enabled() {
        eprintln!("telebpf-proxy: {msg}");
    }
}

/// Whether debug lines are printed (to skip formatting costs).
pub fn is_debug() -> bool {
    debug_enabled()
}
