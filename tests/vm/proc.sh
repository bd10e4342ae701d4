#!/bin/sh
# /bin/telebpf-guest-proc in the test guest: a process a test starts in one
# guest (tests/vm/triggers.sh) and looks for in that guest only. A script
# of its own, so that its comm is "telebpf-guest-p".
while :; do
    sleep 1
done
