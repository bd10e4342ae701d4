//! `telebpf`: the host-side command line.
//!
//! * `telebpf keygen --out FILE` — a fresh pre-shared key.
//! * `telebpf exec --target ADDR --key-file FILE -- CMD…` — run an unmodified
//!   program against the guest.
//! * `telebpf monitor --guests FILE [--interval MS] [--mode M] [--output
//!   FILE]` — watch many guests, events as JSON lines.
//! * `telebpf bench rtt --target ADDR --key-file FILE` — round-trip figures.
//! * `telebpf bench ringbuf --target ADDR --key-file FILE` — guest ring-buffer
//!   records on the host: events/s and latency, local vs forwarded.
//! * `telebpf bench startup --target ADDR --key-file FILE` — execsnoop's
//!   startup, local vs forwarded.
//! * `telebpf ids ps|modules|tcp --target ADDR --key-file FILE --mode M` —
//!   the guest kernel's processes, modules or TCP sockets.
//! * `telebpf bench ids --target ADDR --key-file FILE` — those walks in
//!   every mode, against the same collectors run directly.
//! * `telebpf bench interpose [--baseline LIB]` — instructions the preload
//!   adds to calls that do not concern the guest (callgrind).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

mod bcc;
mod bench;
mod error;
mod exec;
mod ids;
mod monitor;
mod program;
mod stats;

#[derive(Parser, Debug)]
#[command(
    name = "telebpf",
    version,
    about = "Run unmodified eBPF tools against a guest kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a fresh random 256-bit pre-shared key (mode 0600).
    Keygen {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run CMD against the guest: with the preload library injected, or,
    /// for a program the preload cannot reach (statically linked, Go) or
    /// with `--supervise`, under the seccomp supervisor.
    Exec {
        /// Serve CMD with the seccomp supervisor even if the preload could
        /// reach it.
        #[arg(long)]
        supervise: bool,
        /// Proxy address (`unix:PATH`, `vsock:CID:PORT`, `vsock-uds:PATH:PORT`).
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// List the guest kernel's processes, modules or TCP sockets.
    Ids {
        /// What to list.
        #[arg(value_enum)]
        what: ids::What,
        /// Proxy address.
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// How to read guest memory: per-pointer, bulk-page or bulk-data.
        #[arg(long, default_value = "bulk-data")]
        mode: telebpf_ids::Mode,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Walk again every MS milliseconds over the same connection, as a
        /// monitor does (a bulk-page walk then gets only the pages that
        /// changed); each walk is followed by a `#` line with its cost, or
        /// with --json is one line `{"walk","requests","bytes","micros","rows"}`.
        #[arg(long, value_name = "MS")]
        watch: Option<u64>,
        /// With --watch: stop after this many walks.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Watch many guests: their processes, modules, TCP listeners and BPF
    /// programs, as JSON lines (one event per line).
    Monitor {
        /// The guests file (TOML: `[[guest]]` with `name`, `target`,
        /// `key-file`).
        #[arg(long, value_name = "FILE")]
        guests: PathBuf,
        /// Time between the starts of two rounds, per guest.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval: u64,
        /// How to read guest memory: bulk-data, bulk-page or per-pointer.
        #[arg(long, default_value = "bulk-data")]
        mode: telebpf_ids::Mode,
        /// Append events here instead of writing them to stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Stop after this many rounds per guest (default: run until
        /// SIGTERM/SIGINT).
        #[arg(long, value_name = "N")]
        rounds: Option<u64>,
    },
    /// Measure.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// Internal: the measuring loop run under the preload by `bench`.
    #[command(hide = true)]
    BenchWorker {
        /// What to measure.
        what: String,
        /// Iterations.
        runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out } => telebpf_protocol::key::Psk::write_new(&out)
            .map(|_| ())
            .map_err(CliError::WriteKey),
        Command::Exec {
            supervise,
            target,
            key_file,
            command,
        } => exec::exec(&target, &key_file, &command, supervise),
        Command::Ids {
            what,
            target,
            key_file,
            mode,
            json,
            watch,
            count,
        } => ids::run(
            what,
            &target,
            &key_file,
            mode,
            json,
            watch.map(|ms| (std::time::Duration::from_millis(ms), count)),
        ),
        Command::Monitor {
            guests,
            interval,
            mode,
            output,
            rounds,
        } => monitor::run(&guests, interval, mode, output.as_ref(), rounds),
        Command::Bench { which } => bench::run(which),
        Command::BenchWorker { what, runs } => bench::worker(&what, runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("telebpf: {err}");
            ExitCode::FAILURE
        }
    }
}
