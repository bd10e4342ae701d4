//! `telebpf bench …`: figures printed with a baseline from the same run.

use std::path::PathBuf;

use clap::Subcommand;

mod rtt;

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Raw transport round trip vs a forwarded BPF_MAP_LOOKUP_ELEM.
    Rtt {
        /// Proxy address.
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// Round trips per measurement.
        #[arg(long, default_value_t = 5000)]
        runs: usize,
    },
}

/// Runs a benchmark.
pub fn run(which: Bench) -> Result<(), String> {
    match which {
        Bench::Rtt {
            target,
            key_file,
            runs,
        } => rtt::run(&target, &key_file, runs),
    }
}

/// The measuring loop of a child process (see `rtt`).
pub fn worker(what: &str, runs: usize) -> Result<(), String> {
    match what {
        "lookup" => rtt::lookup_worker(runs),
        other => Err(format!("unknown bench worker {other:?}")),
    }
}
