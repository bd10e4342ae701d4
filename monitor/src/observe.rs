//! From rounds of readings to events: what changed in one guest since the
//! last round.
//!
//! A round reads every source once; a source that fails keeps its last
//! state (so nothing is reported as gone because it could not be read) and
//! says once that it is blind (`source_failed`), and once that it sees
//! again (`source_recovered`, after which the changes missed meanwhile are
//! reported as usual). The first round after `guest_up` emits one
//! `snapshot` with counts instead of an event per existing object — except
//! hidden processes, which are findings and are reported on every round
//! they first appear in, the first one included.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Kind, Listener, Module, Process, Program};

/// One reading of a source: its rows, or why it could not be read.
pub type Reading<T> = Result<T, String>;

/// What one round read from a guest.
#[derive(Debug, Clone)]
pub struct Round {
    /// The kernel's task list.
    pub processes: Reading<Vec<Process>>,
    /// The pids the guest's `/proc` listed just before and just after the
    /// task list was walked (a process counts as hidden only if missing
    /// from both, so one that merely started or ended meanwhile is not).
    pub proc_pids: Reading<(BTreeSet<u32>, BTreeSet<u32>)>,
    /// Kernel modules.
    pub modules: Reading<Vec<Module>>,
    /// TCP listening sockets.
    pub listeners: Reading<Vec<Listener>>,
    /// BPF programs, the monitor's own collectors left out.
    pub programs: Reading<Vec<Program>>,
}

/// The state of one guest between rounds.
#[derive(Debug, Default)]
pub struct Observer {
    processes: Option<BTreeMap<u32, Process>>,
    hidden: Option<BTreeSet<u32>>,
    modules: Option<BTreeMap<String, Module>>,
    listeners: Option<BTreeSet<Listener>>,
    programs: Option<BTreeMap<u32, Program>>,
    blind: BTreeSet<&'static str>,
    snapshot_sent: bool,
}

impl Observer {
    /// A guest seen for the first time (or again after `guest_lost`: the
    /// next round is a snapshot again, since what happened while the
    /// guest was unreachable cannot be told apart from what was there).
    pub fn new() -> Observer {
        Observer::default()
    }

    /// The events of one round.
    pub fn observe(&mut self, round: Round) -> Vec<Kind> {
        let mut events = Vec::new();
        let snapshot = !self.snapshot_sent;

        let processes = self.health("processes", &round.processes, &mut events);
        let hidden_now = match (&round.processes, &round.proc_pids) {
            (Ok(tasks), Ok((before, after))) => Ok(tasks
                .iter()
                .filter(|p| !before.contains(&p.pid) && !after.contains(&p.pid))
                .cloned()
                .collect::<Vec<_>>()),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        let hidden_ok = self.health("hidden", &hidden_now, &mut events);
        let modules = self.health("modules", &round.modules, &mut events);
        let listeners = self.health("listeners", &round.listeners, &mut events);
        let programs = self.health("bpf_programs", &round.programs, &mut events);

        let mut diff = Vec::new();
        if let (true, Ok(rows)) = (processes, round.processes) {
            let now: BTreeMap<u32, Process> = rows.into_iter().map(|p| (p.pid, p)).collect();
            if let Some(old) = &self.processes {
                changes(
                    old,
                    &now,
                    Kind::ProcessStarted,
                    Kind::ProcessExited,
                    &mut diff,
                );
            }
            self.processes = Some(now);
        }
        let mut findings = Vec::new();
        if let (true, Ok(rows)) = (hidden_ok, hidden_now) {
            let old = self.hidden.take().unwrap_or_default();
            let now: BTreeSet<u32> = rows.iter().map(|p| p.pid).collect();
            for p in rows.into_iter().filter(|p| !old.contains(&p.pid)) {
                findings.push(Kind::HiddenProcess(p));
            }
            self.hidden = Some(now);
        }
        if let (true, Ok(rows)) = (modules, round.modules) {
            let now: BTreeMap<String, Module> =
                rows.into_iter().map(|m| (m.name.clone(), m)).collect();
            if let Some(old) = &self.modules {
                changes(
                    old,
                    &now,
                    Kind::ModuleLoaded,
                    Kind::ModuleRemoved,
                    &mut diff,
                );
            }
            self.modules = Some(now);
        }
        if let (true, Ok(rows)) = (listeners, round.listeners) {
            let now: BTreeSet<Listener> = rows.into_iter().collect();
            if let Some(old) = &self.listeners {
                diff.extend(now.difference(old).cloned().map(Kind::ListenerOpened));
                diff.extend(old.difference(&now).cloned().map(Kind::ListenerClosed));
            }
            self.listeners = Some(now);
        }
        if let (true, Ok(rows)) = (programs, round.programs) {
            let now: BTreeMap<u32, Program> = rows.into_iter().map(|p| (p.id, p)).collect();
            if let Some(old) = &self.programs {
                changes(
                    old,
                    &now,
                    Kind::BpfProgramLoaded,
                    Kind::BpfProgramUnloaded,
                    &mut diff,
                );
            }
            self.programs = Some(now);
        }

        if snapshot {
            let count = |n: Option<usize>| n.map(|n| n as u64);
            events.push(Kind::Snapshot {
                processes: count(self.processes.as_ref().map(BTreeMap::len)),
                modules: count(self.modules.as_ref().map(BTreeMap::len)),
                listeners: count(self.listeners.as_ref().map(BTreeSet::len)),
                bpf_programs: count(self.programs.as_ref().map(BTreeMap::len)),
                hidden_processes: count(self.hidden.as_ref().map(BTreeSet::len)),
            });
            self.snapshot_sent = true;
        }
        events.extend(diff);
        events.extend(findings);
        events
    }

    /// Whether `reading` can be used; says `source_failed` when a source
    /// goes blind and `source_recovered` when it sees again.
    fn health<T>(
        &mut self,
        source: &'static str,
        reading: &Reading<T>,
        events: &mut Vec<Kind>,
    ) -> bool {
        match reading {
            Ok(_) => {
                if self.blind.remove(source) {
                    events.push(Kind::SourceRecovered {
                        source: source.into(),
                    });
                }
                true
            }
            Err(reason) => {
                if self.blind.insert(source) {
                    events.push(Kind::SourceFailed {
                        source: source.into(),
                        reason: reason.clone(),
                    });
                }
                false
            }
        }
    }
}

/// Appends `appeared` for keys only in `now` and `went` for keys only in
/// `old`.
fn changes<K: Ord, V: Clone>(
    old: &BTreeMap<K, V>,
    now: &BTreeMap<K, V>,
    appeared: impl Fn(V) -> Kind,
    went: impl Fn(V) -> Kind,
    out: &mut Vec<Kind>,
) {
    out.extend(
        now.iter()
            .filter(|(k, _)| !old.contains_key(k))
            .map(|(_, v)| appeared(v.clone())),
    );
    out.extend(
        old.iter()
            .filter(|(k, _)| !now.contains_key(k))
            .map(|(_, v)| went(v.clone())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, comm: &str) -> Process {
        Process {
            pid,
            ppid: 1,
            uid: 0,
            comm: comm.into(),
        }
    }

    fn round(pids: &[u32], proc_pids: &[u32]) -> Round {
        let set: BTreeSet<u32> = proc_pids.iter().copied().collect();
        Round {
            processes: Ok(pids.iter().map(|&n| p(n, "x")).collect()),
            proc_pids: Ok((set.clone(), set)),
            modules: Err("no module support".into()),
            listeners: Ok(vec![]),
            programs: Ok(vec![]),
        }
    }

    fn names(events: &[Kind]) -> Vec<&'static str> {
        events.iter().map(Kind::name).collect()
    }

    #[test]
    fn the_first_round_is_one_snapshot_then_changes_only() {
        let mut o = Observer::new();
        let first = o.observe(round(&[1, 2, 3], &[1, 2, 3]));
        assert_eq!(names(&first), ["source_failed", "snapshot"]);
        assert!(matches!(
            first[1],
            Kind::Snapshot {
                processes: Some(3),
                modules: None,
                hidden_processes: Some(0),
                ..
            }
        ));
        assert!(o.observe(round(&[1, 2, 3], &[1, 2, 3])).is_empty());
        let next = o.observe(round(&[1, 3, 4], &[1, 3, 4]));
        assert_eq!(
            next,
            [
                Kind::ProcessStarted(p(4, "x")),
                Kind::ProcessExited(p(2, "x"))
            ]
        );
    }

    #[test]
    fn a_hidden_process_is_reported_once_even_in_the_first_round() {
        let mut o = Observer::new();
        let first = o.observe(round(&[1, 666], &[1]));
        assert_eq!(
            names(&first),
            ["source_failed", "snapshot", "hidden_process"]
        );
        assert!(o.observe(round(&[1, 666], &[1])).is_empty());
        // Visible again, then hidden again: a new finding.
        assert!(o.observe(round(&[1, 666], &[1, 666])).is_empty());
        assert_eq!(
            names(&o.observe(round(&[1, 666], &[1]))),
            ["hidden_process"]
        );
    }

    #[test]
    fn a_process_in_proc_only_once_is_not_hidden() {
        let mut o = Observer::new();
        let mut r = round(&[1, 5], &[1]);
        r.proc_pids = Ok(([1].into(), [1, 5].into()));
        assert_eq!(names(&o.observe(r)), ["source_failed", "snapshot"]);
    }

    #[test]
    fn a_failing_source_reports_nothing_gone_and_says_when_it_sees_again() {
        let mut o = Observer::new();
        o.observe(round(&[1, 2], &[1, 2]));
        let mut blind = round(&[], &[]);
        blind.processes = Err("timed out".into());
        let events = o.observe(blind.clone());
        assert_eq!(names(&events), ["source_failed", "source_failed"]);
        assert!(o.observe(blind).is_empty(), "blindness is said once");
        let back = o.observe(round(&[1, 3], &[1, 3]));
        assert_eq!(
            names(&back),
            [
                "source_recovered",
                "source_recovered",
                "process_started",
                "process_exited"
            ]
        );
    }

    #[test]
    fn listeners_modules_and_programs_diff_by_identity() {
        let mut o = Observer::new();
        let l = |port| Listener {
            family: 4,
            address: "0.0.0.0".into(),
            port,
            uid: 0,
        };
        let g = |id| Program {
            id,
            prog_type: "tracepoint".into(),
            name: "t".into(),
            tag: "00".repeat(8),
            uid: 0,
        };
        let m = |name: &str| Module {
            name: name.into(),
            size: 4096,
        };
        let mut r = round(&[1], &[1]);
        r.listeners = Ok(vec![l(22)]);
        r.programs = Ok(vec![g(1)]);
        r.modules = Ok(vec![m("a")]);
        o.observe(r.clone());
        r.listeners = Ok(vec![l(22), l(8080)]);
        r.programs = Ok(vec![g(2)]);
        r.modules = Ok(vec![m("b")]);
        assert_eq!(
            o.observe(r),
            [
                Kind::ModuleLoaded(m("b")),
                Kind::ModuleRemoved(m("a")),
                Kind::ListenerOpened(l(8080)),
                Kind::BpfProgramLoaded(g(2)),
                Kind::BpfProgramUnloaded(g(1)),
            ]
        );
    }
}
