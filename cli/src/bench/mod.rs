//! `telebpf bench …`: figures printed with a baseline from the same run.

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::CliError;

mod chart;
mod ids;
mod interpose;
mod monitor;
mod ringbuf;
mod rtt;
mod startup;

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Raw transport round trips (blocking, spin-then-block) and the sealed
    /// ping vs a forwarded BPF_MAP_LOOKUP_ELEM.
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
        /// The raw echo to measure the transport with (`telebpf-proxy
        /// --echo ADDR`); default: for a vsock target the same path one
        /// port up (the test guest's), for a Unix target a thread here.
        #[arg(long = "raw-echo", value_name = "ADDR")]
        raw_echo: Option<String>,
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
        /// Also draw the one-at-a-time latency distributions (local and
        /// forwarded, each side's median run) as an SVG chart here.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
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
    /// Every bulk-read collector in every mode (per-pointer, bulk-page,
    /// bulk-data) against the proxy, and directly in this kernel.
    Ids {
        /// Proxy address.
        #[arg(long)]
        target: String,
        /// Pre-shared key file.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// Timed walks of each collector and mode (per-pointer: at most 3).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Also write the table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Also draw each collector's median walk per mode, with the direct
        /// and per-pointer bases, as an SVG chart here.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// What `telebpf monitor` costs the host for N guests: host CPU per
    /// guest per round, wall time per round (starts its own proxies, one
    /// per guest, on Unix sockets: run as root).
    Monitor {
        /// The guest counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        counts: Vec<usize>,
        /// Rounds per guest and count.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// How the walks read guest memory.
        #[arg(long, default_value = "bulk-data")]
        mode: telebpf_ids::Mode,
        /// The proxy to start (default: `telebpf-proxy` beside this
        /// executable).
        #[arg(long, value_name = "PATH")]
        proxy: Option<PathBuf>,
    },
    /// Instructions the preload adds to calls that do not concern the
    /// guest (read, fstat, open+close, mmap+munmap, dup+close,
    /// syscall(getpid)), counted by callgrind with and without it; needs
    /// `valgrind` and `cc`.
    Interpose {
        /// Calls per case.
        #[arg(long, default_value_t = 20_000)]
        calls: u64,
        /// Another build of the preload to count beside this one (e.g. the
        /// base branch's).
        #[arg(long, value_name = "PATH")]
        baseline: Option<PathBuf>,
    },
}

/// Runs a benchmark.
pub fn run(which: Bench) -> Result<(), CliError> {
    match which {
        Bench::Rtt {
            target,
            key_file,
            runs,
            raw_echo,
        } => rtt::run(&target, &key_file, runs, raw_echo.as_deref()),
        Bench::Ringbuf {
            target,
            key_file,
            events,
            repeat,
            svg,
        } => ringbuf::run(&target, &key_file, events, repeat, svg.as_deref()),
        Bench::Startup {
            target,
            key_file,
            runs,
        } => startup::run(&target, &key_file, runs),
        Bench::Ids {
            target,
            key_file,
            runs,
            csv,
            svg,
        } => ids::run(&target, &key_file, runs, csv.as_deref(), svg.as_deref()),
        Bench::Monitor {
            counts,
            rounds,
            mode,
            proxy,
        } => monitor::run(&counts, rounds, mode, proxy.as_deref()),
        Bench::Interpose { calls, baseline } => interpose::run(calls, baseline.as_deref()),
    }
}

/// The measuring loop of a child process (see `rtt` and `ringbuf`).
pub fn worker(what: &str, runs: usize) -> Result<(), CliError> {
    match what {
        "lookup" => rtt::lookup_worker(runs),
        "ringbuf" => ringbuf::worker(runs),
        other => Err(CliError::UnknownWorker(other.to_string())),
    }
}

/// What a `telebpf bench-worker` child printed: `key=value` words.
pub(crate) struct Figures {
    /// The child's standard output.
    pub(crate) text: String,
}

impl Figures {
    /// The value of `name=…`.
    pub(crate) fn word(&self, name: &str) -> Option<&str> {
        self.text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    }

    /// The number `name=…`, NaN when missing.
    pub(crate) fn get(&self, name: &str) -> f64 {
        self.word(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

/// Runs `telebpf bench-worker WHAT ARG` as a child — with the preload
/// pointed at `forwarded` (target, key file), else plainly on this kernel —
/// and returns what it printed; on failure, its last line of stderr (tool
/// libraries print their own lines before the worker's verdict).
pub(crate) fn run_worker(
    what: &str,
    arg: usize,
    forwarded: Option<(&str, &std::path::Path)>,
) -> Result<Figures, CliError> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench-worker", what, &arg.to_string()]);
    if let Some((target, key_file)) = forwarded {
        cmd.envs(crate::exec::preload_env(target, key_file)?);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::Worker(
            err.lines().last().unwrap_or("failed").trim().to_string(),
        ));
    }
    Ok(Figures {
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}
