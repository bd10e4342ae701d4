//! The guest-side consumers over simulated rings (every check, honest and
//! hostile memory) and, where the process may use `bpf()`, over the running
//! kernel's rings.

use super::sim::{SimPerf, SimRingbuf, SimUserRing, Tamper};
use super::*;
use crate::kernel;
use crate::BpfRingLayout;

const PAGE: usize = 4096;

fn layout(size: u32) -> BpfRingLayout {
    BpfRingLayout::with_page_size(size, PAGE).unwrap()
}

fn rec(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn consumer(sim: &SimRingbuf) -> RingbufConsumer<&sim::SimRegion> {
    RingbufConsumer::new(&sim.consumer, &sim.producer, sim.layout()).unwrap()
}

/// Everything a consumer takes, `limit` bytes per call.
fn drain_all(c: &mut RingbufConsumer<&sim::SimRegion>, limit: usize) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let r = c.consume(&mut got, limit).unwrap();
        all.extend(got);
        if !r.more {
            return all;
        }
    }
}

#[test]
fn ringbuf_records_come_out_as_committed_across_the_wrap() {
    let sim = SimRingbuf::new(layout(4096));
    sim.start_at(4096 * 3 - 24); // the first record wraps
    let mut c = consumer(&sim);
    let mut want = Vec::new();
    for (i, n) in [40usize, 0, 1000, 7, 2000].into_iter().enumerate() {
        let r = rec(n, i as u8);
        assert!(sim.output(&r, false));
        want.push(r);
    }
    assert!(sim.output(&rec(9, 99), true), "a discarded record");
    assert_eq!(drain_all(&mut c, 1), want, "one record per call");
    assert_eq!(sim.consumer.peek_u64(0), sim.producer.peek_u64(0));
    // Room again: the largest record the kernel reserves in 4096 bytes
    // (`new_prod - cons <= mask`).
    assert!(sim.output(&rec(4080, 5), false));
    assert_eq!(drain_all(&mut c, usize::MAX), vec![rec(4080, 5)]);
}

#[test]
fn ringbuf_consumer_stops_at_a_busy_record_and_resumes() {
    let sim = SimRingbuf::new(layout(4096));
    let mut c = consumer(&sim);
    assert!(sim.output(b"one", false));
    let pos = sim.reserve(5).unwrap();
    assert!(sim.output(b"three", false));
    let mut got: Vec<Vec<u8>> = Vec::new();
    assert_eq!(
        c.consume(&mut got, usize::MAX).unwrap(),
        Consumed::default()
    );
    assert_eq!(got, vec![b"one".to_vec()]);
    sim.commit(pos, b"two!!", false);
    let mut got: Vec<Vec<u8>> = Vec::new();
    c.consume(&mut got, usize::MAX).unwrap();
    assert_eq!(got, vec![b"two!!".to_vec(), b"three".to_vec()]);
}

/// Each position check, with the ring left unconsumed.
#[test]
fn ringbuf_positions_are_checked_before_any_record_is_read() {
    for (cons, prod, check) in [
        (16u64, 8u64, "cons <= prod"),
        (0, 4104, "prod - cons <= size"),
        (4, 64, "8-byte alignment"),
        (0, 12, "8-byte alignment"),
    ] {
        let sim = SimRingbuf::new(layout(4096));
        sim.consumer.poke_u64(0, cons);
        sim.producer.poke_u64(0, prod);
        let mut c = consumer(&sim);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let e = c.consume(&mut got, usize::MAX).unwrap_err();
        assert_eq!(e.check(), check, "cons {cons} prod {prod}: {e}");
        assert!(got.is_empty());
        assert_eq!(sim.consumer.peek_u64(0), cons, "the ring is left as it was");
    }
}

/// The attack: the consumer position moved back onto a forged
/// header inside a record already consumed.
#[test]
fn ringbuf_forged_headers_never_reach_past_the_ring() {
    let size = 65536u64;
    let sim = SimRingbuf::new(layout(size as u32));
    let mut c = consumer(&sim);
    let mut forged = vec![0u8; 4096];
    forged[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    assert!(sim.output(&forged, false));
    assert_eq!(drain_all(&mut c, usize::MAX), vec![forged.clone()]);
    // Someone writes consumer_pos = 8: this consumer notices.
    sim.consumer.poke_u64(0, 8);
    assert!(sim.output(&forged, false));
    let e = c.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(
        e,
        Violation::Moved {
            what: "consumer",
            expected: 4104,
            found: 8
        }
    );
    // A consumer that starts there checks the forged header itself.
    let mut fresh = consumer(&sim);
    let e = fresh.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "record length <= size - 8", "{e}");
    // A header within the ring but past what was produced.
    sim.consumer.poke_u64(0, 8);
    sim.producer.poke_u32(PAGE + 8, 8200);
    let mut fresh = consumer(&sim);
    let e = fresh.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "record ends before prod", "{e}");
}

#[test]
fn ringbuf_needs_mappings_covering_its_geometry() {
    let sim = SimRingbuf::new(layout(8192));
    let e = RingbufConsumer::new(&sim.consumer, &sim.producer, layout(16384)).unwrap_err();
    assert_eq!(e.check(), "mapping covers the ring", "{e}");
}

/// A header that changes between the producer position's load and its own
/// (a writer racing the consumer) is still checked.
#[test]
fn ringbuf_header_changed_under_the_consumer_is_still_checked() {
    let sim = SimRingbuf::new(layout(4096));
    let mut c = consumer(&sim);
    assert!(sim.output(&rec(100, 1), false));
    // Accesses of the producer region: producer_pos, then the header.
    sim.producer.tamper(Tamper {
        after: 1,
        off: PAGE,
        bytes: 0x7fff_fff0u32.to_le_bytes().to_vec(),
    });
    let e = c.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "record length <= size - 8", "{e}");
}

fn perf_layout(pages: usize) -> PerfLayout {
    PerfLayout::new(PAGE, pages).unwrap()
}

fn perf_drain(c: &mut PerfConsumer<&sim::SimRegion>) -> (Vec<Vec<u8>>, u64) {
    let mut all = Vec::new();
    let mut lost = 0;
    loop {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let r = c.consume(&mut got, 100).unwrap();
        all.extend(got);
        lost += r.lost;
        if !r.more {
            return (all, lost);
        }
    }
}

#[test]
fn perf_samples_and_lost_counts_come_out_across_the_wrap() {
    let sim = SimPerf::new(perf_layout(1));
    sim.start_at(4096 * 5 - 16);
    let mut c = PerfConsumer::new(&sim.mem, perf_layout(1)).unwrap();
    let mut want = Vec::new();
    for (i, n) in [5usize, 300, 0, 1000].into_iter().enumerate() {
        let r = rec(n, i as u8);
        assert!(sim.output(&r));
        want.push(SimPerf::delivered(&r));
    }
    // Fill up until one sample is dropped, reported as lost once there is
    // room again.
    let mut written = 0;
    while sim.output(&rec(1000, 9)) {
        written += 1;
    }
    let (got, lost) = perf_drain(&mut c);
    assert_eq!(
        &got[..4],
        &want[..],
        "samples in order, padded as the kernel pads"
    );
    assert_eq!(got.len(), 4 + written);
    assert_eq!(
        lost, 0,
        "nothing lost yet: the ring filled after the samples"
    );
    assert!(sim.output(&rec(8, 1)), "the lost record and a sample");
    let (got, lost) = perf_drain(&mut c);
    assert_eq!(got, vec![SimPerf::delivered(&rec(8, 1))]);
    assert_eq!(lost, 1);
}

#[test]
fn perf_record_sizes_and_positions_are_checked() {
    use crate::perf::{DATA_HEAD, DATA_TAIL};
    let data = PAGE as u64;
    for (head, tail, size, check) in [
        (64u64, 0u64, 0u16, "perf record size within the data area"),
        (64, 0, 12, "perf record size within the data area"),
        (64, 0, 72, "perf record size within the data area"),
        (data + 8, 0, 8, "prod - cons <= size"),
        (8, 16, 8, "cons <= prod"),
        (9, 0, 8, "8-byte alignment"),
    ] {
        let sim = SimPerf::new(perf_layout(1));
        sim.mem.poke_u64(DATA_TAIL, tail);
        let mut c = PerfConsumer::new(&sim.mem, perf_layout(1)).unwrap();
        sim.mem.poke_u64(DATA_HEAD, head);
        sim.mem
            .poke(PAGE + tail as usize % PAGE + 6, &size.to_le_bytes());
        let e = c.consume(&mut Vec::new(), usize::MAX).unwrap_err();
        assert_eq!(e.check(), check, "head {head} tail {tail} size {size}: {e}");
        assert_eq!(
            sim.mem.peek_u64(DATA_TAIL),
            tail,
            "the ring is left as it was"
        );
    }
    // A sample whose raw size says more than its record holds gives only
    // the record's bytes.
    let sim = SimPerf::new(perf_layout(1));
    let mut c = PerfConsumer::new(&sim.mem, perf_layout(1)).unwrap();
    assert!(sim.output(b"abcd"));
    sim.mem.poke_u32(PAGE + 8, u32::MAX);
    let mut got: Vec<Vec<u8>> = Vec::new();
    c.consume(&mut got, usize::MAX).unwrap();
    assert_eq!(got, vec![b"abcd".to_vec()]);
}

#[test]
fn perf_geometry_and_tail_must_be_the_proxys() {
    let sim = SimPerf::new(perf_layout(2));
    let e = PerfConsumer::new(&sim.mem, perf_layout(1)).unwrap_err();
    assert_eq!(e.check(), "perf data area as mapped", "{e}");
    let mut c = PerfConsumer::new(&sim.mem, perf_layout(2)).unwrap();
    sim.mem.poke_u64(crate::perf::DATA_TAIL, 64);
    let e = c.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "single consumer/producer", "{e}");
    assert!(PerfLayout::new(PAGE, 3).is_err());
    assert!(
        PerfLayout::new(512, 1).is_err(),
        "the metadata page holds data_size"
    );
}

fn producer(sim: &SimUserRing, size: u32) -> UserRingProducer<&sim::SimRegion> {
    UserRingProducer::new(&sim.consumer, &sim.producer, layout(size)).unwrap()
}

#[test]
fn user_ring_records_reach_the_kernel_in_order_and_wait_for_room() {
    let sim = SimUserRing::new(layout(4096));
    sim.start_at(4096 * 7 - 8);
    let mut p = producer(&sim, 4096);
    let mut want = Vec::new();
    let mut n = 0;
    loop {
        let r = rec(500, n);
        match p.try_produce(&r).unwrap() {
            Produced::Written => want.push(r),
            Produced::NoRoom => break,
            Produced::TooLarge => unreachable!(),
        }
        n += 1;
    }
    assert_eq!(want.len(), 8, "4096 / 512 records of 500 bytes");
    assert_eq!(sim.drain().unwrap(), want);
    assert_eq!(p.try_produce(&rec(4088, 1)).unwrap(), Produced::Written);
    assert_eq!(p.try_produce(&rec(4089, 1)).unwrap(), Produced::TooLarge);
    assert_eq!(sim.drain().unwrap(), vec![rec(4088, 1)]);
}

#[test]
fn user_ring_consumer_position_is_untrusted() {
    for (cons, check) in [
        (64u64, "cons <= prod"),
        (0u64, "prod - cons <= size"),
        (4, "8-byte alignment"),
    ] {
        let sim = SimUserRing::new(layout(4096));
        sim.start_at(4096 + 16);
        let mut p = producer(&sim, 4096);
        sim.consumer
            .poke_u64(0, if cons == 64 { 4096 + 64 } else { cons });
        let e = p.try_produce(b"x").unwrap_err();
        assert_eq!(e.check(), check, "cons {cons}: {e}");
        assert_eq!(sim.producer.peek_u64(0), 4096 + 16, "nothing produced");
    }
    let sim = SimUserRing::new(layout(4096));
    let mut p = producer(&sim, 4096);
    sim.producer.poke_u64(0, 8);
    assert_eq!(
        p.try_produce(b"x").unwrap_err().check(),
        "single consumer/producer"
    );
    let sim = SimUserRing::new(layout(4096));
    sim.start_at(u64::MAX - 7);
    let mut p = producer(&sim, 4096);
    assert_eq!(
        p.try_produce(b"x").unwrap_err().check(),
        "positions do not wrap"
    );
}

#[test]
fn violations_name_their_check() {
    let e = Violation::RecordTooLong {
        pos: 8,
        len: 1 << 20,
        max: 65528,
    };
    assert_eq!(
        e.to_string(),
        "record at 0x8 says 1048576 bytes, more than the ring's 65528"
    );
    assert_eq!(e.check(), "record length <= size - 8");
}

// ------------------------------------------------------- the real kernel ----

/// The kernel's own ring buffer through the checked consumer: the records
/// a program submits come out whole; a consumer position moved by another
/// writer ends the consumer, and one that starts on a "header" inside a
/// record (the attack) refuses it.
#[test]
fn kernel_ringbuf_through_the_checked_consumer() {
    let size = 16384u32;
    let Some(map) = kernel::ringbuf_map(size) else {
        return;
    };
    let Some(prog) = kernel::RingbufProg::load(map.0, 100, false) else {
        return;
    };
    let l = layout(size);
    let cons = GuestMapping::map(map.0, PAGE, true, 0, "consumer").unwrap();
    let prod = GuestMapping::map(map.0, PAGE + 2 * size as usize, false, PAGE, "producer").unwrap();
    let mut c = RingbufConsumer::new(&cons, &prod, l).unwrap();
    for _ in 0..3 {
        assert!(prog.run());
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    c.consume(&mut got, usize::MAX).unwrap();
    assert_eq!(got, vec![kernel::pattern(100); 3]);
    assert!(!kernel::readable(map.0), "everything consumed");

    // Another writer of the consumer page, as MapWrite could once be.
    let other = GuestMapping::map(map.0, PAGE, true, 0, "other").unwrap();
    other
        .store_u64(0, 8, std::sync::atomic::Ordering::Release)
        .unwrap();
    assert!(prog.run());
    let e = c.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "single consumer/producer", "{e}");
    // Starting on byte 8 of the first record: its pattern bytes read as a
    // header of ~610 MB.
    let mut fresh = RingbufConsumer::new(&cons, &prod, l).unwrap();
    let e = fresh.consume(&mut Vec::new(), usize::MAX).unwrap_err();
    assert_eq!(e.check(), "record length <= size - 8", "{e}");
}

/// The kernel's perf ring through the checked consumer.
#[test]
fn kernel_perf_ring_through_the_checked_consumer() {
    let Some(setup) = kernel::PerfSetup::new() else {
        return;
    };
    let Some(prog) = kernel::PerfProg::load(setup.array.0, 20) else {
        return;
    };
    let l = perf_layout(2);
    let mem = GuestMapping::map(setup.event.0, l.mapping_len(), true, 0, "perf").unwrap();
    let mut c = PerfConsumer::new(&mem, l).unwrap();
    for _ in 0..4 {
        assert!(prog.run());
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let r = c.consume(&mut got, usize::MAX).unwrap();
    assert_eq!(r, Consumed::default());
    assert_eq!(got, vec![SimPerf::delivered(&kernel::pattern(20)); 4]);
}
