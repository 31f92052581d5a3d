#!/usr/bin/env bash
# A local three-node sagashop cluster on loopback, its nodes sharing one NATS server and one
# MariaDB (each node creates and migrates the databases of its roles itself):
#
#   node 1  api,orchestrator,account,product        http://127.0.0.1:$((CLUSTER_PORT_BASE + 1))
#   node 2  api,orchestrator,order,payment          http://127.0.0.1:$((CLUSTER_PORT_BASE + 2))
#   node 3  api,orchestrator,product,order,payment  http://127.0.0.1:$((CLUSTER_PORT_BASE + 3))
#
# Every node is an orchestrator: they share the saga partitions through leases (each holds
# about a third), and take over those of a node that stops, crashes or stalls.
#
#   scripts/cluster.sh [--debug] start         MariaDB and NATS up (scripts/services.sh), then
#                                              node 1 (the first to migrate the shared
#                                              databases), then nodes 2 and 3;
#                                              waits until every node's /readyz answers 200;
#                                              prints each node's dashboard URL and the admin
#                                              token (`status` prints them too)
#   scripts/cluster.sh stop                    SIGTERM to the nodes started from CLUSTER_DIR,
#                                              SIGKILL to those still there after
#                                              CLUSTER_STOP_SECONDS (a paused node is
#                                              resumed, so it can shut down cleanly)
#   scripts/cluster.sh status                  pid, alive (or paused), ready, URL and metrics
#                                              address of each node; exits 0 only when every
#                                              node is ready
#   scripts/cluster.sh kill N                  SIGKILL to node N (a crash); returns once it is gone
#   scripts/cluster.sh pause N                 SIGSTOP to node N (a stall: a long GC pause, a
#                                              frozen VM); its leases run out and the other
#                                              nodes take its partitions over; returns once
#                                              it is stopped
#   scripts/cluster.sh resume N                SIGCONT to node N: it finds its leases lost,
#                                              its late writes and step commands are fenced,
#                                              and it claims its share again
#   scripts/cluster.sh [--debug] start-node N  starts node N again with the same flags and waits
#                                              until it is ready
#
# A start that fails (a node exits, or is not ready in time) prints the end of that node's log
# and stops the nodes it started. Settings (environment; relative paths are taken from where
# the script is run):
#
#   CLUSTER_NAME           sagashop    NATS subject prefix (clusters on one NATS server do not
#                                      see each other) and prefix of the node databases
#                                      ${CLUSTER_NAME}_{account,product,order,payment,saga}
#   CLUSTER_DIR            data/cluster in the repository: node-N.pid, node-N.log (appended,
#                                      one header line per start), one data dir per node
#                                      (node-N/) and the generated jwt_secret
#   CLUSTER_PORT_BASE      8000        node N listens on 127.0.0.1:$((CLUSTER_PORT_BASE + N))
#   CLUSTER_METRICS_PORT_BASE 9000     node N serves /metrics on
#                                      127.0.0.1:$((CLUSTER_METRICS_PORT_BASE + N)); `off`: none
#   CLUSTER_FRESH          0           1: `start` first drops the cluster's databases and
#                                      removes the node data dirs
#   CLUSTER_READY_SECONDS  120         how long a start waits for a node to be ready
#   CLUSTER_STOP_SECONDS   10          how long `stop` waits after SIGTERM before SIGKILL
#   SAGASHOP_LEASE_SECONDS (node: 10)  how long a partition lease lasts: a crashed or paused
#                                      node's partitions are taken over within about two
#                                      lease periods; every node gets the same value
#   JWT_SECRET             (generated) the HS256 secret every node must share; unset, `start`
#                                      generates one once into $CLUSTER_DIR/jwt_secret (mode
#                                      600) and every later command reads it from there
#   ADMIN_TOKEN            (generated) the dashboard's admin token (every node's /dashboard,
#                                      its recent sagas); unset, `start` generates one once into
#                                      $CLUSTER_DIR/admin_token (mode 600) and prints it
#   SAGASHOP_BIN           (built)     the sagashop binary; unset, `cargo build --release` and
#                                      $CARGO_TARGET_DIR/release/sagashop (--debug: `cargo
#                                      build` and debug/); CARGO_TARGET_DIR defaults to target
#   NATS_URL               nats://127.0.0.1:4222
#   MYSQL_URL              mysql://root@127.0.0.1:3306   the MariaDB server,
#                                      mysql://user[:password]@host[:port]
#   SAGASHOP_EXIT_WITH_PID (unset)     passed to every node as --exit-with-pid: the nodes exit
#                                      when that process is gone (a test run's nodes die with it)
#   REDIS                  cluster     the nodes' shared cache: `cluster` (a Redis Cluster,
#                                      --redis-cluster), `single` (one Redis, --redis-url) or
#                                      `none` (each node's in-process cache only, no Bloom
#                                      filters)
#   REDIS_CLUSTER_SEEDS    (started)   with REDIS=cluster: the cluster's host:port seeds,
#                                      comma-separated; unset, scripts/redis-cluster.sh start
#                                      runs (127.0.0.1:7000-7005) and its seeds are used
#   REDIS_URL              redis://127.0.0.1:6379   with REDIS=single (scripts/services.sh
#                                      keeps the local one up); may carry a password
#                                      (redis://:pw@host:port) or use rediss://
#   One Redis (or Redis Cluster) per sagashop cluster: its Bloom filters describe that
#   cluster's databases. CLUSTER_FRESH=1 deletes the filters (`bloom:*`, nothing else) with
#   the databases, so they are rebuilt from the fresh ones.
#   The Redis settings reach the nodes as SAGASHOP_REDIS_URL / SAGASHOP_REDIS_CLUSTER (the
#   --redis-url / --redis-cluster flags) through the environment, so `ps` shows no password.
#   RUST_LOG, every other SAGASHOP_* setting and the OTEL_* / JAEGER_URL trace export settings
#   reach the nodes unchanged.
set -euo pipefail

log() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
# recorded_pid, stop_procs: the pid-file handling this script shares with redis-cluster.sh.
# shellcheck source=lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

PROFILE=release
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --debug) PROFILE=debug ;;
    -h|--help) usage; exit 0 ;;
    *) ARGS+=("$arg") ;;
  esac
done
set -- ${ARGS[@]+"${ARGS[@]}"}
COMMAND=${1:-}
NODE=${2:-}

# Settings. Paths given relative to the caller's directory are made absolute before the script
# moves to the repository (where cargo builds and the default CLUSTER_DIR is).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_NAME=${CLUSTER_NAME:-sagashop}
CLUSTER_DIR=$(realpath -m "${CLUSTER_DIR:-$ROOT/data/cluster}")
CLUSTER_PORT_BASE=${CLUSTER_PORT_BASE:-8000}
CLUSTER_METRICS_PORT_BASE=${CLUSTER_METRICS_PORT_BASE:-9000}
CLUSTER_FRESH=${CLUSTER_FRESH:-0}
READY_SECONDS=${CLUSTER_READY_SECONDS:-120}
STOP_SECONDS=${CLUSTER_STOP_SECONDS:-10}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
REDIS=${REDIS:-cluster}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306}
MYSQL_URL=${MYSQL_URL%/}
if [ -n "${SAGASHOP_BIN:-}" ]; then SAGASHOP_BIN=$(realpath -m "$SAGASHOP_BIN"); fi
if [ -n "${CARGO_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR; CARGO_TARGET_DIR=$(realpath -m "$CARGO_TARGET_DIR"); fi
cd "$ROOT"

# The name is a NATS subject token and a database name prefix (MariaDB names: 64 characters).
[[ $CLUSTER_NAME =~ ^[A-Za-z0-9_]{1,56}$ ]] || die "CLUSTER_NAME must be 1-56 letters, digits or _: '$CLUSTER_NAME'"
if [ -n "${SAGASHOP_LEASE_SECONDS:-}" ]; then
  [[ $SAGASHOP_LEASE_SECONDS =~ ^[1-9][0-9]{0,4}$ ]] || die "SAGASHOP_LEASE_SECONDS must be a whole number of seconds: '$SAGASHOP_LEASE_SECONDS'"
  export SAGASHOP_LEASE_SECONDS
fi
case "$REDIS" in single|cluster|none) ;; *) die "REDIS must be single, cluster or none, not '$REDIS'" ;; esac
if ! [[ $CLUSTER_PORT_BASE =~ ^(0|[1-9][0-9]{0,4})$ ]] || [ "$CLUSTER_PORT_BASE" -gt 65532 ]; then
  die "CLUSTER_PORT_BASE must be a number up to 65532: '$CLUSTER_PORT_BASE'"
fi

NODES=(1 2 3)
ROLES=([1]="api,orchestrator,account,product" [2]="api,orchestrator,order,payment" [3]="api,orchestrator,product,order,payment")
DATABASES=(account product order payment saga)

port() { echo $((CLUSTER_PORT_BASE + $1)); }
url() { echo "http://127.0.0.1:$(port "$1")"; }
# Where node N serves /metrics (`off`: it serves none).
metrics_listen() {
  if [ "$CLUSTER_METRICS_PORT_BASE" = off ]; then echo off; else echo "127.0.0.1:$((CLUSTER_METRICS_PORT_BASE + $1))"; fi
}
node_dir() { echo "$CLUSTER_DIR/node-$1"; }
log_file() { echo "$CLUSTER_DIR/node-$1.log"; }
pid_file() { echo "$CLUSTER_DIR/node-$1.pid"; }

check_node_number() {
  [[ $1 =~ ^[123]$ ]] || die "$COMMAND needs a node number (1, 2 or 3), not '$1'"
}

# Prints node N's pid while it runs. The pid is believed only when that process's command line
# names the node's data dir, so a recycled pid is never taken for the node (and never killed).
node_pid() {
  local pid
  pid=$(recorded_pid "$(pid_file "$1")") || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$(node_dir "$1")" || return 1
  echo "$pid"
}

# curl asks the nodes whether they are ready; installed when missing, as the servers are.
ensure_curl() {
  command -v curl >/dev/null && return
  log "installing curl"
  DEBIAN_FRONTEND=noninteractive apt-get install -y curl >/dev/null
}

# Asks node N's /readyz; sets READY_CODE (000: nothing answered) and READY_BODY.
probe() {
  local out
  out=$(curl -s --max-time 2 -w '\n%{http_code}' "$(url "$1")/readyz" || true)
  READY_CODE=${out##*$'\n'}
  READY_BODY=${out%$'\n'*}
  [ "$READY_BODY" != "$out" ] || READY_BODY=""
}

# True when something accepts connections on the port.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The binary the nodes run: SAGASHOP_BIN, or the cargo build of this checkout.
resolve_bin() {
  if [ -n "${SAGASHOP_BIN:-}" ]; then
    [ -x "$SAGASHOP_BIN" ] || die "SAGASHOP_BIN is not an executable: $SAGASHOP_BIN"
    BIN=$SAGASHOP_BIN
    return
  fi
  log "building sagashop ($PROFILE)"
  if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/sagashop
  [ -x "$BIN" ] || die "cargo built no $BIN"
}

# The shared JWT secret: JWT_SECRET, else the one kept in CLUSTER_DIR, generated there by
# `start` only (a node started later with another secret would refuse every token).
resolve_secret() {
  local file=$CLUSTER_DIR/jwt_secret
  if [ -n "${JWT_SECRET:-}" ]; then
    log "JWT secret: from JWT_SECRET"
  elif [ -s "$file" ]; then
    JWT_SECRET=$(<"$file")
    log "JWT secret: kept in $file"
  elif [ "$1" = generate ]; then
    (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$file")
    JWT_SECRET=$(<"$file")
    log "JWT secret: generated into $file (mode 600); every node of this cluster uses it"
  else
    die "JWT_SECRET is not set and $file does not exist: set the JWT_SECRET the cluster was started with"
  fi
  export JWT_SECRET
}

# The dashboard's admin token: ADMIN_TOKEN, else the one kept in CLUSTER_DIR, generated there
# by `start` only. The nodes get it through the environment (SAGASHOP_ADMIN_TOKEN).
resolve_admin_token() {
  local file=$CLUSTER_DIR/admin_token
  if [ -n "${ADMIN_TOKEN:-}" ]; then
    :
  elif [ -s "$file" ]; then
    ADMIN_TOKEN=$(<"$file")
  elif [ "$1" = generate ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_' >"$file")
    ADMIN_TOKEN=$(<"$file")
  else
    return 0
  fi
  export SAGASHOP_ADMIN_TOKEN=$ADMIN_TOKEN
}

# Where to watch the cluster: every node's dashboard, and the admin token its page asks for.
print_dashboards() {
  local n
  for n in "${NODES[@]}"; do log "dashboard of node $n: $(url "$n")/dashboard"; done
  if [ -n "${SAGASHOP_ADMIN_TOKEN:-}" ]; then
    log "admin token (the dashboard's recent sagas): $SAGASHOP_ADMIN_TOKEN"
  fi
}

# The mariadb client on MYSQL_URL's server (the password goes through the environment).
mysql_cli() {
  local re='^mysql://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?$'
  [[ $MYSQL_URL =~ $re ]] || die "MYSQL_URL is not mysql://user[:password]@host[:port]: ${MYSQL_URL%%:*}://…@${MYSQL_URL##*@}"
  MYSQL_PWD=${BASH_REMATCH[3]} mariadb -h "${BASH_REMATCH[4]}" -P "${BASH_REMATCH[6]:-3306}" \
    -u "${BASH_REMATCH[1]}" "$@"
}

drop_databases() {
  local db sql=""
  for db in "${DATABASES[@]}"; do sql+="DROP DATABASE IF EXISTS \`${CLUSTER_NAME}_$db\`; "; done
  log "CLUSTER_FRESH=1: dropping the databases ${CLUSTER_NAME}_{$(IFS=,; echo "${DATABASES[*]}")} and the node data dirs"
  mysql_cli -e "$sql"
  for n in "${NODES[@]}"; do rm -rf "$(node_dir "$n")"; done
}

# The Bloom filters (`bloom:*`) in the nodes' Redis, which describe the databases just dropped.
# Only those keys: cached records carry their TTL and ids are never reused.
drop_filters() {
  local addr key addrs=()
  case "$REDIS" in
    none) return 0 ;;
    single) addrs=("-u" "$REDIS_URL") ;;
    cluster) ;;
  esac
  if [ "$REDIS" = single ]; then
    redis-cli "${addrs[@]}" --scan --pattern 'bloom:*' 2>/dev/null | while read -r key; do
      redis-cli "${addrs[@]}" DEL "$key" >/dev/null
    done
  else
    for addr in ${REDIS_CLUSTER_SEEDS//,/ }; do
      addr=${addr##*://}
      local auth=() hostport=${addr##*@}
      if [ "$hostport" != "$addr" ]; then auth=(-a "${addr%@*}" --no-auth-warning); auth[1]=${auth[1]#:}; fi
      redis-cli -c -h "${hostport%:*}" -p "${hostport##*:}" "${auth[@]}" --scan --pattern 'bloom:*' 2>/dev/null |
        while read -r key; do
          redis-cli -c -h "${hostport%:*}" -p "${hostport##*:}" "${auth[@]}" DEL "$key" >/dev/null
        done
    done
  fi
  log "CLUSTER_FRESH=1: deleted the Bloom filters (bloom:*) in the nodes' Redis"
}

# Starts node N in the background, in a session of its own (no terminal signal reaches it),
# with its pid in node-N.pid and its output appended to node-N.log. The database URLs and the
# secret go through the environment, so `ps` shows no password.
launch() {
  local n=$1 db log
  log=$(log_file "$n")
  if port_taken "$(port "$n")"; then die "port $(port "$n") of node $n is in use by another process"; fi
  mkdir -p "$(node_dir "$n")"
  for db in "${DATABASES[@]}"; do export "${db^^}_DATABASE_URL=$MYSQL_URL/${CLUSTER_NAME}_$db"; done
  # The logs are files: no colour codes in them, unless NO_COLOR says otherwise.
  export NO_COLOR=${NO_COLOR-1}
  local args=(serve --roles "${ROLES[$n]}" --node-id "$n" --nats-url "$NATS_URL"
    --cluster-name "$CLUSTER_NAME" --listen "127.0.0.1:$(port "$n")" --data-dir "$(node_dir "$n")"
    --metrics-listen "$(metrics_listen "$n")")
  if [ -n "${SAGASHOP_EXIT_WITH_PID:-}" ]; then args+=(--exit-with-pid "$SAGASHOP_EXIT_WITH_PID"); fi
  printf '\n== %s: %s %s\n' "$(date -Is)" "$BIN" "${args[*]}" >>"$log"
  setsid "$BIN" "${args[@]}" </dev/null >>"$log" 2>&1 &
  echo $! >"$(pid_file "$n")"
  # Until the background shell has exec'd the binary, the pid's command line is still the
  # script's, and the node would look gone: give it a moment to become the node.
  local _
  for _ in $(seq 1 50); do node_pid "$n" >/dev/null && break; sleep 0.05; done
  STARTED+=("$n")
  log "node $n (${ROLES[$n]}) starting: pid $!, log $log"
}

# Node N's log since its latest start (the header line `launch` writes).
log_since_start() {
  awk '/^== [0-9]{4}-[0-9]{2}-[0-9]{2}T/ { text = "" } { text = text $0 "\n" } END { printf "%s", text }' \
    "$(log_file "$1")"
}

# Waits until each of the nodes answers /readyz with 200 (`ready`) or with anything at all
# (`up`: it is serving HTTP). A node that exits, or is late, fails the start: the end of its
# log is printed and the nodes this run started are stopped.
wait_nodes() {
  local want=$1 n; shift
  local pending=("$@") deadline=$((SECONDS + READY_SECONDS))
  while [ ${#pending[@]} -gt 0 ]; do
    local left=()
    for n in "${pending[@]}"; do
      node_pid "$n" >/dev/null || fail_start "$n" "exited"
      probe "$n"
      if [ "$READY_CODE" = 200 ] || { [ "$want" = up ] && [ "$READY_CODE" != 000 ]; }; then
        [ "$want" = up ] || log "node $n is ready: $(url "$n")"
      else
        left+=("$n")
      fi
    done
    pending=(${left[@]+"${left[@]}"})
    [ ${#pending[@]} -gt 0 ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      probe "${pending[0]}"
      fail_start "${pending[0]}" "is not $want after ${READY_SECONDS}s (/readyz: $READY_CODE $READY_BODY)"
    fi
    sleep 0.2
  done
}

fail_start() {
  printf '[cluster] error: node %s %s; the end of %s:\n' "$1" "$2" "$(log_file "$1")" >&2
  log_since_start "$1" | tail -n 40 >&2
  exit 1
}

# On any failure (or an interrupt) of `start` or `start-node`: stops the nodes this run
# started, so a start either succeeds or leaves nothing new running.
stop_started_on_failure() {
  local status=$?
  if [ "$status" != 0 ] && [ ${#STARTED[@]} -gt 0 ]; then
    log "stopping the nodes this run started: ${STARTED[*]}"
    stop_nodes "${STARTED[@]}"
  fi
  exit "$status"
}

# SIGTERM to the running nodes among the given ones, SIGKILL to those left after
# STOP_SECONDS; returns once all are gone. Touches no process but the nodes' own.
stop_nodes() { stop_procs "$STOP_SECONDS" "$@"; }

# Runs scripts/services.sh with its output marked, so a test harness's log reads clearly.
services() { "$ROOT/scripts/services.sh" | sed 's/^/[cluster] /'; }

# The nodes' Redis settings (REDIS), exported for every node `launch` starts: exactly one of
# SAGASHOP_REDIS_URL / SAGASHOP_REDIS_CLUSTER, or neither (setting both is a node's startup
# error, so one inherited from the caller's environment is dropped). `start` brings up the
# local Redis Cluster when REDIS=cluster names no seeds.
resolve_redis() {
  unset SAGASHOP_REDIS_URL SAGASHOP_REDIS_CLUSTER
  case "$REDIS" in
    none) log "Redis: none (each node's in-process cache only)" ;;
    single)
      export SAGASHOP_REDIS_URL=$REDIS_URL
      log "Redis: one server at ${REDIS_URL%%://*}://…@${REDIS_URL##*@}" ;;
    cluster)
      if [ -z "${REDIS_CLUSTER_SEEDS:-}" ]; then
        [ "$1" = start ] && "$ROOT/scripts/redis-cluster.sh" start | sed 's/^/[cluster] /'
        REDIS_CLUSTER_SEEDS=$("$ROOT/scripts/redis-cluster.sh" seeds)
      fi
      export SAGASHOP_REDIS_CLUSTER=$REDIS_CLUSTER_SEEDS
      log "Redis: a Redis Cluster (seeds $(sed -E 's#//[^@,]*@#//…@#g' <<<"$REDIS_CLUSTER_SEEDS"))" ;;
  esac
}

cmd_start() {
  local n pid
  for n in "${NODES[@]}"; do
    if pid=$(node_pid "$n"); then
      die "node $n of $CLUSTER_DIR already runs (pid $pid): scripts/cluster.sh stop first"
    fi
  done
  for n in "${NODES[@]}"; do
    if port_taken "$(port "$n")"; then die "port $(port "$n") of node $n is in use by another process"; fi
  done
  log "starting cluster '$CLUSTER_NAME' in $CLUSTER_DIR, nodes on $(url 1)..$(port 3)"
  services
  resolve_redis start
  ensure_curl
  resolve_bin
  mkdir -p "$CLUSTER_DIR"
  resolve_secret generate
  resolve_admin_token generate
  if [ "$CLUSTER_FRESH" = 1 ]; then drop_databases; drop_filters; fi
  # Node 1 is the first to migrate the shared databases; the others start once it serves
  # (every node is an orchestrator: they share the partitions as they come up).
  launch 1
  wait_nodes up 1
  launch 2
  launch 3
  wait_nodes ready "${NODES[@]}"
  log "cluster '$CLUSTER_NAME' is ready (partition leases: ${SAGASHOP_LEASE_SECONDS:-default} s)"
  print_dashboards
}

cmd_start_node() {
  local pid
  check_node_number "$NODE"
  if pid=$(node_pid "$NODE"); then die "node $NODE already runs (pid $pid)"; fi
  resolve_redis start-node
  ensure_curl
  resolve_bin
  resolve_secret read
  resolve_admin_token read
  launch "$NODE"
  wait_nodes ready "$NODE"
}

cmd_stop() {
  local n running=()
  for n in "${NODES[@]}"; do
    if node_pid "$n" >/dev/null; then running+=("$n"); else rm -f "$(pid_file "$n")"; fi
  done
  if [ ${#running[@]} -eq 0 ]; then log "no node of $CLUSTER_DIR runs"; return; fi
  stop_nodes "${running[@]}"
}

cmd_kill() {
  local pid
  check_node_number "$NODE"
  pid=$(node_pid "$NODE") || die "node $NODE does not run"
  kill -KILL "$pid"
  while node_pid "$NODE" >/dev/null; do sleep 0.05; done
  rm -f "$(pid_file "$NODE")"
  log "node $NODE (pid $pid) killed"
}

# True when node N's process is stopped by a signal (state T in /proc/PID/stat).
node_paused() {
  local pid stat
  pid=$(node_pid "$1") || return 1
  stat=$(<"/proc/$pid/stat") || return 1
  stat=${stat##*) }
  [ "${stat%% *}" = T ]
}

cmd_pause() {
  local pid
  check_node_number "$NODE"
  pid=$(node_pid "$NODE") || die "node $NODE does not run"
  kill -STOP "$pid"
  while ! node_paused "$NODE"; do
    node_pid "$NODE" >/dev/null || die "node $NODE (pid $pid) exited"
    sleep 0.05
  done
  log "node $NODE (pid $pid) paused (SIGSTOP): scripts/cluster.sh resume $NODE"
}

cmd_resume() {
  local pid
  check_node_number "$NODE"
  pid=$(node_pid "$NODE") || die "node $NODE does not run"
  kill -CONT "$pid"
  while node_paused "$NODE"; do sleep 0.05; done
  log "node $NODE (pid $pid) resumed (SIGCONT)"
}

cmd_status() {
  local n pid alive ready detail all=0
  ensure_curl
  for n in "${NODES[@]}"; do
    ready="not ready" detail=""
    if node_paused "$n"; then
      pid=$(node_pid "$n") alive=paused detail=" (SIGSTOP: scripts/cluster.sh resume $n)"
    elif pid=$(node_pid "$n"); then
      alive=alive
      probe "$n"
      case "$READY_CODE" in
        200) ready=ready ;;
        000) detail=" (no answer)" ;;
        *) detail=" ($READY_CODE $READY_BODY)" ;;
      esac
    else
      pid=- alive=down
    fi
    [ "$ready" = ready ] || all=1
    printf 'node %s  pid %-7s  %-5s  %-9s  %s  metrics %s  %s%s\n' "$n" "$pid" "$alive" "$ready" "$(url "$n")" \
      "$(metrics_listen "$n")" "${ROLES[$n]}" "$detail"
  done
  resolve_admin_token read
  print_dashboards
  return $all
}

STARTED=()
trap stop_started_on_failure EXIT
case "$COMMAND" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) cmd_kill ;;
  pause) cmd_pause ;;
  resume) cmd_resume ;;
  start-node) cmd_start_node ;;
  "") die "no command (start, stop, status, kill N, pause N, resume N, start-node N; --help)" ;;
  *) die "unknown command '$COMMAND' (start, stop, status, kill N, pause N, resume N, start-node N; --help)" ;;
esac
