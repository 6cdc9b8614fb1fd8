#!/usr/bin/env bash
# Build every firewall fuzz target and run each for SECONDS (default 10), seeded from seeds/
# (and with the libFuzzer dictionary dicts/TARGET.dict when there is one). Fails if any
# target finds a crash.
#   usage: firewall/fuzz/run-all.sh [SECONDS [TARGET...]]
# Needs: the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
secs="${1:-10}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export CARGO_TARGET_DIR="${FIREWALL_FUZZ_TARGET_DIR:-$here/target}"
if [ "$#" -gt 0 ]; then targets="$*"; else targets=$(cargo +nightly fuzz list); fi
cargo +nightly fuzz build -O
summary=""
for t in $targets; do
  mkdir -p "corpus/$t"
  dict=()
  if [ -f "dicts/$t.dict" ]; then dict=(-dict="dicts/$t.dict"); fi
  log="$(mktemp)"
  echo "== $t ($secs s)"
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1; then
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
