#!/bin/sh
# /bin/telebpf-guest-mark in the test guest: activity the host's tools must
# see. The path of /bin/true has a '/', so busybox's shell really execve()s
# it instead of running its own `true` applet in-process; the redirection
# makes this process itself open /etc/telebpf-guest-mark.
while :; do
    /bin/true telebpf-guest-mark
    : </etc/telebpf-guest-mark
    sleep 1
done
