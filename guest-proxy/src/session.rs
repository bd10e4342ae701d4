//! One client's conversation, and the guest fds held on its behalf.
//!
//! A session starts with the handshake, run on the async runtime with its
//! time limit (no request is decoded before the client proved it holds a
//! key). Then the connection leaves the runtime: a thread of its own sends
//! the Welcome and answers requests in order with blocking I/O — no
//! runtime hop on the request path, and a bounded spin before each blocking
//! read (`TELEBPF_PROXY_SPIN_US`) so that a request arriving soon after the
//! last reply is picked up without a cross-core wake-up. The session ends
//! when the client goes away, on an error, a panic, or when the proxy shuts
//! down; whatever the reason, [`Session`]'s `Drop` closes every guest fd the
//! client still held, which is what makes a killed client leak nothing.
//!
//! Every request passes the policy of the session's key first
//! ([`crate::policy`]); a refused one is answered [`Reply::Refused`] without
//! being executed. Refusals, requests that create or change something, and
//! the session's start and end go to the audit log ([`crate::audit`]) when
//! one is configured.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use telebpf_abi::{cmd, ObjectKind, Objects};
use telebpf_protocol::channel::{AsyncChannel, SyncChannel};
use telebpf_protocol::key::Psk;
use telebpf_protocol::message::{
    self, CgroupOp, CgroupReply, CollectError, ErrorReply, Facts, FileOp, NetlinkOp, NetlinkReply,
    NewObject, Refusal, Reply, Request, SessionToken, Welcome, FOREIGN_FD, NETLINK_LINK,
};
use telebpf_protocol::transport::{ServerStream, SyncServerStream};
use telebpf_protocol::{ChannelError, TryCloneStream};

use crate::audit::{Audit, Event};
use crate::bpf_exec::{self, SessionFds};
use crate::bpf_symbols::BpfSymbols;
use crate::kernel::Kernel;
use crate::limits::{self, Governor, LimitArgs, SessionBudget};
use crate::perf::{self, PerfFds};
use crate::policy::{self, KeyGrant, Policy};
use crate::registry::{Registration, Registry};
use crate::streams::{self, Owner, Streams};
use crate::throttle::{SessionNotes, FILE_REFUSED, REFUSED};
use crate::{bulk, cgroup, files, hangup, log, netlink};

/// Largest single `read()` of an iterator fd.
const MAX_READ: u32 = 1 << 20;

/// The guest objects of one client.
#[derive(Debug)]
pub struct Session {
    id: u64,
    possible_cpus: u32,
    /// The kernel its calls go to, and its objects live in.
    kernel: Arc<dyn Kernel>,
    objects: HashMap<i32, NewObject>,
    /// Which of the session's fds stream connections may attach to.
    owner: Arc<Owner>,
    /// Its share of the proxy's limits.
    budget: SessionBudget,
    /// Interrupts a call when the client hangs up during it.
    watch: Option<hangup::Watch>,
    /// The key the client authenticated with, and its policy.
    grant: Arc<KeyGrant>,
    /// Where audit records go, if anywhere.
    audit: Option<Arc<Audit>>,
    /// The page batches its client holds, per collector.
    page_bases: bulk::PageBases,
    /// Per-pointer kernel-memory reads served, and their bytes: too many
    /// to audit one by one, so the session's end tells the totals.
    kernel_reads: (u64, u64),
    /// The files it reads range by range.
    snapshots: files::Snapshots,
    /// The `[bpf]` kallsyms lines its programs had before it detached.
    bpf_symbols: BpfSymbols,
    /// Which refusals and audited requests are written in full.
    notes: SessionNotes,
}

impl PerfFds for Session {
    fn object(&self, fd: i32) -> Option<&NewObject> {
        self.objects.get(&fd)
    }

    fn kernel(&self) -> &dyn Kernel {
        &*self.kernel
    }
}

impl Objects for Session {
    fn kind(&self, fd: i32) -> Option<ObjectKind> {
        if fd == FOREIGN_FD {
            // An fd open on the host that is no guest object.
            return Some(ObjectKind::Other);
        }
        self.objects.get(&fd).map(|o| o.kind.clone())
    }

    fn possible_cpus(&self) -> u32 {
        self.possible_cpus
    }

    fn link_type(&self, fd: i32) -> Option<u32> {
        self.objects.get(&fd).and_then(|o| o.link_type)
    }
}

impl SessionFds for Session {
    fn owns(&self, fd: i32) -> bool {
        self.objects.contains_key(&fd)
    }

    fn may_create(&self) -> Result<(), i32> {
        self.budget.may_create()
    }

    fn reserve(&self, bytes: usize) -> Result<(), i32> {
        self.budget.reserve(bytes)
    }
}

impl netlink::NetlinkFds for Session {
    fn netlink(&self, fd: i32) -> Option<bool> {
        self.objects.get(&fd).map(|o| o.link == NETLINK_LINK)
    }

    fn program(&self, fd: i32) -> Result<(), i32> {
        match self.objects.get(&fd).map(|o| &o.kind) {
            Some(ObjectKind::Prog { .. }) => Ok(()),
            Some(_) => Err(libc::EINVAL),
            None => Err(libc::EBADF),
        }
    }

    fn reserve(&self, bytes: usize) -> Result<(), i32> {
        self.budget.reserve(bytes)
    }
}

impl Session {
    /// A session with no objects yet in `kernel`, not reachable by
    /// streams.
    pub fn new(id: u64, possible_cpus: u32, kernel: Arc<dyn Kernel>) -> Session {
        Session::with_owner(id, possible_cpus, Arc::default(), kernel)
    }

    /// A session whose rings stream connections may attach to via `owner`,
    /// calling `kernel`. It may do everything (the full policy) until
    /// [`Session::governed`].
    pub fn with_owner(
        id: u64,
        possible_cpus: u32,
        owner: Arc<Owner>,
        kernel: Arc<dyn Kernel>,
    ) -> Session {
        Session {
            id,
            possible_cpus,
            kernel,
            objects: HashMap::new(),
            owner,
            budget: SessionBudget::default(),
            watch: None,
            grant: Arc::new(KeyGrant {
                name: "(unnamed)".into(),
                file: Default::default(),
                policy: Arc::new(Policy::full()),
            }),
            audit: None,
            page_bases: bulk::PageBases::default(),
            kernel_reads: (0, 0),
            snapshots: files::Snapshots::default(),
            bpf_symbols: BpfSymbols::default(),
            notes: SessionNotes::new(std::path::Path::new(""), "(unnamed)"),
        }
    }

    /// Puts the session under the proxy's limits.
    pub fn set_budget(&mut self, budget: SessionBudget) {
        self.budget = budget;
    }

    /// The session under `grant`'s policy, auditing to `audit`.
    pub fn governed(mut self, grant: Arc<KeyGrant>, audit: Option<Arc<Audit>>) -> Session {
        self.notes = SessionNotes::new(&grant.file, &grant.name);
        self.grant = grant;
        self.audit = audit;
        self
    }

    /// Checks `req` against the key's policy: `None` if it may run, else
    /// the refusal to answer (logged and audited here, throttled).
    fn refusal(&mut self, req: &Request) -> Option<Reply> {
        let denied = self
            .grant
            .policy
            .check(req)
            .and_then(|()| crate::guard::check(req, &self.grant, self, &*self.kernel))
            .err()?;
        Some(self.refuse(denied))
    }

    /// The refusal to answer for `denied` (logged and audited here,
    /// throttled).
    fn refuse(&mut self, denied: policy::Denied) -> Reply {
        let full = self
            .notes
            .refusal(REFUSED, self.audit.as_deref(), &self.grant.name);
        let policy = self.grant.policy.name();
        if full {
            log::info(format_args!(
                "session {}: policy '{policy}' of key '{}' refuses {} ({})",
                self.id, self.grant.name, denied.what, denied.rule
            ));
            if let Some(audit) = &self.audit {
                audit.record(&Event::Refused {
                    session: self.id,
                    key: &self.grant.name,
                    policy,
                    op: &denied.what,
                    rule: &denied.rule,
                });
            }
        }
        Reply::Refused(Refusal {
            what: denied.what,
            rule: denied.rule,
            key: self.grant.name.clone(),
            policy: policy.to_string(),
        })
    }

    /// Writes the summaries of held-back lines and records whose interval
    /// is over, once, when the session ends. While it lives, and after, the
    /// server writes them every second (`throttle::flush_keys`): they are
    /// the key's, not the session's, so the request loop need not look.
    fn flush_notes(&mut self) {
        self.notes.flush(self.audit.as_deref());
    }

    /// Writes the audit record of a request that created or changed
    /// something, with its outcome (throttled per op).
    fn audit_outcome(&mut self, op: &str, detail: Option<&str>, reply: Option<&Reply>) {
        let Some(audit) = &self.audit else { return };
        let (ret, errno) = match reply {
            Some(Reply::Bpf(r)) => ((r.ret >= 0).then_some(r.ret), r.errno),
            Some(Reply::Error(e)) => (None, e.errno),
            Some(Reply::Opened(Ok((fd, _)))) => (Some(*fd), 0),
            Some(Reply::Ioctl(Ok((ret, _)))) => (Some(*ret), 0),
            Some(Reply::Collected(Ok(batch))) => (Some(batch.visited as i64), 0),
            Some(Reply::Collected(Err(CollectError::Run(e)))) => (None, *e),
            // The client has to send the object: no such collector yet.
            Some(Reply::Collected(Err(CollectError::UnknownCollector))) => (None, libc::ENOENT),
            Some(Reply::Collected(Err(_))) => (None, libc::EINVAL),
            // A relayed datagram's outcome is the kernel's ack, which the
            // client receives later: the record says it was sent.
            Some(Reply::Netlink(Ok(NetlinkReply::Sent(n)))) => (Some(i64::from(*n)), 0),
            Some(Reply::Netlink(Err(e))) => (None, *e),
            Some(
                Reply::Opened(Err(e))
                | Reply::Ioctl(Err(e))
                | Reply::Snapshot(Err(e))
                | Reply::File(Err(e))
                | Reply::Read(Err(e)),
            ) => (None, *e),
            _ => (None, 0),
        };
        if !self.notes.request(op, errno != 0, audit, &self.grant.name) {
            return;
        }
        audit.record(&Event::Request {
            session: self.id,
            key: &self.grant.name,
            op,
            detail,
            ret,
            errno,
        });
    }

    /// The session now holds guest fd `fd`.
    fn adopt(&mut self, fd: i32, obj: NewObject) {
        if obj.is_ring() {
            self.owner.add(fd);
        }
        if obj.kind == ObjectKind::Link {
            self.bpf_symbols.linked();
        }
        if self.objects.insert(fd, obj).is_none() {
            self.budget.object_added();
        }
    }

    /// Keeps the `[bpf]` kallsyms lines of the guest before the session's
    /// first close of a program or link since it made a link (see
    /// [`crate::bpf_symbols`]).
    fn capture_bpf_symbols(&mut self) {
        match self
            .kernel
            .bpf_kallsyms()
            .and_then(|lines| self.bpf_symbols.capture(&lines, &self.budget))
        {
            Ok(()) => log::debug(format_args!(
                "session {}: kept {} [bpf] kallsyms lines before a detach",
                self.id,
                self.bpf_symbols.len()
            )),
            Err(errno) => log::debug(format_args!(
                "session {}: [bpf] kallsyms lines not kept: errno {errno}",
                self.id
            )),
        }
    }

    /// Number of guest fds held.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Per-pointer kernel-memory reads served so far, and their bytes.
    pub fn kernel_reads(&self) -> (u64, u64) {
        self.kernel_reads
    }

    /// Answers one request; `None` for requests that have no reply.
    pub fn handle(&mut self, req: Request) -> Option<Reply> {
        if !matches!(req, Request::Close { .. }) {
            if let Err(errno) = self.budget.admit_request() {
                return Some(Reply::Error(ErrorReply {
                    errno,
                    message: "request rate limit of the proxy reached".into(),
                }));
            }
        }
        if let Some(refused) = self.refusal(&req) {
            return Some(refused);
        }
        let audited = self.audit.as_ref().and_then(|_| policy::audited(&req));
        let reply = self.execute(req);
        if let Some((op, detail)) = audited {
            self.audit_outcome(&op, detail.as_deref(), reply.as_ref());
        }
        reply
    }

    /// Under a policy that confines pins to `[bpffs] paths`: the path of a
    /// `BPF_OBJ_PIN`/`BPF_OBJ_GET` (which the policy checked as a string)
    /// is opened without following symlinks and given to the kernel as
    /// our handle of it ([`crate::resolve::anchor_pin`]); the handle, to
    /// hold until the call returns.
    fn anchor_pin(&self, call: &mut message::BpfCall) -> Result<Option<std::os::fd::OwnedFd>, i32> {
        let command = call.cmd & !cmd::BPF_COMMON_ATTRS;
        if !matches!(command, cmd::BPF_OBJ_PIN | cmd::BPF_OBJ_GET)
            || !self.grant.policy.confines_bpffs()
        {
            return Ok(None);
        }
        // The policy let it through: a clean absolute path, not relative
        // to a directory fd.
        let Some(message::WireBuffer::Data(path)) = call.buffers.first() else {
            return Ok(None);
        };
        let path = std::str::from_utf8(path.strip_suffix(&[0]).unwrap_or(path.as_slice()))
            .map_err(|_| libc::EINVAL)?;
        let (fd, anchored) = crate::resolve::anchor_pin(path, command == cmd::BPF_OBJ_PIN)?;
        call.buffers[0] = message::WireBuffer::Data(anchored.into_bytes_with_nul());
        Ok(Some(fd))
    }

    /// Executes one request the policy allowed.
    fn execute(&mut self, req: Request) -> Option<Reply> {
        match req {
            Request::Bpf(mut call) => {
                // A pin's path means the string the policy checked.
                let _anchor = match self.anchor_pin(&mut call) {
                    Ok(a) => a,
                    Err(errno) => return Some(Reply::Bpf(bpf_exec::failed_call(&call, errno))),
                };
                // Maps, programs and BTF: their kernel memory is budgeted
                // before they exist (see `kmem`).
                let charge = match self.budget.reserve_kernel_memory(&call, self.possible_cpus) {
                    Ok(c) => c,
                    Err(errno) => return Some(Reply::Bpf(bpf_exec::failed_call(&call, errno))),
                };
                let mut outcome = {
                    let _busy = self.watch.as_ref().map(|w| w.busy());
                    bpf_exec::execute(&call, self, &*self.kernel)
                };
                if let (Some(charge), Ok(o)) = (charge, outcome.as_mut()) {
                    charge.settle(&call, o);
                }
                if log::is_debug() {
                    let result = match &outcome {
                        Ok(o) if o.result.ret < 0 => format!("errno {}", o.result.errno),
                        Ok(o) => format!("{}", o.result.ret),
                        Err(e) => format!("refused: {}", e.message),
                    };
                    log::debug(format_args!(
                        "session {}: bpf {} -> {result}",
                        self.id,
                        cmd::name(call.cmd & !cmd::BPF_COMMON_ATTRS)
                    ));
                }
                Some(match outcome {
                    Ok(outcome) => {
                        if let (Some(fd), Some(obj)) =
                            (outcome.new_fd, outcome.result.object.as_ref())
                        {
                            self.adopt(fd, obj.clone());
                            crate::guard::created(&call, fd, &self.grant, &*self.kernel);
                        }
                        Reply::Bpf(outcome.result)
                    }
                    Err(e) => Reply::Error(e),
                })
            }
            Request::Close { fd } => {
                if let Some(obj) = self.objects.get(&fd) {
                    if self.bpf_symbols.captures_on_close(&obj.kind) {
                        self.capture_bpf_symbols();
                    }
                }
                if self.objects.remove(&fd).is_some() {
                    self.budget.objects_removed(1);
                    self.owner.remove(fd);
                    self.kernel.close(fd);
                }
                None
            }
            Request::Read { fd, len } => {
                if let Err(e) = self.budget.reserve(len.min(MAX_READ) as usize) {
                    return Some(Reply::Read(Err(e)));
                }
                Some(Reply::Read(match self.objects.get(&fd).map(|o| &o.kind) {
                    Some(ObjectKind::Iter) => self.kernel.read(fd, len.min(MAX_READ) as usize),
                    Some(_) => Err(libc::EINVAL),
                    None => Err(libc::EBADF),
                }))
            }
            Request::File(FileOp::Fdinfo { fd }) => Some(Reply::File(if self.owns(fd) {
                self.kernel.fdinfo(fd).map(message::FileReply::Data)
            } else {
                Err(libc::EBADF)
            })),
            Request::File(op) => {
                let grant = self.grant.clone();
                let runs_iterator = move |link| crate::guard::may_run_iterator(&grant, link);
                let mut cx = files::Context {
                    budget: &self.budget,
                    policy: &self.grant.policy,
                    runs_iterator: &runs_iterator,
                    snapshots: &mut self.snapshots,
                    bpf_symbols: &self.bpf_symbols,
                };
                let result = files::execute(&op, &mut cx);
                log::debug(format_args!(
                    "session {}: file {} -> {}",
                    self.id,
                    files::op_path(&op).unwrap_or("?"),
                    match &result {
                        Ok(_) => "ok".to_string(),
                        Err(files::Failure::Errno(e)) => format!("errno {e}"),
                        Err(files::Failure::Refused(d)) => format!("refused: {}", d.rule),
                    }
                ));
                match result {
                    Ok(reply) => Some(Reply::File(Ok(reply))),
                    Err(files::Failure::Refused(denied)) => Some(self.refuse(denied)),
                    Err(files::Failure::Errno(errno)) => {
                        if errno == libc::EACCES
                            && self.notes.refusal(
                                FILE_REFUSED,
                                self.audit.as_deref(),
                                &self.grant.name,
                            )
                        {
                            log::info(format_args!(
                                "session {}: refused {:?} (not a kernel-describing file)",
                                self.id,
                                files::op_path(&op).unwrap_or("?")
                            ));
                        }
                        Some(Reply::File(Err(errno)))
                    }
                }
            }
            Request::Ping(payload) => Some(Reply::Pong(payload)),
            Request::PerfEventOpen {
                attr,
                pid,
                cpu,
                group_fd,
                flags,
                config1_string,
            } => {
                if let Err(e) = self.budget.may_create() {
                    return Some(Reply::Opened(Err(e)));
                }
                let opened = perf::open(
                    &attr,
                    pid,
                    cpu,
                    group_fd,
                    flags,
                    config1_string.as_deref(),
                    self,
                );
                log::debug(format_args!(
                    "session {}: perf_event_open -> {opened:?}",
                    self.id
                ));
                Some(Reply::Opened(opened.map(|fd| {
                    let obj = perf::describe_perf_event();
                    self.adopt(fd as i32, obj.clone());
                    (fd, obj)
                })))
            }
            Request::Ioctl { fd, cmd, arg } => Some(Reply::Ioctl(perf::ioctl(fd, cmd, &arg, self))),
            Request::MapWrite { fd, offset, data } => Some(Reply::Snapshot(
                perf::write_map(fd, offset, &data, self).map(|()| Vec::new()),
            )),
            Request::MapSnapshot { fd, len, offset } => {
                if let Err(e) = self
                    .budget
                    .reserve(usize::try_from(len).unwrap_or(usize::MAX))
                {
                    return Some(Reply::Snapshot(Err(e)));
                }
                Some(Reply::Snapshot(perf::snapshot(fd, len, offset, self)))
            }
            // Only the first request of a fresh connection may make it a
            // stream (see `converse`).
            Request::Stream(_) => Some(Reply::Error(ErrorReply {
                errno: libc::EPROTO,
                message: "a stream request must open its own connection".into(),
            })),
            Request::Collect(req) => {
                // The batch's size is the collector's, known only once it
                // ran: charge it before it is sent like any other reply.
                let result = bulk::collect(req, &mut self.page_bases).and_then(|b| {
                    let size =
                        b.records.len() + b.page_data.len() + 8 * (b.pages.len() + b.kept.len());
                    self.budget.reserve(size).map_err(CollectError::Run)?;
                    Ok(b)
                });
                log::debug(format_args!(
                    "session {}: collect -> {}",
                    self.id,
                    match &result {
                        Ok(b) =>
                            format!("{} pages, {} record bytes", b.pages.len(), b.records.len()),
                        Err(e) => format!("{e:?}"),
                    }
                ));
                Some(Reply::Collected(result))
            }
            Request::Peek(ranges) => {
                // The client chose the lengths: charge them before reading.
                let total = ranges.iter().map(|r| r.len as usize).sum::<usize>();
                if let Err(e) = self.budget.reserve(total) {
                    return Some(Reply::Memory(Err(e)));
                }
                let read = bulk::peek(ranges);
                if let Ok(m) = &read {
                    self.kernel_reads.0 += 1;
                    self.kernel_reads.1 += m.bytes.len() as u64;
                }
                Some(Reply::Memory(read))
            }
            Request::Programs => {
                let listed = bulk::programs().and_then(|list| {
                    // Charged like any reply whose size the guest decides.
                    let size: usize = list.iter().map(|p| 32 + p.name.len()).sum();
                    self.budget.reserve(size)?;
                    Ok(list)
                });
                Some(Reply::Programs(listed))
            }
            Request::Cgroup(op) => Some(Reply::Cgroup(self.cgroup(&op))),
            // Records belong on a user ring buffer's stream connection.
            Request::Records(_) => Some(Reply::Error(ErrorReply {
                errno: libc::EPROTO,
                message: "records outside a user ring buffer stream".into(),
            })),
            Request::Netlink(NetlinkOp::Open) => {
                if let Err(e) = self.budget.may_create() {
                    return Some(Reply::Netlink(Err(e)));
                }
                Some(Reply::Netlink(netlink::open().map(|fd| {
                    let obj = netlink::describe();
                    self.adopt(fd, obj.clone());
                    NetlinkReply::Opened(fd, obj)
                })))
            }
            Request::Netlink(op) => Some(Reply::Netlink(netlink::execute(&op, self))),
            Request::Interface(op) => Some(Reply::Interface(netlink::interface(&op))),
        }
    }

    /// A cgroup request the policy allowed ([`crate::cgroup`]): an opened
    /// cgroup becomes a session object like a map or a program.
    fn cgroup(&mut self, op: &CgroupOp) -> Result<CgroupReply, i32> {
        if matches!(op, CgroupOp::Open { .. }) {
            self.budget.may_create()?;
        }
        let answer = cgroup::execute(op);
        log::debug(format_args!(
            "session {}: cgroup {:?} {} -> {}",
            self.id,
            std::mem::discriminant(op),
            cgroup::op_path(op).unwrap_or(""),
            match &answer {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("errno {e}"),
            }
        ));
        let reply = match answer? {
            cgroup::Answer::Reply(reply) => reply,
            cgroup::Answer::Opened(opened) => {
                let (fd, object) = opened.into_parts();
                self.adopt(fd, object.clone());
                CgroupReply::Opened { fd, object }
            }
        };
        // The listing's size is the guest's: charged like any such reply.
        if let CgroupReply::Listing { entries, .. } = &reply {
            let size: usize = entries.iter().map(|e| 128 + e.name.len()).sum();
            self.budget.reserve(size)?;
        }
        Ok(reply)
    }

    /// Closes every guest fd still held.
    pub fn close_all(&mut self) {
        self.owner.end();
        self.budget.objects_removed(self.objects.len());
        for (fd, _) in self.objects.drain() {
            self.kernel.close(fd);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.flush_notes();
        let n = self.objects.len();
        self.close_all();
        log::debug(format_args!(
            "session {}: closed {n} guest objects",
            self.id
        ));
    }
}

/// What every session needs from the proxy.
#[derive(Debug)]
pub struct Context {
    /// Accepted keys.
    pub keys: Vec<Psk>,
    /// Name and policy of each key, in the order of `keys`.
    pub grants: Vec<Arc<KeyGrant>>,
    /// Where audit records go, if anywhere.
    pub audit: Option<Arc<Audit>>,
    /// The guest kernel's facts.
    pub facts: Facts,
    /// Sessions by token, for stream connections to find their rings.
    pub streams: Streams,
    /// How long a session thread spins before blocking for a request.
    pub spin: Duration,
    /// The live sessions.
    pub registry: Arc<Registry>,
    /// The limits and what is used of them.
    pub governor: Arc<Governor>,
    /// The kernel the sessions call.
    pub kernel: Arc<dyn Kernel>,
}

impl Context {
    /// The context for `keys` and `facts`, its sessions calling `kernel`;
    /// every key may do everything until `grants` says otherwise.
    pub fn new(keys: Vec<Psk>, facts: Facts, spin: Duration, kernel: Arc<dyn Kernel>) -> Context {
        let grants = (0..keys.len())
            .map(|i| {
                Arc::new(KeyGrant {
                    name: format!("#{i}"),
                    file: Default::default(),
                    policy: Arc::new(Policy::full()),
                })
            })
            .collect();
        Context {
            keys,
            grants,
            audit: None,
            facts,
            streams: Streams::new(kernel.clone()),
            spin,
            registry: Arc::new(Registry::new()),
            governor: Governor::new(LimitArgs::default(), kernel.clone()),
            kernel,
        }
    }

    /// The same context under `limits`.
    pub fn with_limits(mut self, limits: LimitArgs) -> Context {
        self.governor = Governor::new(limits, self.kernel.clone());
        self
    }
}

/// Why a connection did not become a session (what the server logs and
/// audits as a failed handshake).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The handshake failed or timed out.
    #[error(transparent)]
    Handshake(ChannelError),
    /// The last session place was taken while the handshake ran.
    #[error("refused after the handshake, {sessions} sessions (--max-sessions)")]
    Full {
        /// Sessions at the time.
        sessions: usize,
    },
    /// The channel could not leave the async runtime.
    #[error(transparent)]
    Parts(ChannelError),
    /// The connection could not become a blocking socket, or its handle
    /// for the registry could not be made.
    #[error(transparent)]
    Blocking(std::io::Error),
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` could not be set.
    #[error("cannot set socket timeouts: {0}")]
    Timeouts(#[source] std::io::Error),
    /// The proxy is stopping.
    #[error("refused, proxy shutting down")]
    ShuttingDown,
    /// The handshake task panicked.
    #[error("handshake task panicked")]
    Panicked,
}

/// Runs one connection's handshake, then hands the connection to a thread
/// of its own ([`converse`]) and returns. `answered` is set once the proxy
/// answers the client's hello (see [`crate::handshakes`]). The session's
/// place under `--max-sessions` is taken once the client proved it holds a
/// key, and held until the session ends. An error is why the connection
/// did not become a session; the caller logs and audits it (throttled).
pub async fn start(
    stream: ServerStream,
    peer: String,
    ctx: Arc<Context>,
    id: u64,
    answered: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), StartError> {
    let timeout = ctx.governor.args.handshake_timeout();
    let stream = crate::handshakes::Tracked::new(stream, answered);
    let (chan, key_index) = AsyncChannel::server_with_timeout(stream, &ctx.keys, timeout)
        .await
        .map_err(StartError::Handshake)?;
    let Some(slot) = ctx.governor.admit_connection() else {
        return Err(StartError::Full {
            sessions: ctx.governor.connections(),
        });
    };
    let (stream, handle, sealer, opener, buffered) =
        chan.into_parts().map_err(StartError::Parts).and_then(|p| {
            let stream = p
                .stream
                .into_inner()
                .into_blocking()
                .map_err(StartError::Blocking)?;
            let handle = stream.try_clone().map_err(StartError::Blocking)?;
            let args = &ctx.governor.args;
            limits::set_socket_timeouts(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                args.tick(),
                args.stall_timeout(),
            )
            .map_err(StartError::Timeouts)?;
            Ok((stream, handle, p.sealer, p.opener, p.buffered))
        })?;
    let Some(registration) = ctx.registry.register(id, handle) else {
        return Err(StartError::ShuttingDown);
    };
    let grant = ctx.grants[key_index].clone();
    log::info(format_args!(
        "session {id} from {peer}: opened (key #{key_index} '{}', policy '{}')",
        grant.name,
        grant.policy.name()
    ));
    if let Some(audit) = &ctx.audit {
        let key_id: String = ctx.keys[key_index]
            .key_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        audit.record(&Event::SessionOpened {
            session: id,
            key: &grant.name,
            key_id: &key_id,
            policy: grant.policy.name(),
            peer: &peer,
        });
    }
    let chan = SyncChannel::from_parts(stream, sealer, opener, &buffered);
    let spawned = std::thread::Builder::new()
        .name(format!("session-{id}"))
        .spawn(move || {
            run(chan, ctx, id, grant, registration);
            drop(slot);
        });
    if let Err(e) = spawned {
        // The closure, and with it the connection and the registration, is
        // dropped: the client sees the connection close.
        log::info(format_args!("session {id}: cannot start its thread: {e}"));
    }
    Ok(())
}

/// The body of a session thread: converse until the end, then close the
/// guest objects — also when the conversation panicked — and only then let
/// the connection close (the registry's handle goes last), so a client that
/// sees end of stream knows its objects are gone.
fn run(
    chan: SyncChannel<SyncServerStream>,
    ctx: Arc<Context>,
    id: u64,
    grant: Arc<KeyGrant>,
    registration: Registration,
) {
    let (token, owner) = match ctx.streams.open() {
        Ok(x) => x,
        Err(e) => {
            log::info(format_args!(
                "session {id}: cannot make a session token: errno {e}"
            ));
            return;
        }
    };
    let mut session = Session::with_owner(id, ctx.facts.possible_cpus, owner, ctx.kernel.clone())
        .governed(grant.clone(), ctx.audit.clone());
    session.set_budget(ctx.governor.session());
    if let Some(watcher) = hangup::Watcher::get() {
        match watcher.watch(id, std::os::fd::AsRawFd::as_raw_fd(chan.stream())) {
            Ok(w) => session.watch = Some(w),
            Err(e) => log::info(format_args!("session {id}: cannot watch for hang-up: {e}")),
        }
    }
    let reason = match panic::catch_unwind(AssertUnwindSafe(|| {
        converse(chan, &mut session, &ctx, token)
    })) {
        Ok(_) if ctx.registry.is_stopping() => "proxy shutting down".to_string(),
        Ok(reason) => reason,
        Err(payload) => format!("panic: {}", panic_message(&*payload)),
    };
    log::info(format_args!(
        "session {id}: ended ({reason}), closing {} guest objects",
        session.object_count()
    ));
    if let Some(audit) = &ctx.audit {
        audit.record(&Event::SessionClosed {
            session: id,
            key: &grant.name,
            reason: &reason,
            objects: session.object_count(),
            kernel_reads: session.kernel_reads().0,
            kernel_read_bytes: session.kernel_reads().1,
        });
    }
    drop(session);
    ctx.streams.close(&token);
    drop(registration);
    limits::return_freed_memory();
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Why a send failed, naming a peer that stopped reading (the socket's
/// send timeout, [`limits::set_socket_timeouts`], passed) as such.
pub(crate) fn send_failure(e: &ChannelError) -> String {
    match e {
        ChannelError::Write(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            "peer stalled: it stopped reading and a send made no progress within the stall timeout"
                .to_string()
        }
        e => e.to_string(),
    }
}

impl<W: std::io::Write + Send> streams::Push for telebpf_protocol::SyncSender<W> {
    fn push(&mut self, frame: &[u8]) -> Result<(), streams::SendFailed> {
        self.send(frame).map_err(streams::SendFailed)
    }
}

impl<R: std::io::Read + Send + std::os::fd::AsRawFd> streams::Pull
    for telebpf_protocol::SyncReceiver<R>
{
    fn pull(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            return match self.recv() {
                Ok(b) => Ok(Some(b)),
                Err(ChannelError::Closed) => Ok(None),
                // A user ring buffer the host program does not write to is
                // not idle in any sense that should end it.
                Err(ChannelError::Idle) => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// Sends the Welcome, then answers requests in order until the connection
/// ends; returns why it ended.
///
/// The channel is split: requests are read through one handle, replies go
/// out through the other (a [`telebpf_protocol::SyncSender`], which another
/// thread could share behind a mutex to push unsolicited frames).
fn converse(
    chan: SyncChannel<SyncServerStream>,
    session: &mut Session,
    ctx: &Context,
    token: SessionToken,
) -> String {
    let (mut rx, mut tx) = match chan.split() {
        Ok(halves) => halves,
        Err(e) => return format!("cannot split the connection: {e}"),
    };
    rx.set_spin(ctx.spin);
    rx.set_limits(ctx.governor.receive_limits());
    if let Some(gate) = session.budget.frame_gate() {
        rx.set_gate(gate);
    }
    let idle_limit = ctx.governor.args.idle_timeout();
    let mut last_request = std::time::Instant::now();
    let welcome = Welcome {
        facts: ctx.facts.clone(),
        session: token,
    };
    let welcome = message::encode(&Reply::Welcome(welcome)).expect("welcome encodes");
    if let Err(e) = tx.send(&welcome) {
        return send_failure(&e);
    }
    let mut first = true;
    loop {
        let bytes = match rx.recv() {
            Ok(b) => b,
            Err(ChannelError::Closed) => return "client closed the connection".to_string(),
            // Quiet: only a session that holds nothing may time out (see
            // `limits`).
            Err(ChannelError::Idle) => {
                if session.object_count() == 0 && last_request.elapsed() >= idle_limit {
                    return format!("idle for {idle_limit:?} holding no guest object");
                }
                continue;
            }
            Err(e) => return e.to_string(),
        };
        last_request = std::time::Instant::now();
        // Records belong on a user ring buffer's stream, which reads them
        // in place; decoded here, a frame of empty records would take
        // three times its (charged) size.
        if message::is_records_request(&bytes) {
            first = false;
            let refusal = Reply::Error(ErrorReply {
                errno: libc::EPROTO,
                message: "records are sent on a user ring buffer's stream".into(),
            });
            let refusal = message::encode(&refusal).expect("an error encodes");
            drop(bytes);
            if let Err(e) = tx.send(&refusal) {
                return send_failure(&e);
            }
            session.budget.release();
            continue;
        }
        // A call's buffers are charged as they are decoded, like the
        // frame they came in (see `message::decode_charged`); a frame under
        // 64 KiB, uncharged itself, decodes to at most a few hundred KiB.
        let charge = if bytes.len() > 64 << 10 {
            session.budget.frame_gate()
        } else {
            None
        };
        let reply = match message::decode_charged::<Request>(&bytes, charge) {
            Ok(Request::Stream(req)) if std::mem::take(&mut first) => {
                // The policy and the audit log see the request whole (a
                // small copy: token, fd, kind).
                let whole = Request::Stream(req.clone());
                if let Some(refused) = session.refusal(&whole) {
                    let bytes = message::encode(&refused).expect("a refusal encodes");
                    let _ = tx.send(&bytes);
                    return "policy refuses ring streams".to_string();
                }
                if let Some((op, detail)) = policy::audited(&whole) {
                    session.audit_outcome(&op, detail.as_deref(), None);
                }
                // This connection now only pushes the ring's records.
                log::debug(format_args!(
                    "session {}: stream of fd {} ({:?})",
                    session.id, req.fd, req.kind
                ));
                let grant = session.grant.clone();
                let may = |ring| crate::guard::may_consume(&grant, ring);
                if let message::StreamKind::UserRingbuf { .. } = req.kind {
                    return streams::serve_user(&req, &ctx.streams, &mut rx, &session.budget, &may);
                }
                return streams::serve(&req, &ctx.streams, &mut tx, &session.budget, &may);
            }
            Ok(req) => {
                first = false;
                // A file's range is made only once the peer can take it
                // (see `limits::wait_writable`): a reader that stopped
                // reading holds no reply of ours while it stalls.
                if matches!(
                    req,
                    Request::File(FileOp::Read { .. } | FileOp::ReadRange { .. })
                ) && !limits::wait_writable(
                    std::os::fd::AsRawFd::as_raw_fd(tx.stream()),
                    ctx.governor.args.stall_timeout(),
                ) {
                    return "peer stalled: it stopped reading, and a file's next range waited \
                            for room in vain for the stall timeout"
                        .to_string();
                }
                session.handle(req)
            }
            Err(e @ message::ChargedDecodeError::OverBudget) => Some(Reply::Error(ErrorReply {
                errno: libc::ENOMEM,
                message: e.to_string(),
            })),
            Err(e) => Some(Reply::Error(ErrorReply {
                errno: libc::EPROTO,
                message: e.to_string(),
            })),
        };
        if let Some(reply) = reply {
            let bytes = match message::encode(&reply) {
                Ok(b) => b,
                Err(e) => return format!("cannot encode a reply: {e}"),
            };
            // Its content is in `bytes` now: held once, not twice, while
            // the send waits for a slow peer (the charge of a file range
            // counts the encoded reply and its sealed frame).
            drop(reply);
            if let Err(e) = tx.send(&bytes) {
                return send_failure(&e);
            }
        }
        session.budget.release();
    }
}

#[cfg(test)]
mod tests {
    //! Session logic over [`FakeKernel`]: what reaches the kernel, what is
    //! refused before it, and what the session closes when it ends.

    use std::path::Path;

    use telebpf_abi::{map_type, off, write_u32, write_u64};
    use telebpf_protocol::message::{IoctlValue, WireBuffer};

    use super::*;
    use crate::testing::{bpf_request as bpf, load_calling as prog_load, Answer, Call, FakeKernel};

    /// A session on a fresh fake kernel, and the kernel.
    fn session() -> (Session, Arc<FakeKernel>) {
        let kernel = Arc::new(FakeKernel::default());
        (Session::new(1, 2, kernel.clone()), kernel)
    }

    /// The same under `limits`.
    fn limited(limits: LimitArgs) -> (Session, Arc<FakeKernel>, Arc<Governor>) {
        let kernel = Arc::new(FakeKernel::default());
        let gov = Governor::new(limits, kernel.clone());
        let mut s = Session::new(1, 2, kernel.clone());
        s.set_budget(gov.session());
        (s, kernel, gov)
    }

    /// The same under the policy of `toml`, for key `k`.
    fn governed(toml: &str) -> (Session, Arc<FakeKernel>) {
        governed_as("k", toml)
    }

    /// The same for key `key` (keys' ledgers of created objects outlive
    /// their sessions: tests that record objects use a key of their own).
    fn governed_as(key: &str, toml: &str) -> (Session, Arc<FakeKernel>) {
        let file = Policy::parse_file(toml, Path::new("/etc/telebpf/test.toml")).unwrap();
        let grant = Arc::new(KeyGrant {
            name: key.into(),
            file: Default::default(),
            policy: file.rules,
        });
        let (s, kernel) = session();
        (s.governed(grant, None), kernel)
    }

    /// `BPF_MAP_CREATE` of `entries` values of 1 KiB in a map of `kind`.
    fn map_create(kind: u32, entries: u32) -> Request {
        let mut attr = vec![0u8; 72];
        write_u32(&mut attr, off::map_create::MAP_TYPE, kind);
        write_u32(&mut attr, off::map_create::KEY_SIZE, 4);
        write_u32(&mut attr, off::map_create::VALUE_SIZE, 1024);
        write_u32(&mut attr, off::map_create::MAX_ENTRIES, entries);
        bpf(cmd::BPF_MAP_CREATE, attr, vec![])
    }

    fn array(entries: u32) -> Request {
        map_create(map_type::BPF_MAP_TYPE_ARRAY, entries)
    }

    /// The new fd of a reply that created an object.
    fn created(reply: Option<Reply>) -> i32 {
        match reply {
            Some(Reply::Bpf(r)) if r.ret >= 0 => r.ret as i32,
            Some(Reply::Opened(Ok((fd, _)))) => fd as i32,
            other => panic!("no object created: {other:?}"),
        }
    }

    /// The errno of a failed bpf reply.
    fn errno(reply: Option<Reply>) -> i32 {
        match reply {
            Some(Reply::Bpf(r)) if r.ret < 0 => r.errno,
            other => panic!("not a failed call: {other:?}"),
        }
    }

    fn perf_event_open() -> Request {
        Request::PerfEventOpen {
            attr: vec![0u8; telebpf_abi::perf::ATTR_SIZE_VER0],
            pid: -1,
            cpu: 0,
            group_fd: -1,
            flags: 0,
            config1_string: None,
        }
    }

    #[test]
    fn a_new_object_is_described_by_the_kernel_that_made_it() {
        let (mut s, kernel) = session();
        let reply = s.handle(array(4));
        let Some(Reply::Bpf(r)) = reply else {
            panic!("{reply:?}")
        };
        let object = r.object.expect("a new map is described");
        assert_eq!(object.link, "anon_inode:bpf-map");
        match object.kind {
            ObjectKind::Map(m) => {
                assert_eq!(m.map_type, map_type::BPF_MAP_TYPE_ARRAY);
                assert_eq!((m.value_size, m.max_entries), (1024, 4));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(kernel.open_fds(), vec![r.ret as i32]);
        assert_eq!(s.object_count(), 1);
    }

    #[test]
    fn ending_a_session_closes_every_object_it_created_once() {
        let (mut s, kernel) = session();
        let maps: Vec<i32> = (0..3).map(|_| created(s.handle(array(1)))).collect();
        let prog = created(s.handle(prog_load(5)));
        let perf = created(s.handle(perf_event_open()));
        assert_eq!(s.object_count(), 5);
        // One closed by the client: closed now, and not again at the end.
        assert_eq!(s.handle(Request::Close { fd: maps[0] }), None);
        assert_eq!(kernel.closed(), vec![maps[0]]);
        assert_eq!(s.object_count(), 4);
        // A close of an fd the session does not hold reaches nothing.
        assert_eq!(s.handle(Request::Close { fd: 3 }), None);
        assert_eq!(kernel.closed(), vec![maps[0]]);
        drop(s);
        let mut closed = kernel.closed();
        closed.sort_unstable();
        let mut all = vec![maps[0], maps[1], maps[2], prog, perf];
        all.sort_unstable();
        assert_eq!(closed, all, "each object closed exactly once");
        assert!(kernel.open_fds().is_empty(), "nothing left open");
    }

    #[test]
    fn objects_are_accounted_until_the_session_ends() {
        let limits = LimitArgs {
            max_objects_per_session: 2,
            max_objects: 3,
            ..LimitArgs::default()
        };
        let (mut s, kernel, gov) = limited(limits);
        created(s.handle(array(1)));
        let second = created(s.handle(perf_event_open()));
        let creates = kernel.calls().len();
        // The third object is refused before the kernel sees it.
        assert_eq!(errno(s.handle(array(1))), libc::EMFILE);
        assert_eq!(
            s.handle(perf_event_open()),
            Some(Reply::Opened(Err(libc::EMFILE)))
        );
        assert_eq!(kernel.calls().len(), creates, "refused before the call");
        // A close gives the place back.
        s.handle(Request::Close { fd: second });
        created(s.handle(array(1)));
        // Another session gets what is left of the proxy's objects...
        let mut other = Session::new(2, 2, kernel.clone());
        other.set_budget(gov.session());
        created(other.handle(array(1)));
        assert_eq!(errno(other.handle(array(1))), libc::ENFILE);
        // ... and, once this one ended, its places.
        drop(s);
        created(other.handle(array(1)));
    }

    /// A relayed netlink socket is a real rtnetlink socket of the session:
    /// counted as an object, a dump comes back whole with its sequence
    /// number and port id, a receive with nothing queued is bounded, and
    /// operations on fds that are no relayed socket reach nothing.
    #[test]
    fn a_netlink_socket_is_an_object_of_the_session() {
        use std::time::Instant;

        use telebpf_abi::netlink::{build, RTM_GETLINK};

        let limits = LimitArgs {
            max_objects_per_session: 2,
            ..LimitArgs::default()
        };
        let (mut s, _kernel, _gov) = limited(limits);
        let nl = |s: &mut Session, op| match s.handle(Request::Netlink(op)) {
            Some(Reply::Netlink(r)) => r,
            other => panic!("unexpected reply {other:?}"),
        };
        let Ok(NetlinkReply::Opened(fd, obj)) = nl(&mut s, NetlinkOp::Open) else {
            panic!("no socket");
        };
        assert_eq!(obj.link, NETLINK_LINK);
        assert_eq!(s.object_count(), 1);
        let map = created(s.handle(array(1)));
        assert_eq!(
            nl(&mut s, NetlinkOp::Open),
            Err(libc::EMFILE),
            "object limit"
        );

        assert_eq!(
            nl(
                &mut s,
                NetlinkOp::Bind {
                    fd,
                    pid: 0,
                    groups: 0
                }
            ),
            Ok(NetlinkReply::Done)
        );
        let Ok(NetlinkReply::Name(port, 0)) = nl(&mut s, NetlinkOp::Name { fd }) else {
            panic!("no name");
        };
        let mut dump = build::message(RTM_GETLINK, 16, &[]);
        dump[6..8]
            .copy_from_slice(&(libc::NLM_F_REQUEST as u16 | libc::NLM_F_DUMP as u16).to_ne_bytes());
        dump[8..12].copy_from_slice(&7u32.to_ne_bytes());
        let sent = nl(
            &mut s,
            NetlinkOp::Send {
                fd,
                data: dump.clone(),
            },
        );
        assert_eq!(sent, Ok(NetlinkReply::Sent(dump.len() as u32)));
        // Sizing with MSG_PEEK|MSG_TRUNC, as libbpf does: the real length.
        let Ok(NetlinkReply::Received { data, len }) = nl(
            &mut s,
            NetlinkOp::Recv {
                fd,
                len: 0,
                peek: true,
                dont_wait: false,
            },
        ) else {
            panic!("no peek");
        };
        assert!(data.is_empty() && len > 0, "{len}");
        let mut done = false;
        while !done {
            let Ok(NetlinkReply::Received { data, len }) = nl(
                &mut s,
                NetlinkOp::Recv {
                    fd,
                    len: 1 << 20,
                    peek: false,
                    dont_wait: false,
                },
            ) else {
                panic!("dump cut short");
            };
            assert_eq!(data.len(), len as usize, "never cut: {len}");
            assert!(data.len() <= message::NETLINK_RECV_MAX);
            let mut at = 0;
            while at + 16 <= data.len() {
                let mlen = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(data[at + 4..at + 6].try_into().unwrap());
                assert_eq!(
                    &data[at + 8..at + 12],
                    &7u32.to_ne_bytes(),
                    "sequence number"
                );
                assert_eq!(&data[at + 12..at + 16], &port.to_ne_bytes(), "port id");
                done |= kind == libc::NLMSG_DONE as u16;
                at += (mlen + 3) & !3;
            }
        }
        // Nothing queued: EAGAIN at once, or after the bounded wait.
        let idle = NetlinkOp::Recv {
            fd,
            len: 64,
            peek: false,
            dont_wait: true,
        };
        assert_eq!(nl(&mut s, idle), Err(libc::EAGAIN));
        let started = Instant::now();
        let idle = NetlinkOp::Recv {
            fd,
            len: 64,
            peek: false,
            dont_wait: false,
        };
        assert_eq!(nl(&mut s, idle), Err(libc::EAGAIN));
        let waited = started.elapsed();
        eprintln!(
            "an idle receive waited {waited:?} (bound {:?})",
            netlink::RECV_WAIT
        );
        assert!(waited < netlink::RECV_WAIT * 3, "{waited:?}");

        // A datagram naming an fd that is no program of the session (a
        // map or the socket itself, a number it does not hold: the proxy's
        // own fds) is not sent.
        for (named, errno) in [(map, libc::EINVAL), (fd, libc::EINVAL), (9999, libc::EBADF)] {
            let attach = NetlinkOp::Send {
                fd,
                data: build::xdp(named),
            };
            assert_eq!(nl(&mut s, attach), Err(errno), "fd {named}");
        }
        let new_addr = NetlinkOp::Send {
            fd,
            data: build::message(20, 8, &[]),
        };
        assert_eq!(nl(&mut s, new_addr), Err(libc::EOPNOTSUPP));
        let on = |fd| NetlinkOp::Name { fd };
        assert_eq!(nl(&mut s, on(map)), Err(libc::ENOTSOCK));
        assert_eq!(nl(&mut s, on(9999)), Err(libc::EBADF));
        let bad = NetlinkOp::SetOption {
            fd,
            option: libc::NETLINK_ADD_MEMBERSHIP,
            value: 1,
        };
        assert_eq!(nl(&mut s, bad), Err(libc::ENOPROTOOPT));
        s.handle(Request::Close { fd });
        assert_eq!(s.object_count(), 1);
    }

    /// An opened cgroup is a session object: counted in the object limit,
    /// closed by `Close`; paths outside the cgroup2 mount are refused, a
    /// listing names the cgroup's files. (Skipped where nothing mounts
    /// cgroup2.)
    #[test]
    fn an_opened_cgroup_is_a_session_object() {
        let Ok(mount) = crate::cgroup::mount() else {
            return;
        };
        let limits = LimitArgs {
            max_objects_per_session: 1,
            ..LimitArgs::default()
        };
        let (mut s, kernel, _gov) = limited(limits);
        let open = |path: &str| {
            Request::Cgroup(CgroupOp::Open {
                path: path.to_string(),
            })
        };
        let Some(Reply::Cgroup(Ok(CgroupReply::Opened { fd, object }))) = s.handle(open(&mount))
        else {
            panic!("the cgroup2 mount {mount} did not open");
        };
        assert_eq!(object.link, mount);
        assert_eq!(s.object_count(), 1);
        assert_eq!(
            s.handle(open(&mount)),
            Some(Reply::Cgroup(Err(libc::EMFILE)))
        );
        s.handle(Request::Close { fd });
        assert_eq!(kernel.closed(), vec![fd]);
        assert_eq!(s.object_count(), 0);
        // The fake kernel only records the close.
        // SAFETY: the fd the session opened and no longer holds.
        unsafe { libc::close(fd) };
        // (A relative path does not even pass the policy.)
        assert!(matches!(
            s.handle(open("relative")),
            Some(Reply::Refused(_))
        ));
        for outside in ["/etc", "/sys/fs/cgroupx"] {
            assert_eq!(
                s.handle(open(outside)),
                Some(Reply::Cgroup(Err(libc::EACCES))),
                "{outside}"
            );
        }
        let listed = s.handle(Request::Cgroup(CgroupOp::List {
            path: mount.clone(),
        }));
        let Some(Reply::Cgroup(Ok(CgroupReply::Listing { dir, entries }))) = listed else {
            panic!("no listing: {listed:?}");
        };
        assert_eq!(dir.mode & libc::S_IFMT, libc::S_IFDIR);
        assert!(entries.iter().any(|e| e.name == "cgroup.procs"));
        assert_eq!(s.object_count(), 0, "a listing holds nothing");
    }

    /// Kernel memory: a MiB per session, two in all.
    fn mib_per_session() -> LimitArgs {
        LimitArgs {
            max_map_memory_per_session: Some(1 << 20),
            max_map_memory: Some(2 << 20),
            ..LimitArgs::default()
        }
    }

    #[test]
    fn kernel_memory_is_reserved_before_the_call_and_freed_after() {
        let (mut s, kernel, _gov) = limited(mib_per_session());
        // 600 KiB fits the session's MiB once, not twice.
        let first = created(s.handle(array(600)));
        let calls = kernel.calls().len();
        assert_eq!(errno(s.handle(array(600))), libc::ENOMEM);
        assert!(
            !kernel.calls()[calls..]
                .iter()
                .any(|c| matches!(c, Call::Bpf { cmd, .. } if *cmd == cmd::BPF_MAP_CREATE)),
            "refused before the kernel allocated anything"
        );
        // Closed, the map's memory is the session's again (the census
        // finds it gone).
        s.handle(Request::Close { fd: first });
        created(s.handle(array(600)));
    }

    #[test]
    fn an_object_larger_than_its_estimate_is_closed_when_over_the_budget() {
        let (mut s, kernel, _gov) = limited(mib_per_session());
        // The kernel says the map took 4 MiB: more than the budget.
        kernel.set_memlock(4 << 20);
        assert_eq!(errno(s.handle(array(1))), libc::ENOMEM);
        assert_eq!(s.object_count(), 0);
        assert_eq!(kernel.closed().len(), 1, "the new map was closed");
        assert!(kernel.open_fds().is_empty());
        kernel.set_memlock(0);
        created(s.handle(array(1)));
    }

    const ARRAYS_ONLY: &str = r#"
        name = "arrays"
        commands = ["map_create", "prog_load"]
        map_types = ["array"]
        prog_types = ["tracepoint"]
        change_foreign_objects = true
        [helpers]
        allow = ["*"]
        deny = ["probe_write_user"]
    "#;

    #[test]
    fn what_the_policy_refuses_never_reaches_the_kernel() {
        let (mut s, kernel) = governed(ARRAYS_ONLY);
        let refused = [
            // A map type the policy does not list.
            (
                map_create(map_type::BPF_MAP_TYPE_HASH, 1),
                "'hash' is not in map_types",
            ),
            // A command it does not list.
            (
                bpf(cmd::BPF_MAP_LOOKUP_ELEM, vec![0u8; 32], vec![]),
                "'map_lookup_elem' is not in commands",
            ),
            // A helper it denies (bpf_probe_write_user is 36).
            (prog_load(36), "'probe_write_user' is in helpers.deny"),
            // A request that is no bpf() call.
            (perf_event_open(), "perf_events is false"),
        ];
        for (req, rule) in refused {
            match s.handle(req) {
                Some(Reply::Refused(r)) => {
                    assert_eq!(r.rule, rule);
                    assert_eq!((r.key.as_str(), r.policy.as_str()), ("k", "arrays"));
                }
                other => panic!("not refused ({rule}): {other:?}"),
            }
        }
        assert_eq!(kernel.calls(), Vec::new(), "the kernel saw nothing");
        // What it allows runs.
        created(s.handle(array(1)));
        created(s.handle(prog_load(5)));
        // (Each new object is then described: `BPF_OBJ_GET_INFO_BY_FD`.)
        let made: Vec<u32> = kernel
            .bpf_commands()
            .into_iter()
            .filter(|&c| c != cmd::BPF_OBJ_GET_INFO_BY_FD)
            .collect();
        assert_eq!(made, vec![cmd::BPF_MAP_CREATE, cmd::BPF_PROG_LOAD]);
    }

    #[test]
    fn objects_a_key_did_not_create_are_not_changed() {
        let (mut s, kernel) = governed_as(
            "own-objects",
            r#"
            commands = ["map_create", "map_get_fd_by_id", "map_update_elem"]
            map_types = ["array"]
            "#,
        );
        kernel.answer(cmd::BPF_MAP_UPDATE_ELEM, Answer::Ret(0));
        let update = |fd: i32| {
            let mut attr = vec![0u8; 32];
            write_u32(&mut attr, off::map_elem::MAP_FD, fd as u32);
            write_u64(&mut attr, off::map_elem::KEY, 0x1000);
            write_u64(&mut attr, off::map_elem::VALUE, 0x2000);
            let buffers = vec![
                WireBuffer::Data(vec![0; 4]),
                WireBuffer::Data(vec![0; 1024]),
            ];
            bpf(cmd::BPF_MAP_UPDATE_ELEM, attr, buffers)
        };
        // Its own map: updated.
        let own = created(s.handle(array(1)));
        match s.handle(update(own)) {
            Some(Reply::Bpf(r)) => assert_eq!(r.ret, 0),
            other => panic!("{other:?}"),
        }
        // A map opened by id (the guest's, another key's): refused before
        // the kernel sees the update.
        kernel.answer(
            cmd::BPF_MAP_GET_FD_BY_ID,
            Answer::NewFd(crate::testing::Object::Map {
                map_type: map_type::BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: 1024,
                max_entries: 1,
                map_flags: 0,
            }),
        );
        let foreign = created(s.handle(bpf(cmd::BPF_MAP_GET_FD_BY_ID, vec![0u8; 12], vec![])));
        let updates = |k: &FakeKernel| {
            k.bpf_commands()
                .iter()
                .filter(|&&c| c == cmd::BPF_MAP_UPDATE_ELEM)
                .count()
        };
        assert_eq!(updates(&kernel), 1);
        match s.handle(update(foreign)) {
            Some(Reply::Refused(r)) => {
                assert_eq!(r.rule, "change_foreign_objects is false");
                assert!(
                    r.what.starts_with("BPF_MAP_UPDATE_ELEM on map "),
                    "{}",
                    r.what
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(updates(&kernel), 1, "the kernel saw no second update");
    }

    /// A whole session over a socket pair, as the server runs it: the
    /// handshake, the Welcome, one call; then the client hangs up, and the
    /// session's thread closes what it created before it deregisters.
    #[test]
    fn a_client_that_hangs_up_leaves_nothing_open() {
        let kernel = Arc::new(FakeKernel::default());
        let psk = Psk::from_bytes([7; telebpf_protocol::key::KEY_LEN]);
        let facts = crate::facts::gather();
        let ctx = Context::new(vec![psk.clone()], facts, Duration::ZERO, kernel.clone());
        let ctx = Arc::new(ctx);
        let (mut chan, _) = crate::testing::connect(&ctx, &psk, 1);
        chan.send(&message::encode(&array(1)).unwrap()).unwrap();
        let map = created(Some(message::decode(&chan.recv().unwrap()).unwrap()));
        drop(chan);
        assert_eq!(ctx.registry.wait_empty(Duration::from_secs(10)), 0);
        assert_eq!(kernel.closed(), vec![map]);
        assert!(kernel.open_fds().is_empty());
    }

    #[test]
    fn start_errors_read_as_the_log_has_always_said() {
        use std::error::Error;

        let full = StartError::Full { sessions: 3 };
        assert_eq!(
            full.to_string(),
            "refused after the handshake, 3 sessions (--max-sessions)"
        );
        assert_eq!(
            StartError::ShuttingDown.to_string(),
            "refused, proxy shutting down"
        );
        let ebadf = || std::io::Error::from_raw_os_error(libc::EBADF);
        let timeouts = StartError::Timeouts(ebadf());
        assert_eq!(
            timeouts.to_string(),
            format!("cannot set socket timeouts: {}", ebadf())
        );
        assert!(timeouts.source().is_some(), "the cause is kept");
        let closed = StartError::Handshake(ChannelError::Closed);
        assert_eq!(closed.to_string(), ChannelError::Closed.to_string());
    }

    #[test]
    fn the_kernels_errno_is_the_reply_and_nothing_is_held() {
        let (mut s, kernel) = session();
        kernel.answer(cmd::BPF_MAP_CREATE, Answer::Errno(libc::EPERM));
        assert_eq!(errno(s.handle(array(1))), libc::EPERM);
        assert_eq!(s.object_count(), 0);
        kernel.answer_perf(Answer::Errno(libc::ENOENT));
        assert_eq!(
            s.handle(perf_event_open()),
            Some(Reply::Opened(Err(libc::ENOENT)))
        );
        assert_eq!(s.object_count(), 0);
    }

    #[test]
    fn fds_the_session_does_not_hold_reach_no_kernel() {
        let (mut s, kernel) = session();
        let map = created(s.handle(array(1)));
        let perf = created(s.handle(perf_event_open()));
        let before = kernel.calls();
        // A map is no iterator, an unknown fd nothing at all.
        assert_eq!(
            s.handle(Request::Read { fd: map, len: 8 }),
            Some(Reply::Read(Err(libc::EINVAL)))
        );
        assert_eq!(
            s.handle(Request::Read { fd: 77, len: 8 }),
            Some(Reply::Read(Err(libc::EBADF)))
        );
        // Perf-event ioctls run on the session's perf events only.
        let enable = telebpf_abi::perf::IOC_ENABLE;
        let ioctl = |fd| Request::Ioctl {
            fd,
            cmd: enable,
            arg: IoctlValue::Value(0),
        };
        assert_eq!(s.handle(ioctl(map)), Some(Reply::Ioctl(Err(libc::ENOTTY))));
        assert_eq!(s.handle(ioctl(77)), Some(Reply::Ioctl(Err(libc::EBADF))));
        assert_eq!(
            s.handle(Request::File(FileOp::Fdinfo { fd: 77 })),
            Some(Reply::File(Err(libc::EBADF)))
        );
        assert_eq!(kernel.calls(), before, "none of these reached the kernel");
        assert_eq!(s.handle(ioctl(perf)), Some(Reply::Ioctl(Ok((0, None)))));
        assert_eq!(
            kernel.calls().last(),
            Some(&Call::Ioctl {
                fd: perf,
                request: enable
            })
        );
        // The fdinfo of its own fd is the kernel's.
        match s.handle(Request::File(FileOp::Fdinfo { fd: map })) {
            Some(Reply::File(Ok(message::FileReply::Data(text)))) => {
                assert!(String::from_utf8_lossy(&text).contains("memlock:"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// After a link, the first close of a program reads the guest's
    /// `[bpf]` kallsyms lines once; the session's later read of
    /// `/proc/kallsyms` ends with those the kernel no longer lists.
    #[test]
    fn kallsyms_keeps_the_bpf_symbols_of_a_detached_program() {
        let (mut s, kernel) = session();
        let lines = b"ffffffffc00e7710 t bpf_prog_feedfacefeedface_tbtest\t[bpf]\n\
ffffffffc02f3000 t bpf_trampoline_6442499101\t[bpf]\n";
        kernel.set_bpf_kallsyms(lines);
        let reads = |k: &FakeKernel| {
            k.calls()
                .iter()
                .filter(|c| matches!(c, Call::BpfKallsyms))
                .count()
        };
        let map = created(s.handle(array(1)));
        let prog = created(s.handle(prog_load(5)));
        s.handle(Request::Close { fd: map });
        let early = created(s.handle(prog_load(5)));
        s.handle(Request::Close { fd: early });
        assert_eq!(reads(&kernel), 0, "no link yet: closes read nothing");
        let mut attr = vec![0u8; 64];
        write_u32(&mut attr, 0, prog as u32);
        let link = created(s.handle(bpf(cmd::BPF_LINK_CREATE, attr, vec![])));
        s.handle(Request::Close { fd: link });
        s.handle(Request::Close { fd: prog });
        assert_eq!(reads(&kernel), 1, "one read per detach");

        let Ok(local) = std::fs::read(crate::bpf_symbols::KALLSYMS) else {
            return;
        };
        let mut all = Vec::new();
        let mut snapshot = 0;
        loop {
            let reply = s.handle(Request::File(FileOp::ReadRange {
                path: crate::bpf_symbols::KALLSYMS.into(),
                offset: all.len() as u64,
                len: u32::MAX,
                snapshot,
            }));
            let Some(Reply::File(Ok(message::FileReply::Range {
                size,
                snapshot: id,
                data,
            }))) = reply
            else {
                panic!("{reply:?}");
            };
            snapshot = id;
            all.extend(data);
            if all.len() as u64 >= size {
                break;
            }
        }
        assert!(all.ends_with(lines), "kept lines at the end");
        assert!(all.len() >= local.len() / 2, "the machine's kallsyms first");
    }
}
