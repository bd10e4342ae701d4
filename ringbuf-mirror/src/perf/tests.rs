use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;
use crate::libbpf_port::{len_of, payload, LibbpfPerf, PerfEvent};
use crate::RingFile;

const ID: u64 = 0x1234_5678;

fn ring(page_cnt: usize) -> Arc<HostPerfRing> {
    Arc::new(HostPerfRing::new(page_cnt, ID).expect("memfd perf ring"))
}

/// An owned [`PerfEvent`].
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Sample(u16, Vec<u8>),
    Lost(u64, u64),
}

fn collect(r: &mut LibbpfPerf) -> Vec<Ev> {
    let mut out = Vec::new();
    r.read(|e, off| {
        assert_eq!(off % 8, 0, "record at an 8-aligned offset");
        out.push(match e {
            PerfEvent::Sample { misc, data } => Ev::Sample(misc, data.to_vec()),
            PerfEvent::Lost { id, lost } => Ev::Lost(id, lost),
        });
        true
    });
    out
}

/// The size libbpf's sample_cb gets for `n` raw bytes: the kernel's
/// `raw->size` includes the padding to 8 bytes (header excluded).
fn delivered_len(n: usize) -> usize {
    (n + 4).div_ceil(8) * 8 - 4
}

/// Whether `ev` is a sample of `raw` with `misc` (padding bytes are stale,
/// whatever the ring held there before, and not compared).
fn is_sample(ev: &Ev, misc: u16, raw: &[u8]) -> bool {
    match ev {
        Ev::Sample(m, d) => {
            *m == misc && d.len() == delivered_len(raw.len()) && &d[..raw.len()] == raw
        }
        Ev::Lost(..) => false,
    }
}

/// Checks a delivered test sample and returns its sequence number.
fn decode_sample(data: &[u8], max: usize) -> u64 {
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    let raw = payload(seq, len_of(seq, max));
    assert_eq!(data.len(), delivered_len(raw.len()), "size of sample {seq}");
    assert_eq!(&data[..raw.len()], raw.as_slice(), "sample {seq}");
    seq
}

/// Asserts that `evs` is exactly one sample of `raw` with `misc`.
fn assert_one_sample(evs: &[Ev], misc: u16, raw: &[u8]) {
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(is_sample(&evs[0], misc, raw), "{evs:?} vs {raw:?}");
}

#[test]
fn new_refuses_what_libbpf_and_perf_mmap_refuse() {
    for bad in [0, 3, 6, 12] {
        assert!(HostPerfRing::new(bad, 0).is_err(), "{bad}");
    }
    let r = ring(8);
    assert_eq!(r.page_cnt(), 8);
    assert_eq!(r.data_size(), 8 * page_size());
    assert_eq!(r.mmap_len(), 9 * page_size());
}

#[test]
fn metadata_page_is_what_perf_event_init_userpage_writes() {
    let r = ring(8);
    let p = LibbpfPerf::open(&r);
    let word = |off: usize| {
        // SAFETY: an aligned u64 field of the live metadata page.
        unsafe { p.base().add(off).cast::<u64>().read() }
    };
    assert_eq!(word(DATA_OFFSET), page_size() as u64);
    assert_eq!(word(DATA_SIZE), 8 * page_size() as u64);
    assert_eq!(word(DATA_HEAD), 0);
    assert_eq!(word(DATA_TAIL), 0);
    assert_eq!(word(CAPABILITIES), CAP_BIT0_IS_DEPRECATED);
    assert_eq!(word(USERPAGE_SIZE_FIELD) as u32, USERPAGE_SIZE);
    assert!(!r.pending());
    assert!(r.take_writer().is_some());
    assert!(r.take_writer().is_none(), "one producer only");
}

#[test]
fn raw_sample_layout_is_the_kernels() {
    let r = ring(1);
    let mut w = r.take_writer().unwrap();
    let mut rd = LibbpfPerf::open(&r);
    let mut head = 0u64;
    for n in 0..=20usize {
        let raw: Vec<u8> = (0..n as u8).map(|b| b ^ 0x5a).collect();
        assert_eq!(w.push_sample(&raw), Push::Written);
        let raw_size = (n + 4).div_ceil(8) * 8 - 4;
        let size = 8 + 4 + raw_size;
        let rec = &rd.data()[head as usize..head as usize + size];
        assert_eq!(u32::from_ne_bytes(rec[0..4].try_into().unwrap()), 9);
        assert_eq!(u16::from_ne_bytes(rec[4..6].try_into().unwrap()), 1);
        assert_eq!(
            u16::from_ne_bytes(rec[6..8].try_into().unwrap()) as usize,
            size
        );
        assert_eq!(
            u32::from_ne_bytes(rec[8..12].try_into().unwrap()) as usize,
            raw_size
        );
        assert_eq!(&rec[12..12 + n], &raw[..]);
        // First lap over a zero-filled ring: the skipped padding is zero.
        assert!(rec[12 + n..].iter().all(|&b| b == 0), "padding");
        head += size as u64;
        assert_eq!(r.data_head(), head);
        assert!(r.pending());
        assert_one_sample(&collect(&mut rd), PERF_RECORD_MISC_KERNEL, &raw);
        assert!(!r.pending());
    }
    assert_eq!(w.push_sample_misc(2, b"user"), Push::Written);
    assert_one_sample(&collect(&mut rd), 2, b"user");
    assert_eq!(w.push_sample(&vec![0; 70_000]), Push::TooLarge);
    assert_eq!(w.lost_total(), 0);
}

#[test]
fn libbpf_consumer_reads_concurrent_writer_in_order_across_many_wraps() {
    const N: u64 = 100_000;
    const MAX_LEN: usize = 300;
    let r = ring(2);
    let size = r.data_size();
    let mut w = r.take_writer().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (r2, done2) = (Arc::clone(&r), Arc::clone(&done));
    let reader = thread::spawn(move || {
        let mut rd = LibbpfPerf::open(&r2);
        let (mut next, mut lost, mut wrapped) = (0u64, 0u64, 0u64);
        loop {
            let finished = done2.load(Ordering::Acquire);
            rd.read(|e, off| {
                match e {
                    PerfEvent::Sample { misc, data } => {
                        assert_eq!(misc, PERF_RECORD_MISC_KERNEL);
                        assert_eq!(decode_sample(data, MAX_LEN), next, "in order");
                        next += 1;
                        if off + 12 + data.len() > size {
                            wrapped += 1;
                        }
                    }
                    PerfEvent::Lost { id, lost: n } => {
                        assert_eq!(id, ID);
                        lost += n;
                    }
                }
                true
            });
            if finished {
                break;
            }
            thread::yield_now();
        }
        (next, lost, wrapped)
    });
    let mut full = 0u64;
    for seq in 0..N {
        let raw = payload(seq, len_of(seq, MAX_LEN));
        // Retrying the same sample after Full: every sample arrives, and
        // each failed attempt is reported lost, as the kernel would.
        while w.push_sample(&raw) == Push::Full {
            full += 1;
            thread::yield_now();
        }
    }
    done.store(true, Ordering::Release);
    let (seen, lost, wrapped) = reader.join().unwrap();
    assert_eq!(seen, N);
    assert_eq!(lost + w.lost_pending(), full);
    assert_eq!(w.lost_total(), full);
    assert!(wrapped > 500, "only {wrapped} samples wrapped");
    assert!(!r.pending());
}

#[test]
fn records_wrapping_the_end_are_reassembled_by_the_consumer() {
    let r = ring(1);
    let size = r.data_size();
    let mut w = r.take_writer().unwrap();
    let mut rd = LibbpfPerf::open(&r);
    let mut crossings = 0;
    for seq in 0..5_000u64 {
        let raw = payload(seq, 8 + (seq * 37 % 700) as usize);
        let head = r.data_head() as usize;
        assert_eq!(w.push_sample(&raw), Push::Written);
        let rec_len = 12 + delivered_len(raw.len());
        if head % size + rec_len > size {
            crossings += 1;
        }
        assert_one_sample(&collect(&mut rd), PERF_RECORD_MISC_KERNEL, &raw);
    }
    assert!(crossings > 300, "only {crossings} records wrapped");
}

#[test]
fn slow_consumer_loses_samples_and_gets_one_lost_record_when_space_allows() {
    let r = ring(1);
    let size = r.data_size();
    let mut w = r.take_writer().unwrap();
    let mut rd = LibbpfPerf::open(&r);
    // 64-byte samples; at most data_size - 1 bytes are ever unconsumed.
    let raw = |seq: u64| payload(seq, 52);
    let mut seq = 0;
    while w.push_sample(&raw(seq)) == Push::Written {
        seq += 1;
    }
    assert_eq!(seq as usize, size / 64 - 1);
    assert_eq!((w.lost_pending(), r.lost_total()), (1, 1));
    let head = r.data_head();
    // 63 bytes free: a 48-byte sample alone would fit, not with the 24-byte
    // lost record in front of it, so it is lost too; nothing is written.
    assert_eq!(w.push_sample(&[1; 36]), Push::Full);
    assert_eq!(w.push_sample(&[1; 28]), Push::Full);
    assert_eq!(r.data_head(), head);
    assert_eq!(w.lost_pending(), 3);
    // 24 + 32 = 56 fits: lost record, then the sample.
    assert_eq!(w.push_sample(&[2; 20]), Push::Written);
    assert_eq!(w.lost_pending(), 0);
    let got = collect(&mut rd);
    assert_eq!(got.len() as u64, seq + 2);
    for (i, g) in got[..seq as usize].iter().enumerate() {
        assert!(is_sample(g, 1, &raw(i as u64)), "sample {i}");
    }
    assert_eq!(got[seq as usize], Ev::Lost(ID, 3));
    assert!(is_sample(&got[seq as usize + 1], 1, &[2; 20]));
    // A sample that can never fit counts as lost, as in the kernel.
    assert_eq!(w.push_sample(&vec![0; size]), Push::Full);
    assert_eq!(w.push_sample(b"next"), Push::Written);
    let got = collect(&mut rd);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Ev::Lost(ID, 1));
    assert!(is_sample(&got[1], 1, b"next"));
    assert_eq!(r.lost_total(), 4);
}

#[test]
fn push_lost_reports_guest_losses_merged_with_ours() {
    let r = ring(1);
    let mut w = r.take_writer().unwrap();
    let mut rd = LibbpfPerf::open(&r);
    assert_eq!(w.push_lost(5), Push::Written);
    assert_eq!(collect(&mut rd), vec![Ev::Lost(ID, 5)]);
    // Nothing to report: nothing written.
    let head = r.data_head();
    assert_eq!(w.push_lost(0), Push::Written);
    assert_eq!(r.data_head(), head);
    // Fill, lose two, then a guest loss of 5 while still full: kept.
    let mut n = 0;
    while w.push_sample(&[0; 52]) == Push::Written {
        n += 1;
    }
    assert_eq!(w.push_sample(&[0; 52]), Push::Full);
    // 63 bytes free: a lost record (24) fits.
    assert_eq!(w.push_lost(5), Push::Written);
    let mut evs = collect(&mut rd);
    assert_eq!(evs.pop(), Some(Ev::Lost(ID, 7)));
    assert_eq!(evs.len(), n);
    // Fill with 16-byte samples: less than 16 bytes stay free, one is lost,
    // and a guest loss cannot be reported yet.
    while w.push_sample(&[]) == Push::Written {}
    assert_eq!(w.lost_pending(), 1);
    assert_eq!(w.push_lost(4), Push::Full);
    assert_eq!(w.lost_pending(), 5);
    collect(&mut rd);
    assert_eq!(w.push_lost(0), Push::Written);
    assert_eq!(collect(&mut rd), vec![Ev::Lost(ID, 5)]);
    assert_eq!(r.lost_total(), 3);
}

#[test]
fn burst_larger_than_the_ring_counts_lost_samples_exactly() {
    const N: u64 = 50_000;
    let r = ring(2);
    let mut w = r.take_writer().unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (r2, written2, done2) = (Arc::clone(&r), Arc::clone(&written), Arc::clone(&done));
    let reader = thread::spawn(move || {
        let mut rd = LibbpfPerf::open(&r2);
        let (mut seen, mut lost) = (Vec::new(), 0u64);
        loop {
            let finished = done2.load(Ordering::Acquire);
            rd.read(|e, _| {
                match e {
                    PerfEvent::Sample { data, .. } => seen.push(decode_sample(data, 500)),
                    PerfEvent::Lost { lost: n, .. } => lost += n,
                }
                true
            });
            if finished {
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(seen, *written2.lock().unwrap());
        (seen.len() as u64, lost)
    });
    let mut full = 0u64;
    for seq in 0..N {
        match w.push_sample(&payload(seq, len_of(seq, 500))) {
            Push::Written => written.lock().unwrap().push(seq),
            Push::Full => full += 1,
            Push::TooLarge => unreachable!(),
        }
    }
    done.store(true, Ordering::Release);
    let (seen, lost) = reader.join().unwrap();
    assert_eq!(seen + full, N);
    assert_eq!(r.lost_total(), full);
    assert_eq!(lost + w.lost_pending(), full);
    assert!(full > 0 && seen > 0, "full {full} seen {seen}");
}

/// `(len, prot, flags, offset, expected)`.
type MmapCase = (usize, i32, i32, i64, Result<(), i32>);

fn errno_of(r: &HostPerfRing, len: usize, prot: i32, flags: i32, off: i64) -> Result<(), i32> {
    match r.map_for(ptr::null_mut(), len, prot, flags, off) {
        Ok(p) => {
            // SAFETY: unmapping what map_for just mapped.
            unsafe { libc::munmap(p, len) };
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[test]
fn map_for_refuses_what_perf_mmap_refuses() {
    let r = ring(8);
    let p = page_size();
    let all = 9 * p;
    let (ro, rw) = (libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE);
    let s = libc::MAP_SHARED;
    let cases: &[MmapCase] = &[
        (all, rw, s, 0, Ok(())),
        (all, ro, s, 0, Ok(())),
        (all - 100, rw, s, 0, Ok(())),
        (all, rw, libc::MAP_SHARED_VALIDATE, 0, Ok(())),
        (5 * p, rw, s, 0, Err(libc::EINVAL)),
        (p, rw, s, 0, Err(libc::EINVAL)),
        (all + p, rw, s, 0, Err(libc::EINVAL)),
        (all, rw, libc::MAP_PRIVATE, 0, Err(libc::EINVAL)),
        (p, rw, s, p as i64, Err(libc::EINVAL)),
        (all, rw, s, 8, Err(libc::EINVAL)),
        (0, rw, s, 0, Err(libc::EINVAL)),
        (all, rw | libc::PROT_EXEC, s, 0, Err(libc::EPERM)),
        (all, rw, s, -(p as i64), Err(libc::EOVERFLOW)),
    ];
    for &(len, prot, flags, off, want) in cases {
        assert_eq!(
            errno_of(&r, len, prot, flags, off),
            want,
            "len {len:#x} prot {prot} flags {flags:#x} off {off:#x}"
        );
        assert_eq!(r.check_mmap(ptr::null_mut(), len, prot, flags, off), want);
    }
}

#[test]
fn map_for_honours_map_fixed() {
    let r = ring(1);
    let len = r.mmap_len();
    // SAFETY: reserving fresh anonymous address space.
    let hole = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(hole, libc::MAP_FAILED);
    let m = r
        .map_for(
            hole,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            0,
        )
        .unwrap();
    assert_eq!(m, hole);
    // SAFETY: data_offset lies in the mapping's first page.
    let off = unsafe { m.cast::<u8>().add(DATA_OFFSET).cast::<u64>().read() };
    assert_eq!(off, page_size() as u64);
    // SAFETY: unmapping it.
    unsafe { libc::munmap(m, len) };
}

/// On the real kernel: `map_for` must agree with `mmap` on a BPF output
/// perf event whose ring exists, request by request; the metadata fields
/// libbpf reads must match.
#[test]
fn map_for_agrees_with_the_kernel_when_perf_is_available() {
    let Some(k) = crate::kernel::PerfSetup::new() else {
        eprintln!("skipped: cannot open a BPF output perf event here");
        return;
    };
    let r = ring(8);
    let p = page_size() as i64;
    let kr = LibbpfPerf::open_fd(k.event.0, 8);
    let ours = LibbpfPerf::open(&r);
    for off in [DATA_OFFSET, DATA_SIZE, USERPAGE_SIZE_FIELD, CAPABILITIES] {
        // SAFETY: aligned fields of both live metadata pages.
        let (a, b) = unsafe {
            (
                kr.base().add(off).cast::<u64>().read(),
                ours.base().add(off).cast::<u64>().read(),
            )
        };
        if off == USERPAGE_SIZE_FIELD {
            assert_eq!(a as u32, b as u32, "size");
        } else {
            assert_eq!(a, b, "field at {off}");
        }
    }
    let offs = [0, p, 8, -p];
    let lens = [
        1,
        p as usize,
        5 * p as usize,
        9 * p as usize,
        9 * p as usize - 100,
        10 * p as usize,
        0,
    ];
    let prots = [
        libc::PROT_READ,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_WRITE,
        libc::PROT_NONE,
    ];
    let flagss = [
        libc::MAP_SHARED,
        libc::MAP_PRIVATE,
        libc::MAP_SHARED_VALIDATE,
        0,
    ];
    for &off in &offs {
        for &len in &lens {
            for &prot in &prots {
                for &flags in &flagss {
                    let kern = crate::kernel::try_mmap(k.event.0, len, prot, flags, off);
                    let mine = errno_of(&r, len, prot, flags, off);
                    assert_eq!(
                        mine, kern,
                        "len {len:#x} prot {prot} flags {flags:#x} off {off:#x}"
                    );
                }
            }
        }
    }
    drop(k.array);
}

/// The real kernel writes samples with `bpf_perf_event_output` from a BPF
/// program run by `BPF_PROG_TEST_RUN`; our writer, fed the same samples with
/// the same consumption, must leave byte-identical data, heads and lost
/// records.
#[test]
fn records_are_byte_identical_to_the_kernels_when_perf_is_available() {
    let Some(k) = crate::kernel::PerfSetup::new() else {
        eprintln!("skipped: cannot open a BPF output perf event here");
        return;
    };
    let r = Arc::new(HostPerfRing::new(1, k.event_id).unwrap());
    let mut w = r.take_writer().unwrap();
    let mut kr = LibbpfPerf::open_fd(k.event.0, 1);
    let mut ours = LibbpfPerf::open(&r);
    let mut progs = HashMap::new();
    let mut lost_seen = 0;
    for i in 0..800usize {
        let size = (i * 29 + 3) % 301;
        let prog = match progs.entry(size) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => match crate::kernel::PerfProg::load(k.array.0, size) {
                Some(p) => v.insert(p),
                None => {
                    eprintln!("skipped: cannot load a BPF program here");
                    return;
                }
            },
        };
        let k_ok = prog.run();
        let ok = w.push_sample(&crate::kernel::pattern(size)) == Push::Written;
        assert_eq!(ok, k_ok, "sample {i} size {size}");
        assert_eq!(kr.data_head(), r.data_head(), "head after sample {i}");
        let (a, b) = (kr.data(), ours.data());
        if let Some(at) = (0..a.len()).find(|&j| a[j] != b[j]) {
            let lo = at.saturating_sub(16) & !7;
            panic!(
                "data after sample {i} differ at {at} (head {}): kernel {:?} ours {:?}",
                r.data_head(),
                &a[lo..(lo + 64).min(a.len())],
                &b[lo..(lo + 64).min(b.len())]
            );
        }
        // Consume in bursts, with long stretches where the ring fills up.
        if i % 40 == 39 || i % 40 == 13 {
            let a = collect(&mut kr);
            let b = collect(&mut ours);
            lost_seen += b.iter().filter(|e| matches!(e, Ev::Lost(..))).count();
            assert_eq!(a, b);
        }
    }
    assert!(lost_seen > 0, "the sequence never overflowed");
    assert!(r.lost_total() > 0);
}

#[test]
fn fits_agrees_with_push_and_counts_nothing() {
    let ring = Arc::new(HostPerfRing::new(1, 0).unwrap());
    let mut w = ring.take_writer().unwrap();
    let raw = [7u8; 100];
    loop {
        let fits = w.fits(raw.len());
        let before = w.lost_total();
        let pushed = w.push_sample(&raw);
        assert_eq!(fits, matches!(pushed, Push::Written));
        if !fits {
            assert_eq!(w.lost_total(), before + 1, "push counts the loss");
            break;
        }
    }
    let counted = w.lost_total();
    assert!(!w.fits(raw.len()));
    assert_eq!(w.lost_total(), counted, "fits never counts");
}
