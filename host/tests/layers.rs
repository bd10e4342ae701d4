//! The host crate's modules form a stack, and the crate sits where the
//! workspace's layers put it.
//!
//! Reads the crate's own sources: every `crate::<module>` a module names
//! outside comments (in `use` lines, grouped `use crate::{a, b}` and inline
//! paths) is an edge, and each edge must go down the stack declared here
//! (which `lib.rs`'s doc lists in the same order). A new module goes into
//! [`STACK`] at the height it belongs; an edge upwards is a circle in the
//! making and fails with both names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top first: a module may use only modules after it.
const STACK: &[&str] = &[
    "mmap", "rings", "mapsync", "perf", "netlink", "cgroup", "bpf", "vfs", "objects", "state",
    "program", "watchdog", "fdtable", "memory", "sys", "error", "lost", "facts",
];

/// The workspace crates this crate may depend on (it sits above them and
/// below `telebpf-preload`).
const BELOW: &[&str] = &[
    "telebpf-abi",
    "telebpf-protocol",
    "telebpf-client",
    "telebpf-marshal",
    "ringbuf-mirror",
];

/// The code of a source file without its comments (line comments, doc
/// comments and the test module's `super::` are irrelevant to layering).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules `code` names through `crate::`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The crate's modules (`src/*.rs` but `lib.rs`) with their paths.
fn modules() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    std::fs::read_dir(&src)
        .expect("src/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let stem = path.file_stem().expect("name").to_string_lossy();
            (stem.to_string(), path)
        })
        .filter(|(module, _)| module != "lib")
        .collect()
}

fn edges() -> Vec<(String, String)> {
    let mut edges = Vec::new();
    for (module, path) in modules() {
        let code = code_of(&std::fs::read_to_string(&path).expect("readable"));
        for used in uses(&code) {
            if used != module {
                edges.push((module.clone(), used));
            }
        }
    }
    edges.sort();
    edges
}

#[test]
fn every_module_is_in_the_stack() {
    for (module, _) in modules() {
        assert!(
            STACK.contains(&module.as_str()),
            "src/{module}.rs is not in STACK: give it its place"
        );
    }
}

#[test]
fn modules_only_use_modules_below_them() {
    let height = |m: &str| STACK.iter().position(|s| *s == m);
    let edges = edges();
    for (from, to) in &edges {
        let (Some(f), Some(t)) = (height(from), height(to)) else {
            panic!("{from} uses crate::{to}, which is not a module in STACK");
        };
        assert!(
            f < t,
            "{from} uses {to}, which sits above it in the stack: an import circle in the making"
        );
        println!("{from} -> {to}");
    }
    assert!(edges.len() > 10, "the scan found the imports: {edges:?}");
}

#[test]
fn the_crate_depends_only_on_lower_layers() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    for line in manifest.lines() {
        if let Some((name, _)) = line.split_once("= { path") {
            let name = name.trim();
            assert!(
                BELOW.contains(&name),
                "telebpf-host depends on {name}, which is not below it"
            );
        }
    }
}

#[test]
fn the_scan_reads_grouped_and_inline_paths() {
    let code = code_of(
        "use crate::error::{Error, Result};\nuse crate::{lost, mapsync};\n\
         let x = crate::sys::inode_of(3); // crate::rings in a comment\n",
    );
    let found: Vec<String> = uses(&code).into_iter().collect();
    assert_eq!(found, ["error", "lost", "mapsync", "sys"]);
}
