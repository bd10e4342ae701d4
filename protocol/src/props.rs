//! Property tests: every [`Request`] and [`Reply`] survives encode → decode,
//! no strict prefix of an encoding decodes, and sealed frames open to what
//! was sealed, in order, and to nothing else.

use proptest::prelude::*;
use telebpf_abi::{MapMeta, ObjectKind};

use crate::message::*;
use crate::seal::{Opener, Sealer, LEN_PREFIX};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/sys/kernel/btf/vmlinux".to_string()),
        Just("/sys/fs/bpf/a/b".to_string()),
        any::<String>(),
    ]
}

fn wire_buffer() -> impl Strategy<Value = WireBuffer> {
    prop_oneof![
        bytes(300).prop_map(WireBuffer::Data),
        any::<u64>().prop_map(WireBuffer::Out),
    ]
}

fn bpf_call() -> impl Strategy<Value = BpfCall> {
    (
        any::<u32>(),
        any::<u32>(),
        bytes(200),
        prop::option::of(bytes(40)),
        any::<u32>(),
        prop::collection::vec(wire_buffer(), 0..6),
    )
        .prop_map(|(cmd, size, attr, common, common_size, buffers)| BpfCall {
            cmd,
            size,
            attr,
            common,
            common_size,
            buffers,
        })
}

fn file_op() -> impl Strategy<Value = FileOp> {
    prop_oneof![
        path().prop_map(|path| FileOp::Read { path }),
        (path(), any::<bool>()).prop_map(|(path, follow)| FileOp::Stat { path, follow }),
        path().prop_map(|path| FileOp::Statfs { path }),
        (path(), any::<i32>()).prop_map(|(path, mode)| FileOp::Access { path, mode }),
        path().prop_map(|path| FileOp::Readlink { path }),
        (path(), any::<u32>()).prop_map(|(path, mode)| FileOp::Mkdir { path, mode }),
        path().prop_map(|path| FileOp::Unlink { path }),
        path().prop_map(|path| FileOp::Rmdir { path }),
        (path(), bytes(100)).prop_map(|(path, data)| FileOp::Append { path, data }),
        path().prop_map(|path| FileOp::Digest { path }),
        any::<i32>().prop_map(|fd| FileOp::Fdinfo { fd }),
        path().prop_map(|path| FileOp::ReadDir { path }),
        (path(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
            |(path, offset, len, snapshot)| FileOp::ReadRange {
                path,
                offset,
                len,
                snapshot,
            }
        ),
    ]
}

fn ioctl_value() -> impl Strategy<Value = IoctlValue> {
    prop_oneof![
        any::<u64>().prop_map(IoctlValue::Value),
        any::<i32>().prop_map(IoctlValue::Fd),
        Just(IoctlValue::Out),
        bytes(64).prop_map(IoctlValue::String),
        Just(IoctlValue::Unreadable),
    ]
}

fn stream_kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![
        any::<u32>().prop_map(|pages| StreamKind::Perf { pages }),
        any::<u32>().prop_map(|max_entries| StreamKind::Ringbuf { max_entries }),
        any::<u32>().prop_map(|max_entries| StreamKind::UserRingbuf { max_entries }),
    ]
}

fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(bytes(80), 0..8)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        bpf_call().prop_map(Request::Bpf),
        any::<i32>().prop_map(|fd| Request::Close { fd }),
        (any::<i32>(), any::<u32>()).prop_map(|(fd, len)| Request::Read { fd, len }),
        file_op().prop_map(Request::File),
        bytes(100).prop_map(Request::Ping),
        (
            bytes(136),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<u64>(),
            prop::option::of(bytes(40)),
        )
            .prop_map(|(attr, pid, cpu, group_fd, flags, config1_string)| {
                Request::PerfEventOpen {
                    attr,
                    pid,
                    cpu,
                    group_fd,
                    flags,
                    config1_string,
                }
            }),
        (any::<i32>(), any::<u64>(), ioctl_value()).prop_map(|(fd, cmd, arg)| Request::Ioctl {
            fd,
            cmd,
            arg
        }),
        (any::<i32>(), any::<u64>(), any::<u64>())
            .prop_map(|(fd, len, offset)| Request::MapSnapshot { fd, len, offset }),
        (any::<i32>(), any::<u64>(), bytes(100)).prop_map(|(fd, offset, data)| Request::MapWrite {
            fd,
            offset,
            data
        }),
        (any::<[u8; 16]>(), any::<i32>(), stream_kind()).prop_map(|(session, fd, kind)| {
            Request::Stream(StreamRequest { session, fd, kind })
        }),
        records().prop_map(Request::Records),
        (
            any::<[u8; 32]>(),
            prop::option::of(bytes(64)),
            prop::sample::select(vec![
                CollectMode::Roots,
                CollectMode::Page,
                CollectMode::Data
            ]),
            prop::sample::select(vec![Start::Current, Start::ModuleList]),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(collector, object, mode, start, base)| {
                Request::Collect(CollectRequest {
                    collector,
                    object: object.map(serde_bytes::ByteBuf::from),
                    mode,
                    start,
                    base,
                })
            }),
        prop::collection::vec(
            (any::<u64>(), any::<u32>()).prop_map(|(addr, len)| MemoryRange { addr, len }),
            0..6
        )
        .prop_map(Request::Peek),
    ]
}

fn object_kind() -> impl Strategy<Value = ObjectKind> {
    prop_oneof![
        any::<[u32; 5]>().prop_map(|m| ObjectKind::Map(MapMeta {
            map_type: m[0],
            key_size: m[1],
            value_size: m[2],
            max_entries: m[3],
            map_flags: m[4],
        })),
        any::<u32>().prop_map(|prog_type| ObjectKind::Prog { prog_type }),
        Just(ObjectKind::Link),
        Just(ObjectKind::Btf),
        Just(ObjectKind::Iter),
        Just(ObjectKind::Other),
    ]
}

fn new_object() -> impl Strategy<Value = NewObject> {
    (object_kind(), any::<String>(), any::<Option<u32>>()).prop_map(|(kind, link, link_type)| {
        NewObject {
            kind,
            link,
            link_type,
        }
    })
}

fn errno_or<T: std::fmt::Debug>(
    ok: impl Strategy<Value = T>,
) -> impl Strategy<Value = Result<T, i32>> {
    prop_oneof![ok.prop_map(Ok), any::<i32>().prop_map(Err)]
}

fn file_reply() -> impl Strategy<Value = FileReply> {
    let stat = (
        any::<[u64; 5]>(),
        any::<[u32; 3]>(),
        any::<[i64; 3]>(),
        any::<[(i64, i64); 3]>(),
    )
        .prop_map(|(a, b, c, times)| {
            FileReply::Stat(StatInfo {
                dev: a[0],
                ino: a[1],
                mode: b[0],
                nlink: a[2],
                uid: b[1],
                gid: b[2],
                rdev: a[3],
                size: c[0],
                blksize: c[1],
                blocks: c[2],
                times,
            })
        });
    let statfs = (any::<[i64; 4]>(), any::<[u64; 5]>()).prop_map(|(a, counts)| {
        FileReply::Statfs(StatfsInfo {
            fs_type: a[0],
            bsize: a[1],
            counts,
            namelen: a[2],
            frsize: a[3],
        })
    });
    prop_oneof![
        bytes(200).prop_map(FileReply::Data),
        stat,
        statfs,
        any::<String>().prop_map(FileReply::Link),
        Just(FileReply::Done),
        (any::<[u8; 32]>(), any::<u64>())
            .prop_map(|(sha256, size)| FileReply::Digest { sha256, size }),
        (any::<u64>(), any::<u64>(), bytes(200)).prop_map(|(size, snapshot, data)| {
            FileReply::Range {
                size,
                snapshot,
                data,
            }
        }),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        any::<[u64; 4]>(),
        bytes(100),
        prop::collection::vec(any::<u64>(), 0..4),
        bytes(100),
        prop::collection::vec(any::<u64>(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(n, records, pages, page_data, kept, page_base)| Batch {
            root: n[0],
            status: n[1],
            visited: n[2],
            dropped: n[3],
            records,
            pages,
            page_data,
            kept,
            page_base,
        })
}

fn reply() -> impl Strategy<Value = Reply> {
    let welcome = (
        any::<[String; 6]>(),
        any::<u32>(),
        any::<[[u32; 2]; 3]>(),
        any::<String>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(uname, possible_cpus, caps, proxy_version, session)| {
            Reply::Welcome(Welcome {
                facts: Facts {
                    uname,
                    possible_cpus,
                    caps,
                    proxy_version,
                },
                session,
            })
        });
    let bpf = (
        any::<i64>(),
        any::<i32>(),
        bytes(200),
        prop::option::of(bytes(40)),
        prop::collection::vec((any::<u32>(), bytes(100)), 0..5),
        prop::option::of(new_object()),
    )
        .prop_map(|(ret, errno, attr, common, out, object)| {
            Reply::Bpf(BpfResult {
                ret,
                errno,
                attr,
                common,
                out,
                object,
            })
        });
    prop_oneof![
        welcome,
        bpf,
        errno_or(bytes(100)).prop_map(Reply::Read),
        errno_or(file_reply()).prop_map(Reply::File),
        bytes(100).prop_map(Reply::Pong),
        (any::<i32>(), any::<String>())
            .prop_map(|(errno, message)| Reply::Error(ErrorReply { errno, message })),
        errno_or((any::<i64>(), new_object())).prop_map(Reply::Opened),
        errno_or((any::<i64>(), any::<Option<u64>>())).prop_map(Reply::Ioctl),
        errno_or(bytes(100)).prop_map(Reply::Snapshot),
        records().prop_map(Reply::Records),
        any::<u64>().prop_map(Reply::Lost),
        errno_or(batch()).prop_map(|r| Reply::Collected(r.map_err(CollectError::Run))),
        prop_oneof![
            Just(CollectError::UnknownCollector),
            any::<String>().prop_map(CollectError::Load),
            any::<String>().prop_map(CollectError::Unsupported),
        ]
        .prop_map(|e| Reply::Collected(Err(e))),
        errno_or(
            (prop::collection::vec(any::<bool>(), 0..6), bytes(64))
                .prop_map(|(readable, bytes)| Memory { readable, bytes })
        )
        .prop_map(Reply::Memory),
        any::<[String; 4]>().prop_map(|[what, rule, key, policy]| Reply::Refused(Refusal {
            what,
            rule,
            key,
            policy,
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(req in request(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&req).unwrap();
        prop_assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        // Decoding is deterministic from the first byte, so a strict prefix
        // of an encoding never decodes.
        let n = cut.index(bytes.len());
        prop_assert!(decode::<Request>(&bytes[..n]).is_err());
    }

    #[test]
    fn replies_round_trip(rep in reply(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&rep).unwrap();
        prop_assert_eq!(decode::<Reply>(&bytes).unwrap(), rep.clone());
        let n = cut.index(bytes.len());
        prop_assert!(decode::<Reply>(&bytes[..n]).is_err());
        // The borrowed fast path agrees with the decoder.
        match (&rep, records_in(&bytes)) {
            (Reply::Records(r), Some(it)) => {
                prop_assert_eq!(it.map(<[u8]>::to_vec).collect::<Vec<_>>(), r.clone());
            }
            (Reply::Records(_), None) => prop_assert!(false, "records_in missed a Records reply"),
            (_, Some(_)) => prop_assert!(false, "records_in took another reply for Records"),
            (_, None) => {}
        }
    }

    #[test]
    fn sealed_frames_open_in_order(
        key in any::<[u8; 32]>(),
        msgs in prop::collection::vec(bytes(300), 1..6),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let mut sealer = Sealer::new(&key);
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| sealer.seal(m)).collect();
        let mut opener = Opener::new(&key);
        for (frame, msg) in frames.iter().zip(&msgs) {
            let prefix: [u8; 4] = frame[..LEN_PREFIX].try_into().unwrap();
            prop_assert_eq!(&opener.open(&frame[LEN_PREFIX..], prefix).unwrap(), msg);
        }
        // One changed bit anywhere in a frame: it does not open.
        let (at, bit) = flip;
        let mut bad = frames[0].clone();
        let i = at.index(bad.len());
        bad[i] ^= 1 << (bit % 8);
        let prefix: [u8; 4] = bad[..LEN_PREFIX].try_into().unwrap();
        prop_assert!(Opener::new(&key).open(&bad[LEN_PREFIX..], prefix).is_err());
    }
}
