//! `telebpf-proxy --echo ADDR`: a plain echo beside the proxy, the raw
//! base of `telebpf bench rtt` over the same transport.
//!
//! The test guest (`tests/vm/init.sh`) runs it on a vsock port next to the
//! proxy's, so the bench can set a forwarded call against a bare 64-byte
//! round trip through the same guest, vsock device and muxer. It is a mode of
//! this binary because that binary is already built static for the guest
//! and listens on vsock through the same [`Listener`]; it shares nothing
//! else with the proxy: no key, no policy, no kernel access, and it serves
//! at most [`MAX_CONNECTIONS`] connections at a time. Anyone who reaches
//! the port may connect, so it first drops every capability, and a peer
//! that goes quiet for [`IDLE`] (or stops reading for as long) loses its
//! connection and its slot. The wire and how the
//! echo waits are in [`telebpf_protocol::echo`].

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telebpf_protocol::{Address, Listener};

use crate::server::ServerError;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a connection may send nothing (or read nothing of its echo)
/// before it is closed: long beside a bench's pause between round trips.
pub const IDLE: Duration = Duration::from_secs(60);

/// Pause after a failed `accept` (out of fds, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Listens on `listen` and echoes every connection on a thread of its own,
/// spinning up to `spin` for [`telebpf_protocol::echo::Wait::Spin`]
/// clients. Returns only on a listening error.
/// `addr` and `spin` come from [`crate::Config::new`], so the address
/// forms and `TELEBPF_PROXY_SPIN_US` read as the proxy's.
pub fn run(addr: &Address, spin: Duration) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    crate::caps::drop_all().map_err(ServerError::Caps)?;
    runtime.block_on(async {
        // Every way out of the loop is an error.
        let listen_err = |source| ServerError::Listen {
            addr: addr.clone(),
            source,
        };
        let listener = Listener::bind(addr).await.map_err(listen_err)?;
        crate::log::info(format_args!("echo listening on {addr}"));
        let live = Arc::new(AtomicUsize::new(0));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of fds or a connection gone before it was
                    // accepted: the echo goes on, as the proxy does.
                    crate::log::limited("accept", format_args!("echo: accept: {e}"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                continue;
            }
            let Ok(stream) = stream.into_blocking() else {
                continue;
            };
            if crate::limits::set_socket_timeouts(stream.as_raw_fd(), IDLE, IDLE).is_err() {
                continue;
            }
            live.fetch_add(1, Ordering::Relaxed);
            let mine = live.clone();
            let spawned = std::thread::Builder::new()
                .name("echo".into())
                .spawn(move || {
                    if let Err(e) = telebpf_protocol::echo::serve(stream, spin) {
                        crate::log::info(format_args!("echo {peer}: {e}"));
                    }
                    mine.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    })
}
