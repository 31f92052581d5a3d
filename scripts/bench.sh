#!/usr/bin/env bash
# Embedded benchmark: for each concurrency, a fresh sagashop (release build, SQLite in a temp
# data dir) is driven by `sagashop loadgen` (10% of purchases built to fail and compensate),
# next to the ceiling probe at the same concurrency. Writes bench/results/<date>.json and
# draws bench/results/<date>.png (throughput and p99 versus concurrency).
#
#   scripts/bench.sh [seconds-per-run]          default 15
#   CONCURRENCY="1 16 64" scripts/bench.sh 5    a quicker subset
#   INFLIGHT=0 scripts/bench.sh                 skip the sagas-in-flight run (default 100000)
#   CLUSTER=0 scripts/bench.sh                  skip the cluster series
#   BENCH_METRICS=127.0.0.1:18080 scripts/bench.sh   servers keep a metrics listener
#                                               (default off: runs do not collide on 8080)
#   scripts/bench.sh --with-restate [seconds]   also run the Restate peer on the same saga, at
#                                               the same levels, in the same sitting (a "restate"
#                                               series; ../shared/peers/restate, or RESTATE_BENCH=)
#
# Each mode is a "series" in the JSON: "embedded" (one process, SQLite), and "cluster": the
# three nodes of scripts/cluster.sh on the local MariaDB and NATS, fresh databases per level,
# the load spread over the nodes, with sagashop's, MariaDB's and NATS's CPU per saga.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_RESTATE=0
if [ "${1:-}" = --with-restate ]; then WITH_RESTATE=1; shift; fi
SECONDS_PER_RUN=${1:-15}
LEVELS=${CONCURRENCY:-"1 16 64 256 1024"}
INFLIGHT=${INFLIGHT:-100000}
PORT=${BENCH_PORT:-18000}
export SAGASHOP_METRICS_LISTEN=${BENCH_METRICS:-off}
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

# Cluster: scripts/cluster.sh's three nodes, the same binary, fresh databases per level.
cluster_runs=()
if [ "${CLUSTER:-1}" = 1 ]; then
  export CLUSTER_NAME=sagashop_bench CLUSTER_FRESH=1 CLUSTER_PORT_BASE=$((PORT + 100)) SAGASHOP_BIN=$BIN
  export CLUSTER_METRICS_PORT_BASE=$((PORT + 200))
  for c in $LEVELS; do
    CLUSTER_DIR=$(mktemp -d); export CLUSTER_DIR
    scripts/cluster.sh start >&2
    pids=$(cat "$CLUSTER_DIR"/node-*.pid | paste -sd,)
    urls=$(for n in 1 2 3; do printf 'http://127.0.0.1:%s,' $((CLUSTER_PORT_BASE + n)); done)
    echo "== cluster, concurrency $c" >&2
    run=$("$BIN" loadgen --url "${urls%,}" --concurrency "$c" --duration "$SECONDS_PER_RUN" \
          --fail-ratio 0.1 --customers 32 --products 32 --server-pid "$pids" \
          --peer-pid "mariadb=$(pgrep -xo mariadbd)" --peer-pid "nats=$(pgrep -xo nats-server)" --json)
    echo "$run" >&2
    cluster_runs+=("$run")
    scripts/cluster.sh stop >&2
    rm -rf "$CLUSTER_DIR"
  done
fi

# Sagas in flight: payments held (hidden --hold-payments switch) until loadgen releases them.
inflight="null"
if [ "$INFLIGHT" -gt 0 ]; then
  data=$(mktemp -d)
  "$BIN" serve --data-dir "$data" --listen "127.0.0.1:$PORT" --hold-payments --step-timeout-ms 3600000 \
    --max-sagas-in-flight "$((INFLIGHT > 100000 ? INFLIGHT : 100000))" \
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

# Restate on the same saga, same levels, same sitting: its report becomes the "restate" series.
restate="null"
if [ "$WITH_RESTATE" = 1 ]; then
  peer=${RESTATE_BENCH:-../shared/peers/restate/bench.sh}
  [ -x "$peer" ] || { echo "no Restate peer benchmark at $peer (set RESTATE_BENCH)" >&2; exit 1; }
  restate_out=$(mktemp -d)
  echo "== restate, concurrency $LEVELS" >&2
  OUT=$restate_out CONC=$(echo "$LEVELS" | tr ' ' ',') PHASE_S=$SECONDS_PER_RUN VARIANTS=default \
    "$peer" >&2
  restate=$(python3 scripts/restate_series.py "$restate_out")
  rm -rf "$restate_out"
fi

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 - "$OUT" "$machine" "$SECONDS_PER_RUN" <<PY
import json, sys
out, machine, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.loads(l) for l in """$(printf '%s\n' "${runs[@]}")""".strip().splitlines()]
ceilings = [json.loads(l) for l in """$(printf '%s\n' "${ceilings[@]}")""".strip().splitlines()]
inflight = json.loads("""$inflight""")
cluster = [json.loads(l) for l in """$(printf '%s\n' "${cluster_runs[@]}")""".strip().splitlines()]
series = {"embedded": {"runs": runs, "ceiling": ceilings, "inflight": inflight}}
if cluster:
    series["cluster"] = {"runs": cluster}
restate = json.loads("""$restate""")
if restate:
    series["restate"] = restate
json.dump({"date": "$DATE", "machine": machine, "seconds_per_run": secs, "series": series},
          open(out, "w"), indent=2)
PY
echo "wrote $OUT" >&2
python3 scripts/plot_bench.py "$OUT" "${OUT%.json}.png"
