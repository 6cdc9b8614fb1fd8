#!/bin/bash
# shutdown: `xl shutdown` -> gone within 10 s, reason poweroff.
. /guest/lib.sh
N=pc-shutdown
portcullis_start $N
wait_console $N 'ready: idle' 30 || fail "no ready line within 30 s"
t0=$(date +%s.%N)
xl shutdown $N || fail "xl shutdown failed"
wait_gone $N 10 || fail "still running 10 s after xl shutdown"
echo "gone $(elapsed $t0) s after xl shutdown"
sleep 0.5
r=$(shutdown_reason $N)
[ "$r" = 0 ] || fail "shutdown reason code '$r', want 0 (poweroff)"
grep -q "shutdown requested by dom0: Poweroff" "$CONSOLE_DIR/guest-$N.log" || fail "no shutdown log line"
