# Role forward2 (scenario forward), client 2 (policy accept): a new connection to client 1
# is refused (dropped by portcullis), and frames with a spoofed source are dropped.
# (dom0 checks the firewall counted it as client-to-client.)
nc -w 5 "$PEER" 8080 < /dev/null > /tmp/c2c 2>&1
rc_c2c=$?
cat /tmp/c2c
check "a new connection to the other client fails" [ $rc_c2c -ne 0 ]
ip addr add 10.137.0.99/32 dev eth0
ping -c 3 -W 1 -I 10.137.0.99 10.0.0.1 > /tmp/spoof 2>&1
rc_spoof=$?
tail -2 /tmp/spoof
check "pings from a spoofed source get nothing back" [ $rc_spoof -ne 0 ]
ip addr del 10.137.0.99/32 dev eth0
check "its own address still works" ping -q -c 2 -W 3 10.0.0.1
