//! A fake kernel for unit tests of what sits above the syscall.
//!
//! [`FakeKernel`] implements [`Kernel`] without making a syscall: it hands
//! out fds from a fake fd space (numbers no real fd of the process can
//! have, so a stray real syscall on one fails), keeps the objects behind
//! them, answers each `bpf()` command as a test chose ([`FakeKernel::answer`])
//! or, by default, as a kernel would for the few commands session logic
//! depends on (create a map, a program, BTF, a link; describe an object;
//! list ids), and records every call ([`FakeKernel::calls`]) so a test can
//! say what reached the kernel, and what never did. Any other command fails
//! with `EINVAL`, as in aya's `sys/fake.rs`. [`bpf_request`] and
//! [`load_calling`] build the requests tests send; [`connect`] starts a
//! session over a socket pair as the server would.
//!
//! A `BPF_MAP_TYPE_RINGBUF` map of the fake is a simulated ring
//! (`ringbuf_mirror::guest::sim`): a stream maps it as it would the real one
//! ([`Kernel::map_ring`] checks each region against the map), sleeps until it
//! holds data or the stream's [`Stop`] fires, and consumes what the test
//! produces into it as the guest kernel would ([`FakeKernel::ring_output`]).

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringbuf_mirror::guest::sim::{SimRegion, SimRingbuf};
use ringbuf_mirror::guest::{MapRegion, Ready, RingMemory, Violation, Wait, Woken};
use ringbuf_mirror::BpfRingLayout;
use telebpf_abi::{cmd, flags, map_type, off, perf, prog_type, read_u32, write_u32, write_u64};
use telebpf_protocol::key::Psk;
use telebpf_protocol::message::{
    self, BpfCall, Reply, Request, SessionToken, WireBuffer, PERF_EVENT_LINK,
};
use telebpf_protocol::transport::ServerStream;
use telebpf_protocol::SyncChannel;

use crate::kernel::{Kernel, RingRegion, Stop};
use crate::session::Context;

/// The first fd the fake hands out: `fs.nr_open` is at most 2^20 by
/// default, so no real fd has this number or a larger one.
pub const FIRST_FD: i32 = 1 << 20;

/// What a fake fd stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A map, as `BPF_MAP_CREATE` described it.
    Map {
        /// `map_type`.
        map_type: u32,
        /// `key_size`.
        key_size: u32,
        /// `value_size`.
        value_size: u32,
        /// `max_entries`.
        max_entries: u32,
        /// `map_flags`.
        map_flags: u32,
    },
    /// A program of `prog_type`.
    Prog {
        /// `prog_type`.
        prog_type: u32,
    },
    /// A BTF object.
    Btf,
    /// A link of `link_type`.
    Link {
        /// `link_type`.
        link_type: u32,
    },
    /// An iterator.
    Iter,
    /// A perf event.
    PerfEvent,
}

impl Object {
    /// What `readlink("/proc/self/fd/N")` says of such an fd.
    fn link(&self) -> &'static str {
        match self {
            Object::Map { .. } => "anon_inode:bpf-map",
            Object::Prog { .. } => "anon_inode:bpf-prog",
            Object::Btf => "anon_inode:btf",
            Object::Link { .. } => "anon_inode:bpf-link",
            Object::Iter => "anon_inode:bpf-iter",
            Object::PerfEvent => PERF_EVENT_LINK,
        }
    }

    /// The `BPF_*_GET_NEXT_ID` command that lists such objects.
    fn next_id_cmd(&self) -> Option<u32> {
        match self {
            Object::Map { .. } => Some(cmd::BPF_MAP_GET_NEXT_ID),
            Object::Prog { .. } => Some(cmd::BPF_PROG_GET_NEXT_ID),
            Object::Btf => Some(cmd::BPF_BTF_GET_NEXT_ID),
            Object::Link { .. } => Some(cmd::BPF_LINK_GET_NEXT_ID),
            Object::Iter | Object::PerfEvent => None,
        }
    }

    /// The leading fields of its `bpf_*_info`, as the kernel fills them.
    fn info(&self, id: u32) -> Vec<u8> {
        let words: Vec<u32> = match *self {
            Object::Map {
                map_type,
                key_size,
                value_size,
                max_entries,
                map_flags,
            } => vec![map_type, id, key_size, value_size, max_entries, map_flags],
            Object::Prog { prog_type } => vec![prog_type, id],
            // `bpf_btf_info`: btf (a pointer), btf_size, id.
            Object::Btf => vec![0, 0, 0, id],
            Object::Link { link_type } => vec![link_type, id],
            Object::Iter | Object::PerfEvent => Vec::new(),
        };
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// How the fake answers a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Success with this value.
    Ret(i64),
    /// Failure with this errno.
    Errno(i32),
    /// A new fd standing for this object.
    NewFd(Object),
}

/// One call that reached the fake kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `bpf(cmd, attr)`, the attr as the proxy passed it.
    Bpf {
        /// The command, as passed.
        cmd: u32,
        /// The attr's bytes before the call.
        attr: Vec<u8>,
    },
    /// `perf_event_open`.
    PerfEventOpen {
        /// Its `group_fd` argument.
        group_fd: i32,
    },
    /// `ioctl(fd, request)`.
    Ioctl {
        /// The fd.
        fd: i32,
        /// The request.
        request: u64,
    },
    /// `read(fd, len)`.
    Read {
        /// The fd.
        fd: i32,
        /// Bytes asked for.
        len: usize,
    },
    /// `close(fd)`.
    Close(i32),
    /// `fcntl(fd, F_DUPFD_CLOEXEC)`.
    Dup(i32),
    /// A read of the `[bpf]` lines of kallsyms.
    BpfKallsyms,
    /// `mmap` of a ring's region.
    Map {
        /// The fd.
        fd: i32,
        /// The region asked for.
        region: MapRegion,
    },
}

#[derive(Debug)]
struct Held {
    id: u32,
    object: Object,
}

#[derive(Debug)]
struct State {
    next_fd: i32,
    next_id: u32,
    open: BTreeMap<i32, Held>,
    answers: BTreeMap<u32, Answer>,
    perf_answer: Option<Answer>,
    memlock: u64,
    calls: Vec<Call>,
    /// What [`Kernel::bpf_kallsyms`] answers.
    bpf_kallsyms: Vec<u8>,
    /// The simulated rings of `BPF_MAP_TYPE_RINGBUF` maps, by map id.
    rings: BTreeMap<u32, Arc<Mutex<SimRingbuf>>>,
}

/// The fake's state, and the condition its streams sleep on (a ring's
/// producer and a stream's stop notify it).
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Ring regions mapped now.
    mapped: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A kernel that answers per command from a fake fd space (see the module
/// doc).
#[derive(Debug)]
pub struct FakeKernel {
    shared: Arc<Shared>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        let state = State {
            next_fd: FIRST_FD,
            next_id: 1,
            open: BTreeMap::new(),
            answers: BTreeMap::new(),
            perf_answer: None,
            memlock: 0,
            calls: Vec::new(),
            bpf_kallsyms: Vec::new(),
            rings: BTreeMap::new(),
        };
        FakeKernel {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Condvar::new(),
                mapped: AtomicUsize::new(0),
            }),
        }
    }
}

impl FakeKernel {
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// The simulated ring behind `fd` (a ring buffer map), if any.
    pub fn ring(&self, fd: i32) -> Option<Arc<Mutex<SimRingbuf>>> {
        let state = self.state();
        let held = state.open.get(&fd)?;
        state.rings.get(&held.id).cloned()
    }

    /// `bpf_ringbuf_output` of `data` into the ring behind `fd`, waking
    /// the streams that sleep on it; whether it fit. Panics if `fd` is no
    /// ring buffer map.
    pub fn ring_output(&self, fd: i32, data: &[u8]) -> bool {
        let ring = self.ring(fd).expect("a ring buffer map");
        let fit = ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .output(data, false);
        // Notified under the state's lock, which a sleeper holds from its
        // check until it sleeps: no wake-up is lost.
        let _state = self.state();
        self.shared.wake.notify_all();
        fit
    }

    /// Ring regions mapped now (and not yet unmapped).
    pub fn mapped(&self) -> usize {
        self.shared.mapped.load(Ordering::SeqCst)
    }

    /// From now on, answers `bpf(command)` with `answer` (instead of the
    /// default).
    pub fn answer(&self, command: u32, answer: Answer) {
        self.state().answers.insert(command, answer);
    }

    /// From now on, answers `perf_event_open` with `answer` (by default a
    /// new perf event).
    pub fn answer_perf(&self, answer: Answer) {
        self.state().perf_answer = Some(answer);
    }

    /// The `memlock:` figure fdinfo gives for every object (0 unless set).
    pub fn set_memlock(&self, bytes: u64) {
        self.state().memlock = bytes;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The `bpf()` commands called so far, in order.
    pub fn bpf_commands(&self) -> Vec<u32> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Bpf { cmd, .. } => Some(*cmd),
                _ => None,
            })
            .collect()
    }

    /// Sets what the fake's kallsyms lists as `[bpf]` lines from now on.
    pub fn set_bpf_kallsyms(&self, lines: &[u8]) {
        self.state().bpf_kallsyms = lines.to_vec();
    }

    /// The fds closed so far, in order.
    pub fn closed(&self) -> Vec<i32> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Close(fd) => Some(*fd),
                _ => None,
            })
            .collect()
    }

    /// The fds open now.
    pub fn open_fds(&self) -> Vec<i32> {
        self.state().open.keys().copied().collect()
    }

    /// Gives an fd to a new `object` (a ring buffer map gets its
    /// simulated ring).
    fn new_fd(state: &mut State, object: Object) -> i64 {
        let fd = state.next_fd;
        state.next_fd += 1;
        let id = state.next_id;
        state.next_id += 1;
        if let Object::Map {
            map_type: map_type::BPF_MAP_TYPE_RINGBUF,
            max_entries,
            ..
        } = object
        {
            if let Ok(layout) = BpfRingLayout::new(max_entries) {
                let ring = Arc::new(Mutex::new(SimRingbuf::new(layout)));
                state.rings.insert(id, ring);
            }
        }
        state.open.insert(fd, Held { id, object });
        i64::from(fd)
    }

    /// The default answer to `command` on `attr`: the commands session
    /// logic depends on, as a kernel answers them.
    fn default_answer(state: &State, command: u32, attr: &[u8]) -> Answer {
        let word = |at: usize| {
            if attr.len() >= at + 4 {
                read_u32(attr, at)
            } else {
                0
            }
        };
        match command {
            cmd::BPF_MAP_CREATE => Answer::NewFd(Object::Map {
                map_type: word(off::map_create::MAP_TYPE),
                key_size: word(off::map_create::KEY_SIZE),
                value_size: word(off::map_create::VALUE_SIZE),
                max_entries: word(off::map_create::MAX_ENTRIES),
                map_flags: word(off::map_create::MAP_FLAGS),
            }),
            cmd::BPF_PROG_LOAD => Answer::NewFd(Object::Prog {
                prog_type: word(off::prog_load::PROG_TYPE),
            }),
            cmd::BPF_BTF_LOAD => Answer::NewFd(Object::Btf),
            cmd::BPF_LINK_CREATE => Answer::NewFd(Object::Link { link_type: 0 }),
            cmd::BPF_MAP_GET_NEXT_ID
            | cmd::BPF_PROG_GET_NEXT_ID
            | cmd::BPF_BTF_GET_NEXT_ID
            | cmd::BPF_LINK_GET_NEXT_ID => {
                let start = word(0);
                match state
                    .open
                    .values()
                    .filter(|h| h.object.next_id_cmd() == Some(command) && h.id > start)
                    .map(|h| h.id)
                    .min()
                {
                    Some(_) => Answer::Ret(0),
                    None => Answer::Errno(libc::ENOENT),
                }
            }
            cmd::BPF_OBJ_GET_INFO_BY_FD => match state.open.get(&(word(0) as i32)) {
                Some(_) => Answer::Ret(0),
                None => Answer::Errno(libc::EBADF),
            },
            _ => Answer::Errno(libc::EINVAL),
        }
    }
}

impl Kernel for FakeKernel {
    unsafe fn bpf(
        &self,
        command: u32,
        attr: *mut u8,
        size: u32,
        _common: *mut u8,
        _common_size: u32,
    ) -> Result<i64, i32> {
        // SAFETY: the caller guarantees `attr` points to `size` bytes we may
        // read and write, as the kernel may.
        let attr = unsafe { std::slice::from_raw_parts_mut(attr, size as usize) };
        let mut state = self.state();
        state.calls.push(Call::Bpf {
            cmd: command,
            attr: attr.to_vec(),
        });
        let plain = command & !cmd::BPF_COMMON_ATTRS;
        let answer = match state.answers.get(&plain) {
            Some(a) => a.clone(),
            None => Self::default_answer(&state, plain, attr),
        };
        match answer {
            Answer::Errno(e) => Err(e),
            Answer::NewFd(object) => Ok(Self::new_fd(&mut state, object)),
            Answer::Ret(ret) => {
                // The two default successes that write into the attr.
                let start = if attr.len() >= 4 {
                    read_u32(attr, 0)
                } else {
                    0
                };
                if plain == cmd::BPF_OBJ_GET_INFO_BY_FD && attr.len() >= 16 {
                    if let Some(held) = state.open.get(&(start as i32)) {
                        let info = held.object.info(held.id);
                        let n = info.len().min(read_u32(attr, 4) as usize);
                        let ptr = u64::from_le_bytes(attr[8..16].try_into().unwrap_or([0; 8]));
                        // SAFETY: the caller guarantees `attr.info` points to
                        // `info_len` writable bytes; `n` is at most that.
                        unsafe { std::ptr::copy_nonoverlapping(info.as_ptr(), ptr as *mut u8, n) };
                        attr[4..8].copy_from_slice(&(n as u32).to_le_bytes());
                    }
                } else if attr.len() >= 8 {
                    let next = state
                        .open
                        .values()
                        .filter(|h| h.object.next_id_cmd() == Some(plain) && h.id > start)
                        .map(|h| h.id)
                        .min();
                    if let Some(next) = next {
                        attr[4..8].copy_from_slice(&next.to_le_bytes());
                    }
                }
                Ok(ret)
            }
        }
    }

    unsafe fn perf_event_open(
        &self,
        _attr: &mut [u8],
        _pid: i32,
        _cpu: i32,
        group_fd: i32,
        _flags: u64,
    ) -> Result<i64, i32> {
        let mut state = self.state();
        state.calls.push(Call::PerfEventOpen { group_fd });
        match state
            .perf_answer
            .clone()
            .unwrap_or(Answer::NewFd(Object::PerfEvent))
        {
            Answer::Errno(e) => Err(e),
            Answer::Ret(r) => Ok(r),
            Answer::NewFd(object) => Ok(Self::new_fd(&mut state, object)),
        }
    }

    unsafe fn ioctl(&self, fd: i32, request: u64, arg: u64) -> Result<i64, i32> {
        let mut state = self.state();
        state.calls.push(Call::Ioctl { fd, request });
        let held = state.open.get(&fd).ok_or(libc::EBADF)?;
        if request == perf::IOC_ID {
            // SAFETY: the caller guarantees that `arg` points to the u64
            // PERF_EVENT_IOC_ID writes.
            unsafe { (arg as *mut u64).write_unaligned(u64::from(held.id)) };
        }
        Ok(0)
    }

    fn read(&self, fd: i32, len: usize) -> Result<Vec<u8>, i32> {
        let mut state = self.state();
        state.calls.push(Call::Read { fd, len });
        match state.open.get(&fd).map(|h| &h.object) {
            Some(Object::Iter) => Ok(Vec::new()),
            Some(_) => Err(libc::EINVAL),
            None => Err(libc::EBADF),
        }
    }

    fn bpf_kallsyms(&self) -> Result<Vec<u8>, i32> {
        let mut state = self.state();
        state.calls.push(Call::BpfKallsyms);
        Ok(state.bpf_kallsyms.clone())
    }

    fn close(&self, fd: i32) {
        let mut state = self.state();
        state.calls.push(Call::Close(fd));
        state.open.remove(&fd);
    }

    fn fd_link(&self, fd: i32) -> Option<String> {
        self.state()
            .open
            .get(&fd)
            .map(|h| h.object.link().to_string())
    }

    fn fdinfo(&self, fd: i32) -> Result<Vec<u8>, i32> {
        let state = self.state();
        let held = state.open.get(&fd).ok_or(libc::EBADF)?;
        Ok(format!(
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nmemlock:\t{}\nid:\t{}\n",
            state.memlock, held.id
        )
        .into_bytes())
    }

    fn dup(&self, fd: i32) -> Result<i32, i32> {
        let mut state = self.state();
        state.calls.push(Call::Dup(fd));
        let held = state.open.get(&fd).ok_or(libc::EBADF)?;
        let held = Held {
            id: held.id,
            object: held.object.clone(),
        };
        let dup = state.next_fd;
        state.next_fd += 1;
        state.open.insert(dup, held);
        Ok(dup)
    }

    fn stop(&self) -> Result<Arc<dyn Stop>, i32> {
        Ok(Arc::new(FakeStop {
            fired: AtomicBool::new(false),
            shared: self.shared.clone(),
        }))
    }

    /// A ring buffer's two regions as libbpf maps them (the consumer page
    /// read-write, the producer page and data read-only); any other region,
    /// or the fd of another object, fails as the kernel's mmap would.
    fn map_ring(&self, fd: i32, region: MapRegion) -> Result<RingRegion, i32> {
        let mut state = self.state();
        state.calls.push(Call::Map { fd, region });
        let held = state.open.get(&fd).ok_or(libc::EBADF)?;
        let ring = state.rings.get(&held.id).ok_or(libc::ENODEV)?.clone();
        let layout = ring.lock().unwrap_or_else(PoisonError::into_inner).layout();
        let page = layout.page_size();
        let producer = match (region.offset, region.len, region.writable) {
            (0, len, true) if len == page => false,
            (off, len, false) if off == page && len == page + 2 * layout.max_entries() => true,
            (_, _, true) => return Err(libc::EPERM),
            _ => return Err(libc::EINVAL),
        };
        self.shared.mapped.fetch_add(1, Ordering::SeqCst);
        Ok(RingRegion::Fake(Box::new(SimMapping {
            ring,
            producer,
            shared: self.shared.clone(),
        })))
    }

    fn perf_mlock_kb(&self) -> Option<usize> {
        None
    }
}

/// One mapped region of a simulated ring: every access takes the ring's
/// lock, so the test's producer writes between the stream's accesses.
#[derive(Debug)]
struct SimMapping {
    ring: Arc<Mutex<SimRingbuf>>,
    /// The producer page and data (else the consumer page).
    producer: bool,
    shared: Arc<Shared>,
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        self.shared.mapped.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SimMapping {
    fn with<T>(&self, access: impl FnOnce(&SimRegion) -> T) -> T {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        access(if self.producer {
            &ring.producer
        } else {
            &ring.consumer
        })
    }
}

impl RingMemory for SimMapping {
    fn size(&self) -> usize {
        self.with(|r| r.size())
    }

    fn load_u64(&self, off: usize, order: Ordering) -> Result<u64, Violation> {
        self.with(|r| r.load_u64(off, order))
    }

    fn load_u32(&self, off: usize, order: Ordering) -> Result<u32, Violation> {
        self.with(|r| r.load_u32(off, order))
    }

    fn store_u64(&self, off: usize, value: u64, order: Ordering) -> Result<(), Violation> {
        self.with(|r| r.store_u64(off, value, order))
    }

    fn store_u32(&self, off: usize, value: u32, order: Ordering) -> Result<(), Violation> {
        self.with(|r| r.store_u32(off, value, order))
    }

    fn read(&self, off: usize, out: &mut [u8]) -> Result<(), Violation> {
        self.with(|r| r.read(off, out))
    }

    fn write(&self, off: usize, data: &[u8]) -> Result<(), Violation> {
        self.with(|r| r.write(off, data))
    }
}

/// A stream's [`Stop`] in the fake: a flag, and a wake-up of the sleepers.
#[derive(Debug)]
struct FakeStop {
    fired: AtomicBool,
    shared: Arc<Shared>,
}

impl Stop for FakeStop {
    fn fire(&self) {
        let _state = self.shared.state();
        self.fired.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }

    fn waiter(&self, ring: i32) -> Box<dyn Wait + '_> {
        Box::new(FakeWaiter { stop: self, ring })
    }
}

/// Sleeps until the simulated ring behind `ring` holds data (level
/// triggered, as `poll` on a ring buffer map is) or the stop fires. Only
/// ring buffers are simulated: nothing reports room.
struct FakeWaiter<'a> {
    stop: &'a FakeStop,
    ring: i32,
}

impl FakeWaiter<'_> {
    fn ready(&self, state: &State, ready: Ready) -> bool {
        let Some(ring) = state
            .open
            .get(&self.ring)
            .and_then(|h| state.rings.get(&h.id))
        else {
            return false;
        };
        let ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        ready == Ready::Data && ring.consumer.peek_u64(0) != ring.producer.peek_u64(0)
    }
}

impl Wait for FakeWaiter<'_> {
    fn wait(&mut self, ready: Ready, timeout: Option<Duration>) -> std::io::Result<Woken> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = &self.stop.shared;
        let mut state = shared.state();
        loop {
            if self.stop.fired.load(Ordering::SeqCst) {
                return Ok(Woken::Stop);
            }
            if self.ready(&state, ready) {
                return Ok(Woken::Ring);
            }
            state = match deadline {
                None => shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Woken::Timeout);
                    }
                    shared
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn stopped(&mut self) -> bool {
        self.stop.fired.load(Ordering::SeqCst)
    }
}

/// A session of `ctx` over a socket pair, started as the server starts
/// one (the handshake under key `psk`, then the session's own thread):
/// the client's end of the channel, and the session's token from its
/// Welcome. A read of the client's end fails after 20 s instead of
/// hanging the test.
pub fn connect(ctx: &Arc<Context>, psk: &Psk, id: u64) -> (SyncChannel<UnixStream>, SessionToken) {
    let (client, server) = UnixStream::pair().expect("a socket pair");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let psk = psk.clone();
    let client = std::thread::spawn(move || SyncChannel::client(client, &psk).expect("handshake"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(async {
            server.set_nonblocking(true).expect("non-blocking");
            let server = tokio::net::UnixStream::from_std(server).expect("a tokio socket");
            let stream = ServerStream::Unix(server);
            crate::session::start(stream, "pair".into(), ctx.clone(), id, Arc::default()).await
        })
        .expect("a session");
    let mut chan = client.join().expect("the client's handshake");
    match message::decode(&chan.recv().expect("the Welcome")).expect("a reply") {
        Reply::Welcome(w) => (chan, w.session),
        other => panic!("no Welcome: {other:?}"),
    }
}

/// A forwarded `bpf(command, attr)` with the buffers of its plan.
pub fn bpf_request(command: u32, attr: Vec<u8>, buffers: Vec<WireBuffer>) -> Request {
    Request::Bpf(BpfCall {
        cmd: command,
        size: attr.len() as u32,
        attr,
        common: None,
        common_size: 0,
        buffers,
    })
}

/// A forwarded `BPF_PROG_LOAD` of a tracepoint program that calls helper
/// `id`, then returns 0.
pub fn load_calling(id: u32) -> Request {
    let mut insns = Vec::new();
    for (code, imm) in [(flags::BPF_JMP_CALL, id), (0xb7, 0), (0x95, 0)] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        insns.extend_from_slice(&b);
    }
    let mut attr = vec![0u8; 152];
    write_u32(
        &mut attr,
        off::prog_load::PROG_TYPE,
        prog_type::BPF_PROG_TYPE_TRACEPOINT,
    );
    write_u32(&mut attr, off::prog_load::INSN_CNT, 3);
    write_u64(&mut attr, off::prog_load::INSNS, 0x1000);
    write_u64(&mut attr, off::prog_load::LICENSE, 0x2000);
    bpf_request(
        cmd::BPF_PROG_LOAD,
        attr,
        vec![WireBuffer::Data(insns), WireBuffer::Data(b"GPL\0".to_vec())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `BPF_MAP_CREATE` of an array of `entries` 8-byte values.
    fn create(k: &FakeKernel, entries: u32) -> i32 {
        let mut attr = [0u8; 72];
        write_u32(
            &mut attr,
            off::map_create::MAP_TYPE,
            map_type::BPF_MAP_TYPE_ARRAY,
        );
        write_u32(&mut attr, off::map_create::KEY_SIZE, 4);
        write_u32(&mut attr, off::map_create::VALUE_SIZE, 8);
        write_u32(&mut attr, off::map_create::MAX_ENTRIES, entries);
        // SAFETY: `attr` is 72 bytes, and its pointer fields are zero.
        let fd = unsafe {
            k.bpf(
                cmd::BPF_MAP_CREATE,
                attr.as_mut_ptr(),
                attr.len() as u32,
                std::ptr::null_mut(),
                0,
            )
        };
        fd.expect("a map") as i32
    }

    #[test]
    fn the_provided_calls_work_over_the_fake() {
        let k = FakeKernel::default();
        let a = create(&k, 3);
        let b = create(&k, 5);
        assert_eq!((a, b), (FIRST_FD, FIRST_FD + 1));
        // object_info: the map's info, its length as the kernel gives it.
        let mut info = [0u8; 24];
        assert_eq!(k.object_info(b, &mut info), Ok(24));
        assert_eq!(read_u32(&info, 0), map_type::BPF_MAP_TYPE_ARRAY);
        assert_eq!(read_u32(&info, 16), 5);
        assert_eq!(k.object_info(7, &mut info), Err(libc::EBADF));
        // live_ids: every map, until the list ends.
        let listed = k.live_ids(cmd::BPF_MAP_GET_NEXT_ID);
        assert_eq!(listed.ids, [1, 2].into());
        assert_eq!(listed.failed, None);
        k.close(a);
        assert_eq!(k.live_ids(cmd::BPF_MAP_GET_NEXT_ID).ids, [2].into());
        assert!(k.live_ids(cmd::BPF_PROG_GET_NEXT_ID).ids.is_empty());
        // A walk that fails early says so.
        k.answer(cmd::BPF_MAP_GET_NEXT_ID, Answer::Errno(libc::EPERM));
        assert_eq!(
            k.live_ids(cmd::BPF_MAP_GET_NEXT_ID).failed,
            Some(libc::EPERM)
        );
        // fdinfo and its memlock figure.
        k.set_memlock(4096);
        assert_eq!(k.fdinfo_memlock(b), Some(4096));
        assert_eq!(k.fdinfo_memlock(a), None, "closed");
        assert_eq!(k.fd_link(b).as_deref(), Some("anon_inode:bpf-map"));
        assert_eq!(k.open_fds(), vec![b]);
        assert_eq!(k.closed(), vec![a]);
    }
}
