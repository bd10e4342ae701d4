//! The proxy's producer into a guest `BPF_MAP_TYPE_USER_RINGBUF`.

use std::sync::atomic::Ordering;

use super::{check_bpf_regions, check_positions, RingMemory, Violation};
use crate::{BpfRingLayout, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_HDR_SZ};

/// Outcome of one [`UserRingProducer::try_produce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produced {
    /// The record is in the guest ring, committed.
    Written,
    /// Not enough free space now; nothing was written.
    NoRoom,
    /// The record can never fit this ring (8 + length, rounded up to 8,
    /// exceeds its size); nothing was written.
    TooLarge,
}

/// Produces records into a guest user ring buffer as libbpf's
/// `user_ring_buffer__reserve` and `__submit` do, treating the consumer
/// position the guest kernel writes as untrusted.
///
/// `consumer` is the read-only consumer page (`consumer_pos` at 0),
/// `producer` the read-write producer page followed by the data area mapped
/// twice; `layout` is the ring's real geometry (the kernel's map info).
#[derive(Debug)]
pub struct UserRingProducer<M> {
    consumer: M,
    producer: M,
    layout: BpfRingLayout,
    /// The producer position we stored last: only we write it.
    prod: u64,
}

impl<M: RingMemory> UserRingProducer<M> {
    /// A producer continuing at the ring's producer position now (checked
    /// with the consumer position at each record).
    pub fn new(consumer: M, producer: M, layout: BpfRingLayout) -> Result<Self, Violation> {
        check_bpf_regions(&consumer, &producer, &layout)?;
        // Relaxed: only our own later stores order anything.
        let prod = producer.load_u64(0, Ordering::Relaxed)?;
        Ok(UserRingProducer {
            consumer,
            producer,
            layout,
            prod,
        })
    }

    /// Writes `record` as one committed sample if it fits now.
    pub fn try_produce(&mut self, record: &[u8]) -> Result<Produced, Violation> {
        let size = self.layout.max_entries() as u64;
        let hdr_sz = BPF_RINGBUF_HDR_SZ as u64;
        let len = record.len() as u64;
        if len > size - hdr_sz {
            return Ok(Produced::TooLarge);
        }
        let total = (len + hdr_sz + 7) & !7;
        // Relaxed: we are the only writer of producer_pos.
        let found = self.producer.load_u64(0, Ordering::Relaxed)?;
        if found != self.prod {
            return Err(Violation::Moved {
                what: "producer",
                expected: self.prod,
                found,
            });
        }
        let prod = self.prod;
        // Acquire pairs with smp_store_release(&rb->consumer_pos) in the
        // kernel's __bpf_user_ringbuf_sample_release: the kernel has read the
        // space before we reuse it (libbpf: smp_load_acquire in
        // user_ring_buffer__reserve).
        let cons = self.consumer.load_u64(0, Ordering::Acquire)?;
        check_positions(cons, prod, size)?;
        if size - (prod - cons) < total {
            return Ok(Produced::NoRoom);
        }
        let new_prod = prod.checked_add(total).ok_or(Violation::Wraps {
            what: "producer",
            pos: prod,
        })?;
        let page = self.layout.page_size();
        let hdr = page + (prod & (size - 1)) as usize;
        let len32 = record.len() as u32;
        // Relaxed: the kernel reads the header only after it sees the
        // producer position stored with release below (libbpf: plain
        // stores of hdr->len and hdr->pad).
        self.producer
            .store_u32(hdr, len32 | BPF_RINGBUF_BUSY_BIT, Ordering::Relaxed)?;
        self.producer.store_u32(hdr + 4, 0, Ordering::Relaxed)?;
        // Release pairs with smp_load_acquire(&rb->producer_pos) in the
        // kernel's __bpf_user_ringbuf_peek (libbpf: smp_store_release in
        // user_ring_buffer__reserve).
        self.producer.store_u64(0, new_prod, Ordering::Release)?;
        self.prod = new_prod;
        // The sample follows its header contiguously thanks to the double
        // mapping: hdr + 8 + len < page + 2 * size.
        self.producer.write(hdr + BPF_RINGBUF_HDR_SZ, record)?;
        // Release pairs with smp_load_acquire(hdr) in the kernel's
        // __bpf_user_ringbuf_peek: the sample bytes are visible once BUSY is
        // clear (libbpf: smp_store_release in user_ringbuf_commit).
        self.producer.store_u32(hdr, len32, Ordering::Release)?;
        Ok(Produced::Written)
    }
}
