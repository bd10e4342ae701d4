//! `telebpf bench startup`.
//!
//! Wall time from starting Debian's `execsnoop` (libbpf-tools) until it is
//! ready: it prints its header line (`PCOMM …`) only after it has opened,
//! loaded and attached its BPF object and set up its perf buffer. It runs
//! under `stdbuf -oL` so that the header is not held back in a stdio
//! buffer. Each run is timed from `spawn` to the header line arriving on
//! our end of its stdout pipe; then the tool is stopped with SIGINT (as a
//! user would) and reaped.
//!
//! Local runs (as root, plain) and forwarded runs (through the preload)
//! alternate, after one untimed warm-up of each, so that drift of the
//! machine affects both alike; each starts after a short pause that lets
//! the previous one's teardown finish.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::CliError;
use crate::exec::preload_env;

/// The tool.
const EXECSNOOP: &str = "/usr/sbin/execsnoop";
/// Pause before each run, so that the previous run's teardown (the kernel
/// freeing its programs, the proxy closing its session) is over.
const SETTLE: Duration = Duration::from_millis(150);
/// Longest wait for the header.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `sig` to the child and reaps it (SIGKILL after 5 s).
fn stop(child: &mut Child, sig: i32) {
    // SAFETY: kill(2) on the pid of our own unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One run: the time until the header line.
fn once(forwarded: Option<(&str, &Path)>) -> Result<Duration, CliError> {
    std::thread::sleep(SETTLE);
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", EXECSNOOP])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((target, key_file)) = forwarded {
        cmd.envs(preload_env(target, key_file)?);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| CliError::Run {
        program: format!("stdbuf -oL {EXECSNOOP}"),
        source,
    })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // The reader blocks; a thread lets us time out.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.any(|l| l.is_ok_and(|l| l.starts_with("PCOMM")));
        let _ = tx.send((ready, start.elapsed()));
        // Keep draining so that the tool never blocks on a full pipe.
        lines.for_each(drop);
    });
    let result = match rx.recv_timeout(READY_TIMEOUT) {
        Ok((true, t)) => Ok(t),
        Ok((false, _)) | Err(_) => Err(()),
    };
    stop(&mut child, libc::SIGINT);
    result.map_err(|()| {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut err);
        CliError::NoHeader {
            forwarded: forwarded.is_some(),
            last_line: err
                .trim()
                .lines()
                .last()
                .unwrap_or("no message")
                .to_string(),
        }
    })
}

/// Median, minimum and maximum in milliseconds.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(samples: &mut [Duration]) -> Spread {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = samples.len();
    let median = if n % 2 == 1 {
        ms(samples[n / 2])
    } else {
        (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
    };
    Spread {
        median,
        min: ms(samples[0]),
        max: ms(samples[n - 1]),
    }
}

/// Runs the benchmark and prints the table.
pub fn run(target: &str, key_file: &Path, runs: usize) -> Result<(), CliError> {
    let runs = runs.max(1);
    let fwd = Some((target, key_file));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Warm-up: page cache, the proxy's first connection.
    let mut local_err = None;
    if root {
        if let Err(e) = once(None) {
            local_err = Some(e);
        }
    } else {
        local_err = Some(CliError::NeedsRoot);
    }
    once(fwd)?;
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        if local_err.is_none() {
            match once(None) {
                Ok(t) => local.push(t),
                Err(e) => local_err = Some(e),
            }
        }
        forwarded.push(once(fwd)?);
    }

    println!(
        "telebpf bench startup: {EXECSNOOP} until its header line, {runs} runs each, target {target}"
    );
    println!(
        "{:<12} {:>11} {:>9} {:>9}",
        "", "median ms", "min ms", "max ms"
    );
    let f = spread(&mut forwarded);
    let l = (local_err.is_none()).then(|| spread(&mut local));
    if let Some(l) = &l {
        println!(
            "{:<12} {:>11.1} {:>9.1} {:>9.1}",
            "local", l.median, l.min, l.max
        );
    }
    println!(
        "{:<12} {:>11.1} {:>9.1} {:>9.1}",
        "forwarded", f.median, f.min, f.max
    );
    match (&l, local_err) {
        (Some(l), _) => {
            let ratio = f.median / l.median;
            println!(
                "forwarded / local: {ratio:.2}x at the median (target: <= 1.5x: {})",
                if ratio <= 1.5 { "met" } else { "NOT met" }
            );
        }
        (None, Some(e)) => println!("local runs unavailable: {e}"),
        (None, None) => {}
    }
    Ok(())
}
