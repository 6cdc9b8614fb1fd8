#!/bin/bash
# crash: a debug option triggers a deliberate fault -> fault report on the console, reason crash.
. /guest/lib.sh
N=pc-crash
portcullis_start $N "debug-crash=pagefault"
wait_console $N 'FATAL: exception #PF' 30 || fail "no page-fault report on the console"
wait_gone $N 10 || fail "domain still alive after the fault"
sleep 0.5
r=$(shutdown_reason $N)
[ "$r" = 3 ] || fail "shutdown reason code '$r', want 3 (crash)"
grep -q "cr2=0x" "$CONSOLE_DIR/guest-$N.log" || fail "fault report lacks cr2"
grep -q "stack 0x" "$CONSOLE_DIR/guest-$N.log" || fail "fault report lacks a stack dump"
