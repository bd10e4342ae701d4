//! The task list, as `ps` shows it: thread-group leaders linked through
//! `task_struct.tasks`, from the task the collector started at.

use serde::Serialize;

use crate::layout::{Missing, Types};
use crate::view::{span, View};
use crate::Error;

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id (the thread group's id).
    pub pid: u32,
    /// The real parent's process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Kernel address of its `task_struct`.
    pub task: u64,
}

/// Offsets the walk needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pid: u64,
    tgid: u64,
    comm: u64,
    real_parent: u64,
    cred: u64,
    tasks: u64,
    cred_uid: u64,
}

impl Layout {
    /// Reads the offsets from the guest's BTF.
    pub fn new(t: &Types) -> Result<Layout, Missing> {
        Ok(Layout {
            pid: t.offset("task_struct", "pid")?,
            tgid: t.offset("task_struct", "tgid")?,
            comm: t.offset("task_struct", "comm")?,
            real_parent: t.offset("task_struct", "real_parent")?,
            cred: t.offset("task_struct", "cred")?,
            tasks: t.offset("task_struct", "tasks")?,
            cred_uid: t.offset("cred", "uid")?,
        })
    }
}

/// Walks the task list from `root` (a group leader) back to it.
pub fn walk(view: &mut View<'_>, l: &Layout, root: u64) -> Result<Vec<Process>, Error> {
    let (lo, len) = span(&[
        (l.pid, 4),
        (l.tgid, 4),
        (l.comm, 16),
        (l.real_parent, 8),
        (l.cred, 8),
        (l.tasks, 8),
    ]);
    let mut out = Vec::new();
    let mut task = root;
    for _ in 0..crate::walk::MAX_WALK {
        view.load(task + lo, len)?;
        let _pid = view.u32(task + l.pid)?;
        let tgid = view.u32(task + l.tgid)?;
        let comm = view.bytes::<16>(task + l.comm)?;
        let parent = view.u64(task + l.real_parent)?;
        let ppid = if parent != 0 {
            view.load(parent + l.tgid, 4)?;
            view.u32(parent + l.tgid)?
        } else {
            0
        };
        let cred = view.u64(task + l.cred)?;
        let uid = if cred != 0 {
            view.load(cred + l.cred_uid, 4)?;
            view.u32(cred + l.cred_uid)?
        } else {
            0
        };
        // init_task (pid 0, the idle task) heads the list; /proc and ps do
        // not show it.
        if tgid != 0 {
            let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            out.push(Process {
                pid: tgid,
                ppid,
                uid,
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
                task,
            });
        }
        let next = view.u64(task + l.tasks)?.wrapping_sub(l.tasks);
        if next == root || next == 0 {
            return Ok(out);
        }
        task = next;
    }
    Err(Error::TooLong("task list"))
}
