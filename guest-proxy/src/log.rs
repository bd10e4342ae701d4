//! Minimal stderr logging: `info` always, `debug` when `TELEBPF_LOG=debug`.
//!
//! The proxy's log is a contract for the tests (they look for
//! `listening on`, `authentication failed` and `file <path>` lines), so it is
//! kept plain and line-oriented rather than routed through a framework.
//!
//! **One line per call, whatever the message holds.** Messages quote what
//! clients chose — paths, probe definitions, names, error texts that echo
//! their input — and a newline in such a string would start a line of the
//! client's making (`telebpf-proxy: session 1 from …: opened …`), a
//! carriage return or a terminal escape would hide or rewrite what a reader
//! sees. So every line is escaped here, in the one function every log site
//! goes through ([`escape`]): control characters (C0, DEL, C1), the Unicode
//! line and paragraph separators and the bidirectional overrides become
//! `\n`, `\r`, `\t`, `\x1b`, `\u{2028}`, …. Backslashes are left alone (a
//! message formatted with `{:?}` is already escaped and must not be escaped
//! twice), so a literal `\n` typed by a client looks like an escaped one:
//! ambiguous to read, but it can never start a line. Strings are UTF-8 by
//! the time they are formatted (client bytes go through
//! `String::from_utf8_lossy`). The audit log is JSON and escaped by
//! `serde_json`.
//!
//! **Repeated lines are throttled** ([`limited`], and the callers that keep
//! a [`Throttle`] of their own): see [`crate::throttle`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use crate::throttle::{Summary, Throttle};

fn debug_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("TELEBPF_LOG").is_ok_and(|v| v == "debug"))
}

/// Whether `c` must not reach a log line as it is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character, line separator and bidirectional
/// override escaped (see the module doc); borrowed when nothing needs it.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes `telebpf-proxy: <msg>` as one escaped line with one `write`.
fn emit(msg: std::fmt::Arguments<'_>) {
    let text = match msg.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(msg.to_string()),
    };
    let mut line = String::with_capacity(text.len() + 17);
    line.push_str("telebpf-proxy: ");
    line.push_str(&escape(&text));
    line.push('\n');
    // Nothing sensible to do when stderr is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Prints one line prefixed with the program name.
pub fn info(msg: std::fmt::Arguments<'_>) {
    emit(msg);
}

/// Prints one line when debug logging is on.
pub fn debug(msg: std::fmt::Arguments<'_>) {
    if debug_enabled() {
        emit(msg);
    }
}

/// Whether debug lines are printed (to skip formatting costs).
pub fn is_debug() -> bool {
    debug_enabled()
}

/// Prints the summary of `kind` lines held back: `<scope>: N more 'KIND'
/// lines suppressed over S s`.
pub fn suppressed(scope: &str, kind: &str, s: &Summary) {
    let secs = s
        .last
        .duration_since(s.first)
        .unwrap_or_default()
        .as_secs_f64();
    info(format_args!(
        "{scope}: {} more '{kind}' lines suppressed over {secs:.1} s",
        s.count
    ));
}

fn proxy_wide() -> std::sync::MutexGuard<'static, Throttle<&'static str>> {
    static T: OnceLock<Mutex<Throttle<&'static str>>> = OnceLock::new();
    T.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Prints a line of a proxy-wide kind that can repeat without bound
/// (accept failures, connections refused at a limit): the first
/// [`crate::throttle::BURST`] per interval, then one summary.
pub fn limited(kind: &'static str, msg: std::fmt::Arguments<'_>) {
    let (summary, write) = proxy_wide().note(kind, Instant::now(), SystemTime::now(), true);
    if let Some(s) = summary {
        suppressed("proxy", kind, &s);
    }
    if write {
        info(msg);
    }
}

/// Prints the summaries of the proxy-wide kinds whose interval is over
/// (the server calls this every second), or with `all` every pending one
/// (at shutdown).
pub fn flush_limited(all: bool) {
    let pending = {
        let mut t = proxy_wide();
        if all {
            t.drain()
        } else {
            t.expired(Instant::now())
        }
    };
    for (kind, s) in pending {
        suppressed("proxy", kind, &s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_unchanged() {
        let s = "session 1: file /sys/kernel/btf/vmlinux -> ok (\"quoted\" \\n)";
        assert!(matches!(escape(s), Cow::Borrowed(x) if x == s));
        assert_eq!(escape("päth ünicode"), "päth ünicode");
    }

    #[test]
    fn controls_separators_and_overrides_are_escaped() {
        let forged = "/x\ntelebpf-proxy: session 9 from x: opened\r\t\u{1b}[2K\u{7f}\u{85}";
        assert_eq!(
            escape(forged),
            "/x\\ntelebpf-proxy: session 9 from x: opened\\r\\t\\x1b[2K\\x7f\\x85"
        );
        assert_eq!(
            escape("a\u{2028}b\u{202e}c\u{2066}d"),
            "a\\u{2028}b\\u{202e}c\\u{2066}d"
        );
        assert!(!escape(forged).chars().any(needs_escape));
    }
}
