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
    /// Pre-shared key file (see `telebpf keygen`); may be given more than
    /// once. These keys get the rules of `--policy` (all rights without it).
    #[arg(long = "key-file")]
    key_file: Vec<std::path::PathBuf>,
    #[command(flatten)]
    limits: telebpf_proxy::limits::LimitArgs,
    /// What keys may do: a policy file (TOML, see the README), or one of
    /// the built-in profiles `full`, `read-only`, `tracing`. Its `[[key]]`
    /// entries add keys with policies of their own.
    #[arg(long)]
    policy: Option<String>,
    /// Write the audit log (JSON lines) to FILE, or to stderr with `-`.
    #[arg(long, value_name = "FILE")]
    audit: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = telebpf_proxy::Config::new(&args.listen, &args.key_file).and_then(|mut c| {
        if let Some(spec) = &args.policy {
            c.set_policy(spec)?;
        }
        c.audit = args.audit;
        c.limits = args.limits;
        c.check()?;
        Ok(c)
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            telebpf_proxy::log::info(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    match telebpf_proxy::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telebpf_proxy::log::info(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}
