//! `telebpf-proxy`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// Executes forwarded bpf() calls in this machine's kernel for authenticated clients.
#[derive(Parser, Debug)]
#[command(name = "telebpf-proxy", version)]
struct Args {
    /// Where to listen: `unix:PATH` or `vsock:PORT`.
    #[arg(long)]
    listen: String,
    /// Pre-shared key file (see `telebpf keygen`).
    #[arg(long = "key-file", required = true)]
    key_file: Vec<std::path::PathBuf>,
    #[command(flatten)]
    limits: telebpf_proxy::limits::LimitArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match telebpf_proxy::Config::new(&args.listen, &args.key_file) {
        Ok(c) => telebpf_proxy::Config {
            limits: args.limits,
            ..c
        },
        Err(e) => {
            eprintln!("telebpf-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    match telebpf_proxy::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telebpf-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
