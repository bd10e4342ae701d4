//! The checks of a request that need the guest's own knowledge of the
//! objects it names, after the policy's checks of the request alone
//! ([`crate::policy::Policy::check`]).
//!
//! A request names objects by fd, and what an fd stands for is the
//! kernel's to say, not the client's:
//!
//! * **Attach types.** `BPF_RAW_TRACEPOINT_OPEN` without a name attaches a
//!   tracing or LSM program by the attach type it was *loaded* with
//!   (fmod_ret, LSM hooks), and a program opened by id may be of any type.
//!   So raw tracepoint open, link creation and update, `BPF_PROG_ATTACH`
//!   and `PERF_EVENT_IOC_SET_BPF` check the real program's type (from the
//!   kernel's info, kept per session fd) against `prog_types`, and its
//!   expected attach type against `attach_types`. The kernel's
//!   `bpf_prog_info` does not report the expected attach type: the proxy
//!   remembers it for the programs it loaded ([`crate::ownership`]); for a
//!   tracing, LSM, cgroup, … program it did not load, it is unknown, and
//!   such a program is refused unless `attach_types` is `"*"`.
//! * **Calls.** `BPF_PROG_LOAD` reads the instructions
//!   ([`crate::progcheck`]).
//! * **Ownership.** Under `change_foreign_objects = false`, requests that
//!   change, detach, run or consume an object act only on objects the key
//!   created ([`crate::ownership`]); fd-valued map updates may only insert
//!   the key's own programs and maps (a program array holding another's
//!   program would run it with forged input), and a loaded program may
//!   only name the key's own maps.
//!
//! Every refusal is a [`Denied`], answered like a policy refusal (`EPERM`
//! and one line on the host program's stderr). Fds the session does not
//! own pass unchecked here: [`crate::bpf_exec`] turns them into `-1` (or an
//! fd that is no BPF object), so the kernel refuses them itself.

use telebpf_abi::{
    attach_type, cmd, helper, link_type, off, perf, prog_type, read_u32, read_u64, BufferSpec,
    Content, Direction, ObjectKind, Plan,
};
use telebpf_protocol::message::{BpfCall, IoctlValue, Request, WireBuffer};

use crate::bpf_exec::SessionFds;
use crate::kernel::Kernel;
use crate::ownership::{self, Kind};
use crate::policy::{Denied, KeyGrant, Policy};
use crate::progcheck::{self, Program};

/// The kind of ledger entry a session object is, if it has an id.
fn ledger_kind(kind: &ObjectKind) -> Option<Kind> {
    match kind {
        ObjectKind::Map(_) => Some(Kind::Map),
        ObjectKind::Prog { .. } => Some(Kind::Prog),
        ObjectKind::Link => Some(Kind::Link),
        ObjectKind::Btf => Some(Kind::Btf),
        ObjectKind::Iter | ObjectKind::Other => None,
    }
}

/// The session's object behind `fd`, if it owns one.
fn owned(fds: &dyn SessionFds, fd: i32) -> Option<ObjectKind> {
    if fds.owns(fd) {
        fds.kind(fd)
    } else {
        None
    }
}

/// One request's view: the key, its policy, the session's fds and the
/// kernel they live in.
struct Guard<'a> {
    grant: &'a KeyGrant,
    fds: &'a dyn SessionFds,
    kernel: &'a dyn Kernel,
}

impl Guard<'_> {
    fn policy(&self) -> &Policy {
        &self.grant.policy
    }

    /// `what` (a phrase that reads on with the object: "BPF_LINK_DETACH
    /// of" link 5) may act on the object behind `fd` only if the key
    /// created it (or may change others' objects).
    fn require_own(&self, what: &str, fd: i32) -> Result<(), Denied> {
        if self.policy().changes_foreign_objects() {
            return Ok(());
        }
        let Some(kind) = owned(self.fds, fd).as_ref().and_then(ledger_kind) else {
            return Ok(());
        };
        let id = ownership::object_id(fd, kind, self.kernel);
        require_own_id(self.grant, what, kind, id)
    }

    /// The session program behind `fd`: its type and, if the proxy
    /// loaded it, its expected attach type (`Some(None)`: unknown).
    fn program(&self, fd: i32) -> Option<(u32, Option<u32>)> {
        match owned(self.fds, fd)? {
            ObjectKind::Prog { prog_type } => {
                let eat = ownership::object_id(fd, Kind::Prog, self.kernel)
                    .and_then(ownership::loaded_attach_type);
                Some((prog_type, eat))
            }
            _ => None,
        }
    }

    /// `what` attaching the session program behind `fd` (of `t`, expected
    /// attach type `eat` if known): its type must be allowed, and so must
    /// the attach type it was loaded for, where it has one.
    fn check_attachable(&self, what: &str, t: u32, eat: Option<u32>) -> Result<(), Denied> {
        let p = self.policy();
        p.check_prog_type(what, t)?;
        if p.allows_every_attach_type() {
            return Ok(());
        }
        match eat {
            Some(eat) => match attach_type::bound_at_load(t, eat) {
                Some(at) => p.check_attach_type(what, at),
                None => Ok(()),
            },
            // Unknown: only types whose expected attach type never matters
            // may pass.
            None if attach_matters(t) => Err(Denied {
                what: format!(
                    "{what} of a {} program the proxy did not load",
                    prog_type::short_name(t).unwrap_or("?")
                ),
                rule: "its expected attach type is unknown, and attach_types is not \"*\"".into(),
            }),
            None => Ok(()),
        }
    }

    fn check(&self, req: &Request) -> Result<(), Denied> {
        let p = self.policy();
        if p.changes_foreign_objects()
            && p.allows_every_call()
            && p.allows_every_prog_type()
            && p.allows_every_attach_type()
        {
            // Nothing here could refuse (the full profile): no syscall.
            return Ok(());
        }
        match req {
            Request::Bpf(call) => self.check_bpf(call),
            Request::Ioctl {
                fd: _,
                cmd,
                arg: IoctlValue::Fd(prog),
            } if *cmd == perf::IOC_SET_BPF => {
                let what = "PERF_EVENT_IOC_SET_BPF";
                if let Some((t, eat)) = self.program(*prog) {
                    self.check_attachable(what, t, eat)?;
                }
                self.require_own("PERF_EVENT_IOC_SET_BPF of", *prog)
            }
            Request::PerfEventOpen { attr, .. } => self.check_perf_attr(attr),
            Request::MapWrite { fd, .. } => {
                self.require_own("writing into the mapped memory of", *fd)
            }
            Request::Stream(s) => {
                // The ring is an fd of the session that owns the stream's
                // token, not of this connection's own (empty) session.
                if self.policy().changes_foreign_objects() {
                    return Ok(());
                }
                match crate::bpf_exec::describe_in(s.fd, self.kernel).kind {
                    ObjectKind::Map(_) => require_own_id(
                        self.grant,
                        "consuming on the host the records of",
                        Kind::Map,
                        ownership::object_id(s.fd, Kind::Map, self.kernel),
                    ),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// A perf event that changes the task it watches is a helper call in
    /// disguise, allowed only where the helper is: `sigtrap` sends the
    /// counted task a `SIGTRAP` on every overflow, whose default action
    /// ends it (`bpf_send_signal`); a uprobe's `ref_ctr_offset` makes the
    /// kernel increment a 16-bit counter at that offset in the memory of
    /// every process that maps the file while the probe is installed
    /// (`bpf_probe_write_user`). The proxy opens events as root, which the
    /// kernel lets signal and write any task.
    fn check_perf_attr(&self, attr: &[u8]) -> Result<(), Denied> {
        let as_helper = |what: &str, id: u32| {
            self.policy().check_helper(id).map_err(|d| Denied {
                what: what.to_string(),
                rule: d.rule,
            })
        };
        if read_u64(attr, perf::ATTR_FLAGS) & perf::ATTR_FLAG_SIGTRAP != 0 {
            as_helper(
                "perf_event_open with sigtrap (a SIGTRAP to the counted task on every overflow)",
                helper::SEND_SIGNAL,
            )?;
        }
        let ref_ctr = read_u64(attr, perf::ATTR_CONFIG) >> perf::UPROBE_REF_CTR_SHIFT;
        if ref_ctr != 0 && Some(read_u32(attr, perf::ATTR_TYPE)) == crate::perf::uprobe_pmu() {
            as_helper(
                "perf_event_open of a uprobe with a reference counter (the kernel writes it \
                 into every process that maps the file)",
                helper::PROBE_WRITE_USER,
            )?;
        }
        Ok(())
    }

    /// A uprobe_multi link's `ref_ctr_offsets` are the same write into
    /// every process that maps the file as a perf uprobe's (see
    /// [`Guard::check_perf_attr`]): a non-zero one needs
    /// `probe_write_user`.
    fn check_uprobe_ref_ctrs(&self, call: &BpfCall) -> Result<(), Denied> {
        let Some((plan, contents)) = expanded(call, self.fds) else {
            return Ok(());
        };
        let counters = plan.buffers.iter().position(|b| {
            b.parent == telebpf_abi::Parent::Attr
                && b.ptr_offset == off::link_create::UPROBE_MULTI_REF_CTR_OFFSETS
        });
        let Some(Some(counters)) = counters.map(|i| contents.get(i).copied().flatten()) else {
            return Ok(());
        };
        if counters.iter().all(|&b| b == 0) {
            return Ok(());
        }
        self.policy()
            .check_helper(helper::PROBE_WRITE_USER)
            .map_err(|d| Denied {
                what: format!(
                    "{} of a uprobe_multi link with reference counters (the kernel writes them \
                     into every process that maps the file)",
                    cmd::name(cmd::BPF_LINK_CREATE)
                ),
                rule: d.rule,
            })
    }

    fn check_bpf(&self, call: &BpfCall) -> Result<(), Denied> {
        use cmd::*;
        let command = call.cmd & !BPF_COMMON_ATTRS;
        let name = cmd::name(command);
        let on = format!("{name} on");
        let of = format!("{name} of");
        let a = &call.attr;
        let fd_at = |at: usize| read_u32(a, at) as i32;
        match command {
            BPF_MAP_UPDATE_ELEM
            | BPF_MAP_DELETE_ELEM
            | BPF_MAP_LOOKUP_AND_DELETE_ELEM
            | BPF_MAP_FREEZE => {
                self.require_own(&on, fd_at(off::map_elem::MAP_FD))?;
                self.check_value_fds(call)
            }
            BPF_MAP_UPDATE_BATCH | BPF_MAP_DELETE_BATCH | BPF_MAP_LOOKUP_AND_DELETE_BATCH => {
                self.require_own(&on, fd_at(off::batch::MAP_FD))?;
                self.check_value_fds(call)
            }
            BPF_PROG_LOAD => self.check_load(call),
            BPF_RAW_TRACEPOINT_OPEN => {
                let fd = fd_at(off::raw_tp::PROG_FD);
                if let Some((t, eat)) = self.program(fd) {
                    let named = read_u64(a, off::raw_tp::NAME) != 0;
                    match t {
                        // By name: a raw tracepoint.
                        prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT
                        | prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE => {
                            self.policy().check_prog_type(name, t)?;
                            self.policy()
                                .check_attach_type(name, attach_type::BPF_TRACE_RAW_TP)?;
                        }
                        // Without a name: whatever the program was loaded
                        // for (the kernel refuses a name for these).
                        prog_type::BPF_PROG_TYPE_TRACING
                        | prog_type::BPF_PROG_TYPE_LSM
                        | prog_type::BPF_PROG_TYPE_EXT
                            if !named =>
                        {
                            self.check_attachable(name, t, eat)?
                        }
                        _ => self.policy().check_prog_type(name, t)?,
                    }
                }
                self.require_own(&of, fd)
            }
            BPF_LINK_CREATE => {
                let at = read_u32(a, off::link_create::ATTACH_TYPE);
                if at == attach_type::BPF_STRUCT_OPS {
                    // link_create.map_fd names a struct_ops map.
                    return self.require_own(&of, fd_at(off::link_create::PROG_FD));
                }
                let fd = fd_at(off::link_create::PROG_FD);
                if let Some((t, eat)) = self.program(fd) {
                    // The kernel holds tracing/LSM/cgroup/kprobe-multi
                    // programs to their expected attach type, which the
                    // policy already checked in the attr; extensions
                    // ignore it, so their type must be allowed.
                    self.check_attachable(name, t, eat.or(Some(at)))?;
                    if t == prog_type::BPF_PROG_TYPE_EXT {
                        self.require_own(
                            &format!("{name} extending"),
                            fd_at(off::link_create::TARGET_FD),
                        )?;
                    }
                }
                self.check_iterated_maps(call)?;
                if matches!(
                    at,
                    attach_type::BPF_TRACE_UPROBE_MULTI | attach_type::BPF_TRACE_UPROBE_SESSION
                ) {
                    self.check_uprobe_ref_ctrs(call)?;
                }
                self.require_own(&of, fd)
            }
            BPF_LINK_UPDATE => {
                let link = fd_at(off::link_update::LINK_FD);
                self.require_own(&of, link)?;
                if owned(self.fds, link) == Some(ObjectKind::Link) {
                    self.check_link(name, link)?;
                }
                let new = fd_at(off::link_update::NEW_PROG_FD);
                if let Some((t, eat)) = self.program(new) {
                    self.check_attachable(name, t, eat)?;
                }
                self.require_own(&format!("{name} to"), new)
            }
            BPF_LINK_DETACH | BPF_ITER_CREATE => self.require_own(&of, fd_at(off::LINK_FD)),
            BPF_PROG_ATTACH => {
                let fd = fd_at(off::attach::ATTACH_BPF_FD);
                if let Some((t, eat)) = self.program(fd) {
                    let at = read_u32(a, off::attach::ATTACH_TYPE);
                    self.check_attachable(name, t, eat.or(Some(at)))?;
                }
                self.require_own(&of, fd)
            }
            BPF_PROG_DETACH => {
                let fd = fd_at(off::attach::ATTACH_BPF_FD);
                if fd <= 0 && !self.policy().changes_foreign_objects() {
                    return Err(Denied {
                        what: format!("{name} without naming the program"),
                        rule: "change_foreign_objects is false: it would detach whatever program is attached there".into(),
                    });
                }
                self.require_own(&of, fd)
            }
            BPF_PROG_BIND_MAP => self.require_own(&on, fd_at(off::prog_bind_map::PROG_FD)),
            BPF_PROG_TEST_RUN => self.require_own(&of, fd_at(off::test_run::PROG_FD)),
            _ => Ok(()),
        }
    }

    /// The link's own type and attach type must be allowed too (updating a
    /// link swaps the program of an attachment the key may not make).
    fn check_link(&self, what: &str, fd: i32) -> Result<(), Denied> {
        let mut info = [0u8; telebpf_abi::off::link_info::SIZE];
        if self.kernel.object_info(fd, &mut info).is_err() {
            return Ok(());
        }
        let at = match read_u32(&info, 0) {
            link_type::BPF_LINK_TYPE_RAW_TRACEPOINT => Some(attach_type::BPF_TRACE_RAW_TP),
            link_type::BPF_LINK_TYPE_TRACING => Some(read_u32(&info, 16)),
            link_type::BPF_LINK_TYPE_CGROUP => Some(read_u32(&info, 24)),
            link_type::BPF_LINK_TYPE_ITER => Some(attach_type::BPF_TRACE_ITER),
            link_type::BPF_LINK_TYPE_NETNS
            | link_type::BPF_LINK_TYPE_TCX
            | link_type::BPF_LINK_TYPE_NETKIT
            | link_type::BPF_LINK_TYPE_SOCKMAP => Some(read_u32(&info, 20)),
            link_type::BPF_LINK_TYPE_XDP => Some(attach_type::BPF_XDP),
            link_type::BPF_LINK_TYPE_PERF_EVENT => Some(attach_type::BPF_PERF_EVENT),
            link_type::BPF_LINK_TYPE_KPROBE_MULTI => Some(attach_type::BPF_TRACE_KPROBE_MULTI),
            link_type::BPF_LINK_TYPE_UPROBE_MULTI => Some(attach_type::BPF_TRACE_UPROBE_MULTI),
            link_type::BPF_LINK_TYPE_STRUCT_OPS => Some(attach_type::BPF_STRUCT_OPS),
            link_type::BPF_LINK_TYPE_NETFILTER => Some(attach_type::BPF_NETFILTER),
            _ => None,
        };
        match at {
            Some(at) => self.policy().check_attach_type(what, at),
            None if self.policy().allows_every_attach_type() => Ok(()),
            None => Err(Denied {
                what: format!("{what} of a link of unknown type"),
                rule: "attach_types is not \"*\"".into(),
            }),
        }
    }

    /// `BPF_PROG_LOAD`: the calls the instructions make, the maps they
    /// name, and an extension's target program.
    fn check_load(&self, call: &BpfCall) -> Result<(), Denied> {
        let p = self.policy();
        let foreign_ok = p.changes_foreign_objects();
        if p.allows_every_call() && foreign_ok {
            return Ok(());
        }
        let a = &call.attr;
        if !foreign_ok && read_u32(a, off::prog_load::PROG_TYPE) == prog_type::BPF_PROG_TYPE_EXT {
            let target = read_u32(a, off::prog_load::ATTACH_PROG_FD) as i32;
            self.require_own("BPF_PROG_LOAD of an extension of", target)?;
        }
        let Some((plan, contents)) = expanded(call, self.fds) else {
            // The plan or a buffer is malformed: execution refuses the
            // call before the kernel sees it.
            return Ok(());
        };
        let buffer = |content: Content| {
            plan.buffers
                .iter()
                .position(|b| is_attr_buffer(b, content))
                .and_then(|i| contents.get(i).copied().flatten())
        };
        let Some(insns) = buffer(Content::Insns) else {
            return Ok(());
        };
        let prog = Program {
            insns,
            fd_array: buffer(Content::FdArray),
        };
        progcheck::check_calls(&prog, p, self.fds, self.kernel)?;
        if !foreign_ok {
            for fd in progcheck::map_fds(&prog, self.fds) {
                self.require_own("BPF_PROG_LOAD of a program naming", fd)?;
            }
        }
        Ok(())
    }

    /// An iterator link over a map (`bpf_map_elem`, `bpf_sk_storage_map`,
    /// `sockmap` iterators: the map fd in `iter_info`) may name only the
    /// key's own maps: the kernel hands the iterator program each value
    /// as writable memory, so reading the iterator could rewrite another's
    /// map.
    fn check_iterated_maps(&self, call: &BpfCall) -> Result<(), Denied> {
        if self.policy().changes_foreign_objects() {
            return Ok(());
        }
        for fd in fds_inside(call, Content::IterLinkInfo, self.fds) {
            if matches!(owned(self.fds, fd), Some(ObjectKind::Map(_))) {
                let what = format!("{} of an iterator over", cmd::name(cmd::BPF_LINK_CREATE));
                self.require_own(&what, fd)?;
            }
        }
        Ok(())
    }

    /// An update of an fd-valued map may only insert the key's own
    /// programs and maps.
    fn check_value_fds(&self, call: &BpfCall) -> Result<(), Denied> {
        let command = call.cmd & !cmd::BPF_COMMON_ATTRS;
        if self.policy().changes_foreign_objects()
            || !matches!(
                command,
                cmd::BPF_MAP_UPDATE_ELEM | cmd::BPF_MAP_UPDATE_BATCH
            )
        {
            return Ok(());
        }
        for fd in fds_inside(call, Content::MapValueFds, self.fds) {
            if matches!(
                owned(self.fds, fd),
                Some(ObjectKind::Prog { .. } | ObjectKind::Map(_))
            ) {
                self.require_own(&format!("{} inserting", cmd::name(command)), fd)?;
            }
        }
        Ok(())
    }
}

/// The fds a call names inside its buffers of `content`, as the plan
/// expanded from the buffers finds them (none if the call does not match
/// its plan: execution refuses it then).
fn fds_inside(call: &BpfCall, content: Content, fds: &dyn SessionFds) -> Vec<i32> {
    let Some((plan, _)) = expanded(call, fds) else {
        return Vec::new();
    };
    plan.fds
        .iter()
        .filter(|slot| match slot.parent {
            telebpf_abi::Parent::Buffer(j) => {
                plan.buffers.get(j).map(|b| b.content) == Some(content)
            }
            _ => false,
        })
        .map(|slot| slot.value)
        .collect()
}

/// Whether a program type's expected attach type decides where it can
/// attach, so that a program of it whose expected attach type is unknown
/// cannot be judged.
fn attach_matters(t: u32) -> bool {
    attach_type::bound_at_load(t, 0).is_some()
        || matches!(
            t,
            prog_type::BPF_PROG_TYPE_KPROBE | prog_type::BPF_PROG_TYPE_XDP
        )
}

fn is_attr_buffer(b: &BufferSpec, content: Content) -> bool {
    b.parent == telebpf_abi::Parent::Attr && b.content == content
}

/// The call's plan, expanded as execution will expand it, with the bytes
/// of every buffer that travelled in (`None` for Out buffers). `None` when
/// the call is malformed (execution refuses it the same way).
fn expanded<'a>(call: &'a BpfCall, fds: &dyn SessionFds) -> Option<(Plan, Vec<Option<&'a [u8]>>)> {
    let mut plan = Plan::new(call.cmd, &call.attr, call.common.as_deref(), fds).ok()?;
    let mut contents = Vec::new();
    let mut i = 0;
    while i < plan.buffers.len() {
        let spec = &plan.buffers[i];
        let content = match (spec.dir, call.buffers.get(i)?) {
            (Direction::In | Direction::InOut, WireBuffer::Data(d)) if spec.len.accepts(d) => {
                Some(d.as_slice())
            }
            (Direction::Out, _) => None,
            _ => return None,
        };
        if let Some(d) = content {
            plan.expand(i, d, fds).ok()?;
        }
        contents.push(content);
        i += 1;
    }
    Some((plan, contents))
}

/// Checks what [`crate::policy::Policy::check`] cannot decide from the
/// request alone; see the module doc.
/// `fds` are the session's, objects of `kernel`.
pub fn check(
    req: &Request,
    grant: &KeyGrant,
    fds: &dyn SessionFds,
    kernel: &dyn Kernel,
) -> Result<(), Denied> {
    Guard { grant, fds, kernel }.check(req)
}

/// `what` may act on object `id` of `kind` only if the key of `grant`
/// created it (`None`: the kernel would not say which object it is).
fn require_own_id(grant: &KeyGrant, what: &str, kind: Kind, id: Option<u32>) -> Result<(), Denied> {
    if id.is_some_and(|id| ownership::ledger(grant).owns(kind, id)) {
        return Ok(());
    }
    let id = id.map_or_else(|| "?".to_string(), |i| i.to_string());
    Err(Denied {
        what: format!(
            "{what} {} {id}, which key '{}' did not create",
            kind.word(),
            grant.name
        ),
        rule: "change_foreign_objects is false".into(),
    })
}

/// Whether a stream of the key of `grant` may consume the ring `ring`
/// (the identity of the ring the stream holds): a map ring only if the
/// key created it, unless it may change others' objects. The check of the
/// stream request ([`check`]) looked at the fd number it names; this one
/// is made once the stream holds the ring, which no later close and
/// reopen under the same number can change.
pub fn may_consume(grant: &KeyGrant, ring: crate::rings::RingKey) -> Result<(), String> {
    match ring {
        crate::rings::RingKey::Map(id)
            if !grant.policy.changes_foreign_objects()
                && !ownership::ledger(grant).owns(Kind::Map, id) =>
        {
            Err(format!(
                "map {id} is not one key '{}' created (change_foreign_objects is false)",
                grant.name
            ))
        }
        _ => Ok(()),
    }
}

/// Whether the key of `grant` may run the iterator of link `link` (a
/// pinned iterator's bpffs file, whose reading creates an iterator on the
/// link): as for `BPF_ITER_CREATE`, only its own links under
/// `change_foreign_objects = false`.
pub fn may_run_iterator(grant: &KeyGrant, link: Option<u32>) -> Result<(), Denied> {
    if grant.policy.changes_foreign_objects() {
        return Ok(());
    }
    require_own_id(grant, "reading the pinned iterator of", Kind::Link, link)
}

/// After `call` created guest fd `fd` for the key of `grant`: records the
/// object as the key's own, and a program's expected attach type (`fd` is
/// an fd of `kernel`).
pub fn created(call: &BpfCall, fd: i32, grant: &KeyGrant, kernel: &dyn Kernel) {
    let kind = match call.cmd & !cmd::BPF_COMMON_ATTRS {
        cmd::BPF_MAP_CREATE => Kind::Map,
        cmd::BPF_PROG_LOAD => {
            ownership::record_loaded(
                fd,
                read_u32(&call.attr, off::prog_load::EXPECTED_ATTACH_TYPE),
                kernel,
            );
            Kind::Prog
        }
        cmd::BPF_LINK_CREATE | cmd::BPF_RAW_TRACEPOINT_OPEN => Kind::Link,
        cmd::BPF_BTF_LOAD => Kind::Btf,
        _ => return,
    };
    if !grant.policy.changes_foreign_objects() {
        ownership::record(grant, fd, kind, kernel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use telebpf_abi::{write_u32, write_u64, MapMeta, Objects};

    use super::*;
    use crate::policy::{resolve, Policy};
    use crate::testing::{bpf_request as call, load_calling as load, FakeKernel};

    /// `command` on map fd `fd` (an element command's attr).
    fn on_map(command: u32, fd: u32) -> Request {
        let mut attr = vec![0u8; 32];
        write_u32(&mut attr, off::map_elem::MAP_FD, fd);
        call(command, attr, vec![])
    }

    /// A session that owns a hash map (fd 10), a tracepoint program (fd
    /// 11) and a tracing program (fd 12).
    struct Fake;

    impl Objects for Fake {
        fn kind(&self, fd: i32) -> Option<ObjectKind> {
            match fd {
                10 => Some(ObjectKind::Map(MapMeta {
                    map_type: telebpf_abi::map_type::BPF_MAP_TYPE_HASH,
                    key_size: 4,
                    value_size: 8,
                    max_entries: 4,
                    map_flags: 0,
                })),
                11 => Some(ObjectKind::Prog {
                    prog_type: prog_type::BPF_PROG_TYPE_TRACEPOINT,
                }),
                12 => Some(ObjectKind::Prog {
                    prog_type: prog_type::BPF_PROG_TYPE_TRACING,
                }),
                _ => None,
            }
        }

        fn possible_cpus(&self) -> u32 {
            1
        }
    }

    impl SessionFds for Fake {
        fn owns(&self, fd: i32) -> bool {
            matches!(fd, 10..=12)
        }
    }

    fn grant(policy: &str) -> KeyGrant {
        KeyGrant {
            name: "k".into(),
            file: Default::default(),
            policy: resolve(policy, std::path::Path::new("/")).unwrap().rules,
        }
    }

    #[test]
    fn loaded_programs_calls_are_checked_by_name() {
        let tracing = grant("tracing");
        let d = check(&load(36), &tracing, &Fake, &FakeKernel::default()).unwrap_err();
        assert_eq!(
            d.what,
            "BPF_PROG_LOAD of a program calling bpf_probe_write_user"
        );
        assert!(
            check(&load(5), &tracing, &Fake, &FakeKernel::default()).is_ok(),
            "bpf_ktime_get_ns"
        );
        let full = KeyGrant {
            name: "f".into(),
            file: Default::default(),
            policy: Arc::new(Policy::full()),
        };
        assert!(check(&load(36), &full, &Fake, &FakeKernel::default()).is_ok());
    }

    #[test]
    fn foreign_objects_are_refused_without_a_record() {
        // Map fd 10 of the session was opened, not created by this key:
        // the ledger has no id for it.
        let tracing = grant("tracing");
        let delete = on_map(cmd::BPF_MAP_DELETE_ELEM, 10);
        let d = check(&delete, &tracing, &Fake, &FakeKernel::default()).unwrap_err();
        assert_eq!(d.rule, "change_foreign_objects is false");
        assert!(
            d.what.starts_with("BPF_MAP_DELETE_ELEM on map "),
            "{}",
            d.what
        );
        // Fds the session does not own pass: execution turns them into -1.
        let stray = on_map(cmd::BPF_MAP_DELETE_ELEM, 99);
        assert!(check(&stray, &tracing, &Fake, &FakeKernel::default()).is_ok());
        // Detaching without naming the program.
        let detach = call(cmd::BPF_PROG_DETACH, vec![0u8; 32], vec![]);
        assert!(check(&detach, &tracing, &Fake, &FakeKernel::default()).is_err());
    }

    #[test]
    fn iterators_over_foreign_maps_are_refused() {
        // An iterator link of tracing program 12 over map 10, which this
        // key did not create (the ledger has no id for it).
        let mut attr = vec![0u8; 64];
        write_u32(&mut attr, off::link_create::PROG_FD, 12);
        write_u32(
            &mut attr,
            off::link_create::ATTACH_TYPE,
            attach_type::BPF_TRACE_ITER,
        );
        write_u64(&mut attr, off::link_create::ITER_INFO, 0x1000);
        write_u32(&mut attr, off::link_create::ITER_INFO_LEN, 16);
        let mut info = vec![0u8; 16];
        write_u32(&mut info, 0, 10);
        let link = |info: Vec<u8>| {
            call(
                cmd::BPF_LINK_CREATE,
                attr.clone(),
                vec![WireBuffer::Data(info)],
            )
        };
        let d = check(
            &link(info),
            &grant("tracing"),
            &Fake,
            &FakeKernel::default(),
        )
        .unwrap_err();
        assert!(
            d.what
                .starts_with("BPF_LINK_CREATE of an iterator over map "),
            "{}",
            d.what
        );
        assert_eq!(d.rule, "change_foreign_objects is false");
        // A key that may change others' objects may iterate over them.
        let full = KeyGrant {
            name: "f".into(),
            file: Default::default(),
            policy: Arc::new(Policy::full()),
        };
        assert!(check(&link(vec![0u8; 16]), &full, &Fake, &FakeKernel::default()).is_ok());
    }

    /// A perf_event_open request with `attr`.
    fn perf_open(attr: Vec<u8>) -> Request {
        Request::PerfEventOpen {
            attr,
            pid: 1,
            cpu: -1,
            group_fd: -1,
            flags: 0,
            config1_string: None,
        }
    }

    #[test]
    fn perf_events_that_signal_or_write_need_the_helpers() {
        let mut attr = vec![0u8; 128];
        write_u32(&mut attr, perf::ATTR_TYPE, perf::TYPE_SOFTWARE);
        write_u64(
            &mut attr,
            perf::ATTR_FLAGS,
            perf::ATTR_FLAG_SIGTRAP | perf::ATTR_FLAG_REMOVE_ON_EXEC,
        );
        let sigtrap = perf_open(attr.clone());
        let d = check(&sigtrap, &grant("observe"), &Fake, &FakeKernel::default()).unwrap_err();
        assert!(
            d.what.starts_with("perf_event_open with sigtrap"),
            "{}",
            d.what
        );
        assert_eq!(d.rule, "'send_signal' is in helpers.deny");
        let full = KeyGrant {
            name: "f".into(),
            file: Default::default(),
            policy: Arc::new(Policy::full()),
        };
        assert!(check(&sigtrap, &full, &Fake, &FakeKernel::default()).is_ok());
        write_u64(&mut attr, perf::ATTR_FLAGS, 0);
        assert!(check(
            &perf_open(attr.clone()),
            &grant("observe"),
            &Fake,
            &FakeKernel::default()
        )
        .is_ok());
        if let Some(uprobe) = crate::perf::uprobe_pmu() {
            write_u32(&mut attr, perf::ATTR_TYPE, uprobe);
            write_u64(&mut attr, perf::ATTR_CONFIG, 0x2028 << 32);
            let d = check(
                &perf_open(attr.clone()),
                &grant("tracing"),
                &Fake,
                &FakeKernel::default(),
            )
            .unwrap_err();
            assert_eq!(d.rule, "'probe_write_user' is in helpers.deny");
            write_u64(&mut attr, perf::ATTR_CONFIG, 1); // retprobe, no counter
            assert!(check(
                &perf_open(attr),
                &grant("tracing"),
                &Fake,
                &FakeKernel::default()
            )
            .is_ok());
        }
    }

    #[test]
    fn unknown_attach_types_matter_only_where_the_kernel_uses_them() {
        assert!(attach_matters(prog_type::BPF_PROG_TYPE_TRACING));
        assert!(attach_matters(prog_type::BPF_PROG_TYPE_LSM));
        assert!(attach_matters(prog_type::BPF_PROG_TYPE_CGROUP_SKB));
        assert!(attach_matters(prog_type::BPF_PROG_TYPE_KPROBE));
        assert!(!attach_matters(prog_type::BPF_PROG_TYPE_TRACEPOINT));
        assert!(!attach_matters(prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT));
        assert!(!attach_matters(prog_type::BPF_PROG_TYPE_EXT));
    }
}
