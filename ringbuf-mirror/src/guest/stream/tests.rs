//! One stream end to end inside the crate, with the fake kernel: the guest
//! kernel's side of a simulated ring ([`super::super::sim`]) produces, the
//! real stream loop ([`pump`], [`feed`]) frames, the host mirror
//! ([`HostRingbuf`], [`HostPerfRing`], [`HostUserRing`]) writes or reads,
//! and a port of libbpf consumes or produces on the host. Plus the framing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use telebpf_protocol::message::Request;

use super::super::sim::{SimPerf, SimRingbuf, SimUserRing};
use super::*;
use crate::libbpf_port::{LibbpfPerf, LibbpfProducer, LibbpfRing, PerfEvent};
use crate::{page_size, HostPerfRing, HostRingbuf, HostUserRing, PerfWriter, Push, RingWriter};

fn rec(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
}

/// A BPF ring of one page of data.
fn one_page() -> BpfRingLayout {
    BpfRingLayout::with_page_size(page_size() as u32, page_size()).unwrap()
}

/// What libbpf's `ring_buffer__poll` hands its callback, in order.
fn libbpf_records(host: &HostRingbuf) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    LibbpfRing::open(host).process(i64::MAX, |s| {
        got.push(s.to_vec());
        0
    });
    got
}

/// The fake kernel of a consuming stream: each wait first runs the guest's
/// next burst (a BPF program producing into the simulated ring); once
/// none is left, the ring's owner lets go.
struct Bursts<'a> {
    bursts: VecDeque<Box<dyn FnOnce() + 'a>>,
}

impl Wait for Bursts<'_> {
    fn wait(&mut self, ready: Ready, _: Option<Duration>) -> std::io::Result<Woken> {
        assert_eq!(ready, Ready::Data);
        Ok(match self.bursts.pop_front() {
            Some(burst) => {
                burst();
                Woken::Ring
            }
            None => Woken::Stop,
        })
    }

    fn stopped(&mut self) -> bool {
        self.bursts.is_empty()
    }
}

/// The host's end of a consuming stream, as the preload's mirror thread
/// does it: decodes each frame and writes its records into the host ring.
enum Mirror {
    Bpf(RingWriter),
    Perf(PerfWriter),
}

/// Frames as they arrived: records per frame, and lost counts.
#[derive(Default, Debug)]
struct Seen {
    frames: Vec<usize>,
    lost: Vec<u64>,
}

struct HostEnd {
    mirror: Mirror,
    seen: Seen,
}

impl FrameSink for HostEnd {
    type Error = Infallible;

    fn send(&mut self, frame: &[u8]) -> Result<(), Infallible> {
        if let Some(records) = message::records_in(frame) {
            let mut n = 0;
            for r in records {
                n += 1;
                let pushed = match &mut self.mirror {
                    Mirror::Bpf(w) => w.push(r),
                    Mirror::Perf(w) => w.push_sample(r),
                };
                assert_eq!(pushed, Push::Written, "the host ring is large enough");
            }
            self.seen.frames.push(n);
        } else {
            match message::decode::<Reply>(frame).unwrap() {
                Reply::Lost(n) => {
                    self.seen.lost.push(n);
                    if let Mirror::Perf(w) = &mut self.mirror {
                        assert_eq!(w.push_lost(n), Push::Written);
                    }
                }
                other => panic!("a stream sent {other:?}"),
            }
        }
        Ok(())
    }
}

#[test]
fn a_ringbuf_stream_carries_every_record_across_the_wrap_to_libbpf() {
    let page = page_size();
    let layout = BpfRingLayout::with_page_size(32 * page as u32, page).unwrap();
    let size = layout.max_entries();
    let sim = SimRingbuf::new(layout);
    // The first records wrap around the end of the guest's data area.
    sim.start_at((size * 3 - 40) as u64);
    let mut want = Vec::new();
    let mut bursts = Vec::new();
    // Two bursts that fill most of the ring (more than a frame's worth each),
    // with a discarded record and empty ones, then a single record.
    for burst in 0..2u8 {
        let mut recs = Vec::new();
        let mut bytes = 0;
        let mut i = 0usize;
        while bytes + 1100 < size - 4096 {
            let r = rec((i * 37) % 1000, burst.wrapping_mul(31) ^ i as u8);
            bytes += (r.len() + 8 + 7) & !7;
            recs.push(r);
            i += 1;
        }
        want.extend(recs.iter().cloned());
        bursts.push(recs);
    }
    want.push(b"last".to_vec());
    bursts.push(vec![b"last".to_vec()]);
    let sim_ref = &sim;
    let mut wait = Bursts {
        bursts: bursts
            .into_iter()
            .map(|recs| {
                Box::new(move || {
                    for (i, r) in recs.iter().enumerate() {
                        assert!(sim_ref.output(r, false), "the guest ring has room");
                        if i == 3 {
                            assert!(sim_ref.output(b"discarded", true));
                        }
                    }
                }) as Box<dyn FnOnce()>
            })
            .collect(),
    };
    let host = Arc::new(HostRingbuf::new(4 * size as u32).unwrap());
    let mut out = HostEnd {
        mirror: Mirror::Bpf(host.take_writer().unwrap()),
        seen: Seen::default(),
    };
    let mut guest =
        GuestRing::Bpf(RingbufConsumer::new(&sim.consumer, &sim.producer, layout).unwrap());

    let end = pump(&mut guest, &mut wait, &mut out);

    assert!(matches!(end, StreamEnd::Stopped), "{end}");
    assert_eq!(end.to_string(), "ring closed by its owner");
    assert_eq!(
        sim.consumer.peek_u64(0),
        sim.producer.peek_u64(0),
        "the guest ring is consumed"
    );
    assert!(
        out.seen.frames.len() >= 5,
        "a burst larger than FRAME_BYTES goes out in several frames: {:?}",
        out.seen.frames
    );
    assert!(out.seen.lost.is_empty());
    let got = libbpf_records(&host);
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "libbpf reads exactly the records the guest committed"
    );
}

#[test]
fn a_perf_stream_carries_samples_and_the_guests_lost_count_to_libbpf() {
    let page = page_size();
    let layout = PerfLayout::new(page, 1).unwrap();
    let sim = SimPerf::new(layout);
    // Samples wrap around the end of the one data page.
    sim.start_at((page * 5 - 16) as u64);
    let sim_ref = &sim;
    let sent = std::cell::RefCell::new(Vec::new());
    let dropped = std::cell::Cell::new(0u64);
    let sent_ref = &sent;
    let dropped_ref = &dropped;
    let burst = move |n: usize, seed: u8| {
        Box::new(move || {
            for i in 0..n {
                let r = rec(40 + i % 50, seed ^ i as u8);
                if sim_ref.output(&r) {
                    sent_ref.borrow_mut().push(SimPerf::delivered(&r));
                } else {
                    dropped_ref.set(dropped_ref.get() + 1);
                }
            }
        }) as Box<dyn FnOnce() + '_>
    };
    // The first burst overfills the guest ring: the kernel drops samples
    // and reports them in a PERF_RECORD_LOST before the next sample.
    let mut wait = Bursts {
        bursts: VecDeque::from([burst(200, 1), burst(3, 2)]),
    };
    let host = Arc::new(HostPerfRing::new(16, 77).unwrap());
    let mut out = HostEnd {
        mirror: Mirror::Perf(host.take_writer().unwrap()),
        seen: Seen::default(),
    };
    let mut guest = GuestRing::Perf(PerfConsumer::new(&sim.mem, layout).unwrap());

    let end = pump(&mut guest, &mut wait, &mut out);

    assert!(matches!(end, StreamEnd::Stopped), "{end}");
    let dropped = dropped.get();
    assert!(dropped > 0, "the first burst overfilled the guest ring");
    // The guest reports its drops in as many PERF_RECORD_LOSTs as it could
    // fit; each goes out as a Lost frame after the records taken with it.
    assert_eq!(
        out.seen.lost.iter().sum::<u64>(),
        dropped,
        "Lost frames: {:?}",
        out.seen.lost
    );
    let (mut samples, mut lost) = (Vec::new(), Vec::new());
    LibbpfPerf::open(&host).read(|e, _| {
        match e {
            PerfEvent::Sample { data, .. } => samples.push(data.to_vec()),
            PerfEvent::Lost { id, lost: n } => lost.push((id, n)),
        }
        true
    });
    assert!(
        samples == *sent.borrow(),
        "libbpf reads exactly the delivered samples"
    );
    assert!(lost.iter().all(|&(id, _)| id == 77), "{lost:?}");
    assert_eq!(
        lost.iter().map(|&(_, n)| n).sum::<u64>(),
        dropped,
        "and the guest's lost count"
    );
}

#[test]
fn a_ring_that_fails_a_check_ends_its_stream_after_the_records_before() {
    let page = page_size();
    let layout = one_page();
    let sim = SimRingbuf::new(layout);
    let sim_ref = &sim;
    let mut wait = Bursts {
        bursts: VecDeque::from([
            Box::new(move || assert!(sim_ref.output(b"good", false))) as Box<dyn FnOnce()>,
            // Then someone writes a producer position more than the ring's
            // size ahead.
            Box::new(move || {
                let prod = sim_ref.producer.peek_u64(0);
                sim_ref.producer.poke_u64(0, prod + 2 * page as u64);
            }),
        ]),
    };
    let host = Arc::new(HostRingbuf::new(page as u32).unwrap());
    let mut out = HostEnd {
        mirror: Mirror::Bpf(host.take_writer().unwrap()),
        seen: Seen::default(),
    };
    let mut guest =
        GuestRing::Bpf(RingbufConsumer::new(&sim.consumer, &sim.producer, layout).unwrap());

    let end = pump(&mut guest, &mut wait, &mut out);

    assert!(
        matches!(
            end,
            StreamEnd::Ring(RingError::Check(Violation::Overfull { .. }))
        ),
        "{end:?}"
    );
    assert!(
        end.to_string()
            .starts_with("ring check 'prod - cons <= size' failed: producer position"),
        "{end}"
    );
    let got = libbpf_records(&host);
    assert_eq!(got, vec![b"good".to_vec()]);
}

/// The fake kernel of a producing stream: a BPF program that drains the
/// simulated user ring whenever the stream waits for room (or only every
/// `patience`-th time).
struct Drainer<'a> {
    sim: &'a SimUserRing,
    drained: Vec<Vec<u8>>,
    waits: u64,
    patience: u64,
}

impl Wait for Drainer<'_> {
    fn wait(&mut self, ready: Ready, timeout: Option<Duration>) -> std::io::Result<Woken> {
        assert_eq!(ready, Ready::Room);
        assert!(timeout.is_some_and(|t| t <= Duration::from_secs(1)));
        self.waits += 1;
        if self.waits.is_multiple_of(self.patience) {
            self.drained.extend(self.sim.drain().unwrap());
            Ok(Woken::Ring)
        } else {
            std::thread::sleep(Duration::from_millis(1));
            Ok(Woken::Timeout)
        }
    }

    fn stopped(&mut self) -> bool {
        false
    }
}

/// The host's end of a producing stream: what the preload's user-ring
/// mirror sends, frame by frame.
struct Frames {
    frames: VecDeque<Vec<u8>>,
    done: Vec<u64>,
}

impl FrameSource for Frames {
    type Error = Infallible;

    fn recv(&mut self) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.frames.pop_front())
    }

    fn done(&mut self, dropped: u64) {
        self.done.push(dropped);
    }
}

#[test]
fn a_user_ring_stream_delivers_what_libbpf_submitted_to_the_guest() {
    let page = page_size();
    // The host program submits into its (large) host ring ...
    let host = Arc::new(HostUserRing::new(16 * page as u32).unwrap());
    let producer = LibbpfProducer::new(&host);
    let mut reader = host.take_reader().unwrap();
    let mut want = Vec::new();
    let mut frames = VecDeque::new();
    for round in 0..3u8 {
        for i in 0..40usize {
            let r = rec((i * 53) % 700, round ^ i as u8);
            assert!(producer.submit(&r));
            want.push(r);
        }
        // ... the host mirror takes the records and sends them as frames.
        let taken = reader.take();
        assert_eq!(taken.len(), 40);
        frames.push_back(message::encode(&Request::Records(taken)).unwrap());
    }
    // A record larger than the guest ring can ever hold is dropped.
    frames.push_back(message::encode(&Request::Records(vec![vec![7; 2 * page]])).unwrap());
    // ... into a guest ring much smaller than a frame's records, which the
    // guest's BPF program drains only every third wait.
    let layout = one_page();
    let sim = SimUserRing::new(layout);
    let mut wait = Drainer {
        sim: &sim,
        drained: Vec::new(),
        waits: 0,
        patience: 3,
    };
    let mut input = Frames {
        frames,
        done: Vec::new(),
    };
    let mut guest = UserRingProducer::new(&sim.consumer, &sim.producer, layout).unwrap();

    let end = feed(&mut guest, &mut wait, &mut input, USER_ROOM_WAIT);

    assert!(matches!(end, StreamEnd::Closed), "{end}");
    assert_eq!(end.to_string(), "client closed the connection");
    assert!(
        wait.waits > 0,
        "the guest ring filled up and the stream waited"
    );
    let mut drained = wait.drained;
    drained.extend(sim.drain().unwrap());
    assert_eq!(drained.len(), want.len());
    assert!(
        drained == want,
        "the guest drains exactly what libbpf submitted"
    );
    assert_eq!(
        input.done,
        vec![0, 0, 0, 1],
        "each frame released, one drop"
    );
}

#[test]
fn a_record_that_finds_no_room_in_time_is_dropped_and_the_stream_goes_on() {
    let page = page_size();
    let layout = one_page();
    let sim = SimUserRing::new(layout);
    // The guest never drains.
    let mut wait = Drainer {
        sim: &sim,
        drained: Vec::new(),
        waits: 0,
        patience: u64::MAX,
    };
    let half = vec![1u8; page / 2];
    let mut input = Frames {
        frames: VecDeque::from([
            message::encode(&Request::Records(vec![half.clone(), half.clone()])).unwrap(),
            message::encode(&Reply::Lost(1)).unwrap(),
        ]),
        done: Vec::new(),
    };
    let mut guest = UserRingProducer::new(&sim.consumer, &sim.producer, layout).unwrap();

    let end = feed(&mut guest, &mut wait, &mut input, Duration::from_millis(20));

    assert!(matches!(end, StreamEnd::UnexpectedFrame), "{end}");
    assert_eq!(input.done, vec![1]);
    assert!(wait.waits > 0);
    assert_eq!(sim.drain().unwrap(), vec![half]);
}

#[test]
fn records_frame_is_the_encoding_of_reply_records() {
    let mut frame = RecordsFrame::new();
    for records in [
        vec![],
        vec![vec![]],
        vec![vec![1u8; 64]],
        (0..300u32)
            .map(|i| (0..i % 97).map(|b| (b ^ i) as u8).collect())
            .collect::<Vec<Vec<u8>>>(),
    ] {
        frame.start();
        for r in &records {
            let (a, b) = r.split_at(r.len() / 3);
            frame.push(a, b);
        }
        let want = message::encode(&Reply::Records(records.clone())).unwrap();
        assert_eq!(frame.finish(), &want[..]);
        let back: Reply = message::decode(&want).unwrap();
        assert_eq!(back, Reply::Records(records));
    }
}

/// What a consumer fills through `RecordSink` encodes as the same
/// `Reply::Records` as the records themselves.
#[test]
fn records_taken_as_a_sink_encode_as_reply_records() {
    let mut frame = RecordsFrame::new();
    let records = vec![b"abc".to_vec(), vec![], vec![7u8; 300]];
    for r in &records {
        frame.record(r.len()).copy_from_slice(r);
    }
    assert_eq!(frame.taken(), 3 * 8 + 3 + 300);
    let want = message::encode(&Reply::Records(records)).unwrap();
    assert_eq!(frame.finish(), &want[..]);
}

#[test]
fn finished_frames_start_afresh() {
    let mut frame = RecordsFrame::new();
    frame.push(b"abc", b"");
    let _ = frame.finish();
    frame.start();
    frame.push(b"de", b"f");
    assert_eq!(
        frame.finish(),
        &message::encode(&Reply::Records(vec![b"def".to_vec()])).unwrap()[..]
    );
}

/// The log texts of the ways a stream ends, which the proxy's log and the
/// end-to-end tests rely on.
#[test]
fn stream_ends_render_as_the_proxy_logs_them() {
    let end: StreamEnd<Infallible> = RingError::Map {
        what: "user ring",
        errno: 22,
    }
    .into();
    assert_eq!(end.to_string(), "cannot map the guest user ring: errno 22");
    let end: StreamEnd<Infallible> = RingError::ToGuest.into();
    assert_eq!(
        end.to_string(),
        "a user ring buffer stream carries records to the guest"
    );
    let end: StreamEnd<Infallible> =
        StreamEnd::Wait(std::io::Error::from_raw_os_error(libc::EBADF));
    assert_eq!(end.to_string(), "poll failed");
    assert!(
        std::error::Error::source(&end).is_some(),
        "the cause is kept"
    );
}

/// A fake kernel for the spin: the first wait finds one record; every
/// later wait ends the stream. `spin` is the stream's spin.
struct OneWake {
    waits: usize,
    spin: Duration,
}

impl Wait for OneWake {
    fn wait(&mut self, _: Ready, _: Option<Duration>) -> std::io::Result<Woken> {
        self.waits += 1;
        Ok(if self.waits == 1 {
            Woken::Ring
        } else {
            Woken::Stop
        })
    }

    fn stopped(&mut self) -> bool {
        self.waits > 1
    }

    fn spin(&self) -> Duration {
        self.spin
    }
}

/// The host's end for the spin: counts records per frame; its first frame
/// of records (after the empty one that says the ring is mapped) makes the
/// guest commit one more record, as a guest program would while the stream
/// is still busy with the first.
struct ProducesOnFirstFrame<'a> {
    sim: &'a SimRingbuf,
    frames: Vec<usize>,
}

impl FrameSink for ProducesOnFirstFrame<'_> {
    type Error = Infallible;

    fn send(&mut self, frame: &[u8]) -> Result<(), Infallible> {
        self.frames
            .push(message::records_in(frame).expect("records").count());
        if self.frames.len() == 2 {
            assert!(self.sim.output(b"second", false));
        }
        Ok(())
    }
}

/// A record committed while the stream spins goes out at once, without a
/// wait (in the proxy: without a wake-up on the guest ring); with no spin
/// the stream sleeps as soon as the ring is empty, and the record waits for
/// the next wake-up.
#[test]
fn a_record_that_comes_during_the_spin_is_sent_without_a_wait() {
    for (spin, frames) in [
        (Duration::from_secs(5), vec![0, 1, 1]),
        (Duration::ZERO, vec![0, 1]),
    ] {
        let layout = one_page();
        let sim = SimRingbuf::new(layout);
        assert!(sim.output(b"first", false));
        let mut wait = OneWake { waits: 0, spin };
        let mut out = ProducesOnFirstFrame {
            sim: &sim,
            frames: Vec::new(),
        };
        let mut guest =
            GuestRing::Bpf(RingbufConsumer::new(&sim.consumer, &sim.producer, layout).unwrap());
        let end = pump(&mut guest, &mut wait, &mut out);
        assert!(matches!(end, StreamEnd::Stopped), "{end}");
        assert_eq!(out.frames, frames, "spin {spin:?}");
        // Woken once for the first record, then once more to stop.
        assert_eq!(wait.waits, 2, "spin {spin:?}");
    }
}

/// A wait that stops the stream at once, with the default spin.
struct StopsAtOnce;

impl Wait for StopsAtOnce {
    fn wait(&mut self, _: Ready, _: Option<Duration>) -> std::io::Result<Woken> {
        Ok(Woken::Stop)
    }

    fn stopped(&mut self) -> bool {
        true
    }
}

/// The stream's first frame is empty and goes out before the stream ever
/// waits: it tells the host that the ring is mapped (a perf event nobody
/// mapped drops its output), and the host's `mmap` returns only then.
#[test]
fn the_first_frame_says_the_ring_is_mapped_before_any_wait() {
    struct Frames(Vec<usize>);
    impl FrameSink for Frames {
        type Error = Infallible;
        fn send(&mut self, frame: &[u8]) -> Result<(), Infallible> {
            self.0
                .push(message::records_in(frame).expect("records").count());
            Ok(())
        }
    }
    let layout = one_page();
    let sim = SimRingbuf::new(layout);
    let mut guest =
        GuestRing::Bpf(RingbufConsumer::new(&sim.consumer, &sim.producer, layout).unwrap());
    let mut out = Frames(Vec::new());
    let end = pump(&mut guest, &mut StopsAtOnce, &mut out);
    assert!(matches!(end, StreamEnd::Stopped), "{end}");
    assert_eq!(out.0, vec![0]);
}

/// The default spin is the ring streams' (the environment's, else
/// [`STREAM_SPIN`]): brief, so an idle stream sleeps soon.
#[test]
fn the_default_spin_is_brief() {
    assert_eq!(StopsAtOnce.spin(), ring_spin());
    if std::env::var_os(ENV_RING_SPIN_US).is_none() {
        assert_eq!(ring_spin(), STREAM_SPIN);
    }
    assert!(STREAM_SPIN <= Duration::from_millis(1));
}

/// Spinning pauses for [`CONTENDED_PAUSE`] after a yield gave way, and
/// only then.
#[test]
fn a_yield_that_gave_way_pauses_spinning() {
    assert!(Contention::default().calm());
    let now = Instant::now();
    assert!(!Contention {
        gave_way: Some(now)
    }
    .calm());
    let long_ago = now
        .checked_sub(CONTENDED_PAUSE)
        .expect("a monotonic clock past the pause");
    assert!(Contention {
        gave_way: Some(long_ago)
    }
    .calm());
}
