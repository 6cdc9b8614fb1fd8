# Role qdb1 (scenario qubesdb), client 10.137.0.20. Its rules come from QubesDB: tcp 8088,
# udp 7778 and icmp accepted, policy drop. After its first checks dom0 pushes new rules
# (tcp 8088, tcp 81, icmp): the established UDP flow must be cut and a new one refused, and
# port 81, refused before, must open.
SERVER=10.0.0.1
for w in $(cat /proc/cmdline); do case $w in pc_sha=*) SHA=${w#pc_sha=} ;; esac; done
ping -q -i 0.05 -c 5 -W 2 "$GW" > /tmp/ping.out 2>&1
check "the gateway address from QubesDB answers ping" grep -q ' 0% packet loss' /tmp/ping.out
timeout 30 wget -q -O /tmp/blob "http://$SERVER:8088/blob"
check "HTTP download through NAT (tcp 8088 allowed), checksum matches" [ "$(sha_of /tmp/blob)" = "$SHA" ]
nc -w 5 $SERVER 81 < /dev/null > /tmp/w81 2>&1
cat /tmp/w81
check "tcp 81 refused by the first rules (No route to host)" grep -q 'No route to host' /tmp/w81
# One UDP flow for the rest of the test: a datagram every 100 ms from port 40000.
/client/udp-probe stream $SERVER 7778 40000 240 > /tmp/stream 2>&1 &
stream_pid=$!
sleep 2
before=$(grep -c reply /tmp/stream)
echo "udp flow: $before replies so far"
check "the UDP flow is answered under the first rules" [ "$before" -ge 5 ]
echo "QDB-PHASE1"
# dom0 now pushes the new rules; port 81 opens when they are in force.
check "tcp 81, refused before, is allowed after the update" \
    until_ok 90 timeout 10 wget -q -O /tmp/blob81 "http://$SERVER:81/blob"
check "download over port 81 intact" [ "$(sha_of /tmp/blob81)" = "$SHA" ]
r1=$(grep -c reply /tmp/stream); e1=$(grep -c unreachable /tmp/stream)
sleep 3
r2=$(grep -c reply /tmp/stream); e2=$(grep -c unreachable /tmp/stream)
echo "udp flow after the update: replies $r1 -> $r2, unreachable $e1 -> $e2 in 3 s"
check "the established UDP flow was cut (no reply since)" [ "$r1" = "$r2" ]
check "its next datagrams are refused (admin-prohibited)" [ "$e2" -gt "$e1" ]
# The stream is done; its refusals used up the gateway's ICMP error budget for a moment.
kill $stream_pid 2>/dev/null
sleep 2
/client/udp-probe probe $SERVER 7778 40001 > /tmp/pr 2>&1
cat /tmp/pr
check "a new UDP flow is refused by the new rules" grep -q unreachable /tmp/pr
