#!/usr/bin/env bash
# Builds telebpf-proxy as a fully static binary for the test guest (which
# has no libc of its own) and prints its path.
#
# Why this way: the proxy links libbpf (libbpf-rs, crate telebpf-collectors;
# libbpf-sys builds libbpf from its vendored source), and libbpf needs
# libelf and zlib. The glibc target with `+crt-static` links Debian's own
# static libelf.a and libz.a (libelf-dev, zlib1g-dev) with no change to the
# workspace's features. The musl target would need libelf built for musl
# (libbpf-sys's vendored elfutils, which needs autotools and does not build
# cleanly against musl). Nothing the proxy does needs glibc's NSS or
# dlopen, which are what a static glibc cannot do.
#
# It must not disturb the normal release build: `--target` and a target dir
# of its own keep its artifacts apart.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $target_dir in
/*) ;;
*) target_dir=$root/$target_dir ;;
esac
target_dir=$target_dir/vm-guest

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

(
    cd "$root"
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked -p telebpf-proxy \
        --target "$target" --target-dir "$target_dir" >&2
)

bin=$target_dir/$target/release/telebpf-proxy
# A static executable has no program interpreter.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "build-proxy.sh: $bin is not static" >&2
    exit 1
fi
echo "$bin"
