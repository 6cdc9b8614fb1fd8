# Role qdb2 (scenario qubesdb), client 10.137.0.21. Its first rule set in QubesDB does not
# parse: all its traffic is dropped. dom0 then fixes it (tcp 8088 accepted): the download works.
SERVER=10.0.0.1
for w in $(cat /proc/cmdline); do case $w in pc_sha=*) SHA=${w#pc_sha=} ;; esac; done
timeout 10 wget -q -O /tmp/blob "http://$SERVER:8088/blob" > /tmp/w1 2>&1
got=$?
cat /tmp/w1
check "blocked while its rules do not parse" [ "$got" != 0 ]
echo "QDB-PHASE1"
check "allowed once dom0 fixed its rules" until_ok 90 timeout 10 wget -q -O /tmp/blob "http://$SERVER:8088/blob"
check "download intact" [ "$(sha_of /tmp/blob)" = "$SHA" ]
