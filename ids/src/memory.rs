//! The host's copy of guest kernel memory: an address-keyed cache at page
//! granularity (bulk-page batches) and at data granularity (bulk-data
//! records and per-pointer reads). A walk starts with an empty one, so
//! nothing read in an earlier walk is ever served again — except pages the
//! proxy has just compared with the guest's and found unchanged (a page
//! batch's `kept`): those are served from the [`PageSet`] of the previous
//! batch, which is what the guest holds now.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use telebpf_collectors::pages::PageSet;
use telebpf_collectors::record::GUEST_PAGE;

const PAGE: usize = GUEST_PAGE as usize;

/// Cached guest memory.
#[derive(Debug, Default)]
pub struct GuestMemory {
    pages: PageSet,
    /// Start address → (offset in `arena`, length): most reads are of
    /// exactly a recorded field.
    exact: FxHashMap<u64, (usize, usize)>,
    /// The same spans by address, built on the first read that is not of
    /// a recorded start (a bucket inside a recorded table chunk).
    spans: Option<BTreeMap<u64, (usize, usize)>>,
    arena: Vec<u8>,
    /// The span that served the last read: walks read neighbouring fields.
    last: Option<(u64, usize, usize)>,
}

impl GuestMemory {
    /// An empty cache.
    pub fn new() -> GuestMemory {
        GuestMemory::default()
    }

    /// Serves `pages` (taken, not copied), in place of any held.
    pub fn set_pages(&mut self, pages: PageSet) {
        self.pages = pages;
    }

    /// Gives back the pages, for the next batch's base.
    pub fn into_pages(self) -> PageSet {
        self.pages
    }

    /// A cache over `records` (data-mode records: header, then bytes),
    /// kept as they are: nothing is copied.
    pub fn from_records(
        records: Vec<u8>,
    ) -> Result<GuestMemory, telebpf_collectors::record::Malformed> {
        let mut memory = GuestMemory::default();
        let mut index = Vec::new();
        for rec in telebpf_collectors::record::records(&records, true) {
            let rec = rec?;
            let at = rec.bytes.as_ptr() as usize - records.as_ptr() as usize;
            index.push((rec.addr, at, rec.bytes.len()));
        }
        memory.exact.reserve(index.len());
        for (addr, at, len) in index {
            memory.index(addr, at, len);
        }
        memory.arena = records;
        Ok(memory)
    }

    fn index(&mut self, addr: u64, at: usize, len: usize) {
        // A longer read of the same address wins.
        match self.exact.entry(addr) {
            std::collections::hash_map::Entry::Occupied(e) if e.get().1 >= len => return,
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.insert((at, len));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((at, len));
            }
        }
        if let Some(spans) = self.spans.as_mut() {
            spans.insert(addr, (at, len));
        }
    }

    /// Adds the bytes read at `addr`.
    pub fn insert(&mut self, addr: u64, bytes: &[u8]) {
        let at = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.index(addr, at, bytes.len());
    }

    /// Bytes held (pages and spans).
    pub fn len(&self) -> usize {
        self.pages.len() * PAGE + self.arena.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.exact.is_empty()
    }

    /// Whether all `len` bytes at `addr` are held.
    pub fn holds(&mut self, addr: u64, len: usize) -> bool {
        self.locate(addr, len).is_some() || self.pages_hold(addr, len)
    }

    /// Copies `buf.len()` bytes at `addr` into `buf` if they are all held.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        if let Some(off) = self.locate(addr, buf.len()) {
            buf.copy_from_slice(&self.arena[off..off + buf.len()]);
            return true;
        }
        self.read_pages(addr, buf)
    }

    /// Where in the arena the `len` bytes at `addr` are, if one span holds
    /// them all.
    fn locate(&mut self, addr: u64, len: usize) -> Option<usize> {
        if let Some(&(at, n)) = self.exact.get(&addr) {
            if len <= n {
                return Some(at);
            }
        }
        if let Some((start, at, n)) = self.last {
            if addr >= start && addr - start + len as u64 <= n as u64 {
                return Some(at + (addr - start) as usize);
            }
        }
        if self.exact.is_empty() {
            return None;
        }
        let exact = &self.exact;
        let spans = self
            .spans
            .get_or_insert_with(|| exact.iter().map(|(&a, &v)| (a, v)).collect());
        let (&start, &(at, n)) = spans.range(..=addr).next_back()?;
        if addr - start + len as u64 > n as u64 {
            return None;
        }
        self.last = Some((start, at, n));
        Some(at + (addr - start) as usize)
    }

    /// Whether held pages cover all `len` bytes at `addr`.
    fn pages_hold(&self, addr: u64, len: usize) -> bool {
        let first = addr & !(GUEST_PAGE - 1);
        let end = addr + len as u64;
        (first..end)
            .step_by(GUEST_PAGE as usize)
            .all(|page| self.pages.contains(page))
    }

    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let page = a & !(GUEST_PAGE - 1);
            let Some(bytes) = self.pages.page(page) else {
                return false;
            };
            let off = (a - page) as usize;
            let n = (buf.len() - done).min(PAGE - off);
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
        assert!(m.holds(0x1000, 8) && !m.holds(0x1000, 9));
    }

    #[test]
    fn pages_serve_reads_across_a_page_boundary() {
        let mut m = GuestMemory::new();
        let mut data = vec![0xaa; 4096];
        data.extend([0xbb; 4096]);
        m.set_pages(PageSet::new(&[0x1000, 0x2000], data));
        let mut b = [0u8; 4];
        assert!(m.read(0x1ffe, &mut b));
        assert_eq!(b, [0xaa, 0xaa, 0xbb, 0xbb]);
        assert!(!m.read(0x2ffe, &mut b), "the next page is not held");
        assert!(m.holds(0x1ffe, 4) && !m.holds(0x2ffe, 4));
        assert_eq!(m.len(), 8192);
    }
}
