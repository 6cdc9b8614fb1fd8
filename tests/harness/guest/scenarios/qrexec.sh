#!/bin/bash
# qrexec: portcullis' agent (vchan server on port 512) against dom0's qrexec-double (Xen's
# libxenvchan). Every run of the double is a new control connection, so each one also checks
# that the agent listens again after dom0 closed the last one. Handshakes at protocol
# versions 3 and 4; qubes.WaitForSession exits 0; qubes.SetDateTime changes the wall clock
# portcullis logs; an unknown service exits 1 with a message on stderr; every data port is
# released with MSG_CONNECTION_TERMINATED.
. /guest/lib.sh
N=pc-qrexec
missing=$(ldd /guest/tools/qrexec-double | grep "not found")
[ -z "$missing" ] || fail "qrexec-double cannot run in dom0: $missing"
portcullis_start $N ""
domid=$(xl domid $N) || fail "no domid"
wait_console $N 'qrexec: listening on vchan port 512' 30 || fail "the agent did not listen"

# run SERVICE STDIN PORT VERSION EXPECTED_RC: one request; prints the double's output to $out.
run() {
    local rc
    out=$(timeout 150 /guest/tools/qrexec-double $domid "$1" "$2" "$3" "$4" 2>&1); rc=$?
    echo "$out" | sed "s/^/  /"
    [ $rc = "$5" ] || fail "$1 (version $4): exit status $rc, expected $5"
    grep -q "connection terminated: port $3" <<<"$out" || fail "$1: data port $3 not released"
}

for v in 3 4; do
    echo "qubes.WaitForSession, dom0 at protocol version $v:"
    run qubes.WaitForSession - $((510 + v)) $v 0
    grep -q "agent version 4, negotiated $v" <<<"$out" || fail "handshake at version $v"
    grep -q "exit code 0" <<<"$out" || fail "WaitForSession did not exit 0"
done

echo "qubes.SetDateTime 2030-01-02T03:04:05+00:00:"
echo "2030-01-02T03:04:05+00:00" > /tmp/qrexec-now
run qubes.SetDateTime /tmp/qrexec-now 515 4 0
wait_console $N 'clock: wall clock now 2030-01-02T03:04:(0[5-9]|1[0-9])Z' 10 || fail "wall clock not set"
grep -E 'SetDateTime|clock: wall clock now' "$CONSOLE_DIR/guest-$N.log" | tail -2

echo "qubes.NoSuchService:"
run qubes.NoSuchService - 516 4 1
grep -q "service not supported" <<<"$out" || fail "no message on stderr for an unknown service"

dump_counters $N /tmp/qrexec-counters || fail "no counters dump"
grep "qubes.qrexec" /tmp/qrexec-counters
grep -c "qrexec: dom0 connected" "$CONSOLE_DIR/guest-$N.log" | grep -qx 4 || fail "expected 4 control connections"
xl destroy $N
