//! The monitor's output: one JSON object per line, one line per event.
//!
//! Every event has `time` (RFC 3339, UTC, milliseconds), `guest` (the name
//! from the guests file) and `event` (what happened), then the event's own
//! fields, flat. The set of events and their fields is the contract with
//! log pipelines: [`crate::schema`] states it, the README documents it, and
//! the tests check every event written against it. Fields are only ever
//! added.

use std::time::SystemTime;

use serde::Serialize;

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When the monitor saw it (RFC 3339 UTC).
    pub time: String,
    /// The guest's name.
    pub guest: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: Kind,
}

impl Event {
    /// `kind` in guest `guest`, now.
    pub fn now(guest: &str, kind: Kind) -> Event {
        Event {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            guest: guest.to_string(),
            kind,
        }
    }

    /// The event as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        // Serialising these types cannot fail: strings, integers, options.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"time\":{:?},\"guest\":{:?},\"event\":\"monitor_error\",\"reason\":{:?}}}",
                self.time,
                self.guest,
                e.to_string()
            )
        })
    }
}

/// What happened, with its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Kind {
    /// Connected (again) and authenticated.
    GuestUp {
        /// The proxy's address.
        target: String,
        /// The guest kernel's release.
        kernel: String,
    },
    /// The connection broke or the guest stopped answering; the monitor
    /// reconnects with back-off.
    GuestLost {
        /// The proxy's address.
        target: String,
        /// Why, in one line.
        reason: String,
    },
    /// The first complete round after `guest_up`: how much there is,
    /// instead of one event per existing object. `null`: that source is
    /// not available (a `source_failed` says why).
    Snapshot {
        /// Processes in the kernel's task list.
        processes: Option<u64>,
        /// Kernel modules.
        modules: Option<u64>,
        /// TCP listening sockets.
        listeners: Option<u64>,
        /// BPF programs (the monitor's own collectors not counted).
        bpf_programs: Option<u64>,
        /// Processes in the task list but not in the guest's /proc.
        hidden_processes: Option<u64>,
    },
    /// A process appeared in the task list.
    ProcessStarted(Process),
    /// A process left the task list.
    ProcessExited(Process),
    /// A process is in the kernel's task list but the guest's `/proc` does
    /// not list it (reported once while it stays hidden).
    HiddenProcess(Process),
    /// A module appeared.
    ModuleLoaded(Module),
    /// A module went away.
    ModuleRemoved(Module),
    /// A TCP socket started listening.
    ListenerOpened(Listener),
    /// A TCP listening socket went away.
    ListenerClosed(Listener),
    /// A BPF program appeared in the guest.
    BpfProgramLoaded(Program),
    /// A BPF program went away.
    BpfProgramUnloaded(Program),
    /// A source (`processes`, `hidden`, `modules`, `listeners`,
    /// `bpf_programs`) stopped answering: until `source_recovered`, the
    /// monitor is blind to what it reports.
    SourceFailed {
        /// Which source.
        source: String,
        /// Why, in one line.
        reason: String,
    },
    /// A source that failed answers again.
    SourceRecovered {
        /// Which source.
        source: String,
    },
}

impl Kind {
    /// The `event` value of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::GuestUp { .. } => "guest_up",
            Kind::GuestLost { .. } => "guest_lost",
            Kind::Snapshot { .. } => "snapshot",
            Kind::ProcessStarted(_) => "process_started",
            Kind::ProcessExited(_) => "process_exited",
            Kind::HiddenProcess(_) => "hidden_process",
            Kind::ModuleLoaded(_) => "module_loaded",
            Kind::ModuleRemoved(_) => "module_removed",
            Kind::ListenerOpened(_) => "listener_opened",
            Kind::ListenerClosed(_) => "listener_closed",
            Kind::BpfProgramLoaded(_) => "bpf_program_loaded",
            Kind::BpfProgramUnloaded(_) => "bpf_program_unloaded",
            Kind::SourceFailed { .. } => "source_failed",
            Kind::SourceRecovered { .. } => "source_recovered",
        }
    }
}

/// A process's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Command name.
    pub comm: String,
}

/// A module's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    /// Its name.
    pub name: String,
    /// Bytes of memory it holds.
    pub size: u64,
}

/// A listening socket's fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Listener {
    /// 4 or 6.
    pub family: u8,
    /// The local address in its family's form (`0.0.0.0`, `::`).
    pub address: String,
    /// The local port.
    pub port: u16,
    /// The owner's uid.
    pub uid: u32,
}

/// A BPF program's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Program {
    /// Its id.
    pub id: u32,
    /// Its type, as bpftool names it (`tracepoint`, `kprobe`, …).
    #[serde(rename = "type")]
    pub prog_type: String,
    /// Its name (at most 15 bytes).
    pub name: String,
    /// Its tag: 16 hex digits.
    pub tag: String,
    /// The uid that loaded it.
    pub uid: u32,
}
