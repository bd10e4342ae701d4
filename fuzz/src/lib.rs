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
//! * [`bpf_attr`]: the marshalling of a `bpf()` call of every command, the
//!   real host gather → proxy patch → fake kernel → proxy collect → host
//!   scatter (`telebpf_marshal::roundtrip::check`).
//! * [`ring_consumer`]: the proxy's checked ring consumers over simulated
//!   guest rings that a hostile writer changes at any moment.
//! * [`netlink`]: the walk of a relayed rtnetlink datagram
//!   (`telebpf_abi::netlink::fd_offsets`), which host and proxy both run on
//!   bytes the host program chose.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;

use ringbuf_mirror::guest::sim::{SimPerf, SimRegion, SimRingbuf, SimUserRing, Tamper};
use ringbuf_mirror::guest::{
    PerfConsumer, PerfLayout, Produced, RingbufConsumer, UserRingProducer,
};
use ringbuf_mirror::BpfRingLayout;

use telebpf_abi::cmd::{BPF_COMMON_ATTRS, BPF_PROG_ASSOC_STRUCT_OPS};
use telebpf_abi::{MapMeta, ObjectKind};
use telebpf_marshal::fake::{Entry, FakeKernel, FakeMemory, Fill, Table};
use telebpf_marshal::roundtrip::{self, Call};
use telebpf_protocol::handshake::{handshake_body_len, SERVER_HELLO_LEN};
use telebpf_protocol::message::{
    decode, encode, is_records_request, records_in, request_records_in, Reply, Request,
};
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
/// two parsers can disagree); the borrowed `Records` readers (of replies
/// and of requests) agree with the decoder.
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
    // The same for a request's records (a user ring buffer's stream),
    // which the proxy reads in place and recognises by their tag alone.
    let req = decode::<Request>(data);
    if let Ok(Request::Records(_)) = &req {
        assert!(is_records_request(data));
    }
    match (req, request_records_in(data)) {
        (Ok(Request::Records(r)), Some(it)) => {
            assert_eq!(it.map(<[u8]>::to_vec).collect::<Vec<_>>(), r);
        }
        (Ok(Request::Records(_)), None) => panic!("request_records_in refused Records"),
        (_, Some(it)) => panic!("request_records_in accepted {} as Records", it.count()),
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
    /// What the fake kernel writes and returns (see `FakeKernel`).
    pub kernel: u32,
    /// Bytes the caller's memory reads where it is first touched (the
    /// In/InOut buffers, one after another).
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
        v.extend_from_slice(&self.kernel.to_le_bytes());
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
        let kernel = input.u32();
        AttrCall {
            raw_cmd,
            cpus,
            objects,
            attr,
            common,
            kernel,
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

/// Buffers larger than this are not copied by the target (the plan's own
/// checks still run up to there): a 256 MiB buffer is legal, but copying
/// it several times per run would only slow the fuzzer down. Twice
/// `PREFILL_MAX`, so that `Out` buffers on both sides of it (sent with the
/// caller's bytes, or as a length) are reached.
pub const COPY_LIMIT: usize = 128 << 10;

/// Fuzz target: one `bpf()` call through the real marshalling of both
/// sides — host gather, proxy patch, a fake kernel, proxy collect, host
/// scatter (see `telebpf_marshal::roundtrip`). Any disagreement panics.
pub fn bpf_attr(data: &[u8]) {
    let call = AttrCall::decode(data);
    let table = call.table();
    let verdict = roundtrip::check(
        &table,
        Call {
            raw_cmd: call.raw_cmd,
            attr: &call.attr,
            common: call.common.as_deref(),
        },
        &FakeMemory::new(Fill::Stream(call.memory), COPY_LIMIT),
        FakeKernel { seed: call.kernel },
    );
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

// -------------------------------------------------------------- netlink ----

/// Fuzz target: any datagram to the walk that finds a relayed rtnetlink
/// datagram's program fds. It must not panic; every fd it finds lies
/// inside the datagram, after the previous one; and rewriting the fds (as
/// the host does, to the guest's numbering) leaves the same plan, so the
/// proxy checks exactly the fds the host rewrote.
pub fn netlink(data: &[u8]) {
    use telebpf_abi::netlink::fd_offsets;

    let Ok(offsets) = fd_offsets(data) else {
        return;
    };
    let mut end = 0;
    for &at in &offsets {
        assert!(
            at >= end && at + 4 <= data.len(),
            "fd at {at} in {} bytes",
            data.len()
        );
        end = at + 4;
    }
    let mut rewritten = data.to_vec();
    for (i, &at) in offsets.iter().enumerate() {
        rewritten[at..at + 4].copy_from_slice(&(i as i32 * 7 - 2).to_ne_bytes());
    }
    assert_eq!(fd_offsets(&rewritten), Ok(offsets));
}

// -------------------------------------------------------- ring_consumer ----

/// Which ring the [`ring_consumer`] input drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// A `BPF_MAP_TYPE_RINGBUF` and [`RingbufConsumer`].
    Ringbuf,
    /// A perf event's ring and [`PerfConsumer`].
    Perf,
    /// A `BPF_MAP_TYPE_USER_RINGBUF` and [`UserRingProducer`].
    User,
}

/// One step of the [`ring_consumer`] input (see [`RingInput`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingOp {
    /// The proxy's side takes (ring buffer, perf: at most `limit` bytes of
    /// records) or produces `record` (user ring).
    Proxy {
        /// Byte limit of one consume call.
        limit: u16,
        /// The record a user ring producer writes.
        record: Vec<u8>,
    },
    /// The kernel's side: produces `record` (ring buffer: committed,
    /// or discarded; perf: a sample), or drains (user ring).
    Kernel {
        /// The record.
        record: Vec<u8>,
        /// Ring buffer: discard it.
        discard: bool,
    },
    /// Ring buffer: reserve a record of `len` bytes and leave it BUSY.
    Reserve {
        /// Its length.
        len: u16,
    },
    /// Ring buffer: commit the oldest reserved record.
    Commit,
    /// A hostile write into region `region` (0 consumer or perf, 1
    /// producer) at `off` (modulo its size), landing after `after` more
    /// accesses of the proxy's side (0: now).
    Tamper {
        /// Which region.
        region: u8,
        /// Accesses first.
        after: u8,
        /// Where.
        off: u16,
        /// What.
        bytes: Vec<u8>,
    },
}

/// The [`ring_consumer`] target's input: a ring and a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingInput {
    /// Which ring.
    pub mode: RingMode,
    /// Geometry selector: ring buffers, page `8 << (g & 7)` and data
    /// `page << ((g >> 3) & 3)`; perf, page `2048 << (g & 1)` and
    /// `1 << ((g >> 1) & 1)` data pages.
    pub geometry: u8,
    /// Where both positions start (made 8-byte aligned).
    pub start: u64,
    /// The steps.
    pub ops: Vec<RingOp>,
}

impl RingInput {
    /// The input bytes that [`RingInput::decode`] parses back.
    pub fn encode(&self) -> Vec<u8> {
        let mode = match self.mode {
            RingMode::Ringbuf => 0,
            RingMode::Perf => 1,
            RingMode::User => 2,
        };
        let mut v = vec![mode, self.geometry];
        v.extend_from_slice(&self.start.to_le_bytes());
        let bytes = |v: &mut Vec<u8>, b: &[u8]| {
            v.extend_from_slice(&(b.len() as u16).to_le_bytes());
            v.extend_from_slice(b);
        };
        for op in &self.ops {
            match op {
                RingOp::Proxy { limit, record } => {
                    v.push(0);
                    v.extend_from_slice(&limit.to_le_bytes());
                    bytes(&mut v, record);
                }
                RingOp::Kernel { record, discard } => {
                    v.push(1 | (u8::from(*discard) << 4));
                    bytes(&mut v, record);
                }
                RingOp::Reserve { len } => {
                    v.push(2);
                    v.extend_from_slice(&len.to_le_bytes());
                }
                RingOp::Commit => v.push(3),
                RingOp::Tamper {
                    region,
                    after,
                    off,
                    bytes: b,
                } => {
                    v.extend_from_slice(&[4, *region, *after]);
                    v.extend_from_slice(&off.to_le_bytes());
                    bytes(&mut v, b);
                }
            }
        }
        v
    }

    /// Parses any bytes (missing ones read as zero; record lengths are
    /// taken modulo 4097).
    pub fn decode(data: &[u8]) -> RingInput {
        let mut input = Bytes(data);
        let mode = match input.u8() % 3 {
            0 => RingMode::Ringbuf,
            1 => RingMode::Perf,
            _ => RingMode::User,
        };
        let geometry = input.u8();
        let start = u64::from(input.u32()) | (u64::from(input.u32()) << 32);
        let mut ops = Vec::new();
        while !input.0.is_empty() {
            let op = input.u8();
            let bytes = |input: &mut Bytes| {
                let n = usize::from(input.u16()) % 4097;
                let mut b = input.take(n).to_vec();
                b.resize(n, 0);
                b
            };
            ops.push(match op & 7 {
                0 => RingOp::Proxy {
                    limit: input.u16(),
                    record: bytes(&mut input),
                },
                1 => RingOp::Kernel {
                    discard: op & 0x10 != 0,
                    record: bytes(&mut input),
                },
                2 => RingOp::Reserve { len: input.u16() },
                3 => RingOp::Commit,
                _ => RingOp::Tamper {
                    region: input.u8(),
                    after: input.u8(),
                    off: input.u16(),
                    bytes: bytes(&mut input),
                },
            });
        }
        RingInput {
            mode,
            geometry,
            start,
            ops,
        }
    }
}

/// What the kernel side has put in a ring buffer, in ring order.
enum Expected {
    Record(Vec<u8>),
    Discarded,
    /// Reserved at this position with this length, not committed.
    Busy(u64, usize),
}

/// Fuzz target: the proxy's checked ring consumers (and the user-ring
/// producer) from `ringbuf_mirror::guest`, over simulated guest rings
/// (`guest::sim`) whose kernel side produces honest records while a hostile
/// writer changes any byte — positions, record headers, data — at any
/// moment, also between two reads of one consume call.
///
/// Properties:
/// * the consumers never ask for a byte outside a mapped region (the
///   simulated regions panic if they do; under the address sanitizer the
///   real bounds-checked region underneath is checked too);
/// * what one consume call delivers fits in the ring: ring buffer records
///   are at most `size - 8` bytes and with headers and padding at most
///   `size` together; perf payloads at most `size - 12`, and with their
///   headers at most `size` together;
/// * while nothing hostile happened, nothing is refused and the records
///   come out exactly as the kernel side produced them, in order, up to the
///   first record still being written; after a refusal the stream is over.
pub fn ring_consumer(data: &[u8]) {
    let input = RingInput::decode(data);
    let start = (input.start % (1 << 62)) & !7;
    match input.mode {
        RingMode::Perf => fuzz_perf(&input, start),
        RingMode::Ringbuf => fuzz_ringbuf(&input, start),
        RingMode::User => fuzz_user(&input, start),
    }
}

fn ring_layout(g: u8) -> BpfRingLayout {
    let page = 8usize << (g & 7);
    let size = page << ((g >> 3) & 3);
    BpfRingLayout::with_page_size(size as u32, page).expect("a valid ring layout")
}

fn tamper(regions: [&SimRegion; 2], region: u8, after: u8, off: u16, bytes: &[u8]) {
    let r = regions[usize::from(region & 1)];
    r.tamper(Tamper {
        after: u64::from(after),
        off: usize::from(off),
        bytes: bytes.to_vec(),
    });
}

fn fuzz_ringbuf(input: &RingInput, start: u64) {
    let layout = ring_layout(input.geometry);
    let size = layout.max_entries();
    let sim = SimRingbuf::new(layout);
    sim.start_at(start);
    let mut consumer =
        RingbufConsumer::new(&sim.consumer, &sim.producer, layout).expect("mappings fit");
    let mut expected: VecDeque<Expected> = VecDeque::new();
    let mut tampered = false;
    for op in &input.ops {
        match op {
            RingOp::Proxy { limit, .. } => {
                let mut got: Vec<Vec<u8>> = Vec::new();
                let result = consumer.consume(&mut got, usize::from(*limit));
                let taken: usize = got.iter().map(|r| (r.len() + 8 + 7) & !7).sum();
                assert!(
                    got.iter().all(|r| r.len() <= size - 8) && taken <= size,
                    "{} bytes of records from a {size}-byte ring",
                    taken
                );
                if !tampered {
                    for r in &got {
                        while matches!(expected.front(), Some(Expected::Discarded)) {
                            expected.pop_front();
                        }
                        match expected.pop_front() {
                            Some(Expected::Record(want)) => assert_eq!(r, &want, "record content"),
                            Some(Expected::Busy(..)) => panic!("a BUSY record was delivered"),
                            _ => panic!("a record the kernel did not produce"),
                        }
                    }
                }
                match result {
                    Err(_) if tampered => return,
                    Err(v) => panic!("an honest ring was refused: {v}"),
                    Ok(c) if !tampered && !c.more => {
                        while matches!(expected.front(), Some(Expected::Discarded)) {
                            expected.pop_front();
                        }
                        assert!(
                            matches!(expected.front(), None | Some(Expected::Busy(..))),
                            "committed records left behind"
                        );
                    }
                    Ok(_) => {}
                }
            }
            RingOp::Kernel { record, discard } => {
                let record = &record[..record.len().min(size)];
                if sim.output(record, *discard) {
                    expected.push_back(if *discard {
                        Expected::Discarded
                    } else {
                        Expected::Record(record.to_vec())
                    });
                }
            }
            RingOp::Reserve { len } => {
                let len = usize::from(*len) % (size + 1);
                if let Some(pos) = sim.reserve(len) {
                    expected.push_back(Expected::Busy(pos, len));
                }
            }
            RingOp::Commit => {
                // The kernel commits what it reserved, whatever the ring's
                // memory says by now.
                let oldest = expected
                    .iter_mut()
                    .find(|e| matches!(e, Expected::Busy(..)));
                if let Some(e) = oldest {
                    let Expected::Busy(pos, len) = *e else {
                        unreachable!()
                    };
                    let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ 0x5a).collect();
                    sim.commit(pos, &data, false);
                    *e = Expected::Record(data);
                }
            }
            RingOp::Tamper {
                region,
                after,
                off,
                bytes,
            } => {
                tampered = true;
                tamper([&sim.consumer, &sim.producer], *region, *after, *off, bytes);
            }
        }
    }
}

fn fuzz_perf(input: &RingInput, start: u64) {
    let g = input.geometry;
    let layout = PerfLayout::new(2048 << (g & 1), 1 << ((g >> 1) & 1)).expect("a perf layout");
    let size = layout.data_size();
    let sim = SimPerf::new(layout);
    sim.start_at(start);
    let mut consumer = PerfConsumer::new(&sim.mem, layout).expect("geometry as mapped");
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    let (mut dropped, mut lost) = (0u64, 0u64);
    let mut tampered = false;
    for op in &input.ops {
        match op {
            RingOp::Proxy { limit, .. } => {
                let mut got: Vec<Vec<u8>> = Vec::new();
                let result = consumer.consume(&mut got, usize::from(*limit));
                let taken: usize = got.iter().map(|r| r.len() + 12).sum();
                assert!(
                    taken <= size,
                    "{taken} bytes of samples from a {size}-byte ring"
                );
                if !tampered {
                    for r in &got {
                        assert_eq!(Some(r), expected.pop_front().as_ref(), "sample content");
                    }
                }
                match result {
                    Err(_) if tampered => return,
                    Err(v) => panic!("an honest perf ring was refused: {v}"),
                    Ok(c) => {
                        lost += c.lost;
                        if !tampered {
                            assert!(lost <= dropped, "{lost} lost of {dropped} dropped");
                            assert!(c.more || expected.is_empty(), "samples left behind");
                        }
                    }
                }
            }
            RingOp::Kernel { record, .. } => {
                if sim.output(record) {
                    expected.push_back(SimPerf::delivered(record));
                } else {
                    dropped += 1;
                }
            }
            RingOp::Reserve { .. } | RingOp::Commit => {}
            RingOp::Tamper {
                region,
                after,
                off,
                bytes,
            } => {
                tampered = true;
                tamper([&sim.mem, &sim.mem], *region, *after, *off, bytes);
            }
        }
    }
}

fn fuzz_user(input: &RingInput, start: u64) {
    let layout = ring_layout(input.geometry);
    let sim = SimUserRing::new(layout);
    sim.start_at(start);
    let mut producer =
        UserRingProducer::new(&sim.consumer, &sim.producer, layout).expect("mappings fit");
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    let mut tampered = false;
    for op in &input.ops {
        match op {
            RingOp::Proxy { record, .. } => match producer.try_produce(record) {
                Ok(Produced::Written) => expected.push_back(record.clone()),
                Ok(Produced::NoRoom) => {}
                Ok(Produced::TooLarge) => {
                    assert!(
                        record.len() > layout.max_entries() - 8,
                        "{} bytes",
                        record.len()
                    )
                }
                Err(_) if tampered => return,
                Err(v) => panic!("an honest user ring was refused: {v}"),
            },
            RingOp::Kernel { .. } | RingOp::Commit | RingOp::Reserve { .. } => match sim.drain() {
                Ok(got) if !tampered => {
                    let want: Vec<Vec<u8>> = expected.drain(..).collect();
                    assert_eq!(got, want, "drained records");
                }
                Ok(_) => {}
                Err(why) if !tampered => panic!("the kernel refused an honest ring: {why}"),
                Err(_) => return,
            },
            RingOp::Tamper {
                region,
                after,
                off,
                bytes,
            } => {
                tampered = true;
                tamper([&sim.consumer, &sim.producer], *region, *after, *off, bytes);
            }
        }
    }
}
