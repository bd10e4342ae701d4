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
    let output = cmd
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .output()
        .map_err(|e| format!("cannot run `{clang}` (install clang, see scripts/setup.sh): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{clang}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// `llvm-strip -g OBJ` (`$LLVM_STRIP`, else `llvm-strip`): drops the DWARF
/// sections clang's `-g` also emits, keeping `.BTF` and `.BTF.ext`, which
/// are all libbpf needs (CO-RE relocations, line info). A collector object
/// travels to the proxy on its first run: stripped, ~75 KiB instead of
/// ~700 KiB. Build scripts should print `cargo:rerun-if-env-changed=LLVM_STRIP`.
pub fn strip_debug(obj: &Path) -> Result<(), String> {
    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".to_string());
    let output = Command::new(&strip)
        .arg("-g")
        .arg(obj)
        .output()
        .map_err(|e| format!("cannot run `{strip}` (install llvm, see scripts/setup.sh): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{strip}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}
