//! The bodies of telebpf's fuzz targets, and the input formats the seed
//! generator (`examples/seeds.rs`) writes.
//!
//! Each target panics (which libFuzzer reports as a crash) only when a
//! property of the code under test is violated; a clean error for bad input
//! is the expected outcome.
//!
//! * [`frame`]: the proxy's receiving side after the handshake
//!   (`SyncChannel`: length prefix, ChaCha20-Poly1305 open, counters) and the
//!   request decoder behind it.
//! * [`handshake`]: both sides' handshake parsers (`ServerHandshake`,
//!   `ClientHandshake`) with any bytes.
//! * [`request`]: the bincode decoders of [`Request`] and [`Reply`].
//! * [`bpf_attr`]: the `bpf_attr` marshalling of every command
//!   (`telebpf_abi::roundtrip::check`).

use std::os::unix::net::UnixStream;

use telebpf_abi::cmd::{BPF_COMMON_ATTRS, BPF_PROG_ASSOC_STRUCT_OPS};
use telebpf_abi::roundtrip::{self, Entry, Table};
use telebpf_abi::{BufferSpec, Length, MapMeta, ObjectKind};
use telebpf_protocol::handshake::{handshake_body_len, SERVER_HELLO_LEN};
use telebpf_protocol::message::{decode, encode, records_in, Reply, Request};
use telebpf_protocol::seal::LEN_PREFIX;
use telebpf_protocol::{
    ChannelError, ClientHandshake, Opener, Psk, Sealer, ServerHandshake, ServerHelloStep,
    SyncChannel,
};

/// The session key of the [`frame`] target (client → proxy direction).
pub const FRAME_KEY: [u8; 32] = [0x42; 32];

/// The keys the [`handshake`] target's server holds.
pub fn handshake_keys() -> [Psk; 2] {
    [Psk::from_bytes([1; 32]), Psk::from_bytes([2; 32])]
}

/// Small cursor over the fuzz input; reads past the end give zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    }

    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        let mut w = [0u8; 4];
        w[..b.len()].copy_from_slice(b);
        u32::from_le_bytes(w)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

// ---------------------------------------------------------------- frame ----

/// The [`frame`] target's input for a list of plaintext messages: mode byte
/// 1, the count, each message as `u16 LE length || bytes`, then `ops`
/// (4 bytes each, see [`frame`]).
pub fn frame_input(messages: &[Vec<u8>], ops: &[[u8; 4]]) -> Vec<u8> {
    let mut v = vec![1, messages.len() as u8];
    for m in messages {
        v.extend_from_slice(&(m.len() as u16).to_le_bytes());
        v.extend_from_slice(m);
    }
    for op in ops {
        v.extend_from_slice(op);
    }
    v
}

/// The stream of sealed frames a client would send for `messages`.
pub fn seal_all(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut sealer = Sealer::new(&FRAME_KEY);
    messages.iter().flat_map(|m| sealer.seal(m)).collect()
}

/// Receives every frame of `stream` as the proxy does (the bytes are what
/// the connection delivers, then end of stream), decoding each message as a
/// request. Returns the messages opened before the first error.
fn receive(stream: &[u8]) -> Vec<Vec<u8>> {
    let (ours, peer) = UnixStream::pair().expect("socketpair");
    drop(peer);
    // The sealer is unused: this side only receives.
    let mut ch =
        SyncChannel::from_parts(ours, Sealer::new(&[0; 32]), Opener::new(&FRAME_KEY), stream);
    let mut got = Vec::new();
    loop {
        match ch.recv() {
            Ok(msg) => {
                let _ = decode::<Request>(&msg);
                got.push(msg);
            }
            Err(e) => {
                // After any failure the channel stays broken.
                assert!(
                    matches!(ch.recv(), Err(ChannelError::Broken)),
                    "the channel recovered after {e}"
                );
                return got;
            }
        }
    }
}

/// Fuzz target: the sealed-frame receiver.
///
/// * Mode byte even: the rest is the raw byte stream after the handshake.
///   Nothing may panic; whatever opens is decoded as a request.
/// * Mode byte odd: a list of messages (see [`frame_input`]) that the target
///   seals with [`FRAME_KEY`], then tampers with by 4-byte ops
///   `[op, pos_lo, pos_hi, arg]`: flip bits, truncate, insert a byte,
///   duplicate / swap / drop a frame. Property: the receiver yields exactly
///   the messages whose frames lie wholly before the first changed byte, in
///   order, and then only errors.
pub fn frame(data: &[u8]) {
    let mut input = Bytes(data);
    if input.u8() % 2 == 0 {
        receive(input.rest());
        return;
    }
    let count = usize::from(input.u8() % 8) + 1;
    let messages: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let n = usize::from(input.u16() % 2048);
            input.take(n).to_vec()
        })
        .collect();
    let mut sealer = Sealer::new(&FRAME_KEY);
    let original: Vec<Vec<u8>> = messages.iter().map(|m| sealer.seal(m)).collect();
    let mut frames = original.clone();
    let mut byte_ops = Vec::new();
    while !input.0.is_empty() {
        let op = input.u8();
        let pos = usize::from(input.u16());
        let arg = input.u8();
        let n = frames.len().max(1);
        match op % 7 {
            0 if !frames.is_empty() => frames.insert(pos % n, frames[usize::from(arg) % n].clone()),
            1 if !frames.is_empty() => frames.swap(pos % n, usize::from(arg) % n),
            2 if !frames.is_empty() => {
                frames.remove(pos % n);
            }
            _ => byte_ops.push((op % 7, pos, arg)),
        }
    }
    let mut stream: Vec<u8> = frames.concat();
    for (op, pos, arg) in byte_ops {
        match op {
            3 | 4 if !stream.is_empty() => {
                let at = pos % stream.len();
                stream[at] ^= 1 << (arg % 8);
            }
            5 => stream.truncate(pos),
            _ => {
                let at = pos % (stream.len() + 1);
                stream.insert(at, arg);
            }
        }
    }
    let sent = original.concat();
    let same = sent.iter().zip(&stream).take_while(|(a, b)| a == b).count();
    // Frames wholly inside the unchanged prefix.
    let mut end = 0;
    let mut intact = 0;
    for f in &original {
        end += f.len();
        if end > same {
            break;
        }
        intact += 1;
    }
    let got = receive(&stream);
    assert_eq!(
        got,
        messages[..intact],
        "{} frames intact, {} opened",
        intact,
        got.len()
    );
}

// ------------------------------------------------------------ handshake ----

/// Fuzz target: the handshake parsers. Input: `u16 LE` length of a
/// `ClientHello` body, that body, then a `ClientProof` body; the same bytes
/// also serve as a `ServerHello` for a client.
///
/// Properties: the server answers with a well-formed frame; it accepts a
/// proof only from someone who knows the key and its fresh nonce (never
/// from the fuzzer); the client accepts no `ServerHello` it did not get from
/// a holder of its key.
pub fn handshake(data: &[u8]) {
    let mut input = Bytes(data);
    let n = usize::from(input.u16());
    let hello = input.take(n);
    let proof = input.rest();
    let keys = handshake_keys();
    match ServerHandshake::respond(&keys, hello) {
        Ok(ServerHelloStep::Continue { reply, handshake }) => {
            let len = handshake_body_len(reply[..LEN_PREFIX].try_into().expect("prefix"));
            assert_eq!(len.ok(), Some(SERVER_HELLO_LEN));
            assert_eq!(reply.len(), LEN_PREFIX + SERVER_HELLO_LEN);
            assert!(handshake.key_index() < keys.len());
            assert!(
                handshake.finish(proof).is_err(),
                "a guessed client proof was accepted"
            );
        }
        Ok(ServerHelloStep::Refuse { reply, .. }) => {
            let len = handshake_body_len(reply[..LEN_PREFIX].try_into().expect("prefix"));
            assert_eq!(len.ok(), Some(reply.len() - LEN_PREFIX));
        }
        Err(_) => {}
    }
    for key in &keys {
        let (client, _hello) = ClientHandshake::start(key).expect("random nonce");
        assert!(
            client.finish(data).is_err(),
            "the client accepted a forged server hello"
        );
    }
}

// -------------------------------------------------------------- request ----

/// Fuzz target: the message decoders. Properties: decoding never panics
/// nor allocates beyond the input's size (bincode's limit); what decodes
/// re-encodes to exactly the same bytes (one encoding per message, so no
/// two parsers can disagree); the borrowed `Records` reader agrees with the
/// decoder.
pub fn request(data: &[u8]) {
    if let Ok(req) = decode::<Request>(data) {
        assert_eq!(encode(&req).expect("encodes"), data, "{req:?}");
    }
    let reply = decode::<Reply>(data);
    if let Ok(rep) = &reply {
        assert_eq!(encode(rep).expect("encodes"), data, "{rep:?}");
    }
    match (reply, records_in(data)) {
        (Ok(Reply::Records(r)), Some(it)) => {
            assert_eq!(it.map(<[u8]>::to_vec).collect::<Vec<_>>(), r);
        }
        (Ok(Reply::Records(_)), None) => panic!("records_in refused a Records reply"),
        (_, Some(it)) => panic!("records_in accepted {} as Records", it.count()),
        (_, None) => {}
    }
}

// ------------------------------------------------------------- bpf_attr ----

/// An object of the [`bpf_attr`] input; host fds are 3, 4, ... in order.
#[derive(Clone, Debug)]
pub struct Object {
    /// 0 map, 1 program, 2 link, 3 BTF, 4 iterator, 5 open non-BPF fd.
    pub tag: u8,
    /// The link type both sides know (0: unknown).
    pub link_type: u8,
    /// struct_ops fd offsets: 0 unknown, 1 `[8, 16]`, 2 none.
    pub struct_ops: u8,
    /// Map type or program type.
    pub type_: u32,
    /// Map key size.
    pub key_size: u32,
    /// Map value size.
    pub value_size: u32,
}

/// The [`bpf_attr`] target's input: one `bpf()` call, its objects, and the
/// caller's bytes of its buffers.
#[derive(Clone, Debug)]
pub struct AttrCall {
    /// The command (`BPF_COMMON_ATTRS` allowed).
    pub raw_cmd: u32,
    /// Possible CPUs of the guest.
    pub cpus: u8,
    /// Open host fds 3, 4, ...
    pub objects: Vec<Object>,
    /// The attr (at most 4096 bytes).
    pub attr: Vec<u8>,
    /// The common attributes (at most 254 bytes).
    pub common: Option<Vec<u8>>,
    /// Bytes the In/InOut buffers are read from, one after another.
    pub memory: Vec<u8>,
}

impl AttrCall {
    /// The input bytes that [`bpf_attr`] parses back into this call.
    pub fn encode(&self) -> Vec<u8> {
        let cmd = self.raw_cmd & !BPF_COMMON_ATTRS;
        let common_bit = if self.raw_cmd & BPF_COMMON_ATTRS != 0 {
            0x40
        } else {
            0
        };
        let mut v = vec![cmd as u8 | common_bit, self.cpus, self.objects.len() as u8];
        for o in &self.objects {
            v.extend_from_slice(&[o.tag, o.link_type, o.struct_ops, 0]);
            for w in [o.type_, o.key_size, o.value_size] {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        v.extend_from_slice(&(self.attr.len() as u16).to_le_bytes());
        v.extend_from_slice(&self.attr);
        match &self.common {
            Some(c) => {
                v.push(c.len() as u8);
                v.extend_from_slice(c);
            }
            None => v.push(0xff),
        }
        v.extend_from_slice(&self.memory);
        v
    }

    /// Parses any bytes (missing ones read as zero).
    pub fn decode(data: &[u8]) -> AttrCall {
        let mut input = Bytes(data);
        let sel = input.u8();
        let cmd = u32::from(sel & 0x3f) % (BPF_PROG_ASSOC_STRUCT_OPS + 2);
        let raw_cmd = if sel & 0x40 != 0 {
            cmd | BPF_COMMON_ATTRS
        } else {
            cmd
        };
        let cpus = input.u8();
        let count = input.u8() % 8;
        let objects = (0..count)
            .map(|_| {
                let tag = input.u8();
                let link_type = input.u8();
                let struct_ops = input.u8();
                let _ = input.u8();
                Object {
                    tag,
                    link_type,
                    struct_ops,
                    type_: input.u32(),
                    key_size: input.u32(),
                    value_size: input.u32(),
                }
            })
            .collect();
        let attr_len = usize::from(input.u16()) % 4097;
        let mut attr = input.take(attr_len).to_vec();
        attr.resize(attr_len, 0);
        let common = match input.u8() {
            0xff => None,
            n => Some(input.take(usize::from(n)).to_vec()),
        };
        AttrCall {
            raw_cmd,
            cpus,
            objects,
            attr,
            common,
            memory: input.rest().to_vec(),
        }
    }

    /// The session both sides see.
    pub fn table(&self) -> Table {
        let entries = self
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let kind = match o.tag % 6 {
                    0 => Some(ObjectKind::Map(MapMeta {
                        map_type: o.type_,
                        key_size: o.key_size,
                        value_size: o.value_size,
                        max_entries: 16,
                        map_flags: 0,
                    })),
                    1 => Some(ObjectKind::Prog { prog_type: o.type_ }),
                    2 => Some(ObjectKind::Link),
                    3 => Some(ObjectKind::Btf),
                    4 => Some(ObjectKind::Iter),
                    _ => None,
                };
                Entry {
                    host_fd: 3 + i as i32,
                    kind,
                    link_type: (o.link_type != 0).then_some(u32::from(o.link_type)),
                    struct_ops: match o.struct_ops % 3 {
                        0 => None,
                        1 => Some(vec![8, 16]),
                        _ => Some(Vec::new()),
                    },
                }
            })
            .collect();
        Table {
            entries,
            cpus: u32::from(self.cpus),
        }
    }
}

/// In buffers larger than this are not copied by the target (the plan's
/// own checks still run up to there): a 256 MiB buffer is legal, but
/// copying it three times per run would only slow the fuzzer down.
const COPY_LIMIT: usize = 1 << 20;

/// Fuzz target: plan, copy, expand and translate one `bpf()` call on the
/// host, re-plan and expand it on the proxy, patch and restore the pointers
/// (see `telebpf_abi::roundtrip`). Any disagreement panics.
pub fn bpf_attr(data: &[u8]) {
    let call = AttrCall::decode(data);
    let table = call.table();
    let mut memory = Bytes(&call.memory);
    let mut content = |_: usize, spec: &BufferSpec| match spec.len {
        Length::Bytes(n) if n > COPY_LIMIT => None,
        Length::Bytes(n) => Some(memory.take(n).to_vec()),
        Length::CString { max } => {
            let rest = memory.0;
            let n = rest
                .iter()
                .position(|&b| b == 0)
                .map_or(rest.len(), |p| p + 1);
            Some(memory.take(n.min(max)).to_vec())
        }
    };
    let verdict = roundtrip::check(
        &table,
        call.raw_cmd,
        &call.attr,
        call.common.as_deref(),
        &mut content,
    );
    if let Err(e) = verdict {
        panic!("{e}");
    }
}
