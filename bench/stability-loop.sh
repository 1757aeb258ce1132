#!/usr/bin/env bash
# The test suite's stability loop: `make test` N times in a row (default 20) while
# `make bench QUICK=1` runs beside it over and over (a CPU-heavy neighbour on the same cores).
# Prints one line per pass and a summary; exits 1 if any pass failed.
#   bash bench/stability-loop.sh [N]
set -u
cd "$(dirname "$0")/.."
n=${1:-20}
log=${STABILITY_LOG:-/tmp/quantbot-bus-stability}
mkdir -p "$log"
make .venv/.installed .venv-oldduck/.installed >/dev/null
setsid bash -c 'while :; do make bench QUICK=1; done' >>"$log/bench.log" 2>&1 &
neighbour=$!  # a session (and process group) of its own: stopped whole on exit
trap 'kill -- -$neighbour 2>/dev/null; wait $neighbour 2>/dev/null' EXIT
sleep 20  # the neighbour is busy before the first pass starts
failed=0
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  if make test >"$log/pass-$i.log" 2>&1; then verdict=passed; else verdict=FAILED; failed=$((failed + 1)); fi
  end=$(date +%s)
  printf '%s pass %2d/%d %s in %4d s (load %s) | %s\n' "$(date -u +%H:%M:%S)" "$i" "$n" "$verdict" \
    $((end - start)) "$(cut -d' ' -f1 /proc/loadavg)" "$(tail -1 "$log/pass-$i.log")"
done
echo "$((n - failed))/$n passes green beside make bench QUICK=1 (logs in $log)"
[ "$failed" -eq 0 ]
