#!/bin/bash
# vchan: portcullis' vchan endpoint against Xen's own libxenvchan (dom0's vchan-peer), 10 MiB
# each way. portcullis as client of dom0 servers with ring orders 10/11 (1024/2048), 12 and
# 16; then as server (65536/65536 asked, orders 16/16) of a dom0 client. Each side checks every
# byte against the pattern; the byte counts and FNV-1a checksums of both directions must match
# across the two sides, and every shared page must come home.
. /guest/lib.sh
BYTES=10485760
missing=$(ldd /guest/tools/vchan-peer | grep "not found")
[ -z "$missing" ] || fail "vchan-peer cannot run in dom0: $missing"

# check_pair PORT PEER_LINE RINGS: compares our line for PORT with vchan-peer's line.
check_pair() {
    local name=$1 port=$2 peer=$3 rings=$4 ours
    wait_console $name "vchan-test: role=[a-z]* port=$port .* (OK|FAIL)" 60 || fail "port $port: no report from portcullis"
    ours=$(grep -E "vchan-test: role=[a-z]* port=$port " "$CONSOLE_DIR/guest-$name.log" | tail -1 | tr -d '\r')
    echo "  dom0:       $peer"
    echo "  portcullis: ${ours#*] INFO  }"
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
    [[ $peer == *" OK" ]] || fail "port $port: vchan-peer reports FAIL"
    [[ $ours == *" OK" ]] || fail "port $port: portcullis reports FAIL"
    [ "$(field sent "$ours")" = $BYTES ] && [ "$(field received "$ours")" = $BYTES ] || fail "port $port: byte counts"
    [ "$(field fnv_out "$ours")" = "$(field fnv_in "$peer")" ] || fail "port $port: our outgoing checksum differs from dom0's incoming"
    [ "$(field fnv_in "$ours")" = "$(field fnv_out "$peer")" ] || fail "port $port: our incoming checksum differs from dom0's outgoing"
    [ "$(field rings "$ours")" = "$rings" ] || fail "port $port: rings $(field rings "$ours"), expected $rings"
}

# --- portcullis as client: dom0 serves with each ring order in turn ---
N=pc-vchan
portcullis_start $N "qrexec=0 vchan-test=client:7000,7001,7002"
domid=$(xl domid $N) || fail "no domid"
wait_console $N 'ready: idle' 30 || fail "portcullis did not come up"
# port read_min write_min -> our rings (read/write)
for spec in "7000 1024 2048 2048/1024" "7001 4096 4096 4096/4096" "7002 65536 65536 65536/65536"; do
    set -- $spec
    echo "client, dom0 serves port $1 with $2/$3:"
    peer=$(timeout 300 /guest/tools/vchan-peer server $domid $1 $BYTES $2 $3 2>&1) || { echo "$peer"; fail "port $1: vchan-peer failed"; }
    check_pair $N $1 "$(echo "$peer" | head -1) $(echo "$peer" | tail -1)" $4
done
wait_console $N 'vchan-test: all done' 30 || fail "client channels did not all close"
grep 'vchan-test: all done' "$CONSOLE_DIR/guest-$N.log" | tail -1
grep -q 'vchan-test: all done; pool .* shared=0 quarantined=0' "$CONSOLE_DIR/guest-$N.log" || fail "pages left shared"
xl destroy $N

# --- portcullis as server ---
N=pc-vchan-srv
portcullis_start $N "qrexec=0 vchan-test=server:7003:65536:65536"
domid=$(xl domid $N) || fail "no domid"
echo "server, dom0 connects to port 7003:"
peer=$(timeout 300 /guest/tools/vchan-peer client $domid 7003 $BYTES 2>&1) || { echo "$peer"; fail "port 7003: vchan-peer failed"; }
check_pair $N 7003 "$(echo "$peer" | head -1) $(echo "$peer" | tail -1)" 65536/65536
wait_console $N 'vchan-test: all done' 30 || fail "server channel did not close"
grep 'vchan-test: all done' "$CONSOLE_DIR/guest-$N.log" | tail -1
grep -q 'vchan-test: all done; pool .* shared=0 quarantined=0' "$CONSOLE_DIR/guest-$N.log" || fail "pages left shared or quarantined"
xl destroy $N
