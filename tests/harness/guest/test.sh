#!/bin/bash
# Runs in the harness dom0: every scenario named in /guest/scenarios.list, one after the other,
# in the one Xen boot. Prints PASS/FAIL lines that `cargo xtask xen-test` reads.
pass=0; failed=0
for s in $(cat /guest/scenarios.list); do
    script=/guest/scenarios/$s.sh
    echo "@@ SCENARIO-START $s"
    t0=$(date +%s.%N)
    rm -f /tmp/scenario-reason
    if [ ! -x "$script" ]; then
        echo "@@ FAIL $s: no such scenario (0.0s)"; failed=$((failed+1)); continue
    fi
    "$script" > /tmp/scenario-$s.out 2>&1
    rc=$?
    el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    sed "s/^/[$s] /" /tmp/scenario-$s.out
    if [ $rc = 0 ]; then
        echo "@@ PASS $s (${el}s)"; pass=$((pass+1))
    else
        echo "@@ FAIL $s: $(cat /tmp/scenario-reason 2>/dev/null || echo "exit code $rc") (${el}s)"
        failed=$((failed+1))
        for f in /var/log/xen/console/guest-pc-*.log; do
            [ -s "$f" ] && { echo "===== $f"; grep -v 'ACPI' "$f" | tail -n 80; }
        done
        for f in /var/log/xen/xl-pc-*.log; do [ -s "$f" ] && { echo "===== $f"; tail -n 30 "$f"; }; done
        echo "===== xl dmesg (tail)"; xl dmesg | tail -n 40
        # Where each portcullis domain is: CPU time twice (spinning or asleep?) and its registers.
        echo "===== xl list"; xl list; sleep 1; xl list
        xenctx=$(ls /usr/lib/xen*/bin/xenctx 2>/dev/null | head -1)
        for d in $(xl list | awk 'NR>1 && $1 ~ /^pc-/ {print $2}'); do
            [ -n "$xenctx" ] || continue
            echo "===== xenctx domain $d"
            "$xenctx" -s /guest/portcullis.map -k 0x100000 -l 48 -f -a "$d" 0 2>&1 | head -90
            for k in 1 2 3 4 5 6; do "$xenctx" -s /guest/portcullis.map -k 0x100000 "$d" 0 2>&1 | grep -m1 '^rip'; sleep 0.3; done
        done
    fi
    for d in $(xl list | awk 'NR>1 && $1 ~ /^pc-/ {print $1}'); do xl destroy "$d"; done
done
echo "@@ RESULT $pass passed, $failed failed"
exit $failed
