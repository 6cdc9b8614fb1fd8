# Role clients (scenario clients): the gateway answers 100 pings at 50 ms without loss and the debug UDP
# echo returns 20,000 datagrams intact (Linux netfront sends them csum_blank); the peer
# client and the gateway are both behind fe:ff:ff:ff:ff:ff (proxy ARP).
# (icmp-ping: ping -i 0.05 -c 100 that counts late replies too; busybox ping waits only
# max(1 s, 2 RTT) for the last ones, less than an emulated machine's hiccup.)
check "ping -i 0.05 -c 100 $GW without loss" /client/icmp-ping "$GW" 100 50 5
check "udp echo 20000 intact" /client/udp-echo-check "$GW" 7 20000 16
arping -I eth0 -c 2 -w 4 "$PEER" > /tmp/arping.out 2>&1
head -3 /tmp/arping.out
check "peer $PEER behind fe:ff:ff:ff:ff:ff" grep -qi "reply from $PEER \[fe:ff:ff:ff:ff:ff\]" /tmp/arping.out
ip neigh show "$GW" > /tmp/neigh.out
check "gateway behind fe:ff:ff:ff:ff:ff" grep -qi 'fe:ff:ff:ff:ff:ff' /tmp/neigh.out
