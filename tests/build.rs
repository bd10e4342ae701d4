//! Builds the eBPF test objects of `bpf/tests/*.bpf.c`, and the program of
//! `examples/ringwatch` (which the matrix tools of `src/matrix.rs` load
//! too), into `OUT_DIR`.
//!
//! The paths are exposed to the tests as `TELEBPF_TEST_OBJ_<NAME>`
//! (`env!`). A missing or failing clang does not break the workspace build:
//! the error is passed on as `TELEBPF_TEST_BPF_ERROR` and every test that
//! needs an object fails with it (scripts/setup.sh installs clang).

use std::env;
use std::path::PathBuf;

/// The objects, by source path from the workspace root
/// (`<dir>/<stem>.bpf.c`, object `<stem>.bpf.o`).
const OBJECTS: &[&str] = &[
    "bpf/tests/forward_test.bpf.c",
    "bpf/tests/iter_test.bpf.c",
    "bpf/tests/net_test.bpf.c",
    "bpf/tests/cgroup_test.bpf.c",
    "examples/ringwatch/src/bpf/ringwatch.bpf.c",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let root = manifest_dir.join("..");
    let clang = telebpf_bpf_build::clang();

    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("bpf").join("tests").display()
    );
    println!("cargo:rerun-if-env-changed=CLANG");

    let mut errors = Vec::new();
    for path in OBJECTS {
        let src = root.join(path);
        let stem = path
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(".bpf.c"))
            .expect("OBJECTS are <dir>/<stem>.bpf.c");
        let obj = out_dir.join(format!("{stem}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = telebpf_bpf_build::compile(&clang, &src, &[], &obj) {
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
