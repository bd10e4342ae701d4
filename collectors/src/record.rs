//! The collectors' shared layouts (mirrors of `bpf/collector.h`) and the
//! parser of their records.

/// Guest pages are 4 KiB: the collectors record page addresses on that grid.
pub const GUEST_PAGE: u64 = 4096;

/// The bytes of a record's header: address (8), length (4), padding (4).
pub const HEADER_LEN: usize = 16;

/// What a run records (`MODE_*` in collector.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Mode {
    /// Only the start of the walk.
    Roots = 0,
    /// Page addresses.
    Page = 1,
    /// Address, length and bytes of every read.
    Data = 2,
}

/// How a run ended (`STATUS_*` in collector.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The walk completed.
    Complete,
    /// The ring buffer filled up: records are missing.
    RingFull,
    /// The walk hit its bound before its end.
    TooMany,
    /// No start address.
    NoRoot,
    /// The kernel's layout is not one the collector knows.
    Unsupported,
    /// A value this version does not know.
    Other(u64),
}

impl Status {
    /// Decodes `ctx.status`.
    pub fn from_raw(raw: u64) -> Status {
        match raw {
            0 => Status::Complete,
            1 => Status::RingFull,
            2 => Status::TooMany,
            3 => Status::NoRoot,
            4 => Status::Unsupported,
            other => Status::Other(other),
        }
    }
}

/// `struct collect_ctx`: the BPF_PROG_TEST_RUN context, in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CollectCtx {
    /// In: [`Mode`].
    pub mode: u64,
    /// In: the run's generation (non-zero, new for every run).
    pub gen: u64,
    /// In: a start address the caller knows (the module list).
    pub root_in: u64,
    /// Out: where the walk starts.
    pub root: u64,
    /// Out: records written.
    pub records: u64,
    /// Out: records lost to a full ring.
    pub dropped: u64,
    /// Out: objects visited.
    pub visited: u64,
    /// Out: [`Status`] as a number.
    pub status: u64,
}

impl CollectCtx {
    /// The context as the bytes test_run takes.
    pub fn to_bytes(self) -> [u8; 64] {
        let fields = [
            self.mode,
            self.gen,
            self.root_in,
            self.root,
            self.records,
            self.dropped,
            self.visited,
            self.status,
        ];
        let mut out = [0u8; 64];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        out
    }

    /// The context from the bytes test_run wrote back.
    pub fn from_bytes(bytes: &[u8; 64]) -> CollectCtx {
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        CollectCtx {
            mode: f(0),
            gen: f(1),
            root_in: f(2),
            root: f(3),
            records: f(4),
            dropped: f(5),
            visited: f(6),
            status: f(7),
        }
    }
}

/// One record: a read at `addr` of `len` bytes, with the bytes in data mode
/// (empty in page mode, where `addr` is a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kernel address.
    pub addr: u64,
    /// Bytes read.
    pub len: u32,
    /// The bytes (data mode) or empty (page mode).
    pub bytes: &'a [u8],
}

/// A record stream that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed collector record at byte {0}")]
pub struct Malformed(pub usize);

/// Iterates over concatenated records (header, then `len` bytes in data
/// mode; header only in page mode).
pub fn records(
    buf: &[u8],
    with_bytes: bool,
) -> impl Iterator<Item = Result<Record<'_>, Malformed>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let Some(header) = buf.get(at..at + HEADER_LEN) else {
            at = buf.len();
            return Some(Err(Malformed(at)));
        };
        let addr = u64::from_ne_bytes(header[0..8].try_into().expect("8 bytes"));
        let len = u32::from_ne_bytes(header[8..12].try_into().expect("4 bytes"));
        let start = at + HEADER_LEN;
        let end = if with_bytes {
            start + len as usize
        } else {
            start
        };
        let Some(bytes) = buf.get(start..end) else {
            let bad = at;
            at = buf.len();
            return Some(Err(Malformed(bad)));
        };
        at = end;
        Some(Ok(Record { addr, len, bytes }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_round_trips() {
        let ctx = CollectCtx {
            mode: 2,
            gen: 7,
            root_in: 0xffff_8880_0000_1000,
            root: 1,
            records: 2,
            dropped: 3,
            visited: 4,
            status: 1,
        };
        assert_eq!(CollectCtx::from_bytes(&ctx.to_bytes()), ctx);
        assert_eq!(std::mem::size_of::<CollectCtx>(), 64);
    }

    #[test]
    fn records_parse_and_reject_truncation() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&0x1000u64.to_ne_bytes());
        buf.extend_from_slice(&3u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(b"abc");
        let all: Vec<_> = records(&buf, true).collect();
        assert_eq!(
            all,
            vec![Ok(Record {
                addr: 0x1000,
                len: 3,
                bytes: b"abc"
            })]
        );
        buf.pop();
        assert_eq!(records(&buf, true).next(), Some(Err(Malformed(0))));
        assert_eq!(records(&buf[..10], false).next(), Some(Err(Malformed(10))));
    }
}
