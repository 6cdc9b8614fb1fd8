# Role clients (scenario clients): the gateway answers ping without loss and the debug UDP
# echo returns 20,000 datagrams intact (Linux netfront sends them csum_blank); the peer
# client and the gateway are both behind fe:ff:ff:ff:ff:ff (proxy ARP).
ping -q -i 0.05 -c 100 -W 2 "$GW" > /tmp/ping.out 2>&1
tail -2 /tmp/ping.out
check "ping -i 0.05 -c 100 $GW without loss" grep -q ' 0% packet loss' /tmp/ping.out
check "udp echo 20000 intact" /client/udp-echo-check "$GW" 7 20000 16
arping -I eth0 -c 2 -w 4 "$PEER" > /tmp/arping.out 2>&1
head -3 /tmp/arping.out
check "peer $PEER behind fe:ff:ff:ff:ff:ff" grep -qi "reply from $PEER \[fe:ff:ff:ff:ff:ff\]" /tmp/arping.out
ip neigh show "$GW" > /tmp/neigh.out
check "gateway behind fe:ff:ff:ff:ff:ff" grep -qi 'fe:ff:ff:ff:ff:ff' /tmp/neigh.out
