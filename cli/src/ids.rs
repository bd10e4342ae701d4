//! `telebpf ids ps|modules|tcp`: the guest kernel's processes, modules or
//! TCP sockets, read from outside the guest.

use std::path::Path;

use telebpf_client::Settings;
use telebpf_collectors::Collector;
use telebpf_ids::{render, Inspector, Mode};

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

/// Prints the list.
pub fn run(
    what: What,
    target: &str,
    key_file: &Path,
    mode: Mode,
    json: bool,
) -> Result<(), String> {
    let settings = Settings::new(target, key_file.to_path_buf()).map_err(|e| e.to_string())?;
    let mut inspector = Inspector::connect(&settings).map_err(|e| e.to_string())?;
    let walk = inspector
        .walk(what.collector(), mode)
        .map_err(|e| e.to_string())?;
    if json {
        println!("{}", render::json(&walk.rows));
    } else {
        print!("{}", render::text(&walk.rows));
    }
    Ok(())
}
