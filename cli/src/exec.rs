//! `telebpf exec`: run a program with the preload library injected, after
//! checking that the preload can reach it ([`crate::program`]).

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

/// The environment that makes a child forward to `target`.
pub fn preload_env(target: &str, key_file: &Path) -> Result<Vec<(String, OsString)>, CliError> {
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
    // Fail here, with a clear message, rather than inside the tool.
    telebpf_protocol::key::Psk::from_file(&key_file)?;
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

/// Replaces this process with `command`, so its exit status is CMD's.
pub fn exec(target: &str, key_file: &Path, command: &[OsString]) -> Result<(), CliError> {
    let env = preload_env(target, key_file)?;
    let (program, args) = command.split_first().ok_or(CliError::NoCommand)?;
    // A program the preload cannot reach would act on the host kernel
    // while the user believes it watches the guest: refuse it instead.
    crate::program::check(program)?;
    crate::bcc::hint_missing_headers(target, key_file, program, args);
    let err = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .exec();
    Err(CliError::Run {
        program: program.to_string_lossy().into_owned(),
        source: err,
    })
}
