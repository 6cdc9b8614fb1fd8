#!/bin/sh
# Builds the dom0 doubles into OUT_DIR (default: ./out) against Xen's libxenvchan.
# Installs Debian's libxen-dev first if its headers are missing (needs root).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}
if [ ! -f /usr/include/libxenvchan.h ]; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y libxen-dev; else sudo apt-get install -y libxen-dev; fi
fi
mkdir -p "$out"
CC=${CC:-cc}
CFLAGS="-O2 -std=gnu11 -Wall -Wextra -Werror"
for prog in vchan-peer qubesdb-double qrexec-double; do
    $CC $CFLAGS -o "$out/$prog" "$here/$prog.c" -lxenvchan -lxenstore -lxenctrl
    echo "built $out/$prog"
done
