//! `telebpf-proxy`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// Executes forwarded bpf() calls in this machine's kernel for authenticated clients.
#[derive(Parser, Debug)]
#[command(name = "telebpf-proxy", version)]
struct Args {
    /// Where to listen: `unix:PATH` or `vsock:PORT`.
    #[arg(long, required_unless_present = "echo")]
    listen: Option<String>,
    /// Instead of the proxy, run a plain echo on ADDR (the raw base of
    /// `telebpf bench rtt`, see `echo.rs`): no key, no kernel access.
    #[arg(long, value_name = "ADDR", hide = true, conflicts_with = "listen")]
    echo: Option<String>,
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
    if let Some(addr) = &args.echo {
        return echo(addr);
    }
    let listen = args.listen.as_deref().unwrap_or_default();
    let config = telebpf_proxy::Config::new(listen, &args.key_file).and_then(|mut c| {
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

/// `--echo ADDR`: the address and spin budget read as the proxy's.
fn echo(addr: &str) -> ExitCode {
    let result = match telebpf_proxy::Config::new(addr, &[]) {
        Ok(c) => telebpf_proxy::echo::run(&c.listen, c.spin).map_err(|e| e.to_string()),
        Err(e) => {
            telebpf_proxy::log::info(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telebpf_proxy::log::info(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}
