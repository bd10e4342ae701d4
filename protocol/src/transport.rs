//! Transports: blocking connect for the client, async listener for the proxy.
//!
//! * `unix:PATH` — Unix stream socket, both sides.
//! * `vsock:CID:PORT` — AF_VSOCK connect (client) or bind to that CID (proxy).
//! * `vsock:PORT` — AF_VSOCK listen on any CID (proxy only).
//! * `vsock-uds:PATH:PORT` — hybrid vsock of Firecracker / Cloud Hypervisor
//!   (client only): connect to the VMM's Unix socket `PATH`, write
//!   `CONNECT <PORT>\n`, read one line that must be `OK <n>\n`; from then on
//!   the stream is the byte pipe to the guest's vsock port.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::address::Address;
use crate::channel::TryCloneStream;

/// Longest reply line accepted from a hybrid-vsock muxer.
const MAX_MUXER_LINE: usize = 128;

/// Errors of connecting, binding and accepting.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A listen-only address was given to `connect`.
    #[error("{0} is a listen address (vsock:PORT); to connect, use vsock:CID:PORT")]
    ListenOnly(Address),
    /// A client-only address was given to `Listener::bind`.
    #[error("{0} is a client-only transport; the proxy inside the guest listens on vsock:PORT")]
    ClientOnly(Address),
    /// `socket(2)` failed.
    #[error("cannot create a socket for {addr}: {source}")]
    Socket {
        /// The address.
        addr: Address,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `connect(2)` failed or timed out.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: Address,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The CONNECT/OK exchange with a hybrid-vsock muxer failed at the I/O level.
    #[error("{addr}: CONNECT exchange with the VMM's vsock muxer failed: {source}")]
    MuxerIo {
        /// The address.
        addr: Address,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The muxer did not answer `OK …` (e.g. nothing listens on the guest port).
    #[error("{addr}: the VMM's vsock muxer refused CONNECT (is the proxy listening on vsock port {port} in the guest?): it answered {line:?}")]
    MuxerRefused {
        /// The address.
        addr: Address,
        /// The guest port asked for.
        port: u32,
        /// What the muxer answered (lossy UTF-8), possibly empty if it just closed.
        line: String,
    },
    /// Something other than a socket is in the way of a Unix listener.
    #[error("cannot listen on {path}: it exists and is not a socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another live process listens on the Unix socket path.
    #[error("cannot listen on {path}: another process is listening there")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Removing a stale socket file failed.
    #[error("cannot remove stale socket {path}: {source}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `bind(2)`/`listen(2)` failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: Address,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// chmod of the Unix socket failed.
    #[error("cannot make socket {path} accessible (chmod 0666): {source}")]
    Chmod {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `accept(2)` failed.
    #[error("accept on {addr} failed: {source}")]
    Accept {
        /// The listening address.
        addr: Address,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// A sensible errno for this error, for reporting through a syscall.
    ///
    /// Client-side failures to reach the proxy are `ECONNREFUSED` (or
    /// `ETIMEDOUT`) whatever the underlying cause, so that a forwarded `bpf()`
    /// never returns an errno (like `ENOENT`) that means something else there.
    pub fn errno(&self) -> i32 {
        use TransportError::*;
        let from = |e: &io::Error, default| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
            _ => e.raw_os_error().unwrap_or(default),
        };
        let unreachable = |e: &io::Error| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
            _ => libc::ECONNREFUSED,
        };
        match self {
            ListenOnly(_) | ClientOnly(_) => libc::EINVAL,
            Socket { source, .. } => from(source, libc::EAFNOSUPPORT),
            Connect { source, .. } | MuxerIo { source, .. } => unreachable(source),
            MuxerRefused { .. } => libc::ECONNREFUSED,
            NotASocket { .. } => libc::ENOTSOCK,
            InUse { .. } => libc::EADDRINUSE,
            RemoveStale { source, .. }
            | Bind { source, .. }
            | Chmod { source, .. }
            | Accept { source, .. } => from(source, libc::EIO),
        }
    }
}

/// A connected AF_VSOCK stream socket (blocking).
#[derive(Debug)]
pub struct VsockStream(Socket);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }
}

/// `send(2)` with `MSG_NOSIGNAL`: a peer that went away is `EPIPE`, not a
/// SIGPIPE that would kill a host program which does not ignore it.
fn send_nosignal(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(buf, libc::MSG_NOSIGNAL)
}

/// `write_all` through [`send_nosignal`].
fn send_all_nosignal(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send_nosignal(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes use `send(2)` with `MSG_NOSIGNAL` (no SIGPIPE).
impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_nosignal(self.0.as_fd(), buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for VsockStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<VsockStream> for OwnedFd {
    fn from(s: VsockStream) -> OwnedFd {
        s.0.into()
    }
}

/// A connected client stream (blocking; a [`crate::SyncStream`]).
#[derive(Debug)]
pub enum ClientStream {
    /// Unix socket (`unix:` or `vsock-uds:` after the CONNECT exchange).
    Unix(UnixStream),
    /// AF_VSOCK socket.
    Vsock(VsockStream),
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Unix(s) => s.read(buf),
            ClientStream::Vsock(s) => s.read(buf),
        }
    }
}

/// Writes use `send(2)` with `MSG_NOSIGNAL` (no SIGPIPE).
impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_nosignal(self.as_fd(), buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for ClientStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            ClientStream::Unix(s) => s.as_raw_fd(),
            ClientStream::Vsock(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for ClientStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ClientStream::Unix(s) => s.as_fd(),
            ClientStream::Vsock(s) => s.as_fd(),
        }
    }
}

impl From<ClientStream> for OwnedFd {
    fn from(s: ClientStream) -> OwnedFd {
        match s {
            ClientStream::Unix(s) => s.into(),
            ClientStream::Vsock(s) => s.into(),
        }
    }
}

fn connect_socket(
    addr: &Address,
    domain: Domain,
    sa: &SockAddr,
    timeout: Duration,
) -> Result<Socket, TransportError> {
    // socket2 sets SOCK_CLOEXEC on Linux.
    let sock =
        Socket::new(domain, Type::STREAM, None).map_err(|source| TransportError::Socket {
            addr: addr.clone(),
            source,
        })?;
    let r = if timeout.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else if domain == Domain::UNIX {
        connect_unix_timeout(&sock, sa, timeout)
    } else {
        sock.connect_timeout(sa, timeout)
    };
    r.map_err(|source| TransportError::Connect {
        addr: addr.clone(),
        source,
    })?;
    Ok(sock)
}

/// Non-blocking Unix connect fails with `EAGAIN` while the listener's
/// backlog is full (it never returns `EINPROGRESS`): retry until `timeout`.
fn connect_unix_timeout(sock: &Socket, sa: &SockAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    sock.set_nonblocking(true)?;
    let mut pause = Duration::from_micros(100);
    let r = loop {
        match sock.connect(sa) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the listener's backlog stayed full",
                    ));
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => break r,
        }
    };
    sock.set_nonblocking(false)?;
    r
}

fn connect_unix(
    addr: &Address,
    path: &Path,
    timeout: Duration,
) -> Result<UnixStream, TransportError> {
    let sa = SockAddr::unix(path).map_err(|source| TransportError::Connect {
        addr: addr.clone(),
        source,
    })?;
    Ok(connect_socket(addr, Domain::UNIX, &sa, timeout)?.into())
}

/// The CONNECT/OK exchange of hybrid vsock, within `deadline`.
fn muxer_connect(
    addr: &Address,
    stream: &mut UnixStream,
    port: u32,
    deadline: Instant,
) -> Result<(), TransportError> {
    let io_err = |source| TransportError::MuxerIo {
        addr: addr.clone(),
        source,
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(io_err(io::ErrorKind::TimedOut.into()))
        } else {
            Ok(d)
        }
    };
    stream.set_write_timeout(Some(left()?)).map_err(io_err)?;
    send_all_nosignal(stream.as_fd(), format!("CONNECT {port}\n").as_bytes()).map_err(io_err)?;
    // Read byte by byte: whatever follows the newline belongs to the guest.
    let mut line = Vec::with_capacity(32);
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io_err)?;
        let mut b = [0u8; 1];
        match stream.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
                if line.len() > MAX_MUXER_LINE {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    stream.set_read_timeout(None).map_err(io_err)?;
    stream.set_write_timeout(None).map_err(io_err)?;
    let ok = line
        .strip_prefix(b"OK ")
        .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
    if !ok {
        return Err(TransportError::MuxerRefused {
            addr: addr.clone(),
            port,
            line: String::from_utf8_lossy(&line).into_owned(),
        });
    }
    Ok(())
}

/// Connects to `addr` (blocking), giving up after `timeout` (which covers the
/// connect and, for `vsock-uds:`, the CONNECT/OK exchange).
pub fn connect(addr: &Address, timeout: Duration) -> Result<ClientStream, TransportError> {
    let deadline = Instant::now() + timeout;
    match addr {
        Address::Unix(path) => Ok(ClientStream::Unix(connect_unix(addr, path, timeout)?)),
        Address::Vsock { cid, port } => {
            let sa = SockAddr::vsock(*cid, *port);
            Ok(ClientStream::Vsock(VsockStream(connect_socket(
                addr,
                Domain::VSOCK,
                &sa,
                timeout,
            )?)))
        }
        Address::VsockUds { path, port } => {
            let mut stream = connect_unix(addr, path, timeout)?;
            muxer_connect(addr, &mut stream, *port, deadline)?;
            Ok(ClientStream::Unix(stream))
        }
        Address::VsockListen { .. } => Err(TransportError::ListenOnly(addr.clone())),
    }
}

/// An accepted server-side stream (async).
#[derive(Debug)]
pub enum ServerStream {
    /// Unix socket.
    Unix(tokio::net::UnixStream),
    /// AF_VSOCK socket.
    Vsock(tokio_vsock::VsockStream),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Unix(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Vsock(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Unix(s) => AsyncWrite::is_write_vectored(s),
            ServerStream::Vsock(s) => AsyncWrite::is_write_vectored(s),
        }
    }
}

impl ServerStream {
    /// Takes the connection out of the async runtime (deregistering it) and
    /// makes it blocking, for a session served on its own thread after the
    /// async handshake. Must be called within the runtime that accepted it.
    pub fn into_blocking(self) -> io::Result<SyncServerStream> {
        let (fd, max_write): (OwnedFd, usize) = match self {
            ServerStream::Unix(s) => (s.into_std()?.into(), usize::MAX),
            ServerStream::Vsock(s) => (s.into(), VSOCK_MAX_WRITE),
        };
        let sock = Socket::from(fd);
        sock.set_nonblocking(false)?;
        Ok(SyncServerStream(sock, max_write))
    }
}

/// An accepted server-side stream in blocking mode (a [`crate::SyncStream`]
/// and [`crate::TryCloneStream`]), made by [`ServerStream::into_blocking`].
#[derive(Debug)]
pub struct SyncServerStream(Socket, usize);

/// The most a server writes to a vsock stream in one `send`. Linux 6.12's
/// virtio-vsock driver puts a larger write into one packet spread over
/// several descriptors, which vhost-device-vsock 0.3.0 (the user-space
/// vsock device of hosts without vhost-vsock) rejects and drops
/// (`DescriptorLengthTooSmall`), stalling the stream. Smaller writes cost
/// a few more syscalls on large replies only.
pub const VSOCK_MAX_WRITE: usize = 16 << 10;

impl SyncServerStream {
    /// Shuts the connection down in both directions: a thread blocked
    /// reading it (through any handle) sees end of stream, writes fail with
    /// `EPIPE`. The fds stay open until dropped.
    pub fn shutdown(&self) -> io::Result<()> {
        self.0.shutdown(std::net::Shutdown::Both)
    }
}

impl Read for SyncServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }
}

/// Writes use `send(2)` with `MSG_NOSIGNAL` (no SIGPIPE).
impl Write for SyncServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_nosignal(self.0.as_fd(), &buf[..buf.len().min(self.1)])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for SyncServerStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for SyncServerStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<SyncServerStream> for OwnedFd {
    fn from(s: SyncServerStream) -> OwnedFd {
        s.0.into()
    }
}

impl TryCloneStream for SyncServerStream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(SyncServerStream(self.0.try_clone()?, self.1))
    }
}

impl TryCloneStream for ClientStream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            ClientStream::Unix(s) => ClientStream::Unix(s.try_clone()?),
            ClientStream::Vsock(s) => ClientStream::Vsock(VsockStream(s.0.try_clone()?)),
        })
    }
}

/// A listening socket of the proxy (async).
#[derive(Debug)]
pub enum Listener {
    /// Unix socket; the socket file is removed when the listener is dropped
    /// (if it is still the one we created).
    Unix {
        /// The listener.
        listener: tokio::net::UnixListener,
        /// The socket path.
        path: PathBuf,
        /// `(dev, ino)` of the socket file we created.
        id: (u64, u64),
    },
    /// AF_VSOCK socket.
    Vsock {
        /// The listener.
        listener: tokio_vsock::VsockListener,
        /// The address it was bound with.
        addr: Address,
    },
}

impl Listener {
    /// Binds and listens on `addr` (`unix:` or `vsock:`; `vsock-uds:` is
    /// client-only). A stale Unix socket file is replaced (a live one is an
    /// error); the new socket file is made mode 0666 since the pre-shared key,
    /// not file permissions, controls access. Needs a tokio runtime.
    pub async fn bind(addr: &Address) -> Result<Listener, TransportError> {
        let bind_err = |source| TransportError::Bind {
            addr: addr.clone(),
            source,
        };
        match addr {
            Address::Unix(path) => {
                remove_stale(path)?;
                let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(
                    |source| TransportError::Chmod {
                        path: path.clone(),
                        source,
                    },
                )?;
                let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                    id: (meta.dev(), meta.ino()),
                })
            }
            Address::Vsock { cid, port } => Ok(Listener::Vsock {
                listener: tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
                    *cid, *port,
                ))
                .map_err(bind_err)?,
                addr: addr.clone(),
            }),
            Address::VsockListen { port } => Ok(Listener::Vsock {
                listener: tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
                    tokio_vsock::VMADDR_CID_ANY,
                    *port,
                ))
                .map_err(bind_err)?,
                addr: addr.clone(),
            }),
            Address::VsockUds { .. } => Err(TransportError::ClientOnly(addr.clone())),
        }
    }

    /// The address this listener was bound with.
    pub fn address(&self) -> Address {
        match self {
            Listener::Unix { path, .. } => Address::Unix(path.clone()),
            Listener::Vsock { addr, .. } => addr.clone(),
        }
    }

    /// Accepts one connection; returns it and a description of the peer
    /// (`unix peer pid P uid U` or `vsock:CID:PORT`).
    pub async fn accept(&self) -> Result<(ServerStream, String), TransportError> {
        let accept_err = |source| TransportError::Accept {
            addr: self.address(),
            source,
        };
        match self {
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await.map_err(accept_err)?;
                let peer = match s.peer_cred() {
                    Ok(c) => match c.pid() {
                        Some(pid) => format!("unix peer pid {pid} uid {}", c.uid()),
                        None => format!("unix peer uid {}", c.uid()),
                    },
                    Err(_) => "unix peer".to_owned(),
                };
                Ok((ServerStream::Unix(s), peer))
            }
            Listener::Vsock { listener, .. } => {
                let (s, a) = listener.accept().await.map_err(accept_err)?;
                Ok((
                    ServerStream::Vsock(s),
                    format!("vsock:{}:{}", a.cid(), a.port()),
                ))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, id, .. } = self {
            if let Ok(m) = std::fs::symlink_metadata(&*path) {
                if m.file_type().is_socket() && (m.dev(), m.ino()) == *id {
                    let _ = std::fs::remove_file(&*path);
                }
            }
        }
    }
}

/// Removes a Unix socket file nobody listens on; refuses anything else.
fn remove_stale(path: &Path) -> Result<(), TransportError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(TransportError::NotASocket {
            path: path.to_owned(),
        });
    }
    if UnixStream::connect(path).is_ok() {
        return Err(TransportError::InUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(|source| TransportError::RemoveStale {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener as StdUnixListener;

    const T: Duration = Duration::from_secs(5);

    /// A fake hybrid-vsock muxer: reads one line, answers `answer`, then echoes.
    fn fake_muxer(path: &Path, answer: &'static [u8]) -> std::thread::JoinHandle<Vec<u8>> {
        let l = StdUnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            s.write_all(answer).unwrap();
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            line
        })
    }

    #[test]
    fn vsock_uds_connect_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let muxer = fake_muxer(&path, b"OK 1073741824\n");
        let addr: Address = format!("vsock-uds:{}:5000", path.display())
            .parse()
            .unwrap();
        let mut s = connect(&addr, T).unwrap();
        assert!(matches!(s, ClientStream::Unix(_)));
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        drop(s);
        assert_eq!(muxer.join().unwrap(), b"CONNECT 5000");
    }

    #[test]
    fn vsock_uds_pipelined_bytes_kept() {
        // The muxer sends guest bytes right after OK in the same write.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let muxer = fake_muxer(&path, b"OK 1073741824\nhello");
        let addr = Address::VsockUds {
            path: path.clone(),
            port: 7,
        };
        let mut s = connect(&addr, T).unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(s);
        assert_eq!(muxer.join().unwrap(), b"CONNECT 7");
    }

    #[test]
    fn vsock_uds_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let muxer = fake_muxer(&path, b"ERR no listener\n");
        let addr = Address::VsockUds {
            path: path.clone(),
            port: 5000,
        };
        let e = connect(&addr, T).unwrap_err();
        match &e {
            TransportError::MuxerRefused { line, port, .. } => {
                assert_eq!(line, "ERR no listener");
                assert_eq!(*port, 5000);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(e.to_string().contains("ERR no listener"), "{e}");
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        muxer.join().unwrap();

        // A muxer that just hangs up.
        let path2 = dir.path().join("v2.sock");
        let l = StdUnixListener::bind(&path2).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            drop(s);
        });
        let e = connect(
            &Address::VsockUds {
                path: path2,
                port: 1,
            },
            T,
        )
        .unwrap_err();
        assert!(
            matches!(e, TransportError::MuxerRefused { .. })
                || matches!(e, TransportError::MuxerIo { .. }),
            "{e}"
        );
        t.join().unwrap();
    }

    #[test]
    fn vsock_uds_silent_muxer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = StdUnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(800));
            drop(s);
        });
        let start = Instant::now();
        let e = connect(
            &Address::VsockUds { path, port: 1 },
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(700));
        assert!(matches!(e, TransportError::MuxerIo { .. }), "{e}");
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        t.join().unwrap();
    }

    #[test]
    fn connect_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect(&Address::Unix(dir.path().join("none")), T).unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }));
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        assert!(e.to_string().contains("cannot connect to unix:"), "{e}");
        let e = connect(&Address::VsockListen { port: 5 }, T).unwrap_err();
        assert!(matches!(e, TransportError::ListenOnly(_)));
    }

    #[test]
    fn full_backlog_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let l = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        l.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        l.listen(0).unwrap();
        let addr = Address::Unix(path);
        let mut held = Vec::new();
        let start = Instant::now();
        let err = loop {
            assert!(held.len() < 64, "backlog never filled");
            match connect(&addr, Duration::from_millis(100)) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert_eq!(err.errno(), libc::ETIMEDOUT, "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(l);
    }

    #[test]
    fn write_to_gone_peer_is_epipe_not_sigpipe() {
        // Block SIGPIPE in this thread so that one raised would stay pending
        // (blocked signals are not discarded even when ignored), then check.
        std::thread::spawn(|| {
            // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a valid sigset_t; the mask change affects only this thread.
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
                    0
                );
            }
            let pending = || {
                // SAFETY: sigset_t is plain data, filled in by sigpending.
                let mut p: libc::sigset_t = unsafe { std::mem::zeroed() };
                // SAFETY: `p` is a valid sigset_t to write to.
                unsafe {
                    assert_eq!(libc::sigpending(&mut p), 0);
                    libc::sigismember(&p, libc::SIGPIPE) == 1
                }
            };
            let (a, b) = UnixStream::pair().unwrap();
            drop(b);
            let mut s = ClientStream::Unix(a);
            let e = s.write(b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
            assert!(!pending(), "ClientStream raised SIGPIPE");
            // Control: a plain write(2) does raise it (then consume it).
            let (a, b) = UnixStream::pair().unwrap();
            drop(b);
            // SAFETY: writes 1 byte from a valid buffer to an fd we own.
            let r = unsafe { libc::write(a.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            assert_eq!(r, -1);
            assert!(pending(), "control write raised no SIGPIPE");
            let mut sig = 0;
            // SAFETY: `set` holds SIGPIPE, which is blocked and pending; `sig` is valid.
            assert_eq!(unsafe { libc::sigwait(&set, &mut sig) }, 0);
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn unix_listener_bind_accept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        // A stale socket file from a dead proxy.
        drop(StdUnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let addr = Address::Unix(path.clone());
        let l = Listener::bind(&addr).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        // A live one (of another process, say) is not clobbered.
        let live = dir.path().join("live.sock");
        let other = StdUnixListener::bind(&live).unwrap();
        assert!(matches!(
            Listener::bind(&Address::Unix(live.clone())).await,
            Err(TransportError::InUse { .. })
        ));
        assert!(live.exists());
        drop(other);

        let client = std::thread::spawn(move || {
            let mut s = connect(&Address::Unix(path), T).unwrap();
            s.write_all(b"hi").unwrap();
        });
        let (mut s, peer) = l.accept().await.unwrap();
        assert!(peer.starts_with("unix peer"), "{peer}");
        let mut b = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut b)
            .await
            .unwrap();
        assert_eq!(&b, b"hi");
        client.join().unwrap();
        let p = dir.path().join("p.sock");
        drop(l);
        assert!(!p.exists(), "socket file removed on drop");

        // Not a socket: refuse to clobber.
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(matches!(
            Listener::bind(&Address::Unix(f.clone())).await,
            Err(TransportError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
        assert!(matches!(
            Listener::bind(&Address::VsockUds { path: f, port: 1 }).await,
            Err(TransportError::ClientOnly(_))
        ));
    }
}
