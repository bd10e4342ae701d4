//! Property test: the marshalling of every command round-trips between the
//! host and the proxy ([`crate::roundtrip::check`]: the real gather, patch,
//! collect and scatter around a fake kernel) for generated attrs, objects,
//! buffer contents and kernel results.

use proptest::prelude::*;
use telebpf_abi::cmd::{BPF_COMMON_ATTRS, BPF_PROG_ASSOC_STRUCT_OPS};
use telebpf_abi::{off, MapMeta, ObjectKind};

use crate::fake::{Entry, FakeKernel, FakeMemory, Fill, Table};
use crate::roundtrip::{check, Call, Verdict};

/// The largest buffer the property copies (one read, one reservation).
const LIMIT: usize = 1 << 20;

/// A 32-bit word that is often meaningful: zero, a small count, one of the
/// table's fds, a size, an instruction head (`ld_imm64` with each pseudo
/// source, a kfunc call with an `fd_array` offset), a flag, or anything.
fn word() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(0u32),
        3 => 1..16u32,
        3 => 3..9u32,
        1 => prop::sample::select(vec![4u32, 8, 16, 64, 100, 4096, 1 << 16, 1 << 20]),
        // ld_imm64 (0x18) with src_reg 1..=6 in the high nibble of byte 1.
        2 => (1..7u32).prop_map(|src| 0x18 | (src << 12)),
        // call (0x85) with src_reg BPF_PSEUDO_KFUNC_CALL and a small `off`.
        1 => (0..8u32).prop_map(|off| 0x85 | (2 << 12) | (off << 16)),
        1 => prop::sample::select(vec![1u32 << 2, 1 << 5, 1 << 13, 1 << 14, 1 << 15, 1 << 16]),
        2 => any::<u32>(),
    ]
}

fn words(n: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(word(), n).prop_map(|w| w.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn kind() -> impl Strategy<Value = (Option<ObjectKind>, Option<u32>)> {
    let map = (0..40u32, 0..16u32, 0..24u32, 0..4u32).prop_map(|(t, k, v, f)| {
        Some(ObjectKind::Map(MapMeta {
            map_type: t,
            key_size: k * 4,
            value_size: v * 4,
            max_entries: 16,
            map_flags: f,
        }))
    });
    prop_oneof![
        3 => map.prop_map(|k| (k, None)),
        3 => (0..40u32).prop_map(|t| (Some(ObjectKind::Prog { prog_type: t }), None)),
        1 => (0..18u32).prop_map(|t| (Some(ObjectKind::Link), Some(t).filter(|t| *t != 0))),
        1 => Just((Some(ObjectKind::Btf), None)),
        1 => Just((Some(ObjectKind::Iter), None)),
        1 => Just((None, None)),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    (prop::collection::vec((kind(), any::<bool>()), 6), 1..9u32).prop_map(|(kinds, cpus)| Table {
        entries: kinds
            .into_iter()
            .enumerate()
            .map(|(i, ((kind, link_type), ops))| Entry {
                host_fd: 3 + i as i32,
                kind,
                link_type,
                struct_ops: ops.then(|| vec![8, 16]),
            })
            .collect(),
        cpus,
    })
}

/// An attr: mostly the full union, sometimes cut short.
fn attr() -> impl Strategy<Value = Vec<u8>> {
    (words(off::ATTR_SIZE / 4), 0..6usize).prop_map(|(mut a, cut)| {
        if cut == 0 {
            let n = a.len() / 2;
            a.truncate(n);
        }
        a
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, ..ProptestConfig::default() })]

    #[test]
    fn host_and_proxy_plans_agree(
        cmd in 0..=BPF_PROG_ASSOC_STRUCT_OPS + 1,
        with_common in prop::bool::weighted(0.2),
        attr in attr(),
        common in prop::option::of(words(0..6usize)),
        table in table(),
        contents in prop::collection::vec(words(0..48usize), 1..6),
        seed in any::<u32>(),
    ) {
        let raw_cmd = if with_common { cmd | BPF_COMMON_ATTRS } else { cmd };
        let call = Call { raw_cmd, attr: &attr, common: common.as_deref() };
        let mem = FakeMemory::new(Fill::Chunks(contents), LIMIT);
        match check(&table, call, &mem, FakeKernel { seed }) {
            Ok(Verdict::Agreed(plan)) => prop_assert_eq!(plan.cmd, cmd),
            Ok(Verdict::HostRefused(errno)) => prop_assert!(errno > 0),
            Ok(Verdict::NotCopied(n)) => prop_assert!(n > LIMIT, "declined {} bytes", n),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

/// The generator reaches the interesting part: most calls are planned by
/// both sides, and some of them carry buffers and fds.
#[test]
fn generated_calls_mostly_agree() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut agreed, mut with_buffers, mut with_fds) = (0, 0, 0);
    let strategy = (
        0..=BPF_PROG_ASSOC_STRUCT_OPS,
        attr(),
        table(),
        words(0..48usize),
        any::<u32>(),
    );
    for _ in 0..2000 {
        let (cmd, attr, table, content, seed) = strategy.new_tree(&mut runner).unwrap().current();
        let call = Call {
            raw_cmd: cmd,
            attr: &attr,
            common: None,
        };
        let mem = FakeMemory::new(Fill::Chunks(vec![content]), LIMIT);
        if let Ok(Verdict::Agreed(plan)) = check(&table, call, &mem, FakeKernel { seed }) {
            agreed += 1;
            with_buffers += usize::from(!plan.buffers.is_empty());
            with_fds += usize::from(plan.fds.iter().any(|s| s.value > 0));
        }
    }
    assert!(agreed > 600, "only {agreed} of 2000 calls were planned");
    assert!(with_buffers > 200, "only {with_buffers} plans with buffers");
    assert!(with_fds > 200, "only {with_fds} plans with translated fds");
}
