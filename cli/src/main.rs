//! `telebpf`: the host-side command line.
//!
//! * `telebpf keygen --out FILE` — a fresh pre-shared key.
//! * `telebpf exec --target ADDR --key-file FILE -- CMD…` — run an unmodified
//!   program against the guest.
//! * `telebpf bench rtt --target ADDR --key-file FILE` — round-trip figures.
//! * `telebpf bench ringbuf --target ADDR --key-file FILE` — guest ring-buffer
//!   records on the host: events/s and latency, local vs forwarded.
//! * `telebpf bench startup --target ADDR --key-file FILE` — execsnoop's
//!   startup, local vs forwarded.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod exec;
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
    /// Run CMD with the preload library injected and pointed at the proxy.
    Exec {
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
            .map_err(|e| format!("cannot write {}: {e}", out.display())),
        Command::Exec {
            target,
            key_file,
            command,
        } => exec::exec(&target, &key_file, &command),
        Command::Bench { which } => bench::run(which),
        Command::BenchWorker { what, runs } => bench::worker(&what, runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("telebpf: {msg}");
            ExitCode::FAILURE
        }
    }
}
