//! One guest's thread: connect, read a round, report what changed, sleep,
//! and when the guest is lost, say so and connect again with back-off.
//!
//! **When a guest is lost.** A proxy that dies closes its connection: a
//! request in flight fails at once, and between rounds the socket is
//! checked every [`POLL`], so `guest_lost` follows within a fraction of a
//! second. A guest that stops answering (frozen, or its VM paused) keeps
//! the connection open: every request waits at most [`NO_ANSWER`], and
//! between rounds a ping goes out once [`QUIET`] has passed since the last
//! answer, so `guest_lost` comes at most `QUIET + NO_ANSWER` (9 s) after
//! the last answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use telebpf_client::{ClientError, Settings};
use telebpf_collectors::Collector;
use telebpf_ids::{Error as IdsError, Inspector, Mode, Rows};

use crate::config::Guest;
use crate::event::{self, Event, Kind};
use crate::observe::{Observer, Reading, Round};

/// How long one request may wait for its answer.
pub const NO_ANSWER: Duration = Duration::from_secs(5);
/// Quiet time after which a ping checks that the guest still answers.
pub const QUIET: Duration = Duration::from_secs(4);
/// How often a sleeping guest thread checks its connection and the stop
/// flag.
pub const POLL: Duration = Duration::from_millis(100);
/// The first wait before connecting again, doubled up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a guest is watched.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time from the start of one round to the start of the next.
    pub interval: Duration,
    /// How the walks read guest memory.
    pub mode: Mode,
    /// Stop after this many rounds (for tests and benchmarks); a failed
    /// connection attempt counts as one.
    pub rounds: Option<u64>,
}

/// Where a guest thread's events go.
pub trait Sink: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

impl Sink for SyncSender<Event> {
    fn event(&self, event: Event) {
        // The writer ended (output closed): the monitor is stopping.
        let _ = self.send(event);
    }
}

/// The calling thread's CPU time spent on each source of a round, summed
/// over rounds (what `telebpf bench monitor` breaks the host's cost into).
#[derive(Debug, Clone, Copy, Default)]
pub struct Costs {
    /// Per source, in the order of [`Costs::NAMES`].
    pub cpu: [Duration; 5],
}

impl Costs {
    /// The sources, as the bench names them.
    pub const NAMES: [&'static str; 5] = [
        "/proc listing (2x)",
        "processes",
        "modules",
        "listeners",
        "programs",
    ];

    fn time<T>(&mut self, i: usize, f: impl FnOnce() -> T) -> T {
        let start = thread_cpu();
        let r = f();
        self.cpu[i] += thread_cpu().saturating_sub(start);
        r
    }
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, a vDSO read).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One connected guest: its session and what it looked like last round.
pub struct Watched {
    inspector: Inspector,
    observer: Observer,
    mode: Mode,
    /// Host CPU per source, over every round so far.
    pub costs: Costs,
}

impl Watched {
    /// Connects to `guest` (fetching its BTF, from the cache when the
    /// guest's digest matches one fetched before).
    pub fn connect(guest: &Guest, mode: Mode) -> Result<Watched, String> {
        let settings = Settings::new(&guest.target, guest.key_file.clone())
            .map_err(|e| one_line(&e.to_string()))?;
        let mut inspector = Inspector::connect(&settings).map_err(|e| one_line(&e.to_string()))?;
        inspector.set_call_limit(Some(NO_ANSWER));
        Ok(Watched {
            inspector,
            observer: Observer::new(),
            mode,
            costs: Costs::default(),
        })
    }

    /// The guest kernel's release (at most [`MAX_RELEASE`] bytes: it comes
    /// from the guest's side).
    pub fn kernel(&self) -> String {
        clamp(&self.inspector.facts().uname[2], MAX_RELEASE)
    }

    /// One round: what changed since the last. `Err(reason)` when the
    /// connection is gone.
    pub fn round(&mut self) -> Result<Vec<Kind>, String> {
        let round = read_round(&mut self.inspector, self.mode, &mut self.costs)?;
        Ok(self.observer.observe(round))
    }

    /// Waits until `until`, watching the connection: `Err(reason)` as soon
    /// as the proxy closes it or stops answering pings.
    fn idle(&mut self, until: Instant, stop: &AtomicBool) -> Result<(), String> {
        let mut last_answer = Instant::now();
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            if self.inspector.peer_closed() {
                return Err("the proxy closed the connection".into());
            }
            if last_answer.elapsed() >= QUIET {
                self.inspector
                    .ping(NO_ANSWER)
                    .map_err(|e| one_line(&e.to_string()))?;
                last_answer = Instant::now();
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
        Ok(())
    }
}

/// Watches `guest` until `stop` is set (or `options.rounds` are done).
pub fn watch(guest: &Guest, options: &Options, sink: &dyn Sink, stop: &AtomicBool) {
    let emit = |kind: Kind| sink.event(Event::now(&guest.name, kind));
    let mut backoff = FIRST_BACKOFF;
    // Whether `guest_lost` was said for the outage in progress, so that
    // repeated failures to connect say it once.
    let mut said_lost = false;
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) && options.rounds.is_none_or(|n| rounds < n) {
        let mut watched = match Watched::connect(guest, options.mode) {
            Ok(w) => w,
            Err(reason) => {
                if !said_lost {
                    emit(Kind::GuestLost {
                        target: guest.target.clone(),
                        reason,
                    });
                    said_lost = true;
                }
                // A failed attempt counts as a round, so that a bounded
                // run ends even for a guest that never answers.
                rounds += 1;
                sleep(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        emit(Kind::GuestUp {
            target: guest.target.clone(),
            kernel: watched.kernel(),
        });
        let lost = loop {
            let start = Instant::now();
            match watched.round() {
                Ok(events) => events.into_iter().for_each(emit),
                Err(reason) => break reason,
            }
            rounds += 1;
            if options.rounds.is_some_and(|n| rounds >= n) {
                return;
            }
            if let Err(reason) = watched.idle(start + options.interval, stop) {
                break reason;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        };
        emit(Kind::GuestLost {
            target: guest.target.clone(),
            reason: lost,
        });
        said_lost = true;
        sleep(backoff, stop);
    }
}

fn sleep(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

/// One round: every source once. `Err(reason)` if the connection is gone
/// (the caller reports `guest_lost`); a source that fails otherwise is
/// that source's failure, inside the round.
fn read_round(inspector: &mut Inspector, mode: Mode, costs: &mut Costs) -> Result<Round, String> {
    let before = costs.time(0, || source(inspector.proc_pids()))?;
    let processes = costs.time(1, || source(inspector.processes(mode).map(|w| w.rows)))?;
    let after = costs.time(0, || source(inspector.proc_pids()))?;
    let modules = costs.time(2, || {
        source(inspector.walk(Collector::Modules, mode).map(|w| w.rows))
    })?;
    let tcp = costs.time(3, || {
        source(inspector.walk(Collector::Listeners, mode).map(|w| w.rows))
    })?;
    let programs = costs.time(4, || source(inspector.programs()))?;
    let proc_pids = match (before, after) {
        (Ok(b), Ok(a)) => Ok((b, a)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    Ok(Round {
        processes: processes.and_then(|rows| match rows {
            Rows::Processes(p) => Ok(p.into_iter().map(process).collect()),
            _ => Err("not a process list".into()),
        }),
        proc_pids,
        modules: modules.and_then(|rows| match rows {
            Rows::Modules(m) => Ok(m
                .into_iter()
                .map(|m| event::Module {
                    name: m.name,
                    size: m.size,
                })
                .collect()),
            _ => Err("not a module list".into()),
        }),
        listeners: tcp.and_then(|rows| match rows {
            Rows::Tcp(t) => Ok(t
                .into_iter()
                .filter(|s| s.is_listening())
                .map(|s| event::Listener {
                    family: s.family,
                    address: s.local_text(),
                    port: s.local_port,
                    uid: s.uid,
                })
                .collect()),
            _ => Err("not a socket list".into()),
        }),
        programs: programs.map(|list| list.into_iter().map(program).collect()),
    })
}

/// A source's reading, or `Err` of the outer result if the failure means
/// the connection is gone.
fn source<T>(r: Result<T, IdsError>) -> Result<Reading<T>, String> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if connection_gone(&e) => Err(one_line(&e.to_string())),
        Err(e) => Ok(Err(one_line(&e.to_string()))),
    }
}

/// Whether an error means the session cannot go on: the channel failed,
/// the proxy stopped answering, or it answered out of step.
fn connection_gone(e: &IdsError) -> bool {
    match e {
        IdsError::Client(ClientError::Remote(_)) => false,
        IdsError::Client(_) | IdsError::Protocol(_) => true,
        _ => false,
    }
}

fn process(p: telebpf_ids::Process) -> event::Process {
    event::Process {
        pid: p.pid,
        ppid: p.ppid,
        uid: p.uid,
        comm: p.comm,
    }
}

fn program(p: telebpf_protocol::message::ProgramInfo) -> event::Program {
    event::Program {
        id: p.id,
        prog_type: telebpf_abi::prog_type::short_name(p.prog_type)
            .map_or_else(|| p.prog_type.to_string(), str::to_string),
        name: clamp(&p.name, MAX_PROGRAM_NAME),
        tag: p.tag.iter().map(|b| format!("{b:02x}")).collect(),
        uid: p.uid,
    }
}

/// `s` on one line (an event's reason is one line of its JSON).
/// Guest-supplied reasons are cut to this many bytes (an error quoting a
/// hostile proxy's reply must not make a line of megabytes).
pub const MAX_REASON: usize = 512;
/// A kernel release is at most this long (`uname`'s field is 65 bytes).
pub const MAX_RELEASE: usize = 64;
/// A BPF program's name is at most this long (`BPF_OBJ_NAME_LEN` - 1).
pub const MAX_PROGRAM_NAME: usize = 15;

/// `s` on one line (an event's reason is one line of its JSON), at most
/// [`MAX_REASON`] bytes.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() >= MAX_REASON {
            break;
        }
    }
    clamp(&out, MAX_REASON)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn clamp(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_supplied_text_is_bounded_and_on_one_line() {
        let long = "a b\n".repeat(10_000);
        let line = one_line(&long);
        assert!(line.len() <= MAX_REASON && !line.contains('\n'));
        assert_eq!(one_line(" x \n y "), "x y");
        assert_eq!(clamp("é".repeat(20).as_str(), MAX_PROGRAM_NAME).len(), 14);
        assert_eq!(clamp("tb_getpid", MAX_PROGRAM_NAME), "tb_getpid");
    }
}
