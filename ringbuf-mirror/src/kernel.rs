//! Test-only access to the real kernel's BPF ring buffers and perf rings, for
//! differential tests. Every entry point returns `None` where the process may
//! not use `bpf()`/`perf_event_open()`, and the tests then skip.

use std::ptr;

/// An fd closed on drop.
#[derive(Debug)]
pub(crate) struct Fd(pub(crate) i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.0) };
    }
}

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_MAP_TYPE_USER_RINGBUF: u32 = 31;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_FUNC_PERF_EVENT_OUTPUT: i32 = 25;
const BPF_FUNC_RINGBUF_RESERVE: i32 = 131;
const BPF_FUNC_RINGBUF_SUBMIT: i32 = 132;
const BPF_FUNC_RINGBUF_DISCARD: i32 = 133;

/// A zeroed `union bpf_attr`, larger than any kernel's (tail must be zero).
type Attr = [u8; 160];

fn put(a: &mut Attr, off: usize, bytes: &[u8]) {
    a[off..off + bytes.len()].copy_from_slice(bytes);
}

fn bpf(cmd: i64, attr: &mut Attr) -> i64 {
    // SAFETY: `attr` is a valid, writable bpf_attr-sized buffer.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) }
}

fn map_create(map_type: u32, key: u32, value: u32, max: u32) -> Option<Fd> {
    let mut a: Attr = [0; 160];
    put(&mut a, 0, &map_type.to_ne_bytes());
    put(&mut a, 4, &key.to_ne_bytes());
    put(&mut a, 8, &value.to_ne_bytes());
    put(&mut a, 12, &max.to_ne_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut a);
    (fd >= 0).then(|| Fd(fd as i32))
}

/// A real `BPF_MAP_TYPE_RINGBUF` of `max_entries` bytes.
pub(crate) fn ringbuf_map(max_entries: u32) -> Option<Fd> {
    map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, max_entries)
}

/// A real `BPF_MAP_TYPE_USER_RINGBUF` of `max_entries` bytes.
pub(crate) fn user_ringbuf_map(max_entries: u32) -> Option<Fd> {
    map_create(BPF_MAP_TYPE_USER_RINGBUF, 0, 0, max_entries)
}

/// `mmap` on a real fd; unmaps on success.
pub(crate) fn try_mmap(fd: i32, len: usize, prot: i32, flags: i32, off: i64) -> Result<(), i32> {
    // SAFETY: a fresh mapping (no MAP_FIXED), unmapped right away.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    // SAFETY: unmapping what was just mapped.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

fn ld_map_fd(dst: u8, fd: i32) -> [u64; 2] {
    [insn(0x18, dst, 1, 0, fd), 0]
}

fn mov64_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}

fn mov64_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}

fn call(f: i32) -> u64 {
    insn(0x85, 0, 0, 0, f)
}

fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

fn st_b(dst: u8, off: i16, v: u8) -> u64 {
    insn(0x72, dst, 0, off, i32::from(v))
}

fn prog_load(ty: u32, insns: &[u64]) -> Option<Fd> {
    let license = c"GPL";
    let mut a: Attr = [0; 160];
    put(&mut a, 0, &ty.to_ne_bytes());
    put(&mut a, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut a, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut a, 16, &(license.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_PROG_LOAD, &mut a);
    (fd >= 0).then(|| Fd(fd as i32))
}

/// Runs a program once on a dummy packet; its return value.
fn test_run(prog: &Fd) -> u32 {
    let pkt = [0u8; 64];
    let mut a: Attr = [0; 160];
    put(&mut a, 0, &(prog.0 as u32).to_ne_bytes());
    put(&mut a, 8, &(pkt.len() as u32).to_ne_bytes());
    put(&mut a, 16, &(pkt.as_ptr() as u64).to_ne_bytes());
    put(&mut a, 32, &1u32.to_ne_bytes());
    assert_eq!(bpf(BPF_PROG_TEST_RUN, &mut a), 0, "BPF_PROG_TEST_RUN");
    u32::from_ne_bytes(a[4..8].try_into().unwrap())
}

/// Byte `j` of the records the test programs write.
pub(crate) fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|j| (j * 11 + 5) as u8).collect()
}

/// A program doing `bpf_ringbuf_reserve(map, size)`, filling the sample
/// with [`pattern`], then `bpf_ringbuf_submit` or `bpf_ringbuf_discard`.
pub(crate) struct RingbufProg(Fd);

impl RingbufProg {
    pub(crate) fn load(map_fd: i32, size: usize, discard: bool) -> Option<Self> {
        let mut p = Vec::new();
        p.extend(ld_map_fd(1, map_fd));
        p.push(mov64_imm(2, size as i32));
        p.push(mov64_imm(3, 0));
        p.push(call(BPF_FUNC_RINGBUF_RESERVE));
        // if r0 == 0 goto fail
        p.push(insn(0x15, 0, 0, size as i16 + 5, 0));
        for (j, b) in pattern(size).into_iter().enumerate() {
            p.push(st_b(0, j as i16, b));
        }
        p.push(mov64_reg(1, 0));
        p.push(mov64_imm(2, 0));
        p.push(call(if discard {
            BPF_FUNC_RINGBUF_DISCARD
        } else {
            BPF_FUNC_RINGBUF_SUBMIT
        }));
        p.push(mov64_imm(0, 0));
        p.push(exit());
        // fail:
        p.push(mov64_imm(0, 1));
        p.push(exit());
        prog_load(BPF_PROG_TYPE_SOCKET_FILTER, &p).map(RingbufProg)
    }

    /// Runs it once; whether the reservation succeeded.
    pub(crate) fn run(&self) -> bool {
        test_run(&self.0) == 0
    }
}

/// A `PERF_COUNT_SW_BPF_OUTPUT` event on the CPU this thread is pinned to,
/// in a `PERF_EVENT_ARRAY`, as `perf_buffer__new` sets it up.
pub(crate) struct PerfSetup {
    pub(crate) array: Fd,
    pub(crate) event: Fd,
    pub(crate) event_id: u64,
}

/// Pins the calling thread to its first allowed CPU; returns it.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return None;
        }
        let cpu = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set))?;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) != 0 {
            return None;
        }
        Some(cpu)
    }
}

impl PerfSetup {
    pub(crate) fn new() -> Option<Self> {
        let cpu = pin_to_one_cpu()?;
        let array = map_create(BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, cpu as u32 + 1)?;
        // struct perf_event_attr, PERF_ATTR_SIZE_VER8 is 136 bytes.
        let mut attr = [0u8; 136];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
        attr[4..8].copy_from_slice(&136u32.to_ne_bytes()); // size
        attr[8..16].copy_from_slice(&10u64.to_ne_bytes()); // PERF_COUNT_SW_BPF_OUTPUT
        attr[16..24].copy_from_slice(&1u64.to_ne_bytes()); // sample_period
        attr[24..32].copy_from_slice(&(1u64 << 10).to_ne_bytes()); // PERF_SAMPLE_RAW
        attr[48..52].copy_from_slice(&1u32.to_ne_bytes()); // wakeup_events
                                                           // SAFETY: a valid perf_event_attr of the size it declares.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                -1,
                cpu as i32,
                -1,
                8u64, // PERF_FLAG_FD_CLOEXEC
            )
        };
        if fd < 0 {
            return None;
        }
        let event = Fd(fd as i32);
        let mut id = 0u64;
        // SAFETY: PERF_EVENT_IOC_ID writes one u64.
        if unsafe { libc::ioctl(event.0, 0x8008_2407, &mut id as *mut u64) } != 0 {
            return None;
        }
        let key = cpu as u32;
        let value = event.0 as u32;
        let mut a: Attr = [0; 160];
        put(&mut a, 0, &(array.0 as u32).to_ne_bytes());
        put(&mut a, 8, &(&key as *const u32 as u64).to_ne_bytes());
        put(&mut a, 16, &(&value as *const u32 as u64).to_ne_bytes());
        if bpf(BPF_MAP_UPDATE_ELEM, &mut a) != 0 {
            return None;
        }
        Some(PerfSetup {
            array,
            event,
            event_id: id,
        })
    }
}

/// A `SCHED_CLS` program doing `bpf_perf_event_output(skb, array,
/// BPF_F_CURRENT_CPU, data, size)` with [`pattern`] data; returns the
/// helper's result.
pub(crate) struct PerfProg(Fd);

impl PerfProg {
    pub(crate) fn load(array_fd: i32, size: usize) -> Option<Self> {
        let room = size.max(1).div_ceil(8) * 8;
        let base = -(room as i16);
        let mut p = vec![mov64_reg(6, 1)];
        for (j, b) in pattern(size).into_iter().enumerate() {
            p.push(st_b(10, base + j as i16, b));
        }
        if size == 0 {
            p.push(st_b(10, base, 0));
        }
        p.push(mov64_reg(1, 6));
        p.extend(ld_map_fd(2, array_fd));
        p.push(insn(0xb4, 3, 0, 0, -1)); // w3 = BPF_F_CURRENT_CPU
        p.push(mov64_reg(4, 10));
        p.push(insn(0x07, 4, 0, 0, i32::from(base))); // r4 += base
        p.push(mov64_imm(5, size as i32));
        p.push(call(BPF_FUNC_PERF_EVENT_OUTPUT));
        p.push(exit());
        prog_load(BPF_PROG_TYPE_SCHED_CLS, &p).map(PerfProg)
    }

    /// Runs it once; whether the sample was output.
    pub(crate) fn run(&self) -> bool {
        test_run(&self.0) == 0
    }
}

/// Whether `poll` reports the fd readable now.
pub(crate) fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}
