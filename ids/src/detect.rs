//! Cross-view detection of hidden processes: the kernel's task list (walked
//! from outside, which a rootkit inside the guest cannot filter) against
//! the process ids the guest's own procfs lists (what `ps` in the guest
//! sees, and what a rootkit hooking the guest's VFS would filter).

use std::collections::BTreeSet;

use crate::{Error, Inspector, Mode, Process, Rows};

/// What the two views disagree on. Each finding held across two readings
/// of /proc taken before and after the walk, so a process that merely
/// started or ended during the walk is not reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// In the task list, missing from /proc: hidden from the guest's users.
    pub hidden: Vec<Process>,
    /// Listed by /proc, missing from the task list: unlinked from the list
    /// (a rootkit's way to hide from tools that walk it) or forged.
    pub unlisted: Vec<u32>,
    /// Processes in the task list.
    pub tasks: usize,
    /// Process ids /proc listed (first reading).
    pub proc_pids: usize,
}

impl Report {
    /// Whether anything was found.
    pub fn is_clean(&self) -> bool {
        self.hidden.is_empty() && self.unlisted.is_empty()
    }
}

/// Compares the task list (walked in `mode`) with the guest's /proc.
pub fn hidden_processes(inspector: &mut Inspector, mode: Mode) -> Result<Report, Error> {
    let before = inspector.proc_pids()?;
    let walk = inspector.processes(mode)?;
    let after = inspector.proc_pids()?;
    let Rows::Processes(tasks) = walk.rows else {
        return Err(Error::Protocol("not a process list".into()));
    };
    let listed: BTreeSet<u32> = tasks.iter().map(|p| p.pid).collect();
    let hidden = tasks
        .iter()
        .filter(|p| !before.contains(&p.pid) && !after.contains(&p.pid))
        .cloned()
        .collect();
    let unlisted = before
        .intersection(&after)
        .filter(|pid| !listed.contains(pid))
        .copied()
        .collect();
    Ok(Report {
        hidden,
        unlisted,
        tasks: tasks.len(),
        proc_pids: before.len(),
    })
}
