#!/bin/bash
# clients-scale: 48 vifs, attached with xl network-attach to two running client VMs (24
# each), all connect under xenstored's default quotas; detaching them all returns the grant
# pool and every netback resource to its value before.
. /guest/lib.sh
FW=pc-fw
PER=${PER:-24}
# Each Linux netfront keeps 256 RX pages posted: 25 vifs need more than the usual 96 MiB.
export CLIENT_MEM=320
portcullis_start $FW "ip=10.0.0.2/24 gw=10.0.0.1 client-gw=$CLIENT_GW" "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
wait_console $FW 'uplink: connected' 30 || fail "portcullis did not come up"
FWID=$(xl domid $FW)
client_start pc-s1 10.137.1.1 idle $FW "pc_stay=1"
client_start pc-s2 10.137.2.1 idle $FW "pc_stay=1"
wait_console pc-s1 'CLIENT-DONE rc=0' 90 || fail "client 1 did not come up"
wait_console pc-s2 'CLIENT-DONE rc=0' 90 || fail "client 2 did not come up"
sleep 1
dump_counters $FW /tmp/scale-before || fail "no counters dump"
pool0=$(pool_line /tmp/scale-before)
res0=$(grep -o 'netback.resources = .*' /tmp/scale-before)
echo "two clients: $pool0 | $res0"
ups() { grep -c 'client vif[0-9]*\.[0-9]* ([0-9.]*): up' "$CONSOLE_DIR/guest-$FW.log"; }
n0=$(ups)
t0=$(date +%s.%N)
for i in $(seq 1 $PER); do
    for c in 1 2; do
        xl network-attach pc-s$c backend=$FW ip=10.137.$c.$((10 + i)) devid=$i >/tmp/attach.log 2>&1 ||
            { cat /tmp/attach.log; fail "xl network-attach pc-s$c devid=$i failed (after $(( $(ups) - n0 )) connected)"; }
    done
done
want=$(( n0 + 2 * PER ))
end=$(( $(date +%s) + 120 ))
until [ "$(ups)" -ge "$want" ]; do
    [ "$(date +%s)" -lt "$end" ] || fail "only $(( $(ups) - n0 )) of $(( 2 * PER )) vifs connected"
    sleep 0.5
done
echo "$(( 2 * PER )) more vifs connected in $(elapsed "$t0") s"
dump_counters $FW /tmp/scale-full || fail "no counters dump at full scale"
grep -o 'netback.resources = .*' /tmp/scale-full
xenstore-ls /local/domain/$FWID/backend/vif 2>/dev/null | wc -l | sed 's/^/backend nodes: /'
for c in 1 2; do
    xl network-list pc-s$c | tail -n +2 | wc -l | sed "s/^/pc-s$c vifs: /"
done
t0=$(date +%s.%N)
for i in $(seq 1 $PER); do
    for c in 1 2; do
        xl network-detach pc-s$c $i >/tmp/detach.log 2>&1 || { cat /tmp/detach.log; fail "detach pc-s$c $i failed"; }
    done
done
echo "detached in $(elapsed "$t0") s"
sleep 3
dump_counters $FW /tmp/scale-after || fail "no counters dump after"
pool1=$(pool_line /tmp/scale-after)
res1=$(grep -o 'netback.resources = .*' /tmp/scale-after)
echo "after: $pool1 | $res1"
[ "$pool0" = "$pool1" ] || fail "pool counters changed: '$pool0' -> '$pool1'"
[ "$res0" = "$res1" ] || fail "netback resources changed: '$res0' -> '$res1'"
xl destroy pc-s1; xl destroy pc-s2
xl destroy $FW
