//! `telebpf bench monitor`: what watching many guests costs the host.
//!
//! It starts its own proxies — one process per guest, each on a Unix
//! socket with the `monitor` policy (this machine has no second guest, and
//! separate proxy processes are what N guests look like to the host) — and
//! for each N drives N connected guests through the same rounds
//! `telebpf monitor` makes (processes, the `/proc` listing twice, modules,
//! listeners, BPF programs), each guest on its own thread, back to back.
//! It prints, per N:
//!
//! * host CPU per guest per round (`getrusage` of this process: only the
//!   monitor's side; the proxies are other processes);
//! * wall time per round (all N guests' rounds, concurrently);
//! * the proxies' CPU per guest per round (`/proc/PID/stat`): the guests'
//!   side, which here runs on the same cores as the host's, so the wall
//!   time of a round is at least `N × (host + proxy CPU) / cores`; with
//!   the guests on CPUs of their own (real VMs), `N × host CPU / cores`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telebpf_ids::Mode;
use telebpf_monitor::config::Guest;
use telebpf_monitor::guest::{Costs, Watched};

use crate::error::CliError;

/// One proxy process of the bench.
struct Proxy {
    child: Child,
    target: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of a process, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th, stime the 15th; with state skipped, the
    // 4th field is at index 0, so utime is at 10 and stime at 11.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time of this process so far (all threads).
fn own_cpu() -> Duration {
    // SAFETY: `usage` is a valid rusage to write into.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn start_proxies(dir: &Path, exe: &Path, key: &Path, n: usize) -> Result<Vec<Proxy>, CliError> {
    let mut proxies = Vec::with_capacity(n);
    for i in 0..n {
        let sock = dir.join(format!("p{i}.sock"));
        let target = format!("unix:{}", sock.display());
        let log = std::fs::File::create(dir.join(format!("p{i}.log")))?;
        let child = Command::new(exe)
            .args(["--listen", &target, "--policy", "monitor", "--key-file"])
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| CliError::Run {
                program: exe.display().to_string(),
                source,
            })?;
        proxies.push(Proxy { child, target });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, _) in proxies.iter().enumerate() {
        while !dir.join(format!("p{i}.sock")).exists() {
            if Instant::now() > deadline {
                return Err(CliError::Bench(format!(
                    "proxy {i} did not listen within 30 s (see {})",
                    dir.join(format!("p{i}.log")).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(proxies)
}

/// Runs the bench for each count in `counts`, `rounds` rounds each.
pub fn run(
    counts: &[usize],
    rounds: usize,
    mode: Mode,
    proxy: Option<&Path>,
) -> Result<(), CliError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError::Bench(
            "bench monitor starts its own proxies (bpf() in this kernel): run it as root".into(),
        ));
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    if max == 0 || rounds == 0 {
        return Err(CliError::Bench(
            "--guests and --rounds must be at least 1".into(),
        ));
    }
    let exe = match proxy {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("telebpf-proxy"),
    };
    let dir = std::env::temp_dir().join(format!("telebpf-bench-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let key = dir.join("key");
        telebpf_protocol::key::Psk::write_new(&key).map_err(CliError::WriteKey)?;
        let proxies = start_proxies(&dir, &exe, &key, max)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "monitor rounds ({}: processes, /proc twice, modules, listeners, programs), {rounds} rounds per guest, proxies on Unix sockets, {cores} cores",
            mode.name()
        );
        println!(
            "{:>6} {:>22} {:>16} {:>26} {:>14} {:>16}",
            "guests",
            "host CPU/guest/round",
            "wall/round",
            "proxies' CPU/guest/round",
            "wall vs N=1",
            "host CPU vs N=1"
        );
        let mut base: Option<(f64, f64)> = None;
        for &n in counts {
            let guests: Vec<Guest> = proxies[..n]
                .iter()
                .enumerate()
                .map(|(i, p)| Guest {
                    name: format!("g{i}"),
                    target: p.target.clone(),
                    key_file: key.clone(),
                })
                .collect();
            // Connected and warmed up (BTF, collectors loaded, first
            // snapshot) outside the measurement.
            let mut watched = Vec::with_capacity(n);
            for g in &guests {
                let mut w = Watched::connect(g, mode).map_err(CliError::Bench)?;
                w.round().map_err(CliError::Bench)?;
                watched.push(w);
            }
            let proxy_cpu = |ps: &[Proxy]| {
                ps.iter()
                    .map(|p| process_cpu(p.child.id()))
                    .sum::<Duration>()
            };
            let (cpu0, pcpu0, t0) = (own_cpu(), proxy_cpu(&proxies[..n]), Instant::now());
            let failed = std::thread::scope(|s| {
                let handles: Vec<_> = watched
                    .iter_mut()
                    .map(|w| {
                        s.spawn(move || {
                            for _ in 0..rounds {
                                w.round()?;
                            }
                            Ok::<(), String>(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().ok().and_then(Result::err))
                    .next()
            });
            let wall = t0.elapsed();
            let mut costs = [Duration::ZERO; 5];
            for w in &mut watched {
                for (sum, c) in costs.iter_mut().zip(w.costs.cpu) {
                    *sum += c;
                }
            }
            let (cpu, pcpu) = (own_cpu() - cpu0, proxy_cpu(&proxies[..n]) - pcpu0);
            if let Some(e) = failed {
                return Err(CliError::Bench(format!("{n} guests: {e}")));
            }
            let per = (n * rounds) as f64;
            let host_us = cpu.as_secs_f64() * 1e6 / per;
            let wall_ms = wall.as_secs_f64() * 1e3 / rounds as f64;
            let proxy_us = pcpu.as_secs_f64() * 1e6 / per;
            let (b_wall, b_cpu) = *base.get_or_insert((wall_ms, host_us));
            println!(
                "{n:>6} {:>19.0} µs {:>13.2} ms {:>23.0} µs {:>13.2}x {:>15.2}x",
                host_us,
                wall_ms,
                proxy_us,
                wall_ms / b_wall,
                host_us / b_cpu
            );
            // The warm-up round is in the costs too: rounds + 1.
            let breakdown: Vec<String> = Costs::NAMES
                .iter()
                .zip(costs)
                .map(|(name, c)| {
                    format!(
                        "{name} {:.0} µs",
                        c.as_secs_f64() * 1e6 / (n * (rounds + 1)) as f64
                    )
                })
                .collect();
            println!(
                "{:>6} host CPU per guest per round, by source: {}",
                "",
                breakdown.join(", ")
            );
            // Here the guests' side runs on the same cores as the host's:
            // all the CPU a round takes, spread over every core, is the
            // least wall time a round can take.
            let floor_ms = n as f64 * (host_us + proxy_us) / 1e3 / cores as f64;
            let host_floor_ms = n as f64 * host_us / 1e3 / cores as f64;
            println!(
                "{:>6} floor of the wall time here: {n} × ({host_us:.0} + {proxy_us:.0}) µs of CPU / {cores} cores = {floor_ms:.2} ms; with the guests on CPUs of their own: {n} × {host_us:.0} µs / {cores} cores = {host_floor_ms:.2} ms",
                ""
            );
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
