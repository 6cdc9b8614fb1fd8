#!/bin/bash
# forward: Linux client VMs reach dom0 (playing sys-net and the outside: 10.0.0.1 on xenbr0)
# through portcullis's firewall and NAT. Client 1 (rules: tcp 81 dropped, tcp 8080, udp and
# icmp accepted, policy drop) downloads a file over HTTP whose checksum matches, gets UDP
# echoes, admin-prohibited for the drop rule and for a port outside its rules, time-exceeded
# for TTL 1, port-unreachable from dom0's closed port. dom0 sees portcullis's address and the
# client's own source port. Client 2 (policy accept) cannot open a connection to client 1,
# and its spoofed frames are dropped and counted. An idle UDP flow expires (udp-timeout=5).
. /guest/lib.sh
FW=pc-fw
C1=10.137.0.10
C2=10.137.0.11
mkdir -p /tmp/www
head -c 3000000 /dev/urandom > /tmp/www/blob
SHA=$(sha256sum /tmp/www/blob | cut -d' ' -f1)
busybox httpd -p 10.0.0.1:8080 -h /tmp/www || fail "httpd did not start"
/guest/tools/udp-probe server 7777 900 > /tmp/udp-server.log 2>&1 &
RULES1="rules=$C1;drop;action=drop+proto=tcp+dstports=81-81;action=accept+proto=tcp+dstports=8080-8080;action=accept+proto=udp;action=accept+proto=icmp"
portcullis_start $FW "ip=10.0.0.2/24 gw=10.0.0.1 client-gw=$CLIENT_GW udp-timeout=5 $RULES1 rules=$C2;accept" \
    "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
wait_console $FW 'uplink: connected' 30 || fail "portcullis did not come up"
client_start pc-f1 $C1 forward $FW "pc_sha=$SHA pc_stay=1"
client_start pc-f2 $C2 forward2 $FW "pc_peer=$C1"
wait_console $FW "client vif[0-9]+\.0 \($C1\): up, 4 rules" 150 || fail "client 1 did not connect with its 4 rules"

drops() { grep -o 'firewall.drops:.*' "$1" | grep -o "$2=[0-9]*" | cut -d= -f2 | grep . || echo 0; }
to_clients() { grep -o 'to_clients=[0-9]*' "$1" | cut -d= -f2; }
# Client 1's last step is the UDP flow from port 40000; dom0 answers it again at once (tracked:
# forwarded), and once more after the flow idled past udp-timeout=5 (expired: not tracked).
wait_console pc-f1 'CLIENT-PROBED' 300 || fail "client 1 did not finish its checks"
/guest/tools/udp-probe send 10.0.0.2 40000 7777 || fail "dom0 could not send"
sleep 1
dump_counters $FW /tmp/fwd-1 || fail "no counters dump"
sleep 9
/guest/tools/udp-probe send 10.0.0.2 40000 7777 || fail "dom0 could not send"
sleep 1
dump_counters $FW /tmp/fwd-2 || fail "no counters dump"
ok=0
client_result pc-f1 10 || ok=1
client_result pc-f2 120 || ok=1
echo "dom0's UDP server saw:"; cat /tmp/udp-server.log
grep -q '^from 10.0.0.2:40000$' /tmp/udp-server.log || { echo "dom0 did not see 10.0.0.2:40000"; ok=1; }
grep -q '^from 10.137' /tmp/udp-server.log && { echo "a client address leaked to dom0"; ok=1; }
grep -E 'firewall|datapath|pipeline' /tmp/fwd-2
nt1=$(drops /tmp/fwd-1 not_tracked); nt2=$(drops /tmp/fwd-2 not_tracked)
echo "not_tracked: $nt1 -> $nt2 after the flow idled; to_clients: $(to_clients /tmp/fwd-1) -> $(to_clients /tmp/fwd-2)"
[ "$nt2" -eq $((nt1 + 1)) ] || { echo "the idle UDP flow did not expire"; ok=1; }
[ "$(drops /tmp/fwd-2 spoofed)" -ge 1 ] || { echo "no spoofed drop counted"; ok=1; }
[ "$(drops /tmp/fwd-2 client_to_client)" -ge 1 ] || { echo "no client-to-client drop counted"; ok=1; }
grep -o 'copies_per_byte=[0-9.]*' /tmp/fwd-2 | grep -q 'copies_per_byte=1.000' || { echo "not one copy per forwarded byte"; ok=1; }
[ $ok = 0 ] || fail "forwarding checks failed"
xl destroy pc-f1
wait_gone pc-f2 30
xl destroy $FW
