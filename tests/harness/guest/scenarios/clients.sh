#!/bin/bash
# clients: two Linux PVH client VMs with vif=['backend=portcullis,ip=…'] get their link up
# through portcullis's netback (Linux netfront as the peer); each pings the gateway
# (-i 0.05 -c 100) without loss, gets 20,000 UDP datagrams of mixed sizes back intact from
# the debug echo on the gateway (csum_blank from netfront, carried through), and sees the
# other client and the gateway only behind fe:ff:ff:ff:ff:ff. When they are gone every
# netback resource and the grant pool are back at their idle values.
. /guest/lib.sh
FW=pc-fw
portcullis_start $FW "ip=10.0.0.2/24 gw=10.0.0.1 client-gw=$CLIENT_GW debug-echo=1 stats=5" \
    "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
wait_console $FW 'uplink: connected' 30 || fail "portcullis did not come up"
sleep 1
dump_counters $FW /tmp/clients-before || fail "no counters dump"
before=$(pool_line /tmp/clients-before)
echo "idle: $before"
grep -o 'netback.resources = .*' /tmp/clients-before

client_start pc-c1 10.137.0.10 clients $FW "pc_peer=10.137.0.11"
client_start pc-c2 10.137.0.11 clients $FW "pc_peer=10.137.0.10"
wait_console $FW 'client vif[0-9]+\.0 \(10\.137\.0\.10\): up' 150 || fail "client 1's vif did not connect"
wait_console $FW 'client vif[0-9]+\.0 \(10\.137\.0\.11\): up' 150 || fail "client 2's vif did not connect"
grep -E 'client vif' "$CONSOLE_DIR/guest-$FW.log" | head -4
ok=0
client_result pc-c1 300 || ok=1
client_result pc-c2 300 || ok=1
dump_counters $FW /tmp/clients-busy
grep -E 'vif[0-9]+\.0:|datapath|pipeline|downlink|firewall' /tmp/clients-busy
[ $ok = 0 ] || fail "a client's checks failed"

wait_gone pc-c1 30 && wait_gone pc-c2 30 || fail "clients did not power off"
sleep 3
dump_counters $FW /tmp/clients-after || fail "no counters dump after"
after=$(pool_line /tmp/clients-after)
echo "after: $after"
grep -o 'netback.resources = .*' /tmp/clients-after
grep -q 'vifs_in_use=0' /tmp/clients-after || fail "vifs still in use after the clients left"
grep -o 'netback.resources = .*' /tmp/clients-after | grep -q 'mapped_pages: 0, event_channels: 0, in_flight_copies: 0, watches: 2, xs_nodes: 0' ||
    fail "netback resources not back to zero"
[ "$before" = "$after" ] || fail "pool counters changed: '$before' -> '$after'"
xenstore-ls /local/domain/$(xl domid $FW)/backend 2>/dev/null | grep -q . && fail "backend directory left behind"
xl destroy $FW
