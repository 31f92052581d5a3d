#!/usr/bin/env bash
# Embedded benchmark: for each concurrency, a fresh sagashop (release build, SQLite in a temp
# data dir) is driven by `sagashop loadgen` (10% of purchases built to fail and compensate),
# next to the ceiling probe at the same concurrency. Writes bench/results/<date>.json and
# draws bench/results/<date>.png (throughput and p99 versus concurrency).
#
#   scripts/bench.sh [seconds-per-run]          default 15
#   CONCURRENCY="1 16 64" scripts/bench.sh 5    a quicker subset
#   INFLIGHT=0 scripts/bench.sh                 skip the sagas-in-flight run (default 100000)
#
# Each mode is a "series" in the JSON, so a cluster series can be added beside "embedded".
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-15}
LEVELS=${CONCURRENCY:-"1 16 64 256 1024"}
INFLIGHT=${INFLIGHT:-100000}
PORT=${BENCH_PORT:-18000}
DATE=$(date -u +%Y-%m-%d)
OUT=bench/results/$DATE.json
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet --features faults
BIN=$CARGO_TARGET_DIR/release/sagashop

runs=()
ceilings=()
for c in $LEVELS; do
  data=$(mktemp -d)
  "$BIN" serve --data-dir "$data" --listen "127.0.0.1:$PORT" --workers 1 >"$data/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  echo "== embedded, concurrency $c" >&2
  run=$("$BIN" loadgen --url "http://127.0.0.1:$PORT" --concurrency "$c" --duration "$SECONDS_PER_RUN" \
        --fail-ratio 0.1 --customers 32 --products 32 --server-pid "$pid" --json)
  echo "$run" >&2
  runs+=("$run")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  ceiling=$("$BIN" loadgen --ceiling --concurrency "$c" --duration 5 --json)
  echo "$ceiling" >&2
  ceilings+=("$ceiling")
done

# Sagas in flight: payments held (hidden --hold-payments switch) until loadgen releases them.
inflight="null"
if [ "$INFLIGHT" -gt 0 ]; then
  data=$(mktemp -d)
  "$BIN" serve --data-dir "$data" --listen "127.0.0.1:$PORT" --hold-payments --step-timeout-ms 3600000 \
    >"$data/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  echo "== embedded, $INFLIGHT sagas in flight" >&2
  inflight=$("$BIN" loadgen --url "http://127.0.0.1:$PORT" --inflight "$INFLIGHT" --concurrency 256 \
             --customers 32 --products 32 --server-pid "$pid")
  echo "$inflight" >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
fi

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 - "$OUT" "$machine" "$SECONDS_PER_RUN" <<PY
import json, sys
out, machine, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.loads(l) for l in """$(printf '%s\n' "${runs[@]}")""".strip().splitlines()]
ceilings = [json.loads(l) for l in """$(printf '%s\n' "${ceilings[@]}")""".strip().splitlines()]
inflight = json.loads("""$inflight""")
json.dump({"date": "$DATE", "machine": machine, "seconds_per_run": secs,
           "series": {"embedded": {"runs": runs, "ceiling": ceilings, "inflight": inflight}}},
          open(out, "w"), indent=2)
PY
echo "wrote $OUT" >&2
python3 scripts/plot_bench.py "$OUT" "${OUT%.json}.png"
