//! Connections that have not authenticated yet.
//!
//! Anyone who can reach the listen address can open connections and then
//! send nothing, or garbage. Counted against `--max-sessions`, 1,100 such
//! connections once locked every client with a key out for the length of
//! the handshake timeout, again and again. So handshakes in progress have a
//! cap of their own (`--max-handshakes`, one fd each), and sessions are
//! counted only once a client proved it holds a key.
//!
//! A new connection is never refused for want of a handshake place:
//! instead the pending handshake least likely to be a real client is
//! dropped ([`Handshakes::evict`]) — the oldest one the proxy has not
//! answered yet, that is whose peer has not sent a hello naming a key the
//! proxy holds (a real client sends it at once; it is usually in the socket
//! before the proxy accepts), else the oldest of all. A flood of silent or
//! garbage connections thus only ever displaces itself, and a client with a
//! key gets past its hello within one turn of the runtime (the accept loop
//! yields after each connection so that new handshakes run before the next
//! accept). Only a peer that knows a key id (it travels in clear) can hold a
//! place through the second half of the handshake, until the handshake
//! timeout.
//!
//! [`Backoff`] spaces `accept` retries after a failure (`EMFILE`, `ENFILE`,
//! …), which would otherwise fail again at once in a loop.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::{AbortHandle, Id};

/// A connection's stream during the handshake, noting when the proxy first
/// wrote to it: its `ServerHello`, sent only to a hello that names one of
/// the proxy's keys.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    answered: Arc<AtomicBool>,
}

impl<S> Tracked<S> {
    /// `inner`, setting `answered` on its first write.
    pub fn new(inner: S, answered: Arc<AtomicBool>) -> Tracked<S> {
        Tracked { inner, answered }
    }

    /// The stream itself, for the session.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.answered.store(true, Ordering::Release);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One handshake in progress.
#[derive(Debug)]
pub struct Pending {
    /// The session number the connection would get.
    pub id: u64,
    /// Its peer.
    pub peer: String,
    since: Instant,
    answered: Arc<AtomicBool>,
    abort: AbortHandle,
}

impl Pending {
    /// A pending handshake run by the task `abort` controls.
    pub fn new(id: u64, peer: String, answered: Arc<AtomicBool>, abort: AbortHandle) -> Pending {
        Pending {
            id,
            peer,
            since: Instant::now(),
            answered,
            abort,
        }
    }

    fn answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }
}

/// The handshakes in progress, by the id of the task running each.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    pending: HashMap<Id, Pending>,
}

impl Handshakes {
    /// At most `max` at once.
    pub fn new(max: usize) -> Handshakes {
        Handshakes {
            max: max.max(1),
            pending: HashMap::new(),
        }
    }

    /// Whether a new one needs a place freed first.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max
    }

    /// How many are in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds the handshake of task `task`.
    pub fn insert(&mut self, task: Id, p: Pending) {
        self.pending.insert(task, p);
    }

    /// The handshake of task `task` ended (a session started, or it
    /// failed).
    pub fn remove(&mut self, task: Id) -> Option<Pending> {
        self.pending.remove(&task)
    }

    fn oldest(&self, unanswered_only: bool) -> Option<Id> {
        self.pending
            .iter()
            .filter(|(_, p)| !unanswered_only || !p.answered())
            .min_by_key(|(_, p)| (p.since, p.id))
            .map(|(id, _)| *id)
    }

    /// Drops (aborts, which closes its connection) the oldest unanswered
    /// handshake, or with `any` the oldest of all when every one was
    /// answered; returns it.
    pub fn evict(&mut self, any: bool) -> Option<Pending> {
        let task = self
            .oldest(true)
            .or_else(|| any.then(|| self.oldest(false)).flatten())?;
        let p = self.pending.remove(&task)?;
        p.abort.abort();
        Some(p)
    }

    /// Drops every handshake (shutdown); returns them.
    pub fn drain(&mut self) -> Vec<Pending> {
        let all: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in &all {
            p.abort.abort();
        }
        all
    }
}

/// Spacing of `accept` retries after failures: 10 ms, doubling up to 1 s,
/// back to nothing after a success.
#[derive(Debug, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// Accepting failed: no new try before the returned instant.
    pub fn failed(&mut self) -> Instant {
        let delay = self.delay.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.delay = Some(delay);
        let until = Instant::now() + delay;
        self.until = Some(until);
        until
    }

    /// Accepting worked.
    pub fn succeeded(&mut self) {
        self.delay = None;
    }

    /// Until when accepting waits, if it does.
    pub fn paused_until(&self) -> Option<Instant> {
        self.until
    }

    /// The wait is over.
    pub fn resume(&mut self) {
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_unanswered_then_the_oldest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let mut h = Handshakes::new(3);
            let mut flags = Vec::new();
            for id in 1..=3u64 {
                let answered = Arc::new(AtomicBool::new(false));
                let abort = tasks.spawn(std::future::pending::<()>());
                h.insert(
                    abort.id(),
                    Pending::new(id, format!("p{id}"), answered.clone(), abort),
                );
                flags.push(answered);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(h.is_full());
            // 1 answered (its peer named a key): 2 is the one to go.
            flags[0].store(true, Ordering::Release);
            assert_eq!(h.evict(true).map(|p| p.id), Some(2));
            assert_eq!(h.len(), 2);
            flags[2].store(true, Ordering::Release);
            assert!(h.evict(false).is_none(), "all answered: only `any` evicts");
            assert_eq!(h.evict(true).map(|p| p.id), Some(1));
            // The evicted task is aborted.
            let done = tasks.join_next().await.unwrap();
            assert!(done.unwrap_err().is_cancelled());
            assert_eq!(h.drain().len(), 1);
            assert!(h.is_empty());
        });
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let first = b.failed();
        assert!(first >= t0 + Backoff::FIRST);
        for _ in 0..20 {
            b.failed();
        }
        assert_eq!(b.delay, Some(Backoff::MAX));
        assert!(b.paused_until().is_some());
        b.resume();
        b.succeeded();
        assert!(b.paused_until().is_none());
        assert_eq!(b.delay, None);
    }

    #[test]
    fn tracked_notes_the_first_write() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (a, mut b) = tokio::io::duplex(64);
            let answered = Arc::new(AtomicBool::new(false));
            let mut t = Tracked::new(a, answered.clone());
            b.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            t.read_exact(&mut buf).await.unwrap();
            assert!(
                !answered.load(Ordering::Acquire),
                "reading is not answering"
            );
            t.write_all(b"hi").await.unwrap();
            assert!(answered.load(Ordering::Acquire));
            let _inner = t.into_inner();
        });
    }
}
