//! Blocking client of a telebpf proxy.
//!
//! Used inside the preload library (where no async runtime may be started in
//! somebody else's program) and by the CLI. A [`Connection`] is one session:
//! it connects, authenticates, reads the Welcome with the guest's [`Facts`],
//! then exchanges one [`Reply`] per [`Request`] in order.

pub mod cache;
pub mod ranges;

use std::path::PathBuf;
use std::time::Duration;

use telebpf_protocol::address::Address;
use telebpf_protocol::channel::SyncChannel;
use telebpf_protocol::key::Psk;
use telebpf_protocol::message::{self, Facts, Reply, Request, SessionToken};
use telebpf_protocol::transport::{self, ClientStream};

/// Environment variable naming the proxy address.
pub const ENV_TARGET: &str = "TELEBPF_TARGET";
/// Environment variable naming the key file.
pub const ENV_KEY_FILE: &str = "TELEBPF_KEY_FILE";
/// Optional: connect timeout in milliseconds (default 5000).
pub const ENV_CONNECT_TIMEOUT_MS: &str = "TELEBPF_CONNECT_TIMEOUT_MS";
/// Optional: how long to spin for a reply before blocking, in µs (default 50).
pub const ENV_SPIN_US: &str = "TELEBPF_SPIN_US";

/// Where and how to reach the proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Proxy address.
    pub target: Address,
    /// Key file path.
    pub key_file: PathBuf,
    /// Connect (and handshake) timeout.
    pub connect_timeout: Duration,
    /// Busy-wait before blocking for a reply.
    pub spin: Duration,
}

/// Why the client cannot talk to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `TELEBPF_TARGET` is not set.
    #[error("{ENV_TARGET} is not set")]
    NoTarget,
    /// `TELEBPF_KEY_FILE` is not set.
    #[error("{ENV_KEY_FILE} is not set")]
    NoKeyFile,
    /// The address does not parse.
    #[error("bad {ENV_TARGET} {0:?}: {1}")]
    BadTarget(String, String),
    /// The key file cannot be used (the error names the file).
    #[error("{1}")]
    Key(PathBuf, #[source] telebpf_protocol::KeyError),
    /// Connecting failed.
    #[error("cannot reach the proxy at {0}: {1}")]
    Connect(Address, #[source] telebpf_protocol::TransportError),
    /// The channel failed (handshake, I/O, authentication).
    #[error("proxy at {0}: {1}")]
    Channel(Address, #[source] telebpf_protocol::ChannelError),
    /// A message did not encode or decode.
    #[error("proxy at {0}: {1}")]
    Codec(Address, #[source] message::CodecError),
    /// The proxy answered something that does not fit the request.
    #[error("proxy at {0} answered out of turn: {1}")]
    Unexpected(Address, String),
    /// The proxy carried out the request and it failed with this errno.
    #[error("the proxy answered: {}", std::io::Error::from_raw_os_error(*.0))]
    Remote(i32),
}

impl ClientError {
    /// The errno a host program sees for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::NoTarget | ClientError::NoKeyFile | ClientError::BadTarget(..) => {
                libc::EINVAL
            }
            ClientError::Key(..) => libc::EACCES,
            ClientError::Connect(_, e) => e.errno(),
            ClientError::Channel(_, e) => e.errno(),
            ClientError::Codec(..) | ClientError::Unexpected(..) => libc::EPROTO,
            ClientError::Remote(errno) => *errno,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Settings, ClientError> {
        let target = std::env::var(ENV_TARGET).map_err(|_| ClientError::NoTarget)?;
        let key_file = std::env::var_os(ENV_KEY_FILE).ok_or(ClientError::NoKeyFile)?;
        Settings::new(&target, key_file.into())
    }

    /// Settings for an address and key file, with the timeouts from the
    /// environment or their defaults.
    pub fn new(target: &str, key_file: PathBuf) -> Result<Settings, ClientError> {
        let target = target
            .parse::<Address>()
            .map_err(|e| ClientError::BadTarget(target.to_string(), e.to_string()))?;
        Ok(Settings {
            target,
            key_file,
            connect_timeout: Duration::from_millis(env_u64(ENV_CONNECT_TIMEOUT_MS, 5000)),
            spin: Duration::from_micros(env_u64(ENV_SPIN_US, 50)),
        })
    }
}

/// One authenticated session with the proxy.
pub struct Connection {
    chan: SyncChannel<ClientStream>,
    facts: Facts,
    session: SessionToken,
    target: Address,
    traffic: Traffic,
}

/// Frames and bytes a connection has moved, counted as they travel on the
/// wire (length prefix, ciphertext and tag), Welcome excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Bytes sent and received.
    pub bytes: u64,
}

/// Bytes a message of `len` bytes takes on the wire.
fn wire_len(len: usize) -> u64 {
    (len + telebpf_protocol::seal::LEN_PREFIX + telebpf_protocol::seal::TAG_LEN) as u64
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects, authenticates and reads the Welcome.
    pub fn open(settings: &Settings) -> Result<Connection, ClientError> {
        let psk = Psk::from_file(&settings.key_file)
            .map_err(|e| ClientError::Key(settings.key_file.clone(), e))?;
        let target = settings.target.clone();
        let stream = transport::connect(&target, settings.connect_timeout)
            .map_err(|e| ClientError::Connect(target.clone(), e))?;
        let mut chan = SyncChannel::client(stream, &psk)
            .map_err(|e| ClientError::Channel(target.clone(), e))?;
        chan.set_spin(settings.spin);
        let bytes = chan
            .recv()
            .map_err(|e| ClientError::Channel(target.clone(), e))?;
        let welcome = match message::decode::<Reply>(&bytes)
            .map_err(|e| ClientError::Codec(target.clone(), e))?
        {
            Reply::Welcome(w) => w,
            other => {
                return Err(ClientError::Unexpected(
                    target,
                    format!("{other:?} instead of Welcome"),
                ))
            }
        };
        Ok(Connection {
            chan,
            facts: welcome.facts,
            session: welcome.session,
            target,
            traffic: Traffic::default(),
        })
    }

    /// What this connection has moved so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    fn count_received(&mut self, len: usize) {
        self.traffic.received += 1;
        self.traffic.bytes += wire_len(len);
    }

    /// The guest kernel's facts from the Welcome.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The proxy's address.
    pub fn target(&self) -> &Address {
        &self.target
    }

    /// This session's token (binds stream connections to it).
    pub fn session(&self) -> SessionToken {
        self.session
    }

    /// The connection's socket, to wait for pushed frames with `poll`.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.chan.stream())
    }

    /// Receives the next frame: a reply, or on a stream connection a
    /// pushed one.
    pub fn recv(&mut self) -> Result<Reply, ClientError> {
        let bytes = self.recv_frame()?;
        message::decode::<Reply>(&bytes).map_err(|e| ClientError::Codec(self.target.clone(), e))
    }

    /// Receives the next frame's bytes, undecoded (a stream's records are
    /// read in place with `message::records_in`).
    pub fn recv_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let bytes = self
            .chan
            .recv()
            .map_err(|e| ClientError::Channel(self.target.clone(), e))?;
        self.count_received(bytes.len());
        Ok(bytes)
    }

    /// Whether the proxy closed this connection (or sent something no
    /// request asked for, which on a request connection is as fatal): the
    /// socket is readable or hung up while no reply is due. A session the
    /// proxy ended (idle timeout, restart) is found before a request is
    /// sent into it, so the caller can reconnect instead of failing.
    pub fn peer_closed(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        self.notify(req)?;
        self.recv()
    }

    /// Sends a request that has no reply ([`Request::Close`]).
    pub fn notify(&mut self, req: &Request) -> Result<(), ClientError> {
        let bytes = message::encode(req).map_err(|e| ClientError::Codec(self.target.clone(), e))?;
        self.traffic.sent += 1;
        self.traffic.bytes += wire_len(bytes.len());
        self.chan
            .send(&bytes)
            .map_err(|e| ClientError::Channel(self.target.clone(), e))
    }
}
