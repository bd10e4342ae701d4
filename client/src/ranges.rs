//! Reading a guest file range by range.
//!
//! The proxy answers a file in ranges of at most
//! [`telebpf_protocol::message::FILE_CHUNK`] bytes, one reply at a time
//! (see "Files" in `telebpf_protocol::message`): the first range names the
//! content's size and a snapshot, every further range names that
//! snapshot. A snapshot the proxy no longer has (the file changed, or the
//! proxy let the copy go) answers `ESTALE`; the read then starts again, a
//! few times at most.

use telebpf_protocol::message::{FileOp, FileReply, FILE_CHUNK};

/// How often a read starts again after `ESTALE` before it gives up.
const RESTARTS: usize = 3;

/// The whole content of guest file `path`, through `op` (which carries a
/// file request to the proxy; each caller has its own way to reach it).
/// `malformed` is the error for a reply of the wrong kind or a range that
/// does not fit the content; `stale` says whether an error is `ESTALE`.
pub fn read_whole<E>(
    path: &str,
    mut op: impl FnMut(FileOp) -> Result<FileReply, E>,
    malformed: impl Fn() -> E,
    stale: impl Fn(&E) -> bool,
) -> Result<Vec<u8>, E> {
    let mut restarts = 0;
    loop {
        match read_once(path, &mut op, &malformed) {
            Err(e) if stale(&e) && restarts < RESTARTS => restarts += 1,
            other => return other,
        }
    }
}

fn read_once<E>(
    path: &str,
    op: &mut impl FnMut(FileOp) -> Result<FileReply, E>,
    malformed: &impl Fn() -> E,
) -> Result<Vec<u8>, E> {
    let mut range = |offset: u64, snapshot: u64| match op(FileOp::ReadRange {
        path: path.to_string(),
        offset,
        len: FILE_CHUNK as u32,
        snapshot,
    })? {
        FileReply::Range {
            size,
            snapshot,
            data,
        } => Ok((size, snapshot, data)),
        _ => Err(malformed()),
    };
    let (size, snapshot, mut content) = range(0, 0)?;
    // The size is the proxy's word: grow as the ranges arrive rather
    // than reserve all of it at once.
    while (content.len() as u64) < size {
        if snapshot == 0 {
            return Err(malformed());
        }
        let (_, _, data) = range(content.len() as u64, snapshot)?;
        if data.is_empty() || content.len() as u64 + data.len() as u64 > size {
            return Err(malformed());
        }
        content.extend_from_slice(&data);
    }
    if content.len() as u64 != size {
        return Err(malformed());
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake proxy serving `content` in ranges of `chunk`, whose snapshot
    /// goes stale `stale_after` ranges into the first read.
    fn serve(
        content: &[u8],
        chunk: usize,
        mut stale_after: Option<usize>,
    ) -> impl FnMut(FileOp) -> Result<FileReply, i32> + '_ {
        let mut served = 0;
        move |op| {
            let FileOp::ReadRange {
                offset, snapshot, ..
            } = op
            else {
                return Err(libc::EINVAL);
            };
            served += 1;
            if snapshot != 0 && stale_after.is_some_and(|n| served > n) {
                stale_after = None;
                return Err(libc::ESTALE);
            }
            let start = (offset as usize).min(content.len());
            let end = (start + chunk).min(content.len());
            Ok(FileReply::Range {
                size: content.len() as u64,
                snapshot: if content.len() <= chunk { 0 } else { 9 },
                data: content[start..end].to_vec(),
            })
        }
    }

    #[test]
    fn whole_content_range_by_range() {
        let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let got = read_whole(
            "/f",
            serve(&content, 3000, None),
            || libc::EPROTO,
            |e| *e == libc::ESTALE,
        )
        .unwrap();
        assert_eq!(got, content);
        let got = read_whole(
            "/f",
            serve(b"small", 3000, None),
            || libc::EPROTO,
            |_| false,
        );
        assert_eq!(got.unwrap(), b"small");
        let got = read_whole("/f", serve(b"", 3000, None), || libc::EPROTO, |_| false);
        assert_eq!(got.unwrap(), b"");
    }

    #[test]
    fn a_stale_snapshot_restarts_the_read() {
        let content = vec![5u8; 10_000];
        let got = read_whole(
            "/f",
            serve(&content, 3000, Some(2)),
            || libc::EPROTO,
            |e| *e == libc::ESTALE,
        );
        assert_eq!(got.unwrap(), content);
    }

    #[test]
    fn a_proxy_that_lies_about_sizes_is_malformed() {
        // Claims more than it ever sends.
        let liar = |_op: FileOp| {
            Ok::<_, i32>(FileReply::Range {
                size: 1 << 40,
                snapshot: 1,
                data: Vec::new(),
            })
        };
        assert_eq!(
            read_whole("/f", liar, || libc::EPROTO, |_| false),
            Err(libc::EPROTO)
        );
        let wrong = |_op: FileOp| Ok::<_, i32>(FileReply::Done);
        assert_eq!(
            read_whole("/f", wrong, || libc::EPROTO, |_| false),
            Err(libc::EPROTO)
        );
    }
}
