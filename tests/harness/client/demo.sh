# Role demo (cargo xtask run): what an AppVM behind portcullis sees.
check "ping the gateway $GW" ping -c 3 -W 2 "$GW"
check "ping dom0 (10.0.0.1) through portcullis's NAT" ping -c 3 -W 2 10.0.0.1
check "HTTP from dom0 through NAT" wget -q -O /tmp/index "http://10.0.0.1:8080/index.html"
cat /tmp/index 2>/dev/null
