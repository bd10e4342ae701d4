//! `telebpf bench ids`: every collector in every mode against the proxy,
//! plus the same collector run directly in this machine's kernel (the
//! baseline), in the research's table shape.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use telebpf_client::Settings;
use telebpf_collectors::Collector;
use telebpf_ids::direct::Direct;
use telebpf_ids::{Cost, Inspector, Mode, Rows, Walk};

use super::chart;
use crate::error::CliError;
use crate::stats::{percentile_us, summarize};

/// A per-pointer walk makes hundreds of requests (a TCP walk one per 4 KiB
/// of an often mostly empty bucket table: ~10 ms here), so that mode runs
/// at most this often.
const PER_POINTER_RUNS: usize = 10;

struct Row {
    collector: &'static str,
    mode: &'static str,
    cost: Cost,
    median_us: f64,
    p95_us: f64,
    rows: usize,
}

fn measure(
    runs: usize,
    mut walk: impl FnMut() -> Result<Walk<Rows>, telebpf_ids::Error>,
) -> Result<(Cost, f64, f64, usize), telebpf_ids::Error> {
    // The first walk loads the collector (the proxy keeps it): not timed.
    walk()?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let w = walk()?;
        times.push(w.cost.time);
        last = Some(w);
    }
    let w = last.expect("runs >= 1");
    let p50 = summarize(&mut times).p50_us;
    let p95 = percentile_us(&times, 0.95);
    Ok((w.cost, p50, p95, w.rows.len()))
}

/// Runs the benchmark.
pub fn run(
    target: &str,
    key_file: &Path,
    runs: usize,
    csv: Option<&Path>,
    svg: Option<&Path>,
) -> Result<(), CliError> {
    let runs = runs.max(1);
    let settings = Settings::new(target, key_file.to_path_buf())?;
    let mut inspector = Inspector::connect(&settings)?;
    // The baseline runs the collectors in this machine's kernel: it means
    // something only when that is the proxy's kernel (a unix: target).
    let mut direct = if !target.starts_with("unix:") {
        println!("no direct baseline: {target} is not a proxy on this machine (run the benchmark there for it)");
        None
    } else {
        match Direct::new() {
            Ok(d) => Some(d),
            Err(e) => {
                println!(
                    "direct baseline unavailable here ({e}); run as root on the proxy's machine"
                );
                None
            }
        }
    };
    let mut rows: Vec<Row> = Vec::new();
    for collector in Collector::ALL {
        if let Some(d) = direct.as_mut() {
            match measure(runs, || d.walk(collector, Mode::BulkData)) {
                Ok((cost, median_us, p95_us, n)) => rows.push(Row {
                    collector: collector.name(),
                    mode: "direct",
                    cost,
                    median_us,
                    p95_us,
                    rows: n,
                }),
                Err(e) => println!("{} direct: {e}", collector.name()),
            }
        }
        for mode in Mode::ALL {
            let n_runs = if mode == Mode::PerPointer {
                runs.min(PER_POINTER_RUNS)
            } else {
                runs
            };
            match measure(n_runs, || inspector.walk(collector, mode)) {
                Ok((cost, median_us, p95_us, n)) => rows.push(Row {
                    collector: collector.name(),
                    mode: mode.name(),
                    cost,
                    median_us,
                    p95_us,
                    rows: n,
                }),
                Err(e) => {
                    println!("{} {}: {e}", collector.name(), mode.name());
                    break;
                }
            }
        }
    }

    println!(
        "{:<8} {:<12} {:>6} {:>9} {:>9} {:>12} {:>12} {:>12} {:>9} {:>8}",
        "walk",
        "mode",
        "rows",
        "requests",
        "responses",
        "bytes",
        "median_us",
        "p95_us",
        "÷per-ptr",
        "×direct"
    );
    let mut out = String::from("collector,mode,requests,responses,bytes,median_us,p95_us\n");
    for r in &rows {
        let of = |mode: &str| {
            rows.iter()
                .find(|o| o.collector == r.collector && o.mode == mode)
                .map(|o| o.median_us)
        };
        let speedup = of("per-pointer")
            .filter(|_| r.mode != "per-pointer")
            .map(|p| format!("{:.1}×", p / r.median_us))
            .unwrap_or_else(|| "-".into());
        let vs_direct = of("direct")
            .filter(|_| r.mode != "direct")
            .map(|d| format!("{:.2}×", r.median_us / d))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<12} {:>6} {:>9} {:>9} {:>12} {:>12.1} {:>12.1} {:>9} {:>8}",
            r.collector,
            r.mode,
            r.rows,
            r.cost.requests,
            r.cost.responses,
            r.cost.bytes,
            r.median_us,
            r.p95_us,
            speedup,
            vs_direct
        );
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.1},{:.1}",
            r.collector,
            r.mode,
            r.cost.requests,
            r.cost.responses,
            r.cost.bytes,
            r.median_us,
            r.p95_us
        );
    }
    println!(
        "(÷per-ptr: how many times faster than per-pointer; ×direct: how many times slower than the same collector run directly; {runs} runs, per-pointer {})",
        runs.min(PER_POINTER_RUNS)
    );
    if let Some(path) = csv {
        std::fs::write(path, out).map_err(|source| CliError::WriteFile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if let Some(path) = svg {
        draw(path, &rows, runs)?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}

/// Draws each collector's median walk per mode as grouped bars: the direct
/// walk (the floor) first, then per-pointer (what bulk reads replace), then
/// the bulk modes.
fn draw(path: &Path, rows: &[Row], runs: usize) -> Result<(), CliError> {
    let mut collectors: Vec<&str> = Vec::new();
    for r in rows {
        if !collectors.contains(&r.collector) {
            collectors.push(r.collector);
        }
    }
    let mut modes = vec!["direct"];
    modes.extend(Mode::ALL.iter().map(|m| m.name()));
    modes.retain(|m| rows.iter().any(|r| r.mode == *m));
    chart::bars(
        path,
        &format!("bench ids: median walk per collector and mode ({runs} runs)"),
        "median walk (µs, log scale)",
        &collectors,
        &modes,
        |c, m| {
            rows.iter()
                .find(|r| r.collector == collectors[c] && r.mode == modes[m])
                .map(|r| r.median_us)
        },
    )
}
