//! One client's conversation, and the guest fds held on its behalf.
//!
//! A session starts with the handshake (no request is decoded before the
//! client proved it holds a key), sends the Welcome, then answers requests
//! in order until the client goes away or the proxy shuts down. Whatever
//! the reason, [`Session`]'s `Drop` closes every guest fd the client still
//! held, which is what makes a killed client leak nothing.

use std::collections::HashMap;
use std::sync::Arc;

use telebpf_abi::{cmd, ObjectKind, Objects};
use telebpf_protocol::channel::AsyncChannel;
use telebpf_protocol::key::Psk;
use telebpf_protocol::message::{
    self, ErrorReply, Facts, FileOp, NewObject, Reply, Request, FOREIGN_FD,
};
use telebpf_protocol::transport::ServerStream;
use tokio::sync::watch;

use crate::bpf_exec::{self, SessionFds};
use crate::{files, log, sys};

/// Largest single `read()` of an iterator fd.
const MAX_READ: u32 = 1 << 20;

/// The guest objects of one client.
#[derive(Debug)]
pub struct Session {
    id: u64,
    possible_cpus: u32,
    objects: HashMap<i32, NewObject>,
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
}

impl Session {
    /// A session with no objects yet.
    pub fn new(id: u64, possible_cpus: u32) -> Session {
        Session {
            id,
            possible_cpus,
            objects: HashMap::new(),
        }
    }

    /// Number of guest fds held.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Whether a request may take long enough (verifier, big files, test
    /// runs) that it must not occupy an async worker.
    pub fn is_slow(req: &Request) -> bool {
        match req {
            Request::Bpf(call) => matches!(
                call.cmd & !cmd::BPF_COMMON_ATTRS,
                cmd::BPF_PROG_LOAD
                    | cmd::BPF_BTF_LOAD
                    | cmd::BPF_PROG_TEST_RUN
                    | cmd::BPF_MAP_CREATE
            ),
            Request::Read { .. } | Request::File(FileOp::Read { .. }) => true,
            _ => false,
        }
    }

    /// Answers one request; `None` for requests that have no reply.
    pub fn handle(&mut self, req: Request) -> Option<Reply> {
        match req {
            Request::Bpf(call) => {
                let outcome = bpf_exec::execute(&call, self);
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
                            self.objects.insert(fd, obj.clone());
                        }
                        Reply::Bpf(outcome.result)
                    }
                    Err(e) => Reply::Error(e),
                })
            }
            Request::Close { fd } => {
                if self.objects.remove(&fd).is_some() {
                    sys::close(fd);
                }
                None
            }
            Request::Read { fd, len } => {
                Some(Reply::Read(match self.objects.get(&fd).map(|o| &o.kind) {
                    Some(ObjectKind::Iter) => sys::read(fd, len.min(MAX_READ) as usize),
                    Some(_) => Err(libc::EINVAL),
                    None => Err(libc::EBADF),
                }))
            }
            Request::File(FileOp::Fdinfo { fd }) => Some(Reply::File(if self.owns(fd) {
                std::fs::read(format!("/proc/self/fdinfo/{fd}"))
                    .map(message::FileReply::Data)
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
            } else {
                Err(libc::EBADF)
            })),
            Request::File(op) => {
                let result = files::execute(&op);
                log::debug(format_args!(
                    "session {}: file {} -> {}",
                    self.id,
                    files::op_path(&op).unwrap_or("?"),
                    match &result {
                        Ok(_) => "ok".to_string(),
                        Err(e) => format!("errno {e}"),
                    }
                ));
                if result == Err(libc::EACCES) {
                    log::info(format_args!(
                        "session {}: refused {:?} (not a kernel-describing file)",
                        self.id,
                        files::op_path(&op).unwrap_or("?")
                    ));
                }
                Some(Reply::File(result))
            }
            Request::Ping(payload) => Some(Reply::Pong(payload)),
        }
    }

    /// Closes every guest fd still held.
    pub fn close_all(&mut self) {
        for (fd, _) in self.objects.drain() {
            sys::close(fd);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let n = self.objects.len();
        self.close_all();
        log::debug(format_args!(
            "session {}: closed {n} guest objects",
            self.id
        ));
    }
}

/// Runs one connection from handshake to end.
pub async fn serve(
    stream: ServerStream,
    peer: String,
    keys: Arc<Vec<Psk>>,
    facts: Arc<Facts>,
    mut shutdown: watch::Receiver<bool>,
    id: u64,
) {
    let (mut chan, key_index) = match AsyncChannel::server(stream, &keys).await {
        Ok(ok) => ok,
        Err(e) => {
            log::info(format_args!("session {id} from {peer}: {e}"));
            return;
        }
    };
    log::info(format_args!(
        "session {id} from {peer}: opened (key #{key_index})"
    ));
    let mut session = Session::new(id, facts.possible_cpus);
    let welcome = message::encode(&Reply::Welcome((*facts).clone())).expect("facts encode");
    if let Err(e) = chan.send(&welcome).await {
        log::info(format_args!("session {id}: {e}"));
        return;
    }
    let reason = loop {
        let frame = tokio::select! {
            r = chan.recv() => r,
            _ = shutdown.changed() => break "proxy shutting down".to_string(),
        };
        let bytes = match frame {
            Ok(Some(b)) => b,
            Ok(None) => break "client closed the connection".to_string(),
            Err(e) => break e.to_string(),
        };
        let reply = match message::decode::<Request>(&bytes) {
            Ok(req) if Session::is_slow(&req) => {
                tokio::task::block_in_place(|| session.handle(req))
            }
            Ok(req) => session.handle(req),
            Err(e) => Some(Reply::Error(ErrorReply {
                errno: libc::EPROTO,
                message: e.to_string(),
            })),
        };
        if let Some(reply) = reply {
            let bytes = match message::encode(&reply) {
                Ok(b) => b,
                Err(e) => break format!("cannot encode a reply: {e}"),
            };
            if let Err(e) = chan.send(&bytes).await {
                break e.to_string();
            }
        }
    };
    log::info(format_args!(
        "session {id}: ended ({reason}), closing {} guest objects",
        session.object_count()
    ));
}
