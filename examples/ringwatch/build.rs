//! Compiles `src/bpf/ringwatch.bpf.c` and `src/bpf/userring.bpf.c` and
//! generates their libbpf-rs skeletons (`$OUT_DIR/<name>.skel.rs`, included
//! by `src/main.rs` and `src/bin/userring.rs`), the way
//! libbpf-rs's own examples do. Needs clang.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// The BPF programs, each with the skeleton file it becomes.
const SOURCES: &[(&str, &str)] = &[
    ("src/bpf/ringwatch.bpf.c", "ringwatch.skel.rs"),
    ("src/bpf/userring.bpf.c", "userring.skel.rs"),
];

fn main() {
    for (src, skel) in SOURCES {
        build(src, skel);
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
}

fn build(src: &str, skel: &str) {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts")).join(skel);
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set");
    // The program uses UAPI headers only (no vmlinux.h): Debian keeps
    // <asm/types.h> under the multiarch include directory.
    let multiarch_include = format!("/usr/include/{arch}-linux-gnu");
    let mut builder = SkeletonBuilder::new();
    builder
        .source(src)
        .clang_args(["-Wall", "-I", multiarch_include.as_str()]);
    if let Some(clang) = env::var_os("CLANG") {
        builder.clang(clang);
    }
    if let Err(e) = builder.build_and_generate(&out) {
        panic!("cannot build the skeleton of {src} (clang is needed, see scripts/setup.sh): {e:#}");
    }
    println!("cargo:rerun-if-changed={src}");
}
