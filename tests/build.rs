//! Builds the eBPF test objects of `bpf/tests/*.bpf.c` into `OUT_DIR`.
//!
//! The paths are exposed to the tests as `TELEBPF_TEST_OBJ_<NAME>`
//! (`env!`). A missing or failing clang does not break the workspace build:
//! the error is passed on as `TELEBPF_TEST_BPF_ERROR` and every test that
//! needs an object fails with it (scripts/setup.sh installs clang).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The objects, by file stem under `bpf/tests/` (`<stem>.bpf.c`).
const OBJECTS: &[&str] = &["forward_test", "iter_test"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src_dir = manifest_dir.join("..").join("bpf").join("tests");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let mut errors = Vec::new();
    for stem in OBJECTS {
        let src = src_dir.join(format!("{stem}.bpf.c"));
        let obj = out_dir.join(format!("{stem}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = compile(&clang, &src, &obj) {
            println!(
                "cargo:warning=telebpf-tests: cannot build {}: {e}",
                src.display()
            );
            errors.push(format!("{}: {e}", src.display()));
        }
        println!(
            "cargo:rustc-env=TELEBPF_TEST_OBJ_{}={}",
            stem.to_uppercase(),
            obj.display()
        );
    }
    // One line: cargo:rustc-env values cannot hold newlines.
    let error = errors.join("; ").replace('\n', " | ");
    println!("cargo:rustc-env=TELEBPF_TEST_BPF_ERROR={error}");
}

/// `clang -O2 -g -target bpf -I/usr/include/<arch>-linux-gnu -c SRC -o OBJ`.
fn compile(clang: &str, src: &Path, obj: &Path) -> Result<(), String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    let multiarch_include = format!("/usr/include/{arch}-linux-gnu");
    let output = Command::new(clang)
        .args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-I{multiarch_include}"))
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
