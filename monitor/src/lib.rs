//! `telebpf monitor`: one host watches many guests.
//!
//! A provider runs one monitor per host. For every guest of its guests file
//! ([`config`]) a thread of its own connects to that guest's proxy, reads
//! the guest kernel's task list, `/proc` listing, modules, TCP listeners
//! and BPF programs once per round, and turns what changed into events
//! ([`observe`]); one writer prints them as JSON lines ([`event`], whose
//! stable shape is [`schema`]). A slow or dead guest holds only its own
//! thread: the others keep their rounds.

pub mod config;
pub mod event;
pub mod observe;
pub mod schema;
