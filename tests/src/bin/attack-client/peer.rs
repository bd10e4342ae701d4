//! What every attack needs: a session with the proxy of `TELEBPF_TARGET`
//! under the key of `TELEBPF_KEY_FILE`, and one-line output.

use std::io::Write;

use telebpf_client::{Connection, Settings};

/// A session with the proxy the environment names; exits 1 with the
/// error if it cannot be opened.
pub fn connect() -> Connection {
    match Settings::from_env().and_then(|s| Connection::open(&s)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attack-client: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints `key: value` and flushes, so a test reading the output as it
/// comes sees the line at once.
pub fn say(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{key}: {value}");
    let _ = out.flush();
}
