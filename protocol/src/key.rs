//! The pre-shared 256-bit key that client and proxy authenticate each other with.
//!
//! # Key file format
//!
//! A key file is one line of ASCII:
//!
//! ```text
//! telebpf-psk-v1 <64 lowercase hex digits>\n
//! ```
//!
//! i.e. the literal tag `telebpf-psk-v1`, one space, the 32 key bytes as 64
//! lowercase hexadecimal digits, and a newline (the newline may be missing
//! when reading; nothing else may follow). [`Psk::write_new`] creates the
//! file with mode `0600` and refuses to follow a symlink.
//!
//! # Who may read it
//!
//! Whoever reads the key holds it, so [`Psk::from_file`] refuses, as ssh
//! refuses such private keys, a key file that anyone but its owner may
//! read or change (any group or other permission bit: `chmod 600` fixes
//! it), and one owned by another user than the reader (who could read it
//! or replace it) unless that user is root. The checks are made on the
//! open file itself (`fstat`), so the file checked is the file read.
//!
//! # Key id
//!
//! Each key has a public 8-byte id, the first 8 bytes of
//! `SHA-256("telebpf key id" || key)`. The client sends it in its hello so a
//! proxy holding several keys knows which one to prove; the id reveals nothing
//! useful about the key itself.
//!
//! Reading a key file uses only `std::fs` (so it works from inside the preload
//! library).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Tag at the start of a key file line.
pub const KEY_FILE_TAG: &str = "telebpf-psk-v1";
/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a [`KeyId`] in bytes.
pub const KEY_ID_LEN: usize = 8;
/// Longest key file we read (the line is 80 bytes; a little slack for "\r\n").
const MAX_KEY_FILE: u64 = 128;

/// Public identifier of a key: first 8 bytes of `SHA-256("telebpf key id" || key)`.
pub type KeyId = [u8; KEY_ID_LEN];

/// A pre-shared 256-bit key. Zeroized on drop; `Debug` does not show it.
#[derive(Clone)]
pub struct Psk([u8; KEY_LEN]);

/// Errors about keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system random source failed.
    #[error("cannot generate a key: system random source failed: {0}")]
    Random(getrandom::Error),
    /// Opening or reading the key file failed.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is larger than a key file can be.
    #[error("key file {path} is too large to be a telebpf key file (expected one line `telebpf-psk-v1 <64 hex>`)")]
    TooLarge {
        /// The key file.
        path: PathBuf,
    },
    /// The key file's content is not `telebpf-psk-v1 <64 lowercase hex>\n`.
    #[error("key file {path} is malformed: {reason} (expected one line `telebpf-psk-v1 <64 lowercase hex>`)")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Others than the key file's owner may read or change it.
    #[error(
        "key file {path} has mode {mode:04o}: others than its owner may read or change it \
         (run `chmod 600 {path}`)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user than the reader (and not root).
    #[error(
        "key file {path} is owned by uid {owner}, who could read or replace it: \
         a key file must belong to its user (uid {reader}) or root"
    )]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The reading process's effective uid.
        reader: u32,
    },
    /// The key file is not a regular file (a directory, a FIFO, a device).
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// A key text (not from a file) is malformed.
    #[error("malformed key: {0} (expected `telebpf-psk-v1 <64 lowercase hex>`)")]
    Parse(&'static str),
    /// `write_new` found a symlink at the path.
    #[error("refusing to write key file {path}: it is a symlink")]
    Symlink {
        /// The key file.
        path: PathBuf,
    },
    /// `write_new` found something other than a regular file at the path.
    #[error("refusing to write key file {path}: it exists and is not a regular file")]
    NotRegular {
        /// The key file.
        path: PathBuf,
    },
    /// Creating, writing or syncing the key file failed.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Psk {
    /// A fresh random key from the system random source.
    pub fn generate() -> Result<Psk, KeyError> {
        let mut k = Psk([0; KEY_LEN]);
        getrandom::fill(&mut k.0).map_err(KeyError::Random)?;
        Ok(k)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Psk {
        Psk(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public key id (see the module doc).
    pub fn key_id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"telebpf key id");
        h.update(self.0);
        let digest = h.finalize();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// The key file line, `telebpf-psk-v1 <64 lowercase hex>\n`.
    pub fn to_line(&self) -> Zeroizing<String> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = Zeroizing::new(String::with_capacity(KEY_FILE_TAG.len() + 2 + 2 * KEY_LEN));
        s.push_str(KEY_FILE_TAG);
        s.push(' ');
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s.push('\n');
        s
    }

    /// Parses the key file content (one line; the final newline is optional).
    pub fn parse(text: &[u8]) -> Result<Psk, KeyError> {
        parse_line(text).map_err(KeyError::Parse)
    }

    /// Reads a key file (see the module doc for the format and for who
    /// may read it).
    pub fn from_file(path: &Path) -> Result<Psk, KeyError> {
        use std::os::unix::fs::MetadataExt;
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: a FIFO put in its place must not hang the reader
        // before the checks below refuse it.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.file_type().is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        // SAFETY: geteuid has no preconditions.
        let reader = unsafe { libc::geteuid() };
        if meta.uid() != reader && meta.uid() != 0 {
            return Err(KeyError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                reader,
            });
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if buf.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
            });
        }
        parse_line(&buf).map_err(|reason| KeyError::Format {
            path: path.to_owned(),
            reason,
        })
    }

    /// Generates a key and writes it to a new key file at `path`, created (or
    /// truncated) with mode 0600. Refuses a symlink or a non-regular file.
    pub fn write_new(path: &Path) -> Result<Psk, KeyError> {
        let psk = Psk::generate()?;
        psk.write_to(path)?;
        Ok(psk)
    }

    /// Writes this key to `path` like [`Psk::write_new`] does.
    pub fn write_to(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(KeyError::Symlink {
                    path: path.to_owned(),
                })
            }
            Ok(m) if !m.file_type().is_file() => {
                return Err(KeyError::NotRegular {
                    path: path.to_owned(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(e)),
        }
        // O_NOFOLLOW closes the race between the check above and the open;
        // O_NONBLOCK keeps a FIFO swapped in meanwhile from blocking the open.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    KeyError::Symlink {
                        path: path.to_owned(),
                    }
                } else {
                    write_err(e)
                }
            })?;
        let meta = file.metadata().map_err(write_err)?;
        let ft = meta.file_type();
        if !ft.is_file() || ft.is_fifo() || ft.is_socket() {
            return Err(KeyError::NotRegular {
                path: path.to_owned(),
            });
        }
        // fchmod: an existing file keeps its old mode through O_CREAT.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        file.write_all(self.to_line().as_bytes())
            .map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        Ok(())
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_line(text: &[u8]) -> Result<Psk, &'static str> {
    let line = text.strip_suffix(b"\n").unwrap_or(text);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_prefix(KEY_FILE_TAG.as_bytes())
        .ok_or("it does not start with `telebpf-psk-v1`")?;
    let hex = rest
        .strip_prefix(b" ")
        .ok_or("expected one space after `telebpf-psk-v1`")?;
    if hex.contains(&b'\n') {
        return Err("it has more than one line");
    }
    if hex.len() != 2 * KEY_LEN {
        return Err("the key is not exactly 64 hex digits");
    }
    let mut key = Psk([0; KEY_LEN]);
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (hex_val(pair[0]), hex_val(pair[1])) else {
            return Err("the key contains a character that is not a lowercase hex digit");
        };
        key.0[i] = hi << 4 | lo;
    }
    Ok(key)
}

impl PartialEq for Psk {
    /// Constant-time comparison.
    fn eq(&self, other: &Psk) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for Psk {}

impl Drop for Psk {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(**)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_hides_key() {
        let k = Psk::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "Psk(**)");
    }

    #[test]
    fn line_round_trip() {
        let k = Psk::generate().unwrap();
        let line = k.to_line();
        assert_eq!(line.len(), 15 + 64 + 1);
        assert!(line.starts_with("telebpf-psk-v1 "));
        assert_eq!(Psk::parse(line.as_bytes()).unwrap(), k);
        assert_eq!(
            Psk::parse(line.trim_end().as_bytes()).unwrap(),
            k,
            "newline optional"
        );
        let k = Psk::from_bytes(*b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff");
        assert_eq!(
            &**k.to_line(),
            "telebpf-psk-v1 000102030405060708090a0b0c0d0e0ff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\n"
        );
    }

    #[test]
    fn key_ids_differ() {
        let a = Psk::from_bytes([1; 32]);
        let b = Psk::from_bytes([2; 32]);
        assert_ne!(a.key_id(), b.key_id());
        assert_eq!(a.key_id(), Psk::from_bytes([1; 32]).key_id());
    }

    #[test]
    fn file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        // Pre-existing file with a loose mode: must end up 0600.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let k = Psk::write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(Psk::from_file(&path).unwrap(), k);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("telebpf-psk-v1 ") && text.ends_with('\n'));

        let fresh = dir.path().join("fresh");
        let k2 = Psk::write_new(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(Psk::from_file(&fresh).unwrap(), k2);
        assert_ne!(k, k2);
    }

    #[test]
    fn write_refuses_symlink_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            Psk::write_new(&link),
            Err(KeyError::Symlink { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            Psk::write_new(&dangling),
            Err(KeyError::Symlink { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert!(matches!(
            Psk::write_new(dir.path()),
            Err(KeyError::NotRegular { .. })
        ));
    }

    #[test]
    fn key_files_others_may_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let k = Psk::write_new(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644, 0o660, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Psk::from_file(&path).unwrap_err();
            assert!(
                matches!(e, KeyError::Exposed { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            let text = e.to_string();
            assert!(text.contains(&format!("mode 0{mode:o}")), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(Psk::from_file(&path).unwrap(), k, "{mode:o}");
        }
        assert!(matches!(
            Psk::from_file(dir.path()),
            Err(KeyError::NotAFile { .. })
        ));
        // Another user's key file (only root can make one here).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let e = Psk::from_file(&path).unwrap_err();
            assert!(
                matches!(
                    e,
                    KeyError::Owner {
                        owner: 65534,
                        reader: 0,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn bad_formats_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let good = "telebpf-psk-v1 ".to_owned() + &"0f".repeat(32);
        assert!(Psk::parse(good.as_bytes()).is_ok());
        let cases: Vec<String> = vec![
            String::new(),
            "\n".into(),
            "telebpf-psk-v2 ".to_owned() + &"0f".repeat(32) + "\n",
            "telebpf-psk-v1  ".to_owned() + &"0f".repeat(32) + "\n",
            "telebpf-psk-v1\t".to_owned() + &"0f".repeat(32) + "\n",
            "telebpf-psk-v1 ".to_owned() + &"0F".repeat(32) + "\n",
            "telebpf-psk-v1 ".to_owned() + &"0f".repeat(31) + "\n",
            "telebpf-psk-v1 ".to_owned() + &"0f".repeat(33) + "\n",
            "telebpf-psk-v1 ".to_owned() + &"0g".repeat(32) + "\n",
            good.clone() + "\n\n",
            good.clone() + " \n",
            good.clone() + "\nextra\n",
        ];
        let write = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        for c in &cases {
            write(c);
            let e = Psk::from_file(&path).unwrap_err();
            assert!(matches!(e, KeyError::Format { .. }), "{c:?}: {e}");
            assert!(e.to_string().contains("malformed"));
        }
        write(&"x".repeat(4096));
        assert!(matches!(
            Psk::from_file(&path),
            Err(KeyError::TooLarge { .. })
        ));
        assert!(matches!(
            Psk::from_file(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}
