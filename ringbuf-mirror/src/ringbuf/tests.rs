use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;
use crate::libbpf_port::{decode, len_of, payload, roundup_len, LibbpfRing};

fn page() -> usize {
    page_size()
}

fn ring(pages: usize) -> Arc<HostRingbuf> {
    Arc::new(HostRingbuf::new((pages * page()) as u32).expect("memfd ring"))
}

/// Drains everything the libbpf port can see; returns the samples.
fn drain(r: &mut LibbpfRing) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    r.process(i64::MAX, |s| {
        out.push(s.to_vec());
        0
    });
    out
}

#[test]
fn layout_refuses_what_ringbuf_map_alloc_refuses() {
    let p = page() as u32;
    for bad in [0, 1, p / 2, 3 * p, p + 8] {
        assert_eq!(BpfRingLayout::new(bad), Err(libc::EINVAL), "{bad}");
    }
    assert_eq!(BpfRingLayout::with_page_size(4096, 3), Err(libc::EINVAL));
    let l = BpfRingLayout::new(4 * p).unwrap();
    let p = p as usize;
    assert_eq!(l.file_len(), 2 * p + 4 * p);
    assert_eq!(l.mappable_len(), 2 * p + 8 * p);
    assert_eq!(l.consumer_mapping(), (0, p));
    assert_eq!(l.producer_mapping(), (p as i64, p + 8 * p));
    // pg_off counts from struct bpf_ringbuf: RINGBUF_PGOFF + 2 + data page.
    assert_eq!(l.record_pg_off(0), 3);
    assert_eq!(l.record_pg_off(p + 8), 4);
    assert_eq!(l.record_pg_off(4 * p + 16), 3);
    assert!(HostRingbuf::new(3 * p as u32).is_err());
}

#[test]
fn record_bytes_are_the_kernels() {
    let rb = ring(1);
    let mut w = rb.take_writer().unwrap();
    assert!(rb.take_writer().is_none(), "one producer only");
    assert_eq!(w.push(&[1, 2, 3]), Push::Written);
    assert_eq!(w.push_discarded(&[9; 8]), Push::Written);
    assert_eq!(w.push(&[]), Push::Written);
    let mut r = LibbpfRing::open(&rb);
    let d = r.data_ptr();
    // SAFETY: reading the first 40 bytes of the live data mapping.
    let bytes = unsafe { std::slice::from_raw_parts(d, 40) }.to_vec();
    let word = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(word(0), 3, "len, BUSY cleared");
    assert_eq!(word(4), 3, "pg_off");
    assert_eq!(&bytes[8..11], &[1, 2, 3]);
    assert_eq!(word(16), 8 | BPF_RINGBUF_DISCARD_BIT);
    assert_eq!(word(20), 3);
    assert_eq!(word(32), 0);
    assert_eq!(rb.producer_pos(), 16 + 16 + 8);
    assert!(rb.pending());
    let got = drain(&mut r);
    assert_eq!(got, vec![vec![1, 2, 3], vec![]]);
    assert_eq!(rb.consumer_pos(), 40);
    assert!(!rb.pending());
}

#[test]
fn libbpf_consumer_reads_concurrent_writer_in_order_across_many_wraps() {
    const N: u64 = 200_000;
    const MAX_LEN: usize = 300;
    let rb = ring(4);
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    let writer = thread::spawn(move || {
        let mut full = 0u64;
        for seq in 0..N {
            let rec = payload(seq, len_of(seq, MAX_LEN));
            loop {
                match w.push(&rec) {
                    Push::Written => break,
                    Push::Full => {
                        full += 1;
                        thread::yield_now();
                    }
                    Push::TooLarge => panic!("too large"),
                }
            }
        }
        (full, w.overflow())
    });
    let rb2 = Arc::clone(&rb);
    let reader = thread::spawn(move || {
        let mut r = LibbpfRing::open(&rb2);
        let data = r.data_ptr() as usize;
        let mut next = 0u64;
        let mut wrapped = 0u64;
        while next < N {
            let n = r.process(i64::MAX, |s| {
                let at = s.as_ptr() as usize;
                assert_eq!(at % 8, 0, "8-byte aligned sample");
                if at - data + s.len() > max {
                    wrapped += 1;
                }
                assert_eq!(decode(s, MAX_LEN), next, "in order");
                next += 1;
                0
            });
            if n == 0 {
                thread::yield_now();
            }
        }
        wrapped
    });
    let (full, overflow) = writer.join().unwrap();
    let wrapped = reader.join().unwrap();
    assert_eq!(full, overflow, "every Full counted once");
    assert!(wrapped > 1000, "records wrapped only {wrapped} times");
    assert!(!rb.pending());
}

#[test]
fn wrapped_records_are_contiguous_through_the_double_mapping() {
    let rb = ring(1);
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    let mut r = LibbpfRing::open(&rb);
    let data = r.data_ptr();
    let mut crossings = 0;
    // Sizes coprime with the ring walk the record boundary over every
    // 8-byte slot of the data area, again and again.
    for seq in 0..5_000u64 {
        let len = 8 + (seq * 37 % 700) as usize;
        let rec = payload(seq, len);
        let pos = rb.producer_pos();
        assert_eq!(w.push(&rec), Push::Written);
        let start = (pos & (max - 1)) + 8;
        if start + len > max {
            crossings += 1;
            // Both copies of the data area show the same bytes.
            // SAFETY: reading inside the live 2 * max data mapping.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(data, max),
                    std::slice::from_raw_parts(data.add(max), max),
                )
            };
            assert_eq!(a, b);
        }
        let got = drain(&mut r);
        assert_eq!(got, vec![rec]);
    }
    assert!(crossings > 300, "only {crossings} records crossed the end");
}

#[test]
fn discarded_records_are_skipped_and_their_space_reclaimed() {
    let rb = ring(1);
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    let mut r = LibbpfRing::open(&rb);
    let mut expect = Vec::new();
    for seq in 0..10_000u64 {
        let rec = payload(seq, len_of(seq, 200));
        let discard = seq % 3 == 1;
        let res = if discard {
            w.push_discarded(&rec)
        } else {
            w.push(&rec)
        };
        if res == Push::Full {
            assert_eq!(drain(&mut r), std::mem::take(&mut expect));
            let again = if discard {
                w.push_discarded(&rec)
            } else {
                w.push(&rec)
            };
            assert_eq!(again, Push::Written);
        }
        if !discard {
            expect.push(rec);
        }
    }
    assert_eq!(drain(&mut r), expect);
    assert!(!rb.pending());
    // Once consumed, discarded records take no space: the ring holds as many
    // records as an empty one.
    let rec = vec![0xab; 56];
    let mut n = 0;
    while w.push(&rec) == Push::Written {
        n += 1;
    }
    assert_eq!(n, (max - 1) / 64);
}

#[test]
fn busy_record_stops_the_consumer_until_committed() {
    let rb = ring(1);
    let mut w = rb.take_writer().unwrap();
    let mut r = LibbpfRing::open(&rb);
    assert_eq!(w.push(b"first"), Push::Written);
    let res = w.reserve(5).unwrap();
    assert_eq!(w.push(b"third"), Push::Written);
    let mut seen = Vec::new();
    assert_eq!(
        r.process(i64::MAX, |s| {
            seen.push(s.to_vec());
            0
        }),
        1
    );
    assert_eq!(seen, vec![b"first".to_vec()]);
    assert_eq!(rb.consumer_pos(), 16, "stopped at the BUSY record");
    assert!(rb.pending());
    w.commit(res, b"secnd", false);
    assert_eq!(drain(&mut r), vec![b"secnd".to_vec(), b"third".to_vec()]);
}

#[test]
fn slow_consumer_gets_full_nothing_is_overwritten_then_writing_resumes() {
    let rb = ring(1);
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    let mut r = LibbpfRing::open(&rb);
    // 64-byte records: the kernel keeps prod - cons <= max - 1.
    let rec = |seq: u64| payload(seq, 56);
    let mut seq = 0;
    while w.push(&rec(seq)) == Push::Written {
        seq += 1;
    }
    assert_eq!(seq as usize, max / 64 - 1);
    assert_eq!(rb.overflow(), 1);
    for _ in 0..100 {
        assert_eq!(w.push(&rec(999)), Push::Full);
        assert_eq!(w.push_discarded(&rec(999)), Push::Full);
    }
    assert_eq!(w.overflow(), 201);
    // Smaller records that still fit are written, up to max - 8 bytes used.
    assert_eq!(w.push(&[7; 40]), Push::Written);
    assert_eq!(w.push(&[]), Push::Written);
    assert_eq!(rb.producer_pos() - rb.consumer_pos(), max - 8);
    assert_eq!(w.push(&[]), Push::Full);
    // The reader finds exactly what was written, intact.
    let got = drain(&mut r);
    assert_eq!(got.len() as u64, seq + 2);
    for (i, g) in got[..seq as usize].iter().enumerate() {
        assert_eq!(*g, rec(i as u64));
    }
    assert_eq!(got[seq as usize], vec![7; 40]);
    assert_eq!(got[seq as usize + 1], Vec::<u8>::new());
    // Caught up: writing resumes.
    assert_eq!(w.push(&rec(1000)), Push::Written);
    assert_eq!(drain(&mut r), vec![rec(1000)]);
    assert_eq!(w.overflow(), 202);
}

#[test]
fn too_large_records_are_refused_like_the_kernel() {
    let rb = ring(1);
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    assert_eq!(w.push(&vec![0; max - 7]), Push::TooLarge);
    // 8 + (max - 8) == max: passes the size check, never fits (> mask).
    assert_eq!(w.push(&vec![0; max - 8]), Push::Full);
    assert_eq!(w.push(&vec![0; max - 16]), Push::Written);
    assert_eq!(rb.overflow(), 1);
}

#[test]
fn burst_larger_than_the_ring_counts_overflow_exactly() {
    const N: u64 = 100_000;
    let rb = ring(2);
    let mut w = rb.take_writer().unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (rb2, written2, done2) = (Arc::clone(&rb), Arc::clone(&written), Arc::clone(&done));
    let reader = thread::spawn(move || {
        let mut r = LibbpfRing::open(&rb2);
        let mut seen = Vec::new();
        loop {
            let finished = done2.load(Ordering::Acquire);
            r.process(i64::MAX, |s| {
                seen.push(decode(s, 500));
                0
            });
            if finished {
                break;
            }
            // A slow consumer: the burst outruns it.
            thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(seen, *written2.lock().unwrap());
        seen.len()
    });
    let mut full = 0u64;
    for seq in 0..N {
        match w.push(&payload(seq, len_of(seq, 500))) {
            Push::Written => written.lock().unwrap().push(seq),
            Push::Full => full += 1,
            Push::TooLarge => unreachable!(),
        }
    }
    done.store(true, Ordering::Release);
    let seen = reader.join().unwrap();
    assert_eq!(seen as u64 + full, N);
    assert_eq!(rb.overflow(), full);
    assert!(full > 0 && seen > 0, "full {full} seen {seen}");
}

#[test]
fn pending_follows_the_consumer() {
    let rb = ring(1);
    let mut w = rb.take_writer().unwrap();
    let mut r = LibbpfRing::open(&rb);
    assert!(!rb.pending());
    assert_eq!(w.push(b"x"), Push::Written);
    assert!(rb.pending());
    drain(&mut r);
    assert!(!rb.pending());
    assert_eq!(w.push_discarded(b"x"), Push::Written);
    assert!(rb.pending(), "a discarded record is data until consumed");
    assert_eq!(r.process(i64::MAX, |_| 0), 0);
    assert!(!rb.pending());
}

/// `(len, prot, flags, offset, expected)`.
type MmapCase = (usize, i32, i32, i64, Result<(), i32>);

fn errno_of(rb: &HostRingbuf, len: usize, prot: i32, flags: i32, off: i64) -> Result<(), i32> {
    match rb.map_for(ptr::null_mut(), len, prot, flags, off) {
        Ok(p) => {
            // SAFETY: unmapping what map_for just mapped.
            unsafe { libc::munmap(p, len) };
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[test]
fn map_for_refuses_what_the_kernel_refuses() {
    let rb = ring(4);
    let p = page();
    let m = rb.layout().max_entries();
    let all = 2 * p + 2 * m;
    let (r, rw, w) = (
        libc::PROT_READ,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_WRITE,
    );
    let s = libc::MAP_SHARED;
    let pi = p as i64;
    let cases: &[MmapCase] = &[
        // What libbpf maps.
        (p, rw, s, 0, Ok(())),
        (p + 2 * m, r, s, pi, Ok(())),
        // Other grants: partial pages round up, any read-only sub-range.
        (100, rw, s, 0, Ok(())),
        (p, w, s, 0, Ok(())),
        (all, r, s, 0, Ok(())),
        (p, r, s, 3 * pi, Ok(())),
        (p, libc::PROT_NONE, s, 0, Ok(())),
        (p, rw, libc::MAP_SHARED_VALIDATE, 0, Ok(())),
        // ringbuf_map_mmap_kern: writable beyond the consumer page.
        (2 * p, rw, s, 0, Err(libc::EPERM)),
        (p + 2 * m, rw, s, pi, Err(libc::EPERM)),
        (p, rw, s, pi, Err(libc::EPERM)),
        (p, w, s, 2 * pi, Err(libc::EPERM)),
        // remap_vmalloc_range: beyond the vmap.
        (p + 2 * m + p, r, s, pi, Err(libc::EINVAL)),
        (p, r, s, all as i64, Err(libc::EINVAL)),
        (all + 1, r, s, 0, Err(libc::EINVAL)),
        // bpf_map_mmap: private mappings.
        (p, r, libc::MAP_PRIVATE, 0, Err(libc::EINVAL)),
        (p, rw, libc::MAP_PRIVATE, 0, Err(libc::EINVAL)),
        // do_mmap.
        (p, r, s, 100, Err(libc::EINVAL)),
        (0, r, s, 0, Err(libc::EINVAL)),
        (p, r, 0, 0, Err(libc::EINVAL)),
        (p, r, s, -pi, Err(libc::EOVERFLOW)),
        (usize::MAX - p + 1, r, s, 0, Err(libc::ENOMEM)),
        (p, r | libc::PROT_EXEC, s, 0, Err(libc::EPERM)),
    ];
    for &(len, prot, flags, off, want) in cases {
        assert_eq!(
            errno_of(&rb, len, prot, flags, off),
            want,
            "len {len:#x} prot {prot} flags {flags:#x} off {off:#x}"
        );
        assert_eq!(
            rb.layout()
                .check_mmap(ptr::null_mut(), len, prot, flags, off),
            want
        );
    }
}

#[test]
fn map_for_read_only_cannot_be_made_writable() {
    let rb = ring(1);
    let p = page();
    let len = p + 2 * rb.layout().max_entries();
    let m = rb
        .map_for(
            ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            p as i64,
        )
        .unwrap();
    // SAFETY: changing protection of our own fresh mapping.
    let rc = unsafe { libc::mprotect(m, p, libc::PROT_READ | libc::PROT_WRITE) };
    let e = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((rc, e), (-1, Some(libc::EACCES)));
    // SAFETY: unmapping it.
    unsafe { libc::munmap(m, len) };
}

#[test]
fn map_for_honours_map_fixed_and_maps_data_twice() {
    let rb = ring(2);
    let p = page();
    let max = rb.layout().max_entries();
    let len = p + 2 * max;
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
    let m = rb
        .map_for(
            hole,
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            p as i64,
        )
        .unwrap();
    assert_eq!(m, hole);
    // MAP_FIXED_NOREPLACE over it is refused by mmap itself.
    assert_eq!(
        rb.map_for(
            hole,
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
            p as i64
        ),
        Err(libc::EEXIST)
    );
    let mut w = rb.take_writer().unwrap();
    let big = payload(42, max - 64);
    assert_eq!(w.push(&big), Push::Written);
    // SAFETY: reading inside the mapping.
    let data = unsafe { m.cast::<u8>().add(p) };
    // SAFETY: both copies lie inside the mapping.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(data, max),
            std::slice::from_raw_parts(data.add(max), max),
        )
    };
    assert_eq!(a, b);
    assert_eq!(&a[8..8 + big.len()], &big[..]);
    // SAFETY: the producer position is the mapping's first word.
    let prod = unsafe { m.cast::<usize>().read_volatile() };
    assert_eq!(prod, roundup_len(big.len() as u32));
    // SAFETY: unmapping it.
    unsafe { libc::munmap(m, len) };
}

/// The real kernel, where this process may create BPF maps: `map_for` must
/// agree with `mmap` on a real ring buffer map fd, request by request.
#[test]
fn map_for_agrees_with_the_kernel_when_bpf_is_available() {
    let Some(kfd) = crate::kernel::ringbuf_map(4 * page() as u32) else {
        eprintln!("skipped: cannot create a BPF ring buffer map here");
        return;
    };
    let rb = ring(4);
    let p = page() as i64;
    let m = 4 * p;
    let offs = [
        0,
        p,
        2 * p,
        3 * p,
        2 * p + m,
        2 * p + 2 * m - p,
        2 * p + 2 * m,
        8,
        -p,
    ];
    let lens = [
        1,
        p as usize,
        2 * p as usize,
        (p + 2 * m) as usize,
        (2 * p + 2 * m) as usize,
        (2 * p + 2 * m) as usize + 1,
        0,
        usize::MAX - 4095,
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
        libc::MAP_SHARED | libc::MAP_POPULATE,
    ];
    let mut n = 0;
    for &off in &offs {
        for &len in &lens {
            for &prot in &prots {
                for &flags in &flagss {
                    let k = crate::kernel::try_mmap(kfd.0, len, prot, flags, off);
                    let ours = errno_of(&rb, len, prot, flags, off);
                    assert_eq!(
                        ours, k,
                        "len {len:#x} prot {prot} flags {flags:#x} off {off:#x}"
                    );
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, offs.len() * lens.len() * prots.len() * flagss.len());
}

/// The real kernel writes records with `bpf_ringbuf_output` from a BPF
/// program run by `BPF_PROG_TEST_RUN`; our writer, fed the same records,
/// must leave byte-identical data and positions.
#[test]
fn records_are_byte_identical_to_the_kernels_when_bpf_is_available() {
    let max = page() as u32;
    let Some(kfd) = crate::kernel::ringbuf_map(max) else {
        eprintln!("skipped: cannot create a BPF ring buffer map here");
        return;
    };
    let rb = ring(1);
    let mut w = rb.take_writer().unwrap();
    let mut kr = LibbpfRing::open_fd(kfd.0, max as usize);
    let mut r = LibbpfRing::open(&rb);
    let sizes: Vec<usize> = (0..600).map(|i| (i * 29 + 3) % 301).collect();
    let mut progs = HashMap::new();
    for (i, &size) in sizes.iter().enumerate() {
        let discard = i % 5 == 2;
        let key = (size, discard);
        let prog = match progs.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => match crate::kernel::RingbufProg::load(kfd.0, size, discard) {
                Some(p) => v.insert(p),
                None => {
                    eprintln!("skipped: cannot load a BPF program here");
                    return;
                }
            },
        };
        let k_ok = prog.run();
        let rec = crate::kernel::pattern(size);
        let ours = if discard {
            w.push_discarded(&rec)
        } else {
            w.push(&rec)
        };
        assert_eq!(ours == Push::Written, k_ok, "record {i} size {size}");
        assert_eq!(
            r_data(&kr, max as usize),
            r_data(&r, max as usize),
            "after record {i}"
        );
        assert_eq!(kr.producer_pos(), rb.producer_pos());
        assert_eq!(crate::kernel::readable(kfd.0), rb.pending());
        if i % 7 == 6 {
            // Consume both, the same way.
            assert_eq!(drain(&mut kr), drain(&mut r));
            assert_eq!(crate::kernel::readable(kfd.0), rb.pending());
        }
    }
}

fn r_data(r: &LibbpfRing, max: usize) -> Vec<u8> {
    // SAFETY: the first copy of the live data mapping.
    unsafe { std::slice::from_raw_parts(r.data_ptr(), max) }.to_vec()
}

#[test]
fn fits_agrees_with_push_and_counts_nothing() {
    let rb = Arc::new(HostRingbuf::new(crate::page_size() as u32).unwrap());
    let mut w = rb.take_writer().unwrap();
    let rec = [7u8; 100];
    loop {
        let fits = w.fits(rec.len());
        let before = w.overflow();
        let pushed = w.push(&rec);
        assert_eq!(fits, matches!(pushed, Push::Written));
        if !fits {
            assert_eq!(w.overflow(), before + 1, "push counts the overflow");
            break;
        }
    }
    let counted = w.overflow();
    assert!(!w.fits(rec.len()));
    assert_eq!(w.overflow(), counted, "fits never counts");
}

/// A linear ring (for a program that maps the memfd itself, under the
/// supervisor) read through a plain file mapping of `[consumer][producer]
/// [data][data]` — what that program's own `mmap` gives — shows every
/// record whole, the ones that cross the end of the first copy too.
#[test]
fn a_linear_ring_reads_whole_records_through_a_file_mapping() {
    use crate::RingFile;
    let rb = Arc::new(HostRingbuf::new_linear(page() as u32).expect("memfd ring"));
    let max = rb.layout().max_entries();
    let mut w = rb.take_writer().unwrap();
    // Through map_for a linear ring is mapped file-linearly, as the kernel
    // maps the memfd for the program.
    let mut r = LibbpfRing::open(&rb);
    let mut crossings = 0;
    for seq in 0..5_000u64 {
        let len = 8 + (seq * 37 % 700) as usize;
        let rec = payload(seq, len);
        let pos = rb.producer_pos();
        assert_eq!(w.push(&rec), Push::Written);
        if (pos & (max - 1)) + 8 + len > max {
            crossings += 1;
        }
        assert_eq!(drain(&mut r), vec![rec]);
    }
    assert!(crossings > 300, "only {crossings} records crossed the end");
    // The check the supervisor makes before letting the program map it is
    // the kernel's: the producer pages are never writable.
    let p = page();
    assert_eq!(
        rb.check_mmap(
            ptr::null_mut(),
            p,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            p as i64
        ),
        Err(libc::EPERM)
    );
}
