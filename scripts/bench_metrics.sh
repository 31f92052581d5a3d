#!/usr/bin/env bash
# What metrics cost: embedded sagashop (release build, SQLite in a temp data dir) driven by
# `sagashop loadgen` at one concurrency, alternating runs with the metrics listener off and
# runs with it on and scraped every second, in one sitting. Prints one line per run (mode,
# sagas/s, server CPU ms per saga) and the mean of each mode.
#
#   scripts/bench_metrics.sh [seconds-per-run]   default 15
#   RUNS=3 CONCURRENCY=64 scripts/bench_metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-15}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-64}
PORT=${BENCH_PORT:-18500}
METRICS_PORT=$((PORT + 1))
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet --features faults
BIN=$CARGO_TARGET_DIR/release/sagashop
results=$(mktemp)

run() {
  local mode=$1 data pid scraper=""
  data=$(mktemp -d)
  local listen=off
  if [ "$mode" = on ]; then listen=127.0.0.1:$METRICS_PORT; fi
  "$BIN" serve --data-dir "$data" --listen "127.0.0.1:$PORT" --metrics-listen "$listen" \
    --workers 1 >"$data/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  if [ "$mode" = on ]; then
    (while curl -sf "127.0.0.1:$METRICS_PORT/metrics" >/dev/null; do sleep 1; done) &
    scraper=$!
  fi
  local report
  report=$("$BIN" loadgen --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" \
    --duration "$SECONDS_PER_RUN" --fail-ratio 0.1 --customers 32 --products 32 \
    --server-pid "$pid" --json)
  if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  echo "$report" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(sys.argv[1], round(r["sagas_per_second"], 1), round(r["cpu_per_saga"]["server_ms"], 3))
' "$mode" | tee -a "$results"
}

for _ in $(seq 1 "$RUNS"); do
  run off
  run on
done
python3 - "$results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
for mode in ("off", "on"):
    got = [(float(r[1]), float(r[2])) for r in rows if r[0] == mode]
    n = len(got)
    print(f"mean {mode}: {sum(g[0] for g in got) / n:.1f} sagas/s, "
          f"{sum(g[1] for g in got) / n:.3f} server CPU ms/saga ({n} runs)")
PY
rm -f "$results"
