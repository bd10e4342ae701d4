//! A plain echo over a transport: the raw base of `telebpf bench rtt`.
//!
//! A forwarded call can never be faster than one round trip of its bytes
//! over the same transport, waited for the same way. This module is that
//! round trip with nothing else in it: no handshake, no sealing, no
//! framing. The test guest runs it beside the proxy (`telebpf-proxy --echo
//! vsock:PORT`), and the bench runs it in a thread for a Unix socket.
//!
//! The wire is as small as an echo can be: the client's first byte says how
//! the echo waits for each message — [`Wait::Block`] (a blocking read) or
//! [`Wait::Spin`] (the channel's spin-then-block, [`crate::SyncChannel::set_spin`],
//! with the echo's own budget, as a proxy session waits with
//! `TELEBPF_PROXY_SPIN_US`) — and every byte after it is written back as it
//! arrives. It carries no secret and reaches nothing but its own buffer.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::channel::spin_read;

/// How the echo waits for each message, chosen by the client's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A blocking read: the wake-up costs what it costs.
    Block,
    /// Spin (yielding) for the echo's budget, then block: the channel's
    /// policy.
    Spin,
}

impl Wait {
    /// The byte that asks for this policy.
    pub fn byte(self) -> u8 {
        match self {
            Wait::Block => b'b',
            Wait::Spin => b's',
        }
    }
}

/// Reads into `buf` the way the channel does: spinning up to `spin` (none
/// when zero), then blocking. `Ok(0)` is the end of the stream.
pub fn read_waiting<S: Read + AsRawFd>(
    stream: &mut S,
    buf: &mut [u8],
    spin: Duration,
) -> io::Result<usize> {
    if !spin.is_zero() {
        if let Some(n) = spin_read(stream, buf, spin)? {
            return Ok(n);
        }
    }
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The echo's side of one connection: reads the wait byte, then writes
/// back every byte until the client closes. `spin` is the echo's budget
/// for [`Wait::Spin`].
pub fn serve<S: Read + Write + AsRawFd>(mut stream: S, spin: Duration) -> io::Result<()> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let spin = if first[0] == Wait::Spin.byte() {
        spin
    } else {
        Duration::ZERO
    };
    let mut buf = [0u8; 4096];
    loop {
        let n = read_waiting(&mut stream, &mut buf, spin)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// The client's side of an echo connection.
#[derive(Debug)]
pub struct EchoClient<S> {
    stream: S,
    spin: Duration,
}

impl<S: Read + Write + AsRawFd> EchoClient<S> {
    /// Asks the echo on `stream` to wait as `wait` says; the client itself
    /// spins up to `spin` for each reply when `wait` is [`Wait::Spin`].
    pub fn start(mut stream: S, wait: Wait, spin: Duration) -> io::Result<EchoClient<S>> {
        stream.write_all(&[wait.byte()])?;
        let spin = match wait {
            Wait::Block => Duration::ZERO,
            Wait::Spin => spin,
        };
        Ok(EchoClient { stream, spin })
    }

    /// Sends `buf` and reads the same number of bytes back into it.
    pub fn round_trip(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.stream.write_all(buf)?;
        let mut got = 0;
        while got < buf.len() {
            match read_waiting(&mut self.stream, &mut buf[got..], self.spin)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn echo_pair(
        wait: Wait,
    ) -> (
        EchoClient<UnixStream>,
        std::thread::JoinHandle<io::Result<()>>,
    ) {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve(b, Duration::from_micros(50)));
        let client = EchoClient::start(a, wait, Duration::from_micros(50)).unwrap();
        (client, server)
    }

    #[test]
    fn echoes_every_byte_either_way_of_waiting() {
        for wait in [Wait::Block, Wait::Spin] {
            let (mut client, server) = echo_pair(wait);
            for i in 0..100u8 {
                let sent = [i; 64];
                let mut buf = sent;
                client.round_trip(&mut buf).unwrap();
                assert_eq!(buf, sent, "{wait:?} round trip {i}");
            }
            drop(client);
            server.join().unwrap().unwrap();
        }
    }

    #[test]
    fn a_closed_echo_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = EchoClient::start(a, Wait::Spin, Duration::from_micros(50)).unwrap();
        drop(b);
        let err = client.round_trip(&mut [0u8; 64]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
}
