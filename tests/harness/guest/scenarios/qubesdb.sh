#!/bin/bash
# qubesdb: portcullis configured entirely from QubesDB (no ip=, so QubesDB is the default)
# by dom0's qubesdb-double (Xen's libxenvchan, 4096/4096 rings): its uplink address and
# gateway (dom0, 10.0.0.1 on xenbr0), DNS, the clients' gateway, two clients' rule sets (one
# that does not parse) and a random seed. Two Linux client VMs forward through it:
#   client 1 (10.137.0.20; tcp 8088, udp 7778, icmp accepted; policy drop) downloads, is
#   refused tcp 81 and keeps a UDP flow going; dom0 then pushes new rules (tcp 8088, tcp 81,
#   icmp): the established UDP flow is cut, a new one refused, port 81 opens;
#   client 2 (10.137.0.21) is blocked while its rules do not parse (reported in
#   /qubes-iptables-error) and works once dom0 fixes them (the error key is emptied).
# Then dom0 moves the uplink gateway (the uplink looks for it again) and removes a key; after
# dom0's daemon goes away portcullis connects again to a new one, which has no rules for
# client 1 (still connected): it is blocked.
. /guest/lib.sh
N=pc-qubesdb
C1=10.137.0.20
C2=10.137.0.21
missing=$(ldd /guest/tools/qubesdb-double | grep "not found")
[ -z "$missing" ] || fail "qubesdb-double cannot run in dom0: $missing"
mkdir -p /tmp/qdb-www
head -c 1000000 /dev/urandom > /tmp/qdb-www/blob
SHA=$(sha256sum /tmp/qdb-www/blob | cut -d' ' -f1)
busybox httpd -p 10.0.0.1:8088 -h /tmp/qdb-www || fail "httpd 8088 did not start"
busybox httpd -p 10.0.0.1:81 -h /tmp/qdb-www || fail "httpd 81 did not start"
/guest/tools/udp-probe server 7778 600 > /tmp/qdb-udp.log 2>&1 &
udp_server=$!
cleanup() { pkill -f "httpd -p 10.0.0.1:8088"; pkill -f "httpd -p 10.0.0.1:81"; kill $udp_server 2>/dev/null; }
trap cleanup EXIT
rm -f /tmp/qdb-phase2 /tmp/qdb-phase3

portcullis_start $N "qrexec=0" "vif = [ 'bridge=xenbr0,mac=00:16:3e:5e:00:02' ]"
domid=$(xl domid $N) || fail "no domid"
cat > /tmp/qdb.keys <<KEYS
/name $N
/qubes-ip 10.0.0.2
/qubes-gateway 10.0.0.1
/qubes-netmask 255.255.255.0
/qubes-primary-dns 10.139.1.1
/qubes-secondary-dns 10.139.1.2
/qubes-netvm-gateway $CLIENT_GW
/qubes-netvm-netmask 255.255.255.255
/qubes-netvm-primary-dns 10.139.1.1
/qubes-netvm-secondary-dns 10.139.1.2
/qubes-random-seed $(head -c 64 /dev/urandom | base64 -w0)
/qubes-iptables-error
/connected-ips $C1 $C2
/qubes-firewall/$C1/policy drop
/qubes-firewall/$C1/0000 action=accept proto=tcp dstports=8088-8088
/qubes-firewall/$C1/0001 action=accept proto=udp dstports=7778-7778
/qubes-firewall/$C1/0002 action=accept proto=icmp
/qubes-firewall/$C1
/qubes-firewall/$C2/policy drop
/qubes-firewall/$C2/0000 action=accept proto=tcp dstports=80-70
/qubes-firewall/$C2
KEYS
cat > /tmp/qdb.script <<SCRIPT
# the bad rule set of $C2 is reported after the sync
expect /qubes-iptables-error
# the clients made their first checks
waitfile /tmp/qdb-phase2
# dom0 rewrites both clients' rules (qubes-protocols.md 5.1)
rm /qubes-firewall/$C1/
write /qubes-firewall/$C1/policy drop
write /qubes-firewall/$C1/0000 action=accept proto=tcp dstports=8088-8088
write /qubes-firewall/$C1/0001 action=accept proto=tcp dstports=81-81
write /qubes-firewall/$C1/0002 action=accept proto=icmp
write /qubes-firewall/$C1
rm /qubes-firewall/$C2/
write /qubes-firewall/$C2/policy drop
write /qubes-firewall/$C2/0000 action=accept proto=tcp dstports=8088-8088
write /qubes-firewall/$C2
# no rule set fails any more: the key is emptied
expect /qubes-iptables-error
waitfile /tmp/qdb-phase3
write /qubes-gateway 10.0.0.3
rm /qubes-secondary-dns
SCRIPT
timeout 400 /guest/tools/qubesdb-double $domid /tmp/qdb.keys /tmp/qdb.script /tmp/qdb.log 2 &
double=$!
wait_console $N 'qubesdb: synced' 60 || { cat /tmp/qdb.log; fail "no QubesDB sync"; }
client_start pc-q1 $C1 qdb1 $N "pc_sha=$SHA pc_stay=1"
client_start pc-q2 $C2 qdb2 $N "pc_sha=$SHA"
wait_console pc-q1 'QDB-PHASE1' 240 || { tail -20 "$CONSOLE_DIR/guest-pc-q1.log"; fail "client 1 did not finish its first checks"; }
wait_console pc-q2 'QDB-PHASE1' 120 || { tail -20 "$CONSOLE_DIR/guest-pc-q2.log"; fail "client 2 did not finish its first checks"; }
dump_counters $N /tmp/qdb-counters-1 || fail "no counters dump"
touch /tmp/qdb-phase2
ok=0
client_result pc-q1 200 || ok=1
client_result pc-q2 120 || ok=1
touch /tmp/qdb-phase3
wait $double || { cat /tmp/qdb.log; fail "qubesdb-double failed"; }
sed 's/^/  dom0: /' /tmp/qdb.log
[ $ok = 0 ] || fail "a client's checks failed"
grep -q "^WRITE /qubes-iptables-error $C2: ." /tmp/qdb.log || fail "bad rule set not reported"
grep -qx "WRITE /qubes-iptables-error " /tmp/qdb.log || fail "error key not emptied after the fix"
for p in /qubes-firewall/$C1/ /qubes-firewall/$C1/policy /qubes-firewall/$C1/0001 /qubes-firewall/$C1 \
         /qubes-firewall/$C2/ /qubes-firewall/$C2 /qubes-gateway /qubes-secondary-dns; do
    grep -qx "RESP_OK $p " /tmp/qdb.log || fail "no acknowledgement of $p"
done
grep -q "^done" /tmp/qdb.log || fail "the double did not finish"
echo "dom0's UDP server saw:"; cat /tmp/qdb-udp.log
grep -q '^from 10.0.0.2:40000$' /tmp/qdb-udp.log || fail "the UDP flow did not leave with the QubesDB address"

C="$CONSOLE_DIR/guest-$N.log"
expect_log() {
    tr -d '\r' < "$C" | grep -Eq "$1" || fail "portcullis did not log: $1"
    tr -d '\r' < "$C" | grep -E "$1" | head -1 | sed 's/^/  /'
}
expect_log 'config: from QubesDB'
expect_log 'qubesdb: synced, 21 keys'
expect_log 'config: uplink address 10.0.0.2 netmask 255.255.255.0 gateway 10.0.0.1 dns 10.139.1.1 10.139.1.2'
expect_log 'uplink: address 10.0.0.2/24 gateway 10.0.0.1 from QubesDB'
expect_log "clients: gateway address $CLIENT_GW from QubesDB"
expect_log "config: 2 connected clients: $C1 $C2"
expect_log 'entropy: 64 bytes of /qubes-random-seed'
expect_log "rules: $C2: FAILED: "
expect_log "client vif[0-9]+\.0 \($C1\): up, 3 rules in force, 0 flows removed \(QubesDB\)"
expect_log "client vif[0-9]+\.0 \($C2\): up, rules do not parse .*: all its traffic is dropped \(QubesDB\)"
expect_log "firewall: client $C1: 3 rules in force, [1-9][0-9]* flows removed"
expect_log "firewall: client $C2: 1 rules in force"
expect_log 'uplink: address 10.0.0.2/24 gateway 10.0.0.3 from QubesDB; looking for the gateway'
expect_log 'config: uplink address 10.0.0.2 .* gateway 10.0.0.3 dns 10.139.1.1 $'
expect_log 'qubesdb: dom0 removed /qubes-secondary-dns'
grep -E 'firewall|datapath.copies' /tmp/qdb-counters-1 | sed 's/^/  before the update: /'

# dom0's daemon is gone: portcullis says so and connects to the next one.
wait_console $N 'qubesdb: session lost' 20 || fail "the end of the session was not noticed"
printf '/qubes-ip 10.0.0.7\n/qubes-gateway 10.0.0.1\n/qubes-netvm-gateway 10.137.0.7\n' > /tmp/qdb2.keys
: > /tmp/qdb2.script
timeout 150 /guest/tools/qubesdb-double $domid /tmp/qdb2.keys /tmp/qdb2.script /tmp/qdb2.log 1 \
    || { cat /tmp/qdb2.log; fail "second qubesdb-double failed"; }
wait_console $N 'qubesdb: synced, 3 keys' 20 || fail "no new sync with the second daemon"
expect_log 'config: uplink address 10.0.0.7 '
# Client 1 is still connected, and the new daemon has no rules for it: blocked.
expect_log "firewall: QubesDB synced: connected clients' rules read again, 0 in force, [12] blocked"
dump_counters $N /tmp/qdb-counters || fail "no counters dump"
grep -E "qubes\.|firewall" /tmp/qdb-counters
xl destroy pc-q1 2>/dev/null
xl destroy pc-q2 2>/dev/null
xl destroy $N
