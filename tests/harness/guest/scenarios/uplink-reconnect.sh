#!/bin/bash
# uplink-reconnect: 10 cycles of `xl network-detach` + `xl network-attach` (a new device id
# each time); echo works again within 10 s each time, portcullis is never restarted, and no
# slot, grant or event channel leaks (pool counters and the event-channel port equal before
# and after).
. /guest/lib.sh
N=pc-reconnect
portcullis_start $N "ip=10.0.0.2/24 gw=10.0.0.1 debug-echo=1" "vif = [ 'bridge=xenbr0' ]"
wait_console $N 'uplink: connected' 30 || fail "uplink did not connect within 30 s"
domid=$(xl domid $N)
ping -q -c 3 -i 0.2 -W 2 10.0.0.2 >/dev/null || fail "no echo before the cycles"
dump_counters $N /tmp/rc-before || fail "no counters dump"
before=$(pool_line /tmp/rc-before)
port_before=$(grep -o 'port=Some(Port([0-9]*))' /tmp/rc-before)
echo "before: $before $port_before"

for cycle in $(seq 1 10); do
    devid=$(xl network-list $N | awk 'NR==2{print $1}')
    [ -n "$devid" ] || fail "cycle $cycle: no vif to detach"
    xl network-detach $N "$devid" || fail "cycle $cycle: network-detach $devid failed"
    # libxl would reuse the lowest free id: ask for a new one, as a re-plugged vif gets.
    xl network-attach $N bridge=xenbr0 devid=$cycle || fail "cycle $cycle: network-attach failed"
    newid=$(xl network-list $N | awk 'NR==2{print $1}')
    [ "$newid" != "$devid" ] || fail "cycle $cycle: device id did not change ($devid)"
    t0=$(date +%s.%N); ok=
    for i in $(seq 1 50); do
        if ping -q -c 1 -W 1 10.0.0.2 >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.2
    done
    took=$(elapsed "$t0")
    [ -n "$ok" ] || fail "cycle $cycle: no echo within 10 s of attaching device $newid"
    awk -v t="$took" 'BEGIN{exit !(t <= 10)}' || fail "cycle $cycle: echo after ${took} s"
    echo "cycle $cycle: device $devid -> $newid, echo after ${took} s"
done

[ "$(xl domid $N)" = "$domid" ] || fail "portcullis was restarted"
grep -q "ready: idle" "$CONSOLE_DIR/guest-$N.log" || fail "no ready line"
[ "$(grep -c 'starting on Xen' "$CONSOLE_DIR/guest-$N.log")" = 1 ] || fail "portcullis booted more than once"
sleep 1
dump_counters $N /tmp/rc-after || fail "no counters dump after the cycles"
after=$(pool_line /tmp/rc-after)
port_after=$(grep -o 'port=Some(Port([0-9]*))' /tmp/rc-after)
echo "after: $after $port_after"
grep "uplink.counters" /tmp/rc-after
[ "$before" = "$after" ] || fail "pool counters changed: '$before' -> '$after'"
[ "$port_before" = "$port_after" ] || fail "event channel port moved ($port_before -> $port_after): a port leaked"
grep -q "connects: 11," /tmp/rc-after || fail "expected 11 connects"
xl destroy $N
