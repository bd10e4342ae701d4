//! A one-line hint for BCC's Python tools (Debian's `bpfcc-tools`) when
//! this host lacks the guest kernel's headers.
//!
//! BCC compiles its programs on the host, with clang, against
//! `/lib/modules/$(uname -r)/build`. Under the preload `uname` is the
//! guest's, so the headers BCC looks for are the guest kernel's; without
//! them every BCC tool stops with a message about the *host's* kernel
//! headers that does not say which package to install. So before `exec`
//! of a BCC tool, `telebpf exec` asks the proxy for the guest's release (a
//! session's Welcome carries it) and, when its `build` directory is
//! missing here, says in one line which package provides it. The tool
//! still runs, and then fails with its own error.
//!
//! Only a BCC tool costs a session: a program is one when it is a `#!`
//! script run by Python (or Python itself given such a script) whose text
//! imports `bcc` within its first [`SCAN`] bytes. Any other program costs
//! a `PATH` lookup (as `exec`'s) and one read of at most 256 bytes, no
//! session. A tool that sets
//! `BCC_KERNEL_SOURCE` (BCC then uses that tree instead) gets no hint, nor
//! does one whose proxy cannot be reached (the preload reports that).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use telebpf_client::{Connection, Settings};

/// How much of a script is searched for an import of `bcc` (Debian's
/// tools import it within their first few KiB).
const SCAN: u64 = 64 << 10;

/// How long the hint may wait for the proxy's Welcome.
const FACTS_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable with which BCC takes its kernel tree from
/// elsewhere than `/lib/modules/<release>/build`.
const BCC_KERNEL_SOURCE: &str = "BCC_KERNEL_SOURCE";

/// Prints the hint to stderr when `program args` is a BCC tool and the
/// guest's headers are missing on this host (see the module doc).
pub fn hint_missing_headers(target: &str, key_file: &Path, program: &OsStr, args: &[OsString]) {
    if std::env::var_os(BCC_KERNEL_SOURCE).is_some() || !is_bcc_tool(program, args) {
        return;
    }
    let Some(release) = guest_release(target, key_file) else {
        return;
    };
    if let Some(line) = missing_headers(&release, Path::new("/lib/modules")) {
        eprintln!("telebpf: {line}");
    }
}

/// Whether `program args` runs a BCC Python tool.
fn is_bcc_tool(program: &OsStr, args: &[OsString]) -> bool {
    let Some(path) = crate::program::resolve(program) else {
        return false;
    };
    if is_python(&path) {
        // `python3 [options] SCRIPT …`: the first word that is no option.
        return args
            .iter()
            .find(|a| !a.as_encoded_bytes().starts_with(b"-"))
            .is_some_and(|script| imports_bcc(Path::new(script)));
    }
    is_python_script(&path) && imports_bcc(&path)
}

/// Whether `path` names a Python interpreter (`python3`, `python3.11`).
fn is_python(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"python"))
}

/// Whether `path` is a `#!` script whose interpreter is Python.
fn is_python_script(path: &Path) -> bool {
    let mut head = Vec::new();
    let read = File::open(path).and_then(|f| {
        f.take(crate::program::SHEBANG_MAX as u64)
            .read_to_end(&mut head)
    });
    read.is_ok()
        && crate::program::shebang(&head).is_some_and(|interpreter| is_python(&interpreter))
}

/// Whether the first [`SCAN`] bytes of `path` import `bcc`.
fn imports_bcc(path: &Path) -> bool {
    let mut text = Vec::new();
    if File::open(path)
        .and_then(|f| f.take(SCAN).read_to_end(&mut text))
        .is_err()
    {
        return false;
    }
    text.split(|&b| b == b'\n').any(|line| {
        let line = line.trim_ascii_start();
        line.starts_with(b"from bcc import")
            || line.starts_with(b"from bcc.")
            || line == b"import bcc"
            || line.starts_with(b"import bcc ")
            || line.starts_with(b"import bcc,")
    })
}

/// The guest's release, from the Welcome of a session that ends at once;
/// `None` if the proxy cannot be reached.
fn guest_release(target: &str, key_file: &Path) -> Option<String> {
    let settings = Settings::new(target, PathBuf::from(key_file)).ok()?;
    let conn = Connection::open_within(&settings, FACTS_TIMEOUT).ok()?;
    Some(conn.facts().uname[2].clone())
}

/// The hint when `<modules>/<release>/build` is missing, else `None`. A
/// release that could not be a directory name (the proxy's word is not
/// trusted to build a path) gets no hint.
fn missing_headers(release: &str, modules: &Path) -> Option<String> {
    let plain = !release.is_empty()
        && release != "."
        && release != ".."
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    if !plain {
        return None;
    }
    let build = modules.join(release).join("build");
    // `exists` follows the symlink Debian's package makes: a dangling
    // `build` is missing headers too.
    if build.exists() {
        return None;
    }
    Some(format!(
        "BCC compiles against the guest kernel's headers and {} is missing: \
         install linux-headers-{release} (Debian's package) on this host",
        build.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("telebpf-bcc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn recognises_bcc_tools() {
        let dir = temp_dir("tools");
        let tool = script(
            &dir,
            "execsnoop-bpfcc",
            "#! /usr/bin/python3\n# comment\nfrom __future__ import print_function\nfrom bcc import BPF\n",
        );
        let env_tool = script(&dir, "t2", "#!/usr/bin/env python3\nimport bcc\n");
        let other = script(
            &dir,
            "other",
            "#!/usr/bin/python3\nimport os\n# from bcc import BPF? no\n",
        );
        let shell = script(&dir, "sh-tool", "#!/bin/sh\nfrom bcc import BPF\n");
        assert!(is_bcc_tool(tool.as_os_str(), &[]));
        assert!(is_bcc_tool(env_tool.as_os_str(), &[]));
        assert!(!is_bcc_tool(other.as_os_str(), &[]));
        assert!(!is_bcc_tool(shell.as_os_str(), &[]));
        // Python given the script.
        let python = script(&dir, "python3", "");
        assert!(is_bcc_tool(
            python.as_os_str(),
            &["-u".into(), tool.clone().into_os_string(), "-T".into()]
        ));
        assert!(!is_bcc_tool(python.as_os_str(), &["-c".into()]));
        assert!(!is_bcc_tool(python.as_os_str(), &[other.into_os_string()]));
        // An ELF program, a missing one.
        assert!(!is_bcc_tool(OsStr::new("/bin/true"), &[]));
        assert!(!is_bcc_tool(OsStr::new("/nonexistent/x"), &[]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hints_only_when_the_build_directory_is_missing() {
        let dir = temp_dir("modules");
        std::fs::create_dir_all(dir.join("6.1.0-57-cloud-amd64/build")).unwrap();
        assert_eq!(missing_headers("6.1.0-57-cloud-amd64", &dir), None);
        let hint = missing_headers("6.12.95+deb12-cloud-amd64", &dir).unwrap();
        assert_eq!(
            hint,
            format!(
                "BCC compiles against the guest kernel's headers and \
                 {}/6.12.95+deb12-cloud-amd64/build is missing: install \
                 linux-headers-6.12.95+deb12-cloud-amd64 (Debian's package) on this host",
                dir.display()
            )
        );
        assert!(!hint.contains('\n'));
        // A dangling `build` link is missing headers.
        std::fs::create_dir_all(dir.join("6.18.0")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("6.18.0/build")).unwrap();
        assert!(missing_headers("6.18.0", &dir).is_some());
        // A release that is no plain directory name gets no hint.
        for bad in ["", ".", "..", "../../etc", "6.1 x", "6.1\n"] {
            assert_eq!(missing_headers(bad, &dir), None, "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
