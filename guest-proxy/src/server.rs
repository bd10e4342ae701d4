//! Accepting clients and shutting down cleanly.
//!
//! A single-threaded tokio runtime listens, accepts and runs the handshakes
//! (with their time limit); each authenticated session then gets a thread of
//! its own (see [`session`]), so a slow request of one client never delays
//! another. SIGTERM/SIGINT stop accepting, shut every session's connection
//! down (waking threads blocked reading it), and wait a few seconds for the
//! sessions to close their guest objects.
//!
//! Before anything else the proxy raises its fd limit and fits its caps to
//! it ([`crate::limits`]). Connections that have not authenticated are
//! bounded apart from sessions ([`crate::handshakes`]), a failing `accept`
//! backs off instead of spinning, and every connection that does not become
//! a session — refused at a limit, dropped for a newer one, failed or timed
//! out — is logged and audited as a failed handshake, throttled per peer
//! group ([`crate::throttle`]) so that a flood costs a bounded number of
//! lines.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use telebpf_protocol::address::Address;
use telebpf_protocol::key::Psk;
use telebpf_protocol::transport::Listener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

use crate::audit::{Audit, Event, Scope};
use crate::handshakes::{Backoff, Handshakes, Pending};
use crate::kernel::{Kernel, RealKernel};
use crate::limits::LimitArgs;
use crate::policy::{self, KeyGrant, PolicyError};
use crate::session::{Context, StartError};
use crate::throttle::{peer_group, Summary, Throttle};
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
    /// The kernel sessions act on: the machine's own ([`RealKernel`])
    /// unless a test gives another.
    pub kernel: Arc<dyn Kernel>,
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
    /// Capabilities the proxy does not need could not be dropped.
    #[error(transparent)]
    Caps(#[from] crate::caps::CapsError),
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
            kernel: Arc::new(RealKernel),
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
pub fn run(mut config: Config) -> Result<(), ServerError> {
    sys::occupy_standard_fds();
    sys::raise_memlock();
    // libbpf's messages quote names from the objects it loads: through the
    // escaping log like every other line.
    telebpf_collectors::route_libbpf_messages(|m| log::info(format_args!("{m}")));
    let nofile = sys::raise_nofile();
    // Limits raised: from here on the proxy needs only its BPF
    // capabilities (the Welcome's facts, gathered later, report these).
    let dropped = crate::caps::drop_unneeded().map_err(ServerError::Caps)?;
    log::info(format_args!(
        "capabilities kept: {}{}; {} others dropped from the bounding set",
        dropped
            .kept
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if dropped.missing.is_empty() {
            String::new()
        } else {
            format!(
                " (not held at start: {})",
                dropped
                    .missing
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        dropped.bounding_dropped
    ));
    let plan = config.limits.fit_to_fds(nofile.now);
    let memory = sys::memory_limit();
    let (per_session, total) = config.limits.map_memory(memory);
    config.limits.max_map_memory_per_session = Some(per_session);
    config.limits.max_map_memory = Some(total);
    let l = &config.limits;
    log::info(format_args!(
        "fd limit {} (soft was {}, hard {}): {} sessions, {} handshakes, {} guest objects ({} per session), {} fds kept for the proxy{}",
        plan.nofile,
        nofile.was,
        nofile.hard,
        l.max_sessions,
        l.max_handshakes,
        l.max_objects,
        l.max_objects_per_session,
        crate::limits::RESERVED_FDS,
        if plan.lowered.is_empty() {
            String::new()
        } else {
            format!("; lowered to fit: {}", plan.lowered.join(", "))
        }
    ));
    log::info(format_args!(
        "kernel memory of maps, programs and BTF: {} MiB per session, {} MiB in all (machine: {} MiB)",
        per_session >> 20,
        total >> 20,
        memory >> 20
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(serve(config))
}

/// Records a connection that did not become a session: a log line and a
/// `handshake_failed` record, throttled per peer group.
fn handshake_failed(
    ctx: &Context,
    failures: &mut Throttle<String>,
    id: u64,
    peer: &str,
    error: &str,
) {
    let group = peer_group(peer);
    let (summary, full) = failures.note(group.clone(), Instant::now(), SystemTime::now(), true);
    if let Some(s) = summary {
        handshake_summary(ctx, &group, &s);
    }
    if full {
        log::info(format_args!("session {id} from {peer}: {error}"));
        if let Some(audit) = &ctx.audit {
            audit.record(&Event::HandshakeFailed {
                session: id,
                peer,
                error,
            });
        }
    }
}

/// The summary of failed handshakes of `group` held back.
fn handshake_summary(ctx: &Context, group: &str, s: &Summary) {
    log::suppressed(&format!("handshakes from {group}"), "handshake failed", s);
    if let Some(audit) = &ctx.audit {
        audit.summary(
            "handshake_failed",
            Scope {
                peer: Some(group),
                ..Scope::default()
            },
            None,
            s,
        );
    }
}

/// Whether an `accept` error means the proxy is out of fds or memory
/// (retrying at once would fail again).
fn exhausted(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
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
    let mut ctx = Context::new(config.keys, facts::gather(), config.spin, config.kernel)
        .with_limits(config.limits.clone());
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
    let mut tasks: JoinSet<Result<(), StartError>> = JoinSet::new();
    let mut pending = Handshakes::new(ctx.governor.args.max_handshakes);
    let mut failures: Throttle<String> = Throttle::default();
    let mut backoff = Backoff::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next_id = 0u64;
    loop {
        let paused = backoff.paused_until();
        tokio::select! {
            accepted = listener.accept(), if paused.is_none() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    next_id += 1;
                    // Past --max-sessions the connection is closed before a
                    // byte is read: the client sees ECONNREFUSED.
                    if ctx.governor.sessions_full() {
                        let error = format!(
                            "refused, {} sessions (--max-sessions)",
                            ctx.governor.connections()
                        );
                        handshake_failed(&ctx, &mut failures, next_id, &peer, &error);
                        continue;
                    }
                    if pending.is_full() {
                        if let Some(old) = pending.evict(true) {
                            handshake_failed(
                                &ctx,
                                &mut failures,
                                old.id,
                                &old.peer,
                                "dropped for a newer connection: every handshake place taken (--max-handshakes)",
                            );
                        }
                    }
                    let answered = Arc::new(AtomicBool::new(false));
                    let abort = tasks.spawn(session::start(
                        stream,
                        peer.clone(),
                        ctx.clone(),
                        next_id,
                        answered.clone(),
                    ));
                    pending.insert(abort.id(), Pending::new(next_id, peer, answered, abort));
                    // Let the new handshake read a hello that is already
                    // there before the next connection is taken.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    log::limited("accept failed", format_args!("accept failed: {e}"));
                    if exhausted(e.errno()) {
                        // Free an fd for the next try: a silent peer's.
                        if let Some(old) = pending.evict(false) {
                            handshake_failed(
                                &ctx,
                                &mut failures,
                                old.id,
                                &old.peer,
                                "dropped: the proxy is out of file descriptors",
                            );
                        }
                    }
                    backoff.failed();
                }
            },
            _ = tokio::time::sleep_until(paused.unwrap_or_else(Instant::now).into()), if paused.is_some() => {
                backoff.resume();
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (task, result) = match done {
                    Ok((task, result)) => (task, result),
                    Err(e) if e.is_panic() => (e.id(), Err(StartError::Panicked)),
                    // Aborted: evicted, and recorded then.
                    Err(e) => (e.id(), Ok(())),
                };
                if let Some(p) = pending.remove(task) {
                    if let Err(error) = result {
                        handshake_failed(&ctx, &mut failures, p.id, &p.peer, &error.to_string());
                    }
                }
            }
            _ = tick.tick() => {
                for (group, s) in failures.expired(Instant::now()) {
                    handshake_summary(&ctx, &group, &s);
                }
                log::flush_limited(false);
                crate::throttle::flush_keys(false, ctx.audit.as_deref());
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    // No session starts after this: unfinished handshakes are dropped (they
    // hold no guest object), then every session's connection is shut down.
    for p in pending.drain() {
        handshake_failed(&ctx, &mut failures, p.id, &p.peer, "proxy shutting down");
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    for (group, s) in failures.drain() {
        handshake_summary(&ctx, &group, &s);
    }
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
    log::flush_limited(true);
    crate::throttle::flush_keys(true, ctx.audit.as_deref());
    drop(listener);
    if let Address::Unix(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    log::info(format_args!("stopped"));
    Ok(())
}
