//! telebpf-protocol: addresses, transports, the pre-shared key, the
//! mutual-authentication handshake, the sealed framing, and the messages.
//!
//! # Wire protocol (version 3)
//!
//! A client (the host side) and the proxy (inside the guest) talk over one
//! reliable byte stream (Unix socket, AF_VSOCK, or hybrid vsock through the
//! VMM's Unix socket, see [`transport`]). Both hold a pre-shared 256-bit key
//! (PSK, see [`key`]); the proxy may hold several. All integers are
//! little-endian.
//!
//! ## Handshake frames
//!
//! Handshake messages travel in clear-text frames: `len: u32` then `len`
//! bytes of body. A receiver rejects `len > 1024`
//! ([`MAX_HANDSHAKE_FRAME`]) before allocating. Three messages:
//!
//! 1. **ClientHello** (client → proxy, 50 bytes):
//!    `magic "TELEBPF\0" (8) || version: u16 (2) || client_nonce (32) || key_id (8)`,
//!    where `client_nonce` is fresh random and
//!    `key_id = SHA-256("telebpf key id" || psk)[..8]` names the key the client holds.
//! 2. **Proxy's answer**, always starting `magic || version: u16` with the
//!    proxy's own version:
//!    * if the client's version differs from the proxy's: exactly
//!      `magic || proxy_version` (10 bytes), then the proxy closes. A client
//!      seeing a version other than its own in this position stops right
//!      there, whatever follows, and reports "proxy speaks protocol vN, we
//!      speak vM". This rule (and the frame format, and magic + version
//!      leading each side's first message) holds for every future version.
//!    * if no key has `key_id`: `magic || version || status 1` (11 bytes),
//!      then the proxy closes; the client reports "authentication failed: the
//!      proxy does not know this key".
//!    * otherwise **ServerHello** (75 bytes):
//!      `magic || version || status 0 (1) || server_nonce (32) || server_proof (32)`
//!      with `server_proof = HMAC-SHA256(psk, "telebpf server" || client_nonce || server_nonce)`.
//! 3. **ClientProof** (client → proxy, 32 bytes): the client checks
//!    `server_proof` in constant time (mismatch: the client fails with an
//!    authentication error and sends nothing more), then sends
//!    `HMAC-SHA256(psk, "telebpf client" || client_nonce || server_nonce)`.
//!    The proxy checks it in constant time; on mismatch it closes without a
//!    word. It decodes no request before this check succeeds.
//!
//! The labels keep a proof of one side from serving as the other's; the
//! fresh nonces of both sides keep old proofs and frames from being replayed
//! into a new session. The client may send sealed frames right after its
//! proof (no extra round trip).
//!
//! ## Session keys
//!
//! `HKDF-SHA256(ikm = psk, salt = client_nonce || server_nonce)`, expanded
//! with info `"telebpf c2s v1"` to the 32-byte client→proxy key and with
//! `"telebpf s2c v1"` to the 32-byte proxy→client key.
//!
//! ## Sealed frames
//!
//! Every frame after the handshake, in either direction, is
//! `len: u32 || ciphertext || tag (16)`, `len` counting ciphertext and tag,
//! sealed with ChaCha20-Poly1305 (RFC 8439) under that direction's key with
//! nonce `00 00 00 00 || counter: u64` and the 4 bytes of `len` as associated
//! data. Each direction's `counter` is the number of frames sent before in
//! that direction, starting at 0. Both ends read sealed frames with one
//! reader (the blocking [`SyncChannel`]; the proxy's asynchronous
//! [`AsyncChannel`] only runs the handshake). It rejects `len > 64 MiB`
//! ([`MAX_FRAME`]) or `len < 16` before allocating; a receiver may set a
//! lower limit, a stall limit for a frame that started, and a gate for
//! large frames ([`channel::ReceiveLimits`], [`channel::FrameGate`]: the
//! proxy's session limits), and buffers only the bytes that arrived, never
//! what a prefix announces. A frame that fails to
//! open — altered, replayed, reordered, dropped, or cut short by end of
//! stream ([`ChannelError::Truncated`]) — is an error that ends the
//! session; there is no recovery or resynchronisation. End of stream
//! exactly between frames is a clean close, reported as
//! [`ChannelError::Closed`].
//!
//! ## Messages
//!
//! The sealed payloads are bincode-encoded [`message::Request`]s and
//! [`message::Reply`]s (conversation, bpf calls and files are described in
//! [`message`]); new variants are only ever appended, so the encodings of
//! the existing ones do not change. Guest files travel in replies of at
//! most [`message::FILE_CHUNK`] (128 KiB) bytes, one range per request
//! (`FileOp::ReadRange`), every range of one read from the same content;
//! a whole-file `FileOp::Read` of a larger file answers `EFBIG`.
//!
//! ## Who speaks it
//!
//! On the host, `telebpf-client` holds one session ([`channel::SyncChannel`]
//! over a [`transport`] stream); `telebpf-host` forwards a program's calls
//! over it (the preload is its `extern "C"` face, a supervisor may be
//! another); `telebpf-marshal` turns a `bpf()` call into a
//! [`message::BpfCall`] and a [`message::BpfResult`] back into the caller's
//! memory, on both ends; `ringbuf-mirror` frames and unframes ring records
//! ([`message::Reply::Records`]). In the guest, `telebpf-proxy` runs the
//! handshake asynchronously and then each session on a blocking
//! `SyncChannel` of its own. `docs/ARCHITECTURE.md` follows one call and
//! one record through every file.
//!
//! ## Versioning
//!
//! [`PROTOCOL_VERSION`] is 3. A version change covers anything after
//! `magic || version` in the first messages, the key schedule (whose info
//! strings carry `v1`: it has not changed since version 1) and the meaning
//! of the sealed payloads. There is no negotiation: both sides must speak
//! the same version.
//!
//! * Version 1: the first.
//! * Version 2: files travel in ranges (`FileOp::ReadRange`, at most
//!   `message::FILE_CHUNK` bytes a reply); `FileOp::Read` of a larger file
//!   answers `EFBIG`. A version-1 host side could not read BTF from a
//!   version-2 proxy, so the two refuse each other at the handshake with
//!   "proxy speaks protocol v2, we speak v1" instead. Appended within it:
//!   [`message::Request::Programs`] / [`message::Reply::Programs`], the
//!   guest's BPF programs in one request (`telebpf monitor`; a proxy that
//!   predated it could not decode it and ended the session).
//! * Version 3: the guest's cgroups and interfaces —
//!   [`message::Request::Cgroup`] / [`message::Reply::Cgroup`] (mount
//!   lines, opening, listing, `stat` and handles of cgroups),
//!   [`message::Request::Netlink`] / [`message::Reply::Netlink`] (a relayed
//!   `NETLINK_ROUTE` socket), [`message::Request::Interface`] /
//!   [`message::Reply::Interface`] (interface names and indexes) — and a
//!   ring stream's first frame, an empty [`message::Reply::Records`] once
//!   the proxy has mapped the ring, which the host's `mmap` waits for (see
//!   [`message::Request::Stream`]). Not appended within version 2, because
//!   a version-3 host side sends them for ordinary calls (any program that
//!   opens `/proc/mounts` asks for the guest's mount lines): a version-2
//!   proxy would end the session in the middle of a tool's work, and would
//!   make each ring's `mmap` wait for a frame it never sends. The two
//!   refuse each other at the handshake instead.

//! ## Errors
//!
//! [`ChannelError`] has one variant per failure and maps to an errno
//! ([`ChannelError::errno`]): authentication → `EACCES`, protocol violations
//! and version mismatch → `EPROTO`, a closed or broken connection → `EPIPE`,
//! timeouts → `ETIMEDOUT`; a peer that closes the connection during the
//! handshake refused it → `ECONNREFUSED`. [`TransportError`] and [`KeyError`] cover
//! connecting/listening and key files.

pub mod address;
pub mod channel;
pub mod echo;
pub mod error;
pub mod handshake;
pub mod key;
pub mod message;
pub mod paths;
pub mod seal;
pub mod transport;

pub use address::{Address, AddressError};
pub use channel::{
    AsyncChannel, ChannelParts, SyncChannel, SyncReceiver, SyncSender, SyncStream, TryCloneStream,
    HANDSHAKE_TIMEOUT,
};
pub use error::ChannelError;
pub use handshake::{
    ClientHandshake, ServerHandshake, ServerHelloStep, SessionKeys, MAGIC, MAX_HANDSHAKE_FRAME,
    PROTOCOL_VERSION,
};
pub use key::{KeyError, KeyId, Psk};
pub use seal::{frame_body_len, Opener, Sealer, MAX_FRAME, MAX_PLAINTEXT, TAG_LEN};
pub use transport::{
    connect, ClientStream, Listener, ServerStream, SyncServerStream, TransportError, VsockStream,
};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
