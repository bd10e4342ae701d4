#!/bin/sh
# /init of the telebpf test guest (busybox-static initramfs built by
# tests/vm/guest.sh). It runs as PID 1 in the guest:
#
# 1. mounts proc, sys, devtmpfs, tmpfs, bpffs, tracefs and debugfs, and
#    cgroup2 at /sys/fs/cgroup with a marked cgroup, telebpf-mark (the
#    cgroup tests attach a program to it through the proxy);
# 2. loads the kernel modules listed in /etc/telebpf-vm/modules.order (the
#    virtio PCI transport and virtio-vsock with their dependencies, in
#    dependency order, as guest.sh resolved them from modules.dep);
# 3. writes the guest's facts to the second serial port (ttyS1), which QEMU
#    writes to a host file that guest.sh turns into DIR/guest-facts;
# 4. starts the activity the tests look for: a process that execs
#    `/bin/true telebpf-guest-mark` and opens /etc/telebpf-guest-mark once
#    a second (tests/vm/mark.sh), and a TCP listener on port 7777;
# 5. starts tests/vm/triggers.sh, which starts a process, a listener or a
#    proxy restart when a test makes a directory in bpffs through the proxy;
# 6. starts a plain echo on vsock port 5001 (`telebpf-proxy --echo`, the
#    raw base of `telebpf bench rtt`; no key, no kernel access) and says
#    `echo_port=5001` on ttyS1 once it listens;
# 7. starts `telebpf-proxy --listen vsock:5000 --key-file /key` (the key
#    comes from the per-boot cpio guest.sh appends to the initramfs, never
#    from the kernel command line) and, once it listens, writes
#    `telebpf-guest-ready` to ttyS1.
#
# Everything it says goes to the console (ttyS0), which guest.sh keeps as
# DIR/console.log.

export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir /sys/fs/cgroup/telebpf-mark

say() { echo "telebpf-init: $*"; }

# Set by guest.sh in the per-boot cpio: the proxy's TELEBPF_LOG and
# TELEBPF_PROXY_SPIN_US, if given.
if [ -f /etc/telebpf-vm/env ]; then
    . /etc/telebpf-vm/env
fi

while read -r module; do
    [ -n "$module" ] || continue
    insmod "/lib/modules/$module" || say "insmod $module failed"
done </etc/telebpf-vm/modules.order

hostname telebpf-guest
ip link set lo up

# The facts port: raw, so that "\n" is not turned into "\r\n".
stty -F /dev/ttyS1 raw -echo 2>/dev/null
facts() { echo "$*" >/dev/ttyS1; }

# Possible CPUs as libbpf counts them: the highest listed CPU + 1 (the
# file is a list of ranges such as "0-3" or "0,2-3").
possible=$(cat /sys/devices/system/cpu/possible)
highest=$(echo "$possible" | tr ',-' '\n\n' | sort -n | tail -n 1)
facts "release=$(uname -r)"
facts "cpus=$((highest + 1))"
facts "btf_md5=$(md5sum /sys/kernel/btf/vmlinux | cut -d' ' -f1)"
facts "modules=$(cut -d' ' -f1 /proc/modules | tr '\n' ' ' | sed 's/ *$//')"
say "possible CPUs $possible, modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"

# The marker process (a script of its own, so that its comm is
# "telebpf-guest-m"): once a second it execs `/bin/true telebpf-guest-mark`
# (for execsnoop) and opens /etc/telebpf-guest-mark (for opensnoop).
/bin/telebpf-guest-mark &

mkdir -p /srv/www
echo telebpf-guest >/srv/www/index.html
httpd -f -p 7777 -h /srv/www &

# The raw echo beside the proxy, waiting as the proxy does (the same
# TELEBPF_PROXY_SPIN_US). Its port is a fact once it listens, said before
# the proxy starts so that guest.sh (which reads the facts at
# telebpf-guest-ready) sees it; a failed echo is said, not fatal: the
# proxy's tests do not need it.
/bin/telebpf-proxy --echo vsock:5001 2>/run/echo.log &
n=0
while [ "$n" -lt 100 ] && ! grep -q 'echo listening on' /run/echo.log; do
    n=$((n + 1))
    sleep 0.1
done
if grep -q 'echo listening on' /run/echo.log; then
    facts "echo_port=5001"
else
    say "the echo did not listen: $(cat /run/echo.log)"
fi

/bin/telebpf-proxy --listen vsock:5000 --key-file /key 2>/run/proxy.log &
proxy=$!
echo "$proxy" >/run/proxy.pid
tail -F /run/proxy.log &
# Activity a test starts on demand (tests/vm/triggers.sh).
/bin/telebpf-guest-triggers &

n=0
while ! grep -q 'listening on' /run/proxy.log; do
    if ! kill -0 "$proxy" 2>/dev/null; then
        say "telebpf-proxy exited before listening"
        facts "telebpf-guest-failed"
        break
    fi
    n=$((n + 1))
    if [ "$n" -gt 600 ]; then
        say "telebpf-proxy did not listen within 60 s"
        facts "telebpf-guest-failed"
        break
    fi
    sleep 0.1
done
if grep -q 'listening on' /run/proxy.log; then
    facts "telebpf-guest-ready"
fi

# PID 1 must never exit; reap what gets orphaned to it.
while :; do
    wait
    sleep 1
done
