//! The stable schema of the monitor's events: which fields each event has
//! and of what type. The README's table says the same (a test keeps the
//! two equal) and the end-to-end tests check every line the monitor writes
//! with [`check`].

use serde_json::Value;

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A non-negative integer.
    Uint,
    /// A non-negative integer or `null` (not available).
    UintOrNull,
    /// A string.
    Str,
    /// An RFC 3339 UTC time.
    Time,
}

impl Type {
    /// How the README writes the type.
    pub fn name(self) -> &'static str {
        match self {
            Type::Uint => "integer",
            Type::UintOrNull => "integer or null",
            Type::Str => "string",
            Type::Time => "RFC 3339 UTC",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            Type::Uint => v.is_u64(),
            Type::UintOrNull => v.is_u64() || v.is_null(),
            Type::Str => v.is_string(),
            Type::Time => v
                .as_str()
                .is_some_and(|s| s.ends_with('Z') && humantime::parse_rfc3339(s).is_ok()),
        }
    }
}

use Type::{Str, Uint, UintOrNull};

/// Fields every event has, first.
pub const COMMON: &[(&str, Type)] = &[("time", Type::Time), ("guest", Str), ("event", Str)];

const PROCESS: &[(&str, Type)] = &[("pid", Uint), ("ppid", Uint), ("uid", Uint), ("comm", Str)];
const MODULE: &[(&str, Type)] = &[("name", Str), ("size", Uint)];
const LISTENER: &[(&str, Type)] = &[
    ("family", Uint),
    ("address", Str),
    ("port", Uint),
    ("uid", Uint),
];
const PROGRAM: &[(&str, Type)] = &[
    ("id", Uint),
    ("type", Str),
    ("name", Str),
    ("tag", Str),
    ("uid", Uint),
];

/// Every event and its own fields.
pub const EVENTS: &[(&str, &[(&str, Type)])] = &[
    ("guest_up", &[("target", Str), ("kernel", Str)]),
    ("guest_lost", &[("target", Str), ("reason", Str)]),
    (
        "snapshot",
        &[
            ("processes", UintOrNull),
            ("modules", UintOrNull),
            ("listeners", UintOrNull),
            ("bpf_programs", UintOrNull),
            ("hidden_processes", UintOrNull),
        ],
    ),
    ("process_started", PROCESS),
    ("process_exited", PROCESS),
    ("hidden_process", PROCESS),
    ("module_loaded", MODULE),
    ("module_removed", MODULE),
    ("listener_opened", LISTENER),
    ("listener_closed", LISTENER),
    ("bpf_program_loaded", PROGRAM),
    ("bpf_program_unloaded", PROGRAM),
    ("source_failed", &[("source", Str), ("reason", Str)]),
    ("source_recovered", &[("source", Str)]),
];

/// Checks one line of output against the schema: a JSON object whose
/// `event` is known, with exactly the common fields and that event's, each
/// of its type.
pub fn check(line: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("not an object: {line}"))?;
    let event = obj
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no event: {line}"))?;
    let fields = EVENTS
        .iter()
        .find(|(name, _)| *name == event)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("unknown event {event:?}: {line}"))?;
    let expected: Vec<&(&str, Type)> = COMMON.iter().chain(fields).collect();
    for (name, ty) in &expected {
        let value = obj
            .get(*name)
            .ok_or_else(|| format!("{event}: no {name}: {line}"))?;
        if !ty.accepts(value) {
            return Err(format!("{event}: {name} is not {}: {line}", ty.name()));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !expected.iter().any(|(n, _)| n == k)) {
        return Err(format!("{event}: unknown field {extra:?}: {line}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Event, Kind};

    fn every_kind() -> Vec<Kind> {
        let p = event::Process {
            pid: 1,
            ppid: 0,
            uid: 0,
            comm: "init".into(),
        };
        let m = event::Module {
            name: "dummy".into(),
            size: 16384,
        };
        let l = event::Listener {
            family: 4,
            address: "0.0.0.0".into(),
            port: 22,
            uid: 0,
        };
        let g = event::Program {
            id: 7,
            prog_type: "tracepoint".into(),
            name: "trace_exec".into(),
            tag: "0123456789abcdef".into(),
            uid: 0,
        };
        vec![
            Kind::GuestUp {
                target: "unix:/x".into(),
                kernel: "6.1.0".into(),
            },
            Kind::GuestLost {
                target: "unix:/x".into(),
                reason: "closed".into(),
            },
            Kind::Snapshot {
                processes: Some(1),
                modules: None,
                listeners: Some(0),
                bpf_programs: Some(2),
                hidden_processes: Some(0),
            },
            Kind::ProcessStarted(p.clone()),
            Kind::ProcessExited(p.clone()),
            Kind::HiddenProcess(p),
            Kind::ModuleLoaded(m.clone()),
            Kind::ModuleRemoved(m),
            Kind::ListenerOpened(l.clone()),
            Kind::ListenerClosed(l),
            Kind::BpfProgramLoaded(g.clone()),
            Kind::BpfProgramUnloaded(g),
            Kind::SourceFailed {
                source: "modules".into(),
                reason: "no module support".into(),
            },
            Kind::SourceRecovered {
                source: "modules".into(),
            },
        ]
    }

    #[test]
    fn every_event_the_code_can_write_fits_the_schema() {
        let kinds = every_kind();
        assert_eq!(kinds.len(), EVENTS.len());
        for kind in kinds {
            let line = Event::now("web-1", kind.clone()).to_line();
            check(&line).unwrap_or_else(|e| panic!("{e}"));
            assert!(line.starts_with("{\"time\":"), "{line}");
            assert!(line.contains(&format!("\"event\":\"{}\"", kind.name())));
        }
    }

    #[test]
    fn check_refuses_what_a_pipeline_could_not_rely_on() {
        let ok = r#"{"time":"2026-12-05T01:02:03.004Z","guest":"g","event":"module_loaded","name":"m","size":1}"#;
        check(ok).unwrap();
        for bad in [
            r#"{"time":"2026-12-05T01:02:03.004Z","guest":"g","event":"module_loaded","name":"m"}"#,
            r#"{"time":"2026-12-05T01:02:03.004Z","guest":"g","event":"module_loaded","name":"m","size":-1}"#,
            r#"{"time":"2026-12-05T01:02:03.004Z","guest":"g","event":"module_loaded","name":"m","size":1,"x":1}"#,
            r#"{"time":"yesterday","guest":"g","event":"module_loaded","name":"m","size":1}"#,
            r#"{"time":"2026-12-05T01:02:03.004Z","guest":"g","event":"module_eaten","name":"m","size":1}"#,
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    /// The README's event table lists exactly the schema's events and
    /// fields, so the documentation cannot drift from what is checked.
    #[test]
    fn the_readme_documents_exactly_this_schema() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        for (event, fields) in EVENTS {
            let names: Vec<String> = fields
                .iter()
                .map(|(n, t)| format!("`{n}` ({})", t.name()))
                .collect();
            let row = format!("| `{event}` | {} |", names.join(", "));
            assert!(readme.contains(&row), "README lacks the row:\n{row}");
        }
    }
}
