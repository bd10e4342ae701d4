//! Push streams: the records of a guest ring, sent to the host as the guest
//! produces them; this module is their session glue.
//!
//! A client mirrors a ring (a perf event's BPF-output ring, or a
//! `BPF_MAP_TYPE_RINGBUF` map) over a connection of its own whose first
//! request is [`Request::Stream`](telebpf_protocol::message::Request)
//! naming the owning session by its secret token. The stream's thread maps
//! the guest ring, sleeps (in `poll`) until the kernel signals new data
//! (event notification: no polling period; after a frame it first looks
//! again for up to `TELEBPF_RING_SPIN_US` before it sleeps, see
//! [`ringbuf_mirror::guest::ring_spin`]) and runs the ring's loop,
//! [`ringbuf_mirror::guest::pump`], which consumes everything that is there
//! and sends it in frames. A user ring buffer's stream runs the other way
//! ([`serve_user`], [`ringbuf_mirror::guest::feed`]): the host sends the
//! records its program submitted and the loop produces them into the guest
//! ring as libbpf's producer does. The loops, the framing and the ring
//! checks live in `ringbuf_mirror::guest` (so that crate's tests run them
//! over a simulated ring); what stays here is what needs the session: who
//! owns the ring, the claim that makes one stream per ring, the kernel's
//! word on what the ring is ([`crate::rings`]) and the socket. Every call
//! into the kernel (the duplicate of the ring's fd, its mappings, the stop
//! and the sleep) goes through the [`Kernel`] the streams were given, so
//! that a whole stream is tested over the fake kernel's simulated ring.
//!
//! A stream holds a duplicate of the ring's fd, so it must never outlive its
//! owner's interest: every stream registers a [`Stop`] with the owning
//! session's [`Owner`], which fires when that session closes the fd or
//! ends, and wakes the stream at once.
//!
//! **What a stream trusts: nothing of the request, nothing of the ring.**
//! The ring's kind, identity and size come from the kernel
//! ([`crate::rings`]); a request that misdescribes the ring is refused. One
//! ring has at most one stream at a time, whichever session asks (two
//! consumers would race on its positions): a second one is refused with
//! `EBUSY`. The consumers themselves (`ringbuf_mirror::guest`) check every
//! position and record header they read from the shared pages before they
//! copy; a failed check ends that stream with the check named in the log,
//! never the process. Every way a stream ends is logged by the session
//! that carried it (`session N: ended (stream of fd F …)`, the text of an
//! [`Ended`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ringbuf_mirror::guest::{self as ring, FrameSink, FrameSource, Geometry, GuestRing, StreamEnd};
use telebpf_protocol::message::{self, SessionToken, StreamRequest};
use telebpf_protocol::ChannelError;

use crate::kernel::{Kernel, RingRegion, Stop};
use crate::limits::SessionBudget;
use crate::rings::{self, Refused, RingKey};

/// Each streamable fd of a session with the stops of its streams (`None`
/// once the session ended).
type Stops = Option<HashMap<i32, Vec<Arc<dyn Stop>>>>;

/// One session's streamable fds and the streams attached to them.
#[derive(Debug, Default)]
pub struct Owner {
    fds: Mutex<Stops>,
}

impl Owner {
    fn fds(&self) -> std::sync::MutexGuard<'_, Stops> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session now owns a ring fd that may be streamed.
    pub fn add(&self, fd: i32) {
        if let Some(fds) = self.fds().as_mut() {
            fds.insert(fd, Vec::new());
        }
    }

    /// The session closed `fd`: its streams end.
    pub fn remove(&self, fd: i32) {
        if let Some(stops) = self.fds().as_mut().and_then(|f| f.remove(&fd)) {
            stops.iter().for_each(|s| s.fire());
        }
    }

    /// The session ended: every stream ends, and no new one can attach.
    pub fn end(&self) {
        if let Some(fds) = self.fds().take() {
            fds.values().flatten().for_each(|s| s.fire());
        }
    }

    /// A stream of `fd` ended: forget its stop.
    fn detach(&self, fd: i32, stop: &Arc<dyn Stop>) {
        if let Some(stops) = self.fds().as_mut().and_then(|f| f.get_mut(&fd)) {
            stops.retain(|s| !Arc::ptr_eq(s, stop));
        }
    }

    /// A duplicate of `fd` in `kernel` for a new stream (the caller closes
    /// it), with its stop, if the session still owns it.
    fn attach(&self, fd: i32, kernel: &dyn Kernel) -> Result<(i32, Arc<dyn Stop>), i32> {
        let mut guard = self.fds();
        let stops = guard
            .as_mut()
            .and_then(|f| f.get_mut(&fd))
            .ok_or(libc::EBADF)?;
        let stop = kernel.stop()?;
        // `fd` is open: the owning session holds it and cannot close it
        // while we hold its lock (`remove` takes the same lock first).
        let dup = kernel.dup(fd)?;
        stops.push(stop.clone());
        Ok((dup, stop))
    }
}

/// All live sessions' owners, by token, the rings being streamed and the
/// kernel they live in.
#[derive(Debug)]
pub struct Streams {
    owners: Mutex<HashMap<SessionToken, Arc<Owner>>>,
    /// Rings with a live stream: one stream per ring, whichever session
    /// holds an fd of it.
    busy: Mutex<HashSet<RingKey>>,
    /// The kernel the sessions' rings live in (the sessions' own).
    kernel: Arc<dyn Kernel>,
}

impl Streams {
    /// No sessions yet; their rings live in `kernel`.
    pub fn new(kernel: Arc<dyn Kernel>) -> Streams {
        Streams {
            owners: Mutex::default(),
            busy: Mutex::default(),
            kernel,
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<SessionToken, Arc<Owner>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session: its token (secret, random) and owner.
    pub fn open(&self) -> Result<(SessionToken, Arc<Owner>), i32> {
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|_| libc::EIO)?;
        let owner = Arc::new(Owner {
            fds: Mutex::new(Some(HashMap::new())),
        });
        self.owners().insert(token, owner.clone());
        Ok((token, owner))
    }

    /// The session ended.
    pub fn close(&self, token: &SessionToken) {
        if let Some(owner) = self.owners().remove(token) {
            owner.end();
        }
    }

    fn find(&self, token: &SessionToken) -> Option<Arc<Owner>> {
        self.owners().get(token).cloned()
    }

    /// Marks `key` streamed until the claim drops; `EBUSY` if it is.
    fn claim(&self, key: RingKey) -> Result<Claim<'_>, Refused> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(key) {
            return Err(Refused::Busy);
        }
        Ok(Claim { streams: self, key })
    }
}

/// A ring's one stream (see [`Streams::claim`]).
struct Claim<'a> {
    streams: &'a Streams,
    key: RingKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.streams.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
    }
}

/// A stream's hold on a ring fd of its owning session: a duplicate of the
/// fd and the stop the owner fires; dropping it forgets the stop and closes
/// the duplicate.
struct Hold<'a> {
    fd: i32,
    stop: Arc<dyn Stop>,
    owner: Arc<Owner>,
    owner_fd: i32,
    kernel: &'a dyn Kernel,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.owner.detach(self.owner_fd, &self.stop);
        self.kernel.close(self.fd);
    }
}

/// A stream attached to its ring: its hold on the fd, its claim on the ring
/// and the geometry the kernel gave. Dropping it lets go of all.
struct Attached<'a> {
    hold: Hold<'a>,
    geometry: Geometry,
    _claim: Claim<'a>,
}

impl<'a> Attached<'a> {
    /// Attaches to the ring `req` names, if its session owns it, it is
    /// what the request says (per the kernel) and `may` lets the stream
    /// consume it; otherwise why not.
    fn new(
        req: &StreamRequest,
        streams: &'a Streams,
        may: &Consume<'_>,
    ) -> Result<Attached<'a>, Ended> {
        let refused = |why: Refusal| Ended::Refused { fd: req.fd, why };
        let Some(owner) = streams.find(&req.session) else {
            return Err(Ended::UnknownSession);
        };
        let kernel = &*streams.kernel;
        let (fd, stop) = owner
            .attach(req.fd, kernel)
            .map_err(|e| refused(Refusal::Hold(e)))?;
        let hold = Hold {
            fd,
            stop,
            owner,
            owner_fd: req.fd,
            kernel,
        };
        let real = rings::inspect(kernel, hold.fd).map_err(|e| refused(e.into()))?;
        // Decided on the ring held, not on the fd number the request
        // named: the owning session may have closed that number and
        // opened another ring under it since the request was checked.
        may(real.key()).map_err(|why| refused(Refusal::Policy(why)))?;
        let geometry = rings::geometry(&req.kind, &real, rings::perf_page_cap(kernel))
            .map_err(|e| refused(e.into()))?;
        let claim = streams.claim(real.key()).map_err(|e| refused(e.into()))?;
        if let (message::StreamKind::Perf { pages }, Geometry::Perf(l)) = (&req.kind, &geometry) {
            if *pages as usize != l.data_pages() {
                crate::log::info(format_args!(
                    "stream of fd {}: {pages} perf pages asked, {} mapped (perf_event_mlock_kb)",
                    req.fd,
                    l.data_pages()
                ));
            }
        }
        Ok(Attached {
            hold,
            geometry,
            _claim: claim,
        })
    }

    /// Maps `region` of the ring held.
    fn map(&self, region: ring::MapRegion) -> Result<RingRegion, i32> {
        self.hold.kernel.map_ring(self.hold.fd, region)
    }

    /// How the stream's loop sleeps on this ring.
    fn waiter(&self) -> Box<dyn ring::Wait + '_> {
        self.hold.stop.waiter(self.hold.fd)
    }
}

/// Why a stream was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The owning session's fd could not be duplicated (or it holds no
    /// such ring fd).
    #[error("cannot hold the session's fd")]
    Hold(i32),
    /// The ring is not what the request says, or is streamed already.
    #[error(transparent)]
    Ring(#[from] Refused),
    /// The stream's key may not consume this ring (the policy's words).
    #[error("{0}")]
    Policy(String),
}

impl Refusal {
    /// The errno the log line names.
    pub fn errno(&self) -> i32 {
        match self {
            Refusal::Hold(errno) => *errno,
            Refusal::Ring(r) => r.errno(),
            Refusal::Policy(_) => libc::EPERM,
        }
    }
}

/// Why a stream ended or never started: the session logs its text.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// The request's token names no live session.
    #[error("stream for an unknown session refused")]
    UnknownSession,
    /// The stream was refused before it started.
    #[error("stream of fd {fd} refused: {why} (errno {})", why.errno())]
    Refused {
        /// The owning session's fd.
        fd: i32,
        /// Why.
        #[source]
        why: Refusal,
    },
    /// A perf ring the session's kernel-memory budget cannot hold.
    #[error(
        "stream of fd {fd}: its perf ring of {len} bytes does not fit the kernel-memory budget \
         (errno {errno})"
    )]
    Budget {
        /// The owning session's fd.
        fd: i32,
        /// Bytes of the perf ring's mapping.
        len: usize,
        /// The budget's errno.
        errno: i32,
    },
    /// A stream towards the host ended.
    #[error("stream of fd {fd}: {end}")]
    Pushed {
        /// The owning session's fd.
        fd: i32,
        /// Why.
        #[source]
        end: StreamEnd<SendFailed>,
    },
    /// A user ring buffer's stream ended.
    #[error("stream of fd {fd}: {end}")]
    Fed {
        /// The owning session's fd.
        fd: i32,
        /// Why.
        #[source]
        end: StreamEnd<ChannelError>,
    },
}

/// Whether the stream's key may consume the ring of this identity (a
/// ring of another key's: `Err` with why not).
pub type Consume<'a> = dyn Fn(RingKey) -> Result<(), String> + 'a;

/// A pushed frame the host's connection did not take.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::session::send_failure(.0))]
pub struct SendFailed(#[source] pub ChannelError);

/// Where pushed frames go (the stream's connection).
pub trait Push {
    /// Sends one encoded frame; an error ends the stream.
    fn push(&mut self, frame: &[u8]) -> Result<(), SendFailed>;
}

impl FrameSink for dyn Push + '_ {
    type Error = SendFailed;

    fn send(&mut self, frame: &[u8]) -> Result<(), SendFailed> {
        self.push(frame)
    }
}

/// Serves a stream connection until the ring's owner lets go of it, the
/// host goes away or the ring fails a check; returns why it ended (the
/// session logs it). A perf event's ring buffer, which the kernel allocates
/// when the proxy first maps it, is held in `budget`'s kernel memory while
/// the stream lives (a ring buffer map's memory was charged when the map
/// was made).
pub fn serve(
    req: &StreamRequest,
    streams: &Streams,
    out: &mut dyn Push,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> String {
    pushed(req, streams, out, budget, may).to_string()
}

fn pushed(
    req: &StreamRequest,
    streams: &Streams,
    out: &mut dyn Push,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> Ended {
    let attached = match Attached::new(req, streams, may) {
        Ok(a) => a,
        Err(why) => return why,
    };
    let fd = req.fd;
    let _held = match attached.geometry {
        Geometry::Perf(l) => match budget.hold_kernel_memory(l.mapping_len() as u64) {
            Ok(held) => held,
            Err(errno) => {
                return Ended::Budget {
                    fd,
                    len: l.mapping_len(),
                    errno,
                }
            }
        },
        _ => None,
    };
    let end = match GuestRing::map(&attached.geometry, |r| attached.map(r)) {
        Ok(mut guest) => ring::pump(&mut guest, &mut *attached.waiter(), out),
        Err(e) => e.into(),
    };
    Ended::Pushed { fd, end }
}

/// Where a user ring buffer stream's frames come from.
pub trait Pull {
    /// The next frame; `None` when the host closed the connection.
    fn pull(&mut self) -> Result<Option<Vec<u8>>, ChannelError>;
}

/// A user ring buffer stream's frames, each released from the session's
/// budget once produced.
struct Input<'a> {
    pull: &'a mut dyn Pull,
    budget: &'a SessionBudget,
    fd: i32,
}

impl FrameSource for Input<'_> {
    type Error = ChannelError;

    fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        self.pull.pull()
    }

    fn done(&mut self, dropped: u64) {
        // What the frame's receiver charged is free again (a request
        // session frees it with each reply; kept, it added up to the
        // session's share after 64 MiB of frames over 64 KiB, and the next
        // such frame ended the stream).
        self.budget.release();
        if dropped > 0 {
            crate::log::debug(format_args!(
                "user ring of fd {}: {dropped} records dropped so far (guest ring full)",
                self.fd
            ));
        }
    }
}

/// Serves a user ring buffer stream: the host sends the records its
/// program submitted ([`message::Request::Records`]) and we produce them
/// into the guest ring as libbpf's `user_ring_buffer__reserve` and
/// `__submit` would, until the host closes the connection, the ring's
/// owner lets go of it or the ring fails a check; returns why it ended.
pub fn serve_user(
    req: &StreamRequest,
    streams: &Streams,
    input: &mut dyn Pull,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> String {
    fed(req, streams, input, budget, may).to_string()
}

fn fed(
    req: &StreamRequest,
    streams: &Streams,
    input: &mut dyn Pull,
    budget: &SessionBudget,
    may: &Consume<'_>,
) -> Ended {
    let attached = match Attached::new(req, streams, may) {
        Ok(a) => a,
        Err(why) => return why,
    };
    let fd = req.fd;
    let end = match ring::map_user_ring(&attached.geometry, |r| attached.map(r)) {
        Ok(mut guest) => {
            let mut input = Input {
                pull: input,
                budget,
                fd,
            };
            ring::feed(
                &mut guest,
                &mut *attached.waiter(),
                &mut input,
                ring::USER_ROOM_WAIT,
            )
        }
        Err(e) => e.into(),
    };
    Ended::Fed { fd, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pusher that must never be used.
    struct Nowhere;

    impl Push for Nowhere {
        fn push(&mut self, _: &[u8]) -> Result<(), SendFailed> {
            panic!("a refused stream pushed a frame");
        }
    }

    /// The stream's own check of the ring it holds: a ring the key may
    /// not consume is let go before it is mapped, whatever the request's
    /// check said of the fd number before.
    #[test]
    fn the_ring_held_is_checked_before_it_is_consumed() {
        // A 4 KiB ring buffer map (needs CAP_BPF; skipped without).
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&telebpf_abi::map_type::BPF_MAP_TYPE_RINGBUF.to_le_bytes());
        attr[12..16].copy_from_slice(&4096u32.to_le_bytes());
        // SAFETY: a map_create attr without pointers.
        let fd = match unsafe {
            crate::sys::bpf(
                telebpf_abi::cmd::BPF_MAP_CREATE,
                attr.as_mut_ptr(),
                attr.len() as u32,
                std::ptr::null_mut(),
                0,
            )
        } {
            Ok(fd) => fd as i32,
            Err(_) => return,
        };
        let streams = Streams::new(Arc::new(crate::kernel::RealKernel));
        let (token, owner) = streams.open().unwrap();
        owner.add(fd);
        let req = StreamRequest {
            session: token,
            fd,
            kind: message::StreamKind::Ringbuf { max_entries: 4096 },
        };
        let seen = std::cell::Cell::new(None);
        let why = serve(
            &req,
            &streams,
            &mut Nowhere,
            &SessionBudget::default(),
            &|key| {
                seen.set(Some(key));
                Err("not its own".to_string())
            },
        );
        assert!(
            matches!(seen.get(), Some(RingKey::Map(_))),
            "{:?}",
            seen.get()
        );
        assert!(why.contains("refused: not its own (errno 1)"), "{why}");
        // The refused stream holds nothing: the ring is free for another.
        assert!(streams.busy.lock().unwrap().is_empty());
        crate::sys::close(fd);
    }

    /// A 4 KiB ring buffer map, as a client creates it.
    fn ringbuf_create() -> message::Request {
        let mut attr = vec![0u8; 72];
        let ringbuf = telebpf_abi::map_type::BPF_MAP_TYPE_RINGBUF;
        telebpf_abi::write_u32(&mut attr, telebpf_abi::off::map_create::MAP_TYPE, ringbuf);
        telebpf_abi::write_u32(&mut attr, telebpf_abi::off::map_create::MAX_ENTRIES, 4096);
        crate::testing::bpf_request(telebpf_abi::cmd::BPF_MAP_CREATE, attr, vec![])
    }

    /// The record a test's guest program outputs `i`-th: its number, then
    /// bytes up to a length that varies from 4 to 300.
    fn record(i: u32) -> Vec<u8> {
        let mut r = i.to_le_bytes().to_vec();
        r.resize(4 + (i as usize * 37) % 297, i as u8);
        r
    }

    /// One whole stream over the fake kernel, as the proxy serves it: a
    /// session creates a ring buffer map (the fake's simulated ring), a
    /// second connection asks to stream it, the guest side outputs records
    /// (around the ring's end many times) and every record arrives in
    /// `Reply::Records` frames on the stream's socket, in order. When the
    /// owning session closes the map, the stream ends and lets go of
    /// everything it held: its duplicate fd, both mappings, its claim on
    /// the ring.
    #[test]
    fn a_ring_buffer_streams_every_record_until_its_owner_closes_it() {
        use crate::testing::{connect, Call, FakeKernel};

        let kernel = Arc::new(FakeKernel::default());
        let psk = telebpf_protocol::key::Psk::from_bytes([9; telebpf_protocol::key::KEY_LEN]);
        let facts = crate::facts::gather();
        let ctx = crate::session::Context::new(
            vec![psk.clone()],
            facts,
            std::time::Duration::ZERO,
            kernel.clone(),
        );
        let ctx = Arc::new(ctx);
        let (mut owner, token) = connect(&ctx, &psk, 1);
        owner
            .send(&message::encode(&ringbuf_create()).unwrap())
            .unwrap();
        let fd = match message::decode(&owner.recv().unwrap()).unwrap() {
            message::Reply::Bpf(r) if r.ret >= 0 => r.ret as i32,
            other => panic!("{other:?}"),
        };
        let ring = kernel.ring(fd).expect("a simulated ring");
        let (mut stream, _) = connect(&ctx, &psk, 2);
        let ask = message::Request::Stream(StreamRequest {
            session: token,
            fd,
            kind: message::StreamKind::Ringbuf { max_entries: 4096 },
        });
        stream.send(&message::encode(&ask).unwrap()).unwrap();

        // Batches of records that fit the ring's 4 KiB; each is read back
        // before the next is output, so the ring wraps again and again.
        let (mut sent, mut got, mut wrapped) = (0u32, Vec::new(), 0);
        for _ in 0..40 {
            let mut batch = 0;
            while batch < 2048 {
                let r = record(sent);
                let pos = ring.lock().unwrap().producer.peek_u64(0);
                let total = (r.len() as u64 + 8 + 7) & !7;
                if pos % 4096 + total > 4096 {
                    wrapped += 1;
                }
                assert!(kernel.ring_output(fd, &r), "record {sent} fits");
                batch += total;
                sent += 1;
            }
            while got.len() < sent as usize {
                match message::decode(&stream.recv().unwrap()).unwrap() {
                    message::Reply::Records(records) => got.extend(records),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(
            wrapped >= 10,
            "records ran around the ring's end {wrapped} times"
        );
        assert_eq!(got, (0..sent).map(record).collect::<Vec<_>>());

        // While it streams, the stream holds a duplicate of the fd and both
        // regions of the ring.
        assert_eq!(kernel.open_fds().len(), 2);
        assert_eq!(kernel.mapped(), 2);
        let maps = |k: &FakeKernel| {
            k.calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Map { .. }))
                .count()
        };
        assert_eq!(maps(&kernel), 2);
        // The owner closes the map: the stream ends (its connection closes)
        // and lets go of all it held.
        owner
            .send(&message::encode(&message::Request::Close { fd }).unwrap())
            .unwrap();
        match stream.recv() {
            Err(ChannelError::Closed) => {}
            other => panic!("the stream goes on: {other:?}"),
        }
        assert!(kernel.open_fds().is_empty(), "{:?}", kernel.open_fds());
        assert_eq!(kernel.mapped(), 0, "both regions unmapped");
        assert!(ctx.streams.busy.lock().unwrap().is_empty());
        drop(owner);
        assert_eq!(
            ctx.registry.wait_empty(std::time::Duration::from_secs(10)),
            0
        );
    }

    /// A request that misdescribes the ring's size is refused before the
    /// ring is mapped, and the refused stream holds nothing.
    #[test]
    fn a_request_of_the_wrong_size_is_refused_unmapped() {
        use crate::testing::{Call, FakeKernel};

        let kernel = Arc::new(FakeKernel::default());
        let streams = Streams::new(kernel.clone());
        let (token, owner) = streams.open().unwrap();
        let mut session = crate::session::Session::with_owner(1, 2, owner, kernel.clone());
        let fd = match session.handle(ringbuf_create()) {
            Some(message::Reply::Bpf(r)) if r.ret >= 0 => r.ret as i32,
            other => panic!("{other:?}"),
        };
        let req = StreamRequest {
            session: token,
            fd,
            kind: message::StreamKind::Ringbuf { max_entries: 8192 },
        };
        let why = serve(
            &req,
            &streams,
            &mut Nowhere,
            &SessionBudget::default(),
            &|_| Ok(()),
        );
        assert_eq!(
            why,
            format!(
                "stream of fd {fd} refused: the ring buffer has max_entries 4096, the request \
                 says 8192 (errno 22)"
            )
        );
        let calls = kernel.calls();
        assert!(calls.contains(&Call::Dup(fd)), "{calls:?}");
        assert!(
            !calls.iter().any(|c| matches!(c, Call::Map { .. })),
            "never mapped: {calls:?}"
        );
        assert_eq!(kernel.open_fds(), vec![fd], "the duplicate is closed");
        assert!(streams.busy.lock().unwrap().is_empty());
    }

    /// The log texts of the ways a stream ends, which the end-to-end tests
    /// and the README quote (`stream of fd F: ring check '…' failed`,
    /// `peer stalled`, `ring closed by its owner`).
    #[test]
    fn ends_render_as_the_session_logs_them() {
        use ringbuf_mirror::guest::{RingError, Violation};
        let cases: Vec<(Ended, &str)> = vec![
            (
                Ended::Refused {
                    fd: 5,
                    why: Refused::Busy.into(),
                },
                "stream of fd 5 refused: another stream already serves this ring (errno 16)",
            ),
            (
                Ended::Refused {
                    fd: 5,
                    why: Refusal::Hold(libc::EBADF),
                },
                "stream of fd 5 refused: cannot hold the session's fd (errno 9)",
            ),
            (
                Ended::Budget {
                    fd: 6,
                    len: 8192,
                    errno: libc::ENOMEM,
                },
                "stream of fd 6: its perf ring of 8192 bytes does not fit the kernel-memory \
                 budget (errno 12)",
            ),
            (
                Ended::Pushed {
                    fd: 7,
                    end: StreamEnd::Stopped,
                },
                "stream of fd 7: ring closed by its owner",
            ),
            (
                Ended::Pushed {
                    fd: 7,
                    end: StreamEnd::Transport(SendFailed(ChannelError::Write(
                        std::io::ErrorKind::WouldBlock.into(),
                    ))),
                },
                "stream of fd 7: peer stalled: it stopped reading and a send made no progress \
                 within the stall timeout",
            ),
            (
                Ended::Pushed {
                    fd: 7,
                    end: RingError::Check(Violation::ConsumerAhead { cons: 16, prod: 8 }).into(),
                },
                "stream of fd 7: ring check 'cons <= prod' failed: consumer position 0x10 is \
                 ahead of producer position 0x8; stream ended",
            ),
            (
                Ended::Fed {
                    fd: 8,
                    end: StreamEnd::Closed,
                },
                "stream of fd 8: client closed the connection",
            ),
        ];
        for (ended, text) in cases {
            assert_eq!(ended.to_string(), text);
        }
    }
}
