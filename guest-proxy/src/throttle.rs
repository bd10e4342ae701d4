//! Aggregation of repeated log lines and audit records.
//!
//! A peer with no key can fail thousands of handshakes a second, and a key
//! holder can send thousands of requests its policy refuses; one line of
//! stderr and one audit record each would grow the proxy's logs without
//! bound (86,000 refusals in 3 s once added 13.7 MB of audit log). So every
//! repeated kind of line or record passes a [`Throttle`]: in each
//! [`INTERVAL`] the first [`BURST`] events of a kind are written in full,
//! the rest only counted, and once the interval is over — or when the
//! proxy stops — one [`Summary`] says how many were held back. Every event is thus either written or counted in exactly one
//! summary: nothing goes unrecorded, and the volume per kind is bounded by
//! `BURST + 1` per interval.
//!
//! Who keys what: a key throttles its refusals and audited requests, over
//! all its sessions (a new session gets no fresh burst; one key's flood
//! does not hide another key's), the server
//! throttles failed handshakes per peer group (a Unix uid, a vsock cid:
//! [`peer_group`]), and [`crate::log::limited`] throttles the proxy-wide
//! lines (accept failures, connections refused at the limits).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{Audit, Scope};
use crate::log;

/// Events of one kind written in full per interval.
pub const BURST: u32 = 20;

/// The interval a burst and a summary cover.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What was held back of one kind during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events counted but not written.
    pub count: u64,
    /// How many of them were failures (a request's errno; all of them for
    /// refusals and failed handshakes).
    pub errors: u64,
    /// When the first of them happened.
    pub first: SystemTime,
    /// When the last of them happened.
    pub last: SystemTime,
}

/// One kind's state in the current interval.
#[derive(Debug)]
struct Tally {
    since: Instant,
    written: u32,
    held: Option<Summary>,
}

/// Decides, per kind `K`, which events are written and which only counted.
#[derive(Debug)]
pub struct Throttle<K> {
    burst: u32,
    interval: Duration,
    tallies: HashMap<K, Tally>,
}

impl<K: Eq + Hash + Clone> Default for Throttle<K> {
    fn default() -> Self {
        Throttle::new(BURST, INTERVAL)
    }
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// `burst` events per kind and `interval` in full, the rest counted.
    pub fn new(burst: u32, interval: Duration) -> Throttle<K> {
        Throttle {
            burst,
            interval,
            tallies: HashMap::new(),
        }
    }

    /// Notes one event of `kind` (`error`: it is a failure) at `now`.
    /// Returns the summary of the kind's previous interval if that just
    /// ended with events held back (write it first), and whether this event
    /// is to be written in full.
    pub fn note(
        &mut self,
        kind: K,
        now: Instant,
        wall: SystemTime,
        error: bool,
    ) -> (Option<Summary>, bool) {
        let interval = self.interval;
        let tally = self.tallies.entry(kind).or_insert(Tally {
            since: now,
            written: 0,
            held: None,
        });
        let mut ended = None;
        if now.duration_since(tally.since) >= interval {
            ended = tally.held.take();
            tally.since = now;
            tally.written = 0;
        }
        if tally.written < self.burst {
            tally.written += 1;
            return (ended, true);
        }
        let held = tally.held.get_or_insert(Summary {
            count: 0,
            errors: 0,
            first: wall,
            last: wall,
        });
        held.count += 1;
        held.errors += u64::from(error);
        held.last = wall;
        (ended, false)
    }

    /// The summaries of every kind whose interval is over, which are then
    /// forgotten (so the table holds only kinds seen within an interval).
    pub fn expired(&mut self, now: Instant) -> Vec<(K, Summary)> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.tallies.retain(|kind, t| {
            if now.duration_since(t.since) < interval {
                return true;
            }
            if let Some(s) = t.held.take() {
                out.push((kind.clone(), s));
            }
            false
        });
        out
    }

    /// Every summary still pending (a session ends, the proxy stops); the
    /// throttle starts afresh.
    pub fn drain(&mut self) -> Vec<(K, Summary)> {
        self.tallies
            .drain()
            .filter_map(|(kind, mut t)| t.held.take().map(|s| (kind, s)))
            .collect()
    }

    /// Kinds currently tracked.
    pub fn len(&self) -> usize {
        self.tallies.len()
    }

    /// Whether no kind is tracked.
    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }
}

/// The kind of a session's policy refusals (line and audit record).
pub const REFUSED: &str = "refused";
/// The kind of a session's requests for files outside the allow-list (a
/// line only).
pub const FILE_REFUSED: &str = "file refused";
/// Audited requests of one op written in full per interval: more than any
/// tool makes (`bpftool feature probe`'s thousands of probes aside), far
/// fewer than a loop of updates.
pub const REQUEST_BURST: u32 = 200;

/// One key's throttles: its refusal lines and records, its audited
/// requests per op — shared by all its sessions, so that a key holder who
/// opens session after session does not get a fresh burst with each (it
/// did: 200 sessions of 25 refusals wrote 4,000 full lines).
#[derive(Debug)]
struct KeyThrottles {
    /// The key's name, for the summaries.
    name: String,
    refusals: Throttle<&'static str>,
    requests: Throttle<String>,
}

impl KeyThrottles {
    fn new(name: &str) -> KeyThrottles {
        KeyThrottles {
            name: name.to_string(),
            refusals: Throttle::default(),
            requests: Throttle::new(REQUEST_BURST, INTERVAL),
        }
    }

    /// Writes the summaries whose interval is over, or with `all` every
    /// pending one.
    fn flush(&mut self, all: bool, audit: Option<&Audit>) {
        if self.refusals.is_empty() && self.requests.is_empty() {
            return;
        }
        let (refusals, requests) = if all {
            (self.refusals.drain(), self.requests.drain())
        } else {
            let now = Instant::now();
            (self.refusals.expired(now), self.requests.expired(now))
        };
        for (kind, s) in refusals {
            refusal_summary(kind, &s, audit, &self.name);
        }
        if let Some(audit) = audit {
            for (op, s) in requests {
                audit.summary("request", key_scope(&self.name), Some(&op), &s);
            }
        }
    }
}

/// Every key's throttles, by key file and name (as its ledger,
/// `crate::ownership`).
type KeyTable = HashMap<(PathBuf, String), Arc<Mutex<KeyThrottles>>>;

fn all_keys() -> std::sync::MutexGuard<'static, KeyTable> {
    static KEYS: OnceLock<Mutex<KeyTable>> = OnceLock::new();
    KEYS.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn lock(t: &Mutex<KeyThrottles>) -> std::sync::MutexGuard<'_, KeyThrottles> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes every key's summaries whose interval is over (the server does,
/// every second), or with `all` every pending one (the proxy stops): a
/// key's summaries do not wait for one of its sessions to come back.
pub fn flush_keys(all: bool, audit: Option<&Audit>) {
    let keys: Vec<_> = all_keys().values().cloned().collect();
    for k in keys {
        lock(&k).flush(all, audit);
    }
}

fn key_scope(key: &str) -> Scope<'_> {
    Scope {
        session: None,
        key: Some(key),
        peer: None,
    }
}

fn refusal_summary(kind: &str, s: &Summary, audit: Option<&Audit>, key: &str) {
    log::suppressed(&format!("key '{key}'"), kind, s);
    if let (Some(audit), true) = (audit, kind == REFUSED) {
        audit.summary(REFUSED, key_scope(key), None, s);
    }
}

/// A session's view of its key's throttles (see [`KeyThrottles`]): a
/// stderr line `key 'NAME': …` and, for refusals and requests, a
/// `suppressed` audit record of the key summarise what they held back,
/// once the interval is over ([`flush_keys`], and the key's sessions as
/// they go) or the proxy stops.
#[derive(Debug)]
pub struct SessionNotes {
    shared: Arc<Mutex<KeyThrottles>>,
}

impl SessionNotes {
    /// The throttles of the key in key file `file` named `name`.
    pub fn new(file: &Path, name: &str) -> SessionNotes {
        let shared = all_keys()
            .entry((file.to_path_buf(), name.to_string()))
            .or_insert_with(|| Arc::new(Mutex::new(KeyThrottles::new(name))))
            .clone();
        SessionNotes { shared }
    }

    /// One refusal of `kind` ([`REFUSED`], [`FILE_REFUSED`]) by a session
    /// of key `key`: whether to write its line (and record) in full. A
    /// summary that fell due is written first.
    pub fn refusal(&mut self, kind: &'static str, audit: Option<&Audit>, key: &str) -> bool {
        let (summary, full) =
            lock(&self.shared)
                .refusals
                .note(kind, Instant::now(), SystemTime::now(), true);
        if let Some(s) = summary {
            refusal_summary(kind, &s, audit, key);
        }
        full
    }

    /// One audited request `op` (`failed`: its errno was not 0): whether
    /// to write its record in full. A summary that fell due is written
    /// first.
    pub fn request(&mut self, op: &str, failed: bool, audit: &Audit, key: &str) -> bool {
        let (summary, full) = lock(&self.shared).requests.note(
            op.to_string(),
            Instant::now(),
            SystemTime::now(),
            failed,
        );
        if let Some(s) = summary {
            audit.summary("request", key_scope(key), Some(op), &s);
        }
        full
    }

    /// Writes the key's summaries whose interval is over.
    pub fn flush(&mut self, audit: Option<&Audit>) {
        lock(&self.shared).flush(false, audit);
    }
}

/// The part of a peer description that names who connects rather than the
/// connection: `unix peer pid 12 uid 1000` → `unix peer uid 1000`,
/// `vsock:3:1234` → `vsock:3`. Failed handshakes are throttled per group,
/// so a flood from one user (or one VM) is summarised however many
/// processes or ports it uses.
pub fn peer_group(peer: &str) -> String {
    if let Some(rest) = peer.strip_prefix("unix peer pid ") {
        return match rest.split_once(' ') {
            Some((_, uid)) => format!("unix peer {uid}"),
            None => "unix peer".to_string(),
        };
    }
    if let Some(rest) = peer.strip_prefix("vsock:") {
        if let Some((cid, _port)) = rest.split_once(':') {
            return format!("vsock:{cid}");
        }
    }
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_counts_then_one_summary_per_interval() {
        let mut t = Throttle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let w = SystemTime::now();
        let written: Vec<bool> = (0..10).map(|_| t.note("k", t0, w, true).1).collect();
        assert_eq!(written.iter().filter(|&&w| w).count(), 3);
        assert!(t.expired(t0 + Duration::from_secs(1)).is_empty());
        // The next interval's first event brings the summary of the last.
        let (summary, written) = t.note("k", t0 + Duration::from_secs(10), w, false);
        assert!(written);
        let s = summary.expect("the held-back events are summarised");
        assert_eq!((s.count, s.errors), (7, 7));
        // A quiet interval ends with nothing pending; it is forgotten.
        assert!(t.expired(t0 + Duration::from_secs(25)).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn every_event_is_written_or_counted_exactly_once() {
        let mut t = Throttle::new(5, Duration::from_millis(100));
        let t0 = Instant::now();
        let w = SystemTime::now();
        let (mut written, mut counted) = (0u64, 0u64);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i / 7);
            let kind = i % 3;
            let (s, full) = t.note(kind, now, w, i % 2 == 0);
            written += u64::from(full);
            counted += s.map_or(0, |s| s.count);
            if i % 1000 == 0 {
                counted += t.expired(now).iter().map(|(_, s)| s.count).sum::<u64>();
            }
        }
        counted += t.drain().iter().map(|(_, s)| s.count).sum::<u64>();
        assert_eq!(written + counted, 10_000);
        assert!(t.is_empty());
    }

    #[test]
    fn kinds_are_throttled_apart() {
        let mut t = Throttle::new(1, Duration::from_secs(10));
        let (t0, w) = (Instant::now(), SystemTime::now());
        assert!(t.note("a", t0, w, true).1);
        assert!(!t.note("a", t0, w, true).1);
        assert!(t.note("b", t0, w, true).1);
        let mut pending = t.drain();
        pending.sort_by_key(|(k, _)| *k);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, "a");
        assert_eq!(pending[0].1.count, 1);
    }

    #[test]
    fn peer_groups() {
        assert_eq!(
            peer_group("unix peer pid 12 uid 1000"),
            "unix peer uid 1000"
        );
        assert_eq!(peer_group("unix peer uid 0"), "unix peer uid 0");
        assert_eq!(peer_group("unix peer"), "unix peer");
        assert_eq!(peer_group("vsock:3:1234"), "vsock:3");
        assert_eq!(peer_group("something else"), "something else");
    }
}
