//! The command line's one error type.
//!
//! Every subcommand returns [`CliError`]; `main` prints it as one line,
//! `telebpf: …`, and exits with status 1. A variant per failure site keeps
//! the cause (an `io::Error`, the client's, the key's) attached instead of
//! flattening it into a string early, so each message names what failed and
//! why. The rendered texts are the ones users and the end-to-end tests see
//! (the key-file refusals, `no module support`, …): a test below pins them.

use std::io;
use std::path::PathBuf;

use telebpf_client::ClientError;
use telebpf_protocol::address::AddressError;
use telebpf_protocol::key::KeyError;

use crate::exec::ENV_PRELOAD;

/// Why a `telebpf` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `keygen` could not write the new key (the key error names the file).
    #[error(transparent)]
    WriteKey(KeyError),
    /// A key file is unreadable, malformed or unsafe (its message names it).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `--target` is not an address.
    #[error("bad --target {target:?}: {source}")]
    BadTarget {
        /// As given.
        target: String,
        /// Why it does not parse.
        source: AddressError,
    },
    /// The key file's path could not be made absolute (the child may run
    /// elsewhere, so the preload gets an absolute one).
    #[error("key file {path}: {source}")]
    KeyPath {
        /// As given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path of this executable is unknown, so the preload library
    /// beside it cannot be found.
    #[error("cannot find my own executable: {0}")]
    OwnExecutable(#[source] io::Error),
    /// No preload library beside this executable, and `$TELEBPF_PRELOAD`
    /// unset.
    #[error("{0} not found (set {ENV_PRELOAD})")]
    NoPreload(PathBuf),
    /// A benchmark could not set up or run (the text says what).
    #[error("{0}")]
    Bench(String),
    /// `monitor` stopped: its guests file, its output.
    #[error(transparent)]
    Monitor(#[from] telebpf_monitor::Error),
    /// `monitor --interval 0`.
    #[error("--interval must be at least 1 ms")]
    ZeroInterval,
    /// `exec` without a program.
    #[error("no command given")]
    NoCommand,
    /// `exec` of a program the preload library cannot reach (it would act
    /// on the host kernel).
    #[error("exec: {0}")]
    Unreachable(#[from] crate::program::Unreachable),
    /// The seccomp supervisor could not start or serve the program.
    #[error("exec: {0}")]
    Supervisor(#[from] telebpf_supervisor::SupervisorError),
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Run {
        /// The program (and for the startup bench, its wrapper).
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Connecting to the proxy or a call over the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A walk of the guest's kernel data failed.
    #[error(transparent)]
    Ids(#[from] telebpf_ids::Error),
    /// An output file (`bench ids --csv`) could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// I/O of a bench's own plumbing (its socket pair, its child process).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// `bench-worker` was asked for a loop it does not have.
    #[error("unknown bench worker {0:?}")]
    UnknownWorker(String),
    /// A bench's child failed; its last line of stderr says why (tool
    /// libraries print their own lines before the worker's verdict).
    #[error("{0}")]
    Worker(String),
    /// A bench's child succeeded but did not print a figure.
    #[error("worker output lacks {name}: {output}")]
    WorkerOutput {
        /// The missing `name=value` word.
        name: &'static str,
        /// What it printed.
        output: String,
    },
    /// The proxy answered a `Ping` with something else.
    #[error("unexpected reply to Ping: {0}")]
    UnexpectedReply(String),
    /// A `bpf()` call of a bench failed.
    #[error("{call}: {source}")]
    Bpf {
        /// The command, e.g. `bpf(1)` or `BPF_PROG_TEST_RUN`.
        call: String,
        /// The errno.
        source: io::Error,
    },
    /// `bench rtt --raw-echo` is not an address.
    #[error("bad --raw-echo address {addr:?}: {source}")]
    RawEchoAddress {
        /// What was given.
        addr: String,
        /// Why it does not parse.
        source: AddressError,
    },
    /// The raw echo of `bench rtt` cannot be reached (for a vsock target:
    /// the guest runs none, see `tests/vm/init.sh`; give `--raw-echo`).
    #[error("cannot reach the raw echo at {addr}: {source}")]
    RawEcho {
        /// Its address.
        addr: telebpf_protocol::Address,
        /// Why.
        source: telebpf_protocol::TransportError,
    },
    /// The rtt bench's lookup read back another value than it wrote.
    #[error("lookup returned {0:#x}, expected 0x12345678")]
    WrongValue(u64),
    /// The ringbuf bench's BPF object was not built with this binary.
    #[error("the bench's BPF object was not built: {0}")]
    NoBenchObject(&'static str),
    /// libbpf failed in the ringbuf bench.
    #[error("{what}: {source}")]
    Libbpf {
        /// The step, e.g. `ring_buffer__new`.
        what: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The bench's BPF object lacks a map or program it needs.
    #[error("no {0} in the object")]
    NotInObject(&'static str),
    /// The ringbuf bench's producer thread panicked.
    #[error("the producer thread panicked")]
    ProducerPanicked,
    /// The startup bench's execsnoop never became ready.
    #[error("execsnoop{} never printed its header: {last_line}", if *.forwarded { " (forwarded)" } else { "" })]
    NoHeader {
        /// Whether it ran under the preload.
        forwarded: bool,
        /// Its last line of stderr.
        last_line: String,
    },
    /// The local half of a bench needs root.
    #[error("needs root")]
    NeedsRoot,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users, scripts and the e2e tests see stay as they were.
    #[test]
    fn messages() {
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let cases = [
            (
                CliError::WriteKey(KeyError::Write {
                    path: "/k".into(),
                    source: io(),
                }),
                "cannot write key file /k: No such file or directory (os error 2)",
            ),
            (
                CliError::OwnExecutable(io()),
                "cannot find my own executable: No such file or directory (os error 2)",
            ),
            (
                CliError::NoPreload("/x/libtelebpf_preload.so".into()),
                "/x/libtelebpf_preload.so not found (set TELEBPF_PRELOAD)",
            ),
            (CliError::NoCommand, "no command given"),
            (
                CliError::Run {
                    program: "bpftool".into(),
                    source: io(),
                },
                "cannot run bpftool: No such file or directory (os error 2)",
            ),
            (
                CliError::Bpf {
                    call: "bpf(0)".into(),
                    source: io(),
                },
                "bpf(0): No such file or directory (os error 2)",
            ),
            (
                CliError::WrongValue(0x1234),
                "lookup returned 0x1234, expected 0x12345678",
            ),
            (
                CliError::NoHeader {
                    forwarded: true,
                    last_line: "no message".into(),
                },
                "execsnoop (forwarded) never printed its header: no message",
            ),
            (
                CliError::UnknownWorker("x".into()),
                "unknown bench worker \"x\"",
            ),
        ];
        for (err, text) in cases {
            let shown = err.to_string();
            assert!(shown.starts_with(text), "{shown:?} vs {text:?}");
        }
        let bad = "nowhere".parse::<telebpf_protocol::Address>().unwrap_err();
        let shown = CliError::BadTarget {
            target: "nowhere".into(),
            source: bad,
        }
        .to_string();
        assert!(shown.starts_with("bad --target \"nowhere\": "), "{shown}");
    }
}
