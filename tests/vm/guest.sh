#!/usr/bin/env bash
# A real guest for telebpf: telebpf-proxy inside a QEMU VM that runs another
# kernel (Debian 12's cloud kernel), reached from the host over virtio-vsock.
#
#   tests/vm/guest.sh up DIR [--kernel 6.1|6.12]   boot a guest, return when its proxy listens
#   tests/vm/guest.sh down DIR                     stop what `up DIR` started
#   tests/vm/guest.sh prepare [--kernel 6.1|6.12]  fill the cache only (scripts/setup.sh)
#   tests/vm/guest.sh headers [--kernel 6.1|6.12]  the guest kernel's headers on this host, for BCC
#
# `up` leaves in DIR:
#   vm.vsock      the hybrid-vsock Unix socket: `telebpf exec --target
#                 vsock-uds:DIR/vm.vsock:5000 --key-file DIR/key -- bpftool prog list`
#   key           the fresh pre-shared key the guest's proxy was started with
#   guest-facts   lines release=, cpus=, btf_md5=, modules=, echo_port= (the
#                 raw echo of `telebpf bench rtt`), written by the guest
#   console.log   the guest's console (kernel, init, proxy log)
#   qemu.log, vsockd.log, *.pid   the host-side processes
#
# How (see README, "Real guest over vsock"):
# * no KVM here, so QEMU emulates (`-accel tcg -cpu max`), one vCPU online
#   and two more possible than the host has (`-smp 1,maxcpus=N`), so the
#   guest's possible-CPU count differs from the host's;
# * the vsock device is user space: vhost-device-vsock (cargo install)
#   behind QEMU's vhost-user-vsock-pci, which needs the guest's memory in a
#   shared memfd;
# * the guest is a busybox-static initramfs (tests/vm/init.sh as /init) with
#   the kernel's virtio/vsock modules and a static telebpf-proxy
#   (tests/vm/build-proxy.sh); the key reaches it in a small cpio appended
#   to the initramfs at each `up` (not on the kernel command line);
# * the guest writes its facts and its readiness to a second serial port,
#   which QEMU writes to DIR/facts.serial.
#
# Environment:
#   TELEBPF_VM_CACHE      cache dir (default /var/cache/telebpf-vm as root,
#                         else ~/.cache/telebpf-vm): kernels, initramfs, apt lists
#   TELEBPF_BIN_DIR       where `telebpf` is (default <checkout>/target/release)
#   TELEBPF_GUEST_PROXY   a static telebpf-proxy to use instead of building one
#   TELEBPF_VM_PROXY_LOG  TELEBPF_LOG of the guest's proxy (e.g. debug)
#   TELEBPF_VM_PROXY_SPIN_US  TELEBPF_PROXY_SPIN_US of the guest's proxy
#   TELEBPF_VM_BOOT_TIMEOUT  seconds `up` waits for the proxy (default 300)
#   TELEBPF_VM_MEM_MB     guest memory (default 1024)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -eq 0 ]; then
    cache=${TELEBPF_VM_CACHE:-/var/cache/telebpf-vm}
else
    cache=${TELEBPF_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telebpf-vm}
fi
vsock_port=5000
guest_cid=3
mem_mb=${TELEBPF_VM_MEM_MB:-1024}
boot_timeout=${TELEBPF_VM_BOOT_TIMEOUT:-300}

die() {
    echo "guest.sh: $*" >&2
    exit 1
}
note() { echo "guest.sh: $*" >&2; }

usage() {
    sed -n '5,8p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
    exit 2
}

# ---------------------------------------------------------------- kernel --

# Prints the directory of this machine's Debian mirror (the URI apt uses for
# bookworm/main), so that backports come from the same place.
debian_mirror() {
    apt-cache policy | awk '$3 == "bookworm/main" && $4 == "amd64" { print $2; exit }'
}

# apt options of a private package list for bookworm-backports, kept in the
# cache (the machine's own apt configuration is not touched).
backports_apt_opts() {
    local dir=$cache/apt-backports
    echo "-o Dir::Etc::SourceList=$dir/sources.list -o Dir::Etc::SourceParts=/nonexistent" \
        "-o Dir::State::Lists=$dir/lists -o Dir::Cache=$dir/cache -o Debug::NoLocking=1"
}

backports_update() {
    local dir=$cache/apt-backports mirror
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    # Fresh enough: refreshed within a day.
    if [ -n "$(find "$dir/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null)" ]; then
        return 0
    fi
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || {
        note "cannot tell the Debian mirror from 'apt-cache policy' (run apt-get update)"
        return 1
    }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" \
        >"$dir/sources.list"
    # shellcheck disable=SC2046
    apt-get $(backports_apt_opts) update >"$dir/update.log" 2>&1 || {
        note "apt-get update of bookworm-backports failed: $(tail -n 3 "$dir/update.log")"
        return 1
    }
}

# Prints the package name of the current cloud kernel of a series (its ABI
# changes with security updates, so it is resolved each time from the
# dependencies of the meta-package linux-image-cloud-amd64).
resolve_kernel_package() {
    local series=$1 opts=()
    if [ "$series" = 6.12 ]; then
        backports_update || true
        # shellcheck disable=SC2207
        opts=($(backports_apt_opts))
    fi
    apt-cache "${opts[@]}" depends linux-image-cloud-amd64 2>/dev/null |
        awk -v s="linux-image-$series." '$1 == "Depends:" && index($2, s) == 1 { print $2; exit }'
}

# The cloud kernel of a series, unpacked in the cache: prints its dir
# (vmlinuz, modules/, modules.order). Downloads only when the resolved
# package is not cached; falls back to the newest cached one of the series
# when it cannot be resolved or downloaded.
kernel_dir() {
    local series=$1 pkg dir tmp deb opts=()
    pkg=$(resolve_kernel_package "$series")
    if [ -n "$pkg" ] && [ -f "$cache/kernels/$pkg/.complete" ] &&
        [ "$(cat "$cache/kernels/$pkg/wanted" 2>/dev/null)" = "$guest_modules" ]; then
        echo "$cache/kernels/$pkg"
        return 0
    fi
    if [ -n "$pkg" ]; then
        note "fetching $pkg"
        tmp=$(mktemp -d "$cache/fetch.XXXXXX")
        [ "$series" = 6.12 ] && read -r -a opts <<<"$(backports_apt_opts)"
        if (cd "$tmp" && apt-get "${opts[@]}" download "$pkg" >"$tmp/download.log" 2>&1); then
            deb=$(ls "$tmp"/*.deb)
            unpack_kernel "$deb" "$cache/kernels/$pkg"
            rm -rf "$tmp"
            echo "$cache/kernels/$pkg"
            return 0
        fi
        note "cannot download $pkg: $(tail -n 3 "$tmp/download.log")"
        rm -rf "$tmp"
    else
        note "cannot resolve the $series cloud kernel package (apt lists missing or no network)"
    fi
    dir=$(find "$cache/kernels" -mindepth 2 -maxdepth 2 -name .complete -path "*/linux-image-$series.*" \
        -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || die "no $series cloud kernel available (cached or downloadable)"
    note "using the cached $(basename "$dir")"
    echo "$dir"
}

# The modules the guest loads (with their dependencies): the PCI transport
# of virtio and the virtio-vsock transport (in 6.12 virtio_pci is built in,
# modules.builtin; in 6.1 it is a module), and the clsact qdisc and the bpf
# tc classifier, which libbpf's tc hook API attaches with. A cached kernel
# unpacked for another list is unpacked again.
guest_modules="virtio_pci vmw_vsock_virtio_transport sch_ingress cls_bpf"

# Unpacks a linux-image .deb into DEST: the kernel image, and the modules
# the guest needs (decompressed, busybox's insmod takes plain .ko) with
# their load order resolved from modules.dep.
unpack_kernel() {
    local deb=$1 final=$2 dest x abi moddir
    # Unpacked beside it and moved in place whole: a guest booting from
    # the cached kernel meanwhile never sees half of one.
    mkdir -p "$cache/kernels"
    dest=$(mktemp -d "$cache/kernels/unpacked.XXXXXX")
    x=$(mktemp -d "$cache/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$x"
    abi=$(basename "$(ls -d "$x"/lib/modules/*)")
    moddir=$x/lib/modules/$abi
    # The package ships no modules.dep (its postinst runs depmod).
    depmod -b "$x" "$abi" || die "depmod for $abi failed"
    mkdir -p "$dest/modules"
    cp "$x/boot/vmlinuz-$abi" "$dest/vmlinuz"
    cp "$x/boot/config-$abi" "$dest/config"
    : >"$dest/modules.order"
    local -A seen=()
    visit() {
        local rel=$1 dep deps
        [ -n "${seen[$rel]:-}" ] && return 0
        seen[$rel]=1
        deps=$(awk -v m="$rel:" '$1 == m { for (i = 2; i <= NF; i++) print $i }' "$moddir/modules.dep")
        for dep in $deps; do
            visit "$dep"
        done
        local name=${rel##*/}
        name=${name%.xz}
        name=${name%.zst}
        case $rel in
        *.xz) xz -dc "$moddir/$rel" >"$dest/modules/$name" ;;
        *.zst) zstd -qdc "$moddir/$rel" >"$dest/modules/$name" ;;
        *) cp "$moddir/$rel" "$dest/modules/$name" ;;
        esac
        echo "$name" >>"$dest/modules.order"
    }
    local want rel
    for want in $guest_modules; do
        rel=$(awk -F: -v w="$want" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); if (n == w) { print $1; exit } }' \
            "$moddir/modules.dep")
        if [ -n "$rel" ]; then
            visit "$rel"
        elif ! grep -q "/$want.ko\$" "$moddir/modules.builtin"; then
            rm -rf "$x" "$dest"
            die "$abi has no $want, neither as a module nor built in"
        fi
    done
    echo "$abi" >"$dest/abi"
    echo "$guest_modules" >"$dest/wanted"
    rm -rf "$x"
    touch "$dest/.complete"
    rm -rf "$final"
    mv "$dest" "$final"
}

# ----------------------------------------------------------------- image --

# Prints the path of the static telebpf-proxy for the guest.
guest_proxy() {
    if [ -n "${TELEBPF_GUEST_PROXY:-}" ]; then
        [ -x "$TELEBPF_GUEST_PROXY" ] || die "TELEBPF_GUEST_PROXY=$TELEBPF_GUEST_PROXY is not executable"
        echo "$TELEBPF_GUEST_PROXY"
        return 0
    fi
    "$here/build-proxy.sh"
}

# Builds (or reuses) the initramfs without the key: busybox, /init, the
# proxy and the modules. Its name is the hash of what went in.
base_initramfs() {
    local kdir=$1 proxy=$2 busybox hash out stage
    busybox=$(command -v busybox || true)
    [ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
    if ldd "$busybox" >/dev/null 2>&1; then
        die "$busybox is dynamically linked: the guest needs busybox-static"
    fi
    hash=$(cat "$busybox" "$proxy" "$here/init.sh" "$here/mark.sh" "$here/triggers.sh" "$here/proc.sh" \
        "$kdir/modules.order" "$kdir/vmlinuz" |
        sha256sum | cut -c1-16)
    out=$cache/initramfs/base-$hash.cpio.gz
    if [ -f "$out" ]; then
        echo "$out"
        return 0
    fi
    mkdir -p "$cache/initramfs"
    stage=$(mktemp -d "$cache/initramfs/stage.XXXXXX")
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,etc/telebpf-vm,lib/modules,srv}
    cp "$busybox" "$stage/bin/busybox"
    local applet
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
    done
    ln -s bin "$stage/sbin"
    mkdir -p "$stage/usr"
    ln -s ../bin "$stage/usr/bin"
    ln -s ../bin "$stage/usr/sbin"
    strip --strip-debug -o "$stage/bin/telebpf-proxy" "$proxy"
    install -m 0755 "$here/init.sh" "$stage/init"
    install -m 0755 "$here/mark.sh" "$stage/bin/telebpf-guest-mark"
    install -m 0755 "$here/triggers.sh" "$stage/bin/telebpf-guest-triggers"
    install -m 0755 "$here/proc.sh" "$stage/bin/telebpf-guest-proc"
    echo telebpf-guest-mark >"$stage/etc/telebpf-guest-mark"
    cp "$kdir"/modules/*.ko "$stage/lib/modules/" 2>/dev/null || true
    cp "$kdir/modules.order" "$stage/etc/telebpf-vm/modules.order"
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$out.tmp"
    # The kernel takes an uncompressed cpio after a compressed one only at
    # a 4-byte aligned offset (it skips the zero padding): the per-boot cpio
    # is appended to this file.
    truncate -s %4 "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$stage"
    echo "$out"
}

# ------------------------------------------------------------- processes --

telebpf_bin() {
    local bin=${TELEBPF_BIN_DIR:-$root/target/release}/telebpf
    [ -x "$bin" ] || die "$bin not found: run 'cargo build --release --workspace' (or set TELEBPF_BIN_DIR)"
    echo "$bin"
}

# Whether the pid in DIR/NAME.pid is still the process we started (its
# command line names DIR, so a recycled pid is never signalled).
our_pid() {
    local dir=$1 name=$2 pid
    [ -f "$dir/$name.pid" ] || return 1
    pid=$(cat "$dir/$name.pid")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
    echo "$pid"
}

stop_one() {
    local dir=$1 name=$2 pid i
    pid=$(our_pid "$dir" "$name") || {
        rm -f "$dir/$name.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "$name ($pid) ignored SIGTERM, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
}

cmd_down() {
    local dir=$1
    [ -d "$dir" ] || die "no such directory: $dir"
    dir=$(cd "$dir" && pwd)
    stop_one "$dir" qemu
    stop_one "$dir" vsockd
    rm -f "$dir/vm.vsock" "$dir/vhost.sock"
}

wait_for() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

cmd_up() {
    local dir=$1 series=$2
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if our_pid "$dir" qemu >/dev/null || our_pid "$dir" vsockd >/dev/null; then
        die "a guest of $dir is already running (guest.sh down $dir)"
    fi
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (scripts/setup.sh)"
    local vsockd
    vsockd=$(command -v vhost-device-vsock || echo "${CARGO_HOME:-$HOME/.cargo}/bin/vhost-device-vsock")
    [ -x "$vsockd" ] || die "vhost-device-vsock not found (cargo install --locked vhost-device-vsock --version 0.3.0)"

    local kdir proxy base telebpf
    kdir=$(kernel_dir "$series")
    proxy=$(guest_proxy)
    base=$(base_initramfs "$kdir" "$proxy")
    telebpf=$(telebpf_bin)

    rm -f "$dir"/{key,guest-facts,facts.serial,console.log,qemu.log,vsockd.log,initrd,vm.vsock,vhost.sock}
    (umask 077 && "$telebpf" keygen --out "$dir/key" >/dev/null)

    # The per-boot part of the initramfs: the key and the proxy's settings.
    local boot
    boot=$(mktemp -d "$dir/boot.XXXXXX")
    mkdir -p "$boot/etc/telebpf-vm"
    install -m 0600 "$dir/key" "$boot/key"
    : >"$boot/etc/telebpf-vm/env"
    if [ -n "${TELEBPF_VM_PROXY_LOG:-}" ]; then
        printf 'export TELEBPF_LOG=%q\n' "$TELEBPF_VM_PROXY_LOG" >>"$boot/etc/telebpf-vm/env"
    fi
    if [ -n "${TELEBPF_VM_PROXY_SPIN_US:-}" ]; then
        printf 'export TELEBPF_PROXY_SPIN_US=%q\n' "$TELEBPF_VM_PROXY_SPIN_US" >>"$boot/etc/telebpf-vm/env"
    fi
    (
        umask 077
        cat "$base" >"$dir/initrd"
        (cd "$boot" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >>"$dir/initrd"
    )
    rm -rf "$boot"

    # Started with setsid and all three standard streams redirected, so that
    # nothing of a caller (e.g. a test's output pipes) is held by them.
    setsid "$vsockd" --vm "guest-cid=$guest_cid,socket=$dir/vhost.sock,uds-path=$dir/vm.vsock" \
        </dev/null >"$dir/vsockd.log" 2>&1 &
    echo $! >"$dir/vsockd.pid"
    if ! wait_for "vhost-user socket" 10 test -S "$dir/vhost.sock"; then
        cmd_down "$dir"
        die "vhost-device-vsock did not create $dir/vhost.sock: $(tail -n 5 "$dir/vsockd.log")"
    fi

    # One vCPU online (emulation is single-threaded anyway) and two more
    # possible CPUs than the host has, so that a per-CPU count taken from
    # the host instead of the guest shows.
    local host_cpus maxcpus
    host_cpus=$(tr ',-' '\n\n' </sys/devices/system/cpu/possible | sort -n | tail -n 1)
    maxcpus=$((host_cpus + 1 + 2))
    # The 6.12 kernel crashes early under this QEMU's (7.2) emulation when
    # the CPU has CMPXCHG16B (oopses and double faults at random places,
    # one right after `cmpxchg16b %gs:(%rsi)` in kmem_cache_alloc_noprof,
    # with every CPU model tried); without it the kernel uses its own
    # fallback and runs. 6.1 runs with it.
    local cpu=max
    [ "$series" = 6.12 ] && cpu=max,-cx16
    # A guest kernel oops panics, and the panic ends QEMU (-no-reboot), so
    # that a broken guest fails `up` at once instead of at the timeout.
    setsid qemu-system-x86_64 \
        -name telebpf-guest -nodefaults -display none -no-reboot \
        -accel tcg -cpu "$cpu" -smp "1,maxcpus=$maxcpus" -m "$mem_mb" \
        -object "memory-backend-memfd,id=mem,size=${mem_mb}M,share=on" \
        -machine q35,memory-backend=mem \
        -kernel "$kdir/vmlinuz" -initrd "$dir/initrd" \
        -append "console=ttyS0 quiet panic=-1 oops=panic" \
        -serial "file:$dir/console.log" -serial "file:$dir/facts.serial" \
        -chardev "socket,id=vsock0,path=$dir/vhost.sock" \
        -device vhost-user-vsock-pci,chardev=vsock0 \
        </dev/null >"$dir/qemu.log" 2>&1 &
    local qemu_pid=$!
    echo "$qemu_pid" >"$dir/qemu.pid"

    local deadline=$((SECONDS + boot_timeout))
    while ! grep -qs '^telebpf-guest-ready' "$dir/facts.serial"; do
        local failed=""
        if grep -qs '^telebpf-guest-failed' "$dir/facts.serial"; then
            failed="the guest's proxy did not start"
        elif ! kill -0 "$qemu_pid" 2>/dev/null; then
            # Not our_pid: until setsid has exec'd QEMU, the child's
            # command line is still this script's, which that check rejects.
            failed="qemu exited: $(tail -n 5 "$dir/qemu.log")"
        elif ! our_pid "$dir" vsockd >/dev/null; then
            failed="vhost-device-vsock exited: $(tail -n 5 "$dir/vsockd.log")"
        elif [ "$SECONDS" -ge "$deadline" ]; then
            failed="the guest's proxy was not ready within ${boot_timeout} s"
        fi
        if [ -n "$failed" ]; then
            note "$failed; console:"
            tail -n 30 "$dir/console.log" >&2 || true
            cmd_down "$dir"
            exit 1
        fi
        sleep 0.2
    done
    grep -E '^(release|cpus|btf_md5|modules|echo_port)=' "$dir/facts.serial" >"$dir/guest-facts"
    [ -S "$dir/vm.vsock" ] || {
        cmd_down "$dir"
        die "$dir/vm.vsock is missing"
    }
    note "guest $(sed -n 's/^release=//p' "$dir/guest-facts") ready: target vsock-uds:$dir/vm.vsock:$vsock_port, key $dir/key"
}

cmd_prepare() {
    local series=$1 kdir proxy
    kdir=$(kernel_dir "$series")
    proxy=$(guest_proxy)
    base_initramfs "$kdir" "$proxy" >/dev/null
    note "cached: $(basename "$kdir"), initramfs for $(basename "$proxy")"
}

# --------------------------------------------------------------- headers --

# Puts the headers of the guest kernel of a series where BCC finds them on
# this host: BCC's Python tools compile there, against
# /lib/modules/<release>/build, and under the preload <release> is the
# guest's `uname -r`. 6.1: Debian's linux-headers-<release>, installed with
# apt. 6.12: that package (bookworm-backports) depends on the kernel image,
# which this host must not install, so it and the two packages it needs for
# the headers (-common, linux-kbuild) are unpacked into the cache instead,
# and /lib/modules/<release>/{build,source} point there.
cmd_headers() {
    local series=$1 kdir rel build dest tmp x pkg link target opts=()
    kdir=$(kernel_dir "$series")
    rel=$(cat "$kdir/abi")
    build=/lib/modules/$rel/build
    if [ -e "$build/include/generated/autoconf.h" ]; then
        note "headers of $rel already in $build"
        return 0
    fi
    if [ "$series" = 6.1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y "linux-headers-$rel" >&2 ||
            die "cannot install linux-headers-$rel"
    else
        backports_update || true
        read -r -a opts <<<"$(backports_apt_opts)"
        local pkgs=("linux-headers-$rel")
        # shellcheck disable=SC2207
        pkgs+=($(apt-cache "${opts[@]}" depends "linux-headers-$rel" 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-(headers|kbuild)-/ { print $2 }'))
        [ ${#pkgs[@]} -ge 3 ] || die "cannot resolve the packages of linux-headers-$rel (bookworm-backports lists)"
        mkdir -p "$cache/headers"
        tmp=$(mktemp -d "$cache/fetch.XXXXXX")
        if ! (cd "$tmp" && apt-get "${opts[@]}" download "${pkgs[@]}" >"$tmp/download.log" 2>&1); then
            note "cannot download ${pkgs[*]}: $(tail -n 3 "$tmp/download.log")"
            rm -rf "$tmp"
            exit 1
        fi
        dest=$cache/headers/$rel
        x=$(mktemp -d "$cache/headers/unpack.XXXXXX")
        for pkg in "$tmp"/*.deb; do
            dpkg-deb -x "$pkg" "$x"
        done
        rm -rf "$tmp" "$dest"
        mv "$x" "$dest"
        mkdir -p "/lib/modules/$rel"
        # The packages' links are absolute (/usr/src/…): the same paths
        # beneath the unpacked tree.
        for link in build source; do
            target=$(readlink "$dest/lib/modules/$rel/$link" 2>/dev/null) || continue
            ln -sfn "$dest$target" "/lib/modules/$rel/$link"
        done
    fi
    [ -e "$build/include/generated/autoconf.h" ] || die "$build has no include/generated/autoconf.h"
    note "headers of $rel in $build"
}

# ------------------------------------------------------------------ main --

[ $# -ge 1 ] || usage
action=$1
shift
dir=""
series=6.1
while [ $# -gt 0 ]; do
    case $1 in
    --kernel)
        [ $# -ge 2 ] || usage
        series=$2
        shift 2
        ;;
    --kernel=*)
        series=${1#--kernel=}
        shift
        ;;
    -*) usage ;;
    *)
        [ -z "$dir" ] || usage
        dir=$1
        shift
        ;;
    esac
done
case $series in
6.1 | 6.12) ;;
*) die "--kernel must be 6.1 or 6.12, not $series" ;;
esac
mkdir -p "$cache"

case $action in
up)
    [ -n "$dir" ] || usage
    cmd_up "$dir" "$series"
    ;;
down)
    [ -n "$dir" ] || usage
    cmd_down "$dir"
    ;;
prepare)
    [ -z "$dir" ] || usage
    cmd_prepare "$series"
    ;;
headers)
    [ -z "$dir" ] || usage
    cmd_headers "$series"
    ;;
*) usage ;;
esac
