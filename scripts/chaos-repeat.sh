#!/usr/bin/env bash
# Runs the short chaos test (tests/e2e_chaos.rs, as `make test` runs it) N times in a row on the
# local control plane and reports how many runs failed, with each failing run's seed and first
# violation. The failure rate of a timing-dependent fault needs many runs: one green run says
# little.
#
#   scripts/chaos-repeat.sh [N]          # default 20; CHAOS_ROLLOUTS/CHAOS_KILLS pass through
#
# Output: one line per run, then a summary; the logs of failing runs are kept under
# target/chaos-repeat/.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
out=target/chaos-repeat
mkdir -p "$out"
cargo test --locked --test e2e_chaos --no-run >/dev/null 2>&1 || { echo "chaos-repeat: the chaos test does not build" >&2; exit 2; }
failed=0
start=$(date +%s)
for i in $(seq 1 "$runs"); do
  log="$out/run-$i.log"
  t0=$(date +%s)
  if cargo test --locked --test e2e_chaos -- --nocapture >"$log" 2>&1; then
    echo "run $i/$runs: ok ($(( $(date +%s) - t0 )) s)"
    rm -f "$log"
  else
    failed=$((failed + 1))
    seed=$(grep -o 'CHAOS_SEED=[0-9]*' "$log" | head -1)
    why=$(grep -m1 -E 'ready replicas < R|violation|panicked|assertion' "$log" | cut -c1-200)
    echo "run $i/$runs: FAILED ($seed) $why — log $log"
  fi
done
echo "chaos-repeat: $failed of $runs runs failed ($(( $(date +%s) - start )) s)"
[ "$failed" -eq 0 ]
