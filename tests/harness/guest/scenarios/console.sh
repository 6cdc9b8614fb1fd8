#!/bin/bash
# console (cargo xtask run): dom0 plays sys-net (10.0.0.1 on xenbr0, an HTTP server); start
# portcullis with its uplink there and a Linux client VM behind it (10.137.0.10, rules:
# accept all); the client pings its gateway and dom0 and fetches a page through NAT; then a
# counters dump, portcullis's and the client's consoles, and a clean shutdown.
. /guest/lib.sh
N=portcullis
mkdir -p /tmp/www && echo "hello from dom0, through portcullis" > /tmp/www/index.html
busybox httpd -p 10.0.0.1:8080 -h /tmp/www
portcullis_start $N "ip=10.0.0.2/24 gw=10.0.0.1 client-gw=$CLIENT_GW stats=30 rules=10.137.0.10;accept" \
    "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
wait_console $N 'ready: idle' 30 || fail "no ready line within 30 s"
client_start appvm 10.137.0.10 demo $N
client_result appvm 240
domid=$(xl domid $N)
xenstore-write /local/domain/$domid/data/portcullis/dump 1
wait_console $N 'counters dump end' 10
echo "===== the client VM's console"
grep -v ACPI "$CONSOLE_DIR/guest-appvm.log"
echo "===== portcullis's console"
xl shutdown -w $N
cat "$CONSOLE_DIR/guest-$N.log"
