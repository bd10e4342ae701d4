//! Accepting clients and shutting down cleanly.
//!
//! A single-threaded tokio runtime listens, accepts and runs the handshakes
//! (with their time limit); each authenticated session then gets a thread of
//! its own (see [`session`]), so a slow request of one client never delays
//! another. SIGTERM/SIGINT stop accepting, shut every session's connection
//! down (waking threads blocked reading it), and wait a few seconds for the
//! sessions to close their guest objects.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use telebpf_protocol::address::Address;
use telebpf_protocol::key::Psk;
use telebpf_protocol::transport::Listener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use crate::limits::LimitArgs;
use crate::session::Context;
use crate::{facts, log, session, sys};

/// How long sessions get to close their objects at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Environment variable: how long a session thread busy-waits for the next
/// request before blocking, in µs.
pub const ENV_SPIN_US: &str = "TELEBPF_PROXY_SPIN_US";

/// Default of [`ENV_SPIN_US`].
pub const DEFAULT_SPIN_US: u64 = 50;

/// What the proxy was asked to do.
#[derive(Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: Address,
    /// Accepted keys, in command-line order.
    pub keys: Vec<Psk>,
    /// How long a session busy-waits for the next request before blocking
    /// ([`ENV_SPIN_US`]).
    pub spin: Duration,
    /// Limits and timeouts (defaults unless the command line sets them).
    pub limits: LimitArgs,
}

/// The command line does not describe a runnable proxy.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The listen address does not parse.
    #[error("bad --listen address {addr:?}: {reason}")]
    Address {
        /// What was given.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A key file cannot be used.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: telebpf_protocol::KeyError,
    },
    /// The spin setting is not a number of microseconds.
    #[error("bad {ENV_SPIN_US} {0:?}: not a number of microseconds")]
    Spin(String),
}

/// The proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Address,
        /// Why.
        source: telebpf_protocol::TransportError,
    },
    /// Installing the signal handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl Config {
    /// Parses the listen address, loads the keys and reads [`ENV_SPIN_US`].
    pub fn new(listen: &str, key_files: &[PathBuf]) -> Result<Config, ConfigError> {
        let listen = listen
            .parse::<Address>()
            .map_err(|e| ConfigError::Address {
                addr: listen.to_string(),
                reason: e.to_string(),
            })?;
        let keys = key_files
            .iter()
            .map(|p| {
                Psk::from_file(p).map_err(|source| ConfigError::Key {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spin_us = match std::env::var(ENV_SPIN_US) {
            Ok(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::Spin(v))?,
            Err(_) => DEFAULT_SPIN_US,
        };
        Ok(Config {
            listen,
            keys,
            spin: Duration::from_micros(spin_us),
            limits: LimitArgs::default(),
        })
    }
}

/// Runs the proxy until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    sys::occupy_standard_fds();
    sys::raise_memlock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), ServerError> {
    let ctx = Arc::new(
        Context::new(config.keys, facts::gather(), config.spin).with_limits(config.limits.clone()),
    );
    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    log::info(format_args!(
        "listening on {} (collectors: libbpf {})",
        config.listen,
        telebpf_collectors::libbpf_version()
    ));

    // Handshakes in progress; a task ends once its session thread runs.
    let mut handshakes = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    // Past --max-sessions the connection is closed before a
                    // byte is read: the client sees ECONNREFUSED.
                    match ctx.governor.admit_connection() {
                        Some(slot) => {
                            handshakes.spawn(session::start(stream, peer, ctx.clone(), next_id, slot));
                        }
                        None => log::info(format_args!(
                            "session {next_id} from {peer}: refused, {} connections (--max-sessions)",
                            ctx.governor.connections()
                        )),
                    }
                }
                Err(e) => log::info(format_args!("accept failed: {e}")),
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    // No session starts after this: unfinished handshakes are dropped (they
    // hold no guest object), then every session's connection is shut down.
    handshakes.abort_all();
    while handshakes.join_next().await.is_some() {}
    log::info(format_args!(
        "stopping: closing {} sessions",
        ctx.registry.live()
    ));
    ctx.registry.stop();
    let registry = ctx.registry.clone();
    let left = tokio::task::spawn_blocking(move || registry.wait_empty(SHUTDOWN_GRACE))
        .await
        .unwrap_or(0);
    if left > 0 {
        // A session stuck in a long syscall (a verifier run, say): exiting
        // closes its fds, and the kernel frees what only they held.
        log::info(format_args!(
            "{left} sessions did not end within {SHUTDOWN_GRACE:?}; exiting anyway"
        ));
    }
    drop(listener);
    if let Address::Unix(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    log::info(format_args!("stopped"));
    Ok(())
}
