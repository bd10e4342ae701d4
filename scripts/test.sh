#!/usr/bin/env bash
# Runs every check of telebpf (as root, after scripts/setup.sh): formatting
# (Rust and the BPF C), the dependency rules (cargo-deny), clippy, the
# release build, and all tests in two tiers (docs/TESTING.md):
#
# 1. the unit and property tests of every crate, in parallel: everything
#    but the end-to-end suites;
# 2. the end-to-end suites, the integration tests of the `telebpf-tests`
#    package (tests/tests/*.rs: they need root, without it they print SKIP
#    lines), one at a time: they share the kernel's state;
#
# then a bounded run of every fuzz target from its seed corpus
# (scripts/fuzz.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: WARNING: not root, the end-to-end tests will be SKIPPED" >&2
fi

cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

# The BPF C (and its headers) against .clang-format.
mapfile -t c_files < <(find . \( -path ./.git -o -path ./target -o -path ./fuzz/target \) -prune -o \
    -type f \( -name '*.c' -o -name '*.h' \) -print | LC_ALL=C sort)
clang-format --dry-run -Werror "${c_files[@]}"

# Dependencies (deny.toml). Not `advisories`: its database comes from a
# host this check cannot count on reaching (deny.toml says more). The
# libfuzzer-sys licence exception is for fuzz/ only.
cargo deny check -A license-exception-not-encountered licenses bans sources
cargo deny --manifest-path fuzz/Cargo.toml check licenses bans sources

cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
cargo build --release --workspace

# Tier 1: unit and property tests, libtest's default parallelism. The
# e2e package contributes its harness's own unit tests (--lib) only.
cargo test --release --workspace --exclude telebpf-tests
cargo test --release -p telebpf-tests --lib

# Tier 2: the root end-to-end suites, one test at a time.
cargo test --release -p telebpf-tests --test '*' -- --test-threads=1

bash scripts/fuzz.sh
