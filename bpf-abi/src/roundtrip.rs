//! The marshalling round trip of one `bpf()` call, as a checkable property.
//!
//! Shared by the property test (`props.rs`) and the `bpf_attr` fuzz target
//! (feature `fuzzing`); not part of the normal build.
//!
//! What the preload and the proxy do with a call, minus the memory and the
//! syscall: the host derives a [`Plan`] from the caller's attr with *host*
//! fds, copies the `In`/`InOut` buffers and expands them, then writes every
//! fd slot in the guest's numbering into the bytes it sends. The proxy
//! derives its own plan from what it received, with *guest* fds, expands the
//! received buffers, patches its own addresses into every pointer field, and
//! after the call restores the caller's values. [`check`] runs both sides and
//! fails if they disagree in anything but the fd numbers, if the proxy's
//! patching would touch bytes it does not restore, or if a plan breaks the
//! crate's documented invariants.

use crate::{
    read_i32, read_u64, write_u32, write_u64, BufferSpec, Direction, IterTarget, Length,
    ObjectKind, Objects, Parent, Plan, MAX_BUFFERS, MAX_BUFFER_LEN, MAX_FD_SLOTS, MAX_TOTAL_LEN,
};

/// The fd number the protocol uses for "open on the host, but no guest
/// object" (`telebpf_protocol::message::FOREIGN_FD`, which this crate cannot
/// name).
pub const FOREIGN_FD: i32 = -2;

/// How far guest fds are from the host fds of the same objects, so that a
/// plan that used an untranslated number would be caught.
pub const GUEST_FD_SHIFT: i32 = 1000;

/// One host fd and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The host fd (the guest fd is this plus [`GUEST_FD_SHIFT`]).
    pub host_fd: i32,
    /// `None`: open on the host but no guest object (a socket, a cgroup):
    /// [`ObjectKind::Other`] on the host, [`FOREIGN_FD`] on the wire.
    pub kind: Option<ObjectKind>,
    /// The link type both sides know for a link.
    pub link_type: Option<u32>,
    /// What [`Objects::struct_ops_fd_offsets`] answers for it.
    pub struct_ops: Option<Vec<usize>>,
}

/// The objects of one session as both sides see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The host fds that are open (the first entry for an fd wins).
    pub entries: Vec<Entry>,
    /// Possible CPUs of the guest.
    pub cpus: u32,
}

impl Table {
    fn by_host(&self, fd: i32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.host_fd == fd)
    }

    fn by_guest(&self, fd: i32) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind.is_some() && e.host_fd.checked_add(GUEST_FD_SHIFT) == Some(fd))
            .filter(|e| self.by_host(e.host_fd) == Some(*e))
    }

    /// The preload's translation rule (`preload-lib/src/bpf.rs`): 0 stays
    /// 0; a guest object's fd becomes its guest fd; another open fd becomes
    /// [`FOREIGN_FD`]; anything else `-1`.
    pub fn to_guest(&self, host_fd: i32) -> i32 {
        if host_fd == 0 {
            return 0;
        }
        match self.by_host(host_fd) {
            Some(Entry { kind: Some(_), .. }) => host_fd.wrapping_add(GUEST_FD_SHIFT),
            Some(Entry { kind: None, .. }) => FOREIGN_FD,
            None => -1,
        }
    }

    /// What the host side knows.
    pub fn host(&self) -> View<'_> {
        View {
            table: self,
            guest: false,
        }
    }

    /// What the proxy knows (`guest-proxy/src/session.rs`).
    pub fn guest(&self) -> View<'_> {
        View {
            table: self,
            guest: true,
        }
    }
}

/// [`Objects`] of one side of a [`Table`].
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    table: &'a Table,
    guest: bool,
}

impl View<'_> {
    fn entry(&self, fd: i32) -> Option<&Entry> {
        if self.guest {
            self.table.by_guest(fd)
        } else {
            self.table.by_host(fd)
        }
    }
}

impl Objects for View<'_> {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        if self.guest && fd == FOREIGN_FD {
            return Some(ObjectKind::Other);
        }
        let e = self.entry(fd)?;
        match &e.kind {
            Some(k) => Some(k.clone()),
            None if self.guest => None,
            None => Some(ObjectKind::Other),
        }
    }

    fn possible_cpus(&self) -> u32 {
        self.table.cpus
    }

    fn link_type(&self, fd: i32) -> Option<u32> {
        self.entry(fd)?.link_type
    }

    fn iter_target(&self, prog_fd: i32) -> Option<IterTarget> {
        // Neither the preload nor the proxy knows it (both use the default).
        let _ = prog_fd;
        None
    }

    fn struct_ops_fd_offsets(&self, map_fd: i32) -> Option<Vec<usize>> {
        self.entry(map_fd)?.struct_ops.clone()
    }
}

/// What [`check`] found for a call that satisfies the property.
#[derive(Debug)]
pub enum Verdict {
    /// The host refused the call itself (it is never sent): the errno.
    HostRefused(i32),
    /// Both sides agreed; the proxy's plan.
    Agreed(Plan),
    /// `content` declined to give a buffer (too large to copy cheaply): the
    /// plan was checked up to there.
    NotCopied,
}

/// Runs one call through both sides. `content` gives the caller's bytes of
/// each `In`/`InOut` buffer, or `None` to stop (it may give fewer or more
/// than the plan says:
/// the host copies exactly the planned length, padding a short answer with
/// zeros, and cuts a CString after its NUL or at `max`; bytes past the
/// answer read as zeros). `Err` describes a
/// violated property.
pub fn check(
    table: &Table,
    raw_cmd: u32,
    attr: &[u8],
    common: Option<&[u8]>,
    content: &mut dyn FnMut(usize, &BufferSpec) -> Option<Vec<u8>>,
) -> Result<Verdict, String> {
    // ---- host (preload) ----
    let host = table.host();
    let mut plan = match Plan::new(raw_cmd, attr, common, &host) {
        Ok(p) => p,
        Err(e) => return Ok(Verdict::HostRefused(e.errno())),
    };
    invariants(&plan, attr, common, &[])?;
    let mut sent: Vec<Option<Vec<u8>>> = Vec::new();
    let mut i = 0;
    while i < plan.buffers.len() {
        let spec = plan.buffers[i].clone();
        let bytes = if spec.dir.copies_in() {
            let Some(mut got) = content(i, &spec) else {
                return Ok(Verdict::NotCopied);
            };
            match spec.len {
                Length::Bytes(n) => got.resize(n, 0),
                Length::CString { max } => {
                    let end = got
                        .iter()
                        .position(|&b| b == 0)
                        .map_or(got.len(), |p| p + 1);
                    got.truncate(end.min(max));
                    // Past what `content` gave, the caller's memory reads
                    // as zeros: the string ends there.
                    if got.len() < max && got.last() != Some(&0) {
                        got.push(0);
                    }
                }
            }
            if !spec.len.accepts(&got) {
                return Err(format!(
                    "buffer {i}: the host's copy {got:?} is not accepted"
                ));
            }
            if let Err(e) = plan.expand(i, &got, &host) {
                return Ok(Verdict::HostRefused(e.errno()));
            }
            Some(got)
        } else {
            None
        };
        sent.push(bytes);
        i += 1;
        invariants(&plan, attr, common, &sent)?;
    }
    // Translate into the guest's numbering, in the copies that are sent.
    let mut wire_attr = attr.to_vec();
    let mut wire_common = common.map(<[u8]>::to_vec);
    for slot in &plan.fds {
        let bytes: Option<&mut [u8]> = match slot.parent {
            Parent::Attr => Some(&mut wire_attr),
            Parent::Common => wire_common.as_deref_mut(),
            Parent::Buffer(j) => sent.get_mut(j).and_then(|b| b.as_deref_mut()),
        };
        if let Some(bytes) = bytes {
            write_u32(bytes, slot.offset, table.to_guest(slot.value) as u32);
        }
    }

    // ---- proxy ----
    let guest = table.guest();
    let mut gplan = Plan::new(raw_cmd, &wire_attr, wire_common.as_deref(), &guest)
        .map_err(|e| format!("the proxy refuses what the host planned: {e}"))?;
    let mut i = 0;
    while i < gplan.buffers.len() {
        let Some(hspec) = plan.buffers.get(i) else {
            return Err(format!("the proxy plans buffer {i}, the host did not"));
        };
        if gplan.buffers[i] != *hspec {
            return Err(format!(
                "buffer {i}: host {hspec:?}, proxy {:?}",
                gplan.buffers[i]
            ));
        }
        if let Some(Some(bytes)) = sent.get(i) {
            gplan
                .expand(i, bytes, &guest)
                .map_err(|e| format!("buffer {i}: the proxy's expand fails: {e}"))?;
        }
        i += 1;
    }
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
    let sent_bytes: Vec<Vec<u8>> = sent.iter().map(|b| b.clone().unwrap_or_default()).collect();
    for slot in &gplan.fds {
        let bytes = parent_of(
            &slot.parent,
            &wire_attr,
            wire_common.as_deref(),
            &sent_bytes,
        );
        if read_i32(bytes, slot.offset) != slot.value {
            return Err(format!("fd slot {slot:?} does not hold its value"));
        }
    }

    // The proxy patches its addresses in and restores the caller's: the
    // attr it returns must be the one it received.
    let mut attr2 = wire_attr.clone();
    let mut common2 = wire_common.clone();
    let mut bufs2 = sent_bytes.clone();
    for restore in [false, true] {
        for (k, spec) in gplan.buffers.iter().enumerate() {
            let v = if restore {
                spec.ptr
            } else {
                0x7f00_0000_0000 + k as u64 * 0x1000
            };
            let bytes: Option<&mut [u8]> = match spec.parent {
                Parent::Attr => Some(&mut attr2),
                Parent::Common => common2.as_deref_mut(),
                Parent::Buffer(j) => bufs2.get_mut(j).map(Vec::as_mut_slice),
            };
            if let Some(bytes) = bytes {
                write_u64(bytes, spec.ptr_offset, v);
            }
        }
    }
    if attr2 != wire_attr || common2 != wire_common || bufs2 != sent_bytes {
        return Err("patching and restoring the pointers changed other bytes".into());
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
