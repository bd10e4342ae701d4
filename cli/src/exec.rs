//! `telebpf exec`: run a program with the preload library injected, after
//! checking that the preload can reach it ([`crate::program`]); a program
//! it cannot reach because it is statically linked or written in Go (or
//! any program, with `--supervise`) runs under the seccomp supervisor
//! (`telebpf-supervisor`) instead, never on the host kernel unserved.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use telebpf_client::{ENV_KEY_FILE, ENV_TARGET};

use crate::error::CliError;

/// Environment variable that overrides where the preload library is.
pub const ENV_PRELOAD: &str = "TELEBPF_PRELOAD";

/// The preload library: `$TELEBPF_PRELOAD`, else beside this executable.
pub fn preload_path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os(ENV_PRELOAD) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(CliError::OwnExecutable)?;
    let lib = exe.with_file_name("libtelebpf_preload.so");
    if lib.exists() {
        Ok(lib)
    } else {
        Err(CliError::NoPreload(lib))
    }
}

/// Checks `target` and the key file here, with a clear message, rather
/// than inside the tool; returns the key file's absolute path.
fn checked(target: &str, key_file: &Path) -> Result<PathBuf, CliError> {
    target
        .parse::<telebpf_protocol::address::Address>()
        .map_err(|source| CliError::BadTarget {
            target: target.to_string(),
            source,
        })?;
    let key_file = std::path::absolute(key_file).map_err(|source| CliError::KeyPath {
        path: key_file.to_path_buf(),
        source,
    })?;
    telebpf_protocol::key::Psk::from_file(&key_file)?;
    Ok(key_file)
}

/// The environment that makes a child forward to `target`.
pub fn preload_env(target: &str, key_file: &Path) -> Result<Vec<(String, OsString)>, CliError> {
    let key_file = checked(target, key_file)?;
    let lib = preload_path()?;
    let mut preload = OsString::from(&lib);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(" ");
        preload.push(existing);
    }
    Ok(vec![
        ("LD_PRELOAD".into(), preload),
        (ENV_TARGET.into(), target.into()),
        (ENV_KEY_FILE.into(), key_file.into_os_string()),
    ])
}

/// Runs `command` against the guest, so that this process's exit status
/// is CMD's: replaced by it under the preload, or supervising it.
pub fn exec(
    target: &str,
    key_file: &Path,
    command: &[OsString],
    supervise: bool,
) -> Result<(), CliError> {
    use crate::program::Unreachable;
    let (program, args) = command.split_first().ok_or(CliError::NoCommand)?;
    // A program the preload cannot reach would act on the host kernel
    // while the user believes it watches the guest: the supervisor serves
    // it from outside; what neither can serve is refused.
    match crate::program::check(program) {
        Ok(()) if !supervise => {}
        Ok(()) | Err(Unreachable::Static(_)) | Err(Unreachable::Go(_)) => {
            let code = supervised(target, key_file, program, args)?;
            std::process::exit(code);
        }
        Err(e) => return Err(e.into()),
    }
    crate::bcc::hint_missing_headers(target, key_file, program, args);
    let env = preload_env(target, key_file)?;
    let err = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .exec();
    Err(CliError::Run {
        program: program.to_string_lossy().into_owned(),
        source: err,
    })
}

/// Runs `program` under the seccomp supervisor, which forwards from this
/// process (the target and key are set in our own environment, where the
/// host library looks for them); returns its exit status.
fn supervised(
    target: &str,
    key_file: &Path,
    program: &OsString,
    args: &[OsString],
) -> Result<i32, CliError> {
    let key_file = checked(target, key_file)?;
    // Still one thread: nothing reads the environment concurrently.
    std::env::set_var(ENV_TARGET, target);
    std::env::set_var(ENV_KEY_FILE, &key_file);
    // The program itself must not also load our preload (it would serve
    // the same calls twice); other preloads it was given stay (`stdbuf`'s,
    // a sanitizer's).
    if let Some(list) = std::env::var_os("LD_PRELOAD") {
        let kept = without_our_preload(&list);
        if kept.is_empty() {
            std::env::remove_var("LD_PRELOAD");
        } else {
            std::env::set_var("LD_PRELOAD", kept);
        }
    }
    Ok(telebpf_supervisor::run(program, args, &[])?)
}

/// `LD_PRELOAD`'s list (separated by spaces or colons, as the loader reads
/// it) without `libtelebpf_preload.so`.
fn without_our_preload(list: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let ours = |entry: &[u8]| entry.ends_with(b"libtelebpf_preload.so");
    let kept: Vec<&[u8]> = list
        .as_bytes()
        .split(|&b| b == b' ' || b == b':')
        .filter(|e| !e.is_empty() && !ours(e))
        .collect();
    OsString::from(std::ffi::OsStr::from_bytes(&kept.join(&b' ')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_preload_leaves_the_list() {
        let of = |s: &str| without_our_preload(std::ffi::OsStr::new(s));
        assert_eq!(
            of("/usr/libexec/coreutils/libstdbuf.so"),
            "/usr/libexec/coreutils/libstdbuf.so"
        );
        assert_eq!(
            of("/x/libtelebpf_preload.so /y/libstdbuf.so"),
            "/y/libstdbuf.so"
        );
        assert_eq!(of("/a.so:/x/libtelebpf_preload.so:/b.so"), "/a.so /b.so");
        assert_eq!(of("/x/libtelebpf_preload.so"), "");
    }
}
