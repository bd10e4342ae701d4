//! Errors of the handshake and the sealed channel.

use std::io;

use crate::key::KeyId;

/// Everything that can go wrong in the handshake or on an established channel.
///
/// Any error ends the session: after one, a channel refuses further use
/// ([`ChannelError::Broken`]).
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The system random source failed while making a nonce.
    #[error("cannot make a handshake nonce: system random source failed: {0}")]
    Random(getrandom::Error),
    /// Writing a handshake message failed.
    #[error("handshake: sending failed: {0}")]
    HandshakeWrite(#[source] io::Error),
    /// Reading a handshake message failed.
    #[error("handshake: receiving failed: {0}")]
    HandshakeRead(#[source] io::Error),
    /// The peer closed the connection before the handshake finished.
    #[error("handshake: the peer closed the connection")]
    HandshakeEof,
    /// The handshake did not finish in time.
    #[error("handshake: timed out after {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// A handshake frame's length prefix exceeds [`crate::MAX_HANDSHAKE_FRAME`].
    #[error("handshake: message of {0} bytes is larger than any handshake message (peer is not a telebpf endpoint?)")]
    HandshakeTooLarge(usize),
    /// The first message did not start with `TELEBPF\0`.
    #[error("handshake: the peer is not a telebpf endpoint (bad magic)")]
    BadMagic,
    /// A handshake message has the wrong size or content.
    #[error("handshake: malformed {0}")]
    Malformed(&'static str),
    /// Client side: the proxy speaks another protocol version.
    #[error("proxy speaks protocol v{proxy}, we speak v{ours}")]
    ProxyVersion {
        /// The proxy's version.
        proxy: u16,
        /// Ours ([`crate::PROTOCOL_VERSION`]).
        ours: u16,
    },
    /// Server side: the client speaks another protocol version (it was told ours).
    #[error("client speaks protocol v{client}, we speak v{ours}")]
    ClientVersion {
        /// The client's version.
        client: u16,
        /// Ours ([`crate::PROTOCOL_VERSION`]).
        ours: u16,
    },
    /// Client side: the proxy said it has no key with our key id.
    #[error("authentication failed: the proxy does not know this key")]
    ProxyUnknownKey,
    /// Client side: the proxy's proof does not match our key.
    #[error("authentication failed: the proxy could not prove it holds this key (wrong key, or not the real proxy)")]
    ServerProof,
    /// Server side: the client's key id matches none of our keys.
    #[error("authentication failed: the client's key (id {}) is none of our {known} keys", hex8(.key_id))]
    UnknownKeyId {
        /// The key id the client sent.
        key_id: KeyId,
        /// How many keys we hold.
        known: usize,
    },
    /// Server side: the client's proof does not match the key its id names.
    #[error("authentication failed: the client could not prove it holds key #{0}")]
    ClientProof(usize),
    /// Writing a sealed frame failed.
    #[error("sending failed: {0}")]
    Write(#[source] io::Error),
    /// Reading a sealed frame failed.
    #[error("receiving failed: {0}")]
    Read(#[source] io::Error),
    /// The peer closed the connection between frames (blocking client: where a
    /// reply was expected).
    #[error("the peer closed the connection")]
    Closed,
    /// The connection ended inside a frame.
    #[error("the connection ended in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame should have had (length prefix included).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A frame's length prefix exceeds [`crate::MAX_FRAME`]; nothing was allocated.
    #[error("frame of {0} bytes exceeds the limit of {max} bytes", max = crate::MAX_FRAME)]
    FrameTooLarge(usize),
    /// A frame's length prefix exceeds the receiver's configured limit
    /// ([`crate::channel::ReceiveLimits`]); nothing was allocated.
    #[error("frame of {len} bytes exceeds this receiver's limit of {max} bytes")]
    FrameOverLimit {
        /// Length from the prefix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The receiver's gate refused a frame (e.g. no budget of bytes in flight).
    #[error("frame of {0} bytes refused: too many bytes in flight")]
    FrameRefused(usize),
    /// The stream's receive timeout passed with no byte of a next frame;
    /// the channel stays usable.
    #[error("no frame within the receive timeout")]
    Idle,
    /// A frame started but did not complete within the stall limit.
    #[error("frame incomplete after {after:?} ({got} bytes arrived): peer stalled")]
    Stalled {
        /// Bytes of the frame that arrived.
        got: usize,
        /// The limit.
        after: std::time::Duration,
    },
    /// A frame's length prefix is smaller than an authentication tag.
    #[error("frame of {0} bytes is shorter than its authentication tag")]
    FrameTooShort(usize),
    /// The body handed to [`crate::Opener::open`] does not have the prefix's length.
    #[error("frame body has {got} bytes but its length prefix says {expected}")]
    LengthMismatch {
        /// Length from the prefix.
        expected: usize,
        /// Length of the body given.
        got: usize,
    },
    /// A frame did not authenticate: altered, replayed, reordered, or from another session.
    #[error(
        "frame #{0} failed authentication (altered, replayed, reordered or foreign); session ended"
    )]
    Open(u64),
    /// A message to send is larger than a frame can hold; nothing was sent.
    #[error("message of {0} bytes exceeds the limit of {max} bytes", max = crate::MAX_PLAINTEXT)]
    MessageTooLarge(usize),
    /// The channel already failed earlier and cannot be used any more.
    #[error("the channel is unusable after an earlier error")]
    Broken,
}

fn hex8(id: &KeyId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl ChannelError {
    /// A sensible errno for this error, for reporting through a syscall.
    pub fn errno(&self) -> i32 {
        use ChannelError::*;
        match self {
            Random(_) => libc::EIO,
            HandshakeTimeout(_) => libc::ETIMEDOUT,
            HandshakeEof => libc::ECONNREFUSED,
            // A proxy that closes the connection before the handshake is
            // done (e.g. at its --max-sessions) refused it, whichever of
            // our writes or reads noticed first.
            HandshakeWrite(e) | HandshakeRead(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                libc::ECONNREFUSED
            }
            HandshakeWrite(e) | HandshakeRead(e) | Write(e) | Read(e) => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
                io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
                _ => libc::EPIPE,
            },
            ProxyUnknownKey | ServerProof | UnknownKeyId { .. } | ClientProof(_) => libc::EACCES,
            HandshakeTooLarge(_)
            | BadMagic
            | Malformed(_)
            | ProxyVersion { .. }
            | ClientVersion { .. }
            | FrameTooLarge(_)
            | FrameOverLimit { .. }
            | FrameTooShort(_)
            | LengthMismatch { .. }
            | Open(_) => libc::EPROTO,
            Closed | Truncated { .. } | Broken => libc::EPIPE,
            MessageTooLarge(_) => libc::EMSGSIZE,
            FrameRefused(_) => libc::EAGAIN,
            Idle | Stalled { .. } => libc::ETIMEDOUT,
        }
    }

    /// Whether this is an authentication failure (wrong or unknown key).
    pub fn is_auth(&self) -> bool {
        self.errno() == libc::EACCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ChannelError>();
        check::<crate::TransportError>();
        check::<crate::KeyError>();
        check::<crate::AddressError>();
    }

    #[test]
    fn messages_and_errnos() {
        let e = ChannelError::ProxyVersion { proxy: 2, ours: 1 };
        assert_eq!(e.to_string(), "proxy speaks protocol v2, we speak v1");
        assert_eq!(e.errno(), libc::EPROTO);
        let e = ChannelError::ProxyUnknownKey;
        assert_eq!(
            e.to_string(),
            "authentication failed: the proxy does not know this key"
        );
        assert_eq!(e.errno(), libc::EACCES);
        let e = ChannelError::UnknownKeyId {
            key_id: [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3],
            known: 2,
        };
        assert!(e.to_string().contains("deadbeef00010203"), "{e}");
        assert_eq!(
            ChannelError::HandshakeTimeout(std::time::Duration::from_secs(1)).errno(),
            libc::ETIMEDOUT
        );
        assert_eq!(ChannelError::Closed.errno(), libc::EPIPE);
    }
}
