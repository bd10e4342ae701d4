//! `telebpf ids ps|modules|tcp`: the guest kernel's processes, modules or
//! TCP sockets, read from outside the guest.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use telebpf_client::Settings;
use telebpf_collectors::Collector;
use telebpf_ids::{render, Inspector, Mode};

use crate::error::CliError;

/// What to list.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Processes, as `ps -e -o pid,ppid,uid,comm`.
    Ps,
    /// Kernel modules, as `lsmod`.
    Modules,
    /// TCP sockets, as /proc/net/tcp and /proc/net/tcp6.
    Tcp,
}

impl What {
    /// The collector behind it.
    pub fn collector(self) -> Collector {
        match self {
            What::Ps => Collector::Processes,
            What::Modules => Collector::Modules,
            What::Tcp => Collector::Tcp,
        }
    }
}

/// Prints the list; with `watch` (interval, number of walks), again and
/// again over the same connection.
pub fn run(
    what: What,
    target: &str,
    key_file: &Path,
    mode: Mode,
    json: bool,
    watch: Option<(Duration, Option<u64>)>,
) -> Result<(), CliError> {
    let settings = Settings::new(target, key_file.to_path_buf())?;
    let mut inspector = Inspector::connect(&settings)?;
    let Some((interval, count)) = watch else {
        let walk = inspector.walk(what.collector(), mode)?;
        if json {
            println!("{}", render::json(&walk.rows));
        } else {
            print!("{}", render::text(&walk.rows));
        }
        return Ok(());
    };
    let mut stdout = std::io::stdout().lock();
    for n in 1..=count.unwrap_or(u64::MAX) {
        let walk = inspector.walk(what.collector(), mode)?;
        let c = walk.cost;
        let written = if json {
            writeln!(
                stdout,
                "{{\"walk\":{n},\"requests\":{},\"bytes\":{},\"micros\":{},\"rows\":{}}}",
                c.requests,
                c.bytes,
                c.time.as_micros(),
                render::json_line(&walk.rows)
            )
        } else {
            write!(stdout, "{}", render::text(&walk.rows)).and_then(|()| {
                writeln!(
                    stdout,
                    "# walk {n}: {} requests, {} bytes, {} µs",
                    c.requests,
                    c.bytes,
                    c.time.as_micros()
                )
            })
        };
        // A reader that went away ends the watch.
        if written.and_then(|()| stdout.flush()).is_err() {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
    Ok(())
}
