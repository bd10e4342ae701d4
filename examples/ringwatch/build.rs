//! Compiles `src/bpf/ringwatch.bpf.c` and generates its libbpf-rs skeleton
//! (`$OUT_DIR/ringwatch.skel.rs`, included by `src/main.rs`), the way
//! libbpf-rs's own examples do. Needs clang.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/ringwatch.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"))
        .join("ringwatch.skel.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set");
    // The program uses UAPI headers only (no vmlinux.h): Debian keeps
    // <asm/types.h> under the multiarch include directory.
    let multiarch_include = format!("/usr/include/{arch}-linux-gnu");
    let mut builder = SkeletonBuilder::new();
    builder
        .source(SRC)
        .clang_args(["-Wall", "-I", multiarch_include.as_str()]);
    if let Some(clang) = env::var_os("CLANG") {
        builder.clang(clang);
    }
    if let Err(e) = builder.build_and_generate(&out) {
        panic!("cannot build the skeleton of {SRC} (clang is needed, see scripts/setup.sh): {e:#}");
    }
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
}
