#!/usr/bin/env bash
# Prepares a FRESH Debian 12 machine (as root) to build and test telebpf:
# Debian packages, the bpffs/tracefs/debugfs mounts, and the release build.
# Idempotent: running it again changes nothing that is already in place.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (apt-get, mounts)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# bpftool, libbpf-tools, bpftrace, bpfcc-tools (BCC's Python tools): the
# unmodified tools the tests drive.
# clang, llvm, libbpf-dev: build the eBPF test objects (bpf/tests/*.bpf.c).
# clang-format: scripts/test.sh checks the format of that C (.clang-format).
# libelf-dev, zlib1g-dev, pkg-config, build-essential: C toolchain and
# libraries for the build. util-linux: setpriv (tests drop to nobody),
# mountpoint. ca-certificates: cargo's HTTPS to crates.io.
# The test guest (tests/vm/guest.sh): qemu-system-x86 (the VM),
# busybox-static and cpio (its initramfs), kmod (depmod for the guest
# kernel's modules), xz-utils and zstd (compressed modules), binutils
# (strip, readelf) comes with build-essential.
# valgrind: `telebpf bench interpose` counts instructions with callgrind
# (no test needs it).
# golang-go, golang-github-cilium-ebpf-dev: the Go tool of the matrix
# (tests/go/matrix-tool, built offline with GO111MODULE=off); the static C
# tool links libbpf-dev's, libelf-dev's and zlib1g-dev's .a files
# (tests/src/matrix.rs).
packages=(
    bpftool libbpf-tools bpftrace bpfcc-tools
    clang llvm libbpf-dev clang-format
    libelf-dev zlib1g-dev pkg-config build-essential
    util-linux procps ca-certificates
    valgrind
    golang-go golang-github-cilium-ebpf-dev
)
vm_packages=(qemu-system-x86 busybox-static cpio kmod xz-utils zstd)

apt_retry() {
    local n
    for n in 1 2 3; do
        if "$@"; then
            return 0
        fi
        echo "setup.sh: '$*' failed (attempt $n), retrying" >&2
        sleep 5
    done
    "$@"
}

apt_retry apt-get update
apt_retry apt-get install -y "${packages[@]}"
# No recommends: qemu-system-x86 would pull in a GUI.
apt_retry apt-get install -y --no-install-recommends "${vm_packages[@]}"

mount_if_needed() {
    local fstype=$1 dir=$2
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
    fi
    if mountpoint -q "$dir"; then
        echo "setup.sh: $dir already mounted"
    else
        mount -t "$fstype" "$fstype" "$dir"
        echo "setup.sh: mounted $fstype at $dir"
    fi
}

mount_if_needed bpf /sys/fs/bpf
mount_if_needed tracefs /sys/kernel/tracing
mount_if_needed debugfs /sys/kernel/debug

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found (neither on PATH nor in \$HOME/.cargo/bin)" >&2
    exit 1
fi

cargo build --release --workspace

# The test guest's virtio-vsock device, in user space (this machine's
# kernel has no vhost-vsock): the version whose hybrid-vsock socket the
# tests use.
vhost_version=0.3.0
if vhost-device-vsock --version 2>/dev/null | grep -qF " $vhost_version"; then
    echo "setup.sh: vhost-device-vsock $vhost_version already installed"
else
    cargo install --locked vhost-device-vsock --version "$vhost_version"
fi

# cargo-deny: scripts/test.sh checks the dependencies' licences, bans and
# sources with it (deny.toml). Pinned, so that a new release's new checks
# never fail an unchanged tree.
deny_version=0.20.2
if cargo deny --version 2>/dev/null | grep -qxF "cargo-deny $deny_version"; then
    echo "setup.sh: cargo-deny $deny_version already installed"
else
    cargo install --locked cargo-deny --version "$deny_version"
fi

# The guests' kernels (Debian 12's cloud kernel, downloaded once), the static
# proxy and the initramfs, cached so that the tests do not download.
bash tests/vm/guest.sh prepare
# The second kernel of the monitor's three-guest test (tests/vm.rs), from
# bookworm-backports.
bash tests/vm/guest.sh prepare --kernel 6.12
# The headers of both guests' kernels, where BCC's tools (which compile on
# this host, against /lib/modules/<guest release>/build) find them. Not
# fatal: without them only the BCC tests fail, and `telebpf exec` names the
# missing package.
for series in 6.1 6.12; do
    bash tests/vm/guest.sh headers --kernel "$series" ||
        echo "setup.sh: the $series guest kernel's headers are missing (BCC's tests need them)" >&2
done

# cargo-fuzz (from crates.io) for the fuzz targets of fuzz/, which
# scripts/fuzz.sh builds with the stable toolchain; build them now too.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build --release --debug-assertions --sanitizer none
