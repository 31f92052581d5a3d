#!/usr/bin/env bash
# Crash loop on one node: an embedded sagashop on a fresh data dir is driven by
# `sagashop loadgen --survive-restarts` (5% of purchases built to fail on stock and
# compensate) while this script kills it with SIGKILL every few seconds, N times, restarting
# it each time on the same data dir. Then it checks, through the API (the load generator)
# and through the database files (sqlite3), that nothing was lost or duplicated:
#   - every purchase created is terminal, and its customer's stream got its terminal event
#     exactly once (the load generator records what each stream delivered);
#   - stock is conserved per product (initial = current + units of succeeded purchases);
#   - each success has exactly one payment and its order lines, each rollback has neither;
#   - the saga store holds exactly the purchases the load generator knows of: a POST whose
#     answer died with the server may have created a purchase; the load generator finds those
#     on the customer's stream, and any it could not find shows up here as lost.
# Prints a table (markdown) and exits non-zero on any violation.
#
#   scripts/crashloop.sh [-n KILLS] [--debug] [--interval SECONDS] [--concurrency C] [--keep]
#
#   -n KILLS        SIGKILLs to send (default 10)
#   --debug         use the debug build (`cargo build`, as CI does) instead of --release
#   --interval S    mean seconds between kills (default 3; each pause is S/2 to 3S/2)
#   --concurrency C purchases in flight (default 16)
#   --keep          keep the data dir, logs and record (printed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS=10
PROFILE=release
INTERVAL=3
CONCURRENCY=16
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) KILLS=$2; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# Tools the checks use; installed when missing (as root, the way CI runs).
missing=()
for tool in sqlite3 jq curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
BIN=$CARGO_TARGET_DIR/$PROFILE/sagashop

WORK=$(mktemp -d /tmp/sagashop-crashloop.XXXXXX)
DATA=$WORK/data
SERVER=""
LOADGEN=""
cleanup() {
  [ -n "$LOADGEN" ] && kill "$LOADGEN" 2>/dev/null || true
  [ -n "$SERVER" ] && kill -KILL "$SERVER" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# A port nothing listens on.
while :; do
  PORT=$((20000 + RANDOM % 40000))
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
done
URL=http://127.0.0.1:$PORT

start_server() {
  "$BIN" serve --listen "127.0.0.1:$PORT" --metrics-listen off --data-dir "$DATA" --workers 2 >>"$WORK/server.log" 2>&1 &
  SERVER=$!
}

# Waits until the server answers /readyz (60 s at most).
wait_ready() {
  local deadline=$(($(now_ms) + 60000))
  until curl -sf -o /dev/null "$URL/readyz"; do
    if ! kill -0 "$SERVER" 2>/dev/null; then
      echo "the server died on start:" >&2; tail -20 "$WORK/server.log" >&2; exit 1
    fi
    [ "$(now_ms)" -lt "$deadline" ] || { echo "the server is not ready after 60 s" >&2; exit 1; }
    sleep 0.02
  done
}

sql() { sqlite3 -cmd ".timeout 5000" "$DATA/saga.db" "$@"; }

# Waits until every saga created before `$1` (ms) is terminal (60 s at most).
wait_drained() {
  local deadline=$(($(now_ms) + 60000))
  until [ "$(sql "SELECT count(*) FROM sagas WHERE NOT finished AND created_at < $1")" = 0 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "sagas in flight at the kill did not end within 60 s" >&2; exit 1; }
    sleep 0.02
  done
}

echo "== crash loop: $KILLS kills, $PROFILE build, $URL, data in $DATA" >&2
start_server
wait_ready
"$BIN" loadgen --url "$URL" --survive-restarts --record "$WORK/record.json" \
  --customers 8 --products 8 --stock 1000000 --fail-ratio 0.05 \
  --concurrency "$CONCURRENCY" --duration 3600 >"$WORK/report.json" 2>"$WORK/loadgen.log" &
LOADGEN=$!
deadline=$(($(now_ms) + 120000))
until grep -q "loadgen: load running" "$WORK/loadgen.log"; do
  kill -0 "$LOADGEN" 2>/dev/null || { echo "loadgen died:" >&2; cat "$WORK/loadgen.log" >&2; exit 1; }
  [ "$(now_ms)" -lt "$deadline" ] || { echo "loadgen did not start within 120 s" >&2; exit 1; }
  sleep 0.1
done

longest_ready=0
longest_drain=0
for kill in $(seq 1 "$KILLS"); do
  pause_ms=$((INTERVAL * 500 + RANDOM % (INTERVAL * 1000 + 1)))
  sleep "$(printf '%d.%03d' $((pause_ms / 1000)) $((pause_ms % 1000)))"
  kill -KILL "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  killed=$(now_ms)
  start_server
  restarted=$(now_ms)
  wait_ready
  ready=$(($(now_ms) - restarted))
  wait_drained "$killed"
  drained=$(($(now_ms) - restarted))
  [ "$ready" -gt "$longest_ready" ] && longest_ready=$ready
  [ "$drained" -gt "$longest_drain" ] && longest_drain=$drained
  echo "kill $kill/$KILLS: ready ${ready} ms after the restart, sagas in flight at the kill terminal after ${drained} ms" >&2
done

# Some load after the last restart, then the load generator settles and checks.
sleep "$INTERVAL"
kill -USR1 "$LOADGEN"
loadgen_rc=0
wait "$LOADGEN" || loadgen_rc=$?
LOADGEN=""
if [ ! -s "$WORK/report.json" ] || [ ! -s "$WORK/record.json" ]; then
  echo "loadgen ended ($loadgen_rc) without its report:" >&2; tail -20 "$WORK/loadgen.log" >&2; exit 1
fi
kill -TERM "$SERVER"
wait "$SERVER" 2>/dev/null || true
SERVER=""

# The database files against the load generator's record.
{
  echo "ATTACH '$DATA/product.db' AS pr; ATTACH '$DATA/order.db' AS o; ATTACH '$DATA/payment.db' AS y;"
  echo "CREATE TEMP TABLE rec_products (id INTEGER PRIMARY KEY, initial INTEGER NOT NULL);"
  echo "CREATE TEMP TABLE rec_purchases (id INTEGER PRIMARY KEY, terminal_events INTEGER NOT NULL);"
  jq -r '.products[] | "INSERT INTO rec_products VALUES (\(.id), \(.initial_stock));"' "$WORK/record.json"
  jq -r '.purchases[] | "INSERT INTO rec_purchases VALUES (\(.purchase_id), \(.terminal_events));"' "$WORK/record.json"
  cat <<'SQL'
CREATE TEMP VIEW terminal_log AS
  SELECT purchase_id, count(*) AS n FROM saga_events
  WHERE (step = 'CREATE_PAYMENT' AND status = 'STATUS_SUCCESS')
     OR (step = 'UPDATE_PRODUCT_INVENTORY' AND status = 'STATUS_ROLLBACKED')
  GROUP BY purchase_id;
CREATE TEMP VIEW sold AS
  SELECT json_extract(j.value, '$.product_id') AS product_id, sum(json_extract(j.value, '$.amount')) AS units
  FROM sagas s, json_each(s.items) j WHERE s.state = 'SUCCEEDED' GROUP BY 1;
CREATE TEMP TABLE problems (kind TEXT NOT NULL, id INTEGER, detail TEXT);
INSERT INTO problems SELECT 'lost', purchase_id, 'not terminal: ' || state FROM sagas
  WHERE state NOT IN ('SUCCEEDED', 'ROLLED_BACK');
INSERT INTO problems SELECT 'lost', purchase_id, 'in the store, never seen by its customer' FROM sagas
  WHERE purchase_id NOT IN (SELECT id FROM rec_purchases);
INSERT INTO problems SELECT 'lost', id, 'known to the load generator, not in the store' FROM rec_purchases
  WHERE id NOT IN (SELECT purchase_id FROM sagas);
INSERT INTO problems SELECT 'lost', id, 'terminal event never streamed' FROM rec_purchases WHERE terminal_events = 0;
INSERT INTO problems SELECT 'lost', s.purchase_id, 'terminal without its terminal log entry' FROM sagas s
  WHERE s.finished AND s.purchase_id NOT IN (SELECT purchase_id FROM terminal_log);
INSERT INTO problems SELECT 'duplicated', id, 'terminal event streamed ' || terminal_events || ' times'
  FROM rec_purchases WHERE terminal_events > 1;
INSERT INTO problems SELECT 'duplicated', purchase_id, 'terminal log entry written ' || n || ' times'
  FROM terminal_log WHERE n > 1;
INSERT INTO problems SELECT 'records', s.purchase_id, 'succeeded without exactly one payment of its amount' FROM sagas s
  WHERE s.state = 'SUCCEEDED'
    AND (SELECT count(*) FROM y.payments WHERE id = s.purchase_id AND amount = s.amount) != 1;
INSERT INTO problems SELECT 'records', s.purchase_id, 'order lines differ from the cart' FROM sagas s
  WHERE s.state = 'SUCCEEDED'
    AND ((SELECT count(*) FROM o.orders WHERE id = s.purchase_id) != (SELECT count(*) FROM json_each(s.items))
      OR EXISTS (SELECT 1 FROM json_each(s.items) j WHERE NOT EXISTS (
           SELECT 1 FROM o.orders WHERE id = s.purchase_id
             AND product_id = json_extract(j.value, '$.product_id')
             AND amount = json_extract(j.value, '$.amount'))));
INSERT INTO problems SELECT 'records', s.purchase_id, 'rolled back but has an order or a payment' FROM sagas s
  WHERE s.state = 'ROLLED_BACK'
    AND (EXISTS (SELECT 1 FROM o.orders WHERE id = s.purchase_id) OR EXISTS (SELECT 1 FROM y.payments WHERE id = s.purchase_id));
INSERT INTO problems SELECT DISTINCT 'records', id, 'order of no succeeded purchase' FROM o.orders
  WHERE id NOT IN (SELECT purchase_id FROM sagas WHERE state = 'SUCCEEDED');
INSERT INTO problems SELECT 'records', id, 'payment of no succeeded purchase' FROM y.payments
  WHERE id NOT IN (SELECT purchase_id FROM sagas WHERE state = 'SUCCEEDED');
INSERT INTO problems SELECT 'stock', r.id, 'initial ' || r.initial || ', now ' || coalesce(p.inventory, 'missing')
    || ', sold ' || coalesce(sold.units, 0)
  FROM rec_products r LEFT JOIN pr.products p ON p.id = r.id LEFT JOIN sold ON sold.product_id = r.id
  WHERE p.inventory IS NULL OR p.inventory < 0 OR r.initial != p.inventory + coalesce(sold.units, 0);
INSERT INTO problems SELECT 'stock', id, 'product not created by the load generator' FROM pr.products
  WHERE id NOT IN (SELECT id FROM rec_products);
SELECT 'count', kind, count(DISTINCT id) FROM problems GROUP BY kind;
SELECT 'problem', kind, id, detail FROM problems ORDER BY kind, id LIMIT 20;
SELECT 'sagas', count(*), sum(finished), sum(state = 'SUCCEEDED'), sum(state = 'ROLLED_BACK') FROM sagas;
SQL
} >"$WORK/check.sql"
sqlite3 -separator ' ' "$DATA/saga.db" <"$WORK/check.sql" >"$WORK/check.out"

db_count() { awk -v k="$1" '$1 == "count" && $2 == k { print $3 }' "$WORK/check.out" | grep . || echo 0; }
read -r _ db_accepted db_completed db_ok db_rolled < <(grep '^sagas ' "$WORK/check.out")
r() { jq -r "$1" "$WORK/report.json"; }

lost=$(db_count lost)
duplicated=$(($(db_count duplicated) + $(r .out_of_order_frames) + $(r .created_beyond_posts)))
records=$(db_count records)
stock=$(db_count stock)

echo
echo "| kills | purchases accepted | completed (succeeded / rolled back) | lost | duplicated | longest recovery: restart → ready / → sagas in flight at the kill terminal | longest client outage (failed request → next purchase accepted) |"
echo "|---|---|---|---|---|---|---|"
echo "| $KILLS | $db_accepted | $db_completed ($db_ok / $db_rolled) | $lost | $duplicated | $longest_ready ms / $longest_drain ms | $(r .longest_outage_ms) ms |"
echo
echo "$PROFILE build, concurrency $CONCURRENCY, $(r .seconds | cut -d. -f1) s of load; POSTs answered 201: $(r .answered), answer lost: $(r .unanswered_posts) (of which $(r .discovered) had created a purchase, found on the stream), retried unsent: $(r .retried_posts); stream reconnects: $(r .stream_reconnects); orders/payments mismatches: $records; products off stock: $stock; loadgen API check: $(r '.violations | length') violations"

status=0
if [ "$loadgen_rc" != 0 ]; then
  echo "FAIL: loadgen exited $loadgen_rc: $(r '.violations[:10] | join("; ")')" >&2; status=1
fi
if [ "$db_accepted" != "$(r .accepted)" ]; then
  echo "FAIL: the store holds $db_accepted purchases, the load generator knows $(r .accepted)" >&2; status=1
fi
if [ "$lost" != 0 ] || [ "$duplicated" != 0 ] || [ "$records" != 0 ] || [ "$stock" != 0 ]; then
  echo "FAIL: the database check found:" >&2; grep '^problem ' "$WORK/check.out" >&2 || true; status=1
fi
if [ "$db_accepted" = 0 ]; then echo "FAIL: no purchase was accepted" >&2; status=1; fi
[ "$status" = 0 ] && echo "crash loop: OK" >&2
exit "$status"
