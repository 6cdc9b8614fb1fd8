# Helpers shared by the scenario scripts (sourced in dom0).
CONSOLE_DIR=/var/log/xen/console
T_START=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# fail REASON: print why and stop the scenario (the runner prints logs).
fail() { echo "$*" > /tmp/scenario-reason; exit 1; }

# portcullis_start NAME [EXTRA_CMDLINE] [CFG_LINE]: xl create a portcullis domain with a fresh
# console log; CFG_LINE (e.g. a vif = [...] line) is appended to the xl config.
portcullis_start() {
    local name=$1 extra=${2:-} cfgline=${3:-}
    sed -e "s/^name .*/name = \"$name\"/" -e "s|^extra .*|extra = \"loglevel=info $extra\"|" \
        /guest/portcullis.cfg > /tmp/$name.cfg
    [ -n "$cfgline" ] && echo "$cfgline" >> /tmp/$name.cfg
    : > "$CONSOLE_DIR/guest-$name.log"
    : > "/var/log/xen/xl-$name.log" 2>/dev/null
    xl create /tmp/$name.cfg >/tmp/$name.create.log 2>&1 || { cat /tmp/$name.create.log; fail "xl create failed"; }
}

# wait_console NAME REGEX TIMEOUT: wait for REGEX in the domain's console log.
wait_console() {
    local name=$1 re=$2 t=$3 end
    end=$(( $(date +%s) + t ))
    while [ "$(date +%s)" -lt "$end" ]; do
        grep -Eq "$re" "$CONSOLE_DIR/guest-$name.log" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# wait_gone NAME TIMEOUT: wait until the domain no longer exists.
wait_gone() {
    local name=$1 t=$2 end
    end=$(( $(date +%s) + t ))
    while [ "$(date +%s)" -lt "$end" ]; do
        xl domid "$name" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    return 1
}

# cpu_seconds NAME: the domain's CPU time from xl list.
cpu_seconds() { xl list "$1" 2>/dev/null | awk 'NR==2{print $6}'; }

# shutdown_reason NAME: the reason code xl logged when the domain died.
shutdown_reason() { sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' "/var/log/xen/xl-$1.log" | tail -1; }

# dump_counters NAME OUT: asks the domain for a counters dump and saves it to OUT.
dump_counters() {
    local name=$1 out=$2 domid before
    domid=$(xl domid "$name") || return 1
    before=$(grep -c "counters dump end" "$CONSOLE_DIR/guest-$name.log")
    xenstore-write "/local/domain/$domid/data/portcullis/dump" 1
    local end=$(( $(date +%s) + 10 ))
    while [ "$(grep -c "counters dump end" "$CONSOLE_DIR/guest-$name.log")" -le "$before" ]; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
    # The last dump only.
    awk '/counters dump begin/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' \
        "$CONSOLE_DIR/guest-$name.log" | sed -n '/counters dump begin/,/counters dump end/p' > "$out"
}

# pool_line FILE: the grant pool's state line of a dump.
pool_line() { grep -o 'pool: capacity=.*' "$1" | head -1; }

# client_start NAME IP ROLE BACKEND [EXTRA_CMDLINE] [VIF_EXTRA]: xl create a harness client
# VM (Linux, busybox; tests/harness/client/) whose vif is served by BACKEND with address IP;
# it runs /client/ROLE.sh and reports CLIENT-UP / CLIENT-CHECK / CLIENT-DONE on its console.
CLIENT_GW=${CLIENT_GW:-10.137.0.1}
client_start() {
    local name=$1 ip=$2 role=$3 backend=$4 extra=${5:-} vifextra=${6:-}
    [ -e /tmp/client.cpio.gz ] || cat /guest/domu.cpio.gz /guest/client-overlay.cpio.gz > /tmp/client.cpio.gz
    cat > /tmp/$name.cfg <<CFG
name = "$name"
type = "pvh"
kernel = "/guest/vmlinux"
ramdisk = "/tmp/client.cpio.gz"
extra = "console=hvc0 rdinit=/init quiet pc_ip=$ip pc_gw=$CLIENT_GW pc_role=$role $extra"
memory = ${CLIENT_MEM:-96}
vcpus = 1
vif = [ 'backend=$backend,ip=$ip$vifextra' ]
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
CFG
    : > "$CONSOLE_DIR/guest-$name.log"
    xl create /tmp/$name.cfg >/tmp/$name.create.log 2>&1 || { cat /tmp/$name.create.log; fail "xl create $name failed"; }
}

# client_result NAME TIMEOUT: wait for the client's CLIENT-DONE, print its checks, succeed
# only if it reported rc=0.
client_result() {
    local name=$1 t=$2
    wait_console "$name" 'CLIENT-DONE' "$t" || { tail -20 "$CONSOLE_DIR/guest-$name.log"; return 1; }
    grep -E 'CLIENT-(UP|CHECK)|packet loss|echo replies received|received [0-9]+ intact|reply from|nc:|wget:|^ 1 |refused|timeout|Segmentation' "$CONSOLE_DIR/guest-$name.log" | sed "s/^/  $name: /"
    grep -q 'CLIENT-DONE rc=0' "$CONSOLE_DIR/guest-$name.log"
}
