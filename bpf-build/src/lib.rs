//! Compiles eBPF C with clang for the build scripts of the crates that
//! embed eBPF objects (`cli`, `collectors`, `tests`), so all of them build
//! with the same flags.

use std::env;
use std::path::Path;
use std::process::Command;

/// The clang to use: `$CLANG`, else `clang`. Build scripts should print
/// `cargo:rerun-if-env-changed=CLANG`.
pub fn clang() -> String {
    env::var("CLANG").unwrap_or_else(|_| "clang".to_string())
}

/// `clang -O2 -g -Wall -target bpf -D__TARGET_ARCH_<arch>
/// -I/usr/include/<arch>-linux-gnu [-I<include>…] -c SRC -o OBJ`, for the
/// architecture cargo builds for; the error carries clang's stderr.
pub fn compile(clang: &str, src: &Path, includes: &[&Path], obj: &Path) -> Result<(), String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    let bpf_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-D__TARGET_ARCH_{bpf_arch}"))
        .arg(format!("-I/usr/include/{arch}-linux-gnu"));
    for include in includes {
        cmd.arg(format!("-I{}", include.display()));
    }
    run_tool(cmd.arg("-c").arg(src).arg("-o").arg(obj), clang, "clang").map(drop)
}

/// Runs `cmd` (the tool `name`, from the apt package `package`) and returns
/// its stdout; the error carries its stderr.
pub fn run_tool(cmd: &mut Command, name: &str, package: &str) -> Result<Vec<u8>, String> {
    let output = cmd.output().map_err(|e| {
        format!("cannot run `{name}` (install {package}, see scripts/setup.sh): {e}")
    })?;
    if !output.status.success() {
        return Err(format!(
            "`{name}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

/// `llvm-strip -g OBJ` (`$LLVM_STRIP`, else `llvm-strip`): drops the DWARF
/// sections clang's `-g` also emits, keeping `.BTF` and `.BTF.ext`, which
/// are all libbpf needs (CO-RE relocations, line info). A collector object
/// travels to the proxy on its first run: stripped, ~75 KiB instead of
/// ~700 KiB. Build scripts should print `cargo:rerun-if-env-changed=LLVM_STRIP`.
pub fn strip_debug(obj: &Path) -> Result<(), String> {
    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".to_string());
    run_tool(Command::new(&strip).arg("-g").arg(obj), &strip, "llvm").map(drop)
}
