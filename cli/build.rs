//! Builds the eBPF object of `telebpf bench ringbuf`
//! (`bpf/bench/ringbuf_bench.bpf.c`) into `OUT_DIR`, where `bench/ringbuf.rs`
//! embeds it with `include_bytes!`.
//!
//! A missing or failing clang does not break the build: an empty object is
//! written instead and the error is passed on as
//! `TELEBPF_BENCH_BPF_ERROR`, which the benchmark reports when it runs
//! (scripts/setup.sh installs clang and libbpf-dev).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest_dir
        .join("..")
        .join("bpf")
        .join("bench")
        .join("ringbuf_bench.bpf.c");
    let obj = out_dir.join("ringbuf_bench.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let error = match compile(&clang, &src, &obj) {
        Ok(()) => String::new(),
        Err(e) => {
            println!(
                "cargo:warning=telebpf-cli: cannot build {}: {e}",
                src.display()
            );
            std::fs::write(&obj, b"").expect("write an empty object to OUT_DIR");
            // One line: cargo:rustc-env values cannot hold newlines.
            format!("{}: {e}", src.display()).replace('\n', " | ")
        }
    };
    println!("cargo:rustc-env=TELEBPF_BENCH_BPF_ERROR={error}");
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
