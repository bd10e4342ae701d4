#!/bin/sh
# /bin/telebpf-guest-triggers in the test guest: activity a test starts on
# demand, from the host, through the product itself — the host makes a
# directory in bpffs through the guest's proxy (`telebpf exec -- mkdir
# /sys/fs/bpf/NAME`), and this loop, polling twice a second, acts once:
#
#   telebpf-start-process  start /bin/telebpf-guest-proc (its comm is
#                          "telebpf-guest-p"), a process that sleeps
#   telebpf-open-listener  start a TCP listener on port 7778
#   telebpf-restart-proxy  kill the proxy (its clients lose their
#                          connections), wait 2 s, remove the directory and
#                          start the proxy again
#
# Nothing else in the guest reacts to these names.
started=
listening=
while :; do
    if [ -z "$started" ] && [ -d /sys/fs/bpf/telebpf-start-process ]; then
        /bin/telebpf-guest-proc &
        started=1
        echo "telebpf-triggers: started telebpf-guest-proc (pid $!)"
    fi
    if [ -z "$listening" ] && [ -d /sys/fs/bpf/telebpf-open-listener ]; then
        httpd -f -p 7778 -h /srv/www &
        listening=1
        echo "telebpf-triggers: listening on 7778 (pid $!)"
    fi
    if [ -d /sys/fs/bpf/telebpf-restart-proxy ]; then
        kill "$(cat /run/proxy.pid)" 2>/dev/null
        echo "telebpf-triggers: proxy killed"
        sleep 2
        rmdir /sys/fs/bpf/telebpf-restart-proxy
        /bin/telebpf-proxy --listen vsock:5000 --key-file /key 2>>/run/proxy.log &
        echo $! >/run/proxy.pid
        echo "telebpf-triggers: proxy restarted (pid $!)"
    fi
    sleep 0.5
done
