//! The audit log (`telebpf-proxy --audit FILE|-`): one JSON object per line.
//!
//! Every record has `time` (UTC, RFC 3339 with milliseconds) and `event`:
//!
//! * `session_opened`: `session`, `key`, `key_id`, `policy`, `peer`;
//! * `session_closed`: `session`, `key`, `reason`, `objects` (guest fds the
//!   session still held, now closed), `kernel_reads` and `kernel_read_bytes`
//!   (per-pointer reads of guest kernel memory it was served);
//! * `handshake_failed`: a connection that did not become a session:
//!   `session` (the number it would have had), `peer`, `error` (a wrong
//!   key, garbage, a timeout, refused at `--max-sessions`, dropped for a
//!   newer connection at `--max-handshakes`);
//! * `request`: a request that creates or changes something (see
//!   [`crate::policy::audited`]) and its outcome: `session`, `key`, `op`
//!   (`BPF_PROG_LOAD`, `perf_event_open`, `unlink`, `collect`, …), `detail` (a type, a
//!   path, or null), `ret` (the return value, or null) and `errno` (0 on
//!   success);
//! * `refused`: a request the key's policy does not allow: `session`, `key`,
//!   `policy`, `op`, `rule`;
//! * `suppressed`: records of one kind held back (see below): `of` (the
//!   kind: `refused`, `request` or `handshake_failed`), `session` and `key`
//!   (null for handshakes), `peer` (the peer group of failed handshakes:
//!   `unix peer uid N`, `vsock:CID`; else null), `op` (for `request`: the
//!   op; else null), `count` (records held back), `errors` (how many of
//!   them failed: all, for refusals and handshakes), `first` and `last`
//!   (RFC 3339 times of the first and last of them).
//!
//! **Aggregation.** `refused` and `request` records are throttled per
//! session (requests per op), `handshake_failed` per peer group
//! ([`crate::throttle`]): in every interval of
//! [`INTERVAL`](crate::throttle::INTERVAL) (10 s) the first
//! [`BURST`](crate::throttle::BURST) (20) of a kind —
//! [`REQUEST_BURST`](crate::throttle::REQUEST_BURST) (200) for requests of
//! one op — are written in full and the rest counted; one `suppressed`
//! record per kind and interval then gives the count, written once the
//! interval is over (with the session's next request or quiet tick, or the
//! server's one-second tick for handshakes), when the session ends, or when
//! the proxy stops. Every refusal, audited request and failed handshake is
//! therefore either a record of its own or counted in exactly one
//! `suppressed` record. `session_opened` and `session_closed` are never
//! held back.
//!
//! A line is written whole with one `write` (under a lock), so concurrent
//! sessions never interleave inside a record, and a reader of the file sees
//! complete lines. A failing write is reported once on the proxy's stderr
//! and does not stop the proxy: the log is evidence, not a gate.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::log;
use crate::throttle::Summary;

/// One audit record's content (the `time` is added when it is written).
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A client authenticated.
    SessionOpened {
        /// The proxy's number for the session.
        session: u64,
        /// The key's name.
        key: &'a str,
        /// The key's public id (hex), as the client announced it.
        key_id: &'a str,
        /// The key's policy.
        policy: &'a str,
        /// The client's address.
        peer: &'a str,
    },
    /// A session ended; its guest fds are closed.
    SessionClosed {
        /// The session.
        session: u64,
        /// The key's name.
        key: &'a str,
        /// Why it ended.
        reason: &'a str,
        /// How many guest fds it still held.
        objects: usize,
        /// Per-pointer kernel-memory reads it was served (each collector
        /// run is a `request` record of its own).
        kernel_reads: u64,
        /// Their bytes.
        kernel_read_bytes: u64,
    },
    /// A connection did not authenticate.
    HandshakeFailed {
        /// The number the connection would have had.
        session: u64,
        /// The client's address.
        peer: &'a str,
        /// Why.
        error: &'a str,
    },
    /// A request that creates or changes something, and its outcome.
    Request {
        /// The session.
        session: u64,
        /// The key's name.
        key: &'a str,
        /// What was asked.
        op: &'a str,
        /// A type, a path, or nothing.
        detail: Option<&'a str>,
        /// The return value (a new guest fd, the objects a collector
        /// visited, …), if the request has one.
        ret: Option<i64>,
        /// 0 on success, else the errno the client got.
        errno: i32,
    },
    /// A request the key's policy refused.
    Refused {
        /// The session.
        session: u64,
        /// The key's name.
        key: &'a str,
        /// The policy's name.
        policy: &'a str,
        /// What was refused.
        op: &'a str,
        /// The rule that refused it.
        rule: &'a str,
    },
    /// Records of one kind held back during an interval, counted.
    Suppressed {
        /// The kind held back: `refused`, `request` or `handshake_failed`.
        of: &'a str,
        /// The session (null for handshakes).
        session: Option<u64>,
        /// The session's key name (null for handshakes).
        key: Option<&'a str>,
        /// The peer group of failed handshakes (null otherwise).
        peer: Option<&'a str>,
        /// The op of held-back `request` records (null otherwise).
        op: Option<&'a str>,
        /// How many were held back.
        count: u64,
        /// How many of them failed.
        errors: u64,
        /// When the first of them happened.
        first: String,
        /// When the last of them happened.
        last: String,
    },
}

/// Who a `suppressed` record is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The session, for its refusals and requests.
    pub session: Option<u64>,
    /// Its key's name.
    pub key: Option<&'a str>,
    /// The peer group, for failed handshakes.
    pub peer: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// Where audit records go.
pub struct Audit {
    out: Mutex<Box<dyn Write + Send>>,
    failed: AtomicBool,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

impl Audit {
    /// The log `target` names: `-` for stderr, else a file, appended to
    /// and created with mode 0600 (records name keys and peers).
    pub fn open(target: &Path) -> std::io::Result<Audit> {
        if target == Path::new("-") {
            return Ok(Audit::to_writer(Box::new(std::io::stderr())));
        }
        let file: File = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(target)?;
        Ok(Audit::to_writer(Box::new(file)))
    }

    /// A log written to `out`.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Audit {
        Audit {
            out: Mutex::new(out),
            failed: AtomicBool::new(false),
        }
    }

    /// Writes one record.
    pub fn record(&self, event: &Event<'_>) {
        let line = Line {
            time: rfc3339(SystemTime::now()),
            event,
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(b) => b,
            Err(e) => return self.trouble(&e.to_string()),
        };
        bytes.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
            drop(out);
            self.trouble(&e.to_string());
        }
    }

    /// Writes the `suppressed` record of `of` records held back.
    pub fn summary(&self, of: &str, scope: Scope<'_>, op: Option<&str>, s: &Summary) {
        self.record(&Event::Suppressed {
            of,
            session: scope.session,
            key: scope.key,
            peer: scope.peer,
            op,
            count: s.count,
            errors: s.errors,
            first: rfc3339(s.first),
            last: rfc3339(s.last),
        });
    }

    fn trouble(&self, e: &str) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            log::info(format_args!("cannot write the audit log: {e}"));
        }
    }
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn records_are_json_lines() {
        let buf = Shared::default();
        let audit = Audit::to_writer(Box::new(buf.clone()));
        audit.record(&Event::SessionOpened {
            session: 1,
            key: "monitor",
            key_id: "00112233",
            policy: "read-only",
            peer: "unix:\"x\"",
        });
        audit.record(&Event::Request {
            session: 1,
            key: "monitor",
            op: "BPF_PROG_LOAD",
            detail: Some("prog type xdp"),
            ret: None,
            errno: 1,
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "session_opened");
        assert_eq!(lines[0]["peer"], "unix:\"x\"");
        assert_eq!(lines[1]["event"], "request");
        assert_eq!(lines[1]["op"], "BPF_PROG_LOAD");
        assert_eq!(lines[1]["ret"], serde_json::Value::Null);
        assert_eq!(lines[1]["errno"], 1);
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn summaries_and_client_strings_stay_one_json_line() {
        let buf = Shared::default();
        let audit = Audit::to_writer(Box::new(buf.clone()));
        let forged = "x\n{\"event\":\"session_opened\"}\r\u{1b}[2K\u{2028}";
        audit.record(&Event::Refused {
            session: 3,
            key: forged,
            policy: "read-only",
            op: forged,
            rule: forged,
        });
        let t = UNIX_EPOCH + Duration::from_secs(1);
        audit.summary(
            "refused",
            Scope {
                session: Some(3),
                key: Some("k"),
                peer: None,
            },
            None,
            &Summary {
                count: 86_000,
                errors: 86_000,
                first: t,
                last: t + Duration::from_secs(3),
            },
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["op"], forged);
        assert_eq!(lines[1]["event"], "suppressed");
        assert_eq!(lines[1]["of"], "refused");
        assert_eq!(lines[1]["session"], 3);
        assert_eq!(lines[1]["peer"], serde_json::Value::Null);
        assert_eq!(lines[1]["count"], 86_000);
        assert_eq!(lines[1]["first"], "1970-01-01T00:00:01.000Z");
        assert_eq!(lines[1]["last"], "1970-01-01T00:00:04.000Z");
    }
}
