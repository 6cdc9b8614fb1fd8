#!/bin/bash
# client-churn: 25 cycles of xl create + xl destroy of a client VM, and 25 of
# xl network-attach + network-detach on a running Linux client. The created clients are
# portcullis instances (their uplink netfront is the client: a boot takes a second where a
# Linux kernel takes 20-40 s under emulation); Linux's netfront is the peer of the attach
# cycles and of the final client. Each vif must connect, and its backend
# directory must be gone within 10 s of the destroy/detach. Afterwards portcullis's grant
# pool and netback resources equal their values before the first cycle, xl list shows no
# dying or (null) domain, xl info's free memory is back at its baseline, and a final client
# still works.
. /guest/lib.sh
FW=pc-fw
CYCLES=${CYCLES:-25}
portcullis_start $FW "ip=10.0.0.2/24 gw=10.0.0.1 client-gw=$CLIENT_GW" "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
wait_console $FW 'uplink: connected' 30 || fail "portcullis did not come up"
FWID=$(xl domid $FW)
sleep 1
dump_counters $FW /tmp/churn-before || fail "no counters dump"
pool0=$(pool_line /tmp/churn-before)
res0=$(grep -o 'netback.resources = .*' /tmp/churn-before)
free0=$(xl info free_memory)
echo "baseline: $pool0 | $res0 | free_memory=$free0"

ups() { grep -c 'client vif[0-9]*\.[0-9]* ([0-9.]*): up' "$CONSOLE_DIR/guest-$FW.log"; }
# backend_gone DOMID DEVID: the vif's backend directory disappears within 10 s.
backend_gone() {
    local path=/local/domain/$FWID/backend/vif/$1/$2 end=$(( $(date +%s) + 10 ))
    while xenstore-exists "$path" 2>/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}
t0=$(date +%s.%N)
for i in $(seq 1 $CYCLES); do
    n=$(ups)
    portcullis_start pc-churn "" "vif = [ 'backend=$FW,ip=10.137.0.20' ]"
    domid=$(xl domid pc-churn)
    end=$(( $(date +%s) + 60 ))
    until [ "$(ups)" -gt "$n" ]; do
        [ "$(date +%s)" -lt "$end" ] || fail "create cycle $i: vif of domain $domid did not connect"
        sleep 0.2
    done
    xl destroy pc-churn
    backend_gone "$domid" 0 || fail "create cycle $i: backend directory of $domid/0 still there after 10 s"
done
echo "$CYCLES create/destroy cycles in $(elapsed "$t0") s"

# Linux netfront allocates per attach (256 RX pages and more): 96 MiB runs out after ~17 cycles.
CLIENT_MEM=320 client_start pc-host 10.137.0.21 idle $FW "pc_stay=1"
wait_console pc-host 'CLIENT-DONE rc=0' 180 || fail "the attach host did not come up"
hostid=$(xl domid pc-host)
t0=$(date +%s.%N)
for i in $(seq 1 $CYCLES); do
    n=$(ups)
    xl network-attach pc-host backend=$FW ip=10.137.0.$((100 + i)) devid=$i >/tmp/attach.log 2>&1 ||
        { cat /tmp/attach.log; fail "attach cycle $i: xl network-attach failed"; }
    end=$(( $(date +%s) + 30 ))
    until [ "$(ups)" -gt "$n" ]; do
        [ "$(date +%s)" -lt "$end" ] || fail "attach cycle $i: vif $hostid/$i did not connect"
        sleep 0.2
    done
    xl network-detach pc-host $i >/tmp/detach.log 2>&1 || { cat /tmp/detach.log; fail "attach cycle $i: detach failed"; }
    backend_gone "$hostid" $i || fail "attach cycle $i: backend directory $hostid/$i still there after 10 s"
done
echo "$CYCLES attach/detach cycles in $(elapsed "$t0") s"
xl destroy pc-host
backend_gone "$hostid" 0 || fail "backend directory of the attach host still there after 10 s"

# A final client still works.
client_start pc-final 10.137.0.22 idle $FW
client_result pc-final 180 || fail "the final client failed"
wait_gone pc-final 30 || fail "the final client did not power off"

sleep 3
dump_counters $FW /tmp/churn-after || fail "no counters dump after"
pool1=$(pool_line /tmp/churn-after)
res1=$(grep -o 'netback.resources = .*' /tmp/churn-after)
echo "after: $pool1 | $res1"
grep -E 'netback.stats' /tmp/churn-after
[ "$pool0" = "$pool1" ] || fail "pool counters changed: '$pool0' -> '$pool1'"
[ "$res0" = "$res1" ] || fail "netback resources changed: '$res0' -> '$res1'"
xl list | grep -Eq '\(null\)|--d' && { xl list; fail "a dying or (null) domain is left"; }
end=$(( $(date +%s) + 10 ))
while [ "$(xl info free_memory)" != "$free0" ]; do
    [ "$(date +%s)" -lt "$end" ] || fail "free memory $(xl info free_memory) MiB, baseline $free0 MiB"
    sleep 0.5
done
echo "free_memory back to $free0 MiB; xl list clean"
xl destroy $FW
