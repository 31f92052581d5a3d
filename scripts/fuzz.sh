#!/usr/bin/env bash
# Fuzzes a running sagashop against its own OpenAPI document with schemathesis.
#
# Starts the debug binary embedded on a free port with a fresh data directory, signs up a
# customer (its access token goes on every request) and creates two products, then runs
# schemathesis on GET /api/openapi.json: every route but the SSE stream, positive and negative
# data, examples, coverage, fuzzing and stateful (links) phases, bounded by FUZZ_MAX_EXAMPLES
# per operation and FUZZ_MAX_TIME seconds. Checks: no 5xx, responses conform to the document
# (status code, content type, schema), and rejected_changes_nothing (scripts/fuzz_hooks.py):
# a 4xx changed nothing the API shows. Prints schemathesis' summary; exits non-zero on any
# failure. With FUZZ_README=1 it also writes the summary into README.md. Arguments are passed
# on to `schemathesis run` (e.g. --report har --report-dir /tmp/fuzz).
#
# schemathesis is pinned and installed into a cached venv (SAGASHOP_TOOLS, default
# /var/cache/sagashop-tools) only when missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
TOOLS=${SAGASHOP_TOOLS:-/var/cache/sagashop-tools}
VENV=$TOOLS/venv
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-50}
MAX_TIME=${FUZZ_MAX_TIME:-90}
SEED=${FUZZ_SEED:-$RANDOM$RANDOM}

log() { printf '[fuzz] %s\n' "$*"; }

ensure_schemathesis() {
  local have
  have=$("$VENV/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$have" = "$SCHEMATHESIS_VERSION" ]; then return 0; fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV (found: ${have:-none})"
  mkdir -p "$TOOLS"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_schemathesis

log "building the debug binary"
cargo build --quiet --bin sagashop
BIN=${CARGO_TARGET_DIR:-target}/debug/sagashop

WORK=$(mktemp -d)
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log "starting sagashop on $URL"
RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; log "the server died"; exit 1; }
  sleep 0.2
done

post() { curl -fsS -X POST "$URL$1" --data "$2"; }
TOKEN=$(post /api/account/auth/signup \
  '{"password":"abcd5432","firstname":"fuzz","lastname":"er","email":"fuzz@example.com","address":"taipei","phone_number":"7654321"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
post /api/product '{"name":"plenty","description":"fuzzed","brand_name":"fz","price":100,"inventory":1000000}' >/dev/null
post /api/product '{"name":"scarce","description":"fuzzed","brand_name":"fz","price":7,"inventory":3}' >/dev/null

log "schemathesis $SCHEMATHESIS_VERSION: seed $SEED, at most $MAX_EXAMPLES examples per operation, ${MAX_TIME}s"
set +e
# Run from the scratch directory: schemathesis keeps a cache in the working directory.
(cd "$WORK" && SAGASHOP_FUZZ_URL=$URL SAGASHOP_FUZZ_TOKEN=$TOKEN SCHEMATHESIS_HOOKS=fuzz_hooks \
  PYTHONPATH="$OLDPWD/scripts" PYTHONDONTWRITEBYTECODE=1 \
  "$VENV/bin/schemathesis" run "$URL/api/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --exclude-path /api/purchase/result \
  --phases examples,coverage,fuzzing,stateful \
  --mode all \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,rejected_changes_nothing \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 15 \
  --suppress-health-check too_slow,filter_too_much \
  --no-color \
  "$@") \
  2>&1 | tee "$WORK/schemathesis.out"
STATUS=${PIPESTATUS[0]}
set -e

if ! curl -fsS "$URL/healthz" >/dev/null; then
  log "the server stopped answering"; tail -50 "$WORK/server.log"; exit 1
fi
if grep -q "panicked" "$WORK/server.log"; then
  log "the server panicked:"; grep -A5 panicked "$WORK/server.log"; exit 1
fi

# The summary: schemathesis' closing section (from its "SUMMARY" banner on).
sed -n '/SUMMARY/,$p' "$WORK/schemathesis.out" >"$WORK/summary.txt"
if [ "${FUZZ_README:-}" = 1 ] && [ "$STATUS" = 0 ]; then
  python3 - "$WORK/summary.txt" "$SEED" "$MAX_EXAMPLES" "$MAX_TIME" "$SCHEMATHESIS_VERSION" <<'PY'
import re, sys
path, seed, examples, max_time, version = sys.argv[1:]
summary = open(path).read().strip()
block = (
    "<!-- fuzz-summary:start -->\n```\n"
    f"$ FUZZ_SEED={seed} scripts/fuzz.sh   # schemathesis {version}, "
    f"at most {examples} examples per operation, {max_time} s\n{summary}\n```\n"
    "<!-- fuzz-summary:end -->"
)
readme = open("README.md").read()
readme = re.sub(r"<!-- fuzz-summary:start -->.*<!-- fuzz-summary:end -->",
                lambda _: block, readme, flags=re.S)
open("README.md", "w").write(readme)
PY
  log "README.md updated"
fi
exit "$STATUS"
