//! The mutual-authentication handshake as sans-IO state machines.
//!
//! See the crate documentation for the wire format. The caller moves bytes:
//! every output here is a whole clear-text handshake frame (length prefix
//! included); every input is a frame *body* (the caller read the 4-byte
//! prefix, checked it with [`handshake_body_len`], then read that many bytes).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ChannelError;
use crate::key::{KeyId, Psk, KEY_ID_LEN};
use crate::seal::{Opener, Sealer};

/// Magic at the start of each side's first handshake message.
pub const MAGIC: [u8; 8] = *b"TELEBPF\0";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 3;
/// Length of each side's random nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;
/// Largest handshake frame body a length prefix may announce (in any version).
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// `ServerHello` status byte: key found, nonce and proof follow.
pub const STATUS_OK: u8 = 0;
/// `ServerHello` status byte: no key with the client's key id; nothing follows.
pub const STATUS_UNKNOWN_KEY: u8 = 1;

const HEADER_LEN: usize = MAGIC.len() + 2;
/// Length of a v1 `ClientHello` body: magic, version, nonce, key id.
pub const CLIENT_HELLO_LEN: usize = HEADER_LEN + NONCE_LEN + KEY_ID_LEN;
/// Length of a v1 `ServerHello` body with [`STATUS_OK`]: magic, version, status, nonce, proof.
pub const SERVER_HELLO_LEN: usize = HEADER_LEN + 1 + NONCE_LEN + PROOF_LEN;

const SERVER_LABEL: &[u8] = b"telebpf server";
const CLIENT_LABEL: &[u8] = b"telebpf client";
const C2S_INFO: &[u8] = b"telebpf c2s v1";
const S2C_INFO: &[u8] = b"telebpf s2c v1";

/// Wraps a handshake message body in its clear-text frame (`u32 LE` length prefix).
pub fn handshake_frame(body: &[u8]) -> Vec<u8> {
    debug_assert!(body.len() <= MAX_HANDSHAKE_FRAME);
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// Checks a handshake frame's length prefix and returns the body length.
pub fn handshake_body_len(len_prefix: [u8; 4]) -> Result<usize, ChannelError> {
    let len = u32::from_le_bytes(len_prefix) as usize;
    if len > MAX_HANDSHAKE_FRAME {
        return Err(ChannelError::HandshakeTooLarge(len));
    }
    Ok(len)
}

/// The two directions' ciphers of an established session, from this side's view.
#[derive(Debug)]
pub struct SessionKeys {
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what this side receives.
    pub opener: Opener,
}

fn random_nonce() -> Result<[u8; NONCE_LEN], ChannelError> {
    let mut n = [0; NONCE_LEN];
    getrandom::fill(&mut n).map_err(ChannelError::Random)?;
    Ok(n)
}

fn proof_mac(psk: &Psk, label: &[u8], cn: &[u8; NONCE_LEN], sn: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(psk.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(label);
    mac.update(cn);
    mac.update(sn);
    mac
}

fn proof(psk: &Psk, label: &[u8], cn: &[u8; NONCE_LEN], sn: &[u8; NONCE_LEN]) -> [u8; PROOF_LEN] {
    proof_mac(psk, label, cn, sn).finalize().into_bytes().into()
}

/// Constant-time check of a received proof.
fn proof_ok(
    psk: &Psk,
    label: &[u8],
    cn: &[u8; NONCE_LEN],
    sn: &[u8; NONCE_LEN],
    got: &[u8],
) -> bool {
    proof_mac(psk, label, cn, sn).verify_slice(got).is_ok()
}

/// `(c2s, s2c)` keys: HKDF-SHA256(ikm = psk, salt = cn || sn).
fn derive(
    psk: &Psk,
    cn: &[u8; NONCE_LEN],
    sn: &[u8; NONCE_LEN],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(cn);
    salt[NONCE_LEN..].copy_from_slice(sn);
    let hk = Hkdf::<Sha256>::new(Some(&salt), psk.as_bytes());
    let mut c2s = Zeroizing::new([0u8; 32]);
    let mut s2c = Zeroizing::new([0u8; 32]);
    hk.expand(C2S_INFO, &mut *c2s)
        .expect("32 bytes is a valid HKDF length");
    hk.expand(S2C_INFO, &mut *s2c)
        .expect("32 bytes is a valid HKDF length");
    (c2s, s2c)
}

fn header(version: u16) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..].copy_from_slice(&version.to_le_bytes());
    h
}

/// Reads magic and version off a first message.
fn parse_header(body: &[u8], what: &'static str) -> Result<u16, ChannelError> {
    if body.len() < MAGIC.len() || body[..MAGIC.len()] != MAGIC {
        return Err(ChannelError::BadMagic);
    }
    let v = body
        .get(MAGIC.len()..HEADER_LEN)
        .ok_or(ChannelError::Malformed(what))?;
    Ok(u16::from_le_bytes([v[0], v[1]]))
}

/// The client's side, after sending `ClientHello` and before the `ServerHello`.
#[derive(Debug)]
pub struct ClientHandshake {
    psk: Psk,
    cn: [u8; NONCE_LEN],
}

impl ClientHandshake {
    /// Step 1: returns the state and the `ClientHello` frame to send.
    pub fn start(psk: &Psk) -> Result<(ClientHandshake, Vec<u8>), ChannelError> {
        Ok(Self::start_with(psk, random_nonce()?, psk.key_id()))
    }

    pub(crate) fn start_with(
        psk: &Psk,
        cn: [u8; NONCE_LEN],
        key_id: KeyId,
    ) -> (ClientHandshake, Vec<u8>) {
        let mut body = Vec::with_capacity(CLIENT_HELLO_LEN);
        body.extend_from_slice(&header(PROTOCOL_VERSION));
        body.extend_from_slice(&cn);
        body.extend_from_slice(&key_id);
        (
            ClientHandshake {
                psk: psk.clone(),
                cn,
            },
            handshake_frame(&body),
        )
    }

    /// Step 3: checks the server's first message (body) and returns the
    /// `ClientProof` frame to send plus the session keys. After sending the
    /// proof the client may send sealed frames at once.
    pub fn finish(self, server_msg: &[u8]) -> Result<(Vec<u8>, SessionKeys), ChannelError> {
        let version = parse_header(server_msg, "server hello (too short)")?;
        if version != PROTOCOL_VERSION {
            return Err(ChannelError::ProxyVersion {
                proxy: version,
                ours: PROTOCOL_VERSION,
            });
        }
        match server_msg.get(HEADER_LEN) {
            Some(&STATUS_UNKNOWN_KEY) if server_msg.len() == HEADER_LEN + 1 => {
                return Err(ChannelError::ProxyUnknownKey)
            }
            Some(&STATUS_OK) if server_msg.len() == SERVER_HELLO_LEN => {}
            _ => return Err(ChannelError::Malformed("server hello")),
        }
        let rest = &server_msg[HEADER_LEN + 1..];
        let sn: [u8; NONCE_LEN] = rest[..NONCE_LEN].try_into().expect("length checked");
        if !proof_ok(&self.psk, SERVER_LABEL, &self.cn, &sn, &rest[NONCE_LEN..]) {
            return Err(ChannelError::ServerProof);
        }
        let client_proof = proof(&self.psk, CLIENT_LABEL, &self.cn, &sn);
        let (c2s, s2c) = derive(&self.psk, &self.cn, &sn);
        Ok((
            handshake_frame(&client_proof),
            SessionKeys {
                sealer: Sealer::new(&c2s),
                opener: Opener::new(&s2c),
            },
        ))
    }
}

/// What the server does after reading a `ClientHello`.
#[derive(Debug)]
pub enum ServerHelloStep {
    /// Send `reply` (the `ServerHello`), read the client's proof, pass it to
    /// [`ServerHandshake::finish`].
    Continue {
        /// The `ServerHello` frame.
        reply: Vec<u8>,
        /// State awaiting the client's proof.
        handshake: ServerHandshake,
    },
    /// Send `reply` (a version-mismatch or unknown-key notice), then close;
    /// `error` says why.
    Refuse {
        /// The notice frame.
        reply: Vec<u8>,
        /// The reason, to log.
        error: ChannelError,
    },
}

/// The server's side, after sending `ServerHello` and before the `ClientProof`.
#[derive(Debug)]
pub struct ServerHandshake {
    psk: Psk,
    index: usize,
    cn: [u8; NONCE_LEN],
    sn: [u8; NONCE_LEN],
}

impl ServerHandshake {
    /// Step 2: answers the client's first message (body). `keys` are all keys
    /// this server accepts; the client's key id picks one. An `Err` means the
    /// message was not a telebpf hello at all: close without answering.
    pub fn respond(keys: &[Psk], client_hello: &[u8]) -> Result<ServerHelloStep, ChannelError> {
        Self::respond_with(keys, client_hello, random_nonce()?)
    }

    pub(crate) fn respond_with(
        keys: &[Psk],
        client_hello: &[u8],
        sn: [u8; NONCE_LEN],
    ) -> Result<ServerHelloStep, ChannelError> {
        let version = parse_header(client_hello, "client hello (too short)")?;
        if version != PROTOCOL_VERSION {
            return Ok(ServerHelloStep::Refuse {
                reply: handshake_frame(&header(PROTOCOL_VERSION)),
                error: ChannelError::ClientVersion {
                    client: version,
                    ours: PROTOCOL_VERSION,
                },
            });
        }
        if client_hello.len() != CLIENT_HELLO_LEN {
            return Err(ChannelError::Malformed("client hello"));
        }
        let cn: [u8; NONCE_LEN] = client_hello[HEADER_LEN..HEADER_LEN + NONCE_LEN]
            .try_into()
            .expect("length checked");
        let key_id: KeyId = client_hello[HEADER_LEN + NONCE_LEN..]
            .try_into()
            .expect("length checked");
        let Some(index) = keys.iter().position(|k| k.key_id() == key_id) else {
            let mut reply = header(PROTOCOL_VERSION).to_vec();
            reply.push(STATUS_UNKNOWN_KEY);
            return Ok(ServerHelloStep::Refuse {
                reply: handshake_frame(&reply),
                error: ChannelError::UnknownKeyId {
                    key_id,
                    known: keys.len(),
                },
            });
        };
        let psk = keys[index].clone();
        let mut body = Vec::with_capacity(SERVER_HELLO_LEN);
        body.extend_from_slice(&header(PROTOCOL_VERSION));
        body.push(STATUS_OK);
        body.extend_from_slice(&sn);
        body.extend_from_slice(&proof(&psk, SERVER_LABEL, &cn, &sn));
        Ok(ServerHelloStep::Continue {
            reply: handshake_frame(&body),
            handshake: ServerHandshake { psk, index, cn, sn },
        })
    }

    /// Step 3: checks the `ClientProof` (body); on success returns the session
    /// keys and the index into `keys` of the client's key.
    pub fn finish(self, client_proof: &[u8]) -> Result<(SessionKeys, usize), ChannelError> {
        if client_proof.len() != PROOF_LEN {
            return Err(ChannelError::Malformed("client proof"));
        }
        if !proof_ok(&self.psk, CLIENT_LABEL, &self.cn, &self.sn, client_proof) {
            return Err(ChannelError::ClientProof(self.index));
        }
        let (c2s, s2c) = derive(&self.psk, &self.cn, &self.sn);
        Ok((
            SessionKeys {
                sealer: Sealer::new(&s2c),
                opener: Opener::new(&c2s),
            },
            self.index,
        ))
    }

    /// Index into the server's keys of the key the client named.
    pub fn key_index(&self) -> usize {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        let n = handshake_body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(frame.len(), 4 + n);
        &frame[4..]
    }

    fn run(
        client_key: &Psk,
        keys: &[Psk],
    ) -> Result<(SessionKeys, SessionKeys, usize), ChannelError> {
        let (c, hello) = ClientHandshake::start(client_key)?;
        assert_eq!(hello.len(), 4 + CLIENT_HELLO_LEN);
        let s = match ServerHandshake::respond(keys, body(&hello))? {
            ServerHelloStep::Continue { reply, handshake } => {
                let (proof, ck) = c.finish(body(&reply))?;
                let (sk, idx) = handshake.finish(body(&proof))?;
                return Ok((ck, sk, idx));
            }
            ServerHelloStep::Refuse { reply, error } => (reply, error),
        };
        // The client must learn why.
        Err(c.finish(body(&s.0)).err().unwrap_or(s.1))
    }

    #[test]
    fn success_and_keys_match() {
        let k = Psk::generate().unwrap();
        let (mut ck, mut sk, idx) = run(&k, std::slice::from_ref(&k)).unwrap();
        assert_eq!(idx, 0);
        let f = ck.sealer.seal(b"to server");
        assert_eq!(
            sk.opener.open(&f[4..], f[..4].try_into().unwrap()).unwrap(),
            b"to server"
        );
        let f = sk.sealer.seal(b"to client");
        assert_eq!(
            ck.opener.open(&f[4..], f[..4].try_into().unwrap()).unwrap(),
            b"to client"
        );
        // Directions use different keys: a client frame does not open as a server frame.
        let f = ck.sealer.seal(b"x");
        assert!(ck.opener.open(&f[4..], f[..4].try_into().unwrap()).is_err());
    }

    #[test]
    fn picks_key_by_id() {
        let keys: Vec<Psk> = (0..4).map(|_| Psk::generate().unwrap()).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(run(k, &keys).unwrap().2, i);
        }
    }

    #[test]
    fn unknown_key_reported_to_client() {
        let keys = [Psk::generate().unwrap()];
        let other = Psk::generate().unwrap();
        let (c, hello) = ClientHandshake::start(&other).unwrap();
        match ServerHandshake::respond(&keys, body(&hello)).unwrap() {
            ServerHelloStep::Refuse { reply, error } => {
                assert!(matches!(error, ChannelError::UnknownKeyId { known: 1, .. }));
                let e = c.finish(body(&reply)).err().unwrap();
                assert!(matches!(e, ChannelError::ProxyUnknownKey), "{e}");
                assert_eq!(e.errno(), libc::EACCES);
            }
            ServerHelloStep::Continue { .. } => panic!("unknown key accepted"),
        }
    }

    #[test]
    fn forged_key_id_fails_both_proofs() {
        // A client claiming the id of a key it does not hold.
        let real = Psk::generate().unwrap();
        let fake = Psk::generate().unwrap();
        let (c, hello) = ClientHandshake::start_with(&fake, [9; 32], real.key_id());
        let ServerHelloStep::Continue { reply, handshake } =
            ServerHandshake::respond(std::slice::from_ref(&real), body(&hello)).unwrap()
        else {
            panic!()
        };
        // The client cannot verify the server's proof.
        assert!(matches!(
            c.finish(body(&reply)),
            Err(ChannelError::ServerProof)
        ));
        // And a proof computed with the wrong key is refused by the server.
        let sn: [u8; 32] = body(&reply)[11..43].try_into().unwrap();
        let bad = proof(&fake, CLIENT_LABEL, &[9; 32], &sn);
        assert!(matches!(
            handshake.finish(&bad),
            Err(ChannelError::ClientProof(0))
        ));
    }

    #[test]
    fn reflected_server_proof_refused() {
        let k = Psk::generate().unwrap();
        let (_c, hello) = ClientHandshake::start(&k).unwrap();
        let ServerHelloStep::Continue { reply, handshake } =
            ServerHandshake::respond(std::slice::from_ref(&k), body(&hello)).unwrap()
        else {
            panic!()
        };
        let server_proof = &body(&reply)[43..];
        assert!(matches!(
            handshake.finish(server_proof),
            Err(ChannelError::ClientProof(0))
        ));
    }

    #[test]
    fn version_mismatch_both_ways() {
        let k = Psk::generate().unwrap();
        // Client of a future version talks to us.
        let mut hello = header(PROTOCOL_VERSION + 1).to_vec();
        hello.extend_from_slice(b"whatever v4 sends");
        match ServerHandshake::respond(std::slice::from_ref(&k), &hello).unwrap() {
            ServerHelloStep::Refuse { reply, error } => {
                assert_eq!(error.to_string(), "client speaks protocol v4, we speak v3");
                assert_eq!(body(&reply), &header(PROTOCOL_VERSION)[..]);
            }
            ServerHelloStep::Continue { .. } => panic!(),
        }
        // We talk to a server of a future version, which answers its mismatch notice.
        let (c, _) = ClientHandshake::start(&k).unwrap();
        let e = c.finish(&header(7)).err().unwrap();
        assert_eq!(e.to_string(), "proxy speaks protocol v7, we speak v3");
        assert_eq!(e.errno(), libc::EPROTO);
    }

    #[test]
    fn garbage_refused() {
        let k = [Psk::generate().unwrap()];
        assert!(matches!(
            ServerHandshake::respond(&k, b"GET / HTTP/1.1\r\n"),
            Err(ChannelError::BadMagic)
        ));
        assert!(matches!(
            ServerHandshake::respond(&k, b""),
            Err(ChannelError::BadMagic)
        ));
        assert!(matches!(
            ServerHandshake::respond(&k, &MAGIC),
            Err(ChannelError::Malformed(_))
        ));
        let mut short = header(PROTOCOL_VERSION).to_vec();
        short.push(0);
        assert!(matches!(
            ServerHandshake::respond(&k, &short),
            Err(ChannelError::Malformed(_))
        ));
        let (c, _) = ClientHandshake::start(&k[0]).unwrap();
        assert!(matches!(
            c.finish(b"SSH-2.0-x"),
            Err(ChannelError::BadMagic)
        ));
        assert!(matches!(
            handshake_body_len(((MAX_HANDSHAKE_FRAME + 1) as u32).to_le_bytes()),
            Err(ChannelError::HandshakeTooLarge(_))
        ));
    }

    #[test]
    fn wire_layout() {
        let k = Psk::from_bytes([3; 32]);
        let (_c, hello) = ClientHandshake::start_with(&k, [5; 32], k.key_id());
        assert_eq!(&hello[..4], &50u32.to_le_bytes());
        assert_eq!(&hello[4..12], b"TELEBPF\0");
        assert_eq!(&hello[12..14], &[3, 0]);
        assert_eq!(&hello[14..46], &[5; 32]);
        assert_eq!(&hello[46..54], &k.key_id());
        let ServerHelloStep::Continue { reply, .. } =
            ServerHandshake::respond_with(std::slice::from_ref(&k), &hello[4..], [6; 32]).unwrap()
        else {
            panic!()
        };
        assert_eq!(&reply[..4], &75u32.to_le_bytes());
        assert_eq!(&reply[4..14], &header(3));
        assert_eq!(reply[14], STATUS_OK);
        assert_eq!(&reply[15..47], &[6; 32]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[3; 32]).unwrap();
        mac.update(b"telebpf server");
        mac.update(&[5; 32]);
        mac.update(&[6; 32]);
        assert_eq!(&reply[47..], &mac.finalize().into_bytes()[..]);
    }
}
