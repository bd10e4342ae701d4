//! What a program's instructions call and which maps they name.
//!
//! The proxy reads the instructions of every program it is asked to load
//! (the `insns` buffer of `BPF_PROG_LOAD`) before the kernel sees them: a
//! policy may refuse calls to some helpers and kfuncs, and a program may
//! only name maps its key may change. These walkers find, without
//! interpreting anything else:
//!
//! * calls (`BPF_JMP | BPF_CALL`): `src_reg` 0 calls helper `imm`;
//!   `src_reg` `BPF_PSEUDO_KFUNC_CALL` calls the kfunc with BTF id `imm`,
//!   in the kernel's BTF when `off` is 0, else in the module BTF whose fd is
//!   `fd_array[off]`; `src_reg` `BPF_PSEUDO_CALL` calls a function of the
//!   program itself;
//! * map references of `ld_imm64` (`BPF_LD | BPF_IMM | BPF_DW`, 16 bytes):
//!   `BPF_PSEUDO_MAP_FD`/`_VALUE` carry a map fd in `imm`,
//!   `BPF_PSEUDO_MAP_IDX`/`_IDX_VALUE` an index into `fd_array`.
//!
//! The second half of an `ld_imm64` has opcode 0, so scanning every 8-byte
//! slot for calls cannot mistake it for one. A trailing partial instruction
//! is ignored (the kernel refuses such a program).

use crate::flags::{
    BPF_JMP_CALL, BPF_LD_IMM64, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE, BPF_PSEUDO_MAP_VALUE, INSN_SIZE,
};
use crate::read_u32;

/// A call to something outside the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A helper, by number (`enum bpf_func_id`, see [`crate::helper`]).
    Helper(u32),
    /// A kfunc: its BTF id, and the `fd_array` index of the module BTF that
    /// holds it (0: the kernel's own BTF).
    Kfunc {
        /// `imm`: the function's BTF type id.
        btf_id: u32,
        /// `off`: index into `fd_array`, 0 for vmlinux.
        module: i16,
    },
}

/// A map an `ld_imm64` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRef {
    /// A map fd (`BPF_PSEUDO_MAP_FD`, `BPF_PSEUDO_MAP_VALUE`).
    Fd(i32),
    /// An index into `fd_array` (`BPF_PSEUDO_MAP_IDX`, `_IDX_VALUE`).
    Index(u32),
}

/// Opcode, `src_reg`, `off` and `imm` of instruction `i`.
fn fields(insns: &[u8], i: usize) -> (u8, u8, i16, u32) {
    let at = i * INSN_SIZE;
    let b = &insns[at..at + INSN_SIZE];
    (
        b[0],
        b[1] >> 4,
        i16::from_le_bytes([b[2], b[3]]),
        read_u32(b, 4),
    )
}

/// Every call to a helper or kfunc, in program order.
pub fn calls(insns: &[u8]) -> Vec<Call> {
    (0..insns.len() / INSN_SIZE)
        .filter_map(|i| match fields(insns, i) {
            (BPF_JMP_CALL, 0, _, imm) => Some(Call::Helper(imm)),
            (BPF_JMP_CALL, BPF_PSEUDO_KFUNC_CALL, off, imm) => Some(Call::Kfunc {
                btf_id: imm,
                module: off,
            }),
            _ => None,
        })
        .collect()
}

/// Every map an `ld_imm64` names, in program order.
pub fn map_refs(insns: &[u8]) -> Vec<MapRef> {
    let n = insns.len() / INSN_SIZE;
    let mut refs = Vec::new();
    let mut i = 0;
    while i < n {
        let (code, src, _, imm) = fields(insns, i);
        if code != BPF_LD_IMM64 {
            i += 1;
            continue;
        }
        match src {
            BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_VALUE => refs.push(MapRef::Fd(imm as i32)),
            BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_MAP_IDX_VALUE => refs.push(MapRef::Index(imm)),
            _ => {}
        }
        i += 2;
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, src: u8, off: i16, imm: u32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = src << 4;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }

    fn prog(list: &[[u8; 8]]) -> Vec<u8> {
        list.concat()
    }

    #[test]
    fn finds_helpers_kfuncs_and_maps() {
        let p = prog(&[
            insn(BPF_LD_IMM64, BPF_PSEUDO_MAP_FD, 0, 7),
            insn(0, 0, 0, 0),
            insn(BPF_JMP_CALL, 0, 0, 36),
            insn(BPF_JMP_CALL, 1, 0, 5), // bpf-to-bpf: not a call out
            insn(BPF_JMP_CALL, BPF_PSEUDO_KFUNC_CALL, 0, 1234),
            insn(BPF_JMP_CALL, BPF_PSEUDO_KFUNC_CALL, 2, 77),
            insn(BPF_LD_IMM64, BPF_PSEUDO_MAP_IDX_VALUE, 0, 3),
            // The second half's imm looks like a call's; it is no call.
            insn(0, 0, 0, 0x85),
            insn(BPF_LD_IMM64, BPF_PSEUDO_MAP_VALUE, 0, 9),
            insn(0, 0, 0, 16),
            insn(0x95, 0, 0, 0), // exit
        ]);
        assert_eq!(
            calls(&p),
            vec![
                Call::Helper(36),
                Call::Kfunc {
                    btf_id: 1234,
                    module: 0
                },
                Call::Kfunc {
                    btf_id: 77,
                    module: 2
                },
            ]
        );
        assert_eq!(
            map_refs(&p),
            vec![MapRef::Fd(7), MapRef::Index(3), MapRef::Fd(9)]
        );
    }

    #[test]
    fn partial_and_truncated_programs() {
        assert!(calls(&[]).is_empty());
        assert!(calls(&[0x85, 0, 0]).is_empty());
        // An ld_imm64 cut after its first half still names its map (the
        // kernel refuses the program anyway).
        let p = insn(BPF_LD_IMM64, BPF_PSEUDO_MAP_FD, 0, 4);
        assert_eq!(map_refs(&p), vec![MapRef::Fd(4)]);
    }
}
