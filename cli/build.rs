//! Builds the eBPF object of `telebpf bench ringbuf`
//! (`bpf/bench/ringbuf_bench.bpf.c`) into `OUT_DIR`, where `bench/ringbuf.rs`
//! embeds it with `include_bytes!`.
//!
//! A missing or failing clang does not break the build: an empty object is
//! written instead and the error is passed on as
//! `TELEBPF_BENCH_BPF_ERROR`, which the benchmark reports when it runs
//! (scripts/setup.sh installs clang and libbpf-dev).

use std::env;
use std::path::PathBuf;

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
    let clang = telebpf_bpf_build::clang();

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let error = match telebpf_bpf_build::compile(&clang, &src, &[], &obj) {
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
