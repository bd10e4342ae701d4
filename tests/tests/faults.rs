//! Fault tests: clients killed mid-call, a proxy killed mid-call, stalled
//! peers, many concurrent clients, attacks on the channel, and the proxy's
//! limits. Each asserts a number (a time bound, a memory bound, a count)
//! and prints what it measured (`--nocapture` shows the lines).
//!
//! The host programs run as nobody under the preload (`fault-client`, raw
//! `bpf()` calls as libbpf makes them), or are raw protocol clients built
//! here from telebpf-protocol's handshake and sealing pieces, so that
//! frames can be altered, replayed, reordered or cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use telebpf_protocol::handshake::ClientHandshake;
use telebpf_protocol::key::Psk;
use telebpf_protocol::message::{self, Reply, Request};
use telebpf_protocol::seal::{Opener, Sealer};
use telebpf_tests::{product_file, say, wait_until, Harness, IdSnapshot, PinDir};

/// The bound of every "objects gone / call returned" assertion.
const BOUND: Duration = Duration::from_secs(1);

/// `CLOCK_MONOTONIC` in ms, as `fault-client` prints it.
fn now_ms() -> f64 {
    // SAFETY: plain data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// A field `key=value` of a `fault-client` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn num(line: &str, key: &str) -> f64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in {line:?}"))
}

/// A `fault-client` run as nobody through `telebpf exec`, its stdout read
/// line by line as it comes.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: String,
    /// Its stderr lines so far.
    errs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Client {
    fn spawn(h: &Harness, args: &[&str]) -> Client {
        let program = h.dir().join("fault-client");
        if !program.exists() {
            std::fs::copy(product_file("fault-client"), &program).expect("copy fault-client");
        }
        let mut exec_args: Vec<String> = vec![
            "exec".into(),
            "--target".into(),
            h.target(),
            "--key-file".into(),
            h.nobody_key(h.key()).display().to_string(),
            "--".into(),
            program.display().to_string(),
        ];
        exec_args.extend(args.iter().map(|a| a.to_string()));
        let telebpf = h.dir().join("telebpf");
        let mut cmd = h.nobody_command(&telebpf, &exec_args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Client::start(cmd, format!("[nobody] fault-client {}", args.join(" ")))
    }

    /// `fault-client ARGS` as root on this kernel (the producer).
    fn local(h: &Harness, args: &[&str]) -> Client {
        let mut cmd = std::process::Command::new(product_file("fault-client"));
        cmd.args(args)
            .current_dir(h.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Client::start(cmd, format!("[root] fault-client {}", args.join(" ")))
    }

    fn start(mut cmd: std::process::Command, what: String) -> Client {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let tag = what.clone();
        let errs: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let kept = errs.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                say(&format!("{tag} stderr: {line}"));
                kept.lock().unwrap().push(line);
            }
        });
        Client {
            child,
            lines: rx,
            seen: Vec::new(),
            what,
            errs,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line starting with `prefix` (others are kept in `seen`).
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line {prefix:?} within {timeout:?}; saw (last 20): {:?}",
                    self.what,
                    self.seen.iter().rev().take(20).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Lines that arrived so far without waiting.
    fn drain(&mut self) -> Vec<String> {
        let new: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(new.iter().cloned());
        new
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} did not exit within {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`) or as a count (`Threads`).
fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proxy status");
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

fn proxy_alive(h: &Harness) -> bool {
    // SAFETY: signal 0 only checks the pid.
    unsafe { libc::kill(h.proxy_pid() as i32, 0) == 0 }
}

/// Waits until no prog, map, link or BTF object exists that did not exist
/// in `before` (ids are never reused soon, so these are the client's);
/// returns how long that took from `since`, or panics after 5 s with what
/// is left. Objects of `before` that went meanwhile (a previous test's,
/// freed late by the kernel) do not matter.
fn wait_objects_gone(h: &Harness, before: &IdSnapshot, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(5);
    loop {
        let now = h.local_ids();
        if !nonempty(&now.minus(before)) {
            return since.elapsed();
        }
        if Instant::now() >= deadline {
            panic!(
                "objects left 5 s after the client died: {:?}",
                now.minus(before)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The proxy serves a new client: `fault-client maps 2` creates two maps.
fn next_client_served(h: &Harness) {
    let mut c = Client::spawn(h, &["maps", "2"]);
    let line = c.wait_line("created=", Duration::from_secs(30));
    assert_eq!(
        line, "created=2 errno=0",
        "the next client was not served normally"
    );
    assert!(c.wait_exit(Duration::from_secs(10)).success());
}

fn nonempty(s: &IdSnapshot) -> bool {
    !(s.progs.is_empty() && s.maps.is_empty() && s.links.is_empty() && s.btfs.is_empty())
}

/// SIGKILL of a client in the middle of a long program load (a verifier
/// walk of hundreds of milliseconds): the proxy interrupts the verifier
/// (the load ends with `EAGAIN`), and every object of the session is gone
/// within 1 s.
#[test]
fn sigkill_during_program_load_frees_session_objects_within_1s() {
    let Some(h) = Harness::start("sigkill_during_program_load") else {
        return;
    };
    let before = h.settled_local_ids();
    let mut c = Client::spawn(&h, &["slow-load", "490000"]);
    let first = c.wait_line("loaded", Duration::from_secs(60));
    let load_ms = num(&first, "ms");
    assert!(first.contains("Ok("), "the slow program must load: {first}");
    // How long one load takes depends on the machine (214 ms to over
    // 600 ms here on different days, the verifier's instruction limit
    // caps the loop): the kill lands a third of a load after the next one
    // started, and the proxy's log proves below that it interrupted it.
    assert!(
        load_ms >= 90.0,
        "the load must take long enough for the kill to land in it: {load_ms} ms"
    );
    c.wait_line("loading", Duration::from_secs(5));
    let during = h.local_ids().minus(&before);
    assert!(nonempty(&during), "the client's maps exist during the load");
    thread::sleep(Duration::from_secs_f64(load_ms / 3000.0));
    assert!(
        c.drain().iter().all(|l| !l.starts_with("loaded")),
        "the kill must land during a load"
    );
    let t0 = Instant::now();
    c.kill();
    let gone = wait_objects_gone(&h, &before, t0);
    say(&format!(
        "program load: one load {load_ms} ms; after SIGKILL mid-load all {} objects gone in {:?} (bound {BOUND:?})",
        during.progs.len() + during.maps.len() + during.btfs.len(),
        gone
    ));
    assert!(
        gone <= BOUND,
        "objects gone after {gone:?}, bound {BOUND:?}"
    );
    // The load did not run to its end: the verifier gave up with EAGAIN.
    assert!(
        h.wait_proxy_log(
            "hung up during a call; interrupting",
            Duration::from_secs(1)
        ),
        "the proxy interrupted the load"
    );
    assert!(
        h.wait_proxy_log("bpf BPF_PROG_LOAD -> errno 11", Duration::from_secs(1)),
        "the interrupted load ended with EAGAIN"
    );
    next_client_served(&h);
    h.finish();
}

/// SIGKILL of a client while its ring buffer streams records (and after it
/// held the idle ring for longer than the idle timeout: a session holding
/// objects is never idle-closed).
#[test]
fn sigkill_during_ringbuf_stream_frees_session_objects_within_1s() {
    let Some(mut h) = Harness::start_without_proxy("sigkill_during_ringbuf_stream") else {
        return;
    };
    h.set_proxy_args(&["--idle-timeout-ms", "1000"]);
    h.start_proxy();
    let before = h.settled_local_ids();
    let mut c = Client::spawn(&h, &["ringbuf"]);
    let ready = c.wait_line("ready", Duration::from_secs(30));
    let prog_id = field(&ready, "prog_id").expect("prog id").to_string();
    // Quiet for 2.5 idle timeouts: only the stream connection could carry
    // anything, and nothing is produced.
    thread::sleep(Duration::from_millis(2500));
    let mut p = Client::local(&h, &["produce", &prog_id, "2"]);
    p.wait_line("produced=2000", Duration::from_secs(30));
    assert!(p.wait_exit(Duration::from_secs(10)).success());
    let line = c.wait_line("consumed=", Duration::from_secs(10));
    say(&format!(
        "ringbuf: after 2.5 s idle, records still arrive: {line}"
    ));
    assert!(
        !h.proxy_log().contains("holding no guest object"),
        "no session holding objects may be idle-closed"
    );
    let during = h.local_ids().minus(&before);
    // Produce again and kill while the records stream.
    let mut p = Client::local(&h, &["produce", &prog_id, "20"]);
    p.wait_line("produced=", Duration::from_secs(30));
    assert!(p.wait_exit(Duration::from_secs(10)).success());
    c.wait_line("consumed=", Duration::from_secs(10));
    let t0 = Instant::now();
    c.kill();
    let gone = wait_objects_gone(&h, &before, t0);
    say(&format!(
        "ringbuf stream: after SIGKILL mid-stream {} progs and {} maps gone in {gone:?} (bound {BOUND:?})",
        during.progs.len(),
        during.maps.len()
    ));
    assert!(
        gone <= BOUND,
        "objects gone after {gone:?}, bound {BOUND:?}"
    );
    // The stream ends either when the owner's session closes the ring or,
    // if the proxy was pushing records when the client died, when that
    // send fails first: both within the bound.
    let ended = wait_until(Duration::from_secs(1), || {
        let log = h.proxy_log();
        if log.contains("ring closed by its owner") || log.contains("sending failed") {
            Ok(())
        } else {
            Err("the stream is still running".to_string())
        }
    });
    assert!(ended.is_ok(), "the stream ended with its owner");
    next_client_served(&h);
    h.finish();
}

/// SIGKILL during `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_LOOKUP_BATCH` of a
/// 200,000-entry hash map.
#[test]
fn sigkill_during_batch_map_operation_frees_session_objects_within_1s() {
    let Some(h) = Harness::start("sigkill_during_batch_map_operation") else {
        return;
    };
    let before = h.settled_local_ids();
    let mut c = Client::spawn(&h, &["batch", "200000"]);
    let round = c.wait_line("round=2", Duration::from_secs(60));
    assert_eq!(field(&round, "bad"), Some("0"), "batch values round-trip");
    let during = h.local_ids().minus(&before);
    assert_eq!(during.maps.len(), 1, "the client's map exists");
    c.wait_line("update_batch", Duration::from_secs(10));
    let t0 = Instant::now();
    c.kill();
    let gone = wait_objects_gone(&h, &before, t0);
    say(&format!(
        "batch: after SIGKILL during UPDATE_BATCH of 200000 entries the map is gone in {gone:?} (bound {BOUND:?})"
    ));
    assert!(
        gone <= BOUND,
        "objects gone after {gone:?}, bound {BOUND:?}"
    );
    next_client_served(&h);
    h.finish();
}

/// The proxy is SIGKILLed while a client waits for a program load: the
/// call fails with an errno within 1 s. The lost session held a map, so
/// the client's retries fail with that same errno, also once a proxy is
/// back (no silent new session while the program holds fds that now name
/// nothing), and so does the old map's fd; once the program closed that
/// fd, its next call reconnects.
#[test]
fn proxy_killed_mid_call_errno_within_1s_then_reconnect() {
    let Some(mut h) = Harness::start("proxy_killed_mid_call") else {
        return;
    };
    let before = h.settled_local_ids();
    let mut c = Client::spawn(&h, &["mid-call", "490000"]);
    c.wait_line("loaded", Duration::from_secs(60));
    c.wait_line("loading", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(300));
    let killed_at = now_ms();
    h.kill_proxy();
    let failed = c.wait_line("failed", Duration::from_secs(5));
    let after_ms = num(&failed, "t") - killed_at;
    let errno = num(&failed, "errno") as i32;
    say(&format!(
        "proxy killed mid-call: the call returned errno {errno} {after_ms:.1} ms after the kill (bound {BOUND:?})"
    ));
    assert!(errno > 0);
    assert!(
        after_ms <= BOUND.as_millis() as f64,
        "the call returned {after_ms} ms after the kill"
    );
    // Down for a while, then back while the client still retries.
    thread::sleep(Duration::from_millis(500));
    h.start_proxy();
    let retries = c.wait_line("retries", Duration::from_secs(10));
    say(&format!(
        "retries for 3 s, the proxy back after 0.5 s: {retries}"
    ));
    let only_errno = format!("errno{errno}=");
    assert!(
        retries
            .split_whitespace()
            .skip(1)
            .all(|w| w.starts_with(&only_errno)),
        "every retry must fail with errno {errno}: {retries}"
    );
    let old = c.wait_line("old_fd", Duration::from_secs(10));
    assert_eq!(
        old,
        format!("old_fd lookup=errno {errno}"),
        "an fd of the lost session fails with the same errno"
    );
    let reconnected = c.wait_line("reconnected", Duration::from_secs(30));
    say(&format!("{old}; after closing it: {reconnected}"));
    assert_eq!(field(&reconnected, "fresh_value"), Some("9"));
    assert!(c.wait_exit(Duration::from_secs(10)).success());
    let gone = wait_objects_gone(&h, &before, Instant::now());
    say(&format!(
        "after the client exited its objects were gone in {gone:?}"
    ));
    h.finish();
}

/// A client that stops reading (SIGSTOP) while the proxy pushes ring
/// records: the proxy's memory stays bounded and the stream times out
/// after the stall timeout.
#[test]
fn stalled_ring_reader_bounded_memory_and_times_out() {
    let Some(mut h) = Harness::start_without_proxy("stalled_ring_reader") else {
        return;
    };
    h.set_proxy_args(&["--stall-timeout-ms", "1000"]);
    h.start_proxy();
    let before = h.settled_local_ids();
    let pid = h.proxy_pid();
    let mut c = Client::spawn(&h, &["ringbuf"]);
    let ready = c.wait_line("ready", Duration::from_secs(30));
    let prog_id = field(&ready, "prog_id").expect("prog id").to_string();
    let mut p = Client::local(&h, &["produce", &prog_id, "1"]);
    assert!(p.wait_exit(Duration::from_secs(10)).success());
    c.wait_line("consumed=", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(200));
    let base = rss_kib(pid);
    c.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    // 300,000 records of 72 bytes: far more than the sockets can buffer.
    let mut p = Client::local(&h, &["produce", &prog_id, "300"]);
    let mut peak = base;
    let mut stalled_after = None;
    while t0.elapsed() < Duration::from_secs(6) {
        peak = peak.max(rss_kib(pid));
        if stalled_after.is_none() && h.proxy_log().contains("peer stalled") {
            stalled_after = Some(t0.elapsed());
        }
        if stalled_after.is_some() && matches!(p.child.try_wait(), Ok(Some(_))) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(p.wait_exit(Duration::from_secs(60)).success());
    let grew = peak.saturating_sub(base);
    say(&format!(
        "stalled reader: proxy RSS {base} KiB before, peak {peak} KiB (+{grew} KiB, bound 16384); stream ended {stalled_after:?} after the stall began (bound 5 s)"
    ));
    assert!(grew <= 16 << 10, "proxy RSS grew by {grew} KiB");
    let stalled_after = stalled_after.expect("the stalled stream must time out");
    assert!(stalled_after <= Duration::from_secs(5));
    c.signal(libc::SIGCONT);
    // Resumed, the client holds a ring whose stream is gone: it is told it
    // is blind to it (one line naming the cause).
    let told = wait_until(Duration::from_secs(5), || {
        let errs = c.errs.lock().unwrap();
        match errs.iter().find(|l| l.starts_with(LOST_LINE)) {
            Some(l) if l.contains("the stream of a ring ended") => Ok(()),
            _ => Err(format!("no lost line naming the ring's stream: {errs:?}")),
        }
    });
    assert!(told.is_ok(), "{told:?}");
    let t1 = Instant::now();
    c.kill();
    let gone = wait_objects_gone(&h, &before, t1);
    assert!(gone <= BOUND, "objects gone after {gone:?}");
    assert!(proxy_alive(&h));
    next_client_served(&h);
    h.finish();
}

/// A raw protocol client: the handshake and sealing pieces, no channel.
struct Raw {
    s: UnixStream,
    sealer: Sealer,
    opener: Opener,
}

fn connect(h: &Harness) -> UnixStream {
    let path = h.target();
    let s = UnixStream::connect(path.strip_prefix("unix:").expect("unix target")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<([u8; 4], Vec<u8>)> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix)?;
    let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
    s.read_exact(&mut body)?;
    Ok((prefix, body))
}

impl Raw {
    /// Connects and authenticates with `psk`, and opens the Welcome.
    fn open(h: &Harness, psk: &Psk) -> Raw {
        let mut s = connect(h);
        let (hs, hello) = ClientHandshake::start(psk).unwrap();
        s.write_all(&hello).unwrap();
        let (_, server_hello) = read_frame(&mut s).expect("server hello");
        let (proof, keys) = hs.finish(&server_hello).expect("handshake");
        s.write_all(&proof).unwrap();
        let mut raw = Raw {
            s,
            sealer: keys.sealer,
            opener: keys.opener,
        };
        match raw.recv() {
            Some(Reply::Welcome(_)) => raw,
            other => panic!("no Welcome: {other:?}"),
        }
    }

    fn frame(&mut self, req: &Request) -> Vec<u8> {
        self.sealer.seal(&message::encode(req).unwrap())
    }

    fn recv(&mut self) -> Option<Reply> {
        let (prefix, mut body) = read_frame(&mut self.s).ok()?;
        self.opener.open_in_place(&mut body, prefix).ok()?;
        message::decode(&body).ok()
    }

    fn ping(&mut self, payload: &[u8]) -> bool {
        let f = self.frame(&Request::Ping(payload.to_vec()));
        self.s.write_all(&f).is_ok() && matches!(self.recv(), Some(Reply::Pong(p)) if p == payload)
    }

    /// Whether the proxy closed the connection (within 5 s).
    fn closed_by_proxy(&mut self) -> bool {
        self.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn psk(h: &Harness) -> Psk {
    Psk::from_file(h.key()).expect("key")
}

/// A client that sends half of a large frame and then nothing: memory
/// stays bounded (the proxy buffers what arrived, not what the prefix
/// announced) and the session ends after the stall timeout.
#[test]
fn half_frame_senders_bounded_memory_and_time_out() {
    let Some(mut h) = Harness::start_without_proxy("half_frame_senders") else {
        return;
    };
    h.set_proxy_args(&["--stall-timeout-ms", "1000"]);
    h.start_proxy();
    let pid = h.proxy_pid();
    let key = psk(&h);
    // Warm up (first session allocations), then the baseline.
    assert!(Raw::open(&h, &key).ping(b"warm"));
    thread::sleep(Duration::from_millis(300));
    let base = rss_kib(pid);
    const CLIENTS: usize = 20;
    const ANNOUNCED: u32 = 8 << 20;
    let mut raws: Vec<Raw> = (0..CLIENTS).map(|_| Raw::open(&h, &key)).collect();
    let t0 = Instant::now();
    for r in &mut raws {
        r.s.write_all(&ANNOUNCED.to_le_bytes()).unwrap();
        r.s.write_all(&[0x5a; 4096]).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    let during = rss_kib(pid);
    let mut ended = 0;
    for r in &mut raws {
        if r.closed_by_proxy() {
            ended += 1;
        }
    }
    let took = t0.elapsed();
    let stalled = h
        .proxy_log()
        .lines()
        .filter(|l| l.contains("peer stalled") || l.contains("frame incomplete"))
        .count();
    let grew = during.saturating_sub(base);
    say(&format!(
        "half frames: {CLIENTS} clients each announced {ANNOUNCED} bytes and sent 4 KiB: proxy RSS +{grew} KiB (bound 16384; {} KiB if it believed the prefixes); {ended} sessions ended, {stalled} logged as stalled, all within {took:?} (bound 4 s)",
        CLIENTS as u64 * ANNOUNCED as u64 / 1024
    ));
    assert!(grew <= 16 << 10, "proxy RSS grew by {grew} KiB");
    assert_eq!(ended, CLIENTS);
    assert_eq!(stalled, CLIENTS);
    assert!(took <= Duration::from_secs(4));
    assert!(
        Raw::open(&h, &key).ping(b"next"),
        "the next client is served"
    );
    h.finish();
}

/// A session that authenticates and then sends nothing, holding no
/// object, ends after the idle timeout.
#[test]
fn idle_session_without_objects_times_out() {
    let Some(mut h) = Harness::start_without_proxy("idle_session_times_out") else {
        return;
    };
    h.set_proxy_args(&["--idle-timeout-ms", "1000"]);
    h.start_proxy();
    let key = psk(&h);
    let mut r = Raw::open(&h, &key);
    assert!(r.ping(b"x"));
    let t0 = Instant::now();
    assert!(r.closed_by_proxy(), "the idle session must be closed");
    let took = t0.elapsed();
    say(&format!(
        "idle session closed {took:?} after its last request (timeout 1 s, bound 2 s)"
    ));
    assert!(took >= Duration::from_millis(1000) && took <= Duration::from_secs(2));
    assert!(h.proxy_log().contains("holding no guest object"));
    // A half-open connection (no handshake at all) ends at the handshake
    // timeout.
    h.stop_proxy_checked();
    h.set_proxy_args(&["--handshake-timeout-ms", "500"]);
    h.start_proxy();
    let mut s = connect(&h);
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    let n = s.read(&mut b).unwrap_or(0);
    let took = t0.elapsed();
    say(&format!(
        "half-open connection closed after {took:?} (handshake timeout 500 ms, bound 1.5 s)"
    ));
    assert_eq!(n, 0);
    assert!(took >= Duration::from_millis(500) && took <= Duration::from_millis(1500));
    next_client_served(&h);
    h.finish();
}

/// 200 clients (processes under the preload, as nobody) increment their
/// own element of a pinned array map for 10 s each through the proxy: no
/// error, every update counted in the map, and the proxy's memory returns
/// near its idle size.
#[test]
fn two_hundred_concurrent_clients_lose_no_update() {
    let Some(h) = Harness::start("two_hundred_concurrent_clients") else {
        return;
    };
    const CLIENTS: usize = 200;
    let pins = PinDir::new("faults-counter");
    let pin = pins.join("counts");
    h.local(&[
        "map", "create", &pin, "type", "array", "key", "4", "value", "8", "entries", "256", "name",
        "tbcounts",
    ])
    .expect_success();
    let pid = h.proxy_pid();
    // Warm-up client, then the idle size.
    let mut w = Client::spawn(&h, &["counter", &pin, "255", "1"]);
    w.wait_line("updates=", Duration::from_secs(30));
    w.wait_exit(Duration::from_secs(10));
    thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(pid);
    let idle_threads = proc_status(pid, "Threads");
    let t0 = Instant::now();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client::spawn(&h, &["counter", &pin, &i.to_string(), "10"]))
        .collect();
    let mut peak_threads = 0;
    let mut peak_rss = 0;
    let mut results = Vec::new();
    for c in clients.iter_mut() {
        peak_threads = peak_threads.max(proc_status(pid, "Threads"));
        peak_rss = peak_rss.max(rss_kib(pid));
        results.push(c.wait_line("updates=", Duration::from_secs(120)));
    }
    for c in clients.iter_mut() {
        assert!(c.wait_exit(Duration::from_secs(30)).success());
    }
    let wall = t0.elapsed();
    let dump = h.local(&["map", "dump", "pinned", &pin, "--json"]);
    dump.expect_success();
    let entries = dump.json();
    let value_of = |key: usize| -> u64 {
        let e = &entries.as_array().expect("dump is an array")[key];
        let bytes: Vec<u8> = e["value"]
            .as_array()
            .expect("value bytes")
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect();
        u64::from_le_bytes(bytes[..8].try_into().unwrap())
    };
    let mut total = 0;
    for (i, line) in results.iter().enumerate() {
        assert_eq!(field(line, "errors"), Some("0"), "client {i}: {line}");
        let updates = num(line, "updates") as u64;
        assert!(updates > 0, "client {i} made no update: {line}");
        assert_eq!(
            value_of(i),
            updates,
            "client {i}: map value vs its count: {line}"
        );
        assert_eq!(num(line, "final") as u64, updates, "client {i}: {line}");
        total += updates;
    }
    // The sessions end as the clients exit; then the memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_status(pid, "Threads") > idle_threads && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let after_rss = rss_kib(pid);
    let after_threads = proc_status(pid, "Threads");
    say(&format!(
        "200 clients: {total} updates in {wall:?}, 0 errors, 200/200 map values equal the clients' counts; proxy threads {idle_threads} idle, {peak_threads} peak, {after_threads} after; RSS {idle_rss} KiB idle, {peak_rss} KiB peak, {after_rss} KiB after (bound idle + 4096)"
    ));
    assert_eq!(after_threads, idle_threads, "every session thread ended");
    assert!(
        after_rss <= idle_rss + (4 << 10),
        "proxy RSS {after_rss} KiB after, idle {idle_rss} KiB"
    );
    drop(pins);
    h.finish();
}

/// What the proxy logged since `from` (a byte offset of its log).
fn log_since(h: &Harness, from: usize) -> String {
    h.proxy_log().get(from..).unwrap_or_default().to_string()
}

/// Waits for the proxy's log after `from` to contain `needle`.
fn wait_log_since(h: &Harness, from: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let new = log_since(h, from);
        if new.contains(needle) {
            return new;
        }
        if Instant::now() >= deadline {
            panic!("the proxy did not log {needle:?}; it logged:\n{new}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Each attack on the channel is refused before any request of it is
/// decoded, is logged, and the proxy serves the next client.
#[test]
fn channel_attacks_refused_logged_and_proxy_lives() {
    let Some(h) = Harness::start("channel_attacks") else {
        return;
    };
    let key = psk(&h);
    let wrong = Psk::from_file(&h.new_key("wrong.key")).expect("wrong key");
    // (name, what the proxy logs) — each closure mounts one attack.
    type Attack = Box<dyn Fn(&Harness, &Psk, &Psk)>;
    let attacks: Vec<(&str, &str, Attack)> = vec![
        (
            "wrong key",
            "authentication failed",
            Box::new(|h, _, wrong| {
                let mut s = connect(h);
                let (_, hello) = ClientHandshake::start(wrong).unwrap();
                s.write_all(&hello).unwrap();
                let _ = read_frame(&mut s);
            }),
        ),
        (
            "truncated handshake",
            "handshake",
            Box::new(|h, key, _| {
                let mut s = connect(h);
                let (_, hello) = ClientHandshake::start(key).unwrap();
                s.write_all(&hello[..hello.len() / 2]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let _ = s.read(&mut [0u8; 64]);
            }),
        ),
        (
            "altered ciphertext",
            "failed authentication",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                let mut f = r.frame(&Request::Ping(vec![1; 32]));
                f[10] ^= 0x01;
                r.s.write_all(&f).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
        (
            "replayed frame",
            "frame #1 failed authentication",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                let f = r.frame(&Request::Ping(vec![2; 8]));
                r.s.write_all(&f).unwrap();
                assert!(matches!(r.recv(), Some(Reply::Pong(_))));
                r.s.write_all(&f).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
        (
            "reordered frames",
            "frame #0 failed authentication",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                let f0 = r.frame(&Request::Ping(vec![0; 8]));
                let f1 = r.frame(&Request::Ping(vec![1; 8]));
                r.s.write_all(&f1).unwrap();
                r.s.write_all(&f0).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
        (
            "oversized length prefix (over the protocol's 64 MiB)",
            "exceeds the limit",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                r.s.write_all(&u32::MAX.to_le_bytes()).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
        (
            "oversized length prefix (over --max-frame)",
            "exceeds this receiver's limit",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                r.s.write_all(&(32u32 << 20).to_le_bytes()).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
        (
            "garbage after the handshake",
            "failed authentication",
            Box::new(|h, key, _| {
                let mut r = Raw::open(h, key);
                let mut g = vec![0u8; 4096];
                for (i, b) in g.iter_mut().enumerate() {
                    *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
                }
                // A plausible length (1000) followed by noise.
                g[..4].copy_from_slice(&1000u32.to_le_bytes());
                r.s.write_all(&g).unwrap();
                assert!(r.closed_by_proxy());
            }),
        ),
    ];
    for (name, logged, attack) in &attacks {
        let from = h.proxy_log().len();
        attack(&h, &key, &wrong);
        let new = wait_log_since(&h, from, logged);
        let line = new
            .lines()
            .find(|l| l.contains(logged))
            .unwrap_or_default()
            .to_string();
        assert!(
            !new.contains(": bpf ") && !new.contains(": file "),
            "{name}: a request was decoded:\n{new}"
        );
        assert!(proxy_alive(&h), "{name}: the proxy died");
        assert!(
            Raw::open(&h, &key).ping(b"ok"),
            "{name}: next client not served"
        );
        say(&format!(
            "attack {name}: refused, logged {line:?}; next client served"
        ));
    }
    next_client_served(&h);
    h.finish();
}

/// `--max-objects-per-session`: the creating call fails with EMFILE at
/// exactly the limit, and nothing more is created.
#[test]
fn object_limit_gives_emfile() {
    let Some(mut h) = Harness::start_without_proxy("object_limit") else {
        return;
    };
    h.set_proxy_args(&["--max-objects-per-session", "8"]);
    h.start_proxy();
    let mut c = Client::spawn(&h, &["maps", "20"]);
    let line = c.wait_line("created=", Duration::from_secs(30));
    say(&format!("object limit 8: {line}"));
    assert_eq!(line, format!("created=8 errno={}", libc::EMFILE));
    assert!(c.wait_exit(Duration::from_secs(10)).success());
    h.finish();
}

/// `--max-rate-per-session`: past the rate, requests fail with EAGAIN.
#[test]
fn request_rate_limit_gives_eagain() {
    let Some(mut h) = Harness::start_without_proxy("request_rate_limit") else {
        return;
    };
    h.set_proxy_args(&["--max-rate-per-session", "1000"]);
    h.start_proxy();
    let t0 = Instant::now();
    let mut c = Client::spawn(&h, &["rate", "5000"]);
    let line = c.wait_line("errno", Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(c.wait_exit(Duration::from_secs(10)).success());
    let ok = field(&line, "errno0").map_or(0, |v| v.parse::<u64>().unwrap());
    let eagain = field(&line, &format!("errno{}", libc::EAGAIN)).map_or(0, |v| v.parse().unwrap());
    say(&format!(
        "rate limit 1000/s: 5000 lookups in {took:?}: {line} (bound: at most 1000 + 1000/s of run time succeed)"
    ));
    assert_eq!(ok + eagain, 5000, "only success or EAGAIN: {line}");
    assert!(eagain > 0);
    assert!(ok as f64 <= 1000.0 + 1000.0 * took.as_secs_f64() + 10.0);
    h.finish();
}

/// `--max-sessions`: a connection past the limit is closed before the
/// handshake (the client sees ECONNREFUSED); once a place is free, the next
/// client is served.
#[test]
fn session_limit_refuses_connections() {
    let Some(mut h) = Harness::start_without_proxy("session_limit") else {
        return;
    };
    h.set_proxy_args(&["--max-sessions", "2"]);
    h.start_proxy();
    let key = psk(&h);
    let a = Raw::open(&h, &key);
    let mut b = Raw::open(&h, &key);
    let mut c = Client::spawn(&h, &["maps", "1"]);
    let status = c.wait_exit(Duration::from_secs(30));
    let lines = c.drain();
    say(&format!(
        "session limit 2: a third client exits {status} ({lines:?}); proxy: {}",
        h.proxy_log()
            .lines()
            .find(|l| l.contains("--max-sessions"))
            .unwrap_or("")
    ));
    assert!(h.proxy_log().contains("(--max-sessions)"));
    assert!(status.success());
    assert_eq!(
        lines,
        vec![format!("created=0 errno={}", libc::ECONNREFUSED)],
        "the third client is refused"
    );
    assert!(b.ping(b"still"));
    drop(a);
    thread::sleep(Duration::from_millis(200));
    next_client_served(&h);
    h.finish();
}

// ---------------------------------------------------------------------------
// A tool always knows when it is blind (issue #12 §5): when its proxy dies
// or freezes, the preload prints one line naming the proxy and the cause,
// and the tool's ring waits and calls fail, so it ends on its own (and a
// supervisor restarts it) instead of waiting for events that never come.

/// Within this of the proxy's death, the tool has said so and exited.
const BLIND_AFTER_KILL: Duration = Duration::from_secs(5);
/// Within this of the proxy freezing (SIGSTOP), the same.
const BLIND_AFTER_FREEZE: Duration = Duration::from_secs(10);
/// How each line the preload prints on losing the proxy starts.
const LOST_LINE: &str = "telebpf: lost the proxy at ";

/// Resumes a SIGSTOPped proxy on drop (also when an assertion fails), so
/// the harness can stop it.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the proxy's pid.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Starts `fault-client MODE 490000` (a client that loads slow programs),
/// SIGSTOPs the proxy during its second load, and waits for the call's
/// `failed` line: the client, the frozen proxy (resumed when dropped), the
/// line, and how many ms after the stop the call returned.
fn freeze_during_a_load(h: &Harness, mode: &str) -> (Client, Frozen, String, f64) {
    let mut c = Client::spawn(h, &[mode, "490000"]);
    c.wait_line("loaded", Duration::from_secs(60));
    c.wait_line("loading", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(100));
    let pid = h.proxy_pid() as i32;
    let stopped_at = now_ms();
    // SAFETY: kill(2) on the proxy's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen = Frozen(pid);
    let failed = c.wait_line("failed", BLIND_AFTER_FREEZE + Duration::from_secs(20));
    let after_ms = num(&failed, "t") - stopped_at;
    (c, frozen, failed, after_ms)
}

/// What a tool did after its proxy was cut off, measured from the cut.
struct AfterCut {
    /// When the lost line appeared.
    line_at: Option<Duration>,
    /// When the tool exited, and how.
    exit: Option<(Duration, std::process::ExitStatus)>,
    /// All it printed.
    output: String,
}

/// opensnoop (a libbpf-tool streaming through perf buffers, as `tools.rs`
/// runs it: nobody, `telebpf exec`) sees a marked open; then the proxy is
/// cut off by `cut`. Waits at most `bound` + 10 s for the lost line and
/// the tool's exit.
fn opensnoop_then_cut(
    h: &mut Harness,
    bound: Duration,
    cut: impl FnOnce(&mut Harness),
) -> Option<AfterCut> {
    let Some(program) = telebpf_tests::find_program("opensnoop") else {
        say("SKIP: opensnoop is not installed (apt-get install libbpf-tools)");
        return None;
    };
    let mut tool = h.start_exec_tool(&h.target(), h.key(), &program, &[]);
    tool.wait_for("PATH", Duration::from_secs(60)).unwrap();
    // It sees (a marked open; again each second, as a busy machine may
    // overrun the perf ring).
    let seen = (0..30).any(|_| {
        let path = h.dir().join(telebpf_tests::unique_name("tbblind"));
        std::fs::write(&path, b"x").unwrap();
        tool.wait_for(&path.display().to_string(), Duration::from_secs(1))
            .is_ok()
    });
    assert!(
        seen,
        "opensnoop saw none of 30 marked opens:\n{}",
        tool.output()
    );
    let target = h.target();
    let t0 = Instant::now();
    cut(h);
    let mut line_at = None;
    let mut exit = None;
    while t0.elapsed() < bound + Duration::from_secs(10) {
        if line_at.is_none()
            && tool
                .output()
                .lines()
                .any(|l| l.starts_with(LOST_LINE) && l.contains(&target))
        {
            line_at = Some(t0.elapsed());
        }
        if exit.is_none() {
            if let Some(status) = tool.exited() {
                exit = Some((t0.elapsed(), status));
            }
        }
        if line_at.is_some() && exit.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let output = tool.output();
    drop(tool);
    Some(AfterCut {
        line_at,
        exit,
        output,
    })
}

/// Checks the outcome of [`opensnoop_then_cut`]: one lost line naming the
/// proxy, and a non-zero exit of the tool's own, both within `bound`.
fn assert_blind_known(what: &str, bound: Duration, target: &str, after: AfterCut) {
    let AfterCut {
        line_at,
        exit,
        output,
    } = after;
    let lost: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with(LOST_LINE))
        .collect();
    let tail: Vec<&str> = output.lines().rev().take(6).collect();
    say(&format!(
        "{what}: lost line after {line_at:?}, opensnoop exited after {:?} with {:?} (bound {bound:?}); lost lines {lost:?}; last lines {tail:?}",
        exit.as_ref().map(|e| e.0),
        exit.as_ref().map(|e| e.1),
    ));
    let line_at = line_at.unwrap_or_else(|| {
        panic!("{what}: no line {LOST_LINE:?} naming {target} within {bound:?} + 10 s:\n{output}")
    });
    assert!(line_at <= bound, "{what}: the line came after {line_at:?}");
    assert_eq!(lost.len(), 1, "{what}: exactly one lost line:\n{output}");
    let (exited_at, status) = exit.unwrap_or_else(|| {
        panic!("{what}: opensnoop still ran {bound:?} + 10 s after the cut:\n{output}")
    });
    assert!(
        exited_at <= bound,
        "{what}: opensnoop exited after {exited_at:?}"
    );
    assert!(
        !status.success(),
        "{what}: opensnoop must end with an error status, not {status}:\n{output}"
    );
}

/// The proxy is SIGKILLed under a running opensnoop: within 5 s the tool's
/// stderr has one line naming the proxy and the cause, and the tool ends
/// with its own error and a non-zero status.
#[test]
fn proxy_killed_running_tool_knows_and_exits_within_5s() {
    let Some(mut h) = Harness::start("proxy_killed_running_tool_knows") else {
        return;
    };
    let target = h.target();
    let Some(outcome) = opensnoop_then_cut(&mut h, BLIND_AFTER_KILL, |h| h.kill_proxy()) else {
        return;
    };
    assert_blind_known("proxy SIGKILLed", BLIND_AFTER_KILL, &target, outcome);
    h.finish();
}

/// The proxy is SIGSTOPped (a frozen guest: the connection stays open, no
/// answer comes) under a running opensnoop: the keep-alive finds out, and
/// within 10 s the tool has said so and ended with a non-zero status.
#[test]
fn proxy_frozen_running_tool_knows_and_exits_within_10s() {
    let Some(mut h) = Harness::start("proxy_frozen_running_tool_knows") else {
        return;
    };
    let target = h.target();
    let mut frozen = None;
    let mut log_at_freeze = 0;
    let outcome = opensnoop_then_cut(&mut h, BLIND_AFTER_FREEZE, |h| {
        let pid = h.proxy_pid() as i32;
        // SAFETY: kill(2) on the proxy's pid.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        frozen = Some(Frozen(pid));
        log_at_freeze = h.proxy_log().len();
    });
    let Some(outcome) = outcome else {
        return;
    };
    drop(frozen);
    assert_blind_known("proxy SIGSTOPped", BLIND_AFTER_FREEZE, &target, outcome);
    // Resumed, the proxy finds the session gone and closes its objects.
    let ended = wait_log_since(&h, log_at_freeze, "guest objects");
    say(&format!("the resumed proxy logged:\n{ended}"));
    next_client_served(&h);
    h.finish();
}

/// The proxy is SIGSTOPped while a client waits for a call's reply (a
/// program load): a reply that never comes cannot be told from a long
/// verifier run on the call's own connection, so the keep-alive asks the
/// proxy on a new one, gets no answer, and the call fails with EIO within
/// 10 s, with the lost line. Resumed, the proxy is not used behind the
/// client's back: its retries fail the same way until it closed the lost
/// session's fd, and then it reconnects.
#[test]
fn proxy_frozen_mid_call_the_call_fails_within_10s() {
    let Some(h) = Harness::start("proxy_frozen_mid_call") else {
        return;
    };
    let (mut c, frozen, failed, after_ms) = freeze_during_a_load(&h, "mid-call");
    let errno = num(&failed, "errno") as i32;
    say(&format!(
        "proxy frozen mid-call: the call returned errno {errno} {after_ms:.0} ms after the SIGSTOP (bound {BLIND_AFTER_FREEZE:?})"
    ));
    drop(frozen);
    assert_eq!(errno, libc::EIO);
    assert!(
        after_ms <= BLIND_AFTER_FREEZE.as_millis() as f64,
        "the call returned {after_ms} ms after the freeze"
    );
    let retries = c.wait_line("retries", Duration::from_secs(10));
    assert!(
        retries
            .split_whitespace()
            .skip(1)
            .all(|w| w.starts_with("errno5=")),
        "{retries}"
    );
    assert_eq!(
        c.wait_line("old_fd", Duration::from_secs(10)),
        "old_fd lookup=errno 5"
    );
    let reconnected = c.wait_line("reconnected", Duration::from_secs(30));
    say(&format!("after the resume: {retries}; {reconnected}"));
    assert_eq!(field(&reconnected, "fresh_value"), Some("9"));
    assert!(c.wait_exit(Duration::from_secs(10)).success());
    h.finish();
}

/// Frames and bytes one direction of a relayed connection carried.
#[derive(Default)]
struct Flow {
    frames: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    largest: std::sync::atomic::AtomicU64,
}

impl Flow {
    fn snapshot(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.frames.load(Relaxed),
            self.bytes.load(Relaxed),
            self.largest.load(Relaxed),
        )
    }
}

/// The two directions of one relayed connection.
#[derive(Default)]
struct Flows {
    up: Flow,
    down: Flow,
}

/// A Unix-socket relay in front of the proxy that counts the frames of
/// each connection in each direction. Every frame of the protocol,
/// handshake and sealed alike, is a little-endian `u32` length and that
/// many bytes (`protocol/src/lib.rs`), so counting needs no key.
struct Relay {
    path: std::path::PathBuf,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<Flows>>>>,
}

impl Relay {
    fn start(h: &Harness) -> Relay {
        use std::os::unix::fs::PermissionsExt;
        let path = h.dir().join("relay.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind relay");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let proxy = h.target().strip_prefix("unix:").expect("unix").to_string();
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<Flows>>>> =
            Default::default();
        let list = conns.clone();
        thread::spawn(move || {
            for host in listener.incoming().map_while(Result::ok) {
                let Ok(guest) = UnixStream::connect(&proxy) else {
                    continue;
                };
                let flows = std::sync::Arc::new(Flows::default());
                list.lock().unwrap().push(flows.clone());
                let (h2, g2) = (host.try_clone().unwrap(), guest.try_clone().unwrap());
                let f2 = flows.clone();
                thread::spawn(move || pump(host, guest, &flows.up));
                thread::spawn(move || pump(g2, h2, &f2.down));
            }
        });
        Relay { path, conns }
    }

    fn target(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// The flows of the `i`th connection (in accept order).
    fn conn(&self, i: usize) -> std::sync::Arc<Flows> {
        self.conns.lock().unwrap()[i].clone()
    }

    fn count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

/// Copies `from` to `to`, counting whole frames into `flow`.
fn pump(mut from: UnixStream, mut to: UnixStream, flow: &Flow) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 4 {
            let len = u32::from_le_bytes(pending[..4].try_into().unwrap()) as usize;
            if pending.len() < 4 + len {
                break;
            }
            flow.frames.fetch_add(1, Relaxed);
            flow.bytes.fetch_add(4 + len as u64, Relaxed);
            flow.largest.fetch_max(4 + len as u64, Relaxed);
            pending.drain(..4 + len);
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// An idle tool (a mirrored ring buffer and its program held, nothing
/// produced) keeps its session alive with at most one small frame every
/// couple of seconds, and does send them (a frozen proxy is found only so):
/// the relay counts what its session connection carried over 20 s.
#[test]
fn idle_tool_keepalive_is_one_small_frame_per_few_seconds() {
    let Some(h) = Harness::start("idle_tool_keepalive") else {
        return;
    };
    let relay = Relay::start(&h);
    let program = h.dir().join("fault-client");
    std::fs::copy(product_file("fault-client"), &program).expect("copy fault-client");
    let args: Vec<String> = [
        "exec",
        "--target",
        &relay.target(),
        "--key-file",
        &h.nobody_key(h.key()).display().to_string(),
        "--",
        &program.display().to_string(),
        "ringbuf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cmd = h.nobody_command(&h.dir().join("telebpf"), &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut c = Client::start(cmd, "[nobody] fault-client ringbuf (relayed)".into());
    c.wait_line("ready", Duration::from_secs(30));
    thread::sleep(Duration::from_secs(1));
    const WINDOW: Duration = Duration::from_secs(20);
    // At most one frame per 2.5 s, each at most this large.
    const MAX_FRAMES: u64 = 8;
    const MAX_FRAME_BYTES: u64 = 64;
    let session = relay.conn(0);
    let conns_before = relay.count();
    let (up0, down0) = (session.up.snapshot(), session.down.snapshot());
    thread::sleep(WINDOW);
    let (up1, down1) = (session.up.snapshot(), session.down.snapshot());
    let frames = up1.0 - up0.0;
    let bytes = up1.1 - up0.1;
    say(&format!(
        "idle tool over {WINDOW:?}: session connection carried {frames} frames / {bytes} bytes host→proxy (largest frame ever {} bytes), {} frames / {} bytes proxy→host; {} connections before, {} after (bound: 1..={MAX_FRAMES} frames of ≤ {MAX_FRAME_BYTES} bytes)",
        up1.2,
        down1.0 - down0.0,
        down1.1 - down0.1,
        conns_before,
        relay.count()
    ));
    assert!(
        frames >= 1,
        "no keep-alive in {WINDOW:?}: a frozen proxy would go unnoticed"
    );
    assert!(frames <= MAX_FRAMES, "{frames} frames in {WINDOW:?}");
    assert!(
        bytes <= frames * MAX_FRAME_BYTES,
        "{bytes} bytes in {frames} frames"
    );
    assert_eq!(relay.count(), conns_before, "no new connection while idle");
    c.kill();
    h.finish();
}

/// A program that holds no guest object between its calls keeps working
/// through an idle timeout of its session and through a proxy restart: the
/// preload reconnects at once, as before, and prints no lost line (its
/// session held nothing, so no fd of it names nothing now).
#[test]
fn program_holding_nothing_reconnects_after_idle_timeout_and_proxy_restart() {
    let Some(mut h) = Harness::start_without_proxy("program_holding_nothing_reconnects") else {
        return;
    };
    h.set_proxy_args(&["--idle-timeout-ms", "1000"]);
    h.start_proxy();
    let mut c = Client::spawn(&h, &["no-objects", "8", "1500"]);
    let mut rounds = Vec::new();
    for round in 1..=8 {
        let line = c.wait_line(&format!("round={round} "), Duration::from_secs(15));
        if round == 3 {
            // Between two rounds: a new proxy.
            h.kill_proxy();
            h.start_proxy();
        }
        rounds.push(line);
    }
    let status = c.wait_exit(Duration::from_secs(10));
    say(&format!(
        "rounds 1.5 s apart, idle timeout 1 s, proxy restarted after round 3: {rounds:?}"
    ));
    for (i, line) in rounds.iter().enumerate() {
        assert_eq!(
            field(line, "result"),
            Some(format!("value{}", i + 1).as_str()),
            "round {}: {line}",
            i + 1
        );
    }
    assert!(status.success());
    assert!(
        h.proxy_log().contains("holding no guest object"),
        "the idle timeout ended sessions of the new proxy"
    );
    h.finish();
}

/// SHA-256 (hex) of a file as root reads it here.
fn local_sha256(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {path}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// `sha256sum PATH` as nobody through the proxy (the preload's own host
/// cache off, so the file's bytes really cross the channel); the digest.
fn remote_sha256(h: &Harness, path: &str) -> String {
    let sha256sum = telebpf_tests::find_program("sha256sum").expect("coreutils");
    let mut cmd = h.remote_program_command(&sha256sum, &[path]);
    cmd.env("TELEBPF_CACHE_DIR", "off");
    let out = telebpf_tests::run_with_timeout(
        cmd,
        &format!("[nobody] sha256sum {path}"),
        Duration::from_secs(30),
    );
    out.expect_success();
    out.stdout_text()
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Sixty authenticated peers ask for the guest's BTF (5 MB) again and again
/// and never read a byte of the answers. Under `--max-inflight 16 MiB` the
/// proxy's RSS grows by at most that budget plus 16 MiB (the sessions'
/// threads and buffers), not by sixty copies of the file, and a normal
/// client reading the same file meanwhile gets every byte of it.
///
/// A slow reader holds at most one reply of a file range (128 KiB), charged
/// twice (the encoded reply and its sealed frame) to the bytes in flight,
/// and none once its socket is full (a range is made only for a peer that
/// can take it); the file itself is held once, by the proxy's shared copy
/// of immutable files, which the warm-up read made before the baseline.
#[test]
fn slow_file_readers_bounded_memory_and_a_normal_client_is_served() {
    let Some(mut h) = Harness::start_without_proxy("slow_file_readers") else {
        return;
    };
    const INFLIGHT: u64 = 16 << 20;
    const READERS: usize = 60;
    let btf = "/sys/kernel/btf/vmlinux";
    let inflight = INFLIGHT.to_string();
    h.set_proxy_args(&["--max-inflight", &inflight]);
    h.start_proxy();
    let pid = h.proxy_pid();
    let want = local_sha256(btf);
    // Warm up: the first read (the proxy's copy of the file, first
    // allocations of a session), then the baseline.
    assert_eq!(remote_sha256(&h, btf), want);
    thread::sleep(Duration::from_millis(300));
    let base = rss_kib(pid);

    let n = READERS.to_string();
    let mut readers = h
        .attack_command(h.key(), &["file-slow-readers", &n, btf])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the slow readers");
    let mut out = BufReader::new(readers.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), format!("ready: {READERS}"), "the slow readers");
    let t0 = Instant::now();
    let mut peak = rss_kib(pid);
    // A normal client, while they hold on.
    let got = remote_sha256(&h, btf);
    let served_in = t0.elapsed();
    while t0.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(50));
    }
    peak = peak.max(rss_kib(pid));
    drop(readers.stdin.take());
    let _ = readers.wait();
    let grew = peak.saturating_sub(base);
    let bound = (INFLIGHT >> 10) + (16 << 10);
    say(&format!(
        "slow file readers: {READERS} sessions each asking for {btf} without reading: proxy RSS {base} KiB before, peak {peak} KiB (+{grew} KiB, bound {bound} KiB = --max-inflight {} KiB + 16 MiB); a normal client read the whole file meanwhile in {served_in:?}",
        INFLIGHT >> 10
    ));
    assert_eq!(got, want, "the normal client got the whole file");
    assert!(grew <= bound, "proxy RSS grew by {grew} KiB");
    assert!(proxy_alive(&h));
    h.finish();
}

/// Bytes in a file (0 if it does not exist).
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `attack-client ARGS` as nobody against this test's proxy, with `key`
/// (nobody's copy of it; or no key at all), its stdout and stderr read as
/// they come.
fn attack(h: &Harness, key: Option<&std::path::Path>, args: &[&str]) -> Client {
    let mut cmd = h.attack_command(key.unwrap_or(h.key()), args);
    if key.is_none() {
        cmd.env_remove("TELEBPF_KEY_FILE");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    Client::start(cmd, format!("[nobody] attack-client {}", args.join(" ")))
}

/// The number of an `attack-client` output line `key: N`.
fn attack_num(c: &mut Client, key: &str) -> u64 {
    let line = c.wait_line(&format!("{key}: "), Duration::from_secs(120));
    line[key.len() + 2..]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no number in {line:?}"))
}

/// The audit log's records (each line must be JSON).
fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// Records of `event`, and the sum of `count` of the `suppressed` records
/// of that event (the proxy's aggregation: nothing may go uncounted).
fn audit_total(records: &[serde_json::Value], event: &str) -> (u64, u64) {
    let detailed = records.iter().filter(|r| r["event"] == event).count() as u64;
    let summed = records
        .iter()
        .filter(|r| r["event"] == "suppressed" && r["of"] == event)
        .map(|r| {
            r["count"]
                .as_u64()
                .expect("a suppressed record has a count")
        })
        .sum();
    (detailed, summed)
}

/// Starts the proxy with the read-only profile and an audit log; the
/// audit log's path.
fn start_read_only_audited(h: &mut Harness) -> std::path::PathBuf {
    let audit = h.dir().join("audit.jsonl");
    h.start_proxy_with(&[
        "--policy".into(),
        "read-only".into(),
        "--audit".into(),
        audit.display().to_string(),
    ]);
    audit
}

/// How the proxy accounted for refusals, in its audit log and its stderr.
struct Refusals {
    /// `refused` records written in full.
    detailed: u64,
    /// Refusals counted in `suppressed` records.
    summed: u64,
    /// Refusal lines written in full.
    lines: u64,
    /// Refusals counted in summary lines.
    line_counts: u64,
}

/// The refusals of the proxy's log `log` and of the audit log at `audit`.
fn refusals_logged(log: &str, audit: &std::path::Path) -> Refusals {
    let (detailed, summed) = audit_total(&audit_records(audit), "refused");
    Refusals {
        detailed,
        summed,
        lines: log.lines().filter(|l| l.contains(" refuses ")).count() as u64,
        line_counts: log_suppressed(log, "refused"),
    }
}

/// The counts of the proxy's summary lines `…: N more 'KIND' lines
/// suppressed …`.
fn log_suppressed(log: &str, kind: &str) -> u64 {
    let needle = format!(" more '{kind}' lines suppressed");
    log.lines()
        .filter_map(|l| {
            let at = l.find(&needle)?;
            l[..at].rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Connects with `key`, authenticates and pings, within `limit`.
fn try_serve(h: &Harness, key: &Psk, limit: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let path = h.target();
    let mut s = UnixStream::connect(path.strip_prefix("unix:").expect("unix target"))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    let (hs, hello) = ClientHandshake::start(key).unwrap();
    s.write_all(&hello).map_err(|e| format!("hello: {e}"))?;
    let (_, server_hello) = read_frame(&mut s).map_err(|e| format!("server hello: {e}"))?;
    let (proof, keys) = hs
        .finish(&server_hello)
        .map_err(|e| format!("handshake: {e}"))?;
    s.write_all(&proof).map_err(|e| format!("proof: {e}"))?;
    let mut raw = Raw {
        s,
        sealer: keys.sealer,
        opener: keys.opener,
    };
    match raw.recv() {
        Some(Reply::Welcome(_)) => {}
        other => return Err(format!("no Welcome: {other:?}")),
    }
    if !raw.ping(b"served") {
        return Err("no pong".into());
    }
    Ok(t0.elapsed())
}

/// A flood of connections that never authenticate — 5× `--max-sessions`
/// silent ones held open and 5× garbage ones reopened as fast as the proxy
/// closes them — leaves a keyed client served within 1 s, and the proxy's
/// stderr and audit log grow by at most 1 MiB each; every connection of the
/// flood is still accounted for in the audit log (a `handshake_failed`
/// record, or counted in a `suppressed` one).
#[test]
fn connection_flood_leaves_keyed_client_served_within_1s_and_log_bounded() {
    let Some(mut h) = Harness::start_without_proxy("connection_flood") else {
        return;
    };
    const MAX_SESSIONS: usize = 64;
    const LOG_BOUND: u64 = 1 << 20;
    h.set_proxy_args(&["--max-sessions", &MAX_SESSIONS.to_string()]);
    let audit = h.dir().join("audit.jsonl");
    h.start_proxy_with(&["--audit".into(), audit.display().to_string()]);
    let key = psk(&h);
    assert!(Raw::open(&h, &key).ping(b"warm"));
    let log_path = h.dir().join("proxy.stderr");
    let (log0, audit0) = (file_len(&log_path), file_len(&audit));
    let per_kind = (5 * MAX_SESSIONS).to_string();
    let mut flood = attack(&h, None, &["flood", &per_kind, &per_kind, "4000"]);
    thread::sleep(Duration::from_millis(500));
    let (mut served, mut failed) = (Vec::new(), Vec::new());
    let t_flood = Instant::now();
    while t_flood.elapsed() < Duration::from_millis(3000) {
        match try_serve(&h, &key, Duration::from_secs(5)) {
            Ok(t) => served.push(t),
            Err(e) => failed.push(e),
        }
        thread::sleep(Duration::from_millis(100));
    }
    let connections = attack_num(&mut flood, "connections");
    let closed = attack_num(&mut flood, "closed_by_proxy");
    assert!(flood.wait_exit(Duration::from_secs(30)).success());
    // The connections still queued reach accept and fail; then the
    // pending counts are flushed at shutdown.
    thread::sleep(Duration::from_millis(1000));
    let alive = proxy_alive(&h);
    let exit = h.stop_proxy();
    let log_grew = file_len(&log_path).saturating_sub(log0);
    let audit_grew = file_len(&audit).saturating_sub(audit0);
    let records = audit_records(&audit);
    let (detailed, summed) = audit_total(&records, "handshake_failed");
    let slowest = served.iter().max().copied().unwrap_or_default();
    say(&format!(
        "connection flood ({per_kind} silent + {per_kind} garbage, --max-sessions {MAX_SESSIONS}): \
         {connections} connections, {closed} closed by the proxy; keyed clients: {} served, slowest \
         {slowest:?} (bound 1 s), {} failed {:?}; proxy stderr +{log_grew} bytes, audit \
         +{audit_grew} bytes (bound {LOG_BOUND} each); handshake failures in the audit log: \
         {detailed} records + {summed} counted in summaries = {} (connections: {connections})",
        served.len(),
        failed.len(),
        failed.first(),
        detailed + summed,
    ));
    assert!(alive, "the proxy died");
    assert_eq!(exit.status.code(), Some(0), "proxy exit: {}", exit.status);
    assert!(failed.is_empty(), "keyed clients not served: {failed:?}");
    assert!(served.len() >= 5, "keyed clients served: {}", served.len());
    assert!(slowest <= BOUND, "a keyed client took {slowest:?}");
    assert!(log_grew <= LOG_BOUND, "stderr grew by {log_grew} bytes");
    assert!(
        audit_grew <= LOG_BOUND,
        "audit log grew by {audit_grew} bytes"
    );
    assert_eq!(
        detailed + summed,
        connections,
        "every connection of the flood is a handshake failure, recorded or counted"
    );
}

/// The caps the proxy derived from its fd limit, from its start line
/// `fd limit L: …, T guest objects (P per session)`.
fn derived_object_caps(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("fd limit "))?;
    let before = |needle: &str| -> Option<u64> {
        let at = line.find(needle)?;
        line[..at].rsplit([' ', '(']).next()?.parse().ok()
    };
    Some((before(" guest objects")?, before(" per session")?))
}

/// Under a service's fd limit of 1024 (soft = hard, so the proxy cannot
/// raise it), read-only keys holding BTF fds (`BPF_BTF_GET_FD_BY_ID` again
/// and again) stop at the caps the proxy derived from that limit, with
/// `EMFILE` (the session's) and `ENFILE` (the proxy's), and a new client is
/// still served at once; the log stays small.
#[test]
fn btf_fds_under_nofile_1024_stop_at_the_derived_caps_and_new_clients_are_served() {
    let Some(mut h) = Harness::start_without_proxy("btf_fds_nofile_1024") else {
        return;
    };
    h.set_proxy_nofile(1024);
    h.start_proxy_with(&["--policy".into(), "read-only".into()]);
    let log_path = h.dir().join("proxy.stderr");
    let log0 = file_len(&log_path);
    let caps = derived_object_caps(&h.proxy_log());
    let mut a = Client::spawn(&h, &["btf-fds", "1000"]);
    let first = a.wait_line("fds=", Duration::from_secs(60));
    let t0 = Instant::now();
    let mut b = Client::spawn(&h, &["btf-fds", "2"]);
    let second = b.wait_line("fds=", Duration::from_secs(10));
    let served_in = t0.elapsed();
    let mut c = Client::spawn(&h, &["btf-fds", "1000"]);
    let third = c.wait_line("fds=", Duration::from_secs(60));
    let mut d = Client::spawn(&h, &["btf-fds", "2"]);
    let fourth = d.wait_line("fds=", Duration::from_secs(10));
    let proxy_fds = std::fs::read_dir(format!("/proc/{}/fd", h.proxy_pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let log_grew = file_len(&log_path).saturating_sub(log0);
    say(&format!(
        "fd limit 1024: derived caps (total, per session) {caps:?}; first key: {first}; a new \
         client: {second} after {served_in:?}; second key: {third}; then: {fourth}; proxy holds \
         {proxy_fds} fds; log +{log_grew} bytes (bound 1 MiB)"
    ));
    assert_eq!(second, "fds=2 errno=0", "a new client is served");
    let (total, per_session) = caps.expect("the proxy logs the caps it derived from its fd limit");
    assert!(
        total + 100 <= 1024,
        "the caps leave room for the proxy's own fds"
    );
    assert_eq!(first, format!("fds={per_session} errno={}", libc::EMFILE));
    assert_eq!(
        third,
        format!("fds={} errno={}", total - per_session - 2, libc::ENFILE)
    );
    assert_eq!(fourth, format!("fds=0 errno={}", libc::ENFILE));
    assert!(proxy_fds < 1024);
    assert!(log_grew <= 1 << 20);
    for mut x in [a, b, c, d] {
        x.kill();
    }
    h.finish();
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proxy stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A proxy whose fd table is full (its limit is what it holds when idle)
/// under 30 connections held open: `accept` fails with `EMFILE`,
/// and the proxy backs off instead of retrying at once — it uses at most
/// 20% of a CPU and logs at most 64 KiB in 2 s — and lives.
#[test]
fn accept_out_of_fds_backs_off_without_spinning() {
    let Some(mut h) = Harness::start_without_proxy("accept_out_of_fds") else {
        return;
    };
    h.start_proxy();
    let idle_fds = std::fs::read_dir(format!("/proc/{}/fd", h.proxy_pid()))
        .map(|d| d.count() as u64)
        .expect("proxy fds");
    h.stop_proxy_checked();
    h.set_proxy_nofile(idle_fds);
    h.start_proxy();
    let pid = h.proxy_pid();
    let log_path = h.dir().join("proxy.stderr");
    let log0 = file_len(&log_path);
    let cpu0 = cpu_ticks(pid);
    let path = h.target();
    let path = path.strip_prefix("unix:").expect("unix target");
    let held: Vec<UnixStream> = (0..30)
        .filter_map(|_| UnixStream::connect(path).ok())
        .collect();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let wall = t0.elapsed();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / hz;
    let log_grew = file_len(&log_path).saturating_sub(log0);
    let failures = log_since(&h, log0 as usize)
        .matches("accept failed")
        .count();
    say(&format!(
        "accept out of fds (limit {idle_fds}): {} connections held for {wall:?}: proxy CPU \
         {cpu:.2} s (bound 20% of the time), log +{log_grew} bytes (bound 64 KiB), {failures} \
         accept failure lines",
        held.len()
    ));
    assert!(proxy_alive(&h), "the proxy died");
    assert!(
        cpu <= 0.2 * wall.as_secs_f64(),
        "the proxy spins: {cpu} s of CPU"
    );
    assert!(log_grew <= 64 << 10, "log grew by {log_grew} bytes");
    assert!(
        failures > 0,
        "accept must have failed (the limit was not reached)"
    );
    drop(held);
    h.finish();
}

/// `MemAvailable` of /proc/meminfo, in KiB.
fn mem_available_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemAvailable")
}

/// The `map=I errno=E id=ID` lines of `fault-client bigmaps N …`.
fn bigmap_lines(c: &mut Client, n: usize) -> Vec<(i32, u64)> {
    (0..n)
        .map(|_| {
            let line = c.wait_line("map=", Duration::from_secs(60));
            (num(&line, "errno") as i32, num(&line, "id") as u64)
        })
        .collect()
}

/// The kernel memory of maps is budgeted: of three arrays of a tracing key
/// each two thirds of the default session budget (which derives from the
/// machine's memory: 2 GiB arrays on this 24 GiB machine, as in the issue,
/// where three of them took 6.3 GB), the first is made and the other two
/// are refused with `ENOMEM` before they exist; and with small budgets by
/// flag a session's and the proxy's budgets hold, a charge outlives its
/// session while another holder keeps the map alive, and is released once
/// the map is really gone.
#[test]
fn map_memory_budget_refuses_huge_maps_before_they_exist() {
    let Some(mut h) = Harness::start_without_proxy("map_memory_budget") else {
        return;
    };
    h.start_proxy_with(&["--policy".into(), "tracing".into()]);
    // "kernel memory of maps, programs and BTF: P MiB per session, …"
    let budget_mib = h
        .proxy_log()
        .lines()
        .find_map(|l| l.split_once("kernel memory of maps, programs and BTF: "))
        .and_then(|(_, rest)| rest.split_once(" MiB per session"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .expect("the proxy logs its kernel-memory budgets");
    let size_mib = budget_mib * 2 / 3 + 1;
    let before = h.settled_local_ids();
    let avail0 = mem_available_kib();
    let mut c = Client::spawn(&h, &["bigmaps", "3", &size_mib.to_string(), "1"]);
    let results = bigmap_lines(&mut c, 3);
    c.wait_line("holding", Duration::from_secs(10));
    let avail1 = mem_available_kib();
    let new_maps = h.local_ids().minus(&before).maps.len();
    c.kill();
    let dropped_mib = avail0.saturating_sub(avail1) / 1024;
    say(&format!(
        "three {size_mib} MiB arrays (tracing key, default budget {budget_mib} MiB per session): \
         errnos {:?}; guest MemAvailable dropped by {dropped_mib} MiB (bound {} MiB); \
         {new_maps} new maps",
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        budget_mib + 256
    ));
    assert_eq!(
        results[0].0, 0,
        "the first array fits the budget: {results:?}"
    );
    assert!(
        results[1..].iter().all(|r| r.0 == libc::ENOMEM),
        "{results:?}"
    );
    assert_eq!(new_maps, 1);
    assert!(dropped_mib <= budget_mib + 256);
    h.stop_proxy_checked();

    // 48 MiB maps under a 64 MiB session budget and an 80 MiB proxy budget.
    h.set_proxy_args(&[
        "--max-map-memory-per-session",
        &(64u64 << 20).to_string(),
        "--max-map-memory",
        &(80u64 << 20).to_string(),
    ]);
    h.start_proxy_with(&["--policy".into(), "tracing".into()]);
    let mut a = Client::spawn(&h, &["bigmaps", "2", "48", "1"]);
    let a_maps = bigmap_lines(&mut a, 2);
    a.wait_line("holding", Duration::from_secs(10));
    let try_one = |h: &Harness| -> i32 {
        let mut b = Client::spawn(h, &["bigmaps", "1", "48", "0"]);
        let r = bigmap_lines(&mut b, 1)[0].0;
        assert!(b.wait_exit(Duration::from_secs(10)).success());
        r
    };
    let b_first = try_one(&h);
    let map_id = a_maps[0].1;
    let mut holder = Client::spawn(&h, &["hold-map", &map_id.to_string()]);
    let held = holder.wait_line("held", Duration::from_secs(10));
    a.kill();
    assert!(h.wait_proxy_log("closing 1 guest objects", Duration::from_secs(5)));
    let b_while_held = try_one(&h);
    holder.kill();
    let gone = wait_until(Duration::from_secs(5), || {
        if h.local_ids().maps.contains(&map_id) {
            Err(format!("map {map_id} still exists"))
        } else {
            Ok(())
        }
    });
    let b_after = try_one(&h);
    say(&format!(
        "budgets 64 MiB per session, 80 MiB in all, 48 MiB maps: first session {a_maps:?}; \
         another session {b_first}; after the first ended with its map held elsewhere ({held}) \
         {b_while_held}; once the map was freed ({gone:?}) {b_after}"
    ));
    assert_eq!(a_maps[0].0, 0);
    assert_eq!(a_maps[1].0, libc::ENOMEM, "the session's budget");
    assert_eq!(b_first, libc::ENOMEM, "the proxy's budget");
    assert_eq!(held, "held errno=0");
    assert_eq!(
        b_while_held,
        libc::ENOMEM,
        "the charge outlives the session"
    );
    gone.expect("the map is freed with its last holder");
    assert_eq!(b_after, 0, "the charge is released once the map is gone");
    h.finish();
}

/// A flood of refused requests (three sessions of a read-only key, 30,000
/// `BPF_PROG_LOAD`s each) grows the audit log and stderr by a bounded
/// amount, and the detailed records plus the counts of the summaries add up
/// to exactly the number of refusals sent.
#[test]
fn refusal_flood_bounded_audit_and_log_counts_add_up() {
    let Some(mut h) = Harness::start_without_proxy("refusal_flood") else {
        return;
    };
    const PER_SESSION: u64 = 30_000;
    const BOUND_BYTES: u64 = 256 << 10;
    let audit = start_read_only_audited(&mut h);
    let log_path = h.dir().join("proxy.stderr");
    let (log0, audit0) = (file_len(&log_path), file_len(&audit));
    let key = h.key().to_path_buf();
    let t0 = Instant::now();
    let mut refused = 0;
    for _ in 0..3 {
        let mut c = attack(&h, Some(&key), &["refusals", &PER_SESSION.to_string()]);
        refused += attack_num(&mut c, "refused");
        assert_eq!(attack_num(&mut c, "other"), 0);
        assert!(c.wait_exit(Duration::from_secs(30)).success());
    }
    let took = t0.elapsed();
    let ended = wait_until(Duration::from_secs(5), || {
        match h.proxy_log().matches(": ended (").count() {
            3 => Ok(()),
            n => Err(format!("{n} sessions ended")),
        }
    });
    ended.expect("the three sessions end");
    h.stop_proxy_checked();
    let log = h.proxy_log();
    let log_grew = file_len(&log_path).saturating_sub(log0);
    let audit_grew = file_len(&audit).saturating_sub(audit0);
    let Refusals {
        detailed,
        summed,
        lines,
        line_counts,
    } = refusals_logged(&log, &audit);
    say(&format!(
        "refusal flood: {refused} refusals in {took:?}; audit +{audit_grew} bytes, stderr \
         +{log_grew} bytes (bound {BOUND_BYTES} each); audit: {detailed} records + {summed} \
         counted = {}; stderr: {lines} lines + {line_counts} counted = {}",
        detailed + summed,
        lines + line_counts
    ));
    assert_eq!(refused, 3 * PER_SESSION);
    assert!(audit_grew <= BOUND_BYTES);
    assert!(log_grew <= BOUND_BYTES);
    assert_eq!(
        detailed + summed,
        refused,
        "audit: nothing refused goes uncounted"
    );
    assert_eq!(
        lines + line_counts,
        refused,
        "stderr: nothing refused goes uncounted"
    );
}

/// Client-chosen strings with a newline, a carriage return and a terminal
/// escape (file paths, a probe definition) cannot forge a log line: the
/// proxy escapes them in every line of its stderr (debug lines included),
/// and the audit log stays one JSON object per line.
#[test]
fn client_strings_cannot_forge_log_lines() {
    let Some(mut h) = Harness::start_without_proxy("log_forging") else {
        return;
    };
    let audit = start_read_only_audited(&mut h);
    let key = h.key().to_path_buf();
    let mut c = attack(&h, Some(&key), &["forge"]);
    let sent = attack_num(&mut c, "sent");
    assert!(c.wait_exit(Duration::from_secs(30)).success());
    assert!(h.wait_proxy_log("ended", Duration::from_secs(5)));
    h.stop_proxy_checked();
    let log = h.proxy_log();
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("telebpf-proxy: session 4242"))
        .collect();
    let raw_controls = log
        .chars()
        .filter(|&ch| ch != '\n' && ch.is_control())
        .count();
    let quoted = log.lines().filter(|l| l.contains("session 4242")).count();
    say(&format!(
        "log forging: {sent} requests with forged lines in their strings; forged lines in the \
         log: {}; raw control characters: {raw_controls}; lines quoting the fake (escaped): {quoted}",
        forged.len()
    ));
    assert_eq!(sent, 3);
    assert!(forged.is_empty(), "forged lines: {forged:?}");
    assert_eq!(raw_controls, 0, "control characters reach the log");
    assert!(
        quoted > 0,
        "the client's strings are kept (escaped), not dropped"
    );
    for r in audit_records(&audit) {
        assert_ne!(r["session"], 4242, "forged audit record {r}");
    }
}

/// The same freeze under a process that holds no guest object while its
/// call waits (a program load whose fd it closes each time; a tool still
/// reading kallsyms or loading its first program is in that state). The
/// keep-alive watched only processes holding objects, so the call waited
/// for ever (a minute here, until the test gave up). Now the call fails
/// within 10 s too; nothing was held, so the proxy is not declared lost,
/// and once it runs again the next call opens a new session.
#[test]
fn proxy_frozen_mid_call_without_objects_the_call_fails_within_10s() {
    let Some(h) = Harness::start("proxy_frozen_mid_call_no_objects") else {
        return;
    };
    let (mut c, frozen, failed, after_ms) = freeze_during_a_load(&h, "mid-call-no-objects");
    say(&format!(
        "proxy frozen mid-call, no objects held: the call returned {after_ms:.0} ms after the \
         SIGSTOP (bound {BLIND_AFTER_FREEZE:?}): {failed}"
    ));
    drop(frozen);
    assert!(
        after_ms <= BLIND_AFTER_FREEZE.as_millis() as f64,
        "the call returned {after_ms} ms after the freeze"
    );
    let after = c.wait_line("after", Duration::from_secs(30));
    assert!(after.contains("result=ok"), "{after}");
    h.finish();
}

/// Refusals are throttled per key, not per session: 200 sessions of one
/// read-only key, 25 refused `BPF_PROG_LOAD`s each, write at most a burst
/// or two of full lines and records (each new session got a fresh burst of
/// 20 before: 4,000 full lines, 540 KB of stderr and 790 KB of audit log),
/// and the full lines plus the counts of the summaries still add up to
/// every refusal.
#[test]
fn refusals_over_many_sessions_of_a_key_are_throttled_together() {
    let Some(mut h) = Harness::start_without_proxy("refusal_sessions") else {
        return;
    };
    const SESSIONS: u64 = 200;
    const PER_SESSION: u64 = 25;
    const BOUND_BYTES: u64 = 64 << 10;
    // Full lines per kind and 10 s interval (`throttle::BURST`).
    const BURST: u64 = 20;
    let audit = start_read_only_audited(&mut h);
    let log_path = h.dir().join("proxy.stderr");
    let key = h.key().to_path_buf();
    let t0 = Instant::now();
    let mut refused = 0;
    for _ in 0..SESSIONS {
        let mut c = attack(&h, Some(&key), &["refusals", &PER_SESSION.to_string()]);
        refused += attack_num(&mut c, "refused");
        assert!(c.wait_exit(Duration::from_secs(30)).success());
    }
    let took = t0.elapsed();
    h.stop_proxy_checked();
    let log = h.proxy_log();
    let Refusals {
        detailed,
        summed,
        lines,
        line_counts,
    } = refusals_logged(&log, &audit);
    // Bytes of the refusal lines and records (the sessions' own
    // open/close lines are another matter, see SECURITY.md).
    let refusal_bytes: u64 = log
        .lines()
        .filter(|l| l.contains(" refuses ") || l.contains("lines suppressed"))
        .map(|l| l.len() as u64 + 1)
        .sum();
    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    let refusal_records: u64 = audit_text
        .lines()
        .filter(|l| l.contains("\"refused\""))
        .map(|l| l.len() as u64 + 1)
        .sum();
    let intervals = took.as_secs() / 10 + 2;
    say(&format!(
        "{SESSIONS} sessions x {PER_SESSION} refusals in {took:?}: {lines} full lines + \
         {line_counts} counted (of {refused}); audit {detailed} records + {summed} counted; \
         refusal lines {refusal_bytes} B, refusal records {refusal_records} B (bound \
         {BOUND_BYTES} B each); {} of {} log bytes",
        file_len(&log_path),
        file_len(&audit),
    ));
    assert_eq!(refused, SESSIONS * PER_SESSION);
    assert!(
        lines <= intervals * BURST,
        "{lines} full refusal lines over {intervals} intervals"
    );
    assert!(refusal_bytes <= BOUND_BYTES);
    assert!(refusal_records <= BOUND_BYTES);
    assert_eq!(
        lines + line_counts,
        refused,
        "stderr: nothing goes uncounted"
    );
    assert_eq!(detailed + summed, refused, "audit: nothing goes uncounted");
}
