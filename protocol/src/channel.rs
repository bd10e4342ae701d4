//! The authenticated, sealed channel on top of a byte stream.
//!
//! Both ends exchange sealed frames through the blocking [`SyncChannel`]
//! (and its halves [`SyncReceiver`] / [`SyncSender`]): the host side (the
//! preload library, the CLI) from its own handshake
//! ([`SyncChannel::client`]), the proxy's sessions after an asynchronous
//! handshake. The proxy accepts many clients on one tokio runtime and gives
//! each handshake a time limit there ([`AsyncChannel::server`]), then serves
//! each session with a blocking loop on its own thread:
//! [`AsyncChannel::into_parts`] hands over the stream, the session keys and
//! the bytes already read past the handshake, and
//! [`SyncChannel::from_parts`] continues from there. So there is one sealed
//! frame reader, with the receiver's limits and gate, and no async one.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::ChannelError;
use crate::handshake::{handshake_body_len, ClientHandshake, ServerHandshake, ServerHelloStep};
use crate::key::Psk;
use crate::seal::{frame_body_len, Opener, Sealer, LEN_PREFIX};

/// Default time limit for a whole handshake, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking byte stream a [`SyncChannel`] runs on. Implemented for every
/// `Read + Write + Send + AsRawFd` type (e.g. `UnixStream`, [`crate::ClientStream`]).
///
/// The raw fd is used to `poll(2)` for readability (handshake timeout) and,
/// while spinning before a blocking receive ([`SyncChannel::set_spin`]), to
/// `recv(2)` from a socket without blocking; everything else goes through
/// `Read`/`Write`. So the stream must not buffer or transform reads. In a process that does not ignore SIGPIPE
/// (a host program under the preload library), the stream's `write` should
/// use `send(2)` with `MSG_NOSIGNAL`, as [`crate::ClientStream`] does.
pub trait SyncStream: Read + Write + Send + AsRawFd {}

impl<T: Read + Write + Send + AsRawFd> SyncStream for T {}

/// A [`SyncStream`] that can hand out a second handle to the same connection
/// (`dup(2)`), so that a channel can be split into a receiving and a sending
/// half used from different threads ([`SyncChannel::split`]).
pub trait TryCloneStream: SyncStream + Sized {
    /// Another handle to the same connection.
    fn try_clone(&self) -> io::Result<Self>;
}

impl TryCloneStream for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
}

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

/// `recv(2)` with `MSG_DONTWAIT`: `Ok(None)` while nothing has arrived.
fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes during the call.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// The bounded busy-wait before a blocking read: tries to read into `buf`
/// without blocking until bytes arrive (`Some(n)`, 0 at end of stream) or
/// `spin` has passed (`None`: the caller blocks).
///
/// On a socket each attempt is a single `recv(MSG_DONTWAIT)`, so the
/// attempt that finds the data also reads it (one syscall less per frame
/// than poll-then-read); on anything else it polls for readability.
///
/// Between attempts it yields the CPU rather than spinning in place. A
/// socket write that wakes a *blocked* reader is a "sync" wake-up: the
/// scheduler moves the reader onto the writer's CPU, expecting the writer
/// to sleep next. A writer that spins there instead keeps the reader it
/// just woke off the CPU for its whole spin, and both sides then do this
/// every round trip — measured on a 2-vCPU VM: 120 µs per round trip with
/// 50 µs spins on both sides instead of 8 µs. Yielding lets a co-located
/// reader run at once; with nothing else runnable it costs ~0.5 µs.
pub(crate) fn spin_read<S: AsRawFd>(
    stream: &S,
    buf: &mut [u8],
    spin: Duration,
) -> io::Result<Option<usize>> {
    let fd = stream.as_raw_fd();
    let t0 = Instant::now();
    loop {
        match recv_nowait(fd, buf) {
            Ok(Some(n)) => return Ok(Some(n)),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
                while !poll_readable(fd, 0)? && t0.elapsed() < spin {
                    std::thread::yield_now();
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if t0.elapsed() >= spin {
            return Ok(None);
        }
        std::thread::yield_now();
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

/// Decides whether a sealed frame of a given body length may be read
/// (e.g. against a budget of bytes in flight); called once per frame larger
/// than the reader's start buffer, after its length prefix and before its
/// body is buffered. `false` refuses the frame ([`ChannelError::FrameRefused`]).
pub type FrameGate = Box<dyn FnMut(usize) -> bool + Send>;

/// Limits a receiver applies to the frames it reads (the proxy's session
/// limits; the client keeps the defaults).
#[derive(Debug, Clone, Copy)]
pub struct ReceiveLimits {
    /// Largest accepted frame body; a larger length prefix fails with
    /// [`ChannelError::FrameOverLimit`] before anything is allocated.
    pub max_frame: usize,
    /// Once a frame's first byte arrived, the whole frame must within this
    /// time, else [`ChannelError::Stalled`]. Checked after every read, so
    /// the stream needs a receive timeout (`SO_RCVTIMEO`) for a peer that
    /// sends nothing more.
    pub stall: Option<Duration>,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_frame: crate::MAX_FRAME,
            stall: None,
        }
    }
}

/// Buffered frame reader for the blocking side: usually one `read(2)` per frame.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limits: ReceiveLimits,
    gate: Option<FrameGate>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader::with_buffered(&[])
    }

    /// A reader whose first bytes are `buffered` (read from the stream
    /// before, e.g. by the async handshake), then the stream's.
    fn with_buffered(buffered: &[u8]) -> FrameReader {
        let mut buf = vec![0; READ_BUF.max(buffered.len())];
        buf[..buffered.len()].copy_from_slice(buffered);
        FrameReader {
            buf,
            start: 0,
            end: buffered.len(),
            limits: ReceiveLimits::default(),
            gate: None,
        }
    }

    /// Reads one whole frame; returns its length prefix and body.
    fn read_frame<S: Read + AsRawFd>(
        &mut self,
        stream: &mut S,
        mode: Mode,
    ) -> Result<([u8; 4], Vec<u8>), ChannelError> {
        let handshake = matches!(mode, Mode::Handshake(..));
        // When the frame's first byte was seen (for the stall limit).
        let mut started = (self.end > self.start).then(Instant::now);
        // Whether the gate already admitted this frame.
        let mut admitted = false;
        loop {
            let avail = self.end - self.start;
            let mut need = LEN_PREFIX;
            if let (Some(t0), Some(stall), false) = (started, self.limits.stall, handshake) {
                if t0.elapsed() > stall {
                    return Err(ChannelError::Stalled {
                        got: avail,
                        after: stall,
                    });
                }
            }
            if avail >= LEN_PREFIX {
                let prefix: [u8; 4] = self.buf[self.start..self.start + LEN_PREFIX]
                    .try_into()
                    .expect("4 bytes");
                let body_len = if handshake {
                    handshake_body_len(prefix)?
                } else {
                    frame_body_len(prefix)?
                };
                if !handshake && body_len > self.limits.max_frame {
                    return Err(ChannelError::FrameOverLimit {
                        len: body_len,
                        max: self.limits.max_frame,
                    });
                }
                if !handshake && !admitted && body_len > READ_BUF {
                    if let Some(gate) = self.gate.as_mut() {
                        if !gate(body_len) {
                            return Err(ChannelError::FrameRefused(body_len));
                        }
                    }
                    admitted = true;
                }
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
            // Make room for `need` bytes from `start`. The buffer grows only
            // as bytes arrive (at most doubling), so a length prefix alone
            // never makes us allocate what it announces.
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.end == self.buf.len() {
                    let grown = need.min(self.buf.len().saturating_mul(2).max(READ_BUF));
                    self.buf.resize(grown, 0);
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
                Mode::Sealed(_) => {}
            }
            let spun = match mode {
                Mode::Sealed(spin) if !spin.is_zero() => {
                    spin_read(stream, &mut self.buf[self.end..], spin)
                        .map_err(ChannelError::Read)?
                }
                _ => None,
            };
            let n = match spun {
                Some(n) => n,
                None => match stream.read(&mut self.buf[self.end..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if handshake => return Err(ChannelError::HandshakeRead(e)),
                    // The stream's receive timeout (`SO_RCVTIMEO`) passed.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if started.is_none() {
                            return Err(ChannelError::Idle);
                        }
                        continue;
                    }
                    Err(e) => return Err(ChannelError::Read(e)),
                },
            };
            if n > 0 && started.is_none() {
                started = Some(Instant::now());
            }
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

/// Blocking side of a channel, at either end: the host side's (the preload
/// library, the CLI: [`client`](Self::client) runs the handshake) and the
/// proxy's sessions ([`from_parts`](Self::from_parts) after
/// [`AsyncChannel::server`]).
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

    /// Continues a channel whose handshake was done elsewhere — the proxy's
    /// async handshake ([`AsyncChannel::into_parts`]) — on a blocking stream.
    ///
    /// `buffered` are the bytes already read from the connection beyond the
    /// handshake (the client may send its first sealed frame right after its
    /// proof); they are consumed before anything is read from `stream`.
    /// `stream` must be in blocking mode. Spinning is off ([`set_spin`](Self::set_spin)).
    pub fn from_parts(stream: S, sealer: Sealer, opener: Opener, buffered: &[u8]) -> Self {
        SyncChannel {
            stream,
            reader: FrameReader::with_buffered(buffered),
            sealer,
            opener,
            spin: Duration::ZERO,
            broken: false,
        }
    }

    /// Seals and sends one message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        send_sealed(&mut self.stream, &mut self.sealer, &mut self.broken, msg)
    }

    /// Receives and opens one message. The peer closing the connection is
    /// [`ChannelError::Closed`].
    pub fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        recv_sealed(
            &mut self.stream,
            &mut self.reader,
            &mut self.opener,
            self.spin,
            &mut self.broken,
        )
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

impl<S: TryCloneStream> SyncChannel<S> {
    /// Splits into a receiving and a sending half over two handles of the
    /// same connection, so that one thread can block in
    /// [`SyncReceiver::recv`] while another sends (e.g. to push unsolicited
    /// frames). Bytes already buffered stay with the receiver; the spin
    /// setting too; an earlier failure leaves both halves broken.
    pub fn split(self) -> io::Result<(SyncReceiver<S>, SyncSender<S>)> {
        let writer = self.stream.try_clone()?;
        Ok((
            SyncReceiver {
                stream: self.stream,
                reader: self.reader,
                opener: self.opener,
                spin: self.spin,
                broken: self.broken,
            },
            SyncSender {
                stream: writer,
                sealer: self.sealer,
                broken: self.broken,
            },
        ))
    }
}

/// Seals `msg` and writes the frame; any failure after sealing breaks the
/// channel (the counter advanced, the peer may have part of the frame).
fn send_sealed<W: Write>(
    stream: &mut W,
    sealer: &mut Sealer,
    broken: &mut bool,
    msg: &[u8],
) -> Result<(), ChannelError> {
    if *broken {
        return Err(ChannelError::Broken);
    }
    let frame = sealer.try_seal(msg)?;
    *broken = true;
    stream.write_all(&frame).map_err(ChannelError::Write)?;
    stream.flush().map_err(ChannelError::Write)?;
    *broken = false;
    Ok(())
}

/// Reads and opens one sealed frame (spinning for up to `spin` first); any
/// failure breaks the channel.
fn recv_sealed<R: Read + AsRawFd>(
    stream: &mut R,
    reader: &mut FrameReader,
    opener: &mut Opener,
    spin: Duration,
    broken: &mut bool,
) -> Result<Vec<u8>, ChannelError> {
    if *broken {
        return Err(ChannelError::Broken);
    }
    *broken = true;
    let (prefix, mut body) = match reader.read_frame(stream, Mode::Sealed(spin)) {
        Ok(frame) => frame,
        // Nothing of a next frame arrived: the channel is intact.
        Err(ChannelError::Idle) => {
            *broken = false;
            return Err(ChannelError::Idle);
        }
        Err(e) => return Err(e),
    };
    opener.open_in_place(&mut body, prefix)?;
    *broken = false;
    Ok(body)
}

/// Receiving half of a split [`SyncChannel`].
pub struct SyncReceiver<R: Read + Send + AsRawFd> {
    stream: R,
    reader: FrameReader,
    opener: Opener,
    spin: Duration,
    broken: bool,
}

impl<R: Read + Send + AsRawFd> std::fmt::Debug for SyncReceiver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReceiver")
            .field("fd", &self.stream.as_raw_fd())
            .field("received", &self.opener.counter())
            .field("spin", &self.spin)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Send + AsRawFd> SyncReceiver<R> {
    /// Receives and opens one message. The peer closing the connection
    /// between frames is [`ChannelError::Closed`].
    pub fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        recv_sealed(
            &mut self.stream,
            &mut self.reader,
            &mut self.opener,
            self.spin,
            &mut self.broken,
        )
    }

    /// Before blocking in [`recv`](Self::recv), poll without blocking for up
    /// to `d` (see [`SyncChannel::set_spin`]).
    pub fn set_spin(&mut self, d: Duration) {
        self.spin = d;
    }

    /// Applies `limits` to the frames read from now on. With
    /// [`ReceiveLimits::stall`] set and a receive timeout on the stream,
    /// [`recv`](Self::recv) returns [`ChannelError::Idle`] (channel intact)
    /// each time the timeout passes before a next frame starts.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.reader.limits = limits;
    }

    /// Asks `gate` before buffering each frame larger than the start buffer
    /// (64 KiB).
    pub fn set_gate(&mut self, gate: FrameGate) {
        self.reader.gate = Some(gate);
    }

    /// The underlying stream.
    pub fn stream(&self) -> &R {
        &self.stream
    }
}

/// Sending half of a split [`SyncChannel`]. It is `Send`: put it behind a
/// `Mutex` to send from several threads (frames are never interleaved since
/// each [`send`](Self::send) writes a whole frame under `&mut self`).
pub struct SyncSender<W: Write + Send> {
    stream: W,
    sealer: Sealer,
    broken: bool,
}

impl<W: Write + Send> std::fmt::Debug for SyncSender<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSender")
            .field("sent", &self.sealer.counter())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> SyncSender<W> {
    /// Seals and sends one message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ChannelError> {
        send_sealed(&mut self.stream, &mut self.sealer, &mut self.broken, msg)
    }

    /// The underlying stream.
    pub fn stream(&self) -> &W {
        &self.stream
    }
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

/// The proxy's side of a channel during its handshake, run asynchronously
/// so that one runtime serves many handshakes, each with a time limit. It
/// carries no sealed frames: once authenticated, [`into_parts`](Self::into_parts)
/// hands the session to a [`SyncChannel`].
pub struct AsyncChannel<S: AsyncRead + AsyncWrite + Unpin + Send> {
    /// Buffered, so the read-ahead past the client's proof is kept (the
    /// client may send sealed frames right after it).
    stream: BufReader<S>,
    sealer: Sealer,
    opener: Opener,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> std::fmt::Debug for AsyncChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncChannel")
            .field("buffered", &self.stream.buffer().len())
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
            },
            index,
        ))
    }

    /// Takes the channel apart to continue synchronously
    /// ([`SyncChannel::from_parts`]): the stream, the session's sealer and
    /// opener, and the bytes already read from the stream but not consumed
    /// (the client may send sealed frames right after its proof, so the
    /// handshake's read-ahead can hold some).
    ///
    /// It never fails today: the channel carries no frames, so nothing can
    /// have broken it since its handshake. The `Result` leaves the proxy's
    /// caller, which chains it with fallible steps, as it is.
    pub fn into_parts(self) -> Result<ChannelParts<S>, ChannelError> {
        let buffered = self.stream.buffer().to_vec();
        Ok(ChannelParts {
            stream: self.stream.into_inner(),
            sealer: self.sealer,
            opener: self.opener,
            buffered,
        })
    }
}

/// An established channel taken apart ([`AsyncChannel::into_parts`]).
pub struct ChannelParts<S> {
    /// The connection.
    pub stream: S,
    /// Seals what we send (its counter continues).
    pub sealer: Sealer,
    /// Opens what we receive (its counter continues).
    pub opener: Opener,
    /// Bytes already read from `stream` that belong to the next frames.
    pub buffered: Vec<u8>,
}

impl<S> std::fmt::Debug for ChannelParts<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelParts")
            .field("sealer", &self.sealer)
            .field("opener", &self.opener)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}
