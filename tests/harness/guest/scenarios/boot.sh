#!/bin/bash
# boot: xl create portcullis (PVH, 16 MiB); the ready line and the xenstore key appear; the
# logged domid matches `xl domid`; after 10 s idle it has used < 1 s of CPU.
. /guest/lib.sh
N=pc-boot
portcullis_start $N
wait_console $N 'ready: idle' 30 || fail "no ready line within 30 s"
domid=$(xl domid $N) || fail "xl domid failed"
state=$(xenstore-read /local/domain/$domid/data/portcullis/state 2>/dev/null)
[ "$state" = ready ] || fail "data/portcullis/state is '$state', want 'ready'"
grep -q "xenstore: domid Some($domid)" "$CONSOLE_DIR/guest-$N.log" || fail "logged domid does not match xl domid $domid"
grep -q "portcullis .* starting on Xen 4\." "$CONSOLE_DIR/guest-$N.log" || fail "no version line"
grep -q "grant table: .* entries mapped" "$CONSOLE_DIR/guest-$N.log" || fail "grant table not mapped"
c0=$(cpu_seconds $N); sleep 10; c1=$(cpu_seconds $N)
used=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')
echo "idle CPU over 10 s: ${used} s"
awk -v u="$used" 'BEGIN{exit !(u < 1.0)}' || fail "idle portcullis used ${used} s CPU in 10 s"
# A counters dump on request.
xenstore-write /local/domain/$domid/data/portcullis/dump 1
wait_console $N 'counters dump end' 10 || fail "no counters dump after writing data/portcullis/dump"
xl destroy $N
