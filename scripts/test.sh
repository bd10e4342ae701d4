#!/usr/bin/env bash
# Runs every check of telebpf (as root, after scripts/setup.sh): formatting,
# clippy, the release build, and all tests — the unit and property tests of
# every crate, the end-to-end tests of tests/ (which need root; without it
# they print SKIP lines), and a bounded run of every fuzz target from its
# seed corpus (scripts/fuzz.sh). The e2e tests share kernel state, hence one
# test thread.
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
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
cargo build --release --workspace
cargo test --release --workspace -- --test-threads=1
bash scripts/fuzz.sh
