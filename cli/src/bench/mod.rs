//! `telebpf bench …`: figures printed with a baseline from the same run.

use std::path::PathBuf;

use clap::Subcommand;

mod ringbuf;
mod rtt;
mod startup;

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
    /// Guest ring-buffer records consumed on the host: events/s and latency,
    /// local vs forwarded.
    Ringbuf {
        /// Proxy address.
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// Records of the throughput phase.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        /// Runs of each side (alternating); the median run is shown.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Startup of Debian's execsnoop until its header line, local vs
    /// forwarded.
    Startup {
        /// Proxy address.
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// Timed runs of each.
        #[arg(long, default_value_t = 10)]
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
        Bench::Ringbuf {
            target,
            key_file,
            events,
            repeat,
        } => ringbuf::run(&target, &key_file, events, repeat),
        Bench::Startup {
            target,
            key_file,
            runs,
        } => startup::run(&target, &key_file, runs),
    }
}

/// The measuring loop of a child process (see `rtt` and `ringbuf`).
pub fn worker(what: &str, runs: usize) -> Result<(), String> {
    match what {
        "lookup" => rtt::lookup_worker(runs),
        "ringbuf" => ringbuf::worker(runs),
        other => Err(format!("unknown bench worker {other:?}")),
    }
}
