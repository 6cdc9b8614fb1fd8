#!/bin/bash
# qubesdb: portcullis (qubesdb=1) against dom0's qubesdb-double (Xen's libxenvchan, 4096/4096
# rings). It syncs a key set with addresses, DNS, two clients' rule sets (one that does not
# parse) and a random seed, logs the configuration, reports the bad rule set in
# /qubes-iptables-error, acknowledges dom0's pushed writes and removes, empties the error key
# once the rules are fixed, and after dom0's daemon goes away connects again to a new one.
. /guest/lib.sh
N=pc-qubesdb
missing=$(ldd /guest/tools/qubesdb-double | grep "not found")
[ -z "$missing" ] || fail "qubesdb-double cannot run in dom0: $missing"
portcullis_start $N "qubesdb=1 qrexec=0"
domid=$(xl domid $N) || fail "no domid"
cat > /tmp/qdb.keys <<KEYS
/name $N
/qubes-ip 10.137.0.6
/qubes-gateway 10.137.0.1
/qubes-netmask 255.255.255.255
/qubes-primary-dns 10.139.1.1
/qubes-secondary-dns 10.139.1.2
/qubes-netvm-gateway 10.137.0.6
/qubes-netvm-netmask 255.255.255.255
/qubes-netvm-primary-dns 10.139.1.1
/qubes-netvm-secondary-dns 10.139.1.2
/qubes-random-seed $(head -c 64 /dev/urandom | base64 -w0)
/qubes-iptables-error
/connected-ips 10.137.0.20 10.137.0.21
/qubes-firewall/10.137.0.20/policy drop
/qubes-firewall/10.137.0.20/0000 action=accept proto=tcp dstports=443-443
/qubes-firewall/10.137.0.20/0001 action=accept specialtarget=dns
/qubes-firewall/10.137.0.20
/qubes-firewall/10.137.0.21/policy drop
/qubes-firewall/10.137.0.21/0000 action=accept proto=tcp dstports=80-70
/qubes-firewall/10.137.0.21
KEYS
cat > /tmp/qdb.script <<'SCRIPT'
# the bad rule set of 10.137.0.21 is reported after the sync
expect /qubes-iptables-error
# dom0 rewrites 10.137.0.21's rules (qubes-protocols.md 5.1)
rm /qubes-firewall/10.137.0.21/
write /qubes-firewall/10.137.0.21/policy drop
write /qubes-firewall/10.137.0.21/0000 action=accept proto=udp dstports=53-53
write /qubes-firewall/10.137.0.21
# no rule set fails any more: the key is emptied
expect /qubes-iptables-error
write /qubes-gateway 10.137.0.2
rm /qubes-secondary-dns
SCRIPT
timeout 150 /guest/tools/qubesdb-double $domid /tmp/qdb.keys /tmp/qdb.script /tmp/qdb.log 2 \
    || { cat /tmp/qdb.log; fail "qubesdb-double failed"; }
sed 's/^/  dom0: /' /tmp/qdb.log
grep -q "^WRITE /qubes-iptables-error 10.137.0.21: ." /tmp/qdb.log || fail "bad rule set not reported"
grep -qx "WRITE /qubes-iptables-error " /tmp/qdb.log || fail "error key not emptied after the fix"
for p in /qubes-firewall/10.137.0.21/ /qubes-firewall/10.137.0.21/policy /qubes-firewall/10.137.0.21/0000 \
         /qubes-firewall/10.137.0.21 /qubes-gateway /qubes-secondary-dns; do
    grep -qx "RESP_OK $p " /tmp/qdb.log || fail "no acknowledgement of $p"
done
grep -q "^done" /tmp/qdb.log || fail "the double did not finish"

C="$CONSOLE_DIR/guest-$N.log"
expect_log() {
    tr -d '\r' < "$C" | grep -Eq "$1" || fail "portcullis did not log: $1"
    tr -d '\r' < "$C" | grep -E "$1" | head -1 | sed 's/^/  /'
}
expect_log 'qubesdb: synced, 20 keys'
expect_log 'config: uplink address 10.137.0.6 netmask 255.255.255.255 gateway 10.137.0.1 dns 10.139.1.1 10.139.1.2'
expect_log "config: clients' gateway 10.137.0.6 netmask 255.255.255.255 dns 10.139.1.1 10.139.1.2"
expect_log 'config: 2 connected clients: 10.137.0.20 10.137.0.21'
expect_log 'entropy: 64 bytes of /qubes-random-seed'
expect_log 'rules: 10.137.0.20: committed, 2 rules'
expect_log 'rules: 10.137.0.21: FAILED: '
expect_log 'rules: 10.137.0.21: committed, 1 rules'
expect_log 'config: uplink address 10.137.0.6 .* gateway 10.137.0.2 dns 10.139.1.1 $'
expect_log 'qubesdb: dom0 removed /qubes-secondary-dns'

# dom0's daemon is gone: portcullis says so and connects to the next one.
wait_console $N 'qubesdb: session lost' 20 || fail "the end of the session was not noticed"
printf '/qubes-ip 10.137.0.7\n/qubes-gateway 10.137.0.1\n/qubes-netvm-gateway 10.137.0.7\n' > /tmp/qdb2.keys
: > /tmp/qdb2.script
timeout 150 /guest/tools/qubesdb-double $domid /tmp/qdb2.keys /tmp/qdb2.script /tmp/qdb2.log 1 \
    || { cat /tmp/qdb2.log; fail "second qubesdb-double failed"; }
wait_console $N 'qubesdb: synced, 3 keys' 20 || fail "no new sync with the second daemon"
expect_log 'config: uplink address 10.137.0.7 '
dump_counters $N /tmp/qdb-counters || fail "no counters dump"
grep "qubes\." /tmp/qdb-counters
xl destroy $N
