//! Accepting clients and shutting down cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use telebpf_protocol::address::Address;
use telebpf_protocol::key::Psk;
use telebpf_protocol::transport::Listener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{facts, log, session, sys};

/// How long sessions get to close their objects at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the proxy was asked to do.
#[derive(Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: Address,
    /// Accepted keys, in command-line order.
    pub keys: Vec<Psk>,
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
    /// Parses the listen address and loads the keys.
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
        Ok(Config { listen, keys })
    }
}

/// Runs the proxy until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    sys::occupy_standard_fds();
    sys::raise_memlock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), ServerError> {
    let facts = Arc::new(facts::gather());
    let keys = Arc::new(config.keys);
    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    log::info(format_args!("listening on {}", config.listen));

    let (stop, stopped) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    sessions.spawn(session::serve(
                        stream,
                        peer,
                        keys.clone(),
                        facts.clone(),
                        stopped.clone(),
                        next_id,
                    ));
                }
                Err(e) => log::info(format_args!("accept failed: {e}")),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    log::info(format_args!(
        "stopping: closing {} sessions",
        sessions.len()
    ));
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // A session stuck in a syscall: aborting drops its Session, which
        // closes its fds.
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
    if let Address::Unix(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    log::info(format_args!("stopped"));
    Ok(())
}
