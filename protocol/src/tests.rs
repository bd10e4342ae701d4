//! Channel tests over `UnixStream::pair()`: blocking client thread, tokio
//! server handshake, then the server's session on a blocking
//! [`SyncChannel`] as the proxy runs it ([`proxy_session`]).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use crate::handshake::{handshake_body_len, SessionKeys};
use crate::*;

fn pair() -> (UnixStream, tokio::net::UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    (a, tokio::net::UnixStream::from_std(b).unwrap())
}

fn read_hs(s: &mut UnixStream) -> Vec<u8> {
    let mut p = [0u8; 4];
    s.read_exact(&mut p).unwrap();
    let mut b = vec![0u8; handshake_body_len(p).unwrap()];
    s.read_exact(&mut b).unwrap();
    b
}

/// Client handshake done by hand over a blocking stream.
fn raw_client(s: &mut UnixStream, psk: &Psk) -> SessionKeys {
    let (hs, hello) = ClientHandshake::start(psk).unwrap();
    s.write_all(&hello).unwrap();
    let (proof, keys) = hs.finish(&read_hs(s)).unwrap();
    s.write_all(&proof).unwrap();
    keys
}

/// Server handshake done by hand over a blocking stream.
fn raw_server(s: &mut UnixStream, keys: &[Psk]) -> SessionKeys {
    let hello = read_hs(s);
    let ServerHelloStep::Continue { reply, handshake } =
        ServerHandshake::respond(keys, &hello).unwrap()
    else {
        panic!("refused")
    };
    s.write_all(&reply).unwrap();
    handshake.finish(&read_hs(s)).unwrap().0
}

/// The tokio stream of a finished async handshake, back in blocking mode.
fn blocking_std(s: tokio::net::UnixStream) -> UnixStream {
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// What the proxy does after its async handshake: take the channel apart
/// and serve the session on a blocking [`SyncChannel`].
fn proxy_session(ch: AsyncChannel<tokio::net::UnixStream>) -> SyncChannel<UnixStream> {
    let parts = ch.into_parts().unwrap();
    SyncChannel::from_parts(
        blocking_std(parts.stream),
        parts.sealer,
        parts.opener,
        &parts.buffered,
    )
}

#[tokio::test]
async fn handshake_and_exchange() {
    let k = Psk::generate().unwrap();
    let (a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let mut ch = SyncChannel::client(a, &ck).unwrap();
        ch.send(b"ping").unwrap();
        assert_eq!(ch.recv().unwrap(), b"pong");
        ch.set_spin(Duration::from_millis(2));
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        ch.send(&big).unwrap();
        assert_eq!(ch.recv().unwrap(), big);
        ch.send(b"").unwrap();
        assert_eq!(ch.recv().unwrap(), b"");
        // Server closes after its last frame.
        assert!(matches!(ch.recv(), Err(ChannelError::Closed)));
        assert!(matches!(ch.recv(), Err(ChannelError::Broken)));
    });
    let (ch, idx) = AsyncChannel::server(b, std::slice::from_ref(&k))
        .await
        .unwrap();
    assert_eq!(idx, 0);
    let mut ch = proxy_session(ch);
    assert_eq!(ch.recv().unwrap(), b"ping");
    ch.send(b"pong").unwrap();
    let big = ch.recv().unwrap();
    assert_eq!(big.len(), 300_000);
    ch.send(&big).unwrap();
    assert_eq!(ch.recv().unwrap(), b"");
    ch.send(b"").unwrap();
    drop(ch);
    client.join().unwrap();
}

#[tokio::test]
async fn clean_eof_is_closed() {
    let k = Psk::generate().unwrap();
    let (a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let mut ch = SyncChannel::client(a, &ck).unwrap();
        ch.send(b"bye").unwrap();
    });
    let (ch, _) = AsyncChannel::server(b, &[k]).await.unwrap();
    let mut ch = proxy_session(ch);
    assert_eq!(ch.recv().unwrap(), b"bye");
    assert!(matches!(ch.recv(), Err(ChannelError::Closed)));
    client.join().unwrap();
}

#[tokio::test]
async fn wrong_key_refused_on_both_sides() {
    let (a, b) = pair();
    let client = thread::spawn(move || {
        let e = SyncChannel::client(a, &Psk::generate().unwrap())
            .err()
            .unwrap();
        assert!(matches!(e, ChannelError::ProxyUnknownKey), "{e}");
        assert_eq!(
            e.to_string(),
            "authentication failed: the proxy does not know this key"
        );
        assert_eq!(e.errno(), libc::EACCES);
        assert!(e.is_auth());
    });
    let keys = [Psk::generate().unwrap(), Psk::generate().unwrap()];
    let e = AsyncChannel::server(b, &keys).await.err().unwrap();
    assert!(
        matches!(e, ChannelError::UnknownKeyId { known: 2, .. }),
        "{e}"
    );
    assert!(e.is_auth());
    client.join().unwrap();
}

#[tokio::test]
async fn forged_key_id_refused_by_client() {
    // A server that answers with a proof made with another key (impostor).
    let real = Psk::generate().unwrap();
    let (a, b) = pair();
    let cr = real.clone();
    let client = thread::spawn(move || SyncChannel::client(a, &cr).err().unwrap());
    let mut b = b.into_std().unwrap();
    b.set_nonblocking(false).unwrap();
    let hello = read_hs(&mut b);
    assert_eq!(&hello[42..50], real.key_id());
    let mut reply = b"TELEBPF\0\x03\x00\x00".to_vec();
    reply.extend_from_slice(&[7; 32]);
    reply.extend_from_slice(&[0x55; 32]); // not a valid proof
    b.write_all(&handshake::handshake_frame(&reply)).unwrap();
    let e = client.join().unwrap();
    assert!(matches!(e, ChannelError::ServerProof), "{e}");
    assert_eq!(e.errno(), libc::EACCES);
    // The client sent nothing after the hello.
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn bad_client_proof_refused_by_server() {
    let k = Psk::generate().unwrap();
    let (mut a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let (hs, hello) = ClientHandshake::start(&ck).unwrap();
        a.write_all(&hello).unwrap();
        let _ = read_hs(&mut a);
        drop(hs);
        a.write_all(&handshake::handshake_frame(&[0xaa; 32]))
            .unwrap();
        // Then a request, which the server must never decode. The server
        // may already have closed the connection after the bad proof, so
        // these writes may fail with EPIPE, and the read with ECONNRESET:
        // both are the refusal this test expects.
        let _ = a.write_all(&[20, 0, 0, 0]);
        let _ = a.write_all(&[0; 20]);
        let mut rest = Vec::new();
        match a.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        rest
    });
    let e = AsyncChannel::server(b, &[k]).await.err().unwrap();
    assert!(matches!(e, ChannelError::ClientProof(0)), "{e}");
    assert!(
        client.join().unwrap().is_empty(),
        "server said nothing after the failed proof"
    );
}

#[tokio::test]
async fn key_id_picks_index() {
    let keys: Vec<Psk> = (0..3).map(|_| Psk::generate().unwrap()).collect();
    for i in [2, 0, 1] {
        let (a, b) = pair();
        let ck = keys[i].clone();
        let client = thread::spawn(move || {
            let mut ch = SyncChannel::client(a, &ck).unwrap();
            ch.send(b"x").unwrap();
            ch.recv().unwrap()
        });
        let (ch, idx) = AsyncChannel::server(b, &keys).await.unwrap();
        assert_eq!(idx, i);
        let mut ch = proxy_session(ch);
        assert_eq!(ch.recv().unwrap(), b"x");
        ch.send(&[i as u8]).unwrap();
        assert_eq!(client.join().unwrap(), [i as u8]);
    }
}

#[tokio::test]
async fn version_mismatch_reported() {
    // An old/new client talks to us: it receives our version and we log its version.
    let (mut a, b) = pair();
    let client = thread::spawn(move || {
        let mut hello = b"TELEBPF\0".to_vec();
        hello.extend_from_slice(&4u16.to_le_bytes());
        hello.extend_from_slice(&[0; 60]);
        a.write_all(&handshake::handshake_frame(&hello)).unwrap();
        let reply = read_hs(&mut a);
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        (reply, rest)
    });
    let e = AsyncChannel::server(b, &[Psk::generate().unwrap()])
        .await
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "client speaks protocol v4, we speak v3");
    let (reply, rest) = client.join().unwrap();
    assert_eq!(reply, b"TELEBPF\0\x03\x00");
    assert!(rest.is_empty(), "server closed after the notice");

    // We talk to a proxy of another version.
    let (a, b) = pair();
    let client = thread::spawn(move || {
        SyncChannel::client(a, &Psk::generate().unwrap())
            .err()
            .unwrap()
    });
    let mut b = b.into_std().unwrap();
    b.set_nonblocking(false).unwrap();
    let _ = read_hs(&mut b);
    b.write_all(&handshake::handshake_frame(b"TELEBPF\0\x04\x00"))
        .unwrap();
    let e = client.join().unwrap();
    assert_eq!(e.to_string(), "proxy speaks protocol v4, we speak v3");
    assert_eq!(e.errno(), libc::EPROTO);
}

#[tokio::test]
async fn not_telebpf_refused() {
    let (mut a, b) = pair();
    let client = thread::spawn(move || {
        a.write_all(b"\x10\x00\x00\x00GET / HTTP/1.1\r\n").unwrap();
    });
    let e = AsyncChannel::server(b, &[Psk::generate().unwrap()])
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ChannelError::BadMagic), "{e}");
    client.join().unwrap();

    let (mut a, b) = pair();
    let client = thread::spawn(move || {
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
    });
    let e = AsyncChannel::server(b, &[Psk::generate().unwrap()])
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ChannelError::HandshakeTooLarge(_)), "{e}");
    client.join().unwrap();
}

#[tokio::test]
async fn server_handshake_timeout() {
    let (a, b) = pair();
    let t = Duration::from_millis(150);
    let e = AsyncChannel::server_with_timeout(b, &[Psk::generate().unwrap()], t)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ChannelError::HandshakeTimeout(_)), "{e}");
    assert_eq!(e.errno(), libc::ETIMEDOUT);
    drop(a);
}

#[test]
fn client_handshake_timeout_and_eof() {
    let (a, b) = UnixStream::pair().unwrap();
    let start = std::time::Instant::now();
    let e =
        SyncChannel::client_with_timeout(a, &Psk::generate().unwrap(), Duration::from_millis(150))
            .err()
            .unwrap();
    assert!(matches!(e, ChannelError::HandshakeTimeout(_)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(b);

    let (a, b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut b = b;
        let _ = read_hs(&mut b);
    });
    let e = SyncChannel::client(a, &Psk::generate().unwrap())
        .err()
        .unwrap();
    assert!(matches!(e, ChannelError::HandshakeEof), "{e}");
    t.join().unwrap();
}

/// Sets up a `SyncChannel` client against a hand-driven server; returns the
/// client, the server's raw stream and keys.
fn sync_client_raw_server() -> (SyncChannel<UnixStream>, UnixStream, SessionKeys) {
    let k = Psk::generate().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let sk = k.clone();
    let server = thread::spawn(move || {
        let keys = raw_server(&mut b, std::slice::from_ref(&sk));
        (b, keys)
    });
    let ch = SyncChannel::client(a, &k).unwrap();
    let (b, keys) = server.join().unwrap();
    (ch, b, keys)
}

#[test]
fn client_rejects_tampered_frame() {
    let (mut ch, mut b, mut keys) = sync_client_raw_server();
    let mut f = keys.sealer.seal(b"reply");
    f[5] ^= 0x01; // a ciphertext bit
    b.write_all(&f).unwrap();
    let e = ch.recv().unwrap_err();
    assert!(matches!(e, ChannelError::Open(0)), "{e}");
    assert_eq!(e.errno(), libc::EPROTO);
    b.write_all(&keys.sealer.seal(b"later")).unwrap();
    assert!(matches!(ch.recv(), Err(ChannelError::Broken)));
    assert!(matches!(ch.send(b"x"), Err(ChannelError::Broken)));
}

#[test]
fn client_rejects_replay() {
    let (mut ch, mut b, mut keys) = sync_client_raw_server();
    let f0 = keys.sealer.seal(b"zero");
    b.write_all(&f0).unwrap();
    b.write_all(&f0).unwrap();
    assert_eq!(ch.recv().unwrap(), b"zero");
    assert!(matches!(ch.recv(), Err(ChannelError::Open(1))));
}

#[test]
fn client_rejects_reorder() {
    let (mut ch, mut b, mut keys) = sync_client_raw_server();
    let f0 = keys.sealer.seal(b"zero");
    let f1 = keys.sealer.seal(b"one");
    b.write_all(&f1).unwrap();
    b.write_all(&f0).unwrap();
    assert!(matches!(ch.recv(), Err(ChannelError::Open(0))));
}

#[test]
fn client_rejects_truncated_frame() {
    let (mut ch, mut b, mut keys) = sync_client_raw_server();
    let f = keys.sealer.seal(&[1; 100]);
    b.write_all(&f[..50]).unwrap();
    drop(b);
    let e = ch.recv().unwrap_err();
    assert!(
        matches!(
            e,
            ChannelError::Truncated {
                expected: 120,
                got: 50
            }
        ),
        "{e}"
    );
    assert_eq!(e.errno(), libc::EPIPE);
}

#[test]
fn client_rejects_oversized_prefix() {
    let (mut ch, mut b, _keys) = sync_client_raw_server();
    b.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let e = ch.recv().unwrap_err();
    assert!(
        matches!(e, ChannelError::FrameTooLarge(n) if n == u32::MAX as usize),
        "{e}"
    );
}

#[test]
fn client_refuses_oversized_message() {
    let (mut ch, _b, _keys) = sync_client_raw_server();
    let e = ch.send(&vec![0; MAX_PLAINTEXT + 1]).unwrap_err();
    assert!(matches!(e, ChannelError::MessageTooLarge(_)));
    assert_eq!(e.errno(), libc::EMSGSIZE);
}

/// A server (async handshake, then [`proxy_session`]) against a hand-driven
/// client thread that runs `f` with its raw stream and keys.
async fn server_raw_client<T: Send + 'static>(
    f: impl FnOnce(UnixStream, SessionKeys) -> T + Send + 'static,
) -> (SyncChannel<UnixStream>, thread::JoinHandle<T>) {
    let k = Psk::generate().unwrap();
    let (mut a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let keys = raw_client(&mut a, &ck);
        f(a, keys)
    });
    let (ch, _) = AsyncChannel::server(b, &[k]).await.unwrap();
    (proxy_session(ch), client)
}

#[tokio::test]
async fn server_rejects_tamper_replay_reorder() {
    let (mut ch, c) = server_raw_client(|mut a, mut keys| {
        let mut f = keys.sealer.seal(b"request");
        let last = f.len() - 1;
        f[last] ^= 0x80; // a tag bit
        a.write_all(&f).unwrap();
        a
    })
    .await;
    assert!(matches!(ch.recv(), Err(ChannelError::Open(0))));
    assert!(matches!(ch.recv(), Err(ChannelError::Broken)));
    drop(c.join().unwrap());

    let (mut ch, c) = server_raw_client(|mut a, mut keys| {
        let f = keys.sealer.seal(b"request");
        a.write_all(&f).unwrap();
        a.write_all(&f).unwrap();
        a
    })
    .await;
    assert_eq!(ch.recv().unwrap(), b"request");
    assert!(matches!(ch.recv(), Err(ChannelError::Open(1))));
    drop(c.join().unwrap());

    let (mut ch, c) = server_raw_client(|mut a, mut keys| {
        let f0 = keys.sealer.seal(b"0");
        let f1 = keys.sealer.seal(b"1");
        a.write_all(&f1).unwrap();
        a.write_all(&f0).unwrap();
        a
    })
    .await;
    assert!(matches!(ch.recv(), Err(ChannelError::Open(0))));
    drop(c.join().unwrap());
}

#[tokio::test]
async fn server_rejects_truncation_and_oversize() {
    let (mut ch, c) = server_raw_client(|mut a, mut keys| {
        let f = keys.sealer.seal(&[0; 40]);
        a.write_all(&f[..30]).unwrap();
    })
    .await;
    c.join().unwrap();
    let e = ch.recv().unwrap_err();
    assert!(
        matches!(
            e,
            ChannelError::Truncated {
                expected: 60,
                got: 30
            }
        ),
        "{e}"
    );

    let (mut ch, c) = server_raw_client(|mut a, _| {
        a.write_all(&[1, 2]).unwrap();
    })
    .await;
    c.join().unwrap();
    assert!(matches!(
        ch.recv(),
        Err(ChannelError::Truncated {
            expected: 4,
            got: 2
        })
    ));

    let (mut ch, c) = server_raw_client(|mut a, _| {
        a.write_all(&((MAX_FRAME + 1) as u32).to_le_bytes())
            .unwrap();
        a
    })
    .await;
    assert!(matches!(ch.recv(), Err(ChannelError::FrameTooLarge(_))));
    drop(c.join().unwrap());
}

#[tokio::test]
async fn into_parts_keeps_frames_sent_right_after_the_proof() {
    let k = Psk::generate().unwrap();
    let (mut a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let (hs, hello) = ClientHandshake::start(&ck).unwrap();
        a.write_all(&hello).unwrap();
        let (proof, mut keys) = hs.finish(&read_hs(&mut a)).unwrap();
        // Proof and two sealed frames in one write: the server's handshake
        // read-ahead takes them all.
        let frames = [keys.sealer.seal(b"first"), keys.sealer.seal(b"second")].concat();
        a.write_all(&[proof, frames.clone()].concat()).unwrap();
        let mut p = [0u8; 4];
        a.read_exact(&mut p).unwrap();
        let mut body = vec![0u8; frame_body_len(p).unwrap()];
        a.read_exact(&mut body).unwrap();
        (frames, keys.opener.open(&body, p).unwrap())
    });
    let (ch, _) = AsyncChannel::server(b, &[k]).await.unwrap();
    let parts = ch.into_parts().unwrap();
    assert!(format!("{parts:?}").contains("ChannelParts"));
    let buffered = parts.buffered.clone();
    let mut ch = SyncChannel::from_parts(
        blocking_std(parts.stream),
        parts.sealer,
        parts.opener,
        &parts.buffered,
    );
    assert_eq!(ch.recv().unwrap(), b"first");
    assert_eq!(ch.recv().unwrap(), b"second");
    ch.send(b"reply").unwrap();
    let (frames, reply) = client.join().unwrap();
    assert_eq!(buffered, frames, "both frames came with the proof");
    assert_eq!(reply, b"reply");
    // Then the client is gone: a clean close.
    assert!(matches!(ch.recv(), Err(ChannelError::Closed)));
}

#[tokio::test]
async fn from_parts_with_nothing_buffered_continues_the_counters() {
    let k = Psk::generate().unwrap();
    let (a, b) = pair();
    let ck = k.clone();
    let client = thread::spawn(move || {
        let mut ch = SyncChannel::client(a, &ck).unwrap();
        // The proxy speaks first: nothing of ours is in its read-ahead.
        assert_eq!(ch.recv().unwrap(), b"welcome");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        for _ in 0..3 {
            ch.send(&big).unwrap();
            assert_eq!(ch.recv().unwrap(), big);
        }
        ch.set_spin(Duration::from_micros(50));
        for i in 0..50u32 {
            ch.send(&i.to_le_bytes()).unwrap();
            assert_eq!(ch.recv().unwrap(), (i * 2).to_le_bytes());
        }
    });
    let (ch, _) = AsyncChannel::server(b, &[k]).await.unwrap();
    let parts = ch.into_parts().unwrap();
    assert!(parts.buffered.is_empty());
    let mut ch = SyncChannel::from_parts(
        blocking_std(parts.stream),
        parts.sealer,
        parts.opener,
        &parts.buffered,
    );
    ch.send(b"welcome").unwrap();
    ch.set_spin(Duration::from_micros(20));
    for _ in 0..3 {
        let big = ch.recv().unwrap();
        assert_eq!(big.len(), 200_000);
        ch.send(&big).unwrap();
    }
    for _ in 0..50 {
        let i = u32::from_le_bytes(ch.recv().unwrap().try_into().unwrap());
        ch.send(&(i * 2).to_le_bytes()).unwrap();
    }
    client.join().unwrap();
    assert!(matches!(ch.recv(), Err(ChannelError::Closed)));
    assert!(matches!(ch.recv(), Err(ChannelError::Broken)));
}

#[tokio::test]
async fn from_parts_rejects_tampered_buffered_frame() {
    let (mut ch, c) = server_raw_client(|mut a, mut keys| {
        let mut f = keys.sealer.seal(b"request");
        f[6] ^= 1;
        a.write_all(&f).unwrap();
        a
    })
    .await;
    assert!(matches!(ch.recv(), Err(ChannelError::Open(0))));
    assert!(matches!(ch.send(b"x"), Err(ChannelError::Broken)));
    drop(c.join().unwrap());
}

#[tokio::test]
async fn sync_split_pushes_while_receiver_blocks() {
    let k = Psk::generate().unwrap();
    let (a, b) = pair();
    let ck = k.clone();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut ch = SyncChannel::client(a, &ck).unwrap();
        // The push arrives while the server's receiver is blocked.
        let push = ch.recv().unwrap();
        go_tx.send(()).unwrap();
        ch.send(b"req").unwrap();
        let reply = ch.recv().unwrap();
        (push, reply)
    });
    let (ch, _) = AsyncChannel::server(b, &[k]).await.unwrap();
    let parts = ch.into_parts().unwrap();
    let (mut rx, tx) = SyncChannel::from_parts(
        blocking_std(parts.stream),
        parts.sealer,
        parts.opener,
        &parts.buffered,
    )
    .split()
    .unwrap();
    assert_ne!(rx.stream().as_raw_fd(), tx.stream().as_raw_fd());
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let pusher = {
        let tx = tx.clone();
        thread::spawn(move || tx.lock().unwrap().send(b"unsolicited").unwrap())
    };
    let req = rx.recv().unwrap();
    assert_eq!(req, b"req");
    go_rx.recv().unwrap();
    pusher.join().unwrap();
    tx.lock().unwrap().send(b"reply").unwrap();
    let (push, reply) = client.join().unwrap();
    assert_eq!(push, b"unsolicited");
    assert_eq!(reply, b"reply");
    assert!(matches!(rx.recv(), Err(ChannelError::Closed)));
    assert!(format!("{rx:?}").contains("SyncReceiver"));
}

#[tokio::test]
async fn blocking_server_stream_over_unix_listener() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Address::Unix(dir.path().join("proxy.sock"));
    let listener = Listener::bind(&addr).await.unwrap();
    let k = Psk::generate().unwrap();
    let (ck, caddr) = (k.clone(), addr.clone());
    let client = thread::spawn(move || {
        let s = connect(&caddr, Duration::from_secs(5)).unwrap();
        let mut ch = SyncChannel::client(s, &ck).unwrap();
        ch.set_spin(Duration::from_micros(50));
        for i in 0..100u32 {
            ch.send(&i.to_le_bytes()).unwrap();
            assert_eq!(ch.recv().unwrap(), (i + 1).to_le_bytes());
        }
        // Then wait: the server shuts the connection down under a blocked read.
        ch.recv().unwrap_err()
    });
    let (stream, _peer) = listener.accept().await.unwrap();
    let (ch, _) = AsyncChannel::server(stream, &[k]).await.unwrap();
    let parts = ch.into_parts().unwrap();
    let stream = parts.stream.into_blocking().unwrap();
    let handle = stream.try_clone().unwrap();
    let (mut rx, mut tx) =
        SyncChannel::from_parts(stream, parts.sealer, parts.opener, &parts.buffered)
            .split()
            .unwrap();
    rx.set_spin(Duration::from_micros(20));
    let (served_tx, served_rx) = std::sync::mpsc::channel();
    let server = thread::spawn(move || {
        for _ in 0..100 {
            let i = u32::from_le_bytes(rx.recv().unwrap().try_into().unwrap());
            tx.send(&(i + 1).to_le_bytes()).unwrap();
        }
        served_tx.send(()).unwrap();
        // Blocks until shut down from the other handle.
        (rx.recv().unwrap_err(), tx.send(b"late").unwrap_err())
    });
    // The round trips take as long as the machine's load makes them: shut
    // down only after them, then check that the receiver really blocks.
    served_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(!server.is_finished());
    assert!(handle.as_raw_fd() >= 0);
    handle.shutdown().unwrap();
    let (read_err, write_err) = server.join().unwrap();
    assert!(matches!(read_err, ChannelError::Closed), "{read_err}");
    assert!(matches!(write_err, ChannelError::Write(_)), "{write_err}");
    assert_eq!(write_err.errno(), libc::EPIPE);
    let client_err = client.join().unwrap();
    assert!(matches!(client_err, ChannelError::Closed), "{client_err}");
}

/// A split receiver over `a` (the proxy's side) with `limits` and a
/// receive timeout of 50 ms, and the hand-driven peer's stream and keys.
fn limited_receiver(
    limits: channel::ReceiveLimits,
) -> (channel::SyncReceiver<UnixStream>, UnixStream, SessionKeys) {
    let (ch, b, keys) = sync_client_raw_server();
    ch.stream()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut rx, _tx) = ch.split().unwrap();
    rx.set_limits(limits);
    (rx, b, keys)
}

#[test]
fn receive_timeout_with_no_frame_is_idle_and_the_channel_stays_usable() {
    let limits = channel::ReceiveLimits {
        stall: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let (mut rx, mut b, mut keys) = limited_receiver(limits);
    assert!(matches!(rx.recv(), Err(ChannelError::Idle)));
    assert!(matches!(rx.recv(), Err(ChannelError::Idle)));
    b.write_all(&keys.sealer.seal(b"after idle")).unwrap();
    assert_eq!(rx.recv().unwrap(), b"after idle");
}

#[test]
fn half_a_frame_stalls_after_the_limit() {
    let limits = channel::ReceiveLimits {
        stall: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let (mut rx, mut b, mut keys) = limited_receiver(limits);
    let f = keys.sealer.seal(&[7u8; 1000]);
    b.write_all(&f[..500]).unwrap();
    let t0 = std::time::Instant::now();
    let e = rx.recv().unwrap_err();
    assert!(matches!(e, ChannelError::Stalled { got: 500, .. }), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(e.errno(), libc::ETIMEDOUT);
    assert!(matches!(rx.recv(), Err(ChannelError::Broken)));
}

#[test]
fn frame_over_the_receivers_limit_is_refused_at_its_prefix() {
    let limits = channel::ReceiveLimits {
        max_frame: 1000,
        stall: None,
    };
    let (mut rx, mut b, mut keys) = limited_receiver(limits);
    b.write_all(&keys.sealer.seal(&[1u8; 500])).unwrap();
    assert_eq!(rx.recv().unwrap(), vec![1u8; 500]);
    // Only the prefix is sent: the refusal needs nothing else.
    b.write_all(&2000u32.to_le_bytes()).unwrap();
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(
            e,
            ChannelError::FrameOverLimit {
                len: 2000,
                max: 1000
            }
        ),
        "{e}"
    );
}

#[test]
fn gate_is_asked_once_per_large_frame_and_can_refuse() {
    let (mut rx, mut b, mut keys) = limited_receiver(Default::default());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    rx.set_gate(Box::new(move |len| {
        seen.lock().unwrap().push(len);
        len < 200_000
    }));
    b.write_all(&keys.sealer.seal(&[3u8; 100])).unwrap();
    assert_eq!(rx.recv().unwrap().len(), 100);
    let big = keys.sealer.seal(&[4u8; 100_000]);
    let writer = thread::spawn(move || {
        // In pieces, so the reader loops over the same frame.
        for piece in big.chunks(7000) {
            b.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        // Refused after its prefix: the rest fails once the reader is gone.
        let _ = b.write_all(&keys.sealer.seal(&[5u8; 300_000]));
    });
    assert_eq!(rx.recv().unwrap(), vec![4u8; 100_000]);
    let e = rx.recv().unwrap_err();
    assert!(matches!(e, ChannelError::FrameRefused(_)), "{e}");
    drop(rx);
    writer.join().unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        vec![100_000 + TAG_LEN, 300_000 + TAG_LEN],
        "small frames pass ungated; each large one is asked about once"
    );
}
