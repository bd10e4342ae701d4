//! Sealed framing after the handshake (sans-IO).
//!
//! A frame is `len: u32 LE || ciphertext || tag[16]` where `len` counts
//! ciphertext and tag. It is ChaCha20-Poly1305 with the direction's key, nonce
//! `[0, 0, 0, 0] || counter as u64 LE` (counter = number of earlier frames in
//! this direction, from 0) and the 4 length bytes as associated data.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::error::ChannelError;

/// Largest frame body (ciphertext + tag) a length prefix may announce.
pub const MAX_FRAME: usize = 64 << 20;
/// Length of the Poly1305 tag at the end of every sealed frame.
pub const TAG_LEN: usize = 16;
/// Largest plaintext [`Sealer::seal`] accepts.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;
/// Length of the little-endian length prefix of every frame.
pub const LEN_PREFIX: usize = 4;

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    // Unique: each direction has its own key and counts its frames.
    Nonce::assume_unique_for_key(n)
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte ChaCha20-Poly1305 key"),
    )
}

/// Checks a sealed frame's length prefix and returns the body length that
/// follows it, without allocating anything.
pub fn frame_body_len(len_prefix: [u8; 4]) -> Result<usize, ChannelError> {
    let len = u32::from_le_bytes(len_prefix) as usize;
    if len > MAX_FRAME {
        return Err(ChannelError::FrameTooLarge(len));
    }
    if len < TAG_LEN {
        return Err(ChannelError::FrameTooShort(len));
    }
    Ok(len)
}

/// Seals the frames of one direction.
pub struct Sealer {
    cipher: LessSafeKey,
    counter: u64,
}

/// Opens the frames of one direction, in order; fails for good after one bad frame.
pub struct Opener {
    cipher: LessSafeKey,
    counter: u64,
    broken: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("counter", &self.counter)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: cipher(key),
            counter: 0,
        }
    }

    /// Seals `plaintext` into a whole frame, length prefix included, and
    /// advances the counter.
    ///
    /// # Panics
    /// If `plaintext` is longer than [`MAX_PLAINTEXT`] (check first, or use
    /// [`Sealer::try_seal`]) or after 2^64 frames.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        match self.try_seal(plaintext) {
            Ok(frame) => frame,
            Err(e) => panic!("Sealer::seal: {e}"),
        }
    }

    /// Like [`Sealer::seal`] but reports an oversized plaintext as
    /// [`ChannelError::MessageTooLarge`] (the counter does not advance then).
    pub fn try_seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(ChannelError::MessageTooLarge(plaintext.len()));
        }
        let body_len = plaintext.len() + TAG_LEN;
        let prefix = (body_len as u32).to_le_bytes();
        let mut frame = Vec::with_capacity(LEN_PREFIX + body_len);
        frame.extend_from_slice(&prefix);
        frame.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                nonce(self.counter),
                Aad::from(prefix),
                &mut frame[LEN_PREFIX..],
            )
            .expect("ChaCha20-Poly1305 accepts any frame up to MAX_FRAME");
        frame.extend_from_slice(tag.as_ref());
        self.counter = self
            .counter
            .checked_add(1)
            .expect("2^64 frames in one direction");
        Ok(frame)
    }

    /// Number of frames sealed so far.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

impl Opener {
    /// An opener with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: cipher(key),
            counter: 0,
            broken: false,
        }
    }

    /// Opens the next frame: `frame_body` is everything after the 4-byte
    /// `len_prefix`. Any failure (including one of an earlier call) is an
    /// error; the session must then end.
    pub fn open(
        &mut self,
        frame_body: &[u8],
        len_prefix: [u8; 4],
    ) -> Result<Vec<u8>, ChannelError> {
        let mut buf = frame_body.to_vec();
        self.open_in_place(&mut buf, len_prefix)?;
        Ok(buf)
    }

    /// Like [`Opener::open`], decrypting in `buf` and truncating the tag off.
    pub fn open_in_place(
        &mut self,
        buf: &mut Vec<u8>,
        len_prefix: [u8; 4],
    ) -> Result<(), ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken);
        }
        self.broken = true;
        let expected = frame_body_len(len_prefix)?;
        if buf.len() != expected {
            return Err(ChannelError::LengthMismatch {
                expected,
                got: buf.len(),
            });
        }
        self.cipher
            .open_in_place(nonce(self.counter), Aad::from(len_prefix), buf)
            .map_err(|_| ChannelError::Open(self.counter))?;
        buf.truncate(expected - TAG_LEN);
        self.counter += 1;
        self.broken = false;
        Ok(())
    }

    /// Number of frames opened so far.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        (Sealer::new(&[7; 32]), Opener::new(&[7; 32]))
    }

    fn split(frame: &[u8]) -> ([u8; 4], &[u8]) {
        (frame[..4].try_into().unwrap(), &frame[4..])
    }

    #[test]
    fn seal_open() {
        let (mut s, mut o) = pair();
        for msg in [&b""[..], b"hello", &[0u8; 100_000][..]] {
            let f = s.seal(msg);
            assert_eq!(f.len(), 4 + msg.len() + 16);
            assert_eq!(
                u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
                msg.len() + 16
            );
            let (p, b) = split(&f);
            assert_eq!(o.open(b, p).unwrap(), msg);
        }
        assert_eq!(s.counter(), 3);
        assert_eq!(o.counter(), 3);
    }

    #[test]
    fn known_answer_layout() {
        // Nonce layout: counter 1 must differ from counter 0 for the same plaintext.
        let mut s = Sealer::new(&[0; 32]);
        let a = s.seal(b"x");
        let b = s.seal(b"x");
        assert_ne!(a, b);
        // Decrypt frame #1 by hand with nonce 0000 || 1u64 LE.
        // With RustCrypto's independent implementation: the wire format is
        // plain ChaCha20-Poly1305 (RFC 8439), whichever library seals it.
        use chacha20poly1305::aead::{Aead, KeyInit};
        use chacha20poly1305::{ChaCha20Poly1305, Nonce};
        let c = ChaCha20Poly1305::new(&chacha20poly1305::Key::from([0; 32]));
        let mut n = [0u8; 12];
        n[4] = 1;
        let pt = c
            .decrypt(
                &Nonce::from(n),
                chacha20poly1305::aead::Payload {
                    msg: &b[4..],
                    aad: &b[..4],
                },
            )
            .unwrap();
        assert_eq!(pt, b"x");
    }

    #[test]
    fn tamper_fails_and_breaks() {
        let (mut s, mut o) = pair();
        let mut f = s.seal(b"important");
        f[6] ^= 1;
        let (p, b) = split(&f);
        assert!(matches!(o.open(b, p), Err(ChannelError::Open(0))));
        let g = s.seal(b"next");
        let (p, b) = split(&g);
        assert!(matches!(o.open(b, p), Err(ChannelError::Broken)));
    }

    #[test]
    fn tag_and_prefix_tamper() {
        let (mut s, _) = pair();
        let f = s.seal(b"abc");
        let mut t = f.clone();
        *t.last_mut().unwrap() ^= 0x80;
        let (p, b) = split(&t);
        assert!(Opener::new(&[7; 32]).open(b, p).is_err());
        // A different prefix with a body of matching length: AAD mismatch.
        let (_, b) = split(&f);
        let mut longer = b.to_vec();
        longer.push(0);
        let p = (longer.len() as u32).to_le_bytes();
        assert!(Opener::new(&[7; 32]).open(&longer, p).is_err());
        // Prefix disagreeing with body length.
        let (_, b) = split(&f);
        assert!(matches!(
            Opener::new(&[7; 32]).open(b, [40, 0, 0, 0]),
            Err(ChannelError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn replay_and_reorder_fail() {
        let (mut s, mut o) = pair();
        let f0 = s.seal(b"zero");
        let f1 = s.seal(b"one");
        let (p, b) = split(&f0);
        o.open(b, p).unwrap();
        let (p, b) = split(&f0);
        assert!(o.open(b, p).is_err(), "replay");

        let (mut s, mut o) = pair();
        let _f0 = s.seal(b"zero");
        let f1b = s.seal(b"one");
        let (p, b) = split(&f1b);
        assert!(o.open(b, p).is_err(), "reorder");
        let _ = f1;
    }

    #[test]
    fn wrong_key_fails() {
        let mut s = Sealer::new(&[1; 32]);
        let mut o = Opener::new(&[2; 32]);
        let f = s.seal(b"x");
        let (p, b) = split(&f);
        assert!(o.open(b, p).is_err());
    }

    #[test]
    fn length_checks() {
        assert!(matches!(
            frame_body_len(((MAX_FRAME + 1) as u32).to_le_bytes()),
            Err(ChannelError::FrameTooLarge(_))
        ));
        assert!(matches!(
            frame_body_len(u32::MAX.to_le_bytes()),
            Err(ChannelError::FrameTooLarge(_))
        ));
        assert_eq!(
            frame_body_len((MAX_FRAME as u32).to_le_bytes()).unwrap(),
            MAX_FRAME
        );
        assert!(matches!(
            frame_body_len(15u32.to_le_bytes()),
            Err(ChannelError::FrameTooShort(15))
        ));
        let mut s = Sealer::new(&[0; 32]);
        assert!(matches!(
            s.try_seal(&vec![0; MAX_PLAINTEXT + 1]),
            Err(ChannelError::MessageTooLarge(_))
        ));
        assert_eq!(s.counter(), 0);
    }
}

#[cfg(test)]
mod throughput {
    use super::*;

    #[test]
    #[ignore = "prints a figure; run by hand"]
    fn seal_one_megabyte() {
        let mut s = Sealer::new(&[7u8; 32]);
        let data = vec![0x5au8; 1 << 20];
        let mut best = std::time::Duration::MAX;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            let f = s.seal(&data);
            best = best.min(t.elapsed());
            assert_eq!(f.len(), data.len() + 20);
        }
        eprintln!(
            "seal 1 MiB: {best:?} ({:.0} MB/s)",
            1.048576 / best.as_secs_f64()
        );
    }
}
