//! Whole guest pages by address, and the delta between two page batches.
//!
//! A monitor walks the same structures again and again, and most of the
//! pages it touches (idle tasks, empty hash buckets) do not change between
//! walks. The proxy keeps each session's last page batch of a collector and
//! the client keeps the same pages; the next batch then carries only the
//! pages whose bytes changed and the addresses of the others. Both sides
//! build the next set with [`PageSet::next`]: an unchanged page is never
//! copied, a changed one overwrites its old copy in place.

use rustc_hash::FxHashMap;

use crate::record::GUEST_PAGE;

const PAGE: usize = GUEST_PAGE as usize;

/// Whole guest pages by address.
#[derive(Debug, Default)]
pub struct PageSet {
    /// Page address → offset of the page in `arena`.
    index: FxHashMap<u64, usize>,
    /// The pages; after [`NextPages::finish`] it may also hold pages no
    /// longer indexed (at most as many bytes as the indexed ones).
    arena: Vec<u8>,
}

/// A delta named a page that the set it applies to does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page {0:#x} was kept, but the previous batch did not hold it")]
pub struct NotInBase(pub u64);

impl PageSet {
    /// The pages at `addrs`, whose bytes are `data` in the same order
    /// (kept as it is: nothing is copied).
    pub fn new(addrs: &[u64], data: Vec<u8>) -> PageSet {
        let mut index = FxHashMap::with_capacity_and_hasher(addrs.len(), Default::default());
        for (i, &page) in addrs.iter().enumerate() {
            index.insert(page, i * PAGE);
        }
        PageSet { index, arena: data }
    }

    /// How many pages.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of memory the set holds (its arena).
    pub fn held_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Whether the page at `page` is held.
    pub fn contains(&self, page: u64) -> bool {
        self.index.contains_key(&page)
    }

    /// The bytes of the page at `page`.
    pub fn page(&self, page: u64) -> Option<&[u8]> {
        let &at = self.index.get(&page)?;
        Some(&self.arena[at..at + PAGE])
    }

    /// Starts the next batch's set from this one.
    pub fn next(self) -> NextPages {
        NextPages {
            index: FxHashMap::with_capacity_and_hasher(self.index.len(), Default::default()),
            old: self,
        }
    }

    /// The next batch's pages from this one's: `kept` as they are here,
    /// `changed` (bytes `data`, one page each, in order) new.
    pub fn update(self, kept: &[u64], changed: &[u64], data: &[u8]) -> Result<PageSet, NotInBase> {
        let mut next = self.next();
        for &page in kept {
            next.keep(page)?;
        }
        for (page, bytes) in changed.iter().zip(data.chunks_exact(PAGE)) {
            next.put(*page, bytes);
        }
        Ok(next.finish())
    }
}

/// The next batch's [`PageSet`], built page by page over the previous one.
#[derive(Debug)]
pub struct NextPages {
    old: PageSet,
    index: FxHashMap<u64, usize>,
}

impl NextPages {
    /// Whether the previous set holds `page` with exactly these bytes.
    pub fn unchanged(&self, page: u64, bytes: &[u8]) -> bool {
        self.old.page(page) == Some(bytes)
    }

    /// The page is in the next set as the previous set holds it.
    pub fn keep(&mut self, page: u64) -> Result<(), NotInBase> {
        let &at = self.old.index.get(&page).ok_or(NotInBase(page))?;
        self.index.insert(page, at);
        Ok(())
    }

    /// The page is in the next set with these bytes (a whole page).
    pub fn put(&mut self, page: u64, bytes: &[u8]) {
        let bytes = &bytes[..PAGE];
        let at = match self.old.index.get(&page) {
            // Its old copy is not part of the next set: reuse its room.
            Some(&at) => {
                self.old.arena[at..at + PAGE].copy_from_slice(bytes);
                at
            }
            None => {
                self.old.arena.extend_from_slice(bytes);
                self.old.arena.len() - PAGE
            }
        };
        self.index.insert(page, at);
    }

    /// The next set. Its arena is compacted when pages no longer indexed
    /// would make up more than half of it.
    pub fn finish(self) -> PageSet {
        let mut set = PageSet {
            index: self.index,
            arena: self.old.arena,
        };
        if set.arena.len() > 2 * PAGE * set.index.len().max(1) {
            let mut arena = Vec::with_capacity(set.index.len() * PAGE);
            for at in set.index.values_mut() {
                arena.extend_from_slice(&set.arena[*at..*at + PAGE]);
                *at = arena.len() - PAGE;
            }
            set.arena = arena;
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(fill: &[u8]) -> Vec<u8> {
        fill.iter().flat_map(|&b| [b; PAGE]).collect()
    }

    #[test]
    fn an_update_keeps_changes_and_drops_the_rest() {
        let base = PageSet::new(&[0x1000, 0x2000, 0x3000], pages(&[1, 2, 3]));
        let next = base
            .update(&[0x1000], &[0x2000, 0x4000], &pages(&[9, 4]))
            .unwrap();
        assert_eq!(next.len(), 3);
        assert_eq!(next.page(0x1000).unwrap()[0], 1);
        assert_eq!(next.page(0x2000).unwrap()[0], 9);
        assert_eq!(next.page(0x4000).unwrap()[0], 4);
        assert!(next.page(0x3000).is_none(), "not in the new batch");
        assert_eq!(
            next.update(&[0x3000], &[], &[]).unwrap_err(),
            NotInBase(0x3000)
        );
    }

    #[test]
    fn unchanged_compares_whole_pages() {
        let base = PageSet::new(&[0x1000], pages(&[1]));
        let next = base.next();
        let mut same = pages(&[1]);
        assert!(next.unchanged(0x1000, &same));
        same[PAGE - 1] = 2;
        assert!(!next.unchanged(0x1000, &same));
        assert!(!next.unchanged(0x2000, &pages(&[1])));
    }

    #[test]
    fn dead_pages_are_compacted() {
        let mut set = PageSet::new(&[0x1000], pages(&[1]));
        for i in 2..10u64 {
            set = set.update(&[], &[i * 0x1000], &pages(&[i as u8])).unwrap();
            assert!(set.held_bytes() <= 2 * PAGE, "{} bytes", set.held_bytes());
            assert_eq!(set.page(i * 0x1000).unwrap()[0], i as u8);
        }
    }
}
