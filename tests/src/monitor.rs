//! Driving `telebpf monitor` in a test: started as nobody, its events
//! collected as they come, waited for, and checked against the schema.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{say, wait_until, Harness};

/// A running `telebpf monitor`, its events collected as they come.
pub struct Monitor {
    /// The monitor process.
    pub child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// How long [`Monitor::wait`] waits for an event.
    limit: Duration,
}

impl Monitor {
    /// Starts `telebpf monitor --guests FILE ARGS…` as nobody; an event
    /// [`Monitor::wait`] waits for may take up to `limit`.
    pub fn start(h: &Harness, guests: &Path, args: &[&str], limit: Duration) -> Monitor {
        let mut all = vec![
            "monitor".to_string(),
            "--guests".into(),
            guests.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = h.nobody_command(&h.dir().join("telebpf"), &all);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start telebpf monitor");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Monitor {
            child,
            lines,
            limit,
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The first event after line `from` that `pred` accepts, with when it
    /// arrived and its index.
    pub fn wait(
        &self,
        from: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (usize, Instant, Value) {
        wait_until(self.limit, || {
            let lines = self.lines.lock().unwrap();
            for (i, (at, line)) in lines.iter().enumerate().skip(from) {
                let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
                if pred(&v) {
                    return Ok((i, *at, v));
                }
            }
            Err(format!("no {what} yet"))
        })
        .unwrap_or_else(|e| panic!("{e}; events:\n{}", self.lines().join("\n")))
    }

    /// Stops the monitor; checks every line against the schema.
    pub fn stop(mut self) -> Vec<String> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for the monitor");
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines();
        for l in &lines {
            telebpf_monitor::schema::check(l).unwrap_or_else(|e| panic!("off-schema event: {e}"));
        }
        say(&format!("monitor: {} events, exit {status}", lines.len()));
        lines
    }
}

/// Whether event `v` is `event` of `guest`.
pub fn is(v: &Value, guest: &str, event: &str) -> bool {
    v["guest"] == guest && v["event"] == event
}

impl Drop for Monitor {
    /// A test that fails leaves no monitor running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guests file nobody can read, naming `(name, target, key file)`
/// triples.
pub fn guests_file(h: &Harness, guests: &[(&str, String, &Path)]) -> PathBuf {
    let mut text = String::new();
    for (name, target, key) in guests {
        text.push_str(&format!(
            "[[guest]]\nname = {name:?}\ntarget = {target:?}\nkey-file = {:?}\n\n",
            key.display().to_string()
        ));
    }
    let path = h.nobody_dir().join("guests.toml");
    std::fs::write(&path, text).expect("write guests.toml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}
