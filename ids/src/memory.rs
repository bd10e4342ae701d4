//! The host's copy of guest kernel memory: an address-keyed cache at page
//! granularity (bulk-page batches) and at data granularity (bulk-data
//! records and per-pointer reads). A walk starts with an empty one, so
//! nothing read in an earlier walk is ever served again.

use std::collections::{BTreeMap, HashMap};

use telebpf_collectors::record::GUEST_PAGE;

/// Cached guest memory.
#[derive(Debug, Default)]
pub struct GuestMemory {
    pages: HashMap<u64, Box<[u8]>>,
    /// Start address → (offset in `arena`, length).
    spans: BTreeMap<u64, (usize, usize)>,
    arena: Vec<u8>,
    /// The span that served the last read: walks read neighbouring fields.
    last: Option<(u64, usize, usize)>,
}

impl GuestMemory {
    /// An empty cache.
    pub fn new() -> GuestMemory {
        GuestMemory::default()
    }

    /// Adds one guest page (`bytes` is a whole page).
    pub fn insert_page(&mut self, page: u64, bytes: &[u8]) {
        self.pages.insert(page, bytes.into());
    }

    /// Adds the bytes read at `addr`.
    pub fn insert(&mut self, addr: u64, bytes: &[u8]) {
        let at = self.arena.len();
        self.arena.extend_from_slice(bytes);
        // A longer read of the same address wins.
        match self.spans.get(&addr) {
            Some(&(_, len)) if len >= bytes.len() => {}
            _ => {
                self.spans.insert(addr, (at, bytes.len()));
            }
        }
    }

    /// Bytes held (pages and spans).
    pub fn len(&self) -> usize {
        self.pages.len() * GUEST_PAGE as usize + self.arena.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.spans.is_empty()
    }

    /// Copies `buf.len()` bytes at `addr` into `buf` if they are all held.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        if let Some((start, at, n)) = self.last {
            if addr >= start && addr - start + len as u64 <= n as u64 {
                let off = at + (addr - start) as usize;
                buf.copy_from_slice(&self.arena[off..off + len]);
                return true;
            }
        }
        if let Some((&start, &(at, n))) = self.spans.range(..=addr).next_back() {
            if addr - start + len as u64 <= n as u64 {
                let off = at + (addr - start) as usize;
                buf.copy_from_slice(&self.arena[off..off + len]);
                self.last = Some((start, at, n));
                return true;
            }
        }
        self.read_pages(addr, buf)
    }

    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let page = a & !(GUEST_PAGE - 1);
            let Some(bytes) = self.pages.get(&page) else {
                return false;
            };
            let off = (a - page) as usize;
            let n = (buf.len() - done).min(GUEST_PAGE as usize - off);
            buf[done..done + n].copy_from_slice(&bytes[off..off + n]);
            done += n;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_serve_contained_reads_only() {
        let mut m = GuestMemory::new();
        m.insert(0x1000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = [0u8; 4];
        assert!(m.read(0x1002, &mut b));
        assert_eq!(b, [3, 4, 5, 6]);
        assert!(!m.read(0x1006, &mut b), "runs past the span");
        assert!(!m.read(0xffc, &mut b), "starts before it");
    }

    #[test]
    fn pages_serve_reads_across_a_page_boundary() {
        let mut m = GuestMemory::new();
        m.insert_page(0x1000, &[0xaa; 4096]);
        m.insert_page(0x2000, &[0xbb; 4096]);
        let mut b = [0u8; 4];
        assert!(m.read(0x1ffe, &mut b));
        assert_eq!(b, [0xaa, 0xaa, 0xbb, 0xbb]);
        assert!(!m.read(0x2ffe, &mut b), "the next page is not held");
        assert_eq!(m.len(), 8192);
    }
}
