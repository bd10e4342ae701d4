//! The proxy's consumer of a guest `BPF_MAP_TYPE_RINGBUF`.

use std::sync::atomic::Ordering;

use super::{check_bpf_regions, check_positions, Consumed, RecordSink, RingMemory, Violation};
use crate::{BpfRingLayout, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ};

/// Consumes a guest BPF ring buffer as libbpf's `ringbuf_process_ring`
/// does, checking every position and record header it reads.
///
/// `consumer` is the read-write consumer page (`consumer_pos` at offset 0),
/// `producer` the read-only producer page (`producer_pos` at 0) followed by
/// the data area mapped twice, as libbpf maps them; `layout` is the ring's
/// real geometry (from the kernel's map info, never from a client).
#[derive(Debug)]
pub struct RingbufConsumer<M> {
    consumer: M,
    producer: M,
    layout: BpfRingLayout,
    /// The consumer position we stored last: only we write it.
    cons: u64,
}

impl<M: RingMemory> RingbufConsumer<M> {
    /// A consumer of the ring in `consumer` and `producer`, starting where
    /// the ring's consumer position is now (checked at the first
    /// [`RingbufConsumer::consume`]).
    pub fn new(consumer: M, producer: M, layout: BpfRingLayout) -> Result<Self, Violation> {
        check_bpf_regions(&consumer, &producer, &layout)?;
        // Relaxed: only our own later stores order anything; the value is
        // checked against the producer position before it is used.
        let cons = consumer.load_u64(0, Ordering::Relaxed)?;
        Ok(RingbufConsumer {
            consumer,
            producer,
            layout,
            cons,
        })
    }

    /// The ring's geometry.
    pub fn layout(&self) -> BpfRingLayout {
        self.layout
    }

    /// Moves committed records into `sink` until it holds `limit` bytes or
    /// the ring is empty. Stops (leaving the ring as it is) at the first
    /// failed check.
    pub fn consume(
        &mut self,
        sink: &mut dyn RecordSink,
        limit: usize,
    ) -> Result<Consumed, Violation> {
        let size = self.layout.max_entries() as u64;
        let page = self.layout.page_size();
        let hdr_sz = BPF_RINGBUF_HDR_SZ as u64;
        // Relaxed: we are the only writer of consumer_pos; any other value
        // than the one we stored means someone else consumes this ring.
        let found = self.consumer.load_u64(0, Ordering::Relaxed)?;
        if found != self.cons {
            return Err(Violation::Moved {
                what: "consumer",
                expected: self.cons,
                found,
            });
        }
        let mut cons = self.cons;
        // Acquire pairs with the smp_store_release of producer_pos in the
        // kernel's __bpf_ringbuf_reserve: the headers of every record below
        // it (BUSY until committed) are visible.
        let prod = self.producer.load_u64(0, Ordering::Acquire)?;
        check_positions(cons, prod, size)?;
        let mut busy = false;
        while cons < prod && sink.taken() < limit {
            // 8-byte aligned and below `size`: `cons` is aligned (checked
            // above, and every step below is a multiple of 8).
            let off = (cons & (size - 1)) as usize;
            // Acquire pairs with the smp_store_release (xchg) of the header
            // in bpf_ringbuf_commit: a record without BUSY is fully written.
            let hdr = self.producer.load_u32(page + off, Ordering::Acquire)?;
            if hdr & BPF_RINGBUF_BUSY_BIT != 0 {
                // Still being written: its commit wakes us again.
                busy = true;
                break;
            }
            let len = u64::from(hdr & !BPF_RINGBUF_DISCARD_BIT);
            if len > size - hdr_sz {
                return Err(Violation::RecordTooLong {
                    pos: cons,
                    len,
                    max: size - hdr_sz,
                });
            }
            let total = (len + hdr_sz + 7) & !7;
            if total > prod - cons {
                return Err(Violation::RecordPastProducer {
                    pos: cons,
                    total,
                    prod,
                });
            }
            if hdr & BPF_RINGBUF_DISCARD_BIT == 0 {
                // The data follows its header contiguously thanks to the
                // double mapping: off + 8 + len < 2 * size.
                let out = sink.record(len as usize);
                self.producer.read(page + off + BPF_RINGBUF_HDR_SZ, out)?;
            }
            cons += total;
        }
        // Release pairs with the smp_load_acquire of consumer_pos in
        // __bpf_ringbuf_reserve: the space is reused only after our copies.
        self.consumer.store_u64(0, cons, Ordering::Release)?;
        self.cons = cons;
        Ok(Consumed {
            more: !busy && cons < prod,
            lost: 0,
        })
    }
}
