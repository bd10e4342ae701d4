//! The authenticated, sealed channel on top of a byte stream: a blocking
//! client side ([`SyncChannel`]) and an async (tokio) server side
//! ([`AsyncChannel`]).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};

use crate::error::ChannelError;
use crate::handshake::{handshake_body_len, ClientHandshake, ServerHandshake, ServerHelloStep};
use crate::key::Psk;
use crate::seal::{frame_body_len, Opener, Sealer, LEN_PREFIX};

/// Default time limit for a whole handshake, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking byte stream the client side runs on. Implemented for every
/// `Read + Write + Send + AsRawFd` type (e.g. `UnixStream`, [`crate::ClientStream`]).
///
/// The raw fd is only used to `poll(2)` for readability (handshake timeout,
/// spinning receive); all I/O goes through `Read`/`Write`, so the stream must
/// not buffer reads internally. In a process that does not ignore SIGPIPE
/// (a host program under the preload library), the stream's `write` should
/// use `send(2)` with `MSG_NOSIGNAL`, as [`crate::ClientStream`] does.
pub trait SyncStream: Read + Write + Send + AsRawFd {}

impl<T: Read + Write + Send + AsRawFd> SyncStream for T {}

/// `poll(2)` for readability (or hang-up/error) with a timeout in milliseconds.
fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid, exclusively borrowed pollfd and we pass a count of 1.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// How the frame reader waits and which errors it reports.
enum Mode {
    /// Handshake frame, with a deadline.
    Handshake(Instant, Duration),
    /// Sealed frame; spin-poll for this long before blocking.
    Sealed(Duration),
}

/// Start size of the blocking reader's buffer; it grows for larger frames.
const READ_BUF: usize = 64 << 10;

/// Buffered frame reader for the blocking side: usually one `read(2)` per frame.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader {
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    /// Reads one whole frame; returns its length prefix and body.
    fn read_frame<S: SyncStream>(
        &mut self,
        stream: &mut S,
        mode: Mode,
    ) -> Result<([u8; 4], Vec<u8>), ChannelError> {
        let handshake = matches!(mode, Mode::Handshake(..));
        loop {
            let avail = self.end - self.start;
            let mut need = LEN_PREFIX;
            if avail >= LEN_PREFIX {
                let prefix: [u8; 4] = self.buf[self.start..self.start + LEN_PREFIX]
                    .try_into()
                    .expect("4 bytes");
                let body_len = if handshake {
                    handshake_body_len(prefix)?
                } else {
                    frame_body_len(prefix)?
                };
                need = LEN_PREFIX + body_len;
                if avail >= need {
                    let body = self.buf[self.start + LEN_PREFIX..self.start + need].to_vec();
                    self.start += need;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                        if self.buf.len() > 16 * READ_BUF {
                            self.buf = vec![0; READ_BUF];
                        }
                    }
                    return Ok((prefix, body));
                }
            }
            // Make room for `need` bytes from `start`.
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
            }
            match mode {
                Mode::Handshake(deadline, limit) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
                    let ready = ms > 0
                        && poll_readable(stream.as_raw_fd(), ms)
                            .map_err(ChannelError::HandshakeRead)?;
                    if !ready {
                        return Err(ChannelError::HandshakeTimeout(limit));
                    }
                }
                Mode::Sealed(spin) if !spin.is_zero() => {
                    let t0 = Instant::now();
                    while !poll_readable(stream.as_raw_fd(), 0).map_err(ChannelError::Read)?
                        && t0.elapsed() < spin
                    {
                        std::hint::spin_loop();
                    }
                }
                Mode::Sealed(_) => {}
            }
            let n = match stream.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if handshake => return Err(ChannelError::HandshakeRead(e)),
                Err(e) => return Err(ChannelError::Read(e)),
            };
            if n == 0 {
                return Err(if handshake {
                    ChannelError::HandshakeEof
                } else if avail == 0 {
                    ChannelError::Closed
                } else {
                    ChannelError::Truncated {
                        expected: need,
                        got: avail,
                    }
                });
            }
            self.end += n;
        }
    }
}

/// Blocking client side of a channel (used by the preload library and the CLI).
pub struct SyncChannel<S: SyncStream> {
    stream: S,
    reader: FrameReader,
    sealer: Sealer,
    opener: Opener,
    spin: Duration,
    broken: bool,
}

impl<S: SyncStream> std::fmt::Debug for SyncChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncChannel")
            .field("fd", &self.stream.as_raw_fd())
            .field("sent", &self.sealer.counter())
            .field("received", &self.opener.counter())
            .field("spin", &self.spin)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<S: SyncStream> SyncChannel<S> {
    /// Runs the client handshake on `stream` (time limit [`HANDSHAKE_TIMEOUT`]).
    pub fn client(stream: S, psk: &Psk) -> Result<Self, ChannelError> {
        Self::client_with_timeout(stream, psk, HANDSHAKE_TIMEOUT)
    }

    /// Runs the client handshake with a time limit for the proxy's answer.
    pub fn client_with_timeout(
        mut stream: S,
        psk: &Psk,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        let deadline = Instant::now() + timeout;
        let (hs, hello) = ClientHandshake::start(psk)?;
        stream
            .write_all(&hello)
            .map_err(ChannelError::HandshakeWrite)?;
        let mut reader = FrameReader::new();
        let (_, server_hello) =
            reader.read_frame(&mut stream, Mode::Handshake(deadline, timeout))?;
        let (proof, keys) = hs.finish(&server_hello)?;
        stream
            .write_all(&proof)
            .map_err(ChannelError::HandshakeWrite)?;
        Ok(SyncChannel {
            stream,
            reader,
            sealer: keys.sealer,
            opener: keys.opener,
            spin: Duration::ZERO,
            broken: false,
        })
    }

    /// Seals and sends one message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        let frame = self.sealer.try_seal(msg)?;
        self.broken = true;
        self.stream.write_all(&frame).map_err(ChannelError::Write)?;
        self.stream.flush().map_err(ChannelError::Write)?;
        self.broken = false;
        Ok(())
    }

    /// Receives and opens one message. The peer closing the connection is
    /// [`ChannelError::Closed`].
    pub fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        self.broken = true;
        let (prefix, mut body) = self
            .reader
            .read_frame(&mut self.stream, Mode::Sealed(self.spin))?;
        self.opener.open_in_place(&mut body, prefix)?;
        self.broken = false;
        Ok(body)
    }

    /// Latency lever: before blocking in [`recv`](Self::recv), poll the
    /// socket without blocking for up to `d` (a blocking wake-up across cores
    /// costs far more than a spinning receiver). Zero (the default) disables it.
    pub fn set_spin(&mut self, d: Duration) {
        self.spin = d;
    }

    /// The underlying stream (e.g. for its fd).
    pub fn stream(&self) -> &S {
        &self.stream
    }
}

/// Reads one sealed frame; `Ok(None)` on EOF before its first byte.
async fn read_sealed<R: AsyncRead + Unpin>(
    reader: &mut R,
    opener: &mut Opener,
) -> Result<Option<Vec<u8>>, ChannelError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = reader
            .read(&mut prefix[got..])
            .await
            .map_err(ChannelError::Read)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ChannelError::Truncated {
                expected: LEN_PREFIX,
                got,
            });
        }
        got += n;
    }
    let len = frame_body_len(prefix)?;
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader
            .read(&mut body[got..])
            .await
            .map_err(ChannelError::Read)?;
        if n == 0 {
            return Err(ChannelError::Truncated {
                expected: LEN_PREFIX + len,
                got: LEN_PREFIX + got,
            });
        }
        got += n;
    }
    opener.open_in_place(&mut body, prefix)?;
    Ok(Some(body))
}

async fn write_sealed<W: AsyncWrite + Unpin>(
    writer: &mut W,
    sealer: &mut Sealer,
    msg: &[u8],
) -> Result<(), ChannelError> {
    let frame = sealer.try_seal(msg)?;
    writer
        .write_all(&frame)
        .await
        .map_err(ChannelError::Write)?;
    writer.flush().await.map_err(ChannelError::Write)
}

/// Reads one clear-text handshake frame body.
async fn read_handshake<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, ChannelError> {
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ChannelError::HandshakeEof
        } else {
            ChannelError::HandshakeRead(e)
        }
    };
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.map_err(eof)?;
    let mut body = vec![0u8; handshake_body_len(prefix)?];
    reader.read_exact(&mut body).await.map_err(eof)?;
    Ok(body)
}

async fn write_handshake<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), ChannelError> {
    writer
        .write_all(frame)
        .await
        .map_err(ChannelError::HandshakeWrite)?;
    writer.flush().await.map_err(ChannelError::HandshakeWrite)
}

/// Async server side of a channel (the proxy).
pub struct AsyncChannel<S: AsyncRead + AsyncWrite + Unpin + Send> {
    stream: BufReader<S>,
    sealer: Sealer,
    opener: Opener,
    broken: bool,
}

/// Read half of a split [`AsyncChannel`]'s stream.
pub type ChannelReadHalf<S> = ReadHalf<BufReader<S>>;
/// Write half of a split [`AsyncChannel`]'s stream.
pub type ChannelWriteHalf<S> = WriteHalf<BufReader<S>>;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> std::fmt::Debug for AsyncChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncChannel")
            .field("sent", &self.sealer.counter())
            .field("received", &self.opener.counter())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AsyncChannel<S> {
    /// Runs the server handshake (time limit [`HANDSHAKE_TIMEOUT`]); returns
    /// the channel and the index into `keys` of the client's key.
    ///
    /// Needs a tokio runtime with the time driver enabled.
    pub async fn server(stream: S, keys: &[Psk]) -> Result<(Self, usize), ChannelError> {
        Self::server_with_timeout(stream, keys, HANDSHAKE_TIMEOUT).await
    }

    /// [`server`](Self::server) with an explicit time limit for the whole handshake.
    pub async fn server_with_timeout(
        stream: S,
        keys: &[Psk],
        timeout: Duration,
    ) -> Result<(Self, usize), ChannelError> {
        let mut stream = BufReader::new(stream);
        let (session, index) = tokio::time::timeout(timeout, async {
            let hello = read_handshake(&mut stream).await?;
            match ServerHandshake::respond(keys, &hello)? {
                ServerHelloStep::Refuse { reply, error } => {
                    // Best effort: the client learns why; our error is what matters.
                    let _ = write_handshake(&mut stream, &reply).await;
                    let _ = stream.shutdown().await;
                    Err(error)
                }
                ServerHelloStep::Continue { reply, handshake } => {
                    write_handshake(&mut stream, &reply).await?;
                    let proof = read_handshake(&mut stream).await?;
                    handshake.finish(&proof)
                }
            }
        })
        .await
        .map_err(|_| ChannelError::HandshakeTimeout(timeout))??;
        Ok((
            AsyncChannel {
                stream,
                sealer: session.sealer,
                opener: session.opener,
                broken: false,
            },
            index,
        ))
    }

    /// Seals and sends one message.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        if msg.len() > crate::MAX_PLAINTEXT {
            return Err(ChannelError::MessageTooLarge(msg.len()));
        }
        self.broken = true;
        write_sealed(&mut self.stream, &mut self.sealer, msg).await?;
        self.broken = false;
        Ok(())
    }

    /// Receives and opens one message; `Ok(None)` when the client closed the
    /// connection cleanly between frames.
    ///
    /// Not cancel-safe: if the future is dropped midway the channel is broken.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        self.broken = true;
        let r = read_sealed(&mut self.stream, &mut self.opener).await?;
        self.broken = false;
        Ok(r)
    }

    /// Splits into independent receiving and sending halves (e.g. to push
    /// unsolicited frames while a task reads). Bytes already buffered are kept.
    pub fn into_split(
        self,
    ) -> (
        AsyncReceiver<ChannelReadHalf<S>>,
        AsyncSender<ChannelWriteHalf<S>>,
    ) {
        let (r, w) = tokio::io::split(self.stream);
        (
            AsyncReceiver {
                reader: r,
                opener: self.opener,
                broken: self.broken,
            },
            AsyncSender {
                writer: w,
                sealer: self.sealer,
                broken: self.broken,
            },
        )
    }
}

/// Receiving half of a split [`AsyncChannel`].
pub struct AsyncReceiver<R: AsyncRead + Unpin + Send> {
    reader: R,
    opener: Opener,
    broken: bool,
}

impl<R: AsyncRead + Unpin + Send> std::fmt::Debug for AsyncReceiver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReceiver")
            .field("received", &self.opener.counter())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin + Send> AsyncReceiver<R> {
    /// Receives and opens one message; `Ok(None)` on clean EOF between frames.
    /// Not cancel-safe (see [`AsyncChannel::recv`]).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        self.broken = true;
        let r = read_sealed(&mut self.reader, &mut self.opener).await?;
        self.broken = false;
        Ok(r)
    }
}

/// Sending half of a split [`AsyncChannel`].
pub struct AsyncSender<W: AsyncWrite + Unpin + Send> {
    writer: W,
    sealer: Sealer,
    broken: bool,
}

impl<W: AsyncWrite + Unpin + Send> std::fmt::Debug for AsyncSender<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSender")
            .field("sent", &self.sealer.counter())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send> AsyncSender<W> {
    /// Seals and sends one message.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        if msg.len() > crate::MAX_PLAINTEXT {
            return Err(ChannelError::MessageTooLarge(msg.len()));
        }
        self.broken = true;
        write_sealed(&mut self.writer, &mut self.sealer, msg).await?;
        self.broken = false;
        Ok(())
    }

    /// Shuts the write direction down (the client sees EOF after the last frame).
    pub async fn shutdown(&mut self) -> Result<(), ChannelError> {
        self.writer.shutdown().await.map_err(ChannelError::Write)
    }
}
