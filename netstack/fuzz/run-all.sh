#!/usr/bin/env bash
# Build every netstack fuzz target and run each for SECONDS (default 10), seeded from the
# scapy corpus in ../tests/data. Fails if any target finds a crash.
#   usage: netstack/fuzz/run-all.sh [SECONDS [TARGET...]]
# Needs: the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
secs="${1:-10}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/../tests/data"
cd "$here"
export CARGO_TARGET_DIR="${NETSTACK_FUZZ_TARGET_DIR:-$here/target}"
if [ "$#" -gt 0 ]; then targets="$*"; else targets=$(cargo +nightly fuzz list); fi
cargo +nightly fuzz build -O
seed_dir() {
  case "$1" in
    frame|nat_rewrite|checksum_equiv) echo "$data/corpus" ;;
    *) echo "$data/seeds/$1" ;;
  esac
}
summary=""
for t in $targets; do
  mkdir -p "corpus/$t"
  seeds="$(seed_dir "$t")"
  if [ "$t" = nat_rewrite ]; then
    # nat_rewrite wants an IPv4 packet followed by 11 control bytes.
    mkdir -p "corpus/nat_rewrite"
    for f in "$data"/seeds/ipv4/*.bin; do
      { cat "$f"; printf '\xc0\xa8\x01\xc8\x0a\x89\x00\x05\xee\x48\x0f'; } > "corpus/nat_rewrite/seed-$(basename "$f")"
    done
    seeds="$data/seeds/ipv4"
  fi
  log="$(mktemp)"
  echo "== $t ($secs s)"
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "$seeds" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -50 "$log"
    echo "fuzz target $t FAILED" >&2
    exit 1
  fi
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  summary="$summary$t: ${execs:-?} executions in ${secs}s"$'\n'
  echo "$t: ${execs:-?} executions in ${secs}s" 
  rm -f "$log"
done
printf '%s' "$summary"
