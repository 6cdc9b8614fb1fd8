#!/bin/bash
# console (cargo xtask run): start portcullis, wait until it is ready, ask for a counters dump,
# show its console, shut it down cleanly.
. /guest/lib.sh
N=portcullis
portcullis_start $N "stats=5"
wait_console $N 'ready: idle' 30 || fail "no ready line within 30 s"
domid=$(xl domid $N)
xenstore-write /local/domain/$domid/data/portcullis/dump 1
wait_console $N 'counters dump end' 10
sleep 6
xl shutdown -w $N
cat "$CONSOLE_DIR/guest-$N.log"
