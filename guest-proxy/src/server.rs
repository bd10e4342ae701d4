//! Accepting clients and shutting down cleanly.
//!
//! A single-threaded tokio runtime listens, accepts and runs the handshakes
//! (with their time limit); each authenticated session then gets a thread of
//! its own (see [`session`]), so a slow request of one client never delays
//! another. SIGTERM/SIGINT stop accepting, shut every session's connection
//! down (waking threads blocked reading it), and wait a few seconds for the
//! sessions to close their guest objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use telebpf_protocol::address::Address;
use telebpf_protocol::key::Psk;
use telebpf_protocol::transport::Listener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use crate::audit::Audit;
use crate::limits::LimitArgs;
use crate::policy::{self, KeyGrant, PolicyError};
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
    /// Accepted keys: the `--key-file` ones in command-line order, then
    /// those the policy file names.
    pub keys: Vec<Psk>,
    /// Name and policy of each key, in the order of `keys`.
    pub grants: Vec<Arc<KeyGrant>>,
    /// Where the audit log goes (`-`: stderr), if anywhere.
    pub audit: Option<PathBuf>,
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
    /// A key file cannot be used (the error names the file).
    #[error("{source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: telebpf_protocol::KeyError,
    },
    /// The spin setting is not a number of microseconds.
    #[error("bad {ENV_SPIN_US} {0:?}: not a number of microseconds")]
    Spin(String),
    /// The policy file cannot be used.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The same key is given twice (its sessions could not tell which
    /// policy applies).
    #[error("key file {second} holds the same key as {first}")]
    DuplicateKey {
        /// Where it was first given.
        first: PathBuf,
        /// Where again.
        second: PathBuf,
    },
    /// Neither `--key-file` nor the policy file names a key.
    #[error("no key: give --key-file, or [[key]] entries in the --policy file")]
    NoKey,
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
    /// The audit log cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Config {
    /// Parses the listen address, loads the keys (each may do everything
    /// until [`Config::set_policy`]) and reads [`ENV_SPIN_US`].
    pub fn new(listen: &str, key_files: &[PathBuf]) -> Result<Config, ConfigError> {
        let listen = listen
            .parse::<Address>()
            .map_err(|e| ConfigError::Address {
                addr: listen.to_string(),
                reason: e.to_string(),
            })?;
        let spin_us = match std::env::var(ENV_SPIN_US) {
            Ok(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::Spin(v))?,
            Err(_) => DEFAULT_SPIN_US,
        };
        let mut config = Config {
            listen,
            keys: Vec::new(),
            grants: Vec::new(),
            audit: None,
            spin: Duration::from_micros(spin_us),
            limits: LimitArgs::default(),
        };
        let full = Arc::new(policy::Policy::full());
        for p in key_files {
            config.add_key(p, p.display().to_string(), full.clone())?;
        }
        Ok(config)
    }

    /// Applies `--policy SPEC` (a file, or `full`, `read-only`,
    /// `tracing`): the `--key-file` keys get its rules, and the keys it
    /// names are added with theirs.
    pub fn set_policy(&mut self, spec: &str) -> Result<(), ConfigError> {
        let file = policy::resolve(spec, Path::new("."))?;
        for grant in &mut self.grants {
            *grant = Arc::new(KeyGrant {
                name: grant.name.clone(),
                file: grant.file.clone(),
                policy: file.rules.clone(),
            });
        }
        for entry in file.keys {
            let name = entry
                .name
                .unwrap_or_else(|| entry.file.display().to_string());
            self.add_key(&entry.file, name, entry.policy)?;
        }
        Ok(())
    }

    /// Refuses a proxy nobody can connect to.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::NoKey);
        }
        Ok(())
    }

    fn add_key(
        &mut self,
        path: &Path,
        name: String,
        policy: Arc<policy::Policy>,
    ) -> Result<(), ConfigError> {
        let psk = Psk::from_file(path).map_err(|source| ConfigError::Key {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(i) = self.keys.iter().position(|k| k.key_id() == psk.key_id()) {
            return Err(ConfigError::DuplicateKey {
                first: self.grants[i].file.clone(),
                second: path.to_path_buf(),
            });
        }
        self.keys.push(psk);
        self.grants.push(Arc::new(KeyGrant {
            name,
            file: path.to_path_buf(),
            policy,
        }));
        Ok(())
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
    let audit = match &config.audit {
        Some(path) => Some(Arc::new(Audit::open(path).map_err(|source| {
            ServerError::Audit {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    for g in &config.grants {
        log::info(format_args!(
            "key '{}': policy '{}'",
            g.name,
            g.policy.name()
        ));
    }
    let mut ctx =
        Context::new(config.keys, facts::gather(), config.spin).with_limits(config.limits.clone());
    ctx.grants = config.grants;
    ctx.audit = audit;
    let ctx = Arc::new(ctx);
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
