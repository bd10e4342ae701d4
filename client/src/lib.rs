//! Blocking client of a telebpf proxy.
//!
//! Used inside the preload library (where no async runtime may be started in
//! somebody else's program) and by the CLI. A [`Connection`] is one session:
//! it connects, authenticates, reads the Welcome with the guest's [`Facts`],
//! then exchanges one [`Reply`] per [`Request`] in order.

pub mod cache;
pub mod ranges;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use telebpf_protocol::address::Address;
use telebpf_protocol::channel::{SyncChannel, HANDSHAKE_TIMEOUT};
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
    /// No answer came within a time limit the caller set
    /// ([`Connection::call_within`], [`Connection::open_within`]).
    #[error("proxy at {0}: no answer within {1:?}")]
    Timeout(Address, Duration),
    /// Waiting for the answer failed (`poll`).
    #[error("proxy at {0}: cannot wait for an answer: {1}")]
    Wait(Address, #[source] std::io::Error),
}

impl ClientError {
    /// Whether the proxy gave no answer in time (as opposed to answering
    /// with a refusal or an error): what a frozen proxy looks like.
    pub fn is_no_answer(&self) -> bool {
        self.errno() == libc::ETIMEDOUT
    }

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
            ClientError::Timeout(..) => libc::ETIMEDOUT,
            ClientError::Wait(_, e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Waits until `fd` is readable (or hung up) or `deadline` passed;
/// `Ok(false)` for the latter. Signals do not cut the wait short.
fn wait_readable(fd: std::os::fd::RawFd, deadline: Instant) -> std::io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid, exclusively borrowed pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
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
        Self::open_inner(settings, settings.connect_timeout, HANDSHAKE_TIMEOUT, None)
    }

    /// Like [`open`](Self::open), but the whole of it — connect, handshake
    /// and Welcome — must be done within `limit`, else
    /// [`ClientError::Timeout`]: a liveness probe of a proxy that may be
    /// frozen (the kernel completes a Unix `connect` to a stopped process,
    /// which then never answers).
    pub fn open_within(settings: &Settings, limit: Duration) -> Result<Connection, ClientError> {
        Self::open_inner(
            settings,
            settings.connect_timeout.min(limit),
            limit,
            Some((Instant::now() + limit, limit)),
        )
    }

    fn open_inner(
        settings: &Settings,
        connect_timeout: Duration,
        handshake_timeout: Duration,
        limit: Option<(Instant, Duration)>,
    ) -> Result<Connection, ClientError> {
        let psk = Psk::from_file(&settings.key_file)
            .map_err(|e| ClientError::Key(settings.key_file.clone(), e))?;
        let target = settings.target.clone();
        let stream = transport::connect(&target, connect_timeout)
            .map_err(|e| ClientError::Connect(target.clone(), e))?;
        let handshake_timeout = limit.map_or(handshake_timeout, |(deadline, _)| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(handshake_timeout)
        });
        let mut chan = SyncChannel::client_with_timeout(stream, &psk, handshake_timeout)
            .map_err(|e| ClientError::Channel(target.clone(), e))?;
        chan.set_spin(settings.spin);
        if let Some((deadline, limit)) = limit {
            let fd = std::os::fd::AsRawFd::as_raw_fd(chan.stream());
            if !wait_readable(fd, deadline).map_err(|e| ClientError::Wait(target.clone(), e))? {
                return Err(ClientError::Timeout(target, limit));
            }
        }
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

    /// Sends a request and waits at most `limit` for its reply
    /// ([`ClientError::Timeout`] after that; the connection is then out of
    /// step and must be dropped). For a keep-alive: a live proxy answers a
    /// [`Request::Ping`] at once, a frozen one never.
    pub fn call_within(&mut self, req: &Request, limit: Duration) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + limit;
        self.notify(req)?;
        if !wait_readable(self.raw_fd(), deadline)
            .map_err(|e| ClientError::Wait(self.target.clone(), e))?
        {
            return Err(ClientError::Timeout(self.target.clone(), limit));
        }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;

    use telebpf_protocol::handshake::ServerHelloStep;
    use telebpf_protocol::message::Welcome;
    use telebpf_protocol::ServerHandshake;

    use super::*;

    /// What the fake proxy does after its Welcome.
    #[derive(Clone, Copy)]
    enum Then {
        /// Answers every Ping with a Pong.
        Pong,
        /// Reads requests and never answers (a frozen proxy).
        Silence,
    }

    fn read_frame(s: &mut UnixStream) -> std::io::Result<([u8; 4], Vec<u8>)> {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix)?;
        let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
        s.read_exact(&mut body)?;
        Ok((prefix, body))
    }

    /// One session of a fake proxy on `stream`: handshake, Welcome, then `then`.
    fn serve(mut s: UnixStream, psk: Psk, then: Then) -> std::io::Result<()> {
        let (_, hello) = read_frame(&mut s)?;
        let ServerHelloStep::Continue { reply, handshake } =
            ServerHandshake::respond(&[psk], &hello).expect("hello")
        else {
            panic!("refused");
        };
        s.write_all(&reply)?;
        let (_, proof) = read_frame(&mut s)?;
        let (keys, _) = handshake.finish(&proof).expect("proof");
        let mut chan = SyncChannel::from_parts(s, keys.sealer, keys.opener, &[]);
        let welcome = Reply::Welcome(Welcome {
            facts: Facts {
                uname: Default::default(),
                possible_cpus: 1,
                caps: [[0; 2]; 3],
                proxy_version: "fake".into(),
            },
            session: [7; 16],
        });
        chan.send(&message::encode(&welcome).unwrap()).unwrap();
        while let Ok(bytes) = chan.recv() {
            if let (Then::Pong, Ok(Request::Ping(p))) = (then, message::decode::<Request>(&bytes)) {
                chan.send(&message::encode(&Reply::Pong(p)).unwrap())
                    .unwrap();
            }
        }
        Ok(())
    }

    /// A fake proxy listening in `dir`, serving every connection with
    /// `then`; `None` accepts connections and never answers them.
    fn fake_proxy(dir: &Path, then: Option<Then>) -> Settings {
        let _ = std::fs::create_dir_all(dir);
        let key = dir.join("key");
        let _ = std::fs::remove_file(&key);
        let psk = Psk::write_new(&key).unwrap();
        let sock = dir.join("proxy.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().map_while(Result::ok) {
                match then {
                    Some(then) => {
                        let psk = psk.clone();
                        std::thread::spawn(move || serve(s, psk, then));
                    }
                    None => held.push(s),
                }
            }
        });
        Settings::new(&format!("unix:{}", sock.display()), key).unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("telebpf-client-{name}-{}", std::process::id()))
    }

    #[test]
    fn call_within_answers_from_a_live_proxy_and_times_out_on_a_frozen_one() {
        let live = fake_proxy(&dir("live"), Some(Then::Pong));
        let mut c = Connection::open_within(&live, Duration::from_secs(5)).unwrap();
        let r = c.call_within(&Request::Ping(vec![1]), Duration::from_secs(5));
        assert!(matches!(r, Ok(Reply::Pong(p)) if p == [1]));

        let frozen = fake_proxy(&dir("frozen"), Some(Then::Silence));
        let mut c = Connection::open(&frozen).unwrap();
        let t0 = Instant::now();
        let e = c
            .call_within(&Request::Ping(vec![]), Duration::from_millis(200))
            .unwrap_err();
        let took = t0.elapsed();
        assert!(e.is_no_answer(), "{e}");
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        assert!(e.to_string().contains("no answer within 200ms"), "{e}");
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2));
    }

    #[test]
    fn open_within_times_out_on_a_proxy_that_never_answers() {
        let mute = fake_proxy(&dir("mute"), None);
        let t0 = Instant::now();
        let e = Connection::open_within(&mute, Duration::from_millis(300)).unwrap_err();
        let took = t0.elapsed();
        assert!(e.is_no_answer(), "{e}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3));
        // A refusal is an answer, not silence.
        assert!(!ClientError::Channel(
            mute.target.clone(),
            telebpf_protocol::ChannelError::HandshakeEof
        )
        .is_no_answer());
    }
}
