//! The tools of issue 15's matrix that `LD_PRELOAD` cannot reach, built in
//! the repository, offline, from Debian's packages and the registry cache
//! `cargo build` already filled:
//!
//! * [`Tool::StaticC`]: `tests/c/matrix-tool.c`, a libbpf program linked
//!   `cc -static … -lbpf -lelf -lz` against Debian's `libbpf-dev`, with a
//!   `bpftool gen skeleton` of `examples/ringwatch`'s program embedded;
//! * [`Tool::StaticRust`]: the libbpf-rs example `examples/ringwatch`
//!   linked statically with glibc (`-C target-feature=+crt-static`, a
//!   static-pie), in its own target directory so that the normal build is
//!   not disturbed;
//! * [`Tool::Go`]: `tests/go/matrix-tool`, a cilium/ebpf program built by
//!   Debian's `golang-go` with `GO111MODULE=off` against Debian's
//!   `golang-github-cilium-ebpf-dev` under `/usr/share/gocode` (no module
//!   download), with the same object embedded.
//!
//! All three report the `exec()`s of processes whose comm is a mark given
//! on their command line through a ring buffer, a perf buffer and a `.bss`
//! counter; [`Records::parse`] reads any of their outputs.
//!
//! The C and Go builds take a second or two; they are cached under
//! `<target>/matrix-tools/` by a hash of their inputs, so a test run builds
//! each at most once (and a later run not at all). The Rust build is left to
//! cargo's own freshness check. A missing toolchain is one line naming the
//! Debian package to install (`scripts/setup.sh` installs them all).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{built_object, target_dir, workspace_root};

/// The tools built by this test process, each with its result.
static BUILT: Mutex<Vec<(Tool, BuildResult)>> = Mutex::new(Vec::new());

/// The path of a built tool, or why it did not build (one line).
type BuildResult = Result<PathBuf, String>;

/// Where Debian's `golang-*-dev` packages put their Go sources.
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// A tool of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `tests/c/matrix-tool.c`, statically linked against Debian's libbpf.
    StaticC,
    /// `examples/ringwatch` (libbpf-rs), statically linked with glibc.
    StaticRust,
    /// `tests/go/matrix-tool` (cilium/ebpf 0.9.1, Go 1.19).
    Go,
}

impl Tool {
    /// Every tool, in the order the tests take them.
    pub const ALL: [Tool; 3] = [Tool::StaticC, Tool::StaticRust, Tool::Go];

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::StaticC => "static C libbpf tool",
            Tool::StaticRust => "static libbpf-rs ringwatch",
            Tool::Go => "Go cilium/ebpf tool",
        }
    }

    /// The arguments that make the tool report the execs of `mark` until
    /// each buffer has delivered `count` records (0: until SIGINT/SIGTERM),
    /// giving up after `timeout_ms`.
    pub fn args(self, mark: &str, count: u32, timeout_ms: u32) -> Vec<String> {
        match self {
            Tool::StaticC | Tool::Go => {
                vec![mark.to_string(), count.to_string(), timeout_ms.to_string()]
            }
            // ringwatch has no "until a signal": a count of 0 would end at
            // once, so it waits for (practically) ever instead.
            Tool::StaticRust => vec![
                "--comm".to_string(),
                mark.to_string(),
                "--count".to_string(),
                if count == 0 { u32::MAX } else { count }.to_string(),
                "--timeout-ms".to_string(),
                timeout_ms.to_string(),
            ],
        }
    }

    /// The text the tool prints once its buffers exist and its program is
    /// attached (C and Go tools on stdout, ringwatch on stderr).
    pub fn ready_line(self, mark: &str) -> String {
        match self {
            Tool::StaticC | Tool::Go => format!("ready {mark}\n"),
            Tool::StaticRust => "ringwatch: attached; waiting for".to_string(),
        }
    }

    /// Builds the tool (or finds it built) and returns the binary's path.
    /// Built once per test process; the error is one line.
    pub fn build(self) -> Result<PathBuf, String> {
        // Held across the build: two tests asking at once build once.
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, result)) = built.iter().find(|(t, _)| *t == self) {
            return result.clone();
        }
        let result = match self {
            Tool::StaticC => build_static_c(),
            Tool::StaticRust => build_static_ringwatch(),
            Tool::Go => build_go(),
        }
        .map_err(|e| format!("cannot build the {}: {e}", self.name()));
        built.push((self, result.clone()));
        result
    }
}

/// The cache of the C and Go builds.
fn cache_dir() -> PathBuf {
    target_dir().join("matrix-tools")
}

/// `<cache>/<stem>-<hash of inputs>/`: `Ok(path of binary)` if it holds
/// `binary` already, else builds it with `build` (which gets an empty
/// directory to put `binary` in) and moves it there in one `rename`, so an
/// interrupted build never leaves a half-written binary in the cache; then
/// removes the builds of other inputs.
fn cached(
    stem: &str,
    inputs: &[&[u8]],
    binary: &str,
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let mut h = DefaultHasher::new();
    for input in inputs {
        input.hash(&mut h);
    }
    let dir = cache_dir().join(format!("{stem}-{:016x}", h.finish()));
    let out = dir.join(binary);
    if out.is_file() {
        return Ok(out);
    }
    let work = cache_dir().join(format!("{stem}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    build(&work)?;
    fs::set_permissions(work.join(binary), fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {binary}: {e}"))?;
    if let Err(e) = fs::rename(&work, &dir) {
        // Another test process built it meanwhile: take that one.
        let _ = fs::remove_dir_all(&work);
        if !out.is_file() {
            return Err(format!("rename to {}: {e}", dir.display()));
        }
    }
    // Builds of older inputs are never used again: remove them.
    let current = dir.file_name();
    for entry in fs::read_dir(cache_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let stale = name.to_string_lossy().starts_with(&format!("{stem}-"));
        if stale && Some(name.as_os_str()) != current {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}

/// Runs `cmd` (the tool `name` of Debian's `package`), its stderr in the
/// error on one line.
fn run(cmd: &mut Command, name: &str, package: &str) -> Result<Vec<u8>, String> {
    telebpf_bpf_build::run_tool(cmd, name, package).map_err(|e| e.replace('\n', " | "))
}

/// The object of `examples/ringwatch/src/bpf/ringwatch.bpf.c` (built by
/// build.rs), which all three tools load.
fn ringwatch_object() -> Result<PathBuf, String> {
    let error = env!("TELEBPF_TEST_BPF_ERROR");
    if !error.is_empty() {
        return Err(format!("the eBPF test objects did not build: {error}"));
    }
    Ok(built_object("ringwatch"))
}

/// `bpftool gen skeleton ringwatch.bpf.o name ringwatch > ringwatch.skel.h`, then
/// `cc -static -O2 -Wall -I. -o matrix-tool-static matrix-tool.c -lbpf
/// -lelf -lz`.
fn build_static_c() -> Result<PathBuf, String> {
    let src = workspace_root().join("tests/c/matrix-tool.c");
    let object = ringwatch_object()?;
    let (src_bytes, obj_bytes) = (read(&src)?, read(&object)?);
    let binary = "matrix-tool-static";
    let recipe = b"bpftool gen skeleton; cc -static -O2 -Wall -lbpf -lelf -lz";
    cached("c", &[recipe, &src_bytes, &obj_bytes], binary, |work| {
        let skel = run(
            Command::new("bpftool")
                .args(["gen", "skeleton"])
                .arg(&object)
                .args(["name", "ringwatch"]),
            "bpftool",
            "bpftool",
        )?;
        fs::write(work.join("ringwatch.skel.h"), skel)
            .map_err(|e| format!("write ringwatch.skel.h: {e}"))?;
        run(
            Command::new("cc")
                .args(["-static", "-O2", "-Wall", "-I"])
                .arg(work)
                .arg("-o")
                .arg(work.join(binary))
                .arg(&src)
                .args(["-lbpf", "-lelf", "-lz"]),
            "cc -static",
            "build-essential, libbpf-dev, libelf-dev and zlib1g-dev",
        )
        .map(drop)
    })
}

/// `go build` in a GOPATH of its own (`<work>/gopath/src/telebpf-matrix/`
/// holding `main.go` and the object it embeds) followed by Debian's
/// `/usr/share/gocode`, with modules, the module proxy and cgo off.
fn build_go() -> Result<PathBuf, String> {
    let src = workspace_root().join("tests/go/matrix-tool/main.go");
    let object = ringwatch_object()?;
    let cilium = Path::new(DEBIAN_GOPATH).join("src/github.com/cilium/ebpf");
    if !cilium.is_dir() {
        return Err(format!(
            "{} is missing: install Debian's golang-github-cilium-ebpf-dev (scripts/setup.sh)",
            cilium.display()
        ));
    }
    let version = run(Command::new("go").arg("version"), "go", "golang-go")?;
    let (src_bytes, obj_bytes) = (read(&src)?, read(&object)?);
    let binary = "matrix-tool-go";
    let recipe = b"GO111MODULE=off CGO_ENABLED=0 go build";
    let inputs: [&[u8]; 4] = [recipe, &version, &src_bytes, &obj_bytes];
    cached("go", &inputs, binary, |work| {
        let gopath = work.join("gopath");
        let package = gopath.join("src/telebpf-matrix");
        fs::create_dir_all(&package).map_err(|e| format!("mkdir {}: {e}", package.display()))?;
        fs::write(package.join("main.go"), &src_bytes)
            .and_then(|()| fs::write(package.join("ringwatch.bpf.o"), &obj_bytes))
            .map_err(|e| format!("copy the sources: {e}"))?;
        let result = run(
            Command::new("go")
                .args(["build", "-o"])
                .arg(work.join(binary))
                .arg(".")
                .current_dir(&package)
                .env("GO111MODULE", "off")
                .env("GOPATH", format!("{}:{DEBIAN_GOPATH}", gopath.display()))
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", cache_dir().join("gocache")),
            "go build",
            "golang-go",
        );
        let _ = fs::remove_dir_all(&gopath);
        result.map(drop)
    })
}

/// `cargo build --offline --release -p ringwatch --bin ringwatch --target
/// <arch>-unknown-linux-gnu` with `RUSTFLAGS=-C target-feature=+crt-static`,
/// into `<target>/matrix-static`. An explicit `--target` keeps the flag off
/// the build scripts and proc macros, which run on this machine as usual.
fn build_static_ringwatch() -> Result<PathBuf, String> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target = target_dir().join("matrix-static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--offline", "--release", "-p", "ringwatch"])
        .args(["--bin", "ringwatch", "--target", &triple])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run(&mut cmd, "cargo build (crt-static)", "the Rust toolchain")?;
    let out = target.join(&triple).join("release/ringwatch");
    if !out.is_file() {
        return Err(format!("cargo built no {}", out.display()));
    }
    Ok(out)
}

/// Whether `path` is an ELF file without a program interpreter
/// (`PT_INTERP`), as the kernel would run it: statically linked (a plain
/// static or a static-pie executable).
pub fn is_static_elf(path: &Path) -> Result<bool, String> {
    let bytes = read(path)?;
    // ELF64 little-endian only: the tools are built for this machine.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(format!("{} is not an ELF64 LSB file", path.display()));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(header) = bytes.get(at..at + 4) else {
            return Err(format!(
                "{}: program headers out of the file",
                path.display()
            ));
        };
        if u32::from_le_bytes(header.try_into().expect("4 bytes")) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What one run of a matrix tool reported, from its output (stdout and
/// stderr together are fine: the record lines are on stdout).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    /// `(pid, comm)` of every ring buffer record.
    pub ringbuf: Vec<(u32, String)>,
    /// `(pid, comm)` of every perf buffer record.
    pub perfbuf: Vec<(u32, String)>,
    /// Every reading of the `.bss` counter, in order.
    pub hits: Vec<u64>,
}

impl Records {
    /// Reads the output of `tool`:
    /// `ringbuf|perfbuf COMM pid N` and `bss COMM hits N` (C and Go), or
    /// `ring|perf pid=N comm=COMM` and `bss_count=N` (ringwatch). Other
    /// lines are ignored; a malformed record line is an error.
    pub fn parse(tool: Tool, output: &str) -> Result<Records, String> {
        let mut r = Records::default();
        let bad = |line: &str| format!("malformed line of the {}: {line:?}", tool.name());
        for line in output.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            // (ring buffer?, pid, comm) of a record line, or the counter.
            let record = match (tool, words.as_slice()) {
                (Tool::StaticC | Tool::Go, [kind @ ("ringbuf" | "perfbuf"), comm, "pid", pid]) => {
                    Some((*kind == "ringbuf", *pid, *comm))
                }
                (Tool::StaticRust, [kind @ ("ring" | "perf"), pid, comm]) => Some((
                    *kind == "ring",
                    pid.strip_prefix("pid=").ok_or_else(|| bad(line))?,
                    comm.strip_prefix("comm=").ok_or_else(|| bad(line))?,
                )),
                (Tool::StaticC | Tool::Go, ["bss", _, "hits", n]) => {
                    r.hits.push(n.parse().map_err(|_| bad(line))?);
                    None
                }
                (Tool::StaticRust, [count]) if count.starts_with("bss_count=") => {
                    let n = &count["bss_count=".len()..];
                    r.hits.push(n.parse().map_err(|_| bad(line))?);
                    None
                }
                _ => None,
            };
            if let Some((ring, pid, comm)) = record {
                let pid = pid.parse().map_err(|_| bad(line))?;
                let list = if ring { &mut r.ringbuf } else { &mut r.perfbuf };
                list.push((pid, comm.to_string()));
            }
        }
        Ok(r)
    }

    /// Checks that each buffer delivered at least `count` records, every
    /// one of them an exec of `mark` by one of `marked_pids`, and that the
    /// last reading of the `.bss` counter is at least `count` (the program
    /// counts each exec before it sends it).
    pub fn check(&self, mark: &str, marked_pids: &[u32], count: usize) -> Result<(), String> {
        for (kind, list) in [
            ("ring buffer", &self.ringbuf),
            ("perf buffer", &self.perfbuf),
        ] {
            if list.len() < count {
                return Err(format!(
                    "{} {kind} records, want at least {count}",
                    list.len()
                ));
            }
            if let Some((pid, comm)) = list
                .iter()
                .find(|(pid, comm)| comm != mark || !marked_pids.contains(pid))
            {
                return Err(format!(
                    "{kind} record of pid {pid} comm {comm:?}, not a marked exec \
                     ({mark:?}, pids {marked_pids:?})"
                ));
            }
        }
        match self.hits.last() {
            Some(&n) if n >= count as u64 => Ok(()),
            Some(n) => Err(format!(".bss counter {n}, want at least {count}")),
            None => Err("no reading of the .bss counter".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_c_and_go_output() {
        let out = "ready tbm\nringbuf tbm pid 7\nbss tbm hits 1\nperfbuf tbm pid 7\n\
                   bss tbm hits 1\ndone tbm ringbuf 1 perfbuf 1 hits 1\n";
        let r = Records::parse(Tool::Go, out).expect("parses");
        assert_eq!(r.ringbuf, vec![(7, "tbm".to_string())]);
        assert_eq!(r.perfbuf, vec![(7, "tbm".to_string())]);
        assert_eq!(r.hits, vec![1, 1]);
        assert!(r.check("tbm", &[7], 1).is_ok());
        assert!(r.check("tbm", &[8], 1).unwrap_err().contains("pid 7"));
        assert!(r
            .check("tbm", &[7], 2)
            .unwrap_err()
            .contains("want at least 2"));
        assert!(Records::parse(Tool::StaticC, "ringbuf tbm pid x\n").is_err());
    }

    #[test]
    fn parses_the_ringwatch_output() {
        let out = "ringwatch: attached; waiting for 1 exec(s) of \"tbm\"\n\
                   perf pid=9 comm=tbm\nring pid=9 comm=tbm\nbss_count=2\n";
        let r = Records::parse(Tool::StaticRust, out).expect("parses");
        assert_eq!(r.ringbuf, vec![(9, "tbm".to_string())]);
        assert_eq!(r.perfbuf, vec![(9, "tbm".to_string())]);
        assert_eq!(r.hits, vec![2]);
        assert!(r.check("tbm", &[9], 1).is_ok());
        assert!(Records::parse(Tool::StaticRust, "bss_count=z\n").is_err());
    }

    #[test]
    fn a_missing_counter_is_an_error() {
        let r = Records {
            ringbuf: vec![(1, "m".into())],
            perfbuf: vec![(1, "m".into())],
            hits: Vec::new(),
        };
        assert!(r.check("m", &[1], 1).unwrap_err().contains(".bss"));
    }

    #[test]
    fn this_test_binary_is_not_static() {
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(is_static_elf(&exe), Ok(false));
    }
}
