//! One shared copy of each immutable guest file the clients read.
//!
//! Every tool starts by reading the guest's BTF (5 MB here) and often the
//! kernel config; sixty sessions reading it at once must not make sixty
//! copies. The first read of such a file (`paths::is_immutable`) keeps its
//! content here, with its SHA-256 (the `Digest` request's answer), under
//! the file's *stamp* — device, inode, size and modification time from
//! `fstat` of the file just opened — and every session then serves its
//! ranges from that one copy. A file whose stamp changed (a module
//! reloaded: new BTF file) is read afresh, under a new generation number;
//! a client that was reading the old generation gets `ESTALE` and starts
//! again.
//!
//! The copies together hold at most [`MAX_BYTES`]: the least recently used
//! go first, and a file that alone is larger is not kept (its reader gets a
//! per-session snapshot instead, charged to its bytes in flight). A copy
//! is loaded under the lock, so concurrent first readers wait for one
//! load instead of each making its own.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::Digest as _;

/// Most bytes the shared copies hold together (the 6.x vmlinux BTF is
/// 5-8 MB, module BTF and the kernel config far less).
pub const MAX_BYTES: usize = 64 << 20;

/// What identifies one version of a file: its inode and `fstat`'s size
/// and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    /// The stamp of an open file.
    pub fn of(file: &File) -> Result<Stamp, i32> {
        let m = file
            .metadata()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// One version of an immutable file.
#[derive(Debug)]
pub struct Copy {
    /// Its content.
    pub bytes: Vec<u8>,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Names this version in `FileReply::Range::snapshot` (never 0).
    pub generation: u64,
}

#[derive(Debug)]
struct Entry {
    path: String,
    stamp: Stamp,
    copy: Arc<Copy>,
    last_use: u64,
}

/// The shared copies.
#[derive(Debug, Default)]
pub struct SharedFiles {
    entries: Mutex<Vec<Entry>>,
    clock: AtomicU64,
}

/// Why a file has no shared copy.
#[derive(Debug, PartialEq, Eq)]
pub enum NotShared {
    /// It is larger than [`MAX_BYTES`]: read it as a mutable file.
    TooLarge,
    /// Reading it failed with this errno.
    Errno(i32),
}

impl SharedFiles {
    /// The copies every session shares.
    pub fn global() -> &'static SharedFiles {
        static SHARED: std::sync::OnceLock<SharedFiles> = std::sync::OnceLock::new();
        SHARED.get_or_init(SharedFiles::default)
    }

    /// The copy of `path`'s current version, `file` being `path` opened
    /// just now (its stamp decides whether the kept copy is current).
    pub fn get(&self, path: &str, file: &mut File) -> Result<Arc<Copy>, NotShared> {
        let stamp = Stamp::of(file).map_err(NotShared::Errno)?;
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = entries.iter_mut().find(|e| e.path == path) {
            if e.stamp == stamp {
                e.last_use = now;
                return Ok(e.copy.clone());
            }
        }
        entries.retain(|e| e.path != path);
        if stamp.size > MAX_BYTES as u64 {
            return Err(NotShared::TooLarge);
        }
        // Held under the lock: concurrent first readers wait for this one
        // read instead of each making a copy.
        let bytes = read_at_most(file, MAX_BYTES)?;
        let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let mut total: usize = entries.iter().map(|e| e.copy.bytes.len()).sum();
        while total + bytes.len() > MAX_BYTES {
            let Some(oldest) = (0..entries.len()).min_by_key(|&i| entries[i].last_use) else {
                break;
            };
            total -= entries.swap_remove(oldest).copy.bytes.len();
        }
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let copy = Arc::new(Copy {
            bytes,
            sha256,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
        });
        entries.push(Entry {
            path: path.to_string(),
            stamp,
            copy: copy.clone(),
            last_use: now,
        });
        Ok(copy)
    }

    /// Bytes the copies hold now.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|e| e.copy.bytes.len())
            .sum()
    }
}

/// The whole content of `file`, or `TooLarge` past `max` bytes.
fn read_at_most(file: &mut File, max: usize) -> Result<Vec<u8>, NotShared> {
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| NotShared::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    if bytes.len() > max {
        return Err(NotShared::TooLarge);
    }
    bytes.shrink_to_fit();
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let path = p.to_str().unwrap();
        let shared = SharedFiles::default();
        let a = shared.get(path, &mut File::open(&p).unwrap()).unwrap();
        let b = shared.get(path, &mut File::open(&p).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one copy for both readers");
        assert_eq!(a.bytes, b"one");
        assert_eq!(a.sha256, <[u8; 32]>::from(sha2::Sha256::digest(b"one")));
        // A new version (new size and mtime) is a new generation.
        std::fs::write(&p, b"second").unwrap();
        let c = shared.get(path, &mut File::open(&p).unwrap()).unwrap();
        assert_eq!(c.bytes, b"second");
        assert_ne!(c.generation, a.generation);
        assert_eq!(shared.bytes(), 6, "the old version is let go");
    }

    #[test]
    fn bounded() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedFiles::default();
        let big = vec![7u8; MAX_BYTES / 3];
        for i in 0..5 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, &big).unwrap();
            shared
                .get(p.to_str().unwrap(), &mut File::open(&p).unwrap())
                .unwrap();
            assert!(shared.bytes() <= MAX_BYTES);
        }
        assert_eq!(shared.bytes(), 3 * big.len());
        let p = dir.path().join("huge");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(MAX_BYTES as u64 + 1)
            .unwrap();
        assert_eq!(
            shared
                .get(p.to_str().unwrap(), &mut File::open(&p).unwrap())
                .unwrap_err(),
            NotShared::TooLarge
        );
    }
}
