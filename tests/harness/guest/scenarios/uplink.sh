#!/bin/bash
# uplink: portcullis's netfront against dom0's Linux netback (dom0 plays sys-net on xenbr0,
# 10.0.0.1/24). With debug-echo on: arping gets portcullis's MAC; ping (56 and 1472 bytes,
# 200 each at 0.05 s) loses nothing; 20,000 UDP datagrams of mixed sizes come back intact
# from the echo service (checksum offload: dom0 sends them csum_blank); afterwards the grant
# pool's counters are back at their idle values.
. /guest/lib.sh
N=pc-uplink
MAC=00:16:3e:5e:00:02
portcullis_start $N "ip=10.0.0.2/24 gw=10.0.0.1 debug-echo=1" "vif = [ 'bridge=xenbr0,mac=$MAC' ]"
wait_console $N 'uplink: connected' 30 || fail "uplink did not connect within 30 s"
sleep 1
dump_counters $N /tmp/uplink-before || fail "no counters dump"
before=$(pool_line /tmp/uplink-before)
echo "idle: $before"

out=$(busybox arping -I xenbr0 -c 3 -w 5 10.0.0.2 2>&1)
echo "$out" | head -3
echo "$out" | grep -qi "reply from 10.0.0.2 \[$MAC\]" || fail "arping did not get $MAC"

for size in 56 1472; do
    out=$(ping -q -i 0.05 -c 200 -s $size -W 2 10.0.0.2 2>&1)
    echo "$out" | tail -2
    echo "$out" | grep -q " 0% packet loss" || fail "ping -s $size lost packets"
done

/guest/tools/udp-echo-check 10.0.0.2 7 20000 16 || fail "UDP echo: not every datagram came back intact"

sleep 1
dump_counters $N /tmp/uplink-after || fail "no counters dump after traffic"
after=$(pool_line /tmp/uplink-after)
echo "after: $after"
grep -E "uplink.counters|uplink.host" /tmp/uplink-after
[ "$before" = "$after" ] || fail "pool counters changed: '$before' -> '$after'"
grep -q "quarantined=0" <<<"$after" || fail "pages quarantined"
xl destroy $N
