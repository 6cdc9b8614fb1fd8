# Role clients (scenario clients): the gateway answers ping without loss and the debug UDP
# echo returns 20,000 datagrams intact (Linux netfront sends them csum_blank); the peer
# client and the gateway are both behind fe:ff:ff:ff:ff:ff (proxy ARP).
# Replies are counted by the kernel (Icmp InEchoReps in /proc/net/snmp), late ones included:
# busybox ping waits only max(1 s, 2 RTT) after its last request.
echo_replies() {
    awk '/^Icmp: [A-Z]/ { for (i = 2; i <= NF; i++) if ($i == "InEchoReps") c = i }
         /^Icmp: [0-9]/ { print $c }' /proc/net/snmp
}
replies_before=$(echo_replies)
ping -q -i 0.05 -c 100 -W 2 "$GW" > /tmp/ping.out 2>&1
tail -2 /tmp/ping.out
sleep 3
replies=$(( $(echo_replies) - replies_before ))
echo "gateway echo replies received: $replies of 100"
check "ping -i 0.05 -c 100 $GW without loss (replies counted by the kernel)" [ "$replies" -eq 100 ]
check "udp echo 20000 intact" /client/udp-echo-check "$GW" 7 20000 16
arping -I eth0 -c 2 -w 4 "$PEER" > /tmp/arping.out 2>&1
head -3 /tmp/arping.out
check "peer $PEER behind fe:ff:ff:ff:ff:ff" grep -qi "reply from $PEER \[fe:ff:ff:ff:ff:ff\]" /tmp/arping.out
ip neigh show "$GW" > /tmp/neigh.out
check "gateway behind fe:ff:ff:ff:ff:ff" grep -qi 'fe:ff:ff:ff:ff:ff' /tmp/neigh.out
