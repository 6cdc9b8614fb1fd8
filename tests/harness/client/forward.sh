# Role forward (scenario forward), client 1 (rules: tcp 81 dropped, tcp 8080 / udp / icmp
# accepted, policy drop). Everything goes through portcullis's NAT to dom0 (10.0.0.1).
SERVER=10.0.0.1
for w in $(cat /proc/cmdline); do case $w in pc_sha=*) SHA=${w#pc_sha=} ;; esac; done
wget -q -O /tmp/blob "http://$SERVER:8080/blob"
got=$(sha_of /tmp/blob)
echo "download: $(wc -c < /tmp/blob) bytes sha256 $got"
check "HTTP download through NAT, checksum matches" [ "$got" = "$SHA" ]
check "UDP echo through NAT: 2000 intact" /client/udp-echo-check $SERVER 7777 2000 16
nc -w 5 $SERVER 81 < /dev/null > /tmp/w81 2>&1
cat /tmp/w81
check "a drop rule answers admin-prohibited (No route to host)" grep -q 'No route to host' /tmp/w81
nc -w 5 $SERVER 82 < /dev/null > /tmp/w82 2>&1
cat /tmp/w82
check "a port outside dstports is refused" grep -q 'No route to host' /tmp/w82
traceroute -n -m 1 -q 1 -w 3 $SERVER > /tmp/tr 2>&1
cat /tmp/tr
check "TTL 1 gets time-exceeded from the gateway" grep -q " 1  *$GW" /tmp/tr
/client/udp-probe probe $SERVER 9999 40001 > /tmp/pu 2>&1
cat /tmp/pu
check "UDP to a closed port in dom0: port unreachable" grep -q refused /tmp/pu
# Last: the flow whose expiry dom0 checks (source port 40000, kept where free).
/client/udp-probe probe $SERVER 7777 40000 > /tmp/pr 2>&1
check "UDP probe from port 40000 answered" grep -q reply /tmp/pr
echo "CLIENT-PROBED"
