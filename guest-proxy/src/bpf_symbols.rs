//! The BPF symbols a session's programs had, for tools that name their
//! stacks only after they detached.
//!
//! The guest's `/proc/kallsyms` lists every JIT-compiled program
//! (`bpf_prog_<tag>_<name>`) and every BPF trampoline
//! (`bpf_trampoline_<key>`) as a `[bpf]` line while it exists. A `kfunc`
//! (fentry) program's stack runs through both: its first frames are the
//! program and the trampoline that called it. bpftrace 0.17 reads
//! `/proc/kallsyms` (through bcc's symbol cache) only when it prints its
//! maps at exit, **after** it closed its programs and links; the kernel
//! drops a program's symbol as its last reference goes and a trampoline's
//! after an RCU-tasks grace period. Inside the guest the tool races that;
//! through the proxy the close crosses the channel first and always loses,
//! and the frames take the name of whatever kernel or module symbol lies
//! below (`vp_modern_probe.cold+21174` for a trampoline).
//!
//! So a session keeps the `[bpf]` lines the guest listed just before it
//! detached: once it has made a link ([`BpfSymbols::linked`]), the first
//! close of one of its programs or links reads them ([`BpfSymbols::capture`];
//! one pass over the guest's kallsyms, keeping only `[bpf]` lines), and a
//! later read of `/proc/kallsyms` by the same session gets the guest's
//! current content followed by the kept lines the kernel no longer lists
//! ([`BpfSymbols::missing_from`]): every frame of its stacks resolves to the
//! symbol the guest had when the stack was taken. Nothing is invented: each
//! appended line is one the guest's kallsyms printed to the proxy. A kept
//! line is left out when the guest lists a `[bpf]` symbol of the same name
//! or address now (a newer program in the same place wins).
//!
//! Bounds: at most [`MAX_KEPT_BYTES`] of lines are kept per session (the
//! newest: the guest lists `[bpf]` symbols oldest first), a line longer
//! than [`MAX_LINE`] (more than a kernel symbol name, `KSYM_NAME_LEN` 512,
//! can make) is not kept, and each capture replaces the last, so the
//! memory a session holds for this stays under [`MAX_KEPT_BYTES`]; it is
//! charged to the proxy's bytes in flight while kept (a full proxy keeps
//! nothing rather than make a close wait). A capture costs one pass of the
//! guest kernel over its symbols, as a client's own read of
//! `/proc/kallsyms` does, and happens at most once per link the session
//! made (links are rate-limited requests; a close is not, but closes alone
//! never capture twice).

use std::collections::HashSet;
use std::io::BufRead;

use telebpf_abi::ObjectKind;

use crate::limits::{Held, SessionBudget};

/// The path whose reads get the kept lines.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// The most bytes of `[bpf]` lines a session keeps: about 2,000 lines of
/// programs and trampolines (bpftrace makes a few per probe), a small part
/// of a session's share of bytes in flight.
pub const MAX_KEPT_BYTES: usize = 128 << 10;

/// The longest line kept: a 16-hex-digit address, a type letter, a name of
/// at most `KSYM_NAME_LEN` (512) bytes, `\t[bpf]\n`, and the separators.
pub const MAX_LINE: usize = 16 + 3 + 512 + 7;

/// What ends a `[bpf]` line of `/proc/kallsyms`.
const BPF_SUFFIX: &[u8] = b"\t[bpf]";

/// The `[bpf]` lines one session keeps (see the module doc).
#[derive(Debug, Default)]
pub struct BpfSymbols {
    /// A link was made since the last capture: the next close of a
    /// program or link captures.
    armed: bool,
    /// The lines of the last capture, each ending in `\n`.
    kept: Vec<Vec<u8>>,
    /// Their charge to the proxy's bytes in flight.
    held: Option<Held>,
}

impl BpfSymbols {
    /// The session made a link (a trampoline or an attached program may
    /// now be on the guest's stacks).
    pub fn linked(&mut self) {
        self.armed = true;
    }

    /// Whether closing an object of `kind` must first capture.
    pub fn captures_on_close(&self, kind: &ObjectKind) -> bool {
        self.armed && matches!(kind, ObjectKind::Prog { .. } | ObjectKind::Link)
    }

    /// Keeps the `[bpf]` lines of `lines` (as [`bpf_lines`] gives them),
    /// replacing the last capture; the newest that fit [`MAX_KEPT_BYTES`],
    /// charged to `budget` (nothing is kept, and the errno returned, when
    /// the proxy's bytes in flight are full).
    pub fn capture(&mut self, lines: &[u8], budget: &SessionBudget) -> Result<(), i32> {
        self.armed = false;
        self.kept.clear();
        self.held = None;
        let mut kept: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        for line in lines.split_inclusive(|&b| b == b'\n').rev() {
            if parse(line).is_none() {
                continue;
            }
            if bytes + line.len() > MAX_KEPT_BYTES {
                break;
            }
            bytes += line.len();
            kept.push(line.to_vec());
        }
        kept.reverse();
        self.held = Some(budget.hold(bytes)?);
        self.kept = kept;
        Ok(())
    }

    /// Lines kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The kept lines whose symbol the guest's current kallsyms `live`
    /// (in pieces, as a snapshot holds it) no longer lists: neither a
    /// `[bpf]` symbol of the same name nor one at the same address.
    pub fn missing_from(&self, live: &[Vec<u8>]) -> Vec<u8> {
        if self.kept.is_empty() {
            return Vec::new();
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for_each_line(live, |line| {
            if let Some((addr, name)) = parse(line) {
                addrs.insert(addr);
                names.insert(name.to_vec());
            }
        });
        let mut out = Vec::new();
        for line in &self.kept {
            if let Some((addr, name)) = parse(line) {
                if !addrs.contains(&addr) && !names.contains(name) {
                    out.extend_from_slice(line);
                }
            }
        }
        out
    }
}

/// The `[bpf]` lines of a kallsyms text read from `reader`, each ending in
/// `\n`, in the order listed; other lines are read and dropped one at a
/// time, so the whole file is never held.
pub fn bpf_lines(mut reader: impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(out);
        }
        if line.len() <= MAX_LINE && parse(&line).is_some() {
            out.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
}

/// Address and name of a `[bpf]` line (`ADDR t NAME\t[bpf]\n`), or `None`
/// for any other line.
fn parse(line: &[u8]) -> Option<(u64, &[u8])> {
    if line.len() > MAX_LINE {
        return None;
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let head = line.strip_suffix(BPF_SUFFIX)?;
    let mut fields = head.splitn(3, |&b| b == b' ');
    let addr = std::str::from_utf8(fields.next()?).ok()?;
    let addr = u64::from_str_radix(addr, 16).ok()?;
    let kind = fields.next()?;
    let name = fields.next()?;
    if kind.len() != 1 || name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some((addr, name))
}

/// Calls `f` with each line of the text held in `pieces` (a line may span
/// pieces).
fn for_each_line(pieces: &[Vec<u8>], mut f: impl FnMut(&[u8])) {
    let mut carry: Vec<u8> = Vec::new();
    for piece in pieces {
        let mut rest = piece.as_slice();
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if carry.is_empty() {
                f(&rest[..=end]);
            } else {
                carry.extend_from_slice(&rest[..=end]);
                f(&carry);
                carry.clear();
            }
            rest = &rest[end + 1..];
        }
        // A partial line longer than any kallsyms line is no `[bpf]`
        // line: stop collecting it (bounded carry).
        if carry.len() + rest.len() <= MAX_LINE {
            carry.extend_from_slice(rest);
        } else {
            carry.clear();
            carry.extend_from_slice(b"\x00");
        }
    }
    if !carry.is_empty() {
        f(&carry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &[u8] = b"ffffffff8262f550 T bpf_trampoline_enter\n\
ffffffffc02edd96 t vp_modern_probe.cold\t[virtio_pci_modern_dev]\n\
ffffffffc0303000 t ftrace_trampoline\t[__builtin__ftrace]\n\
ffffffffc00e768c t bpf_prog_6f2dfdce5584cd93_15\t[bpf]\n\
ffffffffc00e7710 t bpf_prog_55c86a28613d5ac4_do_sys_openat2\t[bpf]\n\
ffffffffc02f3000 t bpf_trampoline_6442499101\t[bpf]\n";

    #[test]
    fn only_bpf_lines_are_read() {
        let lines = bpf_lines(LIVE).unwrap();
        assert_eq!(
            lines,
            b"ffffffffc00e768c t bpf_prog_6f2dfdce5584cd93_15\t[bpf]\n\
ffffffffc00e7710 t bpf_prog_55c86a28613d5ac4_do_sys_openat2\t[bpf]\n\
ffffffffc02f3000 t bpf_trampoline_6442499101\t[bpf]\n"
        );
        // No final newline, a long line, a malformed one.
        let long = format!("ffffffffc0000000 t {}\t[bpf]\n", "x".repeat(MAX_LINE));
        let text = format!(
            "{long}zz t f\t[bpf]\nffffffffc0000001 t a b\t[bpf]\nffffffffc0000002 t last\t[bpf]"
        );
        assert_eq!(
            bpf_lines(text.as_bytes()).unwrap(),
            b"ffffffffc0000002 t last\t[bpf]\n"
        );
    }

    #[test]
    fn kept_lines_fill_in_what_the_guest_dropped() {
        let mut s = BpfSymbols::default();
        assert!(!s.captures_on_close(&ObjectKind::Link));
        s.linked();
        assert!(s.captures_on_close(&ObjectKind::Prog { prog_type: 26 }));
        assert!(!s.captures_on_close(&ObjectKind::Btf));
        s.capture(&bpf_lines(LIVE).unwrap(), &SessionBudget::default())
            .unwrap();
        assert_eq!(s.len(), 3);
        assert!(
            !s.captures_on_close(&ObjectKind::Link),
            "one capture per link"
        );

        // While they live, nothing is added.
        let whole = vec![LIVE[..100].to_vec(), LIVE[100..].to_vec()];
        assert!(s.missing_from(&whole).is_empty());
        // Gone: the program and the trampoline come back; a newer program
        // at the old trampoline's address wins over it.
        let later = b"ffffffff8262f550 T bpf_trampoline_enter\n\
ffffffffc02f3000 t bpf_prog_0000000000000000_other\t[bpf]\n";
        assert_eq!(
            s.missing_from(&[later[..30].to_vec(), later[30..].to_vec()]),
            b"ffffffffc00e768c t bpf_prog_6f2dfdce5584cd93_15\t[bpf]\n\
ffffffffc00e7710 t bpf_prog_55c86a28613d5ac4_do_sys_openat2\t[bpf]\n"
        );
    }

    #[test]
    fn kept_bytes_are_bounded_newest_first() {
        let mut text = Vec::new();
        for i in 0..20_000u64 {
            text.extend(
                format!(
                    "{:016x} t bpf_prog_{i:016x}_p\t[bpf]\n",
                    0xffff_ffff_c000_0000 + i
                )
                .bytes(),
            );
        }
        let mut s = BpfSymbols::default();
        s.capture(&text, &SessionBudget::default()).unwrap();
        let kept: usize = s.kept.iter().map(Vec::len).sum();
        assert!(
            kept <= MAX_KEPT_BYTES && kept > MAX_KEPT_BYTES - 64,
            "{kept}"
        );
        assert!(s
            .kept
            .last()
            .unwrap()
            .ends_with(b"bpf_prog_0000000000004e1f_p\t[bpf]\n"));
    }

    #[test]
    fn lines_across_pieces_and_overlong_partials() {
        let mut seen = Vec::new();
        for_each_line(
            &[
                b"a\nb".to_vec(),
                b"c\nd".to_vec(),
                vec![b'x'; MAX_LINE],
                b"e\nf".to_vec(),
            ],
            |l| seen.push(l.to_vec()),
        );
        assert_eq!(seen[0], b"a\n");
        assert_eq!(seen[1], b"bc\n");
        assert!(!seen[2].ends_with(b"[bpf]\n"));
        assert_eq!(seen.last().unwrap(), b"f");
    }
}
