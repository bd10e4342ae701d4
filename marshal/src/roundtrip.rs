//! The marshalling round trip of one `bpf()` call, as a checkable property,
//! over the real code: host [`gather`] → proxy [`patch`] → a
//! [`FakeKernel`] → proxy [`collect`] → host [`scatter`], with the
//! caller's memory a [`FakeMemory`] and one session's objects a [`Table`]
//! that both sides number their own way.
//!
//! Shared by the property test (`props.rs`) and the `bpf_attr` fuzz target
//! (feature `fuzzing`); not part of the normal build. [`check`] fails if the
//! two sides plan the call differently in anything but the fd numbers, if
//! the kernel is handed a pointer that is not the proxy's own buffer or an
//! fd that is not the session's, if the reply differs from what was sent
//! anywhere the kernel did not write, if the caller's memory ends up other
//! than a local kernel writing the same bytes would have left it (its fds
//! and pointers as they were, nothing outside the attr and the buffers the
//! kernel may write touched), or if a plan breaks the documented invariants
//! of `telebpf-abi`.

use telebpf_abi::{
    read_i32, read_u64, Direction, Parent, Plan, MAX_BUFFERS, MAX_BUFFER_LEN, MAX_FD_SLOTS,
    MAX_TOTAL_LEN,
};
use telebpf_protocol::message::WireBuffer;

use crate::fake::{FakeKernel, FakeMemory, Table, NOT_BPF_FD, UNMAPPED_BELOW};
use crate::host::{gather, read_attrs, scatter, GatherError, ScatterError};
use crate::proxy::{collect, patch};

/// Where the caller's attr lies in its [`FakeMemory`].
pub const ATTR_ADDR: u64 = 0x0a77_0000_0000;
/// Where the caller's common attributes lie (when it has readable ones).
pub const COMMON_ADDR: u64 = 0x0a77_0001_0000;

/// One call as the caller makes it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The command (`BPF_COMMON_ATTRS` allowed).
    pub raw_cmd: u32,
    /// The attr.
    pub attr: &'a [u8],
    /// The common attributes; `None` with `BPF_COMMON_ATTRS`: unreadable.
    pub common: Option<&'a [u8]>,
}

/// What [`check`] found for a call that satisfies the property.
#[derive(Debug)]
pub enum Verdict {
    /// The host refused the call itself (it is never sent): the errno.
    HostRefused(i32),
    /// Both sides agreed and the reply came back; the proxy's plan.
    Agreed(Plan),
    /// A buffer of this many bytes was larger than the fakes copy (the
    /// call was checked up to there).
    NotCopied(usize),
}

/// Runs one call through both sides and the fake kernel. The caller's
/// memory is `mem` (the attrs are placed in it; no reservation of the
/// proxy may take more than its [`FakeMemory::limit`]); `Err` describes a
/// violated property.
pub fn check(
    table: &Table,
    call: Call<'_>,
    mem: &FakeMemory,
    kernel: FakeKernel,
) -> Result<Verdict, String> {
    let Call {
        raw_cmd,
        attr,
        common,
    } = call;
    // ---- host (gather) ----
    let host = table.host();
    let limit = mem.limit();
    mem.put(ATTR_ADDR, attr);
    // Unreadable common attributes: a size at an unmapped address.
    let (common_addr, common_size) = match common {
        Some(c) => {
            mem.put(COMMON_ADDR, c);
            (COMMON_ADDR, c.len() as u32)
        }
        None => (0, 8),
    };
    let attrs = match read_attrs(
        mem,
        raw_cmd,
        ATTR_ADDR,
        attr.len() as u32,
        common_addr,
        common_size,
    ) {
        Ok(a) => a,
        Err(e) => return Ok(Verdict::HostRefused(e.errno())),
    };
    let common = attrs.common().map(<[u8]>::to_vec);
    let common = common.as_deref();
    // The plan before any buffer is known keeps the invariants too (the
    // host may refuse while expanding it).
    if let Ok(plan) = Plan::new(raw_cmd, attr, common, &host) {
        invariants(&plan, attr, common, &[])?;
    }
    let gathered = match gather(mem, &host, attrs) {
        Ok(g) => g,
        Err(e) => {
            if let (Some(n), GatherError::Buffer { .. }) = (mem.declined(), &e) {
                return Ok(Verdict::NotCopied(n));
            }
            return Ok(Verdict::HostRefused(e.errno()));
        }
    };
    let sent = &gathered.sent;
    let wire = &gathered.call;
    let plan = sent.plan();
    if wire.buffers.len() != plan.buffers.len() {
        return Err(format!(
            "{} buffers gathered for a plan of {}",
            wire.buffers.len(),
            plan.buffers.len()
        ));
    }
    // What the caller's buffers held (fds untranslated), for the invariants.
    let mut known: Vec<Option<Vec<u8>>> = Vec::with_capacity(plan.buffers.len());
    for (i, (spec, w)) in plan.buffers.iter().zip(&wire.buffers).enumerate() {
        known.push(match (spec.dir.copies_in(), w) {
            (true, WireBuffer::Data(d)) => {
                if !spec.len.accepts(d) {
                    return Err(format!("buffer {i}: the host's copy {d:?} is not accepted"));
                }
                Some(
                    mem.peek(spec.ptr, d.len())
                        .ok_or("an In buffer was not read")?,
                )
            }
            (true, WireBuffer::Out(_)) => return Err(format!("In buffer {i} sent as Out")),
            (false, _) => None,
        });
    }
    invariants(plan, attr, common, &known)?;

    // ---- proxy (patch) ----
    let guest = table.guest(limit);
    let mut patched = match patch(wire, &guest, &|| NOT_BPF_FD) {
        Ok(p) => p,
        Err(e) => {
            if let Some(n) = guest.declined() {
                return Ok(Verdict::NotCopied(n));
            }
            return Err(format!("the proxy refuses what the host planned: {e}"));
        }
    };
    let gplan = patched.plan().clone();
    let mut expected = plan.clone();
    for slot in &mut expected.fds {
        slot.value = table.to_guest(slot.value);
    }
    if gplan != expected {
        return Err(format!(
            "plans differ beyond fd numbers:\nhost  {expected:?}\nproxy {gplan:?}"
        ));
    }
    // Every fd slot the proxy reads holds the translated value.
    let sent_bytes: Vec<Vec<u8>> = wire
        .buffers
        .iter()
        .zip(&gplan.buffers)
        .map(|(w, spec)| match w {
            WireBuffer::Data(d) if spec.dir.copies_in() => d.clone(),
            _ => Vec::new(),
        })
        .collect();
    for slot in &gplan.fds {
        let bytes = parent_of(
            &slot.parent,
            &wire.attr,
            wire.common.as_deref(),
            &sent_bytes,
        );
        if read_i32(bytes, slot.offset) != slot.value {
            return Err(format!("fd slot {slot:?} does not hold its value"));
        }
    }
    let wire_known: Vec<Option<Vec<u8>>> = gplan
        .buffers
        .iter()
        .zip(sent_bytes)
        .map(|(spec, b)| spec.dir.copies_in().then_some(b))
        .collect();
    invariants(&gplan, &wire.attr, wire.common.as_deref(), &wire_known)?;

    // ---- the kernel, then the proxy (collect) ----
    let (outcome, wrote) = kernel.run(&mut patched, &guest)?;
    let collected = collect(patched, outcome);
    let result = &collected.result;
    let new_fd = outcome
        .ok()
        .filter(|_| gplan.returns_fd)
        .map(|fd| fd as i32);
    if collected.new_fd != new_fd || result.ret != outcome.unwrap_or(-1) {
        return Err(format!(
            "kernel returned {outcome:?}, the reply says {} (new fd {:?})",
            result.ret, collected.new_fd
        ));
    }
    if result.errno != outcome.err().unwrap_or(0) {
        return Err(format!(
            "kernel failed with {outcome:?}, errno {}",
            result.errno
        ));
    }
    // The reply's attrs are the sent ones but where the kernel wrote: the
    // proxy's pointers and substituted fds are gone again.
    let mut want_attr = wire.attr.clone();
    for (at, bytes) in &wrote.attr {
        want_attr[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    if result.attr != want_attr || result.common != wire.common {
        return Err("patching and restoring the pointers changed other bytes".into());
    }
    // Every buffer the kernel may write comes back, as long as it wrote,
    // holding what it wrote and elsewhere what the proxy gave it.
    let writable: Vec<usize> = (0..gplan.buffers.len())
        .filter(|&i| gplan.buffers[i].dir != Direction::In)
        .collect();
    let returned: Vec<usize> = result.out.iter().map(|(i, _)| *i as usize).collect();
    if returned != writable {
        return Err(format!(
            "buffers {returned:?} came back, {writable:?} may be written"
        ));
    }
    for (i, content) in &result.out {
        let i = *i as usize;
        let spec = &gplan.buffers[i];
        let reply_len = gplan.reply_len(i, &result.attr);
        let log = spec.content == telebpf_abi::Content::Log;
        if content.len() > reply_len || (!log && content.len() != reply_len) {
            return Err(format!(
                "buffer {i}: {} bytes back, the kernel wrote {reply_len}",
                content.len()
            ));
        }
        let mut want = match &wire.buffers[i] {
            WireBuffer::Data(d) => d.clone(),
            WireBuffer::Out(n) => vec![0; *n as usize],
        };
        want.resize(spec.alloc_len(), 0);
        for (at, b) in &wrote.buffers[i] {
            want[*at] = *b;
        }
        want.truncate(content.len());
        if *content != want {
            return Err(format!("buffer {i}: the reply is not what the kernel left"));
        }
    }

    // ---- host (scatter) ----
    let before = mem.clone();
    match scatter(mem, sent, result) {
        Ok(()) => {}
        // The kernel wrote into memory the caller cannot have.
        Err(ScatterError::Fault { .. })
            if result.out.iter().any(|(i, c)| {
                let ptr = plan.buffers[*i as usize].ptr;
                !c.is_empty() && (ptr < UNMAPPED_BELOW || ptr.checked_add(c.len() as u64).is_none())
            }) =>
        {
            return Ok(Verdict::Agreed(gplan));
        }
        Err(e) => return Err(format!("scatter fails: {e}")),
    }
    // The caller's memory is what a local kernel writing the same bytes in
    // the same order would have left.
    for (at, bytes) in &wrote.attr {
        before.put(ATTR_ADDR + *at as u64, bytes);
    }
    for (i, content) in &result.out {
        before.put(plan.buffers[*i as usize].ptr, content);
    }
    if mem.contents() != before.contents() {
        return Err("the caller's memory is not what the kernel wrote into it".into());
    }
    Ok(Verdict::Agreed(gplan))
}

fn parent_of<'a>(
    parent: &Parent,
    attr: &'a [u8],
    common: Option<&'a [u8]>,
    buffers: &'a [Vec<u8>],
) -> &'a [u8] {
    match parent {
        Parent::Attr => attr,
        Parent::Common => common.unwrap_or(&[]),
        Parent::Buffer(j) => buffers.get(*j).map_or(&[], Vec::as_slice),
    }
}

/// The documented invariants of a plan, with the buffers whose content is
/// known so far (`None`: an Out buffer).
fn invariants(
    plan: &Plan,
    attr: &[u8],
    common: Option<&[u8]>,
    known: &[Option<Vec<u8>>],
) -> Result<(), String> {
    if plan.buffers.len() > MAX_BUFFERS || plan.fds.len() > MAX_FD_SLOTS {
        return Err("too many buffers or fd slots".into());
    }
    let known: Vec<Vec<u8>> = known
        .iter()
        .map(|b| b.clone().unwrap_or_default())
        .collect();
    let mut total = 0usize;
    let mut pointers: Vec<(Parent, usize)> = Vec::new();
    for (i, b) in plan.buffers.iter().enumerate() {
        if b.ptr == 0 {
            return Err(format!("buffer {i} has a NULL pointer"));
        }
        if b.alloc_len() > MAX_BUFFER_LEN {
            return Err(format!("buffer {i} is larger than MAX_BUFFER_LEN"));
        }
        total = total
            .checked_add(b.alloc_len())
            .ok_or("total overflows usize")?;
        if let Parent::Buffer(p) = b.parent {
            if p >= i {
                return Err(format!("buffer {i} comes before its parent {p}"));
            }
            if plan.buffers[p].dir == Direction::Out {
                return Err(format!("buffer {i} lives in Out buffer {p}"));
            }
        }
        if b.dir == Direction::In && plan.reply_len(i, attr) != 0 {
            return Err(format!("In buffer {i} has a reply length"));
        }
        if plan.reply_len(i, attr) > b.alloc_len() {
            return Err(format!("buffer {i}: reply longer than the buffer"));
        }
        if !matches!(b.parent, Parent::Buffer(p) if p >= known.len()) {
            let bytes = parent_of(&b.parent, attr, common, &known);
            let end = b
                .ptr_offset
                .checked_add(8)
                .ok_or("pointer offset overflows")?;
            if end > bytes.len() || read_u64(bytes, b.ptr_offset) != b.ptr {
                return Err(format!("buffer {i}: pointer field not in its parent"));
            }
        }
        if pointers.contains(&(b.parent, b.ptr_offset)) {
            return Err(format!("buffer {i}: a second buffer for one pointer field"));
        }
        pointers.push((b.parent, b.ptr_offset));
    }
    if total > MAX_TOTAL_LEN {
        return Err("buffers add up to more than MAX_TOTAL_LEN".into());
    }
    for slot in &plan.fds {
        if let Parent::Buffer(p) = slot.parent {
            if p >= plan.buffers.len() || !plan.buffers[p].dir.copies_in() {
                return Err(format!("fd slot {slot:?} is not in an In buffer"));
            }
            if p >= known.len() {
                continue;
            }
        }
        let bytes = parent_of(&slot.parent, attr, common, &known);
        if slot.value != 0 && slot.offset.checked_add(4).is_none_or(|e| e > bytes.len()) {
            return Err(format!("fd slot {slot:?} is cut by its parent"));
        }
        if read_i32(bytes, slot.offset) != slot.value {
            return Err(format!("fd slot {slot:?} does not hold its value"));
        }
        // The proxy writes fds and pointers into the same bytes: they must
        // never overlap.
        for &(parent, at) in &pointers {
            if parent == slot.parent && slot.offset < at + 8 && at < slot.offset + 4 {
                return Err(format!("fd slot {slot:?} overlaps the pointer at {at}"));
            }
        }
    }
    Ok(())
}
