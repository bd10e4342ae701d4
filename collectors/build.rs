//! Builds the collectors (`bpf/*.bpf.c`) into `OUT_DIR` with clang, against a
//! `vmlinux.h` that bpftool dumps from this machine's BTF. The objects are
//! CO-RE: libbpf relocates every field access against the BTF of the kernel
//! they are loaded into, so the guest's kernel need not be this one.
//!
//! The objects are stripped of DWARF (BTF stays): each travels to the proxy
//! on its first run.
//!
//! A missing clang, llvm-strip or bpftool fails the build with the reason: without the
//! collectors there is nothing to run (scripts/setup.sh installs both).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECTS: [&str; 5] = ["processes", "modules", "tcp", "listeners", "reader"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let bpf_dir = manifest_dir.join("bpf");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LLVM_STRIP");
    println!("cargo:rerun-if-env-changed=TELEBPF_VMLINUX_BTF");

    let vmlinux_h = out_dir.join("vmlinux.h");
    if let Err(e) = dump_vmlinux_h(&vmlinux_h) {
        panic!("telebpf-collectors: cannot write vmlinux.h: {e}");
    }
    let clang = telebpf_bpf_build::clang();
    for name in OBJECTS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        let obj = out_dir.join(format!("{name}.bpf.o"));
        if let Err(e) = telebpf_bpf_build::compile(&clang, &src, &[&out_dir], &obj)
            .and_then(|()| telebpf_bpf_build::strip_debug(&obj))
        {
            panic!("telebpf-collectors: cannot build {}: {e}", src.display());
        }
    }
}

/// `bpftool btf dump file <BTF> format c`: the kernel types the collectors
/// name. Any kernel's BTF will do; field offsets are relocated at load time.
fn dump_vmlinux_h(out: &Path) -> Result<(), String> {
    let btf = env::var("TELEBPF_VMLINUX_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    let header = telebpf_bpf_build::run_tool(
        Command::new("bpftool").args(["btf", "dump", "file", &btf, "format", "c"]),
        "bpftool",
        "bpftool",
    )?;
    std::fs::write(out, header).map_err(|e| e.to_string())
}
